//! Optional TLS on the HTTP listener (`http_tls = true`). With it, operators
//! may authenticate with an admin client certificate (URI SAN
//! `spiffe://autogit/admin/<name>`, issued by `autogit-coordinator
//! admin-cert create`) instead of a bearer token. Client certificates are
//! optional at the TLS layer (GitLab's webhook sender and token users have
//! none) but any presented one must chain to the cluster CA.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use autogit_certs::identity::Principal;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What handlers learn about the connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// The operator named by a verified admin client certificate.
    pub admin: Option<String>,
}

/// A TCP listener whose connections are TLS; handshakes run concurrently.
pub struct TlsListener {
    local: SocketAddr,
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept HTTPS connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    break;
                }
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send((s, peer)).await;
                        }
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "HTTPS handshake refused"),
                        Err(_) => tracing::info!(%peer, "HTTPS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { local, rx })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept task only ends with the process; never resolve.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        let admin = stream
            .io()
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|leaf| autogit_certs::CertInfo::from_der(leaf).ok())
            .and_then(|info| match info.principal {
                Some(Principal::Admin(name)) => Some(name),
                _ => None,
            });
        PeerInfo {
            addr: *stream.remote_addr(),
            admin,
        }
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        PeerInfo {
            addr: *stream.remote_addr(),
            admin: None,
        }
    }
}
