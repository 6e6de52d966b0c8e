//! State sync by difference, pipelined: a server connection that carries another session's
//! settings gets only the differing statements, in the same write as the unit, once its node
//! has accepted them; the client sees only its own replies. Counted through the admin metrics.

mod common;
mod load;

use std::time::Duration;

use bytes::BytesMut;
use common::{Cluster, Proxy};
use load::ext::{first_column, run_unnamed, tags};
use load::wire::RawConn;
use load::Target;
use sluice::auth::SaltCache;
use sluice::protocol::messages;

const STATE: &str = "SELECT inet_server_port()::text, current_setting('application_name'), \
     current_setting('statement_timeout'), current_setting('work_mem'), current_setting('search_path'), \
     current_setting('lock_timeout')";

const ROUND_TRIPS: &str = "sluice_state_syncs_total{outcome=\"round_trip\"}";
const PIPELINED: &str = "sluice_state_syncs_total{outcome=\"pipelined\"}";
const FAILED: &str = "sluice_state_syncs_total{outcome=\"failed\"}";

/// A session with 3 startup parameters and 2 SETs, and the settings it must see.
struct Session {
    client: tokio_postgres::Client,
    want: [&'static str; 5],
}

async fn session(p: &Proxy, options: &str, sets: &str, want: [&'static str; 5]) -> Session {
    let mut config: tokio_postgres::Config = p.conn_string().parse().unwrap();
    config.options(options);
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap_or_else(|e| panic!("{options}: {e}"));
    tokio::spawn(conn);
    client.batch_execute(sets).await.unwrap_or_else(|e| panic!("{sets}: {e}"));
    Session { client, want }
}

/// Run the state query (simple or extended protocol); returns the port it ran on.
async fn check(s: &Session, extended: bool, what: &str) -> String {
    let row: Vec<String> = if extended {
        let row = s.client.query_one(STATE, &[]).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        (0..6).map(|i| row.get::<_, String>(i)).collect()
    } else {
        let msgs = s.client.simple_query(STATE).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let row = msgs
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{what}: no row"));
        (0..6).map(|i| row.get(i).unwrap().to_string()).collect()
    };
    assert_eq!(row[1..], s.want, "{what}: wrong settings");
    row[0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_pay_no_round_trip_for_state_once_the_node_knows_it() {
    let c = Cluster::start(2).await;
    c.psql("CREATE SCHEMA s_a").await;
    c.wait_replayed().await;
    // One connection per node: the two sessions take turns on the same server connections,
    // so nearly every unit finds the other session's settings there.
    let p = Proxy::builder()
        .cluster(&c)
        .pool_size(1)
        .pool_mode("transaction")
        .monitor_interval("100ms")
        .set("", "admin_listen", "\"127.0.0.1:0\"")
        .start()
        .await;
    p.wait_topology(1, 2).await;
    let a = session(
        &p,
        "-c application_name=app_a -c statement_timeout=41s -c work_mem=5MB",
        "SET search_path = s_a, public; SET lock_timeout = '7s'",
        ["app_a", "41s", "5MB", "s_a, public", "7s"],
    )
    .await;
    let b = session(
        &p,
        "-c application_name=app_b -c statement_timeout=43s -c work_mem=6MB",
        "SET search_path = public; SET lock_timeout = '9s'",
        ["app_b", "43s", "6MB", "public", "9s"],
    )
    .await;
    // `a` reads twice for each read of `b`: the replica rotation then hands each replica's one
    // connection to `a` and `b` in turn (with one read each, `a` would always get one replica
    // and `b` the other, and no connection would ever change hands).
    let turn = |i: usize, what: &'static str| {
        let (a, b) = (&a, &b);
        async move {
            let mut ports = vec![check(a, i.is_multiple_of(2), &format!("{what} a, read {i}")).await];
            ports.push(check(a, i.is_multiple_of(3), &format!("{what} a, second read {i}")).await);
            ports.push(check(b, i.is_multiple_of(3), &format!("{what} b, read {i}")).await);
            ports
        }
    };
    // Warm up: each connection learns each session's statements once (round trips allowed).
    for i in 0..20 {
        turn(i, "warm-up").await;
    }
    let round_trips = p.metric(ROUND_TRIPS).await;
    let pipelined = p.metric(PIPELINED).await;
    let mut ports = std::collections::BTreeSet::new();
    for i in 0..1000 {
        ports.extend(turn(i, "measured").await);
    }
    let replicas: std::collections::BTreeSet<String> = c.replica_ports().iter().map(u16::to_string).collect();
    assert_eq!(ports, replicas, "reads spread over both replicas and nowhere else");
    assert_eq!(p.metric(ROUND_TRIPS).await, round_trips, "no state sync cost a round trip once warm");
    let syncs = p.metric(PIPELINED).await - pipelined;
    assert!(syncs >= 1000.0, "the sessions' turns needed pipelined syncs: {syncs}");
    assert_eq!(p.metric(FAILED).await, 0.0);
    assert!(p.metric("sluice_state_sync_statements_total").await >= syncs);
}

/// A pipelined sync the node refuses (its role was dropped since) never lets the unit's result
/// through: the client gets the server's error, the connection is closed, the session goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_pipelined_sync_fails_the_unit_not_the_session() {
    let c = Cluster::start(0).await;
    c.psql("CREATE ROLE sync_role; GRANT sync_role TO CURRENT_USER").await;
    let p = Proxy::builder()
        .cluster(&c)
        .pool_size(1)
        .pool_mode("transaction")
        .set("", "admin_listen", "\"127.0.0.1:0\"")
        .start()
        .await;
    let a = p.connect().await;
    let b = p.connect().await;
    a.batch_execute("SET ROLE sync_role").await.unwrap();
    let who = "SELECT current_user::text";
    for _ in 0..3 {
        let rows = b.query_one(who, &[]).await.unwrap();
        assert_ne!(rows.get::<_, String>(0), "sync_role");
        assert_eq!(a.query_one(who, &[]).await.unwrap().get::<_, String>(0), "sync_role");
    }
    assert!(p.metric(PIPELINED).await >= 1.0, "the second turn is pipelined");
    b.simple_query("SELECT 1").await.unwrap();
    c.psql("DROP ROLE sync_role").await;
    let err = a.query_one(who, &[]).await.expect_err("the role is gone");
    assert_eq!(common::sqlstate(&err).as_deref(), Some("22023"), "{}", common::describe(&err));
    // Counted when the session gives the connection up, just after the client's reply.
    for _ in 0..50 {
        if p.metric(FAILED).await > 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(p.metric(FAILED).await, 1.0);
    // The session goes on; b never sees a's failure.
    assert_eq!(b.query_one("SELECT 7", &[]).await.unwrap().get::<_, i32>(0), 7);
}

/// `RESET ALL` returns a session to the parameters it started with (as PostgreSQL does), not
/// to the server's defaults, on whichever connection it reads next.
#[tokio::test(flavor = "multi_thread")]
async fn reset_all_returns_to_the_startup_parameters() {
    let c = Cluster::start(1).await;
    let p = Proxy::builder().cluster(&c).pool_size(1).pool_mode("transaction").monitor_interval("100ms").start().await;
    p.wait_topology(1, 1).await;
    let mut config: tokio_postgres::Config = p.conn_string().parse().unwrap();
    config.options("-c work_mem=5MB -c application_name=app_s");
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let settings = "SELECT current_setting('work_mem') || ' ' || current_setting('application_name')";
    let read = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, String>(0) }
    };
    client.batch_execute("SET work_mem = '7MB'; SET application_name = 'changed'").await.unwrap();
    assert_eq!(read(settings).await, "7MB changed");
    client.batch_execute("RESET ALL").await.unwrap();
    for round in 0..4 {
        assert_eq!(read(settings).await, "5MB app_s", "round {round}, on a replica");
        let on_primary =
            "/* sluice: primary */ SELECT current_setting('work_mem') || ' ' || current_setting('application_name')";
        assert_eq!(read(on_primary).await, "5MB app_s", "round {round}, on the primary");
    }
}

/// A proxy with one server connection (transaction pooling, no replica): a session that kept
/// it would make every other client wait.
async fn one_connection(c: &Cluster) -> Proxy {
    let admin = ("", "admin_listen", "\"127.0.0.1:0\"");
    Proxy::builder().cluster(c).pool_size(1).pool_mode("transaction").set(admin.0, admin.1, admin.2).start().await
}

/// A client of `p` that starts with `work_mem` 5MB.
async fn with_work_mem(p: &Proxy) -> tokio_postgres::Client {
    let mut config: tokio_postgres::Config = p.conn_string().parse().unwrap();
    config.options("-c work_mem=5MB");
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// The one text value of `sql` (NULL: `None`), read by `client`, which must get the only server
/// connection: another session kept it if this waits.
async fn read_unkept(client: &tokio_postgres::Client, sql: &str) -> Option<String> {
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), client.query_one(sql, &[])).await;
    read.expect("waited for the connection another session kept").expect("the read failed").get(0)
}

