//! The monitor's probe: one long-lived connection per node asking `pg_is_in_recovery()`.

use std::time::Duration;

use tokio::sync::Mutex;

use super::conn::{columns, parse_lsn, ConnectSpec, ServerConn};
use crate::topology::monitor::{Observation, Probe};
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

    async fn ask(conn: &mut ServerConn) -> Result<Observation, String> {
        let rows = conn.run_internal(PROBE_SQL).await.map_err(|e| e.to_string())?;
        let (role, lsn, receiver, status) = match rows.first().map(columns).as_deref() {
            Some([Some(v), lsn, receiver, status]) if v == "f" => {
                (Role::Primary, lsn.clone(), receiver.clone(), status.clone())
            }
            Some([Some(v), lsn, receiver, status]) if v == "t" => {
                (Role::Replica, lsn.clone(), receiver.clone(), status.clone())
            }
            _ => return Err("unexpected answer to the probe".into()),
        };
        // No receiver row: nothing is streaming. A row without a status: the monitor user may not
        // see details (needs pg_read_all_stats), so the state is unknown.
        let streaming = match (receiver, status) {
            (None, _) => Some(false),
            (Some(_), None) => None,
            (Some(_), Some(s)) => Some(s == "streaming"),
        };
        let streaming = if role == Role::Replica { streaming } else { None };
        Ok(Observation { role, wal_lsn: lsn.as_deref().and_then(parse_lsn), streaming })
    }
}

/// Role, WAL position and (for a replica) whether its WAL receiver streams, in one round trip.
const PROBE_SQL: &str = "SELECT pg_catalog.pg_is_in_recovery(), CASE WHEN pg_catalog.pg_is_in_recovery() \
                         THEN pg_catalog.pg_last_wal_replay_lsn() ELSE pg_catalog.pg_current_wal_insert_lsn() END, \
                         (SELECT pid::text FROM pg_catalog.pg_stat_wal_receiver), \
                         (SELECT status FROM pg_catalog.pg_stat_wal_receiver)";

impl Probe for SqlProbe {
    async fn probe(&self, node: usize) -> Result<Observation, String> {
        let mut slot = self.conns[node].lock().await;
        // A kept connection may have died since the last probe (terminated, server restarted):
        // that says nothing about the node, so ask again on a fresh one before calling it down.
        if let Some(conn) = slot.as_mut() {
            match Self::ask(conn).await {
                Ok(seen) => return Ok(seen),
                Err(e) => tracing::debug!(node, error = %e, "probe connection failed; reconnecting"),
            }
        }
        *slot = None;
        let mut conn = ServerConn::connect(&self.specs[node]).await.map_err(|e| e.to_string())?;
        let seen = Self::ask(&mut conn).await?;
        *slot = Some(conn);
        Ok(seen)
    }
}

/// Probe timeout used when the monitor interval is very short.
#[must_use]
pub fn probe_timeout(interval: Duration, connect: Duration) -> Duration {
    connect.max(interval)
}
