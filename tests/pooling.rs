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

/// Server backends stopped with SIGSTOP: a backend told to terminate (`pg_terminate_backend`)
/// while stopped keeps the signal pending and sends its FATAL only once continued, as a backend
/// on a busy machine does once it next gets to run. Every one is continued on drop, whatever
/// the test's outcome, so the cluster can stop.
struct Stopped(Vec<i32>);

impl Stopped {
    fn stop(pids: &[i32]) -> Stopped {
        signal("-STOP", pids);
        Stopped(pids.to_vec())
    }

    /// Continue `pids` (one that has ended already is skipped).
    fn resume(&self, pids: &[i32]) {
        let _ = send_signal("-CONT", pids);
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // Some have ended by now (terminated, then continued): `kill` says so, and that is fine.
        let _ = send_signal("-CONT", &self.0);
    }
}

fn signal(which: &str, pids: &[i32]) {
    let status = send_signal(which, pids).expect("kill runs");
    assert!(status.success(), "kill {which} {pids:?} failed");
}

fn send_signal(which: &str, pids: &[i32]) -> std::io::Result<std::process::ExitStatus> {
    std::process::Command::new("kill")
        .arg(which)
        .args(pids.iter().map(i32::to_string))
        .stderr(std::process::Stdio::null())
        .status()
}

/// `pool.server_idle_timeout` closes idle server connections, the ones no checkout reaches
/// too: a burst opened three, then one client keeps using the newest (the idle list is taken
/// from the top), and the two below it held their backends for ever. A connection a client
/// kept in a transaction for longer than the timeout was in use, not idle: it is reused.
#[tokio::test(flavor = "multi_thread")]
async fn idle_server_connections_close_after_the_idle_timeout() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder()
        .cluster(&c)
        .pool_size(5)
        .pool_mode("transaction")
        .set("runtime", "workers", "1")
        .set("pool", "server_idle_timeout", "\"1s\"")
        .set("", "admin_listen", "\"127.0.0.1:0\"")
        .start()
        .await;
    let (clients, pids) = in_transactions(&p, 3).await;
    for client in &clients[1..] {
        client.batch_execute("COMMIT").await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // In use for 1.5 s, then back in the pool and taken again at once.
    clients[0].batch_execute("COMMIT").await.unwrap();
    let again: i32 = clients[0].query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    assert_eq!(again, pids[0], "the connection held past the idle timeout was closed at its release");
    // Idle for 1.5 s: closed by sluice (wait_gone allows 10 s).
    wait_gone(&c, pids[1]).await;
    wait_gone(&c, pids[2]).await;
    assert_eq!(p.metric("sluice_pool_expired_total{node=\"node0\"}").await, 2.0);
    // The pool goes on.
    let fresh = p.connect().await;
    fresh.batch_execute("SELECT 1").await.unwrap();
}

/// `n` clients of `p`, each in a transaction (so on a server connection of its own), and
/// those connections' backend pids.
async fn in_transactions(p: &Proxy, n: usize) -> (Vec<tokio_postgres::Client>, Vec<i32>) {
    let mut clients = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..n {
        let client = p.connect().await;
        client.batch_execute("BEGIN").await.unwrap();
        pids.push(client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get::<_, i32>(0));
        clients.push(client);
    }
    (clients, pids)
}

/// A proxy in transaction mode whose pool holds three idle server connections that the next
/// checkouts take in a known order, and their backend pids in that order (each client ends
/// its transaction in reverse, and the pool reuses the connection put back last first: one
/// session thread, so one idle list), and a client connected before anything is stopped.
async fn three_idle_in_order(c: &Cluster, connect_timeout: &str) -> (Proxy, tokio_postgres::Client, Vec<i32>) {
    c.psql("CREATE TABLE kill_log (x int)").await;
    let p = Proxy::builder()
        .cluster(c)
        .pool_size(5)
        .pool_mode("transaction")
        .set("runtime", "workers", "1")
        .set("pool", "connect_timeout", &format!("\"{connect_timeout}\""))
        .set("", "admin_listen", "\"127.0.0.1:0\"")
        .start()
        .await;
    let (clients, pids) = in_transactions(&p, 3).await;
    for client in clients.iter().rev() {
        client.batch_execute("COMMIT").await.unwrap();
    }
    let user = p.connect().await;
    (p, user, pids)
}

/// Terminate `pids` (all stopped) from a direct connection; the signals stay pending.
async fn terminate(c: &Cluster, pids: &[i32]) {
    let list = pids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    let n = c.psql(&format!("SELECT count(*) FROM unnest(ARRAY[{list}]) AS pid WHERE pg_terminate_backend(pid)")).await;
    assert_eq!(n, pids.len().to_string(), "not every backend was signalled");
}

