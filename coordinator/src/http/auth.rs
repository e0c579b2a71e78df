//! Admin authentication for everything but `/healthz`, `/readyz`, `/metrics`
//! (unless `metrics = "authenticated"`) and the login form. Four ways in:
//!
//! * an admin bearer token (`Authorization: Bearer AGA1…`): CLI, scripts;
//! * with `http_tls = true`, an admin client certificate from the cluster CA,
//!   recorded by `admin-cert create` and not revoked ([`certs::verify`],
//!   checked on every request; a refused one is a 401 naming why);
//! * the dashboard's session cookie: an opaque session id from `POST /login`
//!   ([`crate::admin::sessions`]), never the admin token itself. The cookie
//!   is `HttpOnly; SameSite=Strict; Path=/`, plus `Secure` under `http_tls`
//!   (or behind a trusted proxy that says the client used https);
//! * with `[proxy] user_header`, the person a trusted reverse proxy names
//!   (forward auth, [`super::proxy`]), with the role their groups map to.
//!
//! Each caller is an [`Actor`] with a [`Role`]; [`require_role`] holds every
//! API route to the least role it names (`http/api.rs::routes`).
//!
//! A browser attaches the cookie on its own, also to requests a page on
//! another port of the same host makes (same-site, so `SameSite` does not
//! help). Cookie- and forward-auth-authenticated requests that change
//! something (any method but GET/HEAD/OPTIONS) therefore pass the CSRF
//! rules ([`csrf_check`]) too; bearer and certificate callers are not
//! browser-based and skip them.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;

use super::HttpState;
use super::proxy::ProxyIdentity;
use crate::admin::{Actor, Role, certs, sessions, tokens};

pub const SESSION_COOKIE: &str = "autogit_session";
/// The header the dashboard sends with every mutating request; a no-cors
/// cross-origin request cannot carry it.
pub const REQUEST_HEADER: &str = "x-autogit-request";

/// How a request authenticates, as presented (not yet verified).
enum Presented {
    Bearer(String),
    Session(String),
    None,
}

fn presented(headers: &HeaderMap) -> Presented {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        return Presented::Bearer(t.trim().to_string());
    }
    match session_cookie(headers) {
        Some(id) => Presented::Session(id),
        None => Presented::None,
    }
}

/// The session id in the request's cookie, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie_value(headers, SESSION_COOKIE)
}

/// The value of cookie `name` in the request, if any.
pub(super) fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{name}="))
                .map(str::to_string)
        })
}

/// Why a cookie-authenticated request was refused as possibly cross-site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrfRefusal {
    /// Neither `Content-Type: application/json` nor `X-AutoGit-Request`.
    NoJsonOrHeader,
    /// `Origin` names another origin than the coordinator's own.
    ForeignOrigin,
}

impl CsrfRefusal {
    pub fn message(self) -> &'static str {
        match self {
            CsrfRefusal::NoJsonOrHeader => {
                "refused: a cookie-authenticated request that changes state must send \
                 `Content-Type: application/json` or `X-AutoGit-Request: 1` (CSRF rule)"
            }
            CsrfRefusal::ForeignOrigin => {
                "refused: the Origin header does not match this coordinator's own \
                 origin (CSRF rule)"
            }
        }
    }
}

/// `Origin`, when present, must name the host the request was sent to
/// (`Host`, port included). The scheme must be http or https; a TLS
/// terminating proxy in front may change it, a different port cannot be
/// the same server. `Origin: null` (sandboxed frames, some redirects) is
/// foreign.
pub fn origin_ok(headers: &HeaderMap) -> bool {
    origin_matches(headers, None)
}

/// [`origin_ok`] against `host` when given (the host a trusted proxy says
/// the client asked for), else against `Host`.
fn origin_matches(headers: &HeaderMap, host: Option<&str>) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Some(authority) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    let Some(host) = host.or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
    else {
        return false;
    };
    !authority.is_empty() && authority.eq_ignore_ascii_case(host.trim())
}

/// The CSRF rules for a cookie-authenticated request that changes state.
pub fn csrf_check(method: &Method, headers: &HeaderMap) -> Result<(), CsrfRefusal> {
    csrf_check_for(method, headers, None)
}

