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
    // Nothing of the write was sent anywhere before the promotion: it was held, not failed.
    assert!(errors.is_empty(), "writes failed during the failover instead of being held: {errors:?}");
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

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_cut_by_the_crash_gets_one_error_and_the_connection_stays_usable() {
    let (c, p) = Cluster::with_proxy(1, "CREATE TABLE t (x int)").await;
    let client = p.connect().await;
    let promoted = c.replica_ports()[0];
    client.batch_execute("BEGIN; INSERT INTO t VALUES (1)").await.unwrap();
    c.kill_node(0).await.unwrap();
    let err = client.simple_query("INSERT INTO t VALUES (2)").await.expect_err("the transaction's server is gone");
    let code = common::sqlstate(&err).unwrap_or_default();
    assert!(["08006", "57P01", "57P02", "57P03"].contains(&code.as_str()), "unexpected error: {}", describe(&err));
    // The client ends its failed transaction; the connection goes on on the promoted node.
    let _ = client.simple_query("ROLLBACK").await;
    c.promote(1).await.unwrap();
    let port = port(&client, "WITH w AS (INSERT INTO t VALUES (3) RETURNING 1) SELECT inet_server_port() FROM w").await;
    assert_eq!(port, Ok(promoted), "the next write was not held until the promotion");
    assert!(!client.is_closed());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_primaries_on_the_same_timeline_get_no_writes() {
    let c = Cluster::start(2).await;
    let p = common::Proxy::builder()
        .cluster(&c)
        .monitor_interval("100ms")
        .set("failover", "hold_timeout", "\"1s\"")
        .start()
        .await;
    p.wait_topology(1, 2).await;
    let client = p.connect().await;
    c.kill_node(0).await.unwrap();
    // Both replicas promoted from timeline 1: both on timeline 2, neither can be trusted.
    c.promote(1).await.unwrap();
    c.promote(2).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while p.topology().nodes[1..].iter().any(|n| n.excluded != Some(sluice::topology::Excluded::InDoubt)) {
        assert!(Instant::now() < deadline, "never in doubt: {:?}", p.topology());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = client.simple_query("CREATE TABLE nowhere (x int)").await.expect_err("no write while in doubt");
    assert_eq!(common::sqlstate(&err).as_deref(), Some("57P03"), "{}", describe(&err));
    assert!(describe(&err).contains("primary_in_doubt"), "the error does not say why: {}", describe(&err));
}

#[tokio::test(flavor = "multi_thread")]
async fn one_lost_backend_leaves_the_other_idle_connections_alone() {
    let (c, p) = Cluster::with_proxy(0, "CREATE TABLE t (x int)").await;
    let clients: Vec<_> = futures_util::future::join_all((0..4).map(|_| p.connect())).await;
    let run_all =
        |sql: &'static str| futures_util::future::join_all(clients[1..].iter().map(move |cl| cl.simple_query(sql)));
    // Three connections opened at once, then idle in the pool.
    for r in run_all("SELECT pg_sleep(0.3)").await {
        r.unwrap();
    }
    let backends = "SELECT string_agg(pid::text, ',' ORDER BY pid) FROM pg_stat_activity \
                    WHERE datname = 'app' AND state = 'idle' AND pid <> pg_backend_pid()";
    // A write: a read would be retried on a fresh connection, unseen.
    let victim = clients[0].simple_query("INSERT INTO t SELECT 1 FROM pg_sleep(30)");
    let kill = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The idle siblings, while the victim runs.
        let before = c.psql(backends).await;
        c.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO t %'").await;
        before
    };
    let (lost, before) = tokio::join!(victim, kill);
    assert!(!before.is_empty(), "no idle connections to watch");
    assert!(lost.is_err(), "the terminated statement did not fail");
    for r in run_all("SELECT 1").await {
        r.unwrap();
    }
    let after = c.psql(backends).await;
    let survivors = before.split(',').filter(|pid| after.split(',').any(|a| a == *pid)).count();
    assert_eq!(survivors, before.split(',').count(), "idle connections were dropped: before {before}, after {after}");
}
