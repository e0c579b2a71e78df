//! `Enrollment.Enroll`: thin adapter over [`crate::enroll::Enroller`].

use autogit_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::enroll::{EnrollError, Enroller};

pub struct EnrollmentService {
    pub enroller: Enroller,
}

impl From<EnrollError> for Status {
    fn from(e: EnrollError) -> Self {
        let msg = e.to_string();
        match e {
            EnrollError::MalformedToken(_) | EnrollError::BadCsr(_) => Status::invalid_argument(msg),
            EnrollError::WrongCluster => Status::failed_precondition(msg),
            EnrollError::InvalidToken => Status::unauthenticated(msg),
            EnrollError::Expired | EnrollError::UsedUp | EnrollError::Revoked | EnrollError::Refused(_) => {
                Status::permission_denied(msg)
            }
            EnrollError::Internal(_) => Status::internal("internal error"),
        }
    }
}

#[tonic::async_trait]
impl pb::enrollment_server::Enrollment for EnrollmentService {
    async fn enroll(&self, req: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        let r = req.into_inner();
        let out = self.enroller.enroll(&r.token, &r.csr_pem, &r.hostname).await.map_err(|e| {
            if let EnrollError::Internal(detail) = &e {
                tracing::error!(%detail, "enrollment failed");
            } else {
                tracing::warn!(hostname = %r.hostname, reason = %e, "enrollment refused");
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