/// `sql`'s one text value, read by `client`.
async fn value(client: &tokio_postgres::Client, sql: &str) -> String {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

const WORK_MEM: &str = "SELECT current_setting('work_mem')";

/// asyncpg's pool reset, sent at every release, resets the session as `RESET ALL` does. It
/// also unlocks advisory locks (a write), which must not pin the session: with one server
/// connection, another client still gets it.
#[tokio::test(flavor = "multi_thread")]
async fn a_pool_reset_with_a_write_in_it_does_not_pin_the_session() {
    let c = Cluster::start(0).await;
    let p = one_connection(&c).await;
    let a = with_work_mem(&p).await;
    a.batch_execute("SET work_mem = '7MB'").await.unwrap();
    a.batch_execute("SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;").await.unwrap();
    // a stays connected, idle: b needs the only server connection.
    let b = p.connect().await;
    assert_ne!(read_unkept(&b, WORK_MEM).await.as_deref(), Some("7MB"), "b sees a's setting");
    assert_eq!(value(&a, WORK_MEM).await, "5MB", "a is back to its startup value");
}

/// `set_config(name, $1, false)` with a bound value (row-level-security setups; asyncpg around
/// its type introspection) is a session command like SET: recorded with its value, replayed on
/// the next connection, and the session is not pinned for it.
#[tokio::test(flavor = "multi_thread")]
async fn set_config_with_a_parameter_is_replayed_and_does_not_pin() {
    let c = Cluster::start(0).await;
    let p = one_connection(&c).await;
    let a = p.connect().await;
    let set = "SELECT set_config('app.user', $1, false)";
    a.query_one(set, &[&"alice"]).await.unwrap();
    // a's statement prepared before, executed by name with another value.
    let prepared = a.prepare(set).await.unwrap();
    a.query_one(&prepared, &[&"o'brien"]).await.unwrap();
    let b = p.connect().await;
    let user = "SELECT current_setting('app.user', true)";
    assert_ne!(read_unkept(&b, user).await.as_deref(), Some("o'brien"), "b sees a's setting");
    assert_eq!(value(&a, user).await, "o'brien", "a after b used the connection");
}

/// A SET inside a transaction block lasts if the block commits, not if it rolls back; either
/// way the session is not pinned for it (asyncpg sets `jit` inside its callers' transactions).
/// A savepoint rolled back after a SET pins the session instead, and its value stays right.
#[tokio::test(flavor = "multi_thread")]
async fn a_set_in_a_block_follows_the_block_and_does_not_pin() {
    let c = Cluster::start(0).await;
    let p = one_connection(&c).await;
    let a = with_work_mem(&p).await;
    // b takes the only server connection between a's units: a must not keep it.
    let b = p.connect().await;
    a.batch_execute("BEGIN").await.unwrap();
    a.batch_execute("SET work_mem = '7MB'").await.unwrap();
    a.query_one("SELECT set_config('app.user', $1, false)", &[&"alice"]).await.unwrap();
    a.batch_execute("COMMIT").await.unwrap();
    assert_ne!(read_unkept(&b, WORK_MEM).await.as_deref(), Some("7MB"), "b sees a's setting");
    assert_eq!(value(&a, WORK_MEM).await, "7MB", "committed");
    let user = value(&a, "SELECT current_setting('app.user')").await;
    assert_eq!(user, "alice", "committed, set by set_config with a parameter");
    a.batch_execute("BEGIN").await.unwrap();
    a.batch_execute("SET work_mem = '9MB'").await.unwrap();
    a.batch_execute("ROLLBACK").await.unwrap();
    assert_ne!(read_unkept(&b, WORK_MEM).await.as_deref(), Some("9MB"));
    assert_eq!(value(&a, WORK_MEM).await, "7MB", "rolled back");
    a.batch_execute("BEGIN").await.unwrap();
    a.batch_execute("SAVEPOINT s").await.unwrap();
    a.batch_execute("SET work_mem = '11MB'").await.unwrap();
    a.batch_execute("ROLLBACK TO SAVEPOINT s").await.unwrap();
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(value(&a, WORK_MEM).await, "7MB", "undone by the savepoint's rollback");
}

/// The same with a connection held for the whole session (session pooling).
#[tokio::test(flavor = "multi_thread")]
async fn reset_all_on_a_held_connection_returns_to_the_startup_parameters() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(2).pool_mode("session").start().await;
    let mut config: tokio_postgres::Config = p.conn_string().parse().unwrap();
    config.options("-c work_mem=5MB");
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    let work_mem = "SELECT current_setting('work_mem')";
    client.batch_execute("SET work_mem = '7MB'").await.unwrap();
    assert_eq!(client.query_one(work_mem, &[]).await.unwrap().get::<_, String>(0), "7MB");
    client.batch_execute("RESET ALL").await.unwrap();
    for round in 0..3 {
        assert_eq!(client.query_one(work_mem, &[]).await.unwrap().get::<_, String>(0), "5MB", "round {round}");
    }
}

