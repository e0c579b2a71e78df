//! A real nginx in front of a real coordinator, with forward auth through
//! `auth_request` (the Authelia/Traefik pattern): nginx asks a small auth
//! service on loopback who the person is and passes `Remote-User` and
//! `Remote-Groups` on. nginx connects to the coordinator from 127.0.0.2,
//! the only trusted proxy (`[proxy] trusted`); the test's own requests come
//! from 127.0.0.1, so they play the untrusted peer.
//!
//! * Through nginx, a person is signed in with the role their groups map to
//!   in `[roles]`, the audit log names them, and a person whose groups have
//!   no role is refused.
//! * The same identity headers sent straight to the coordinator are ignored
//!   and logged.
//! * Webhooks and `/metrics` stay reachable through the proxy with their own
//!   authentication.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use autogit_tests::harness::{Agent, Coordinator, Sim, free_port, wait_for};
use base64::Engine;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);
const WEBHOOK_SECRET: &str = "hook-secret-proxy";

/// Who the auth service knows: (user, password, groups).
const PEOPLE: [(&str, &str, &str); 3] = [
    ("alice", "alice-pw", "staff, sre"),
    ("bob", "bob-pw", "staff"),
    ("carol", "carol-pw", "guests"),
];

fn nginx() -> &'static str {
    let path = "/usr/sbin/nginx";
    assert!(
        Path::new(path).exists(),
        "{path} missing: the proxy tests need nginx (Debian: apt-get install nginx-light; \
         `cargo xtask test` installs it as root)"
    );
    path
}

