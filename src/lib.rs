//! sluice: a read/write-splitting PostgreSQL proxy.
//!
//! The crate is a pipe with a brain in the middle:
//!
//! - [`config`]: TOML -> validated, typed [`config::Config`] (all errors at once).
//! - [`protocol`]: bytes <-> messages: framing, the startup phase, the few messages sluice reads.
//! - [`frontend`]: the listener, one session state machine per client, client auth, cancel keys.
//! - [`router`]: pure classification and routing decisions.
//! - [`backend`]: server connections, their authentication and reset, bounded pools per node.
//! - [`topology`]: the one snapshot of node roles, published by the monitor.
//! - [`auth`]: SCRAM-SHA-256(-PLUS) and md5 crypto for both sides, and the auth_query lookup.
//! - [`tls`]: rustls configs for both sides, certificate reload, the socket type both use.
//! - [`metrics`] and [`admin`]: typed Prometheus metrics and the HTTP endpoint that serves them
//!   with `/health` and `/topology`.
//! - [`reload`] and [`live`]: hot reload (what a new file changes, and values readers borrow
//!   while a reload replaces them).
//! - [`runtime`]: the thread layout (one shared runtime, or one per core with its own listener).
//! - [`allocator`]: the binary's global allocator (the crate's only `unsafe` code).
//! - [`pgcluster`] and [`demo`]: local PostgreSQL clusters for `sluice demo` and the tests.
//!
//! [`Proxy::start`] wires the handles together; `main.rs` only handles the process lifecycle.

pub mod admin;
#[allow(unsafe_code)]
pub mod allocator;
pub mod auth;
pub mod backend;
pub mod config;
pub mod demo;
pub mod error;
pub mod frontend;
pub mod keyed_hash;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod pgcluster;
pub mod protocol;
pub mod reload;
pub mod router;
pub mod runtime;
pub mod tls;
pub mod topology;

mod app;

pub use app::{Proxy, ProxyHandle, StartError};
