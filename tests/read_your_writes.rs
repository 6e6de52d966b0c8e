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
