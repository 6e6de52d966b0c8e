//! The runtime layouts (`[runtime]`): sluice serves reads on the replica and writes on the
//! primary in each (`shared` with one or two workers, `per-core`), and in `per-core` the pool of
//! a node/database/user stays one pool: one size bound over all session threads, one row in
//! `SHOW POOLS`.

mod common;

use std::time::Duration;

use common::{Cluster, Proxy, ProxyBuilder};

const LAYOUTS: [(&str, usize); 3] = [("shared", 2), ("shared", 1), ("per-core", 2)];
const CLIENTS: usize = 8;
const OPERATOR: (&str, &str) = ("operator", "op-secret");

fn with_layout(builder: ProxyBuilder, layout: &str, workers: usize) -> ProxyBuilder {
    builder.set("runtime", "layout", &format!("\"{layout}\"")).set("runtime", "workers", &workers.to_string())
}

/// Names of the threads of process `pid`.
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc lists the threads");
    tasks.filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok()).map(|n| n.trim().into()).collect()
}

/// The port `SELECT inet_server_port()` ran on, through `client`.
async fn read_port(client: &tokio_postgres::Client) -> u16 {
    let row = client.query_one("SELECT inet_server_port()", &[]).await.unwrap();
    u16::try_from(row.get::<_, i32>(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_layout_serves_reads_on_the_replica_and_writes_on_the_primary() {
    let c = Cluster::start(1).await;
    c.psql("CREATE TABLE layouts (name text, client int)").await;
    let replica = c.replica_ports()[0];
    for (layout, workers) in LAYOUTS {
        let name = format!("{layout}-{workers}");
        let builder = with_layout(Proxy::builder().cluster(&c).monitor_interval("100ms"), layout, workers);
        let p = builder.spawn_process().await;
        // The port accepts (into the backlog) before the first probe ends and the threads start.
        let expected = if layout == "per-core" { workers } else { 0 };
        let mut cores = 0;
        for _ in 0..100 {
            cores = thread_names(p.pid()).iter().filter(|n| n.starts_with("sluice-core-")).count();
            if cores == expected && p.log().contains("sluice is listening") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(cores, expected, "{name}: session threads {:?}", thread_names(p.pid()));
        // Several clients: in per-core the kernel spreads them over the threads' listeners.
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(p.connect().await);
        }
        for (i, client) in clients.iter().enumerate() {
            let i = i32::try_from(i).unwrap();
            client.execute("INSERT INTO layouts VALUES ($1, $2)", &[&name, &i]).await.unwrap();
        }
        // Reads go to the replica once the monitor has seen it (the first probe may still run)
        // and has seen it replay each client's own write (read-your-writes keeps a client's
        // reads on the primary until then, so each client is waited for, not only the first).
        for (i, client) in clients.iter().enumerate() {
            let mut port = 0;
            for _ in 0..100 {
                port = read_port(client).await;
                if port == replica {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(port, replica, "{name}: client {i}'s reads never reached the replica\n{}", p.log());
        }
        let written = c.psql(&format!("SELECT count(*) FROM layouts WHERE name = '{name}'")).await;
        assert_eq!(written, CLIENTS.to_string(), "{name}: every write reached the primary");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn per_core_keeps_one_bounded_pool_per_node_and_user() {
    const POOL: usize = 3;
    let c = Cluster::start(0).await;
    let builder = Proxy::builder().cluster(&c).pool_size(POOL).checkout_timeout("20s").user(OPERATOR.0, OPERATOR.1);
    let builder = with_layout(builder.set("admin", "users", "[\"operator\"]"), "per-core", 2);
    let p = builder.spawn_process().await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(p.connect().await);
    }
    // Every client at once, more than the pool holds: they take turns on POOL connections,
    // whichever session thread opened them.
    let runs = clients.iter().map(|client| async move {
        for _ in 0..5 {
            client.batch_execute("SELECT pg_sleep(0.02)").await.unwrap();
        }
    });
    tokio::time::timeout(Duration::from_secs(60), futures_util::future::join_all(runs)).await.expect("no unit hangs");
    let servers = c
        .psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'sluice_test' AND pid <> pg_backend_pid() AND query LIKE '%pg_sleep%'")
        .await;
    let servers: usize = servers.parse().unwrap();
    assert!((1..=POOL).contains(&servers), "{servers} server connections for one pool of {POOL}");
    let pools = c.psql_as(p.port(), OPERATOR.0, OPERATOR.1, "sluice", "SHOW POOLS").await.unwrap();
    let rows: Vec<&str> =
        pools.lines().filter(|l| l.contains(&format!("|{}|", sluice::pgcluster::TEST_USER))).collect();
    assert_eq!(rows.len(), 1, "one row for the pool, not one per thread: {pools}");
    assert!(rows[0].contains(&format!("|{POOL}|")), "the configured size, not a share of it: {pools}");
    let config = c.psql_as(p.port(), OPERATOR.0, OPERATOR.1, "sluice", "SHOW CONFIG").await.unwrap();
    assert!(config.contains("runtime|PerCore, 2 workers"), "{config}");
}
