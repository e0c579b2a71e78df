//! The gRPC contract between the AutoGit coordinator and its agents.
//!
//! Generated from `proto/autogit/v1/fleet.proto` at build time with protox, so
//! no system `protoc` is needed. Client and server stubs sit behind the
//! `client` and `server` features: the agent never compiles server code.
//! Messages that carry secrets have hand-written `Debug` impls
//! ([`redact`]) that never print them.
#![forbid(unsafe_code)]

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("autogit.v1");
}

mod redact;

pub use v1::*;
