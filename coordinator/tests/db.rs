//! The state store's behaviour, the same on both backends (ADR 0017).
//!
//! Every case runs against a fresh SQLite file and against a fresh database
//! in a private PostgreSQL cluster (`autogit_tests::postgres`), through the
//! public `Db` interface only. `migrate` is checked both ways between them.

use std::future::Future;
use std::pin::Pin;

use autogit_coordinator::db::{
    self, AdminCertKey, AdminCertRow, AdminSessionRow, AdminTokenRow, AgentCerts, AgentRow,
    DatabaseUrl, Db, DbError, EventFilter, Fence, GpuRow, Liveness, NewEvent, PersonSessionRow,
    RunnerRow, RunnerWrite, TokenRow, TokenUse,
};
use autogit_tests::postgres::Postgres;

type Case = fn(Db) -> Pin<Box<dyn Future<Output = ()>>>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), |db| Box::pin($name(db)))),*]
    };
}

const CASES: &[(&str, Case)] = cases![
    agents_round_trip_and_sort_in_byte_order,
    inventory_replaces_the_gpus,
    liveness_and_state_never_touch_a_revoked_agent,
    revoking_an_agent_is_recorded_once,
    a_join_token_enrols_exactly_as_often_as_allowed,
    refused_enrolments_store_no_agent,
    certificate_swaps_are_compare_and_swap,
    runners_upsert_and_list_by_state,
    a_pass_of_runner_writes_lands_together,
    events_filter_and_page_newest_first,
    admin_tokens_and_their_sessions,
    admin_certificates_revoke_by_serial_or_name,
    person_sessions_live_list_and_purge,
    one_leader_at_a_time_with_growing_epochs,
    a_deposed_leaders_writes_are_fenced,
    replicas_report_and_age_out,
    kept_webhooks_wait_bounded_and_are_taken_once,
];

async fn sqlite() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(dir.path()).await.expect("open SQLite");
    (dir, db)
}

async fn postgres(pg: &Postgres, name: &str) -> Db {
    let url = pg.create_db(name);
    Db::connect(&DatabaseUrl::parse(&url).expect("url"))
        .await
        .expect("open PostgreSQL")
}

#[tokio::test]
async fn every_case_on_sqlite() {
    for (name, case) in CASES {
        eprintln!("sqlite: {name}");
        let (_dir, db) = sqlite().await;
        assert_eq!(db.backend(), db::Backend::Sqlite);
        case(db.clone()).await;
        db.close().await;
    }
}

#[tokio::test]
async fn every_case_on_postgres() {
    let Some(pg) = Postgres::start() else { return };
    for (i, (name, case)) in CASES.iter().enumerate() {
        eprintln!("postgres: {name}");
        let db = postgres(&pg, &format!("case_{i}")).await;
        assert_eq!(db.backend(), db::Backend::Postgres);
        case(db.clone()).await;
        db.close().await;
    }
}

// ---- fixtures ---------------------------------------------------------

fn agent(id: &str, hostname: &str) -> AgentRow {
    AgentRow {
        id: id.into(),
        hostname: hostname.into(),
        arch: "x86_64".into(),
        state: "enrolled".into(),
        cordoned: false,
        labels: r#"{"rack":"b3"}"#.into(),
        inventory: None,
        load: None,
        cert_serial: format!("serial-{id}"),
        cert_not_after: 9_000_000,
        token_id: Some("tok".into()),
        enrolled_at: 1_000,
        last_seen: None,
        revoked_at: None,
    }
}

fn token(id: &str, max_uses: i64, expires_at: i64) -> TokenRow {
    TokenRow {
        id: id.into(),
        secret_hash: vec![0xde, 0xad, id.len() as u8],
        description: "ci hosts".into(),
        labels: "{}".into(),
        created_at: 1_000,
        expires_at,
        max_uses,
        uses: 0,
        revoked_at: None,
    }
}

fn runner(id: &str, state: &str, created_at: i64) -> RunnerRow {
    RunnerRow {
        id: id.into(),
        pool: "default".into(),
        agent_id: "a1".into(),
        state: state.into(),
        gpus: "[]".into(),
        cpu: 1.5,
        memory_bytes: 2 << 30,
        created_at,
        ..Default::default()
    }
}

