//! The AutoGit agent: enrolls a build host with a join token, holds one
//! outbound mTLS gRPC session to the coordinator, reports what the host really
//! is, and runs runner containers through the local Docker Engine API.
#![forbid(unsafe_code)]

pub mod docker;
pub mod inventory;
