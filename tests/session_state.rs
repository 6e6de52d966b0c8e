//! Session state under transaction pooling: SET is replayed on whichever connection (and node) a
//! session uses next, never leaks to other clients; temp tables stay private.

mod common;

use common::{Cluster, Proxy};

async fn one_value(client: &tokio_postgres::Client, sql: &str) -> String {
    let rows = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no row"))
}

#[tokio::test(flavor = "multi_thread")]
async fn set_search_path_follows_the_session_and_never_leaks() {
    let c = Cluster::start(2).await;
    c.psql(
        "CREATE SCHEMA s1; CREATE TABLE s1.t (v text); INSERT INTO s1.t VALUES ('s1'); \
         CREATE TABLE public.t (v text); INSERT INTO public.t VALUES ('public');",
    )
    .await;
    c.wait_replayed().await;
    // One server connection per node: every client shares it.
    let p = Proxy::builder().cluster(&c).pool_size(1).pool_mode("transaction").start().await;
    let a = p.connect().await;
    let b = p.connect().await;
    a.simple_query("SET search_path = s1, public").await.unwrap();
    for round in 0..6 {
        assert_eq!(one_value(&a, "SELECT v FROM t").await, "s1", "round {round}: a lost its search_path");
        assert_eq!(one_value(&b, "SELECT v FROM t").await, "public", "round {round}: a's SET leaked to b");
    }
    // The replayed state also holds for the extended protocol and on the primary.
    let row = a.query_one("SELECT v FROM t WHERE v = $1", &[&"s1"]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "s1");
    assert_eq!(one_value(&a, "/* sluice: primary */ SELECT v FROM t").await, "s1");
    a.simple_query("RESET ALL").await.unwrap();
    assert_eq!(one_value(&a, "SELECT v FROM t").await, "public", "RESET ALL must end the replay");
    assert_eq!(one_value(&b, "SHOW search_path").await, "\"$user\", public");
}

#[tokio::test(flavor = "multi_thread")]
async fn temp_tables_stay_with_their_session() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(2).pool_mode("transaction").start().await;
    let a = p.connect().await;
    a.simple_query("CREATE TEMP TABLE mine (x int); INSERT INTO mine VALUES (7)").await.unwrap();
    for _ in 0..4 {
        let b = p.connect().await;
        let err = b.simple_query("SELECT * FROM mine").await.expect_err("b must not see a's temp table");
        assert_eq!(common::sqlstate(&err).as_deref(), Some("42P01"));
        assert_eq!(one_value(&a, "SELECT x FROM mine").await, "7");
    }
    drop(a);
    // After a leaves, its pinned connection was reset before anyone else got it.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for _ in 0..4 {
        let b = p.connect().await;
        assert!(b.simple_query("SELECT * FROM mine").await.is_err());
    }
}

/// A hot standby refuses SERIALIZABLE (and forced read-write) sessions: their reads run on the
/// primary, whether the default came at startup or from a SET, and go back to replicas when it
/// is reset.
#[tokio::test(flavor = "multi_thread")]
async fn sessions_a_standby_refuses_read_on_the_primary() {
    let c = Cluster::start(2).await;
    let p = Proxy::builder().cluster(&c).monitor_interval("100ms").start().await;
    p.wait_topology(1, 2).await;
    let primary = c.primary_port().to_string();
    let port = "SELECT inet_server_port()";

    for options in ["-c default_transaction_isolation=serializable", "-c transaction_read_only=off"] {
        let mut config: tokio_postgres::Config = p.conn_string().parse().unwrap();
        config.options(options);
        let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap_or_else(|e| panic!("{options}: {e}"));
        tokio::spawn(conn);
        for _ in 0..4 {
            assert_eq!(one_value(&client, port).await, primary, "{options}");
        }
        client.batch_execute("BEGIN READ ONLY").await.unwrap();
        assert_eq!(one_value(&client, port).await, primary, "{options}: a read-only transaction");
        client.batch_execute("COMMIT").await.unwrap();
    }

    let client = p.connect().await;
    assert_ne!(one_value(&client, port).await, primary, "a plain session reads on a replica");
    client.batch_execute("SET default_transaction_isolation = serializable").await.unwrap();
    for _ in 0..4 {
        assert_eq!(one_value(&client, port).await, primary, "after SET ... serializable");
    }
    client.batch_execute("SET default_transaction_isolation = 'read committed'").await.unwrap();
    assert_ne!(one_value(&client, port).await, primary, "reset to read committed: replicas again");
}

/// Connects with `options` and returns the ParameterStatus values `names` as sluice reported
/// them at login.
async fn reported_at_login(p: &Proxy, options: &str, names: &[&str]) -> (tokio_postgres::Client, Vec<String>) {
    let mut config: tokio_postgres::Config = p.conn_string().parse().unwrap();
    if !options.is_empty() {
        config.options(options);
    }
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap_or_else(|e| panic!("{options}: {e}"));
    let values = names.iter().map(|n| conn.parameter(n).unwrap_or("<none>").to_string()).collect();
    tokio::spawn(conn);
    (client, values)
}

/// ParameterStatus at login is what the server reports (its spelling), under transaction pooling
/// whether or not a server connection was needed for the login.
#[tokio::test(flavor = "multi_thread")]
async fn parameters_at_login_are_spelled_as_the_server_reports_them() {
    let c = Cluster::start(1).await;
    let p = Proxy::builder().cluster(&c).pool_mode("transaction").start().await;
    // The first login warms the pool; the others may be answered without a server.
    for round in 0..3 {
        let (client, v) =
            reported_at_login(&p, "-c DateStyle=iso -c IntervalStyle=iso_8601", &["DateStyle", "IntervalStyle"]).await;
        assert_eq!(v, ["ISO, MDY", "iso_8601"], "round {round}");
        assert_eq!(one_value(&client, "SHOW DateStyle").await, "ISO, MDY");
        let (_, v) = reported_at_login(&p, "", &["DateStyle"]).await;
        assert_eq!(v, ["ISO, MDY"], "round {round}: default");
        let (_, v) = reported_at_login(&p, "-c DateStyle=german", &["DateStyle"]).await;
        assert_eq!(v, ["German, DMY"], "round {round}");
    }
}

/// Session pooling hands a server connection from one client to the next: the next client is
/// told the server's defaults, never what the previous client set.
#[tokio::test(flavor = "multi_thread")]
async fn session_pooling_never_reports_the_previous_client_s_parameters() {
    let c = Cluster::start(0).await;
    let default_tz = c.psql("SHOW TimeZone").await;
    let p = Proxy::builder().cluster(&c).pool_size(1).pool_mode("session").start().await;
    let names = ["TimeZone", "standard_conforming_strings", "DateStyle", "application_name"];
    let (first, before) = reported_at_login(&p, "", &names).await;
    assert_eq!(before[0], default_tz);
    first
        .batch_execute(
            "SET TimeZone = 'Pacific/Auckland'; SET standard_conforming_strings = off; \
             SET DateStyle = 'SQL, DMY'; SET application_name = 'first'",
        )
        .await
        .unwrap();
    drop(first);
    for _ in 0..2 {
        let (next, after) = reported_at_login(&p, "", &names).await;
        assert_eq!(after, before, "the previous client's parameters were reported");
        assert_eq!(one_value(&next, "SHOW TimeZone").await, default_tz);
    }
    let (_, v) = reported_at_login(&p, "-c DateStyle=iso", &["DateStyle"]).await;
    assert_eq!(v, ["ISO, MDY"]);
}
