//! A promoted replica becomes the primary in sluice's topology and client sessions survive the
//! switch: the same client connection writes to the new primary, with its session state.

mod common;

use std::time::{Duration, Instant};

use common::{describe, Cluster};

async fn port(client: &tokio_postgres::Client, sql: &str) -> Result<u16, String> {
    let row = client.query_one(sql, &[]).await.map_err(|e| describe(&e))?;
    Ok(u16::try_from(row.get::<_, i32>(0)).expect("a port"))
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_survive_a_promotion() {
    let (c, p) = Cluster::with_proxy(1, "CREATE SCHEMA s; CREATE TABLE s.t (x int)").await;
    let client = p.connect().await;
    client.simple_query("SET search_path = s").await.unwrap();
    client.simple_query("INSERT INTO t VALUES (1)").await.unwrap();
    // Asynchronous replication: only what the replica has is there after the primary dies.
    c.wait_replayed().await;
    let old_primary = c.primary_port();
    let replica = c.replica_ports()[0];

    c.kill_node(0).await.unwrap();
    c.promote(1).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut errors = Vec::new();
    let written_on = loop {
        match port(&client, "WITH w AS (INSERT INTO t VALUES (2) RETURNING 1) SELECT inet_server_port() FROM w").await {
            Ok(port) => break port,
            Err(e) if Instant::now() < deadline => {
                errors.push(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no write succeeded after the promotion: {e}; before: {errors:?}"),
        }
    };
    assert_eq!(written_on, replica, "the write ran on {written_on}, not the promoted node (old primary {old_primary})");
    // The session's search_path followed it to the new primary.
    let n: i64 = client.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, 2);
    for e in &errors {
        assert!(
            e.contains("57P03") || e.contains("08001") || e.contains("08006"),
            "unclear error during failover: {e}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_still_following_the_dead_primary_serves_no_reads() {
    let (c, p) = Cluster::with_proxy(2, "").await;
    let orphan = c.replica_ports()[1];
    c.kill_node(0).await.unwrap();
    c.promote(1).await.unwrap();
    // Node 2 still follows node 0, which is gone: once the monitor sees that, it is stale.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = p.topology();
        if t.nodes[2].role == sluice::topology::Role::Stale && t.primary().map(|n| n.index) == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "node 2 never became stale: {t:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = p.connect().await;
    for _ in 0..20 {
        let port = port(&client, "SELECT inet_server_port()").await.unwrap();
        assert_ne!(port, orphan, "a read ran on the replica that follows the dead primary");
    }
}
