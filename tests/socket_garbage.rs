//! Raw sockets sending what no PostgreSQL client sends: sluice answers with an ErrorResponse or
//! hangs up quickly, and keeps serving everyone else.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a connection ended from the client's side.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The first byte back was `E` (an ErrorResponse).
    ErrorResponse,
    /// The connection was closed (EOF or reset) without a reply.
    Closed,
    /// Something else came back.
    Other(u8),
    /// Nothing happened in time.
    Hung,
}

async fn send_raw(port: u16, bytes: &[u8]) -> (Outcome, Duration) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let started = Instant::now();
    // Writing may fail if sluice already hung up; that is an acceptable answer too.
    let _ = s.write_all(bytes).await;
    let mut first = [0u8; 1];
    let outcome = match tokio::time::timeout(Duration::from_secs(2), s.read(&mut first)).await {
        Err(_) => Outcome::Hung,
        Ok(Ok(0) | Err(_)) => Outcome::Closed,
        Ok(Ok(_)) if first[0] == b'E' => Outcome::ErrorResponse,
        Ok(Ok(_)) => Outcome::Other(first[0]),
    };
    (outcome, started.elapsed())
}

fn startup_header(len: u32, code: u32) -> Vec<u8> {
    let mut v = len.to_be_bytes().to_vec();
    v.extend_from_slice(&code.to_be_bytes());
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_gets_an_error_or_a_hang_up_and_others_carry_on() {
    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).startup_timeout("1s").start().await;
    let healthy = p.connect().await;

    let mut truncated = startup_header(100, 196_608);
    truncated.extend_from_slice(b"user\0sluice_test\0");
    let mut bad_version = startup_header(8 + 5, 0x0004_0000);
    bad_version.extend_from_slice(b"user\0");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("http request", b"GET / HTTP/1.1\r\nHost: sluice\r\n\r\n".to_vec()),
        ("length below 4", startup_header(2, 196_608)),
        ("length 0", vec![0, 0, 0, 0]),
        ("oversized length", startup_header(0x7fff_ffff, 196_608)),
        ("truncated startup", truncated),
        ("unknown protocol version", bad_version),
        ("random bytes", (0..=255u8).rev().collect()),
        ("a lone byte", vec![0x42]),
    ];
    for (name, bytes) in &cases {
        let (outcome, took) = send_raw(p.port(), bytes).await;
        println!("{name}: {outcome:?} after {took:?}");
        assert!(matches!(outcome, Outcome::ErrorResponse | Outcome::Closed), "{name}: sluice answered {outcome:?}");
        assert!(took < Duration::from_secs(2), "{name}: took {took:?}");
    }

    // Also all at once, while a normal client works.
    let storm = cases.iter().map(|(_, bytes)| send_raw(p.port(), bytes));
    let results = futures_util::future::join_all(storm).await;
    assert!(results.iter().all(|(o, _)| matches!(o, Outcome::ErrorResponse | Outcome::Closed)));

    let one: i32 = healthy.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let fresh = p.connect().await;
    let two: i32 = fresh.query_one("SELECT 2", &[]).await.unwrap().get(0);
    assert_eq!(two, 2);
}
