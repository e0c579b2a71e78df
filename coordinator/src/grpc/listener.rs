//! The TLS listener under the gRPC server. Handshakes run concurrently with a
//! timeout, so a slow or hostile client cannot stall the accept loop. A client
//! certificate that does not chain to the cluster CA fails here, before any
//! RPC is reachable.

use std::sync::Arc;
use std::time::Duration;

use autogit_proto::v1 as pb;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::{EnrollmentService, FleetService};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A stream of established TLS connections.
pub type TlsIncoming = ReceiverStream<std::io::Result<TlsStream<TcpStream>>>;

fn incoming(listener: TcpListener, tls: Arc<ServerConfig>, shutdown: CancellationToken) -> TlsIncoming {
    let (tx, rx) = mpsc::channel(128);
    let acceptor = TlsAcceptor::from(tls);
    tokio::spawn(async move {
        let mut last_warned = None;
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // E.g. out of file descriptors: say so, but not ten times a second.
                        if last_warned.is_none_or(|t: std::time::Instant| t.elapsed() > Duration::from_secs(10)) {
                            tracing::warn!(error = %e, "accept gRPC connection (further errors for 10 s not logged)");
                            last_warned = Some(std::time::Instant::now());
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Serve both services on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    enrollment: EnrollmentService,
    fleet: FleetService,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let incoming = incoming(listener, tls, shutdown.clone());
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(pb::enrollment_server::EnrollmentServer::new(enrollment))
        .add_service(pb::fleet_server::FleetServer::new(fleet))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}
