//! Chaos on shared server connections: well-behaved clients check that every answer is their
//! own while other clients of the same user and database start statements, pipelines,
//! transactions, COPY, big results and Close-without-Sync and then vanish (FIN or RST), or hit
//! errors inside Flush blocks and then Sync and Terminate.
//!
//! Counted: answers checked, foreign answers (a value another client asked for), protocol
//! errors of the good clients (any ErrorResponse, unexpected message or hang), Syncs sent and
//! answered, Terminates sent and followed by a close. The misbehaving clients need a table
//! `chaos_sink (v text)`. Every wait is bounded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::auth::SaltCache;
use sluice::protocol::{messages, tag, Frame};
use tokio::time::Instant;

use super::ext::{bind, copy_data, first_column, run_unnamed, tags};
use super::wire::RawConn;
use super::Target;

/// How long one reply may take before a good client calls it a hang.
const REPLY_WAIT: Duration = Duration::from_secs(10);
/// How long a Sync may wait for its ReadyForQuery, and a Terminate for the close.
const ANSWER_WAIT: Duration = Duration::from_secs(3);

/// The misbehaviours, taken in turn by each misbehaving client.
const SCENARIOS: [&str; 8] = [
    "sleep",
    "pipeline",
    "transaction",
    "copy",
    "big-result",
    "close-no-sync",
    "flush-error",
    "terminate-mid-pipeline",
];

/// Sizes of a chaos run.
#[derive(Clone, Debug)]
pub struct Chaos {
    /// Well-behaved clients.
    pub good: usize,
    /// Misbehaving clients.
    pub bad: usize,
    /// How long it runs.
    pub duration: Duration,
    /// Seed of the random timings.
    pub seed: u64,
}

/// What a chaos run saw.
#[derive(Debug, Default)]
pub struct ChaosReport {
    /// Answers the good clients checked.
    pub answers: u64,
    /// Answers that carried another client's value.
    pub foreign: Vec<String>,
    /// Good clients' protocol errors (ErrorResponse, unexpected message, hang), with context.
    pub protocol_errors: Vec<String>,
    /// Misbehaving sessions per scenario.
    pub sessions: BTreeMap<&'static str, u64>,
    /// Logins of misbehaving clients that failed (not a target, but reported).
    pub login_failures: u64,
    /// Syncs sent after an error in a Flush block.
    pub syncs_sent: u64,
    /// ... answered by ReadyForQuery in time.
    pub syncs_answered: u64,
    /// Terminates sent.
    pub terminates_sent: u64,
    /// ... followed by a close in time.
    pub terminates_closed: u64,
}

impl ChaosReport {
    /// One line of figures.
    pub fn summary(&self) -> String {
        let sessions: Vec<String> = self.sessions.iter().map(|(k, n)| format!("{k}:{n}")).collect();
        format!(
            "{} answers checked, {} foreign, {} protocol errors; syncs answered {}/{}, terminates closing {}/{}; \
             misbehaving sessions {} ({}), failed logins {}",
            self.answers,
            self.foreign.len(),
            self.protocol_errors.len(),
            self.syncs_answered,
            self.syncs_sent,
            self.terminates_closed,
            self.terminates_sent,
            self.sessions.values().sum::<u64>(),
            sessions.join(" "),
            self.login_failures,
        )
    }

    /// True when every target was met.
    pub fn clean(&self) -> bool {
        self.foreign.is_empty()
            && self.protocol_errors.is_empty()
            && self.syncs_answered == self.syncs_sent
            && self.terminates_closed == self.terminates_sent
            && self.answers > 0
    }
}

type Shared = Arc<Mutex<ChaosReport>>;

fn note(report: &Shared, f: impl FnOnce(&mut ChaosReport)) {
    f(&mut report.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
}

/// Run `chaos` against sluice at `t`.
pub async fn run(t: &Target, chaos: &Chaos) -> ChaosReport {
    let report: Shared = Arc::default();
    let deadline = Instant::now() + chaos.duration;
    let salts = SaltCache::default();
    let mut tasks = Vec::new();
    for id in 0..chaos.good {
        let (t, r, s) = (t.clone(), Arc::clone(&report), salts.clone());
        tasks.push(tokio::spawn(async move { good_client(id, &t, &s, deadline, &r).await }));
    }
    for id in 0..chaos.bad {
        let (t, r, s) = (t.clone(), Arc::clone(&report), salts.clone());
        let seed = chaos.seed.wrapping_add(id as u64);
        tasks.push(tokio::spawn(async move { bad_client(id, &t, &s, deadline, seed, &r).await }));
    }
    for task in tasks {
        let _ = task.await;
    }
    Arc::try_unwrap(report)
        .map(|m| m.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner))
        .unwrap_or_default()
}

