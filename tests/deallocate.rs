//! `DEALLOCATE <name>` of a protocol-level prepared statement: sluice prepares statements on
//! server connections under its own names, so the client's name is mapped, whether the
//! DEALLOCATE comes as a simple Query or through the extended protocol (psycopg sends it as an
//! unnamed Parse/Bind/Execute). Raw-protocol clients, a real server.

mod common;
mod load;

use std::time::Duration;

use bytes::BytesMut;
use common::{Cluster, Proxy};
use load::ext::{bind, first_column, run_unnamed, tags};
use load::wire::RawConn;
use load::Target;
use sluice::auth::SaltCache;
use sluice::protocol::{messages, tag, Frame};

const WAIT: Duration = Duration::from_secs(10);

async fn raw(port: u16) -> RawConn {
    let mut c = RawConn::connect(port).await.expect("connect");
    c.login(&Target::test_user(port), &SaltCache::default()).await.expect("login");
    c
}

/// Send `out`, read up to ReadyForQuery.
async fn exchange(c: &mut RawConn, out: &BytesMut) -> Vec<Frame> {
    assert!(c.send(out).await, "write failed");
    c.until_ready_frames(WAIT).await.expect("an answer up to ReadyForQuery")
}

/// Parse `name` as `sql` (one int parameter), Sync.
async fn prepare(c: &mut RawConn, name: &str, sql: &str) -> Vec<Frame> {
    let mut out = BytesMut::new();
    messages::parse(&mut out, name, sql.as_bytes(), &0i16.to_be_bytes());
    messages::sync(&mut out);
    exchange(c, &out).await
}

/// Bind `name` with `arg`, Execute, Sync.
async fn execute(c: &mut RawConn, name: &str, arg: &str) -> Vec<Frame> {
    let mut out = BytesMut::new();
    bind(&mut out, "", name, &[Some(arg)]);
    messages::execute(&mut out, "", 0);
    messages::sync(&mut out);
    exchange(c, &out).await
}

async fn simple(c: &mut RawConn, sql: &str) -> Vec<Frame> {
    let mut out = BytesMut::new();
    messages::query(&mut out, sql);
    exchange(c, &out).await
}

/// `sql` as the unnamed statement through the extended protocol (as psycopg sends DEALLOCATE).
async fn extended(c: &mut RawConn, sql: &str) -> Vec<Frame> {
    let mut out = BytesMut::new();
    run_unnamed(&mut out, sql, &[]);
    messages::sync(&mut out);
    exchange(c, &out).await
}

fn error_code(frames: &[Frame]) -> Option<String> {
    frames.iter().find(|f| f.tag() == tag::ERROR_RESPONSE).map(|f| messages::decode_error(f.body()).code)
}

fn command_tag(frames: &[Frame]) -> Option<String> {
    frames
        .iter()
        .find(|f| f.tag() == tag::COMMAND_COMPLETE)
        .map(|f| String::from_utf8_lossy(f.body()).trim_end_matches('\0').to_string())
}

async fn proxy(c: &Cluster) -> Proxy {
    // One server connection: every client's statements live on the same server session.
    Proxy::builder().cluster(c).pool_size(1).pool_mode("transaction").start().await
}

#[tokio::test(flavor = "multi_thread")]
async fn deallocate_as_a_simple_query_maps_the_client_name() {
    let c = Cluster::start(0).await;
    let p = proxy(&c).await;
    let mut a = raw(p.port()).await;
    assert_eq!(tags(&prepare(&mut a, "st1", "SELECT $1::int + 1").await), "1Z");
    let rows = execute(&mut a, "st1", "41").await;
    assert_eq!(first_column(&rows[1]).as_deref(), Some("42"));
    let done = simple(&mut a, "DEALLOCATE st1").await;
    assert_eq!((error_code(&done), command_tag(&done).as_deref()), (None, Some("DEALLOCATE")), "{}", tags(&done));
    assert_eq!(error_code(&execute(&mut a, "st1", "1").await).as_deref(), Some("26000"), "st1 is gone");
    assert_eq!(error_code(&simple(&mut a, "DEALLOCATE st1").await).as_deref(), Some("26000"), "twice");
    // The name is free again, for another text.
    assert_eq!(tags(&prepare(&mut a, "st1", "SELECT $1::int * 10").await), "1Z");
    assert_eq!(first_column(&execute(&mut a, "st1", "5").await[1]).as_deref(), Some("50"));
    let done = simple(&mut a, "deallocate prepare \"st1\";").await;
    assert_eq!(error_code(&done), None, "quoted, with PREPARE: {}", tags(&done));
}

#[tokio::test(flavor = "multi_thread")]
async fn deallocate_through_the_extended_protocol_maps_the_client_name() {
    let c = Cluster::start(0).await;
    let p = proxy(&c).await;
    let mut a = raw(p.port()).await;
    assert_eq!(tags(&prepare(&mut a, "_pg3_0", "SELECT $1::int + 2").await), "1Z");
    assert_eq!(first_column(&execute(&mut a, "_pg3_0", "1").await[1]).as_deref(), Some("3"));
    let done = extended(&mut a, "DEALLOCATE _pg3_0").await;
    assert_eq!(tags(&done), "12CZ", "DEALLOCATE answered like any statement");
    assert_eq!(command_tag(&done).as_deref(), Some("DEALLOCATE"));
    assert_eq!(error_code(&execute(&mut a, "_pg3_0", "1").await).as_deref(), Some("26000"), "gone");
    assert_eq!(error_code(&extended(&mut a, "DEALLOCATE _pg3_0").await).as_deref(), Some("26000"), "twice");
    assert_eq!(tags(&prepare(&mut a, "_pg3_0", "SELECT $1::int + 3").await), "1Z", "the name is free");
    assert_eq!(first_column(&execute(&mut a, "_pg3_0", "1").await[1]).as_deref(), Some("4"));
}

/// Two clients prepared the same text (one server-side statement on the shared connection):
/// one's DEALLOCATE takes its own name away, never the other's statement.
#[tokio::test(flavor = "multi_thread")]
async fn one_client_s_deallocate_leaves_another_s_statement_working() {
    let c = Cluster::start(0).await;
    let p = proxy(&c).await;
    let mut a = raw(p.port()).await;
    let mut b = raw(p.port()).await;
    let sql = "SELECT $1::int - 1";
    assert_eq!(tags(&prepare(&mut a, "mine", sql).await), "1Z");
    assert_eq!(tags(&prepare(&mut b, "theirs", sql).await), "1Z");
    assert_eq!(first_column(&execute(&mut a, "mine", "10").await[1]).as_deref(), Some("9"));
    assert_eq!(error_code(&simple(&mut a, "DEALLOCATE mine").await), None);
    for round in 0..3 {
        let rows = execute(&mut b, "theirs", "20").await;
        assert_eq!(error_code(&rows), None, "round {round}: b's statement survives a's DEALLOCATE");
        assert_eq!(first_column(&rows[1]).as_deref(), Some("19"));
    }
    assert_eq!(error_code(&execute(&mut a, "mine", "1").await).as_deref(), Some("26000"));
}
