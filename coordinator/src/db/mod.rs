//! All SQL lives here.
//!
//! What is stored, and why:
//! * `agents` / `gpus`: every enrolled agent, its last inventory and load, so
//!   a restarted coordinator knows its fleet before agents reconnect, and
//!   operators can list it offline (`agents list --data-dir`).
//! * `join_tokens`: only the SHA-256 of each token secret, with expiry, use
//!   count and revocation.
//! * `revocations`: agents whose certificates must be refused. CLI commands
//!   write here; a running coordinator polls it and cuts live sessions.
//! * `runners`: every runner's lifecycle with timestamps (see `runners.rs`).
//! * `events`: the audit log.
//! * `admin_sessions` / `person_sessions`: dashboard sessions (only the
//!   SHA-256 of each cookie's id), of an admin token or of a person signed
//!   in through single sign-on.
//! * `admin_certs`: serial, name, expiry and revocation of every admin
//!   client certificate; one without a row, or revoked, is refused.
//!
//! Two backends behind this one interface (ADR 0017): SQLite in WAL mode,
//! the embedded default (so CLI commands can read and write while `serve`
//! runs), and PostgreSQL for several coordinators sharing one state. Every
//! statement is written once, in the SQL both understand (`$1` parameters,
//! `ON CONFLICT`, `IS NOT DISTINCT FROM`), and [`on_pool!`] compiles it
//! against each driver; each backend has its own migrations
//! (`migrations/sqlite`, `migrations/postgres`) for its own column types.
//! Row structs stay in this module; callers get domain types.

mod admin;
mod admin_certs;
mod agent_certs;
mod agents;
mod cluster;
mod events;
pub mod migrate;
mod person_sessions;
mod runners;
mod tokens;
mod url;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use time::OffsetDateTime;

pub use admin::{AdminSessionRow, AdminTokenRow};
pub use admin_certs::{AdminCertKey, AdminCertRow};
pub use agent_certs::AgentCerts;
pub use agents::{AgentRow, GpuRow, Liveness};
pub use cluster::{EpochRow, Fence, LeaseRow, ReplicaRow};
pub use events::{EventFilter, EventRow, NewEvent};
pub use person_sessions::PersonSessionRow;
pub use runners::{ACTIVE_STATES, RunnerRow, RunnerWrite};
pub use tokens::{TokenRow, TokenUse};
pub use url::{DatabaseUrl, UrlError};

/// Errors from the state store. None of them carries a password: a
/// PostgreSQL URL is named by [`DatabaseUrl`]'s `Display`, which hides it.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("open database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("run database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("corrupt {what} in database: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// A write of a leader whose lease (epoch) another replica has taken:
    /// refused, nothing of it committed.
    #[error("write refused: this replica's leadership (epoch {epoch}) has passed to another")]
    Fenced { epoch: i64 },
}

/// Which kind of database a [`Db`] stores its state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The coordinator's state store. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    pool: Pool,
    /// For messages: the URL with any password hidden.
    shown: String,
    /// Set on a leader's handle ([`Db::fenced`]): its writes commit only
    /// while it holds the lease.
    fence: Option<std::sync::Arc<Fence>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the pools: PostgreSQL's connect options hold the password.
        f.debug_struct("Db")
            .field("url", &self.shown)
            .field("fence", &self.fence)
            .finish()
    }
}

/// Run one body against whichever pool a [`Db`] has, binding it to `$p`.
/// The body is compiled once per driver, so a statement that one of them
/// cannot encode or decode fails the build, not a deployment.
macro_rules! on_pool {
    ($db:expr, $p:ident => $body:expr) => {
        match &$db.pool {
            $crate::db::Pool::Sqlite($p) => $body,
            $crate::db::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Creates a missing SQLite file empty and owner-only (0600) before SQLite
/// opens it, so a new store is private from its first byte whatever the
/// umask, and SQLite gives its `-wal` and `-shm` files the same mode. An
/// empty file is an empty database to SQLite. An existing file is left to
/// `datadir.rs::make_private`, which `serve` runs first.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() {
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(crate::datadir::FILE_MODE)
        .open(path)
    {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        r => r.map(drop),
    }
}

/// The database file inside a data dir.
pub const DB_FILE: &str = "autogit.db";

impl Db {
    /// Open (creating if needed) the default store, `<data_dir>/autogit.db`.
    pub async fn open(data_dir: &Path) -> Result<Self, DbError> {
        Self::connect(&DatabaseUrl::in_data_dir(data_dir)).await
    }

    /// Open the store at `url` and run its backend's migrations: SQLite
    /// (created if missing, WAL) or PostgreSQL (the database must exist).
    pub async fn connect(url: &DatabaseUrl) -> Result<Self, DbError> {
        Self::connect_pooled(url, 8).await
    }

    /// [`Db::connect`] with at most `max_connections` PostgreSQL
    /// connections (SQLite keeps its own small pool). The leader lease uses
    /// a pool of its own, so its renewals never queue behind bulk writes
    /// (10,000 agents reconnecting at once).
    pub async fn connect_pooled(url: &DatabaseUrl, max_connections: u32) -> Result<Self, DbError> {
        let shown = url.to_string();
        let open = |source| DbError::Open {
            path: shown.clone(),
            source,
        };
        let pool = match url {
            DatabaseUrl::Sqlite(path) => {
                create_private(path).map_err(|e| open(sqlx::Error::Io(e)))?;
                let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
                    .map_err(open)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(10));
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(opts)
                    .await
                    .map_err(open)?;
                sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
                Pool::Sqlite(pool)
            }
            DatabaseUrl::Postgres(raw) => {
                let opts = PgConnectOptions::from_str(raw.expose())
                    .map_err(open)?
                    .application_name("autogit-coordinator");
                let pool = PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(opts)
                    .await
                    .map_err(open)?;
                sqlx::migrate!("./migrations/postgres").run(&pool).await?;
                Pool::Postgres(pool)
            }
        };
        Ok(Db {
            pool,
            shown,
            fence: None,
        })
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Whether the database answers (`/readyz`).
    pub async fn ping(&self) -> Result<(), DbError> {
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(drop))?;
        Ok(())
    }

    /// The SQLite pool, for tests that reach under the interface.
    #[cfg(test)]
    pub fn sqlite_pool(&self) -> &SqlitePool {
        match &self.pool {
            Pool::Sqlite(p) => p,
            Pool::Postgres(_) => panic!("not a SQLite store"),
        }
    }

    pub async fn close(&self) {
        on_pool!(self, p => p.close().await);
    }
}

/// Unix milliseconds, the storage form of every timestamp.
pub fn to_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
