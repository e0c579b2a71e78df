//! The fault scenarios. Each builds its own world, breaks it at one chosen
//! moment, lets it recover, and counts what is left wrong.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;

use super::fixture::{Counters, Fixture, SECRET, Setup, expect};
use super::proxy::Proxy;
use crate::gitlab_sim::FaultSpec;
use crate::harness::{docker_containers, wait_for};

const T: Duration = Duration::from_secs(60);

/// How a row is run.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    /// The short variant (CI): shorter outages, fewer requests.
    pub quick: bool,
}

/// What one row found.
pub struct Outcome {
    pub counters: Counters,
    /// What else was measured (recovery times, requests made).
    pub notes: String,
}

type RowFn = fn(Scale) -> anyhow::Result<Outcome>;

/// A named scenario.
pub struct Row {
    pub name: &'static str,
    /// Part of the short subset CI runs.
    pub in_quick: bool,
    pub run: RowFn,
}

/// Every row, in the order the table lists them.
pub fn all() -> Vec<Row> {
    vec![
        Row {
            name: "coordinator SIGKILL after POST /user/runners",
            in_quick: true,
            run: kill_after_create,
        },
        Row {
            name: "coordinator SIGKILL after StartRunner was sent",
            in_quick: true,
            run: kill_after_start,
        },
        Row {
            name: "coordinator SIGKILL with GitLab runners in stock",
            in_quick: true,
            run: kill_with_stock,
        },
        Row {
            name: "coordinator SIGKILL after exit, before DELETE /runners/:id",
            in_quick: true,
            run: kill_before_delete,
        },
        Row {
            name: "agent SIGKILL mid-job",
            in_quick: true,
            run: kill_agent_mid_job,
        },
        Row {
            name: "GitLab 5xx then 429, then recovering",
            in_quick: true,
            run: gitlab_outage,
        },
        Row {
            name: "agent cut off (unreachable < t < lost) during a stop",
            in_quick: true,
            run: cut_off_during_stop,
        },
        Row {
            name: "webhook flood: duplicates and forged statuses",
            in_quick: true,
            run: webhook_flood,
        },
        Row {
            name: "dockerd restart mid-job",
            in_quick: true,
            run: dockerd_restart,
        },
        Row {
            name: "certificate renewal killed between its writes",
            in_quick: false,
            run: renewal_killed,
        },
        Row {
            name: "agent clock 25 h ahead (faketime)",
            in_quick: false,
            run: clock_ahead,
        },
        Row {
            name: "agent clock 25 h behind (faketime)",
            in_quick: false,
            run: clock_behind,
        },
        Row {
            name: "half-open HTTP and idle TLS connections",
            in_quick: true,
            run: half_open_connections,
        },
        Row {
            name: "a long job drained with a 1-hour deadline",
            in_quick: false,
            run: drain_long_job,
        },
    ]
}

fn outcome(fx: &Fixture, notes: String) -> Outcome {
    let counters = fx.settle_and_count(T);
    let notes = if counters.is_zero() {
        notes
    } else {
        format!("{notes}\n{}", fx.diagnostics())
    };
    Outcome { counters, notes }
}

/// GitLab created the runner but its answer never reached the coordinator.
fn kill_after_create(_: Scale) -> anyhow::Result<Outcome> {
    let mut fx = Fixture::start(Setup::default())?;
    fx.add_agent(None, "")?;
    fx.sim.handle.set_faults(FaultSpec {
        hold_response_ms: Some(5_000),
        path_prefix: Some("/api/v4/user/runners".into()),
        ..Default::default()
    });
    let job = fx.job(11, 500);
    wait_for(T, "GitLab runner created", || {
        fx.sim.handle.runners().into_iter().next()
    })?;
    fx.c.kill();
    fx.sim.handle.set_faults(FaultSpec {
        reset: true,
        ..Default::default()
    });
    std::thread::sleep(Duration::from_millis(500));
    fx.c.start()?;
    fx.wait_job(job.id, "success", T)?;
    Ok(outcome(&fx, String::new()))
}

