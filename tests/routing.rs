//! Where statements run: a real primary and two streaming replicas behind sluice.
//!
//! A statement tells where it ran by returning `inet_server_port()`, compared with the cluster's
//! ports. A statement without a result proves it ran on the primary by succeeding: a replica
//! rejects every write with SQLSTATE 25006.
//!
//! The schema (tables, a sequence, functions) is created on the primary before sluice starts, so
//! the replicas have replayed it and sluice's function catalog knows the functions.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use common::{Cluster, Proxy};
use futures_util::future::join_all;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, Row, SimpleQueryMessage};

/// How long one statement may take before the test calls it a hang.
const STATEMENT_LIMIT: Duration = Duration::from_secs(15);

/// How long sluice may take to load the function catalog after it started.
const CATALOG_WAIT: Duration = Duration::from_secs(5);

/// The read every placement check and the balance test use.
const READ: &str = "SELECT inet_server_port()";

/// Created on the primary before sluice starts. `w` writes (VOLATILE, the default),
/// `port_stable` and `plus_one` only read (STABLE, IMMUTABLE).
const SCHEMA: &str = "
    CREATE TABLE t (id int, v text);
    INSERT INTO t VALUES (1, 'one'), (2, 'two');
    CREATE TABLE src (id int, v text);
    INSERT INTO src VALUES (1, 'uno'), (3, 'tres');
    CREATE SEQUENCE s;
    CREATE FUNCTION w() RETURNS int LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO t VALUES (100, 'w'); RETURN inet_server_port(); END $$;
    CREATE FUNCTION port_stable() RETURNS int LANGUAGE sql STABLE AS $$ SELECT inet_server_port() $$;
    CREATE FUNCTION plus_one(x int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT x + 1 $$;
";

/// Where a statement must run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Primary,
    Replica,
}

use Target::{Primary, Replica};

/// Statements with a result, and where each must run. Each is sent with the simple and with the
/// extended protocol. The port is read from the `inet_server_port` column, else the last one.
const PLACEMENT: &[(&str, Target)] = &[
    (READ, Replica),
    ("SELECT id, inet_server_port() FROM t WHERE id = 1", Replica),
    ("SELECT inet_server_port() FROM t TABLESAMPLE SYSTEM (100)", Replica),
    ("SELECT nextval('s'), inet_server_port()", Primary),
    ("SELECT id, inet_server_port() FROM t WHERE id = 1 FOR UPDATE", Primary),
    ("WITH x AS (INSERT INTO t VALUES (3, 'cte') RETURNING id) SELECT id, inet_server_port() FROM x", Primary),
    // VOLATILE in the catalog (created before sluice started).
    ("SELECT w()", Primary),
    // STABLE / IMMUTABLE in the catalog.
    ("SELECT port_stable()", Replica),
    ("SELECT plus_one(1), inet_server_port()", Replica),
    // The answer describes the node: only the primary's is the cluster's.
    ("SELECT pg_backend_pid() > 0, inet_server_port()", Primary),
    ("SELECT pg_is_in_recovery(), inet_server_port()", Primary),
    ("SELECT count(*), inet_server_port() FROM pg_stat_activity", Primary),
    ("SELECT count(*), inet_server_port() FROM pg_catalog.pg_locks", Primary),
    ("SELECT current_setting('transaction_read_only'), inet_server_port()", Primary),
    // Hints win over classification.
    ("/* sluice: primary */ SELECT inet_server_port()", Primary),
    ("/* sluice: replica */ SELECT inet_server_port()", Replica),
];

/// The cluster's ports, to tell where a statement ran.
struct Ports {
    primary: u16,
    replicas: Vec<u16>,
}

impl Ports {
    fn of(c: &Cluster) -> Self {
        Ports { primary: c.primary_port(), replicas: c.replica_ports() }
    }

    fn target(&self, port: u16) -> Option<Target> {
        if port == self.primary {
            Some(Primary)
        } else if self.replicas.contains(&port) {
            Some(Replica)
        } else {
            None
        }
    }

    fn describe(&self, port: u16) -> String {
        match self.target(port) {
            Some(t) => format!("{t:?} (port {port})"),
            None => format!("port {port}, which is no node"),
        }
    }
}

/// A cluster with the schema, a proxy in front of it, and the ports.
struct Setup {
    c: Cluster,
    p: Proxy,
    ports: Ports,
}