/// Run `statements` as one pipeline (each Parse/Bind/Execute, one Sync) on a raw connection;
/// every statement must succeed and the block be over at the Sync.
async fn pipeline(conn: &mut RawConn, statements: &[&str]) {
    pipeline_to(conn, statements, b"I").await;
}

/// [`pipeline`], ending with the transaction status `status` (`T`: a block left open).
async fn pipeline_to(conn: &mut RawConn, statements: &[&str], status: &[u8]) {
    let frames = run_pipeline(conn, statements).await;
    assert!(!tags(&frames).contains('E'), "{statements:?}: {}", tags(&frames));
    assert_eq!(frames.last().unwrap().body(), status, "{statements:?}: the status at the Sync");
}

/// A pipeline that commits a SET and then fails: the SET lasts (PostgreSQL says so on a direct
/// connection too), so the session keeps its connection rather than hand it to another client
/// with its setting on it.
#[tokio::test(flavor = "multi_thread")]
async fn a_pipeline_that_commits_a_set_then_fails_keeps_the_set_to_its_session() {
    let c = Cluster::start(0).await;
    let p = one_connection(&c).await;
    let mut a = raw_login(p.port()).await;
    let mut direct = raw_login(c.primary_port()).await;
    let b = p.connect().await;
    let statements = ["BEGIN", "SET work_mem = '9MB'", "COMMIT", "SELECT 1/0"];
    for conn in [&mut direct, &mut a] {
        let frames = run_pipeline(conn, &statements).await;
        assert!(tags(&frames).contains('E'), "the division fails: {}", tags(&frames));
    }
    assert_eq!(raw_work_mem(&mut direct).await, "9MB", "on PostgreSQL itself");
    never_reads(&b, "4MB").await;
    assert_eq!(raw_work_mem(&mut a).await, "9MB", "committed before the error");
}

