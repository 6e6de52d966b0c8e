//! Relaying a unit, full duplex: server replies go to the client as raw frames as the server
//! sends them, and (for an extended-protocol unit not yet ended by Sync) the client's further
//! messages go to the server as they arrive, both at once.
//!
//! Complete frames at the front of the server read buffer are walked in place; runs of frames
//! the client should see are split off (no copy) and written in one call, with any synthesized
//! replies queued ahead of them. Server to client, backpressure is natural: nothing more is
//! read from the server until the client has taken what was read. Client to server, at most
//! 1,024 messages / 1 MiB wait for the server to take them; then the client is not read (see
//! `stream`). Which client messages belong to the unit is decided by `frontend::duplex`.

use crate::tls::MaybeTls;
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWriteExt;

use super::expect::{plain_run, step, Expect, Replies, ReplyKind, Step, Synth};
use super::params::SessionParams;
use super::session::end::{Fault, SessionEnd};
use super::statements::Statements;
use crate::backend::ServerConn;
use crate::error::{sqlstate, BackendError};
use crate::protocol::framer::peek_header;
use crate::protocol::frames::FramesBuf;
use crate::protocol::{messages, tag, FrameReader, TxStatus};
use crate::router::{Access, Classifier};

mod stream;
use stream::Stream;
pub use stream::Streamed;
pub(crate) use stream::KEEP_LIMIT;

/// How a unit ended.
#[derive(Debug)]
pub enum Outcome {
    /// ReadyForQuery arrived with this status.
    Ready(TxStatus),
    /// Every reply the client asked for (with Flush) arrived; the unit continues.
    Partial,
    /// The server connection failed (a FATAL it sent is in the error, not forwarded); the
    /// client was not told yet.
    ServerLost(BackendError),
    /// The client went away or broke the protocol mid-unit (not told yet).
    End(SessionEnd),
    /// The server refused the unit with `25006 read_only_sql_transaction` before the client saw
    /// anything: it changed nothing and may run again on the primary.
    ReadOnlyRejected,
    /// A replica cancelled the read for a recovery conflict (`40001`, `40P01`) before the client
    /// saw anything: it may run again on the primary, where no replay can cancel it.
    RecoveryConflict,
    /// A read-only unit (or one that only resets session state) lost its server connection
    /// before any of its replies reached the client (a terminated backend): it may run again on
    /// a fresh connection.
    NeverRan(BackendError),
    /// Sending the unit failed (the session dropped the connection): the client is owed this
    /// error. Set by the session, never by the relay.
    NotSent(String),
}

/// Replies held back from a retryable unit, at most this many bytes, until it is known not to
/// have been rejected as a write on a read-only node.
const HOLD_LIMIT: usize = 64 * 1024;

/// The pieces of a session the relay touches. Set up in place (`Relay::new`, then its setters
/// on `&mut self`): built by value, each step of the chain copied the relay (~170 bytes, a
/// `memcpy` call each).
pub struct Relay<'a> {
    /// Client socket.
    pub client: &'a mut FrameReader<MaybeTls>,
    /// Server connection.
    pub conn: &'a mut ServerConn,
    /// Expected replies.
    pub queue: &'a mut Replies,
    /// The session's parameters (reported changes are recorded).
    pub params: &'a mut std::sync::Arc<SessionParams>,
    /// Set when the server sent an ErrorResponse in this unit.
    pub errored: bool,
    /// Synthesized replies waiting to go out ahead of the next run of server frames.
    synth: BytesMut,
    /// Replies held back while a read-only rejection is still possible (`None`: stream freely).
    hold: Option<Hold>,
    /// A held-back reply carried `25006`.
    rejected: bool,
    /// A held-back reply carried a recovery conflict's SQLSTATE (see [`Relay::retryable`]).
    conflicted: bool,
    /// The unit is a read on a replica: a recovery conflict may be retried on the primary.
    retry_conflict: bool,
    /// A lost connection may be retried while nothing reached the client (the unit only reads,
    /// or only resets session state).
    retry_lost: bool,
    /// The process id the client was given: its own notifications carry it (0: unchanged).
    client_pid: i32,
    /// Where forwarded server errors are counted (by SQLSTATE class).
    metrics: Option<&'a crate::metrics::Metrics>,
    /// The client's further messages of the unit, if it is not ended yet. Boxed: most units
    /// end with their Sync and stream nothing, and the relay lives in every unit's future.
    stream: Option<Box<Stream<'a>>>,
}

