//! Recent operator-visible events (topology changes, reloads, drains) for the status page and
//! the log: a bounded ring, newest last, and the pure diff that turns two topology snapshots into
//! one event per changed node, each with its reason.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

use crate::topology::{Role, Topology};

/// Events kept; older ones are dropped.
pub const MAX_EVENTS: usize = 100;

/// One event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub at_unix: u64,
    /// `topology`, `reload`, `lifecycle`.
    pub kind: &'static str,
    /// What happened, for a human.
    pub text: String,
}

/// The ring of recent events, and how many status pages wait for the next one.
#[derive(Default)]
pub struct Events {
    ring: Mutex<VecDeque<Event>>,
    watchers: Arc<AtomicUsize>,
}

/// Counts one waiting status page while it lives.
pub struct Watching(Arc<AtomicUsize>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Events {
    /// Record an event (and drop the oldest beyond [`MAX_EVENTS`]).
    pub fn push(&self, kind: &'static str, text: String) {
        let at_unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut ring = self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if ring.len() == MAX_EVENTS {
            ring.pop_front();
        }
        ring.push_back(Event { at_unix, kind, text });
    }

    /// Count a status page waiting for a change while the returned guard lives.
    #[must_use]
    pub fn watching(&self) -> Watching {
        self.watchers.fetch_add(1, Ordering::AcqRel);
        Watching(Arc::clone(&self.watchers))
    }

    /// Status pages waiting now.
    #[must_use]
    pub fn watchers(&self) -> usize {
        self.watchers.load(Ordering::Acquire)
    }

    /// Every kept event, oldest first.
    #[must_use]
    pub fn recent(&self) -> Vec<Event> {
        self.ring.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect()
    }
}

/// Why a node is in `role`, as the log and the status page say it.
#[must_use]
pub fn role_reason(role: Role) -> &'static str {
    match role {
        Role::Primary => "accepts writes (not in recovery)",
        Role::Replica => "in recovery, streaming from the primary, within the lag limit",
        Role::Stale => {
            "in recovery but not streaming from the primary, or lagging beyond routing.replica_max_lag_bytes"
        }
        Role::Down => "not answering the monitor's probe",
        Role::Fenced => "claims the primary role but is not the primary (older timeline or in doubt): no traffic",
        Role::Unknown => "not probed yet",
    }
}

/// One line per node whose role changed, or that joined or left the topology.
#[must_use]
pub fn topology_changes(old: &Topology, new: &Topology) -> Vec<String> {
    let mut lines = Vec::new();
    for n in &new.nodes {
        match old.nodes.iter().find(|o| o.index == n.index) {
            Some(o) if o.role == n.role => {}
            Some(o) => {
                let why = match n.excluded {
                    Some(e) => format!("{}; excluded_reason: {}", role_reason(n.role), e.as_str()),
                    None => role_reason(n.role).to_string(),
                };
                lines.push(format!("{}: {} -> {} ({why})", n.name, o.role.as_str(), n.role.as_str()));
            }
            None => lines.push(format!("{}: added by a reload ({})", n.name, n.role.as_str())),
        }
    }
    for o in old.nodes.iter().filter(|o| !new.nodes.iter().any(|n| n.index == o.index)) {
        lines.push(format!("{}: removed by a reload", o.name));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::NodeView;

    fn t(roles: &[(usize, Role)]) -> Topology {
        let nodes = roles
            .iter()
            .map(|&(index, role)| NodeView {
                index,
                name: format!("n{index}"),
                host: "h".into(),
                port: 1,
                role,
                weight: 1,
                wal_lsn: None,
                excluded: None,
                timeline: None,
                replay_lag: None,
            })
            .collect();
        Topology { generation: 1, nodes }
    }

    #[test]
    fn one_line_per_changed_node_with_its_reason() {
        let old = t(&[(0, Role::Primary), (1, Role::Replica), (2, Role::Replica)]);
        let new = t(&[(0, Role::Primary), (1, Role::Down), (3, Role::Unknown)]);
        let lines = topology_changes(&old, &new);
        assert_eq!(
            lines,
            [
                "n1: replica -> down (not answering the monitor's probe)",
                "n3: added by a reload (unknown)",
                "n2: removed by a reload",
            ]
        );
        assert!(topology_changes(&new, &new).is_empty());
    }

    #[test]
    fn the_ring_is_bounded() {
        let e = Events::default();
        for i in 0..MAX_EVENTS + 5 {
            e.push("topology", format!("e{i}"));
        }
        let recent = e.recent();
        assert_eq!(recent.len(), MAX_EVENTS);
        assert_eq!(recent[0].text, "e5");
    }
}