/// [`csrf_check`], with the `Origin` compared to `host` when a trusted
/// proxy named the host the client asked for (`X-Forwarded-Host`).
pub fn csrf_check_for(
    method: &Method,
    headers: &HeaderMap,
    host: Option<&str>,
) -> Result<(), CsrfRefusal> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json && !headers.contains_key(REQUEST_HEADER) {
        return Err(CsrfRefusal::NoJsonOrHeader);
    }
    if !origin_matches(headers, host) {
        return Err(CsrfRefusal::ForeignOrigin);
    }
    Ok(())
}

fn forbidden(r: CsrfRefusal) -> Response {
    (StatusCode::FORBIDDEN, Json(json!({"error": r.message()}))).into_response()
}

/// Require an admin; the [`Actor`] goes into request extensions. In order:
/// an admin certificate, a bearer token, a forward-auth identity from a
/// trusted proxy (`http/proxy.rs`), a dashboard session. Requests that a
/// browser authenticates by itself (session cookie, forward auth) and that
/// change something must pass the CSRF rules.
pub async fn require_admin(State(s): State<HttpState>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<super::tls::PeerInfo>>()
        .map(|c| (c.0.addr, c.0.admin.clone()));
    let (peer_addr, cert_admin) = match peer {
        Some((addr, cert)) => (Some(addr), cert),
        None => (None, None),
    };
    let client = peer_addr.map(|p| s.proxy.client(p, req.headers()));
    let forwarded_host = client.as_ref().and_then(|c| c.host.clone());
    let browser_check = |req: &Request, who: &str| -> Result<(), CsrfRefusal> {
        csrf_check_for(req.method(), req.headers(), forwarded_host.as_deref()).inspect_err(|r| {
            tracing::warn!(
                actor = %crate::edge::wire(who),
                path = %crate::edge::wire(req.uri().path()),
                rule = ?r,
                "refused a browser-authenticated request that may come from another site (CSRF rule)"
            );
        })
    };
    let actor = match (cert_admin, presented(req.headers())) {
        // A presented admin certificate decides alone: one that is revoked
        // or unrecorded is a 401 naming why, whatever else the request carries.
        (Some(cert), _) => match certs::verify(&s.db, &cert).await {
            Ok(actor) => Some(actor),
            Err(refusal) => {
                tracing::warn!(
                    name = %crate::edge::wire(&cert.name),
                    serial = %crate::edge::wire(&cert.serial),
                    path = %crate::edge::wire(req.uri().path()),
                    reason = %refusal,
                    "refused an admin client certificate"
                );
                return cert_refused(&refusal);
            }
        },
        (None, Presented::Bearer(t)) => tokens::verify(&s.db, &t).await,
        (None, cookie) => {
            let identity =
                peer_addr.map_or(ProxyIdentity::None, |p| s.proxy.identity(p, req.headers()));
            match identity {
                ProxyIdentity::Person(actor) => {
                    if let Err(r) = browser_check(&req, &actor.0) {
                        return forbidden(r);
                    }
                    Some(actor)
                }
                ProxyIdentity::NoRole { user, groups } => {
                    let msg = ProxyIdentity::no_role_message(&user, &groups);
                    tracing::warn!(
                        user = %crate::edge::wire(&user),
                        path = %crate::edge::wire(req.uri().path()),
                        "refused a forward-auth person without a role"
                    );
                    return (StatusCode::FORBIDDEN, Json(json!({"error": msg}))).into_response();
                }
                other => {
                    if let ProxyIdentity::Untrusted { user } = &other {
                        tracing::warn!(
                            user = %crate::edge::wire(user),
                            peer = %peer_addr.map(|p| p.to_string()).unwrap_or_default(),
                            path = %crate::edge::wire(req.uri().path()),
                            "ignored an identity header from a peer that is not a trusted proxy (proxy.trusted)"
                        );
                    }
                    match cookie {
                        Presented::Session(id) => {
                            let actor = sessions::verify(&s.db, &id).await;
                            if let Some(Actor(who, _)) = &actor
                                && let Err(r) = browser_check(&req, who)
                            {
                                return forbidden(r);
                            }
                            actor
                        }
                        _ => None,
                    }
                }
            }
        }
    };
    match actor {
        Some(a) => {
            req.extensions_mut().insert(a);
            next.run(req).await
        }
        None => unauthorized(req.headers(), s.oidc.as_deref()),
    }
}