fn msgs(build: impl FnOnce(&mut BytesMut)) -> BytesMut {
    let mut b = BytesMut::new();
    build(&mut b);
    b
}

/// A client that loops over simple, extended, prepared and transactional queries and checks
/// each answer is exactly the value it asked for.
async fn good_client(id: usize, t: &Target, salts: &SaltCache, deadline: Instant, report: &Shared) {
    let mut c = match login(t, salts).await {
        Some(c) => c,
        None => return note(report, |r| r.protocol_errors.push(format!("good {id}: login failed"))),
    };
    let name = format!("good_{id}");
    let prepare = msgs(|b| {
        messages::parse(b, &name, b"SELECT $1::text", &0i16.to_be_bytes());
        messages::sync(b);
    });
    if let Err(e) = exchange(&mut c, &prepare, "1Z", None).await {
        return note(report, |r| r.protocol_errors.push(format!("good {id}: prepare: {e}")));
    }
    let mut i = 0u64;
    while Instant::now() < deadline {
        i += 1;
        let value = format!("good-{id}-{i}");
        let (out, want) = match i % 4 {
            0 => (msgs(|b| messages::query(b, &format!("SELECT '{value}'::text"))), "TDCZ"),
            1 => (
                msgs(|b| {
                    run_unnamed(b, "SELECT $1::text", &[Some(&value)]);
                    messages::sync(b);
                }),
                "12DCZ",
            ),
            2 => (
                msgs(|b| {
                    bind(b, "", &name, &[Some(&value)]);
                    messages::execute(b, "", 0);
                    messages::sync(b);
                }),
                "2DCZ",
            ),
            _ => (msgs(|b| messages::query(b, &format!("BEGIN; SELECT '{value}'::text; COMMIT"))), "CTDCCZ"),
        };
        match exchange(&mut c, &out, want, Some(&value)).await {
            Ok(()) => note(report, |r| r.answers += 1),
            Err(Failure::Foreign(e)) => note(report, |r| r.foreign.push(format!("good {id}: {e}"))),
            Err(Failure::Protocol(e)) => {
                note(report, |r| r.protocol_errors.push(format!("good {id}: {e}")));
                return;
            }
        }
    }
    c.terminate().await;
}

enum Failure {
    Foreign(String),
    Protocol(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Foreign(e) | Failure::Protocol(e) => f.write_str(e),
        }
    }
}

/// Send `out`, read up to ReadyForQuery, and check the tags and the one DataRow's value.
async fn exchange(c: &mut RawConn, out: &[u8], want: &str, value: Option<&str>) -> Result<(), Failure> {
    if !c.send(out).await {
        return Err(Failure::Protocol("write failed".into()));
    }
    let frames = c.until_ready_frames(REPLY_WAIT).await.map_err(|e| Failure::Protocol(e.to_string()))?;
    let rows: Vec<String> = frames.iter().filter_map(first_column).collect();
    if let Some(v) = value {
        if rows.iter().any(|r| r != v) {
            return Err(Failure::Foreign(format!("asked for {v}, got {rows:?} ({})", tags(&frames))));
        }
    }
    if tags(&frames) != want {
        let errors: Vec<String> = frames
            .iter()
            .filter(|f| f.tag() == tag::ERROR_RESPONSE)
            .map(|f| {
                let e = messages::decode_error(f.body());
                format!("{} {}: {}", e.severity, e.code, e.message)
            })
            .collect();
        return Err(Failure::Protocol(format!("expected {want}, got {} {errors:?}", tags(&frames))));
    }
    Ok(())
}

async fn login(t: &Target, salts: &SaltCache) -> Option<RawConn> {
    let mut c = RawConn::connect(t.port).await.ok()?;
    c.login(t, salts).await.ok()?;
    Some(c)
}

