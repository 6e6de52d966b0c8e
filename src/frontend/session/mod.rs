//! One client session: the phases of a unit, in order.
//!
//! read a unit (one Query, or the extended messages sent so far, up to Sync/Flush) -> classify
//! -> route on one topology snapshot -> check out a server connection (moving on to the next
//! candidate only if nothing was sent) -> make its session parameters match -> forward -> relay
//! replies up to ReadyForQuery, full duplex (the rest of an extended unit streams in meanwhile)
//! -> release by the session's state.
//!
//! This file sequences the phases; `attempt` runs one unit (and runs it again on the primary if
//! a replica refused it unseen), `login` finishes the handshake, `conn` gets, prepares, holds and
//! gives back server connections (routing included), `accepted` remembers statements servers
//! accepted, `idle` serves a held connection while the client is idle. `state` is the session's
//! hold on a server connection (one enum, pure transitions), `block` the extended block on it,
//! `end` why a session ends (typed, with SQLSTATE and fault). The pure facts about a unit live in
//! `frontend::unit`, the relay in `frontend::relay`, what a streaming unit does with each client
//! message in `frontend::duplex`.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::cancel::CancelKey;
use super::executed::{executed, executed_statements, executed_texts, Executed};
use super::handshake::Login;
use super::params::SessionParams;
use super::relay::{Outcome, Relay, Streamed};
use super::statements::{Batch, Statements};
mod aborted;
mod accepted;
mod attempt;
mod block;
mod conn;
pub(crate) mod end;
mod idle;
mod in_block;
mod judge;
mod login;
mod state;

use attempt::{whole_unit, Tried};
use block::{Block, OpenBlock};
use end::{Fault, SessionEnd};
use state::{Event, SessionState};

use super::unit::{
    is_extended, is_frontend_tag, is_reset_all, is_reset_alone, no_node_error, query_ends_tx_outside_block,
    resets_statements, with_streamed, AfterLoss, Capture, Resolved, Unit, LSN_SQL,
};
use super::Shared;
use crate::backend::conn::{column, parse_lsn};
use crate::backend::settings::set_config_name;
use crate::backend::{Checkout, Pool, ServerConn};
use crate::config::{Config, PoolMode};
use crate::error::{sqlstate, BackendError};
use crate::live::Seen;
use crate::metrics::UnitOutcome;
use crate::protocol::frames::FramesBuf;
use crate::protocol::messages::{self, Severity};
use crate::protocol::{tag, Frame, FrameReader, Frames, Kinds, Msg, TxStatus};
use crate::router::{self, Access, Class, Classifier, Reason, Route, SessionEffect, SessionView, TxEffect};
use crate::tls::MaybeTls;
use crate::topology::Role;

/// Most messages in one extended batch before it is sent without waiting for Sync (the relay
/// streams the rest of the unit in).
const MAX_BATCH_MESSAGES: usize = 1024;

/// How a unit begins: with a message read past the end of the last one (`Rare::lookahead`), or
/// with the whole message at the front of the client's buffer, left there (its tag) so that it
/// can be split off together with the messages buffered behind it.
enum Start {
    Frame(Frame),
    /// Its tag and length.
    Buffered(u8, usize),
}

impl Start {
    fn tag(&self) -> u8 {
        match self {
            Start::Frame(f) => f.tag(),
            Start::Buffered(t, _) => *t,
        }
    }
}

/// True after the message that ends an extended batch.
fn ends_batch(t: u8) -> bool {
    t == tag::SYNC || t == tag::FLUSH
}

/// The server connection the session holds (why, and in which state: [`SessionState`]).
struct Held {
    checkout: Checkout,
}

/// Where the session keeps [`Held`]: a box made at its first checkout and kept, empty between
/// checkouts, until the session ends. 8 bytes in every idle client's future, as the `Box<Held>`
/// made per checkout was (inline, 56 bytes more took the client's task to the next of tokio's
/// 128-byte task cell sizes: +1.4 MiB for 10,000 idle clients), without its `malloc` in `hold`
/// and `free` at release per unit. An idle client that ran a unit keeps the 64-byte box.
#[derive(Default)]
struct HeldSlot(Option<Box<Option<Held>>>);

