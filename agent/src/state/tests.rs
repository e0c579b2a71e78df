//! The state dir under every crash point: each intermediate state is written
//! directly and must load into a working identity or a clear error.

use std::time::Duration;

use autogit_certs::{AgentId, ClusterCa, csr};

use super::*;

/// A CA, an enrolled state dir, and certificates for its agent.
struct Fixture {
    ca: ClusterCa,
    agent: AgentId,
    state: StateDir,
    _tmp: tempfile::TempDir,
}

/// A key and a certificate for it.
#[derive(Clone)]
struct Pair {
    key: String,
    cert: String,
}

impl Fixture {
    fn new() -> Self {
        let ca = ClusterCa::generate("t").unwrap();
        let agent = AgentId::new_random();
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path().join("st"));
        Fixture {
            ca,
            agent,
            state,
            _tmp: tmp,
        }
    }

    /// A pair valid for `minutes` (later pairs expire later: they are newer).
    fn pair(&self, minutes: u64) -> Pair {
        self.pair_for(self.agent, minutes)
    }

    fn pair_for(&self, agent: AgentId, minutes: u64) -> Pair {
        let k = csr::generate("h").unwrap();
        let c = self
            .ca
            .sign_agent_csr(&k.csr_pem, agent, Duration::from_secs(minutes * 60))
            .unwrap();
        Pair {
            key: k.key_pem,
            cert: c.cert_pem,
        }
    }

    fn enroll(&self, p: &Pair) {
        self.state
            .save(&Identity {
                agent: AgentFile {
                    agent_id: self.agent.to_string(),
                    coordinator: "127.0.0.1:1".into(),
                },
                ca_pem: self.ca.cert_pem().into(),
                cert_pem: p.cert.clone(),
                key_pem: p.key.clone(),
                received_at: OffsetDateTime::now_utc(),
            })
            .unwrap();
    }

    /// Enrolled, then rewritten in the layout of older releases.
    fn enroll_legacy(&self, p: &Pair) {
        self.enroll(p);
        fs::remove_file(self.file(IDENTITY_FILE)).unwrap();
        self.write(LEGACY_KEY_FILE, &p.key);
        self.write(LEGACY_CERT_FILE, &p.cert);
    }

    fn file(&self, f: &str) -> PathBuf {
        self.state.path().join(f)
    }

    fn write(&self, f: &str, text: &str) {
        fs::write(self.file(f), text).unwrap();
    }

    fn identity_file(&self, p: &Pair) -> String {
        render_identity(&p.key, &p.cert, OffsetDateTime::now_utc())
    }

    /// The files in the state dir, sorted.
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.state.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// The identity works: rustls accepts it as a client identity (it checks
/// that key and certificate belong together).
fn assert_works(id: &Identity, want: &Pair) {
    autogit_certs::tls::agent_client_config(&id.ca_pem, &id.cert_pem, &id.key_pem)
        .expect("a usable client identity");
    assert_eq!(
        id.cert_pem.trim(),
        want.cert.trim(),
        "the expected certificate"
    );
}

/// Load, then repair: both give `want`, and afterwards the dir holds only
/// `identity.pem` (0600) and the agent's other files.
fn assert_recovers_to(fx: &Fixture, want: &Pair) {
    assert_works(&fx.state.load().unwrap(), want);
    assert_works(&fx.state.repair().unwrap(), want);
    assert_eq!(
        fx.files(),
        [AGENT_FILE, CA_FILE, IDENTITY_FILE],
        "leftovers removed"
    );
    let mode = fs::metadata(fx.file(IDENTITY_FILE))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert_works(&fx.state.load().unwrap(), want);
}

