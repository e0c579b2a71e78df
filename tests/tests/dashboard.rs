//! The fleet dashboard in a real headless Chromium: a real coordinator with
//! real agents (one with fixture NVIDIA GPUs) and the GitLab simulator, the
//! fragment login flow (`/#token=…` → `POST /login` → session cookie → `/`),
//! and the page's own API calls. The rendered DOM must agree with
//! `agents list --output json`; a screenshot is kept as a test artifact
//! (`target/test-artifacts/dashboard.png`).
//!
//! Without a session the page must show the login form and no fleet data;
//! API failures (401, 5xx) must show a banner. Those error cases use a small
//! loopback server that serves the coordinator's own page bytes with failing
//! API answers, because a real coordinator cannot be made to fail on cue.
//!
//! Skipped (with a message) when no Chromium is installed, unless
//! `AUTOGIT_REQUIRE_CHROMIUM` is set; `.ci/run` installs it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use autogit_tests::gitlab_sim::NewJob;
use autogit_tests::harness::{Agent, Coordinator, Sim, agent_fixture, bin_dir, wait_for};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(45);
/// Virtual time the page gets after load: the login redirect, the first
/// refresh and one more (every 3 s) fit. (The page's clock runs ahead of the
/// coordinator's by this much: "seen 5 s ago" in the screenshot.)
const BUDGET_MS: &str = "5000";

// ------------------------------------------------------------------ Chromium

/// A headless Chromium binary, or `None` (the caller skips) when there is
/// none and `AUTOGIT_REQUIRE_CHROMIUM` is unset.
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|f| f.is_file())
        })
    });
    if found.is_none() {
        assert!(
            std::env::var_os("AUTOGIT_REQUIRE_CHROMIUM").is_none(),
            "AUTOGIT_REQUIRE_CHROMIUM is set but no chromium binary is on PATH (Debian: apt-get install chromium)"
        );
        eprintln!(
            "SKIPPED: no chromium binary on PATH (Debian: apt-get install chromium; set AUTOGIT_REQUIRE_CHROMIUM=1 to fail instead)"
        );
    }
    found
}

/// Load `url` in a fresh headless profile, let the page run for
/// [`BUDGET_MS`] of virtual time, and return the serialized DOM. With
/// `screenshot`, also save a 1366×900 PNG there. Hosts other than the
/// loopback address never resolve. `extra` flags go before the URL.
fn load(chrome: &Path, url: &str, screenshot: Option<&Path>, extra: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = profile.path().join("dom.html");
    let err = profile.path().join("stderr.log");
    let mut cmd = Command::new(chrome);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--disable-dev-shm-usage",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--window-size=1366,900",
    ])
    .arg(format!(
        "--user-data-dir={}",
        profile.path().join("profile").display()
    ))
    .arg(format!("--virtual-time-budget={BUDGET_MS}"));
    if let Some(p) = screenshot {
        cmd.arg(format!("--screenshot={}", p.display()));
    }
    cmd.args(extra)
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        // Its own process group, so a hung browser goes with all its children.
        .process_group(0);
    let mut child = cmd.spawn().expect("start chromium");
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.wait();
            panic!(
                "chromium did not finish within 90 s: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let dom = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(
        status.success() && !dom.is_empty(),
        "chromium failed ({status}): {}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    dom
}

// --------------------------------------------------------------- DOM reading

/// One element of the serialized DOM: its attributes and inner HTML.
#[derive(Debug)]
struct Elem {
    attrs: BTreeMap<String, String>,
    inner: String,
}

impl Elem {
    fn attr(&self, k: &str) -> &str {
        self.attrs.get(k).map(String::as_str).unwrap_or("")
    }
    fn text(&self) -> String {
        text(&self.inner)
    }
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// Text content of an HTML fragment.
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    unescape(&out)
}

fn parse_attrs(mut s: &str) -> BTreeMap<String, String> {
    let mut attrs = BTreeMap::new();
    loop {
        s = s.trim_start();
        let end = s
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(s.len());
        if end == 0 {
            return attrs;
        }
        let name = s[..end].to_string();
        s = &s[end..];
        if let Some(rest) = s.strip_prefix("=\"") {
            let close = rest.find('"').unwrap_or(rest.len());
            attrs.insert(name, unescape(&rest[..close]));
            s = rest.get(close + 1..).unwrap_or("");
        } else {
            attrs.insert(name, String::new());
        }
    }
}