/// A raw connection to `port`, logged in as the test user.
async fn raw_login(port: u16) -> RawConn {
    let mut conn = RawConn::connect(port).await.expect("connect");
    conn.login(&Target::test_user(port), &SaltCache::default()).await.expect("login");
    conn
}

/// `b` reads `work_mem` as `want` or not at all: it waits for the only server connection,
/// which a pinned session keeps, and may give up.
async fn never_reads(b: &tokio_postgres::Client, want: &str) {
    let read = tokio::time::timeout(Duration::from_secs(20), b.query_one(WORK_MEM, &[])).await.expect("an answer");
    if let Ok(row) = read {
        assert_eq!(row.get::<_, String>(0), want, "b sees a's setting");
    }
}

/// Run `statements` as one pipeline up to one Sync; its answers.
async fn run_pipeline(conn: &mut RawConn, statements: &[&str]) -> Vec<sluice::protocol::Frame> {
    let mut out = BytesMut::new();
    for sql in statements {
        // A statement with a parameter gets 1 for it.
        let params: &[Option<&str>] = if sql.contains("$1") { &[Some("1")] } else { &[] };
        run_unnamed(&mut out, sql, params);
    }
    messages::sync(&mut out);
    assert!(conn.send(&out).await);
    conn.until_ready_frames(Duration::from_secs(20)).await.expect("the pipeline's answers")
}

/// `work_mem` as `conn` reads it, in a unit of its own.
async fn raw_work_mem(conn: &mut RawConn) -> String {
    raw_value(conn, WORK_MEM).await
}

/// The one text value of `sql`, read by `conn` in an unnamed extended unit outside a block.
async fn raw_value(conn: &mut RawConn, sql: &str) -> String {
    let mut out = BytesMut::new();
    run_unnamed(&mut out, sql, &[]);
    messages::sync(&mut out);
    assert!(conn.send(&out).await);
    let frames = conn.until_ready_frames(Duration::from_secs(20)).await.expect("the read's answers");
    assert_eq!(frames.last().unwrap().body(), b"I", "the read runs outside a block");
    frames.iter().find_map(first_column).expect("a row")
}

