//! Stopping sluice without breaking its clients: SIGTERM drains (open transactions commit,
//! idle clients get `57P01`, new connections are refused, exit 0), a second signal exits at once.

mod common;

use std::str::FromStr;
use std::time::Duration;

use common::{Cluster, Proxy, ProxyProcess};

const LIMIT: Duration = Duration::from_secs(20);

/// A client and its connection task, whose result says how the connection ended.
async fn client_with_end(
    p: &ProxyProcess,
) -> (tokio_postgres::Client, tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>) {
    let config = tokio_postgres::Config::from_str(&p.conn_string()).unwrap();
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
    (client, tokio::spawn(conn))
}

async fn wait_for_sleep(c: &Cluster) {
    let sql = "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(2)'";
    for _ in 0..100 {
        if c.psql(sql).await == "1" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("pg_sleep(2) never showed up on the primary");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_open_transaction_commit_and_sends_idle_clients_away() {
    let c = Cluster::start(0).await;
    c.psql("CREATE TABLE drained (x int)").await;
    let builder = Proxy::builder().cluster(&c).set("lifecycle", "shutdown_timeout", "\"20s\"");
    let mut p = builder.spawn_process().await;
    let (idle, idle_end) = client_with_end(&p).await;
    idle.simple_query("SELECT 1").await.unwrap();
    let (busy, _busy_end) = client_with_end(&p).await;
    busy.batch_execute("BEGIN; INSERT INTO drained VALUES (1)").await.unwrap();
    let running = tokio::spawn(async move {
        busy.batch_execute("SELECT pg_sleep(2)").await?;
        busy.batch_execute("COMMIT").await
    });
    wait_for_sleep(&c).await;

    p.signal("TERM");
    let ended = tokio::time::timeout(LIMIT, idle_end).await.expect("the idle client was not sent away").unwrap();
    let err = ended.expect_err("the idle client's connection ends with an error");
    assert_eq!(err.code().map(|c| c.code()), Some("57P01"), "{err:?}");
    let refused =
        common::connect(p.port(), sluice::pgcluster::TEST_USER, sluice::pgcluster::TEST_PASSWORD, "app").await;
    assert!(refused.is_err(), "a new connection during the drain must be refused");

    tokio::time::timeout(LIMIT, running).await.unwrap().unwrap().expect("the open transaction commits");
    assert_eq!(p.wait_exit(LIMIT).await, Some(0), "{}", p.log());
    assert_eq!(c.psql("SELECT count(*) FROM drained").await, "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_signal_exits_at_once() {
    let c = Cluster::start(0).await;
    let builder = Proxy::builder().cluster(&c).set("lifecycle", "shutdown_timeout", "\"60s\"");
    let mut p = builder.spawn_process().await;
    let (busy, _end) = client_with_end(&p).await;
    busy.batch_execute("BEGIN").await.unwrap();
    p.signal("TERM");
    // The open transaction holds the drain; the first signal alone does not end the process.
    assert_eq!(p.wait_exit(Duration::from_millis(500)).await, None, "{}", p.log());
    p.signal("INT");
    assert_eq!(p.wait_exit(LIMIT).await, Some(1), "{}", p.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn json_logs_say_each_topology_change_with_its_reason_and_no_secret() {
    let c = Cluster::start(1).await;
    let builder = Proxy::builder().cluster(&c).monitor_interval("100ms").set("log", "format", "\"json\"");
    let p = builder.spawn_process().await;
    p.connect().await.simple_query("SELECT 1").await.unwrap();
    c.stop_node(1).await.unwrap();
    let mut change = None;
    for _ in 0..200 {
        let log = p.log();
        change = log
            .lines()
            .find(|l| l.contains("topology change") && l.contains("node1: replica -> down"))
            .map(String::from);
        if change.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let change = change.unwrap_or_else(|| panic!("no topology change line:\n{}", p.log()));
    let line: serde_json::Value = serde_json::from_str(&change).expect("a JSON line");
    assert_eq!(line["message"], "topology change");
    assert!(line["change"].as_str().unwrap().contains("not answering"), "the reason is given: {line}");
    let log = p.log();
    for l in log.lines().filter(|l| !l.trim().is_empty()) {
        assert!(serde_json::from_str::<serde_json::Value>(l).is_ok(), "not JSON: {l}");
    }
    assert!(!log.contains(sluice::pgcluster::TEST_PASSWORD), "a password reached the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn reuse_port_lets_a_second_sluice_bind_the_same_port() {
    let port = sluice::pgcluster::free_port().unwrap();
    let nowhere = sluice::pgcluster::free_port().unwrap();
    let on = |reuse: bool| {
        Proxy::builder()
            .node("n", nowhere)
            .user("u", "p")
            .listen(&format!("127.0.0.1:{port}"))
            .set("lifecycle", "reuse_port", &reuse.to_string())
            // The per-core layout always shares its port between its own threads.
            .set("runtime", "layout", if reuse { "\"per-core\"" } else { "\"shared\"" })
            .config()
    };
    let old = sluice::Proxy::start(on(true)).await.expect("the first binds");
    let new = sluice::Proxy::start(on(true)).await.expect("with SO_REUSEPORT the second binds the same port");
    assert_eq!(old.addr(), new.addr());
    new.shutdown().await;
    assert!(sluice::Proxy::start(on(false)).await.is_err(), "without it the port is taken");
    old.shutdown().await;
}
