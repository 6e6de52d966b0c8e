//! A writer and a reader, one long-lived client connection each, one statement every `every`,
//! recording when each statement started and ended, which server ran it
//! (`inet_server_port()`) and how it failed.

use std::time::{Duration, Instant};

use sluice::pgcluster::{TEST_DATABASE, TEST_PASSWORD, TEST_USER};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One statement as the client saw it.
#[derive(Clone, Debug)]
pub struct Sample {
    /// When it was sent.
    pub sent: Instant,
    /// When its answer (or error) arrived.
    pub done: Instant,
    /// The server port that ran it (on success).
    pub port: Option<u16>,
    /// The written id (writer) or the largest id seen (reader).
    pub id: Option<i64>,
    /// SQLSTATE and message, on failure.
    pub error: Option<String>,
}

/// What one client did.
#[derive(Debug, Default)]
pub struct Trace {
    /// Every statement, in order.
    pub samples: Vec<Sample>,
    /// True if the client connection was closed under it.
    pub closed: bool,
}

/// A running writer and reader.
pub struct Workload {
    stop: watch::Sender<bool>,
    writer: JoinHandle<Trace>,
    reader: JoinHandle<Trace>,
}

/// A client connection to sluice on 127.0.0.1:`port` as the local cluster's test user (its
/// task is spawned).
pub async fn connect(port: u16) -> tokio_postgres::Client {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(TEST_USER)
        .password(TEST_PASSWORD)
        .dbname(TEST_DATABASE)
        .connect_timeout(Duration::from_secs(10));
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.expect("the workload connects through sluice");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// The writer's statement: insert the next id and say where it ran.
const WRITE_SQL: &str = "INSERT INTO drill (id) VALUES ($1) RETURNING inet_server_port()";
/// The reader's statement: the largest id visible and where it ran.
const READ_SQL: &str = "SELECT inet_server_port(), (SELECT max(id) FROM drill)";

impl Workload {
    /// Start both clients through sluice on `port` (the table `drill (id bigint primary key)`
    /// must exist).
    pub async fn start(port: u16, every: Duration) -> Workload {
        let (stop, rx) = watch::channel(false);
        let writer = tokio::spawn(run(connect(port).await, every, rx.clone(), true));
        let reader = tokio::spawn(run(connect(port).await, every, rx, false));
        Workload { stop, writer, reader }
    }

    /// Stop both clients and return (writer, reader) traces.
    pub async fn stop(self) -> (Trace, Trace) {
        let _ = self.stop.send(true);
        (self.writer.await.expect("the writer task"), self.reader.await.expect("the reader task"))
    }
}

async fn run(client: tokio_postgres::Client, every: Duration, stop: watch::Receiver<bool>, write: bool) -> Trace {
    let mut trace = Trace::default();
    let mut next_id = 1i64;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*stop.borrow() {
        ticker.tick().await;
        let sent = Instant::now();
        let result = if write {
            client.query_one(WRITE_SQL, &[&next_id]).await.map(|row| (row.get::<_, i32>(0), Some(next_id)))
        } else {
            client.query_one(READ_SQL, &[]).await.map(|row| (row.get::<_, i32>(0), row.get::<_, Option<i64>>(1)))
        };
        let done = Instant::now();
        let sample = match result {
            Ok((port, id)) => Sample { sent, done, port: u16::try_from(port).ok(), id, error: None },
            Err(e) => {
                let code = e.code().map_or("-", |c| c.code()).to_string();
                let message = e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_string());
                Sample { sent, done, port: None, id: None, error: Some(format!("{code} {message}")) }
            }
        };
        if write {
            next_id += 1;
        }
        trace.samples.push(sample);
        if client.is_closed() {
            trace.closed = true;
            break;
        }
    }
    trace
}
