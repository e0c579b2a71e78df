//! Operator-facing domain: admin tokens, and the actions behind the admin
//! API (cordon, drain, revoke, stop). HTTP handlers in `http/api.rs` are thin
//! adapters over this.

pub mod tokens;

pub use tokens::Actor;