fn event(at: i64, kind: &str, agent: Option<&str>, runner: Option<&str>) -> NewEvent {
    NewEvent {
        at,
        kind: kind.into(),
        actor: "test".into(),
        agent_id: agent.map(Into::into),
        runner_id: runner.map(Into::into),
        detail: format!(r#"{{"n":{at}}}"#),
    }
}

fn admin_token(id: &str, expires_at: Option<i64>) -> AdminTokenRow {
    AdminTokenRow {
        id: id.into(),
        name: format!("name-{id}"),
        secret_hash: vec![1, 2, 3],
        created_at: 1_000,
        expires_at,
        revoked_at: None,
        last_used_at: None,
        role: "operator".into(),
    }
}

// ---- cases ------------------------------------------------------------

async fn agents_round_trip_and_sort_in_byte_order(db: Db) {
    for (id, host) in [("a1", "b-host"), ("a2", "B-host"), ("a3", "a-host")] {
        db.insert_agent(&agent(id, host)).await.expect("insert");
    }
    let hosts: Vec<String> = db
        .list_agents()
        .await
        .expect("list")
        .into_iter()
        .map(|a| a.hostname)
        .collect();
    assert_eq!(
        hosts,
        ["B-host", "a-host", "b-host"],
        "byte order, as SQLite sorts"
    );
    assert!(db.set_cordoned("a1", true).await.expect("cordon"));
    assert!(!db.set_cordoned("nobody", true).await.expect("cordon"));
    assert!(
        db.set_agent_labels("a1", r#"{"gpu":"a100"}"#)
            .await
            .expect("labels")
    );
    assert!(!db.set_agent_labels("nobody", "{}").await.expect("labels"));
    db.update_agent_cert("a1", "serial-new", 12_345)
        .await
        .expect("cert");
    let a = db.get_agent("a1").await.expect("get").expect("a1");
    assert!(a.cordoned);
    assert_eq!(a.labels, r#"{"gpu":"a100"}"#);
    assert_eq!(
        (a.cert_serial.as_str(), a.cert_not_after),
        ("serial-new", 12_345)
    );
    assert_eq!(a.token_id.as_deref(), Some("tok"));
    assert!(db.get_agent("nobody").await.expect("get").is_none());
    // The same id twice is refused, not merged.
    assert!(db.insert_agent(&agent("a1", "again")).await.is_err());
}

async fn inventory_replaces_the_gpus(db: Db) {
    db.insert_agent(&agent("a1", "gpu-box"))
        .await
        .expect("insert");
    let gpu = |uuid: &str, idx, memory| GpuRow {
        uuid: uuid.into(),
        idx,
        vendor: "nvidia".into(),
        name: "A100".into(),
        memory_bytes: memory,
    };
    db.update_inventory(
        "a1",
        "gpu-box",
        "aarch64",
        "{}",
        &[gpu("g1", 1, None), gpu("g0", 0, Some(80 << 30))],
    )
    .await
    .expect("inventory");
    let gpus = db.list_gpus("a1").await.expect("gpus");
    assert_eq!(
        gpus.iter()
            .map(|g| (g.uuid.as_str(), g.idx, g.memory_bytes))
            .collect::<Vec<_>>(),
        [("g0", 0, Some(80 << 30)), ("g1", 1, None)]
    );
    db.update_inventory(
        "a1",
        "gpu-box-2",
        "aarch64",
        r#"{"cpus":8}"#,
        &[gpu("g9", 0, None)],
    )
    .await
    .expect("inventory");
    let gpus = db.list_gpus("a1").await.expect("gpus");
    assert_eq!(gpus.len(), 1);
    assert_eq!(gpus[0].uuid, "g9");
    let a = db.get_agent("a1").await.expect("get").expect("a1");
    assert_eq!(
        (a.hostname.as_str(), a.arch.as_str()),
        ("gpu-box-2", "aarch64")
    );
    assert_eq!(a.inventory.as_deref(), Some(r#"{"cpus":8}"#));
}

async fn liveness_and_state_never_touch_a_revoked_agent(db: Db) {
    db.insert_agent(&agent("a1", "h1")).await.expect("insert");
    db.insert_agent(&agent("a2", "h2")).await.expect("insert");
    assert!(
        db.revoke_agent("a2", 5_000, "admin", "stolen")
            .await
            .expect("revoke")
    );
    db.flush_liveness(&[
        Liveness {
            id: "a1".into(),
            state: "ready".into(),
            last_seen: 6_000,
            load: Some(r#"{"cpu":0.5}"#.into()),
        },
        Liveness {
            id: "a2".into(),
            state: "ready".into(),
            last_seen: 6_000,
            load: None,
        },
    ])
    .await
    .expect("flush");
    db.flush_liveness(&[]).await.expect("empty flush");
    let a1 = db.get_agent("a1").await.expect("get").expect("a1");
    assert_eq!((a1.state.as_str(), a1.last_seen), ("ready", Some(6_000)));
    assert_eq!(a1.load.as_deref(), Some(r#"{"cpu":0.5}"#));
    // A flush without load keeps the last one.
    db.flush_liveness(&[Liveness {
        id: "a1".into(),
        state: "unreachable".into(),
        last_seen: 7_000,
        load: None,
    }])
    .await
    .expect("flush");
    let a1 = db.get_agent("a1").await.expect("get").expect("a1");
    assert_eq!(a1.load.as_deref(), Some(r#"{"cpu":0.5}"#));
    db.set_agent_state("a1", "lost", None).await.expect("state");
    let a1 = db.get_agent("a1").await.expect("get").expect("a1");
    assert_eq!((a1.state.as_str(), a1.last_seen), ("lost", Some(7_000)));
    db.set_agent_state("a2", "ready", Some(9_000))
        .await
        .expect("state");
    let a2 = db.get_agent("a2").await.expect("get").expect("a2");
    assert_eq!((a2.state.as_str(), a2.last_seen), ("revoked", None));
}

async fn revoking_an_agent_is_recorded_once(db: Db) {
    db.insert_agent(&agent("a1", "h1")).await.expect("insert");
    assert!(
        db.revoke_agent("a1", 5_000, "admin", "stolen")
            .await
            .expect("revoke")
    );
    assert!(
        db.revoke_agent("a1", 6_000, "admin", "again")
            .await
            .expect("revoke")
    );
    assert!(
        !db.revoke_agent("nobody", 6_000, "admin", "")
            .await
            .expect("revoke")
    );
    assert_eq!(db.revoked_agent_ids().await.expect("ids"), ["a1"]);
    let a = db.get_agent("a1").await.expect("get").expect("a1");
    assert_eq!(
        (a.state.as_str(), a.revoked_at),
        ("revoked", Some(5_000)),
        "first date kept"
    );
}

async fn a_join_token_enrols_exactly_as_often_as_allowed(db: Db) {
    db.insert_token(&token("t2", 2, 10_000))
        .await
        .expect("token");
    // Five hosts race for two uses: exactly two enrol.
    let tries = (0..5).map(|i| {
        let db = db.clone();
        async move {
            db.enroll_with_token("t2", 2_000, &agent(&format!("a{i}"), "h"))
                .await
                .expect("enroll")
        }
    });
    let outcomes = futures::future::join_all(tries).await;
    let consumed = outcomes
        .iter()
        .filter(|o| **o == TokenUse::Consumed)
        .count();
    assert_eq!(consumed, 2, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, TokenUse::Consumed | TokenUse::UsedUp)),
        "{outcomes:?}"
    );
    assert_eq!(db.list_agents().await.expect("list").len(), 2);
    let t = db.get_token("t2").await.expect("get").expect("t2");
    assert_eq!((t.uses, t.max_uses), (2, 2));
    assert_eq!(t.secret_hash, vec![0xde, 0xad, 2]);
}

async fn refused_enrolments_store_no_agent(db: Db) {
    db.insert_token(&token("old", 5, 1_500))
        .await
        .expect("token");
    db.insert_token(&token("gone", 5, 10_000))
        .await
        .expect("token");
    assert!(db.revoke_token("gone", 1_100).await.expect("revoke"));
    assert!(db.revoke_token("gone", 1_200).await.expect("revoke again"));
    assert!(
        !db.revoke_token("nobody", 1_200)
            .await
            .expect("revoke unknown")
    );
    assert_eq!(
        db.get_token("gone")
            .await
            .expect("get")
            .expect("gone")
            .revoked_at,
        Some(1_100)
    );
    let try_with = |t: &'static str| {
        let db = db.clone();
        async move {
            db.enroll_with_token(t, 2_000, &agent(t, "h"))
                .await
                .expect("enroll")
        }
    };
    assert_eq!(try_with("old").await, TokenUse::Expired);
    assert_eq!(try_with("gone").await, TokenUse::Revoked);
    assert_eq!(try_with("nobody").await, TokenUse::Unknown);
    assert!(db.list_agents().await.expect("list").is_empty());
    assert_eq!(
        db.get_token("old").await.expect("get").expect("old").uses,
        0
    );
    let ids: Vec<String> = db
        .list_tokens()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, ["gone", "old"]);
}

async fn certificate_swaps_are_compare_and_swap(db: Db) {
    db.insert_agent(&agent("a1", "h1")).await.expect("insert");
    let current = AgentCerts {
        current: "serial-a1".into(),
        pending: None,
    };
    assert_eq!(
        db.agent_certs("a1").await.expect("certs"),
        Some(current.clone())
    );
    assert_eq!(db.agent_certs("nobody").await.expect("certs"), None);
    let renewing = AgentCerts {
        current: "serial-a1".into(),
        pending: Some("p1".into()),
    };
    assert!(
        db.swap_agent_certs("a1", &current, &renewing, None)
            .await
            .expect("swap")
    );
    // A second renewal that read the old state loses.
    assert!(
        !db.swap_agent_certs("a1", &current, &renewing, None)
            .await
            .expect("swap")
    );
    let confirmed = AgentCerts {
        current: "p1".into(),
        pending: None,
    };
    assert!(
        db.swap_agent_certs("a1", &renewing, &confirmed, Some(77_000))
            .await
            .expect("swap")
    );
    let a = db.get_agent("a1").await.expect("get").expect("a1");
    assert_eq!((a.cert_serial.as_str(), a.cert_not_after), ("p1", 77_000));
}

async fn runners_upsert_and_list_by_state(db: Db) {
    db.upsert_runner(&runner("r1", "provisioning", 1))
        .await
        .expect("r1");
    db.upsert_runner(&runner("r2", "busy", 2))
        .await
        .expect("r2");
    for (i, id) in ["f1", "f2", "f3"].iter().enumerate() {
        let mut r = runner(id, "exited", 10 + i as i64);
        r.gitlab_runner_id = Some(100 + i as i64);
        r.finished_at = Some(20);
        r.exit_code = Some(0);
        db.upsert_runner(&r).await.expect("finished");
    }
    // A full replace, not a merge: fields not given go back to NULL.
    let mut r1 = runner("r1", "idle", 1);
    r1.gitlab_runner_id = Some(7);
    r1.container_id = Some("c0ffee".into());
    r1.image_pull_ms = Some(0);
    db.upsert_runner(&r1).await.expect("replace");
    assert_eq!(db.get_runner("r1").await.expect("get"), Some(r1.clone()));
    assert_eq!(db.get_runner("nobody").await.expect("get"), None);
    let ids = |rs: Vec<RunnerRow>| rs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(db.active_runners().await.expect("active")),
        ["r1", "r2"]
    );
    assert_eq!(
        ids(db.undeleted_runners().await.expect("undeleted")),
        ["f1", "f2", "f3"]
    );
    assert_eq!(
        ids(db.list_runners(2).await.expect("list")),
        ["f3", "f2", "r2", "r1"]
    );
    let mut f1 = db.get_runner("f1").await.expect("get").expect("f1");
    f1.gitlab_deleted_at = Some(30);
    db.upsert_runner(&f1).await.expect("deleted");
    assert_eq!(
        ids(db.undeleted_runners().await.expect("undeleted")),
        ["f2", "f3"]
    );
    let r2 = db.get_runner("r2").await.expect("get").expect("r2");
    assert_eq!((r2.cpu, r2.memory_bytes), (1.5, 2 << 30));
}

async fn a_pass_of_runner_writes_lands_together(db: Db) {
    let writes: Vec<RunnerWrite> = (0..64)
        .flat_map(|i| {
            let id = format!("r{i:02}");
            [
                RunnerWrite::Runner(Box::new(runner(&id, "provisioning", i))),
                RunnerWrite::Event(event(i, "runner.created", None, Some(&id))),
            ]
        })
        .collect();
    db.write_runners(&writes).await.expect("pass");
    assert_eq!(db.active_runners().await.expect("active").len(), 64);
    let evs = db
        .list_events(&EventFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("events");
    assert_eq!(evs.len(), 64);
    // Each record's event follows it.
    let r05 = db
        .list_events(&EventFilter {
            runner_id: Some("r05".into()),
            ..Default::default()
        })
        .await
        .expect("r05");
    assert_eq!(r05.len(), 1);
    assert_eq!(r05[0].at, 5);
}

async fn events_filter_and_page_newest_first(db: Db) {
    for i in 0..10 {
        let agent = if i % 2 == 0 { Some("a1") } else { Some("a2") };
        let runner = (i == 3).then_some("r3");
        db.insert_event(i, "k", "test", agent, runner, &serde_json::json!({"i": i}))
            .await
            .expect("event");
    }
    let all = db.list_events(&EventFilter::default()).await.expect("all");
    assert_eq!(all.len(), 10);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(all[0].detail, serde_json::json!({"i": 9}));
    let a1 = db
        .list_events(&EventFilter {
            agent_id: Some("a1".into()),
            ..Default::default()
        })
        .await
        .expect("a1");
    assert_eq!(a1.iter().map(|e| e.at).collect::<Vec<_>>(), [8, 6, 4, 2, 0]);
    let r3 = db
        .list_events(&EventFilter {
            runner_id: Some("r3".into()),
            ..Default::default()
        })
        .await
        .expect("r3");
    assert_eq!(r3.len(), 1);
    assert_eq!(r3[0].agent_id.as_deref(), Some("a2"));
    let page = db
        .list_events(&EventFilter {
            before: Some(all[2].id),
            limit: 3,
            ..Default::default()
        })
        .await
        .expect("page");
    assert_eq!(page.iter().map(|e| e.at).collect::<Vec<_>>(), [6, 5, 4]);
    // Detail that is not JSON is shown as text, not lost.
    db.write_runners(&[RunnerWrite::Event(NewEvent {
        detail: "not json".into(),
        ..event(11, "k", None, None)
    })])
    .await
    .expect("raw");
    let newest = db
        .list_events(&EventFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("newest");
    assert_eq!(newest[0].detail, serde_json::json!("not json"));
}

async fn admin_tokens_and_their_sessions(db: Db) {
    db.insert_admin_token(&admin_token("t1", None))
        .await
        .expect("t1");
    db.insert_admin_token(&admin_token("t2", Some(5_000)))
        .await
        .expect("t2");
    let session = |id: u8, token: &str, expires_at| AdminSessionRow {
        id_hash: vec![id; 32],
        token_id: token.into(),
        created_at: 1_000 + i64::from(id),
        expires_at,
    };
    db.insert_admin_session(&session(1, "t1", 10_000))
        .await
        .expect("s1");
    db.insert_admin_session(&session(2, "t2", 10_000))
        .await
        .expect("s2");
    db.insert_admin_session(&session(3, "t1", 2_000))
        .await
        .expect("s3");
    let (s, t) = db
        .live_admin_session(&[1; 32], 3_000)
        .await
        .expect("live")
        .expect("s1 live");
    assert_eq!(
        (
            s.token_id.as_str(),
            s.expires_at,
            t.id.as_str(),
            t.role.as_str()
        ),
        ("t1", 10_000, "t1", "operator")
    );
    assert!(
        db.live_admin_session(&[3; 32], 3_000)
            .await
            .expect("live")
            .is_none(),
        "expired session"
    );
    assert!(
        db.live_admin_session(&[2; 32], 6_000)
            .await
            .expect("live")
            .is_none(),
        "expired token"
    );
    let live: Vec<u8> = db
        .list_admin_sessions(3_000)
        .await
        .expect("list")
        .iter()
        .map(|(s, _)| s.id_hash[0])
        .collect();
    assert_eq!(live, [1, 2]);
    assert_eq!(db.count_admin_sessions().await.expect("count"), 3);
    assert_eq!(
        db.purge_admin_sessions(6_000).await.expect("purge"),
        2,
        "s3 expired, s2's token expired"
    );
    db.touch_admin_token("t1", 4_000).await.expect("touch");
    assert_eq!(
        db.get_admin_token("t1")
            .await
            .expect("get")
            .expect("t1")
            .last_used_at,
        Some(4_000)
    );
    assert!(db.revoke_admin_token("t1", 7_000).await.expect("revoke"));
    assert!(
        !db.revoke_admin_token("nobody", 7_000)
            .await
            .expect("revoke")
    );
    assert_eq!(
        db.count_admin_sessions().await.expect("count"),
        0,
        "revoking ends its sessions"
    );
    db.insert_admin_session(&session(4, "t2", 10_000))
        .await
        .expect("s4");
    assert_eq!(db.delete_admin_sessions_of("t2").await.expect("delete"), 1);
    assert!(!db.delete_admin_session(&[4; 32]).await.expect("delete"));
    let ids: Vec<String> = db
        .list_admin_tokens()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, ["t1", "t2"]);
    // A session of an unknown token is refused by the foreign key.
    assert!(
        db.insert_admin_session(&session(5, "nobody", 10_000))
            .await
            .is_err()
    );
}

async fn admin_certificates_revoke_by_serial_or_name(db: Db) {
    let cert = |serial: &str, name: &str, created_at| AdminCertRow {
        serial: serial.into(),
        name: name.into(),
        created_at,
        not_after: 99_000,
        revoked_at: None,
        role: "viewer".into(),
    };
    db.insert_admin_cert(&cert("0a", "vera", 1))
        .await
        .expect("0a");
    db.insert_admin_cert(&cert("0b", "vera", 2))
        .await
        .expect("0b");
    db.insert_admin_cert(&cert("0c", "otto", 3))
        .await
        .expect("0c");
    let by_serial = db
        .revoke_admin_certs(AdminCertKey::Serial, "0c", 50)
        .await
        .expect("revoke");
    assert_eq!(by_serial.len(), 1);
    assert_eq!(by_serial[0].revoked_at, Some(50));
    let by_name = db
        .revoke_admin_certs(AdminCertKey::Name, "vera", 60)
        .await
        .expect("revoke");
    assert_eq!(
        by_name
            .iter()
            .map(|c| (c.serial.as_str(), c.revoked_at))
            .collect::<Vec<_>>(),
        [("0a", Some(60)), ("0b", Some(60))]
    );
    let again = db
        .revoke_admin_certs(AdminCertKey::Name, "vera", 70)
        .await
        .expect("revoke");
    assert!(
        again.iter().all(|c| c.revoked_at == Some(60)),
        "the first date is kept"
    );
    assert!(
        db.revoke_admin_certs(AdminCertKey::Name, "nobody", 70)
            .await
            .expect("revoke")
            .is_empty()
    );
    assert_eq!(
        db.get_admin_cert("0c").await.expect("get"),
        Some(AdminCertRow {
            revoked_at: Some(50),
            ..cert("0c", "otto", 3)
        })
    );
    assert_eq!(db.list_admin_certs().await.expect("list").len(), 3);
}

async fn person_sessions_live_list_and_purge(db: Db) {
    let person = |id: u8, expires_at| PersonSessionRow {
        id_hash: vec![id; 32],
        issuer: "https://idp.example".into(),
        subject: format!("sub-{id}"),
        name: "Vera Viewer".into(),
        role: "viewer".into(),
        created_at: i64::from(id),
        expires_at,
    };
    db.insert_person_session(&person(1, 5_000))
        .await
        .expect("p1");
    db.insert_person_session(&person(2, 9_000))
        .await
        .expect("p2");
    assert_eq!(
        db.live_person_session(&[1; 32], 4_000).await.expect("live"),
        Some(person(1, 5_000))
    );
    assert_eq!(
        db.live_person_session(&[1; 32], 5_000).await.expect("live"),
        None
    );
    let live: Vec<u8> = db
        .list_person_sessions(1_000)
        .await
        .expect("list")
        .iter()
        .map(|s| s.id_hash[0])
        .collect();
    assert_eq!(live, [1, 2]);
    assert_eq!(db.purge_person_sessions(6_000).await.expect("purge"), 1);
    assert!(db.delete_person_session(&[2; 32]).await.expect("delete"));
    assert!(!db.delete_person_session(&[2; 32]).await.expect("delete"));
    assert!(db.insert_person_session(&person(3, 1)).await.is_ok());
    assert!(
        db.insert_person_session(&person(3, 1)).await.is_err(),
        "one row per id"
    );
}

async fn one_leader_at_a_time_with_growing_epochs(db: Db) {
    assert_eq!(db.lease().await.expect("lease").epoch, 0);
    // Five candidates race for a free lease: one wins.
    let tries = (0..5).map(|i| {
        let db = db.clone();
        async move {
            db.acquire_lease(&format!("c{i}"), 1_000, 5_000)
                .await
                .expect("acquire")
        }
    });
    let won: Vec<i64> = futures::future::join_all(tries)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(won, [1]);
    let first = db.lease().await.expect("lease");
    let leader = first.holder.clone().expect("a holder");
    assert_eq!((first.epoch, first.expires_at), (1, 6_000));
    assert_eq!(
        db.acquire_lease("late", 5_999, 5_000)
            .await
            .expect("acquire"),
        None,
        "lease still runs"
    );
    assert!(
        db.renew_lease(&leader, 1, 5_000, 5_000)
            .await
            .expect("renew")
    );
    assert_eq!(
        db.acquire_lease("late", 9_999, 5_000)
            .await
            .expect("acquire"),
        None,
        "renewed to 10,000"
    );
    assert!(
        !db.renew_lease(&leader, 1, 10_000, 5_000)
            .await
            .expect("renew"),
        "a lapsed lease is not renewed"
    );
    assert_eq!(
        db.acquire_lease("late", 10_000, 5_000)
            .await
            .expect("acquire"),
        Some(2)
    );
    assert!(
        !db.renew_lease(&leader, 1, 10_001, 5_000)
            .await
            .expect("renew"),
        "taken over"
    );
    db.release_lease("late", 2, 10_001).await.expect("release");
    assert_eq!(
        db.acquire_lease(&leader, 10_002, 5_000)
            .await
            .expect("acquire"),
        Some(3),
        "released: free at once"
    );
    let log: Vec<(i64, String, i64, i64)> = db
        .epochs()
        .await
        .expect("epochs")
        .into_iter()
        .map(|e| (e.epoch, e.holder, e.acquired_at, e.expires_at))
        .collect();
    assert_eq!(
        log,
        [
            (1, leader.clone(), 1_000, 10_000),
            (2, "late".into(), 10_000, 10_001),
            (3, leader, 10_002, 15_002)
        ],
        "renewals move an epoch's end and a release ends it: the leases never overlap"
    );
}

async fn a_deposed_leaders_writes_are_fenced(db: Db) {
    let old = db
        .acquire_lease("old", 1_000, 1_000)
        .await
        .expect("acquire")
        .expect("old leads");
    let old_db = db.fenced(Fence {
        holder: "old".into(),
        epoch: old,
    });
    old_db
        .upsert_runner(&runner("r1", "busy", 1))
        .await
        .expect("the leader writes");
    old_db
        .insert_event(1, "k", "test", None, None, &serde_json::json!({}))
        .await
        .expect("event");
    // It pauses; its lease runs out and another replica takes over.
    let new = db
        .acquire_lease("new", 2_001, 1_000)
        .await
        .expect("acquire")
        .expect("new leads");
    let new_db = db.fenced(Fence {
        holder: "new".into(),
        epoch: new,
    });
    let stale = vec![
        RunnerWrite::Runner(Box::new(runner("r1", "exited", 1))),
        RunnerWrite::Runner(Box::new(runner("r2", "provisioning", 2))),
    ];
    assert!(matches!(
        old_db.write_runners(&stale).await,
        Err(DbError::Fenced { epoch: 1 })
    ));
    assert!(matches!(
        old_db
            .insert_event(2, "k", "test", None, None, &serde_json::json!({}))
            .await,
        Err(DbError::Fenced { .. })
    ));
    assert!(matches!(
        old_db.set_agent_state("a1", "lost", None).await,
        Err(DbError::Fenced { .. })
    ));
    assert!(matches!(
        old_db
            .flush_liveness(&[Liveness {
                id: "a1".into(),
                state: "lost".into(),
                last_seen: 1,
                load: None
            }])
            .await,
        Err(DbError::Fenced { .. })
    ));
    assert_eq!(
        db.get_runner("r1").await.expect("get").expect("r1").state,
        "busy",
        "nothing of it committed"
    );
    assert!(db.get_runner("r2").await.expect("get").is_none());
    assert_eq!(
        db.list_events(&EventFilter::default())
            .await
            .expect("events")
            .len(),
        1
    );
    new_db
        .write_runners(&stale)
        .await
        .expect("the new leader writes");
    assert_eq!(
        db.get_runner("r1").await.expect("get").expect("r1").state,
        "exited"
    );
    // An unfenced handle (CLI, followers' own bookkeeping) is not fenced.
    db.insert_event(3, "k", "cli", None, None, &serde_json::json!({}))
        .await
        .expect("unfenced");
}

async fn replicas_report_and_age_out(db: Db) {
    let replica = |id: &str, last_seen| db::ReplicaRow {
        id: id.into(),
        hostname: format!("host-{id}"),
        http_addr: "127.0.0.1:8080".into(),
        grpc_addr: "127.0.0.1:7443".into(),
        started_at: 100,
        last_seen,
    };
    db.report_replica(&replica("r1", 1_000)).await.expect("r1");
    db.report_replica(&replica("r2", 1_000)).await.expect("r2");
    db.report_replica(&replica("r1", 5_000))
        .await
        .expect("r1 again");
    let seen = db.replicas(2_000).await.expect("replicas");
    assert_eq!(seen, [replica("r1", 5_000)], "r2 aged out, r1 refreshed");
    assert_eq!(
        db.replicas(0).await.expect("replicas").len(),
        1,
        "aged-out rows are gone"
    );
}

async fn kept_webhooks_wait_bounded_and_are_taken_once(db: Db) {
    for i in 0..3u8 {
        assert!(
            db.inbox_webhook(&[b'{', i, b'}'], 1_000, 3)
                .await
                .expect("keep")
        );
    }
    assert!(
        !db.inbox_webhook(b"{}", 1_000, 3).await.expect("keep"),
        "the fourth is refused"
    );
    let epoch = db
        .acquire_lease("leader", 1_000, 5_000)
        .await
        .expect("lease")
        .expect("free");
    let leader = db.fenced(Fence {
        holder: "leader".into(),
        epoch,
    });
    assert_eq!(
        leader.take_inbox(2).await.expect("take"),
        [vec![b'{', 0, b'}'], vec![b'{', 1, b'}']]
    );
    // A deposed leader takes nothing, and nothing is lost by its try.
    let deposed = db.fenced(Fence {
        holder: "leader".into(),
        epoch: epoch - 1,
    });
    assert!(matches!(
        deposed.take_inbox(10).await,
        Err(DbError::Fenced { .. })
    ));
    assert_eq!(
        leader.take_inbox(10).await.expect("take"),
        [vec![b'{', 2, b'}']]
    );
    assert!(
        leader.take_inbox(10).await.expect("take").is_empty(),
        "each taken once"
    );
    assert!(
        db.inbox_webhook(b"{}", 1_000, 3).await.expect("keep"),
        "room again"
    );
}

// ---- migrate ----------------------------------------------------------

/// A store with a row in every table.
async fn populate(db: &Db) {
    for (holder, now) in [("first", 1_000), ("second", 100_000)] {
        db.acquire_lease(holder, now, 1_000)
            .await
            .expect("lease")
            .expect("free");
    }
    db.insert_token(&token("t1", 3, 10_000))
        .await
        .expect("token");
    assert_eq!(
        db.enroll_with_token("t1", 2_000, &agent("a1", "h1"))
            .await
            .expect("enroll"),
        TokenUse::Consumed
    );
    assert_eq!(
        db.enroll_with_token("t1", 2_000, &agent("a2", "h2"))
            .await
            .expect("enroll"),
        TokenUse::Consumed
    );
    db.update_inventory(
        "a1",
        "h1",
        "riscv64",
        "{}",
        &[GpuRow {
            uuid: "g0".into(),
            idx: 0,
            vendor: "amd".into(),
            name: "MI300".into(),
            memory_bytes: Some(192 << 30),
        }],
    )
    .await
    .expect("inventory");
    db.set_cordoned("a1", true).await.expect("cordon");
    let renewing = AgentCerts {
        current: "serial-a1".into(),
        pending: Some("p1".into()),
    };
    let current = AgentCerts {
        current: "serial-a1".into(),
        pending: None,
    };
    assert!(
        db.swap_agent_certs("a1", &current, &renewing, None)
            .await
            .expect("swap")
    );
    assert!(
        db.revoke_agent("a2", 3_000, "admin", "lost laptop")
            .await
            .expect("revoke")
    );
    let mut r = runner("r1", "exited", 4_000);
    r.gitlab_runner_id = Some(42);
    r.log_tail = Some(r#"["boom"]"#.into());
    db.write_runners(&[
        RunnerWrite::Runner(Box::new(r)),
        RunnerWrite::Event(event(4_000, "runner.exited", Some("a1"), Some("r1"))),
    ])
    .await
    .expect("runner");
    for i in 0..5 {
        db.insert_event(
            5_000 + i,
            "agent.drain",
            "token:ops",
            Some("a1"),
            None,
            &serde_json::json!({"i": i}),
        )
        .await
        .expect("event");
    }
    db.insert_admin_token(&admin_token("at1", None))
        .await
        .expect("admin token");
    db.insert_admin_session(&AdminSessionRow {
        id_hash: vec![9; 32],
        token_id: "at1".into(),
        created_at: 1,
        expires_at: 99_000,
    })
    .await
    .expect("session");
    db.insert_admin_cert(&AdminCertRow {
        serial: "0f".into(),
        name: "ops".into(),
        created_at: 1,
        not_after: 99_000,
        revoked_at: Some(7),
        role: "admin".into(),
    })
    .await
    .expect("cert");
    db.insert_person_session(&PersonSessionRow {
        id_hash: vec![8; 32],
        issuer: "https://idp".into(),
        subject: "vera".into(),
        name: "Vera".into(),
        role: "viewer".into(),
        created_at: 1,
        expires_at: 99_000,
    })
    .await
    .expect("person");
}

/// Everything a store holds, as text to compare.
async fn snapshot(db: &Db) -> String {
    let mut out = String::new();
    for a in db.list_agents().await.expect("agents") {
        out += &format!(
            "{a:?}\n{:?}\n{:?}\n",
            db.list_gpus(&a.id).await.expect("gpus"),
            db.agent_certs(&a.id).await.expect("certs")
        );
    }
    out += &format!("{:?}\n", db.list_tokens().await.expect("tokens"));
    out += &format!("{:?}\n", db.revoked_agent_ids().await.expect("revoked"));
    out += &format!("{:?}\n", db.list_runners(1000).await.expect("runners"));
    out += &format!(
        "{:?}\n",
        db.list_events(&EventFilter {
            limit: 1000,
            ..Default::default()
        })
        .await
        .expect("events")
    );
    out += &format!(
        "{:?}\n",
        db.list_admin_tokens().await.expect("admin tokens")
    );
    out += &format!(
        "{:?}\n",
        db.list_admin_sessions(0).await.expect("admin sessions")
    );
    out += &format!("{:?}\n", db.list_admin_certs().await.expect("admin certs"));
    out += &format!(
        "{:?}\n",
        db.list_person_sessions(0).await.expect("person sessions")
    );
    out
}

async fn moves_whole_and_ids_continue(from: &Db, to: &Db) {
    let before = snapshot(from).await;
    let moved = db::migrate::copy_all(from, to).await.expect("migrate");
    assert_eq!(snapshot(to).await, before);
    let rows: std::collections::BTreeMap<_, _> = moved.into_iter().collect();
    assert_eq!(
        (
            rows["agents"],
            rows["gpus"],
            rows["events"],
            rows["runners"]
        ),
        (2, 1, 6, 1)
    );
    assert!(
        rows.values().all(|n| *n > 0),
        "every table has a row: {rows:?}"
    );
    // The next event gets the next id, not one already taken.
    let last = from
        .list_events(&EventFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("last")[0]
        .id;
    to.insert_event(9_000, "k", "test", None, None, &serde_json::json!({}))
        .await
        .expect("event");
    let next = to
        .list_events(&EventFilter {
            limit: 1,
            ..Default::default()
        })
        .await
        .expect("next")[0]
        .id;
    assert_eq!(next, last + 1);
}

#[tokio::test]
async fn migrate_moves_everything_between_sqlite_files() {
    let (_a, from) = sqlite().await;
    let (_b, to) = sqlite().await;
    populate(&from).await;
    moves_whole_and_ids_continue(&from, &to).await;
}

#[tokio::test]
async fn migrate_moves_everything_from_sqlite_to_postgres_and_back() {
    let Some(pg) = Postgres::start() else { return };
    let (_a, sqlite_src) = sqlite().await;
    populate(&sqlite_src).await;
    let on_pg = postgres(&pg, "moved").await;
    moves_whole_and_ids_continue(&sqlite_src, &on_pg).await;
    // And back, for a rollback.
    let (_b, back) = sqlite().await;
    let moved = db::migrate::copy_all(&on_pg, &back)
        .await
        .expect("migrate back");
    assert_eq!(
        moved.iter().find(|(t, _)| *t == "events").map(|(_, n)| *n),
        Some(7)
    );
    assert_eq!(snapshot(&back).await, snapshot(&on_pg).await);
}

async fn refuses_a_target_with_state(from: &Db, to: &Db) {
    to.insert_admin_token(&admin_token("already-here", None))
        .await
        .expect("token");
    let before = snapshot(to).await;
    let e = db::migrate::copy_all(from, to)
        .await
        .expect_err("must refuse");
    assert!(e.to_string().contains("admin_tokens: 1 rows"), "{e}");
    assert_eq!(snapshot(to).await, before, "nothing written");
}

#[tokio::test]
async fn migrate_refuses_a_target_that_holds_state_and_writes_nothing() {
    let (_a, from) = sqlite().await;
    populate(&from).await;
    let (_b, to) = sqlite().await;
    refuses_a_target_with_state(&from, &to).await;
    if let Some(pg) = Postgres::start() {
        refuses_a_target_with_state(&from, &postgres(&pg, "busy").await).await;
    }
}

#[tokio::test]
async fn an_unreachable_postgres_is_named_without_its_password() {
    let port = autogit_tests::harness::free_port("127.0.0.1");
    let url = DatabaseUrl::parse(&format!(
        "postgres://autogit:hunter2@127.0.0.1:{port}/autogit"
    ))
    .expect("url");
    let e = Db::connect(&url).await.expect_err("nothing listens");
    let msg = format!("{e} {e:?}");
    assert!(!msg.contains("hunter2"), "{msg}");
    assert!(
        msg.contains(&format!("postgres://autogit:***@127.0.0.1:{port}/autogit")),
        "{msg}"
    );
}
