//! The stock PostgreSQL clients through sluice: `psql` and `pgbench`.

mod common;

use std::time::Duration;

use common::{Cluster, Proxy};
use sluice::pgcluster::{TEST_DATABASE, TEST_PASSWORD, TEST_USER};

#[tokio::test(flavor = "multi_thread")]
async fn psql_runs_a_query_through_sluice() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).start().await;
    assert_eq!(c.psql_at(p.port(), "select 1").await, "1");
    let out = c.psql_at(p.port(), "SELECT current_user, current_database()").await;
    assert_eq!(out, format!("{TEST_USER}|{TEST_DATABASE}"));
}

/// Run pgbench against sluice; returns its stdout. Panics with the output when it fails.
async fn pgbench(c: &Cluster, port: u16, args: &[&str]) -> String {
    let port = port.to_string();
    let mut cmd = tokio::process::Command::new("pgbench");
    cmd.args(["-h", "127.0.0.1", "-p", &port, "-U", TEST_USER])
        .args(args)
        .arg(TEST_DATABASE)
        .env("PGPASSWORD", TEST_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "10")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("pgbench ran for more than 120 s")
        .expect("cannot run pgbench (is it on PATH?)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let log = || c.log_tail(0).unwrap_or_default();
    assert!(
        out.status.success(),
        "pgbench {args:?} failed ({}):\n{stdout}\n{stderr}\n--- server log ---\n{}",
        out.status,
        log()
    );
    stdout
}

/// A `name: N` count out of pgbench's summary.
fn summary_number(output: &str, label: &str) -> Option<u64> {
    let line = output.lines().find(|l| l.starts_with(label))?;
    let value = line[label.len()..].trim_start_matches(':').trim();
    value.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[test]
fn pgbench_summaries_are_parsed() {
    let out = "number of transactions actually processed: 1234\n\
               number of failed transactions: 0 (0.000%)\n";
    assert_eq!(summary_number(out, "number of transactions actually processed"), Some(1234));
    assert_eq!(summary_number(out, "number of failed transactions"), Some(0));
    assert_eq!(summary_number(out, "latency average"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn pgbench_select_only_runs_without_failures() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(4).pool_mode("transaction").start().await;
    pgbench(&c, p.port(), &["-i", "-s", "1", "-q"]).await;
    assert_eq!(c.psql("SELECT count(*) FROM pgbench_accounts").await, "100000");

    for mode in ["simple", "extended"] {
        let out = pgbench(&c, p.port(), &["-S", "-M", mode, "-T", "3", "-c", "4", "-n"]).await;
        let done = summary_number(&out, "number of transactions actually processed");
        let failed = summary_number(&out, "number of failed transactions");
        println!("pgbench -M {mode}: {done:?} transactions, {failed:?} failed");
        assert!(done.is_some_and(|n| n > 0), "no transactions in -M {mode}:\n{out}");
        assert_eq!(failed, Some(0), "failed transactions in -M {mode}:\n{out}");
    }
}

/// Named prepared statements under transaction pooling, with more clients than server
/// connections, so every connection serves statements other clients prepared: the peers' failure.
#[tokio::test(flavor = "multi_thread")]
async fn pgbench_prepared_mode_works_under_transaction_pooling() {
    let c = Cluster::start(1).await;
    let p = Proxy::builder().cluster(&c).pool_size(2).pool_mode("transaction").start().await;
    pgbench(&c, p.port(), &["-i", "-s", "1", "-q"]).await;
    c.wait_replayed().await;
    for args in [&["-M", "extended"][..], &["-S", "-M", "prepared"][..], &["-M", "prepared"][..]] {
        let mut all = args.to_vec();
        all.extend(["-T", "3", "-c", "8", "-j", "2", "-n"]);
        let out = pgbench(&c, p.port(), &all).await;
        let done = summary_number(&out, "number of transactions actually processed");
        let failed = summary_number(&out, "number of failed transactions");
        println!("pgbench {args:?} -c 8 over a pool of 2: {done:?} transactions, {failed:?} failed");
        assert!(done.is_some_and(|n| n > 0), "no transactions with {args:?}:\n{out}");
        assert_eq!(failed, Some(0), "failed transactions with {args:?}:\n{out}");
    }
}
