//! The stress tool: the hostile-load scenarios of "hold up under hostile load and faults", full
//! size, against a throwaway local cluster (a primary and a replica) with sluice in front, in
//! this process. Prints one figure per scenario and exits non-zero if any missed its target.
//!
//! ```sh
//! cargo build --release --example stress && target/release/examples/stress
//! target/release/examples/stress --only flood --flood 5000 --in-flight 500
//! # only the login flood, against an endpoint that is already running (sluice, PgBouncer or
//! # PostgreSQL itself, on 127.0.0.1), as a given user:
//! target/release/examples/stress --target 127.0.0.1:6432 --user app --password secret --database app
//! ```
//!
//! Scenarios (each with a canary connecting and running `SELECT 1` every 200 ms throughout;
//! targets: 0 canary failures, canary p99 < 1 s):
//! - `silent`: 2,000 silent sockets + 500 half-sent startups held for 15 s; sluice must close
//!   every one itself (startup timeout).
//! - `malformed`: 500 malformed inputs at every phase of a connection; each answered by an
//!   ErrorResponse or a close within 2 s.
//! - `flood`: 3,000 clients logging in with SCRAM, 500 in flight, each running one query;
//!   none may hang; prints SCRAM logins per second.
//! - `kill`: `pg_terminate_backend()` of every backend of the proxy's user on every node, 3
//!   rounds, while 20 clients run queries; at most one error per client per round.
//! - `chaos` (not in the default list; `--only chaos`, 5 minutes by default): good clients check
//!   every answer is their own while others of the same user vanish mid-statement, mid-pipeline,
//!   mid-transaction, mid-COPY, mid-result, after Close without Sync (FIN or RST), or hit errors
//!   in Flush blocks; targets: 0 foreign answers, 0 protocol errors, every Sync answered, every
//!   Terminate closing.
//!
//! With `--target` no cluster and no sluice are started: only the login flood (with its canary)
//! runs against that address, and a `result:` line of `key=value` pairs follows the figure so
//! a script can put several endpoints in one table (`scripts/logins.sh` does).
//!
//! sluice runs on its own tokio runtime so the load generator does not share its scheduler
//! (it shares the machine's cores, as a separate process would). The load side reuses
//! `tests/load`, the code behind the scaled-down CI versions in `tests/hostile.rs`.

#[path = "../tests/load/mod.rs"]
mod load;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use load::canary::{Canary, CanaryReport};
use load::flood::FloodReport;
use load::{chaos, flood, kill, malformed, percentile, sockets, Target};
use sluice::pgcluster::{LocalCluster, TEST_DATABASE, TEST_PASSWORD, TEST_USER};

/// The canary's latency target in every phase.
const CANARY_P99: Duration = Duration::from_secs(1);
/// Malformed inputs must be answered this fast.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// The proxy's message limit in this run (the "over the limit" inputs are built from it).
const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Full-size hostile load against sluice on a local cluster.
#[derive(Parser, Debug)]
#[command(name = "stress")]
struct Args {
    /// Run only these scenarios (comma-separated: silent, malformed, flood, kill).
    #[arg(long, value_delimiter = ',', default_value = "silent,malformed,flood,kill")]
    only: Vec<String>,
    /// Silent sockets.
    #[arg(long, default_value_t = 2000)]
    silent: usize,
    /// Half-sent startups.
    #[arg(long, default_value_t = 500)]
    half_sent: usize,
    /// How long the silent and half-sent sockets are held.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// sluice's `limits.startup_timeout` (its default when not given).
    #[arg(long)]
    startup_timeout: Option<String>,
    /// Malformed inputs.
    #[arg(long, default_value_t = 500)]
    malformed: usize,
    /// Seed of the random malformed inputs.
    #[arg(long, default_value_t = 5)]
    seed: u64,
    /// Login-flood clients.
    #[arg(long, default_value_t = 3000)]
    flood: usize,
    /// Login-flood clients in flight at once.
    #[arg(long, default_value_t = 500)]
    in_flight: usize,
    /// Clients looping while backends are terminated.
    #[arg(long, default_value_t = 20)]
    kill_clients: usize,
    /// Rounds of terminating every backend.
    #[arg(long, default_value_t = 3)]
    kill_rounds: usize,
    /// Well-behaved clients in the chaos scenario.
    #[arg(long, default_value_t = 8)]
    chaos_good: usize,
    /// Misbehaving clients in the chaos scenario.
    #[arg(long, default_value_t = 8)]
    chaos_bad: usize,
    /// How long the chaos scenario runs.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    chaos_duration: Duration,
    /// Streaming replicas behind the primary.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Run only the login flood against this already-running endpoint (127.0.0.1:PORT: sluice,
    /// PgBouncer or PostgreSQL) instead of starting a cluster and sluice.
    #[arg(long)]
    target: Option<SocketAddr>,
    /// Login name for `--target` (a SCRAM-SHA-256 user there).
    #[arg(long, default_value = TEST_USER)]
    user: String,
    /// Its password, for `--target`.
    #[arg(long, default_value = TEST_PASSWORD)]
    password: String,
    /// Database to ask for, for `--target`.
    #[arg(long, default_value = TEST_DATABASE)]
    database: String,
}

