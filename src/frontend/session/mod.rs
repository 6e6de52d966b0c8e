//! One client session: the phases of a unit, in order.
//!
//! read a unit (one Query, or an extended batch up to Sync/Flush) -> classify -> route on one
//! topology snapshot -> check out a server connection (moving on to the next candidate only if
//! nothing was sent) -> make its session parameters match -> forward -> relay replies up to
//! ReadyForQuery -> release by the transaction status byte.
//!
//! This file sequences the phases; `login` finishes the handshake, `conn` gets, prepares, holds
//! and gives back server connections (routing included), `accepted` remembers statements servers
//! accepted, `idle` serves a held connection while the client is idle. The pure facts about a unit live in `frontend::unit`, the relay in `frontend::relay`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::cancel::{CancelKey, CancelTarget};
use super::handshake::Login;
use super::params::SessionParams;
use super::relay::{Outcome, Relay};
use super::statements::{Batch, Statements};
mod aborted;
mod accepted;
mod conn;
mod idle;
mod login;

use super::unit::{
    after_loss, is_extended, is_frontend_tag, is_reset_all, lsn_capture, no_node_error, resets_statements,
    tx_end_outside_block, unit_texts, AfterLoss, Capture, Unit, LSN_SQL,
};
use super::Shared;
use crate::backend::conn::{columns, parse_lsn};
use crate::backend::{Checkout, Pool, ServerConn};
use crate::config::PoolMode;
use crate::error::{sqlstate, BackendError};
use crate::metrics::UnitOutcome;
use crate::protocol::messages::{self, Severity};
use crate::protocol::{tag, Frame, FrameError, FrameReader, TxStatus};
use crate::router::{self, Access, Class, Classifier, Reason, Route, SessionEffect, SessionView, TxEffect};
use crate::tls::MaybeTls;
use crate::topology::Role;

/// Most messages in one extended batch before it is sent without waiting for Sync.
const MAX_BATCH_MESSAGES: usize = 1024;

/// A server connection the session holds across units, and why.
struct Held {
    checkout: Checkout,
    status: TxStatus,
    block: Block,
}

/// The extended-protocol block on the held connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    /// None open: the last unit ended with ReadyForQuery.
    Closed,
    /// Left open by Flush; the next messages continue it.
    Open,
    /// Open, and the server reported an error in it: like PostgreSQL, every client message up
    /// to the next Sync is discarded, and that Sync ends the block.
    Failed,
}

