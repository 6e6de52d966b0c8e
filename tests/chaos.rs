//! Chaos on shared server connections, scaled down for CI (a few seconds): well-behaved clients
//! check every answer is their own while clients of the same user and database start
//! statements, pipelines, transactions, COPY, big results and Close-without-Sync and vanish
//! (FIN and RST), or hit errors in Flush blocks. 0 foreign answers, 0 protocol errors for the
//! good clients, every Sync answered, every Terminate closing. The long run is
//! `examples/stress.rs --only chaos`; the scenario lives in `tests/load/chaos.rs`.

mod common;
mod load;

use std::time::Duration;

use common::{Cluster, Proxy};
use load::chaos::{self, Chaos};
use load::Target;

#[tokio::test(flavor = "multi_thread")]
async fn vanishing_clients_never_leak_replies_to_good_clients() {
    let c = Cluster::start(1).await;
    c.psql("CREATE TABLE chaos_sink (v text)").await;
    c.wait_replayed().await;
    let p = Proxy::builder().cluster(&c).pool_size(6).checkout_timeout("20s").monitor_interval("100ms").start().await;
    p.wait_topology(1, 1).await;
    let run = Chaos { good: 4, bad: 4, duration: Duration::from_secs(5), seed: 0xC4A0_5EED };
    let report = chaos::run(&Target::test_user(p.port()), &run).await;
    println!("chaos: {}", report.summary());
    assert!(report.foreign.is_empty(), "foreign answers: {:#?}", report.foreign);
    assert!(report.protocol_errors.is_empty(), "good clients' protocol errors: {:#?}", report.protocol_errors);
    assert_eq!(report.syncs_answered, report.syncs_sent, "a Sync after an error was not answered");
    assert_eq!(report.terminates_closed, report.terminates_sent, "a Terminate did not close the socket");
    assert!(report.answers >= 20, "the good clients hardly ran: {}", report.summary());
    assert!(report.syncs_sent > 0 && report.sessions.len() == 8, "not every misbehaviour ran: {}", report.summary());
}