impl<'a> Relay<'a> {
    /// Prepare a relay.
    pub fn new(
        client: &'a mut FrameReader<MaybeTls>,
        conn: &'a mut ServerConn,
        queue: &'a mut Replies,
        params: &'a mut std::sync::Arc<SessionParams>,
    ) -> Self {
        Self {
            client,
            conn,
            queue,
            params,
            errored: false,
            synth: BytesMut::new(),
            hold: None,
            rejected: false,
            conflicted: false,
            retry_lost: false,
            retry_conflict: false,
            client_pid: 0,
            metrics: None,
            stream: None,
        }
    }

    /// Count the server errors forwarded to the client in `metrics`.
    pub fn count_errors(&mut self, metrics: &'a crate::metrics::Metrics) -> &mut Self {
        self.metrics = Some(metrics);
        self
    }

    /// The unit is not ended yet (no Sync): keep reading the client and sending its messages
    /// on while replies come back, recording into `out` what the session must know. A unit
    /// whose start ended with Flush is not `replayable`: the client may be waiting for those
    /// replies.
    pub fn streaming(
        &mut self,
        statements: &'a mut Statements,
        classifier: &'a Classifier,
        writes_move: bool,
        out: &'a mut Streamed,
        replayable: bool,
    ) -> &mut Self {
        out.frames = Some(FramesBuf::default());
        out.replayable = replayable;
        self.stream = Some(Box::new(Stream {
            statements,
            classifier,
            writes_move,
            out,
            done: false,
            to_server: BytesMut::new(),
            ahead: 0,
        }));
        self
    }

    /// True if the unit may still run again elsewhere, unseen: its replies are held back and
    /// every message it streamed is recorded.
    fn replayable(&self) -> bool {
        self.hold.is_some() && self.stream.as_ref().is_none_or(|s| s.out.replayable)
    }

    /// A statement classified as a write streamed into the unit (a pipeline's reads, then its
    /// `INSERT`, on the primary).
    fn streamed_write(&self) -> bool {
        self.stream.as_ref().is_some_and(|s| s.out.class.as_ref().is_some_and(|c| c.access == Access::Write))
    }

    /// Notifications raised by this connection's own backend are shown with `pid`, the process
    /// id the client was given in BackendKeyData.
    pub fn client_pid(&mut self, pid: i32) -> &mut Self {
        self.client_pid = pid;
        self
    }

    /// Hold replies back so that a `25006` rejection can be retried elsewhere unseen; if
    /// `rerun_if_lost` (the unit only reads, or only resets session state that dies with the
    /// connection), a connection lost before any reply can be retried too. If `read_on_replica`,
    /// so can a recovery conflict: a hot standby cancels a read whose locks or snapshot the
    /// replay needs (after `max_standby_streaming_delay`) with `40001` (`40P01` for a buffer pin),
    /// a failure of that node's replay, not of the statement (a standby runs no serializable
    /// transaction that could fail on its own).
    pub fn retryable(&mut self, rerun_if_lost: bool, read_on_replica: bool) -> &mut Self {
        self.hold = Some(Hold::default());
        self.retry_lost = rerun_if_lost;
        self.retry_conflict = read_on_replica;
        self
    }

    /// Relay replies until the unit ends.
    pub async fn run(&mut self) -> Outcome {
        // The error taken out first: a `match` on the result would keep it (~120 bytes) in
        // every unit's future for the arm that awaits.
        let lost = match self.run_inner().await {
            Ok(o) => return o,
            Err(RelayError::Client(end)) => return Outcome::End(end),
            Err(RelayError::Server(e)) => e,
        };
        self.conn.break_off();
        // Nothing reached the client yet and the unit only reads (or resets what died with
        // the connection): running it again is safe. Not once a write streamed in after it
        // started: its Sync may have committed it before the loss, and it would run twice.
        if self.retry_lost && self.replayable() && !self.streamed_write() {
            return Outcome::NeverRan(lost);
        }
        // Boxed: rare, and inline it would grow every unit's future.
        Box::pin(self.server_lost(lost)).await
    }

