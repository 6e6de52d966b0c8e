//! Hot reload while clients work: a replica added serves reads, a removed one serves nothing,
//! a pool grows and a new user logs in, with 0 client errors; an invalid file changes nothing
//! and `POST /reload` returns every problem.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Cluster, Proxy, ProxyBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLIENTS: usize = 20;

/// `POST /reload`: (status, JSON body).
async fn post_reload(admin: SocketAddr) -> (u16, serde_json::Value) {
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    let req = "POST /reload HTTP/1.1\r\nHost: sluice\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")))
}

/// Reads served per server port, and errors, from clients that run until told to stop.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    errors: AtomicUsize,
    reads: Mutex<HashMap<u16, usize>>,
}

impl Load {
    fn reads_on(&self, port: u16) -> usize {
        self.reads.lock().unwrap().get(&port).copied().unwrap_or(0)
    }

    fn reset(&self) {
        self.reads.lock().unwrap().clear();
    }
}

/// Every fifth client writes on every other statement; the rest only read. A reader must not
/// write: read-your-writes keeps a session's reads on the primary until the monitor has seen a
/// replica replay its last write (every `monitor_interval`), so a client writing every few
/// milliseconds would read from the primary only and the replicas' read counts below would
/// measure the machine's speed instead of the reload.
async fn client_loop(client: tokio_postgres::Client, load: Arc<Load>, n: usize) {
    let writer = n.is_multiple_of(5);
    let mut i = 0;
    // A closed connection ends the loop (its error is counted once): spinning on it would fill
    // the captured output until the machine runs out of memory.
    while !load.stop.load(Ordering::Relaxed) && !client.is_closed() {
        i += 1;
        if writer && i % 2 == 0 {
            if let Err(e) = client.execute("INSERT INTO work VALUES ($1)", &[&(n as i32)]).await {
                eprintln!("client {n}: write failed: {}", common::describe(&e));
                load.errors.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        match client.query_one("SELECT inet_server_port()", &[]).await {
            Ok(row) => {
                let port: i32 = row.get(0);
                *load.reads.lock().unwrap().entry(port as u16).or_default() += 1;
            }
            Err(e) => {
                eprintln!("client {n}: read failed: {}", common::describe(&e));
                load.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn builder(c: &Cluster, nodes: &[usize], pool_size: usize) -> ProxyBuilder {
    let ports = c.ports();
    let mut b = Proxy::builder()
        .monitor_interval("100ms")
        .pool_size(pool_size)
        // 20 SCRAM logins at once in a debug build on a busy machine.
        .startup_timeout("60s")
        .set("", "admin_listen", "\"127.0.0.1:0\"")
        .user(sluice::pgcluster::TEST_USER, sluice::pgcluster::TEST_PASSWORD);
    for &i in nodes {
        b = b.node(&format!("node{i}"), ports[i]);
    }
    b
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_changes_nodes_pools_and_users_under_load_without_errors() {
    let c = Cluster::start(2).await;
    c.psql("CREATE TABLE work (n int)").await;
    c.create_user("newbie", "newbie-pw").await;
    c.wait_replayed().await;
    let ports = c.ports();
    let p = Arc::new(builder(&c, &[0, 1], 4).start_from_file().await);
    p.wait_topology(1, 1).await;
    let admin = p.admin_addr().unwrap();
    let load = Arc::new(Load::default());
    let mut tasks = Vec::new();
    for n in 0..CLIENTS {
        let client = p.connect().await;
        tasks.push(tokio::spawn(client_loop(client, Arc::clone(&load), n)));
    }
    wait_until("node1 serves reads", || load.reads_on(ports[1]) > 50).await;

    let next = builder(&c, &[0, 2], 8).user("newbie", "newbie-pw");
    p.rewrite_config(&next.listen(&p.addr().to_string()).toml());
    let (status, report) = post_reload(admin).await;
    assert_eq!(status, 200, "{report}");
    let changes: Vec<&str> = report["changes"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    for line in ["node node2 added", "node node1 removed", "pool.size: 4 -> 8", "user newbie added"] {
        assert!(changes.contains(&line), "{line:?} missing from {changes:?}");
    }
    p.wait_topology(1, 1).await;
    wait_until("the added replica serves reads", || load.reads_on(ports[2]) > 50).await;
    load.reset();
    wait_until("reads keep flowing", || load.reads_on(ports[2]) > 200).await;
    assert_eq!(load.reads_on(ports[1]), 0, "the removed replica still served reads");
    assert_eq!(p.running_config().pool.size, 8);
    let newbie = p.connect_as("newbie", "newbie-pw", "app").await;
    newbie.simple_query("SELECT 1").await.unwrap();

    p.rewrite_config("[pool]\nsize = 0\nsizee = 3\n");
    let (status, refused) = post_reload(admin).await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused.to_string().contains("sizee"), "{refused}");
    p.rewrite_config("listen = \"127.0.0.1:1\"\n[pool]\nsize = 0\n");
    let (status, refused) = post_reload(admin).await;
    assert_eq!(status, 422, "{refused}");
    let keys: Vec<&str> = refused["errors"].as_array().unwrap().iter().filter_map(|e| e["key"].as_str()).collect();
    for key in ["pool.size", "nodes", "users"] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    assert_eq!(p.running_config().pool.size, 8, "an invalid file changes nothing");
    assert_eq!(p.topology().nodes.len(), 2);

    load.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(load.errors.load(Ordering::Relaxed), 0, "clients saw errors during the reloads");
}

/// A session that ran statements keeps the configuration version it read and checks it is still
/// current at its next read (`Live::current`): a reload reaches it there. Here a session that
/// ran a statement under no idle timeout runs one more after a reload set one, and is then
/// disconnected for idling.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_that_ran_statements_follows_a_reload_at_its_next_statement() {
    let c = Cluster::start(0).await;
    let p = builder(&c, &[0], 4).start_from_file().await;
    let admin = p.admin_addr().unwrap();
    let (client, task) =
        common::connect_with_task(p.port(), sluice::pgcluster::TEST_USER, sluice::pgcluster::TEST_PASSWORD, "app")
            .await
            .unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    client.simple_query("SELECT 1").await.expect("no idle timeout before the reload");

    let next = builder(&c, &[0], 4).idle_client_timeout("300ms");
    p.rewrite_config(&next.listen(&p.addr().to_string()).toml());
    let (status, report) = post_reload(admin).await;
    assert_eq!(status, 200, "{report}");
    client.simple_query("SELECT 1").await.expect("the statement after the reload runs");
    tokio::time::sleep(Duration::from_millis(900)).await;
    let err = client.simple_query("SELECT 1").await.expect_err("the idle client was disconnected");
    assert!(err.is_closed() || err.code().map(|c| c.code()) == Some("57P05"), "{err}");
    let _ = task.await;
}
