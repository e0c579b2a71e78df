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
//! SQLite in WAL mode, so CLI commands can read and write while `serve` runs.
//! Row structs stay in this module; callers get domain types.

mod admin;
mod admin_certs;
mod agent_certs;
mod agents;
mod events;
mod person_sessions;
mod runners;
mod tokens;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use time::OffsetDateTime;

pub use admin::{AdminSessionRow, AdminTokenRow};
pub use admin_certs::{AdminCertKey, AdminCertRow};
pub use agent_certs::AgentCerts;
pub use agents::{AgentRow, GpuRow, Liveness};
pub use events::{EventFilter, EventRow, NewEvent};
pub use person_sessions::PersonSessionRow;
pub use runners::{ACTIVE_STATES, RunnerRow, RunnerWrite};
pub use tokens::{TokenRow, TokenUse};

/// Errors from the state store.
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
}

/// The coordinator's state store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: SqlitePool,
}

/// The database file inside a data dir.
pub const DB_FILE: &str = "autogit.db";

impl Db {
    /// Open (creating if needed) `<data_dir>/autogit.db`, enable WAL and run
    /// the embedded migrations.
    pub async fn open(data_dir: &Path) -> Result<Self, DbError> {
        let path = data_dir.join(DB_FILE);
        let url = format!("sqlite://{}", path.display());
        let opts = SqliteConnectOptions::from_str(&url)
            .map_err(|source| DbError::Open {
                path: path.display().to_string(),
                source,
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|source| DbError::Open {
                path: path.display().to_string(),
                source,
            })?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Db { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
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