/// One client's session.
pub struct Session<'a> {
    shared: &'a Shared,
    client: FrameReader<MaybeTls>,
    user: String,
    database: String,
    params: SessionParams,
    statements: Statements,
    held: Option<Held>,
    /// State that lives on one server connection (temp table, LISTEN, SQL PREPARE...).
    pinned: bool,
    key: CancelKey,
    lookahead: Option<Frame>,
    /// The classifier of this session's database.
    classifier: Arc<Classifier>,
    /// WAL position after this session's last write (read-your-writes).
    last_write_lsn: Option<u64>,
    /// This session's pool on each node, looked up once.
    pools: Vec<Option<Arc<Pool>>>,
    /// A unit changed functions: reload the catalog when the transaction is over.
    catalog_stale: bool,
    /// Its open transaction died with its server connection: answered here until it ends.
    aborted: Option<aborted::Aborted>,
    /// Its place in the client registry (drain, KILL, SHOW CLIENTS).
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
        let key = shared.cancels.register();
        let entry = shared.lifecycle.register(super::lifecycle::ClientInfo {
            id: key.pid,
            user: login.user.clone(),
            database: login.database.clone(),
            addr: client.get_ref().tcp().peer_addr().ok(),
            since: std::time::SystemTime::now(),
        });
        Self {
            shared,
            client,
            user: login.user,
            database: login.database,
            params: login.params,
            statements: Statements::default(),
            held: None,
            pinned: false,
            key,
            lookahead: None,
            classifier,
            last_write_lsn: None,
            pools: vec![None; shared.config.nodes.len()],
            catalog_stale: false,
            aborted: None,
            entry,
        }
    }

    /// Finish the login (parameters, key, ReadyForQuery), then serve units until the client leaves.
    #[allow(clippy::manual_async_fn)] // on purpose, see below
    pub fn run(mut self) -> impl std::future::Future<Output = ()> + 'a {
        // Not an `async fn`: one would keep its by-value `self` twice (the argument and the
        // local it is moved into), 536 bytes more for every idle client.
        async move {
            // Every phase but the wait for the next message is boxed (here and in `serve`): a
            // future is as large as its largest state, and an idle session should not carry them.
            if Box::pin(self.login()).await.is_ok() {
                self.serve().await;
            }
            Box::pin(self.finish()).await;
        }
    }

    async fn serve(&mut self) {
        loop {
            let frame = match self.next_frame().await {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err((code, msg)) => return Box::pin(self.fatal(code, &msg)).await,
            };
            if self.skipping_to_sync() && !matches!(frame.tag(), tag::SYNC | tag::TERMINATE) {
                continue;
            }
            let unit = match frame.tag() {
                tag::TERMINATE => return,
                tag::QUERY | tag::FUNCTION_CALL => Unit::Simple(frame),
                tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE | tag::SYNC | tag::FLUSH => {
                    match Box::pin(self.collect_batch(frame)).await {
                        Ok(frames) => Unit::Extended(frames),
                        Err((code, msg)) => return Box::pin(self.fatal(code, &msg)).await,
                    }
                }
                // Copy messages outside COPY are ignored, as PostgreSQL does.
                tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => continue,
                other => {
                    let msg = format!("invalid frontend message type {}", other);
                    return Box::pin(self.fatal(sqlstate::PROTOCOL_VIOLATION, &msg)).await;
                }
            };
            if Box::pin(self.run_unit(unit)).await.is_err() {
                return;
            }
        }
    }

    /// True while an errored extended block waits for its Sync.
    fn skipping_to_sync(&self) -> bool {
        self.held.as_ref().is_some_and(|h| h.block == Block::Failed)
    }

    /// The next client message, honouring the idle timeout.
    async fn next_frame(&mut self) -> Result<Option<Frame>, (&'static str, String)> {
        if let Some(f) = self.lookahead.take() {
            return Ok(Some(f));
        }
        // Boxed, like the timeout below: only a session holding a connection (or with an idle
        // timeout) pays for their state, not every idle one.
        if self.held.is_some() && !Box::pin(self.watch_while_idle()).await {
            return Ok(None);
        }
        let idle = self.shared.config.limits.idle_client_timeout.filter(|_| self.held.is_none());
        let between_units = self.held.as_ref().is_none_or(|h| h.status == TxStatus::Idle);
        // Lean: an idle client holds no read buffer while it says nothing.
        let client = &mut self.client;
        let read = self.entry.unless_stopped(between_units, || client.next_lean());
        let r = match idle {
            Some(d) => match Box::pin(tokio::time::timeout(d, read)).await {
                Ok(r) => r,
                Err(_) => {
                    return Err((sqlstate::IDLE_SESSION_TIMEOUT, "terminating connection due to idle timeout".into()))
                }
            },
            None => read.await,
        };
        let r = r.map_err(super::lifecycle::Stopped::error)?;
        r.map_err(|e| match e {
            crate::protocol::framer::ReadError::Frame(f @ FrameError::TooLarge { .. }) => {
                (sqlstate::PROGRAM_LIMIT_EXCEEDED, f.to_string())
            }
            crate::protocol::framer::ReadError::Frame(f @ FrameError::UnknownTag(_)) => {
                (sqlstate::PROTOCOL_VIOLATION, format!("{f}: closing the connection"))
            }
            other => (sqlstate::PROTOCOL_VIOLATION, other.to_string()),
        })
    }

    async fn collect_batch(&mut self, first: Frame) -> Result<Vec<Frame>, (&'static str, String)> {
        let mut frames = vec![first];
        loop {
            let last = frames.last().map_or(0, Frame::tag);
            if last == tag::SYNC || last == tag::FLUSH || frames.len() >= MAX_BATCH_MESSAGES {
                return Ok(frames);
            }
            if !self.client.has_buffered() && self.lookahead.is_none() {
                // Everything the client sent so far goes on now (a Flush appended): it may wait
                // for these replies, an error above all, before it sends its Sync.
                return Ok(frames);
            }
            match self.next_frame().await? {
                Some(f) if is_extended(f.tag()) => frames.push(f),
                Some(f) => {
                    self.lookahead = Some(f);
                    return Ok(frames);
                }
                None => return Err((sqlstate::CONNECTION_FAILURE, "client closed mid-batch".into())),
            }
        }
    }

    /// Classify, route, acquire, forward, relay, release. `Err` ends the session.
    ///
    /// An autocommit unit that a node rejects with `25006` changed nothing: it runs once more on
    /// the primary, unseen by the client, and its text is remembered as a write.
    async fn run_unit(&mut self, unit: Unit) -> Result<(), ()> {
        if let Some(state) = self.aborted.take() {
            let mut out = BytesMut::new();
            self.aborted = match aborted::answer(state, &unit, &mut out) {
                aborted::AbortedStep::Still(s) => Some(s),
                aborted::AbortedStep::Ended => None,
            };
            return self.client.get_mut().write_all(&out).await.map_err(|_| ());
        }
        if self.held.is_none() {
            let reply = match &unit {
                Unit::Extended(frames) => self.answer_locally(frames),
                Unit::Simple(frame) => answer_tx_end_locally(frame),
            };
            if let Some(reply) = reply {
                return self.client.get_mut().write_all(&reply).await.map_err(|_| ());
            }
        }
        let mut class = unit.classify(&self.statements, &self.classifier);
        if self.block_must_move(&class) {
            self.close_held_block().await;
        }
        if tracing::enabled!(tracing::Level::TRACE) {
            let tags: String = match &unit {
                Unit::Simple(f) => (f.tag() as char).to_string(),
                Unit::Extended(fs) => fs.iter().map(|f| f.tag() as char).collect(),
            };
            tracing::trace!(key = self.key.pid, %tags, held = self.held.is_some(), "unit");
        }
        let autocommit = self.held.as_ref().is_none_or(|h| h.status == TxStatus::Idle);
        let retryable = self.held.is_none() && class.tx == TxEffect::None;
        let mut outcome = self.attempt(&unit, &class, retryable).await?;
        match outcome {
            Some((Outcome::ReadOnlyRejected, _)) => {
                self.shared.metrics.unit(UnitOutcome::ReadOnlyRetried);
                self.release_if_done(TxStatus::Idle).await;
                unit.note_write(&self.classifier);
                class = Arc::new(Class::write(Reason::NotedWrite));
                outcome = self.attempt(&unit, &class, false).await?;
            }
            Some((Outcome::NeverRan(ref e), _)) => {
                tracing::info!(error = %e, "server connection died before the statement ran; retrying on a fresh one");
                self.shared.metrics.unit(UnitOutcome::ConnectionRetried);
                self.drop_held_and_siblings();
                outcome = self.attempt(&unit, &class, false).await?;
            }
            _ => {}
        }
        match outcome {
            Some((outcome, errored)) => self.after_unit(outcome, &class, &unit, errored, autocommit).await,
            None => Ok(()),
        }
    }

    /// One try: acquire, forward, relay. `Ok(None)`: the client already got an error.
    async fn attempt(&mut self, unit: &Unit, class: &Class, retryable: bool) -> Result<Option<(Outcome, bool)>, ()> {
        if let Err(e) = self.acquire(class).await {
            return self.statement_error(e.sqlstate(), &e.to_string()).await.map(|()| None);
        }
        let may_copy =
            (class.access == Access::Write || class.tx == TxEffect::End) && unit.may_copy_in(&self.statements);
        let held = self.held.as_mut().expect("acquire leaves a held connection");
        let in_transaction = held.status != TxStatus::Idle;
        let primary = self.shared.topology.load().primary().map(|p| p.index);
        let mut batch = Batch::new(held.checkout.conn(), &self.classifier);
        match unit {
            Unit::Simple(frame) => self.statements.translate_query(frame, &mut batch),
            Unit::Extended(frames) => {
                frames.iter().for_each(|f| self.statements.translate(f, &mut batch));
                if !matches!(frames.last().map(Frame::tag), Some(tag::SYNC | tag::FLUSH)) {
                    // Cut short by another message (or the batch limit): the server would hold
                    // its replies until a Sync or Flush that is not coming.
                    messages::flush(&mut batch.out);
                }
            }
        }
        let Batch { conn, mut out, mut queue, added, closed, .. } = batch;
        let capture =
            if primary == Some(conn.node) { lsn_capture(class, unit, may_copy, in_transaction) } else { Capture::None };
        if capture == Capture::Pipelined {
            messages::query(&mut out, LSN_SQL);
        }
        if let Err(e) = conn.send(&out).await {
            self.drop_held();
            return self.statement_error(sqlstate::CONNECTION_FAILURE, &e.to_string()).await.map(|()| None);
        }
        let (outcome, errored) = {
            let relay = Relay::new(&mut self.client, conn, &mut queue, &mut self.params).client_pid(self.key.pid);
            let mut relay = if retryable { relay.retryable(class.access == Access::Read) } else { relay };
            let outcome = relay.run().await;
            (outcome, relay.errored)
        };
        if errored {
            conn.prepared.unit_failed(&added, closed);
            conn.unnamed = None;
        }
        if capture != Capture::None && matches!(outcome, Outcome::Ready(_) | Outcome::ReadOnlyRejected) {
            self.read_write_lsn(capture).await;
        }
        Ok(Some((outcome, errored)))
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
                let lsn =
                    rows.first().map(columns).and_then(|c| c.first().cloned().flatten()).and_then(|t| parse_lsn(&t));
                self.last_write_lsn = self.last_write_lsn.max(lsn);
                tracing::debug!(lsn = ?self.last_write_lsn, rows = rows.len(), "write position");
            }
            // On a node in recovery the query fails: nothing was written there.
            Err(BackendError::Server { .. }) => {}
            Err(e) => {
                tracing::info!(error = %e, "server connection lost after a write");
                self.drop_held();
            }
        }
    }

    async fn after_unit(
        &mut self,
        outcome: Outcome,
        class: &Class,
        unit: &Unit,
        errored: bool,
        autocommit: bool,
    ) -> Result<(), ()> {
        tracing::trace!(key = self.key.pid, ?outcome, "unit done");
        let counted = match &outcome {
            Outcome::Ready(_) => Some(UnitOutcome::Ready),
            Outcome::Partial => Some(UnitOutcome::Partial),
            Outcome::ServerLost(_) => Some(UnitOutcome::ServerLost),
            Outcome::ClientGone => Some(UnitOutcome::ClientGone),
            Outcome::ReadOnlyRejected | Outcome::NeverRan(_) => None,
        };
        if let Some(o) = counted {
            self.shared.metrics.unit(o);
        }
        match outcome {
            Outcome::Ready(status) => {
                if !errored {
                    self.note_effects(class, unit, autocommit && status == TxStatus::Idle);
                    self.note_accepted(unit);
                }
                if let Some(h) = self.held.as_mut() {
                    h.block = Block::Closed;
                }
                self.release_if_done(status).await;
                Ok(())
            }
            Outcome::Partial => {
                if let Some(h) = self.held.as_mut() {
                    h.block = if errored { Block::Failed } else { Block::Open };
                }
                Ok(())
            }
            Outcome::ServerLost(e) => self.server_lost(&e, autocommit).await,
            Outcome::ClientGone => Err(()),
            Outcome::ReadOnlyRejected | Outcome::NeverRan(_) => Ok(()),
        }
    }

    fn note_effects(&mut self, class: &Class, unit: &Unit, autocommit: bool) {
        match class.session {
            SessionEffect::Pin => self.pinned = true,
            // A session command run outside a transaction block is replayed on whichever
            // connection the session uses next; inside one (it may roll back), or when it also
            // writes, or when the history is full, the session stays on this connection.
            SessionEffect::Parameter if autocommit && class.access == Access::Read => {
                let texts = unit_texts(unit);
                if texts.iter().any(|t| is_reset_all(t)) {
                    self.params.clear_history();
                } else if !texts.iter().all(|t| self.params.record(t)) {
                    self.pinned = true;
                }
                if let Some(h) = self.held.as_mut() {
                    h.checkout.conn().applied = self.params.fingerprint();
                }
            }
            SessionEffect::Parameter => self.pinned = true,
            SessionEffect::None => {}
        }
        // Functions changed: reload the catalog once that is committed (see `release_if_done`).
        self.catalog_stale |= class.changes_functions;
        if let Unit::Simple(f) = unit {
            if resets_statements(f) {
                self.statements.clear();
                if let Some(h) = self.held.as_mut() {
                    h.checkout.conn().prepared.clear();
                }
            }
        }
    }

    /// The server connection died under a unit. The client hears one error: `ERROR` with the
    /// server's SQLSTATE and ReadyForQuery when the session can go on without what died with
    /// the connection, else `FATAL` and the session ends (never FATAL then ReadyForQuery).
    async fn server_lost(&mut self, e: &BackendError, autocommit: bool) -> Result<(), ()> {
        tracing::info!(error = %e, "server connection lost mid-statement");
        let session_pooling = self.shared.config.pool.mode == PoolMode::Session;
        let verdict = after_loss(autocommit, self.pinned, session_pooling);
        self.drop_held_and_siblings();
        match verdict {
            AfterLoss::Continue => {
                let msg = format!(
                    "server connection lost while running the statement ({e}); the session continues on a new server connection"
                );
                self.statement_error(e.sqlstate(), &msg).await
            }
            AfterLoss::TransactionLost => {
                let msg = format!(
                    "server connection lost while running the statement ({e}); its open transaction was rolled back; end it (ROLLBACK) and the session continues on a new server connection"
                );
                self.shared.metrics.client_error(e.sqlstate());
                self.aborted = Some(aborted::Aborted::default());
                let mut buf = BytesMut::new();
                messages::error_response(&mut buf, Severity::Error, e.sqlstate(), &msg);
                messages::ready_for_query(&mut buf, TxStatus::Failed);
                self.client.get_mut().write_all(&buf).await.map_err(|_| ())
            }
            AfterLoss::End(what) => {
                let msg = format!("server connection lost ({e}); the session cannot continue: {what} was on it");
                self.fatal(e.sqlstate(), &msg).await;
                Err(())
            }
        }
    }

    /// An error for this statement; the session goes on.
    async fn statement_error(&mut self, code: &str, message: &str) -> Result<(), ()> {
        self.shared.metrics.client_error(code);
        let status = self.held.as_ref().map_or(TxStatus::Idle, |h| h.status);
        let mut buf = BytesMut::new();
        messages::error_response(&mut buf, Severity::Error, code, message);
        messages::ready_for_query(&mut buf, status);
        self.client.get_mut().write_all(&buf).await.map_err(|_| ())
    }

    async fn fatal(&mut self, code: &str, message: &str) {
        self.shared.metrics.client_error(code);
        let mut buf = BytesMut::new();
        messages::error_response(&mut buf, Severity::Fatal, code, message);
        let _ = self.client.get_mut().write_all(&buf).await;
    }

    /// Close the client socket, then give back the held connection (reused, drained or closed
    /// by its protocol state; reset first if it carries session state).
    async fn finish(mut self) {
        self.key.set_target(None);
        let _ = self.client.get_mut().shutdown().await;
        let Some(held) = self.held.take() else { return };
        let needs_reset = self.pinned || self.shared.config.pool.mode == PoolMode::Session;
        held.checkout.release(needs_reset).await;
    }
}

/// The reply to a transaction end sent outside a transaction block (see
/// [`tx_end_outside_block`]): what PostgreSQL answers, without a server.
fn answer_tx_end_locally(frame: &Frame) -> Option<BytesMut> {
    if frame.tag() != tag::QUERY {
        return None;
    }
    let command = tx_end_outside_block(messages::decode_query(frame.body())?)?;
    let mut buf = BytesMut::new();
    messages::warning_notice(&mut buf, "25P01", "there is no transaction in progress");
    messages::command_complete(&mut buf, command);
    messages::ready_for_query(&mut buf, TxStatus::Idle);
    Some(buf)
}
