//! `autogit-gitlab-sim`: the GitLab simulator as a standalone process.
//!
//! `autogit-gitlab-sim --listen 127.0.0.1:0 --admin-token TOKEN` prints
//! `listening on http://127.0.0.1:PORT` once it accepts connections, then serves until
//! SIGINT or SIGTERM.

#![forbid(unsafe_code)]

use std::io::Write;

use autogit_tests::gitlab_sim::{SimConfig, SimHandle, serve};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "autogit-gitlab-sim",
    about = "GitLab API simulator for AutoGit tests"
)]
struct Args {
    /// Address to listen on (use port 0 for a free port). Loopback is recommended.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Personal access token of the simulated `root` administrator.
    #[arg(long, env = "AUTOGIT_SIM_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: String,
    /// Instance URL used in links and webhooks (default: `http://<bound address>`).
    #[arg(long)]
    external_url: Option<String>,
    /// Webhook delivery timeout in seconds.
    #[arg(long, default_value_t = 10)]
    webhook_timeout_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.admin_token.trim().is_empty() {
        anyhow::bail!("--admin-token must not be empty");
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("bind {}: {e}", args.listen))?;
    let addr = listener.local_addr()?;
    let handle = SimHandle::new(SimConfig {
        admin_token: args.admin_token,
        external_url: args.external_url,
        webhook_timeout: std::time::Duration::from_secs(args.webhook_timeout_secs),
        ..SimConfig::default()
    });
    println!("listening on http://{addr}");
    std::io::stdout().flush()?;
    serve(listener, handle, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    match term {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