/// The agent was told to start; the coordinator died before hearing back.
fn kill_after_start(_: Scale) -> anyhow::Result<Outcome> {
    let mut fx = Fixture::start(Setup::default())?;
    let agent = fx.add_agent(None, "")?;
    let job = fx.job(12, 3_000);
    let scope = format!("autogit.scope={}", fx.agents[agent].1);
    wait_for(T, "runner container created", || {
        (!docker_containers(&scope).is_empty()).then_some(())
    })?;
    fx.restart_coordinator(Duration::from_millis(500))?;
    fx.wait_job(job.id, "success", T)?;
    Ok(outcome(&fx, String::new()))
}

/// The pool keeps two GitLab runners in stock (`stock = 2`). The coordinator
/// dies once a job's runner, taken from the stock, has its container, with
/// the rest of the stock (and maybe a refill) in GitLab and its tokens gone
/// with the process. The next coordinator serves the job, its collector
/// deletes the dead one's stock, its own stays within the bound (the
/// counters allow at most `stock` unrecorded stocked runners), and a clean
/// stop (SIGTERM) deletes that too.
fn kill_with_stock(_: Scale) -> anyhow::Result<Outcome> {
    let mut fx = Fixture::start(Setup {
        stock: 2,
        ..Default::default()
    })?;
    let agent = fx.add_agent(None, "")?;
    let live = |fx: &Fixture| -> BTreeSet<u64> {
        fx.sim
            .handle
            .runners()
            .iter()
            .filter(|r| !r.deleted)
            .map(|r| r.id)
            .collect()
    };
    wait_for(T, "two GitLab runners in stock", || {
        (live(&fx).len() == 2).then_some(())
    })?;
    let stocked = live(&fx);
    let job = fx.job(14, 3_000);
    let scope = format!("autogit.scope={}", fx.agents[agent].1);
    wait_for(T, "runner container created", || {
        (!docker_containers(&scope).is_empty()).then_some(())
    })?;
    let taken: Vec<u64> = fx
        .runners()
        .iter()
        .filter_map(|r| r["gitlab_runner_id"].as_u64())
        .collect();
    expect(
        taken.len() == 1 && stocked.contains(&taken[0]),
        "the job's runner took a stocked GitLab runner",
    )?;
    let before = live(&fx);
    fx.restart_coordinator(Duration::from_millis(500))?;
    fx.wait_job(job.id, "success", T)?;
    wait_for(T, "the killed coordinator's GitLab runners deleted", || {
        let now = live(&fx);
        before.iter().all(|id| !now.contains(id)).then_some(())
    })?;
    let mut o = outcome(&fx, String::new());
    fx.c.terminate(T)?;
    let left = live(&fx).len() as u32;
    if left > 0 {
        o.counters.orphan_gitlab_runners += left;
        o.notes
            .push_str(&format!("\n{left} GitLab runners left after a clean stop"));
    }
    Ok(o)
}

/// The container exited; the coordinator died before GitLab deleted its runner.
fn kill_before_delete(_: Scale) -> anyhow::Result<Outcome> {
    let mut fx = Fixture::start(Setup::default())?;
    let agent = fx.add_agent(None, "")?;
    // Every call under /runners/ (the DELETE among them) waits 4 s before
    // GitLab acts on it: the coordinator dies inside that window.
    fx.sim.handle.set_faults(FaultSpec {
        latency_ms: Some(4_000),
        path_prefix: Some("/api/v4/runners/".into()),
        ..Default::default()
    });
    let job = fx.job(13, 300);
    fx.wait_job(job.id, "success", T)?;
    let scope = format!("autogit.scope={}", fx.agents[agent].1);
    wait_for(T, "runner container gone", || {
        docker_containers(&scope).is_empty().then_some(())
    })?;
    let undeleted = fx.sim.handle.runners().iter().filter(|r| !r.deleted).count();
    expect(
        undeleted > 0,
        "the GitLab runner was deleted before the crash point",
    )?;
    fx.c.kill();
    fx.sim.handle.set_faults(FaultSpec {
        reset: true,
        ..Default::default()
    });
    std::thread::sleep(Duration::from_millis(500));
    fx.c.start()?;
    Ok(outcome(&fx, String::new()))
}

fn kill_agent_mid_job(_: Scale) -> anyhow::Result<Outcome> {
    let mut fx = Fixture::start(Setup::default())?;
    let agent = fx.add_agent(None, "")?;
    let job = fx.job(14, 4_000);
    fx.wait_job(job.id, "running", T)?;
    fx.agents[agent].0.kill();
    std::thread::sleep(Duration::from_millis(500));
    fx.agents[agent].0.start()?;
    fx.wait_job(job.id, "success", T)?;
    Ok(outcome(&fx, String::new()))
}

