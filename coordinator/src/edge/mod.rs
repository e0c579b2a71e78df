//! The coordinator's network edge, shared by the HTTP and gRPC listeners:
//! what a peer on the wire can make the coordinator hold or write.
//!
//! - [`limit`]: a cap on concurrent connections per listener; a connection
//!   over the cap is accepted and closed at once.
//! - [`io`]: a connection wrapper that closes a connection idle for too long
//!   and holds its connection-cap permits until it is dropped.
//! - [`rate`]: a small keyed token bucket (per peer IP) for enrollment.
//! - [`logsafe`]: every peer-supplied string is escaped and capped before it
//!   is logged ([`logsafe::wire`]), and refusal logs are rate-limited per
//!   peer with a count of what was suppressed ([`logsafe::RefusalLog`]).
//!
//! The limits are configured under `[limits]` (`crate::config::LimitsConfig`).

pub mod io;
pub mod limit;
pub mod logsafe;
pub mod rate;

pub use io::IdleIo;
pub use limit::ConnLimit;
pub use logsafe::{RefusalLog, wire};
pub use rate::KeyedBuckets;
