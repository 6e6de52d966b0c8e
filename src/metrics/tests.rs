//! Recording and encoding: each family shows up in the OpenMetrics text with the expected lines.

use super::*;
use crate::topology::NodeView;
use prometheus_client::encoding::text::encode;

fn build() -> (Registry, Arc<Metrics>) {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry, &["pg0".to_string(), "pg1".to_string()]);
    (registry, metrics)
}

fn text(registry: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, registry).unwrap();
    out
}

fn view(index: usize, role: Role, wal_lsn: Option<u64>) -> NodeView {
    let name = format!("pg{index}");
    NodeView {
        index,
        name,
        host: "127.0.0.1".into(),
        port: 5432,
        role,
        weight: 1,
        wal_lsn,
        excluded: None,
        timeline: None,
        replay_lag: None,
    }
}

#[test]
fn route_decisions_count_per_reason() {
    let (registry, metrics) = build();
    metrics.route(Reason::ReadOnReplica);
    metrics.route(Reason::ReadOnReplica);
    metrics.route(Reason::Write);
    let out = text(&registry);
    assert!(out.contains("sluice_route_decisions_total{reason=\"read_on_replica\"} 2\n"), "{out}");
    assert!(out.contains("sluice_route_decisions_total{reason=\"write\"} 1\n"), "{out}");
}

#[test]
fn units_and_clients_are_counted_with_every_label_present() {
    let (registry, metrics) = build();
    metrics.unit(UnitOutcome::Ready);
    metrics.unit(UnitOutcome::ReadOnlyRetried);
    metrics.client_opened();
    metrics.client_opened();
    metrics.client_closed();
    metrics.client_rejected(Rejection::AuthFailed);
    let out = text(&registry);
    assert!(out.contains("sluice_units_total{outcome=\"ready\"} 1\n"), "{out}");
    assert!(out.contains("sluice_units_total{outcome=\"read_only_retried\"} 1\n"), "{out}");
    assert!(out.contains("sluice_units_total{outcome=\"client_gone\"} 0\n"), "{out}");
    assert!(out.contains("sluice_client_connections 1\n"), "{out}");
    assert!(out.contains("sluice_client_rejections_total{reason=\"auth_failed\"} 1\n"), "{out}");
    assert!(out.contains("sluice_client_rejections_total{reason=\"too_many_connections\"} 0\n"), "{out}");
    assert_eq!(metrics.clients(), 1);
}

#[test]
fn node_series_are_labelled_by_configured_name() {
    let (registry, metrics) = build();
    metrics.node(1).connected();
    metrics.node(1).connect_failed();
    metrics.node(0).checkout_waited(Duration::from_millis(3));
    metrics.node(0).checkout_timed_out();
    metrics.node(1).idle_found_lost();
    metrics.node(0).expired(3);
    let out = text(&registry);
    assert!(out.contains("sluice_server_connections_opened_total{node=\"pg1\"} 1\n"), "{out}");
    assert!(out.contains("sluice_server_connections_opened_total{node=\"pg0\"} 0\n"), "{out}");
    assert!(out.contains("sluice_server_connect_errors_total{node=\"pg1\"} 1\n"), "{out}");
    assert!(out.contains("sluice_pool_checkout_wait_seconds_count{node=\"pg0\"} 1\n"), "{out}");
    assert!(out.contains("sluice_pool_checkout_wait_seconds_bucket{le=\"0.005\",node=\"pg0\"} 1\n"), "{out}");
    assert!(out.contains("sluice_pool_checkout_wait_seconds_bucket{le=\"0.0025\",node=\"pg0\"} 0\n"), "{out}");
    assert!(out.contains("sluice_pool_checkout_timeouts_total{node=\"pg0\"} 1\n"), "{out}");
    assert!(out.contains("sluice_pool_idle_lost_total{node=\"pg1\"} 1\n"), "{out}");
    assert!(out.contains("sluice_pool_expired_total{node=\"pg0\"} 3\n"), "{out}");
}

#[test]
fn topology_sets_roles_positions_and_generation() {
    let (registry, metrics) = build();
    let nodes = vec![view(0, Role::Primary, Some(0x3000060)), view(1, Role::Down, None), view(7, Role::Replica, None)];
    metrics.topology(&Topology { generation: 4, nodes });
    let out = text(&registry);
    assert!(out.contains("sluice_topology_generation 4\n"), "{out}");
    assert!(out.contains("sluice_node_role{node=\"pg0\"} 2\n"), "{out}");
    assert!(out.contains("sluice_node_role{node=\"pg1\"} 0\n"), "{out}");
    assert!(out.contains(&format!("sluice_node_wal_lsn{{node=\"pg0\"}} {}\n", 0x3000060)), "{out}");
    assert!(out.contains("sluice_node_wal_lsn{node=\"pg1\"} 0\n"), "{out}");
    assert!(out.ends_with("# EOF\n"), "{out}");
}

#[test]
fn held_units_and_client_transports_are_counted() {
    let (registry, metrics) = build();
    metrics.held(false, Duration::from_millis(300));
    metrics.held(true, Duration::from_secs(10));
    metrics.client_login(true);
    metrics.client_login(false);
    metrics.client_login(false);
    let out = text(&registry);
    assert!(out.contains("sluice_held_units_total{outcome=\"released\"} 1"), "{out}");
    assert!(out.contains("sluice_held_units_total{outcome=\"expired\"} 1"), "{out}");
    assert!(out.contains("sluice_hold_wait_seconds_count 2"), "{out}");
    assert!(out.contains("sluice_client_logins_total{transport=\"tls\"} 1"), "{out}");
    assert!(out.contains("sluice_client_logins_total{transport=\"plain\"} 2"), "{out}");
}