/// Wait until backend `pid` is gone (its FATAL sent, the process ended).
async fn wait_gone(c: &Cluster, pid: i32) {
    for _ in 0..200 {
        let n = c.psql(&format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}")).await;
        if n == "0" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("backend {pid} did not end within 10 s");
}

/// A statement through sluice, bounded: a hang fails the test instead of stalling it.
async fn run(client: &tokio_postgres::Client, sql: &str) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(30), client.simple_query(sql)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(common::describe(&e)),
        Err(_) => panic!("{sql}: no answer within 30 s"),
    }
}

/// Run `sql` through sluice while `pids` are continued after `delay` in the background (the
/// statement may be waiting on one of them).
async fn run_resuming(
    client: &tokio_postgres::Client,
    sql: &str,
    stopped: &std::sync::Arc<Stopped>,
    pids: &[i32],
    delay: Duration,
) -> Result<(), String> {
    let (resumer, pids) = (std::sync::Arc::clone(stopped), pids.to_vec());
    let later = tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        resumer.resume(&pids);
    });
    let result = run(client, sql).await;
    later.await.unwrap();
    result
}

/// `pg_terminate_backend` of every backend: an idle connection found dead at checkout says its
/// siblings may be dead too, even where their FATAL has not reached the socket yet. The pool
/// confirms each before use, so the statement runs on a live connection instead of being lost.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_connection_found_terminated_gets_its_siblings_confirmed() {
    let c = Cluster::start(0).await;
    let (p, client, pids) = three_idle_in_order(&c, "3s").await;
    let stopped = std::sync::Arc::new(Stopped::stop(&pids));
    terminate(&c, &pids).await;
    // The first connection the pool will offer is dead and shows it on its socket; the other
    // two are dead too, but their FATAL is not sent until they are continued.
    stopped.resume(&pids[..1]);
    wait_gone(&c, pids[0]).await;
    // A write: nothing would run it again if it were lost.
    let result =
        run_resuming(&client, "INSERT INTO kill_log VALUES (1)", &stopped, &pids[1..], Duration::from_millis(500))
            .await;
    if let Err(e) = result {
        panic!("the statement was lost on a terminated connection: {e}");
    }
    assert_eq!(c.psql("SELECT count(*) FROM kill_log").await, "1");
    let row = client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap();
    assert!(!pids.contains(&row.get::<_, i32>(0)), "a terminated backend is still in use");
    let lost = p.metric("sluice_pool_idle_lost_total{node=\"node0\"}").await;
    assert!(lost >= 2.0, "idle connections counted as found lost: {lost}");
}

/// The shape of a kill round on a busy machine: a client's statement is lost to
/// `pg_terminate_backend` (its one error), and the pool's next connection was terminated in
/// the same round but has not said so yet. Its next statement must not be lost too.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_lost_a_statement_to_a_kill_does_not_lose_the_next() {
    let c = Cluster::start(0).await;
    let (_p, client, pids) = three_idle_in_order(&c, "3s").await;
    let stopped = std::sync::Arc::new(Stopped::stop(&pids));
    terminate(&c, &pids).await;
    // The statement goes to the first connection, whose backend dies once continued.
    let first =
        run_resuming(&client, "INSERT INTO kill_log VALUES (1)", &stopped, &pids[..1], Duration::from_millis(300))
            .await;
    let err = first.expect_err("the statement on the terminated connection should have been lost");
    assert!(err.contains(" 57P01: "), "{err}");

    let second =
        run_resuming(&client, "INSERT INTO kill_log VALUES (2)", &stopped, &pids[1..], Duration::from_millis(300))
            .await;
    if let Err(e) = second {
        panic!("a second statement was lost in the same kill: {e}");
    }
    assert_eq!(c.psql("SELECT string_agg(x::text, ',') FROM kill_log").await, "2");
}

/// A server that stops answering (its backends stopped, nothing terminated) costs a checkout
/// one connect timeout in all, not one per idle connection: after the first confirmation
/// that times out, it opens a new connection.
#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_that_do_not_answer_cost_one_connect_timeout() {
    let c = Cluster::start(0).await;
    let (p, client, pids) = three_idle_in_order(&c, "1s").await;
    let stopped = Stopped::stop(&pids);
    // The first is terminated and shows it (a loss, so the others need confirming); the other
    // two are alive but do not answer.
    terminate(&c, &pids[..1]).await;
    stopped.resume(&pids[..1]);
    wait_gone(&c, pids[0]).await;

    if let Err(e) = run(&client, "INSERT INTO kill_log VALUES (1)").await {
        panic!("the statement failed: {e}");
    }
    // The dead one and the one that timed out; the third was never waited on.
    let lost = p.metric("sluice_pool_idle_lost_total{node=\"node0\"}").await;
    assert_eq!(lost, 2.0, "idle connections given up on");
}
