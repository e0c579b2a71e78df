//! The agent's one outbound connection: TCP + rustls (ring) + HTTP/2 under
//! tonic. The agent opens no listening port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use autogit_certs::tls::COORDINATOR_NAME;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

/// Why the coordinator could not be reached. `Display` is one line.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("coordinator CA does not match the fingerprint in the join token (refusing to send the token)")]
    PinMismatch,
    #[error("TLS handshake with coordinator at {addr} failed: {detail}")]
    Tls { addr: String, detail: String },
    #[error("cannot reach coordinator at {addr}: {detail}")]
    Unreachable { addr: String, detail: String },
}

/// The coordinator address that last answered, tried first next time: with
/// several replicas, the leader (followers turn agents away).
static LAST_GOOD: std::sync::Mutex<Option<SocketAddr>> = std::sync::Mutex::new(None);

/// The configured addresses in `addrs` (HOST:PORT, comma-separated for
/// several coordinator replicas).
pub fn configured(addrs: &str) -> Vec<String> {
    addrs.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect()
}

/// One socket address to try, with the configured address it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub configured: String,
    pub addr: SocketAddr,
}

impl Target {
    /// `host:port (ip:port)` when a name was resolved, else `ip:port`.
    fn label(&self) -> String {
        let ip = self.addr.to_string();
        if self.configured == ip { ip } else { format!("{} ({ip})", self.configured) }
    }
}

/// Every address the configured ones stand for, in order, without
/// duplicates (one DNS name for all replicas gives one target per
/// address), the one that last answered first.
pub fn order(resolved: Vec<Target>) -> Vec<Target> {
    let mut list: Vec<Target> = Vec::with_capacity(resolved.len());
    for t in resolved {
        if !list.iter().any(|o| o.addr == t.addr) {
            list.push(t);
        }
    }
    if let Some(good) = LAST_GOOD.lock().ok().and_then(|g| *g)
        && let Some(i) = list.iter().position(|t| t.addr == good)
    {
        list[..=i].rotate_right(1);
    }
    list
}

/// Forget which coordinator answered last (it turned out to be a deposed
/// leader): the next connect tries the list in order.
pub fn forget_last_good() {
    if let Ok(mut g) = LAST_GOOD.lock() {
        *g = None;
    }
}

/// Open a gRPC channel to the first of `addrs` (HOST:PORT, or several
/// comma-separated) that completes a TLS handshake with `tls`. A name is
/// looked up and every address it has is tried (one DNS name for all
/// replicas finds the leader among them). The server certificate is
/// verified for [`COORDINATOR_NAME`]. A CA pin mismatch stops at once; any
/// other failure moves on to the next address.
pub async fn connect(addrs: &str, tls: Arc<ClientConfig>, timeout: Duration) -> Result<Channel, ConnectError> {
    connect_via(addrs, tls, timeout, |a: String| async move {
        tokio::net::lookup_host(a).await.map(|found| found.collect())
    })
    .await
}

