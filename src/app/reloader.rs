//! The applier of operator requests: one task, so reloads never overlap. A reload reads and
//! validates the whole file, plans the change ([`crate::reload::plan`]) and applies it without
//! closing a session: configuration and credentials are swapped, pools resized, the monitor
//! restarted on the new node list (removed nodes leave the topology, so they get no new work
//! while their running sessions finish). Also the watcher that turns topology changes into log
//! lines and status-page events.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{build_monitor, spawn_monitor};
use crate::admin::{topology_changes, Events};
use crate::config::Config;
use crate::frontend::{credentials, Shared};
use crate::reload::{self, Plan, ReloadError, ReloadReport, Request};
use crate::topology::control::Control as NodeControl;
use crate::topology::monitor::initial_topology;
use crate::topology::{NodeView, Topology};

/// Owns the monitor task and what a reload needs.
pub(super) struct Reloader {
    path: Option<PathBuf>,
    shared: Arc<Shared>,
    events: Arc<Events>,
    monitor: JoinHandle<()>,
    /// Operator overrides (drain, fence clearing) that outlive a monitor restart.
    node_control: NodeControl,
    stop: watch::Receiver<bool>,
    /// Per node slot: still configured.
    active: Vec<bool>,
}

impl Reloader {
    pub(super) fn new(
        path: Option<PathBuf>,
        shared: Arc<Shared>,
        events: Arc<Events>,
        monitor: JoinHandle<()>,
        node_control: NodeControl,
        stop: watch::Receiver<bool>,
    ) -> Self {
        let active = vec![true; shared.config.nodes.len()];
        Self { path, shared, events, monitor, node_control, stop, active }
    }

    /// Serve requests until the proxy stops; `SHUTDOWN` turns `stop_requested` true.
    pub(super) async fn run(mut self, mut requests: mpsc::Receiver<Request>, stop_requested: watch::Sender<bool>) {
        while let Some(request) = requests.recv().await {
            match request {
                Request::Reload(reply) => {
                    let outcome = self.reload().await;
                    let _ = reply.send(outcome);
                }
                Request::Shutdown => {
                    tracing::info!("shutdown requested by an operator");
                    stop_requested.send_replace(true);
                }
            }
        }
    }

    async fn reload(&mut self) -> Result<ReloadReport, ReloadError> {
        let Some(path) = self.path.clone() else {
            tracing::debug!("reload requested, but sluice was not started from a file");
            return Err(ReloadError::NoFile);
        };
        let file = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                for p in &e.0 {
                    tracing::error!(key = %p.key, reason = %p.reason, "reload refused: the configuration is invalid");
                }
                self.events.push("reload", format!("refused: {} problem(s) in the file", e.0.len()));
                self.shared.metrics.reload(false);
                return Err(ReloadError::Invalid(e));
            }
        };
        let plan = reload::plan(&self.shared.config, &self.active, file);
        let report = plan.report.clone();
        if plan.config != *self.shared.config.snapshot() || plan.active != self.active {
            self.apply(plan).await;
        }
        for line in &report.changes {
            tracing::info!(change = %line, "reload applied");
        }
        for line in &report.needs_restart {
            tracing::warn!(key = %line, "reload: needs a restart");
        }
        let summary = if report.changes.is_empty() { "nothing changed".to_string() } else { report.changes.join("; ") };
        self.events.push("reload", summary);
        self.shared.metrics.reload(true);
        Ok(report)
    }

    async fn apply(&mut self, plan: Plan) {
        let Plan { config, active, .. } = plan;
        let names: Vec<String> = config.nodes.iter().map(|n| n.name.clone()).collect();
        self.shared.metrics.ensure_nodes(&names);
        let routing_changed = self.shared.config.routing != config.routing;
        self.shared.config.replace(config);
        self.shared.credentials.replace(credentials(&self.shared.config));
        self.shared.pools.reconfigure();
        // TLS: certificate and key files are re-read here, from the configuration just
        // published, once sluice terminates TLS (the reload of `[client_tls]`/`[server_tls]`).
        if routing_changed {
            self.shared.classifiers.clear();
        }
        for (node, _) in active.iter().enumerate().filter(|(_, a)| !**a) {
            self.shared.pools.clear_node(node);
        }
        self.active = active;
        self.restart_monitor().await;
    }

    /// Publish the new node list (known roles kept, new or moved nodes unknown) and start a
    /// monitor on it; the old monitor is stopped first so there is one writer at a time.
    async fn restart_monitor(&mut self) {
        self.monitor.abort();
        let _ = (&mut self.monitor).await;
        let config = self.shared.config.snapshot();
        let current = self.shared.topology.load();
        self.shared.topology.publish_nodes(node_list(config, &self.active, &current));
        let monitor = build_monitor(config, &self.shared.pools, &self.shared.topology, self.node_control.clone());
        self.monitor = spawn_monitor(monitor, &self.shared, self.stop.clone());
    }
}

/// The active slots as topology nodes: what is known about an unchanged node is kept.
fn node_list(config: &Config, active: &[bool], current: &Topology) -> Vec<NodeView> {
    initial_topology(config)
        .nodes
        .into_iter()
        .filter(|n| active.get(n.index).copied().unwrap_or(false))
        .map(|fresh| match current.nodes.iter().find(|v| v.index == fresh.index) {
            Some(v) if v.host == fresh.host && v.port == fresh.port => {
                NodeView { role: v.role, wal_lsn: v.wal_lsn, ..fresh }
            }
            _ => fresh,
        })
        .collect()
}

/// Log one line per node whose role changed (with the reason) and keep it as an event.
pub(super) async fn watch_topology(shared: Arc<Shared>, events: Arc<Events>, mut stop: watch::Receiver<bool>) {
    let topology = &shared.topology;
    let mut generations = topology.subscribe();
    let mut seen = topology.load();
    loop {
        tokio::select! {
            r = generations.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
        let now = topology.load();
        for n in now.nodes.iter().filter(|n| !seen.nodes.iter().any(|o| o.index == n.index && o.role == n.role)) {
            shared.metrics.topology_change(n.role);
        }
        for line in topology_changes(&seen, &now) {
            tracing::info!(generation = now.generation, change = %line, "topology change");
            events.push("topology", line);
        }
        seen = now;
    }
}
