//! When a server connection goes back to the pool, and what a client sees at the protocol's
//! transitions: a client that vanishes mid-statement (its reply must never reach the next
//! client), errors inside Flush-terminated blocks (the Sync is answered, Terminate closes),
//! Close without Sync, and a server connection that dies under a session (ERROR when the
//! session continues, FATAL and a close when it cannot). Raw-protocol clients, real servers.

mod common;
mod load;

use std::time::Duration;

use bytes::BytesMut;
use common::{Cluster, Proxy};
use load::ext::{bind, first_column, run_unnamed, tags};
use load::wire::RawConn;
use load::Target;
use sluice::auth::SaltCache;
use sluice::pgcluster::{Binaries, TEST_DATABASE, TEST_PASSWORD, TEST_USER};
use sluice::protocol::{messages, tag, Frame};

/// Every reply a test waits for comes within this (a hang fails the test instead).
const WAIT: Duration = Duration::from_secs(5);

async fn raw(port: u16) -> RawConn {
    let mut c = RawConn::connect(port).await.expect("connect");
    c.login(&Target::test_user(port), &SaltCache::default()).await.expect("login");
    c
}

fn msgs(build: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut b = BytesMut::new();
    build(&mut b);
    b
}

/// A simple query's whole answer.
async fn query(c: &mut RawConn, sql: &str) -> Vec<Frame> {
    assert!(c.send(&msgs(|b| messages::query(b, sql))).await, "send {sql}");
    c.until_ready_frames(WAIT).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The client asks for its own value and must get exactly that, nothing before or after.
async fn assert_own_answer(c: &mut RawConn, who: &str) {
    let frames = query(c, &format!("SELECT '{who}'::text")).await;
    assert_eq!(tags(&frames), "TDCZ", "{who} got someone else's messages: {frames:?}");
    assert_eq!(first_column(&frames[1]).as_deref(), Some(who));
}

fn psql_command(port: u16, timeout_secs: Option<&str>, sql: &str) -> tokio::process::Command {
    let psql = Binaries::locate().expect("PostgreSQL binaries").path("psql");
    let mut cmd = match timeout_secs {
        Some(t) => {
            let mut c = tokio::process::Command::new("timeout");
            c.args(["-s", "KILL", t]).arg(psql);
            c
        }
        None => tokio::process::Command::new(psql),
    };
    let dsn = format!("host=127.0.0.1 port={port} user={TEST_USER} dbname={TEST_DATABASE}");
    cmd.args(["-X", "-At", &dsn, "-c", sql]).env("PGPASSWORD", TEST_PASSWORD).env("PGCONNECT_TIMEOUT", "10");
    cmd.kill_on_drop(true);
    cmd
}

/// Rounds of the psql reproduction (`SLUICE_REPRO_ROUNDS`, default 6; run it with 100
/// to repeat the acceptance check).
fn repro_rounds() -> usize {
    std::env::var("SLUICE_REPRO_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(6)
}

/// The reproduction, with one pooled connection so every later client gets the one the
/// killed client used. Even rounds sleep past the drain limit (the connection is closed), odd
/// rounds finish within it (the connection is drained and reused).
#[tokio::test(flavor = "multi_thread")]
async fn a_client_killed_mid_query_never_leaks_its_reply() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(1).checkout_timeout("10s").start().await;
    for round in 0..repro_rounds() {
        let sleep = if round % 2 == 0 { "2" } else { "0.7" };
        let sql = format!("select 'A-private' as who, pg_sleep({sleep})");
        let status = psql_command(p.port(), Some("0.4"), &sql).status().await.expect("run timeout psql");
        assert!(!status.success(), "round {round}: the killed psql finished: {status}");
        for i in 1..=8 {
            let sql = format!("select 'client-{i}' as who, random() > 2 as f");
            let out = tokio::time::timeout(Duration::from_secs(30), psql_command(p.port(), None, &sql).output())
                .await
                .expect("psql hung")
                .expect("run psql");
            let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(got, format!("client-{i}|f"), "round {round} (sleep {sleep}), client {i}: stderr {err}");
        }
    }
}

/// node-postgres's cursor/stream error pattern: Parse/Bind/Describe/Flush, Execute/Flush, the
/// error arrives, then Sync: ReadyForQuery within one round trip; Terminate closes the socket.
/// Once with the error at Bind (the Execute/Flush already sent behind it), once while rows
/// stream from the Execute.
#[tokio::test(flavor = "multi_thread")]
async fn an_error_in_a_flush_block_ends_at_the_clients_sync_and_terminate_closes() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(2).start().await;
    let mut a = raw(p.port()).await;
    let cursor = |b: &mut BytesMut, sql: &str, param: &str| {
        messages::parse(b, "", sql.as_bytes(), &0i16.to_be_bytes());
        bind(b, "", "", &[Some(param)]);
        messages::describe(b, b'P', "");
        messages::flush(b);
    };
    // The error at Bind; the client does not wait before asking for rows.
    a.send(&msgs(|b| {
        cursor(b, "SELECT $1::int", "not a number");
        messages::execute(b, "", 100);
        messages::flush(b);
    }))
    .await;
    let got = [a.recv(WAIT).await.expect("ParseComplete"), a.recv(WAIT).await.expect("the Bind error")];
    assert_eq!(tags(&got), "1E");
    assert_eq!(messages::decode_error(got[1].body()).code, "22P02");
    a.send(&msgs(messages::sync)).await;
    let after = a.until_ready_frames(Duration::from_secs(2)).await.expect("the Sync is answered");
    assert_eq!(tags(&after), "Z", "one round trip, nothing else");

    // The error while rows stream.
    a.send(&msgs(|b| cursor(b, "SELECT 10 / ($1::int - g) FROM generate_series(1, 5) g", "3"))).await;
    let got = [a.recv(WAIT).await.unwrap(), a.recv(WAIT).await.unwrap(), a.recv(WAIT).await.unwrap()];
    assert_eq!(tags(&got), "12T");
    a.send(&msgs(|b| {
        messages::execute(b, "", 100);
        messages::flush(b);
    }))
    .await;
    let mut got = Vec::new();
    while got.last().map(Frame::tag) != Some(tag::ERROR_RESPONSE) {
        got.push(a.recv(WAIT).await.expect("rows, then the error, without a Sync"));
    }
    assert_eq!(tags(&got), "DDE");
    assert_eq!(messages::decode_error(got[2].body()).code, "22012");
    a.send(&msgs(messages::sync)).await;
    let after = a.until_ready_frames(Duration::from_secs(2)).await.expect("the Sync is answered");
    assert_eq!(tags(&after), "Z");
    assert_own_answer(&mut a, "after-the-error").await;
    a.send(&msgs(messages::terminate)).await;
    assert!(a.closed_within(Duration::from_secs(2)).await, "Terminate did not close the client socket");
}