async fn setup() -> Setup {
    let c = Cluster::start(2).await;
    c.psql(SCHEMA).await;
    c.wait_replayed().await;
    // primary_reads is left at its default, `fallback`.
    let p =
        Proxy::builder().cluster(&c).monitor_interval("200ms").set("", "admin_listen", "\"127.0.0.1:0\"").start().await;
    p.wait_topology(1, 2).await;
    let ports = Ports::of(&c);
    Setup { c, p, ports }
}

/// `fut`, or an error naming `what` if it does not finish within [`STATEMENT_LIMIT`].
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(STATEMENT_LIMIT, fut)
        .await
        .map_err(|_| format!("{what}: no answer within {STATEMENT_LIMIT:?}"))
}

/// A tokio-postgres error with its SQLSTATE and message when a server (or sluice) sent one.
fn explain(sql: &str, e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{sql}: ERROR {} {}", db.code().code(), db.message()),
        None => format!("{sql}: {e}"),
    }
}

/// Run `sql` as one simple Query; its messages.
async fn simple(client: &Client, sql: &str) -> Result<Vec<SimpleQueryMessage>, String> {
    within(sql, client.simple_query(sql)).await?.map_err(|e| explain(sql, &e))
}

/// The port column of every row of a simple Query's answer, in order.
fn simple_ports(sql: &str, messages: &[SimpleQueryMessage]) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for m in messages {
        if let SimpleQueryMessage::Row(row) = m {
            let names: Vec<&str> = row.columns().iter().map(|c| c.name()).collect();
            let column = names.iter().position(|n| *n == "inet_server_port").unwrap_or(names.len() - 1);
            let text = row.get(column).ok_or_else(|| format!("{sql}: NULL port"))?;
            ports.push(text.parse().map_err(|e| format!("{sql}: port {text:?}: {e}"))?);
        }
    }
    Ok(ports)
}

/// Run `sql` as one simple Query; the port of its first row.
async fn simple_port(client: &Client, sql: &str) -> Result<u16, String> {
    let ports = simple_ports(sql, &simple(client, sql).await?)?;
    ports.first().copied().ok_or_else(|| format!("{sql}: no row"))
}

