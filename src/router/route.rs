//! [`route`]: which nodes may run a classified unit, in the order to try them, and why.
//!
//! Precedence, first match wins:
//! 1. the session is inside a transaction or pinned (`stuck_to`): that node, never another;
//! 2. the user's `default_route = primary`: the primary;
//! 3. the user's `default_route = replica`: replicas only, never the primary (a write sent there
//!    fails with 25006, which is what that setting asks for);
//! 4. a `/* sluice: primary */` hint: the primary;
//! 5. session state (SET etc.) exists: the primary (until state replay exists);
//! 6. the session's defaults make a hot standby refuse it (SERIALIZABLE, forced read-write):
//!    the primary (`StandbyRefused` for reads), even with a replica hint;
//! 7. a `/* sluice: replica */` hint: the read path, even for a write (the session retries a
//!    25006 rejection on the primary);
//! 8. a write: the primary; a node-local read: the primary (`NodeLocal`); a read: the read path.
//!
//! The read path is the replicas in weighted round-robin order starting at the session's
//! `ticket`, then, per [`PrimaryReads`]: `Fallback` appends the primary, `Always` makes it one
//! more member of the rotation (with its weight), `Never` leaves it out. Read-your-writes: only
//! replicas that replayed the session's `min_lsn` take part; if there are replicas but none has,
//! the primary alone serves the read (`ReadYourWrites`), whatever the policy.

use super::{Access, Class, DefaultRoute, Hint, PrimaryReads, Reason, Route};
use crate::topology::{NodeView, Topology};
use std::ops::Deref;

/// What routing needs to know about the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionView {
    /// The node the open transaction runs on, if the session is inside a transaction or pinned.
    pub stuck_to: Option<usize>,
    /// The session changed session state (SET etc.): until state replay exists, reads stay on
    /// the primary.
    pub has_session_state: bool,
    /// The user's configured default route.
    pub default_route: DefaultRoute,
    /// A per-call round-robin ticket (the caller increments a counter); replicas are picked
    /// with it.
    pub ticket: u64,
    /// Read-your-writes: the WAL position of the session's last write. Only replicas that have
    /// replayed it may serve the session's reads; if none has, the primary does.
    pub min_lsn: Option<u64>,
    /// The session's defaults make a hot standby refuse its statements (see
    /// [`super::StandbyRefusal`]): its reads go to the primary.
    pub standby_refused: bool,
}

/// Cluster-wide routing policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Whether the primary serves reads.
    pub primary_reads: PrimaryReads,
}

/// Decide where a classified unit runs.
#[must_use]
pub fn route(class: &Class, session: &SessionView, topology: &Topology, policy: &Policy) -> Route {
    if let Some(node) = session.stuck_to {
        return Route { candidates: Candidates::one(node), reason: Reason::InTransaction };
    }
    match session.default_route {
        DefaultRoute::Primary => return to_primary(topology, Reason::UserDefault),
        DefaultRoute::Replica => return reads(topology, PrimaryReads::Never, session, Reason::UserDefaultReplica),
        DefaultRoute::Auto => {}
    }
    if class.hint == Some(Hint::Primary) {
        return to_primary(topology, Reason::HintPrimary);
    }
    if session.has_session_state {
        return to_primary(topology, Reason::SessionState);
    }
    if session.standby_refused {
        let reason = match class.access {
            Access::Read => Reason::StandbyRefused,
            Access::NodeLocal => Reason::NodeLocal,
            Access::Write => Reason::Write,
        };
        return to_primary(topology, reason);
    }
    if class.hint == Some(Hint::Replica) {
        return reads(topology, policy.primary_reads, session, Reason::HintReplica);
    }
    match class.access {
        Access::Write => to_primary(topology, Reason::Write),
        Access::NodeLocal => to_primary(topology, Reason::NodeLocal),
        Access::Read => reads(topology, policy.primary_reads, session, Reason::ReadOnReplica),
    }
}

