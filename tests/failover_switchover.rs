//! The operator endpoints on a real cluster under a running writer and reader: drain and
//! undrain a replica, a switchover to a paused replica refused with nothing changed, a planned
//! switchover with no failed, lost or misplaced statement, and the old primary fenced.

mod common;
mod drill;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Cluster, Proxy};
use drill::workload::Workload;
use drill::{http, node_json_says, read_ports, wait_for};
use sluice::topology::{Excluded, Role};

#[tokio::test(flavor = "multi_thread")]
async fn drain_refused_switchover_and_switchover_under_load() {
    let c = Cluster::start(2).await;
    c.psql("CREATE TABLE drill (id bigint PRIMARY KEY)").await;
    c.wait_replayed().await;
    let p = Proxy::builder()
        .cluster(&c)
        .monitor_interval("100ms")
        .set("", "admin_listen", "\"127.0.0.1:0\"")
        .set("failover", "switchover_timeout", "\"5s\"")
        // Lag never excludes here: the paused replica must be refused for being paused.
        .set("routing", "replica_max_lag", "\"0s\"")
        .set("routing", "replica_max_lag_bytes", "0")
        .start()
        .await;
    p.wait_topology(1, 2).await;
    let admin = p.admin_addr().expect("admin_listen is set");
    let ports = c.ports();
    let load = Workload::start(p.port(), Duration::from_millis(50)).await;
    let probe = p.connect().await;

    let (status, body) = http(admin, "POST", "/nodes/node2/drain", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(p.topology().nodes[2].excluded, Some(Excluded::Drained));
    assert!(!read_ports(&probe, 10).await.contains(&ports[2]), "a read ran on the drained replica");
    let (status, body) = http(admin, "POST", "/nodes/node2/undrain", "").await;
    assert_eq!(status, 200, "{body}");
    wait_for(|| p.topology(), "node2 readable again", |t| t.nodes[2].is_readable_replica()).await;
    assert_eq!(http(admin, "POST", "/nodes/nope/drain", "").await.0, 404);

    c.psql_at(ports[2], "SELECT pg_wal_replay_pause()").await;
    let before = p.topology();
    let (status, body) = http(admin, "POST", "/switchover", r#"{"target": "node2"}"#).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("paused"), "{body}");
    let after = p.topology();
    assert_eq!((after.generation, after.primary().map(|n| n.index)), (before.generation, Some(0)), "{after:?}");
    c.psql_at(ports[2], "SELECT pg_wal_replay_resume()").await;

    let (status, body) = http(admin, "POST", "/switchover", r#"{"target": "node1"}"#).await;
    let switched = Instant::now();
    assert_eq!(status, 200, "{body}");
    assert_eq!(p.topology().primary().map(|n| n.index), Some(1));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (writes, reads) = load.stop().await;

    let errors: Vec<_> = writes.samples.iter().chain(&reads.samples).filter_map(|s| s.error.clone()).collect();
    assert!(errors.is_empty(), "statements failed during the switchover: {errors:?}");
    assert!(!writes.closed && !reads.closed, "a client connection was closed");
    let misplaced =
        writes.samples.iter().chain(&reads.samples).filter(|s| s.sent > switched && s.port == Some(ports[0]));
    assert_eq!(misplaced.count(), 0, "the old primary got statements after the switchover");
    let acked: Vec<i64> = writes.samples.iter().filter(|s| s.error.is_none()).filter_map(|s| s.id).collect();
    let on_new = c.psql_at(ports[1], "SELECT string_agg(id::text, ',') FROM drill").await;
    let present: HashSet<i64> = on_new.split(',').filter_map(|s| s.trim().parse().ok()).collect();
    let lost: Vec<_> = acked.iter().filter(|id| !present.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged writes missing on the new primary: {lost:?}");
    assert!(acked.iter().any(|id| writes.samples.iter().any(|s| s.id == Some(*id) && s.port == Some(ports[1]))));

    assert_eq!(p.topology().nodes[0].role, Role::Fenced);
    let (status, body) = http(admin, "POST", "/nodes/node0/unfence", "").await;
    assert_eq!(status, 409, "an old primary on an older timeline must stay fenced: {body}");
    let topology = http(admin, "GET", "/topology", "").await.1;
    assert!(node_json_says(&topology, "node0", "\"role\":\"fenced\""), "{topology}");
}