/// A whole block in one pipeline (psycopg's pipeline mode, JDBC batches): a SET in it lasts if
/// the block commits and not if it rolls back, and the block's BEGIN / COMMIT are not replayed
/// on the session's next connections. Between the units another client takes the only server
/// connection, so each read of `a` runs on a connection synced from `a`'s recorded state; a
/// direct connection to the primary runs the same pipelines and must read the same.
#[tokio::test(flavor = "multi_thread")]
async fn a_whole_block_in_one_pipeline_keeps_its_set_only_if_it_commits() {
    let c = Cluster::start(0).await;
    let p = one_connection(&c).await;
    let (mut a, mut direct) = (raw_login(p.port()).await, raw_login(c.primary_port()).await);
    let b = p.connect().await;
    let cases: [(&[&str], &str); 4] = [
        (&["BEGIN", "SET work_mem = '9MB'", "ROLLBACK"], "4MB"),
        (&["BEGIN", "SET work_mem = '7MB'", "SELECT 1", "COMMIT"], "7MB"),
        // BEGIN makes what ran before it in the unit part of the block.
        (&["SET work_mem = '11MB'", "BEGIN", "SET work_mem = '13MB'", "ROLLBACK"], "7MB"),
        // The Sync commits what runs after the block.
        (&["BEGIN READ ONLY", "SET work_mem = '13MB'", "SELECT 1", "ROLLBACK", "SET work_mem = '11MB'"], "11MB"),
    ];
    for (statements, want) in cases {
        pipeline(&mut direct, statements).await;
        assert_eq!(raw_work_mem(&mut direct).await, want, "{statements:?} on PostgreSQL itself");
        pipeline(&mut a, statements).await;
        let other = read_unkept(&b, WORK_MEM).await;
        assert_ne!(other.as_deref(), Some(want).filter(|w| *w != "4MB"), "{statements:?}: b sees a's setting");
        assert_eq!(raw_work_mem(&mut a).await, want, "{statements:?} through sluice");
    }
    assert_eq!(value(&b, WORK_MEM).await, "4MB", "b after a's state was replayed");
    // pgjdbc sends BEGIN with the first statement of a transaction: the SET waits for the end
    // of the block, and the session is not pinned for it.
    for (end, want) in [("ROLLBACK", "11MB"), ("COMMIT", "9MB")] {
        pipeline_to(&mut a, &["BEGIN", "SET work_mem = '9MB'"], b"T").await;
        pipeline(&mut a, &[end]).await;
        assert_ne!(read_unkept(&b, WORK_MEM).await.as_deref(), Some("9MB"), "{end}: b sees a's setting");
        assert_eq!(raw_work_mem(&mut a).await, want, "after {end}");
    }
    // psycopg's pipeline inside a transaction: SETs beside parameterised statements, the
    // COMMIT or ROLLBACK pipelined after a statement.
    for (end, want) in [("COMMIT", "23MB"), ("ROLLBACK", "9MB")] {
        pipeline_to(&mut a, &["BEGIN", "SET work_mem = '21MB'"], b"T").await;
        pipeline_to(&mut a, &["SET work_mem = '23MB'", "SELECT $1::int"], b"T").await;
        pipeline(&mut a, &["SELECT $1::int", end]).await;
        assert_eq!(read_unkept(&b, WORK_MEM).await.as_deref(), Some("4MB"), "{end}: b sees a's setting");
        assert_eq!(raw_work_mem(&mut a).await, want, "after {end}");
        if end == "COMMIT" {
            // Back to 9MB for the ROLLBACK round, outside a block.
            pipeline(&mut a, &["SET work_mem = '9MB'"]).await;
        }
    }
    // A reset and a SET in one simple Query: the SET is kept (the session stays on its
    // connection, so b is not asked to read again).
    a.query("RESET ALL; SET work_mem = '15MB'").await.expect("the query");
    assert_eq!(raw_work_mem(&mut a).await, "15MB", "the SET after RESET ALL");
    assert_eq!(p.metric(PINS).await, 1.0, "only the last unit pinned the session");
}

const PINS: &str = "sluice_session_pins_total{reason=\"session_command\"}";

/// A SET in a block a Flush left open (psycopg's pipeline mode asks for results with Flush
/// before its Sync): it belongs to the session once the Sync ends the block, not to whoever
/// gets the connection next. The block's units are kept and judged with the unit that ends
/// it. (First the next client read the session's setting; then the session was pinned.)
#[tokio::test(flavor = "multi_thread")]
async fn a_set_before_a_flush_follows_the_session_at_the_sync() {
    let c = Cluster::start(0).await;
    let p = one_connection(&c).await;
    let mut a = raw_login(p.port()).await;
    let b = p.connect().await;
    // A SET only prepared before a Flush (asyncpg's prepare) runs nothing: no pin.
    let mut prepare = BytesMut::new();
    messages::parse(&mut prepare, "", b"SET work_mem = '7MB'", &0i16.to_be_bytes());
    messages::describe(&mut prepare, b'S', "");
    messages::flush(&mut prepare);
    assert!(a.send(&prepare).await);
    for _ in 0..3 {
        a.recv(Duration::from_secs(20)).await.expect("ParseComplete, ParameterDescription, NoData");
    }
    let mut sync = BytesMut::new();
    messages::sync(&mut sync);
    assert!(a.send(&sync).await);
    assert_eq!(tags(&a.until_ready_frames(Duration::from_secs(20)).await.expect("the Sync")), "Z");
    assert_eq!(read_unkept(&b, WORK_MEM).await.as_deref(), Some("4MB"), "after a prepare-only Flush");
    for (statements, flushed) in [(&["SET work_mem = '9MB'"][..], 3), (&["SELECT 1", "SET work_mem = '11MB'"][..], 7)] {
        let mut out = BytesMut::new();
        for sql in statements {
            run_unnamed(&mut out, sql, &[]);
        }
        messages::flush(&mut out);
        assert!(a.send(&out).await);
        for _ in 0..flushed {
            a.recv(Duration::from_secs(20)).await.expect("the replies the Flush asked for");
        }
        let mut sync = BytesMut::new();
        messages::sync(&mut sync);
        assert!(a.send(&sync).await);
        let frames = a.until_ready_frames(Duration::from_secs(20)).await.expect("the Sync's answer");
        assert_eq!(tags(&frames), "Z");
    }
    // The blocks are judged whole at their Sync: a's SETs are recorded, b reads its own value
    // on the only server connection, and no session is pinned.
    assert_eq!(read_unkept(&b, WORK_MEM).await.as_deref(), Some("4MB"), "b after a's blocks");
    assert_eq!(raw_work_mem(&mut a).await, "11MB", "a's SET after the Sync");
    let pins = p.session_pins().await;
    assert!(pins.is_empty(), "a session was pinned: {pins:?}");
}

