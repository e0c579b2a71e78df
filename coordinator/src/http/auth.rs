//! Admin authentication for everything but `/healthz`, `/readyz`, `/metrics`
//! and the login form: an admin bearer token (`Authorization: Bearer AGA1…`),
//! the same token in the dashboard's session cookie (HttpOnly,
//! SameSite=Strict, set by `POST /login`), or — with `http_tls = true` — an
//! admin client certificate from the cluster CA.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use super::HttpState;
use crate::admin::{Actor, tokens};

pub const SESSION_COOKIE: &str = "autogit_session";

/// The admin token presented with a request, if any.
pub fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_string());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{SESSION_COOKIE}="))
                .map(str::to_string)
        })
}

/// Require a valid admin token; the [`Actor`] goes into request extensions.
pub async fn require_admin(State(s): State<HttpState>, mut req: Request, next: Next) -> Response {
    let cert_admin = req
        .extensions()
        .get::<axum::extract::ConnectInfo<super::tls::PeerInfo>>()
        .and_then(|c| c.0.admin.clone());
    let actor = match (cert_admin, presented_token(req.headers())) {
        (Some(name), _) => Some(Actor(format!("cert:{name}"))),
        (None, Some(t)) => tokens::verify(&s.db, &t).await,
        (None, None) => None,
    };
    match actor {
        Some(a) => {
            req.extensions_mut().insert(a);
            next.run(req).await
        }
        None => unauthorized(req.headers()),
    }
}

/// 401: JSON for API clients, the login form for browsers.
fn unauthorized(headers: &HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        (StatusCode::UNAUTHORIZED, Html(LOGIN_PAGE)).into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"autogit\"")],
            Json(json!({"error": "missing or invalid admin token (Authorization: Bearer <token> from `autogit-coordinator admin-token create`)"})),
        )
            .into_response()
    }
}

/// `POST /login` with form or JSON `token`: sets the session cookie.
pub async fn login(State(s): State<HttpState>, body: axum::body::Bytes) -> Response {
    let token = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["token"].as_str().map(str::to_string))
        .or_else(|| url_form_value(&body, "token"));
    let Some(token) = token else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "body must carry `token`"})),
        )
            .into_response();
    };
    match tokens::verify(&s.db, &token).await {
        Some(Actor(who)) => {
            tracing::info!(actor = %crate::edge::wire(&who), "dashboard login");
            let cookie = format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
            (
                StatusCode::SEE_OTHER,
                [
                    (header::SET_COOKIE, cookie),
                    (header::LOCATION, "/".to_string()),
                ],
            )
                .into_response()
        }
        None => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid admin token"})),
        )
            .into_response(),
    }
}

fn url_form_value(body: &[u8], key: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    pairs.into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Shown to browsers without a session: no fleet data, only a form. A token
/// in the URL fragment (`/#token=…`, never sent to the server) is submitted
/// automatically.
const LOGIN_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>AutoGit — sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}
input,button{font-size:1rem;padding:.5rem;width:100%;box-sizing:border-box;margin:.25rem 0}</style></head>
<body><main><h1>AutoGit</h1>
<form id="login" method="post" action="/login">
<label for="token">Admin token (from <code>autogit-coordinator admin-token create</code>)</label>
<input id="token" name="token" type="password" autocomplete="off" required autofocus>
<button type="submit">Sign in</button></form></main>
<script>
const m = location.hash.match(/token=([^&]+)/);
if (m) {
  history.replaceState(null, "", location.pathname);
  document.getElementById("token").value = decodeURIComponent(m[1]);
  document.getElementById("login").submit();
}
</script></body></html>"#;
