//! Metrics: typed Prometheus series registered into a [`Registry`] that the caller passes in.
//!
//! [`Metrics::new`] registers every family under the `sluice_` prefix and looks up the labelled
//! series it can know in advance once (per node, per unit outcome, per rejection reason), so a
//! recording point costs one atomic add. Label values come only from closed enums and the
//! configured node names, never from client input. This module owns no IO and no globals: the
//! admin endpoint encodes the registry, the session, pool and monitor code call the recorders.

use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

mod latency;

pub use latency::{Latency, Summary, UNIT_BUCKETS_SECONDS};

use crate::router::Reason;
pub use histogram::DurationHistogram;

mod histogram;
use crate::topology::{Role, Topology};

/// Upper bounds of the checkout-wait histogram, 100 µs to 5 s.
const CHECKOUT_BUCKETS_SECONDS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Cached route counters, indexed by the reason's discriminant (there are fewer than this many
/// reasons; one past the end falls back to a family lookup rather than failing).
const REASON_SLOTS: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

/// How one unit of work (a simple Query or a Parse..Sync batch) ended, for `units_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnitOutcome {
    /// The server answered up to ReadyForQuery and the client got all of it.
    Ready,
    /// The reply was cut off after part of it reached the client.
    Partial,
    /// The server connection died before the unit finished.
    ServerLost,
    /// The client went away while the unit ran.
    ClientGone,
    /// A replica refused the unit as a write (25006) and it was re-run on the primary.
    ReadOnlyRetried,
    /// The unit was re-sent on another connection because nothing of it had reached a server.
    ConnectionRetried,
    /// A replica cancelled the read for a recovery conflict and it was re-run on the primary.
    ConflictRetried,
}

impl UnitOutcome {
    /// Every outcome, in label order.
    pub const ALL: [UnitOutcome; 7] = [
        UnitOutcome::Ready,
        UnitOutcome::Partial,
        UnitOutcome::ServerLost,
        UnitOutcome::ClientGone,
        UnitOutcome::ReadOnlyRetried,
        UnitOutcome::ConnectionRetried,
        UnitOutcome::ConflictRetried,
    ];

    /// The metric label value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            UnitOutcome::Ready => "ready",
            UnitOutcome::Partial => "partial",
            UnitOutcome::ServerLost => "server_lost",
            UnitOutcome::ClientGone => "client_gone",
            UnitOutcome::ReadOnlyRetried => "read_only_retried",
            UnitOutcome::ConnectionRetried => "connection_retried",
            UnitOutcome::ConflictRetried => "conflict_retried",
        }
    }
}

/// How a server connection was brought to a session's settings, for `state_syncs_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncOutcome {
    /// Sent in the same write as the unit, replies swallowed: no extra round trip.
    Pipelined,
    /// Sent and answered before the unit (the node had not run these statements yet).
    RoundTrip,
    /// The server refused it (round trip), or a pipelined one failed and its unit was discarded.
    Failed,
}

impl SyncOutcome {
    /// Every outcome, in label order.
    pub const ALL: [SyncOutcome; 3] = [SyncOutcome::Pipelined, SyncOutcome::RoundTrip, SyncOutcome::Failed];

    /// The metric label value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            SyncOutcome::Pipelined => "pipelined",
            SyncOutcome::RoundTrip => "round_trip",
            SyncOutcome::Failed => "failed",
        }
    }
}

/// Why a client connection was refused before its session began, for `client_rejections_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// The client connection limit was reached.
    TooManyConnections,
    /// The TLS handshake, startup or authentication did not finish in time.
    StartupTimeout,
    /// The client broke the protocol during startup.
    Protocol,
    /// The client failed authentication.
    AuthFailed,
}

impl Rejection {
    /// Every rejection reason, in label order.
    pub const ALL: [Rejection; 4] =
        [Rejection::TooManyConnections, Rejection::StartupTimeout, Rejection::Protocol, Rejection::AuthFailed];

    /// The metric label value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::TooManyConnections => "too_many_connections",
            Rejection::StartupTimeout => "startup_timeout",
            Rejection::Protocol => "protocol",
            Rejection::AuthFailed => "auth_failed",
        }
    }
}