/// The request's client as a trusted proxy describes it (`http/proxy.rs`).
pub(super) fn client_of(s: &HttpState, req: &Request) -> Option<super::proxy::Client> {
    req.extensions()
        .get::<axum::extract::ConnectInfo<super::tls::PeerInfo>>()
        .map(|c| s.proxy.client(c.0.addr, req.headers()))
}

/// Whether session cookies must be `Secure`: served over TLS (`http_tls`),
/// or behind a trusted TLS-terminating proxy the client reached over https.
pub(super) fn https_client(s: &HttpState, client: Option<&super::proxy::Client>) -> bool {
    s.sessions.secure || client.is_some_and(|c| c.proto.as_deref() == Some("https"))
}

/// 401 for an admin certificate that is verified but no longer good.
fn cert_refused(r: &certs::CertRefusal) -> Response {
    let status = match r {
        certs::CertRefusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNAUTHORIZED,
    };
    (status, Json(json!({"error": r.to_string()}))).into_response()
}

/// Refuse a request whose actor's role is below `needed` with a 403 naming
/// both (each API route names its role, `http/api.rs::routes`); runs after
/// [`require_admin`] put the [`Actor`] in the request.
pub async fn require_role(needed: Role, req: Request, next: Next) -> Response {
    match req.extensions().get::<Actor>() {
        Some(Actor(_, role)) if role.allows(needed) => next.run(req).await,
        Some(Actor(who, role)) => {
            tracing::warn!(
                actor = %crate::edge::wire(who),
                %role,
                %needed,
                method = %req.method(),
                path = %crate::edge::wire(req.uri().path()),
                "refused: role too low"
            );
            (
                StatusCode::FORBIDDEN,
                Json(json!({"error": format!("{who} has role {role}; this needs {needed}")})),
            )
                .into_response()
        }
        None => unauthorized(req.headers(), None),
    }
}

/// 401: JSON for API clients, the login form for browsers.
fn unauthorized(headers: &HeaderMap, oidc: Option<&crate::admin::oidc::Oidc>) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        (
            StatusCode::UNAUTHORIZED,
            Html(login_page(oidc.map(|o| o.display_name()))),
        )
            .into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"autogit\"")],
            Json(json!({"error": "missing or invalid admin token (Authorization: Bearer <token> from `autogit-coordinator admin-token create`)"})),
        )
            .into_response()
    }
}

pub(super) fn cookie(value: &str, max_age: Option<u64>, secure: bool) -> String {
    let mut c = format!("{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/");
    if let Some(s) = max_age {
        c.push_str(&format!("; Max-Age={s}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// `POST /login` with form or JSON `token`: opens a session and sets its
/// cookie. The login form is a plain form post, so only the Origin rule
/// applies here (a foreign page must not sign a browser in either).
pub async fn login(State(s): State<HttpState>, req: Request) -> Response {
    let client = client_of(&s, &req);
    let headers = req.headers().clone();
    if !origin_matches(&headers, client.as_ref().and_then(|c| c.host.as_deref())) {
        return forbidden(CsrfRefusal::ForeignOrigin);
    }
    let secure = https_client(&s, client.as_ref());
    let Ok(body) = axum::body::to_bytes(req.into_body(), 64 * 1024).await else {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(json!({"error": "login body larger than 64 KiB"})),
        )
            .into_response();
    };
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
    let Some((token_id, Actor(who, _))) = tokens::verify_with_id(&s.db, &token).await else {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid admin token"})),
        )
            .into_response();
    };
    let session = match sessions::create(&s.db, &token_id, s.sessions.ttl).await {
        Ok(sess) => sess,
        Err(e) => {
            tracing::warn!(error = %e, "open dashboard session");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"error": "cannot open a session: database unavailable"})),
            )
                .into_response();
        }
    };
    tracing::info!(actor = %crate::edge::wire(&who), "dashboard login");
    let cookie = cookie(&session.id, Some(s.sessions.ttl.as_secs()), secure);
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, cookie),
            (header::LOCATION, "/".to_string()),
        ],
    )
        .into_response()
}

