//! Topology: which node is primary, which are replicas, which are down.
//!
//! One immutable [`Topology`] value lives behind one `ArcSwap` ([`TopologyHandle`]). Only the
//! monitor publishes a new value; everyone else loads one snapshot per routing decision and never
//! holds it across an `.await`. This module never imports `backend`: probes reach it through the
//! [`monitor::Probe`] trait.

pub mod monitor;

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

/// What a node currently is, as last observed by the monitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Accepts writes (`pg_is_in_recovery()` is false).
    Primary,
    /// In recovery: serves reads only.
    Replica,
    /// In recovery but unfit for reads: its WAL receiver is not streaming (it follows a primary
    /// that is gone), or it is further behind the primary than `routing.replica_max_lag_bytes`.
    Stale,
    /// Not reachable, or not answering the probe.
    Down,
    /// Not probed yet.
    Unknown,
}

impl Role {
    /// A short lowercase name for logs and the status page.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Stale => "stale",
            Role::Down => "down",
            Role::Unknown => "unknown",
        }
    }
}

/// One node as seen in one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// Position of the node in the configuration's `nodes` list; pools are indexed by it.
    pub index: usize,
    /// The configured name.
    pub name: String,
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Current role.
    pub role: Role,
    /// Relative share of replica reads (round-robin weight, at least 1).
    pub weight: u32,
    /// WAL position last seen: the primary's current insert position, a replica's replay
    /// position. A session that wrote reads only from replicas that replayed its write.
    pub wal_lsn: Option<u64>,
}

impl NodeView {
    /// True if this node may serve reads as a replica.
    #[must_use]
    pub fn is_readable_replica(&self) -> bool {
        self.role == Role::Replica
    }

    /// True if this node has replayed WAL up to `lsn` (always true without a position to meet).
    #[must_use]
    pub fn has_replayed(&self, lsn: Option<u64>) -> bool {
        match lsn {
            None => true,
            Some(needed) => self.wal_lsn.is_some_and(|seen| seen >= needed),
        }
    }
}

/// One immutable view of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    /// Increases by one with every change of a node's role (not with WAL positions).
    pub generation: u64,
    /// Every configured node, in configuration order (so `nodes[i].index == i`).
    pub nodes: Vec<NodeView>,
}

impl Topology {
    /// The current primary, if there is exactly one.
    #[must_use]
    pub fn primary(&self) -> Option<&NodeView> {
        let mut primaries = self.nodes.iter().filter(|n| n.role == Role::Primary);
        let first = primaries.next()?;
        // Two nodes claiming to be primary (split brain): trust neither for writes.
        primaries.next().is_none().then_some(first)
    }

    /// Nodes that may serve reads as replicas, in configuration order.
    pub fn replicas(&self) -> impl Iterator<Item = &NodeView> {
        self.nodes.iter().filter(|n| n.is_readable_replica())
    }
}

/// The shared handle: one `ArcSwap` of the current snapshot plus a watch of its generation.
#[derive(Clone)]
pub struct TopologyHandle {
    current: Arc<ArcSwap<Topology>>,
    generation_tx: Arc<watch::Sender<u64>>,
}

impl TopologyHandle {
    /// A handle that starts with `initial`.
    #[must_use]
    pub fn new(initial: Topology) -> Self {
        let (tx, _rx) = watch::channel(initial.generation);
        Self { current: Arc::new(ArcSwap::from_pointee(initial)), generation_tx: Arc::new(tx) }
    }

    /// The current snapshot. Load once per decision; do not hold across `.await`.
    #[must_use]
    pub fn load(&self) -> Arc<Topology> {
        self.current.load_full()
    }

    /// Publish a new snapshot if it differs from the current one (roles or nodes), bumping the
    /// generation. Only the monitor calls this.
    pub fn publish_nodes(&self, nodes: Vec<NodeView>) -> bool {
        let old = self.current.load();
        if old.nodes == nodes {
            return false;
        }
        let next = Topology { generation: old.generation + 1, nodes };
        let generation = next.generation;
        self.current.store(Arc::new(next));
        self.generation_tx.send_replace(generation);
        true
    }

    /// Subscribe to generation changes (a write that finds no primary may wait on this).
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation_tx.subscribe()
    }
}
