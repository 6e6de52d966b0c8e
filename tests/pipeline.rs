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
