//! The monitor on real servers: a paused replica leaves read rotation past the lag limits and
//! comes back after resume; one probe timeout does not move the topology generation; a server
//! of another cluster is refused.

mod common;
mod drill;

use std::time::{Duration, Instant};

use common::{connect, Cluster, Proxy};
use sluice::pgcluster::{LocalCluster, TEST_DATABASE, TEST_PASSWORD, TEST_USER};
use sluice::topology::{Excluded, Role, Topology};

async fn wait_until(p: &Proxy, what: &str, done: impl Fn(&Topology) -> bool) {
    drill::wait_for(|| p.topology(), what, done).await;
}

/// Writes on the primary every 20 ms until dropped.
struct Writer(tokio::task::JoinHandle<()>);

impl Writer {
    async fn start(port: u16) -> Writer {
        let client = connect(port, TEST_USER, TEST_PASSWORD, TEST_DATABASE).await.expect("connect to the primary");
        Writer(tokio::spawn(async move {
            loop {
                let _ = client.simple_query("INSERT INTO w VALUES (1)").await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn read_ports(p: &Proxy, n: usize) -> Vec<u16> {
    drill::read_ports(&p.connect().await, n).await
}

/// A proxy probing every 100 ms whose replicas may lag at most `max_lag` (a duration, `0s`: no
/// limit) and `max_lag_bytes` (0: no limit).
async fn lag_limited_proxy(c: &Cluster, max_lag: &str, max_lag_bytes: u64) -> Proxy {
    Proxy::builder()
        .cluster(c)
        .monitor_interval("100ms")
        .set("routing", "replica_max_lag", &format!("\"{max_lag}\""))
        .set("routing", "replica_max_lag_bytes", &max_lag_bytes.to_string())
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_replica_is_excluded_past_the_time_or_byte_limit_and_back_after_resume() {
    let c = Cluster::start(1).await;
    c.psql("CREATE TABLE w (x int)").await;
    c.wait_replayed().await;
    let by_time = lag_limited_proxy(&c, "1s", 0).await;
    let by_bytes = lag_limited_proxy(&c, "0s", 4096).await;
    by_time.wait_topology(1, 1).await;
    by_bytes.wait_topology(1, 1).await;
    let replica = c.replica_ports()[0];
    let _writer = Writer::start(c.primary_port()).await;
    c.psql_at(replica, "SELECT pg_wal_replay_pause()").await;
    let excluded = |why| move |t: &Topology| t.nodes[1].role == Role::Stale && t.nodes[1].excluded == Some(why);
    wait_until(&by_time, "the paused replica lagging by time", excluded(Excluded::LagTime)).await;
    wait_until(&by_bytes, "the paused replica lagging by bytes", excluded(Excluded::LagBytes)).await;
    let behind = |t: &Topology| t.nodes[1].replay_lag.is_some_and(|l| l >= Duration::from_secs(1));
    wait_until(&by_time, "the paused replica's replay lag in time over 1 s", behind).await;
    for p in [&by_time, &by_bytes] {
        assert!(!read_ports(p, 10).await.contains(&replica), "a read ran on the paused replica");
    }
    c.psql_at(replica, "SELECT pg_wal_replay_resume()").await;
    for p in [&by_time, &by_bytes] {
        wait_until(p, "the resumed replica readable again", |t| t.nodes[1].is_readable_replica()).await;
    }
}

/// SIGSTOP a process for a while; SIGCONT it when dropped, whatever happens.
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        signal("-STOP", pid);
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

fn signal(which: &str, pid: u32) {
    let ok = std::process::Command::new("kill").args([which, &pid.to_string()]).status().is_ok_and(|s| s.success());
    assert!(ok, "kill {which} {pid} failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_probe_timeout_does_not_change_the_generation() {
    let c = Cluster::start(1).await;
    let p = Proxy::builder()
        .cluster(&c)
        .monitor_interval("100ms")
        .set("monitor", "probe_timeout", "\"300ms\"")
        .set("monitor", "down_after", "3")
        .start()
        .await;
    p.wait_topology(1, 1).await;
    let generation = p.topology().generation;
    // The monitor's probe connection to the primary (monitor.database is `postgres`).
    let find = "SELECT pid FROM pg_stat_activity WHERE datname = 'postgres' AND backend_type = 'client backend' \
                AND pid <> pg_backend_pid()";
    let pid: u32 = c.psql(find).await.lines().next().and_then(|l| l.trim().parse().ok()).expect("the probe's backend");
    {
        let _stopped = Stopped::new(pid);
        // A probe is stuck on the stopped backend until the probe timeout; the next one
        // connects afresh and succeeds.
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    // The stuck probe's connection was dropped by the monitor: the probe did time out.
    let gone = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.psql(&gone).await != "0" {
        assert!(Instant::now() < deadline, "the stopped probe connection was never given up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = p.topology();
    assert_eq!(t.generation, generation, "one probe timeout changed the topology: {t:?}");
    assert_eq!(t.primary().map(|n| n.index), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_of_another_cluster_is_refused() {
    let c = Cluster::start(1).await;
    let stranger = LocalCluster::start(0).await.expect("a second cluster");
    let p =
        Proxy::builder().cluster(&c).node("stranger", stranger.primary_port()).monitor_interval("100ms").start().await;
    wait_until(&p, "the stranger refused", |t| {
        t.nodes[2].role == Role::Fenced && t.nodes[2].excluded == Some(Excluded::ForeignSystem)
    })
    .await;
    let t = p.topology();
    assert_eq!(t.primary().map(|n| n.index), Some(0), "{t:?}");
    assert!(!read_ports(&p, 10).await.contains(&stranger.primary_port()), "a read ran on the stranger");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_monitor_user_with_only_pg_monitor_sees_roles_timelines_and_receivers_stopping() {
    let c = Cluster::start(1).await;
    c.create_user("watcher", "watcher-pw").await;
    c.psql("GRANT pg_monitor TO watcher").await;
    c.wait_replayed().await;
    let p = Proxy::builder()
        .cluster(&c)
        .user("watcher", "watcher-pw")
        .set("monitor", "user", "\"watcher\"")
        .monitor_interval("100ms")
        .start()
        .await;
    p.wait_topology(1, 1).await;
    let t = p.topology();
    assert!(t.nodes.iter().all(|n| n.timeline == Some(1)), "timelines not seen: {t:?}");
    // The whole probe (pg_control_*, pg_stat_wal_receiver) runs for this user: a replica whose
    // WAL receiver stopped is seen as not streaming.
    c.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_replication").await;
    c.psql_at(c.replica_ports()[0], "ALTER SYSTEM SET primary_conninfo = ''").await;
    c.psql_at(c.replica_ports()[0], "SELECT pg_reload_conf()").await;
    wait_until(&p, "the replica not streaming", |t| t.nodes[1].excluded == Some(Excluded::NotStreaming)).await;
}

/// An idle cluster right after its replica was made (the primary's WAL sits at a segment start,
/// where its insert position points past a page header no replica replays): the replica stays
/// readable past `replica_max_lag`, it is not "lagging" by the header's bytes for ever.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_replica_is_not_lagging_by_time() {
    let c = Cluster::start(1).await;
    c.psql("SELECT pg_switch_wal()").await;
    let p = lag_limited_proxy(&c, "1s", 0).await;
    p.wait_topology(1, 1).await;
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline {
        let t = p.topology();
        let replica = t.nodes.iter().find(|n| n.index == 1).expect("the replica");
        assert_eq!((replica.role, replica.excluded), (Role::Replica, None), "an idle replica was excluded: {t:?}");
        assert!(replica.replay_lag.is_none_or(|l| l < Duration::from_secs(1)), "an idle replica shows lag: {t:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
