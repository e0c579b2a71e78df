//! Negative security tests at the TLS and RPC layer, against a real
//! coordinator process: no certificate, a foreign CA, an expired
//! certificate, a non-agent certificate.

use std::time::Duration;

use autogit_agent::transport;
use autogit_certs::{csr, tls, AgentId, ClusterCa};
use autogit_proto::v1 as pb;
use autogit_tests::harness::Coordinator;
use tonic::Code;

fn coordinator() -> (Coordinator, ClusterCa) {
    let mut c = Coordinator::init("").unwrap();
    c.start().unwrap();
    let ca = ClusterCa::load(
        &std::fs::read_to_string(c.dir.join("ca.pem")).unwrap(),
        &std::fs::read_to_string(c.dir.join("ca-key.pem")).unwrap(),
    )
    .unwrap();
    (c, ca)
}

fn hello() -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
            agent_version: "test".into(),
            inventory: Some(pb::Inventory { hostname: "intruder".into(), arch: "x86_64".into(), ..Default::default() }),
            containers: vec![],
        })),
    }
}

/// Session and Renew through `channel`; both must be refused.
async fn session_and_renew_refused(channel: tonic::transport::Channel) -> (Code, Code) {
    let mut fleet = pb::fleet_client::FleetClient::new(channel);
    let session = fleet.session(tokio_stream::iter(vec![hello()])).await;
    let renew = fleet.renew(pb::RenewRequest { csr_pem: csr::generate("x").unwrap().csr_pem }).await;
    let s = session.err().map(|s| s.code()).unwrap_or(Code::Ok);
    let r = renew.err().map(|s| s.code()).unwrap_or(Code::Ok);
    (s, r)
}

#[tokio::test]
async fn without_a_certificate_only_enrollment_is_reachable() {
    let (c, ca) = coordinator();
    let cfg = tls::enrollment_client_config(ca.fingerprint()).unwrap();
    let channel = transport::connect(&c.grpc_addr(), cfg, Duration::from_secs(5)).await.unwrap();
    // Enrollment answers (and rejects the bogus token on its merits).
    let mut enroll = pb::enrollment_client::EnrollmentClient::new(channel.clone());
    let err = enroll
        .enroll(pb::EnrollRequest { token: "bogus".into(), csr_pem: String::new(), hostname: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let (s, r) = session_and_renew_refused(channel).await;
    assert_eq!(s, Code::Unauthenticated);
    assert_eq!(r, Code::Unauthenticated);
}

#[tokio::test]
async fn a_certificate_from_a_foreign_ca_reaches_nothing() {
    let (c, ca) = coordinator();
    let foreign = ClusterCa::generate("foreign").unwrap();
    let keys = csr::generate("x").unwrap();
    let cert = foreign.sign_agent_csr(&keys.csr_pem, AgentId::new_random(), Duration::from_secs(600)).unwrap();
    // Trust the real CA (so the client side is happy) but present the foreign cert.
    let cfg = tls::agent_client_config(ca.cert_pem(), &cert.cert_pem, &keys.key_pem).unwrap();
    match transport::connect(&c.grpc_addr(), cfg, Duration::from_secs(5)).await {
        Err(_) => {} // refused during the handshake
        Ok(channel) => {
            let mut enroll = pb::enrollment_client::EnrollmentClient::new(channel.clone());
            let e = enroll.enroll(pb::EnrollRequest::default()).await.unwrap_err();
            assert_ne!(e.code(), Code::InvalidArgument, "enrollment must not be reached: {e:?}");
            let (s, r) = session_and_renew_refused(channel).await;
            assert!(s != Code::Ok && s != Code::Unauthenticated && s != Code::PermissionDenied, "{s:?}");
            assert!(r != Code::Ok && r != Code::Unauthenticated && r != Code::PermissionDenied, "{r:?}");
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(c.logs().contains("TLS handshake refused"), "{}", c.logs());
}

#[tokio::test]
async fn an_expired_certificate_from_our_ca_is_refused() {
    let (c, ca) = coordinator();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    let id = AgentId::new_random();
    params.subject_alt_names = vec![rcgen::SanType::URI(id.uri().try_into().unwrap())];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    params.not_after = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(c.dir.join("ca-key.pem")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca.cert_pem(), ca_key).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let cfg = tls::agent_client_config(ca.cert_pem(), &cert.pem(), &key.serialize_pem()).unwrap();
    if let Ok(channel) = transport::connect(&c.grpc_addr(), cfg, Duration::from_secs(5)).await {
        let (s, r) = session_and_renew_refused(channel).await;
        assert!(s != Code::Ok && s != Code::PermissionDenied, "{s:?}");
        assert!(r != Code::Ok, "{r:?}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = c.logs();
    assert!(logs.contains("TLS handshake refused") && logs.to_lowercase().contains("expired"), "{logs}");
}

#[tokio::test]
async fn a_valid_certificate_for_an_unknown_agent_is_refused() {
    let (c, ca) = coordinator();
    let keys = csr::generate("x").unwrap();
    let cert = ca.sign_agent_csr(&keys.csr_pem, AgentId::new_random(), Duration::from_secs(600)).unwrap();
    let cfg = tls::agent_client_config(ca.cert_pem(), &cert.cert_pem, &keys.key_pem).unwrap();
    let channel = transport::connect(&c.grpc_addr(), cfg, Duration::from_secs(5)).await.unwrap();
    let (s, r) = session_and_renew_refused(channel).await;
    assert_eq!(s, Code::PermissionDenied);
    assert_eq!(r, Code::PermissionDenied);
}

#[tokio::test]
async fn pinning_rejects_a_coordinator_with_another_ca() {
    let (c, _ca) = coordinator();
    let other = ClusterCa::generate("other").unwrap();
    let cfg = tls::enrollment_client_config(other.fingerprint()).unwrap();
    let err = transport::connect(&c.grpc_addr(), cfg, Duration::from_secs(5)).await.unwrap_err();
    assert!(matches!(err, transport::ConnectError::PinMismatch), "{err}");
}