impl HeldSlot {
    fn is_some(&self) -> bool {
        self.as_ref().is_some()
    }

    fn is_none(&self) -> bool {
        !self.is_some()
    }

    fn as_ref(&self) -> Option<&Held> {
        self.0.as_deref()?.as_ref()
    }

    fn as_mut(&mut self) -> Option<&mut Held> {
        self.0.as_deref_mut()?.as_mut()
    }

    /// The held connection, taken out (the box stays for the next one).
    fn take(&mut self) -> Option<Held> {
        self.0.as_deref_mut()?.take()
    }

    /// Hold `held` (the box is made at the first checkout only).
    fn put(&mut self, held: Held) {
        match self.0.as_deref_mut() {
            Some(slot) => *slot = Some(held),
            None => self.0 = Some(Box::new(Some(held))),
        }
    }
}

/// A write position not asked for (see `Session::write_unmeasured`): higher than any real one,
/// so no replica has replayed it and the session's reads go to the primary, the first of them
/// asking for the position behind it; with no primary, the reads wait for one.
///
/// Why: the position costs a statement on the primary behind every write transaction, and it
/// serves only to choose among replicas. With none readable (a single node, every replica
/// down or lagging) it is put off until a read could use it.
const UNMEASURED: u64 = u64::MAX;

/// The parts of a session that stay at their defaults until it runs a unit: one pointer in
/// the session (the future every idle client keeps) instead of ~200 bytes inline. Nothing the
/// login does may make it: an idle client would then keep it (a 240-byte allocation per client
/// when the login looked its pool up through it).
#[derive(Default)]
struct Rare {
    /// The client's prepared statements.
    statements: Statements,
    /// A message read past the end of the last unit, to start the next one.
    lookahead: Option<Frame>,
    /// WAL position after this session's last write (read-your-writes); [`UNMEASURED`] if it
    /// wrote while no replica could take its reads and the position was not asked for yet.
    last_write_lsn: Option<u64>,
    /// A unit changed functions: reload the catalog when the transaction is over.
    catalog_stale: bool,
    /// Its open transaction died with its server connection: answered here until it ends.
    /// (Boxed: 72 bytes, in every session that ran a unit, for a state few ever reach.)
    aborted: Option<Box<aborted::Aborted>>,
    /// A unit the client had not ended with Sync failed without a server (its connection was
    /// lost): what the client sends up to its Sync is discarded, the Sync answered here.
    skip_to_sync: bool,
    /// The connection of an extended block that wrote was lost while the client was idle: its
    /// next message gets this error (SQLSTATE, message), then as `skip_to_sync`. Boxed: rare,
    /// and `Rare` stays within its allocator chunk (see the size test).
    block_lost: Option<Box<(String, String)>>,
    /// Session commands run in the open transaction block: they join the history if it
    /// commits (see `in_block`).
    pending_sets: Vec<String>,
    /// What ran in the extended block a Flush left open, judged with the unit that ends it
    /// (boxed: rare, and every session that ran a unit has a `Rare`).
    open_block: Option<Box<OpenBlock>>,
    /// What classifying the running unit found, taken by its translation: here rather than in
    /// the unit's future, which it would push past glibc's per-thread cache (see `boxed`).
    resolved: Resolved,
    /// The next checkout opens a new server connection instead of taking an idle one: the
    /// last one was lost under a unit that runs again (see `Pool::checkout_new_at`).
    new_conn: bool,
    /// The version of the live configuration this session read last (see
    /// [`Session::config`]). Here, not in the session: 8 bytes more in every idle client's
    /// task would take it past its size (`an_idle_clients_task_keeps_nothing_of_its_login`).
    config: Seen<Config>,
}

