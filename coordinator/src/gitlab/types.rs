//! Small GitLab records: the token's user, the instance version, projects.
//!
//! Only the fields AutoGit uses are kept; everything else in GitLab's answer
//! is ignored, and fields GitLab may send as `null` are `Option`s.

use serde::{Deserialize, Serialize};

/// `GET /user`: who the token belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// User id.
    pub id: u64,
    /// Login name.
    pub username: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// `active`, `blocked`, ...
    #[serde(default)]
    pub state: Option<String>,
    /// Present (and true) only for administrators.
    #[serde(default)]
    pub is_admin: bool,
    /// True for bot users (project and group access tokens).
    #[serde(default)]
    pub bot: bool,
}

/// `GET /version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// For example `17.11.2-ee`.
    pub version: String,
    /// Git revision of the GitLab build.
    #[serde(default)]
    pub revision: Option<String>,
    /// Whether it is the Enterprise Edition (absent on old versions).
    #[serde(default)]
    pub enterprise: Option<bool>,
}

impl Version {
    /// `(major, minor)` parsed from [`Version::version`], if it has that shape.
    pub fn major_minor(&self) -> Option<(u32, u32)> {
        let mut parts = self.version.split(['.', '-']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some((major, minor))
    }
}

/// A project from `GET /projects` or `GET /projects/:id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    /// Project id.
    pub id: u64,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// `group/subgroup/project`.
    #[serde(default)]
    pub path_with_namespace: Option<String>,
    /// Link to the project page.
    #[serde(default)]
    pub web_url: Option<String>,
    /// Archived projects run no pipelines.
    #[serde(default)]
    pub archived: Option<bool>,
    /// `enabled`, `private` or `disabled`: whether CI/CD is on.
    #[serde(default)]
    pub builds_access_level: Option<String>,
    /// Older spelling of "CI/CD is on" (deprecated by GitLab).
    #[serde(default)]
    pub jobs_enabled: Option<bool>,
}

impl Project {
    /// False when the project is archived or has CI/CD turned off; polling
    /// such a project for jobs is wasted requests.
    pub fn runs_jobs(&self) -> bool {
        if self.archived == Some(true) {
            return false;
        }
        match self.builds_access_level.as_deref() {
            Some("disabled") => false,
            Some(_) => true,
            None => self.jobs_enabled != Some(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_parses_major_minor() {
        let v: Version =
            serde_json::from_str(r#"{"version": "17.11.2-ee", "revision": "4e963fe", "kas": {}}"#)
                .expect("parses");
        assert_eq!(v.major_minor(), Some((17, 11)));
        let odd = Version {
            version: "nightly".into(),
            revision: None,
            enterprise: None,
        };
        assert_eq!(odd.major_minor(), None);
    }

    #[test]
    fn user_without_is_admin_is_not_admin() {
        let u: User =
            serde_json::from_str(r#"{"id": 1, "username": "root", "name": null}"#).expect("parses");
        assert!(!u.is_admin);
    }

    #[test]
    fn project_runs_jobs_respects_archive_and_ci_switch() {
        let base: Project = serde_json::from_str(r#"{"id": 3}"#).expect("parses");
        assert!(base.runs_jobs());
        let archived = Project {
            archived: Some(true),
            ..base.clone()
        };
        assert!(!archived.runs_jobs());
        let disabled = Project {
            builds_access_level: Some("disabled".into()),
            ..base.clone()
        };
        assert!(!disabled.runs_jobs());
        let old_off = Project {
            jobs_enabled: Some(false),
            ..base
        };
        assert!(!old_off.runs_jobs());
    }
}
