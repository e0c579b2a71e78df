//! Operator roles against a real coordinator over HTTP: a viewer reads
//! and is refused every change (403 naming the role it lacks), also through
//! a dashboard session made from its token; an operator cordons and drains,
//! and the audit log names it, but may not manage tokens, labels or reload;
//! a token made without `--role` is an admin, as every token made before
//! roles existed.

use std::time::Duration;

use autogit_tests::harness::{Agent, Coordinator, Sim, wait_for};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(45);

fn token(c: &Coordinator, name: &str, role: Option<&str>) -> String {
    let args = role.map(|r| vec!["--role", r]).unwrap_or_default();
    c.admin_token(name, &args).unwrap()
}

/// One request; returns the status and the JSON body (`null` if none).
fn call(
    c: &Coordinator,
    method: &str,
    path: &str,
    auth: (&str, &str),
    body: Option<Value>,
) -> (u16, Value) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let url = c.http_url(path);
    let mut resp = match method {
        "GET" => agent.get(&url).header(auth.0, auth.1).call(),
        _ => {
            let req = agent
                .post(&url)
                .header(auth.0, auth.1)
                // What the dashboard sends with every change (CSRF rule).
                .header("X-AutoGit-Request", "1");
            match body {
                Some(b) => req.send_json(b),
                None => req.send_empty(),
            }
        }
    }
    .unwrap();
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_json().unwrap_or(Value::Null);
    (status, body)
}

fn bearer(t: &str) -> (&'static str, String) {
    ("Authorization", format!("Bearer {t}"))
}

