//! The failover drill: a primary with two streaming replicas (replica 1 synchronous, so an
//! acknowledged write survives the primary), sluice in front, a writer and a reader through it;
//! then the primary is killed (`-m immediate`), replica 1 promoted, replica 2 left following the
//! dead primary, and the old primary started again as a primary on its old timeline.
//!
//! Two users: `tests/failover_drill.rs` runs it and asserts the targets; the benchmark
//! `examples/failover_bench.rs` runs it with the timings and prints the figures.
//! Talks only to 127.0.0.1; every wait is bounded.

#![allow(dead_code)]

pub mod blackhole;
pub mod workload;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::pgcluster::{LocalCluster, TEST_PASSWORD, TEST_USER};
use sluice::topology::{Role, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use workload::{Trace, Workload};

/// The drill's timings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Between the kill and the promotion.
    pub promote_after: Duration,
    /// How long the workload runs in each phase (before the kill, after the promotion is
    /// published, after the old primary is fenced).
    pub phase: Duration,
    /// One statement per client every this long.
    pub every: Duration,
    /// sluice's `monitor.interval`.
    pub monitor_interval: &'static str,
}

/// What the drill measured.
#[derive(Debug, Default)]
pub struct Figures {
    /// From the promotion to the first acknowledged write.
    pub first_write_after_promotion: Option<Duration>,
    /// Failed writes that were sent before the kill completed (in flight).
    pub failed_writes_in_flight: usize,
    /// Failed writes sent after the kill completed.
    pub failed_writes_after: usize,
    /// Failed reads.
    pub failed_reads: usize,
    /// Longest time between two successful reads.
    pub longest_read_gap: Duration,
    /// Client connections closed under the clients.
    pub closed_sessions: usize,
    /// Reads sent after the promotion was published that ran on the orphan or the fenced node.
    pub stale_reads: usize,
    /// Acknowledged writes missing on the new primary.
    pub lost_writes: usize,
    /// Statements sent after the kill that ran on the old primary.
    pub statements_on_fenced: usize,
    /// `/topology` showed the old primary as `fenced` (`excluded_reason`: `older_timeline`).
    pub fenced_in_topology: bool,
    /// Acknowledged writes and successful reads, for scale.
    pub writes_ok: usize,
    /// Successful reads.
    pub reads_ok: usize,
    /// Every error a client saw.
    pub errors: Vec<String>,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let first = self.first_write_after_promotion.map_or("never".into(), |d| format!("{:.3} s", d.as_secs_f64()));
        writeln!(f, "first write after promotion      {first}")?;
        writeln!(f, "failed writes in flight at kill  {}", self.failed_writes_in_flight)?;
        writeln!(f, "failed writes after the kill     {}", self.failed_writes_after)?;
        writeln!(f, "failed reads                     {}", self.failed_reads)?;
        writeln!(f, "longest read gap                 {:.3} s", self.longest_read_gap.as_secs_f64())?;
        writeln!(f, "closed sessions                  {}", self.closed_sessions)?;
        writeln!(f, "stale reads                      {}", self.stale_reads)?;
        writeln!(f, "lost acknowledged writes         {}", self.lost_writes)?;
        writeln!(f, "statements on the fenced node    {}", self.statements_on_fenced)?;
        writeln!(f, "/topology shows it fenced        {}", self.fenced_in_topology)?;
        write!(f, "acknowledged writes {}, successful reads {}", self.writes_ok, self.reads_ok)
    }
}

/// Moments of the drill.
struct Moments {
    kill: Instant,
    promote: Instant,
    published: Instant,
}

/// Run the whole drill and measure it. Panics with a message on a setup failure.
pub async fn run(opts: &Options) -> Figures {
    let c = LocalCluster::start(2).await.unwrap_or_else(|e| panic!("cannot start the cluster:\n{e}"));
    let sql = |port, sql: &'static str| {
        let c = &c;
        async move { c.psql_at(port, sql).await.unwrap_or_else(|e| panic!("psql on {port}: {e}")) }
    };
    let ports = c.ports();
    sql(ports[0], "CREATE TABLE drill (id bigint PRIMARY KEY)").await;
    make_replica_1_synchronous(&c).await;
    let proxy = sluice::Proxy::start(config(&ports, opts)).await.expect("sluice starts");
    wait_for(
        || proxy.topology(),
        "node0 primary, 2 replicas",
        |t| t.primary().map(|p| p.index) == Some(0) && t.replicas().count() == 2,
    )
    .await;
    let load = Workload::start(proxy.addr().port(), opts.every).await;
    tokio::time::sleep(opts.phase).await;
    c.kill_node(0).await.expect("kill the primary");
    // pg_ctl returns once the server is gone: a statement sent before was in flight at the kill.
    let kill = Instant::now();
    tokio::time::sleep(opts.promote_after).await;
    let promote = Instant::now();
    c.promote(1).await.expect("promote replica 1");
    wait_for(|| proxy.topology(), "node1 primary", |t| t.primary().map(|p| p.index) == Some(1)).await;
    let published = Instant::now();
    tokio::time::sleep(opts.phase).await;
    c.start_node(0).await.expect("restart the old primary");
    wait_for(|| proxy.topology(), "node0 fenced", |t| t.nodes[0].role == Role::Fenced).await;
    let admin = proxy.admin_addr().expect("admin_listen is set");
    let topology = http(admin, "GET", "/topology", "").await.1;
    tokio::time::sleep(opts.phase).await;
    let (writes, reads) = load.stop().await;
    let on_new_primary = sql(ports[1], "SELECT string_agg(id::text, ',') FROM drill").await;
    let present: HashSet<i64> = on_new_primary.split(',').filter_map(|s| s.trim().parse().ok()).collect();
    let mut figures = measure(&writes, &reads, &Moments { kill, promote, published }, &ports, &present);
    figures.fenced_in_topology = node_json_says(&topology, "node0", "\"role\":\"fenced\"")
        && node_json_says(&topology, "node0", "\"excluded_reason\":\"older_timeline\"");
    proxy.shutdown().await;
    figures
}

