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
    // Known before sluice starts: once it reaches the replica, the first catalog load is done,
    // so the function below cannot slip into that load.
    c.psql("CREATE FUNCTION known_s() RETURNS int LANGUAGE sql STABLE AS 'SELECT inet_server_port()'").await;
    c.wait_replayed().await;
    let p = Proxy::builder().cluster(&c).monitor_interval("100ms").start().await;
    p.wait_topology(1, 1).await;
    let replica = c.replica_ports()[0];
    let client = p.connect().await;
    assert!(eventually_on(&client, "SELECT known_s()", replica).await, "the first catalog load never finished");
    // Created directly on the primary: sluice's catalog does not know it.
    c.psql("CREATE FUNCTION port_s() RETURNS int LANGUAGE sql STABLE AS 'SELECT inet_server_port()'").await;
    c.wait_replayed().await;
    let sql = "SELECT port_s()";
    assert_eq!(port_of(&client, sql).await, c.primary_port(), "an unknown function must run on the primary");
    p.reload();
    for _ in 0..50 {
        if port_of(&client, sql).await == replica {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("after reload the STABLE function still never ran on the replica");
}

/// Polls (bounded) until `sql` runs on `want`; false if it never does.
async fn eventually_on(client: &tokio_postgres::Client, sql: &str, want: u16) -> bool {
    for _ in 0..50 {
        if port_of(client, sql).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Only DDL that can change functions reloads the catalog: in a multi-statement Query and in a
/// transaction (once committed) too; TRUNCATE and CREATE TEMP TABLE never do. A STABLE function
/// created behind sluice's back tells: it reaches a replica only after a reload.
#[tokio::test(flavor = "multi_thread")]
async fn only_function_ddl_reloads_the_catalog() {
    let c = Cluster::start(1).await;
    c.psql("CREATE TABLE tr (a int); CREATE SCHEMA app").await;
    // As above: known_s on the replica means the first catalog load is done.
    c.psql("CREATE FUNCTION known_s() RETURNS int LANGUAGE sql STABLE AS 'SELECT inet_server_port()'").await;
    c.wait_replayed().await;
    let p = Proxy::builder().cluster(&c).monitor_interval("100ms").start().await;
    p.wait_topology(1, 1).await;
    let replica = c.replica_ports()[0];
    let client = p.connect().await;
    assert!(eventually_on(&client, "SELECT known_s()", replica).await, "the first catalog load never finished");
    c.psql("CREATE FUNCTION hidden_s() RETURNS int LANGUAGE sql STABLE AS 'SELECT inet_server_port()'").await;
    c.wait_replayed().await;
    let hidden = "SELECT hidden_s()";
    assert_eq!(port_of(&client, hidden).await, c.primary_port(), "unknown before any reload");

    // Other DDL: no reload (wait long enough for one to have happened, then look).
    client.batch_execute("TRUNCATE tr").await.unwrap();
    // (Another session: a temp table pins its session to the primary.)
    p.connect().await.batch_execute("CREATE TEMP TABLE tmp (a int); DROP TABLE tmp").await.unwrap();
    client.batch_execute("CREATE INDEX ON tr (a)").await.unwrap();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(port_of(&client, hidden).await, c.primary_port(), "TRUNCATE / temp table DDL reloaded the catalog");
    }

    // A CREATE FUNCTION inside a multi-statement Query reloads it.
    let multi =
        "SELECT 1; CREATE FUNCTION app.multi_s() RETURNS int LANGUAGE sql STABLE AS 'SELECT inet_server_port()'";
    client.batch_execute(multi).await.unwrap();
    c.wait_replayed().await;
    assert!(eventually_on(&client, hidden, replica).await, "DDL in a multi-statement Query did not reload the catalog");
    assert!(eventually_on(&client, "SELECT app.multi_s()", replica).await);

    // ALTER FUNCTION in an explicit transaction: reloaded after COMMIT, so the new volatility
    // (VOLATILE: a write) is seen.
    client.batch_execute("BEGIN").await.unwrap();
    client.batch_execute("ALTER FUNCTION app.multi_s() VOLATILE").await.unwrap();
    client.batch_execute("COMMIT").await.unwrap();
    assert!(
        eventually_on(&client, "SELECT app.multi_s()", c.primary_port()).await,
        "a committed ALTER FUNCTION in a transaction did not reload the catalog"
    );
}