/// GitLab answers 503 for half the outage and 429 for the other half.
fn gitlab_outage(s: Scale) -> anyhow::Result<Outcome> {
    let outage = if s.quick {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(120)
    };
    let mut fx = Fixture::start(Setup::default())?;
    fx.add_agent(None, "")?;
    let before = fx.job(15, 300);
    fx.wait_job(before.id, "success", T)?;
    fx.sim.handle.set_faults(FaultSpec {
        fail_next: Some(1_000_000),
        fail_status: Some(503),
        ..Default::default()
    });
    let during = fx.job(15, 300);
    std::thread::sleep(outage / 2);
    fx.sim.handle.set_faults(FaultSpec {
        reset: true,
        rate_limit_next: Some(1_000_000),
        retry_after_secs: Some(5),
        ..Default::default()
    });
    let late = fx.job(16, 300);
    std::thread::sleep(outage / 2);
    let healed = Instant::now();
    fx.sim.handle.set_faults(FaultSpec {
        reset: true,
        ..Default::default()
    });
    fx.wait_job(during.id, "success", T + outage)?;
    fx.wait_job(late.id, "success", T + outage)?;
    let recovered = healed.elapsed();
    Ok(outcome(
        &fx,
        format!(
            "outage {}s; both jobs done {:.1}s after GitLab recovered",
            outage.as_secs(),
            recovered.as_secs_f64()
        ),
    ))
}

/// An operator stops an idle runner while the agent's connection is cut for
/// longer than `unreachable_after` (2 s here) but shorter than `lost_after`
/// (20 s). The runner would wait 10 minutes for a job: only the stop, once
/// it reaches the agent, ends it. Then the agent is drained to settle.
fn cut_off_during_stop(_: Scale) -> anyhow::Result<Outcome> {
    let mut fx = Fixture::start(Setup {
        pool_extra: "idle_min = 1",
        wait_timeout: 600,
        ..Default::default()
    })?;
    let grpc = fx.c.grpc.context("coordinator gRPC address")?;
    let proxy = Proxy::start(grpc)?;
    let agent = fx.add_agent(Some(&proxy.addr.to_string()), "")?;
    let agent_id = fx.agents[agent].1.clone();
    let runner = wait_for(T, "an idle warm runner", || {
        fx.runners()
            .into_iter()
            .find(|r| r["state"] == "idle")
            .and_then(|r| r["id"].as_str().map(str::to_string))
    })?;
    proxy.cut();
    fx.c.wait_agent_state(&agent_id, "unreachable", T)?;
    let (status, _) = fx.api("POST", &format!("/api/v1/runners/{runner}/stop"), None);
    std::thread::sleep(Duration::from_secs(6));
    proxy.restore();
    fx.c.wait_agent_state(&agent_id, "ready", T)?;
    let back = Instant::now();
    let label = format!("autogit.runner-id={runner}");
    let gone = wait_for(Duration::from_secs(30), "stopped runner's container gone", || {
        docker_containers(&label).is_empty().then_some(())
    });
    let stop_took = back.elapsed();
    // Settle: no new runners, the warm one stopped.
    fx.api(
        "POST",
        &format!("/api/v1/agents/{agent_id}/drain"),
        Some(json!({"deadline_seconds": 5})),
    );
    let mut o = outcome(
        &fx,
        format!(
            "stop answered {status} while cut off; container gone {:.1}s after reconnect",
            stop_took.as_secs_f64()
        ),
    );
    if gone.is_err() {
        o.counters.orphan_containers += 1;
        o.notes = format!(
            "the stopped runner's container still ran 30 s after the agent reconnected\n{}",
            o.notes
        );
    }
    Ok(o)
}

