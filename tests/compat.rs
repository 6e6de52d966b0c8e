//! Client compatibility: real drivers (psycopg 3, asyncpg, SQLAlchemy, node-postgres, pgjdbc)
//! through sluice in front of a primary and two replicas.
//!
//! Each driver's cases live in a script under `tests/compat/` that takes the case names to run,
//! prints `ok <case>` or `FAIL <case>: <why>` per case and exits non-zero if any failed; each
//! case runs as its own script run, bounded in time. The scripts check results and where reads
//! ran (`inet_server_port()` against the ports in `SLUICE_PRIMARY_PORT` /
//! `SLUICE_REPLICA_PORTS`). One cluster per test, not per case.
//!
//! `scripts/test.sh` installs the drivers when they are missing; run without it, a missing driver
//! fails its test with the exact install command. Cases that exercise the session engine's
//! transitions (long pipelines, a listener that is never deaf, Flush-held blocks, pipeline error
//! handling, NOTIFY pid rewrite) are in the separate `*_engine` tests.
//!
//! The `*_backend_kills` tests run a driver's usual client code in a loop while every server
//! backend of the test database is terminated directly on the nodes, five rounds
//! (`tests/compat/kill_rounds.py`): each client connection may see at most two errors per round
//! (the script says why), PostgreSQL errors with SQLSTATE 57P01 on a connection that keeps
//! working; never a hang, a protocol desync or a wrong answer (the rows written are checked).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{Cluster, Proxy};

/// The longest one case may run before the test calls it a hang.
const CASE_LIMIT: Duration = Duration::from_secs(120);

/// Created on the primary before sluice starts.
const SCHEMA: &str = "
    CREATE TABLE items (id serial PRIMARY KEY, v text, n int);
    CREATE TABLE records (a int, b text, c float8);
    CREATE TABLE copy_target (a int, b text, c float8);
    CREATE TABLE kills (worker int, seq int, PRIMARY KEY (worker, seq));
";

fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("compat")
}

/// A driver script and how to run it.
#[derive(Clone)]
struct Driver {
    /// Program and arguments before the case names.
    command: Vec<String>,
    /// Extra environment.
    env: Vec<(String, String)>,
}

