//! The AutoGit agent: enrolls a build host with a join token, holds one
//! outbound mTLS gRPC session to the coordinator, reports what the host really
//! is, and runs runner containers through the local Docker Engine API.
//!
//! * [`enroll`]: `join` (pinned CA, local key, CSR) → [`state`] dir.
//! * [`session`]: `run`: the session loop with [`backoff`], heartbeats,
//!   inventory changes and runner commands; [`renew`] keeps the certificate
//!   fresh; [`transport`] is the TLS connection under tonic.
//! * [`inventory`]: what the host really is (CPU, memory, GPUs, Docker).
//! * [`policy`]: the host owner's veto on what the coordinator may run.
//! * [`docker`]: runner containers through bollard.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod cli;
pub mod config;
pub mod docker;
pub mod enroll;
#[doc(hidden)]
pub mod fuzz;
pub mod inventory;
pub mod policy;
pub mod renew;
pub mod session;
pub mod state;
pub mod transport;