/// The series of one configured node; look it up once with [`Metrics::node`] and keep it (a clone
/// shares the same series, so a pool may hold its own copy).
#[derive(Clone, Debug)]
pub struct NodeMetrics {
    opened: Counter,
    connect_errors: Counter,
    checkout_wait: DurationHistogram,
    checkout_timeouts: Counter,
    idle_lost: Counter,
    expired: Counter,
    role: Gauge,
    wal_lsn: Gauge,
    units: Latency,
    sent_bytes: Counter,
    received_bytes: Counter,
    syncs: [Counter; SyncOutcome::ALL.len()],
    sync_statements: Counter,
}

impl NodeMetrics {
    /// A checkout of this node's connection ended after `held` (one unit, or one transaction).
    pub fn unit_done(&self, held: Duration) {
        self.units.observe(held);
    }

    /// Units served so far with their mean and p99 time.
    #[must_use]
    pub fn units(&self) -> Summary {
        self.units.summary()
    }

    /// A checkout of this node's connection wrote `sent` and read `received` protocol bytes.
    pub fn traffic(&self, sent: u64, received: u64) {
        self.sent_bytes.inc_by(sent);
        self.received_bytes.inc_by(received);
    }

    /// Protocol bytes (sent to, received from) this node's server connections so far.
    #[must_use]
    pub fn bytes(&self) -> (u64, u64) {
        (self.sent_bytes.get(), self.received_bytes.get())
    }

    /// A server connection to this node was opened (startup and authentication done).
    pub fn connected(&self) {
        self.opened.inc();
    }

    /// Opening a server connection to this node failed.
    pub fn connect_failed(&self) {
        self.connect_errors.inc();
    }

    /// A pool checkout on this node succeeded after waiting `wait`.
    pub fn checkout_waited(&self, wait: Duration) {
        self.checkout_wait.observe(wait);
    }

    /// A checkout of this node's connection took a free permit at once: a wait of zero,
    /// observed without its conversions and the sum's add (of nothing).
    pub fn checkout_not_waited(&self) {
        self.checkout_wait.observe_zero();
    }

    /// A state sync of `statements` statements was sent (or failed).
    pub fn state_sync(&self, outcome: SyncOutcome, statements: usize) {
        self.syncs[outcome as usize].inc();
        self.sync_statements.inc_by(u64::try_from(statements).unwrap_or(u64::MAX));
    }

    /// A pool checkout on this node gave up after the configured wait.
    pub fn checkout_timed_out(&self) {
        self.checkout_timeouts.inc();
    }

    /// An idle connection of this node was found lost at checkout, and closed unused.
    pub fn idle_found_lost(&self) {
        self.idle_lost.inc();
    }

    /// `count` pooled connections of this node were closed past the idle timeout or the
    /// server lifetime.
    pub fn expired(&self, count: usize) {
        self.expired.inc_by(count as u64);
    }

    fn set_view(&self, role: Role, wal_lsn: Option<u64>) {
        let role = match role {
            Role::Primary => 2,
            Role::Replica => 1,
            Role::Stale => 3,
            Role::Down | Role::Unknown => 0,
            Role::Fenced => 4,
        };
        self.role.set(role);
        // An LSN past i64::MAX bytes (8 EiB of WAL) cannot happen; clamp rather than wrap.
        self.wal_lsn.set(wal_lsn.map_or(0, |lsn| i64::try_from(lsn).unwrap_or(i64::MAX)));
    }
}

/// Every sluice metric; built once by the application and shared as `Arc<Metrics>`.
#[derive(Debug)]
pub struct Metrics {
    routes: Family<ReasonLabel, Counter>,
    route_cache: [OnceLock<Counter>; REASON_SLOTS],
    units: [Counter; UnitOutcome::ALL.len()],
    pins: Family<ReasonLabel, Counter>,
    rejections: [Counter; Rejection::ALL.len()],
    clients: Gauge,
    generation: Gauge,
    node_families: NodeFamilies,
    ops: OpsMetrics,
    /// Per node index; a reload that adds nodes appends.
    nodes: RwLock<Vec<NodeMetrics>>,
}

