//! Pipelines through sluice: tens of thousands of extended-protocol messages before one Sync
//! stream through with bounded memory (each answered in order), and an error inside a pipeline
//! reaches the client before its Sync and aborts the pipeline up to that Sync, with the
//! connection kept. Raw-protocol clients, real servers.

mod common;
mod load;

use std::time::Duration;

use bytes::BytesMut;
use common::{Cluster, Proxy};
use load::ext::{first_column, run_unnamed, tags};
use load::wire::RawConn;
use load::Target;
use sluice::auth::SaltCache;
use sluice::protocol::{messages, tag};

const WAIT: Duration = Duration::from_secs(10);
/// Statements in the long pipeline.
const PIPELINE: usize = 50_000;
/// Peak RSS allowed for the sluice process while the pipeline streams.
const RSS_LIMIT_KIB: u64 = 100 * 1024;

async fn raw(port: u16) -> RawConn {
    let mut c = RawConn::connect(port).await.expect("connect");
    c.login(&Target::test_user(port), &SaltCache::default()).await.expect("login");
    c
}

/// 50,000 Parse/Bind/Execute, then one Sync, written while the answers are read: every
/// statement answers in order, then one ReadyForQuery; sluice's memory stays bounded.
#[tokio::test(flavor = "multi_thread")]
async fn fifty_thousand_statements_before_one_sync_stream_through() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(2).spawn_process().await;
    let c1 = raw(p.port()).await;
    let (mut reader, mut writer) = c1.split();
    let write = tokio::spawn(async move {
        let mut out = BytesMut::new();
        for i in 0..PIPELINE {
            run_unnamed(&mut out, "SELECT $1::int", &[Some(&i.to_string())]);
            if out.len() > 64 * 1024 {
                assert!(writer.send(&out.split()).await, "write failed at statement {i}");
            }
        }
        messages::sync(&mut out);
        assert!(writer.send(&out).await, "write of the tail failed");
        writer
    });
    for i in 0..PIPELINE {
        let mut got = Vec::with_capacity(4);
        for _ in 0..4 {
            got.push(reader.recv(WAIT).await.unwrap_or_else(|e| panic!("statement {i}: {e}\n{}", p.log())));
        }
        assert_eq!(tags(&got), "12DC", "statement {i}");
        assert_eq!(first_column(&got[2]), Some(i.to_string()), "statement {i} answered out of order");
    }
    let z = reader.recv(WAIT).await.expect("the Sync's ReadyForQuery");
    assert_eq!((z.tag(), z.body()), (tag::READY_FOR_QUERY, &b"I"[..]));
    write.await.expect("writer");
    let hwm = p.peak_rss_kib();
    println!("{PIPELINE} statements through; sluice VmHWM {hwm} KiB");
    assert!(hwm < RSS_LIMIT_KIB, "sluice's peak RSS {hwm} KiB exceeds {RSS_LIMIT_KIB} KiB");
}

/// A pipeline whose 50th statement fails: the error arrives before the client sends its Sync
/// (after a Flush), the statements behind it are skipped up to the Sync, which is answered; the
/// session goes on.
#[tokio::test(flavor = "multi_thread")]
async fn an_error_in_a_pipeline_aborts_it_up_to_the_sync_and_the_connection_stays() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(1).start().await;
    let mut a = raw(p.port()).await;
    let mut out = BytesMut::new();
    for i in 0..100 {
        run_unnamed(&mut out, "SELECT 100 / $1::int", &[Some(if i == 49 { "0" } else { "1" })]);
    }
    messages::flush(&mut out);
    assert!(a.send(&out).await);
    let mut got = Vec::new();
    while got.last().map(|f: &sluice::protocol::Frame| f.tag()) != Some(tag::ERROR_RESPONSE) {
        got.push(a.recv(WAIT).await.expect("answers, then the error, before any Sync"));
    }
    // The division by the constant parameter fails while planning, at Bind.
    assert_eq!(tags(&got), format!("{}1E", "12DC".repeat(49)));
    assert_eq!(messages::decode_error(got.last().unwrap().body()).code, "22012");
    let mut sync = BytesMut::new();
    messages::sync(&mut sync);
    assert!(a.send(&sync).await);
    let rest = a.until_ready_frames(WAIT).await.expect("the Sync is answered");
    assert_eq!(tags(&rest), "Z", "nothing of the skipped statements");
    let mut q = BytesMut::new();
    messages::query(&mut q, "SELECT 'still here'");
    assert!(a.send(&q).await);
    let frames = a.until_ready_frames(WAIT).await.expect("the session goes on");
    assert_eq!(first_column(&frames[1]).as_deref(), Some("still here"));
}

