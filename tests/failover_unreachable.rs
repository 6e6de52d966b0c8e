//! A primary that becomes unreachable without refusing anything (its traffic dropped by a
//! forwarder that goes silent): declared down after `monitor.down_after` probe timeouts, the
//! write waiting on it ends with an error instead of hanging, later writes are held, and the
//! promotion of the replica is taken up as after a crash.

mod common;
mod drill;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::Cluster;
use drill::blackhole::Forwarder;
use drill::workload::Workload;
use sluice::pgcluster::{TEST_PASSWORD, TEST_USER};
use sluice::topology::{Excluded, Role};

const HOLD: Duration = Duration::from_secs(5);
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

fn config(primary: SocketAddr, replica: u16) -> sluice::config::Config {
    let toml = format!(
        "listen = \"127.0.0.1:0\"\n\
         [pool]\nconnect_timeout = \"300ms\"\n\
         [monitor]\ninterval = \"100ms\"\nprobe_timeout = \"{}ms\"\ndown_after = 3\n\
         [failover]\nhold_timeout = \"{}s\"\n\
         [[nodes]]\nname = \"node0\"\nhost = \"{}\"\nport = {}\n\
         [[nodes]]\nname = \"node1\"\nhost = \"127.0.0.1\"\nport = {replica}\n\
         [[users]]\nname = \"{TEST_USER}\"\npassword = \"{TEST_PASSWORD}\"\n",
        PROBE_TIMEOUT.as_millis(),
        HOLD.as_secs(),
        primary.ip(),
        primary.port(),
    );
    sluice::config::Config::from_toml_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_primary_is_declared_down_writes_are_held_and_the_promotion_taken_up() {
    let c = Cluster::start(1).await;
    c.psql("CREATE TABLE drill (id bigint PRIMARY KEY)").await;
    c.wait_replayed().await;
    let ports = c.ports();
    // Same port on another loopback address: the replica's sender port still names node0.
    let forwarder = Forwarder::start(([127, 0, 0, 2], ports[0]).into(), ([127, 0, 0, 1], ports[0]).into()).await;
    let proxy = sluice::Proxy::start(config(forwarder.addr(), ports[1])).await.expect("sluice starts");
    drill::wait_for(
        || proxy.topology(),
        "node0 primary, node1 replica",
        |t| t.primary().map(|n| n.index) == Some(0) && t.replicas().count() == 1,
    )
    .await;
    let load = Workload::start(proxy.addr().port(), Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    forwarder.blackhole();
    let dropped = Instant::now();
    drill::wait_for(|| proxy.topology(), "node0 down", |t| t.nodes[0].role == Role::Down).await;
    assert_eq!(proxy.topology().nodes[0].excluded, Some(Excluded::Down));
    // Writes are held meanwhile; a promotion is taken up as after a crash.
    c.promote(1).await.expect("promote the replica");
    drill::wait_for(|| proxy.topology(), "node1 primary", |t| t.primary().map(|n| n.index) == Some(1)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (writes, reads) =
        tokio::time::timeout(Duration::from_secs(60), load.stop()).await.expect("a statement hung instead of ending");

    let failed: Vec<_> = writes.samples.iter().filter_map(|s| s.error.clone()).collect();
    assert!(failed.len() <= 1, "more writes failed than the one in flight: {failed:?}");
    let read_errors: Vec<_> = reads.samples.iter().filter_map(|s| s.error.clone()).collect();
    assert!(read_errors.is_empty(), "reads failed: {read_errors:?}");
    assert!(!writes.closed && !reads.closed, "a client connection was closed");
    let after = writes.samples.iter().filter(|s| s.sent > dropped && s.error.is_none());
    assert!(after.clone().count() > 0, "no write succeeded after the primary became unreachable");
    assert!(after.clone().all(|s| s.port == Some(ports[1])), "a write ran elsewhere than the new primary");
    // Liveness, not speed: nothing waited past the hold (plus the time to declare the node
    // down and one connect attempt), however long the primary stayed silent.
    let longest = writes.samples.iter().map(|s| s.done.duration_since(s.sent)).max().unwrap_or_default();
    eprintln!("longest write wait {longest:?}; failed writes {failed:?}");
    assert!(longest < HOLD + PROBE_TIMEOUT * 4 + Duration::from_secs(5), "a write waited {longest:?}");
}
