//! Operator endpoints that change the topology: `POST /switchover` (`{"target": "<node>"}`),
//! `POST /nodes/{name}/drain`, `/undrain` and `/unfence`. They never publish a topology
//! themselves: they leave a request in the monitor's [`Control`] box, wake it, and wait (bounded)
//! until the snapshot shows the result. Every answer is JSON: the outcome, or the reason nothing
//! changed (404 unknown node, 409 not possible now).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::backend::probe::SqlProbe;
use crate::backend::Pools;
use crate::config::Config;
use crate::live::Live;
use crate::topology::control::{Control, Overrides};
use crate::topology::{NodeView, Role, Topology, TopologyHandle};

/// The handles the operator endpoints use.
#[derive(Clone)]
pub struct FailoverAdmin {
    pub(super) topology: TopologyHandle,
    pub(super) control: Control,
    pub(super) config: Arc<Live<Config>>,
    pub(super) pools: Arc<Pools>,
    /// One switchover at a time.
    pub(super) busy: Arc<tokio::sync::Mutex<()>>,
}

impl FailoverAdmin {
    /// Endpoints over the monitor's `control`, probe connections of the configuration in force
    /// (for `pg_promote()`) and the pools (to see units still running on the old primary).
    #[must_use]
    pub fn new(topology: TopologyHandle, control: Control, config: Arc<Live<Config>>, pools: Arc<Pools>) -> Self {
        Self { topology, control, config, pools, busy: Arc::default() }
    }

    /// Probe connections to the nodes of the configuration in force now (a reload may have
    /// added some).
    pub(super) fn probe(&self) -> SqlProbe {
        SqlProbe::for_config(&self.config, &self.pools)
    }

    /// How long to wait for the monitor to show a requested change: a few probe rounds.
    pub(super) fn settle_time(&self) -> Duration {
        (self.config.monitor.interval + self.config.monitor.probe_timeout) * 4
    }

    /// Wait until `done` holds for the current snapshot, at most `max`; returns the last one.
    pub(super) async fn wait_until(&self, max: Duration, done: impl Fn(&Topology) -> bool) -> (bool, Arc<Topology>) {
        let deadline = tokio::time::Instant::now() + max;
        loop {
            let t = self.topology.load();
            if done(&t) {
                return (true, t);
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return (false, t);
            }
            self.topology.changed_since(t.generation, left.min(self.config.monitor.interval)).await;
        }
    }
}

/// The operator routes over `ops`.
pub fn router(ops: FailoverAdmin) -> Router {
    Router::new()
        .route("/switchover", post(super::switchover::switchover))
        .route("/nodes/{name}/drain", post(drain))
        .route("/nodes/{name}/undrain", post(undrain))
        .route("/nodes/{name}/unfence", post(unfence))
        .with_state(ops)
}

/// A JSON answer.
pub(super) fn reply(status: StatusCode, body: &Value) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], format!("{body}\n")).into_response()
}

/// A refusal: nothing changed, and why.
pub(super) fn refuse(status: StatusCode, reason: &str) -> Response {
    reply(status, &json!({ "ok": false, "reason": reason }))
}

/// The node called `name`.
pub(super) fn find(t: &Topology, name: &str) -> Option<NodeView> {
    t.nodes.iter().find(|n| n.name == name).cloned()
}

fn unknown(name: &str) -> Response {
    refuse(StatusCode::NOT_FOUND, &format!("no node is called {name:?}"))
}

/// A node as JSON: name, role and why it is excluded.
pub(super) fn node_json(n: &NodeView) -> Value {
    json!({ "name": n.name, "role": n.role.as_str(), "excluded_reason": n.excluded.map(|e| e.as_str()) })
}

async fn drain(State(ops): State<FailoverAdmin>, Path(name): Path<String>) -> Response {
    set_drained(ops, name, true).await
}

async fn undrain(State(ops): State<FailoverAdmin>, Path(name): Path<String>) -> Response {
    set_drained(ops, name, false).await
}

async fn set_drained(ops: FailoverAdmin, name: String, drained: bool) -> Response {
    let Some(node) = find(&ops.topology.load(), &name) else { return unknown(&name) };
    if drained && matches!(node.role, Role::Primary) {
        return refuse(StatusCode::CONFLICT, &format!("{name} is the primary; only replicas are drained"));
    }
    ops.control.update(|o: &mut Overrides| {
        if drained {
            o.drained.insert(node.index);
        } else {
            o.drained.remove(&node.index);
        }
    });
    let shows = |t: &Topology| {
        let n = &t.nodes[node.index];
        (n.excluded == Some(crate::topology::Excluded::Drained)) == drained
    };
    let (_, t) = ops.wait_until(ops.settle_time(), shows).await;
    reply(StatusCode::OK, &json!({ "ok": true, "drained": drained, "node": node_json(&t.nodes[node.index]) }))
}

async fn unfence(State(ops): State<FailoverAdmin>, Path(name): Path<String>) -> Response {
    let Some(node) = find(&ops.topology.load(), &name) else { return unknown(&name) };
    if node.role != Role::Fenced {
        return refuse(StatusCode::CONFLICT, &format!("{name} is not fenced (role {})", node.role.as_str()));
    }
    let before = ops.topology.load().generation;
    ops.control.update(|o| {
        o.unfence.insert(node.index);
    });
    let (_, t) = ops
        .wait_until(ops.settle_time(), |t| {
            t.generation != before || !ops.control.overrides().unfence.contains(&node.index)
        })
        .await;
    let now = &t.nodes[node.index];
    if now.role == Role::Fenced {
        let why = now.excluded.map_or("fenced", |e| e.as_str());
        return refuse(StatusCode::CONFLICT, &format!("{name} is fenced again at once: {why}"));
    }
    reply(StatusCode::OK, &json!({ "ok": true, "node": node_json(now) }))
}