    async fn run_inner(&mut self) -> Result<Outcome, RelayError> {
        let mut run = 0usize;
        loop {
            if let Some(Expect::Synth(s)) = self.queue.front().copied() {
                // Synthesized replies go out ahead of the run being gathered: the replies
                // before this one in the run go first (a Parse the connection had already,
                // mid-pipeline, answered after the statements before it).
                if run > 0 {
                    self.flush(run).await?;
                    run = 0;
                }
                self.queue.pop_front();
                match s {
                    Synth::ParseComplete => messages::parse_complete(&mut self.synth),
                    Synth::CloseComplete => messages::close_complete(&mut self.synth),
                }
                continue;
            }
            if self.queue.is_empty() {
                self.flush(run).await?;
                run = 0;
                if self.stream_settled() {
                    self.release_hold().await?;
                    return Ok(Outcome::Partial);
                }
                self.pump().await?;
                continue;
            }
            // Plain replies (see `plain_run`) go on as one run, decided together.
            let plain =
                plain_run(self.queue, &self.conn.io.buffered()[run..], crate::backend::conn::MAX_SERVER_MESSAGE);
            if plain > 0 {
                // Counted only: no plain message changes what the connection owes.
                self.conn.note_plain(plain);
                run += plain;
                continue;
            }
            let header = peek_header(&self.conn.io.buffered()[run..], crate::backend::conn::MAX_SERVER_MESSAGE)
                .map_err(|e| RelayError::Server(self.conn.lost(&e.to_string())))?;
            let Some((t, total)) = header.filter(|(_, total)| self.conn.io.buffered().len() - run >= *total) else {
                self.flush(run).await?;
                run = 0;
                self.pump().await?;
                continue;
            };
            if t == tag::NOTIFICATION {
                self.show_own_notification(run, total);
            }
            let body = &self.conn.io.buffered()[run + 5..run + total];
            if t == tag::ERROR_RESPONSE && messages::is_fatal(body) {
                // The server ends the connection after this: never half-forward a FATAL.
                let info = messages::decode_error(body);
                self.flush(run).await?;
                self.conn.io.buffer().advance(total);
                self.conn.break_off();
                return Err(RelayError::Server(BackendError::Server { node: self.conn.node_name().to_string(), info }));
            }
            match self.decide(run, t, total) {
                Step::Forward => run += total,
                Step::SyncFailed => {
                    self.conn.sync_failed();
                    run += total;
                }
                Step::Swallow => {
                    self.flush(run).await?;
                    run = 0;
                    self.conn.io.buffer().advance(total);
                }
                Step::Ready(status) => {
                    if (self.rejected || self.conflicted) && status == TxStatus::Idle && self.replayable() {
                        self.conn.io.buffer().advance(run + total);
                        // A write refused goes to the primary as a write, whatever else failed.
                        return Ok(if self.rejected { Outcome::ReadOnlyRejected } else { Outcome::RecoveryConflict });
                    }
                    self.flush(run + total).await?;
                    self.release_hold().await?;
                    return Ok(Outcome::Ready(status));
                }
                Step::CopyIn => {
                    self.flush(run + total).await?;
                    self.release_hold().await?;
                    run = 0;
                    self.send_streamed().await?;
                    self.copy_in().await?;
                    if let Some(s) = self.stream.as_mut() {
                        // The copy's tail (up to its Sync) was relayed by `copy_in`.
                        s.done = true;
                    }
                }
                Step::Unexpected => {
                    return Err(RelayError::Server(self.conn.lost(&format!("unexpected message {:?}", t as char))));
                }
            }
        }
    }

    /// A notification raised by this connection's own backend is shown with the process id the
    /// client was given in BackendKeyData (rewritten in place in the buffered frame at `run`).
    fn show_own_notification(&mut self, run: usize, total: usize) {
        if self.client_pid == 0 || total < 9 {
            return;
        }
        let server_pid = self.conn.backend_pid().to_be_bytes();
        let pid = &mut self.conn.io.buffer()[run + 5..run + 9];
        if *pid == server_pid {
            pid.copy_from_slice(&self.client_pid.to_be_bytes());
        }
    }

    /// What to do with the complete non-FATAL message buffered at `run` (tag `t`, `total`
    /// bytes): the expectation step, plus what the relay notes on the way (a read-only rejection
    /// that may be retried, forwarded errors counted, reported parameters).
    fn decide(&mut self, run: usize, t: u8, total: usize) -> Step {
        self.conn.note_buffered(run, total);
        let body = &self.conn.io.buffered()[run + 5..run + total];
        let decision = step(self.queue, t, body, &mut self.errored);
        if t == tag::ERROR_RESPONSE || t == tag::PARAMETER_STATUS {
            self.note_error_or_parameter(run, t, total, decision);
        }
        decision
    }

