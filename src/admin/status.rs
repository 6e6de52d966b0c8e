//! What the admin pages say, decided from one topology snapshot: pure functions, no IO.

use serde::Serialize;

use crate::topology::{NodeView, Role, Topology};

/// Whether writes can be served: exactly one primary.
pub(super) fn write_health(topology: &Topology) -> Result<(), &'static str> {
    match topology.nodes.iter().filter(|n| n.role == Role::Primary).count() {
        1 => Ok(()),
        0 => Err("no primary"),
        _ => Err("more than one node claims to be primary"),
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

/// A WAL position the way PostgreSQL prints it (`16/B374D848`).
pub(super) fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The plain-text status page: a summary and one table row per node.
pub(super) fn page(topology: &Topology, clients: i64) -> String {
    let primary = topology.primary().map_or("none", |n| n.name.as_str());
    let mut out = format!(
        "sluice\n\ntopology generation  {}\nprimary              {primary}\nclient connections   {clients}\n\n",
        topology.generation
    );
    let header = ["node", "host", "port", "role", "weight", "wal_lsn"].map(String::from);
    let rows: Vec<[String; 6]> = std::iter::once(header).chain(topology.nodes.iter().map(row)).collect();
    out.push_str(&table(&rows));
    out
}

fn row(n: &NodeView) -> [String; 6] {
    let lsn = n.wal_lsn.map_or_else(|| "-".to_string(), format_lsn);
    [n.name.clone(), n.host.clone(), n.port.to_string(), n.role.as_str().to_string(), n.weight.to_string(), lsn]
}

/// Left-aligned columns, two spaces apart.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: [usize; N] = std::array::from_fn(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0));
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
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
        }
    }

    fn topology(roles: &[Role]) -> Topology {
        Topology { generation: 1, nodes: roles.iter().enumerate().map(|(i, r)| node(i, *r)).collect() }
    }

    type Verdict = Result<(), &'static str>;

    #[test]
    fn health_verdicts() {
        use Role::*;
        let cases: [(&[Role], Verdict, Verdict); 6] = [
            (&[Primary, Replica], Ok(()), Ok(())),
            (&[Primary, Down], Ok(()), Ok(())),
            (&[Down, Replica], Err("no primary"), Ok(())),
            (&[Down, Unknown], Err("no primary"), Err("no node can serve reads")),
            (&[Primary, Primary], Err("more than one node claims to be primary"), Err("no node can serve reads")),
            (&[], Err("no primary"), Err("no node can serve reads")),
        ];
        for (roles, write, read) in cases {
            let t = topology(roles);
            assert_eq!((write_health(&t), read_health(&t)), (write, read), "{roles:?}");
        }
    }

    #[test]
    fn lsn_prints_like_postgres() {
        assert_eq!(format_lsn(0), "0/0");
        assert_eq!(format_lsn(0x16_B374_D848), "16/B374D848");
    }

    #[test]
    fn page_has_a_row_per_node() {
        let mut t = topology(&[Role::Primary, Role::Replica]);
        t.nodes[1].wal_lsn = Some(0x300_0060);
        let page = page(&t, 3);
        assert!(page.contains("primary              pg0\n"), "{page}");
        assert!(page.contains("client connections   3\n"), "{page}");
        assert!(page.contains("pg0   127.0.0.1  5432  primary  1       -\n"), "{page}");
        assert!(page.contains("pg1   127.0.0.1  5432  replica  1       0/3000060\n"), "{page}");
    }
}
