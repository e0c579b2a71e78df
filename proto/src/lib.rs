//! The gRPC contract between the AutoGit coordinator and its agents.
//!
//! Generated from `proto/autogit/v1/fleet.proto` at build time with protox, so
//! no system `protoc` is needed. Client and server stubs sit behind the
//! `client` and `server` features: the agent never compiles server code.
//! Messages that carry secrets have hand-written `Debug` impls
//! ([`redact`]) that never print them. Every RPC uses [`codec::Codec1K`]
//! (prost with 1 KiB initial stream buffers instead of tonic's 8 KiB).
#![forbid(unsafe_code)]

pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("autogit.v1");
}

pub mod codec;
mod redact;

pub use v1::*;