/// Thousands of duplicate deliveries of a job's hook, plus forged
/// `success`/`running` statuses for pending jobs carrying the right secret.
fn webhook_flood(s: Scale) -> anyhow::Result<Outcome> {
    let n = if s.quick { 1_000 } else { 10_000 };
    // Polling every 5 s: a forged status must not keep a job from a runner
    // until some far-off poll.
    let mut fx = Fixture::start(Setup {
        poll: "5s",
        webhook: false,
        ..Default::default()
    })?;
    fx.add_agent(None, "")?;
    let real = fx.job(18, 300);
    let forged = fx.job(19, 300);
    let url = fx.c.http_url("/webhooks/gitlab");
    let started = Instant::now();
    let calls_before = fx.sim.handle.request_count("GET /api/v4/projects/{id}/jobs/{job_id}");
    let hook = |job: u64, project: u64, status: &str, key: &str| {
        let body = json!({
            "object_kind": "build", "build_id": job, "build_status": status,
            "project_id": project, "build_name": "test", "build_stage": "test",
            "pipeline_id": 1, "ref": "main", "tag": false, "sha": "0000",
            "build_allow_failure": false, "build_failure_reason": "unknown_failure",
            "project_name": "p", "user": null, "runner": null,
        });
        ureq::post(&url)
            .header("X-Gitlab-Event", "Job Hook")
            .header("X-Gitlab-Token", SECRET)
            .header("Idempotency-Key", key)
            .send_json(&body)
            .map(|r| r.status().as_u16())
            .unwrap_or_else(|e| match e {
                ureq::Error::StatusCode(s) => s,
                _ => 0,
            })
    };
    let mut refused = 0;
    for i in 0..n {
        // Half replay one delivery; half are new deliveries of the same event.
        let key = if i % 2 == 0 {
            "delivery-1".to_string()
        } else {
            format!("delivery-{i}")
        };
        if hook(real.id, 18, "pending", &key) >= 400 {
            refused += 1;
        }
    }
    for (i, status) in ["success", "failed", "running"].iter().enumerate() {
        hook(forged.id, 19, status, &format!("forged-{i}"));
    }
    let flood_secs = started.elapsed().as_secs_f64();
    fx.wait_job(real.id, "success", T)?;
    fx.wait_job(forged.id, "success", T)?;
    let calls = fx.sim.handle.request_count("GET /api/v4/projects/{id}/jobs/{job_id}") - calls_before;
    Ok(outcome(
        &fx,
        format!(
            "{n} duplicates in {flood_secs:.1}s ({refused} refused); {calls} job fetches from GitLab"
        ),
    ))
}

/// Thousands of connections that never finish a request (HTTP) or never say
/// anything after the handshake (gRPC/TLS). Meanwhile `/healthz` must answer
/// and a restarted agent must get back in; the server must close them.
fn half_open_connections(s: Scale) -> anyhow::Result<Outcome> {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let n = if s.quick { 200 } else { 2_000 };
    raise_nofile(4 * n as u64 + 1_024);
    let mut fx = Fixture::start(Setup::default())?;
    let agent = fx.add_agent(None, "")?;
    let http = fx.c.http.context("HTTP address")?;
    let grpc = fx.c.grpc.context("gRPC address")?;
    let mut socks = Vec::new();
    let mut refused = 0;
    for _ in 0..n {
        match TcpStream::connect_timeout(&http, Duration::from_secs(2)) {
            Ok(mut t) => {
                let _ = t.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ");
                socks.push(t);
            }
            Err(_) => refused += 1,
        }
    }
    let tls = idle_tls_config();
    let mut tls_socks = Vec::new();
    for _ in 0..n {
        match idle_tls(&tls, grpc) {
            Ok(t) => tls_socks.push(t),
            Err(_) => refused += 1,
        }
    }
    let opened = Instant::now();
    // While they are open: health answers, an agent gets back in.
    let health = ureq::get(&fx.c.http_url("/healthz"))
        .config()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .call()
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    let id = fx.agents[agent].1.clone();
    fx.agents[agent].0.kill();
    fx.c.wait_agent_state(&id, "unreachable", T)?;
    fx.agents[agent].0.start()?;
    let rejoin = Instant::now();
    let back = fx.c.wait_agent_state(&id, "ready", T).is_ok();
    let rejoin_s = rejoin.elapsed().as_secs_f64();
    let job = fx.job(21, 300);
    fx.wait_job(job.id, "success", T)?;
    // The server must drop them: count those closed within 90 s of opening.
    let deadline = opened + Duration::from_secs(90);
    let closed = |t: &mut TcpStream| -> bool {
        let _ = t.set_read_timeout(Some(Duration::from_millis(1)));
        let mut b = [0u8; 64];
        match t.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
        }
    };
    let mut open_http = socks.len();
    let mut open_tls = tls_socks.len();
    while Instant::now() < deadline && (open_http > 0 || open_tls > 0) {
        socks.retain_mut(|t| !closed(t));
        tls_socks.retain_mut(|t| !closed(t));
        open_http = socks.len();
        open_tls = tls_socks.len();
        std::thread::sleep(Duration::from_secs(1));
    }
    let held = opened.elapsed().as_secs_f64();
    drop(socks);
    drop(tls_socks);
    expect(health == 200, &format!("/healthz answered {health} while {n}+{n} connections were open"))?;
    expect(back, "the restarted agent did not get back in while the connections were open")?;
    expect(
        open_http == 0 && open_tls == 0,
        &format!("{open_http} half-open HTTP and {open_tls} idle TLS connections still open after {held:.0} s"),
    )?;
    Ok(outcome(
        &fx,
        format!(
            "{n} half-open HTTP + {n} idle TLS ({refused} refused at connect); healthz 200; agent back in {rejoin_s:.1}s; all closed by the server within {held:.0}s"
        ),
    ))
}

