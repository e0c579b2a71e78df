//! Renewal is bound to the agent's current certificate, against a real
//! coordinator over real mTLS: once an agent has renewed (and confirmed the
//! new certificate, as the agent does right after storing it), the replaced
//! certificate can neither renew nor open a session, so a stolen old key is
//! useless. An answer lost before the agent stored it never locks the agent
//! out.

use std::time::Duration;

use autogit_agent::renew;
use autogit_agent::state::{Identity, StateDir};
use autogit_agent::transport;
use autogit_certs::{CertInfo, csr, tls};
use autogit_proto::v1 as pb;
use autogit_tests::harness::{Agent, Coordinator};
use serde_json::Value;
use tonic::Code;

const T: Duration = Duration::from_secs(5);

/// A started coordinator and a joined (not running) agent.
fn enrolled() -> (Coordinator, Agent) {
    let mut c = Coordinator::init("").unwrap();
    c.start().unwrap();
    let a = Agent::new("").unwrap();
    a.join_ok(&c.grpc_addr(), &c.token(&[]).unwrap()).unwrap();
    (c, a)
}

/// A Fleet client presenting `cert_pem` with `key_pem`.
async fn client(
    c: &Coordinator,
    id: &Identity,
    cert_pem: &str,
    key_pem: &str,
) -> pb::fleet_client::FleetClient<tonic::transport::Channel> {
    let cfg = tls::agent_client_config(&id.ca_pem, cert_pem, key_pem).unwrap();
    pb::fleet_client::FleetClient::new(transport::connect(&c.grpc_addr(), cfg, T).await.unwrap())
}

/// Renew with `cert_pem`/`key_pem`: the new certificate and its key, or the
/// refusal. Nothing is stored (as if the answer were lost).
async fn renew_with(
    c: &Coordinator,
    id: &Identity,
    cert_pem: &str,
    key_pem: &str,
) -> Result<(String, String), tonic::Status> {
    let keys = csr::generate(&id.agent.agent_id).unwrap();
    let resp = client(c, id, cert_pem, key_pem)
        .await
        .renew(pb::RenewRequest {
            csr_pem: keys.csr_pem,
        })
        .await?;
    Ok((resp.into_inner().certificate_pem, keys.key_pem))
}

async fn session_with(c: &Coordinator, id: &Identity, cert_pem: &str, key_pem: &str) -> Code {
    let hello = pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
            agent_version: "test".into(),
            inventory: Some(pb::Inventory {
                hostname: "h".into(),
                arch: "x86_64".into(),
                ..Default::default()
            }),
            containers: vec![],
        })),
    };
    match client(c, id, cert_pem, key_pem)
        .await
        .session(tokio_stream::iter(vec![hello]))
        .await
    {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

async fn confirm_with(c: &Coordinator, id: &Identity, cert_pem: &str, key_pem: &str) -> Code {
    match client(c, id, cert_pem, key_pem)
        .await
        .confirm_certificate(pb::ConfirmCertificateRequest {})
        .await
    {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

fn serial(cert_pem: &str) -> String {
    CertInfo::from_pem(cert_pem).unwrap().serial_hex
}

fn events(c: &Coordinator, kind: &str) -> Vec<Value> {
    let page: Value = serde_json::from_str(
        &c.cli_ok(&["events", "--output", "json", "--limit", "200"])
            .unwrap(),
    )
    .unwrap();
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_replaced_certificate_can_neither_renew_nor_open_a_session() {
    let (c, a) = enrolled();
    let state = StateDir::new(&a.state_dir);
    let old = state.load().unwrap();
    // What the agent does at 2/3 of the life: renew, store, confirm.
    renew::renew_once(&state, T).await.unwrap();
    let new = state.load().unwrap();
    assert_ne!(serial(&new.cert_pem), serial(&old.cert_pem));

    let refused = renew_with(&c, &old, &old.cert_pem, &old.key_pem)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("replaced"),
        "the refusal says why: {}",
        refused.message()
    );
    assert_eq!(
        session_with(&c, &old, &old.cert_pem, &old.key_pem).await,
        Code::PermissionDenied
    );
    let audited = events(&c, "agent.cert_refused");
    assert!(
        audited
            .iter()
            .any(|e| e.to_string().contains(&serial(&old.cert_pem))),
        "the refusal is audited with the old serial: {audited:?}"
    );

    // The current certificate still renews and opens sessions.
    assert_eq!(
        session_with(&c, &new, &new.cert_pem, &new.key_pem).await,
        Code::Ok
    );
    renew_with(&c, &new, &new.cert_pem, &new.key_pem)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_lost_renewal_answer_never_locks_the_agent_out() {
    let (c, a) = enrolled();
    let old = StateDir::new(&a.state_dir).load().unwrap();
    // The answer is lost twice (never stored, never confirmed): the old
    // certificate is still the one the agent holds, so it still renews.
    let (lost, lost_key) = renew_with(&c, &old, &old.cert_pem, &old.key_pem)
        .await
        .unwrap();
    let (got, got_key) = renew_with(&c, &old, &old.cert_pem, &old.key_pem)
        .await
        .unwrap();
    assert_eq!(
        session_with(&c, &old, &old.cert_pem, &old.key_pem).await,
        Code::Ok
    );
    // The last one issued is the one that counts; using it retires the old
    // certificate and the one whose answer was lost.
    assert_eq!(confirm_with(&c, &old, &got, &got_key).await, Code::Ok);
    assert_eq!(
        confirm_with(&c, &old, &got, &got_key).await,
        Code::Ok,
        "idempotent"
    );
    assert_eq!(
        confirm_with(&c, &old, &lost, &lost_key).await,
        Code::PermissionDenied
    );
    assert_eq!(
        renew_with(&c, &old, &old.cert_pem, &old.key_pem)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    renew_with(&c, &old, &got, &got_key).await.unwrap();
}