/// [`Rare`], allocated on first use. A field of its own, so that borrowing it leaves the
/// session's other fields free.
#[derive(Default)]
struct Rarely(Option<Box<Rare>>);

impl Rarely {
    /// The parts, made now if they were not yet.
    fn get(&mut self) -> &mut Rare {
        self.0.get_or_insert_with(Box::default)
    }

    /// The parts if they were made; `None` means all are at their defaults.
    fn peek(&self) -> Option<&Rare> {
        self.0.as_deref()
    }

    /// The parts if they were made, without making them.
    fn peek_mut(&mut self) -> Option<&mut Rare> {
        self.0.as_deref_mut()
    }
}

/// One client's session.
pub struct Session<'a> {
    shared: &'a Shared,
    client: FrameReader<MaybeTls>,
    /// Shared with the sessions that logged in with the same parameters; copied on change.
    params: Arc<SessionParams>,
    /// In a box kept between checkouts (see [`HeldSlot`]).
    held: HeldSlot,
    /// Why `held` is held, its transaction status and extended block.
    state: SessionState,
    /// The classifier of this session's database.
    classifier: Arc<Classifier>,
    /// What only a session that ran units needs; made on the first.
    rare: Rarely,
    /// This session's pool on each node, looked up once (by the login already, which is why
    /// they are not in `rare`). A boxed slice, 16 bytes in the idle future: reloads that add
    /// nodes, the only reason to grow it, are rare.
    pools: Box<[Option<Arc<Pool>>]>,
    /// Its place in the client registry (drain, KILL, SHOW CLIENTS), its cancel key, and
    /// its user and database (`entry.info()`): one field for all, read where they are needed.
    entry: super::lifecycle::ClientEntry<'a>,
}

impl<'a> Session<'a> {
    /// A session for an authenticated client.
    #[must_use]
    pub fn new(shared: &'a Shared, login: Login) -> Self {
        let mut client = login.client;
        client.set_max(shared.config.limits.max_message_bytes);
        client.set_accepted_tags(is_frontend_tag);
        let classifier = shared.classifiers.get(&login.database, &login.user);
        let info = super::lifecycle::ClientInfo {
            id: 0,
            user: login.user,
            database: login.database,
            addr: login.addr,
            since_secs: super::lifecycle::unix_secs(std::time::SystemTime::now()),
        };
        let entry = shared.lifecycle.register(info);
        Self {
            shared,
            client,
            params: shared.session_states.intern_login(login.params),
            held: HeldSlot::default(),
            state: SessionState::Free,
            classifier,
            // Made on the first unit: an idle client holds none of it.
            rare: Rarely::default(),
            pools: Box::default(),
            entry,
        }
    }

