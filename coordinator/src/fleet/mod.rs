//! The fleet of agents: their identity-bound sessions, liveness, inventory.
//!
//! * [`registry`]: the in-memory live view (sessions, heartbeats, states).
//! * [`monitor`]: the loop that applies heartbeat timeouts, flushes liveness
//!   to SQLite in batches and picks up revocations written by CLI commands.
//! * [`session`]: one agent's session as domain events (the gRPC adapter
//!   in `grpc/session.rs` drives it).
//! * [`command`]: what the coordinator tells an agent.
//! * [`warm`]: which images each agent should hold ahead of demand, and the
//!   loop that tells it.
//! * [`inventory`] / [`agent`]: domain types.

pub mod agent;
pub mod command;
pub mod inventory;
pub mod monitor;
pub mod registry;
pub mod session;
pub mod warm;

pub use agent::{AgentState, AgentView, Drain, Load, rfc3339};
pub use command::{AgentCommand, CloseReason};
pub use inventory::Inventory;
pub use registry::{Fleet, NotConnected, Refusal, SessionId, SessionTx, Timings, Transition};
