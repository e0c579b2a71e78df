//! Command-line interface of `autogit-agent`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Overrides};
use crate::docker::{DockerEngine, unavailable_info};
use crate::enroll::{self, JoinRequest};
use crate::inventory::Collector;
use crate::session::{self, RunError};
use crate::state::StateDir;

/// Exit code when the coordinator refuses this agent for good (revoked,
/// unknown): systemd's `RestartPreventExitStatus=` uses it to stop retrying.
pub const EXIT_REFUSED: u8 = 78;

#[derive(Debug, Parser)]
#[command(
    name = "autogit-agent",
    version,
    about = "AutoGit agent: turns this build host into GitLab runners on demand"
)]
pub struct Cli {
    /// TOML configuration file (default: /etc/autogit/agent.toml if present).
    #[arg(long, global = true, env = "AUTOGIT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where the agent keeps its key, certificate and identity.
    #[arg(long, global = true, env = "AUTOGIT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enroll this host with a join token (the key is generated here and never leaves it).
    Join {
        /// Coordinator gRPC address, HOST:PORT; several replicas comma-separated (HOST:PORT,HOST:PORT,...): the agent uses whichever leads.
        #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]")]
        coordinator: String,
        /// Join token from `autogit-coordinator token create` (or AUTOGIT_JOIN_TOKEN).
        #[arg(long, env = "AUTOGIT_JOIN_TOKEN", hide_env_values = true)]
        token: String,
        /// Enroll again even if this state dir already holds an identity.
        #[arg(long)]
        force: bool,
        /// Give up connecting after this long.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Hold the session with the coordinator and run runner containers.
    Run,
    /// Print this host's inventory as JSON, without connecting.
    Inventory,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("AUTOGIT_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,h2=warn,hyper=warn,tower=warn")
    });
    // bollard's debug output prints request bodies, and a container-create
    // body carries the runner token: never let it through, whatever
    // AUTOGIT_LOG says.
    let filter = match "bollard=warn".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: start async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(cli))
}

fn load_config(cli: &Cli) -> Result<Config, crate::config::ConfigError> {
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("AUTOGIT_"))
        .collect();
    Config::load(
        cli.config.as_deref(),
        &env,
        &Overrides {
            state_dir: cli.state_dir.clone(),
        },
    )
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::FAILURE
}

async fn run(cli: Cli) -> ExitCode {
    let cfg = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match cli.command {
        Command::Join {
            coordinator,
            token,
            force,
            timeout,
        } => {
            let hostname = nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default();
            let state = StateDir::new(&cfg.state_dir);
            match enroll::join(
                &state,
                JoinRequest {
                    coordinator: &coordinator,
                    token: &token,
                    hostname: &hostname,
                    force,
                    timeout,
                },
            )
            .await
            {
                Ok(id) => {
                    println!(
                        "enrolled as agent {id}; state in {}",
                        cfg.state_dir.display()
                    );
                    println!(
                        "start it with: autogit-agent run --state-dir {}",
                        cfg.state_dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::Run => {
            let shutdown = CancellationToken::new();
            tokio::spawn(signal_watch(shutdown.clone()));
            match session::run(cfg, shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e @ RunError::Refused(_)) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_REFUSED)
                }
                Err(e) => fail(e),
            }
        }
        Command::Inventory => {
            let collector = Arc::new(Collector::new(session::inventory_options(&cfg)));
            let (engine, err) = match DockerEngine::connect(cfg.docker.socket.as_deref()).await {
                Ok(e) => (Some(e), None),
                Err(e) => (None, Some(unavailable_info(&e).error.unwrap_or_default())),
            };
            let inv = session::collect_inventory(collector, engine.as_ref(), err.as_deref()).await;
            match serde_json::to_string_pretty(&inv) {
                Ok(s) => {
                    println!("{s}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}

async fn signal_watch(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    shutdown.cancel();
}
