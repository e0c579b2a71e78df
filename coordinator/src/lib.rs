//! The AutoGit coordinator: the fleet's control plane.
//!
//! It enrolls agents (PKI in `autogit-certs`), holds one mTLS gRPC session per
//! agent, keeps state in SQLite, watches GitLab for pending jobs (webhooks and
//! polling), decides placement, and tells agents which runner containers to
//! start. See `docs/ARCHITECTURE.md` for the data flow through these modules.
#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod bounds;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod datadir;
pub mod db;
pub mod demand;
pub mod edge;
pub mod enroll;
pub mod fleet;
#[doc(hidden)]
pub mod fuzz;
pub mod gitlab;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod output;
pub mod pki;
pub mod pools;
pub mod reload;
pub mod runners;
pub mod scheduler;
pub mod server;
pub mod tokens;
