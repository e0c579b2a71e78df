//! The HTTP listener: HTTP/1.1 over hyper's connection builder (plain or
//! TLS), with the limits `axum::serve` cannot set:
//!
//! - at most `http_max_connections` connections at once; one over the cap is
//!   accepted and closed at once (so the kernel's backlog does not fill);
//! - a request's head must arrive within `http_header_read_timeout`, which
//!   also bounds how long a keep-alive connection waits for its next request;
//! - a connection with no byte read or written for `http_idle_timeout` is
//!   closed (a stalled body, a client that stops reading);
//! - TLS handshakes must finish within `tls_handshake_timeout`.
//!
//! On shutdown the listener stops accepting, every connection finishes the
//! request in progress and closes, and [`serve`] returns once all are gone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::tls::{PeerInfo, admin_principal};
use crate::config::LimitsConfig;
use crate::edge::{ConnLimit, IdleIo, RefusalLog};

/// The HTTP listener's limits (from `[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub handshake_timeout: Duration,
    pub refusal_log_interval: Duration,
}

impl From<&LimitsConfig> for HttpLimits {
    fn from(l: &LimitsConfig) -> Self {
        HttpLimits {
            max_connections: l.http_max_connections,
            header_read_timeout: l.http_header_read_timeout,
            idle_timeout: l.http_idle_timeout,
            handshake_timeout: l.tls_handshake_timeout,
            refusal_log_interval: l.refusal_log_interval,
        }
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        (&LimitsConfig::default()).into()
    }
}

/// Serve `router` on `listener` until `shutdown`, over TLS when `tls` is given.
pub async fn serve(
    listener: Arc<TcpListener>,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let conns = ConnLimit::new("http", limits.max_connections);
    let refusals = Arc::new(RefusalLog::new(limits.refusal_log_interval, 4096));
    let handshakes = Arc::new(RefusalLog::new(limits.refusal_log_interval, 4096));
    let acceptor = tls.map(TlsAcceptor::from);
    let tracker = TaskTracker::new();
    let mut last_accept_error: Option<Instant> = None;
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // E.g. out of file descriptors: say so, but not ten times a second.
                    if last_accept_error.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(error = %e, "accept HTTP connection (further errors for 10 s not logged)");
                        last_accept_error = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(permit) = conns.try_acquire() else {
            if let Some(suppressed) = refusals.admit(&peer.ip(), Instant::now()) {
                tracing::warn!(%peer, max = conns.max(), suppressed, "HTTP connection limit reached; closing new connection");
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let io = IdleIo::new(tcp, Some(limits.idle_timeout), vec![permit]);
        let router = router.clone();
        let shutdown = shutdown.clone();
        match acceptor.clone() {
            None => {
                let info = PeerInfo {
                    addr: peer,
                    admin: None,
                };
                tracker.spawn(connection(io, info, router, limits, shutdown));
            }
            Some(acceptor) => {
                let handshakes = handshakes.clone();
                tracker.spawn(async move {
                    let stream = match tokio::time::timeout(
                        limits.handshake_timeout,
                        acceptor.accept(io),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            if let Some(suppressed) = handshakes.admit(&peer.ip(), Instant::now()) {
                                tracing::info!(%peer, error = %e, suppressed, "HTTPS handshake refused");
                            }
                            return;
                        }
                        Err(_) => {
                            if let Some(suppressed) = handshakes.admit(&peer.ip(), Instant::now()) {
                                tracing::info!(%peer, suppressed, "HTTPS handshake timed out");
                            }
                            return;
                        }
                    };
                    let info = PeerInfo {
                        addr: peer,
                        admin: admin_principal(stream.get_ref().1),
                    };
                    connection(stream, info, router, limits, shutdown).await;
                });
            }
        }
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Serve one connection until it closes, times out, or shutdown has let its
/// request in progress finish.
async fn connection<I>(
    io: I,
    peer: PeerInfo,
    router: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let addr: SocketAddr = peer.addr;
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer.clone()));
        router.clone().oneshot(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // Timeouts and resets are the peer's business: debug only.
        tracing::debug!(peer = %addr, error = %e, "HTTP connection closed");
    }
}