/// Statements that stream in after their unit began (the client's first write went on before
/// the rest arrived; psycopg flushes each statement of a pipeline as it queues it): they are
/// judged with the unit. A SET among them follows its session, alone or inside a block, and
/// pins nothing; b, which shares the only server connection, reads its own value. Before, the
/// session was pinned for any SET that streamed in, or (earlier) the next client read it.
#[tokio::test(flavor = "multi_thread")]
async fn a_set_streamed_into_a_running_unit_follows_its_session_without_a_pin() {
    let c = Cluster::start(0).await;
    let p = one_connection(&c).await;
    let mut a = raw_login(p.port()).await;
    let b = p.connect().await;
    let cases: [(&str, &[&str], &str); 3] = [
        ("SELECT pg_sleep(0.5)", &["SET work_mem = '13MB'"], "13MB"),
        ("BEGIN", &["SET work_mem = '15MB'", "SELECT pg_sleep(0.2)", "COMMIT"], "15MB"),
        ("BEGIN", &["SET work_mem = '17MB'", "ROLLBACK"], "15MB"),
    ];
    for (first, rest, want) in cases {
        let frames = stream_in(&mut a, first, rest).await;
        assert!(!tags(&frames).contains('E'), "{first} {rest:?}: {}", tags(&frames));
        assert_eq!(read_unkept(&b, WORK_MEM).await.as_deref(), Some("4MB"), "b after {rest:?}");
        assert_eq!(raw_work_mem(&mut a).await, want, "a after {rest:?}");
    }
    let pins = p.session_pins().await;
    assert!(pins.is_empty(), "a session was pinned: {pins:?}");
}

/// Past what sluice keeps of a streaming unit (1 MiB of messages), a SET that streams in is
/// not recorded: the session keeps its connection rather than hand it on with the setting.
#[tokio::test(flavor = "multi_thread")]
async fn a_set_streamed_in_past_the_keep_limit_keeps_its_connection() {
    let c = Cluster::start(0).await;
    let p = one_connection(&c).await;
    let mut a = raw_login(p.port()).await;
    let b = p.connect().await;
    // Eleven statements of 100 KB each (a comment), then the SET.
    let padded = format!("SELECT 1 /* {} */", "x".repeat(100_000));
    let mut rest: Vec<&str> = vec![padded.as_str(); 11];
    rest.push("SET work_mem = '13MB'");
    let frames = stream_in(&mut a, "SELECT pg_sleep(0.5)", &rest).await;
    assert!(!tags(&frames).contains('E'), "{}", tags(&frames));
    never_reads(&b, "4MB").await;
    assert_eq!(raw_work_mem(&mut a).await, "13MB", "a's SET");
    assert!(p.metrics_text().await.contains(PINS), "the session was not pinned");
}

/// `first` sent as an unsynced unit; once it runs, `rest` and a Sync stream into it. Every
/// answer up to ReadyForQuery.
async fn stream_in(a: &mut RawConn, first: &str, rest: &[&str]) -> Vec<sluice::protocol::Frame> {
    let mut out = BytesMut::new();
    run_unnamed(&mut out, first, &[]);
    assert!(a.send(&out).await);
    // The unit is running (its Execute was sent without a Sync) when the rest arrives.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut out = BytesMut::new();
    for sql in rest {
        run_unnamed(&mut out, sql, &[]);
    }
    messages::sync(&mut out);
    assert!(a.send(&out).await);
    a.until_ready_frames(Duration::from_secs(20)).await.expect("the unit's answers")
}

