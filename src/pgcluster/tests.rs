//! Tests against real PostgreSQL servers: start, replicate, drive, clean up.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_and_two_replicas_stream_and_vanish_on_drop() {
    let c = LocalCluster::start(2).await.unwrap();
    let ports = c.ports();
    assert_eq!(ports.len(), 3);
    assert_eq!(c.replica_ports(), ports[1..].to_vec());
    assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);

    c.psql("CREATE TABLE t (v int); INSERT INTO t SELECT generate_series(1, 10)").await.unwrap();
    c.wait_replayed().await.unwrap();
    for port in c.replica_ports() {
        let row = c.psql_at(port, "SELECT pg_is_in_recovery(), sum(v) FROM t").await.unwrap();
        assert_eq!(row, "t|55");
    }
    assert_eq!(c.psql("SELECT pg_is_in_recovery()").await.unwrap(), "f");
    let auth =
        c.psql("SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = current_user").await.unwrap();
    assert_eq!(auth, "t");

    let root = c.root_dir().to_path_buf();
    assert!(root.join("node2").join("standby.signal").exists());
    drop(c);
    assert!(!root.exists(), "{} survived the drop", root.display());
    for port in ports {
        assert!(port_is_free(port), "port {port} still in use after drop");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn users_nodes_and_promotion_can_be_driven() {
    let c = LocalCluster::start(1).await.unwrap();
    c.create_user("alice", "it's secret").await.unwrap();
    let who = c.psql_as(c.primary_port(), "alice", "it's secret", TEST_DATABASE, "SELECT current_user").await.unwrap();
    assert_eq!(who, "alice");
    let err = c.psql_as(c.primary_port(), "alice", "wrong", TEST_DATABASE, "SELECT 1").await.unwrap_err().to_string();
    assert!(err.contains("password authentication failed"), "{err}");

    c.stop_node(1).await.unwrap();
    assert!(c.psql_at(c.ports()[1], "SELECT 1").await.is_err());
    c.start_node(1).await.unwrap();
    c.wait_streaming(1).await.unwrap();

    c.kill_node(0).await.unwrap();
    c.promote(1).await.unwrap();
    assert_eq!(c.primary_index(), 1);
    assert_eq!(c.replica_ports(), vec![c.ports()[0]]);
    let row = c.psql("SELECT pg_is_in_recovery()").await.unwrap();
    assert_eq!(row, "f");
    c.psql("CREATE TABLE after_failover (x int)").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_name_the_command_and_the_node() {
    let c = LocalCluster::start(0).await.unwrap();
    let err = c.psql("SELECT * FROM no_such_table").await.unwrap_err().to_string();
    assert!(err.contains("psql"), "{err}");
    assert!(err.contains("no_such_table"), "{err}");
    let err = c.stop_node(7).await.unwrap_err().to_string();
    assert!(err.contains("node 7 does not exist"), "{err}");
    // Starting a running node fails, and the error carries the server log.
    let err = c.start_node(0).await.unwrap_err().to_string();
    assert!(err.contains("pg_ctl"), "{err}");
    assert!(c.log_tail(0).is_some_and(|t| !t.is_empty()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_owner_s_servers_are_stopped_and_removed_by_the_watchdog() {
    let c = LocalCluster::start(1).await.unwrap();
    let root = c.root_dir().to_path_buf();
    let ports = c.ports();
    // Pretend the owner is a process that exits now.
    let mut owner = std::process::Command::new("true").spawn().unwrap();
    owner.wait().unwrap();
    let _dog = watchdog::Watchdog::arm(owner.id(), &root).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while root.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!root.exists(), "the watchdog did not remove {}", root.display());
    for port in ports {
        assert!(port_is_free(port), "a server still listens on {port}");
    }
    drop(c); // nothing left to stop; must not panic
}
