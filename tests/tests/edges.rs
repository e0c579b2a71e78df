//! The coordinator's edges under hostile input, against a real coordinator
//! process on loopback: durations that would overflow, half-open and idle
//! connections, connection caps, enrollment floods, and what reaches the log.
//! Counts are bounded (a few hundred sockets); timeouts in the configs are
//! short so the server's own timers close connections within seconds, and
//! every wait has a generous upper bound instead of a timed assertion.

use std::net::SocketAddr;
use std::time::Duration;

use autogit_agent::transport;
use autogit_certs::{ClusterCa, csr, tls};
use autogit_proto::v1 as pb;
use autogit_tests::harness::{Agent, Coordinator, wait_for};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

const T: Duration = Duration::from_secs(30);

/// Short server timers, so the server (not the test) closes connections.
const SHORT_LIMITS: &str = r#"
[limits]
http_header_read_timeout = "1s"
http_idle_timeout = "2s"
tls_handshake_timeout = "1s"
grpc_enrollment_idle_timeout = "1s"
"#;

fn started(config: &str) -> Coordinator {
    let mut c = Coordinator::init(config).expect("init coordinator");
    c.start().expect("start coordinator");
    c
}

fn admin_token(c: &Coordinator) -> String {
    let out = c.cli_ok(&["admin-token", "create"]).expect("admin token");
    out.lines().last().expect("token line").to_string()
}

fn ca(c: &Coordinator) -> ClusterCa {
    ClusterCa::load(
        &std::fs::read_to_string(c.dir.join("ca.pem")).expect("ca.pem"),
        &std::fs::read_to_string(c.dir.join("ca-key.pem")).expect("ca-key.pem"),
    )
    .expect("load CA")
}

fn alive(c: &mut Coordinator) -> bool {
    c.proc.as_mut().is_some_and(|p| p.try_exit().is_none())
}

/// Whether the server closes `s` within `within`: EOF or an error on read.
/// Bytes the server sends first (a TLS or HTTP/2 greeting) are skipped.
async fn closed_by_server<S: tokio::io::AsyncRead + Unpin>(mut s: S, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_all).await.is_ok()
}

async fn all_closed<S: tokio::io::AsyncRead + Unpin + Send + 'static>(
    conns: Vec<S>,
    within: Duration,
) -> usize {
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|s| tokio::spawn(closed_by_server(s, within)))
        .collect();
    let mut open = 0;
    for t in tasks {
        if !t.await.unwrap_or(false) {
            open += 1;
        }
    }
    open
}

/// A TLS connection to the gRPC port without a client certificate that
/// completes the handshake and then says nothing.
async fn idle_tls(addr: SocketAddr, ca: &ClusterCa) -> tokio_rustls::client::TlsStream<TcpStream> {
    let cfg = tls::enrollment_client_config(ca.fingerprint()).expect("client config");
    let tcp = TcpStream::connect(addr).await.expect("connect gRPC port");
    let name = ServerName::try_from(tls::COORDINATOR_NAME).expect("server name");
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .expect("TLS handshake without a client certificate")
}

