//! Hostile load and faults, scaled down to run in CI on 2 cores (each scenario well under 30 s):
//! silent and half-sent sockets, malformed input at every phase, a SCRAM login flood, and
//! terminated server backends. Throughout each one a canary connects and runs `SELECT 1` every
//! 200 ms and must never fail (p99 under 1 s).
//!
//! sluice runs as a child process, so the test's own client work does not share its runtime,
//! and its log can be checked for panics. The full-size run is `examples/stress.rs`; the
//! scenarios themselves live in `tests/load/`. Run with `--nocapture` to see the figures.

mod common;
mod load;

use std::time::Duration;

use common::{raise_nofile_limit, Cluster, Proxy, ProxyProcess};
use load::canary::{Canary, CanaryReport};
use load::{flood, kill, malformed, sockets, Target};

/// The canary's latency target in every phase.
const CANARY_P99: Duration = Duration::from_secs(1);
/// Every malformed input must be answered (error or close) this fast.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// Seed of the random part of the malformed corpus (fixed: a failure must be reproducible).
const CORPUS_SEED: u64 = 0x5eed_0005;

/// The scenarios measure latency under load they make themselves; run concurrently on 2 cores
/// they would measure each other. So they take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Let the canary take a few quiet measurements first, so a failure is not a cold start. Polled
/// (bounded) rather than slept: on a loaded machine the canary's first login, which computes the
/// salted password, can take longer than any fixed pause.
async fn canary_warm_up(p: &ProxyProcess) -> Canary {
    let canary = Canary::start(Target::test_user(p.port()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while canary.attempts() < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    canary
}

/// The assertions every scenario shares: the canary never failed and stayed fast, and the
/// proxy process is alive and never panicked.
fn assert_unharmed(scenario: &str, canary: &CanaryReport, p: &ProxyProcess) {
    assert!(canary.failures.is_empty(), "{scenario}: the canary failed:\n{}", canary.failures.join("\n"));
    assert!(canary.attempts >= 3, "{scenario}: the canary hardly ran: {}", canary.summary());
    assert!(canary.p99() < CANARY_P99, "{scenario}: canary p99 over {CANARY_P99:?}: {}", canary.summary());
    // A process that exited (a zombie until reaped) has no resident memory.
    assert!(p.rss_kib() > 0, "{scenario}: sluice exited:\n{}", p.log());
    let log = p.log();
    assert!(!log.contains("panicked"), "{scenario}: sluice panicked:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_and_half_sent_sockets_are_closed_by_the_startup_timeout() {
    let _turn = ONE_AT_A_TIME.lock().await;
    raise_nofile_limit();
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).startup_timeout("2s").spawn_process().await;
    let canary = canary_warm_up(&p).await;

    let hold = Duration::from_secs(5);
    // The canary keeps going for the whole hold, also after sluice closed the sockets.
    let (held, ()) = tokio::join!(sockets::hold(p.port(), 200, 50, hold), tokio::time::sleep(hold));
    let canary = canary.stop().await;
    println!("{}", canary.summary());
    canary.failures.iter().for_each(|f| println!("canary failure {f}"));

    println!("silent sockets: {}", held.summary());
    assert!(held.connect_failed.is_empty(), "connects failed: {:?}", held.connect_failed);
    assert_eq!(held.still_open, 0, "sluice left sockets open past its startup timeout: {}", held.summary());
    assert_eq!(held.closed, 250, "{}", held.summary());
    assert_unharmed("silent sockets", &canary, &p);
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_input_at_every_phase_gets_an_error_or_a_close() {
    let _turn = ONE_AT_A_TIME.lock().await;
    raise_nofile_limit();
    let c = Cluster::start(0).await;
    let max_message_bytes = 8192;
    let builder = Proxy::builder().cluster(&c).startup_timeout("2s").max_message_bytes(max_message_bytes);
    let p = builder.spawn_process().await;
    let cases = malformed::corpus(120, CORPUS_SEED, max_message_bytes);
    let canary = canary_warm_up(&p).await;

    let report = malformed::run(&Target::test_user(p.port()), &cases, 16, ANSWER_WITHIN).await;
    let canary = canary.stop().await;
    println!("{}", canary.summary());
    canary.failures.iter().for_each(|f| println!("canary failure {f}"));

    for o in &report.outcomes {
        println!("  {}: {:?}", o.name, o.answer.as_ref().map(|a| (&a.reply, a.after)));
    }
    println!("malformed: {}", report.summary(ANSWER_WITHIN));
    let failures = report.failures(ANSWER_WITHIN);
    assert!(failures.is_empty(), "inputs not answered within {ANSWER_WITHIN:?}:\n{}", failures.join("\n"));
    assert_unharmed("malformed", &canary, &p);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scram_login_flood_leaves_no_client_hanging() {
    let _turn = ONE_AT_A_TIME.lock().await;
    raise_nofile_limit();
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).spawn_process().await;
    let canary = canary_warm_up(&p).await;

    let report = flood::flood(&Target::test_user(p.port()), 300, 100, Duration::from_secs(15)).await;
    let canary = canary.stop().await;
    println!("{}", canary.summary());
    canary.failures.iter().for_each(|f| println!("canary failure {f}"));

    println!("flood: {}", report.summary());
    assert_eq!(report.hung, 0, "flood clients hung: {}", report.summary());
    let improper = report.errors.keys().filter(|k| k.as_str() == "io" || k.as_str() == "protocol");
    let improper: Vec<_> = improper.map(|k| &report.examples[k]).collect();
    assert!(improper.is_empty(), "clients got no proper ErrorResponse: {improper:?}");
    assert_eq!(report.ok + report.error_count(), 300, "{}", report.summary());
    assert_unharmed("flood", &canary, &p);
}

#[tokio::test(flavor = "multi_thread")]
async fn terminated_backends_cost_each_client_at_most_one_error_per_round() {
    let _turn = ONE_AT_A_TIME.lock().await;
    raise_nofile_limit();
    let c = Cluster::start(1).await;
    let p = Proxy::builder().cluster(&c).spawn_process().await;
    let t = Target::test_user(p.port());
    let clients = kill::Clients::connect(&t, 20).await;
    let canary = canary_warm_up(&p).await;

    let report = kill::terminate_rounds(&c, &c.ports(), &t.user, clients, 3, Duration::from_millis(1500)).await;
    let canary = canary.stop().await;
    println!("{}", canary.summary());
    canary.failures.iter().for_each(|f| println!("canary failure {f}"));

    println!("kill: {}", report.summary());
    if let Some(start) = canary.started {
        let rounds: Vec<Duration> = report.round_at.iter().map(|r| r.saturating_duration_since(start)).collect();
        println!("kill: rounds at {rounds:.1?} (canary time)");
    }
    println!("kill: errors seen: {:?}", report.error_kinds());
    assert!(report.kill_errors.is_empty(), "pg_terminate_backend failed: {:?}", report.kill_errors);
    assert!(report.killed.iter().all(|&n| n > 0), "a round killed nothing: {:?}", report.killed);
    let violations = report.violations();
    for v in &violations {
        println!("kill: {v}");
    }
    assert!(violations.is_empty(), "clients saw more than one error per kill round:\n{}", violations.join("\n"));
    assert_unharmed("kill", &canary, &p);
}
