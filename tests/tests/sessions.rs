//! Dashboard sessions and the CSRF rules against a real coordinator process
//! (real SQLite, real HTTP and HTTPS over loopback): the cookie is an opaque
//! session, not the admin token; logout, admin token revocation (the CLI's
//! offline path, while the coordinator runs) and expiry end it; requests a
//! page on another port of the same host can make with the cookie change
//! nothing; under `http_tls` the cookie is `Secure`.

use std::time::{Duration, Instant};

use autogit_tests::harness::Coordinator;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, COOKIE, ORIGIN, SET_COOKIE};
use serde_json::Value;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn start(extra: &str) -> (Coordinator, String) {
    let mut c = Coordinator::init(extra).unwrap();
    c.start().unwrap();
    let admin = c.admin_token("tester", &[]).unwrap();
    (c, admin)
}

/// `POST /login` as the login form does; returns the whole `Set-Cookie`.
async fn login(http: &reqwest::Client, base: &str, token: &str) -> String {
    let resp = http
        .post(format!("{base}/login"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    resp.headers()
        .get(SET_COOKIE)
        .expect("login sets a cookie")
        .to_str()
        .unwrap()
        .to_string()
}

/// `name=value` of a `Set-Cookie` header.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().trim().to_string()
}

async fn get_agents(http: &reqwest::Client, base: &str, cookie: &str) -> StatusCode {
    http.get(format!("{base}/api/v1/agents"))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn the_cookie_is_an_opaque_session_and_logout_ends_it() {
    let (c, admin) = start("");
    let base = c.http_url("");
    let http = client();
    let set = login(&http, &base, &admin).await;
    let cookie = pair(&set);
    let value = cookie.strip_prefix("autogit_session=").unwrap();
    assert!(!value.is_empty());
    assert!(
        !set.contains(&admin),
        "the cookie must not carry the admin token: {set}"
    );
    let secret = admin.split_once('.').unwrap().1;
    assert!(!set.contains(secret), "{set}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{set} lacks {flag}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    assert_eq!(get_agents(&http, &base, &cookie).await, StatusCode::OK);
    // The admin token itself in the cookie is not a session.
    assert_eq!(
        get_agents(&http, &base, &format!("autogit_session={admin}")).await,
        StatusCode::UNAUTHORIZED
    );

    // Logout without the header is refused like any cookie request...
    let refused = http
        .post(format!("{base}/logout"))
        .header(COOKIE, &cookie)
        .header(CONTENT_TYPE, "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(get_agents(&http, &base, &cookie).await, StatusCode::OK);
    // ...and with it ends the session server-side and clears the cookie.
    let out = http
        .post(format!("{base}/logout"))
        .header(COOKIE, &cookie)
        .header("X-AutoGit-Request", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::OK);
    let cleared = out.headers().get(SET_COOKIE).unwrap().to_str().unwrap();
    assert!(cleared.starts_with("autogit_session=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(
        get_agents(&http, &base, &cookie).await,
        StatusCode::UNAUTHORIZED,
        "the old cookie must be dead after logout"
    );
    // The admin token itself still works as a bearer token.
    let bearer = http
        .get(format!("{base}/api/v1/agents"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::OK);
}

#[tokio::test]
async fn revoking_the_admin_token_offline_ends_its_sessions() {
    let (c, admin) = start("");
    let base = c.http_url("");
    let http = client();
    let cookie = pair(&login(&http, &base, &admin).await);
    assert_eq!(get_agents(&http, &base, &cookie).await, StatusCode::OK);
    let list: Vec<Value> = serde_json::from_str(
        &c.cli_ok(&["admin-token", "list", "--output", "json"])
            .unwrap(),
    )
    .unwrap();
    let id = list[0]["id"].as_str().unwrap().to_string();
    c.cli_ok(&["admin-token", "revoke", &id]).unwrap();
    assert_eq!(
        get_agents(&http, &base, &cookie).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let (c, admin) = start("session_ttl = \"5s\"\n");
    let base = c.http_url("");
    let http = client();
    let set = login(&http, &base, &admin).await;
    assert!(set.contains("Max-Age=5"), "{set}");
    let cookie = pair(&set);
    assert_eq!(get_agents(&http, &base, &cookie).await, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if get_agents(&http, &base, &cookie).await == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(Instant::now() < deadline, "session still valid after 30 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn requests_from_another_port_of_the_same_host_change_nothing() {
    let (c, admin) = start("");
    let base = c.http_url("");
    let port = c.http.unwrap().port();
    let foreign = format!("http://127.0.0.1:{}", port.wrapping_add(1).max(1));
    let http = client();
    let cookie = pair(&login(&http, &base, &admin).await);
    c.token(&["--ttl", "1h"]).unwrap();
    let join_id = c.tokens().unwrap()[0]["id"].as_str().unwrap().to_string();
    let agent = uuid::Uuid::new_v4().to_string();
    let runner = uuid::Uuid::new_v4().to_string();
    let routes = [
        format!("/api/v1/agents/{agent}/cordon"),
        format!("/api/v1/agents/{agent}/uncordon"),
        format!("/api/v1/agents/{agent}/drain"),
        format!("/api/v1/agents/{agent}/revoke"),
        format!("/api/v1/runners/{runner}/stop"),
        format!("/api/v1/tokens/{join_id}/revoke"),
    ];
    for path in &routes {
        // What `fetch(url, {method: "POST", mode: "no-cors", credentials:
        // "include"})` sends from the other port: the cookie, a simple
        // content type, the page's Origin.
        let no_cors = http
            .post(format!("{base}{path}"))
            .header(COOKIE, &cookie)
            .header(CONTENT_TYPE, "text/plain;charset=UTF-8")
            .header(ORIGIN, &foreign)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(no_cors.status(), StatusCode::FORBIDDEN, "{path}");
        let body: Value = no_cors.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("CSRF rule"),
            "{path}: {body}"
        );
        // Even with the header (a CORS request would need a preflight the
        // coordinator never answers), a foreign Origin is refused.
        let foreign_origin = http
            .post(format!("{base}{path}"))
            .header(COOKIE, &cookie)
            .header(CONTENT_TYPE, "application/json")
            .header(ORIGIN, &foreign)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(foreign_origin.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let tokens = c.tokens().unwrap();
    assert_eq!(tokens[0]["revoked"], Value::Bool(false), "{tokens:?}");
    let events = c.cli_ok(&["events", "--output", "json"]).unwrap();
    assert!(!events.contains("token.revoked"), "{events}");

    // Control: the same cookie from the dashboard's own origin works.
    let own = http
        .post(format!("{base}/api/v1/tokens/{join_id}/revoke"))
        .header(COOKIE, &cookie)
        .header("X-AutoGit-Request", "1")
        .header(ORIGIN, &base)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    let unknown_agent = http
        .post(format!("{base}/api/v1/agents/{agent}/cordon"))
        .header(COOKIE, &cookie)
        .header(CONTENT_TYPE, "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown_agent.status(), StatusCode::NOT_FOUND);
    assert_eq!(c.tokens().unwrap()[0]["revoked"], Value::Bool(true));

    // Bearer callers (CLI, scripts) are not cookie-based: no header needed.
    let bearer = http
        .post(format!("{base}/api/v1/agents/{agent}/cordon"))
        .bearer_auth(&admin)
        .header(ORIGIN, &foreign)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), StatusCode::NOT_FOUND);

    // A foreign page cannot sign the browser in either.
    let forged_login = http
        .post(format!("{base}/login"))
        .header(ORIGIN, &foreign)
        .form(&[("token", admin.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(forged_login.status(), StatusCode::FORBIDDEN);
    assert!(forged_login.headers().get(SET_COOKIE).is_none());
}

#[tokio::test]
async fn the_cookie_is_secure_under_http_tls() {
    let (c, admin) = start("http_tls = true\n");
    let ca = std::fs::read(c.dir.join("ca.pem")).unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve("localhost", c.http.unwrap())
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", c.http.unwrap().port());
    let set = login(&http, &base, &admin).await;
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{set} lacks {flag}");
    }
    assert!(!set.contains(&admin), "{set}");
    assert_eq!(get_agents(&http, &base, &pair(&set)).await, StatusCode::OK);
}
