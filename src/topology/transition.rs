//! The pure transition: `(memory, previous nodes, probe outcomes, operator overrides, now) ->
//! (memory, next nodes)`. No IO, no clock of its own: the monitor feeds it and publishes.
//!
//! The rules, in order:
//! 1. **Health with hysteresis** ([`Health::step`]): an answer makes a node up; a refused
//!    connection (or an error) makes it down at once; a timeout only after `down_after` in a
//!    row. A suspect node keeps its last answer, so one slow probe changes nothing.
//! 2. **One cluster**: the first system identifier seen (a primary's, else any) is the cluster's;
//!    a node with another one is fenced (`foreign_system_identifier`) and logged loudly.
//! 3. **Roles by timeline**: of the nodes claiming the primary role, those on an older timeline
//!    than the newest ever seen are fenced (sticky until unfenced or back in recovery); one left
//!    is the primary; more than one on the same timeline are in doubt and take no writes.
//! 4. **Replicas** serve reads only while they stream from the current primary (sender host/port,
//!    timeline) and are within the byte and time lag limits; without a primary, any replica not
//!    following a fenced or doubtful node still serves reads.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use super::control::Overrides;
use super::{Excluded, NodeView, Role};

/// What one probe saw on a node that answered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// `pg_is_in_recovery()`.
    pub in_recovery: bool,
    /// Current insert position (primary) or replay position (replica).
    pub wal_lsn: Option<u64>,
    /// The timeline the node writes (primary) or last checkpointed on (replica).
    pub timeline: Option<u32>,
    /// `pg_control_system().system_identifier`.
    pub system_id: Option<u64>,
    /// The WAL receiver (`None`: no receiver row, nothing streams).
    pub receiver: Option<Receiver>,
    /// A replica's replay lag in time, as it says itself (`None` on a primary, or unknown).
    pub replay_lag: Option<Duration>,
}

/// A replica's WAL receiver, as far as the monitor user may see it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Receiver {
    /// Status is `streaming` (`None`: hidden, the monitor user lacks `pg_read_all_stats`).
    pub streaming: Option<bool>,
    /// Host (or unix socket directory) it streams from.
    pub sender_host: Option<String>,
    /// Port it streams from.
    pub sender_port: Option<u16>,
    /// Timeline it receives.
    pub timeline: Option<u32>,
}

/// The result of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The node answered.
    Seen(Observation),
    /// The connection was refused or the server answered with an error: act at once.
    Refused(String),
    /// No answer within the probe timeout: counts only after `down_after` in a row.
    TimedOut,
}

/// A node's health as the probes see it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Health {
    /// Never probed.
    #[default]
    Unprobed,
    /// Answered the last probe.
    Up,
    /// Missed this many probes in a row by timing out, fewer than `down_after`.
    Suspect(u32),
    /// Refused, or timed out `down_after` times in a row.
    Down,
}

impl Health {
    /// The next health after one probe outcome.
    #[must_use]
    pub fn step(self, outcome: &Outcome, down_after: u32) -> Health {
        match (self, outcome) {
            (_, Outcome::Seen(_)) => Health::Up,
            (_, Outcome::Refused(_)) | (Health::Down, Outcome::TimedOut) => Health::Down,
            (Health::Suspect(n), Outcome::TimedOut) if n + 1 >= down_after => Health::Down,
            (Health::Suspect(n), Outcome::TimedOut) => Health::Suspect(n + 1),
            (Health::Up | Health::Unprobed, Outcome::TimedOut) if down_after <= 1 => Health::Down,
            (Health::Up | Health::Unprobed, Outcome::TimedOut) => Health::Suspect(1),
        }
    }
}

/// Limits the transition applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Timeouts in a row before a node is down.
    pub down_after: u32,
    /// A replica further behind than this many bytes serves no reads.
    pub max_lag_bytes: Option<u64>,
    /// A replica missing WAL the primary had this long ago serves no reads.
    pub max_lag: Option<Duration>,
}

/// What one node's memory holds between ticks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeMemory {
    /// Probe health.
    pub health: Health,
    /// The last answer (kept while suspect).
    pub last: Option<Observation>,
    /// A sticky fence and its reason.
    pub fence: Option<Excluded>,
}