    /// What [`Relay::decide`] notes of an ErrorResponse or a ParameterStatus. Kept out of
    /// line: the decoded strings it handles made every message's decision pay for a larger
    /// stack frame and the registers saved around it.
    #[inline(never)]
    fn note_error_or_parameter(&mut self, run: usize, t: u8, total: usize, decision: Step) {
        let body = &self.conn.io.buffered()[run + 5..run + total];
        if t == tag::ERROR_RESPONSE {
            let code = messages::decode_error(body).code;
            let read_only = code == sqlstate::READ_ONLY_SQL_TRANSACTION;
            let conflict =
                self.retry_conflict && (code == sqlstate::SERIALIZATION_FAILURE || code == sqlstate::DEADLOCK_DETECTED);
            let retried = self.hold.is_some() && (read_only || conflict);
            self.rejected |= retried && read_only;
            self.conflicted |= retried && conflict;
            if let Some(m) = self.metrics.filter(|_| !retried && matches!(decision, Step::Forward)) {
                m.client_error(&code);
            }
        } else if let Some((k, v)) = messages::decode_parameter_status(body) {
            // A swallowed report answers sluice's own state sync: the connection's, not news.
            if decision == Step::Swallow {
                self.conn.note_server_param(k, v);
            } else {
                self.note_parameter(k, v);
            }
        }
    }

    fn note_parameter(&mut self, k: String, v: String) {
        if SessionParams::note_reported_shared(self.params, &k, &v) {
            self.conn.carry(std::sync::Arc::clone(self.params.settings()));
        }
        self.conn.note_server_param(k, v);
    }

    /// Write queued synthesized replies and the first `run` buffered server bytes to the client.
    async fn flush(&mut self, run: usize) -> Result<(), RelayError> {
        let frames = self.conn.io.buffer().split_to(run).freeze();
        if self.synth.is_empty() && frames.is_empty() {
            return Ok(());
        }
        if let Some(hold) = self.hold.as_mut() {
            hold.push(std::mem::take(&mut self.synth).freeze());
            hold.push(frames);
            if hold.bytes > HOLD_LIMIT && !(self.rejected || self.conflicted) {
                return self.release_hold().await;
            }
            return Ok(());
        }
        let mut out = std::mem::take(&mut self.synth).chain(frames);
        self.client.get_mut().write_all_buf(&mut out).await.map_err(|_| RelayError::Client(SessionEnd::ClientGone))
    }

    /// Stop holding replies back: write what was held and stream from now on.
    async fn release_hold(&mut self) -> Result<(), RelayError> {
        let Some(hold) = self.hold.take() else { return Ok(()) };
        let out = if hold.more.is_empty() {
            hold.first
        } else {
            // Several small runs (e.g. a synthesized ParseComplete and the rows): one write.
            let mut joined = BytesMut::with_capacity(hold.bytes);
            joined.extend_from_slice(&hold.first);
            hold.more.iter().for_each(|r| joined.extend_from_slice(r));
            joined.freeze()
        };
        if out.is_empty() {
            return Ok(());
        }
        self.client.get_mut().write_all(&out).await.map_err(|_| RelayError::Client(SessionEnd::ClientGone))
    }

    /// Wait for more server bytes; notice a client that hangs up meanwhile.
    async fn fill(&mut self) -> Result<(), RelayError> {
        let watch = !self.client.has_buffered();
        let client = self.client.get_ref();
        tokio::select! {
            // The server first: its bytes are what the relay waits for, and a fill that is ready
            // at once leaves the watch unpolled (no random start, no readiness check).
            biased;
            r = self.conn.io.fill() => match r {
                Ok(0) => Err(RelayError::Server(self.conn.lost("server closed the connection"))),
                Ok(_) => Ok(()),
                Err(e) => Err(RelayError::Server(self.conn.lost(&e.to_string()))),
            },
            () = client_hung_up(client), if watch => Err(RelayError::Client(SessionEnd::ClientGone)),
        }
    }

    /// COPY FROM STDIN: pass client CopyData through until CopyDone or CopyFail.
    async fn copy_in(&mut self) -> Result<(), RelayError> {
        let extended = matches!(self.queue.front(), Some(Expect::Server { kind: ReplyKind::Execute, .. }));
        if extended {
            // Messages sent after Execute were read by the server in copy mode (Sync is ignored
            // there): their replies will never come. The client sends a fresh Sync after CopyDone.
            let void = self.queue.iter().skip(1).filter(|e| matches!(e, Expect::Server { kind: ReplyKind::Sync, .. }));
            self.conn.syncs_ignored_by_copy(void.count());
            self.queue.truncate(1);
        }
        loop {
            let frame = self.client_frame().await?;
            let t = frame.tag();
            if matches!(t, tag::SYNC | tag::FLUSH) {
                // The server ignores them in copy mode; not sending them keeps the count exact.
                continue;
            }
            self.conn.send(frame.bytes()).await.map_err(RelayError::Server)?;
            if t == tag::COPY_DONE || t == tag::COPY_FAIL {
                break;
            }
            if t != tag::COPY_DATA {
                let message = format!("unexpected message type {:?} during COPY from stdin", t as char);
                let end = SessionEnd::fatal(crate::error::sqlstate::PROTOCOL_VIOLATION, message, Fault::Client);
                return Err(RelayError::Client(end));
            }
        }
        if extended {
            self.forward_until_sync().await?;
        }
        Ok(())
    }