/// [`connect`] with the name lookup given (tests stand a fake DNS in).
async fn connect_via<R, F>(addrs: &str, tls: Arc<ClientConfig>, timeout: Duration, resolve: R) -> Result<Channel, ConnectError>
where
    R: Fn(String) -> F,
    F: std::future::Future<Output = std::io::Result<Vec<SocketAddr>>>,
{
    let mut last = None;
    let mut resolved = Vec::new();
    for configured in configured(addrs) {
        match tokio::time::timeout(timeout, resolve(configured.clone())).await {
            Ok(Ok(found)) => {
                resolved.extend(found.into_iter().map(|addr| Target { configured: configured.clone(), addr }))
            }
            Ok(Err(e)) => {
                last = Some(ConnectError::Unreachable { addr: configured, detail: format!("cannot resolve: {e}") })
            }
            Err(_) => {
                last = Some(ConnectError::Unreachable { addr: configured, detail: "the name lookup timed out".into() })
            }
        }
    }
    for target in order(resolved) {
        match connect_one(&target, tls.clone(), timeout).await {
            Ok(channel) => {
                if let Ok(mut g) = LAST_GOOD.lock() {
                    *g = Some(target.addr);
                }
                return Ok(channel);
            }
            Err(ConnectError::PinMismatch) => return Err(ConnectError::PinMismatch),
            Err(e) => {
                tracing::debug!(coordinator = %target.label(), error = %e, "coordinator did not answer; trying the next");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| ConnectError::Unreachable { addr: addrs.into(), detail: "no coordinator address".into() }))
}

async fn connect_one(target: &Target, tls: Arc<ClientConfig>, timeout: Duration) -> Result<Channel, ConnectError> {
    let addr = &target.label();
    let endpoint = Endpoint::from_shared(format!("http://{}", target.addr))
        .map_err(|e| ConnectError::Unreachable { addr: addr.into(), detail: format!("bad address: {e}") })?
        .connect_timeout(timeout)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let to = target.addr;
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let tls = tls.clone();
        async move {
            let tcp = TcpStream::connect(to).await?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(COORDINATOR_NAME).map_err(std::io::Error::other)?;
            let stream = TlsConnector::from(tls).connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    endpoint.connect_with_connector(connector).await.map_err(|e| classify(addr, &e))
}

/// Turn a connect error chain into one line naming the cause.
fn classify(addr: &str, err: &(dyn std::error::Error + 'static)) -> ConnectError {
    let mut deepest = err.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut tls = false;
    while let Some(e) = cur {
        let s = e.to_string();
        if s.contains(autogit_certs::tls::PIN_MISMATCH) {
            return ConnectError::PinMismatch;
        }
        if e.downcast_ref::<rustls::Error>().is_some() || s.contains("certificate") || s.contains("peer sent") {
            tls = true;
        }
        deepest = s;
        cur = e.source();
    }
    if tls {
        ConnectError::Tls { addr: addr.into(), detail: deepest }
    } else {
        ConnectError::Unreachable { addr: addr.into(), detail: deepest }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(configured: &str, addr: &str) -> Target {
        Target { configured: configured.into(), addr: addr.parse().unwrap() }
    }

    #[test]
    fn several_coordinators_are_tried_the_last_good_one_first() {
        forget_last_good();
        assert_eq!(configured(" a:1, b:2 ,,c:3"), ["a:1", "b:2", "c:3"]);
        let resolved = || {
            vec![
                t("10.0.0.1:1", "10.0.0.1:1"),
                t("ha.example:2", "10.0.0.2:2"),
                t("ha.example:2", "10.0.0.3:2"),
                t("again.example:2", "10.0.0.2:2"),
            ]
        };
        let addrs = |l: Vec<Target>| l.into_iter().map(|t| t.addr.to_string()).collect::<Vec<_>>();
        assert_eq!(addrs(order(resolved())), ["10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:2"], "one try per address");
        *LAST_GOOD.lock().unwrap() = Some("10.0.0.3:2".parse().unwrap());
        assert_eq!(addrs(order(resolved())), ["10.0.0.3:2", "10.0.0.1:1", "10.0.0.2:2"]);
        assert_eq!(addrs(order(resolved()[..2].to_vec())), ["10.0.0.1:1", "10.0.0.2:2"], "a last good one not in the list");
        forget_last_good();
        assert_eq!(addrs(order(resolved())), ["10.0.0.1:1", "10.0.0.2:2", "10.0.0.3:2"]);
        assert_eq!(t("ha.example:2", "10.0.0.2:2").label(), "ha.example:2 (10.0.0.2:2)");
        assert_eq!(t("10.0.0.2:2", "10.0.0.2:2").label(), "10.0.0.2:2");
    }

    /// A listener that counts connections and closes each at once, as a
    /// follower does.
    async fn turning_away() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(tcp);
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn one_name_with_several_addresses_is_tried_at_every_address() {
        // A fake DNS (the one thing not real here): `replicas.test` has two
        // addresses; both turn the agent away, so both must be tried.
        let (first, first_seen) = turning_away().await;
        let (second, second_seen) = turning_away().await;
        let tls = autogit_certs::tls::enrollment_client_config(autogit_certs::Fingerprint::of_der(b"x")).unwrap();
        let e = connect_via("replicas.test:7443", tls.clone(), Duration::from_secs(2), |name: String| async move {
            assert_eq!(name, "replicas.test:7443");
            Ok(vec![first, second])
        })
        .await
        .unwrap_err();
        assert_eq!(first_seen.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(second_seen.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(e.to_string().contains(&format!("replicas.test:7443 ({second})")), "{e}");

        // A name that does not resolve is named in the error.
        let e = connect_via("nowhere.test:7443", tls, Duration::from_secs(2), |_| async {
            Err(std::io::Error::other("no such host"))
        })
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "cannot reach coordinator at nowhere.test:7443: cannot resolve: no such host");
    }

    #[tokio::test]
    async fn a_coordinator_that_turns_agents_away_is_skipped_for_the_next() {
        // One address refuses (nothing listens), one accepts and closes at
        // once (a follower), one is the leader: here also a plain listener,
        // so the handshake fails there too and the error names the last.
        let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let follower = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let follower_addr = follower.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = follower.accept().await {
                drop(tcp);
            }
        });
        let tls = autogit_certs::tls::enrollment_client_config(autogit_certs::Fingerprint::of_der(b"x")).unwrap();
        let addrs = format!("{refused},{follower_addr}");
        let e = connect(&addrs, tls, Duration::from_secs(2)).await.unwrap_err();
        assert!(e.to_string().contains(&follower_addr.to_string()), "tried both, reports the last: {e}");
    }
}
