//! `/stats`: everything the live status page shows, as one JSON document (nodes with role,
//! lag, excluded reason, pool use and units served; clients; recent events), and the page itself.
//!
//! `/stats?wait_generation=G` answers at once unless the topology is still at generation `G`;
//! then it waits (at most [`LONG_POLL`]) for the next one, so an open page shows a change as soon
//! as the monitor sees it without hammering the endpoint.

use std::collections::HashMap;
use std::time::Duration;

use serde::Serialize;

use super::status::{health, node_health, primary_first, NodeHealth, Verdict};
use super::{AdminState, Event};
use crate::topology::Topology;

/// The status page: one file, no external assets.
pub(super) const PAGE: &str = include_str!("status.html");

/// Longest a `/stats?wait_generation=` request waits for a topology change.
pub const LONG_POLL: Duration = Duration::from_secs(5);

#[derive(Serialize)]
struct Stats<'a> {
    generation: u64,
    status: Verdict,
    clients: i64,
    draining: bool,
    paused: String,
    nodes: Vec<NodeStats<'a>>,
    events: Vec<Event>,
    /// Status pages waiting for the next change right now.
    watchers: usize,
}

#[derive(Serialize)]
struct NodeStats<'a> {
    #[serde(flatten)]
    health: NodeHealth<'a>,
    host: &'a str,
    port: u16,
    pool_size: usize,
    pool_in_use: usize,
    pool_idle: usize,
    units: u64,
    unit_mean_ms: f64,
    unit_p99_ms: Option<f64>,
    /// Protocol bytes sent to and received from the node's server connections so far.
    bytes_sent: u64,
    bytes_received: u64,
}

/// Wait (bounded) while the topology is still at `generation`.
pub(super) async fn wait_for_change(state: &AdminState, generation: u64) {
    let mut rx = state.topology.subscribe();
    let _watching = state.events.watching();
    let _ = tokio::time::timeout(LONG_POLL, rx.wait_for(|g| *g != generation)).await;
}

/// The document.
pub(super) fn stats_json(state: &AdminState) -> String {
    let topology = state.topology.load();
    let stats = build(state, &topology);
    // Plain structs with string keys always serialize.
    serde_json::to_string(&stats).expect("stats serialize to JSON")
}

fn build<'a>(state: &AdminState, topology: &'a Topology) -> Stats<'a> {
    let mut pools: HashMap<usize, (usize, usize, usize)> = HashMap::new();
    for pool in state.shared.pools.all() {
        let (size, in_use, idle) = pool.usage();
        let e = pools.entry(pool.node()).or_default();
        *e = (e.0 + size, e.1 + in_use, e.2 + idle);
    }
    let (primary, others) = primary_first(topology);
    let primary_lsn = primary.and_then(|p| p.wal_lsn);
    let nodes = primary
        .into_iter()
        .chain(others)
        .map(|view| {
            let (pool_size, pool_in_use, pool_idle) = pools.get(&view.index).copied().unwrap_or_default();
            let node = state.metrics.node(view.index);
            let (units, (bytes_sent, bytes_received)) = (node.units(), node.bytes());
            NodeStats {
                health: node_health(view, primary_lsn),
                host: &view.host,
                port: view.port,
                pool_size,
                pool_in_use,
                pool_idle,
                units: units.count,
                unit_mean_ms: units.mean_seconds * 1000.0,
                unit_p99_ms: units.p99_seconds.map(|s| s * 1000.0),
                bytes_sent,
                bytes_received,
            }
        })
        .collect();
    let lifecycle = &state.shared.lifecycle;
    Stats {
        generation: topology.generation,
        status: health(topology).status(),
        clients: state.metrics.clients(),
        draining: lifecycle.is_draining(),
        paused: format!("{:?}", lifecycle.paused()),
        nodes,
        events: state.events.recent(),
        watchers: state.events.watchers(),
    }
}