/// `POST /logout`: ends the session server-side and clears the cookie.
/// Same CSRF rules as any mutating request.
pub async fn logout(State(s): State<HttpState>, req: Request) -> Response {
    let client = client_of(&s, &req);
    if let Err(r) = csrf_check_for(
        req.method(),
        req.headers(),
        client.as_ref().and_then(|c| c.host.as_deref()),
    ) {
        return forbidden(r);
    }
    if let Some(id) = session_cookie(req.headers())
        && let Err(e) = sessions::end(&s.db, &id).await
    {
        tracing::warn!(error = %e, "end dashboard session");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "cannot end the session: database unavailable"})),
        )
            .into_response();
    }
    (
        StatusCode::OK,
        [(header::SET_COOKIE, cookie("", Some(0), s.sessions.secure))],
        Json(json!({"signed_out": true})),
    )
        .into_response()
}

fn url_form_value(body: &[u8], key: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    pairs.into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// The login page, with a single sign-on button named `sso` when `[oidc]`
/// is configured.
pub(super) fn login_page(sso: Option<&str>) -> String {
    let button = sso.map_or(String::new(), |name| {
        format!(
            "<p><a id=\"sso\" class=\"sso\" href=\"/oidc/login\">Sign in with {}</a></p><p>or</p>",
            super::oidc::escape(name)
        )
    });
    LOGIN_PAGE.replace("<!--sso-->", &button)
}

/// Shown to browsers without a session: no fleet data, only a form. A token
/// in the URL fragment (`/#token=…`, never sent to the server) is submitted
/// automatically.
const LOGIN_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>AutoGit — sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}
input,button,.sso{font-size:1rem;padding:.5rem;width:100%;box-sizing:border-box;margin:.25rem 0}
.sso{display:block;text-align:center;border:1px solid #888;border-radius:4px;text-decoration:none}</style></head>
<body><main><h1>AutoGit</h1>
<!--sso-->
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn reads_are_never_refused() {
        let h = headers(&[("host", "a:8080"), ("origin", "http://a:9999")]);
        assert_eq!(csrf_check(&Method::GET, &h), Ok(()));
    }

    #[test]
    fn a_no_cors_post_is_refused() {
        // What `fetch(url, {method: "POST", mode: "no-cors", credentials:
        // "include"})` can send: a simple content type, no custom header.
        for ct in [
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
        ] {
            let mut h = headers(&[("host", "127.0.0.1:8080")]);
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(
                csrf_check(&Method::POST, &h),
                Err(CsrfRefusal::NoJsonOrHeader)
            );
        }
        let h = headers(&[("host", "127.0.0.1:8080")]);
        assert_eq!(
            csrf_check(&Method::POST, &h),
            Err(CsrfRefusal::NoJsonOrHeader)
        );
    }

    #[test]
    fn json_or_the_header_from_the_own_origin_passes() {
        let h = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("content-type", "application/json; charset=utf-8"),
        ]);
        assert_eq!(csrf_check(&Method::POST, &h), Ok(()));
        let h = headers(&[
            ("host", "Coord.Example:443"),
            ("x-autogit-request", "1"),
            ("origin", "https://coord.example:443"),
        ]);
        assert_eq!(csrf_check(&Method::POST, &h), Ok(()));
        // No Origin (older clients): the header rule alone decides.
        let h = headers(&[("host", "127.0.0.1:8080"), ("x-autogit-request", "1")]);
        assert_eq!(csrf_check(&Method::POST, &h), Ok(()));
    }

    #[test]
    fn another_port_of_the_same_host_is_a_foreign_origin() {
        for origin in [
            "http://127.0.0.1:9999",
            "http://127.0.0.1",
            "null",
            "http://127.0.0.1:8080.evil.example",
            "file://",
        ] {
            let mut h = headers(&[
                ("host", "127.0.0.1:8080"),
                ("content-type", "application/json"),
            ]);
            h.insert(
                header::ORIGIN,
                HeaderValue::from_str(origin).expect("header"),
            );
            assert_eq!(
                csrf_check(&Method::POST, &h),
                Err(CsrfRefusal::ForeignOrigin),
                "{origin}"
            );
        }
        let h = headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("x-autogit-request", "1"),
        ]);
        assert_eq!(
            csrf_check(&Method::POST, &h),
            Err(CsrfRefusal::ForeignOrigin),
            "Origin without Host"
        );
    }

    #[test]
    fn cookie_flags() {
        let c = cookie("abc", Some(60), true);
        for flag in [
            "HttpOnly",
            "SameSite=Strict",
            "Path=/",
            "Secure",
            "Max-Age=60",
        ] {
            assert!(c.contains(flag), "{c} lacks {flag}");
        }
        assert!(!cookie("abc", None, false).contains("Secure"));
    }
}