#[test]
fn each_role_may_do_its_part_and_is_refused_the_rest() {
    let sim = Sim::start().unwrap();
    let mut c = Coordinator::init(&sim.gitlab_config()).unwrap();
    c.start().unwrap();
    let viewer = token(&c, "vera", Some("viewer"));
    let operator = token(&c, "otto", Some("operator"));
    let admin = token(&c, "ada", None);
    let mut a = Agent::new("").unwrap();
    let agent_id = a.join_ok(&c.grpc_addr(), &c.token(&[]).unwrap()).unwrap();
    a.start().unwrap();
    c.wait_agent_state(&agent_id, "ready", T).unwrap();
    let cordon = format!("/api/v1/agents/{agent_id}/cordon");
    let labels = format!("/api/v1/agents/{agent_id}/labels");
    let new_token = json!({"ttl_seconds": 3600, "uses": 1});

    // The viewer reads everything and changes nothing.
    let (v, vb) = bearer(&viewer);
    for path in [
        "/api/v1/agents",
        "/api/v1/pools",
        "/api/v1/runners",
        "/api/v1/tokens",
        "/api/v1/events",
    ] {
        assert_eq!(
            call(&c, "GET", path, (v, &vb), None).0,
            200,
            "viewer reads {path}"
        );
    }
    assert_eq!(
        call(&c, "GET", "/api/v1/whoami", (v, &vb), None).1,
        json!({"actor": "token:vera", "role": "viewer"})
    );
    let (status, body) = call(&c, "POST", &cordon, (v, &vb), None);
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["error"],
        "token:vera has role viewer; this needs operator"
    );
    for (path, body) in [
        ("/api/v1/tokens", Some(new_token.clone())),
        ("/api/v1/reload", None),
        (labels.as_str(), Some(json!({"set": {"trust": "x"}}))),
    ] {
        assert_eq!(
            call(&c, "POST", path, (v, &vb), body).0,
            403,
            "viewer POST {path}"
        );
    }

    // A dashboard session made from the viewer's token has the same role.
    let login = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .new_agent()
        .post(&c.http_url("/login"))
        .send_json(json!({"token": viewer}))
        .unwrap();
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.split(';').next())
        .expect("a session cookie")
        .to_string();
    let (status, body) = call(&c, "POST", &cordon, ("Cookie", &cookie), None);
    assert_eq!(
        (status, &body["error"]),
        (
            403,
            &json!("token:vera has role viewer; this needs operator")
        )
    );
    assert_eq!(
        call(&c, "GET", "/api/v1/whoami", ("Cookie", &cookie), None).1["role"],
        "viewer"
    );

    let agent_state = |field: &str| {
        let (_, agents) = call(&c, "GET", "/api/v1/agents", (v, &vb), None);
        agents[0][field].clone()
    };
    assert_eq!(
        agent_state("cordoned"),
        false,
        "the refused cordon changed nothing"
    );

    // The operator cordons and drains; the audit log names it.
    let (o, ob) = bearer(&operator);
    assert_eq!(call(&c, "POST", &cordon, (o, &ob), None).0, 200);
    assert_eq!(agent_state("cordoned"), true);
    let (status, body) = call(
        &c,
        "POST",
        &format!("/api/v1/agents/{agent_id}/drain"),
        (o, &ob),
        Some(json!({"deadline_seconds": 3600})),
    );
    assert_eq!(status, 200, "{body}");
    wait_for(T, "the drain in the audit log with its actor", || {
        let (_, ev) = call(&c, "GET", "/api/v1/events?limit=50", (v, &vb), None);
        ev["events"]
            .as_array()?
            .iter()
            .any(|e| e["kind"] == "agent.drain" && e["actor"] == "token:otto")
            .then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {}",
            call(&c, "GET", "/api/v1/events?limit=50", (v, &vb), None).1
        )
    });
    for (path, body, needs) in [
        ("/api/v1/tokens", Some(new_token.clone()), "admin"),
        ("/api/v1/reload", None, "admin"),
        (
            labels.as_str(),
            Some(json!({"set": {"trust": "x"}})),
            "admin",
        ),
    ] {
        let (status, err) = call(&c, "POST", path, (o, &ob), body);
        assert_eq!(
            (status, err["error"].as_str().unwrap_or("")),
            (
                403,
                format!("token:otto has role operator; this needs {needs}").as_str()
            ),
            "operator POST {path}"
        );
    }

    // A token made without --role may do everything.
    let (ad, adb) = bearer(&admin);
    assert_eq!(
        call(&c, "GET", "/api/v1/whoami", (ad, &adb), None).1["role"],
        "admin"
    );
    let (status, body) = call(&c, "POST", "/api/v1/tokens", (ad, &adb), Some(new_token));
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        call(
            &c,
            "POST",
            &labels,
            (ad, &adb),
            Some(json!({"set": {"trust": "x"}}))
        )
        .0,
        200
    );

    // Sessions: only an admin lists and ends them; an ended session is
    // signed out at its next request.
    assert_eq!(call(&c, "GET", "/api/v1/sessions", (v, &vb), None).0, 403);
    assert_eq!(call(&c, "GET", "/api/v1/sessions", (o, &ob), None).0, 403);
    let (status, live) = call(&c, "GET", "/api/v1/sessions", (ad, &adb), None);
    assert_eq!(status, 200, "{live}");
    let live = live.as_array().unwrap().clone();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(
        (&live[0]["actor"], &live[0]["role"]),
        (&json!("token:vera"), &json!("viewer"))
    );
    let session = live[0]["id"].as_str().unwrap().to_string();
    assert!(
        !cookie.contains(&session),
        "the handle is not the session id"
    );
    let listed: Vec<Value> = serde_json::from_str(
        &c.cli_ok(&["admin-session", "list", "--output", "json"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        listed[0]["id"],
        session.as_str(),
        "the CLI shows the same handle"
    );
    let revoke = format!("/api/v1/sessions/{session}/revoke");
    assert_eq!(
        call(&c, "POST", &revoke, (o, &ob), None).0,
        403,
        "an operator may not"
    );
    assert_eq!(call(&c, "POST", &revoke, (ad, &adb), None).0, 200);
    assert_eq!(
        call(&c, "GET", "/api/v1/whoami", ("Cookie", &cookie), None).0,
        401,
        "the revoked session is signed out"
    );
    assert_eq!(call(&c, "POST", &revoke, (ad, &adb), None).0, 404, "gone");
    let (_, ev) = call(&c, "GET", "/api/v1/events?limit=50", (ad, &adb), None);
    assert!(
        ev["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "admin_session.revoked" && e["actor"] == "token:ada"),
        "{ev}"
    );

    // The CLI lists each token's role and refuses an unknown one by name.
    let listed: Vec<Value> = serde_json::from_str(
        &c.cli_ok(&["admin-token", "list", "--output", "json"])
            .unwrap(),
    )
    .unwrap();
    let role_of = |name: &str| {
        listed
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["role"].clone())
    };
    assert_eq!(
        (role_of("vera"), role_of("otto"), role_of("ada")),
        (
            Some(json!("viewer")),
            Some(json!("operator")),
            Some(json!("admin"))
        )
    );
    let bad = c
        .cli(&["admin-token", "create", "--name", "x", "--role", "root"])
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("unknown role \"root\""), "{stderr}");
}
