//! The SQL admin console through psql (`-d sluice`): every command answers, PAUSE holds new
//! statements while running ones finish, KILL ends a client, SHUTDOWN drains the process, and a
//! user outside `admin.users` gets 28000.

mod common;

use std::time::Duration;

use common::{Cluster, Proxy, ProxyBuilder};
use sluice::pgcluster::{TEST_PASSWORD, TEST_USER};

const OPERATOR: (&str, &str) = ("operator", "op-secret");

fn builder(c: &Cluster) -> ProxyBuilder {
    Proxy::builder().cluster(c).monitor_interval("100ms").user(OPERATOR.0, OPERATOR.1).set(
        "admin",
        "users",
        "[\"operator\"]",
    )
}

async fn console(c: &Cluster, port: u16, sql: &str) -> String {
    c.psql_as(port, OPERATOR.0, OPERATOR.1, "sluice", sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_console_command_answers_through_psql() {
    let c = Cluster::start(1).await;
    let p = builder(&c).start_from_file().await;
    p.wait_topology(1, 1).await;
    let client = p.connect().await;
    client.simple_query("SELECT 1").await.unwrap();
    let port = p.port();

    let nodes = console(&c, port, "SHOW NODES").await;
    assert!(nodes.lines().any(|l| l.starts_with("node0|127.0.0.1|") && l.contains("|primary|0|")), "{nodes}");
    let replica = nodes.lines().find(|l| l.starts_with("node1|")).unwrap_or_else(|| panic!("{nodes}"));
    assert!(replica.contains("|replica|"), "{nodes}");
    let lag_seconds = replica.split('|').nth(5).unwrap();
    assert!(lag_seconds.parse::<f64>().is_ok(), "lag_seconds is shown: {nodes}");
    let pools = console(&c, port, "show pools;").await;
    assert!(pools.contains(&format!("|app|{TEST_USER}|20|")), "{pools}");
    let clients = console(&c, port, "SHOW CLIENTS").await;
    let app_client =
        clients.lines().find(|l| l.contains(&format!("|{TEST_USER}|app|"))).unwrap_or_else(|| panic!("{clients}"));
    assert!(clients.contains("|operator|sluice|"), "the console lists itself: {clients}");
    let servers = console(&c, port, "SHOW SERVERS").await;
    assert!(servers.contains("|idle|"), "{servers}");
    let stats = console(&c, port, "SHOW STATS").await;
    let replica = stats.lines().find(|l| l.starts_with("node1|replica|")).unwrap_or_else(|| panic!("{stats}"));
    let columns: Vec<u64> = replica.split('|').skip(2).take(3).map(|v| v.parse().unwrap()).collect();
    assert!(columns[0] >= 1, "statements: {stats}");
    assert!(columns[1] > 0 && columns[2] > 0, "bytes sent and received: {stats}");
    let config = console(&c, port, "SHOW CONFIG").await;
    assert!(config.contains("admin.users|operator"), "{config}");
    assert!(config.contains("failover|") && config.contains("switchover_timeout"), "{config}");
    assert!(!config.contains(OPERATOR.1), "SHOW CONFIG shows no password: {config}");
    assert!(console(&c, port, "SHOW VERSION").await.starts_with("sluice "));
    console(&c, port, "RELOAD").await;
    let wrong = c.psql_as(port, OPERATOR.0, OPERATOR.1, "sluice", "SHOW TABLES").await;
    assert!(wrong.is_err(), "an unknown command is an error");

    let id = app_client.split('|').next().unwrap();
    console(&c, port, &format!("KILL {id}")).await;
    let err = client.simple_query("SELECT 1").await.expect_err("a killed client is disconnected");
    assert!(err.is_closed() || err.code().map(|c| c.code()) == Some("57P01"), "{err:?}");

    let outsider = common::connect(port, TEST_USER, TEST_PASSWORD, "sluice").await;
    common::expect_sqlstate(outsider.map(|_| ()), "28000");
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_holds_new_statements_and_resume_releases_them() {
    let c = Cluster::start(0).await;
    let p = builder(&c).start().await;
    p.wait_topology(1, 0).await;
    let (running, waiting) = (p.connect().await, p.connect().await);
    let port = p.port();
    let slow = tokio::spawn(async move { running.simple_query("SELECT pg_sleep(1)").await.map(drop) });
    tokio::time::sleep(Duration::from_millis(200)).await;
    console(&c, port, "PAUSE").await;
    let held = tokio::spawn(async move { waiting.simple_query("SELECT 1").await.map(drop) });
    tokio::time::timeout(Duration::from_secs(20), slow)
        .await
        .unwrap()
        .unwrap()
        .expect("the running statement finishes");
    assert!(!held.is_finished(), "a new statement waits while paused");
    console(&c, port, "RESUME").await;
    tokio::time::timeout(Duration::from_secs(20), held).await.unwrap().unwrap().expect("released without an error");
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_from_the_console_drains_and_exits_0() {
    let c = Cluster::start(0).await;
    let mut p = builder(&c).spawn_process().await;
    console(&c, p.port(), "SHUTDOWN").await;
    assert_eq!(p.wait_exit(Duration::from_secs(30)).await, Some(0), "{}", p.log());
}

/// Ports that `n` autocommit reads ran on (simple queries: one unit, one routing decision each).
async fn read_ports(client: &tokio_postgres::Client, n: usize) -> Vec<u16> {
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        let messages = client.simple_query("SELECT inet_server_port()").await.expect("a read");
        let port = messages.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        });
        ports.push(port.expect("a port"));
    }
    ports
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_undrain_and_switchover_from_the_console() {
    let c = Cluster::start(2).await;
    c.wait_replayed().await;
    let p = builder(&c).set("failover", "switchover_timeout", "\"10s\"").start().await;
    p.wait_topology(1, 2).await;
    let (port, ports) = (p.port(), c.ports());
    let reader = p.connect().await;

    let drained = console(&c, port, "DRAIN node2").await;
    assert!(drained.contains("node2|stale|drained"), "{drained}");
    assert!(!read_ports(&reader, 10).await.contains(&ports[2]), "a read ran on the drained replica");
    let undrained = console(&c, port, "UNDRAIN node2").await;
    assert!(undrained.contains("node2|replica|"), "{undrained}");
    let seen = read_ports(&reader, 10).await;
    assert!(seen.contains(&ports[2]), "the undrained replica serves reads again: {seen:?}");
    let unknown = c.psql_as(port, OPERATOR.0, OPERATOR.1, "sluice", "DRAIN nope").await;
    assert!(unknown.is_err_and(|e| e.to_string().contains("no node is called")), "an unknown node is an error");

    // The primary is idle: nothing is written while the target catches up.
    let switched = console(&c, port, "SWITCHOVER node1").await;
    assert!(switched.starts_with("node0|fenced|node1|primary|"), "{switched}");
    assert_eq!(p.topology().primary().map(|n| n.index), Some(1));
    let mut writer = p.connect().await;
    let tx = writer.transaction().await.expect("BEGIN");
    let on = tx.query_one("SELECT inet_server_port()", &[]).await.expect("a statement in a transaction");
    tx.commit().await.expect("COMMIT");
    assert_eq!(on.get::<_, i32>(0), i32::from(ports[1]), "transactions go to the new primary");
}