    async fn forward_until_sync(&mut self) -> Result<(), RelayError> {
        loop {
            let frame = self.client_frame().await?;
            let kind = match frame.tag() {
                tag::SYNC => Some(ReplyKind::Sync),
                tag::PARSE => Some(ReplyKind::Parse),
                tag::BIND => Some(ReplyKind::Bind),
                tag::DESCRIBE => Some(ReplyKind::Describe),
                tag::EXECUTE => Some(ReplyKind::Execute),
                tag::CLOSE => Some(ReplyKind::Close),
                tag::FLUSH => None,
                t => {
                    let message = format!("unexpected message type {:?} after COPY", t as char);
                    let end = SessionEnd::fatal(crate::error::sqlstate::PROTOCOL_VIOLATION, message, Fault::Client);
                    return Err(RelayError::Client(end));
                }
            };
            self.conn.send(frame.bytes()).await.map_err(RelayError::Server)?;
            if let Some(kind) = kind {
                self.queue.push_back(Expect::Server { kind, forward: true });
            }
            if kind == Some(ReplyKind::Sync) {
                return Ok(());
            }
        }
    }

    async fn client_frame(&mut self) -> Result<crate::protocol::Frame, RelayError> {
        match self.client.next().await {
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(RelayError::Client(SessionEnd::ClientGone)),
            Err(e) => Err(RelayError::Client(SessionEnd::unreadable(&e))),
        }
    }

    /// Pass on what the client should have seen before the server connection died; what
    /// to tell it about the loss is the session's decision.
    async fn server_lost(&mut self, e: BackendError) -> Outcome {
        if self.flush(0).await.is_err() || self.release_hold().await.is_err() {
            return Outcome::End(SessionEnd::ClientGone);
        }
        Outcome::ServerLost(e)
    }
}

/// Replies held back, as the split-off runs themselves (no copy), and how many bytes they hold.
/// The first run is kept apart: most units hold exactly one (all their replies, up to
/// ReadyForQuery), and then no list is allocated.
#[derive(Default)]
struct Hold {
    first: Bytes,
    more: Vec<Bytes>,
    bytes: usize,
}

impl Hold {
    fn push(&mut self, part: Bytes) {
        if part.is_empty() {
            return;
        }
        self.bytes += part.len();
        if self.first.is_empty() {
            self.first = part;
        } else {
            self.more.push(part);
        }
    }
}

enum RelayError {
    Client(SessionEnd),
    Server(BackendError),
}

/// How long a statement runs before sluice starts watching for its client hanging up (watching
/// costs a syscall; most statements finish sooner).
const HANG_UP_WATCH_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// Resolves when the client closes its socket; never resolves while it is merely sending more.
///
/// No timer is armed while the client is quiet: the wait is on the socket's readiness (no
/// syscall; a read that emptied the socket cleared it), which a hang-up or more client bytes
/// set. Only then is the delay honoured (a timer for what is left of it) before the peek that
/// tells the two apart: the same moment of detection as a timer armed per wait, without one
/// timer registered and dropped per server read.
async fn client_hung_up(client: &MaybeTls) {
    // An in-memory client (benches) has no socket to peek at: it never hangs up unseen.
    let Some(tcp) = client.tcp() else { return std::future::pending().await };
    let since = std::time::Instant::now();
    // An error here shows again in the peek.
    let _ = std::future::poll_fn(|cx| tcp.poll_read_ready(cx)).await;
    let waited = since.elapsed();
    if waited < HANG_UP_WATCH_DELAY {
        // Boxed: only a client that sends while its statement runs gets here, and inline
        // the timer would grow every unit's future.
        Box::pin(tokio::time::sleep(HANG_UP_WATCH_DELAY - waited)).await;
    }
    // Polled by hand: `TcpStream::peek`'s future is ~230 bytes, kept in every unit's.
    let mut probe = [0u8; 1];
    let mut probe = tokio::io::ReadBuf::new(&mut probe);
    match std::future::poll_fn(|cx| tcp.poll_peek(cx, &mut probe)).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending::<()>().await,
    }
}