/// Fails with the exact install command if a probe command fails.
fn require(probe: &[&str], what: &str, install: &str) {
    let ok = std::process::Command::new(probe[0])
        .args(&probe[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{what} is missing: run scripts/test.sh, or install it with: {install}");
}

fn python(script: &str) -> Driver {
    require(
        &["python3", "-c", "import psycopg, asyncpg, sqlalchemy"],
        "python3 with psycopg 3, asyncpg and SQLAlchemy",
        "pip install 'psycopg[binary]' asyncpg SQLAlchemy",
    );
    let path = compat_dir().join(script).display().to_string();
    Driver { command: vec!["python3".into(), path], env: Vec::new() }
}

fn node(script: &str) -> Driver {
    let dir = compat_dir();
    let probe = format!("require({:?})", dir.join("node_modules").join("pg").display().to_string());
    require(
        &["node", "-e", &probe],
        "node-postgres",
        "npm install --no-save --no-package-lock --prefix tests/compat pg",
    );
    let path = dir.join(script).display().to_string();
    let modules = dir.join("node_modules").display().to_string();
    Driver { command: vec!["node".into(), path], env: vec![("NODE_PATH".into(), modules)] }
}

/// pgjdbc from Debian's `libpostgresql-jdbc-java`, the suite compiled with the machine's javac
/// into `target/compat-java`.
fn java() -> Driver {
    let jar = "/usr/share/java/postgresql.jar";
    require(&["test", "-f", jar], "pgjdbc", "apt-get install libpostgresql-jdbc-java");
    require(&["javac", "-version"], "a JDK (javac)", "apt-get install default-jdk-headless");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join("compat-java");
    std::fs::create_dir_all(&out).unwrap();
    let source = compat_dir().join("PgjdbcSuite.java");
    let status = std::process::Command::new("javac")
        .args(["-cp", jar, "-d"])
        .arg(&out)
        .arg(&source)
        .status()
        .expect("javac runs");
    assert!(status.success(), "javac failed on {}", source.display());
    let classpath = format!("{jar}:{}", out.display());
    Driver { command: vec!["java".into(), "-cp".into(), classpath, "PgjdbcSuite".into()], env: Vec::new() }
}

/// A primary, two replicas, the schema, and sluice in front.
async fn cluster() -> (Cluster, Proxy) {
    let c = Cluster::start(2).await;
    c.psql(SCHEMA).await;
    c.wait_replayed().await;
    let admin = ("", "admin_listen", "\"127.0.0.1:0\"");
    let p = Proxy::builder()
        .cluster(&c)
        .pool_size(30)
        .monitor_interval("100ms")
        .set(admin.0, admin.1, admin.2)
        .start()
        .await;
    p.wait_topology(1, 2).await;
    (c, p)
}

/// Run each of `cases` (one script run per case, so a hang costs only its case); panics with
/// the output of every case that failed.
async fn run(driver: Driver, c: &Cluster, p: &Proxy, cases: &[&str]) {
    let mut failures = Vec::new();
    for case in cases {
        if let Err(output) = run_case(&driver, c, p, case).await {
            failures.push(format!("---- {case} ----\n{output}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// One case; `Err` carries what the script printed.
async fn run_case(driver: &Driver, c: &Cluster, p: &Proxy, case: &str) -> Result<(), String> {
    let replicas: Vec<String> = c.replica_ports().iter().map(u16::to_string).collect();
    let mut cmd = tokio::process::Command::new(&driver.command[0]);
    cmd.args(&driver.command[1..])
        .arg(case)
        .env("SLUICE_URL", p.conn_string())
        .env("SLUICE_HOST", "127.0.0.1")
        .env("SLUICE_PORT", p.port().to_string())
        .env("SLUICE_PRIMARY_PORT", c.primary_port().to_string())
        .env("SLUICE_REPLICA_PORTS", replicas.join(","))
        .envs(driver.env.iter().cloned())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.command[0]));
    let output = match tokio::time::timeout(CASE_LIMIT, child.wait_with_output()).await {
        Ok(out) => out.expect("the script's output"),
        Err(_) => return Err(format!("did not finish within {CASE_LIMIT:?} (a hang)")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    if output.status.success() && stdout.lines().any(|l| l == format!("ok {case}")) {
        Ok(())
    } else {
        Err(format!("{}\n{stdout}\n{stderr}", output.status))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn psycopg() {
    let driver = python("psycopg_suite.py");
    let (c, p) = cluster().await;
    let cases = [
        "placement",
        "executemany_returning",
        "copy",
        "server_prepared",
        "tpc_recover",
        "deallocate_auto_prepared",
        "encoding",
        "datestyle_option",
        "pipeline_error",
    ];
    run(driver, &c, &p, &cases).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn psycopg_engine() {
    let driver = python("psycopg_suite.py");
    let (c, p) = cluster().await;
    run(driver, &c, &p, &["pipeline_10000", "listen_notify", "own_notify_pid"]).await;
}

/// Every server backend terminated, five rounds, under psycopg connections in threads and one in
/// pipeline mode (`tests/compat/kill_rounds.py` says what each connection may see).
#[tokio::test(flavor = "multi_thread")]
async fn psycopg_backend_kills() {
    let driver = python("psycopg_kills.py");
    let (c, p) = cluster().await;
    run(driver, &c, &p, &["backend_kills"]).await;
}

/// psycopg pipelines (reads and an `INSERT ... RETURNING` per Sync) while every backend is
/// terminated every few milliseconds for ten seconds: every error is allowed, a row returned
/// without one must be on the primary (a lost block's Sync answered without its commit was a
/// write acknowledged and lost), and no pipeline may hang.
#[tokio::test(flavor = "multi_thread")]
async fn psycopg_pipeline_kill_storm() {
    let driver = python("psycopg_kills.py");
    let (c, p) = cluster().await;
    run(driver, &c, &p, &["pipeline_storm"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn asyncpg() {
    let driver = python("asyncpg_suite.py");
    let (c, p) = cluster().await;
    run(driver, &c, &p, &["fetch_placement", "executemany", "prepared"]).await;
}

/// Every server backend terminated, five rounds, under an asyncpg pool with its usual prepared
/// statements: what the pool's user sees (two errors per task and round at most, the pool goes on).
#[tokio::test(flavor = "multi_thread")]
async fn asyncpg_backend_kills() {
    let driver = python("asyncpg_kills.py");
    let (c, p) = cluster().await;
    run(driver, &c, &p, &["backend_kills"]).await;
}

/// The same run judged per client connection: sluice keeps every session, so the pool never
/// has to replace a connection. asyncpg replaces one whose pool reset (at every release) fails:
/// a server connection lost while it was opened or had the session's settings replayed on it is
/// replaced unseen, and a reset lost before any reply runs again on a new connection.
#[tokio::test(flavor = "multi_thread")]
async fn asyncpg_backend_kills_sessions_kept() {
    let driver = python("asyncpg_kills.py");
    let (c, p) = cluster().await;
    run(driver, &c, &p, &["backend_kills_sessions_kept"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn asyncpg_engine() {
    let driver = python("asyncpg_suite.py");
    let (c, p) = cluster().await;
    run(driver, &c, &p, &["copy_records_to_table", "add_listener"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlalchemy_orm() {
    let driver = python("sqlalchemy_suite.py");
    let (c, p) = cluster().await;
    run(driver, &c, &p, &["orm"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_postgres() {
    let driver = node("node_pg.js");
    let (c, p) = cluster().await;
    run(driver, &c, &p, &["pool", "named_prepared"]).await;
}

/// Every server backend terminated, five rounds, under a `pg.Pool` of eight clients.
#[tokio::test(flavor = "multi_thread")]
async fn node_postgres_backend_kills() {
    let driver = node("node_pg_kills.js");
    let (c, p) = cluster().await;
    run(driver, &c, &p, &["backend_kills"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_postgres_engine() {
    let driver = node("node_pg.js");
    let (c, p) = cluster().await;
    run(driver, &c, &p, &["notifications"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pgjdbc() {
    let driver = java();
    let (c, p) = cluster().await;
    run(driver, &c, &p, &["prepare_threshold", "batches", "rewrite_batched_inserts"]).await;
}

/// SETs inside transactions, the way drivers send them: pgjdbc with autocommit off (BEGIN and
/// the SET in one unit), psycopg's pipeline around a transaction (the block in one unit, or in
/// pieces that stream into a running unit when the machine is busy: psycopg flushes each
/// statement as it queues it). The values are checked by the scripts; no session may be pinned.
#[tokio::test(flavor = "multi_thread")]
async fn set_in_transactions_does_not_pin() {
    let (c, p) = cluster().await;
    run(java(), &c, &p, &["set_in_transactions"]).await;
    run(python("psycopg_suite.py"), &c, &p, &["set_in_pipeline_transactions"]).await;
    let pins = p.session_pins().await;
    assert!(pins.is_empty(), "sessions were pinned: {pins:?}");
}
