//! Command-line interface of `autogit-coordinator`.
//!
//! * Set-up and server: `init`, `serve`, `admin-token` (on the coordinator
//!   host, against the data dir).
//! * Fleet commands (`agents`, `runners`, `pools`, `jobs`, `token`, `events`,
//!   `drain`, `cordon`, `uncordon`) go through the admin API when `--server`
//!   (or `AUTOGIT_SERVER`) is given, so they work from a laptop against a
//!   remote coordinator; without it, the read-only ones and token/revoke
//!   commands work offline on `--data-dir` ([`backend`]).
//! * Human tables by default, `--output json` on request ([`render`]); exit
//!   codes are stable ([`ExitStatus`]).

mod backend;
mod render;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Overrides};
use crate::db::{self, Db};
use crate::output::Output;
use crate::{pki, server};
pub use backend::{Backend, CliError};

#[derive(Debug, Parser)]
#[command(
    name = "autogit-coordinator",
    version,
    about = "AutoGit coordinator: turns enrolled build hosts into GitLab runners on demand",
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 unauthorized, 5 coordinator unreachable or unavailable."
)]
pub struct Cli {
    /// State directory: cluster CA, SQLite database.
    #[arg(long, global = true, env = "AUTOGIT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// State database, as `database.url`: sqlite://PATH or postgres://USER@HOST/DB (default: the data dir's autogit.db).
    #[arg(long, global = true, value_name = "URL")]
    pub database: Option<String>,
    /// TOML configuration file (see docs/configuration.md).
    #[arg(long, global = true, env = "AUTOGIT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Admin API of a running coordinator, e.g. http://coordinator:8080.
    #[arg(long, global = true, env = "AUTOGIT_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Admin token for --server (from `admin-token create`).
    #[arg(
        long,
        global = true,
        env = "AUTOGIT_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Admin client certificate dir for an https:// --server (from `admin-cert create`), instead of --token.
    #[arg(long, global = true, env = "AUTOGIT_ADMIN_CERT", value_name = "DIR")]
    pub admin_cert: Option<PathBuf>,
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
    /// Run the coordinator: gRPC for agents, HTTP for health, webhooks, admin API, dashboard.
    Serve(ServeArgs),
    /// Join tokens for agents.
    #[command(subcommand, visible_alias = "tokens")]
    Token(TokenCmd),
    /// Admin API tokens (for --server, the dashboard and scripts). Data dir only.
    #[command(subcommand, name = "admin-token")]
    AdminToken(AdminTokenCmd),
    /// Admin client certificates (for `http_tls = true`). Data dir only.
    #[command(subcommand, name = "admin-cert")]
    AdminCert(AdminCertCmd),
    /// Dashboard sessions: list the live ones, end one. Data dir only.
    #[command(subcommand, name = "admin-session")]
    AdminSession(AdminSessionCmd),
    /// Agents: list, inspect, cordon, drain, revoke.
    #[command(subcommand, visible_alias = "agent")]
    Agents(AgentsCmd),
    /// Runner lifecycles: active runners and recent finished ones.
    #[command(subcommand, visible_alias = "runner")]
    Runners(RunnersCmd),
    /// Pools with demand, running, idle, max and why demand is unmet (needs --server).
    Pools {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Re-read the running coordinator's config file and apply its pools without a restart; an invalid file changes nothing (needs --server; SIGHUP does the same).
    Reload {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Pending jobs and the pool serving each, or why none does (needs --server).
    Jobs {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// The audit log, newest first.
    Events(EventsArgs),
    /// Drain an agent: no new runners; running ones finish their job, the rest stop at the deadline.
    Drain(DrainArgs),
    /// Stop placing new runners on an agent.
    Cordon { id: String },
    /// Allow placements on an agent again (also ends a drain).
    Uncordon { id: String },
    /// Replicas sharing this database: the leader, the lease epoch and age (reads the database).
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Move the whole state (agents, tokens, runners, audit log) into another, empty database; stop the coordinator first.
    Migrate {
        /// The database to read (default: --database, else the data dir's SQLite file).
        #[arg(long, value_name = "URL")]
        from: Option<String>,
        /// The empty database to fill, e.g. postgres://autogit@db/autogit.
        #[arg(long, value_name = "URL")]
        to: String,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
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
        /// How long the token is valid (e.g. 30m, 1h, 7d; at most 365 days).
        #[arg(long, default_value = "1h", value_parser = crate::bounds::parser("--ttl", crate::bounds::MAX_JOIN_TOKEN_TTL))]
        ttl: Duration,
        /// How many agents may enroll with it.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        uses: u32,
        /// Trust label given to agents enrolled with this token (repeatable), k=v; pools' agent_selector places by them.
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
pub enum AdminTokenCmd {
    /// Create an admin token; prints it as the last line of stdout.
    Create {
        /// Who or what uses it (shown in the audit log as token:<name>).
        #[arg(long, default_value = "admin")]
        name: String,
        /// What it may do: viewer (read), operator (also cordon, drain,
        /// stop runners) or admin (also tokens, labels, revoke, reload).
        #[arg(long, default_value = "admin")]
        role: crate::admin::Role,
        /// Expire after this long (default: valid until revoked; at most 1825 days).
        #[arg(long, value_parser = crate::bounds::parser("--ttl", crate::bounds::MAX_ADMIN_TOKEN_TTL))]
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
pub enum ClusterCmd {
    /// The leader, the epoch, the lease's age, and every replica seen lately.
    Status {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminSessionCmd {
    /// List live dashboard sessions: handle, token, role, start, end.
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// End a session by the handle `list` shows; its browser is signed out.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum AdminCertCmd {
    /// Issue a certificate; the key is generated here and written 0600.
    Create {
        /// The operator's name (audit log: cert:<name>).
        #[arg(long)]
        name: String,
        /// Directory for <name>.pem, <name>-key.pem and ca.pem.
        #[arg(long)]
        out: PathBuf,
        /// What it may do: viewer, operator or admin (see `admin-token create --help`).
        #[arg(long, default_value = "admin")]
        role: crate::admin::Role,
        /// Validity (at most 1825 days).
        #[arg(long, default_value = "30d", value_parser = crate::bounds::parser("--ttl", crate::bounds::MAX_ADMIN_CERT_TTL))]
        ttl: Duration,
    },
    /// List issued admin certificates: serial, name, expiry, revocation.
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Revoke a certificate by serial, or every certificate of a name; a running coordinator refuses it at the next request.
    Revoke {
        #[arg(value_name = "SERIAL|NAME")]
        serial_or_name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AgentsCmd {
    /// List agents with arch, state, last seen, GPUs and trust labels.
    List {
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Show one agent, inventory and trust labels included.
    #[command(visible_alias = "show")]
    Get {
        id: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Revoke an agent: its session is cut within seconds, reconnects and renewals are refused.
    Revoke {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Stop placing new runners on an agent.
    Cordon { id: String },
    /// Allow placements again (also ends a drain).
    Uncordon { id: String },
    /// Drain an agent (see `autogit-coordinator drain --help`).
    Drain(DrainArgs),
    /// Trust labels: what pools' `agent_selector` places by. Needs --server.
    #[command(subcommand)]
    Label(LabelCmd),
}

#[derive(Debug, Subcommand)]
pub enum LabelCmd {
    /// Add or replace trust labels (audited; placement uses them at once).
    Set {
        id: String,
        /// One or more key=value.
        #[arg(required = true, value_name = "K=V", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Remove trust labels by key (absent keys are ignored).
    Rm {
        id: String,
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    pub id: String,
    /// Runners still running after this long are stopped (at most 7 days).
    #[arg(long, default_value = "1h", value_parser = parse_drain_deadline)]
    pub deadline: Duration,
    /// Return at once instead of showing progress until the agent is drained.
    #[arg(long)]
    pub no_wait: bool,
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
    /// Show one runner's whole lifecycle.
    Get {
        id: String,
        #[arg(long, value_enum, default_value_t)]
        output: Output,
    },
    /// Stop a runner gracefully (it finishes a job it took). Needs --server.
    Stop { id: String },
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[arg(long)]
    pub agent: Option<String>,
    #[arg(long)]
    pub runner: Option<String>,
    /// Only events older than this event id (paging).
    #[arg(long)]
    pub before: Option<i64>,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// `key=value`, checked as a trust label (`scheduler/labels.rs`).
fn parse_label(s: &str) -> Result<(String, String), String> {
    crate::scheduler::labels::parse_label(s).map_err(|e| e.to_string())
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
            ExitCode::from(backend::exit_code(&e))
        }
    }
}

/// `drain --deadline`: 0 (stop now) up to [`crate::bounds::MAX_DRAIN_DEADLINE`].
fn parse_drain_deadline(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    crate::bounds::check(
        "--deadline",
        d,
        Duration::ZERO,
        crate::bounds::MAX_DRAIN_DEADLINE,
    )
    .map_err(|e| e.to_string())
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
        database: database_flag(cli),
        ..extra
    };
    Ok(Config::load(cli.config.as_deref(), &env_pairs(), &flags)?)
}

fn database_flag(cli: &Cli) -> Option<crate::config::DatabaseOverride> {
    cli.database
        .clone()
        .map(|url| crate::config::DatabaseOverride { url })
}

fn parse_database_url(flag: &str, url: &str) -> anyhow::Result<db::DatabaseUrl> {
    db::DatabaseUrl::parse(url).map_err(|e| CliError::Usage(format!("{flag}: {e}")).into())
}

/// Open the configured database: PostgreSQL as given, or the data dir's
/// SQLite file, with a clear error when the data dir is not one.
pub async fn open_db(cfg: &Config) -> anyhow::Result<Db> {
    let url = cfg.database_url();
    if url.is_postgres() {
        return Ok(Db::connect(&url).await?);
    }
    open_sqlite_db(&cfg.data_dir).await
}

async fn open_sqlite_db(dir: &Path) -> anyhow::Result<Db> {
    if !dir.join(db::DB_FILE).exists() && !dir.join(pki::CA_CERT_FILE).exists() {
        return Err(CliError::Usage(format!(
            "{} is not an AutoGit data dir: run `autogit-coordinator init --data-dir {}` first, or pass --server to use a running coordinator",
            dir.display(),
            dir.display()
        ))
        .into());
    }
    Ok(Db::open(dir).await?)
}

async fn backend(cli: &Cli) -> anyhow::Result<Backend> {
    match &cli.server {
        Some(url) => match (&cli.token, &cli.admin_cert) {
            (Some(token), _) => Ok(Backend::remote(
                url,
                backend::Credentials::Token(token.clone()),
            )?),
            (None, Some(dir)) => Ok(Backend::remote(
                url,
                backend::Credentials::Cert(dir.clone()),
            )?),
            (None, None) => Err(CliError::Usage(
                "--server needs --token (or AUTOGIT_ADMIN_TOKEN) or --admin-cert".into(),
            )
            .into()),
        },
        None => {
            let cfg = load_config(cli, Overrides::default())?;
            Ok(Backend::Local {
                db: open_db(&cfg).await?,
                data_dir: cfg.data_dir,
            })
        }
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Init { force } => {
            let cfg = load_config(&cli, Overrides::default())?;
            let ca = pki::init(&cfg.data_dir, *force)?;
            // Create the database now so the data dir is complete.
            Db::connect(&cfg.database_url()).await?.close().await;
            println!("cluster CA created in {}", cfg.data_dir.display());
            println!("CA fingerprint (SHA-256): {}", ca.fingerprint());
            return Ok(());
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
            // A reload reads the same file, environment and flags again.
            let (file, env) = (cli.config.clone(), env_pairs());
            let flags = Overrides {
                data_dir: cli.data_dir.clone(),
                database: database_flag(&cli),
                grpc_listen: a.grpc_listen,
                http_listen: a.http_listen,
            };
            let source: crate::reload::ConfigSource =
                std::sync::Arc::new(move || Config::load(file.as_deref(), &env, &flags));
            server::run(cfg, Some(source), shutdown, |b| {
                println!(
                    "autogit-coordinator listening grpc={} http={}",
                    b.grpc, b.http
                );
            })
            .await?;
            return Ok(());
        }
        Command::AdminToken(cmd) => {
            let cfg = load_config(&cli, Overrides::default())?;
            let db = open_db(&cfg).await?;
            let r = admin_token_cmd(&db, cmd).await;
            db.close().await;
            return r;
        }
        Command::AdminSession(cmd) => {
            let cfg = load_config(&cli, Overrides::default())?;
            let db = open_db(&cfg).await?;
            let r = admin_session_cmd(&db, cmd).await;
            db.close().await;
            return r;
        }
        Command::AdminCert(cmd) => {
            let cfg = load_config(&cli, Overrides::default())?;
            return admin_cert_cmd(&cfg, cmd).await;
        }
        Command::Cluster(ClusterCmd::Status { output }) => {
            let cfg = load_config(&cli, Overrides::default())?;
            let db = open_db(&cfg).await?;
            let status = crate::cluster::status(&db, cfg.cluster.lease_ttl).await;
            db.close().await;
            return render::cluster(*output, &status?);
        }
        Command::Migrate { from, to } => {
            let cfg = load_config(&cli, Overrides::default())?;
            let from = match from {
                Some(url) => parse_database_url("--from", url)?,
                None => cfg.database_url(),
            };
            let to = parse_database_url("--to", to)?;
            return migrate(&cfg, &from, &to).await;
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "autogit-coordinator",
                &mut std::io::stdout(),
            );
            return Ok(());
        }
        _ => {}
    }
    let b = backend(&cli).await?;
    let result = fleet_cmd(&b, &cli.command).await;
    b.close().await;
    result
}

async fn fleet_cmd(b: &Backend, cmd: &Command) -> anyhow::Result<()> {
    match cmd {
        Command::Token(TokenCmd::Create {
            ttl,
            uses,
            labels,
            description,
        }) => {
            let labels: BTreeMap<String, String> = labels.iter().cloned().collect();
            let (id, token) = b.create_token(*ttl, *uses, &labels, description).await?;
            eprintln!(
                "join token {id} valid for {}, {uses} use(s):",
                humantime::format_duration(*ttl)
            );
            println!("{token}");
        }
        Command::Token(TokenCmd::List { output }) => render::tokens(*output, &b.tokens().await?)?,
        Command::Token(TokenCmd::Revoke { id }) => {
            b.revoke_token(id).await?;
            println!("join token {id} revoked");
        }
        Command::Agents(AgentsCmd::List { output }) => render::agents(*output, &b.agents().await?)?,
        Command::Agents(AgentsCmd::Get { id, output }) => {
            render::one(*output, &b.agent(id).await?)?
        }
        Command::Agents(AgentsCmd::Revoke { id, reason }) => {
            b.revoke_agent(id, reason).await?;
            println!("agent {id} revoked; a running coordinator cuts its session within seconds");
        }
        Command::Agents(AgentsCmd::Cordon { id }) | Command::Cordon { id } => {
            b.post(&format!("/api/v1/agents/{id}/cordon"), json!({}))
                .await?;
            println!("agent {id} cordoned: no new runners will be placed on it");
        }
        Command::Agents(AgentsCmd::Uncordon { id }) | Command::Uncordon { id } => {
            b.post(&format!("/api/v1/agents/{id}/uncordon"), json!({}))
                .await?;
            println!("agent {id} uncordoned");
        }
        Command::Agents(AgentsCmd::Drain(d)) | Command::Drain(d) => drain(b, d).await?,
        Command::Agents(AgentsCmd::Label(cmd)) => label(b, cmd).await?,
        Command::Runners(RunnersCmd::List { output, finished }) => {
            render::runners(*output, &b.runners(*finished).await?)?
        }
        Command::Runners(RunnersCmd::Get { id, output }) => {
            render::one(*output, &b.runner(id).await?)?
        }
        Command::Runners(RunnersCmd::Stop { id }) => {
            b.post(&format!("/api/v1/runners/{id}/stop"), json!({}))
                .await?;
            println!("runner {id} asked to stop; it finishes a job it took first");
        }
        Command::Pools { output } => render::pools(*output, &b.get_list("/api/v1/pools").await?)?,
        Command::Reload { output } => {
            render::reloaded(*output, &b.post("/api/v1/reload", json!({})).await?)?
        }
        Command::Jobs { output } => render::jobs(*output, &b.get_list("/api/v1/jobs").await?)?,
        Command::Events(e) => {
            let page = b
                .events(e.agent.as_deref(), e.runner.as_deref(), e.before, e.limit)
                .await?;
            render::events(e.output, &page)?;
        }
        Command::Init { .. }
        | Command::Serve(_)
        | Command::AdminToken(_)
        | Command::AdminSession(_)
        | Command::AdminCert(_)
        | Command::Migrate { .. }
        | Command::Cluster(_)
        | Command::Completions { .. } => {}
    }
    Ok(())
}

/// `agent label set|rm`: one audited change through the API.
async fn label(b: &Backend, cmd: &LabelCmd) -> anyhow::Result<()> {
    let (id, body) = match cmd {
        LabelCmd::Set { id, labels } => {
            let set: BTreeMap<&str, &str> = labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            (id, json!({"set": set}))
        }
        LabelCmd::Rm { id, keys } => (id, json!({"remove": keys})),
    };
    let r = b.post(&format!("/api/v1/agents/{id}/labels"), body).await?;
    let shown = |v: &Value| {
        let pairs: Vec<String> = v
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        if pairs.is_empty() {
            "none".to_owned()
        } else {
            pairs.join(", ")
        }
    };
    if r["old"] == r["trust_labels"] {
        println!(
            "agent {id}: trust labels unchanged ({})",
            shown(&r["trust_labels"])
        );
    } else {
        println!(
            "agent {id}: trust labels {} (were {})",
            shown(&r["trust_labels"]),
            shown(&r["old"])
        );
    }
    Ok(())
}

/// Drain and, unless `--no-wait`, show progress until drained.
async fn drain(b: &Backend, d: &DrainArgs) -> anyhow::Result<()> {
    let r = b
        .post(
            &format!("/api/v1/agents/{}/drain", d.id),
            json!({"deadline_seconds": d.deadline.as_secs()}),
        )
        .await?;
    println!(
        "draining agent {}: {} runner(s) asked to finish their job; deadline {}",
        d.id,
        r["runners_stopping"],
        r["deadline"].as_str().unwrap_or("?")
    );
    if d.no_wait {
        return Ok(());
    }
    let until = Instant::now() + d.deadline.saturating_add(Duration::from_secs(60));
    let mut last = String::new();
    while Instant::now() < until {
        let a = b.agent(&d.id).await?;
        if a["drain"]["drained_at"].is_string() {
            println!(
                "agent {} drained at {}",
                d.id,
                a["drain"]["drained_at"].as_str().unwrap_or("")
            );
            return Ok(());
        }
        let line = format!(
            "  {} runner(s) left, deadline {}",
            a["runners"],
            a["drain"]["deadline"].as_str().unwrap_or("?")
        );
        if line != last {
            println!("{line}");
            last = line;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(CliError::Unavailable(format!("agent {} did not report drained in time", d.id)).into())
}

async fn admin_session_cmd(db: &Db, cmd: &AdminSessionCmd) -> anyhow::Result<()> {
    use crate::admin::sessions;
    match cmd {
        AdminSessionCmd::List { output } => {
            let rows: Vec<Value> = sessions::list(db)
                .await?
                .into_iter()
                .map(|s| serde_json::to_value(s).unwrap_or_default())
                .collect();
            render::admin_sessions(*output, &rows)?;
        }
        AdminSessionCmd::Revoke { id } => {
            if !sessions::revoke(db, id).await? {
                return Err(CliError::NotFound(format!(
                    "no live session with id {id:?} (see `admin-session list`)"
                ))
                .into());
            }
            crate::audit::Audit::new(db.clone())
                .record(
                    "admin_session.revoked",
                    "cli",
                    None,
                    None,
                    json!({"session": id}),
                )
                .await;
            println!("session {id} ended");
        }
    }
    Ok(())
}

async fn admin_token_cmd(db: &Db, cmd: &AdminTokenCmd) -> anyhow::Result<()> {
    match cmd {
        AdminTokenCmd::Create { name, role, ttl } => {
            let t = crate::admin::tokens::create(db, name, *role, *ttl)
                .await
                .context("create admin token")?;
            crate::audit::Audit::new(db.clone())
                .record(
                    "admin_token.created",
                    "cli",
                    None,
                    None,
                    json!({"id": t.id, "name": name, "role": role}),
                )
                .await;
            eprintln!("admin token {} for {name:?} ({role}):", t.id);
            println!("{}", t.token);
        }
        AdminTokenCmd::List { output } => {
            let rows: Vec<Value> = db
                .list_admin_tokens()
                .await?
                .into_iter()
                .map(|r| {
                    json!({"id": r.id, "name": r.name, "role": r.role, "created_at": crate::fleet::rfc3339(r.created_at),
                           "expires_at": r.expires_at.map(crate::fleet::rfc3339), "revoked": r.revoked_at.is_some(),
                           "last_used_at": r.last_used_at.map(crate::fleet::rfc3339)})
                })
                .collect();
            render::admin_tokens(*output, &rows)?;
        }
        AdminTokenCmd::Revoke { id } => {
            if !db
                .revoke_admin_token(id, db::to_ms(time::OffsetDateTime::now_utc()))
                .await?
            {
                return Err(CliError::NotFound(format!("no admin token with id {id:?}")).into());
            }
            crate::audit::Audit::new(db.clone())
                .record("admin_token.revoked", "cli", None, None, json!({"id": id}))
                .await;
            println!("admin token {id} revoked");
        }
    }
    Ok(())
}

/// `migrate`: copy every table from one store into another, empty one.
async fn migrate(cfg: &Config, from: &db::DatabaseUrl, to: &db::DatabaseUrl) -> anyhow::Result<()> {
    if from.to_string() == to.to_string() {
        return Err(
            CliError::Usage(format!("--from and --to are the same database ({to})")).into(),
        );
    }
    let source = match from {
        db::DatabaseUrl::Sqlite(path) if !path.exists() => {
            return Err(CliError::Usage(format!(
                "{from} does not exist: nothing to migrate (is --data-dir {} right?)",
                cfg.data_dir.display()
            ))
            .into());
        }
        _ => Db::connect(from)
            .await
            .with_context(|| format!("open {from}"))?,
    };
    let target = Db::connect(to)
        .await
        .with_context(|| format!("open {to}"))?;
    let moved = db::migrate::copy_all(&source, &target).await;
    source.close().await;
    target.close().await;
    let moved = moved?;
    for (table, rows) in &moved {
        println!("{table:<16} {rows:>8} rows");
    }
    println!("moved the state from {from} to {to}");
    println!("next: set database.url (or --database) to {to} and start the coordinator there");
    Ok(())
}

async fn admin_cert_cmd(cfg: &Config, cmd: &AdminCertCmd) -> anyhow::Result<()> {
    use crate::admin::certs;
    let data_dir = &cfg.data_dir;
    let db = open_db(cfg).await?;
    let audit = crate::audit::Audit::new(db.clone());
    let r = async {
        match cmd {
            AdminCertCmd::Create { name, out, role, ttl } => {
                let ca = pki::load(data_dir)?;
                let cert = certs::issue(&db, &ca, name, *role, *ttl).await.map_err(|e| match e {
                    certs::IssueError::BadName(_) => CliError::Usage(e.to_string()).into(),
                    e => anyhow::Error::from(e),
                })?;
                pki::ensure_data_dir(out)?;
                pki::write_atomic(&out.join(format!("{name}-key.pem")), cert.key_pem.as_bytes(), 0o600)
                    .with_context(|| format!("write {}", out.join(format!("{name}-key.pem")).display()))?;
                pki::write_atomic(&out.join(format!("{name}.pem")), cert.cert_pem.as_bytes(), 0o644)
                    .with_context(|| format!("write {}", out.join(format!("{name}.pem")).display()))?;
                pki::write_atomic(&out.join("ca.pem"), ca.cert_pem().as_bytes(), 0o644)
                    .with_context(|| format!("write {}", out.join("ca.pem").display()))?;
                let not_after = crate::fleet::rfc3339(cert.row.not_after);
                audit
                    .record("admin_cert.issued", "cli", None, None, json!({"name": name, "role": role, "serial": cert.row.serial, "not_after": not_after}))
                    .await;
                println!(
                    "admin certificate {} for {name:?} in {} (valid until {not_after})",
                    cert.row.serial,
                    out.display(),
                );
            }
            AdminCertCmd::List { output } => {
                let rows: Vec<Value> = db
                    .list_admin_certs()
                    .await?
                    .into_iter()
                    .map(|r| {
                        json!({"serial": r.serial, "name": r.name, "role": r.role, "created_at": crate::fleet::rfc3339(r.created_at),
                               "not_after": crate::fleet::rfc3339(r.not_after), "revoked": r.revoked_at.is_some(),
                               "revoked_at": r.revoked_at.map(crate::fleet::rfc3339)})
                    })
                    .collect();
                render::admin_certs(*output, &rows)?;
            }
            AdminCertCmd::Revoke { serial_or_name } => {
                let rows = certs::revoke(&db, serial_or_name).await?;
                if rows.is_empty() {
                    return Err(CliError::NotFound(format!(
                        "no admin certificate with serial or name {serial_or_name:?} (see `admin-cert list`)"
                    ))
                    .into());
                }
                for r in &rows {
                    audit
                        .record("admin_cert.revoked", "cli", None, None, json!({"name": r.name, "serial": r.serial}))
                        .await;
                    println!("admin certificate {} ({}) revoked", r.serial, r.name);
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    db.close().await;
    r
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