/// Every `<tag …>` whose opening tag carries `attr`, with its inner HTML up
/// to the next `</tag>` (the elements looked up here never nest).
fn elems(dom: &str, tag: &str, attr: &str) -> Vec<Elem> {
    let open = format!("<{tag} ");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = dom;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(gt) = rest.find('>') else { break };
        let attrs = parse_attrs(&rest[..gt]);
        let body = &rest[gt + 1..];
        let inner = &body[..body.find(&close).unwrap_or(body.len())];
        if attrs.contains_key(attr) {
            out.push(Elem {
                attrs,
                inner: inner.to_string(),
            });
        }
    }
    out
}

fn by_id(dom: &str, tag: &str, id: &str) -> Elem {
    elems(dom, tag, "id")
        .into_iter()
        .find(|e| e.attr("id") == id)
        .unwrap_or_else(|| panic!("no <{tag} id={id}> in:\n{dom}"))
}

fn body_state(dom: &str) -> String {
    elems(dom, "body", "data-state")
        .first()
        .map(|e| e.attr("data-state").to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- the fleet

fn get_json(url: &str, admin: &str) -> Value {
    ureq::get(url)
        .header("Authorization", &format!("Bearer {admin}"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

fn admin_token(c: &Coordinator) -> String {
    c.admin_token("dashboard-test", &[]).unwrap()
}

fn agent(c: &Coordinator, extra: &str) -> (Agent, String) {
    let mut a = Agent::new(extra).unwrap();
    let id = a.join_ok(&c.grpc_addr(), &c.token(&[]).unwrap()).unwrap();
    a.start().unwrap();
    c.wait_agent_state(&id, "ready", T).unwrap();
    (a, id)
}

/// Pools that never start a container here: demand for `linux-arm64` is
/// unmet (no aarch64 agent), and nothing asks for the others.
const POOLS: &str = r#"
[[pools]]
name = "linux-amd64"
tags = ["amd64"]
arch = "x86_64"
image = "autogit-test/absent:dev"
max_runners = 6

[[pools]]
name = "linux-arm64"
tags = ["arm64"]
arch = "aarch64"
image = "autogit-test/absent:dev"
max_runners = 2
wait_objective = "30s"

[[pools]]
name = "cuda"
tags = ["gpu", "cuda"]
arch = "x86_64"
image = "autogit-test/absent:dev"
max_runners = 2
[pools.gpu]
vendor = "nvidia"
count = 1
"#;

#[test]
fn dashboard_in_chromium_shows_the_fleet_as_the_cli_sees_it() {
    let Some(chrome) = chromium() else { return };
    let sim = Sim::start().unwrap();
    let cfg = format!(
        "{}\n[demand]\npoll_interval = \"1s\"\nprojects = [4]\n{POOLS}",
        sim.gitlab_config()
    );
    let mut c = Coordinator::init(&cfg).unwrap();
    c.start().unwrap();
    let admin = admin_token(&c);
    let (_plain, plain_id) = agent(&c, "");
    let gpu_cfg = format!(
        "[inventory]\nnvidia_fixture = \"{}\"\n",
        agent_fixture("nvidia/two-gpus.json").display()
    );
    let (_gpu, gpu_id) = agent(&c, &gpu_cfg);
    // One job a pool takes but cannot serve, one that no pool takes.
    let arm_job = sim.handle.create_job(NewJob {
        project_id: 4,
        tags: vec!["arm64".into()],
        name: Some("cross-test".into()),
        ..Default::default()
    });
    let win_job = sim.handle.create_job(NewJob {
        project_id: 4,
        tags: vec!["windows".into()],
        ..Default::default()
    });
    // A cordoned agent shows as such, with an Uncordon button.
    let status = ureq::post(&c.http_url(&format!("/api/v1/agents/{plain_id}/cordon")))
        .header("Authorization", &format!("Bearer {admin}"))
        .send_empty()
        .unwrap()
        .status();
    assert_eq!(status, 200);

    // Wait until the API has everything the page should show.
    let api = |p: &str| get_json(&c.http_url(p), &admin);
    wait_for(T, "agents with load and GPUs in the API", || {
        let agents = api("/api/v1/agents");
        let agents = agents.as_array()?;
        let ok = agents.len() == 2
            && agents.iter().all(|a| a["load"].is_object())
            && agents.iter().any(|a| {
                a["id"] == gpu_id.as_str() && a["gpus"].as_array().is_some_and(|g| g.len() == 2)
            });
        ok.then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let (jobs, pools) = wait_for(T, "both jobs pending with a reason", || {
        let jobs = api("/api/v1/jobs");
        let pools = api("/api/v1/pools");
        let arm = pools
            .as_array()?
            .iter()
            .find(|p| p["name"] == "linux-arm64")?;
        let all =
            jobs.as_array()?.len() == 2 && jobs.as_array()?.iter().all(|j| j["reason"].is_string());
        (all && arm["unmet_reason"].is_string()).then_some((jobs, pools))
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));

    let artifacts = bin_dir()
        .parent()
        .expect("target dir")
        .join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let dom = load(
        &chrome,
        &c.http_url(&format!("/#token={admin}")),
        Some(&shot),
        &[],
    );

    assert_eq!(
        body_state(&dom),
        "ok",
        "the page did not finish a refresh:\n{dom}"
    );
    assert!(
        !dom.contains(&admin),
        "the admin token is left in the page (URL fragment not cleared)"
    );
    assert!(
        !dom.contains("id=\"login\""),
        "still on the login form:\n{dom}"
    );
    assert!(
        by_id(&dom, "span", "updated")
            .text()
            .starts_with("Updated "),
        "no 'last updated'"
    );
    assert!(
        by_id(&dom, "div", "banner").text().is_empty(),
        "error banner on a healthy fleet"
    );

    // Agents: the same ids, hostnames and arches as the CLI, and an arch badge per row.
    let cli = c.agents().unwrap();
    let rows = elems(&dom, "tr", "data-agent-id");
    let seen: BTreeSet<(String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.attr("data-agent-id").into(),
                r.attr("data-hostname").into(),
                r.attr("data-arch").into(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String, String)> = cli
        .iter()
        .map(|a| {
            (
                a["id"].as_str().unwrap().into(),
                a["hostname"].as_str().unwrap().into(),
                a["arch"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(seen, want, "dashboard agents differ from `agents list`");
    assert_eq!(rows.len(), 2);
    for r in &rows {
        let a = cli
            .iter()
            .find(|a| a["id"] == r.attr("data-agent-id"))
            .unwrap();
        let badges = elems(&r.inner, "span", "data-arch");
        assert_eq!(badges.len(), 1, "one arch badge per agent row: {}", r.inner);
        assert_eq!(badges[0].attr("data-arch"), a["arch"].as_str().unwrap());
        assert_eq!(
            badges[0].text(),
            a["arch"].as_str().unwrap(),
            "the badge shows the arch"
        );
        assert!(r.text().contains(a["hostname"].as_str().unwrap()));
        assert!(
            r.text().contains(&a["id"].as_str().unwrap()[..8]),
            "short id shown"
        );
        assert_eq!(r.attr("data-state"), "ready");
        let cordoned = a["cordoned"].as_bool().unwrap();
        assert_eq!(cordoned, r.attr("data-agent-id") == plain_id, "{a:#}");
        assert_eq!(
            r.text().contains("cordoned"),
            cordoned,
            "cordon badge: {}",
            r.text()
        );
        assert!(
            r.text()
                .contains(if cordoned { "Uncordon" } else { "Cordon" })
        );
        assert!(r.inner.contains("<button"), "actions are real buttons");
        assert!(r.text().contains(" %"), "CPU load shown: {}", r.text());
        assert!(r.text().contains("iB / "), "memory shown: {}", r.text());
    }
    let gpu_row = rows
        .iter()
        .find(|r| r.attr("data-agent-id") == gpu_id)
        .unwrap();
    let gpus = elems(&gpu_row.inner, "div", "data-gpu-vendor");
    let api_gpus = api(&format!("/api/v1/agents/{gpu_id}"))["gpus"]
        .as_array()
        .unwrap()
        .clone();
    let shown: u32 = gpus
        .iter()
        .map(|g| g.attr("data-gpu-count").parse::<u32>().unwrap())
        .sum();
    assert_eq!(
        shown as usize,
        api_gpus.len(),
        "GPU count: {}",
        gpu_row.inner
    );
    for g in &api_gpus {
        let name = g["name"].as_str().unwrap();
        let group = gpus
            .iter()
            .find(|e| e.text().contains(name))
            .unwrap_or_else(|| panic!("GPU {name} missing: {}", gpu_row.inner));
        assert_eq!(group.attr("data-gpu-vendor"), g["vendor"].as_str().unwrap());
        assert!(
            group.text().contains("NVIDIA \u{d7} "),
            "vendor \u{d7} count: {}",
            group.text()
        );
    }
    let plain_row = rows
        .iter()
        .find(|r| r.attr("data-agent-id") == plain_id)
        .unwrap();
    assert!(elems(&plain_row.inner, "div", "data-gpu-vendor").is_empty());

    // Pools: every configured pool, with demand and the unmet reason from the API.
    let pool_rows = elems(&dom, "tr", "data-pool");
    for p in pools.as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let row = pool_rows
            .iter()
            .find(|r| r.attr("data-pool") == name)
            .unwrap_or_else(|| panic!("pool {name} missing"));
        assert_eq!(
            elems(&row.inner, "span", "data-arch")[0].attr("data-arch"),
            p["arch"].as_str().unwrap()
        );
        let cells = elems(&row.inner, "td", "class")
            .into_iter()
            .filter(|c| c.attr("class") == "num")
            .map(|c| c.text())
            .collect::<Vec<_>>();
        let want =
            [&p["demand"], &p["running"], &p["idle"], &p["max_runners"]].map(|v| v.to_string());
        assert_eq!(cells, want, "demand/running/idle/max of {name}");
        match p["unmet_reason"].as_str() {
            Some(reason) => assert!(
                row.text().contains(reason),
                "unmet reason of {name}: {}",
                row.text()
            ),
            None => assert!(!row.text().contains("unmet"), "{}", row.text()),
        }
    }
    let arm = pool_rows
        .iter()
        .find(|r| r.attr("data-pool") == "linux-arm64")
        .unwrap();
    assert!(arm.text().contains("aarch64"), "{}", arm.text());
    // Its wait objective, with no job taken yet; the other pools have none.
    let arm_api = pools
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "linux-arm64")
        .unwrap();
    assert_eq!(
        arm_api["wait_objective"],
        json!({"target": "30s", "target_seconds": 30.0, "met_1h": null, "jobs_1h": 0,
               "met_24h": null, "jobs_24h": 0})
    );
    assert!(
        arm.text()
            .contains("wait \u{2264} 30s: no job measured yet"),
        "{}",
        arm.text()
    );
    assert_eq!(elems(&dom, "span", "data-objective").len(), 1);

    // Pending jobs with the reason the API gives.
    let job_rows = elems(&dom, "tr", "data-job");
    assert_eq!(job_rows.len(), 2);
    for j in jobs.as_array().unwrap() {
        let row = job_rows
            .iter()
            .find(|r| r.attr("data-job").parse::<u64>().ok() == j["job_id"].as_u64())
            .unwrap();
        assert!(
            row.text().contains(j["reason"].as_str().unwrap()),
            "{}",
            row.text()
        );
    }
    let win = job_rows
        .iter()
        .find(|r| r.attr("data-job") == win_job.id.to_string())
        .unwrap();
    assert!(
        win.text().contains("windows") && win.text().contains("none"),
        "{}",
        win.text()
    );
    let arm = job_rows
        .iter()
        .find(|r| r.attr("data-job") == arm_job.id.to_string())
        .unwrap();
    assert!(
        arm.text().contains("linux-arm64") && arm.text().contains("cross-test"),
        "{}",
        arm.text()
    );

    // Recent events: what the audit log says, newest first.
    let events = api("/api/v1/events?limit=20");
    let event_rows = elems(&dom, "tr", "data-event");
    assert!(!event_rows.is_empty());
    let newest = event_rows[0].attr("data-event").parse::<i64>().unwrap();
    let shown = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == newest)
        .expect("newest shown event is in the log");
    assert!(
        event_rows[0]
            .text()
            .contains(shown["kind"].as_str().unwrap())
    );
    let cordon = event_rows
        .iter()
        .find(|r| r.text().contains("agent.cordoned"))
        .expect("the cordon event");
    assert!(
        cordon.text().contains("dashboard-test") && cordon.text().contains(&plain_id[..8]),
        "{}",
        cordon.text()
    );

    // Accessibility basics in the rendered page.
    assert!(dom.contains("class=\"skip\" href=\"#"), "skip link");
    assert_eq!(
        dom.matches("<caption>").count(),
        4,
        "every table has a caption"
    );
    assert!(dom.contains("<th scope=\"row\">") && dom.contains("<th scope=\"col\""));

    // The screenshot.
    let png = std::fs::read(&shot).expect("screenshot written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let dim = |o: usize| u32::from_be_bytes(png[o..o + 4].try_into().unwrap());
    assert_eq!((dim(16), dim(20)), (1366, 900), "screenshot size");
    // The same page in the dark colour scheme, for people to look at.
    let dark = artifacts.join("dashboard-dark.png");
    let dom = load(
        &chrome,
        &c.http_url(&format!("/#token={admin}")),
        Some(&dark),
        &["--force-dark-mode"],
    );
    assert_eq!(body_state(&dom), "ok");
    eprintln!(
        "dashboard screenshots: {} {}",
        shot.display(),
        dark.display()
    );
}

/// A viewer's dashboard shows the fleet and says who it is, but offers no
/// change it may not make: no Cordon, Drain or label buttons. (The server
/// refuses them anyway: `tests/tests/roles.rs`.)
#[test]
fn a_viewers_dashboard_shows_the_fleet_without_the_actions_it_may_not_take() {
    let Some(chrome) = chromium() else { return };
    let sim = Sim::start().unwrap();
    let mut c = Coordinator::init(&format!("{}\n{POOLS}", sim.gitlab_config())).unwrap();
    c.start().unwrap();
    let viewer = c.admin_token("vera", &["--role", "viewer"]).unwrap();
    let (_a, agent_id) = agent(&c, "");
    let dom = load(
        &chrome,
        &c.http_url(&format!("/#token={viewer}")),
        None,
        &[],
    );
    assert_eq!(
        body_state(&dom),
        "ok",
        "the page did not finish a refresh:\n{dom}"
    );
    assert_eq!(by_id(&dom, "span", "who").text(), "token:vera (viewer)");
    let rows = elems(&dom, "tr", "data-agent-id");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].attr("data-agent-id"), agent_id);
    let row = rows[0].text();
    for hidden in ["Cordon", "Drain", "+ label"] {
        assert!(!row.contains(hidden), "a viewer sees {hidden:?}: {row}");
    }
    assert!(
        !rows[0].inner.contains("<button"),
        "no action buttons: {}",
        rows[0].inner
    );
}

#[test]
fn without_a_session_the_dashboard_shows_only_the_login_form() {
    let Some(chrome) = chromium() else { return };
    let mut c = Coordinator::init(POOLS).unwrap();
    c.start().unwrap();
    let admin = admin_token(&c);
    let (_a, id) = agent(&c, "");

    // No token: the login form, and nothing of the fleet.
    let dom = load(&chrome, &c.http_url("/"), None, &[]);
    assert!(
        dom.contains("<form id=\"login\" method=\"post\" action=\"/login\">"),
        "{dom}"
    );
    for secret in [id.as_str(), "linux-arm64", "data-agent-id"] {
        assert!(!dom.contains(secret), "{secret} visible without a session");
    }
    // A wrong token in the fragment: the login is refused, still no data.
    let dom = load(
        &chrome,
        &c.http_url("/#token=AGA1-not-a-real-token"),
        None,
        &[],
    );
    assert!(dom.contains("invalid admin token"), "{dom}");
    assert!(
        !dom.contains(&id) && !dom.contains("data-agent-id"),
        "{dom}"
    );
    // The right token: the same URL shows the agent.
    let dom = load(&chrome, &c.http_url(&format!("/#token={admin}")), None, &[]);
    assert!(dom.contains(&format!("data-agent-id=\"{id}\"")), "{dom}");

    // The script and the API want a session too; a bogus cookie is no session.
    let http = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let code = |path: &str, cookie: Option<&str>| {
        let mut r = http.get(&c.http_url(path));
        if let Some(v) = cookie {
            r = r.header("Cookie", &format!("autogit_session={v}"));
        }
        r.call().unwrap().status().as_u16()
    };
    assert_eq!(code("/dashboard.js", None), 401);
    assert_eq!(code("/api/v1/agents", None), 401);
    assert_eq!(code("/api/v1/agents", Some("AGA1-bogus")), 401);
    // The admin token itself is not a session: the cookie carries an opaque
    // session id from `POST /login`.
    assert_eq!(code("/api/v1/agents", Some(&admin)), 401);
    assert_eq!(code("/dashboard.js", Some(&admin)), 401);
}

/// A page on another port of the same host: it signs the browser in to the
/// coordinator in a frame (as an operator with the dashboard open would
/// be), then fires body-less no-cors POSTs with the browser's cookies at
/// every mutating route, as in the issue.
fn attack_page(coordinator: &str, admin: &str, agent: &str, token_id: &str) -> String {
    let runner = uuid::Uuid::new_v4();
    format!(
        r#"<!doctype html><html><body data-done="0">
<iframe id="f" src="{coordinator}/#token={admin}"></iframe>
<script>
const targets = [
  "/api/v1/agents/{agent}/cordon",
  "/api/v1/agents/{agent}/drain",
  "/api/v1/agents/{agent}/revoke",
  "/api/v1/runners/{runner}/stop",
  "/api/v1/tokens/{token_id}/revoke",
];
let loads = 0;
document.getElementById("f").addEventListener("load", async () => {{
  loads += 1;
  // The login form submits itself while it is parsed, so the first load
  // event is the page after the login: the dashboard.
  if (loads !== 1) return;
  for (const t of targets) {{
    try {{
      await fetch("{coordinator}" + t, {{ method: "POST", mode: "no-cors", credentials: "include" }});
    }} catch (e) {{}}
  }}
  document.body.dataset.done = "1";
}});
</script></body></html>"#
    )
}

#[test]
fn a_page_on_another_port_cannot_act_with_the_dashboards_cookie() {
    let Some(chrome) = chromium() else { return };
    let mut c = Coordinator::init(POOLS).unwrap();
    c.start().unwrap();
    let admin = admin_token(&c);
    let (_a, id) = agent(&c, "");
    c.token(&["--ttl", "1h"]).unwrap();
    let token_id = c
        .tokens()
        .unwrap()
        .iter()
        .find(|t| t["revoked"] == Value::Bool(false))
        .and_then(|t| t["id"].as_str())
        .unwrap()
        .to_string();
    let page = attack_page(&c.http_url(""), &admin, &id, &token_id);
    let stub = Stub::start(Arc::new(move |_path: &str| {
        (200, "text/html; charset=utf-8", page.clone())
    }));
    let dom = load(&chrome, &stub.url("/attack.html"), None, &[]);
    assert!(
        dom.contains("data-done=\"1\""),
        "the attack did not run: {dom}\ncoordinator log:\n{}",
        c.logs()
    );

    // Control: the browser did hold a valid session and sent it with every
    // request; each was refused by the CSRF rule, not for want of a cookie.
    let logs = c.logs();
    let refused = logs.lines().filter(|l| l.contains("CSRF rule")).count();
    assert_eq!(refused, 5, "{logs}");

    // Nothing changed.
    let agents = c.agents().unwrap();
    let a = agents.iter().find(|a| a["id"] == id.as_str()).unwrap();
    assert_eq!(a["state"], "ready", "{a}");
    assert_eq!(a["cordoned"], Value::Bool(false), "{a}");
    assert!(a["drain"].is_null(), "{a}");
    let tokens = c.tokens().unwrap();
    let t = tokens
        .iter()
        .find(|t| t["id"] == token_id.as_str())
        .unwrap();
    assert_eq!(t["revoked"], Value::Bool(false), "{t}");
}

// ------------------------------------------------- error cases (stub API)

/// What the stub answers: status, content type, body. Status 0 drops the
/// connection without an answer.
type Route = dyn Fn(&str) -> (u16, &'static str, String) + Send + Sync;

/// A loopback HTTP/1.1 server answering every request with `route(path)`;
/// stops when dropped (and after two minutes regardless).
struct Stub {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Stub {
    fn start(route: Arc<Route>) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let route = route.clone();
                        std::thread::spawn(move || serve_one(conn, &*route));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Stub {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_one(mut conn: TcpStream, route: &Route) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let (status, ctype, body) = route(&path);
    if status == 0 {
        return;
    }
    let resp = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(resp.as_bytes());
}

/// The page and script exactly as a real coordinator serves them.
fn served_page() -> (String, String, String) {
    let mut c = Coordinator::init("").unwrap();
    c.start().unwrap();
    let admin = admin_token(&c);
    let get = |path: &str, token: Option<&str>| {
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut r = http.get(&c.http_url(path)).header("Accept", "text/html");
        if let Some(t) = token {
            r = r.header("Authorization", &format!("Bearer {t}"));
        }
        let mut resp = r.call().unwrap();
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (status, ctype, resp.body_mut().read_to_string().unwrap())
    };
    let (s, ct, html) = get("/", Some(&admin));
    assert!(s == 200 && ct.starts_with("text/html"), "{s} {ct}");
    let (s, ct, js) = get("/dashboard.js", Some(&admin));
    assert!(s == 200 && ct.starts_with("text/javascript"), "{s} {ct}");
    let (s, _, login) = get("/", None);
    assert_eq!(s, 401);
    (html, js, login)
}

#[test]
fn page_is_self_contained_and_shows_api_failures() {
    let (html, js, login) = served_page();
    // No external resources: no absolute or protocol-relative URLs at all.
    for (name, src) in [
        ("index.html", &html),
        ("dashboard.js", &js),
        ("login page", &login),
    ] {
        for bad in [
            "http://",
            "https://",
            "src=\"//",
            "href=\"//",
            "@import",
            "url(",
        ] {
            assert!(
                !src.contains(bad),
                "{name} references an external resource ({bad})"
            );
        }
    }
    assert!(html.contains("<script src=\"/dashboard.js\">"));
    assert!(
        !js.contains("innerHTML"),
        "API data goes into the page as text only"
    );
    let Some(chrome) = chromium() else { return };

    let page = Arc::new((html, js));
    let static_routes =
        move |page: &Arc<(String, String)>, path: &str| -> Option<(u16, &'static str, String)> {
            match path {
                "/" => Some((200, "text/html; charset=utf-8", page.0.clone())),
                "/dashboard.js" => Some((200, "text/javascript; charset=utf-8", page.1.clone())),
                p if !p.starts_with("/api/") => Some((404, "text/plain", "not found".into())),
                _ => None,
            }
        };

    // 1. The API says 401 (session revoked or expired): a sign-in banner, no data.
    let p = page.clone();
    let stub = Stub::start(Arc::new(move |path: &str| {
        static_routes(&p, path).unwrap_or((
            401,
            "application/json",
            r#"{"error":"missing or invalid admin token"}"#.into(),
        ))
    }));
    let dom = load(&chrome, &stub.url("/"), None, &[]);
    assert_eq!(body_state(&dom), "unauthorized", "{dom}");
    let banner = by_id(&dom, "div", "banner");
    assert!(banner.text().contains("Sign in again"), "{}", banner.text());
    assert!(
        banner.inner.contains("href=\"/\""),
        "the banner links to the sign-in page"
    );
    assert!(!dom.contains("data-agent-id"));
    drop(stub);

    // 2. First answers fine, then 503: the last data stays, marked stale,
    //    under an error banner. The data carries markup that must stay text.
    let hostile = "<img src=x onerror=\"document.title='owned'\">";
    let agents = json!([{
        "id": "0b6f2a52-6a8e-4f7e-9a55-2f1d6f3c9e01", "hostname": hostile, "arch": "aarch64",
        "state": "unreachable", "cordoned": false, "connected": false, "last_seen": "2024-01-01T00:00:00Z",
        "enrolled_at": "2024-01-01T00:00:00Z", "cert_expires_at": "2025-01-01T00:00:00Z",
        "trust_labels": {"trust": hostile}, "reported_labels": {"zone": hostile},
        "gpus": [], "load": null, "inventory": null, "runners": 0
    }])
    .to_string();
    let pools = json!([{
        "name": "linux-amd64", "tags": ["amd64"], "arch": "x86_64", "gpu": null,
        "agent_selector": {}, "max_runners": 4, "idle_min": 0, "schedule": [], "next_change": null,
        "demand": 0, "runners": {}, "running": 0, "idle": 0, "unmet_reason": null,
        "wait_objective": {"target": "30s", "target_seconds": 30.0, "met_1h": 33.0 / 34.0,
            "jobs_1h": 34, "met_24h": 0.9975, "jobs_24h": 812}
    }])
    .to_string();
    let calls = Arc::new(AtomicU32::new(0));
    let (p, n) = (page.clone(), calls.clone());
    let stub = Stub::start(Arc::new(move |path: &str| {
        if let Some(r) = static_routes(&p, path) {
            return r;
        }
        let json = |b: String| (200, "application/json", b);
        match path {
            "/api/v1/agents" if n.fetch_add(1, Ordering::SeqCst) == 0 => json(agents.clone()),
            "/api/v1/agents" => (
                503,
                "application/json",
                r#"{"error":"database unavailable"}"#.into(),
            ),
            "/api/v1/pools" => json(pools.clone()),
            "/api/v1/jobs" => json("[]".into()),
            _ => json(r#"{"events":[],"next_before":null}"#.into()),
        }
    }));
    let dom = load(&chrome, &stub.url("/"), None, &[]);
    assert!(calls.load(Ordering::SeqCst) >= 2, "the page refreshed");
    // A pool's wait objective: shares rounded down, per window.
    let objective = elems(&dom, "span", "data-objective");
    assert_eq!(objective.len(), 1, "{dom}");
    assert_eq!(
        objective[0].text(),
        "wait \u{2264} 30s: 97 % of 34 jobs in 1 h \u{b7} 99 % of 812 jobs in 24 h"
    );
    assert_eq!(body_state(&dom), "error", "{dom}");
    let banner = by_id(&dom, "div", "banner").text();
    assert!(
        banner.contains("503") && banner.contains("database unavailable"),
        "{banner}"
    );
    assert!(by_id(&dom, "span", "updated").text().contains("stale"));
    let rows = elems(&dom, "tr", "data-agent-id");
    assert_eq!(rows.len(), 1, "the last good data stays visible");
    assert_eq!(rows[0].attr("data-hostname"), hostile);
    assert_eq!(
        elems(&rows[0].inner, "span", "data-arch")[0].text(),
        "aarch64"
    );
    assert!(
        rows[0].text().contains(hostile),
        "markup in data is shown as text"
    );
    let trust = elems(&rows[0].inner, "span", "data-trust-label");
    assert_eq!(trust.len(), 1, "{}", rows[0].inner);
    assert!(trust[0].text().contains(&format!("trust={hostile}")));
    let reported = elems(&rows[0].inner, "span", "data-reported-labels");
    assert_eq!(reported.len(), 1, "reported labels are shown apart");
    assert!(reported[0].text().contains(&format!("zone={hostile}")));
    assert!(!dom.contains("<img"), "markup in data became an element");
    assert!(dom.contains("<title>AutoGit fleet</title>"));
    drop(stub);

    // 3. The coordinator goes away mid-answer: a 'cannot reach' banner.
    let p = page.clone();
    let stub = Stub::start(Arc::new(move |path: &str| {
        static_routes(&p, path).unwrap_or((0, "", String::new()))
    }));
    let dom = load(&chrome, &stub.url("/"), None, &[]);
    assert_eq!(body_state(&dom), "error", "{dom}");
    assert!(
        by_id(&dom, "div", "banner")
            .text()
            .contains("Cannot reach the coordinator"),
        "{dom}"
    );
}