/// A session `a` (raw) and a client `b` of a proxy with one server connection per node over a
/// primary and a replica, the primary holding `t (id int)`; `a` has left a block open with
/// Flush on the replica: `set` and a read of the server's port, its replies read.
async fn flush_held_block_on_a_replica(set: &str) -> (Cluster, Proxy, RawConn, tokio_postgres::Client) {
    let c = Cluster::start(1).await;
    c.psql("CREATE TABLE t (id int)").await;
    c.wait_replayed().await;
    let admin = ("", "admin_listen", "\"127.0.0.1:0\"");
    let p = Proxy::builder()
        .cluster(&c)
        .pool_size(1)
        .pool_mode("transaction")
        .monitor_interval("100ms")
        .set(admin.0, admin.1, admin.2)
        .start()
        .await;
    p.wait_topology(1, 1).await;
    let mut a = raw_login(p.port()).await;
    let b = p.connect().await;
    let mut out = BytesMut::new();
    run_unnamed(&mut out, set, &[]);
    run_unnamed(&mut out, "SELECT inet_server_port()::text", &[]);
    messages::flush(&mut out);
    assert!(a.send(&out).await);
    let mut got = Vec::new();
    for _ in 0..7 {
        got.push(a.recv(Duration::from_secs(20)).await.expect("the Flush block's replies"));
    }
    assert_eq!(tags(&got), "12C12DC");
    let primary = c.primary_port().to_string();
    assert_ne!(first_column(&got[5]), Some(primary), "the block should have run on the replica");
    (c, p, a, b)
}

/// `sql` as a simple Query, its answers up to ReadyForQuery.
async fn simple(a: &mut RawConn, sql: &str) -> Vec<sluice::protocol::Frame> {
    let mut q = BytesMut::new();
    messages::query(&mut q, sql);
    assert!(a.send(&q).await);
    a.until_ready_frames(Duration::from_secs(20)).await.expect("the Query's answers")
}

/// A SET in a Flush-held block on a replica, then a write: sluice ends the block on the
/// replica (the Sync it sends there commits the SET) and runs the write on the primary. The
/// SET is the session's from then on, on the primary too; the replica's connection, which the
/// next client gets, does not carry it.
#[tokio::test(flavor = "multi_thread")]
async fn a_set_in_a_flush_held_block_closed_for_a_write_follows_the_session() {
    let (_c, _p, mut a, b) = flush_held_block_on_a_replica("SET work_mem = '9MB'").await;
    let write = "INSERT INTO t VALUES (1) RETURNING current_setting('work_mem'), inet_server_port()::text";
    let frames = simple(&mut a, write).await;
    assert_eq!(tags(&frames), "TDCZ", "the write");
    assert_eq!(first_column(&frames[1]).as_deref(), Some("9MB"), "the write on the primary saw a's SET");
    assert_eq!(read_unkept(&b, WORK_MEM).await.as_deref(), Some("4MB"), "b got a's SET with the replica's connection");
    assert_eq!(raw_work_mem(&mut a).await, "9MB", "a's read after the write");
}

/// The same, with a setting sluice cannot record (longer than the session history holds):
/// the write that follows is not run without it. The client gets `0A000` saying the setting
/// is gone, the replica's connection is reset before the next client gets it, and the session
/// goes on without the setting, as the error said.
#[tokio::test(flavor = "multi_thread")]
async fn a_setting_a_flush_held_block_cannot_carry_to_the_primary_fails_the_write() {
    let set = format!("SET my.big = '{}'", "x".repeat(70_000));
    let (c, _p, mut a, b) = flush_held_block_on_a_replica(&set).await;
    let frames = simple(&mut a, "INSERT INTO t VALUES (1)").await;
    assert_eq!(tags(&frames), "EZ", "the write is refused");
    let error = String::from_utf8_lossy(frames[0].body()).into_owned();
    assert!(error.contains("0A000"), "{error}");
    assert_eq!(c.psql("SELECT count(*) FROM t").await, "0", "the write ran");
    const BIG: &str = "SELECT coalesce(length(current_setting('my.big', true)), 0)::text";
    assert_eq!(read_unkept(&b, BIG).await.as_deref(), Some("0"), "b got a's setting with the replica's connection");
    assert_eq!(raw_value(&mut a, BIG).await, "0", "a goes on without the setting, as it was told");
    assert_eq!(tags(&simple(&mut a, "INSERT INTO t VALUES (2)").await), "CZ", "the session goes on");
}