/// Raise this process's soft open-file limit (bounded by the hard limit).
fn raise_nofile(want: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < want
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, want.min(hard), hard);
    }
}

/// A TLS client that completes a handshake with any server and sends
/// nothing after it: the idle connection an attacker would hold open.
fn idle_tls_config() -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    #[derive(Debug)]
    struct AnyServer(rustls::crypto::CryptoProvider);
    impl ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = rustls::crypto::ring::default_provider();
    let mut cfg = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider.clone()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    std::sync::Arc::new(cfg)
}

fn idle_tls(
    cfg: &std::sync::Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
) -> anyhow::Result<std::net::TcpStream> {
    let mut tcp = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?.to_owned();
    let mut conn = rustls::ClientConnection::new(cfg.clone(), name)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(tcp)
}

/// A long job on an agent drained with a one-hour deadline: the job finishes,
/// the GitLab runner is deleted only afterwards, and the agent reports
/// drained only once its container is gone.
fn drain_long_job(s: Scale) -> anyhow::Result<Outcome> {
    let job_ms = if s.quick { 200_000 } else { 600_000 };
    let mut fx = Fixture::start(Setup {
        wait_timeout: 900,
        ..Default::default()
    })?;
    let agent = fx.add_agent(None, "")?;
    let agent_id = fx.agents[agent].1.clone();
    let job = fx.job(22, job_ms);
    fx.wait_job(job.id, "running", T)?;
    let (status, _) = fx.api(
        "POST",
        &format!("/api/v1/agents/{agent_id}/drain"),
        Some(json!({"deadline_seconds": 3600})),
    );
    expect(status == 200, &format!("drain answered {status}"))?;
    fx.wait_job(job.id, "success", Duration::from_millis(job_ms) + T)?;
    let mut o = outcome(&fx, format!("{} s job drained with a 1 h deadline", job_ms / 1000));
    let finished = fx.sim.handle.job(job.id).and_then(|j| j.finished_at).unwrap_or_default();
    let early: Vec<u64> = fx
        .sim
        .handle
        .runners()
        .iter()
        .filter(|r| r.deleted_at.as_deref().is_some_and(|d| d < finished.as_str()))
        .map(|r| r.id)
        .collect();
    if !early.is_empty() {
        o.counters.lost_records += early.len() as u32;
        o.notes = format!("GitLab runners {early:?} deleted while their job still ran\n{}", o.notes);
    }
    Ok(o)
}

/// The agent's Docker engine restarts while a job runs (with
/// `--live-restore`, so the container survives): the agent reconnects,
/// re-adopts the container, and the job finishes and is cleaned up.
fn dockerd_restart(s: Scale) -> anyhow::Result<Outcome> {
    // Past the ~95 s after which a lifecycle used to give up, in the full run.
    let down = if s.quick {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(120)
    };
    let mut d = super::PrivateDockerd::start()?;
    d.load_image(&crate::harness::test_runner_image())?;
    let mut fx = Fixture::start(Setup::default())?;
    let agent = fx.add_agent(None, &format!("[docker]\nsocket = \"{}\"\n", d.socket().display()))?;
    let scope = format!("autogit.scope={}", fx.agents[agent].1);
    let job = fx.job(23, 8_000);
    fx.wait_job(job.id, "running", T)?;
    d.restart(down)?;
    let done = fx.wait_job(job.id, "success", T);
    let _ = wait_for(Duration::from_secs(30), "containers gone from the private engine", || {
        d.containers(&scope).is_empty().then_some(())
    });
    let left = d.containers(&scope).len() as u32;
    let mut o = outcome(
        &fx,
        format!("dockerd down {} s mid-job (live-restore)", down.as_secs()),
    );
    // The fixture counts the shared engine; this row's containers live here.
    o.counters.orphan_containers += left;
    if let Err(e) = done {
        o.counters.lost_records += 1;
        o.notes = format!("{e:#}\n{}", o.notes);
    }
    if left > 0 {
        o.notes = format!("{left} containers left on the restarted engine\n{}", o.notes);
    }
    d.remove(&scope);
    Ok(o)
}