    /// Finish the login: the parameters, key and ReadyForQuery, behind `owed` (what
    /// authentication still owes the client: SCRAM's SASLFinal), in one `send`. The session
    /// to [`run`](Session::run), or `None` if it ended here (and was closed).
    ///
    /// The session moves through this future (boxed by the client's task) and back out:
    /// awaited inside `run`, `owed` would stay in every idle session's future (an argument of
    /// a future lives as long as it does), and awaited beside the session in the task, the
    /// session would be kept twice there.
    #[allow(clippy::manual_async_fn)] // on purpose: an `async fn` keeps `self` twice
    pub fn login(mut self, owed: BytesMut) -> impl std::future::Future<Output = Option<Self>> + 'a {
        async move {
            match self.login_reply(owed).await {
                Ok(()) => Some(self),
                Err(end) => {
                    Box::pin(self.end(end)).await;
                    None
                }
            }
        }
    }

    /// [`Session::login`], built in its box (`Box::pin` built the ~650-byte future on the
    /// stack and copied it over, once per login).
    pub fn login_boxed(
        self,
        owed: BytesMut,
    ) -> std::pin::Pin<Box<impl std::future::Future<Output = Option<Self>> + 'a>> {
        boxed(|| self.login(owed))
    }

    /// Serve units until the client leaves (after [`Session::login`]).
    #[allow(clippy::manual_async_fn)] // on purpose, see below
    pub fn run(mut self) -> impl std::future::Future<Output = ()> + 'a {
        // Not an `async fn`: one would keep its by-value `self` twice (the argument and the
        // local it is moved into), 536 bytes more for every idle client.
        async move {
            // Every phase but the wait for the next message is boxed (here and in `serve`): a
            // future is as large as its largest state, and an idle session should not carry them.
            let end = self.serve().await;
            Box::pin(self.end(end)).await;
        }
    }

    /// Tell the client why the session ends if it is an error, then close it: the client
    /// socket first, then the held connection is given back (reused, drained or closed by its
    /// protocol state; reset first if it carries session state).
    ///
    /// One future for all of it, boxed by every session that ends: with the close a future of
    /// its own (`finish(self)`), the session was in this one twice, and a release future
    /// beside it (1,280 bytes, past the 1,032 glibc's per-thread cache keeps: a slow `malloc`
    /// and `free` per session). The release is boxed: a session rarely holds a connection at
    /// its end (a pinned or session-pooled one, or a unit cut short).
    async fn end(mut self, end: SessionEnd) {
        if let SessionEnd::Fatal { code, message, fault } = &end {
            tracing::debug!(code, message, ?fault, "session ends");
            self.fatal(code, message).await;
        }
        drop(end);
        self.key().set_target(None);
        // TLS says goodbye with close_notify; a plain socket's close sends the same FIN a
        // `shutdown` would, one syscall less per connection (it is closed before the server
        // connection is given back, so the client still sees the end at once).
        if self.client.get_ref().is_tls() {
            let _ = self.client.get_mut().shutdown().await;
        }
        let needs_reset = self.state.needs_reset();
        let Session { client, mut held, .. } = self;
        drop(client);
        let Some(held) = held.take() else { return };
        Box::pin(held.checkout.release(needs_reset)).await;
    }

    /// Serve units until the session ends, and say why it did.
    ///
    /// What an idle session keeps is this future's wait for the next message, so everything
    /// else is boxed: the login (before this, [`Session::login`]), and each unit from its first
    /// message on (`take_unit`). Not an `async fn`, which would keep `self` twice.
    #[allow(clippy::manual_async_fn)] // on purpose, see above
    fn serve(&mut self) -> impl std::future::Future<Output = SessionEnd> + use<'_, 'a> {
        async move {
            loop {
                let start = match self.next_start().await {
                    Ok(Some(s)) => s,
                    Ok(None) => return SessionEnd::ClientGone,
                    Err(end) => return end,
                };
                // The start moves into the box: held here across an await, it would sit in the
                // idle wait's future too.
                if let Err(end) = boxed(|| self.take_unit(start)).await {
                    return end;
                }
            }
        }
    }

    /// The unit `start` begins (the rest of an extended batch read first), run; a message
    /// that begins no unit is skipped, or ends the session.
    #[allow(clippy::manual_async_fn)] // on purpose, see below
    fn take_unit(&mut self, start: Start) -> impl std::future::Future<Output = Result<(), SessionEnd>> + use<'_, 'a> {
        // Not an `async fn`: see `run_unit`.
        async move {
            let first = start.tag();
            if self.skipping_to_sync() && !matches!(first, tag::SYNC | tag::TERMINATE) {
                self.take_start(start)?;
                return Ok(());
            }
            let unit = match first {
                tag::TERMINATE => return Err(SessionEnd::ClientGone),
                tag::QUERY | tag::FUNCTION_CALL => Unit::Simple(self.take_start(start)?),
                tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE | tag::SYNC | tag::FLUSH => {
                    // Not awaited when the batch is all here (most units): the wait's future is
                    // neither made nor moved.
                    let first = self.first_run(start)?;
                    Unit::Extended(if self.batch_taken(first.len(), first.last_tag()) {
                        first
                    } else {
                        self.collect_batch(first).await?
                    })
                }
                // Copy messages outside COPY are ignored, as PostgreSQL does.
                tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => {
                    self.take_start(start)?;
                    return Ok(());
                }
                other => {
                    let msg = format!("invalid frontend message type {}", other);
                    return Err(SessionEnd::fatal(sqlstate::PROTOCOL_VIOLATION, msg, Fault::Client));
                }
            };
            self.run_unit(unit).await
        }
    }

    /// The client's cancel key.
    fn key(&self) -> &CancelKey {
        self.entry.key()
    }

    /// The login user.
    fn user(&self) -> &str {
        &self.entry.info().user
    }

    /// The database.
    fn database(&self) -> &str {
        &self.entry.info().database
    }

    /// The live configuration: the version this session read last, while no reload published
    /// another (an atomic load, where reading the current one is an arc-swap load, ~50
    /// instructions: twice per unit, the idle timeout and the unit's checkout). A session that
    /// has not run a unit keeps nothing ([`Rare`] is not made for it).
    #[inline]
    fn config(&mut self) -> &'static Config {
        let live = &self.shared.config;
        match self.rare.peek_mut() {
            Some(rare) => live.current(&mut rare.config),
            None => live.snapshot(),
        }
    }

    /// WAL position after this session's last write, if it wrote (read-your-writes).
    fn last_write_lsn(&self) -> Option<u64> {
        self.rare.peek().and_then(|r| r.last_write_lsn)
    }

    /// The session wrote (on the primary) at a position it did not ask for: no replica
    /// could take its reads then, so the query would have bought nothing.
    fn write_unmeasured(&mut self) {
        self.rare.get().last_write_lsn = Some(UNMEASURED);
    }

    /// True while an errored extended block waits for its Sync.
    fn skipping_to_sync(&self) -> bool {
        self.state.block() == Block::Failed
    }

    /// The message a unit begins with, split off the client's buffer alone.
    fn take_start(&mut self, start: Start) -> Result<Frame, SessionEnd> {
        match start {
            Start::Frame(f) => Ok(f),
            // Whole and accepted when it was found, and nothing was read since: split off
            // without checking its tag and length again.
            Start::Buffered(_, total) => self.client.split_whole(total).ok_or(SessionEnd::ClientGone),
        }
    }

    /// The next client message, honouring the idle timeout.
    async fn next_frame(&mut self) -> Result<Option<Frame>, SessionEnd> {
        match self.next_start().await? {
            Some(start) => self.take_start(start).map(Some),
            None => Ok(None),
        }
    }

    /// The start of the next client message ([`Start`]), honouring the idle timeout.
    ///
    /// Not an `async fn` (which keeps `self` twice): every idle client waits in this future.
    #[allow(clippy::manual_async_fn)] // on purpose, see above
    fn next_start(&mut self) -> impl std::future::Future<Output = Result<Option<Start>, SessionEnd>> + use<'_, 'a> {
        async move {
            if let Some(f) = self.rare.peek_mut().and_then(|r| r.lookahead.take()) {
                return Ok(Some(Start::Frame(f)));
            }
            // Not boxed: its wait is a poll of two readers, no larger than the read below (the
            // timeout is boxed: only a session with an idle timeout pays for its state).
            if self.held.is_some() {
                self.watch_while_idle().await?;
            }
            // The live configuration (an arc-swap load) is read only when the timeout applies:
            // not between the statements of a transaction.
            let idle = if self.held.is_none() { self.config().limits.idle_client_timeout } else { None };
            let between_units = self.state.tx() == TxStatus::Idle;
            // Lean: an idle client holds no read buffer while it says nothing.
            let client = &mut self.client;
            let read = self.entry.unless_stopped(between_units, client.whole_lean());
            let r = match idle {
                Some(d) => match Box::pin(tokio::time::timeout(d, read)).await {
                    Ok(r) => r,
                    Err(_) => {
                        let message = "terminating connection due to idle timeout";
                        return Err(SessionEnd::fatal(sqlstate::IDLE_SESSION_TIMEOUT, message, Fault::Proxy));
                    }
                },
                None => read.await,
            };
            let r = r.map_err(|stopped| {
                let (code, message) = stopped.error();
                SessionEnd::fatal(code, message, Fault::Proxy)
            })?;
            let tag = r.map_err(|e| match e {
                crate::protocol::framer::ReadError::Frame(f) => SessionEnd::bad_frame(&f),
                other => SessionEnd::fatal(sqlstate::PROTOCOL_VIOLATION, other.to_string(), Fault::Client),
            })?;
            Ok(tag.map(|(t, total)| Start::Buffered(t, total)))
        }
    }

    /// The extended message `start` begins a batch with and, in one piece with it, the whole
    /// extended messages buffered behind it, up to a Sync or Flush (one `Bytes` for the unit,
    /// not one per message and a `Vec`).
    ///
    /// The unit began with its first message, read through `next_start` (stop slot, drain,
    /// idle timeout, the held connection's watch), and none of those waits applies to bytes
    /// already here. (The watch passes on what the held connection sent and returns once the
    /// client has bytes: for the messages behind the first it has nothing left to do.)
    fn first_run(&mut self, start: Start) -> Result<Frames, SessionEnd> {
        Ok(match start {
            Start::Frame(f) => Frames::from(f),
            Start::Buffered(..) => match self.client.split_run(MAX_BATCH_MESSAGES, is_extended, ends_batch) {
                Some(run) => run,
                None => Frames::from(self.take_start(start)?),
            },
        })
    }

    /// True if a batch of `n` messages, the last tagged `last`, goes to the server as it is:
    /// it ended (Sync, Flush, the message bound), or nothing more of it is here yet (the relay
    /// streams the rest in while it runs).
    fn batch_taken(&self, n: usize, last: Option<u8>) -> bool {
        last.is_some_and(ends_batch)
            || n >= MAX_BATCH_MESSAGES
            || !self.client.has_buffered() && self.rare.peek().is_none_or(|r| r.lookahead.is_none())
    }

    /// The rest of a batch that begins with `first` and comes in pieces (a message not whole
    /// yet, one read past the last unit): gathered in one growing buffer, up to a Sync or Flush
    /// or what the client sent so far (see [`Session::batch_taken`]).
    async fn collect_batch(&mut self, first: Frames) -> Result<Frames, SessionEnd> {
        let (mut n, mut last) = (first.len(), first.last_tag());
        let mut more: Option<FramesBuf> = None;
        loop {
            if self.batch_taken(n, last) {
                return Ok(more.map_or(first, FramesBuf::freeze));
            }
            let no_lookahead = self.rare.peek().is_none_or(|r| r.lookahead.is_none());
            let all = more.get_or_insert_with(|| FramesBuf::from(&first));
            if no_lookahead {
                if let Some(run) = self.client.split_run(MAX_BATCH_MESSAGES - n, is_extended, ends_batch) {
                    all.append(&run);
                    (n, last) = (n + run.len(), run.last_tag());
                    continue;
                }
            }
            // Anything else (a partial message, a framing error, a message that needs its own
            // unit) goes through `next_frame`.
            match self.next_frame().await? {
                Some(f) if is_extended(f.tag()) => {
                    more.get_or_insert_with(FramesBuf::default).push(f.msg());
                    (n, last) = (n + 1, Some(f.tag()));
                }
                Some(f) => {
                    self.rare.get().lookahead = Some(f);
                    return Ok(more.map_or(first, FramesBuf::freeze));
                }
                None => return Err(SessionEnd::ClientGone),
            }
        }
    }

    /// Read the primary's WAL position after a writing unit: the reply of the query pipelined
    /// behind it, or (after a possible COPY) a query sent now.
    async fn read_write_lsn(&mut self, capture: Capture) {
        let conn = self.conn();
        let reply = match capture {
            Capture::After => conn.run_internal(LSN_SQL).await,
            _ => conn.read_internal_reply().await,
        };
        match reply {
            Ok(rows) => {
                let lsn = rows.first().and_then(|r| column(r, 0)).and_then(|t| parse_lsn(&t));
                let rare = self.rare.get();
                rare.last_write_lsn = match rare.last_write_lsn {
                    // Asked later than the write, so at or past it: the position replaces the mark.
                    Some(UNMEASURED) => lsn.or(Some(UNMEASURED)),
                    known => known.max(lsn),
                };
                tracing::debug!(lsn = ?rare.last_write_lsn, rows = rows.len(), "write position");
            }
            // On a node in recovery the query fails: nothing was written there.
            Err(BackendError::Server { .. }) => {}
            Err(e) => {
                tracing::info!(error = %e, "server connection lost after a write");
                self.drop_held();
            }
        }
    }

    /// The server connection died under a unit. The client hears one error: `ERROR` with the
    /// server's SQLSTATE and ReadyForQuery when the session can go on without what died with
    /// the connection, else `FATAL` and the session ends (never FATAL then ReadyForQuery).
    /// `synced`: the client has sent the unit's Sync (see [`Session::unit_error`]).
    async fn server_lost(&mut self, e: &BackendError, ends_block: bool, synced: bool) -> Result<(), SessionEnd> {
        tracing::info!(error = %e, "server connection lost mid-statement");
        let verdict = self.state.on_loss(ends_block);
        self.drop_held_and_siblings();
        match verdict {
            // The unit's error tells the client; a block that failed before has its Sync answered.
            AfterLoss::Continue | AfterLoss::BlockFailed => {
                self.unit_error(synced, e.sqlstate(), &end::statement_lost(e)).await
            }
            AfterLoss::BlockLost => self.unit_error(synced, e.sqlstate(), &end::block_lost(e)).await,
            AfterLoss::TransactionEnded => self.unit_error(synced, e.sqlstate(), &end::transaction_end_lost(e)).await,
            AfterLoss::TransactionLost => {
                let msg = end::transaction_lost(e);
                self.shared.metrics.client_error(e.sqlstate());
                // Not synced yet: the failed block discards up to the Sync, answered `E` there.
                self.rare.get().aborted = Some(Box::new(aborted::Aborted::lost(synced)));
                let mut buf = BytesMut::new();
                messages::error_response(&mut buf, Severity::Error, e.sqlstate(), &msg);
                if synced {
                    messages::ready_for_query(&mut buf, TxStatus::Failed);
                }
                self.send_client(&buf).await
            }
            AfterLoss::End(what) => Err(SessionEnd::server_lost(e, what)),
        }
    }

    /// An error for a unit that failed without a server; the session goes on. A client that
    /// has not sent the unit's Sync yet (a block ended by Flush: it waits for the replies it
    /// asked for) gets only the error now; as PostgreSQL does after an error, what it sends up
    /// to its Sync is then discarded and the Sync answered with ReadyForQuery. A ReadyForQuery
    /// sent now would be one too many: asyncpg, whose prepare is Parse/Describe/Flush, then
    /// reads the second as a protocol violation and closes its connection.
    async fn unit_error(&mut self, synced: bool, code: &str, message: &str) -> Result<(), SessionEnd> {
        if synced {
            return self.statement_error(code, message).await;
        }
        self.shared.metrics.client_error(code);
        self.rare.get().skip_to_sync = true;
        let mut buf = BytesMut::new();
        messages::error_response(&mut buf, Severity::Error, code, message);
        self.send_client(&buf).await
    }

    /// An error for this statement; the session goes on.
    async fn statement_error(&mut self, code: &str, message: &str) -> Result<(), SessionEnd> {
        self.shared.metrics.client_error(code);
        let status = self.state.tx();
        let mut buf = BytesMut::new();
        messages::error_response(&mut buf, Severity::Error, code, message);
        messages::ready_for_query(&mut buf, status);
        self.send_client(&buf).await
    }

    /// Write to the client; a failed write means it is gone.
    async fn send_client(&mut self, buf: &[u8]) -> Result<(), SessionEnd> {
        self.client.get_mut().write_all(buf).await.map_err(|_| SessionEnd::ClientGone)
    }

    async fn fatal(&mut self, code: &str, message: &str) {
        self.shared.metrics.client_error(code);
        let mut buf = BytesMut::new();
        messages::error_response(&mut buf, Severity::Fatal, code, message);
        let _ = self.client.get_mut().write_all(&buf).await;
    }
}

