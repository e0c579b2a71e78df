//! Command-line interface of `autogit-coordinator`.
//!
//! Every subcommand takes `--data-dir` (or `AUTOGIT_DATA_DIR`) the way
//! `serve` does; offline commands read and write the same SQLite database
//! (WAL mode, safe while `serve` runs).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Overrides};
use crate::db::{self, Db};
use crate::fleet::AgentView;
use crate::output::{self, Output};
use crate::{pki, server, tokens};

#[derive(Debug, Parser)]
#[command(
    name = "autogit-coordinator",
    version,
    about = "AutoGit coordinator: turns enrolled build hosts into GitLab runners on demand"
)]
pub struct Cli {
    /// State directory: cluster CA, SQLite database.
    #[arg(long, global = true, env = "AUTOGIT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, global = true, env = "AUTOGIT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the cluster CA in the data dir (prints its SHA-256 fingerprint).
    Init {
        /// Replace an existing CA (every enrolled agent must re-join).
        #[arg(long)]
        force: bool,
    },
    /// Run the coordinator: gRPC for agents, HTTP for health, webhooks and admin.
    Serve(ServeArgs),
    /// Manage join tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// List and revoke agents.
    #[command(subcommand, visible_alias = "agent")]
    Agents(AgentsCmd),
    /// Admin API tokens (for the CLI's --server mode, the dashboard, scripts).
    #[command(subcommand, name = "admin-token")]
    AdminToken(AdminTokenCmd),
    /// Runner lifecycles: active runners and recent finished ones.
    #[command(subcommand, visible_alias = "runner")]
    Runners(RunnersCmd),
}