/// Certificates live 9 s, so the agent renews about every 6 s; it is
/// SIGKILLed at varying moments around its renewals and restarted, once with
/// a half-written `identity.pem.new` left behind as a killed write would. It
/// must come back every time and still serve a job.
fn renewal_killed(s: Scale) -> anyhow::Result<Outcome> {
    let kills = if s.quick { 4 } else { 12 };
    let mut fx = Fixture::start(Setup {
        extra: "[tls]\nagent_cert_ttl = \"9s\"\n",
        ..Default::default()
    })?;
    let agent = fx.add_agent(None, "")?;
    let id = fx.agents[agent].1.clone();
    let mut worst = Duration::ZERO;
    for i in 0..kills {
        // 1.0 s, 1.7 s, ... spread over the ~6 s renewal period.
        std::thread::sleep(Duration::from_millis(1_000 + (i as u64 * 700) % 6_000));
        fx.agents[agent].0.kill();
        if i == kills / 2 {
            let dir = fx.agents[agent].0.state_dir.clone();
            let whole = std::fs::read_to_string(dir.join("identity.pem")).unwrap_or_default();
            std::fs::write(dir.join("identity.pem.new"), &whole[..whole.len() / 2])?;
        }
        fx.agents[agent].0.start()?;
        let t = Instant::now();
        fx.c.wait_agent_state(&id, "ready", T)
            .with_context(|| format!("after kill {}: agent log:\n{}", i + 1, fx.agents[agent].0.logs()))?;
        worst = worst.max(t.elapsed());
    }
    let renewals = fx.c.logs().matches("agent certificate renewed").count();
    let job = fx.job(24, 300);
    fx.wait_job(job.id, "success", T)?;
    expect(renewals > 0, "no renewal happened: the kills never met one")?;
    Ok(outcome(
        &fx,
        format!(
            "{kills} kills around {renewals} renewals; back in at most {:.1}s each time",
            worst.as_secs_f64()
        ),
    ))
}

fn clock_ahead(_: Scale) -> anyhow::Result<Outcome> {
    skewed("+25h")
}

fn clock_behind(_: Scale) -> anyhow::Result<Outcome> {
    skewed("-25h")
}

/// The agent runs under `faketime` (the dynamically linked debug build)
/// against a fresh coordinator on the true clock, with 30 s certificates:
/// it must join, serve a job, renew in time and not in a loop.
fn skewed(offset: &str) -> anyhow::Result<Outcome> {
    let scratch = tempfile::tempdir()?;
    let wrapper = scratch.path().join("skewed");
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec faketime -f \"{offset}\" \"$@\"\n"))?;
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let mut fx = Fixture::start(Setup {
        extra: "[tls]\nagent_cert_ttl = \"30s\"\n",
        ..Default::default()
    })?;
    fx.add_agent_wrapped(None, "", Some(wrapper))?;
    let job = fx.job(25, 300);
    fx.wait_job(job.id, "success", T)?;
    // 30 s certificates renew at about 20 s: over 35 s, one or two renewals
    // are right, more is a loop, none means it would have expired.
    std::thread::sleep(Duration::from_secs(35));
    let renewals = fx.c.logs().matches("agent certificate renewed").count();
    let ready = fx.c.agents()?.first().is_some_and(|a| a["state"] == "ready");
    expect(ready, "the skewed agent is not ready after 35 s")?;
    expect(
        (1..=3).contains(&renewals),
        &format!("{renewals} renewals in about 40 s with 30 s certificates"),
    )?;
    Ok(outcome(
        &fx,
        format!("agent clock {offset}; {renewals} renewals in about 40 s with 30 s certificates"),
    ))
}
