//! `autogit-coordinator migrate --from URL --to URL`: move a whole state,
//! audit log included, from one store to another (SQLite to PostgreSQL when
//! a single coordinator becomes several, or back).
//!
//! The copy is one transaction on the target, into a target whose tables
//! are all empty: it lands whole or not at all, and never merges two
//! installations. Each table's columns are listed here and checked against
//! both databases first, so a column added by a later migration and
//! forgotten here stops the move instead of being dropped. The leader
//! lease is not moved, but its epoch is: the target's next leader gets a
//! higher one than any the agents have seen.

use super::{Db, DbError, Pool, on_pool};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Int,
    Real,
    Blob,
    Bool,
}
use Kind::*;

/// Every table, parents before the children that reference them.
const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "agents",
        &[
            ("id", Text),
            ("hostname", Text),
            ("arch", Text),
            ("state", Text),
            ("cordoned", Bool),
            ("labels", Text),
            ("inventory", Text),
            ("load", Text),
            ("cert_serial", Text),
            ("cert_not_after", Int),
            ("token_id", Text),
            ("enrolled_at", Int),
            ("last_seen", Int),
            ("revoked_at", Int),
            ("pending_cert_serial", Text),
        ],
    ),
    (
        "gpus",
        &[
            ("agent_id", Text),
            ("uuid", Text),
            ("idx", Int),
            ("vendor", Text),
            ("name", Text),
            ("memory_bytes", Int),
        ],
    ),
    (
        "join_tokens",
        &[
            ("id", Text),
            ("secret_hash", Blob),
            ("description", Text),
            ("labels", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("max_uses", Int),
            ("uses", Int),
            ("revoked_at", Int),
        ],
    ),
    (
        "revocations",
        &[
            ("agent_id", Text),
            ("revoked_at", Int),
            ("actor", Text),
            ("reason", Text),
        ],
    ),
    (
        "events",
        &[
            ("id", Int),
            ("at", Int),
            ("kind", Text),
            ("actor", Text),
            ("agent_id", Text),
            ("runner_id", Text),
            ("detail", Text),
        ],
    ),
    (
        "runners",
        &[
            ("id", Text),
            ("pool", Text),
            ("agent_id", Text),
            ("gitlab_runner_id", Int),
            ("state", Text),
            ("container_id", Text),
            ("gpus", Text),
            ("cpu", Real),
            ("memory_bytes", Int),
            ("project_id", Int),
            ("job_id", Int),
            ("exit_code", Int),
            ("reason", Text),
            ("log_tail", Text),
            ("created_at", Int),
            ("started_at", Int),
            ("busy_at", Int),
            ("finished_at", Int),
            ("gitlab_deleted_at", Int),
            ("image_pull_ms", Int),
        ],
    ),
    (
        "admin_tokens",
        &[
            ("id", Text),
            ("name", Text),
            ("secret_hash", Blob),
            ("created_at", Int),
            ("expires_at", Int),
            ("revoked_at", Int),
            ("last_used_at", Int),
            ("role", Text),
        ],
    ),
    (
        "admin_sessions",
        &[
            ("id_hash", Blob),
            ("token_id", Text),
            ("created_at", Int),
            ("expires_at", Int),
        ],
    ),
    (
        "admin_certs",
        &[
            ("serial", Text),
            ("name", Text),
            ("created_at", Int),
            ("not_after", Int),
            ("revoked_at", Int),
            ("role", Text),
        ],
    ),
    (
        "leader_epochs",
        &[
            ("epoch", Int),
            ("holder", Text),
            ("acquired_at", Int),
            ("expires_at", Int),
        ],
    ),
    (
        "person_sessions",
        &[
            ("id_hash", Blob),
            ("issuer", Text),
            ("subject", Text),
            ("name", Text),
            ("role", Text),
            ("created_at", Int),
            ("expires_at", Int),
        ],
    ),
];

/// One column's value, of its [`Kind`].
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(Option<String>),
    Int(Option<i64>),
    Real(Option<f64>),
    Blob(Option<Vec<u8>>),
    Bool(Option<bool>),
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(
        "the target database already holds state ({table}: {rows} rows); migrate only into an empty one"
    )]
    TargetNotEmpty { table: &'static str, rows: i64 },
    #[error(
        "table {table} in the {side} database has columns {found:?}, but this release moves {expected:?}; \
         use the coordinator release that wrote it"
    )]
    Columns {
        table: &'static str,
        side: &'static str,
        found: Vec<String>,
        expected: Vec<&'static str>,
    },
}

