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

/// Why an operator action changed nothing, and how bad that is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// What kind of refusal (decides the HTTP status and the SQLSTATE).
    pub kind: RefusalKind,
    /// What is wrong, for the operator.
    pub reason: String,
}

/// The kinds of [`Refusal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    /// The request itself is malformed.
    BadRequest,
    /// No node has that name.
    UnknownNode,
    /// Not possible in the cluster's state now (try again later or fix the cluster).
    NotNow,
    /// The action started and failed (e.g. `pg_promote()` failed).
    Failed,
}

impl Refusal {
    pub(super) fn new(kind: RefusalKind, reason: impl Into<String>) -> Self {
        Self { kind, reason: reason.into() }
    }

    /// The HTTP status that says so.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self.kind {
            RefusalKind::BadRequest => StatusCode::BAD_REQUEST,
            RefusalKind::UnknownNode => StatusCode::NOT_FOUND,
            RefusalKind::NotNow => StatusCode::CONFLICT,
            RefusalKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The SQLSTATE the admin console answers with.
    #[must_use]
    pub fn sqlstate(&self) -> &'static str {
        match self.kind {
            // invalid_parameter_value, undefined_object, object_not_in_prerequisite_state
            RefusalKind::BadRequest => "22023",
            RefusalKind::UnknownNode => "42704",
            RefusalKind::NotNow => "55000",
            RefusalKind::Failed => crate::error::sqlstate::INTERNAL_ERROR,
        }
    }

    /// As an HTTP answer.
    pub(super) fn response(&self) -> Response {
        refuse(self.status(), &self.reason)
    }
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

/// The node called `name`, or the refusal that says there is none.
pub(super) fn find_or_refuse(t: &Topology, name: &str) -> Result<NodeView, Refusal> {
    find(t, name).ok_or_else(|| Refusal::new(RefusalKind::UnknownNode, format!("no node is called {name:?}")))
}

/// A node as JSON: name, role and why it is excluded.
pub(super) fn node_json(n: &NodeView) -> Value {
    json!({ "name": n.name, "role": n.role.as_str(), "excluded_reason": n.excluded.map(|e| e.as_str()) })
}

impl FailoverAdmin {
    /// Drain (`drained`) or undrain the replica called `name`: a drained replica takes no new
    /// reads; units running there finish. Returns the node as the monitor shows it afterwards.
    ///
    /// # Errors
    /// Unknown node, or the node is the primary.
    pub async fn set_drained(&self, name: &str, drained: bool) -> Result<NodeView, Refusal> {
        let node = find_or_refuse(&self.topology.load(), name)?;
        if drained && matches!(node.role, Role::Primary) {
            return Err(Refusal::new(RefusalKind::NotNow, format!("{name} is the primary; only replicas are drained")));
        }
        self.control.update(|o: &mut Overrides| {
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
        let (_, t) = self.wait_until(self.settle_time(), shows).await;
        Ok(t.nodes[node.index].clone())
    }

    /// Clear the fence of the node called `name` (an operator's word that it is safe). Returns
    /// the node as the monitor shows it afterwards.
    ///
    /// # Errors
    /// Unknown node, not fenced, or fenced again at once.
    pub async fn unfence(&self, name: &str) -> Result<NodeView, Refusal> {
        let node = find_or_refuse(&self.topology.load(), name)?;
        if node.role != Role::Fenced {
            let why = format!("{name} is not fenced (role {})", node.role.as_str());
            return Err(Refusal::new(RefusalKind::NotNow, why));
        }
        let before = self.topology.load().generation;
        self.control.update(|o| {
            o.unfence.insert(node.index);
        });
        let (_, t) = self
            .wait_until(self.settle_time(), |t| {
                t.generation != before || !self.control.overrides().unfence.contains(&node.index)
            })
            .await;
        let now = &t.nodes[node.index];
        if now.role == Role::Fenced {
            let why = now.excluded.map_or("fenced", |e| e.as_str());
            return Err(Refusal::new(RefusalKind::NotNow, format!("{name} is fenced again at once: {why}")));
        }
        Ok(now.clone())
    }

    /// The replica a switchover without a named target goes to: the readable replica that has
    /// replayed the most WAL (first in configuration order on a tie).
    #[must_use]
    pub fn default_target(&self) -> Option<String> {
        best_replica(&self.topology.load()).map(|n| n.name.clone())
    }
}

/// The readable replica that has replayed the most WAL; the first in configuration order on a
/// tie.
fn best_replica(t: &Topology) -> Option<&NodeView> {
    t.nodes.iter().filter(|n| n.is_readable_replica()).rev().max_by_key(|n| n.wal_lsn)
}

async fn drain(State(ops): State<FailoverAdmin>, Path(name): Path<String>) -> Response {
    drained_reply(ops.set_drained(&name, true).await, true)
}

async fn undrain(State(ops): State<FailoverAdmin>, Path(name): Path<String>) -> Response {
    drained_reply(ops.set_drained(&name, false).await, false)
}

fn drained_reply(outcome: Result<NodeView, Refusal>, drained: bool) -> Response {
    match outcome {
        Ok(n) => reply(StatusCode::OK, &json!({ "ok": true, "drained": drained, "node": node_json(&n) })),
        Err(refusal) => refusal.response(),
    }
}

async fn unfence(State(ops): State<FailoverAdmin>, Path(name): Path<String>) -> Response {
    match ops.unfence(&name).await {
        Ok(n) => reply(StatusCode::OK, &json!({ "ok": true, "node": node_json(&n) })),
        Err(refusal) => refusal.response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Excluded;

    fn node(index: usize, role: Role, wal_lsn: u64, excluded: Option<Excluded>) -> NodeView {
        NodeView {
            index,
            name: format!("n{index}"),
            host: "127.0.0.1".into(),
            port: 5432,
            role,
            weight: 1,
            wal_lsn: Some(wal_lsn),
            excluded,
            timeline: Some(1),
            replay_lag: None,
        }
    }

    #[test]
    fn a_switchover_without_a_target_goes_to_the_readable_replica_furthest_ahead() {
        let cases: [(Vec<NodeView>, Option<&str>); 4] = [
            (
                vec![
                    node(0, Role::Primary, 90, None),
                    node(1, Role::Replica, 80, None),
                    node(2, Role::Replica, 85, None),
                ],
                Some("n2"),
            ),
            (
                vec![
                    node(0, Role::Primary, 90, None),
                    node(1, Role::Replica, 80, None),
                    node(2, Role::Replica, 80, None),
                ],
                Some("n1"),
            ),
            (
                vec![
                    node(0, Role::Primary, 90, None),
                    node(1, Role::Stale, 89, Some(Excluded::Drained)),
                    node(2, Role::Replica, 10, None),
                ],
                Some("n2"),
            ),
            (vec![node(0, Role::Primary, 90, None), node(1, Role::Down, 0, Some(Excluded::Down))], None),
        ];
        for (nodes, want) in cases {
            let t = Topology { generation: 1, nodes };
            assert_eq!(best_replica(&t).map(|n| n.name.as_str()), want, "{t:?}");
        }
    }
}
