//! Where fleet commands get their answers: the admin API of a running
//! coordinator (`--server`), or the data dir's SQLite database. Both return
//! the same JSON shapes, so tables and `--output json` agree.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::admin::actions::{ActionError, Actions};
use crate::db::{Db, EventFilter};
use crate::fleet::AgentView;
use crate::runners::RunnerView;

/// Errors with a stable exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Unavailable(String),
}

/// Exit code for an error: 2 usage, 3 not found, 4 unauthorized, 5 unreachable, 1 otherwise.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<CliError>() {
        Some(CliError::Usage(_)) => 2,
        Some(CliError::NotFound(_)) => 3,
        Some(CliError::Unauthorized(_)) => 4,
        Some(CliError::Unavailable(_)) => 5,
        None => 1,
    }
}

pub enum Backend {
    Local {
        db: Db,
        data_dir: PathBuf,
    },
    Remote {
        http: reqwest::Client,
        base: String,
        token: Option<String>,
    },
}

/// How the CLI authenticates to a remote coordinator.
pub enum Credentials {
    Token(String),
    /// A directory written by `admin-cert create`: `<name>.pem`,
    /// `<name>-key.pem` and `ca.pem` (the name is taken from the key file).
    Cert(PathBuf),
}

fn load_identity(
    dir: &std::path::Path,
) -> anyhow::Result<(reqwest::Identity, reqwest::Certificate)> {
    let key = std::fs::read_dir(dir)
        .map_err(|e| CliError::Usage(format!("read --admin-cert {}: {e}", dir.display())))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with("-key.pem"))
        })
        .ok_or_else(|| CliError::Usage(format!("no <name>-key.pem in {}", dir.display())))?;
    let name = key
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .trim_end_matches("-key.pem")
        .to_string();
    let read = |p: std::path::PathBuf| {
        std::fs::read(&p).map_err(|e| CliError::Usage(format!("read {}: {e}", p.display())))
    };
    let mut pem = read(dir.join(format!("{name}.pem")))?;
    pem.extend(read(key)?);
    let identity = reqwest::Identity::from_pem(&pem)
        .map_err(|e| CliError::Usage(format!("admin certificate in {}: {e}", dir.display())))?;
    let ca = reqwest::Certificate::from_pem(&read(dir.join("ca.pem"))?)?;
    Ok((identity, ca))
}

/// Who the audit log names for actions taken on the data dir.
const CLI_ACTOR: &str = "cli";

/// The one mapping of action errors to exit codes.
fn cli_error(e: ActionError) -> anyhow::Error {
    match e {
        ActionError::Invalid(m) => CliError::Usage(m).into(),
        ActionError::NotFound(m) => CliError::NotFound(m).into(),
        ActionError::Unavailable(m) => CliError::Unavailable(m).into(),
        ActionError::Db(e) => e.into(),
    }
}

fn needs_server(what: &str) -> anyhow::Error {
    CliError::Usage(format!(
        "{what} needs a running coordinator: pass --server http://HOST:PORT and --token (or AUTOGIT_SERVER / AUTOGIT_ADMIN_TOKEN)"
    ))
    .into()
}

