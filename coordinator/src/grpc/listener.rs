//! The TLS listener under the gRPC server. Handshakes run concurrently with a
//! timeout, so a slow or hostile client cannot stall the accept loop. A client
//! certificate that does not chain to the cluster CA fails here, before any
//! RPC is reachable.
//!
//! Connection limits (`[limits]`): at most `grpc_max_connections` at once,
//! counted from accept (a handshake in progress holds a slot); of those, at
//! most `grpc_max_enrollment_connections` without a client certificate (they
//! can only enroll), which are also closed once idle for
//! `grpc_enrollment_idle_timeout`. A connection over a cap is closed at once.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use autogit_proto::v1 as pb;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::{EnrollmentService, FleetService};
use crate::config::LimitsConfig;
use crate::edge::{ConnLimit, IdleIo, RefusalLog};

/// The server's HTTP/2 keep-alive ping interval. Enrollment-only idle
/// timeouts must be shorter, or the pings would keep such connections open.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// One established connection, holding its connection-cap permits.
pub type GrpcIo = IdleIo<TlsStream<TcpStream>>;

/// A stream of established TLS connections.
pub type TlsIncoming = ReceiverStream<std::io::Result<GrpcIo>>;

/// The gRPC listener's limits (from `[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct GrpcLimits {
    pub max_connections: usize,
    pub max_enrollment_connections: usize,
    pub enrollment_idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub refusal_log_interval: Duration,
}

impl From<&LimitsConfig> for GrpcLimits {
    fn from(l: &LimitsConfig) -> Self {
        GrpcLimits {
            max_connections: l.grpc_max_connections,
            max_enrollment_connections: l.grpc_max_enrollment_connections,
            enrollment_idle_timeout: l.grpc_enrollment_idle_timeout,
            handshake_timeout: l.tls_handshake_timeout,
            refusal_log_interval: l.refusal_log_interval,
        }
    }
}

impl Default for GrpcLimits {
    fn default() -> Self {
        (&LimitsConfig::default()).into()
    }
}

struct Caps {
    all: ConnLimit,
    enrollment: ConnLimit,
    refusals: RefusalLog<IpAddr>,
    handshakes: RefusalLog<IpAddr>,
    limits: GrpcLimits,
}

impl Caps {
    fn refused(&self, peer: SocketAddr, what: &str, cap: &ConnLimit) {
        if let Some(suppressed) = self.refusals.admit(&peer.ip(), Instant::now()) {
            tracing::warn!(%peer, max = cap.max(), suppressed, "{what} connection limit reached; closing new connection");
        }
    }
}

fn incoming(
    listener: Arc<TcpListener>,
    tls: Arc<ServerConfig>,
    limits: GrpcLimits,
    shutdown: CancellationToken,
) -> TlsIncoming {
    let (tx, rx) = mpsc::channel(128);
    let acceptor = TlsAcceptor::from(tls);
    let caps = Arc::new(Caps {
        all: ConnLimit::new("grpc", limits.max_connections),
        enrollment: ConnLimit::new("grpc-enrollment", limits.max_enrollment_connections),
        refusals: RefusalLog::new(limits.refusal_log_interval, 4096),
        handshakes: RefusalLog::new(limits.refusal_log_interval, 4096),
        limits,
    });
    tokio::spawn(async move {
        let mut last_warned = None;
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // E.g. out of file descriptors: say so, but not ten times a second.
                        if last_warned.is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(10)) {
                            tracing::warn!(error = %e, "accept gRPC connection (further errors for 10 s not logged)");
                            last_warned = Some(Instant::now());
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Some(permit) = caps.all.try_acquire() else {
                caps.refused(peer, "gRPC", &caps.all);
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let caps = caps.clone();
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(
                    caps.limits.handshake_timeout,
                    acceptor.accept(tcp),
                )
                .await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        if let Some(suppressed) = caps.handshakes.admit(&peer.ip(), Instant::now())
                        {
                            tracing::info!(%peer, error = %e, suppressed, "TLS handshake refused");
                        }
                        return;
                    }
                    Err(_) => {
                        if let Some(suppressed) = caps.handshakes.admit(&peer.ip(), Instant::now())
                        {
                            tracing::info!(%peer, suppressed, "TLS handshake timed out");
                        }
                        return;
                    }
                };
                let anonymous = stream.get_ref().1.peer_certificates().is_none();
                let io = if anonymous {
                    let Some(enrolling) = caps.enrollment.try_acquire() else {
                        caps.refused(peer, "gRPC enrollment", &caps.enrollment);
                        return;
                    };
                    IdleIo::new(
                        stream,
                        Some(caps.limits.enrollment_idle_timeout),
                        vec![permit, enrolling],
                    )
                } else {
                    IdleIo::new(stream, None, vec![permit])
                };
                let _ = tx.send(Ok(io)).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Serve both services on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: Arc<TcpListener>,
    tls: Arc<ServerConfig>,
    limits: GrpcLimits,
    enrollment: EnrollmentService,
    fleet: FleetService,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = incoming(listener, tls, limits, shutdown.clone());
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(pb::enrollment_server::EnrollmentServer::new(enrollment))
        .add_service(pb::fleet_server::FleetServer::new(fleet))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}
