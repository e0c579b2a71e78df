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

/// Open a gRPC channel to `addr` (HOST:PORT) over TLS with `tls`. The server
/// certificate is verified for [`COORDINATOR_NAME`].
pub async fn connect(addr: &str, tls: Arc<ClientConfig>, timeout: Duration) -> Result<Channel, ConnectError> {
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