/// Messages a client sends after an error and before its Sync are discarded, as PostgreSQL
/// does: the Sync gets exactly one ReadyForQuery, and nothing of the skipped messages leaks.
#[tokio::test(flavor = "multi_thread")]
async fn after_an_error_in_a_block_messages_up_to_sync_are_discarded() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(1).start().await;
    let mut a = raw(p.port()).await;
    a.send(&msgs(|b| {
        messages::parse(b, "", b"SELECT * FROM no_such_table", &0i16.to_be_bytes());
        bind(b, "", "", &[]);
        messages::describe(b, b'P', "");
        messages::flush(b);
    }))
    .await;
    let err = a.recv(WAIT).await.expect("the Parse error");
    assert_eq!(messages::decode_error(err.body()).code, "42P01");
    // The client did not wait for the error: more of the block, then a query, then Sync.
    a.send(&msgs(|b| {
        messages::execute(b, "", 0);
        messages::flush(b);
        run_unnamed(b, "SELECT 'skipped'", &[]);
        messages::query(b, "SELECT 'skipped too'");
        messages::sync(b);
    }))
    .await;
    let after = a.until_ready_frames(Duration::from_secs(2)).await.expect("the Sync is answered");
    assert_eq!(tags(&after), "Z");
    assert_own_answer(&mut a, "a").await;
    // The only server connection is clean for the next client.
    drop(a);
    let mut b = raw(p.port()).await;
    assert_own_answer(&mut b, "b").await;
}

