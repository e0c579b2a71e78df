//! Optional TLS on the HTTP listener (`http_tls = true`). With it, operators
//! may authenticate with an admin client certificate (URI SAN
//! `spiffe://autogit/admin/<name>`, issued by `autogit-coordinator
//! admin-cert create`) instead of a bearer token. Client certificates are
//! optional at the TLS layer (GitLab's webhook sender and token users have
//! none) but any presented one must chain to the cluster CA.

use std::net::SocketAddr;

use autogit_certs::identity::Principal;

/// What handlers learn about the connection (`ConnectInfo<PeerInfo>`).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// The operator named by a verified admin client certificate.
    pub admin: Option<String>,
}

/// The operator named by the verified client certificate of `conn`, if any.
pub fn admin_principal(conn: &rustls::ServerConnection) -> Option<String> {
    conn.peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| autogit_certs::CertInfo::from_der(leaf).ok())
        .and_then(|info| match info.principal {
            Some(Principal::Admin(name)) => Some(name),
            _ => None,
        })
}