/// `Box::pin` of the future `make` returns, built in its allocation: `Box::pin(fut)` builds a
/// unit's future (~1 KB) on the stack first and copies all of it over, once per unit.
///
/// A unit's future must stay within glibc's per-thread cache (1,032 bytes; a test holds it
/// there): its rare phases (a second try, the failover wait, opening a server connection, a
/// lost server, the round-trip state sync) are boxed where they begin, and the common path
/// keeps no value across more awaits than it must (a value live across two awaits takes its
/// room in every state of the future).
fn boxed<F: std::future::Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

/// The reply to a transaction end sent outside a transaction block (see
/// [`query_ends_tx_outside_block`]): what PostgreSQL answers, without a server.
fn answer_tx_end_locally(frame: &Frame) -> Option<BytesMut> {
    if frame.tag() != tag::QUERY {
        return None;
    }
    let command = query_ends_tx_outside_block(frame.body())?;
    let mut buf = BytesMut::new();
    messages::warning_notice(&mut buf, "25P01", "there is no transaction in progress");
    messages::command_complete(&mut buf, command);
    messages::ready_for_query(&mut buf, TxStatus::Idle);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::future_size;

    /// A unit's future is boxed once per statement (`serve`): past 1,032 bytes (glibc's
    /// largest per-thread cache chunk, 1,040 with its header), `malloc` and `free` take the
    /// arenas' slow path for every statement. `-Zprint-type-sizes` showed the same layout in
    /// test and release builds (1,584 bytes in both at a step of the change that made it
    /// small; 3,936 before it).
    #[test]
    fn a_units_future_fits_glibcs_per_thread_cache() {
        let size = future_size::<&mut Session<'static>, Start, _, _>(&Session::take_unit);
        assert!(size <= 1_032, "the unit future is {size} bytes: box the rare phase that grew it");
    }

    /// A unit's result moves by value through its futures several times per statement: at
    /// most 128 bytes, the moves are inline stores (at 256, with `Streamed` inline, each was a
    /// `memcpy` call).
    #[test]
    fn a_units_result_moves_without_memcpy() {
        let size = std::mem::size_of::<Tried>();
        assert!(size <= 128, "Tried is {size} bytes: box what only rare outcomes carry");
    }

    /// Every session that ran a unit keeps its `Rare` (10,000 clients that ran one: 10,000 of
    /// them): at most 200 bytes, a 208-byte chunk in glibc's malloc (192 with the kept
    /// configuration and the boxed `Aborted`, 200 with the boxed lost-block error; 248, a
    /// 256-byte chunk, before them).
    #[test]
    fn the_rare_parts_keep_their_allocator_chunk() {
        let size = std::mem::size_of::<Rare>();
        assert!(size <= 200, "Rare is {size} bytes: box what only some sessions need");
    }

    #[test]
    fn the_end_box_fits_the_allocators_thread_cache() {
        // Every session boxes this future as it ends: past 1,032 bytes (the largest chunk
        // glibc keeps in its per-thread cache) each `malloc` and `free` of it is slow.
        let size = future_size::<Session<'static>, SessionEnd, _, _>(&Session::end);
        assert!(size <= 1_032, "the end future is {size} bytes");
    }
}