impl Backend {
    pub fn remote(url: &str, creds: Credentials) -> anyhow::Result<Self> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(CliError::Usage(format!(
                "--server {url:?} must be an http:// or https:// URL"
            ))
            .into());
        }
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!(
                "autogit-coordinator-cli/",
                env!("CARGO_PKG_VERSION")
            ));
        let token = match creds {
            Credentials::Token(t) => Some(t),
            Credentials::Cert(dir) => {
                let (identity, ca) = load_identity(&dir)?;
                builder = builder
                    .identity(identity)
                    .add_root_certificate(ca)
                    .tls_built_in_root_certs(false);
                None
            }
        };
        Ok(Backend::Remote {
            http: builder.build()?,
            base,
            token,
        })
    }

    pub async fn close(self) {
        if let Backend::Local { db, .. } = self {
            db.close().await;
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let Backend::Remote { http, base, token } = self else {
            return Err(needs_server(path));
        };
        let mut req = http.request(method, format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            CliError::Unavailable(format!(
                "cannot reach the coordinator at {base}: {}",
                root_cause(&e)
            ))
        })?;
        let status = resp.status();
        let value: Value = resp.json().await.unwrap_or(Value::Null);
        let msg = value["error"]
            .as_str()
            .unwrap_or(status.canonical_reason().unwrap_or("error"))
            .to_string();
        match status.as_u16() {
            200..=299 => Ok(value),
            401 | 403 => Err(CliError::Unauthorized(format!(
                "the coordinator refused the admin token: {msg}"
            ))
            .into()),
            404 => Err(CliError::NotFound(msg).into()),
            400 | 422 => Err(CliError::Usage(msg).into()),
            503 => Err(CliError::Unavailable(msg).into()),
            _ => Err(anyhow::anyhow!("{status}: {msg}")),
        }
    }

    pub async fn get_list(&self, path: &str) -> anyhow::Result<Vec<Value>> {
        match self.call(reqwest::Method::GET, path, None).await? {
            Value::Array(a) => Ok(a),
            other => Err(anyhow::anyhow!("unexpected answer from {path}: {other}")),
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn agents(&self) -> anyhow::Result<Vec<Value>> {
        match self {
            Backend::Remote { .. } => self.get_list("/api/v1/agents").await,
            Backend::Local { db, .. } => {
                let rows = db.list_agents().await?;
                let views = rows
                    .iter()
                    .map(AgentView::from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(views
                    .iter()
                    .map(|v| serde_json::to_value(v).unwrap_or(Value::Null))
                    .collect())
            }
        }
    }

    pub async fn agent(&self, id: &str) -> anyhow::Result<Value> {
        match self {
            Backend::Remote { .. } => {
                self.call(reqwest::Method::GET, &format!("/api/v1/agents/{id}"), None)
                    .await
            }
            Backend::Local { .. } => self
                .agents()
                .await?
                .into_iter()
                .find(|a| a["id"] == id)
                .ok_or_else(|| CliError::NotFound(format!("no agent with id {id}")).into()),
        }
    }

    pub async fn revoke_agent(&self, id: &str, reason: &str) -> anyhow::Result<()> {
        match self {
            Backend::Remote { .. } => {
                self.post(
                    &format!("/api/v1/agents/{id}/revoke"),
                    json!({"reason": reason}),
                )
                .await?;
            }
            Backend::Local { db, .. } => {
                Actions::offline(db.clone())
                    .revoke_agent(CLI_ACTOR, id, reason)
                    .await
                    .map_err(cli_error)?;
            }
        }
        Ok(())
    }

    pub async fn runners(&self, finished: u32) -> anyhow::Result<Vec<Value>> {
        match self {
            Backend::Remote { .. } => {
                self.get_list(&format!("/api/v1/runners?finished={finished}"))
                    .await
            }
            Backend::Local { db, .. } => Ok(db
                .list_runners(finished)
                .await?
                .iter()
                .map(|r| serde_json::to_value(RunnerView::from(r)).unwrap_or(Value::Null))
                .collect()),
        }
    }

    pub async fn runner(&self, id: &str) -> anyhow::Result<Value> {
        match self {
            Backend::Remote { .. } => {
                self.call(reqwest::Method::GET, &format!("/api/v1/runners/{id}"), None)
                    .await
            }
            Backend::Local { db, .. } => match db.get_runner(id).await? {
                Some(r) => Ok(serde_json::to_value(RunnerView::from(&r))?),
                None => Err(CliError::NotFound(format!("no runner with id {id}")).into()),
            },
        }
    }

    pub async fn tokens(&self) -> anyhow::Result<Vec<Value>> {
        match self {
            Backend::Remote { .. } => self.get_list("/api/v1/tokens").await,
            Backend::Local { db, .. } => Ok(crate::tokens::list(db)
                .await?
                .iter()
                .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
                .collect()),
        }
    }

    /// Create a join token; returns (id, token).
    pub async fn create_token(
        &self,
        ttl: Duration,
        uses: u32,
        labels: &BTreeMap<String, String>,
        description: &str,
    ) -> anyhow::Result<(String, String)> {
        match self {
            Backend::Remote { .. } => {
                let v = self
                    .post(
                        "/api/v1/tokens",
                        json!({"ttl_seconds": ttl.as_secs(), "uses": uses, "labels": labels, "description": description}),
                    )
                    .await?;
                let id = v["id"].as_str().unwrap_or_default().to_string();
                let token = v["token"]
                    .as_str()
                    .ok_or_else(|| anyhow::anyhow!("the coordinator returned no token"))?;
                Ok((id, token.to_string()))
            }
            Backend::Local { db, data_dir } => {
                let ca = crate::pki::load(data_dir)?;
                let req = crate::tokens::NewToken {
                    ttl,
                    uses,
                    labels: labels.clone(),
                    description: description.to_string(),
                };
                let token = Actions::offline(db.clone())
                    .create_token(CLI_ACTOR, ca.fingerprint(), &req)
                    .await
                    .map_err(cli_error)?;
                Ok((token.id().to_string(), token.expose()))
            }
        }
    }

    pub async fn revoke_token(&self, id: &str) -> anyhow::Result<()> {
        match self {
            Backend::Remote { .. } => {
                self.post(&format!("/api/v1/tokens/{id}/revoke"), json!({}))
                    .await?;
            }
            Backend::Local { db, .. } => {
                Actions::offline(db.clone())
                    .revoke_token(CLI_ACTOR, id)
                    .await
                    .map_err(cli_error)?;
            }
        }
        Ok(())
    }

    /// One page of the audit log: `{"events": [...], "next_before": id|null}`.
    pub async fn events(
        &self,
        agent: Option<&str>,
        runner: Option<&str>,
        before: Option<i64>,
        limit: u32,
    ) -> anyhow::Result<Value> {
        let limit = limit.clamp(1, 1000);
        match self {
            Backend::Remote { .. } => {
                let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
                if let Some(a) = agent {
                    q.push(("agent", a.to_string()));
                }
                if let Some(r) = runner {
                    q.push(("runner", r.to_string()));
                }
                if let Some(b) = before {
                    q.push(("before", b.to_string()));
                }
                let qs = serde_urlencoded::to_string(&q)?;
                self.call(reqwest::Method::GET, &format!("/api/v1/events?{qs}"), None)
                    .await
            }
            Backend::Local { db, .. } => Ok(crate::audit::page(
                db,
                &EventFilter {
                    agent_id: agent.map(str::to_string),
                    runner_id: runner.map(str::to_string),
                    before,
                    limit,
                },
            )
            .await?),
        }
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