/// Everything the transition remembers between ticks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// Per node, in configuration order.
    pub nodes: Vec<NodeMemory>,
    /// The cluster's system identifier, once seen.
    pub system_id: Option<u64>,
    /// The newest timeline a primary was seen on.
    pub newest_timeline: Option<u32>,
    /// The primary's WAL position over time (when it first reached each position), to tell
    /// how long ago a replica's replay position was the primary's. Bounded by [`MAX_SAMPLES`].
    pub samples: VecDeque<(Instant, u64)>,
    /// Which node the samples belong to.
    pub sampled: Option<usize>,
}

/// Bound on the primary position history.
pub const MAX_SAMPLES: usize = 4096;

/// One tick: fold `outcomes` (one per node, in order) into the memory and the node list.
#[must_use]
pub fn step(
    memory: &Memory,
    nodes: &[NodeView],
    outcomes: &[Outcome],
    overrides: &Overrides,
    limits: &Limits,
    now: Instant,
) -> (Memory, Vec<NodeView>) {
    debug_assert_eq!(nodes.len(), outcomes.len());
    let mut mem = memory.clone();
    mem.nodes.resize_with(nodes.len(), NodeMemory::default);
    for ((m, outcome), view) in mem.nodes.iter_mut().zip(outcomes).zip(nodes) {
        remember(m, outcome, limits.down_after, &view.name);
    }
    adopt_system_id(&mut mem);
    for &i in &overrides.unfence {
        if let Some(m) = mem.nodes.get_mut(i) {
            m.fence = None;
            mem.newest_timeline = None;
        }
    }
    let roles = decide_primaries(&mut mem, nodes);
    let mut next: Vec<NodeView> = nodes
        .iter()
        .zip(&mem.nodes)
        .zip(&roles)
        .map(|((n, m), &(role, excluded))| NodeView {
            role,
            excluded,
            wal_lsn: m.last.as_ref().and_then(|o| o.wal_lsn),
            timeline: m.last.as_ref().and_then(|o| o.timeline),
            ..n.clone()
        })
        .collect();
    if overrides.hold_writes {
        for n in next.iter_mut().filter(|n| n.is_routable_primary()) {
            n.excluded = Some(Excluded::Switchover);
        }
    }
    sample_primary(&mut mem, &next, limits, now);
    replay_lags(&mem, &mut next, now);
    judge_replicas(&mem, &mut next, overrides, limits, now);
    (mem, next)
}

/// Health and last answer of one node after one probe.
fn remember(m: &mut NodeMemory, outcome: &Outcome, down_after: u32, name: &str) {
    let before = m.health;
    m.health = before.step(outcome, down_after);
    match outcome {
        Outcome::Seen(o) => {
            // A fenced node back in recovery rejoined as a replica: its fence ends.
            if o.in_recovery {
                m.fence = None;
            }
            m.last = Some(o.clone());
        }
        Outcome::Refused(why) if before != Health::Down => tracing::warn!(node = name, error = %why, "node is down"),
        _ => {}
    }
    if m.health == Health::Down {
        m.last = None;
    }
}

/// The first system identifier seen is the cluster's: a primary's if one answered, else any.
fn adopt_system_id(mem: &mut Memory) {
    if mem.system_id.is_some() {
        return;
    }
    let seen = || mem.nodes.iter().filter_map(|m| m.last.as_ref());
    mem.system_id =
        seen().filter(|o| !o.in_recovery).find_map(|o| o.system_id).or_else(|| seen().find_map(|o| o.system_id));
}

