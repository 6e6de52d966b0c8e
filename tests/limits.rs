//! Named limits and what a client sees at each: too many clients (53300), a pool that stays busy
//! (53000 after the checkout timeout), an idle client (57P05), and no primary (57P03, fast).

mod common;

use std::time::{Duration, Instant};

use common::{describe, sqlstate, Cluster, Proxy};
use sluice::pgcluster::{TEST_PASSWORD, TEST_USER};

#[tokio::test(flavor = "multi_thread")]
async fn clients_over_the_limit_get_53300_and_a_free_slot_is_reused() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).max_client_connections(3).start().await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(p.connect().await);
    }
    let err = p.try_connect_as(TEST_USER, TEST_PASSWORD, "app").await.expect_err("a fourth client must be refused");
    assert_eq!(sqlstate(&err).as_deref(), Some("53300"), "{}", describe(&err));
    drop(held.pop());
    // The slot frees when sluice notices the client left.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match p.try_connect_as(TEST_USER, TEST_PASSWORD, "app").await {
            Ok(client) => {
                client.simple_query("SELECT 1").await.unwrap();
                break;
            }
            Err(e) if Instant::now() < deadline => {
                assert_eq!(sqlstate(&e).as_deref(), Some("53300"), "{}", describe(&e));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the freed slot was never reused: {}", describe(&e)),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_pool_answers_53000_after_the_checkout_timeout() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(1).checkout_timeout("300ms").start().await;
    let holder = p.connect().await;
    holder.simple_query("BEGIN; SELECT 1").await.unwrap();
    let waiter = p.connect().await;
    let started = Instant::now();
    let err = waiter.simple_query("SELECT 1").await.expect_err("no server connection is free");
    let waited = started.elapsed();
    assert_eq!(sqlstate(&err).as_deref(), Some("53000"), "{}", describe(&err));
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    holder.simple_query("COMMIT").await.unwrap();
    // The session survived its error and gets the freed connection.
    waiter.simple_query("SELECT 1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_clients_are_disconnected_with_57p05() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).idle_client_timeout("300ms").start().await;
    let (client, task) = common::connect_with_task(p.port(), TEST_USER, TEST_PASSWORD, "app").await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let err = client.simple_query("SELECT 1").await.expect_err("the idle client was disconnected");
    assert!(err.is_closed() || sqlstate(&err).as_deref() == Some("57P05"), "{}", describe(&err));
    let _ = task.await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_primary_writes_are_held_then_fail_with_the_cause_and_reads_go_on() {
    let c = Cluster::start(1).await;
    c.psql("CREATE TABLE w (x int)").await;
    c.wait_replayed().await;
    let hold = Duration::from_millis(500);
    let p = Proxy::builder()
        .cluster(&c)
        .monitor_interval("100ms")
        .set("failover", "hold_timeout", "\"500ms\"")
        .start()
        .await;
    p.wait_topology(1, 1).await;
    let client = p.connect().await;
    client.simple_query("INSERT INTO w VALUES (1)").await.unwrap();
    c.stop_node(0).await.unwrap();

    // Before and after the monitor notices: every write is held for failover.hold_timeout at
    // most, then fails with a clear error.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = String::new();
    while Instant::now() < deadline {
        let started = Instant::now();
        let err = client.simple_query("INSERT INTO w VALUES (2)").await.expect_err("no primary");
        // Liveness, not speed: the hold ends (plus at most one connect attempt).
        assert!(started.elapsed() < hold + Duration::from_secs(5), "a write waited {:?}", started.elapsed());
        last = describe(&err);
        if sqlstate(&err).as_deref() == Some("57P03") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(last.contains("57P03") && last.contains("no primary"), "last write error: {last}");
    // Reads keep working on the replica, on the same client connection.
    for _ in 0..5 {
        let rows = match client.query("SELECT count(*) FROM w", &[]).await {
            Ok(rows) => rows,
            Err(e) => {
                let replayed = c.psql_at(c.replica_ports()[0], "SELECT pg_last_wal_replay_lsn()").await;
                panic!("read failed: {}; replica replayed {replayed}; topology {:?}", describe(&e), p.topology())
            }
        };
        assert_eq!(rows[0].get::<_, i64>(0), 1);
    }
}

/// `limits.tcp_keepalive`: the client sockets sluice accepts and the server connections it
/// opens have TCP keepalive on, so a peer that vanishes without a FIN (a client's machine gone
/// in an open transaction) is given up by the kernel instead of holding its server connection
/// for ever. Read from `/proc/net/tcp`: an idle socket with keepalive has its keepalive timer
/// armed (`tr` 2) for the configured idle time; without, no timer (`tr` 0).
#[tokio::test(flavor = "multi_thread")]
async fn client_and_server_sockets_have_tcp_keepalive() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).set("limits", "tcp_keepalive", "\"45s\"").start().await;
    let client = p.connect().await;
    client.simple_query("SELECT 1").await.unwrap();
    let (raw, accepted) = accepted_socket(p.port()).await;
    assert_eq!(accepted.2, 2, "no keepalive timer on the accepted socket: {accepted:?}");
    // In clock ticks (100 a second): armed for 45 s when the socket went idle, a moment ago.
    assert!((4000..=4500).contains(&accepted.3), "{accepted:?}");
    let sockets = tcp_sockets();
    let to_server: Vec<_> = sockets.iter().filter(|s| s.1 == c.primary_port()).collect();
    assert!(to_server.iter().any(|s| s.2 == 2), "no server connection has a keepalive timer: {to_server:?}");
    drop(raw);

    let off = Proxy::builder().cluster(&c).set("limits", "tcp_keepalive", "\"0s\"").start().await;
    let (_raw, accepted) = accepted_socket(off.port()).await;
    assert_eq!(accepted.2, 0, "keepalive is off: {accepted:?}");
}

/// A new connection to `port`, and the `/proc/net/tcp` row of the listener's side of it once
/// it has sat idle a moment.
async fn accepted_socket(port: u16) -> (tokio::net::TcpStream, (u16, u16, u8, u64)) {
    let raw = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let ours = raw.local_addr().unwrap().port();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let accepted = tcp_sockets().into_iter().find(|s| s.0 == port && s.1 == ours).expect("the accepted side");
    (raw, accepted)
}

/// `/proc/net/tcp` rows as (local port, remote port, timer kind, ticks to the timer).
fn tcp_sockets() -> Vec<(u16, u16, u8, u64)> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap(), 16).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (tr, when) = f[5].split_once(':').unwrap();
            (port(f[1]), port(f[2]), tr.parse().unwrap(), u64::from_str_radix(when, 16).unwrap())
        })
        .collect()
}
