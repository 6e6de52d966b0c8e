//! Bulk data through sluice: COPY in both directions, and a ~1 GB result streamed by a sluice
//! child process whose memory must stay bounded.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Cluster, Proxy};
use futures_util::{pin_mut, SinkExt, StreamExt};

const COPY_ROWS: usize = 100_000;

fn copy_text(rows: std::ops::Range<usize>) -> String {
    rows.map(|i| format!("{i}\trow number {i} \\\\ with a tab\\tinside\n")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn copy_100k_rows_in_and_out_unchanged() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(4).start().await;
    let client = p.connect().await;
    client.batch_execute("CREATE TABLE t (id int PRIMARY KEY, v text)").await.unwrap();

    let sent = copy_text(0..COPY_ROWS);
    let sink = client.copy_in("COPY t FROM STDIN").await.unwrap();
    pin_mut!(sink);
    for chunk in sent.as_bytes().chunks(64 * 1024) {
        sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    let copied = sink.finish().await.unwrap_or_else(|e| {
        let log = c.log_tail(0).unwrap_or_default();
        panic!("COPY FROM STDIN failed: {}\n--- server log ---\n{log}", common::describe(&e))
    });
    assert_eq!(copied, COPY_ROWS as u64);

    let stream = client.copy_out("COPY (SELECT id, v FROM t ORDER BY id) TO STDOUT").await.unwrap();
    pin_mut!(stream);
    let mut received = Vec::with_capacity(sent.len());
    while let Some(chunk) = stream.next().await {
        received.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(received.len(), sent.len());
    assert!(received == sent.as_bytes(), "COPY OUT differs from COPY IN");

    // The server agrees on the content (checked without the proxy).
    let server_md5 = c.psql("SELECT md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM t").await;
    let client_md5: String =
        client.query_one("SELECT md5(string_agg(id || ':' || v, ',' ORDER BY id)) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(server_md5, client_md5);

    // The connection is usable after COPY.
    let n: i64 = client.query_one("SELECT count(*) FROM t", &[]).await.unwrap().get(0);
    assert_eq!(n, COPY_ROWS as i64);
}

/// Peak RSS allowed for the sluice process while it relays about 1 GB.
const RSS_LIMIT_KIB: u64 = 200 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn a_gigabyte_result_streams_through_with_bounded_memory() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).pool_size(2).spawn_process().await;
    let client = p.connect().await;
    let baseline = p.rss_kib();

    let started = Instant::now();
    let rows = client
        .query_raw("SELECT repeat('x', 1000) FROM generate_series(1, 1000000)", std::iter::empty::<i32>())
        .await
        .unwrap();
    pin_mut!(rows);
    let (mut count, mut bytes, mut peak) = (0u64, 0u64, 0u64);
    while let Some(row) = rows.next().await {
        let row = row.unwrap_or_else(|e| panic!("row {count}: {e}\n{}", p.log()));
        bytes += row.get::<_, &str>(0).len() as u64;
        count += 1;
        if count % 50_000 == 0 {
            peak = peak.max(p.rss_kib());
        }
    }
    let hwm = p.peak_rss_kib();
    println!(
        "streamed {count} rows / {} MiB in {:?}; sluice RSS: baseline {baseline} KiB, sampled peak {peak} KiB, VmHWM {hwm} KiB",
        bytes >> 20,
        started.elapsed()
    );
    assert_eq!(count, 1_000_000);
    assert_eq!(bytes, 1_000_000_000);
    assert!(hwm < RSS_LIMIT_KIB, "sluice's peak RSS {hwm} KiB exceeds {RSS_LIMIT_KIB} KiB while streaming");
    // Still serving afterwards.
    let one: i32 =
        tokio::time::timeout(Duration::from_secs(5), client.query_one("SELECT 1", &[])).await.unwrap().unwrap().get(0);
    assert_eq!(one, 1);
}
