//! Malformed inputs for every phase of a client connection, and running them against sluice.
//!
//! Each [`Case`] names the phase the connection is brought to first (nothing, after the `N` to
//! an SSLRequest, during SCRAM, after login), the bytes then sent, and whether the client then
//! half-closes (for inputs that are incomplete by construction: without the half-close the only
//! correct reaction is the startup timeout, which `sockets` covers). sluice must answer every
//! one with an ErrorResponse or a close, quickly.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sluice::auth::SaltCache;
use sluice::protocol::startup::MAX_STARTUP_PACKET;

use super::wire::{Answer, RawConn, Reply, WireError};
use super::{corpus, ms, percentile, Target};

/// Where the connection is when the bytes are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Right after connect: the bytes are the startup packet.
    Startup,
    /// After an SSLRequest was answered `N`.
    AfterSsl,
    /// After StartupMessage, when sluice waits for SASLInitialResponse.
    Sasl,
    /// After a valid client-first, when sluice waits for client-final.
    SaslFinal,
    /// After a complete login and ReadyForQuery.
    LoggedIn,
}

/// One malformed input.
#[derive(Clone, Debug)]
pub struct Case {
    /// What it is.
    pub name: String,
    /// Where it is sent.
    pub phase: Phase,
    /// What is sent.
    pub bytes: Vec<u8>,
    /// Half-close after sending.
    pub close_write: bool,
}

impl Case {
    pub(super) fn new(name: impl Into<String>, phase: Phase, bytes: Vec<u8>) -> Case {
        Case { name: name.into(), phase, bytes, close_write: false }
    }

    pub(super) fn closing(mut self) -> Case {
        self.close_write = true;
        self
    }
}

/// The hand-written cases first, then seeded random ones up to `count` in total (at least one
/// random case per phase). `max_message_bytes` is the proxy's message limit.
pub fn corpus(count: usize, seed: u64, max_message_bytes: usize) -> Vec<Case> {
    let mut cases = corpus::fixed(max_message_bytes);
    let mut rng = StdRng::seed_from_u64(seed);
    let phases = [Phase::Startup, Phase::AfterSsl, Phase::Sasl, Phase::SaslFinal, Phase::LoggedIn];
    let random = count.saturating_sub(cases.len()).max(phases.len());
    for i in 0..random {
        cases.push(random_case(&mut rng, phases[i % phases.len()], i));
    }
    cases
}

fn random_case(rng: &mut StdRng, phase: Phase, i: usize) -> Case {
    let len = if rng.gen_bool(0.2) { rng.gen_range(1..8) } else { rng.gen_range(8..600) };
    let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
    if phase != Phase::Startup && phase != Phase::AfterSsl && rng.gen_bool(0.5) {
        // A known tag with a random body makes the parsers behind the tag work, not the framer.
        bytes[0] = *b"pQPBDECFSHXdcf".get(rng.gen_range(0..14)).unwrap_or(&b'Q');
        if bytes.len() >= 5 && rng.gen_bool(0.7) {
            let body = (bytes.len() - 1) as i32;
            bytes[1..5].copy_from_slice(&body.to_be_bytes());
        }
    }
    let case = Case::new(format!("random #{i} ({len} bytes) {phase:?}"), phase, bytes);
    // Only a startup packet whose header is plausible makes sluice wait for more; everything
    // else random is half-closed so that "ignored, waiting for more" ends in EOF.
    match phase {
        Phase::Startup | Phase::AfterSsl if !startup_waits_for_more(&case.bytes) => case,
        _ => case.closing(),
    }
}

/// True if a startup reader would wait for more bytes after these.
fn startup_waits_for_more(bytes: &[u8]) -> bool {
    if bytes.len() < 4 {
        return true;
    }
    let len = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    (8..=MAX_STARTUP_PACKET as i32).contains(&len) && (len as usize) > bytes.len()
}

/// What one case produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The case's name.
    pub name: String,
    /// sluice's reaction, or why the case could not be brought to its phase.
    pub answer: Result<Answer, WireError>,
}

/// The results of a run.
#[derive(Clone, Debug, Default)]
pub struct MalformedReport {
    /// One per case.
    pub outcomes: Vec<Outcome>,
}

impl MalformedReport {
    /// Cases answered by an ErrorResponse or a close within `limit`.
    pub fn answered_within(&self, limit: Duration) -> usize {
        self.outcomes.iter().filter(|o| o.answer.as_ref().is_ok_and(|a| a.answered_within(limit))).count()
    }

    /// One line per case that was not answered within `limit`.
    pub fn failures(&self, limit: Duration) -> Vec<String> {
        self.outcomes
            .iter()
            .filter(|o| !o.answer.as_ref().is_ok_and(|a| a.answered_within(limit)))
            .map(|o| match &o.answer {
                Ok(a) => format!("{}: {:?} after {}", o.name, a.reply, ms(a.after)),
                Err(e) => format!("{}: could not reach its phase: {e}", o.name),
            })
            .collect()
    }

    /// One line for a report.
    pub fn summary(&self, limit: Duration) -> String {
        let times: Vec<Duration> =
            self.outcomes.iter().filter_map(|o| o.answer.as_ref().ok()).map(|a| a.after).collect();
        let errors =
            self.outcomes.iter().filter(|o| matches!(o.answer, Ok(Answer { reply: Reply::Error(_), .. }))).count();
        format!(
            "malformed inputs: {}/{} answered within {limit:?} ({errors} with an ErrorResponse); p99 {}, max {}",
            self.answered_within(limit),
            self.outcomes.len(),
            ms(percentile(&times, 99.0)),
            ms(times.iter().copied().max().unwrap_or_default()),
        )
    }
}

/// Run every case, `concurrency` at a time, each waiting for sluice's reaction up to a second
/// past `limit` (so that "late" is told apart from "never").
pub async fn run(t: &Target, cases: &[Case], concurrency: usize, limit: Duration) -> MalformedReport {
    let salts = SaltCache::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let tasks = cases.iter().cloned().map(|case| {
        let (t, salts, gate) = (t.clone(), salts.clone(), Arc::clone(&gate));
        tokio::spawn(async move {
            let _turn = gate.acquire().await.expect("the gate is never closed");
            let answer = run_case(&t, &salts, &case, limit + Duration::from_secs(1)).await;
            Outcome { name: case.name, answer }
        })
    });
    let outcomes = join_all(tasks).await.into_iter().map(|r| r.expect("a case task panicked")).collect();
    MalformedReport { outcomes }
}

/// Bring a connection to the case's phase, send its bytes, and wait for the reaction.
///
/// # Errors
/// The connection could not be brought to the case's phase.
pub async fn run_case(t: &Target, salts: &SaltCache, case: &Case, wait: Duration) -> Result<Answer, WireError> {
    let mut conn = RawConn::connect(t.port).await?;
    match case.phase {
        Phase::Startup => {}
        Phase::AfterSsl => {
            let answer = conn.ssl_request().await?;
            if answer != b'N' {
                return Err(WireError::Protocol(format!("SSLRequest answered {:?}", answer as char)));
            }
        }
        Phase::Sasl => conn.startup(t).await?,
        Phase::SaslFinal => {
            conn.startup(t).await?;
            conn.scram_first(&t.password, salts).await?;
        }
        Phase::LoggedIn => conn.login(t, salts).await?,
    }
    // A refused write is fine: sluice may hang up in the middle of a large input.
    let _ = conn.send(&case.bytes).await;
    if case.close_write {
        conn.close_write().await;
    }
    Ok(conn.answer(wait).await)
}