/// Close without Sync, a Flush-held pipeline, a COPY and a big result, each abandoned (FIN or
/// RST): the single pooled connection serves the next client its own answer only.
#[tokio::test(flavor = "multi_thread")]
async fn abandoned_blocks_leave_nothing_for_the_next_client() {
    let c = Cluster::start(0).await;
    c.psql("CREATE TABLE sink (v text)").await;
    let p = Proxy::builder().cluster(&c).pool_size(1).start().await;
    type Abandon = fn(&mut BytesMut);
    let cases: &[(&str, Abandon, usize)] = &[
        (
            "Close of the unnamed portal, Flush",
            |b| {
                messages::close(b, b'P', "");
                messages::flush(b);
            },
            1,
        ),
        (
            "Close of a statement and a portal, no Sync, no Flush, then a query",
            |b| {
                messages::close(b, b'S', "");
                messages::close(b, b'P', "");
                messages::query(b, "SELECT 'mine'");
            },
            6,
        ),
        (
            "pipeline with Flush, no Sync",
            |b| {
                for i in 0..20 {
                    run_unnamed(b, "SELECT $1::text", &[Some(&format!("pipelined-{i}"))]);
                }
                messages::flush(b);
            },
            10,
        ),
        ("COPY FROM STDIN left open", |b| messages::query(b, "COPY sink FROM STDIN"), 1),
        ("a big result", |b| messages::query(b, "SELECT repeat('x', 1000) FROM generate_series(1, 50000)"), 50),
        ("a statement still running", |b| messages::query(b, "SELECT 'abandoned', pg_sleep(0.3)"), 0),
    ];
    for (i, (name, abandon, read)) in cases.iter().enumerate() {
        let mut a = raw(p.port()).await;
        a.send(&msgs(abandon)).await;
        for _ in 0..*read {
            a.recv(WAIT).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        if i % 2 == 0 {
            drop(a);
        } else {
            a.reset();
        }
        let mut b = raw(p.port()).await;
        assert_own_answer(&mut b, &format!("next-after-{i}")).await;
        let mut own = BytesMut::new();
        run_unnamed(&mut own, "SELECT $1::text", &[Some("extended")]);
        messages::sync(&mut own);
        b.send(&own).await;
        let frames = b.until_ready_frames(WAIT).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(tags(&frames), "12DCZ", "{name}: the next client got foreign messages: {frames:?}");
        assert_eq!(first_column(&frames[2]).as_deref(), Some("extended"), "{name}");
    }
}

/// A Terminate right behind an unfinished pipeline (no Sync, no Flush) closes the socket.
#[tokio::test(flavor = "multi_thread")]
async fn terminate_after_an_unfinished_pipeline_closes() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(1).start().await;
    let mut a = raw(p.port()).await;
    a.send(&msgs(|b| {
        run_unnamed(b, "SELECT 1", &[]);
        messages::terminate(b);
    }))
    .await;
    assert!(a.closed_within(Duration::from_secs(2)).await, "Terminate did not close the client socket");
    let mut b = raw(p.port()).await;
    assert_own_answer(&mut b, "b").await;
}

/// Terminate the backend running `marker`'s statement, directly on the primary.
async fn terminate_backend(c: &Cluster, marker: &str) {
    let sql = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid()"
    );
    for _ in 0..50 {
        if c.psql(&sql).await == "1" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no backend ran {marker}");
}