impl Metrics {
    /// Register every family into `registry` (under the `sluice_` prefix) with one series per
    /// configured node, in configuration order (so `node_names[i]` is node index `i`).
    pub fn new(registry: &mut Registry, node_names: &[String]) -> Arc<Metrics> {
        let registry = registry.sub_registry_with_prefix("sluice");
        let routes = Family::<ReasonLabel, Counter>::default();
        registry.register("route_decisions", "Routing and classification decisions by reason", routes.clone());
        let units = register_units(registry);
        let pins = Family::<ReasonLabel, Counter>::default();
        let pins_help = "Sessions tied to one server connection for the rest of their life (transaction pooling), \
             by the reason of the unit that tied them";
        registry.register("session_pins", pins_help, pins.clone());
        let (clients, rejections) = register_clients(registry);
        let generation = Gauge::default();
        registry.register("topology_generation", "Generation of the current topology snapshot", generation.clone());
        let node_families = NodeFamilies::register(registry);
        let ops = OpsMetrics::register(registry);
        let nodes = RwLock::new(node_names.iter().map(|n| node_families.series(n)).collect());
        let route_cache = std::array::from_fn(|_| OnceLock::new());
        Arc::new(Metrics {
            routes,
            route_cache,
            units,
            pins,
            rejections,
            clients,
            generation,
            node_families,
            ops,
            nodes,
        })
    }

    /// Count one routing or classification decision.
    pub fn route(&self, reason: Reason) {
        let lookup = || self.routes.get_or_create(&ReasonLabel { reason: reason.as_str() }).clone();
        // Fieldless enum: the discriminant is a dense index from 0.
        match self.route_cache.get(reason as usize) {
            Some(slot) => slot.get_or_init(lookup).inc(),
            None => lookup().inc(),
        };
    }

    /// Count one finished unit of work.
    pub fn unit(&self, outcome: UnitOutcome) {
        self.units[outcome as usize].inc();
    }

    /// Count a session tied to its server connection, by the reason of the unit that tied it.
    pub fn session_pinned(&self, reason: Reason) {
        self.pins.get_or_create(&ReasonLabel { reason: reason.as_str() }).inc();
    }

    /// A client connection was accepted (pair with [`Metrics::client_closed`]).
    pub fn client_opened(&self) {
        self.clients.inc();
    }

    /// A client connection that was counted by [`Metrics::client_opened`] ended.
    pub fn client_closed(&self) {
        self.clients.dec();
    }

    /// The number of client connections open now.
    #[must_use]
    pub fn clients(&self) -> i64 {
        self.clients.get()
    }

    /// Count a client connection refused before its session began.
    pub fn client_rejected(&self, reason: Rejection) {
        self.rejections[reason as usize].inc();
    }

    /// The series of node `index` (its position in the configuration); a clone shares them.
    ///
    /// # Panics
    ///
    /// If `index` is not below the number of nodes known (see [`Metrics::ensure_nodes`]).
    #[must_use]
    pub fn node(&self, index: usize) -> NodeMetrics {
        self.nodes.read().unwrap_or_else(std::sync::PoisonError::into_inner)[index].clone()
    }

    /// Make sure node `i` has series named `node_names[i]` (a reload appended nodes).
    pub fn ensure_nodes(&self, node_names: &[String]) {
        let mut nodes = self.nodes.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        for name in node_names.iter().skip(nodes.len()) {
            nodes.push(self.node_families.series(name));
        }
    }

    /// Copy a topology snapshot into the role, WAL position and generation gauges. Nodes the
    /// snapshot has but the metrics do not (never, with one configuration) are skipped.
    pub fn topology(&self, topology: &Topology) {
        self.generation.set(i64::try_from(topology.generation).unwrap_or(i64::MAX));
        let nodes = self.nodes.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        for view in &topology.nodes {
            if let Some(node) = nodes.get(view.index) {
                node.set_view(view.role, view.wal_lsn);
            }
        }
    }
}

fn register_units(registry: &mut Registry) -> [Counter; UnitOutcome::ALL.len()] {
    let family = Family::<OutcomeLabel, Counter>::default();
    registry.register("units", "Units of work (Query or Parse..Sync) by how they ended", family.clone());
    UnitOutcome::ALL.map(|outcome| family.get_or_create(&OutcomeLabel { outcome: outcome.as_str() }).clone())
}

fn register_clients(registry: &mut Registry) -> (Gauge, [Counter; Rejection::ALL.len()]) {
    let clients = Gauge::default();
    registry.register("client_connections", "Client connections open now", clients.clone());
    let family = Family::<ReasonLabel, Counter>::default();
    registry.register("client_rejections", "Client connections refused before their session", family.clone());
    let rejections = Rejection::ALL.map(|r| family.get_or_create(&ReasonLabel { reason: r.as_str() }).clone());
    (clients, rejections)
}

fn unit_histogram() -> DurationHistogram {
    Latency::unit_histogram()
}

fn checkout_histogram() -> DurationHistogram {
    DurationHistogram::new(CHECKOUT_BUCKETS_SECONDS)
}

