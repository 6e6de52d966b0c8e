//! Many clients over few server connections, and no state leaking between them.

mod common;

use std::time::Duration;

use common::{raise_nofile_limit, Cluster, Proxy};
use sluice::pgcluster::{TEST_DATABASE, TEST_PASSWORD, TEST_USER};
use tokio::task::JoinSet;

const CLIENTS: usize = 500;
const POOL: usize = 10;

#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_clients_share_a_pool_of_ten() {
    let limit = raise_nofile_limit();
    assert!(limit > 3 * CLIENTS as u64, "open-files limit {limit} is too low for this test");
    let c = Cluster::start(0).await;
    // md5 between the clients and sluice: a debug-built tokio-postgres spends ~100 ms of CPU
    // on the client side of every SCRAM login (PBKDF2), so 500 SCRAM logins on 2 cores would
    // test the test's own crypto and trip the 5 s startup timeout. sluice still logs in to
    // the server with SCRAM.
    let p = Proxy::builder()
        .cluster(&c)
        .user_with_auth(TEST_USER, TEST_PASSWORD, "md5")
        .pool_size(POOL)
        .pool_mode("transaction")
        .checkout_timeout("30s")
        .start()
        .await;
    let port = p.port();

    let mut tasks = JoinSet::new();
    for i in 0..CLIENTS {
        tasks.spawn(async move {
            let client = common::connect(port, TEST_USER, TEST_PASSWORD, TEST_DATABASE)
                .await
                .map_err(|e| format!("client {i} could not connect: {}", common::describe(&e)))?;
            let n = i32::try_from(i).unwrap();
            let row = client
                .query_one("SELECT $1::int + 1", &[&n])
                .await
                .map_err(|e| format!("client {i}: {}", common::describe(&e)))?;
            if row.get::<_, i32>(0) != n + 1 {
                return Err(format!("client {i} got another client's answer"));
            }
            client
                .simple_query("SELECT pg_sleep(0.01)")
                .await
                .map_err(|e| format!("client {i}: {}", common::describe(&e)))?;
            Ok::<(), String>(())
        });
    }
    let mut failures = Vec::new();
    let all = tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done.unwrap() {
                failures.push(e);
            }
        }
    })
    .await;
    assert!(all.is_ok(), "500 clients did not finish within 180 s");
    assert!(failures.is_empty(), "{} clients failed, e.g. {:?}", failures.len(), &failures[..failures.len().min(5)]);

    // Through a pool of 10 the server never saw more than 10 sluice connections per pool
    // (plus the monitor's).
    let servers: usize = c
        .psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'sluice_test' AND pid <> pg_backend_pid()")
        .await
        .parse()
        .unwrap();
    assert!(servers <= POOL + 2, "{servers} server connections for a pool of {POOL}");
}

/// What a client finds on its server connection that it did not ask for.
async fn leftovers(client: &tokio_postgres::Client) -> Vec<String> {
    // A simple query: its implicit transaction starts with the statement, so now() equals
    // statement_timestamp() unless an older transaction is still open.
    let messages = client
        .simple_query(
            "SELECT pg_current_xact_id_if_assigned() IS NULL, \
                    now() = statement_timestamp(), \
                    current_setting('application_name'), \
                    current_setting('search_path'), \
                    to_regclass('leak_tmp') IS NULL",
        )
        .await
        .unwrap_or_else(|e| panic!("the clean-state query failed: {}", common::describe(&e)));
    let row = messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .expect("the clean-state query returned no row");
    let col = |i: usize| row.get(i).unwrap_or("").to_string();
    let mut found = Vec::new();
    if col(0) != "t" || col(1) != "t" {
        found.push(format!("an open transaction (xid unassigned: {}, fresh: {})", col(0), col(1)));
    }
    if col(2) == "dead-client" {
        found.push("the dead client's application_name".into());
    }
    if col(3).contains("leaky") {
        found.push(format!("the dead client's search_path {}", col(3)));
    }
    if col(4) != "t" {
        found.push("the dead client's temp table".into());
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_killed_mid_query_leaves_no_dirty_server_connection() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(1).pool_mode("transaction").checkout_timeout("10s").start().await;

    let (dead, task) = p.connect_killable().await;
    dead.batch_execute("SET application_name = 'dead-client'; SET search_path = leaky, public").await.unwrap();
    dead.batch_execute("BEGIN; CREATE TEMP TABLE leak_tmp (x int); INSERT INTO leak_tmp VALUES (1)").await.unwrap();
    let sleeping = tokio::spawn(async move { dead.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Kill the client: its socket closes with no Terminate, mid-query, mid-transaction.
    task.abort();
    let _ = sleeping.await;

    for round in 0..3 {
        let client = p.connect().await;
        let found = tokio::time::timeout(Duration::from_secs(15), leftovers(&client))
            .await
            .unwrap_or_else(|_| panic!("round {round}: no clean server connection within 15 s"));
        assert!(found.is_empty(), "round {round}: found {found:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn session_settings_do_not_leak_between_pooled_clients() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(2).start().await;
    let a = p.connect().await;
    let b = p.connect().await;
    a.batch_execute("SET application_name = 'dead-client'; SET search_path = leaky, public").await.unwrap();
    for _ in 0..3 {
        assert_eq!(leftovers(&b).await, Vec::<String>::new());
        let app: String = a.query_one("SELECT current_setting('application_name')", &[]).await.unwrap().get(0);
        assert_eq!(app, "dead-client", "a's own SET was lost");
    }
    // a leaves cleanly; whatever server connection it used serves others afterwards.
    drop(a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c2 = p.connect().await;
    for _ in 0..5 {
        assert_eq!(leftovers(&b).await, Vec::<String>::new());
        assert_eq!(leftovers(&c2).await, Vec::<String>::new());
    }
}
