//! Admin client certificates can be listed and revoked: a real coordinator
//! with `http_tls = true`, real TLS over loopback, certificates from
//! `admin-cert create`. A revoked certificate gets 401 at its next request,
//! also on a connection opened before the revocation; a certificate the
//! coordinator has no record of (issued before certificates were recorded)
//! gets 401 too.

use std::path::Path;
use std::time::Duration;

use autogit_certs::ClusterCa;
use autogit_tests::harness::Coordinator;
use serde_json::Value;

fn https_coordinator() -> Coordinator {
    let mut c = Coordinator::init("http_tls = true\n").unwrap();
    c.start().unwrap();
    c
}

fn create(c: &Coordinator, name: &str, out: &Path) -> String {
    let stdout = c
        .cli_ok(&[
            "admin-cert",
            "create",
            "--name",
            name,
            "--out",
            out.to_str().unwrap(),
        ])
        .unwrap();
    // "admin certificate <serial> for "<name>" in <dir> (valid until …)"
    stdout.split_whitespace().nth(2).unwrap().to_string()
}

/// An HTTPS client presenting the certificate in `dir` (as written by
/// `admin-cert create`); it keeps its connections open between requests.
fn client(dir: &Path, name: &str) -> reqwest::Client {
    let mut pem = std::fs::read(dir.join(format!("{name}.pem"))).unwrap();
    pem.extend(std::fs::read(dir.join(format!("{name}-key.pem"))).unwrap());
    reqwest::Client::builder()
        .use_rustls_tls()
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(dir.join("ca.pem")).unwrap()).unwrap(),
        )
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get(client: &reqwest::Client, c: &Coordinator) -> (u16, String) {
    let r = client
        .get(format!("https://{}/api/v1/agents", c.http.unwrap()))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn certs(c: &Coordinator) -> Vec<Value> {
    serde_json::from_str(
        &c.cli_ok(&["admin-cert", "list", "--output", "json"])
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_revoked_admin_certificate_gets_401_and_others_keep_working() {
    let c = https_coordinator();
    let dir = tempfile::tempdir().unwrap();
    let (alice_dir, bob_dir) = (dir.path().join("alice"), dir.path().join("bob"));
    let alice_serial = create(&c, "alice", &alice_dir);
    let bob_serial = create(&c, "bob", &bob_dir);
    let (alice, bob) = (client(&alice_dir, "alice"), client(&bob_dir, "bob"));
    assert_eq!(get(&alice, &c).await.0, 200);
    assert_eq!(get(&bob, &c).await.0, 200);

    let listed = certs(&c);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().any(|r| r["serial"] == alice_serial.as_str()
        && r["name"] == "alice"
        && r["revoked"] == false));

    // By name; alice's open connection is refused at its next request.
    let out = c.cli_ok(&["admin-cert", "revoke", "alice"]).unwrap();
    assert!(out.contains(&alice_serial), "{out}");
    let (status, body) = get(&alice, &c).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("revoked"), "the answer says why: {body}");
    assert_eq!(
        get(&client(&alice_dir, "alice"), &c).await.0,
        401,
        "on a new connection too"
    );
    assert_eq!(get(&bob, &c).await.0, 200, "only alice is revoked");

    // By serial, as `admin-cert list` shows it (case and colons do not matter).
    c.cli_ok(&["admin-cert", "revoke", &bob_serial.to_uppercase()])
        .unwrap();
    assert_eq!(get(&bob, &c).await.0, 401);
    assert!(certs(&c).iter().all(|r| r["revoked"] == true));

    let events: Value =
        serde_json::from_str(&c.cli_ok(&["events", "--output", "json"]).unwrap()).unwrap();
    let revoked: Vec<&Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "admin_cert.revoked")
        .collect();
    assert_eq!(revoked.len(), 2, "{events}");
    assert!(
        c.logs().contains("refused an admin client certificate"),
        "{}",
        c.logs()
    );

    let unknown = c.cli(&["admin-cert", "revoke", "nobody"]).unwrap();
    assert_eq!(
        unknown.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
}

#[tokio::test]
async fn an_admin_certificate_without_a_record_is_refused() {
    let c = https_coordinator();
    // Signed by the cluster CA as `admin-cert create` did before certificates
    // were recorded: valid for TLS, unknown to the coordinator.
    let ca = ClusterCa::load(
        &std::fs::read_to_string(c.dir.join("ca.pem")).unwrap(),
        &std::fs::read_to_string(c.dir.join("ca-key.pem")).unwrap(),
    )
    .unwrap();
    let keys = autogit_certs::csr::generate("old").unwrap();
    let cert = ca
        .sign_admin_csr(&keys.csr_pem, "old", Duration::from_secs(600))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("old.pem"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("old-key.pem"), &keys.key_pem).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
    let (status, body) = get(&client(dir.path(), "old"), &c).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("admin-cert create"),
        "the answer says how to get a working one: {body}"
    );
}