impl From<sqlx::Error> for MigrateError {
    fn from(e: sqlx::Error) -> Self {
        MigrateError::Db(DbError::Sql(e))
    }
}

/// Rows moved, per table, in [`TABLES`] order.
pub type Moved = Vec<(&'static str, usize)>;

/// Copy every row of `from` into `to`, which must be empty.
pub async fn copy_all(from: &Db, to: &Db) -> Result<Moved, MigrateError> {
    for (table, columns) in TABLES {
        check_columns(from, "source", table, columns).await?;
        check_columns(to, "target", table, columns).await?;
        let rows = count(to, table).await?;
        if rows > 0 {
            return Err(MigrateError::TargetNotEmpty { table, rows });
        }
    }
    // Agents refuse commands from an epoch lower than one they have seen:
    // the moved state goes on from the source's epoch.
    let epoch_floor = from.lease().await?.epoch;
    let mut read = Vec::with_capacity(TABLES.len());
    for (table, columns) in TABLES {
        read.push(select_all(from, table, columns).await?);
    }
    let moved = TABLES
        .iter()
        .zip(&read)
        .map(|((table, _), rows)| (*table, rows.len()))
        .collect();
    on_pool!(to, p => {
        let mut tx = p.begin().await?;
        for ((table, columns), rows) in TABLES.iter().zip(&read) {
            let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
            let params: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
            let q = format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                names.join(", "),
                params.join(", ")
            );
            for row in rows {
                let mut insert = sqlx::query(&q);
                for v in row {
                    insert = match v {
                        Value::Text(v) => insert.bind(v.clone()),
                        Value::Int(v) => insert.bind(*v),
                        Value::Real(v) => insert.bind(*v),
                        Value::Blob(v) => insert.bind(v.clone()),
                        Value::Bool(v) => insert.bind(*v),
                    };
                }
                insert.execute(&mut *tx).await?;
            }
        }
        sqlx::query(
            "UPDATE leader_lease SET epoch = $1, holder = NULL, expires_at = 0 WHERE id = 1 AND epoch < $1",
        )
        .bind(epoch_floor)
        .execute(&mut *tx)
        .await?;
        if let Pool::Postgres(_) = &to.pool {
            // Explicit ids do not move an identity; the next event must
            // follow the last one moved.
            sqlx::query(
                "SELECT setval(pg_get_serial_sequence('events', 'id'), \
                 COALESCE((SELECT MAX(id) FROM events), 0) + 1, false)",
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    });
    Ok(moved)
}

async fn count(db: &Db, table: &str) -> Result<i64, MigrateError> {
    let q = format!("SELECT COUNT(*) FROM {table}");
    Ok(on_pool!(db, p => sqlx::query_scalar(&q).fetch_one(p).await)?)
}

async fn check_columns(
    db: &Db,
    side: &'static str,
    table: &'static str,
    columns: &[(&'static str, Kind)],
) -> Result<(), MigrateError> {
    let mut found: Vec<String> = match &db.pool {
        Pool::Sqlite(p) => {
            sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
                .bind(table)
                .fetch_all(p)
                .await?
        }
        Pool::Postgres(p) => {
            sqlx::query_scalar(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1",
            )
            .bind(table)
            .fetch_all(p)
            .await?
        }
    };
    found.sort();
    let mut expected: Vec<&'static str> = columns.iter().map(|(n, _)| *n).collect();
    expected.sort();
    if found != expected {
        return Err(MigrateError::Columns {
            table,
            side,
            found,
            expected,
        });
    }
    Ok(())
}

async fn select_all(
    db: &Db,
    table: &str,
    columns: &[(&str, Kind)],
) -> Result<Vec<Vec<Value>>, MigrateError> {
    let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
    // In key order, so ids are handed out again in the order they were.
    let q = format!("SELECT {} FROM {table} ORDER BY 1", names.join(", "));
    Ok(on_pool!(db, p => {
        use sqlx::Row;
        let rows = sqlx::query(&q).fetch_all(p).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut values = Vec::with_capacity(columns.len());
            for (i, (_, kind)) in columns.iter().enumerate() {
                values.push(match kind {
                    Text => Value::Text(r.try_get(i)?),
                    Int => Value::Int(r.try_get(i)?),
                    Real => Value::Real(r.try_get(i)?),
                    Blob => Value::Blob(r.try_get(i)?),
                    Bool => Value::Bool(r.try_get(i)?),
                });
            }
            out.push(values);
        }
        out
    }))
}