#[derive(Debug, Subcommand)]
pub enum AdminTokenCmd {
    /// Create an admin token; prints it as the last line of stdout.
    Create {
        /// Who or what uses it (shown in the audit log as token:<name>).
        #[arg(long, default_value = "admin")]
        name: String,
        /// Expire after this long (default: valid until revoked).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// List admin tokens (never their secrets).
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Revoke an admin token by id.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum RunnersCmd {
    /// List runners with pool, agent, state and timestamps.
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
        /// How many finished runners to include (active ones are always listed).
        #[arg(long, default_value_t = 50)]
        finished: u32,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// gRPC (mTLS) listen address for agents, e.g. 0.0.0.0:7443 (port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    pub grpc_listen: Option<SocketAddr>,
    /// HTTP listen address, e.g. 0.0.0.0:8080 (port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a join token; prints it as the last line of stdout.
    Create {
        /// How long the token is valid (e.g. 30m, 1h, 7d).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// How many agents may enroll with it.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        uses: u32,
        /// Label applied to agents enrolled with this token (repeatable), k=v.
        #[arg(long = "label", value_name = "K=V", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Free-text note shown in `token list`.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List join tokens (never their secrets).
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Revoke a join token by id.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum AgentsCmd {
    /// List agents with arch, state, last seen, GPUs and labels.
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Revoke an agent: its session is cut within seconds, reconnects and renewals are refused.
    Revoke {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("label {s:?} must look like key=value"))?;
    if k.is_empty()
        || !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        return Err(format!(
            "label key {k:?} must be non-empty and use only [A-Za-z0-9-_./]"
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Entry point used by `main.rs`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AUTOGIT_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,sqlx=warn,h2=warn,hyper=warn,tower=warn")
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn env_pairs() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("AUTOGIT_"))
        .collect()
}

fn load_config(cli: &Cli, extra: Overrides) -> anyhow::Result<Config> {
    let flags = Overrides {
        data_dir: cli.data_dir.clone(),
        ..extra
    };
    Ok(Config::load(cli.config.as_deref(), &env_pairs(), &flags)?)
}

async fn open_db(dir: &Path) -> anyhow::Result<Db> {
    if !dir.join(db::DB_FILE).exists() && !dir.join(pki::CA_CERT_FILE).exists() {
        bail!(
            "{} is not an AutoGit data dir: run `autogit-coordinator init --data-dir {}` first",
            dir.display(),
            dir.display()
        );
    }
    Ok(Db::open(dir).await?)
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Init { force } => {
            let cfg = load_config(&cli, Overrides::default())?;
            let ca = pki::init(&cfg.data_dir, *force)?;
            // Create the database now so the data dir is complete.
            Db::open(&cfg.data_dir).await?.close().await;
            println!("cluster CA created in {}", cfg.data_dir.display());
            println!("CA fingerprint (SHA-256): {}", ca.fingerprint());
        }
        Command::Serve(a) => {
            let cfg = load_config(
                &cli,
                Overrides {
                    grpc_listen: a.grpc_listen,
                    http_listen: a.http_listen,
                    ..Default::default()
                },
            )?;
            let shutdown = CancellationToken::new();
            tokio::spawn(signal_watch(shutdown.clone()));
            server::run(cfg, shutdown, |b| {
                println!(
                    "autogit-coordinator listening grpc={} http={}",
                    b.grpc, b.http
                );
            })
            .await?;
        }
        Command::Token(t) => {
            let cfg = load_config(&cli, Overrides::default())?;
            token_cmd(&cfg, t).await?;
        }
        Command::Agents(a) => {
            let cfg = load_config(&cli, Overrides::default())?;
            agents_cmd(&cfg, a).await?;
        }
        Command::AdminToken(cmd) => {
            let cfg = load_config(&cli, Overrides::default())?;
            admin_token_cmd(&cfg, cmd).await?;
        }
        Command::Runners(RunnersCmd::List { output, finished }) => {
            let cfg = load_config(&cli, Overrides::default())?;
            let db = open_db(&cfg.data_dir).await?;
            let rows = db.list_runners(*finished).await?;
            let views: Vec<crate::runners::RunnerView> = rows.iter().map(Into::into).collect();
            output::print(
                *output,
                &views,
                &[
                    "ID",
                    "POOL",
                    "AGENT",
                    "STATE",
                    "GITLAB",
                    "CREATED",
                    "FINISHED",
                    "EXIT/REASON",
                ],
                |r| {
                    vec![
                        r.id.clone(),
                        r.pool.clone(),
                        r.agent_id.chars().take(8).collect(),
                        r.state.clone(),
                        r.gitlab_runner_id
                            .map(|g| g.to_string())
                            .unwrap_or_else(|| "-".into()),
                        r.created_at.clone(),
                        r.finished_at.clone().unwrap_or_else(|| "-".into()),
                        match (r.exit_code, &r.reason) {
                            (Some(c), Some(m)) => format!("{c}: {m}"),
                            (Some(c), None) => c.to_string(),
                            (None, Some(m)) => m.clone(),
                            (None, None) => "-".into(),
                        },
                    ]
                },
            )?;
            db.close().await;
        }
    }
    Ok(())
}

async fn signal_watch(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    shutdown.cancel();
}

async fn token_cmd(cfg: &Config, cmd: &TokenCmd) -> anyhow::Result<()> {
    let db = open_db(&cfg.data_dir).await?;
    match cmd {
        TokenCmd::Create {
            ttl,
            uses,
            labels,
            description,
        } => {
            let ca = pki::load(&cfg.data_dir)?;
            let labels: BTreeMap<String, String> = labels.iter().cloned().collect();
            let req = tokens::NewToken {
                ttl: *ttl,
                uses: *uses,
                labels,
                description: description.clone(),
            };
            let token = tokens::create(&db, ca.fingerprint(), &req)
                .await
                .context("create join token")?;
            crate::audit::Audit::new(db.clone())
                .record("token.created", "cli", None, None, json!({"token_id": token.id().as_str(), "uses": uses, "ttl": humantime::format_duration(*ttl).to_string()}))
                .await;
            eprintln!(
                "join token {} valid for {}, {} use(s):",
                token.id(),
                humantime::format_duration(*ttl),
                uses
            );
            println!("{}", token.expose());
        }
        TokenCmd::List { output } => {
            let list = tokens::list(&db).await?;
            output::print(
                *output,
                &list,
                &["ID", "STATUS", "USES", "EXPIRES", "LABELS", "DESCRIPTION"],
                |t| {
                    vec![
                        t.id.clone(),
                        t.status.clone(),
                        format!("{}/{}", t.uses, t.max_uses),
                        t.expires_at.clone(),
                        fmt_labels(&t.labels),
                        t.description.clone(),
                    ]
                },
            )?;
        }
        TokenCmd::Revoke { id } => {
            if !db
                .revoke_token(id, db::to_ms(OffsetDateTime::now_utc()))
                .await?
            {
                bail!("no join token with id {id:?}");
            }
            crate::audit::Audit::new(db.clone())
                .record("token.revoked", "cli", None, None, json!({"token_id": id}))
                .await;
            println!("join token {id} revoked");
        }
    }
    db.close().await;
    Ok(())
}

async fn admin_token_cmd(cfg: &Config, cmd: &AdminTokenCmd) -> anyhow::Result<()> {
    let db = open_db(&cfg.data_dir).await?;
    match cmd {
        AdminTokenCmd::Create { name, ttl } => {
            let t = crate::admin::tokens::create(&db, name, *ttl)
                .await
                .context("create admin token")?;
            crate::audit::Audit::new(db.clone())
                .record(
                    "admin_token.created",
                    "cli",
                    None,
                    None,
                    json!({"id": t.id, "name": name}),
                )
                .await;
            eprintln!("admin token {} for {name:?}:", t.id);
            println!("{}", t.token);
        }
        AdminTokenCmd::List { output } => {
            #[derive(serde::Serialize)]
            struct View {
                id: String,
                name: String,
                created_at: String,
                expires_at: Option<String>,
                revoked: bool,
                last_used_at: Option<String>,
            }
            let views: Vec<View> = db
                .list_admin_tokens()
                .await?
                .into_iter()
                .map(|r| View {
                    id: r.id,
                    name: r.name,
                    created_at: crate::fleet::rfc3339(r.created_at),
                    expires_at: r.expires_at.map(crate::fleet::rfc3339),
                    revoked: r.revoked_at.is_some(),
                    last_used_at: r.last_used_at.map(crate::fleet::rfc3339),
                })
                .collect();
            output::print(
                *output,
                &views,
                &["ID", "NAME", "CREATED", "EXPIRES", "REVOKED", "LAST USED"],
                |v| {
                    vec![
                        v.id.clone(),
                        v.name.clone(),
                        v.created_at.clone(),
                        v.expires_at.clone().unwrap_or_else(|| "never".into()),
                        v.revoked.to_string(),
                        v.last_used_at.clone().unwrap_or_else(|| "never".into()),
                    ]
                },
            )?;
        }
        AdminTokenCmd::Revoke { id } => {
            if !db
                .revoke_admin_token(id, db::to_ms(OffsetDateTime::now_utc()))
                .await?
            {
                bail!("no admin token with id {id:?}");
            }
            crate::audit::Audit::new(db.clone())
                .record("admin_token.revoked", "cli", None, None, json!({"id": id}))
                .await;
            println!("admin token {id} revoked");
        }
    }
    db.close().await;
    Ok(())
}

async fn agents_cmd(cfg: &Config, cmd: &AgentsCmd) -> anyhow::Result<()> {
    let db = open_db(&cfg.data_dir).await?;
    match cmd {
        AgentsCmd::List { output } => {
            let rows = db.list_agents().await?;
            let views = rows
                .iter()
                .map(AgentView::from_row)
                .collect::<Result<Vec<_>, _>>()?;
            output::print(
                *output,
                &views,
                &[
                    "ID",
                    "HOSTNAME",
                    "ARCH",
                    "STATE",
                    "LAST SEEN",
                    "GPUS",
                    "LABELS",
                ],
                |a| {
                    vec![
                        a.id.clone(),
                        a.hostname.clone(),
                        a.arch.clone(),
                        if a.cordoned {
                            format!("{},cordoned", a.state)
                        } else {
                            a.state.to_string()
                        },
                        a.last_seen.clone().unwrap_or_else(|| "never".into()),
                        fmt_gpus(&a.gpus),
                        fmt_labels(&a.labels),
                    ]
                },
            )?;
        }
        AgentsCmd::Revoke { id, reason } => {
            let id: autogit_certs::AgentId = id
                .parse()
                .map_err(|_| anyhow::anyhow!("{id:?} is not an agent id (a UUID)"))?;
            if !db
                .revoke_agent(
                    &id.to_string(),
                    db::to_ms(OffsetDateTime::now_utc()),
                    "cli",
                    reason,
                )
                .await?
            {
                bail!("no agent with id {id}");
            }
            crate::audit::Audit::new(db.clone())
                .record(
                    "agent.revoked",
                    "cli",
                    Some(&id.to_string()),
                    None,
                    json!({"reason": reason}),
                )
                .await;
            println!("agent {id} revoked; a running coordinator cuts its session within seconds");
        }
    }
    db.close().await;
    Ok(())
}

pub fn fmt_labels(l: &BTreeMap<String, String>) -> String {
    if l.is_empty() {
        return "-".into();
    }
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn fmt_gpus(g: &[crate::fleet::inventory::Gpu]) -> String {
    if g.is_empty() {
        return "-".into();
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for x in g {
        *counts.entry(x.vendor.as_str()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(v, n)| format!("{n}x{v}"))
        .collect::<Vec<_>>()
        .join(",")
}
