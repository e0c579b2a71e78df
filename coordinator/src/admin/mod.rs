//! Operator-facing domain: admin tokens, admin client certificates
//! ([`certs`]), sessions ([`sessions`]) and single sign-on ([`oidc`]), and the actions behind the admin
//! API and the CLI ([`actions`]: cordon, drain, revoke, join tokens). HTTP
//! handlers in `http/api.rs` and the CLI's offline backend are thin adapters
//! over this.

pub mod actions;
pub mod certs;
pub mod oidc;
pub mod roles;
pub mod sessions;
pub mod tokens;

pub use roles::Role;
pub use tokens::Actor;
