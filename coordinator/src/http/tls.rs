//! Optional TLS on the HTTP listener (`http_tls = true`). With it, operators
//! may authenticate with an admin client certificate (URI SAN
//! `spiffe://autogit/admin/<name>`, issued by `autogit-coordinator
//! admin-cert create`) instead of a bearer token. Client certificates are
//! optional at the TLS layer (GitLab's webhook sender and token users have
//! none) but any presented one must chain to the cluster CA. Whether it is
//! still good (recorded, not revoked) is checked per request in
//! `http/auth.rs` ([`crate::admin::certs::verify`]).

use std::net::SocketAddr;

use autogit_certs::identity::Principal;

use crate::admin::certs::PresentedCert;

/// What handlers learn about the connection (`ConnectInfo<PeerInfo>`).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// A verified admin client certificate (name and serial).
    pub admin: Option<PresentedCert>,
}

/// The admin certificate `conn` presented (verified to chain to the
/// cluster CA by the handshake), if any.
pub fn admin_principal(conn: &rustls::ServerConnection) -> Option<PresentedCert> {
    conn.peer_certificates()
        .and_then(|c| c.first())
        .and_then(|leaf| autogit_certs::CertInfo::from_der(leaf).ok())
        .and_then(|info| match info.principal {
            Some(Principal::Admin(name)) => Some(PresentedCert {
                name,
                serial: info.serial_hex,
            }),
            _ => None,
        })
}
