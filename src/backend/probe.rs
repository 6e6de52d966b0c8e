//! The monitor's probe: one long-lived connection per node asking, in one round trip, the
//! node's role, WAL position, timeline, system identifier and WAL receiver. Also the few
//! commands a switchover sends (`pg_promote()`, the primary's WAL position), on connections of
//! their own so they never interleave with a probe.
//!
//! Least privilege: everything here works for a member of `pg_monitor` (which includes
//! `pg_read_all_stats` for the WAL receiver's sender); `pg_promote()` needs a superuser or an
//! explicit `GRANT EXECUTE ON FUNCTION pg_promote TO ...`.

use std::time::Duration;

use tokio::sync::Mutex;

use super::conn::{columns, parse_lsn, ConnectSpec, ServerConn};
use crate::error::BackendError;
use crate::topology::monitor::{Observation, Probe, ProbeError, Receiver};

/// Probes nodes over connections it keeps open between probes.
pub struct SqlProbe {
    specs: Vec<ConnectSpec>,
    conns: Vec<Mutex<Option<ServerConn>>>,
}

/// Role, WAL position, timeline, system identifier and WAL receiver in one round trip. A
/// primary's timeline comes from its current WAL file name (right after a promotion the
/// checkpoint still names the old one); a replica's from its last checkpoint. A primary's
/// position is its write position, not its insert position: at a page boundary the insert
/// position points past the next page's header, which no replica ever replays, so an idle
/// cluster would show every replica a few bytes "behind" for ever and, after
/// `routing.replica_max_lag`, stale. A replica's replay lag in seconds is zero while it has
/// replayed all it received (an idle primary sends nothing, and the last replayed commit may be
/// old), else the age of the last transaction it replayed.
const PROBE_SQL: &str = "SELECT s.rec, \
    CASE WHEN s.rec THEN pg_catalog.pg_last_wal_replay_lsn() ELSE pg_catalog.pg_current_wal_lsn() END, \
    CASE WHEN s.rec THEN (SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()) \
      ELSE ('x' || substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
    (SELECT system_identifier FROM pg_catalog.pg_control_system()), \
    r.pid, r.status, r.sender_host, r.sender_port, r.received_tli, \
    CASE WHEN NOT s.rec THEN NULL \
      WHEN pg_catalog.pg_last_wal_receive_lsn() = pg_catalog.pg_last_wal_replay_lsn() THEN 0 \
      ELSE GREATEST(0, extract(epoch FROM now() - pg_catalog.pg_last_xact_replay_timestamp())) END \
    FROM (SELECT pg_catalog.pg_is_in_recovery() AS rec) s \
    LEFT JOIN pg_catalog.pg_stat_wal_receiver r ON true";

impl SqlProbe {
    /// A probe of every configured node, as the monitor user, with `[server_tls]`.
    #[must_use]
    pub fn for_config(config: &crate::config::Config, pools: &super::Pools) -> Self {
        let user = &config.users[config.monitor.user].name;
        let specs = (0..config.nodes.len())
            .map(|node| {
                let key = super::PoolKey { node, database: config.monitor.database.clone(), user: user.clone() };
                pools.spec(&key, config.monitor.probe_timeout)
            })
            .collect();
        Self::new(specs)
    }

    /// One probe connection spec per node.
    #[must_use]
    pub fn new(specs: Vec<ConnectSpec>) -> Self {
        let conns = specs.iter().map(|_| Mutex::new(None)).collect();
        Self { specs, conns }
    }

    async fn ask(conn: &mut ServerConn) -> Result<Observation, BackendError> {
        let rows = conn.run_internal(PROBE_SQL).await?;
        let row = rows.first().map(columns).unwrap_or_default();
        parse_row(&row).ok_or_else(|| conn.lost("unexpected answer to the probe"))
    }

    /// Run one command on `node` over a fresh connection; returns the first column of the
    /// first row.
    ///
    /// # Errors
    /// The node could not be reached or rejected the command.
    pub async fn command(&self, node: usize, sql: &str, timeout: Duration) -> Result<Option<String>, BackendError> {
        let Some(spec) = self.specs.get(node) else {
            let detail = format!("node {node} is not in the configuration in force");
            return Err(BackendError::Connect { node: node.to_string(), source: std::io::Error::other(detail) });
        };
        let spec = ConnectSpec { timeout, ..spec.clone() };
        let mut conn = ServerConn::connect(&spec).await?;
        let work = conn.run_internal(sql);
        let rows = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| BackendError::ConnectTimeout { node: spec.node_name.clone() })??;
        Ok(rows.first().map(columns).and_then(|c| c.into_iter().next().flatten()))
    }
}