/// A backend terminated under an autocommit statement: the client gets ERROR (the server's
/// 57P01, saying the session continues) and ReadyForQuery, never FATAL; the next query works.
/// Under an open transaction the client keeps its connection too: ERROR and ReadyForQuery `E`,
/// `25P02` for what it sends until it ends the block (never autocommit on another connection),
/// ROLLBACK brings it back to idle. A pinned session cannot continue: FATAL, then the close.
#[tokio::test(flavor = "multi_thread")]
async fn a_terminated_backend_is_an_error_when_the_session_continues_else_fatal_and_close() {
    let c = Cluster::start(0).await;
    c.psql("CREATE TABLE sink (v text)").await;
    let p = Proxy::builder().cluster(&c).pool_size(2).start().await;
    let mut a = raw(p.port()).await;
    // A write (a read that lost its connection before any reply is retried unseen instead).
    let write = "INSERT INTO sink SELECT 'autocommit-victim' FROM pg_sleep(30)";
    a.send(&msgs(|b| messages::query(b, write))).await;
    terminate_backend(&c, "autocommit-victim").await;
    let frames = a.until_ready_frames(WAIT).await.expect("an error and ReadyForQuery");
    assert_eq!(tags(&frames), "EZ", "{frames:?}");
    let info = messages::decode_error(frames[0].body());
    assert_eq!((info.severity.as_str(), info.code.as_str()), ("ERROR", "57P01"), "{info:?}");
    assert!(info.message.contains("session continues"), "{}", info.message);
    assert_eq!(frames[1].body(), b"I");
    assert_own_answer(&mut a, "still-here").await;

    query(&mut a, "BEGIN").await;
    let (t, info) = error_of_terminated(&mut a, &c, "tx-victim").await;
    assert_eq!((t, info.severity.as_str(), info.code.as_str()), (tag::ERROR_RESPONSE, "ERROR", "57P01"));
    let z = a.recv(WAIT).await.expect("ReadyForQuery");
    assert_eq!((z.tag(), z.body()), (tag::READY_FOR_QUERY, &b"E"[..]), "the block is failed, not gone");
    let frames = query(&mut a, "INSERT INTO sink VALUES ('must-not-autocommit')").await;
    assert_eq!(tags(&frames), "EZ", "{frames:?}");
    assert_eq!(messages::decode_error(frames[0].body()).code, "25P02");
    assert_eq!(frames[1].body(), b"E");
    let frames = query(&mut a, "ROLLBACK").await;
    assert_eq!(tags(&frames), "CZ", "{frames:?}");
    assert_eq!(frames[1].body(), b"I");
    assert_own_answer(&mut a, "after-rollback").await;
    assert_eq!(c.psql("SELECT count(*) FROM sink WHERE v = 'must-not-autocommit'").await.trim(), "0");

    query(&mut a, "CREATE TEMP TABLE pin_me (x int)").await;
    let (t, info) = error_of_terminated(&mut a, &c, "pinned-victim").await;
    assert_eq!((t, info.severity.as_str(), info.code.as_str()), (tag::ERROR_RESPONSE, "FATAL", "57P01"));
    assert!(a.closed_within(Duration::from_secs(2)).await, "a FATAL must end the connection");
}