/// Every node's role and exclusion before replica rules: down, foreign, fenced, primary, in
/// doubt, or (provisionally) a readable replica.
fn decide_primaries(mem: &mut Memory, nodes: &[NodeView]) -> Vec<(Role, Option<Excluded>)> {
    let cluster = mem.system_id;
    let foreign = |o: &Observation| matches!((cluster, o.system_id), (Some(c), Some(s)) if c != s);
    let claimants: Vec<usize> = (0..nodes.len())
        .filter(|&i| mem.nodes[i].last.as_ref().is_some_and(|o| !o.in_recovery && !foreign(o)))
        .collect();
    let timelines: Vec<Option<u32>> = mem.nodes.iter().map(|m| m.last.as_ref().and_then(|o| o.timeline)).collect();
    let timeline = |i: usize| timelines[i];
    let newest = claimants.iter().filter_map(|&i| timeline(i)).chain(mem.newest_timeline).max();
    mem.newest_timeline = newest;
    for &i in &claimants {
        let older = matches!((timeline(i), newest), (Some(t), Some(n)) if t < n);
        if older && mem.nodes[i].fence.is_none() {
            tracing::error!(node = %nodes[i].name, timeline = ?timeline(i), newest = ?newest,
                "node claims the primary role on an older timeline: fenced, it gets no traffic until unfenced");
            mem.nodes[i].fence = Some(Excluded::OlderTimeline);
        }
    }
    let free: Vec<usize> = claimants.iter().copied().filter(|&i| mem.nodes[i].fence.is_none()).collect();
    let in_doubt = free.len() > 1;
    if in_doubt {
        tracing::error!(nodes = ?free.iter().map(|&i| &nodes[i].name).collect::<Vec<_>>(),
            "several nodes claim the primary role on the same timeline: writes are refused");
    }
    (0..nodes.len())
        .map(|i| {
            let m = &mem.nodes[i];
            match &m.last {
                None if m.health == Health::Unprobed => (Role::Unknown, Some(Excluded::Unprobed)),
                None => (Role::Down, Some(Excluded::Down)),
                Some(o) if foreign(o) => {
                    if nodes[i].excluded != Some(Excluded::ForeignSystem) {
                        tracing::error!(node = %nodes[i].name, system_id = ?o.system_id, cluster = ?cluster,
                            "node belongs to another cluster (system identifier differs): refused");
                    }
                    (Role::Fenced, Some(Excluded::ForeignSystem))
                }
                Some(o) if o.in_recovery => (Role::Replica, None),
                Some(_) => match m.fence {
                    Some(why) if matches!((timeline(i), newest), (Some(t), Some(n)) if t < n) => {
                        (Role::Fenced, Some(why))
                    }
                    Some(_) => (Role::Fenced, Some(Excluded::Fenced)),
                    None if in_doubt => (Role::Primary, Some(Excluded::InDoubt)),
                    None => (Role::Primary, None),
                },
            }
        })
        .collect()
}

/// Remember when the primary first reached each WAL position, within the lag window.
fn sample_primary(mem: &mut Memory, next: &[NodeView], limits: &Limits, now: Instant) {
    let primary = next.iter().find(|n| n.role == Role::Primary && n.excluded != Some(Excluded::InDoubt));
    let Some((index, Some(lsn))) = primary.map(|p| (p.index, p.wal_lsn)) else { return };
    if mem.sampled != Some(index) {
        mem.samples.clear();
        mem.sampled = Some(index);
    }
    if mem.samples.back().is_none_or(|&(_, last)| lsn > last) {
        mem.samples.push_back((now, lsn));
    }
    let window = limits.max_lag.unwrap_or(Duration::ZERO) * 2 + Duration::from_secs(1);
    while mem.samples.len() > MAX_SAMPLES
        || mem.samples.get(1).is_some_and(|&(t, _)| now.saturating_duration_since(t) > window)
    {
        mem.samples.pop_front();
    }
}

/// How long ago the primary had WAL that a replica at `replayed` still lacks.
#[must_use]
pub fn time_lag(samples: &VecDeque<(Instant, u64)>, replayed: u64, now: Instant) -> Duration {
    samples.iter().find(|&&(_, lsn)| lsn > replayed).map_or(Duration::ZERO, |&(t, _)| now.saturating_duration_since(t))
}

/// Every replica's replay lag in time. What the replica says (`now()` minus its last replayed
/// commit while it has received more than it replayed) is right when it is far behind, but jumps
/// to "time since the last commit" for the moment a commit-less record (a checkpoint) is in
/// flight on a quiet cluster; when the replica's position is within the monitor's own history of
/// the primary's positions, that history bounds it.
fn replay_lags(mem: &Memory, next: &mut [NodeView], now: Instant) {
    for (n, m) in next.iter_mut().zip(&mem.nodes) {
        let Some(o) = m.last.as_ref().filter(|o| o.in_recovery) else {
            n.replay_lag = None;
            continue;
        };
        let measured = match (o.wal_lsn, mem.samples.front()) {
            (Some(replayed), Some(&(_, oldest))) if replayed >= oldest => Some(time_lag(&mem.samples, replayed, now)),
            _ => None,
        };
        n.replay_lag = match (o.replay_lag, measured) {
            (Some(said), Some(seen)) => Some(said.min(seen)),
            (said, seen) => said.or(seen),
        };
    }
}

