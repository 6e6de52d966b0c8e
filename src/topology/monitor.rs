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
}

impl<P: Probe> Monitor<P> {
    /// A monitor publishing into `topology`; each probe gets at most `timeout`.
    pub fn new(probe: P, topology: TopologyHandle, timeout: Duration) -> Self {
        Self { probe, topology, timeout }
    }

    /// Probe every node concurrently and publish; returns the nodes whose role changed.
    pub async fn tick(&self) -> Vec<usize> {
        let current = self.topology.load();
        let probes = current.nodes.iter().map(|n| async move {
            match tokio::time::timeout(self.timeout, self.probe.probe(n.index)).await {
                Ok(Ok(seen)) => seen,
                Ok(Err(e)) => {
                    tracing::debug!(node = %n.name, error = %e, "probe failed");
                    Observation { role: Role::Down, wal_lsn: None }
                }
                Err(_) => Observation { role: Role::Down, wal_lsn: None },
            }
        });
        let roles = futures_util::future::join_all(probes).await;
        let next = fold(&current.nodes, &roles);
        let changed: Vec<usize> =
            next.iter().zip(current.nodes.iter()).filter(|(a, b)| a.role != b.role).map(|(a, _)| a.index).collect();
        if self.topology.publish_nodes(next) {
            let t = self.topology.load();
            let roles: Vec<String> = t.nodes.iter().map(|n| format!("{}={}", n.name, n.role.as_str())).collect();
            tracing::info!(generation = t.generation, roles = %roles.join(" "), "topology changed");
        }
        changed
    }
}

/// The pure transition: new observations onto the old node list.
#[must_use]
pub fn fold(nodes: &[NodeView], seen: &[Observation]) -> Vec<NodeView> {
    nodes.iter().zip(seen).map(|(n, o)| NodeView { role: o.role, wal_lsn: o.wal_lsn, ..n.clone() }).collect()
}