/// A COMMIT ends the block whatever happens to it (PostgreSQL answers a failed COMMIT with
/// ReadyForQuery `I`): one whose backend dies under it gets the ERROR and `I`, not `E` (a driver
/// would take its block as still open, and psycopg opens its next transaction as a savepoint in
/// it: every later statement got `25P02`). And a COMMIT after a loss noticed while the client
/// was idle gets that error, never the plain `ROLLBACK` tag that drivers take for a commit.
#[tokio::test(flavor = "multi_thread")]
async fn a_commit_that_loses_its_backend_is_an_error_and_ends_the_block() {
    let c = Cluster::start(0).await;
    c.psql(
        "CREATE TABLE doomed (v text);
         CREATE TABLE sink (v text);
         CREATE FUNCTION die_at_commit() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER die AFTER INSERT ON doomed DEFERRABLE INITIALLY DEFERRED
           FOR EACH ROW EXECUTE FUNCTION die_at_commit();",
    )
    .await;
    let p = Proxy::builder().cluster(&c).pool_size(2).start().await;
    let mut a = raw(p.port()).await;
    query(&mut a, "BEGIN").await;
    query(&mut a, "INSERT INTO doomed VALUES ('dies at commit')").await;
    let frames = query(&mut a, "COMMIT").await;
    assert_eq!(tags(&frames), "EZ", "{frames:?}");
    let info = messages::decode_error(frames[0].body());
    assert_eq!((info.severity.as_str(), info.code.as_str()), ("ERROR", "57P01"), "{info:?}");
    assert_eq!(frames[1].body(), b"I", "a COMMIT ends the block even when it fails");
    assert_own_answer(&mut a, "after-lost-commit").await;

    query(&mut a, "BEGIN").await;
    query(&mut a, "INSERT INTO sink VALUES ('idle-victim')").await;
    terminate_backend(&c, "idle-victim").await;
    let gone = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%idle-victim%' AND pid <> pg_backend_pid()";
    for _ in 0..100 {
        if c.psql(gone).await.trim() == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Whether sluice noticed the loss while the client was idle or notices it now, the COMMIT
    // must fail (it did not commit) and end the block.
    let frames = query(&mut a, "COMMIT").await;
    assert_eq!(tags(&frames), "EZ", "{frames:?}");
    assert_eq!(messages::decode_error(frames[0].body()).code, "57P01");
    assert_eq!(frames[1].body(), b"I");
    assert_own_answer(&mut a, "after-idle-loss").await;
    assert_eq!(c.psql("SELECT count(*) FROM doomed").await.trim(), "0");
    assert_eq!(c.psql("SELECT count(*) FROM sink").await.trim(), "0");
}

/// A unit the client ended with Flush (it waits for replies, its Sync not sent yet) whose
/// backend dies: the client gets the error alone, then one ReadyForQuery for its Sync, as
/// PostgreSQL answers an error in such a block. An extra ReadyForQuery sent with the error
/// made asyncpg (whose prepare is Parse/Describe/Flush) fail with "unexpected state" and close.
#[tokio::test(flavor = "multi_thread")]
async fn a_loss_in_a_block_ended_by_flush_is_answered_at_the_clients_sync() {
    let c = Cluster::start(0).await;
    c.psql("CREATE TABLE sink (v text)").await;
    let p = Proxy::builder().cluster(&c).pool_size(2).start().await;
    let mut a = raw(p.port()).await;
    // A write: a read that lost its connection before any reply would be retried unseen.
    let write = b"INSERT INTO sink SELECT 'flush-victim' FROM pg_sleep(30)";
    a.send(&msgs(|b| {
        messages::parse(b, "", write, &[0, 0]);
        messages::bind_text(b, &[]);
        messages::execute(b, "", 0);
        messages::flush(b);
    }))
    .await;
    terminate_backend(&c, "flush-victim").await;
    let mut f = a.recv(WAIT).await.expect("the error");
    while f.tag() != tag::ERROR_RESPONSE {
        assert!(matches!(f.tag(), b'1' | b'2'), "before the error: {f:?}");
        f = a.recv(WAIT).await.expect("the error");
    }
    assert_eq!(messages::decode_error(f.body()).code, "57P01");
    // What the client sends up to its Sync is discarded, as after any error in a block.
    a.send(&msgs(|b| {
        messages::bind_text(b, &[]);
        messages::execute(b, "", 0);
        messages::sync(b);
    }))
    .await;
    let frames = a.until_ready_frames(WAIT).await.expect("ReadyForQuery for the Sync");
    assert_eq!(tags(&frames), "Z", "{frames:?}");
    assert_eq!(frames[0].body(), b"I");
    assert_own_answer(&mut a, "after-flush-loss").await;
    assert_eq!(c.psql("SELECT count(*) FROM sink").await.trim(), "0");
}

/// Wait until no backend of the primary runs (or last ran) `marker`'s statement, then a little
/// more: time for sluice's watch of the held connection to see the close.
async fn wait_backend_gone(c: &Cluster, marker: &str) {
    let gone =
        format!("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%{marker}%' AND pid <> pg_backend_pid()");
    for _ in 0..100 {
        if c.psql(&gone).await.trim() == "0" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Send `sql` as the unnamed statement (Parse, Bind, Execute), then `end` (Sync or Flush).
async fn send_unnamed(a: &mut RawConn, sql: &str, end: fn(&mut BytesMut)) {
    a.send(&msgs(|b| {
        messages::parse(b, "", sql.as_bytes(), &[0, 0]);
        messages::bind_text(b, &[]);
        messages::execute(b, "", 0);
        end(b);
    }))
    .await;
}

/// Send `sql` as the unnamed statement, ended by Flush, and return the replies up to its
/// CommandComplete or ErrorResponse (the block stays open: the client sent no Sync).
async fn run_flushed(a: &mut RawConn, sql: &str) -> Vec<Frame> {
    send_unnamed(a, sql, messages::flush).await;
    let mut frames = Vec::new();
    loop {
        let f = a.recv(WAIT).await.expect("the statement's replies");
        let last = matches!(f.tag(), tag::COMMAND_COMPLETE | tag::ERROR_RESPONSE);
        frames.push(f);
        if last {
            return frames;
        }
    }
}

/// A primary with an empty table `sink`, sluice in front of it (two pooled connections), and
/// one raw client logged in.
async fn sink_and_client() -> (Cluster, Proxy, RawConn) {
    let c = Cluster::start(0).await;
    c.psql("CREATE TABLE sink (v text)").await;
    let p = Proxy::builder().cluster(&c).pool_size(2).start().await;
    let a = raw(p.port()).await;
    (c, p, a)
}

/// A write whose replies the client asked for with Flush (psycopg's pipeline, or a pipeline
/// whose replies the dying server flushed before its Sync) has not committed: the Sync does.
/// Its connection lost while the client waits: the client's Sync gets the error and `I`, as
/// PostgreSQL answers an implicit transaction that fails at its Sync. A bare ReadyForQuery here
/// was a lost write acknowledged (psycopg's pipeline took the row it returned as committed).
#[tokio::test(flavor = "multi_thread")]
async fn a_write_in_a_flush_held_block_lost_while_idle_fails_at_the_clients_sync() {
    let (c, _p, mut a) = sink_and_client().await;
    let frames = run_flushed(&mut a, "INSERT INTO sink VALUES ('held-write') RETURNING v").await;
    assert_eq!(tags(&frames), "12DC", "{frames:?}");
    terminate_backend(&c, "held-write").await;
    wait_backend_gone(&c, "held-write").await;
    a.send(&msgs(messages::sync)).await;
    let frames = a.until_ready_frames(WAIT).await.expect("the Sync's answer");
    assert_eq!(tags(&frames), "EZ", "the Sync must not pass for a commit: {frames:?}");
    let info = messages::decode_error(frames[0].body());
    assert_eq!((info.severity.as_str(), info.code.as_str()), ("ERROR", "57P01"), "{info:?}");
    assert!(info.message.contains("not committed"), "{}", info.message);
    assert_eq!(frames[1].body(), b"I");
    assert_eq!(c.psql("SELECT count(*) FROM sink").await.trim(), "0");
    assert_own_answer(&mut a, "after-held-write-loss").await;

    // The same block, with more of it sent after the loss: discarded up to the Sync.
    let frames = run_flushed(&mut a, "INSERT INTO sink VALUES ('held-write-2')").await;
    assert_eq!(tags(&frames), "12C", "{frames:?}");
    terminate_backend(&c, "held-write-2").await;
    wait_backend_gone(&c, "held-write-2").await;
    send_unnamed(&mut a, "INSERT INTO sink VALUES ('after-the-loss')", messages::sync).await;
    let frames = a.until_ready_frames(WAIT).await.expect("the Sync's answer");
    assert_eq!(tags(&frames), "EZ", "{frames:?}");
    assert_eq!(c.psql("SELECT count(*) FROM sink").await.trim(), "0", "nothing of the block may commit");
    assert_own_answer(&mut a, "after-second-loss").await;
}

/// A block that failed (the client has its error) whose connection is lost while the client
/// waits: what it sends up to its Sync is discarded, as the server would have, never run in
/// autocommit on a new connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_flush_held_block_lost_while_idle_still_discards_up_to_its_sync() {
    let (c, _p, mut a) = sink_and_client().await;
    let frames = run_flushed(&mut a, "SELECT 1 / (random() * 0)::int AS failed_block_victim").await;
    assert_eq!(tags(&frames), "12E", "{frames:?}");
    assert_eq!(messages::decode_error(frames[2].body()).code, "22012");
    terminate_backend(&c, "failed_block_victim").await;
    wait_backend_gone(&c, "failed_block_victim").await;
    send_unnamed(&mut a, "INSERT INTO sink VALUES ('must-be-discarded')", messages::sync).await;
    let frames = a.until_ready_frames(WAIT).await.expect("the Sync's answer");
    assert_eq!(tags(&frames), "Z", "{frames:?}");
    assert_eq!(frames[0].body(), b"I");
    assert_eq!(c.psql("SELECT count(*) FROM sink").await.trim(), "0");
    assert_own_answer(&mut a, "after-failed-block-loss").await;
}

/// A unit that began as a read may run again unseen on a new connection if its connection is
/// lost before any reply; not once a write streamed into it (its Sync may have committed it
/// before the loss): the client gets the loss's error at once, and the write is not run again.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_unit_that_a_write_streamed_into_is_not_run_again() {
    let (c, _p, mut a) = sink_and_client().await;
    a.send(&msgs(|b| {
        messages::parse(b, "", b"SELECT 'stream-read'", &[0, 0]);
        messages::bind_text(b, &[]);
        messages::execute(b, "", 0);
    }))
    .await;
    // The unit is running when the write comes: it streams into it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.send(&msgs(|b| {
        messages::parse(b, "", b"INSERT INTO sink SELECT 'streamed-write' FROM pg_sleep(30)", &[0, 0]);
        messages::bind_text(b, &[]);
        messages::execute(b, "", 0);
    }))
    .await;
    terminate_backend(&c, "streamed-write").await;
    // Run again, the write would sleep 30 s on a new connection before any answer.
    // What the server sent before it died (the read's replies) may come first.
    let mut f = a.recv(WAIT).await.expect("the loss's error at once, not a second run of the write");
    while f.tag() != tag::ERROR_RESPONSE {
        assert!(matches!(f.tag(), b'1' | b'2' | b'D' | b'C'), "before the error: {f:?}");
        f = a.recv(WAIT).await.expect("the loss's error at once, not a second run of the write");
    }
    assert_eq!(messages::decode_error(f.body()).code, "57P01");
    a.send(&msgs(messages::sync)).await;
    let frames = a.until_ready_frames(WAIT).await.expect("the Sync's answer");
    assert_eq!(tags(&frames), "Z", "{frames:?}");
    assert_eq!(c.psql("SELECT count(*) FROM sink").await.trim(), "0");
    assert_own_answer(&mut a, "after-streamed-write-loss").await;
}

