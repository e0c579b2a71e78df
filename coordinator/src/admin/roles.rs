//! What an operator may do: three roles, each allowed what the one before
//! it may, and more.
//!
//! * `viewer` reads everything the admin API and the dashboard show: agents,
//!   runners, pools, jobs, join tokens (never their secrets), events.
//! * `operator` may also cordon, uncordon and drain agents and stop runners:
//!   the day-to-day of keeping a fleet running.
//! * `admin` may also revoke agents, change trust labels, create and revoke
//!   join tokens and reload the config: what widens or narrows who gets
//!   which work.
//!
//! Every admin token and admin certificate has a role (`--role`, default
//! `admin`, which is what every token and certificate made before roles
//! existed gets); a dashboard session has its token's. Each API route names
//! the least role it needs (`http/api.rs::routes`) and the server checks it
//! on every request; the dashboard only hides what the role may not do.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// An operator's role, ordered by what it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is none of `viewer`, `operator`, `admin`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected viewer, operator or admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s.trim())
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_allows_what_the_ones_before_it_do() {
        assert!(Role::Admin.allows(Role::Operator) && Role::Admin.allows(Role::Viewer));
        assert!(Role::Operator.allows(Role::Viewer) && !Role::Operator.allows(Role::Admin));
        assert!(!Role::Viewer.allows(Role::Operator));
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert_eq!(
            "root".parse::<Role>().unwrap_err().to_string(),
            "unknown role \"root\": expected viewer, operator or admin"
        );
    }
}