/// The forward-auth service nginx's `auth_request` asks: 200 with
/// `Remote-User`/`Remote-Groups` for a known `Authorization: Basic`, else
/// 401. Serves until dropped, or for two minutes at most.
struct AuthService {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl AuthService {
    fn start() -> AuthService {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(120);
            while !stopped.load(Ordering::Relaxed) && Instant::now() < until {
                match listener.accept() {
                    Ok((conn, _)) => answer(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        AuthService { port, stop }
    }
}

impl Drop for AuthService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(conn: TcpStream) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut auth = None;
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("authorization")
        {
            auth = v.trim().strip_prefix("Basic ").map(str::to_owned);
        }
    }
    let person = auth
        .and_then(|a| base64::engine::general_purpose::STANDARD.decode(a).ok())
        .and_then(|a| String::from_utf8(a).ok())
        .and_then(|a| {
            PEOPLE
                .iter()
                .find(|(u, p, _)| a == format!("{u}:{p}"))
                .copied()
        });
    let reply = match person {
        Some((user, _, groups)) => format!(
            "HTTP/1.1 200 OK\r\nRemote-User: {user}\r\nRemote-Groups: {groups}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        None => {
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
        }
    };
    let mut conn = conn;
    let _ = conn.write_all(reply.as_bytes());
}

/// nginx in the foreground, one process, everything under `dir`.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn start(upstream: &str, auth_port: u16) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let port = free_port("127.0.0.1");
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let conf = format!(
            r#"daemon off;
master_process off;
error_log {d}/error.log info;
pid {d}/nginx.pid;
events {{}}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  server {{
    listen 127.0.0.1:{port};
    proxy_bind 127.0.0.2;
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Forwarded-Host $http_host;
    location = /_auth {{
      internal;
      proxy_bind off;
      proxy_pass http://127.0.0.1:{auth_port}/;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
    }}
    # Their own authentication: the webhook secret, the metrics setting.
    location /webhooks/ {{ proxy_pass http://{upstream}; }}
    location = /metrics {{ proxy_pass http://{upstream}; }}
    location / {{
      auth_request /_auth;
      auth_request_set $user $upstream_http_remote_user;
      auth_request_set $groups $upstream_http_remote_groups;
      proxy_set_header Remote-User $user;
      proxy_set_header Remote-Groups $groups;
      proxy_pass http://{upstream};
    }}
  }}
}}
"#
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(nginx())
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let n = Nginx { child, port, dir };
        wait_for(T, "nginx listening", || {
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", n.errors()));
        n
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request; the status and JSON body (`null` if none).
fn call(method: &str, url: &str, headers: &[(&str, String)]) -> (u16, Value) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .new_agent();
    let resp = match method {
        "GET" => {
            let mut r = agent.get(url);
            for (k, v) in headers {
                r = r.header(*k, v);
            }
            r.call()
        }
        _ => {
            let mut r = agent.post(url);
            for (k, v) in headers {
                r = r.header(*k, v);
            }
            r.send_empty()
        }
    };
    let mut resp = resp.unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_json().unwrap_or(Value::Null))
}

fn basic(user: &str) -> (&'static str, String) {
    let (_, pw, _) = PEOPLE.iter().find(|(u, _, _)| *u == user).unwrap();
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
    ("Authorization", format!("Basic {b}"))
}

#[test]
fn forward_auth_through_nginx_signs_people_in_by_group_and_is_ignored_from_anyone_else() {
    let sim = Sim::start().unwrap();
    let cfg = format!(
        "{}\n[demand]\nwebhook_secret = \"{WEBHOOK_SECRET}\"\n\
         [proxy]\ntrusted = [\"127.0.0.2\"]\nuser_header = \"Remote-User\"\n\
         [roles]\noperator = [\"sre\"]\nviewer = [\"staff\"]\n",
        sim.gitlab_config()
    );
    let mut c = Coordinator::init(&cfg).unwrap();
    c.start().unwrap();
    let auth = AuthService::start();
    let upstream = c.http_url("").trim_start_matches("http://").to_string();
    let proxy = Nginx::start(&upstream, auth.port);
    let mut a = Agent::new("").unwrap();
    let agent_id = a.join_ok(&c.grpc_addr(), &c.token(&[]).unwrap()).unwrap();
    a.start().unwrap();
    c.wait_agent_state(&agent_id, "ready", T).unwrap();
    let cordon = format!("/api/v1/agents/{agent_id}/cordon");
    let dashboard_post = ("X-AutoGit-Request", "1".to_string());

    // Alice (sre → operator) through nginx.
    let (status, me) = call("GET", &proxy.url("/api/v1/whoami"), &[basic("alice")]);
    assert_eq!(
        (status, &me),
        (200, &json!({"actor": "proxy:alice", "role": "operator"})),
        "nginx:\n{}\ncoordinator:\n{}",
        proxy.errors(),
        c.logs()
    );
    let (status, body) = call(
        "POST",
        &proxy.url(&cordon),
        &[basic("alice"), dashboard_post.clone()],
    );
    assert_eq!(status, 200, "{body}");
    let (_, events) = call(
        "GET",
        &proxy.url("/api/v1/events?limit=20"),
        &[basic("bob")],
    );
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "agent.cordoned" && e["actor"] == "proxy:alice"),
        "the audit log names the person: {events}"
    );
    // Forward auth is a browser's sign-in: the CSRF rules apply.
    let (status, _) = call("POST", &proxy.url(&cordon), &[basic("alice")]);
    assert_eq!(
        status, 403,
        "a change without the dashboard's header is refused"
    );

    // Bob (staff → viewer) reads but may not cordon; Carol has no role.
    assert_eq!(
        call("GET", &proxy.url("/api/v1/agents"), &[basic("bob")]).0,
        200
    );
    let (status, body) = call(
        "POST",
        &proxy.url(&cordon),
        &[basic("bob"), dashboard_post.clone()],
    );
    assert_eq!(
        (status, body["error"].as_str().unwrap_or("")),
        (403, "proxy:bob has role viewer; this needs operator")
    );
    let (status, body) = call("GET", &proxy.url("/api/v1/agents"), &[basic("carol")]);
    assert_eq!(
        (status, body["error"].as_str().unwrap_or("")),
        (
            403,
            "proxy:carol has no AutoGit role: none of the groups guests is listed in [roles]"
        )
    );
    // Nobody signed in: the proxy itself refuses.
    assert_eq!(call("GET", &proxy.url("/api/v1/agents"), &[]).0, 401);
    // A client's own Remote-User does not get through nginx either.
    let forged = [
        ("Remote-User", "alice".to_string()),
        ("Remote-Groups", "sre".into()),
    ];
    assert_eq!(call("GET", &proxy.url("/api/v1/agents"), &forged).0, 401);

    // The same headers straight to the coordinator, from 127.0.0.1 (not a
    // trusted proxy): ignored, and logged.
    let (status, _) = call("GET", &c.http_url("/api/v1/whoami"), &forged);
    assert_eq!(
        status, 401,
        "identity headers from an untrusted peer sign nobody in"
    );
    wait_for(T, "the ignored identity header in the log", || {
        c.logs()
            .contains("ignored an identity header from a peer that is not a trusted proxy")
            .then_some(())
    })
    .unwrap();

    // Webhooks and /metrics through the proxy, with their own rules.
    let (status, _) = call(
        "POST",
        &proxy.url("/webhooks/gitlab"),
        &[
            ("X-Gitlab-Token", "wrong".into()),
            ("X-Gitlab-Event", "Job Hook".into()),
        ],
    );
    assert_eq!(
        status, 401,
        "the coordinator's webhook secret check, not nginx's auth"
    );
    assert_eq!(call("GET", &proxy.url("/metrics"), &[]).0, 200);
}
