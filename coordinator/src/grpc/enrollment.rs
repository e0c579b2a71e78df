//! `Enrollment.Enroll`: thin adapter over [`crate::enroll::Enroller`].
//!
//! Attempts are rate-limited per peer IP (IPv6: per /64) with a token bucket
//! (`limits.enroll_per_ip_per_minute`, `limits.enroll_per_ip_burst`) before
//! any token is looked at; over the limit the answer is `RESOURCE_EXHAUSTED`.
//! Refusals are logged once per peer per `limits.refusal_log_interval`, with
//! the hostname escaped and capped ([`crate::edge::wire`]).

use std::net::IpAddr;

use autogit_proto::v1 as pb;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::config::LimitsConfig;
use crate::edge::rate::{peer_key, refill_interval};
use crate::edge::{KeyedBuckets, RefusalLog, wire};
use crate::enroll::{EnrollError, Enroller};

/// Peers tracked by the rate limit and the refusal log at most.
const MAX_PEERS: usize = 65_536;

pub struct EnrollmentService {
    enroller: Enroller,
    attempts: KeyedBuckets<IpAddr>,
    per_minute: u32,
    refusals: RefusalLog<IpAddr>,
}

impl EnrollmentService {
    pub fn new(enroller: Enroller, limits: &LimitsConfig) -> Self {
        EnrollmentService {
            enroller,
            attempts: KeyedBuckets::new(
                limits.enroll_per_ip_per_minute,
                limits.enroll_per_ip_burst,
                MAX_PEERS,
            ),
            per_minute: limits.enroll_per_ip_per_minute,
            refusals: RefusalLog::new(limits.refusal_log_interval, MAX_PEERS),
        }
    }
}

impl From<EnrollError> for Status {
    fn from(e: EnrollError) -> Self {
        let msg = e.to_string();
        match e {
            EnrollError::MalformedToken(_) | EnrollError::BadCsr(_) => {
                Status::invalid_argument(msg)
            }
            EnrollError::WrongCluster => Status::failed_precondition(msg),
            EnrollError::InvalidToken => Status::unauthenticated(msg),
            EnrollError::Expired
            | EnrollError::UsedUp
            | EnrollError::Revoked
            | EnrollError::Refused(_)
            | EnrollError::CertReplaced { .. } => Status::permission_denied(msg),
            EnrollError::Contended => Status::aborted(msg),
            EnrollError::Internal(_) => Status::internal("internal error"),
        }
    }
}

#[tonic::async_trait]
impl pb::enrollment_server::Enrollment for EnrollmentService {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let peer = req.remote_addr();
        // Without an address (never over TCP) all such callers share one bucket.
        let key = peer.map_or(IpAddr::from([0, 0, 0, 0]), |a| peer_key(a.ip()));
        let now = Instant::now();
        let r = req.into_inner();
        if !self.attempts.try_take(&key, now) {
            if let Some(suppressed) = self.refusals.admit(&key, now) {
                tracing::warn!(peer = ?peer, hostname = %wire(&r.hostname), suppressed, "enrollment refused: too many attempts from this address");
            }
            return Err(Status::resource_exhausted(format!(
                "too many enrollment attempts from this address; one more is allowed every {}",
                humantime::format_duration(refill_interval(self.per_minute))
            )));
        }
        let out = self.enroller.enroll(&r.token, &r.csr_pem, &r.hostname).await.map_err(|e| {
            if let EnrollError::Internal(detail) = &e {
                tracing::error!(detail = %wire(detail), "enrollment failed");
            } else if let Some(suppressed) = self.refusals.admit(&key, now) {
                tracing::warn!(peer = ?peer, hostname = %wire(&r.hostname), reason = %wire(&e.to_string()), suppressed, "enrollment refused");
            }
            Status::from(e)
        })?;
        Ok(Response::new(pb::EnrollResponse {
            agent_id: out.agent_id.to_string(),
            certificate_pem: out.cert_pem,
            ca_pem: out.ca_pem,
        }))
    }
}