/// asyncpg's pattern: Parse/Bind/Describe/Execute/Flush of a read (it runs on a replica and
/// its block stays open), then a write as a simple Query: sluice ends the block on the replica
/// and runs the write on the primary, 0 errors.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_after_a_flush_held_read_on_a_replica_runs_on_the_primary() {
    let (c, p) = Cluster::with_proxy(1, "CREATE TABLE t (id int)").await;
    let primary = c.primary_port().to_string();
    let mut a = raw(p.port()).await;
    let mut out = BytesMut::new();
    run_unnamed(&mut out, "SELECT inet_server_port()::text", &[]);
    messages::flush(&mut out);
    assert!(a.send(&out).await);
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(a.recv(WAIT).await.expect("the Flush block's replies"));
    }
    assert_eq!(tags(&got), "12DC");
    let read_on = first_column(&got[2]).expect("a port");
    assert_ne!(read_on, primary, "the read should have run on the replica");
    let mut q = BytesMut::new();
    messages::query(&mut q, "INSERT INTO t VALUES (1) RETURNING inet_server_port()::text");
    assert!(a.send(&q).await);
    let frames = a.until_ready_frames(WAIT).await.expect("the write's answer");
    let errors: Vec<_> =
        frames.iter().filter(|f| f.tag() == tag::ERROR_RESPONSE).map(|f| messages::decode_error(f.body())).collect();
    assert!(errors.is_empty(), "the write failed: {errors:?}");
    assert_eq!(tags(&frames), "TDCZ");
    assert_eq!(first_column(&frames[1]), Some(primary), "the write ran on the replica");
    assert_eq!(c.psql("SELECT count(*) FROM t").await, "1");
}

/// A client that pipelines statements without Sync or Flush and waits for an error before it
/// syncs (as PostgreSQL sends errors at once): the error reaches it, the Sync is answered.
#[tokio::test(flavor = "multi_thread")]
async fn an_error_reaches_a_client_that_waits_for_it_before_syncing() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(1).start().await;
    let mut a = raw(p.port()).await;
    let mut out = BytesMut::new();
    for i in 0..10 {
        run_unnamed(&mut out, "SELECT 100 / $1::int", &[Some(if i == 4 { "0" } else { "1" })]);
    }
    assert!(a.send(&out).await);
    let mut got = Vec::new();
    while got.last().map(|f: &sluice::protocol::Frame| f.tag()) != Some(tag::ERROR_RESPONSE) {
        got.push(a.recv(WAIT).await.expect("the answers and the error, with no Sync or Flush sent"));
    }
    assert_eq!(tags(&got), format!("{}1E", "12DC".repeat(4)));
    let mut sync = BytesMut::new();
    messages::sync(&mut sync);
    assert!(a.send(&sync).await);
    assert_eq!(tags(&a.until_ready_frames(WAIT).await.expect("the Sync is answered")), "Z");
}

/// Extended messages with neither Flush nor Sync are not answered, as on PostgreSQL (it holds
/// the replies until its output buffer fills): sluice adds no Flush of its own. The client's
/// Flush brings them, its Sync ends the block.
#[tokio::test(flavor = "multi_thread")]
async fn replies_wait_for_the_clients_flush_as_they_do_on_postgresql() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(1).start().await;
    let mut a = raw(p.port()).await;
    let mut out = BytesMut::new();
    run_unnamed(&mut out, "SELECT 42", &[]);
    assert!(a.send(&out).await);
    let early = a.recv(Duration::from_millis(500)).await;
    assert!(early.is_err(), "a reply before any Flush or Sync: {:?}", early.map(|f| f.tag() as char));
    let mut flush = BytesMut::new();
    messages::flush(&mut flush);
    assert!(a.send(&flush).await);
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(a.recv(WAIT).await.expect("the replies the Flush asked for"));
    }
    assert_eq!(tags(&got), "12DC");
    assert_eq!(first_column(&got[2]).as_deref(), Some("42"));
    let mut sync = BytesMut::new();
    messages::sync(&mut sync);
    assert!(a.send(&sync).await);
    assert_eq!(tags(&a.until_ready_frames(WAIT).await.expect("the Sync is answered")), "Z");
}