/// The per-node families, kept so that nodes added by a reload get their series too.
#[derive(Debug)]
struct NodeFamilies {
    opened: Family<NodeLabel, Counter>,
    errors: Family<NodeLabel, Counter>,
    wait: Family<NodeLabel, DurationHistogram, fn() -> DurationHistogram>,
    timeouts: Family<NodeLabel, Counter>,
    idle_lost: Family<NodeLabel, Counter>,
    expired: Family<NodeLabel, Counter>,
    role: Family<NodeLabel, Gauge>,
    lsn: Family<NodeLabel, Gauge>,
    units: Family<NodeLabel, DurationHistogram, fn() -> DurationHistogram>,
    sent: Family<NodeLabel, Counter>,
    received: Family<NodeLabel, Counter>,
    syncs: Family<OutcomeLabel, Counter>,
    sync_statements: Counter,
}

impl NodeFamilies {
    fn register(registry: &mut Registry) -> Self {
        let f = NodeFamilies {
            opened: Family::default(),
            errors: Family::default(),
            wait: Family::new_with_constructor(checkout_histogram),
            timeouts: Family::default(),
            idle_lost: Family::default(),
            expired: Family::default(),
            role: Family::default(),
            lsn: Family::default(),
            units: Family::new_with_constructor(unit_histogram),
            sent: Family::default(),
            received: Family::default(),
            syncs: Family::default(),
            sync_statements: Counter::default(),
        };
        registry.register("state_syncs", "Session state syncs of server connections by outcome", f.syncs.clone());
        let statements_help = "Statements sent to bring server connections to their session's settings";
        registry.register("state_sync_statements", statements_help, f.sync_statements.clone());
        let units_help = "Time units (or transactions) held a server connection of the node";
        registry.register_with_unit("node_unit_duration", units_help, Unit::Seconds, f.units.clone());
        registry.register("server_connections_opened", "Server connections opened per node", f.opened.clone());
        registry.register("server_connect_errors", "Failed server connection attempts per node", f.errors.clone());
        let wait_help = "Time a checkout waited for a pooled server connection";
        registry.register_with_unit("pool_checkout_wait", wait_help, Unit::Seconds, f.wait.clone());
        registry.register("pool_checkout_timeouts", "Checkouts that gave up waiting per node", f.timeouts.clone());
        let help = "Idle pooled server connections found lost at checkout and closed unused, per node";
        registry.register("pool_idle_lost", help, f.idle_lost.clone());
        let help = "Pooled server connections closed past the idle timeout or the server lifetime, per node";
        registry.register("pool_expired", help, f.expired.clone());
        registry.register(
            "node_role",
            "Node role: 0 down or unknown, 1 replica, 2 primary, 3 stale replica, 4 fenced",
            f.role.clone(),
        );
        registry.register("node_wal_lsn", "Last WAL position seen on the node, in bytes", f.lsn.clone());
        let help = "Protocol bytes sluice sent to the node's pooled server connections";
        registry.register("server_sent_bytes", help, f.sent.clone());
        let help = "Protocol bytes sluice received from the node's pooled server connections";
        registry.register("server_received_bytes", help, f.received.clone());
        f
    }

    fn series(&self, name: &str) -> NodeMetrics {
        let label = NodeLabel { node: name.to_string() };
        NodeMetrics {
            opened: self.opened.get_or_create(&label).clone(),
            connect_errors: self.errors.get_or_create(&label).clone(),
            checkout_wait: self.wait.get_or_create(&label).clone(),
            checkout_timeouts: self.timeouts.get_or_create(&label).clone(),
            idle_lost: self.idle_lost.get_or_create(&label).clone(),
            expired: self.expired.get_or_create(&label).clone(),
            role: self.role.get_or_create(&label).clone(),
            wal_lsn: self.lsn.get_or_create(&label).clone(),
            units: Latency::new(self.units.get_or_create(&label).clone()),
            sent_bytes: self.sent.get_or_create(&label).clone(),
            received_bytes: self.received.get_or_create(&label).clone(),
            syncs: SyncOutcome::ALL.map(|o| self.syncs.get_or_create(&OutcomeLabel { outcome: o.as_str() }).clone()),
            sync_statements: self.sync_statements.clone(),
        }
    }
}

/// SQLSTATE class label: two characters of `[0-9A-Z]`, else `other` (label values stay a
/// closed set whatever a code says).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabel {
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

