//! One simulated agent: enrollment and a session, speaking the real wire
//! protocol over its own TLS connection (`autogit-bench-fleet`,
//! `autogit-bench-failover`).

use std::time::Duration;

use anyhow::{Context, bail};
use autogit_agent::transport;
use autogit_certs::{JoinToken, csr, tls};
use autogit_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

/// TCP connect + TLS handshake bound.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued towards the coordinator per session.
const OUTBOUND: usize = 8;

/// What an enrolled agent holds. No `Debug`: it carries a private key.
pub struct Enrolled {
    pub hostname: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Generate a key and CSR, pin the CA from the token, trade token + CSR
/// for a certificate.
pub async fn enroll(
    addr: &str,
    token: &JoinToken,
    hostname: String,
) -> anyhow::Result<Enrolled> {
    let keys = csr::generate(&hostname).context("generate key and CSR")?;
    let tls = tls::enrollment_client_config(token.ca_fingerprint())
        .context("build enrollment TLS config")?;
    let channel = transport::connect(addr, tls, CONNECT_TIMEOUT)
        .await
        .context("connect for enrollment")?;
    let resp = pb::enrollment_client::EnrollmentClient::new(channel)
        .enroll(pb::EnrollRequest {
            token: token.expose(),
            csr_pem: keys.csr_pem,
            hostname: hostname.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("enroll: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    if resp.certificate_pem.is_empty() {
        bail!("enroll: the coordinator sent no certificate");
    }
    Ok(Enrolled {
        hostname,
        ca_pem: resp.ca_pem,
        cert_pem: resp.certificate_pem,
        key_pem: keys.key_pem,
    })
}

/// An open session: the sender towards the coordinator and its answers.
pub struct Session {
    pub out: mpsc::Sender<pb::AgentMessage>,
    pub inbound: Streaming<pb::CoordinatorMessage>,
    /// Kept so the connection lives as long as the session.
    _client: pb::fleet_client::FleetClient<Channel>,
}

fn hello(hostname: &str) -> pb::AgentMessage {
    let inventory = pb::Inventory {
        hostname: hostname.to_string(),
        os: "Debian GNU/Linux 12 (bookworm)".into(),
        kernel: "6.1.0-bench".into(),
        arch: std::env::consts::ARCH.into(),
        cpu_model: "bench CPU".into(),
        cpu_cores: 8,
        cpu_threads: 16,
        mem_total_bytes: 32 << 30,
        docker: Some(pb::DockerInfo {
            available: false,
            error: "simulated agent".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
            agent_version: concat!(env!("CARGO_PKG_VERSION"), "-bench").into(),
            inventory: Some(inventory),
            containers: Vec::new(),
        })),
    }
}

pub fn heartbeat() -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat {
            cpu_percent: 12.5,
            mem_used_bytes: 4 << 30,
            mem_total_bytes: 32 << 30,
            runner_containers: 0,
        })),
    }
}

/// Connect with the agent's own certificate, send `Hello` and wait for
/// `Welcome`. Returns the heartbeat interval the coordinator asked for.
pub async fn open(addr: &str, agent: &Enrolled) -> anyhow::Result<(Session, Duration)> {
    let tls = tls::agent_client_config(&agent.ca_pem, &agent.cert_pem, &agent.key_pem)
        .context("load agent certificate")?;
    let channel = transport::connect(addr, tls, CONNECT_TIMEOUT)
        .await
        .context("connect for session")?;
    let (out, rx) = mpsc::channel(OUTBOUND);
    out.try_send(hello(&agent.hostname))
        .context("queue Hello")?;
    let mut client = pb::fleet_client::FleetClient::new(channel);
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .map_err(|s| anyhow::anyhow!("open session: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    let interval = match inbound.message().await {
        Ok(Some(pb::CoordinatorMessage {
            msg: Some(pb::coordinator_message::Msg::Welcome(w)),
            ..
        })) => Duration::from_millis(u64::from(w.heartbeat_interval_ms)),
        Ok(Some(_)) => bail!("the coordinator's first message was not Welcome"),
        Ok(None) => bail!("the coordinator closed the session before Welcome"),
        Err(s) => bail!("session refused: {:?}: {}", s.code(), s.message()),
    };
    Ok((
        Session {
            out,
            inbound,
            _client: client,
        },
        interval,
    ))
}
