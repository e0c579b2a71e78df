//! Certificate renewal over mTLS, at about two thirds of the certificate's
//! lifetime (±10% jitter so a fleet enrolled together does not renew
//! together). A fresh key is generated for every renewal.
//!
//! Timing never compares this host's clock with the certificate's dates
//! (they are on the coordinator's clock, which may differ by hours). It uses
//! the lifetime the coordinator gave (`notAfter - notBefore`, both on its
//! clock) and the local time the certificate was received (stored with it
//! in `identity.pem`; within one process the monotonic clock measures the
//! time since). [`renew_in`] is that rule as a pure function. Whatever the
//! clocks say, attempts are at least [`min_interval`] apart, and failures
//! back off.
//!
//! Once the new pair is stored, the agent confirms it with
//! `Fleet.ConfirmCertificate`, made with the new certificate: from then on
//! the coordinator refuses the replaced one, so a stolen old key is useless.
//! A failed confirmation is only logged; the next session or renewal with
//! the new certificate confirms it too.

use std::time::{Duration, Instant};

use autogit_certs::{CertInfo, csr};
use autogit_proto::v1 as pb;
use rand::Rng;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::state::StateDir;
use crate::transport;

/// Renew at this fraction of the lifetime, before jitter.
const RENEW_AT: f64 = 2.0 / 3.0;
/// Jitter: ±this fraction of the renewal point.
const JITTER: f64 = 0.1;

/// How long to wait, from `now`, before renewing a certificate with
/// lifetime `life` that this host received at `received`. `received` and
/// `now` are on this host's clock; `life` comes from the certificate alone.
/// A `now` before `received` (the clock went back) counts as no time passed.
pub fn renew_in(
    life: Duration,
    received: OffsetDateTime,
    now: OffsetDateTime,
    jitter: f64,
) -> Duration {
    let at = life.mul_f64(RENEW_AT * (1.0 + jitter.clamp(-JITTER, JITTER)));
    let elapsed = Duration::try_from(now - received).unwrap_or(Duration::ZERO);
    at.saturating_sub(elapsed)
}

/// The floor on the time between two renewal attempts, whatever the clocks
/// say: a tenth of the lifetime, between 1 s and 5 min. A certificate is
/// renewed at most about once per 2/3 of its life, so this never delays a
/// due renewal; it only stops a loop.
pub fn min_interval(life: Duration) -> Duration {
    (life / 10).clamp(Duration::from_secs(1), Duration::from_secs(300))
}

/// A certificate this process received, and when by the monotonic clock.
struct Received {
    serial: String,
    at: Instant,
}

/// Renew once, now. Writes the new key and certificate to the state dir.
pub async fn renew_once(state: &StateDir, connect_timeout: Duration) -> anyhow::Result<CertInfo> {
    let id = state.load()?;
    let keys = csr::generate(&id.agent.agent_id)?;
    let tls = autogit_certs::tls::agent_client_config(&id.ca_pem, &id.cert_pem, &id.key_pem)?;
    let channel = transport::connect(&id.agent.coordinator, tls, connect_timeout).await?;
    let resp = pb::fleet_client::FleetClient::new(channel)
        .renew(pb::RenewRequest {
            csr_pem: keys.csr_pem,
        })
        .await
        .map_err(|s| anyhow::anyhow!("renewal refused: {}", s.message()))?
        .into_inner();
    let info = CertInfo::from_pem(&resp.certificate_pem)?;
    if info.agent_id().map(|a| a.to_string()) != Some(id.agent.agent_id.clone()) {
        anyhow::bail!("renewed certificate has a different identity");
    }
    if !autogit_certs::identity::key_matches_cert(&resp.certificate_pem, &keys.key_pem)? {
        anyhow::bail!("renewed certificate is not for the key this agent sent");
    }
    state.save_renewed(&resp.certificate_pem, &keys.key_pem)?;
    if let Err(e) = confirm(state, connect_timeout).await {
        tracing::warn!(error = %format!("{e:#}"), "could not confirm the renewed certificate yet; the next session or renewal confirms it");
    }
    Ok(info)
}

/// Tell the coordinator that the certificate on disk is in use, with a call
/// made with it; the certificate it replaced is refused from then on.
pub async fn confirm(state: &StateDir, connect_timeout: Duration) -> anyhow::Result<()> {
    let id = state.load()?;
    let tls = autogit_certs::tls::agent_client_config(&id.ca_pem, &id.cert_pem, &id.key_pem)?;
    let channel = transport::connect(&id.agent.coordinator, tls, connect_timeout).await?;
    pb::fleet_client::FleetClient::new(channel)
        .confirm_certificate(pb::ConfirmCertificateRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("confirmation refused: {}", s.message()))?;
    Ok(())
}

