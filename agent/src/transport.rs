//! The agent's one outbound connection: TCP + rustls (ring) + HTTP/2 under
//! tonic. The agent opens no listening port.

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

/// The coordinator that last answered, tried first next time: with several
/// replicas, the leader (followers turn agents away).
static LAST_GOOD: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The addresses in `addrs` (HOST:PORT, comma-separated for several
/// coordinator replicas), the one that last answered first.
pub fn candidates(addrs: &str) -> Vec<String> {
    let mut list: Vec<String> = addrs.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect();
    if let Some(good) = LAST_GOOD.lock().ok().and_then(|g| g.clone())
        && let Some(i) = list.iter().position(|a| *a == good)
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
/// comma-separated) that completes a TLS handshake with `tls`. The server
/// certificate is verified for [`COORDINATOR_NAME`]. A CA pin mismatch
/// stops at once; any other failure moves on to the next address.
pub async fn connect(addrs: &str, tls: Arc<ClientConfig>, timeout: Duration) -> Result<Channel, ConnectError> {
    let mut last = None;
    for addr in candidates(addrs) {
        match connect_one(&addr, tls.clone(), timeout).await {
            Ok(channel) => {
                if let Ok(mut g) = LAST_GOOD.lock() {
                    *g = Some(addr);
                }
                return Ok(channel);
            }
            Err(ConnectError::PinMismatch) => return Err(ConnectError::PinMismatch),
            Err(e) => {
                tracing::debug!(coordinator = %addr, error = %e, "coordinator did not answer; trying the next");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| ConnectError::Unreachable { addr: addrs.into(), detail: "no coordinator address".into() }))
}

async fn connect_one(addr: &str, tls: Arc<ClientConfig>, timeout: Duration) -> Result<Channel, ConnectError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| ConnectError::Unreachable { addr: addr.into(), detail: format!("bad address: {e}") })?
        .connect_timeout(timeout)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let target = addr.to_string();
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let target = target.clone();
        let tls = tls.clone();
        async move {
            let tcp = TcpStream::connect(&target).await?;
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

    #[test]
    fn several_coordinators_are_tried_the_last_good_one_first() {
        forget_last_good();
        assert_eq!(candidates(" a:1, b:2 ,,c:3"), ["a:1", "b:2", "c:3"]);
        *LAST_GOOD.lock().unwrap() = Some("c:3".into());
        assert_eq!(candidates("a:1,b:2,c:3"), ["c:3", "a:1", "b:2"]);
        assert_eq!(candidates("a:1,b:2"), ["a:1", "b:2"], "a last good one not in the list");
        forget_last_good();
        assert_eq!(candidates("a:1,b:2,c:3"), ["a:1", "b:2", "c:3"]);
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