/// The primary, or nothing (`NoPrimary`).
fn to_primary(topology: &Topology, reason: Reason) -> Route {
    match topology.primary() {
        Some(primary) => Route { candidates: Candidates::one(primary.index), reason },
        None => Route { candidates: Candidates::default(), reason: Reason::NoPrimary },
    }
}

/// The read path. `on_replica` is the reason when a replica comes first.
fn reads(topology: &Topology, primary_reads: PrimaryReads, session: &SessionView, on_replica: Reason) -> Route {
    let primary = topology.primary();
    let have_replicas = topology.replicas().next().is_some();
    // The members of the rotation, walked (not collected) once to weigh them and once to list
    // them: routing allocates nothing (the candidate list holds a few nodes inline).
    let always = if primary_reads == PrimaryReads::Always { primary } else { None };
    let members = || topology.replicas().filter(|n| n.has_replayed(session.min_lsn)).chain(always);
    if have_replicas && !topology.replicas().any(|n| n.has_replayed(session.min_lsn)) {
        // No replica has replayed this session's last write yet: its own write must be visible.
        if let Some(p) = primary {
            return Route { candidates: Candidates::one(p.index), reason: Reason::ReadYourWrites };
        }
    }
    let fallback = if primary_reads == PrimaryReads::Fallback { primary } else { None };
    let mut candidates = Candidates::default();
    rotation(members, session.ticket, &mut candidates);
    candidates.extend(fallback.map(|p| p.index));
    let reason = match candidates.first() {
        None => Reason::NoReplica,
        Some(&first) if primary.is_some_and(|p| p.index == first) => {
            if have_replicas {
                Reason::ReadOnPrimary
            } else {
                Reason::ReadFallbackPrimary
            }
        }
        Some(_) => on_replica,
    };
    Route { candidates, reason }
}

/// Every member once into `out`, starting with the one `ticket` lands on when each member owns
/// `weight` consecutive tickets, then the others in order.
fn rotation<'t, I>(members: impl Fn() -> I, ticket: u64, out: &mut Candidates)
where
    I: Iterator<Item = &'t NodeView>,
{
    let total: u64 = members().map(|n| u64::from(n.weight.max(1))).sum();
    if total == 0 {
        return;
    }
    let mut slot = ticket % total;
    let mut start = 0;
    for (i, node) in members().enumerate() {
        let weight = u64::from(node.weight.max(1));
        if slot < weight {
            start = i;
            break;
        }
        slot -= weight;
    }
    out.extend(members().skip(start).map(|n| n.index));
    out.extend(members().take(start).map(|n| n.index));
}

/// How many candidates a route holds without allocating: a primary and a few replicas.
const INLINE_CANDIDATES: usize = 4;

/// A route's node indices in the order to try them: up to [`INLINE_CANDIDATES`] inline (a
/// route is made per unit, and a `Vec` was one allocation each time), more in a `Vec`.
/// Read it as a slice.
#[derive(Clone, Default)]
pub struct Candidates {
    inline: [usize; INLINE_CANDIDATES],
    len: usize,
    /// All of them, once there are more than fit inline.
    spilled: Vec<usize>,
}

impl Candidates {
    /// Just `node`.
    #[must_use]
    pub fn one(node: usize) -> Self {
        let mut out = Self::default();
        out.push(node);
        out
    }

    /// Append `node`.
    pub fn push(&mut self, node: usize) {
        if self.len < INLINE_CANDIDATES {
            self.inline[self.len] = node;
            self.len += 1;
            return;
        }
        if self.spilled.is_empty() {
            self.spilled.extend_from_slice(&self.inline);
        }
        self.spilled.push(node);
    }
}

impl Deref for Candidates {
    type Target = [usize];

    fn deref(&self) -> &[usize] {
        if self.spilled.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spilled
        }
    }
}

impl Extend<usize> for Candidates {
    fn extend<I: IntoIterator<Item = usize>>(&mut self, iter: I) {
        iter.into_iter().for_each(|n| self.push(n));
    }
}

impl PartialEq for Candidates {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for Candidates {}

impl PartialEq<Vec<usize>> for Candidates {
    fn eq(&self, other: &Vec<usize>) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for Candidates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}