/// A pipelined INSERT answered after a Flush, its Sync sent only then: a read right after the
/// Sync sees the row (read-your-writes holds for a block whose end comes later), each time.
#[tokio::test(flavor = "multi_thread")]
async fn a_pipelined_write_whose_sync_comes_later_is_read_back() {
    let (_c, p) = Cluster::with_proxy(1, "CREATE TABLE t (id int)").await;
    let mut a = raw(p.port()).await;
    for i in 1..=20 {
        let mut out = BytesMut::new();
        run_unnamed(&mut out, "INSERT INTO t VALUES ($1::int)", &[Some(&i.to_string())]);
        messages::flush(&mut out);
        assert!(a.send(&out).await);
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(a.recv(WAIT).await.expect("the INSERT's replies"));
        }
        assert_eq!(tags(&got), "12C", "insert {i}");
        let mut sync = BytesMut::new();
        messages::sync(&mut sync);
        assert!(a.send(&sync).await);
        assert_eq!(tags(&a.until_ready_frames(WAIT).await.expect("the Sync")), "Z");
        let mut q = BytesMut::new();
        messages::query(&mut q, "SELECT count(*)::text FROM t");
        assert!(a.send(&q).await);
        let frames = a.until_ready_frames(WAIT).await.expect("the read");
        assert_eq!(first_column(&frames[1]), Some(i.to_string()), "the read after insert {i} missed it");
    }
}

/// Send `first` as an unsynced unit, let it start on its node, then stream `second` and the
/// Sync into it; return every frame up to ReadyForQuery, asserting the client saw no error.
async fn stream_second_into_first(port: u16, first: &str, second: &str) -> Vec<sluice::protocol::Frame> {
    let mut a = raw(port).await;
    let mut out = BytesMut::new();
    run_unnamed(&mut out, first, &[]);
    assert!(a.send(&out).await);
    // The unit runs before the rest arrives: the rest streams into it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut out = BytesMut::new();
    run_unnamed(&mut out, second, &[]);
    messages::sync(&mut out);
    assert!(a.send(&out).await);
    let frames = a.until_ready_frames(WAIT).await.expect("the pipeline's answers");
    let errors: Vec<_> =
        frames.iter().filter(|f| f.tag() == tag::ERROR_RESPONSE).map(|f| messages::decode_error(f.body())).collect();
    assert!(errors.is_empty(), "the client saw errors: {errors:?}");
    frames
}

/// A pipeline that starts with a read (on the replica) and streams in, before its Sync, a
/// statement the classifier takes for a read but that writes (a STABLE function calling a
/// VOLATILE one): the replica refuses it with 25006 before the client saw anything, so the
/// whole unit runs again on the primary, unseen: 0 errors, the row is on the primary.
#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_pipeline_refused_by_a_replica_runs_again_on_the_primary() {
    let setup = "CREATE TABLE t (id int);
        CREATE FUNCTION w(i int) RETURNS int LANGUAGE plpgsql VOLATILE AS $$ BEGIN INSERT INTO t VALUES (i); RETURN i; END $$;
        CREATE FUNCTION looks_read_only(i int) RETURNS int LANGUAGE plpgsql STABLE AS $$ BEGIN RETURN w(i); END $$;";
    let (c, p) = Cluster::with_proxy(1, setup).await;
    let frames = stream_second_into_first(p.port(), "SELECT 1", "SELECT looks_read_only(7)").await;
    assert_eq!(tags(&frames), "12DC12DCZ");
    assert_eq!(first_column(&frames[6]).as_deref(), Some("7"));
    assert_eq!(c.psql("SELECT count(*) FROM t WHERE id = 7").await, "1");
}