/// Blocks split by Flush (psycopg's pipeline asks for results with Flush before its Sync):
/// each piece's replies arrive before the next piece is sent, the last piece ends with a Sync.
/// What lasts is what lasts on PostgreSQL itself (a direct connection runs the same pieces):
/// a committed block's SET, not a rolled-back or failed one's; b, on the only server
/// connection, reads its own value throughout, and no session is pinned.
#[tokio::test(flavor = "multi_thread")]
async fn a_block_split_by_flushes_keeps_its_set_only_if_it_commits() {
    let c = Cluster::start(0).await;
    let p = one_connection(&c).await;
    let (mut a, mut direct) = (raw_login(p.port()).await, raw_login(c.primary_port()).await);
    let b = p.connect().await;
    let cases: [(&[&[&str]], &str); 5] = [
        (&[&["BEGIN", "SET work_mem = '7MB'"], &["SELECT 1"], &["COMMIT"]], "7MB"),
        (&[&["BEGIN", "SET work_mem = '9MB'"], &["ROLLBACK"]], "7MB"),
        // An error rolls back the implicit block up to the Sync.
        (&[&["SET work_mem = '11MB'"], &["SELECT 1/0"], &["SET work_mem = '13MB'"]], "7MB"),
        (&[&["SET work_mem = '15MB'"], &["SELECT 1"]], "15MB"),
        (&[&["SELECT 1"], &["BEGIN", "SET work_mem = '17MB'", "COMMIT"], &[]], "17MB"),
    ];
    for (pieces, want) in cases {
        for conn in [&mut direct, &mut a] {
            flushed_pieces(conn, pieces).await;
        }
        assert_eq!(raw_work_mem(&mut direct).await, want, "{pieces:?} on PostgreSQL itself");
        assert_eq!(read_unkept(&b, WORK_MEM).await.as_deref(), Some("4MB"), "{pieces:?}: b");
        assert_eq!(raw_work_mem(&mut a).await, want, "{pieces:?} through sluice");
    }
    let pins = p.session_pins().await;
    assert!(pins.is_empty(), "a session was pinned: {pins:?}");
}

/// A block a Flush left open, ended by simple Queries instead of a Sync (psycopg leaving
/// pipeline mode sends its next statement as a Query): PostgreSQL runs the Query in the block's
/// transaction, so the Query's end commits what the block set, a ROLLBACK in it undoes it and
/// an error in it rolls it back. sluice judges the block with the Query: what lasts is what
/// lasts on PostgreSQL itself, b on the only server connection reads its own value, and no
/// session is pinned.
#[tokio::test(flavor = "multi_thread")]
async fn a_flush_held_block_ended_by_a_query_keeps_its_set_as_postgresql_does() {
    let c = Cluster::start(0).await;
    let p = one_connection(&c).await;
    let (mut a, mut direct) = (raw_login(p.port()).await, raw_login(c.primary_port()).await);
    let b = p.connect().await;
    let cases: [(&[&str], &[&str], &str); 6] = [
        (&["SET work_mem = '7MB'"], &["SELECT 1"], "7MB"),
        (&["BEGIN", "SET work_mem = '9MB'"], &["ROLLBACK"], "7MB"),
        (&["BEGIN", "SET work_mem = '11MB'"], &["COMMIT"], "11MB"),
        (&["SET work_mem = '13MB'"], &["SELECT 1/0"], "11MB"),
        (&["SET work_mem = '15MB'"], &["SET work_mem = '17MB'"], "17MB"),
        // The Query leaves the block open; the next one commits it.
        (&["BEGIN", "SET work_mem = '19MB'"], &["SELECT 1", "COMMIT"], "19MB"),
    ];
    for (flushed, queries, want) in cases {
        for conn in [&mut direct, &mut a] {
            flush_pieces(conn, &[flushed]).await;
            for sql in queries {
                simple(conn, sql).await;
            }
        }
        assert_eq!(raw_work_mem(&mut direct).await, want, "{flushed:?} {queries:?} on PostgreSQL itself");
        assert_eq!(read_unkept(&b, WORK_MEM).await.as_deref(), Some("4MB"), "{flushed:?} {queries:?}: b");
        assert_eq!(raw_work_mem(&mut a).await, want, "{flushed:?} {queries:?} through sluice");
    }
    let pins = p.session_pins().await;
    assert!(pins.is_empty(), "a session was pinned: {pins:?}");
}

/// Each piece but the last sent with a Flush, its replies read (up to an error, after which
/// the server discards everything up to the Sync); the last piece with the Sync.
async fn flushed_pieces(conn: &mut RawConn, pieces: &[&[&str]]) {
    let Some((last, flushed)) = pieces.split_last() else { return };
    flush_pieces(conn, flushed).await;
    let mut out = BytesMut::new();
    for sql in *last {
        run_unnamed(&mut out, sql, &[]);
    }
    messages::sync(&mut out);
    assert!(conn.send(&out).await);
    conn.until_ready_frames(Duration::from_secs(20)).await.expect("the Sync's answers");
}

/// Each piece sent with a Flush and its replies read, up to an error.
async fn flush_pieces(conn: &mut RawConn, pieces: &[&[&str]]) {
    let mut failed = false;
    for piece in pieces {
        let mut out = BytesMut::new();
        for sql in *piece {
            run_unnamed(&mut out, sql, &[]);
        }
        messages::flush(&mut out);
        assert!(conn.send(&out).await);
        let mut completed = 0;
        while !failed && completed < piece.len() {
            let f = conn.recv(Duration::from_secs(20)).await.expect("the replies the Flush asked for");
            completed += usize::from(f.tag() == b'C');
            failed = f.tag() == b'E';
        }
    }
}
