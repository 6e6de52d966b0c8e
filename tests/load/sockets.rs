//! Silent sockets and half-sent startups: connections that open and then say nothing (or a
//! prefix of a startup packet) and are held open. sluice must close every one of them itself
//! (with an ErrorResponse or a plain close) once its startup timeout passes.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use sluice::protocol::startup::PROTOCOL_3_0;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ms, percentile};

/// Connects started at once; the rest wait (the listen backlog is finite and a dropped SYN
/// costs the client a 1 s retransmit, which would measure the kernel, not sluice).
const CONNECTS_AT_ONCE: usize = 256;

/// The prefixes the half-sent sockets send, in turn.
pub fn half_sent_prefixes() -> Vec<(&'static str, Vec<u8>)> {
    let mut full = Vec::new();
    full.extend_from_slice(&0i32.to_be_bytes());
    full.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    full.extend_from_slice(b"user\0sluice_test\0database\0app\0\0");
    let len = full.len() as i32;
    full[..4].copy_from_slice(&len.to_be_bytes());
    vec![
        ("two bytes of the length", full[..2].to_vec()),
        ("the length only", full[..4].to_vec()),
        ("length and version", full[..8].to_vec()),
        ("all but the last byte", full[..full.len() - 1].to_vec()),
        ("SSLRequest then nothing", [8i32.to_be_bytes(), 80_877_103i32.to_be_bytes()].concat()),
    ]
}

/// How one held socket ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    /// sluice closed it after `after`, having sent an ErrorResponse first or not.
    Closed { after: Duration, with_error: bool },
    /// Still open when the hold ended.
    StillOpen,
    /// Could not connect at all.
    ConnectFailed(String),
}

/// What happened to the held sockets.
#[derive(Clone, Debug, Default)]
pub struct HoldReport {
    /// Sockets opened (silent + half-sent).
    pub sockets: usize,
    /// Closed by sluice before the hold ended.
    pub closed: usize,
    /// Of those, how many got an ErrorResponse before the close.
    pub with_error: usize,
    /// Still open when the hold ended (sluice never closed them).
    pub still_open: usize,
    /// Connects that failed.
    pub connect_failed: Vec<String>,
    /// When each closed socket was closed, since its connect.
    pub close_times: Vec<Duration>,
}

impl HoldReport {
    /// One line for a report.
    pub fn summary(&self) -> String {
        format!(
            "held {} sockets: {} closed by sluice ({} with an ErrorResponse), {} still open, {} connects failed; \
             closed after p50 {}, max {}",
            self.sockets,
            self.closed,
            self.with_error,
            self.still_open,
            self.connect_failed.len(),
            ms(percentile(&self.close_times, 50.0)),
            ms(self.close_times.iter().copied().max().unwrap_or_default()),
        )
    }
}

/// Open `silent` sockets that send nothing and `half_sent` that send a startup prefix, and
/// hold each open for up to `hold` or until sluice closes it.
pub async fn hold(port: u16, silent: usize, half_sent: usize, hold: Duration) -> HoldReport {
    let prefixes = half_sent_prefixes();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(CONNECTS_AT_ONCE));
    let tasks = (0..silent + half_sent).map(|i| {
        let prefix = if i < silent { Vec::new() } else { prefixes[i % prefixes.len()].1.clone() };
        let gate = std::sync::Arc::clone(&gate);
        tokio::spawn(async move { hold_one(port, prefix, hold, &gate).await })
    });
    let ends = join_all(tasks).await;
    let mut report = HoldReport { sockets: silent + half_sent, ..HoldReport::default() };
    for end in ends {
        match end.expect("a socket task panicked") {
            End::Closed { after, with_error } => {
                report.closed += 1;
                report.with_error += usize::from(with_error);
                report.close_times.push(after);
            }
            End::StillOpen => report.still_open += 1,
            End::ConnectFailed(e) => report.connect_failed.push(e),
        }
    }
    report
}

async fn hold_one(port: u16, prefix: Vec<u8>, hold: Duration, gate: &tokio::sync::Semaphore) -> End {
    let connected = {
        let _turn = gate.acquire().await.expect("the gate is never closed");
        tokio::time::timeout(super::wire::CONNECT_TIMEOUT, TcpStream::connect(("127.0.0.1", port))).await
    };
    let mut stream = match connected {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return End::ConnectFailed(e.to_string()),
        Err(_) => return End::ConnectFailed("connect timed out".into()),
    };
    let started = Instant::now();
    if !prefix.is_empty() && stream.write_all(&prefix).await.is_err() {
        return End::Closed { after: started.elapsed(), with_error: false };
    }
    let mut with_error = false;
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + hold;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return End::StillOpen,
            Ok(Ok(0) | Err(_)) => return End::Closed { after: started.elapsed(), with_error },
            // `N` answers the SSLRequest; an `E` is the ErrorResponse sluice closes with.
            Ok(Ok(n)) => with_error |= buf[..n].contains(&b'E'),
        }
    }
}