/// COPY FROM STDIN inside a streamed unit: a read, then (streamed in) the COPY and its Sync;
/// the CopyInResponse comes, the data goes through, the copy's Sync ends the unit.
#[tokio::test(flavor = "multi_thread")]
async fn copy_inside_a_streamed_unit() {
    let c = Cluster::start(0).await;
    c.psql("CREATE TABLE c (v text)").await;
    let p = Proxy::builder().cluster(&c).pool_size(1).start().await;
    let mut a = raw(p.port()).await;
    let mut out = BytesMut::new();
    run_unnamed(&mut out, "SELECT 1", &[]);
    assert!(a.send(&out).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut out = BytesMut::new();
    run_unnamed(&mut out, "COPY c FROM STDIN", &[]);
    messages::sync(&mut out);
    assert!(a.send(&out).await);
    let mut got = Vec::new();
    while got.last().map(|f: &sluice::protocol::Frame| f.tag()) != Some(tag::COPY_IN_RESPONSE) {
        got.push(a.recv(WAIT).await.expect("the read's answer, then CopyInResponse"));
    }
    assert_eq!(tags(&got), "12DC12G");
    let mut out = BytesMut::new();
    load::ext::copy_data(&mut out, b"a\nb\n");
    out.extend_from_slice(&[tag::COPY_DONE, 0, 0, 0, 4]);
    messages::sync(&mut out);
    assert!(a.send(&out).await);
    assert_eq!(tags(&a.until_ready_frames(WAIT).await.expect("the copy's end")), "CZ");
    assert_eq!(c.psql("SELECT count(*) FROM c").await, "2");
}

/// A message over `limits.max_message_bytes` arriving while a unit streams: FATAL 54000.
#[tokio::test(flavor = "multi_thread")]
async fn an_oversize_message_while_a_unit_streams_gives_54000() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(1).max_message_bytes(64 * 1024).start().await;
    let mut a = raw(p.port()).await;
    let mut out = BytesMut::new();
    run_unnamed(&mut out, "SELECT 1", &[]);
    assert!(a.send(&out).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let big = format!("SELECT '{}'", "x".repeat(100 * 1024));
    let mut out = BytesMut::new();
    messages::parse(&mut out, "", big.as_bytes(), &0i16.to_be_bytes());
    assert!(a.send(&out).await);
    let error = loop {
        let f = a.recv(WAIT).await.expect("an error");
        if f.tag() == tag::ERROR_RESPONSE {
            break messages::decode_error(f.body());
        }
    };
    assert_eq!((error.severity.as_str(), error.code.as_str()), ("FATAL", "54000"), "{error:?}");
}

/// A Flush, then more statements with no Flush yet, and the client waits for what its Flush
/// asked for (as psycopg's pipeline does): those replies come, though a read's replies are
/// otherwise held back while a replica's refusal could still be retried unseen.
#[tokio::test(flavor = "multi_thread")]
async fn the_replies_a_flush_asked_for_come_while_more_statements_stream_in() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(1).start().await;
    let mut a = raw(p.port()).await;
    let mut out = BytesMut::new();
    run_unnamed(&mut out, "SELECT 1", &[]);
    messages::flush(&mut out);
    run_unnamed(&mut out, "SELECT 2", &[]);
    assert!(a.send(&out).await);
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(a.recv(WAIT).await.expect("the replies the Flush asked for"));
    }
    assert_eq!(tags(&got), "12DC");
    let mut sync = BytesMut::new();
    messages::sync(&mut sync);
    assert!(a.send(&sync).await);
    let rest = a.until_ready_frames(WAIT).await.expect("the rest, then the Sync's answer");
    assert_eq!(tags(&rest), "12DCZ");
    assert_eq!(first_column(&rest[2]).as_deref(), Some("2"));
}

/// A pipeline that began with a read on the replica meets a write before its Sync: the unit ends
/// before the write (nothing of it reached the replica), the write and the Sync run on the
/// primary, every reply in order, 0 errors.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_streamed_into_a_pipeline_on_a_replica_runs_on_the_primary() {
    let (c, p) = Cluster::with_proxy(1, "CREATE TABLE t (id int)").await;
    let primary = c.primary_port().to_string();
    let write = "INSERT INTO t VALUES (1) RETURNING inet_server_port()::text";
    let frames = stream_second_into_first(p.port(), "SELECT inet_server_port()::text", write).await;
    assert_eq!(tags(&frames), "12DC12DCZ");
    assert_ne!(first_column(&frames[2]), Some(primary.clone()), "the read should have run on the replica");
    assert_eq!(first_column(&frames[6]), Some(primary), "the write ran on the replica");
    assert_eq!(c.psql("SELECT count(*) FROM t").await, "1");
}