/// A client that runs one misbehaviour per session, in turn, until the deadline.
async fn bad_client(id: usize, t: &Target, salts: &SaltCache, deadline: Instant, seed: u64, report: &Shared) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut turn = id;
    while Instant::now() < deadline {
        let scenario = SCENARIOS[turn % SCENARIOS.len()];
        turn += 1;
        let Some(mut c) = login(t, salts).await else {
            note(report, |r| r.login_failures += 1);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        note(report, |r| *r.sessions.entry(scenario).or_default() += 1);
        let finished = misbehave(scenario, &mut c, &mut rng, report).await;
        if !finished {
            // Vanish: a FIN or a reset.
            if rng.gen_bool(0.5) {
                c.reset();
            } else {
                drop(c);
            }
        }
    }
}

/// Run one misbehaviour; true if it ended the connection itself (Terminate).
async fn misbehave(scenario: &str, c: &mut RawConn, rng: &mut StdRng, report: &Shared) -> bool {
    let pause = Duration::from_millis(rng.gen_range(0..300));
    let read = rng.gen_range(0..40);
    let out = match scenario {
        "sleep" => msgs(|b| messages::query(b, &format!("SELECT 'bad-sleep', pg_sleep({})", rng.gen_range(0.05..0.6)))),
        "pipeline" => msgs(|b| {
            for i in 0..rng.gen_range(1..60) {
                run_unnamed(b, "SELECT 'bad-pipe-' || $1", &[Some(&i.to_string())]);
            }
            if rng.gen_bool(0.5) {
                messages::flush(b);
            }
        }),
        "transaction" => {
            msgs(|b| messages::query(b, "BEGIN; INSERT INTO chaos_sink VALUES ('bad-tx'); SELECT 'bad-tx'"))
        }
        "copy" => msgs(|b| {
            messages::query(b, "COPY chaos_sink FROM STDIN");
            copy_data(b, b"bad-copy\n");
        }),
        "big-result" => {
            msgs(|b| messages::query(b, "SELECT 'bad-big-' || g, repeat('x', 500) FROM generate_series(1, 20000) g"))
        }
        "close-no-sync" => msgs(|b| {
            messages::parse(b, "bad_s", b"SELECT 'bad-close'", &0i16.to_be_bytes());
            messages::bind_renamed(b, b"bad_p", "bad_s", &[0, 0, 0, 0, 0, 0]);
            messages::sync(b);
            messages::close(b, b'S', "bad_s");
            messages::close(b, b'P', "");
            if rng.gen_bool(0.5) {
                messages::flush(b);
            }
        }),
        "flush-error" => return flush_error(c, report).await,
        _ => {
            let out = msgs(|b| {
                run_unnamed(b, "SELECT 'bad-terminate'", &[]);
                messages::terminate(b);
            });
            return terminate(c, &out, report).await;
        }
    };
    c.send(&out).await;
    for _ in 0..read {
        if c.recv(pause.max(Duration::from_millis(1))).await.is_err() {
            break;
        }
    }
    tokio::time::sleep(pause).await;
    false
}

/// An error inside a Flush block, the client's Sync, then Terminate: both must be honoured.
async fn flush_error(c: &mut RawConn, report: &Shared) -> bool {
    let out = msgs(|b| {
        messages::parse(b, "", b"SELECT $1::int", &0i16.to_be_bytes());
        bind(b, "", "", &[Some("bad-not-a-number")]);
        messages::describe(b, b'P', "");
        messages::flush(b);
        messages::execute(b, "", 10);
        messages::flush(b);
    });
    c.send(&out).await;
    let mut frames: Vec<Frame> = Vec::new();
    while frames.last().map(Frame::tag) != Some(tag::ERROR_RESPONSE) {
        match c.recv(ANSWER_WAIT).await {
            Ok(f) => frames.push(f),
            Err(_) => return false,
        }
    }
    note(report, |r| r.syncs_sent += 1);
    c.send(&msgs(messages::sync)).await;
    match c.recv(ANSWER_WAIT).await {
        Ok(f) if f.tag() == tag::READY_FOR_QUERY => note(report, |r| r.syncs_answered += 1),
        _ => return false,
    }
    terminate(c, &msgs(messages::terminate), report).await
}

async fn terminate(c: &mut RawConn, out: &[u8], report: &Shared) -> bool {
    note(report, |r| r.terminates_sent += 1);
    c.send(out).await;
    if c.closed_within(ANSWER_WAIT).await {
        note(report, |r| r.terminates_closed += 1);
    }
    true
}
