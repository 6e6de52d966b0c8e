//! The failover benchmark: the drill of issue 9 with its timings, against a throwaway local
//! cluster (a primary, a synchronous replica 1 and an asynchronous replica 2) with sluice in
//! front, in this process, with sluice's default `monitor.interval` (250 ms). A writer and a
//! reader (one connection each, one statement every 50 ms); the primary is killed (`pg_ctl stop
//! -m immediate`), replica 1 promoted 2 s later, replica 2 left following the dead primary, and
//! the old primary started again as a primary.
//!
//! ```sh
//! cargo run --release --example failover_bench
//! ```
//!
//! Prints the figures and exits non-zero if one misses its target: first write <= 1.0 s after
//! the promotion, at most 1 failed write (the one in flight at the kill), 0 failed reads, read
//! gap <= 0.5 s, 0 closed sessions, 0 stale reads, 0 lost acknowledged writes, 0 statements on
//! the fenced node. The load side is `tests/drill`, the code behind `tests/failover_drill.rs`.

#[path = "../tests/drill/mod.rs"]
mod drill;

use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime");
    let opts = drill::Options {
        promote_after: Duration::from_secs(2),
        phase: Duration::from_secs(3),
        every: Duration::from_millis(50),
        monitor_interval: "250ms",
    };
    let f = runtime.block_on(drill::run(&opts));
    println!("{f}");
    if !f.errors.is_empty() {
        println!("errors seen by the clients: {:?}", f.errors);
    }
    let misses = misses(&f);
    for m in &misses {
        println!("MISSED: {m}");
    }
    if misses.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn misses(f: &drill::Figures) -> Vec<&'static str> {
    let first_ok = f.first_write_after_promotion.is_some_and(|d| d <= Duration::from_secs(1));
    let checks = [
        (first_ok, "first write <= 1.0 s after the promotion"),
        (f.failed_writes_in_flight + f.failed_writes_after <= 1, "at most 1 failed write"),
        (f.failed_reads == 0, "0 failed reads"),
        (f.longest_read_gap <= Duration::from_millis(500), "read gap <= 0.5 s"),
        (f.closed_sessions == 0, "0 closed sessions"),
        (f.stale_reads == 0, "0 stale reads"),
        (f.lost_writes == 0, "0 lost acknowledged writes"),
        (f.statements_on_fenced == 0, "0 statements on the fenced node"),
        (f.fenced_in_topology, "/topology shows the old primary fenced"),
    ];
    checks.iter().filter(|(ok, _)| !ok).map(|&(_, what)| what).collect()
}