fn assert_clear_error(fx: &Fixture) {
    let err = fx.state.load().unwrap_err();
    assert!(matches!(err, StateError::NoUsableIdentity { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("autogit-agent join --force --coordinator 127.0.0.1:1"),
        "{msg}"
    );
    assert!(msg.contains(&fx.agent.to_string()), "{msg}");
    assert!(
        !msg.contains("PRIVATE KEY"),
        "no key material in errors: {msg}"
    );
    assert!(
        fx.state.repair().is_err(),
        "repair does not invent an identity"
    );
}

#[test]
fn saves_with_private_modes_and_loads() {
    let fx = Fixture::new();
    assert!(matches!(fx.state.load(), Err(StateError::NotEnrolled(_))));
    let first = fx.pair(60);
    fx.enroll(&first);
    assert_eq!(fx.files(), [AGENT_FILE, CA_FILE, IDENTITY_FILE]);
    let mode = fs::metadata(fx.file(IDENTITY_FILE))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let loaded = fx.state.load().unwrap();
    assert_works(&loaded, &first);
    assert!(
        !format!("{loaded:?}").contains("PRIVATE KEY"),
        "Debug hides the key"
    );
    let second = fx.pair(120);
    fx.state.save_renewed(&second.cert, &second.key).unwrap();
    assert_recovers_to(&fx, &second);
    let mode = fs::metadata(fx.file(IDENTITY_FILE))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn repair_makes_an_open_state_dir_and_key_files_private() {
    let fx = Fixture::new();
    let p = fx.pair(60);
    fx.enroll(&p);
    let set = |path: &Path, mode: u32| {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap()
    };
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o7777;
    // What an older release, a copy or a umask may leave.
    set(fx.state.path(), 0o755);
    set(&fx.file(IDENTITY_FILE), 0o644);
    set(&fx.file(CA_FILE), 0o644);
    let id = fx.state.repair().unwrap();
    assert_works(&id, &p);
    assert_eq!(mode(fx.state.path()), 0o700);
    assert_eq!(mode(&fx.file(IDENTITY_FILE)), 0o600);
    assert_eq!(
        mode(&fx.file(CA_FILE)),
        0o644,
        "the CA certificate is public"
    );
    assert!(
        fx.state.make_private().unwrap().is_empty(),
        "nothing left to tighten"
    );
}

#[test]
fn records_the_local_receipt_time() {
    let fx = Fixture::new();
    fx.enroll(&fx.pair(60));
    let before = OffsetDateTime::now_utc();
    let p = fx.pair(60);
    fx.state.save_renewed(&p.cert, &p.key).unwrap();
    let got = fx.state.load().unwrap().received_at;
    assert!(
        got >= before - time::Duration::milliseconds(1) && got <= OffsetDateTime::now_utc(),
        "{got}"
    );
}

// ---- the layout of older releases and every crash point of its renewal ----

#[test]
fn legacy_layout_is_migrated() {
    let fx = Fixture::new();
    let p = fx.pair(60);
    fx.enroll_legacy(&p);
    assert_recovers_to(&fx, &p);
}

#[test]
fn legacy_crash_while_writing_the_new_key_keeps_the_old_pair() {
    let fx = Fixture::new();
    let old = fx.pair(60);
    fx.enroll_legacy(&old);
    fx.write(
        "key.pem.tmp",
        "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49",
    );
    assert_recovers_to(&fx, &old);
}

#[test]
fn legacy_crash_with_a_half_written_new_key_keeps_the_old_pair() {
    let fx = Fixture::new();
    let old = fx.pair(60);
    fx.enroll_legacy(&old);
    fx.write("key.pem.new", &fx.pair(120).key[..40]);
    assert_recovers_to(&fx, &old);
}

#[test]
fn legacy_crash_before_the_renames_takes_the_complete_new_pair() {
    let fx = Fixture::new();
    fx.enroll_legacy(&fx.pair(60));
    let new = fx.pair(120);
    fx.write("key.pem.new", &new.key);
    fx.write("cert.pem.new", &new.cert);
    assert_recovers_to(&fx, &new);
}

#[test]
fn legacy_crash_between_the_renames_takes_the_new_pair() {
    // Fault 5: key.pem is new, cert.pem old, the new cert in cert.pem.new.
    let fx = Fixture::new();
    let old = fx.pair(60);
    fx.enroll_legacy(&old);
    let new = fx.pair(120);
    fx.write(LEGACY_KEY_FILE, &new.key);
    fx.write("cert.pem.new", &new.cert);
    assert_recovers_to(&fx, &new);
}

#[test]
fn legacy_crash_with_a_half_written_new_cert_keeps_the_old_pair() {
    let fx = Fixture::new();
    let old = fx.pair(60);
    fx.enroll_legacy(&old);
    let new = fx.pair(120);
    fx.write("key.pem.new", &new.key);
    fx.write("cert.pem.new", &new.cert[..new.cert.len() / 2]);
    assert_recovers_to(&fx, &old);
}

#[test]
fn legacy_key_that_does_not_match_its_certificate_is_a_clear_error() {
    let fx = Fixture::new();
    let old = fx.pair(60);
    fx.enroll_legacy(&old);
    fx.write(LEGACY_KEY_FILE, &fx.pair(60).key);
    assert_clear_error(&fx);
    let msg = fx.state.load().unwrap_err().to_string();
    assert!(msg.contains("does not belong to the certificate"), "{msg}");
}

// ---- the current layout ----

#[test]
fn crash_while_writing_identity_new_keeps_the_old_pair() {
    for cut in [0, 10, 200, 400] {
        let fx = Fixture::new();
        let old = fx.pair(60);
        fx.enroll(&old);
        let text = fx.identity_file(&fx.pair(120));
        fx.write(IDENTITY_NEW, &text[..cut.min(text.len())]);
        assert_recovers_to(&fx, &old);
    }
}

#[test]
fn complete_identity_new_before_its_rename_wins() {
    let fx = Fixture::new();
    fx.enroll(&fx.pair(60));
    let new = fx.pair(120);
    fx.write(IDENTITY_NEW, &fx.identity_file(&new));
    assert_recovers_to(&fx, &new);
}

#[test]
fn identity_new_with_a_key_of_another_pair_is_ignored() {
    let fx = Fixture::new();
    let old = fx.pair(60);
    fx.enroll(&old);
    let (a, b) = (fx.pair(120), fx.pair(120));
    fx.write(
        IDENTITY_NEW,
        &fx.identity_file(&Pair {
            key: a.key,
            cert: b.cert,
        }),
    );
    assert_recovers_to(&fx, &old);
}

#[test]
fn certificate_of_another_agent_is_refused() {
    let fx = Fixture::new();
    let old = fx.pair(60);
    fx.enroll(&old);
    fx.write(
        IDENTITY_NEW,
        &fx.identity_file(&fx.pair_for(AgentId::new_random(), 120)),
    );
    assert_recovers_to(&fx, &old);
    fx.write(
        IDENTITY_FILE,
        &fx.identity_file(&fx.pair_for(AgentId::new_random(), 120)),
    );
    assert_clear_error(&fx);
    assert!(
        fx.state
            .load()
            .unwrap_err()
            .to_string()
            .contains("belongs to agent")
    );
}

#[test]
fn corrupt_identity_falls_back_to_a_leftover_legacy_pair() {
    // A crash while migrating: identity.pem half written, key.pem and
    // cert.pem not removed yet.
    let fx = Fixture::new();
    let p = fx.pair(60);
    fx.enroll_legacy(&p);
    fx.write(IDENTITY_FILE, &fx.identity_file(&p)[..100]);
    assert_recovers_to(&fx, &p);
}

#[test]
fn empty_or_missing_identity_is_a_clear_error() {
    let fx = Fixture::new();
    fx.enroll(&fx.pair(60));
    fx.write(IDENTITY_FILE, "");
    assert_clear_error(&fx);
    fs::remove_file(fx.file(IDENTITY_FILE)).unwrap();
    assert_clear_error(&fx);
}

#[test]
fn unreadable_identity_is_a_clear_error() {
    let fx = Fixture::new();
    fx.enroll(&fx.pair(60));
    fs::remove_file(fx.file(IDENTITY_FILE)).unwrap();
    fs::create_dir(fx.file(IDENTITY_FILE)).unwrap(); // reading a directory fails
    assert_clear_error(&fx);
}

#[test]
fn readers_never_see_a_mixed_pair_while_renewals_run() {
    // A session reading the state dir while the renewal replaces it must
    // always get a pair that belongs together.
    let fx = Fixture::new();
    fx.enroll(&fx.pair(60));
    let pairs: Vec<Pair> = (0..4).map(|i| fx.pair(61 + i)).collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut loads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = fx.state.load().expect("load during renewal");
                assert!(
                    autogit_certs::identity::key_matches_cert(&id.cert_pem, &id.key_pem).unwrap()
                );
                loads += 1;
            }
            loads
        });
        for i in 0..200 {
            let p = &pairs[i % pairs.len()];
            fx.state.save_renewed(&p.cert, &p.key).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    });
}