/// One probe row: `[in recovery, lsn, timeline, system id, receiver pid, status, sender host,
/// sender port, received timeline, replay lag in seconds]`.
fn parse_row(row: &[Option<String>]) -> Option<Observation> {
    let [Some(rec), lsn, tli, sysid, pid, status, host, port, rtli, lag] = row else { return None };
    let in_recovery = match rec.as_str() {
        "t" => true,
        "f" => false,
        _ => return None,
    };
    fn number<T: std::str::FromStr>(v: &Option<String>) -> Option<T> {
        v.as_deref().and_then(|t| t.parse().ok())
    }
    // No receiver row (pid NULL in the outer join): nothing streams. A row whose details are
    // NULL: the monitor user may not see them (needs pg_read_all_stats).
    let receiver = pid.as_ref().map(|_| Receiver {
        streaming: status.as_deref().map(|s| s == "streaming"),
        sender_host: host.clone(),
        sender_port: number(port),
        timeline: number(rtli),
    });
    Some(Observation {
        in_recovery,
        wal_lsn: lsn.as_deref().and_then(parse_lsn),
        timeline: number(tli),
        // A bigint in SQL: the u64 identifier may print as a negative number.
        system_id: number::<i64>(sysid).map(i64::cast_unsigned),
        receiver: if in_recovery { receiver } else { None },
        replay_lag: number::<f64>(lag).and_then(|secs| Duration::try_from_secs_f64(secs).ok()),
    })
}

impl Probe for SqlProbe {
    async fn probe(&self, node: usize) -> Result<Observation, ProbeError> {
        let mut slot = self.conns[node].lock().await;
        // Taken out while asked: if the monitor gives up on this probe (timeout), the future is
        // dropped with the connection, never leaving a half-read reply for the next probe.
        if let Some(mut conn) = slot.take() {
            match Self::ask(&mut conn).await {
                Ok(seen) => {
                    *slot = Some(conn);
                    return Ok(seen);
                }
                // A kept connection may have died since the last probe (terminated, server
                // restarted): that says nothing about the node, so ask on a fresh one.
                Err(e) => tracing::debug!(node, error = %e, "probe connection failed; reconnecting"),
            }
        }
        let mut conn = ServerConn::connect(&self.specs[node]).await.map_err(probe_error)?;
        let seen = Self::ask(&mut conn).await.map_err(probe_error)?;
        *slot = Some(conn);
        Ok(seen)
    }
}

fn probe_error(e: BackendError) -> ProbeError {
    match e {
        BackendError::ConnectTimeout { .. } => ProbeError::TimedOut,
        other => ProbeError::Refused(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[Option<&str>]) -> Vec<Option<String>> {
        cells.iter().map(|c| c.map(str::to_string)).collect()
    }

    #[test]
    fn probe_rows_become_observations() {
        let primary = row(&[Some("f"), Some("0/3000060"), Some("2"), Some("7"), None, None, None, None, None, None]);
        let o = parse_row(&primary).unwrap();
        assert!(!o.in_recovery);
        assert_eq!(o.replay_lag, None);
        assert_eq!((o.wal_lsn, o.timeline, o.system_id, o.receiver), (Some(0x300_0060), Some(2), Some(7), None));
        let replica = row(&[
            Some("t"),
            Some("0/10"),
            Some("1"),
            Some("7"),
            Some("42"),
            Some("streaming"),
            Some("/run"),
            Some("5432"),
            Some("1"),
            Some("1.500000"),
        ]);
        assert_eq!(parse_row(&replica).unwrap().replay_lag, Some(Duration::from_millis(1500)));
        let r = parse_row(&replica).unwrap().receiver.unwrap();
        assert_eq!(
            (r.streaming, r.sender_host.as_deref(), r.sender_port, r.timeline),
            (Some(true), Some("/run"), Some(5432), Some(1))
        );
        let hidden =
            row(&[Some("t"), Some("0/10"), Some("1"), Some("7"), Some("42"), None, None, None, None, Some("0")]);
        assert_eq!(parse_row(&hidden).unwrap().receiver.unwrap().streaming, None);
        let orphan = row(&[Some("t"), Some("0/10"), Some("1"), Some("7"), None, None, None, None, None, None]);
        assert_eq!(parse_row(&orphan).unwrap().receiver, None);
        assert_eq!(parse_row(&row(&[Some("x")])), None);
    }
}
