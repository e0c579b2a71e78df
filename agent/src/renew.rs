//! Certificate renewal over mTLS, at about two thirds of the certificate's
//! lifetime (±10% jitter so a fleet enrolled together does not renew
//! together). A fresh key is generated for every renewal.

use std::time::Duration;

use autogit_certs::{csr, CertInfo};
use autogit_proto::v1 as pb;
use rand::Rng;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::state::StateDir;
use crate::transport;

/// Never renew more often than this, whatever the certificate says.
const MIN_WAIT: Duration = Duration::from_secs(1);

/// When to renew a certificate valid until `not_after` that this host
/// received at `issued` (the certificate file's write time: `not_before` is
/// back-dated by the coordinator to absorb clock skew, so it would make the
/// lifetime look longer than it is), measured from `now`.
pub fn renew_in(issued: OffsetDateTime, not_after: OffsetDateTime, now: OffsetDateTime, jitter: f64) -> Duration {
    let life = (not_after - issued).as_seconds_f64().max(0.0);
    let at = issued + time::Duration::seconds_f64(life * (2.0 / 3.0) * (1.0 + jitter));
    let wait = (at - now).as_seconds_f64();
    Duration::from_secs_f64(wait.max(0.0)).max(MIN_WAIT)
}

/// When the current certificate was received: the later of its
/// `not_before` and the certificate file's modification time.
fn issued_at(state: &StateDir, info: &CertInfo) -> OffsetDateTime {
    let written = std::fs::metadata(state.path().join(crate::state::CERT_FILE))
        .and_then(|m| m.modified())
        .map(OffsetDateTime::from)
        .unwrap_or(info.not_before);
    written.max(info.not_before)
}

/// Renew once, now. Writes the new key and certificate to the state dir.
pub async fn renew_once(state: &StateDir, connect_timeout: Duration) -> anyhow::Result<CertInfo> {
    let id = state.load()?;
    let keys = csr::generate(&id.agent.agent_id)?;
    let tls = autogit_certs::tls::agent_client_config(&id.ca_pem, &id.cert_pem, &id.key_pem)?;
    let channel = transport::connect(&id.agent.coordinator, tls, connect_timeout).await?;
    let resp = pb::fleet_client::FleetClient::new(channel)
        .renew(pb::RenewRequest { csr_pem: keys.csr_pem })
        .await
        .map_err(|s| anyhow::anyhow!("renewal refused: {}", s.message()))?
        .into_inner();
    let info = CertInfo::from_pem(&resp.certificate_pem)?;
    if info.agent_id().map(|a| a.to_string()) != Some(id.agent.agent_id.clone()) {
        anyhow::bail!("renewed certificate has a different identity");
    }
    state.save_renewed(&resp.certificate_pem, &keys.key_pem)?;
    Ok(info)
}

/// Keep the certificate fresh until `shutdown`.
pub async fn run(state: StateDir, connect_timeout: Duration, shutdown: CancellationToken) {
    let mut retry = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let wait = match state.load().map_err(anyhow::Error::from).and_then(|id| Ok(CertInfo::from_pem(&id.cert_pem)?)) {
            Ok(info) => {
                let jitter = rand::rng().random_range(-0.1..0.1);
                let wait = renew_in(issued_at(&state, &info), info.not_after, OffsetDateTime::now_utc(), jitter);
                tracing::debug!(not_after = %info.not_after, renew_in = ?wait, "next certificate renewal");
                wait
            }
            Err(e) => {
                tracing::error!(error = %e, "read current certificate");
                retry.next_delay()
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match renew_once(&state, connect_timeout).await {
            Ok(info) => {
                retry.reset();
                tracing::info!(serial = %info.serial_hex, not_after = %info.not_after, "certificate renewed");
            }
            Err(e) => {
                let delay = retry.next_delay();
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, "certificate renewal failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_two_thirds() {
        let nb = OffsetDateTime::UNIX_EPOCH;
        let na = nb + time::Duration::seconds(300);
        assert_eq!(renew_in(nb, na, nb, 0.0), Duration::from_secs(200));
        assert_eq!(renew_in(nb, na, nb + time::Duration::seconds(250), 0.0), MIN_WAIT, "overdue: soon, never a hot loop");
        let j = renew_in(nb, na, nb, 0.1);
        assert!(j > Duration::from_secs(219) && j < Duration::from_secs(221));
    }

    /// Fault 8: the coordinator's clock sets the validity dates; the agent's
    /// clock is 24 h ahead (or 8 h behind). The certificate was received
    /// just now on the agent's clock; it must be renewed at about 2/3 of its
    /// 24 h life from now, not in a second (ahead) nor after expiry (behind).
    #[test]
    fn skewed_clock_renews_at_two_thirds_of_the_life_from_receipt() {
        let coordinator_now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(1000);
        let not_before = coordinator_now - time::Duration::seconds(60);
        let not_after = coordinator_now + time::Duration::hours(24);
        for skew in [time::Duration::hours(24), time::Duration::hours(-8)] {
            let received_local = coordinator_now + skew;
            let issued = received_local.max(not_before); // what `issued_at` computes
            let wait = renew_in(issued, not_after, received_local, 0.0);
            assert!(
                wait > Duration::from_secs(15 * 3600) && wait < Duration::from_secs(17 * 3600),
                "skew {skew}: renews in {wait:?}"
            );
        }
    }
}
