//! Read-your-writes: after a session writes, its reads run only where the write is visible, and
//! go back to the replicas once they have replayed it.

mod common;

use common::Cluster;

#[tokio::test(flavor = "multi_thread")]
async fn a_session_always_reads_its_own_writes() {
    let (c, p) = Cluster::with_proxy(2, "CREATE TABLE ryw (id int PRIMARY KEY)").await;
    let client = p.connect().await;
    for id in 0..100i32 {
        client.execute("INSERT INTO ryw VALUES ($1)", &[&id]).await.unwrap();
        let n: i64 = client.query_one("SELECT count(*) FROM ryw WHERE id = $1", &[&id]).await.unwrap().get(0);
        assert_eq!(n, 1, "the read right after inserting {id} did not see it");
        let rows = client.simple_query(&format!("INSERT INTO ryw VALUES ({}); ", id + 1000)).await;
        rows.unwrap();
        let seen = client.simple_query(&format!("SELECT id FROM ryw WHERE id = {}", id + 1000)).await.unwrap();
        assert!(
            seen.iter().any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))),
            "simple-protocol read after write {} missed it",
            id + 1000
        );
    }
    // Once the replicas have replayed everything, the session's reads go back to them.
    let replicas = c.replica_ports();
    let mut on_replica = false;
    for _ in 0..50 {
        let port: i32 = client.query_one("SELECT inet_server_port()", &[]).await.unwrap().get(0);
        if replicas.contains(&(port as u16)) {
            on_replica = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(on_replica, "reads never returned to the replicas after they caught up");
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_committed_in_a_transaction_are_read_back_at_once() {
    let (_c, p) = Cluster::with_proxy(1, "CREATE TABLE ryw_tx (id int PRIMARY KEY)").await;
    let mut client = p.connect().await;
    for id in 0..30i32 {
        // One Query holding a whole transaction, then a transaction object (extended protocol).
        client.simple_query(&format!("BEGIN; INSERT INTO ryw_tx VALUES ({id}); COMMIT")).await.unwrap();
        let n: i64 = client.query_one("SELECT count(*) FROM ryw_tx WHERE id = $1", &[&id]).await.unwrap().get(0);
        assert_eq!(n, 1, "the read after committing {id} in one Query missed it");
        let tx = client.transaction().await.unwrap();
        tx.execute("INSERT INTO ryw_tx VALUES ($1)", &[&(id + 1000)]).await.unwrap();
        tx.commit().await.unwrap();
        let n: i64 =
            client.query_one("SELECT count(*) FROM ryw_tx WHERE id = $1", &[&(id + 1000)]).await.unwrap().get(0);
        assert_eq!(n, 1, "the read after committing {} in a transaction missed it", id + 1000);
    }
}

/// The query sluice sends behind a write to learn the primary's WAL position.
const POSITION_SQL: &str = "SELECT pg_catalog.pg_current_wal_insert_lsn()";

/// How many of sluice's server backends on `port` last ran the position query.
async fn position_queries(c: &Cluster, port: u16) -> usize {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
         AND pid <> pg_backend_pid() AND query = '{POSITION_SQL}'"
    );
    c.psql_at(port, &sql).await.parse().unwrap()
}

/// With no replica to read from, a write's position would buy nothing: the primary is not
/// asked for it (a statement behind every write transaction otherwise).
#[tokio::test(flavor = "multi_thread")]
async fn with_no_replica_a_write_asks_for_no_position() {
    let c = Cluster::start(0).await;
    c.psql("CREATE TABLE ryw_single (id int)").await;
    let p = common::Proxy::builder().cluster(&c).pool_size(1).pool_mode("transaction").start().await;
    let mut client = p.connect().await;
    client.simple_query("INSERT INTO ryw_single VALUES (1)").await.unwrap();
    client.execute("INSERT INTO ryw_single VALUES ($1)", &[&2i32]).await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO ryw_single VALUES (3)", &[]).await.unwrap();
    tx.commit().await.unwrap();
    // The pool's one server connection: its last statement was the commit, not the query.
    assert_eq!(position_queries(&c, c.primary_port()).await, 0, "the position was asked for");
    let n: i64 = client.query_one("SELECT count(*) FROM ryw_single", &[]).await.unwrap().get(0);
    assert_eq!(n, 3);
}

/// A write made while no replica could take reads leaves its position unmeasured; once a
/// replica is back, the session's next read goes to the primary (it sees its write) and asks
/// for the position behind it, and later reads return to the replica once it has replayed it.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_made_with_no_replica_is_read_back_and_reads_return_to_the_replica() {
    let (c, p) = Cluster::with_proxy(1, "CREATE TABLE ryw_back (id int PRIMARY KEY)").await;
    let client = p.connect().await;
    let replica = c.replica_ports()[0];
    let replica_index = c.ports().iter().position(|&port| port == replica).unwrap();
    c.stop_node(replica_index).await.unwrap();
    p.wait_topology(1, 0).await;
    client.execute("INSERT INTO ryw_back VALUES (1)", &[]).await.unwrap();
    assert_eq!(position_queries(&c, c.primary_port()).await, 0, "asked for a position no replica could use");

    c.start_node(replica_index).await.unwrap();
    p.wait_topology(1, 1).await;
    // One unit (simple protocol): with the position unknown, no replica can be shown to have
    // the write, so the read runs on the primary.
    let first = client.simple_query("SELECT count(*), inet_server_port() FROM ryw_back WHERE id = 1").await.unwrap();
    let row = first.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => {
            Some((r.get(0).unwrap().to_string(), r.get(1).unwrap().to_string()))
        }
        _ => None,
    });
    let (count, port) = row.expect("the read returned a row");
    assert_eq!(count, "1", "the session's own write was not visible to its read");
    assert_eq!(port, c.primary_port().to_string(), "the first read did not go to the primary");

    let mut on_replica = false;
    for _ in 0..100 {
        let row =
            client.query_one("SELECT count(*), inet_server_port() FROM ryw_back WHERE id = 1", &[]).await.unwrap();
        assert_eq!(row.get::<_, i64>(0), 1, "a read missed the session's write");
        if row.get::<_, i32>(1) == i32::from(replica) {
            on_replica = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(on_replica, "reads never returned to the replica: the write's position was never learnt");
}
