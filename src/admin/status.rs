//! What the admin pages say, decided from one topology snapshot: pure functions, no IO.

use serde::Serialize;

use crate::topology::{NodeView, Role, Topology};

/// What `/health` says about the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Verdict {
    /// One primary, every other node a readable replica.
    Ok,
    /// One primary (writes work), but some node is down, stale or unknown.
    Degraded,
    /// No single primary: writes cannot be served.
    Down,
}

/// `/health`'s body.
#[derive(Serialize)]
pub(super) struct Health<'a> {
    status: Verdict,
    primary: Option<NodeHealth<'a>>,
    replicas: Vec<NodeHealth<'a>>,
    generation: u64,
}

/// One node in `/health` (and the status page): everything an operator asks about it.
#[derive(Serialize)]
pub(super) struct NodeHealth<'a> {
    name: &'a str,
    role: &'static str,
    lag_bytes: Option<u64>,
    lag_seconds: Option<f64>,
    excluded_reason: Option<&'static str>,
}

/// A node as `/health` shows it; a new per-node fact is one more line here.
pub(super) fn node_health(n: &NodeView, primary_lsn: Option<u64>) -> NodeHealth<'_> {
    let lag_bytes = match (n.role, primary_lsn, n.wal_lsn) {
        (Role::Replica | Role::Stale, Some(p), Some(r)) => Some(p.saturating_sub(r)),
        (Role::Primary, _, _) => Some(0),
        _ => None,
    };
    let lag_seconds = lag_seconds(n);
    let excluded_reason = match n.role {
        Role::Primary | Role::Replica => None,
        other => Some(super::events::role_reason(other)),
    };
    NodeHealth { name: &n.name, role: n.role.as_str(), lag_bytes, lag_seconds, excluded_reason }
}

/// A node's replay lag in seconds, as everything that shows lag shows it: zero for the primary,
/// what the replica says for a replica, nothing for a node that is neither.
#[must_use]
pub fn lag_seconds(n: &NodeView) -> Option<f64> {
    match n.role {
        Role::Primary => Some(0.0),
        Role::Replica | Role::Stale => n.replay_lag.map(|d| d.as_secs_f64()),
        _ => None,
    }
}

/// The health of one snapshot: ok, degraded or down, with every node.
pub(super) fn health(topology: &Topology) -> Health<'_> {
    let (primary, others) = primary_first(topology);
    let primary_lsn = primary.and_then(|p| p.wal_lsn);
    let status = match primary {
        None => Verdict::Down,
        Some(_) if others.iter().all(|n| n.role == Role::Replica) => Verdict::Ok,
        Some(_) => Verdict::Degraded,
    };
    Health {
        status,
        primary: primary.map(|p| node_health(p, primary_lsn)),
        replicas: others.into_iter().map(|n| node_health(n, primary_lsn)).collect(),
        generation: topology.generation,
    }
}

/// The primary (if there is exactly one) and every other node in configuration order.
pub(super) fn primary_first(topology: &Topology) -> (Option<&NodeView>, Vec<&NodeView>) {
    let primary = topology.primary();
    let others = topology.nodes.iter().filter(|n| Some(n.index) != primary.map(|p| p.index)).collect();
    (primary, others)
}

impl Health<'_> {
    /// The verdict.
    pub(super) fn status(&self) -> Verdict {
        self.status
    }
}

/// Whether reads can be served: a replica, or else the primary (the router's fallback).
pub(super) fn read_health(topology: &Topology) -> Result<(), &'static str> {
    if topology.replicas().next().is_some() || topology.primary().is_some() {
        Ok(())
    } else {
        Err("no node can serve reads")
    }
}

#[derive(Serialize)]
struct TopologyJson<'a> {
    generation: u64,
    primary: Option<&'a str>,
    nodes: Vec<NodeJson<'a>>,
}

#[derive(Serialize)]
struct NodeJson<'a> {
    index: usize,
    name: &'a str,
    host: &'a str,
    port: u16,
    role: &'static str,
    weight: u32,
    wal_lsn: Option<u64>,
    lag_seconds: Option<f64>,
    excluded_reason: Option<&'static str>,
    timeline: Option<u32>,
}

impl<'a> From<&'a NodeView> for NodeJson<'a> {
    fn from(n: &'a NodeView) -> Self {
        let (name, host, role) = (n.name.as_str(), n.host.as_str(), n.role.as_str());
        let (excluded_reason, timeline) = (n.excluded.map(|e| e.as_str()), n.timeline);
        NodeJson {
            index: n.index,
            name,
            host,
            port: n.port,
            role,
            weight: n.weight,
            wal_lsn: n.wal_lsn,
            lag_seconds: lag_seconds(n),
            excluded_reason,
            timeline,
        }
    }
}

/// The snapshot as JSON: generation, the primary's name and every node in configuration order.
pub(super) fn topology_json(topology: &Topology) -> String {
    let json = TopologyJson {
        generation: topology.generation,
        primary: topology.primary().map(|n| n.name.as_str()),
        nodes: topology.nodes.iter().map(NodeJson::from).collect(),
    };
    // Plain structs with string keys always serialize.
    serde_json::to_string(&json).expect("topology serializes to JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(index: usize, role: Role) -> NodeView {
        let name = format!("pg{index}");
        NodeView {
            index,
            name,
            host: "127.0.0.1".into(),
            port: 5432,
            role,
            weight: 1,
            wal_lsn: None,
            excluded: None,
            timeline: None,
            replay_lag: None,
        }
    }

    fn topology(roles: &[Role]) -> Topology {
        Topology { generation: 1, nodes: roles.iter().enumerate().map(|(i, r)| node(i, *r)).collect() }
    }

    #[test]
    fn health_verdicts() {
        use Role::*;
        let no_reads = Err("no node can serve reads");
        let cases: [(&[Role], Verdict, Result<(), &str>); 7] = [
            (&[Primary, Replica], Verdict::Ok, Ok(())),
            (&[Primary, Down], Verdict::Degraded, Ok(())),
            (&[Primary, Stale, Replica], Verdict::Degraded, Ok(())),
            (&[Down, Replica], Verdict::Down, Ok(())),
            (&[Down, Unknown], Verdict::Down, no_reads),
            (&[Primary, Primary], Verdict::Down, no_reads),
            (&[], Verdict::Down, no_reads),
        ];
        for (roles, write, read) in cases {
            let t = topology(roles);
            assert_eq!((health(&t).status(), read_health(&t)), (write, read), "{roles:?}");
        }
    }

    #[test]
    fn health_json_names_every_node_with_lag_and_reason() {
        let mut t = topology(&[Role::Primary, Role::Replica, Role::Down]);
        t.nodes[0].wal_lsn = Some(1000);
        t.nodes[1].wal_lsn = Some(900);
        t.nodes[1].replay_lag = Some(std::time::Duration::from_millis(1500));
        let json = serde_json::to_value(health(&t)).unwrap();
        assert_eq!(json["primary"]["lag_seconds"], 0.0);
        assert_eq!(json["replicas"][0]["lag_seconds"], 1.5);
        assert_eq!(json["replicas"][1]["lag_seconds"], serde_json::Value::Null);
        assert_eq!(json["status"], "degraded");
        assert_eq!(json["primary"]["name"], "pg0");
        assert_eq!(json["replicas"][0]["lag_bytes"], 100);
        assert_eq!(json["replicas"][0]["excluded_reason"], serde_json::Value::Null);
        assert_eq!(json["replicas"][1]["role"], "down");
        assert_eq!(json["replicas"][1]["excluded_reason"], "not answering the monitor's probe");
        assert_eq!(json["generation"], 1);
    }
}