/// Send `signal` to the server process `pid` (the tests run as root or as the servers' user).
async fn signal(name: &str, pid: &str) {
    let status =
        tokio::process::Command::new("kill").arg(format!("-{name}")).arg(pid).status().await.expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

/// A lone BEGIN whose connection dies before it answers changed nothing: it runs again on a new
/// connection, unseen, and the client's block is open there. Failed instead (an ERROR and `I`),
/// asyncpg kept its transaction object as the connection's open one (it records it before
/// sending BEGIN, and drops it only at the block's end), and every later `transaction()` of that
/// connection became a SAVEPOINT outside any block: `25P01` for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_begin_whose_connection_dies_before_answering_runs_again() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(1).start().await;
    let mut a = raw(p.port()).await;
    // The one pooled connection, found by what it ran last.
    query(&mut a, "SELECT 'begin-victim-warm'").await;
    let pid = c
        .psql("SELECT pid FROM pg_stat_activity WHERE query LIKE '%begin-victim-warm%' AND pid <> pg_backend_pid()")
        .await;
    let pid = pid.trim().to_string();
    assert!(pid.parse::<u32>().is_ok(), "the pooled connection's backend: {pid:?}");
    // Stopped, it takes the BEGIN into its socket and answers nothing; terminated while it is
    // stopped, it dies as it wakes, before it runs what it was sent.
    signal("STOP", &pid).await;
    assert!(a.send(&msgs(|b| messages::query(b, "BEGIN"))).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal("TERM", &pid).await;
    signal("CONT", &pid).await;
    let frames = a.until_ready_frames(WAIT).await.expect("BEGIN's answer");
    assert_eq!(tags(&frames), "CZ", "{frames:?}");
    assert_eq!(frames[1].body(), b"T", "the block is open");
    let frames = query(&mut a, "SELECT pg_backend_pid()::text").await;
    assert_eq!(tags(&frames), "TDCZ", "{frames:?}");
    assert_ne!(first_column(&frames[1]).as_deref(), Some(pid.as_str()), "on a new connection");
    assert_eq!(frames[3].body(), b"T");
    assert_eq!(tags(&query(&mut a, "ROLLBACK").await), "CZ");
    assert_own_answer(&mut a, "after-begin-rerun").await;
}

/// Run a long statement marked `marker`, terminate its backend, and return the message that
/// reports it (its tag and decoded fields; a RowDescription sent before it is skipped).
async fn error_of_terminated(a: &mut RawConn, c: &Cluster, marker: &str) -> (u8, messages::ErrorInfo) {
    a.send(&msgs(|b| messages::query(b, &format!("SELECT '{marker}', pg_sleep(30)")))).await;
    terminate_backend(c, marker).await;
    let mut f = a.recv(WAIT).await.expect("the error");
    if f.tag() == b'T' {
        // The row description goes out before the statement runs.
        f = a.recv(WAIT).await.expect("the error");
    }
    (f.tag(), messages::decode_error(f.body()))
}

/// tokio-postgres's COPY (Bind/Execute/Sync, the Sync ignored by the server in copy mode, then
/// CopyData/CopyDone and a fresh Sync): the connection is provably clean afterwards and is
/// reused, not drained in vain and closed.
#[tokio::test(flavor = "multi_thread")]
async fn an_extended_copy_leaves_its_connection_reusable() {
    use futures_util::SinkExt;
    let c = Cluster::start(0).await;
    c.psql("CREATE TABLE sink (v text)").await;
    let p = Proxy::builder().cluster(&c).pool_size(1).start().await;
    let client = p.connect().await;
    let pid = |row: tokio_postgres::Row| row.get::<_, i32>(0);
    let before = pid(client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap());
    let sink = client.copy_in("COPY sink FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"one\ntwo\n")).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    let after = pid(client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap());
    assert_eq!(before, after, "the server connection was closed after a clean COPY");
}