async fn healthz(c: &Coordinator) -> u16 {
    reqwest::Client::new()
        .get(c.http_url("/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn sessions_opened(c: &Coordinator) -> usize {
    c.logs().matches("agent session opened").count()
}

#[tokio::test]
async fn out_of_range_durations_are_refused_and_the_coordinator_lives() {
    let mut c = started("");
    let admin = admin_token(&c);
    let http = reqwest::Client::new();
    let base = c.http_url("");
    let post = |path: &str, body: Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };

    for ttl in [999_999_999_999u64, u64::MAX, 0] {
        let r = post("/api/v1/tokens", json!({"ttl_seconds": ttl}))
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), 400, "ttl_seconds {ttl}");
        let body: Value = r.json().await.expect("JSON error");
        let msg = body["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains("ttl_seconds") && msg.contains("31536000"),
            "the message names the field and the bound: {msg}"
        );
    }
    let agent = uuid::Uuid::new_v4();
    let r = post(
        &format!("/api/v1/agents/{agent}/drain"),
        json!({"deadline_seconds": u64::MAX}),
    )
    .await
    .expect("request");
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.expect("JSON error");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|m| m.contains("deadline_seconds") && m.contains("604800")),
        "{body}"
    );

    assert!(alive(&mut c), "the coordinator survived: {}", c.logs());
    assert_eq!(healthz(&c).await, 200);
    let r = post("/api/v1/tokens", json!({"ttl_seconds": 3600}))
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 201, "an in-range TTL still works");

    // The CLI refuses the same values before doing anything.
    for args in [
        &["token", "create", "--ttl", "400d"][..],
        &["admin-token", "create", "--ttl", "2000d"][..],
        &[
            "admin-cert",
            "create",
            "--name",
            "x",
            "--out",
            "/nonexistent",
            "--ttl",
            "2000d",
        ][..],
        &[
            "drain",
            "00000000-0000-0000-0000-000000000000",
            "--deadline",
            "8d",
        ][..],
    ] {
        let out = c.cli(args).expect("run CLI");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(
            stderr.contains("--ttl") || stderr.contains("--deadline"),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains("days"),
            "{args:?} names the bound: {stderr}"
        );
    }
    let tokens = c.tokens().expect("token list");
    assert_eq!(tokens.len(), 1, "only the in-range token was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_and_idle_connections_are_closed_while_health_and_agents_keep_working() {
    let c = started(SHORT_LIMITS);
    let ca = ca(&c);
    let (http_addr, grpc_addr) = (c.http.expect("http"), c.grpc.expect("grpc"));
    let mut agent = Agent::new("").expect("agent");
    let id = agent
        .join_ok(&c.grpc_addr(), &c.token(&[]).expect("join token"))
        .expect("join");
    agent.start().expect("start agent");
    c.wait_agent_state(&id, "ready", T).expect("agent ready");
    let opened = sessions_opened(&c);

    // 200 requests that never finish their head, 100 TCP connections that
    // never start TLS, 50 TLS connections without a certificate and no RPC.
    // (Bounded counts; the fault suite goes to thousands.)
    let mut half_open = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(http_addr).await.expect("connect HTTP");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .expect("partial head");
        half_open.push(s);
    }
    // 20 whose body stalls after its head, 20 that went idle after a
    // complete request (keep-alive).
    for _ in 0..20 {
        let mut s = TcpStream::connect(http_addr).await.expect("connect HTTP");
        s.write_all(
            b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"tok",
        )
        .await
        .expect("head and part of a body");
        half_open.push(s);
    }
    for _ in 0..20 {
        let mut s = TcpStream::connect(http_addr).await.expect("connect HTTP");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("a whole request");
        let mut answer = [0u8; 256];
        let n = s.read(&mut answer).await.expect("an answer");
        assert!(
            answer[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&answer[..n])
        );
        half_open.push(s);
    }
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(grpc_addr).await.expect("connect gRPC"));
    }
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(idle_tls(grpc_addr, &ca).await);
    }

    // While they are open: health answers and the agent reconnects.
    assert_eq!(healthz(&c).await, 200, "healthz during the flood");
    agent.kill();
    agent.start().expect("restart agent");
    wait_for(T, "the agent's new session", || {
        (sessions_opened(&c) > opened).then_some(())
    })
    .expect("agent reconnected during the flood");

    // The server closes every one of them on its own timers.
    let within = Duration::from_secs(15);
    assert_eq!(
        all_closed(half_open, within).await,
        0,
        "half-open HTTP left open"
    );
    assert_eq!(
        all_closed(silent, within).await,
        0,
        "pre-handshake gRPC left open"
    );
    assert_eq!(
        all_closed(idle, within).await,
        0,
        "idle enrollment TLS left open"
    );
    assert_eq!(healthz(&c).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_close_the_excess_but_agents_with_certificates_get_in() {
    let c = started(
        r#"
[limits]
http_max_connections = 20
http_header_read_timeout = "60s"
grpc_max_enrollment_connections = 5
grpc_enrollment_idle_timeout = "15s"
"#,
    );
    let ca = ca(&c);
    let (http_addr, grpc_addr) = (c.http.expect("http"), c.grpc.expect("grpc"));
    // An enrolled agent (enrolled before the enrollment slots are taken).
    let mut agent = Agent::new("").expect("agent");
    let id = agent
        .join_ok(&c.grpc_addr(), &c.token(&[]).expect("join token"))
        .expect("join");

    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(http_addr).await.expect("connect HTTP"));
    }
    // Give the server a moment to accept them all (it accepts in order).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let extra = TcpStream::connect(http_addr).await.expect("connect HTTP");
    assert!(
        closed_by_server(extra, Duration::from_secs(10)).await,
        "the 21st HTTP connection is closed at once"
    );
    drop(held);
    let mut ok = false;
    for _ in 0..100 {
        if healthz(&c).await == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "HTTP serves again once the held connections closed");

    let mut enrolling = Vec::new();
    for _ in 0..5 {
        enrolling.push(idle_tls(grpc_addr, &ca).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sixth = idle_tls(grpc_addr, &ca).await;
    assert!(
        closed_by_server(sixth, Duration::from_secs(10)).await,
        "the sixth connection without a certificate is closed at once"
    );
    // Agents with certificates are not held back by the enrollment cap.
    agent.start().expect("start agent");
    c.wait_agent_state(&id, "ready", T)
        .expect("agent ready with enrollment slots full");
    drop(enrolling);
}

#[tokio::test]
async fn the_grpc_cap_counts_connections_from_accept() {
    let c = started(
        r#"
[limits]
grpc_max_connections = 10
grpc_max_enrollment_connections = 5
tls_handshake_timeout = "60s"
"#,
    );
    let grpc_addr = c.grpc.expect("grpc");
    // Ten connections that never start TLS hold every slot ...
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(TcpStream::connect(grpc_addr).await.expect("connect gRPC"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ... so the eleventh is closed at once, long before the handshake timeout.
    let extra = TcpStream::connect(grpc_addr).await.expect("connect gRPC");
    assert!(
        closed_by_server(extra, Duration::from_secs(10)).await,
        "the eleventh gRPC connection is closed at once"
    );
    drop(held);
    // Slots come back: enrollment answers again (on the merits of the token).
    let ca = ca(&c);
    let mut code = None;
    for _ in 0..50 {
        let cfg = tls::enrollment_client_config(ca.fingerprint()).expect("client config");
        if let Ok(channel) = transport::connect(&c.grpc_addr(), cfg, Duration::from_secs(5)).await {
            let mut client = pb::enrollment_client::EnrollmentClient::new(channel);
            code = client
                .enroll(pb::EnrollRequest::default())
                .await
                .err()
                .map(|e| e.code());
            if code == Some(Code::InvalidArgument) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        code,
        Some(Code::InvalidArgument),
        "enrollment reachable again"
    );
}

#[tokio::test]
async fn enrollment_floods_are_rate_limited_and_hostnames_are_logged_escaped() {
    let c = started(
        r#"
[limits]
enroll_per_ip_burst = 3
enroll_per_ip_per_minute = 1
"#,
    );
    let ca = ca(&c);
    let cfg = tls::enrollment_client_config(ca.fingerprint()).expect("client config");
    let channel = transport::connect(&c.grpc_addr(), cfg, Duration::from_secs(5))
        .await
        .expect("connect");
    let mut client = pb::enrollment_client::EnrollmentClient::new(channel);
    let forged = "evil\nINFO autogit_coordinator: agent enrolled\u{1b}[31m";
    let csr_pem = csr::generate("x").expect("csr").csr_pem;
    let mut codes = Vec::new();
    for _ in 0..6 {
        let err = client
            .enroll(pb::EnrollRequest {
                token: "AGT1nonsense".into(),
                csr_pem: csr_pem.clone(),
                hostname: forged.into(),
            })
            .await
            .expect_err("a bogus token never enrolls");
        codes.push(err.code());
    }
    assert_eq!(
        codes,
        [
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::InvalidArgument,
            Code::ResourceExhausted,
            Code::ResourceExhausted,
            Code::ResourceExhausted
        ]
    );
    let logs = c.logs();
    assert!(
        !logs.contains("\nINFO autogit_coordinator: agent enrolled"),
        "a forged line reached the log:\n{logs}"
    );
    assert!(
        !logs.contains('\u{1b}'),
        "an escape sequence reached the log"
    );
    assert!(
        logs.contains("evil\\nINFO autogit_coordinator: agent enrolled"),
        "the hostname is logged escaped:\n{logs}"
    );
    assert_eq!(
        logs.matches("enrollment refused").count(),
        1,
        "refusals are logged once per peer per interval:\n{logs}"
    );
}
