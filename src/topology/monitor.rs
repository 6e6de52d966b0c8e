//! The monitor: probes every node, folds the answers into a new [`Topology`] with the pure
//! [`transition::step`], and publishes it. It is the only writer of the topology. Probes come in
//! through the [`Probe`] trait so this module never touches server connections itself.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::control::Control;
use super::transition::{self, Limits, Memory, Outcome};
use super::{Excluded, NodeView, Role, Topology, TopologyHandle};
use crate::config::Config;

pub use super::transition::{Observation, Receiver};

/// Why a probe got no observation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// The node refused the connection or answered with an error: it is down now.
    Refused(String),
    /// The node did not answer in time (a connect timeout): counts towards `down_after`.
    TimedOut,
}

/// Asks one node what it is.
pub trait Probe: Send + Sync {
    /// What the node says about itself, or why it could not be asked.
    fn probe(&self, node: usize) -> impl Future<Output = Result<Observation, ProbeError>> + Send;
}

impl<P: Probe> Probe for Arc<P> {
    fn probe(&self, node: usize) -> impl Future<Output = Result<Observation, ProbeError>> + Send {
        P::probe(self, node)
    }
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
            excluded: Some(Excluded::Unprobed),
            timeline: None,
            replay_lag: None,
        })
        .collect();
    Topology { generation: 0, nodes }
}

/// Probes and publishes.
pub struct Monitor<P> {
    probe: P,
    topology: TopologyHandle,
    control: Control,
    timeout: Duration,
    limits: Limits,
    memory: Memory,
}

impl<P: Probe> Monitor<P> {
    /// A monitor publishing into `topology`, reading operator requests from `control`; each
    /// probe gets at most `timeout`.
    pub fn new(probe: P, topology: TopologyHandle, control: Control, timeout: Duration, limits: Limits) -> Self {
        Self { probe, topology, control, timeout, limits, memory: Memory::default() }
    }

    /// The operator request box this monitor reads.
    #[must_use]
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Probe every node concurrently and publish; returns the nodes whose connections must not
    /// be reused (they became or stopped being the primary, went down or were fenced), with
    /// their new role.
    pub async fn tick(&mut self) -> Vec<(usize, Role)> {
        let current = self.topology.load();
        let (probe, timeout) = (&self.probe, self.timeout);
        let probes = current.nodes.iter().map(|n| async move {
            match tokio::time::timeout(timeout, probe.probe(n.index)).await {
                Ok(Ok(seen)) => Outcome::Seen(seen),
                Ok(Err(ProbeError::Refused(e))) => Outcome::Refused(e),
                Ok(Err(ProbeError::TimedOut)) | Err(_) => {
                    tracing::debug!(node = %n.name, "probe timed out");
                    Outcome::TimedOut
                }
            }
        });
        let outcomes = futures_util::future::join_all(probes).await;
        let overrides = self.control.overrides();
        let (memory, next) =
            transition::step(&self.memory, &current.nodes, &outcomes, &overrides, &self.limits, Instant::now());
        self.memory = memory;
        self.control.applied(&overrides.unfence);
        let changed = role_changes(&current.nodes, &next);
        if self.topology.publish_nodes(next) {
            let t = self.topology.load();
            let roles: Vec<String> = t.nodes.iter().map(describe).collect();
            tracing::info!(generation = t.generation, roles = %roles.join(" "), "topology changed");
        }
        changed
    }

    /// Probe on every `every`, and at once when an operator request arrives, until `stop`
    /// resolves; `changed` gets the nodes whose connections must go, with their new role.
    pub async fn run(mut self, every: Duration, stop: impl Future<Output = ()>, changed: impl Fn(usize, Role)) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let control = self.control.clone();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = control.woken() => {}
                () = &mut stop => return,
            }
            for (node, role) in self.tick().await {
                changed(node, role);
            }
        }
    }
}

/// Nodes whose role changed to or from primary, down or fenced: connections opened for the
/// old role must not be reused. A replica turning stale (or back) keeps its connections.
fn role_changes(before: &[NodeView], after: &[NodeView]) -> Vec<(usize, Role)> {
    after
        .iter()
        .zip(before)
        .filter(|(a, b)| {
            a.role != b.role && [a.role, b.role].iter().any(|r| matches!(r, Role::Primary | Role::Down | Role::Fenced))
        })
        .map(|(a, _)| (a.index, a.role))
        .collect()
}

fn describe(n: &NodeView) -> String {
    match n.excluded {
        Some(why) => format!("{}={}({})", n.name, n.role.as_str(), why.as_str()),
        None => format!("{}={}", n.name, n.role.as_str()),
    }
}