/// One scenario's figure and whether it met its targets.
struct Figure {
    scenario: &'static str,
    figure: String,
    canary: CanaryReport,
    met: bool,
}

impl Figure {
    fn new(scenario: &'static str, figure: String, canary: CanaryReport, met: bool) -> Figure {
        let met = met && canary.failures.is_empty() && canary.p99() < CANARY_P99;
        Figure { scenario, figure, canary, met }
    }

    fn print(&self) {
        let verdict = if self.met { "met" } else { "MISSED" };
        println!("{:<10} {verdict:<6} {}", self.scenario, self.figure);
        println!("{:<10} {:<6} {}", "", "", self.canary.summary());
        for f in self.canary.failures.iter().take(3) {
            println!("{:<10} {:<6}   canary failure {f}", "", "");
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    println!("open files: soft limit {}", raise_nofile_limit());
    if let Some(addr) = args.target {
        return flood_target(&args, addr);
    }
    let panics = count_panics();
    let sluice_rt = runtime("sluice");
    let load_rt = runtime("load");
    let figures = match load_rt.block_on(run(&args, sluice_rt.handle())) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("stress: {e}");
            return ExitCode::from(2);
        }
    };
    println!("\n{:<10} {:<6} figure", "scenario", "target");
    figures.iter().for_each(Figure::print);
    let panicked = panics.load(Ordering::Relaxed);
    println!("panics in this process (sluice or load): {panicked}");
    if panicked == 0 && figures.iter().all(|f| f.met) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run(args: &Args, sluice: &tokio::runtime::Handle) -> Result<Vec<Figure>, String> {
    println!("starting a primary and {} replica(s)...", args.replicas);
    let cluster = LocalCluster::start(args.replicas).await.map_err(|e| e.to_string())?;
    let config =
        sluice::config::Config::from_toml_str(&proxy_toml(&cluster.ports(), args)).map_err(|e| e.to_string())?;
    let proxy =
        sluice.spawn(sluice::Proxy::start(config)).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    let t = Target::test_user(proxy.addr().port());
    println!("sluice listening on {}", proxy.addr());
    tokio::time::sleep(Duration::from_secs(2)).await; // the monitor's first rounds
    let mut figures = Vec::new();
    for scenario in &args.only {
        let figure = match scenario.as_str() {
            "silent" => silent(args, &t).await,
            "malformed" => malformed(args, &t).await,
            "flood" => flood(args, &t).await,
            "kill" => kill(args, &cluster, &t).await,
            "chaos" => run_chaos(args, &cluster, &t).await?,
            other => return Err(format!("unknown scenario {other:?} (silent, malformed, flood, kill, chaos)")),
        };
        figure.print();
        figures.push(figure);
    }
    let _ = sluice.spawn(proxy.shutdown()).await;
    Ok(figures)
}

async fn canary(t: &Target) -> Canary {
    let canary = Canary::start(t.clone());
    tokio::time::sleep(Duration::from_millis(600)).await;
    canary
}

async fn silent(args: &Args, t: &Target) -> Figure {
    let c = canary(t).await;
    let hold = sockets::hold(t.port, args.silent, args.half_sent, args.hold);
    let (held, ()) = tokio::join!(hold, tokio::time::sleep(args.hold));
    let met = held.still_open == 0 && held.connect_failed.is_empty();
    Figure::new("silent", held.summary(), c.stop().await, met)
}

async fn malformed(args: &Args, t: &Target) -> Figure {
    let cases = malformed::corpus(args.malformed, args.seed, MAX_MESSAGE_BYTES);
    let c = canary(t).await;
    let report = malformed::run(t, &cases, 50, ANSWER_WITHIN).await;
    let canary = c.stop().await;
    let failures = report.failures(ANSWER_WITHIN);
    failures.iter().for_each(|f| println!("  not answered: {f}"));
    Figure::new("malformed", report.summary(ANSWER_WITHIN), canary, failures.is_empty())
}

async fn flood(args: &Args, t: &Target) -> Figure {
    let (report, canary) = flood_with_canary(args, t).await;
    flood_figure(&report, canary)
}

async fn flood_with_canary(args: &Args, t: &Target) -> (FloodReport, CanaryReport) {
    let c = canary(t).await;
    let report = flood::flood(t, args.flood, args.in_flight, Duration::from_secs(30)).await;
    let canary = c.stop().await;
    report.examples.iter().for_each(|(k, e)| println!("  {k}: e.g. {e}"));
    (report, canary)
}

fn flood_figure(report: &FloodReport, canary: CanaryReport) -> Figure {
    let improper = report.errors.contains_key("io") || report.errors.contains_key("protocol");
    Figure::new("flood", report.summary(), canary, report.hung == 0 && !improper)
}

/// `--target`: the login flood alone against an endpoint someone else runs; prints the figure
/// and a `result:` line. The load code connects to 127.0.0.1 only, so only that is accepted.
fn flood_target(args: &Args, addr: SocketAddr) -> ExitCode {
    if addr.ip() != Ipv4Addr::LOCALHOST {
        eprintln!("stress: --target must be 127.0.0.1:PORT (the load clients connect to 127.0.0.1 only)");
        return ExitCode::from(2);
    }
    let t = Target {
        port: addr.port(),
        user: args.user.clone(),
        password: args.password.clone(),
        database: args.database.clone(),
    };
    println!("login flood against {addr} as {} on {}", t.user, t.database);
    let (report, canary) = runtime("load").block_on(flood_with_canary(args, &t));
    let result = result_line(&report, &canary);
    let figure = flood_figure(&report, canary);
    figure.print();
    println!("{result}");
    if figure.met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The flood's figures as `key=value` pairs (times in ms), for scripts.
fn result_line(report: &FloodReport, canary: &CanaryReport) -> String {
    let kinds: Vec<String> = report.errors.iter().map(|(k, n)| format!("{k}:{n}")).collect();
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    format!(
        "result: clients={} ok={} errors={} error_kinds={} hung={} elapsed_s={:.2} logins_per_s={:.0} \
         login_p50_ms={} login_p99_ms={} canary_attempts={} canary_failures={} canary_p99_ms={}",
        report.clients,
        report.ok,
        report.error_count(),
        if kinds.is_empty() { "-".to_string() } else { kinds.join(",") },
        report.hung,
        report.elapsed.as_secs_f64(),
        report.logins_per_second(),
        ms(percentile(&report.logins, 50.0)),
        ms(percentile(&report.logins, 99.0)),
        canary.attempts,
        canary.failures.len(),
        ms(canary.p99()),
    )
}

async fn kill(args: &Args, cluster: &LocalCluster, t: &Target) -> Figure {
    let clients = kill::Clients::connect(t, args.kill_clients).await;
    let c = canary(t).await;
    let gap = Duration::from_millis(1500);
    let report = kill::terminate_rounds(cluster, &cluster.ports(), &t.user, clients, args.kill_rounds, gap).await;
    let canary = c.stop().await;
    println!("  errors seen: {:?}", report.error_kinds());
    let violations = report.violations();
    violations.iter().take(5).for_each(|v| println!("  {v}"));
    let met = violations.is_empty() && report.kill_errors.is_empty();
    Figure::new("kill", report.summary(), canary, met)
}

async fn run_chaos(args: &Args, cluster: &LocalCluster, t: &Target) -> Result<Figure, String> {
    cluster.psql("CREATE TABLE IF NOT EXISTS chaos_sink (v text)").await.map_err(|e| e.to_string())?;
    let c = canary(t).await;
    let run =
        chaos::Chaos { good: args.chaos_good, bad: args.chaos_bad, duration: args.chaos_duration, seed: args.seed };
    let report = chaos::run(t, &run).await;
    let canary = c.stop().await;
    report.foreign.iter().take(5).for_each(|f| println!("  foreign: {f}"));
    report.protocol_errors.iter().take(5).for_each(|f| println!("  protocol error: {f}"));
    Ok(Figure::new("chaos", report.summary(), canary, report.clean()))
}

/// sluice's configuration: defaults everywhere except the message limit (and the startup
/// timeout when asked).
fn proxy_toml(ports: &[u16], args: &Args) -> String {
    let mut toml = format!("listen = \"127.0.0.1:0\"\n\n[limits]\nmax_message_bytes = {MAX_MESSAGE_BYTES}\n");
    if let Some(t) = &args.startup_timeout {
        toml.push_str(&format!("startup_timeout = \"{t}\"\n"));
    }
    for (i, port) in ports.iter().enumerate() {
        toml.push_str(&format!("\n[[nodes]]\nname = \"node{i}\"\nhost = \"127.0.0.1\"\nport = {port}\n"));
    }
    toml.push_str(&format!(
        "\n[[users]]\nname = \"{TEST_USER}\"\npassword = \"{TEST_PASSWORD}\"\nauth = \"scram-sha-256\"\n"
    ));
    toml
}

fn runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .build()
        .unwrap_or_else(|e| panic!("cannot build the {name} runtime: {e}"))
}

/// Count panics (a panicking sluice task does not stop the process, so it must be counted).
fn count_panics() -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        seen.fetch_add(1, Ordering::Relaxed);
        default(info);
    }));
    count
}

/// Raise the open-files soft limit to the hard limit (thousands of sockets on both ends live
/// in this process). The crate forbids `unsafe`, so `setrlimit` is reached through
/// `prlimit(1)`. Returns the soft limit now in force.
fn raise_nofile_limit() -> u64 {
    let read = || {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?.to_string();
        let mut numbers = line["Max open files".len()..].split_whitespace().map(|n| n.parse::<u64>().ok());
        Some((numbers.next()??, numbers.next()??))
    };
    if let Some((soft, hard)) = read().filter(|(soft, hard)| soft < hard) {
        let pid = std::process::id().to_string();
        let status =
            std::process::Command::new("prlimit").args(["--pid", &pid, &format!("--nofile={hard}:{hard}")]).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "could not raise the open-files limit from {soft} to {hard} ({status:?}); try `ulimit -n {hard}`"
            );
        }
    }
    read().map_or(0, |(soft, _)| soft)
}
