//! Topology: which node is primary, which are replicas, which are down.
//!
//! One immutable [`Topology`] value lives behind one `ArcSwap` ([`TopologyHandle`]). Only the
//! monitor publishes a new value; everyone else loads one snapshot per routing decision and never
//! holds it across an `.await`. This module never imports `backend`: probes reach it through the
//! [`monitor::Probe`] trait. The pure step from one snapshot to the next lives in
//! [`transition`]; what an operator asked for (drain, unfence, a switchover's write hold) reaches
//! the monitor through [`control`].
//!
//! Every node in a snapshot carries the reason it takes no traffic (`excluded`), and the
//! generation moves only when a role or an eligibility changes: WAL positions are refreshed in
//! place, so a busy primary does not make every session re-check its connections.

pub mod control;
pub mod monitor;
pub mod transition;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    /// Claims the primary role but must get no traffic at all: a former primary on an older
    /// timeline, or a server of another cluster (different system identifier). Sticky until an
    /// operator clears it or the node comes back in recovery.
    Fenced,
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
            Role::Fenced => "fenced",
        }
    }
}

/// Why a node takes no traffic (or, for a primary, no writes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Excluded {
    /// Not probed yet.
    Unprobed,
    /// Refused the probe, or did not answer `monitor.down_after` probes in a row.
    Down,
    /// Further behind the primary than `routing.replica_max_lag_bytes`.
    LagBytes,
    /// Replay further behind than `routing.replica_max_lag`.
    LagTime,
    /// Its WAL receiver is not streaming while there is a primary to stream from.
    NotStreaming,
    /// Streams from a node that is not the current primary (an orphan).
    UpstreamUnknown,
    /// Streams from a fenced node.
    UpstreamFenced,
    /// Streams from (or cannot be proven not to stream from) a primary that is in doubt.
    UpstreamInDoubt,
    /// On an older timeline than the current primary's.
    OlderTimeline,
    /// Fenced earlier and still claiming the primary role, though nothing newer is in sight
    /// now: the fence is sticky until an operator clears it or the node is back in recovery.
    Fenced,
    /// Two nodes claim the primary role on the same timeline: neither takes writes.
    InDoubt,
    /// Its system identifier differs from the cluster's: another cluster's server.
    ForeignSystem,
    /// Taken out of read rotation by an operator.
    Drained,
    /// A planned switchover holds writes while the target catches up.
    Switchover,
}

impl Excluded {
    /// A stable snake_case name for logs, JSON and error messages.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Excluded::Unprobed => "unprobed",
            Excluded::Down => "down",
            Excluded::LagBytes => "lagging_bytes",
            Excluded::LagTime => "lagging_seconds",
            Excluded::NotStreaming => "not_streaming",
            Excluded::UpstreamUnknown => "follows_unknown_upstream",
            Excluded::UpstreamFenced => "follows_fenced_upstream",
            Excluded::UpstreamInDoubt => "follows_upstream_in_doubt",
            Excluded::OlderTimeline => "older_timeline",
            Excluded::Fenced => "fenced",
            Excluded::InDoubt => "primary_in_doubt",
            Excluded::ForeignSystem => "foreign_system_identifier",
            Excluded::Drained => "drained",
            Excluded::Switchover => "switchover",
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
    /// Why the node takes no traffic in its role (`None`: it does).
    pub excluded: Option<Excluded>,
    /// The timeline the node was last seen on.
    pub timeline: Option<u32>,
    /// How far a replica's replay is behind in time, as the replica itself says (zero while it
    /// has replayed all it received; `None`: not a replica, or it cannot tell). For operators:
    /// routing decides on `wal_lsn` and the monitor's own clock.
    pub replay_lag: Option<Duration>,
}

impl NodeView {
    /// True if this node may serve reads as a replica.
    #[must_use]
    pub fn is_readable_replica(&self) -> bool {
        self.role == Role::Replica && self.excluded.is_none()
    }

    /// True if this node may take writes.
    #[must_use]
    pub fn is_routable_primary(&self) -> bool {
        self.role == Role::Primary && self.excluded.is_none()
    }

    /// What decides the generation: the role and whether the node takes traffic in it.
    fn eligibility(&self) -> (Role, bool) {
        (self.role, self.excluded.is_none())
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
    /// Increases by one with every change of a node's role or eligibility (not with WAL
    /// positions or a change between two reasons for the same exclusion).
    pub generation: u64,
    /// Every configured node, in configuration order (so `nodes[i].index == i`).
    pub nodes: Vec<NodeView>,
}

impl Topology {
    /// The current primary, if there is exactly one.
    #[must_use]
    pub fn primary(&self) -> Option<&NodeView> {
        let mut primaries = self.nodes.iter().filter(|n| n.is_routable_primary());
        let first = primaries.next()?;
        // Two nodes claiming to be primary (split brain): trust neither for writes.
        primaries.next().is_none().then_some(first)
    }