/// Run `sql` with the extended protocol; the port of its first row.
async fn extended_port(client: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u16, String> {
    let rows = within(sql, client.query(sql, params)).await?.map_err(|e| explain(sql, &e))?;
    let row = rows.first().ok_or_else(|| format!("{sql}: no row"))?;
    row_port(sql, row)
}

fn row_port(sql: &str, row: &Row) -> Result<u16, String> {
    let columns = row.columns();
    let column = columns.iter().position(|c| c.name() == "inet_server_port").unwrap_or(columns.len() - 1);
    let port: i32 = row.try_get(column).map_err(|e| format!("{sql}: {e}"))?;
    u16::try_from(port).map_err(|e| format!("{sql}: port {port}: {e}"))
}

/// Compare where a statement ran with where it should have; a line for each mismatch.
fn check(ports: &Ports, wrong: &mut Vec<String>, how: &str, sql: &str, want: Target, got: Result<u16, String>) {
    match got {
        Ok(port) if ports.target(port) == Some(want) => {}
        Ok(port) => wrong.push(format!("[{how}] {sql}: expected {want:?}, ran on {}", ports.describe(port))),
        Err(e) => wrong.push(format!("[{how}] expected {want:?}, failed: {e}")),
    }
}

fn assert_none_wrong(wrong: &[String]) {
    assert!(wrong.is_empty(), "{} check(s) failed:\n{}", wrong.len(), wrong.join("\n"));
}

/// sluice loads the function catalog in the background after it starts: wait (bounded) until
/// the STABLE function is routed to a replica. If it never is, the placement table says so.
async fn wait_for_catalog(ports: &Ports, client: &Client) {
    let deadline = tokio::time::Instant::now() + CATALOG_WAIT;
    while tokio::time::Instant::now() < deadline {
        if let Ok(port) = simple_port(client, "SELECT port_stable()").await {
            if ports.target(port) == Some(Replica) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After a write, read-your-writes keeps the session's reads on the primary until a replica has
/// replayed it (and the monitor has seen that): wait (bounded) for the reads to return.
async fn settle(ports: &Ports, client: &Client) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if let Ok(port) = simple_port(client, READ).await {
            if ports.target(port) == Some(Replica) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_statement_runs_where_its_class_allows() {
    let s = setup().await;
    let client = s.p.connect().await;
    wait_for_catalog(&s.ports, &client).await;

    let mut wrong = Vec::new();
    for &(sql, want) in PLACEMENT {
        if want == Replica {
            settle(&s.ports, &client).await;
        }
        check(&s.ports, &mut wrong, "simple", sql, want, simple_port(&client, sql).await);
        if want == Replica {
            settle(&s.ports, &client).await;
        }
        check(&s.ports, &mut wrong, "extended", sql, want, extended_port(&client, sql, &[]).await);
    }

    // A read with a bound parameter.
    settle(&s.ports, &client).await;
    let sql = "SELECT inet_server_port(), $1::int";
    check(&s.ports, &mut wrong, "extended", sql, Replica, extended_port(&client, sql, &[&1i32]).await);

    // A function created after sluice started is unknown to its catalog: the primary.
    let late = "CREATE FUNCTION w_late() RETURNS int LANGUAGE plpgsql AS $$ \
                BEGIN INSERT INTO t VALUES (101, 'late'); RETURN inet_server_port(); END $$";
    match simple(&client, late).await {
        Ok(_) => {
            let sql = "SELECT w_late()";
            check(&s.ports, &mut wrong, "simple", sql, Primary, simple_port(&client, sql).await);
            check(&s.ports, &mut wrong, "extended", sql, Primary, extended_port(&client, sql, &[]).await);
        }
        Err(e) => wrong.push(format!("[simple] creating w_late() failed: {e}")),
    }
    assert_none_wrong(&wrong);
}

#[tokio::test(flavor = "multi_thread")]
async fn transactions_stay_on_one_node() {
    let s = setup().await;
    let mut client = s.p.connect().await;
    let mut wrong = Vec::new();

    // Read-write, one statement per Query: everything on the primary.
    let steps = ["BEGIN", READ, "INSERT INTO t VALUES (10, 'tx')", READ, "COMMIT"];
    for sql in steps {
        let got = simple(&client, sql).await.and_then(|m| simple_ports(sql, &m));
        match got {
            Ok(found) => {
                for port in found {
                    check(&s.ports, &mut wrong, "simple, in BEGIN", sql, Primary, Ok(port));
                }
            }
            Err(e) => wrong.push(format!("[simple, in BEGIN] {e}")),
        }
    }
    // After COMMIT the session is free again: a read goes to a replica (once one has replayed
    // the commit: read-your-writes).
    settle(&s.ports, &client).await;
    check(&s.ports, &mut wrong, "simple, after COMMIT", READ, Replica, simple_port(&client, READ).await);

    // The same transaction as one multi-statement Query.
    let sql = "BEGIN; SELECT inet_server_port(); INSERT INTO t VALUES (11, 'tx'); SELECT inet_server_port(); COMMIT";
    match simple(&client, sql).await.and_then(|m| simple_ports(sql, &m)) {
        Ok(found) if found.len() == 2 => {
            for port in found {
                check(&s.ports, &mut wrong, "simple, one Query", sql, Primary, Ok(port));
            }
        }
        Ok(found) => wrong.push(format!("[simple, one Query] {sql}: expected 2 rows, got {found:?}")),
        Err(e) => wrong.push(format!("[simple, one Query] {e}")),
    }

    // A transaction object (BEGIN, then extended-protocol statements).
    read_write_transaction(&s.ports, &mut client, &mut wrong).await;

    // Read-only: one replica for the whole transaction.
    settle(&s.ports, &client).await;
    read_only_transactions(&s.ports, &mut client, &mut wrong).await;

    let rows = s.c.psql("SELECT count(*) FROM t WHERE id IN (10, 11, 12)").await;
    if rows != "3" {
        wrong.push(format!("expected the 3 transactional inserts on the primary, found {rows}"));
    }
    assert_none_wrong(&wrong);
}

async fn read_write_transaction(ports: &Ports, client: &mut Client, wrong: &mut Vec<String>) {
    let how = "extended, transaction object";
    let result: Result<(u16, u16), String> = async {
        let tx = within("BEGIN", client.build_transaction().start()).await?.map_err(|e| explain("BEGIN", &e))?;
        let first = extended_port(&tx, READ, &[]).await?;
        let insert = "INSERT INTO t VALUES (12, 'tx')";
        within(insert, tx.execute(insert, &[])).await?.map_err(|e| explain(insert, &e))?;
        let second = extended_port(&tx, READ, &[]).await?;
        within("COMMIT", tx.commit()).await?.map_err(|e| explain("COMMIT", &e))?;
        Ok((first, second))
    }
    .await;
    match result {
        Ok((first, second)) => {
            check(ports, wrong, how, READ, Primary, Ok(first));
            check(ports, wrong, how, READ, Primary, Ok(second));
        }
        Err(e) => wrong.push(format!("[{how}] {e}")),
    }
}

async fn read_only_transactions(ports: &Ports, client: &mut Client, wrong: &mut Vec<String>) {
    // Several rounds: with two replicas in rotation, a single round could agree by chance.
    for round in 0..4 {
        let how = format!("simple, BEGIN READ ONLY, round {round}");
        let result: Result<(u16, u16), String> = async {
            simple(client, "BEGIN READ ONLY").await?;
            let first = simple_port(client, READ).await?;
            let second = simple_port(client, READ).await?;
            simple(client, "COMMIT").await?;
            Ok((first, second))
        }
        .await;
        same_replica(ports, wrong, &how, result);

        let how = format!("extended, read-only transaction object, round {round}");
        let result: Result<(u16, u16), String> = async {
            let start = client.build_transaction().read_only(true).start();
            let tx = within("START TRANSACTION READ ONLY", start).await?.map_err(|e| explain("BEGIN", &e))?;
            let first = extended_port(&tx, READ, &[]).await?;
            let second = extended_port(&tx, READ, &[]).await?;
            within("COMMIT", tx.commit()).await?.map_err(|e| explain("COMMIT", &e))?;
            Ok((first, second))
        }
        .await;
        same_replica(ports, wrong, &how, result);
    }
}

fn same_replica(ports: &Ports, wrong: &mut Vec<String>, how: &str, result: Result<(u16, u16), String>) {
    match result {
        Ok((first, second)) => {
            check(ports, wrong, how, READ, Replica, Ok(first));
            if first != second {
                wrong.push(format!(
                    "[{how}] two reads of one transaction ran on {} and {}",
                    ports.describe(first),
                    ports.describe(second)
                ));
            }
        }
        Err(e) => wrong.push(format!("[{how}] {e}")),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_without_a_result_succeed_on_the_primary() {
    let s = setup().await;
    let client = s.p.connect().await;
    let mut failed = Vec::new();
    let writes = [
        // A read and a write in one Query: the whole Query goes to the primary.
        "SELECT 1; INSERT INTO t VALUES (20, 'multi')",
        "MERGE INTO t USING src ON t.id = src.id \
         WHEN MATCHED THEN UPDATE SET v = src.v \
         WHEN NOT MATCHED THEN INSERT VALUES (src.id, src.v)",
        "VACUUM t",
        // Misrouted on purpose: the replica refuses with 25006, sluice retries on the primary.
        "/* sluice: replica */ INSERT INTO t VALUES (42, 'hinted')",
    ];
    for sql in writes {
        if let Err(e) = simple(&client, sql).await {
            failed.push(format!("[simple] {e}"));
        }
    }
    let hinted = "/* sluice: replica */ INSERT INTO t VALUES (43, 'hinted')";
    match within(hinted, client.execute(hinted, &[])).await {
        Ok(Ok(1)) => {}
        Ok(Ok(n)) => failed.push(format!("[extended] {hinted}: {n} rows instead of 1")),
        Ok(Err(e)) => failed.push(format!("[extended] {}", explain(hinted, &e))),
        Err(e) => failed.push(format!("[extended] {e}")),
    }

    // What the primary holds afterwards.
    let expect = [
        ("SELECT count(*) FROM t WHERE id = 20", "1"),
        ("SELECT string_agg(v, ',' ORDER BY id) FROM t WHERE id IN (1, 3)", "uno,tres"),
        ("SELECT count(*) FROM t WHERE id = 42", "1"),
        ("SELECT count(*) FROM t WHERE id = 43", "1"),
    ];
    for (sql, want) in expect {
        let got = s.c.psql(sql).await;
        if got != want {
            failed.push(format!("on the primary, {sql} gave {got:?}, expected {want:?}"));
        }
    }
    assert_none_wrong(&failed);
}

/// Concurrent reads: each client runs `per_client` reads in turn, all clients at once.
struct Burst {
    ports: HashMap<u16, usize>,
    errors: Vec<String>,
}

impl Burst {
    async fn run(clients: &[Client], per_client: usize) -> Burst {
        let runs = clients.iter().enumerate().map(|(i, client)| async move {
            let mut out = Vec::with_capacity(per_client);
            for k in 0..per_client {
                out.push(simple_port(client, READ).await.map_err(|e| format!("client {i}, read {k}: {e}")));
            }
            out
        });
        let mut burst = Burst { ports: HashMap::new(), errors: Vec::new() };
        for result in join_all(runs).await.into_iter().flatten() {
            match result {
                Ok(port) => *burst.ports.entry(port).or_default() += 1,
                Err(e) => burst.errors.push(e),
            }
        }
        burst
    }

    fn on(&self, port: u16) -> usize {
        self.ports.get(&port).copied().unwrap_or(0)
    }

    /// Panic with the first errors if any read failed.
    fn assert_no_errors(&self, phase: &str) {
        let first: Vec<&String> = self.errors.iter().take(5).collect();
        assert!(self.errors.is_empty(), "{phase}: {} read(s) failed, e.g. {first:#?}", self.errors.len());
    }

    /// Panic unless every read ran on `port`.
    fn assert_all_on(&self, phase: &str, port: u16, ports: &Ports) {
        self.assert_no_errors(phase);
        let elsewhere: Vec<String> = self
            .ports
            .iter()
            .filter(|(p, _)| **p != port)
            .map(|(p, n)| format!("{n} on {}", ports.describe(*p)))
            .collect();
        assert!(elsewhere.is_empty(), "{phase}: expected every read on {}, got {elsewhere:?}", ports.describe(port));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_balance_across_replicas_and_survive_replicas_stopping() {
    const CLIENTS: usize = 10;
    let s = setup().await;
    let (primary, r1, r2) = (s.ports.primary, s.ports.replicas[0], s.ports.replicas[1]);
    let clients = join_all((0..CLIENTS).map(|_| s.p.connect())).await;

    // 1,000 reads: each replica serves 40-60 %, the primary none.
    let b = Burst::run(&clients, 100).await;
    b.assert_no_errors("both replicas up");
    assert_eq!(b.on(primary), 0, "both replicas up: reads ran on the primary: {:?}", b.ports);
    for replica in [r1, r2] {
        let share = b.on(replica);
        assert!((400..=600).contains(&share), "replica {replica} served {share} of 1000 reads: {:?}", b.ports);
    }

    // Stop the first replica (node 1) and read at once, before the monitor can notice: sluice
    // must skip the dead replica without the client seeing an error.
    s.c.stop_node(1).await.expect("stopping replica node1");
    let b = Burst::run(&clients, 20).await;
    b.assert_no_errors("node1 just stopped");
    assert_eq!(b.on(r1), 0, "node1 just stopped: reads answered by a stopped server?");
    s.p.wait_topology(1, 1).await;
    Burst::run(&clients, 10).await.assert_all_on("node1 down", r2, &s.ports);

    // Stop the other replica too: reads fall back to the primary (primary_reads = fallback).
    s.c.stop_node(2).await.expect("stopping replica node2");
    Burst::run(&clients, 20).await.assert_all_on("node2 just stopped", primary, &s.ports);
    s.p.wait_topology(1, 0).await;
    Burst::run(&clients, 10).await.assert_all_on("both replicas down", primary, &s.ports);
}

/// A standby lists no prepared transactions: two-phase-commit recovery must ask the primary.
#[tokio::test(flavor = "multi_thread")]
async fn node_local_reads_see_the_primary() {
    let s = setup().await;
    let client = s.p.connect().await;
    let prepare = "BEGIN; INSERT INTO t VALUES (42, 'twophase'); PREPARE TRANSACTION 'sluice_gid_1'";
    simple(&client, prepare).await.unwrap_or_else(|e| panic!("{e}"));
    settle(&s.ports, &client).await;
    let mut wrong = Vec::new();
    for how in ["simple", "extended"] {
        let sql = "select gid from pg_prepared_xacts";
        let gids: Vec<String> = if how == "simple" {
            let rows = simple(&client, sql).await.unwrap_or_else(|e| panic!("{e}"));
            rows.iter()
                .filter_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                    _ => None,
                })
                .collect()
        } else {
            let rows = within(sql, client.query(sql, &[])).await.unwrap().unwrap_or_else(|e| panic!("{e}"));
            rows.iter().map(|r| r.get(0)).collect()
        };
        if gids != ["sluice_gid_1"] {
            wrong.push(format!("[{how}] {sql}: {gids:?}"));
        }
        let show = "SHOW transaction_read_only";
        let value = simple(&client, show).await.unwrap_or_else(|e| panic!("{e}"));
        let shown = value.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        });
        if shown.as_deref() != Some("off") {
            wrong.push(format!("[simple] {show}: not off, so not the primary"));
        }
    }
    simple(&client, "COMMIT PREPARED 'sluice_gid_1'").await.unwrap_or_else(|e| panic!("{e}"));
    assert_none_wrong(&wrong);
}

/// One client whose every read is two units (tokio-postgres prepares an unnamed statement with
/// Parse/Describe/Sync, then executes it): its reads still alternate between the replicas.
/// A prepare-only unit goes where the next executing unit will without taking a turn; when it
/// took one, each execute took every other turn and all of them landed on the same replica.
#[tokio::test(flavor = "multi_thread")]
async fn a_lone_client_that_prepares_each_read_alternates_replicas() {
    let s = setup().await;
    let client = s.p.connect().await;
    let mut seen: HashMap<u16, usize> = HashMap::new();
    for _ in 0..20 {
        let port = extended_port(&client, READ, &[]).await.expect("read");
        *seen.entry(port).or_default() += 1;
    }
    for replica in &s.ports.replicas {
        let n = seen.get(replica).copied().unwrap_or(0);
        assert!((8..=12).contains(&n), "replica {replica} served {n} of 20 prepared reads: {seen:?}");
    }
}

/// A hot standby cancels a read whose lock its replay needs (`max_standby_streaming_delay`, 30 s by
/// default, 0 here): `40001` before any row. The read failed only because of that node's replay:
/// sluice runs it again on the primary, and the client gets its rows. Shown first straight on a
/// replica, so the test would notice a conflict that never comes.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_cancelled_by_a_recovery_conflict_runs_again_on_the_primary() {
    use sluice::pgcluster::{TEST_DATABASE, TEST_PASSWORD, TEST_USER};
    let s = setup().await;
    for port in &s.ports.replicas {
        s.c.psql_at(*port, "ALTER SYSTEM SET max_standby_streaming_delay = 0").await;
        s.c.psql_at(*port, "SELECT pg_reload_conf()").await;
    }
    let conflicted = |client: Client, extended: bool| read_during_a_replayed_lock(&s.c, client, extended);
    let direct = common::connect(s.ports.replicas[0], TEST_USER, TEST_PASSWORD, TEST_DATABASE).await.unwrap();
    match conflicted(direct, false).await {
        Ok(Err(e)) if common::sqlstate(&e).as_deref() == Some("40001") => {}
        other => panic!("straight on a replica, the read should be cancelled with 40001: {other:?}"),
    }

    let mut failed = Vec::new();
    for extended in [false, true] {
        let how = if extended { "extended" } else { "simple" };
        let before = s.p.metric("sluice_units_total{outcome=\"conflict_retried\"}").await;
        let client = s.p.connect().await;
        match conflicted(client, extended).await {
            Ok(Ok(1)) => {}
            other => failed.push(format!("[{how}] through sluice the read should get its row: {other:?}")),
        }
        let retried = s.p.metric("sluice_units_total{outcome=\"conflict_retried\"}").await - before;
        if retried != 1.0 {
            failed.push(format!("[{how}] {retried} reads retried after a recovery conflict, expected 1"));
        }
    }
    assert_none_wrong(&failed);
}

/// Run a read that sleeps holding `t`'s lock, and half a second in take an ACCESS EXCLUSIVE lock
/// of `t` on the primary (replayed, it cancels every replica reader of `t`); the rows the read got.
async fn read_during_a_replayed_lock(
    c: &Cluster,
    client: Client,
    extended: bool,
) -> Result<Result<usize, tokio_postgres::Error>, String> {
    let read = "SELECT inet_server_port() FROM (SELECT pg_sleep(1.5)) AS s, t WHERE t.id = 1";
    let run = async {
        if extended {
            client.query(read, &[]).await.map(|rows| rows.len())
        } else {
            let messages = client.simple_query(read).await?;
            Ok(messages.iter().filter(|m| matches!(m, SimpleQueryMessage::Row(_))).count())
        }
    };
    let lock = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.psql("BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; COMMIT").await;
    };
    within(read, async { tokio::join!(run, lock).0 }).await
}
