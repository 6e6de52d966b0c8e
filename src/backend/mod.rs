//! Backend: connections to PostgreSQL servers and the bounded pools that share them.
//!
//! [`conn`] opens and authenticates one server connection and knows what state it carries;
//! [`prepared`] keeps the books of the statements sluice prepared on one connection (bounded LRU);
//! [`settings`] decides which statements make a connection carry a session's settings;
//! [`pool`] keeps at most `pool.size` of them per (node, database, user), checks idle ones before
//! handing them out, and closes any that may carry state another client did not ask for;
//! [`pools`] holds every pool of the process and the node-wide operations on them;
//! [`wire`] tracks what each connection still owes and decides reuse, drain or close;
//! This module reads the topology but never publishes it.

pub mod conn;
pub mod pool;
pub mod pools;
pub mod prepared;
pub mod probe;
pub mod settings;
pub mod wire;

pub use conn::{CancelTarget, ConnectSpec, MemoryDial, ServerConn};
pub use pool::{Checkout, Pool};
pub use pools::{PoolKey, Pools};
pub use wire::{Release, Wire};
