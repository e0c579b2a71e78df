//! Single sign-on end to end: a real OpenID provider (`oidc-provider` from
//! npm, `tests/oidc/provider.mjs`) on loopback, a real coordinator with
//! `[oidc]`, and headless Chromium (`tests/oidc/browser.mjs`, playwright-core)
//! clicking "Sign in with …", filling the provider's login form and landing
//! on the dashboard.
//!
//! * A viewer sees the fleet without the Cordon button, and a forged POST
//!   with their session gets 403; an operator drains an agent and the audit
//!   log names them; a person whose groups have no role gets no session.
//! * Sessions from SSO are listed and revoked like token sessions, and
//!   expire.
//! * The provider rotating its signing key does not break sign-in.
//! * A callback without the browser's state cookie, a replayed one, one
//!   carrying another sign-in's code (PKCE) and one naming another issuer
//!   are refused.
//! * Tampered, foreign-signed, expired, wrong-audience, wrong-nonce and
//!   wrong-issuer ID tokens (made by the provider's test hook, the rest of
//!   the flow real) are refused with the reason named.
//! * Admin tokens keep working with `[oidc]` configured.
//!
//! Needs Node.js with `tests/oidc/node_modules` (`npm ci` there; `cargo
//! xtask test` runs it) and Chromium. Skipped with a message when either
//! is missing, unless `AUTOGIT_REQUIRE_OIDC` is set (`cargo xtask test` sets
//! it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use autogit_tests::harness::{
    Agent, Coordinator, Proc, Sim, free_port, read_line_timeout, wait_for,
};
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
const CLIENT_ID: &str = "autogit";
const CLIENT_SECRET: &str = "oidc-client-s3cret";
const SECRET_ENV: &str = "AUTOGIT_TEST_OIDC_CLIENT_SECRET";

fn oidc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oidc")
}