/// Buckets of the failover hold: from a quick republish to the default 10 s timeout and past it.
const HOLD_BUCKETS_SECONDS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// The operating series: errors sent to clients, topology changes, reloads, the
/// classification cache, held units, client transports.
#[derive(Debug)]
struct OpsMetrics {
    held_units: Family<OutcomeLabel, Counter>,
    hold_wait: DurationHistogram,
    /// The `client_logins` series for `plain` and `tls`, looked up once at registration: a
    /// login counts itself without the family's lock and label hash (~270 instructions).
    client_logins: [Counter; 2],
    client_errors: Family<ClassLabel, Counter>,
    topology_changes: Family<RoleLabel, Counter>,
    reloads: Family<OutcomeLabel, Counter>,
    cache_hits: Counter,
    cache_misses: Counter,
}

impl OpsMetrics {
    fn register(registry: &mut Registry) -> Self {
        let client_logins: Family<TransportLabel, Counter> = Family::default();
        let mut m = OpsMetrics {
            held_units: Family::default(),
            hold_wait: DurationHistogram::new(HOLD_BUCKETS_SECONDS),
            client_logins: [Counter::default(), Counter::default()],
            client_errors: Family::default(),
            topology_changes: Family::default(),
            reloads: Family::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
        };
        let help =
            "Errors sent to clients (sluice's own and those servers sent), by SQLSTATE class (first two characters)";
        registry.register("client_errors", help, m.client_errors.clone());
        let help = "Node role changes seen in the topology, by the role a node moved to";
        registry.register("topology_changes", help, m.topology_changes.clone());
        registry.register("reloads", "Configuration reloads by outcome (applied, refused)", m.reloads.clone());
        registry.register(
            "classify_cache_hits",
            "Statement classifications answered by the cache",
            m.cache_hits.clone(),
        );
        registry.register("classify_cache_misses", "Statement classifications computed", m.cache_misses.clone());
        for outcome in ["applied", "refused"] {
            let _ = m.reloads.get_or_create(&OutcomeLabel { outcome });
        }
        let help = "Units held while no node could take them (failover hold), by outcome: released (a node came) or expired (57P03)";
        registry.register("held_units", help, m.held_units.clone());
        let help = "How long held units waited for a node to take them";
        registry.register_with_unit("hold_wait", help, Unit::Seconds, m.hold_wait.clone());
        registry.register("client_logins", "Client logins accepted, by transport (tls, plain)", client_logins.clone());
        for outcome in ["released", "expired"] {
            let _ = m.held_units.get_or_create(&OutcomeLabel { outcome });
        }
        m.client_logins =
            ["plain", "tls"].map(|transport| client_logins.get_or_create(&TransportLabel { transport }).clone());
        for to in ["primary", "replica", "stale", "down", "fenced", "unknown"] {
            let _ = m.topology_changes.get_or_create(&RoleLabel { to });
        }
        m
    }
}

impl Metrics {
    /// Count an error a client was sent, sluice's own or a server's (`code` is its SQLSTATE).
    pub fn client_error(&self, code: &str) {
        let class = match code.get(..2) {
            Some(c) if c.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()) => c.to_string(),
            _ => "other".to_string(),
        };
        self.ops.client_errors.get_or_create(&ClassLabel { class }).inc();
    }

    /// A unit that waited `waited` for a node (failover hold) got one, or (`expired`) gave up.
    pub fn held(&self, expired: bool, waited: Duration) {
        let outcome = if expired { "expired" } else { "released" };
        self.ops.held_units.get_or_create(&OutcomeLabel { outcome }).inc();
        self.ops.hold_wait.observe(waited);
    }

    /// Count an accepted client login, over TLS or not.
    pub fn client_login(&self, tls: bool) {
        self.ops.client_logins[usize::from(tls)].inc();
    }

    /// Count a node moving to `role` in the topology.
    pub fn topology_change(&self, role: Role) {
        self.ops.topology_changes.get_or_create(&RoleLabel { to: role.as_str() }).inc();
    }

    /// Count a reload (`applied` true) or a refused one.
    pub fn reload(&self, applied: bool) {
        let outcome = if applied { "applied" } else { "refused" };
        self.ops.reloads.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Bring the cache counters up to the classifiers' running totals (they only grow).
    pub fn classify_cache(&self, hits: u64, misses: u64) {
        self.ops.cache_hits.inc_by(hits.saturating_sub(self.ops.cache_hits.get()));
        self.ops.cache_misses.inc_by(misses.saturating_sub(self.ops.cache_misses.get()));
    }
}

#[cfg(test)]
mod tests;