    /// Nodes that may serve reads as replicas, in configuration order.
    pub fn replicas(&self) -> impl Iterator<Item = &NodeView> {
        self.nodes.iter().filter(|n| n.is_readable_replica())
    }

    /// Why no primary could take a unit, for the error a held write finally gets.
    #[must_use]
    pub fn no_primary_cause(&self) -> String {
        if let Some(p) = self.primary() {
            return format!("the primary {} could not be reached", p.name);
        }
        let claims: Vec<String> = self
            .nodes
            .iter()
            .map(|n| match n.excluded {
                Some(why) => format!("{} {} ({})", n.name, n.role.as_str(), why.as_str()),
                None => format!("{} {}", n.name, n.role.as_str()),
            })
            .collect();
        format!("no routable primary: {}", claims.join(", "))
    }
}

/// The error a unit held through a failover finally gets: `57P03`, naming the last failure and
/// why no node could take it.
#[must_use]
pub fn hold_expired(last: &crate::error::BackendError, held: Duration, cause: &str) -> crate::error::BackendError {
    let what = match last {
        crate::error::BackendError::Server { info, .. } => info.message.clone(),
        other => other.to_string(),
    };
    crate::error::BackendError::Server {
        node: "-".into(),
        info: crate::protocol::messages::ErrorInfo {
            severity: "ERROR".into(),
            code: crate::error::sqlstate::CANNOT_CONNECT_NOW.into(),
            message: format!("{what} (held {} ms for a failover; {cause})", held.as_millis()),
        },
    }
}

/// The shared handle: one `ArcSwap` of the current snapshot plus a watch of its generation.
#[derive(Clone)]
pub struct TopologyHandle {
    current: Arc<ArcSwap<Topology>>,
    generation: Arc<Generation>,
}

/// The generation's watch, and its value for a plain read.
struct Generation {
    tx: watch::Sender<u64>,
    /// The last generation published, read without the snapshot (an arc-swap load) or the
    /// watch's lock: see [`TopologyHandle::generation`].
    now: AtomicU64,
}

impl TopologyHandle {
    /// A handle that starts with `initial`.
    #[must_use]
    pub fn new(initial: Topology) -> Self {
        let (tx, _rx) = watch::channel(initial.generation);
        let generation = Generation { tx, now: AtomicU64::new(initial.generation) };
        Self { current: Arc::new(ArcSwap::from_pointee(initial)), generation: Arc::new(generation) }
    }

    /// The current generation, without loading the snapshot: what a unit that may wait for
    /// the next one ([`TopologyHandle::changed_since`]) reads before it routes, once per routed
    /// unit. Stored after the snapshot, so never newer than what a later [`TopologyHandle::load`]
    /// returns; it may lag a publication for a moment, and then the wait returns at once, as
    /// it does when the publication comes right after this read.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation.now.load(Ordering::Acquire)
    }

    /// The current snapshot. Load once per decision; do not hold across `.await`.
    #[must_use]
    pub fn load(&self) -> Arc<Topology> {
        self.current.load_full()
    }

    /// The current snapshot, borrowed: no reference-count update on the shared `Arc` (which
    /// every session touches per unit otherwise). For a decision made synchronously; the guard
    /// must be dropped before any `.await`.
    #[must_use]
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Topology>> {
        self.current.load()
    }

    /// Publish `nodes` if anything in them differs from the current snapshot. The generation
    /// moves (and watchers wake) only if a node's role or eligibility changed; returns whether
    /// it did. Only the monitor calls this.
    pub fn publish_nodes(&self, nodes: Vec<NodeView>) -> bool {
        let old = self.current.load();
        if old.nodes == nodes {
            return false;
        }
        let changed = old.nodes.len() != nodes.len()
            || old.nodes.iter().zip(&nodes).any(|(a, b)| a.eligibility() != b.eligibility());
        let generation = old.generation + u64::from(changed);
        self.current.store(Arc::new(Topology { generation, nodes }));
        if changed {
            self.generation.now.store(generation, Ordering::Release);
            self.generation.tx.send_replace(generation);
        }
        changed
    }

    /// Wait until the generation differs from `seen`, at most `max`; returns the snapshot then
    /// current. Holds nothing while waiting, so any number of sessions may wait at once.
    pub async fn changed_since(&self, seen: u64, max: Duration) -> Arc<Topology> {
        let mut rx = self.generation.tx.subscribe();
        let _ = tokio::time::timeout(max, rx.wait_for(|g| *g != seen)).await;
        self.load()
    }

    /// Subscribe to generation changes (a write that finds no primary may wait on this).
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.tx.subscribe()
    }
}
