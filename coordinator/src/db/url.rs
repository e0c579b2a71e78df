//! Where the state lives: `database.url` / `--database`.
//!
//! `sqlite://PATH` (the default is `<data_dir>/autogit.db`) or
//! `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=…]`. A PostgreSQL
//! URL may carry a password, so it is held as a secret: `Display` and
//! `Debug` show it with the password replaced by `***`. Without one in the
//! URL, `PGPASSWORD` applies (libpq's rule, which sqlx follows).

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use super::DB_FILE;

#[derive(Clone, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(PgUrl),
}

/// A PostgreSQL URL: the whole text kept secret, plus a shown form.
#[derive(Clone)]
pub struct PgUrl {
    raw: SecretString,
    shown: String,
}

impl PgUrl {
    pub fn expose(&self) -> &str {
        self.raw.expose_secret()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    #[error("{0:?} is not a database URL: use sqlite://PATH or postgres://USER@HOST/DB")]
    Scheme(String),
    #[error("sqlite:// needs a file path, as in sqlite:///var/lib/autogit/autogit.db")]
    EmptyPath,
    #[error("{0} names no host: use postgres://USER@HOST[:PORT]/DB")]
    NoHost(String),
}

impl DatabaseUrl {
    /// The embedded default.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        DatabaseUrl::Sqlite(data_dir.join(DB_FILE))
    }

    pub fn parse(s: &str) -> Result<Self, UrlError> {
        let s = s.trim();
        if let Some(path) = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(UrlError::EmptyPath);
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        let rest = s
            .strip_prefix("postgres://")
            .or_else(|| s.strip_prefix("postgresql://"));
        let Some(rest) = rest else {
            // Never echo what might be a mistyped URL with a password in it.
            return Err(UrlError::Scheme(redact(s)));
        };
        let shown = redact(s);
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("");
        let socket = rest.contains("?host=") || rest.contains("&host=");
        if (host.is_empty() || host.starts_with(':')) && !socket {
            return Err(UrlError::NoHost(shown));
        }
        Ok(DatabaseUrl::Postgres(PgUrl {
            raw: SecretString::from(s.to_string()),
            shown,
        }))
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, DatabaseUrl::Postgres(_))
    }
}

/// `scheme://user:secret@host/…` → `scheme://user:***@host/…`; a query's
/// `password=` is hidden too.
fn redact(s: &str) -> String {
    let (scheme, rest) = match s.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, s),
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{authority}{tail}"),
        None => format!("{authority}{tail}"),
    }
}

impl TryFrom<String> for DatabaseUrl {
    type Error = UrlError;

    fn try_from(s: String) -> Result<Self, UrlError> {
        DatabaseUrl::parse(&s)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            DatabaseUrl::Postgres(u) => f.write_str(&u.shown),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_a_file() {
        let u = DatabaseUrl::parse("sqlite:///var/lib/autogit/autogit.db").expect("parse");
        assert!(
            matches!(&u, DatabaseUrl::Sqlite(p) if p == Path::new("/var/lib/autogit/autogit.db"))
        );
        assert_eq!(u.to_string(), "sqlite:///var/lib/autogit/autogit.db");
        assert!(
            matches!(DatabaseUrl::parse("sqlite:state.db"), Ok(DatabaseUrl::Sqlite(p)) if p == Path::new("state.db"))
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite://").unwrap_err(),
            UrlError::EmptyPath
        );
    }

    #[test]
    fn a_postgres_password_is_never_shown() {
        for raw in [
            "postgres://autogit:hunter2@db.internal:5432/autogit",
            "postgresql://autogit:hunter2@db.internal/autogit?sslmode=require",
            "postgres://autogit@db.internal/autogit?password=hunter2&sslmode=verify-full",
        ] {
            let u = DatabaseUrl::parse(raw).expect("parse");
            assert!(u.is_postgres());
            let shown = format!("{u} {u:?}");
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("db.internal"), "{shown}");
            let DatabaseUrl::Postgres(pg) = &u else {
                unreachable!()
            };
            assert_eq!(pg.expose(), raw);
        }
        assert_eq!(
            DatabaseUrl::parse("postgres://a:b@h/d")
                .expect("parse")
                .to_string(),
            "postgres://a:***@h/d"
        );
    }

    #[test]
    fn bad_urls_name_the_problem_without_the_password() {
        let e = DatabaseUrl::parse("mysql://root:hunter2@h/d").unwrap_err();
        assert!(matches!(e, UrlError::Scheme(_)));
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("sqlite://PATH"), "{e}");
        let e = DatabaseUrl::parse("postgres://u:hunter2@/d").unwrap_err();
        assert!(matches!(e, UrlError::NoHost(_)), "{e:?}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(matches!(
            DatabaseUrl::parse("postgres://:5432/d"),
            Err(UrlError::NoHost(_))
        ));
        // A Unix socket directory is a host too.
        assert!(DatabaseUrl::parse("postgres:///autogit?host=/run/postgresql").is_ok());
    }
}