/// How long until the next attempt, for the identity now on disk.
fn next_wait(
    state: &StateDir,
    received: Option<&Received>,
    last_attempt: Option<Instant>,
) -> anyhow::Result<Duration> {
    let id = state.load()?;
    let info = CertInfo::from_pem(&id.cert_pem)?;
    let life = info.issued_lifetime();
    // Within this process, time since receipt is measured monotonically.
    let now = match received {
        Some(r) if r.serial == info.serial_hex => id.received_at + r.at.elapsed(),
        _ => OffsetDateTime::now_utc(),
    };
    let jitter = rand::rng().random_range(-JITTER..JITTER);
    let due = renew_in(life, id.received_at, now, jitter);
    let floor = last_attempt
        .map(|t| min_interval(life).saturating_sub(t.elapsed()))
        .unwrap_or_default();
    tracing::debug!(serial = %info.serial_hex, lifetime = ?life, renew_in = ?due.max(floor), "next certificate renewal");
    Ok(due.max(floor))
}

/// Keep the certificate fresh until `shutdown`.
pub async fn run(state: StateDir, connect_timeout: Duration, shutdown: CancellationToken) {
    let mut retry = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let mut received: Option<Received> = None;
    let mut last_attempt: Option<Instant> = None;
    loop {
        let wait = match next_wait(&state, received.as_ref(), last_attempt) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "read current certificate");
                retry.next_delay()
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        last_attempt = Some(Instant::now());
        match renew_once(&state, connect_timeout).await {
            Ok(info) => {
                retry.reset();
                tracing::info!(serial = %info.serial_hex, not_after = %info.not_after, "certificate renewed");
                received = Some(Received {
                    serial: info.serial_hex,
                    at: Instant::now(),
                });
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

    const HOUR: Duration = Duration::from_secs(3600);

    fn t0() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000)
    }

    #[test]
    fn renews_at_two_thirds_with_jitter() {
        let life = Duration::from_secs(300);
        assert_eq!(renew_in(life, t0(), t0(), 0.0), Duration::from_secs(200));
        assert_eq!(
            renew_in(life, t0(), t0() + time::Duration::seconds(150), 0.0),
            Duration::from_secs(50)
        );
        let j = renew_in(life, t0(), t0(), 0.1);
        assert!(
            j > Duration::from_secs(219) && j < Duration::from_secs(221),
            "{j:?}"
        );
        let j = renew_in(life, t0(), t0(), -0.1);
        assert!(
            j > Duration::from_secs(179) && j < Duration::from_secs(181),
            "{j:?}"
        );
        // Jitter beyond ±10% is clamped.
        assert_eq!(
            renew_in(life, t0(), t0(), 5.0),
            renew_in(life, t0(), t0(), 0.1)
        );
    }

    #[test]
    fn overdue_renews_now() {
        let life = Duration::from_secs(300);
        assert_eq!(
            renew_in(life, t0(), t0() + time::Duration::seconds(250), 0.0),
            Duration::ZERO
        );
        assert_eq!(
            renew_in(life, t0(), t0() + time::Duration::days(400), 0.0),
            Duration::ZERO
        );
    }

    /// Fault 8: the coordinator's clock sets the validity dates; this host's
    /// clock is `skew` off. The timing depends only on the lifetime and the
    /// local clock, so it is the same for every skew: 2/3 of 24 h.
    #[test]
    fn skewed_clocks_renew_at_two_thirds_of_the_life_from_receipt() {
        let coordinator_now = t0();
        let info = CertInfo {
            principal: None,
            serial_hex: "01".into(),
            not_before: coordinator_now
                - time::Duration::try_from(autogit_certs::ca::CLIENT_BACKDATE).unwrap(),
            not_after: coordinator_now + time::Duration::hours(24),
        };
        assert_eq!(info.issued_lifetime(), 24 * HOUR);
        for hours in [25, -25, -8, 24, 0] {
            let received = coordinator_now + time::Duration::hours(hours);
            let wait = renew_in(info.issued_lifetime(), received, received, 0.0);
            assert_eq!(wait, 16 * HOUR, "skew {hours} h");
            // An hour later on the same (skewed) clock, an hour less to wait.
            let later = renew_in(
                info.issued_lifetime(),
                received,
                received + time::Duration::hours(1),
                0.0,
            );
            assert_eq!(later, 15 * HOUR, "skew {hours} h");
        }
    }

    #[test]
    fn a_clock_that_went_back_after_receipt_waits_at_most_the_full_period() {
        let life = 24 * HOUR;
        let received = t0();
        for back in [1, 8, 25] {
            let wait = renew_in(life, received, received - time::Duration::hours(back), 0.0);
            assert_eq!(wait, 16 * HOUR, "clock went back {back} h");
        }
    }

    #[test]
    fn a_floor_between_attempts_whatever_the_clock() {
        assert_eq!(min_interval(Duration::from_secs(6)), Duration::from_secs(1));
        assert_eq!(
            min_interval(Duration::from_secs(90)),
            Duration::from_secs(9)
        );
        assert_eq!(min_interval(24 * HOUR), Duration::from_secs(300));
        // The floor never delays a renewal that is due on schedule.
        for life in [
            Duration::from_secs(5),
            Duration::from_secs(90),
            HOUR,
            24 * HOUR,
            90 * 24 * HOUR,
        ] {
            assert!(
                min_interval(life) < life.mul_f64(RENEW_AT * (1.0 - JITTER)),
                "{life:?}"
            );
        }
    }
}