/// Drivers parse every query as the unnamed statement (psycopg, node-postgres, pgjdbc before
/// its prepare threshold). A read parsed and bound in one unit is routed by what it is, not by
/// the write the unnamed statement held before: it runs on the replica once that has caught up.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_reusing_the_unnamed_statement_of_a_write_runs_on_a_replica() {
    let (c, p) = Cluster::with_proxy(1, "CREATE TABLE t (id int)").await;
    let primary = c.primary_port().to_string();
    let mut a = raw(p.port()).await;
    let run = |sql: &'static str| {
        let mut out = BytesMut::new();
        run_unnamed(&mut out, sql, &[]);
        messages::sync(&mut out);
        out
    };
    let write = run("INSERT INTO t VALUES (1)");
    let read = run("SELECT inet_server_port()::text");
    // The read goes to the replica once sluice has seen it replay the write (its monitor's
    // next look): each round writes, then reads, so the read always reuses a write's name.
    for _ in 0..50 {
        assert!(a.send(&write).await);
        let frames = a.until_ready_frames(WAIT).await.expect("the write's answer");
        assert_eq!(tags(&frames), "12CZ");
        c.wait_replayed().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(a.send(&read).await);
        let frames = a.until_ready_frames(WAIT).await.expect("the read's answer");
        assert_eq!(tags(&frames), "12DCZ");
        if first_column(&frames[2]) != Some(primary.clone()) {
            return;
        }
    }
    panic!("the read always ran on the primary");
}

/// A Flush with nothing in flight and a simple Query behind it, in one write (psycopg leaving
/// pipeline mode asks for results with a Flush, then runs its next statement at once): the
/// Flush gets no reply, as on PostgreSQL, and the Query its answer: the Flush's unit, which
/// has nothing to wait for once the Query is set aside for its own routing, ends at once
/// instead of waiting on the server. Inside a block (the connection held) and outside one.
#[tokio::test(flavor = "multi_thread")]
async fn a_flush_with_nothing_in_flight_and_a_query_in_one_write_answer_the_query() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(1).start().await;
    let mut a = raw(p.port()).await;
    let mut begin = BytesMut::new();
    messages::query(&mut begin, "BEGIN");
    assert!(a.send(&begin).await);
    assert_eq!(tags(&a.until_ready_frames(WAIT).await.expect("BEGIN")), "CZ");
    for (round, status) in [(1, b"T"), (2, b"I"), (3, b"I"), (4, b"I")] {
        let mut out = BytesMut::new();
        messages::flush(&mut out);
        messages::query(&mut out, if round == 2 { "COMMIT" } else { "SELECT 1" });
        assert!(a.send(&out).await);
        let frames = a.until_ready_frames(WAIT).await.unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(!tags(&frames).contains('E'), "round {round}: {}", tags(&frames));
        assert_eq!(frames.last().unwrap().body(), status, "round {round}: the status");
    }
}

/// A Parse sluice answers itself (the pooled connection has the statement already: prepared by
/// another client) in the middle of a pipeline keeps its place among the server's replies.
/// Written ahead of the replies before it, psycopg's pipeline (which prepares a statement on its
/// sixth run, mid-pipeline) paired every later result with the wrong statement and then waited
/// for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_parse_sluice_answers_mid_pipeline_keeps_its_place() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(1).start().await;
    let shared: &[u8] = b"SELECT 'shared' AS v";
    let mut a = raw(p.port()).await;
    let mut out = BytesMut::new();
    messages::parse(&mut out, "a1", shared, &[0, 0]);
    messages::sync(&mut out);
    assert!(a.send(&out).await);
    assert_eq!(tags(&a.until_ready_frames(WAIT).await.expect("a's Parse")), "1Z");
    // The one pooled connection now has the statement: b's Parse of it is answered by sluice.
    let mut b = raw(p.port()).await;
    let no_params_text_results = [0u8; 6];
    for round in 0..3 {
        let mut out = BytesMut::new();
        for i in 0..4 {
            messages::parse(&mut out, "", format!("SELECT {i}").as_bytes(), &[0, 0]);
            messages::bind_text(&mut out, &[]);
            messages::execute(&mut out, "", 0);
        }
        let name = format!("b{round}");
        messages::parse(&mut out, &name, shared, &[0, 0]);
        messages::bind_renamed(&mut out, b"", &name, &no_params_text_results);
        messages::execute(&mut out, "", 0);
        messages::sync(&mut out);
        assert!(b.send(&out).await);
        let frames = b.until_ready_frames(WAIT).await.expect("b's pipeline");
        assert_eq!(tags(&frames), "12DC12DC12DC12DC12DCZ", "round {round}: {frames:?}");
        assert_eq!(first_column(&frames[18]).as_deref(), Some("shared"));
    }
}
