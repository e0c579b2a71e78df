//! Requests that come through a reverse proxy: what a trusted proxy says
//! about the client (`X-Forwarded-For`, `-Proto`, `-Host`) and, with
//! forward auth, who the person is (`proxy.user_header`, `Remote-User`
//! by default in Authelia and Traefik setups) and which groups they are in.
//!
//! Only peers in `proxy.trusted` are believed. From any other peer the
//! forwarded headers are ignored, and an identity header is ignored *and*
//! logged: something is trying to sign in by header, or a proxy is missing
//! from the list.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, HeaderName};
use ipnet::IpNet;

use crate::admin::Actor;
use crate::config::proxy::{ProxyConfig, RolesConfig};

/// The proxy settings in force, parsed once.
#[derive(Debug, Clone, Default)]
pub struct ProxyTrust {
    trusted: Vec<IpNet>,
    user_header: Option<HeaderName>,
    groups_header: Option<HeaderName>,
    roles: RolesConfig,
}

/// The request's client as the coordinator believes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// The client's address: the peer's, or through trusted proxies the
    /// nearest address in `X-Forwarded-For` that is not a trusted proxy.
    pub ip: IpAddr,
    /// The host the client asked for (`X-Forwarded-Host` through a trusted
    /// proxy; else `None`: the request's own `Host`).
    pub host: Option<String>,
    /// `X-Forwarded-Proto` through a trusted proxy.
    pub proto: Option<String>,
    /// The peer is a trusted proxy.
    pub via_proxy: bool,
}

/// What forward auth says about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyIdentity {
    /// Forward auth is off, or the request carries no identity header.
    None,
    /// A trusted proxy names a person whose groups map to a role.
    Person(Actor),
    /// A trusted proxy names a person none of whose groups has a role.
    NoRole { user: String, groups: Vec<String> },
    /// An identity header from a peer that is not a trusted proxy: ignored.
    Untrusted { user: String },
}

fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

impl ProxyTrust {
    pub fn new(cfg: &ProxyConfig, roles: &RolesConfig) -> Self {
        ProxyTrust {
            trusted: cfg.trusted_nets(),
            user_header: cfg
                .user_header
                .as_deref()
                .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
            groups_header: HeaderName::from_bytes(cfg.groups_header.as_bytes()).ok(),
            roles: roles.clone(),
        }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.trusted.iter().any(|n| n.contains(&ip))
    }

    /// The client of a request from `peer`.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> Client {
        if !self.trusts(peer.ip()) {
            return Client {
                ip: peer.ip(),
                host: None,
                proto: None,
                via_proxy: false,
            };
        }
        // Right to left: the first hop a trusted proxy did not add.
        let forwarded_for: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse().ok())
            .collect();
        let ip = forwarded_for
            .iter()
            .rev()
            .find(|a| !self.trusts(**a))
            .or(forwarded_for.first())
            .copied()
            .unwrap_or(peer.ip());
        let first = |name: &'static str| {
            header(headers, &HeaderName::from_static(name))
                .and_then(|v| v.split(',').next())
                .map(|v| v.trim().to_owned())
        };
        Client {
            ip,
            host: first("x-forwarded-host"),
            proto: first("x-forwarded-proto"),
            via_proxy: true,
        }
    }

    /// Who forward auth says the person is, for a request from `peer`.
    pub fn identity(&self, peer: SocketAddr, headers: &HeaderMap) -> ProxyIdentity {
        let Some(name) = &self.user_header else {
            return ProxyIdentity::None;
        };
        let Some(user) = header(headers, name) else {
            return ProxyIdentity::None;
        };
        let user: String = user.chars().take(128).collect();
        if !self.trusts(peer.ip()) {
            return ProxyIdentity::Untrusted { user };
        }
        let groups: Vec<String> = self
            .groups_header
            .as_ref()
            .and_then(|g| header(headers, g))
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        match self.roles.role_for(groups.iter().map(String::as_str)) {
            Some(role) => ProxyIdentity::Person(Actor(format!("proxy:{user}"), role)),
            None => ProxyIdentity::NoRole { user, groups },
        }
    }
}

impl ProxyIdentity {
    /// The 403 message for a person without a role.
    pub fn no_role_message(user: &str, groups: &[String]) -> String {
        if groups.is_empty() {
            format!("proxy:{user} has no AutoGit role: the proxy sent no groups")
        } else {
            format!(
                "proxy:{user} has no AutoGit role: none of the groups {} is listed in [roles]",
                groups.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::Role;

    fn trust() -> ProxyTrust {
        ProxyTrust::new(
            &ProxyConfig {
                trusted: vec!["127.0.0.1".into(), "10.0.0.0/8".into()],
                user_header: Some("Remote-User".into()),
                ..Default::default()
            },
            &RolesConfig {
                operator: vec!["sre".into()],
                viewer: vec!["staff".into()],
                ..Default::default()
            },
        )
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    const PROXY: &str = "127.0.0.1:40000";
    const STRANGER: &str = "192.0.2.7:40000";

    #[test]
    fn forwarded_headers_count_only_from_a_trusted_proxy() {
        let h = headers(&[
            ("x-forwarded-for", "198.51.100.1, 10.1.2.3"),
            ("x-forwarded-host", "autogit.example"),
            ("x-forwarded-proto", "https"),
        ]);
        let c = trust().client(PROXY.parse().unwrap(), &h);
        assert_eq!(
            c.ip,
            "198.51.100.1".parse::<IpAddr>().unwrap(),
            "the hop before our proxies"
        );
        assert_eq!(c.host.as_deref(), Some("autogit.example"));
        assert_eq!(c.proto.as_deref(), Some("https"));
        assert!(c.via_proxy);
        let c = trust().client(STRANGER.parse().unwrap(), &h);
        assert_eq!(
            c.ip,
            "192.0.2.7".parse::<IpAddr>().unwrap(),
            "a stranger's X-Forwarded-For is ignored"
        );
        assert_eq!((c.host, c.proto, c.via_proxy), (None, None, false));
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:1".parse().unwrap();
        assert!(
            trust().client(mapped, &h).via_proxy,
            "IPv4-mapped IPv6 peers count as IPv4"
        );
    }

    #[test]
    fn an_identity_header_signs_in_only_through_a_trusted_proxy_with_a_mapped_group() {
        let h = headers(&[("remote-user", "alice"), ("remote-groups", "staff, sre")]);
        assert_eq!(
            trust().identity(PROXY.parse().unwrap(), &h),
            ProxyIdentity::Person(Actor("proxy:alice".into(), Role::Operator))
        );
        assert_eq!(
            trust().identity(STRANGER.parse().unwrap(), &h),
            ProxyIdentity::Untrusted {
                user: "alice".into()
            }
        );
        let h = headers(&[("remote-user", "mallory"), ("remote-groups", "guests")]);
        assert_eq!(
            trust().identity(PROXY.parse().unwrap(), &h),
            ProxyIdentity::NoRole {
                user: "mallory".into(),
                groups: vec!["guests".into()]
            }
        );
        assert_eq!(
            trust().identity(PROXY.parse().unwrap(), &HeaderMap::new()),
            ProxyIdentity::None
        );
        let off = ProxyTrust::new(
            &ProxyConfig {
                trusted: vec!["127.0.0.1".into()],
                ..Default::default()
            },
            &RolesConfig::default(),
        );
        let h = headers(&[("remote-user", "alice")]);
        assert_eq!(
            off.identity(PROXY.parse().unwrap(), &h),
            ProxyIdentity::None,
            "forward auth off"
        );
    }
}
