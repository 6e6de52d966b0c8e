//! The monitor's probe: one long-lived connection per node asking `pg_is_in_recovery()`.

use std::time::Duration;

use tokio::sync::Mutex;

use super::conn::{columns, ConnectSpec, ServerConn};
use crate::topology::monitor::Probe;
use crate::topology::Role;

/// Probes nodes over connections it keeps open between probes.
pub struct SqlProbe {
    specs: Vec<ConnectSpec>,
    conns: Vec<Mutex<Option<ServerConn>>>,
}

impl SqlProbe {
    /// One probe connection spec per node.
    #[must_use]
    pub fn new(specs: Vec<ConnectSpec>) -> Self {
        let conns = specs.iter().map(|_| Mutex::new(None)).collect();
        Self { specs, conns }
    }

    async fn ask(conn: &mut ServerConn) -> Result<Role, String> {
        let rows = conn.run_internal("SELECT pg_is_in_recovery()").await.map_err(|e| e.to_string())?;
        match rows.first().map(columns).as_deref() {
            Some([Some(v)]) if v == "f" => Ok(Role::Primary),
            Some([Some(v)]) if v == "t" => Ok(Role::Replica),
            _ => Err("unexpected answer to pg_is_in_recovery()".into()),
        }
    }
}

impl Probe for SqlProbe {
    async fn probe(&self, node: usize) -> Result<Role, String> {
        let mut slot = self.conns[node].lock().await;
        if slot.is_none() {
            *slot = Some(ServerConn::connect(&self.specs[node]).await.map_err(|e| e.to_string())?);
        }
        let conn = slot.as_mut().expect("just filled");
        let result = Self::ask(conn).await;
        if result.is_err() {
            *slot = None;
        }
        result
    }
}

/// Probe timeout used when the monitor interval is very short.
#[must_use]
pub fn probe_timeout(interval: Duration, connect: Duration) -> Duration {
    connect.max(interval)
}
