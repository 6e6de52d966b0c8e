//! tokio-postgres through sluice: the simple and extended protocols, pipelining, large values.

mod common;

use common::{Cluster, Proxy};
use futures_util::future::join_all;
use tokio_postgres::SimpleQueryMessage;

async fn primary_with_proxy() -> (Cluster, Proxy) {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(10).pool_mode("transaction").start().await;
    (c, p)
}

fn simple_rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<String>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).unwrap_or("NULL").to_string()).collect()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn simple_queries_return_every_statement_s_rows() {
    let (_c, p) = primary_with_proxy().await;
    let client = p.connect().await;
    let messages =
        client.simple_query("SELECT 1 AS one; SELECT 'two', NULL; SELECT generate_series(1, 3)").await.unwrap();
    let rows = simple_rows(&messages);
    assert_eq!(
        rows,
        vec![
            vec!["1".to_string()],
            vec!["two".to_string(), "NULL".to_string()],
            vec!["1".to_string()],
            vec!["2".to_string()],
            vec!["3".to_string()],
        ]
    );
    client.batch_execute("CREATE TABLE kv (k int PRIMARY KEY, v text); INSERT INTO kv VALUES (1, 'a')").await.unwrap();
    let rows = simple_rows(&client.simple_query("SELECT v FROM kv WHERE k = 1").await.unwrap());
    assert_eq!(rows, vec![vec!["a".to_string()]]);
}

#[tokio::test(flavor = "multi_thread")]
async fn extended_queries_bind_parameters_and_reuse_statements() {
    let (_c, p) = primary_with_proxy().await;
    let client = p.connect().await;
    let row = client.query_one("SELECT $1::int + $2::int, $3::text || '!'", &[&40i32, &2i32, &"hi"]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(row.get::<_, String>(1), "hi!");

    let none: Option<i64> = client.query_one("SELECT $1::bigint", &[&None::<i64>]).await.unwrap().get(0);
    assert_eq!(none, None);

    let stmt = client.prepare("SELECT $1::int * 2").await.unwrap();
    for i in 0..20i32 {
        let doubled: i32 = client.query_one(&stmt, &[&i]).await.unwrap().get(0);
        assert_eq!(doubled, i * 2);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_queries_all_answer_in_order() {
    let (_c, p) = primary_with_proxy().await;
    let client = p.connect().await;
    let stmt = client.prepare("SELECT $1::int, pg_backend_pid()").await.unwrap();
    let futures = (0..50i32).map(|i| {
        let (client, stmt) = (&client, &stmt);
        async move { client.query_one(stmt, &[&i]).await }
    });
    let results = join_all(futures).await;
    for (i, r) in (0..50i32).zip(results) {
        let row = r.unwrap_or_else(|e| panic!("pipelined query {i} failed: {e}"));
        assert_eq!(row.get::<_, i32>(0), i);
    }
    // Mixed: simple and extended in flight together.
    let (a, b) = tokio::join!(client.simple_query("SELECT 'simple'"), client.query_one("SELECT 'extended'::text", &[]));
    assert_eq!(simple_rows(&a.unwrap()), vec![vec!["simple".to_string()]]);
    assert_eq!(b.unwrap().get::<_, String>(0), "extended");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_mib_text_value_round_trips_unchanged() {
    let (_c, p) = primary_with_proxy().await;
    let client = p.connect().await;
    let value: String = (0..1024 * 1024).map(|i| char::from(b'a' + u8::try_from(i % 26).unwrap())).collect();
    let echoed: String = client.query_one("SELECT $1::text", &[&value]).await.unwrap().get(0);
    assert_eq!(echoed.len(), value.len());
    assert!(echoed == value, "the 1 MiB value came back changed");

    client.batch_execute("CREATE TABLE big (v text)").await.unwrap();
    client.execute("INSERT INTO big VALUES ($1)", &[&value]).await.unwrap();
    let row = client.query_one("SELECT length(v), v FROM big", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1024 * 1024);
    assert!(row.get::<_, String>(1) == value);
}

/// Statements sluice keeps prepared on one server connection are bounded by
/// `pool.max_prepared_statements`: 1,000 distinct statements on one session with a bound of 100
/// all return the right rows, the first ones again after they were evicted, and the only server
/// connection never holds more than 100.
#[tokio::test(flavor = "multi_thread")]
async fn prepared_statements_per_server_connection_are_bounded() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(1).set("pool", "max_prepared_statements", "100").start().await;
    let client = p.connect().await;
    let held = "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'sluice%'";
    let mut statements = Vec::new();
    let mut most = 0;
    for round in 0..2 {
        for i in 0..1000i32 {
            if round == 0 {
                statements.push(client.prepare(&format!("SELECT $1::int + {i}")).await.unwrap());
            }
            let got: i32 = client.query_one(&statements[i as usize], &[&1i32]).await.unwrap().get(0);
            assert_eq!(got, i + 1, "round {round}, statement {i}");
            if i % 50 == 49 {
                let count: i64 = simple_rows(&client.simple_query(held).await.unwrap())[0][0].parse().unwrap();
                most = most.max(count);
            }
        }
    }
    assert!(most <= 100, "a server connection held {most} prepared statements");
    assert!(most >= 50, "the bound was never approached ({most}): is the test measuring anything?");
}
