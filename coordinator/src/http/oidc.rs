//! `GET /oidc/login` and `GET /oidc/callback`: the browser's side of single
//! sign-on (`admin/oidc/` does the protocol). 404 when `[oidc]` is absent.
//!
//! `/oidc/login` binds the sign-in's `state` to the browser with a cookie
//! (`autogit_oidc_state`: `HttpOnly`, `SameSite=Lax` so it comes back on the
//! provider's top-level redirect, `Path=/oidc`, 10 minutes) and redirects to
//! the provider. `/oidc/callback` requires that cookie to repeat `state`, so
//! nobody can finish a sign-in they started in someone else's browser (login
//! CSRF), opens the same kind of opaque session as `POST /login`, records
//! `admin_session.opened` with the person in the audit log, and sends the
//! browser to `/` from a page of our own: the session cookie is
//! `SameSite=Strict`, which a browser withholds on a redirect chain that
//! began at the provider.

use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::HttpState;
use super::auth::{client_of, cookie, cookie_value, https_client};
use crate::admin::oidc::{Oidc, SignInError};
use crate::admin::sessions::{self, Person};

const STATE_COOKIE: &str = "autogit_oidc_state";

/// Minimal HTML escaping for text put into our pages.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>AutoGit — {}</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}}</style>\
         </head><body><main><h1>{}</h1>{body}</main></body></html>",
        escape(title),
        escape(title)
    );
    (status, Html(html)).into_response()
}

fn not_configured() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"error": "single sign-on is not configured (no [oidc] section)"})),
    )
        .into_response()
}

/// Whether cookies must be `Secure`: served over TLS, behind a trusted
/// proxy the client reached over https, or with an https redirect URL.
fn secure(s: &HttpState, oidc: &Oidc, req: &Request) -> bool {
    oidc.redirect_url().starts_with("https://") || https_client(s, client_of(s, req).as_ref())
}

fn state_cookie(value: &str, max_age: u64, secure: bool) -> String {
    let mut c =
        format!("{STATE_COOKIE}={value}; HttpOnly; SameSite=Lax; Path=/oidc; Max-Age={max_age}");
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// `GET /oidc/login`: start a sign-in and send the browser to the provider.
pub async fn login(State(s): State<HttpState>, req: Request) -> Response {
    let Some(oidc) = s.oidc.clone() else {
        return not_configured();
    };
    let secure = secure(&s, &oidc, &req);
    match oidc.begin().await {
        Ok(b) => (
            StatusCode::SEE_OTHER,
            [
                (header::SET_COOKIE, state_cookie(&b.state, 600, secure)),
                (header::LOCATION, b.url),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(issuer = %oidc.issuer(), error = %crate::edge::wire(&e.to_string()), "cannot start a single sign-on");
            failure(&e)
        }
    }
}

fn failure(e: &SignInError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    page(
        status,
        "sign-in failed",
        &format!(
            "<p id=\"error\">{}</p><p><a href=\"/oidc/login\">Try again</a> · <a href=\"/\">Sign in another way</a></p>",
            escape(&e.to_string())
        ),
    )
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    /// RFC 9207: the issuer that sent the browser back, when it says.
    iss: Option<String>,
}

/// `GET /oidc/callback?code=…&state=…` (or `?error=…`): finish the sign-in.
pub async fn callback(State(s): State<HttpState>, req: Request) -> Response {
    let Some(oidc) = s.oidc.clone() else {
        return not_configured();
    };
    let secure = secure(&s, &oidc, &req);
    let q = match Query::<CallbackQuery>::try_from_uri(req.uri()) {
        Ok(Query(q)) => q,
        Err(_) => {
            return failure(&SignInError::Refused(
                "the callback's query string is malformed".into(),
            ));
        }
    };
    let cookie_state = cookie_value(req.headers(), STATE_COOKIE);
    let clear_state = state_cookie("", 0, secure);
    let result = match (&q.error, &q.code, &q.state) {
        // A response from another provider than ours (mix-up, RFC 9207).
        _ if q.iss.as_deref().is_some_and(|i| i != oidc.issuer()) => Err(SignInError::Refused(
            format!(
                "the callback comes from issuer {:?}, not {:?}",
                q.iss.as_deref().unwrap_or_default(),
                oidc.issuer()
            )
            .chars()
            .take(300)
            .collect(),
        )),
        (Some(error), _, _) => Err(SignInError::Refused(
            match &q.error_description {
                Some(d) => format!("{error}: {d}"),
                None => error.clone(),
            }
            .chars()
            .take(300)
            .collect(),
        )),
        (None, Some(code), Some(state)) => oidc.finish(state, cookie_state.as_deref(), code).await,
        _ => Err(SignInError::Refused(
            "the callback carries no code and state".into(),
        )),
    };
    let person: Person = match result {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(issuer = %oidc.issuer(), error = %crate::edge::wire(&e.to_string()), "single sign-on refused");
            let mut r = failure(&e);
            if let Ok(v) = clear_state.parse() {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            return r;
        }
    };
    let session = match sessions::create_for_person(&s.db, &person, s.sessions.ttl).await {
        Ok(sess) => sess,
        Err(e) => {
            tracing::warn!(error = %e, "open a single sign-on session");
            return page(
                StatusCode::SERVICE_UNAVAILABLE,
                "sign-in failed",
                "<p id=\"error\">cannot open a session: database unavailable</p>",
            );
        }
    };
    let actor = Person::actor_name(&person.name, &person.subject);
    tracing::info!(actor = %crate::edge::wire(&actor), role = %person.role, "dashboard login (single sign-on)");
    s.audit
        .record(
            "admin_session.opened",
            &actor,
            None,
            None,
            json!({"via": "sso", "issuer": person.issuer, "subject": person.subject, "name": person.name, "role": person.role.to_string()}),
        )
        .await;
    let mut r = page(
        StatusCode::OK,
        "signed in",
        &format!(
            "<meta http-equiv=\"refresh\" content=\"0;url=/\"><p>Signed in as {} ({}). <a id=\"continue\" href=\"/\">Continue to the dashboard</a>.</p>",
            escape(&actor),
            person.role
        ),
    );
    let h = r.headers_mut();
    for c in [
        cookie(&session.id, Some(s.sessions.ttl.as_secs()), secure),
        clear_state,
    ] {
        if let Ok(v) = c.parse() {
            h.append(header::SET_COOKIE, v);
        }
    }
    h.insert(
        header::CACHE_CONTROL,
        "no-store".parse().expect("static header"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn the_state_cookie_is_lax_httponly_and_scoped() {
        let c = state_cookie("abc", 600, true);
        for flag in [
            "HttpOnly",
            "SameSite=Lax",
            "Path=/oidc",
            "Max-Age=600",
            "Secure",
        ] {
            assert!(c.contains(flag), "{c} lacks {flag}");
        }
    }
}
