//! Function volatility comes from each database's catalog, reloaded after DDL through sluice and
//! on reload (SIGHUP): a STABLE function created behind sluice's back is a write until then.

mod common;

use std::time::Duration;

use common::{Cluster, Proxy};

async fn port_of(client: &tokio_postgres::Client, sql: &str) -> u16 {
    let rows = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no port"))
}

#[tokio::test(flavor = "multi_thread")]
async fn functions_created_behind_sluice_are_writes_until_reload() {
    let c = Cluster::start(1).await;
    let p = Proxy::builder().cluster(&c).monitor_interval("100ms").start().await;
    p.wait_topology(1, 1).await;
    let client = p.connect().await;
    client.simple_query("SELECT 1").await.unwrap();
    // Created directly on the primary: sluice's catalog does not know it.
    c.psql("CREATE FUNCTION port_s() RETURNS int LANGUAGE sql STABLE AS 'SELECT inet_server_port()'").await;
    c.wait_replayed().await;
    let sql = "SELECT port_s()";
    assert_eq!(port_of(&client, sql).await, c.primary_port(), "an unknown function must run on the primary");
    p.reload();
    let replica = c.replica_ports()[0];
    for _ in 0..50 {
        if port_of(&client, sql).await == replica {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("after reload the STABLE function still never ran on the replica");
}
