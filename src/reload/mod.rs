//! Hot reload: what a new configuration file changes, decided purely ([`plan`]), and the
//! [`Control`] handle through which SIGHUP, `POST /reload` and the admin console's `RELOAD`
//! ask the running proxy to apply it (the wiring in `app` does the applying).
//!
//! Node indexes are identities (pools, metrics and the topology are keyed by them), so a plan
//! keeps them stable: a node keeps its slot by name, a new node gets a new slot at the end, and
//! a removed node keeps its slot but leaves the topology (its running sessions finish, it gets
//! no new work). Keys that cannot change while running keep their old value and are reported.

mod control;

pub use control::{Control, ReloadError, Request};

use crate::config::Config;

/// What a reload did, for the log and the operator.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadReport {
    /// What changed, one line each (`node pg3 added`, `pool.size: 20 -> 5`).
    pub changes: Vec<String>,
    /// Keys that changed in the file but need a restart; their old value stays in force.
    pub needs_restart: Vec<String>,
}

/// A configuration ready to apply.
#[derive(Debug)]
pub struct Plan {
    /// The configuration to run on: the file's, with nodes in stable slots (removed ones kept)
    /// and restart-only keys at their running values.
    pub config: Config,
    /// Per node slot: still in the file (`false`: removed, serves nothing new).
    pub active: Vec<bool>,
    /// What changed.
    pub report: ReloadReport,
}

/// Plan the move from `running` (with its `active` slots) to `file`.
#[must_use]
pub fn plan(running: &Config, active: &[bool], file: Config) -> Plan {
    let mut report = ReloadReport::default();
    let mut config = file;
    keep_restart_only(running, &mut config, &mut report.needs_restart);
    let (nodes, now_active) = align_nodes(running, active, &config, &mut report.changes);
    config.nodes = nodes;
    diff_users(running, &config, &mut report.changes);
    diff_sections(running, &config, &mut report.changes);
    Plan { config, active: now_active, report }
}

/// Put the running value back into keys that only a restart can change.
fn keep_restart_only(running: &Config, next: &mut Config, needs_restart: &mut Vec<String>) {
    let mut keep = |key: &str, changed: bool| {
        if changed {
            needs_restart.push(format!("{key}: changed in the file; the running value stays until a restart"));
        }
    };
    keep("listen", running.listen != next.listen);
    keep("admin_listen", running.admin_listen != next.admin_listen);
    keep("limits.listen_backlog", running.limits.listen_backlog != next.limits.listen_backlog);
    // Set on the client listeners, whose accepted sockets inherit it (no call per client).
    keep("limits.tcp_keepalive", running.limits.tcp_keepalive != next.limits.tcp_keepalive);
    keep("pool.mode", running.pool.mode != next.pool.mode);
    keep("lifecycle.reuse_port", running.ops.lifecycle.reuse_port != next.ops.lifecycle.reuse_port);
    keep("log", running.ops.log != next.ops.log);
    keep("runtime", running.ops.runtime != next.ops.runtime);
    next.listen = running.listen;
    next.admin_listen = running.admin_listen;
    next.limits.listen_backlog = running.limits.listen_backlog;
    next.limits.tcp_keepalive = running.limits.tcp_keepalive;
    next.pool.mode = running.pool.mode;
    next.ops.lifecycle.reuse_port = running.ops.lifecycle.reuse_port;
    next.ops.log = running.ops.log.clone();
    next.ops.runtime = running.ops.runtime.clone();
}

/// The running slots, updated by name from the file; new names appended.
fn align_nodes(
    running: &Config,
    active: &[bool],
    next: &Config,
    changes: &mut Vec<String>,
) -> (Vec<crate::config::NodeConfig>, Vec<bool>) {
    let mut slots = running.nodes.clone();
    let mut now_active = vec![false; slots.len()];
    for node in &next.nodes {
        match slots.iter().position(|s| s.name == node.name) {
            Some(i) => {
                if !active.get(i).copied().unwrap_or(true) {
                    changes.push(format!("node {} added back", node.name));
                } else if slots[i] != *node {
                    changes.push(format!("node {} changed", node.name));
                }
                slots[i] = node.clone();
                now_active[i] = true;
            }
            None => {
                changes.push(format!("node {} added", node.name));
                slots.push(node.clone());
                now_active.push(true);
            }
        }
    }
    for (i, slot) in slots.iter().enumerate() {
        if active.get(i).copied().unwrap_or(true) && !now_active[i] {
            changes.push(format!("node {} removed", slot.name));
        }
    }
    (slots, now_active)
}

fn diff_users(running: &Config, next: &Config, changes: &mut Vec<String>) {
    for u in &next.users {
        match running.user(&u.name) {
            None => changes.push(format!("user {} added", u.name)),
            Some(old) if old != u => changes.push(format!("user {} changed", u.name)),
            Some(_) => {}
        }
    }
    for u in &running.users {
        if next.user(&u.name).is_none() {
            changes.push(format!("user {} removed", u.name));
        }
    }
}

/// One line per changed key of the sections that apply while running. Secrets are never shown.
fn diff_sections(a: &Config, b: &Config, changes: &mut Vec<String>) {
    let mut key = |name: &str, old: String, new: String| {
        if old != new {
            changes.push(format!("{name}: {old} -> {new}"));
        }
    };
    key("databases", format!("{:?}", a.databases), format!("{:?}", b.databases));
    key(
        "limits.max_client_connections",
        a.limits.max_client_connections.to_string(),
        b.limits.max_client_connections.to_string(),
    );
    key("limits.max_message_bytes", a.limits.max_message_bytes.to_string(), b.limits.max_message_bytes.to_string());
    key("limits.startup_timeout", format!("{:?}", a.limits.startup_timeout), format!("{:?}", b.limits.startup_timeout));
    key(
        "limits.idle_client_timeout",
        format!("{:?}", a.limits.idle_client_timeout),
        format!("{:?}", b.limits.idle_client_timeout),
    );
    key("pool.size", a.pool.size.to_string(), b.pool.size.to_string());
    key("pool.checkout_timeout", format!("{:?}", a.pool.checkout_timeout), format!("{:?}", b.pool.checkout_timeout));
    key("pool.connect_timeout", format!("{:?}", a.pool.connect_timeout), format!("{:?}", b.pool.connect_timeout));
    key(
        "pool.server_idle_timeout",
        format!("{:?}", a.pool.server_idle_timeout),
        format!("{:?}", b.pool.server_idle_timeout),
    );
    key("pool.server_lifetime", format!("{:?}", a.pool.server_lifetime), format!("{:?}", b.pool.server_lifetime));
    key("monitor", format!("{:?}", a.monitor), format!("{:?}", b.monitor));
    key("routing", format!("{:?}", a.routing), format!("{:?}", b.routing));
    key(
        "lifecycle.shutdown_timeout",
        format!("{:?}", a.ops.lifecycle.shutdown_timeout),
        format!("{:?}", b.ops.lifecycle.shutdown_timeout),
    );
    key("admin.users", format!("{:?}", a.ops.admin.users), format!("{:?}", b.ops.admin.users));
    if a.ops.admin.token != b.ops.admin.token {
        changes.push("admin.token: changed".to_string());
    }
}

#[cfg(test)]
mod tests;
