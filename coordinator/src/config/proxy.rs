//! `[proxy]`: which peers are reverse proxies whose `X-Forwarded-*` and
//! forward-auth identity headers are believed, and `[roles]`: which of a
//! person's groups (from a forward-auth proxy) give which role.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::admin::Role;

/// Reverse proxies in front of the HTTP listener (`[proxy]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Peers, as addresses or CIDRs, whose `X-Forwarded-For`,
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` are honoured; from any
    /// other peer they are ignored. Empty (default): no proxy is trusted.
    pub trusted: Vec<String>,
    /// Forward auth: the header a trusted proxy sets to the signed-in
    /// person's name (the Authelia/Traefik pattern: `Remote-User`). Unset
    /// (default): identity headers are never read.
    pub user_header: Option<String>,
    /// The header with the person's groups, comma-separated.
    pub groups_header: String,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            trusted: Vec::new(),
            user_header: None,
            groups_header: "Remote-Groups".into(),
        }
    }
}

/// Which groups give which role (`[roles]`): a person gets the highest role
/// any of their groups is listed under; none: no access.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RolesConfig {
    pub admin: Vec<String>,
    pub operator: Vec<String>,
    pub viewer: Vec<String>,
}

impl RolesConfig {
    /// The highest role one of `groups` is mapped to.
    pub fn role_for<'a>(&self, groups: impl IntoIterator<Item = &'a str> + Clone) -> Option<Role> {
        [
            (Role::Admin, &self.admin),
            (Role::Operator, &self.operator),
            (Role::Viewer, &self.viewer),
        ]
        .into_iter()
        .find(|(_, listed)| {
            groups
                .clone()
                .into_iter()
                .any(|g| listed.iter().any(|l| l == g))
        })
        .map(|(role, _)| role)
    }
}

/// A `trusted` entry: an address (a /32 or /128) or a CIDR.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is neither an IP address nor a CIDR (e.g. 10.0.0.0/8)"))
}

impl ProxyConfig {
    /// The trusted networks; every entry was checked by [`Self::validate`].
    pub fn trusted_nets(&self) -> Vec<IpNet> {
        self.trusted
            .iter()
            .filter_map(|s| parse_net(s).ok())
            .collect()
    }

    /// Every problem named with its key.
    pub fn validate(&self, roles: &RolesConfig) -> Result<(), (&'static str, String)> {
        for t in &self.trusted {
            parse_net(t).map_err(|e| ("proxy.trusted", e))?;
        }
        for (key, h) in [
            ("proxy.user_header", self.user_header.as_deref()),
            ("proxy.groups_header", Some(self.groups_header.as_str())),
        ] {
            if let Some(h) = h
                && axum::http::HeaderName::from_bytes(h.as_bytes()).is_err()
            {
                return Err((key, format!("{h:?} is not an HTTP header name")));
            }
        }
        if self.user_header.is_some() && self.trusted.is_empty() {
            return Err((
                "proxy.user_header",
                "needs proxy.trusted: identity headers are only believed from trusted proxies"
                    .into(),
            ));
        }
        for (key, groups) in [
            ("roles.admin", &roles.admin),
            ("roles.operator", &roles.operator),
            ("roles.viewer", &roles.viewer),
        ] {
            if groups.iter().any(|g| g.trim().is_empty()) {
                return Err((key, "group names must not be empty".into()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_mapped_group_wins_and_no_group_is_no_role() {
        let roles = RolesConfig {
            admin: vec!["autogit-admins".into()],
            operator: vec!["sre".into()],
            viewer: vec!["staff".into(), "sre".into()],
        };
        assert_eq!(roles.role_for(["staff", "sre"]), Some(Role::Operator));
        assert_eq!(roles.role_for(["autogit-admins"]), Some(Role::Admin));
        assert_eq!(roles.role_for(["staff"]), Some(Role::Viewer));
        assert_eq!(roles.role_for(["guests"]), None);
        assert_eq!(roles.role_for([]), None);
    }

    #[test]
    fn every_problem_names_its_key() {
        let roles = RolesConfig::default();
        let mut p = ProxyConfig {
            trusted: vec!["127.0.0.1".into(), "10.0.0.0/8".into(), "::1".into()],
            ..Default::default()
        };
        assert_eq!(p.validate(&roles), Ok(()));
        assert_eq!(p.trusted_nets().len(), 3);
        p.trusted.push("10.0.0.0/33".into());
        assert_eq!(p.validate(&roles).unwrap_err().0, "proxy.trusted");
        let p = ProxyConfig {
            user_header: Some("Remote-User".into()),
            ..Default::default()
        };
        let (key, problem) = p.validate(&roles).unwrap_err();
        assert_eq!(key, "proxy.user_header");
        assert!(problem.contains("needs proxy.trusted"), "{problem}");
        let p = ProxyConfig {
            trusted: vec!["127.0.0.1".into()],
            user_header: Some("Remote User".into()),
            ..Default::default()
        };
        assert_eq!(p.validate(&roles).unwrap_err().0, "proxy.user_header");
        let bad = RolesConfig {
            viewer: vec![" ".into()],
            ..Default::default()
        };
        assert_eq!(
            ProxyConfig::default().validate(&bad).unwrap_err().0,
            "roles.viewer"
        );
    }
}
