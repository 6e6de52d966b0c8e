//! The monitor: probes every node, folds the answers into a new [`Topology`], and publishes it
//! when something changed. It is the only writer of the topology. Probes come in through the
//! [`Probe`] trait so this module never touches server connections itself.

use std::future::Future;
use std::time::Duration;

use super::{NodeView, Role, Topology, TopologyHandle};
use crate::config::Config;

/// What one probe saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// `Primary` or `Replica`.
    pub role: Role,
    /// Current WAL position (primary) or replay position (replica).
    pub wal_lsn: Option<u64>,
    /// For a node in recovery: whether its WAL receiver is streaming (`None`: cannot tell,
    /// e.g. the monitor user lacks `pg_read_all_stats`).
    pub streaming: Option<bool>,
}

impl Observation {
    /// A node that could not be asked.
    #[must_use]
    pub fn down() -> Self {
        Self { role: Role::Down, wal_lsn: None, streaming: None }
    }
}

/// Asks one node what it is.
pub trait Probe: Send + Sync {
    /// The node's role and WAL position, or an error if it cannot be asked.
    fn probe(&self, node: usize) -> impl Future<Output = Result<Observation, String>> + Send;
}

/// Node list with every role unknown, in configuration order.
#[must_use]
pub fn initial_topology(config: &Config) -> Topology {
    let nodes = config
        .nodes
        .iter()
        .enumerate()
        .map(|(index, n)| NodeView {
            index,
            name: n.name.clone(),
            host: n.host.clone(),
            port: n.port,
            role: Role::Unknown,
            weight: n.weight,
            wal_lsn: None,
        })
        .collect();
    Topology { generation: 0, nodes }
}

/// Probes and publishes.
pub struct Monitor<P> {
    probe: P,
    topology: TopologyHandle,
    timeout: Duration,
    max_lag: Option<u64>,
}

impl<P: Probe> Monitor<P> {
    /// A monitor publishing into `topology`; each probe gets at most `timeout`; replicas more
    /// than `max_lag` bytes behind the primary are stale.
    pub fn new(probe: P, topology: TopologyHandle, timeout: Duration, max_lag: Option<u64>) -> Self {
        Self { probe, topology, timeout, max_lag }
    }

    /// Probe every node concurrently and publish; returns the nodes whose role changed.
    pub async fn tick(&self) -> Vec<usize> {
        let current = self.topology.load();
        let probes = current.nodes.iter().map(|n| async move {
            match tokio::time::timeout(self.timeout, self.probe.probe(n.index)).await {
                Ok(Ok(seen)) => seen,
                Ok(Err(e)) => {
                    tracing::debug!(node = %n.name, error = %e, "probe failed");
                    Observation::down()
                }
                Err(_) => Observation::down(),
            }
        });
        let roles = futures_util::future::join_all(probes).await;
        let next = fold(&current.nodes, &roles, self.max_lag);
        // Connections opened to a node that became or stopped being the primary, or went down,
        // must not be reused; a replica turning stale (or back) keeps its connections.
        let changed: Vec<usize> = next
            .iter()
            .zip(current.nodes.iter())
            .filter(|(a, b)| {
                a.role != b.role && [a.role, b.role].iter().any(|r| matches!(r, Role::Primary | Role::Down))
            })
            .map(|(a, _)| a.index)
            .collect();
        if self.topology.publish_nodes(next) {
            let t = self.topology.load();
            let roles: Vec<String> = t.nodes.iter().map(|n| format!("{}={}", n.name, n.role.as_str())).collect();
            tracing::info!(generation = t.generation, roles = %roles.join(" "), "topology changed");
        }
        changed
    }
}

/// The pure transition: new observations onto the old node list. While there is one primary, a
/// replica whose WAL receiver is not streaming, or that is more than `max_lag` bytes behind the
/// primary, is `Stale`.
#[must_use]
pub fn fold(nodes: &[NodeView], seen: &[Observation], max_lag: Option<u64>) -> Vec<NodeView> {
    let mut primaries = seen.iter().filter(|o| o.role == Role::Primary);
    let primary = match (primaries.next(), primaries.next()) {
        (Some(p), None) => Some(p),
        _ => None,
    };
    let primary_lsn = primary.and_then(|p| p.wal_lsn);
    let role = |o: &Observation| {
        let behind = match (max_lag, primary_lsn, o.wal_lsn) {
            (Some(max), Some(p), Some(r)) => p.saturating_sub(r) > max,
            _ => false,
        };
        match o.role {
            // Without a primary a replica that stopped streaming is still the best read there
            // is (consistent, just not advancing); with one, it should be following it.
            Role::Replica if (primary.is_some() && o.streaming == Some(false)) || behind => Role::Stale,
            other => other,
        }
    };
    nodes.iter().zip(seen).map(|(n, o)| NodeView { role: role(o), wal_lsn: o.wal_lsn, ..n.clone() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(index: usize) -> NodeView {
        NodeView {
            index,
            name: format!("n{index}"),
            host: "h".into(),
            port: 1,
            role: Role::Unknown,
            weight: 1,
            wal_lsn: None,
        }
    }

    fn seen(role: Role, lsn: u64, streaming: Option<bool>) -> Observation {
        Observation { role, wal_lsn: Some(lsn), streaming }
    }

    #[test]
    fn replicas_that_do_not_stream_or_lag_too_far_are_stale() {
        let nodes = [node(0), node(1), node(2), node(3)];
        let obs = [
            seen(Role::Primary, 1000, None),
            seen(Role::Replica, 990, Some(true)),
            seen(Role::Replica, 1000, Some(false)),
            seen(Role::Replica, 100, None),
        ];
        let roles: Vec<Role> = fold(&nodes, &obs, Some(500)).iter().map(|n| n.role).collect();
        assert_eq!(roles, [Role::Primary, Role::Replica, Role::Stale, Role::Stale]);
        let roles: Vec<Role> = fold(&nodes, &obs, None).iter().map(|n| n.role).collect();
        assert_eq!(roles, [Role::Primary, Role::Replica, Role::Stale, Role::Replica]);
    }

    #[test]
    fn without_one_primary_replicas_keep_serving_reads() {
        let nodes = [node(0), node(1), node(2)];
        let obs = [Observation::down(), seen(Role::Replica, 1, Some(true)), seen(Role::Replica, 1, Some(false))];
        let roles: Vec<Role> = fold(&nodes, &obs, Some(0)).iter().map(|n| n.role).collect();
        assert_eq!(roles, [Role::Down, Role::Replica, Role::Replica]);
    }
}
