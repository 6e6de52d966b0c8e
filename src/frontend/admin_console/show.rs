//! What each `SHOW` answers: a [`ResultSet`] built from one look at the shared handles.

use std::time::SystemTime;

use crate::admin::{role_reason, Switched};
use crate::config::Config;
use crate::frontend::Shared;
use crate::topology::{NodeView, Role};

/// Rows of text, with their column names and the CommandComplete tag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResultSet {
    /// Column names.
    pub columns: Vec<&'static str>,
    /// Rows (`None`: NULL).
    pub rows: Vec<Vec<Option<String>>>,
    /// CommandComplete tag.
    pub tag: String,
}

impl ResultSet {
    fn new(columns: &[&'static str]) -> Self {
        Self { columns: columns.to_vec(), rows: Vec::new(), tag: "SHOW".into() }
    }

    fn row(&mut self, values: Vec<Option<String>>) {
        debug_assert_eq!(values.len(), self.columns.len());
        self.rows.push(values);
    }
}

fn text(v: impl ToString) -> Option<String> {
    Some(v.to_string())
}

/// Per node: role, lag, why it gets no traffic, pool use.
pub fn nodes(shared: &Shared) -> ResultSet {
    let topology = shared.topology.load();
    let primary_lsn = topology.primary().and_then(|p| p.wal_lsn);
    let usage = pool_usage(shared);
    let mut rs = ResultSet::new(&[
        "name",
        "host",
        "port",
        "role",
        "lag_bytes",
        "lag_seconds",
        "excluded_reason",
        "pool_in_use",
        "pool_size",
    ]);
    for n in &topology.nodes {
        let lag = match (n.role, primary_lsn, n.wal_lsn) {
            (Role::Primary, _, _) => Some(0),
            (Role::Replica | Role::Stale, Some(p), Some(r)) => Some(p.saturating_sub(r)),
            _ => None,
        };
        let excluded = match n.role {
            Role::Primary | Role::Replica => None,
            other => text(role_reason(other)),
        };
        let (size, in_use) = usage.iter().filter(|u| u.0 == n.index).fold((0, 0), |a, u| (a.0 + u.1, a.1 + u.2));
        rs.row(vec![
            text(&n.name),
            text(&n.host),
            text(n.port),
            text(n.role.as_str()),
            lag.map(|l| l.to_string()),
            crate::admin::lag_seconds(n).map(|s| format!("{s:.3}")),
            excluded,
            text(in_use),
            text(size),
        ]);
    }
    rs
}

/// (node, size, in use, idle, database, user) per pool.
fn pool_usage(shared: &Shared) -> Vec<(usize, usize, usize, usize, String, String)> {
    let mut pools: Vec<_> = shared
        .pools
        .all()
        .into_iter()
        .map(|p| {
            let (size, in_use, idle) = p.usage();
            let (database, user) = p.target();
            (p.node(), size, in_use, idle, database, user)
        })
        .collect();
    pools.sort_by(|a, b| (a.0, &a.4, &a.5).cmp(&(b.0, &b.4, &b.5)));
    pools
}

fn node_name(config: &Config, index: usize) -> String {
    config.nodes.get(index).map_or_else(|| index.to_string(), |n| n.name.clone())
}

/// One row per (node, database, user) pool.
pub fn pools(shared: &Shared) -> ResultSet {
    let mut rs = ResultSet::new(&["node", "database", "user", "size", "in_use", "idle", "paused"]);
    let paused = shared.lifecycle.paused();
    for (node, size, in_use, idle, database, user) in pool_usage(shared) {
        let name = node_name(&shared.config, node);
        rs.row(vec![
            text(name),
            text(database),
            text(user),
            text(size),
            text(in_use),
            text(idle),
            text(paused.holds(node)),
        ]);
    }
    rs
}

/// Server connections per pool, by state.
pub fn servers(shared: &Shared) -> ResultSet {
    let mut rs = ResultSet::new(&["node", "database", "user", "state", "connections"]);
    for (node, _, in_use, idle, database, user) in pool_usage(shared) {
        let name = node_name(&shared.config, node);
        for (state, count) in [("active", in_use), ("idle", idle)] {
            rs.row(vec![text(&name), text(&database), text(&user), text(state), text(count)]);
        }
    }
    rs
}

/// One row per connected client.
pub fn clients(shared: &Shared) -> ResultSet {
    let mut rs = ResultSet::new(&["id", "user", "database", "addr", "connected_seconds"]);
    let now = crate::frontend::lifecycle::unix_secs(SystemTime::now());
    for c in shared.lifecycle.clients() {
        let age = now.saturating_sub(c.since_secs);
        rs.row(vec![text(c.id), text(c.user), text(c.database), c.addr.map(|a| a.to_string()), text(age)]);
    }
    rs
}

/// Per node and route (the node's role now): units served, protocol bytes sent to and received
/// from its server connections, mean and p99 time.
pub fn stats(shared: &Shared) -> ResultSet {
    let topology = shared.topology.load();
    let mut rs = ResultSet::new(&["node", "route", "statements", "bytes_sent", "bytes_received", "avg_ms", "p99_ms"]);
    for n in &topology.nodes {
        let node = shared.metrics.node(n.index);
        let (s, (sent, received)) = (node.units(), node.bytes());
        let p99 = s
            .p99_seconds
            .map_or_else(|| if s.count > 0 { ">30000".into() } else { "0".into() }, |p| format!("{:.1}", p * 1e3));
        rs.row(vec![
            text(&n.name),
            text(n.role.as_str()),
            text(s.count),
            text(sent),
            text(received),
            text(format!("{:.3}", s.mean_seconds * 1e3)),
            Some(p99),
        ]);
    }
    rs
}

/// Every key in force (secrets shown only as set / not set).
pub fn config(config: &Config) -> ResultSet {
    let mut rs = ResultSet::new(&["key", "value"]);
    let mut put = |k: &str, v: String| rs.row(vec![text(k), Some(v)]);
    put("listen", config.listen.to_string());
    put("admin_listen", config.admin_listen.map_or("(none)".into(), |a| a.to_string()));
    put("databases", config.databases.as_ref().map_or("(any)".into(), |d| d.join(",")));
    put("limits", format!("{:?}", config.limits));
    put("pool", format!("{:?}", config.pool));
    put("monitor", format!("{:?}", config.monitor));
    put("routing", format!("{:?}", config.routing));
    put("failover", format!("{:?}", config.failover));
    // File paths and modes only: the key material stays in the files.
    put("client_tls", format!("{:?}", config.client_tls));
    put("server_tls", format!("{:?}", config.server_tls));
    put("auth", config.auth.as_ref().map_or("(none)".into(), |a| format!("{a:?}")));
    put("lifecycle", format!("{:?}", config.ops.lifecycle));
    let runtime = &config.ops.runtime;
    put("runtime", format!("{:?}, {} workers", runtime.layout, runtime.worker_count()));
    put("admin.users", config.ops.admin.users.join(","));
    put("admin.token", if config.ops.admin.token.is_some() { "(set)".into() } else { "(not set)".into() });
    put("log", format!("{:?}", config.ops.log));
    for (i, n) in config.nodes.iter().enumerate() {
        put(&format!("nodes[{i}]"), format!("{} {}:{} weight {}", n.name, n.host, n.port, n.weight));
    }
    for (i, u) in config.users.iter().enumerate() {
        put(&format!("users[{i}]"), format!("{} auth {:?} default_route {:?}", u.name, u.auth, u.default_route));
    }
    rs
}

/// One node after a failover action (DRAIN, UNDRAIN, UNFENCE).
pub fn node_outcome(n: &NodeView, tag: &str) -> ResultSet {
    let mut rs = ResultSet::new(&["node", "role", "excluded_reason"]);
    rs.row(vec![text(&n.name), text(n.role.as_str()), n.excluded.map(|e| e.as_str().to_string())]);
    rs.tag = tag.to_string();
    rs
}

/// The outcome of a SWITCHOVER.
pub fn switched(s: &Switched) -> ResultSet {
    let mut rs = ResultSet::new(&["old_primary", "old_role", "new_primary", "new_role", "writes_held_ms"]);
    rs.row(vec![
        text(&s.old.name),
        text(s.old.role.as_str()),
        text(&s.new.name),
        text(s.new.role.as_str()),
        text(s.writes_held.as_millis()),
    ]);
    rs.tag = "SWITCHOVER".into();
    rs
}

/// `sluice <version>`.
pub fn version() -> ResultSet {
    let mut rs = ResultSet::new(&["version"]);
    rs.row(vec![text(format!("sluice {}", env!("CARGO_PKG_VERSION")))]);
    rs
}

/// A result set of one column listing lines (RELOAD's changes).
pub fn lines(column: &'static str, lines: &[String], tag: &str) -> ResultSet {
    let mut rs = ResultSet::new(&[column]);
    for l in lines {
        rs.row(vec![text(l)]);
    }
    rs.tag = tag.to_string();
    rs
}