/// Apply the replica rules to every node that is provisionally a readable replica.
fn judge_replicas(mem: &Memory, next: &mut [NodeView], overrides: &Overrides, limits: &Limits, now: Instant) {
    let snapshot: Vec<NodeView> = next.to_vec();
    let ctx = Context::new(&snapshot);
    for (n, m) in next.iter_mut().zip(&mem.nodes) {
        if n.role != Role::Replica {
            continue;
        }
        let Some(o) = m.last.as_ref() else { continue };
        let why = if overrides.drained.contains(&n.index) {
            Some(Excluded::Drained)
        } else {
            ctx.replica_exclusion(o, mem, limits, now)
        };
        if let Some(why) = why {
            n.role = Role::Stale;
            n.excluded = Some(why);
        }
    }
}

/// What the replica rules need to know about the other nodes.
struct Context<'a> {
    nodes: &'a [NodeView],
    primary: Option<&'a NodeView>,
    in_doubt: BTreeSet<usize>,
}

impl<'a> Context<'a> {
    fn new(nodes: &'a [NodeView]) -> Self {
        let primary = nodes.iter().find(|n| n.role == Role::Primary && n.excluded != Some(Excluded::InDoubt));
        let in_doubt = nodes.iter().filter(|n| n.excluded == Some(Excluded::InDoubt)).map(|n| n.index).collect();
        Self { nodes, primary, in_doubt }
    }

    fn replica_exclusion(&self, o: &Observation, mem: &Memory, limits: &Limits, now: Instant) -> Option<Excluded> {
        let receiver = o.receiver.as_ref();
        let upstream = receiver.and_then(|r| self.upstream(r));
        if upstream.is_some_and(|u| self.nodes[u].role == Role::Fenced) {
            return Some(Excluded::UpstreamFenced);
        }
        if upstream.is_some_and(|u| self.in_doubt.contains(&u)) {
            return Some(Excluded::UpstreamInDoubt);
        }
        if !self.in_doubt.is_empty() && (upstream.is_none() || receiver.and_then(|r| r.streaming) != Some(true)) {
            return Some(Excluded::UpstreamInDoubt);
        }
        let primary = self.primary?;
        match receiver {
            None => return Some(Excluded::NotStreaming),
            Some(r) if r.streaming == Some(false) => return Some(Excluded::NotStreaming),
            Some(r) if r.sender_port.is_some() && upstream != Some(primary.index) => {
                return Some(Excluded::UpstreamUnknown)
            }
            Some(r) if matches!((r.timeline, primary.timeline), (Some(a), Some(b)) if a < b) => {
                return Some(Excluded::OlderTimeline)
            }
            Some(_) => {}
        }
        lag_exclusion(o.wal_lsn, primary.wal_lsn, mem, limits, now)
    }

    /// The configured node a WAL receiver streams from, if any.
    fn upstream(&self, r: &Receiver) -> Option<usize> {
        let (host, port) = (r.sender_host.as_deref()?, r.sender_port?);
        self.nodes.iter().find(|n| n.port == port && same_host(host, &n.host)).map(|n| n.index)
    }
}

/// Byte and time lag checks against the primary.
fn lag_exclusion(
    replayed: Option<u64>,
    primary: Option<u64>,
    mem: &Memory,
    limits: &Limits,
    now: Instant,
) -> Option<Excluded> {
    let replayed = replayed?;
    if let (Some(max), Some(p)) = (limits.max_lag_bytes, primary) {
        if p.saturating_sub(replayed) > max {
            return Some(Excluded::LagBytes);
        }
    }
    match limits.max_lag {
        Some(max) if time_lag(&mem.samples, replayed, now) > max => Some(Excluded::LagTime),
        _ => None,
    }
}

/// True if a WAL sender address names the configured host. A unix socket directory (a path)
/// can only be on this machine, so it matches a loopback host; loopback names match each other.
#[must_use]
pub fn same_host(sender: &str, configured: &str) -> bool {
    let local = |h: &str| h.starts_with('/') || h == "localhost" || h == "::1" || h.starts_with("127.");
    sender.eq_ignore_ascii_case(configured) || (local(sender) && local(configured))
}

#[cfg(test)]
#[path = "transition_tests.rs"]
mod tests;