fn config(ports: &[u16], opts: &Options) -> sluice::config::Config {
    let mut toml = format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n[monitor]\ninterval = \"{}\"\n\n\
         [failover]\nhold_timeout = \"10s\"\n",
        opts.monitor_interval
    );
    for (i, port) in ports.iter().enumerate() {
        toml.push_str(&format!("\n[[nodes]]\nname = \"node{i}\"\nhost = \"127.0.0.1\"\nport = {port}\n"));
    }
    toml.push_str(&format!("\n[[users]]\nname = \"{TEST_USER}\"\npassword = \"{TEST_PASSWORD}\"\n"));
    sluice::config::Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("drill config:\n{e}\n{toml}"))
}

/// Replica 1 becomes the primary's synchronous standby and the primary commits with
/// `synchronous_commit = on`: an acknowledged write is on replica 1 when the primary dies.
async fn make_replica_1_synchronous(c: &LocalCluster) {
    let ports = c.ports();
    let run = |port: u16, sql: String| async move {
        c.psql_at(port, &sql).await.unwrap_or_else(|e| panic!("psql on {port}: {e}"))
    };
    let conninfo = run(ports[1], "SHOW primary_conninfo".into()).await;
    let named = format!("{conninfo} application_name=drill_r1").replace('\'', "''");
    run(ports[1], format!("ALTER SYSTEM SET primary_conninfo = '{named}'")).await;
    run(ports[1], "SELECT pg_reload_conf()".into()).await;
    run(ports[0], "ALTER SYSTEM SET synchronous_standby_names = 'drill_r1'".into()).await;
    run(ports[0], "ALTER SYSTEM SET synchronous_commit = 'on'".into()).await;
    run(ports[0], "SELECT pg_reload_conf()".into()).await;
    let check = "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'drill_r1' AND sync_state = 'sync'";
    let deadline = Instant::now() + Duration::from_secs(60);
    while run(ports[0], check.into()).await != "1" {
        assert!(Instant::now() < deadline, "replica 1 never became a synchronous standby");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Poll a proxy's topology until `done` (at most 30 s).
pub async fn wait_for(topology: impl Fn() -> Arc<Topology>, what: &str, done: impl Fn(&Topology) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = topology();
        if done(&t) {
            return;
        }
        assert!(Instant::now() < deadline, "the topology never showed {what}: {t:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn measure(writes: &Trace, reads: &Trace, at: &Moments, ports: &[u16], present: &HashSet<i64>) -> Figures {
    let failed =
        |t: &Trace, after: bool| t.samples.iter().filter(|s| s.error.is_some() && (s.sent >= at.kill) == after).count();
    let ok_reads: Vec<_> = reads.samples.iter().filter(|s| s.error.is_none()).collect();
    let gap = ok_reads.windows(2).map(|w| w[1].done.duration_since(w[0].done)).max().unwrap_or_default();
    let bad_port = |s: &&workload::Sample| s.port == Some(ports[0]) || s.port == Some(ports[2]);
    let acked: Vec<i64> = writes.samples.iter().filter(|s| s.error.is_none()).filter_map(|s| s.id).collect();
    let on_old = |t: &Trace| t.samples.iter().filter(|s| s.sent > at.kill && s.port == Some(ports[0])).count();
    Figures {
        first_write_after_promotion: writes
            .samples
            .iter()
            .find(|s| s.error.is_none() && s.done > at.promote)
            .map(|s| s.done.duration_since(at.promote)),
        failed_writes_in_flight: failed(writes, false),
        failed_writes_after: failed(writes, true),
        failed_reads: failed(reads, false) + failed(reads, true),
        longest_read_gap: gap,
        closed_sessions: usize::from(writes.closed) + usize::from(reads.closed),
        stale_reads: reads.samples.iter().filter(|s| s.sent > at.published).filter(bad_port).count(),
        lost_writes: acked.iter().filter(|id| !present.contains(id)).count(),
        statements_on_fenced: on_old(writes) + on_old(reads),
        fenced_in_topology: false,
        writes_ok: acked.len(),
        reads_ok: ok_reads.len(),
        errors: writes.samples.iter().chain(&reads.samples).filter_map(|s| s.error.clone()).collect(),
    }
}

/// The server ports that ran `n` reads on `client`, in order.
pub async fn read_ports(client: &tokio_postgres::Client, n: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    for _ in 0..n {
        let row = client.query_one("SELECT inet_server_port()", &[]).await.expect("a read");
        ports.push(u16::try_from(row.get::<_, i32>(0)).expect("a port"));
    }
    ports
}

/// True if the `/topology` JSON's entry for `node` contains `needle`.
pub fn node_json_says(topology_json: &str, node: &str, needle: &str) -> bool {
    let json: serde_json::Value = serde_json::from_str(topology_json).unwrap_or_default();
    json["nodes"].as_array().into_iter().flatten().filter(|n| n["name"] == node).any(|n| n.to_string().contains(needle))
}

/// A plain HTTP/1.1 request to the admin endpoint: (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("the admin endpoint accepts");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: sluice\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("send the request");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), s.read_to_end(&mut raw))
        .await
        .expect("the admin endpoint answers within 2 minutes")
        .expect("read the answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}