/// Whether node, the npm packages and Chromium are there; panics instead of
/// skipping under `AUTOGIT_REQUIRE_OIDC`.
fn available() -> bool {
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let modules = oidc_dir().join("node_modules/oidc-provider").is_dir()
        && oidc_dir().join("node_modules/playwright-core").is_dir();
    let chromium = Path::new("/usr/bin/chromium").exists();
    let missing: Vec<&str> = [
        (!node).then_some("node (Node.js 20)"),
        (!modules).then_some("tests/oidc/node_modules (run `npm ci` in tests/oidc)"),
        (!chromium).then_some("/usr/bin/chromium (apt-get install chromium)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("AUTOGIT_REQUIRE_OIDC").is_none(),
        "AUTOGIT_REQUIRE_OIDC is set but the SSO tests lack: {}",
        missing.join(", ")
    );
    eprintln!("SKIPPED: the SSO tests lack {}", missing.join(", "));
    false
}

/// `provider.mjs` on a loopback port; killed on drop. Its stderr goes to
/// `$TMPDIR/autogit-oidc-provider-<port>.log`.
struct Provider {
    _proc: Proc,
    port: u16,
}

impl Provider {
    fn start(port: u16, redirect: &str, kid: &str, id_token_claims: bool) -> Provider {
        let mut cmd = Command::new("node");
        cmd.current_dir(oidc_dir())
            .arg("provider.mjs")
            .args(["--port", &port.to_string()])
            .args(["--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET])
            .args(["--redirect-uri", redirect, "--kid", kid]);
        if id_token_claims {
            cmd.arg("--id-token-claims");
        }
        let log = std::env::temp_dir().join(format!("autogit-oidc-provider-{port}.log"));
        let (proc, stdout) = Proc::spawn(cmd, log).expect("start node provider.mjs");
        let line = read_line_timeout(stdout, T)
            .unwrap_or_else(|e| panic!("provider READY line: {e}\n{}", proc.logs()));
        assert_eq!(line.trim(), format!("READY http://127.0.0.1:{port}"));
        Provider { _proc: proc, port }
    }

    fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Run `browser.mjs` against the dashboard at `url` as `login`.
fn browser(url: &str, login: &str, extra: &[&str]) -> Value {
    let out = Command::new("node")
        .current_dir(oidc_dir())
        .arg("browser.mjs")
        .args(["--url", url, "--login", login, "--timeout-ms", "40000"])
        .args(extra)
        .output()
        .expect("run node browser.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| {
        panic!(
            "browser.mjs printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn cookie(result: &Value, name: &str) -> Option<String> {
    result["cookies"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["value"].as_str())
        .map(String::from)
}

struct Reply {
    status: u16,
    body: String,
    set_cookies: Vec<String>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

fn call(method: &str, url: &str, headers: &[(&str, String)]) -> Reply {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .new_agent();
    let resp = if method == "GET" {
        let mut r = agent.get(url);
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        r.call()
    } else {
        let mut r = agent.post(url);
        for (k, v) in headers {
            r = r.header(*k, v);
        }
        r.send_empty()
    };
    let mut resp = resp.unwrap();
    let set_cookies = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(String::from))
        .collect();
    Reply {
        status: resp.status().as_u16(),
        set_cookies,
        body: resp.body_mut().read_to_string().unwrap_or_default(),
    }
}

fn session(id: &str) -> (&'static str, String) {
    ("Cookie", format!("autogit_session={id}"))
}

/// A coordinator with `[oidc]` against `issuer`, its HTTP port fixed up
/// front (the redirect URL names it). Roles: ci-admins, ci-operators,
/// ci-viewers, as `provider.mjs`'s accounts are in them.
fn coordinator(http_port: u16, issuer: &str, extra: &str) -> Coordinator {
    // The client secret reaches the coordinator through the environment
    // (`client_secret_env`); `config/oidc.rs` tests the file variant.
    let cfg = format!(
        "{extra}\n[roles]\nadmin = [\"ci-admins\"]\noperator = [\"ci-operators\"]\nviewer = [\"ci-viewers\"]\n\
         [oidc]\nissuer = \"{issuer}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret_env = \"{SECRET_ENV}\"\n\
         redirect_url = \"http://127.0.0.1:{http_port}/oidc/callback\"\n\
         scopes = [\"openid\", \"profile\", \"email\", \"groups\"]\ndisplay_name = \"Test IdP\"\n"
    );
    let mut c = Coordinator::init(&cfg).unwrap();
    c.env.push((SECRET_ENV.into(), CLIENT_SECRET.into()));
    c.http = Some(SocketAddr::from(([127, 0, 0, 1], http_port)));
    c.start().unwrap();
    c
}

/// A provider (signing key `k1`; name and groups also in the ID token with
/// `id_token_claims`) and a coordinator signing people in through it.
fn sso(id_token_claims: bool, extra: &str) -> (Provider, Coordinator) {
    let (idp_port, http_port) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let redirect = format!("http://127.0.0.1:{http_port}/oidc/callback");
    let idp = Provider::start(idp_port, &redirect, "k1", id_token_claims);
    let c = coordinator(http_port, &idp.issuer(), extra);
    (idp, c)
}

/// The `Cookie` header with the sign-in state cookie `browser.mjs` saw.
fn state_cookie(signin: &Value) -> (&'static str, String) {
    let state = cookie(signin, "autogit_oidc_state").expect("state cookie");
    ("Cookie", format!("autogit_oidc_state={state}"))
}

fn events(c: &Coordinator, admin: &str) -> Vec<Value> {
    let r = call(
        "GET",
        &c.http_url("/api/v1/events?limit=100"),
        &[("Authorization", format!("Bearer {admin}"))],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["events"].as_array().cloned().unwrap_or_default()
}

#[test]
fn people_sign_in_through_the_provider_and_the_server_holds_each_to_their_role() {
    if !available() {
        return;
    }
    let sim = Sim::start().unwrap();
    let (_idp, c) = sso(false, &sim.gitlab_config());
    let admin = c.admin_token("ops-bot", &[]).unwrap();
    let mut a = Agent::new("").unwrap();
    let agent_id = a.join_ok(&c.grpc_addr(), &c.token(&[]).unwrap()).unwrap();
    a.start().unwrap();
    c.wait_agent_state(&agent_id, "ready", T).unwrap();
    let dashboard = c.http_url("/");

    // The login page offers the provider.
    let page = call("GET", &dashboard, &[("Accept", "text/html".into())]);
    assert_eq!(page.status, 401);
    assert!(page.body.contains("Sign in with Test IdP"), "{}", page.body);

    // Vera (ci-viewers) sees the fleet, and no Cordon or Drain button.
    let vera = browser(&dashboard, "vera", &[]);
    assert!(vera["error"].is_null(), "{vera}\n{}", c.logs());
    let who = vera["who"].as_str().unwrap_or_default();
    assert!(
        who.contains("Vera Viewer") && who.contains("viewer"),
        "{who}"
    );
    let html = vera["html"].as_str().unwrap();
    assert!(html.contains(&agent_id), "the fleet is shown");
    assert!(
        !html.contains("aria-label=\"Cordon") && !html.contains("aria-label=\"Drain"),
        "a viewer's page offers no cordon or drain"
    );
    let vera_session = cookie(&vera, "autogit_session").expect("session cookie");
    // A forged POST with her session, passing the CSRF rules: the server says no.
    let cordon = c.http_url(&format!("/api/v1/agents/{agent_id}/cordon"));
    let forged = call(
        "POST",
        &cordon,
        &[session(&vera_session), ("X-AutoGit-Request", "1".into())],
    );
    assert_eq!(
        (forged.status, forged.json()["error"].as_str().unwrap_or("")),
        (
            403,
            "sso:Vera Viewer (vera) has role viewer; this needs operator"
        )
    );

    // Otto (ci-operators) gets the buttons and drains the agent.
    let otto = browser(&dashboard, "otto", &[]);
    assert!(otto["error"].is_null(), "{otto}");
    assert!(
        otto["who"]
            .as_str()
            .unwrap_or_default()
            .contains("Otto Operator")
    );
    assert!(
        otto["html"]
            .as_str()
            .unwrap()
            .contains("aria-label=\"Drain")
    );
    let otto_session = cookie(&otto, "autogit_session").unwrap();
    let drain = call(
        "POST",
        &c.http_url(&format!("/api/v1/agents/{agent_id}/drain")),
        &[session(&otto_session), ("X-AutoGit-Request", "1".into())],
    );
    assert_eq!(drain.status, 200, "{}", drain.body);
    let log = events(&c, &admin);
    assert!(
        log.iter()
            .any(|e| e["kind"] == "agent.drain" && e["actor"] == "sso:Otto Operator (otto)"),
        "the audit log names the person who drained: {log:?}"
    );
    assert!(
        log.iter().any(|e| e["kind"] == "admin_session.opened"
            && e["actor"] == "sso:Vera Viewer (vera)"
            && e["detail"]["role"] == "viewer"),
        "sign-ins are in the audit log: {log:?}"
    );

    // Nobody (no group with a role) gets no session.
    let nobody = browser(&dashboard, "nobody", &["--timeout-ms", "15000"]);
    assert!(nobody["error"].is_string(), "{nobody}");
    assert!(
        nobody["html"]
            .as_str()
            .unwrap_or_default()
            .contains("has no AutoGit role"),
        "{nobody}"
    );

    // SSO sessions are listed and revoked like any other.
    let listed = call(
        "GET",
        &c.http_url("/api/v1/sessions"),
        &[("Authorization", format!("Bearer {admin}"))],
    )
    .json();
    let rows = listed.as_array().unwrap();
    assert_eq!(
        rows.iter().filter(|s| s["via"] == "sso").count(),
        2,
        "{listed}"
    );
    let vera_row = rows
        .iter()
        .find(|s| s["actor"] == "sso:Vera Viewer (vera)")
        .unwrap();
    let revoke = call(
        "POST",
        &c.http_url(&format!(
            "/api/v1/sessions/{}/revoke",
            vera_row["id"].as_str().unwrap()
        )),
        &[("Authorization", format!("Bearer {admin}"))],
    );
    assert_eq!(revoke.status, 200, "{}", revoke.body);
    let whoami = |id: &str| call("GET", &c.http_url("/api/v1/whoami"), &[session(id)]);
    assert_eq!(whoami(&vera_session).status, 401, "revoked");
    assert_eq!(
        whoami(&otto_session).json()["role"],
        "operator",
        "untouched"
    );

    // Admin tokens keep working next to single sign-on.
    let me = call(
        "GET",
        &c.http_url("/api/v1/whoami"),
        &[("Authorization", format!("Bearer {admin}"))],
    );
    assert_eq!(me.json()["actor"], "token:ops-bot");
    assert!(
        !c.logs().contains(CLIENT_SECRET),
        "the client secret is never logged"
    );
}

#[test]
fn a_rotated_provider_key_still_signs_in_and_sso_sessions_expire() {
    if !available() {
        return;
    }
    // Name and groups in the ID token itself this time (no userinfo call).
    let (idp, c) = sso(true, "session_ttl = \"6s\"");
    let dashboard = c.http_url("/");
    let whoami = |id: &str| call("GET", &c.http_url("/api/v1/whoami"), &[session(id)]);
    let first = browser(&dashboard, "ada", &[]);
    assert!(first["error"].is_null(), "{first}\n{}", c.logs());
    assert!(
        first["who"]
            .as_str()
            .unwrap_or_default()
            .contains("Ada Admin")
    );
    let first_session = cookie(&first, "autogit_session").unwrap();
    assert_eq!(whoami(&first_session).json()["role"], "admin");

    // The provider restarts with a new signing key; the coordinator holds
    // the old JWKS and must fetch the new one.
    let idp_port = idp.port;
    drop(idp);
    let _idp = Provider::start(idp_port, &c.http_url("/oidc/callback"), "k2", true);
    let second = browser(&dashboard, "ada", &[]);
    assert!(second["error"].is_null(), "{second}\n{}", c.logs());
    assert!(c.logs().contains("key rotation"), "{}", c.logs());
    let second_session = cookie(&second, "autogit_session").unwrap();
    assert_eq!(whoami(&second_session).json()["role"], "admin");

    // session_ttl = 6s: the first session ends on its own.
    wait_for(T, "the first SSO session to expire", || {
        (whoami(&first_session).status == 401).then_some(())
    })
    .unwrap();
}

#[test]
fn a_callback_from_another_browser_replayed_or_with_another_sign_ins_code_is_refused() {
    if !available() {
        return;
    }
    let (_idp, c) = sso(false, "");
    let dashboard = c.http_url("/");
    let stop = ["--stop-at-callback"];
    let one = browser(&dashboard, "otto", &stop);
    let two = browser(&dashboard, "otto", &stop);
    let callback_of = |r: &Value| {
        r["callback"]
            .as_str()
            .unwrap_or_else(|| panic!("no callback URL from the browser: {r}"))
            .to_string()
    };
    let param = |url: &str, k: &str| {
        reqwest::Url::parse(url)
            .unwrap()
            .query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    let (cb1, cb2) = (callback_of(&one), callback_of(&two));

    // Delivered by someone else's browser (no state cookie): login CSRF.
    let r = call("GET", &cb1, &[]);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("not started in this browser"), "{}", r.body);

    // Sign-in two's code with sign-in one's state: PKCE ties a code to its
    // verifier, so the provider refuses the exchange.
    let mixed = format!(
        "{}?code={}&state={}",
        c.http_url("/oidc/callback"),
        param(&cb2, "code"),
        param(&cb1, "state")
    );
    let r = call("GET", &mixed, &[state_cookie(&one)]);
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("refused the sign-in"), "{}", r.body);
    assert!(
        r.set_cookies
            .iter()
            .all(|c| !c.starts_with("autogit_session="))
    );

    // Sign-in two as delivered works once; a replay finds nothing.
    let ok = call("GET", &cb2, &[state_cookie(&two)]);
    assert_eq!(ok.status, 200, "{}\n{}", ok.body, c.logs());
    assert!(
        ok.set_cookies
            .iter()
            .any(|c| c.starts_with("autogit_session=")
                && c.contains("HttpOnly")
                && c.contains("SameSite=Strict"))
    );
    let replay = call("GET", &cb2, &[state_cookie(&two)]);
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert!(replay.body.contains("already used"), "{}", replay.body);

    // A callback claiming another issuer (RFC 9207 mix-up) is refused.
    let mixed_up = call(
        "GET",
        &format!(
            "{}?code={}&state={}&iss=https%3A%2F%2Fevil.example",
            c.http_url("/oidc/callback"),
            param(&cb1, "code"),
            param(&cb1, "state")
        ),
        &[state_cookie(&one)],
    );
    assert_eq!(mixed_up.status, 401, "{}", mixed_up.body);
    assert!(mixed_up.body.contains("evil.example"), "{}", mixed_up.body);

    // The provider's own refusal is shown, not a session.
    let denied = call(
        "GET",
        &c.http_url("/oidc/callback?error=access_denied&error_description=nope"),
        &[],
    );
    assert_eq!(denied.status, 401);
    assert!(
        denied.body.contains("access_denied: nope"),
        "{}",
        denied.body
    );
}

#[test]
fn tampered_expired_wrong_audience_wrong_nonce_and_foreign_id_tokens_are_refused() {
    if !available() {
        return;
    }
    let (idp, c) = sso(false, "");
    let dashboard = c.http_url("/");
    // The provider's test hook makes its token endpoint hand out this kind
    // of broken ID token; the coordinator must say what is wrong and open
    // no session.
    let cases = [
        ("tampered", "signature does not verify"),
        ("foreign-key", "signature does not verify"),
        ("expired", "ID token has expired"),
        ("wrong-audience", "not meant for this client"),
        ("wrong-nonce", "nonce does not match"),
        ("wrong-issuer", "issuer is not"),
        ("honest", "Signed in as sso:Otto Operator (otto)"),
    ];
    for (mode, says) in cases {
        let set = call(
            "POST",
            &format!("{}/__test__/id-token?mode={mode}", idp.issuer()),
            &[],
        );
        assert_eq!(set.status, 200, "{}", set.body);
        let signin = browser(&dashboard, "otto", &["--stop-at-callback"]);
        let callback = signin["callback"]
            .as_str()
            .unwrap_or_else(|| panic!("{mode}: no callback URL: {signin}"));
        let r = call("GET", callback, &[state_cookie(&signin)]);
        assert!(r.body.contains(says), "{mode}: {}\n{}", r.body, c.logs());
        let session = r
            .set_cookies
            .iter()
            .any(|c| c.starts_with("autogit_session=") && !c.starts_with("autogit_session=;"));
        if mode == "honest" {
            assert_eq!((r.status, session), (200, true), "{mode}");
        } else {
            assert_eq!((r.status, session), (401, false), "{mode}");
        }
    }
}

#[test]
fn without_an_oidc_section_the_sso_routes_do_not_exist() {
    let c = {
        let mut c = Coordinator::init("").unwrap();
        c.start().unwrap();
        c
    };
    assert_eq!(call("GET", &c.http_url("/oidc/login"), &[]).status, 404);
    let page = call("GET", &c.http_url("/"), &[("Accept", "text/html".into())]);
    assert_eq!(page.status, 401);
    assert!(
        !page.body.contains("id=\"sso\""),
        "no SSO button without [oidc]"
    );
}
