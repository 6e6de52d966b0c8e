//! Cancel requests through sluice reach the server running the client's query.

mod common;

use std::time::{Duration, Instant};

use common::{expect_sqlstate, Cluster, Proxy};
use tokio_postgres::NoTls;

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_sleep_ends_with_57014_within_two_seconds() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(4).start().await;
    let client = p.connect().await;
    let token = client.cancel_token();

    let query = tokio::spawn(async move {
        let result = client.simple_query("SELECT pg_sleep(30)").await;
        (client, result, Instant::now())
    });
    // Let the query reach the server before cancelling it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cancelled_at = Instant::now();
    token.cancel_query(NoTls).await.expect("the cancel request failed");

    let (client, result, ended_at) = tokio::time::timeout(Duration::from_secs(5), query)
        .await
        .expect("the query was not cancelled within 5 s")
        .unwrap();
    let waited = ended_at.duration_since(cancelled_at);
    assert!(waited < Duration::from_secs(2), "cancel took {waited:?}");
    expect_sqlstate(result, "57014");

    // The session carries on.
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_for_an_idle_client_harms_nobody() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(1).start().await;
    let idle = p.connect().await;
    let busy = p.connect().await;
    // The idle client's key must not cancel the other client's query on the shared server.
    let busy_query = tokio::spawn(async move { busy.simple_query("SELECT pg_sleep(1)").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    idle.cancel_token().cancel_query(NoTls).await.unwrap();
    let result = busy_query.await.unwrap();
    assert!(result.is_ok(), "another client's cancel key cancelled this query: {result:?}");
}
