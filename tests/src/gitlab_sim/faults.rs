//! Fault injection and request counting for the GitLab API routes.
//!
//! Runs after routing (as a route layer), so requests are counted per matched route.
//! A 429 answer copies GitLab's Rack::Attack throttle response (doc/administration/
//! settings/user_and_ip_rate_limits.md "Response headers"): body `Retry later`, a
//! `Retry-After` header in seconds and the `RateLimit-*` headers. A 500 answer is
//! GitLab's `{"message":"500 Internal Server Error"}`; 502/503/504 come back as the
//! plain text a front proxy would send.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::server::Shared;

enum Verdict {
    Pass,
    RateLimited { retry_after: u64 },
    Fail { status: u16 },
}

/// The route layer: count, delay, then maybe answer with an injected error;
/// a passed request's answer may be held back after the work is done.
pub async fn apply(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    let key = format!("{} {}", req.method(), route);
    let path = req.uri().path().to_owned();
    let (latency, hold, verdict) = shared.with_world(|w| {
        w.count_request(key);
        let f = &mut w.faults;
        let applies = f.path_prefix.as_deref().is_none_or(|p| path.starts_with(p));
        if !applies {
            return (0, 0, Verdict::Pass);
        }
        let verdict = if f.rate_limit_next > 0 {
            f.rate_limit_next -= 1;
            Verdict::RateLimited {
                retry_after: f.retry_after_secs,
            }
        } else if f.fail_next > 0 {
            f.fail_next -= 1;
            Verdict::Fail {
                status: f.fail_status,
            }
        } else {
            Verdict::Pass
        };
        (f.latency_ms, f.hold_response_ms, verdict)
    });
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    match verdict {
        Verdict::Pass => {
            let resp = next.run(req).await;
            if hold > 0 {
                tokio::time::sleep(Duration::from_millis(hold)).await;
            }
            resp
        }
        Verdict::RateLimited { retry_after } => rate_limited(retry_after),
        Verdict::Fail { status } => server_error(status),
    }
}

fn rate_limited(retry_after: u64) -> Response {
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, "Retry later\n").into_response();
    let h = resp.headers_mut();
    let reset =
        time::OffsetDateTime::now_utc() + time::Duration::seconds(retry_after.min(86_400) as i64);
    let pairs = [
        ("retry-after", retry_after.to_string()),
        ("ratelimit-name", "throttle_authenticated_api".to_owned()),
        ("ratelimit-limit", "2000".to_owned()),
        ("ratelimit-observed", "2001".to_owned()),
        ("ratelimit-remaining", "0".to_owned()),
        ("ratelimit-reset", reset.unix_timestamp().to_string()),
        ("content-type", "text/plain".to_owned()),
    ];
    for (k, v) in pairs {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
    resp
}

fn server_error(status: u16) -> Response {
    let code = StatusCode::from_u16(status)
        .ok()
        .filter(|c| c.is_server_error())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if code == StatusCode::INTERNAL_SERVER_ERROR {
        return (
            code,
            axum::Json(serde_json::json!({ "message": "500 Internal Server Error" })),
        )
            .into_response();
    }
    let text = format!(
        "{} {}\n",
        code.as_u16(),
        code.canonical_reason().unwrap_or("Server Error")
    );
    (code, text).into_response()
}
