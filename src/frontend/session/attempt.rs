//! Running one unit: classify, route, acquire, forward, relay (full duplex: a unit not ended by
//! Sync streams its further messages in while it runs), and run it again on the primary when a
//! replica refused it unseen.

use super::conn::{Rotation, Routed, SyncMode};
use super::*;
use crate::frontend::unit::{copy_matters, late_lsn_capture, primary_capture, Ran, Resolved};

/// What one try of a unit came to.
///
/// Moved by value from the relay's phase up through `attempt` and `run_unit`, a few times per
/// statement: kept small (128 bytes: `Outcome` and a pointer) so that each move is a few
/// register stores, not a `memcpy` call (at 256 bytes, with `Streamed` inline, they were).
pub(super) struct Tried {
    pub(super) outcome: Outcome,
    /// The server reported an error in the unit.
    pub(super) errored: bool,
    /// How the unit's write position is to be learnt ([`Session::attempt`] does it).
    capture: Capture,
    /// What streamed into the unit after it started; `None` for a unit that does not stream
    /// (every simple Query, every extended unit ended by Sync). Boxed: see above; a streaming
    /// unit allocates it as it starts.
    pub(super) streamed: Option<Box<Streamed>>,
}

/// What [`Session::attempt`] found before it sends the unit, for [`Session::forward`].
#[derive(Clone, Copy)]
struct Plan {
    /// The unit may run again if its connection is lost before it ran.
    retryable: bool,
    /// The unit streams in the client's further messages while it runs.
    streams: bool,
    /// The primary's node.
    primary: Option<usize>,
    /// A write position not asked for is owed, and a replica could take reads.
    owed: bool,
    /// A replica could take the session's reads.
    replicas_readable: bool,
    /// The unit may run COPY FROM STDIN.
    may_copy: bool,
    /// The unit starts inside a transaction block.
    in_transaction: bool,
    /// The open extended block wrote.
    block_wrote: bool,
    /// A write streamed in must move off the held connection.
    writes_move: bool,
}

/// The whole unit: what started it and every message that streamed in (all of them when the
/// unit is replayable or within the keep limit).
pub(super) fn whole_unit(unit: Unit, streamed: &mut Option<Box<Streamed>>) -> Unit {
    match (unit, streamed.as_mut().and_then(|s| s.frames.take())) {
        (Unit::Extended(mut frames), Some(more)) => {
            frames.append(&more.freeze());
            Unit::Extended(frames)
        }
        (unit, _) => unit,
    }
}

/// `unit`'s messages translated into `batch` (client statement names mapped to the connection's,
/// the definitions classifying found taken from `rare`). A unit cut short that does not stream
/// gets a Flush: the server holds its replies until a Flush or a Sync that is not coming.
///
/// The batch is the caller's: returned from here, its 168 bytes were copied out once more per
/// statement (a `memcpy` call).
fn translate(batch: &mut Batch<'_>, rare: &mut Rare, unit: &Unit, streams: bool) {
    let resolved = std::mem::take(&mut rare.resolved);
    let statements = &mut rare.statements;
    match unit {
        Unit::Simple(frame) => statements.translate_query(frame, batch),
        Unit::Extended(frames) => {
            let mut found = resolved.in_order();
            for (i, f) in frames.iter().enumerate() {
                let def = found.next_if(|&(at, _)| at == i).map(|(_, def)| def);
                statements.translate(f, def, batch);
            }
            if !streams && !matches!(frames.last_tag(), Some(tag::SYNC | tag::FLUSH)) {
                messages::flush(&mut batch.out);
            }
        }
    }
}

impl<'a> Session<'a> {
    /// Classify, route, acquire, forward, relay, release. `Err` ends the session.
    ///
    /// An autocommit unit that a node rejects with `25006` changed nothing: it runs once more on
    /// the primary, unseen by the client, and its text is remembered as a write.
    #[allow(clippy::manual_async_fn)] // on purpose, see below
    pub(super) fn run_unit(
        &mut self,
        mut unit: Unit,
    ) -> impl std::future::Future<Output = Result<(), SessionEnd>> + use<'_, 'a> {
        // Not an `async fn`, which keeps each argument twice (the argument and the local it is
        // moved into): a unit's future is boxed per statement, and should fit glibc's per-thread
        // cache (see `boxed`).
        async move {
            if let Some(lost) = self.rare.peek_mut().and_then(|r| r.block_lost.take()) {
                // Its block's connection was lost while the client was idle (`held_lost`).
                let (code, message) = *lost;
                return Box::pin(self.unit_error(unit.ends_cleanly(), &code, &message)).await;
            }
            if self.rare.peek_mut().is_some_and(|r| r.skip_to_sync) {
                return self.skip_to_sync(&unit).await;
            }
            if let Some(state) = self.rare.peek_mut().and_then(|r| r.aborted.take()) {
                let mut out = BytesMut::new();
                self.rare.get().aborted = match aborted::answer(*state, &unit, &mut out) {
                    aborted::AbortedStep::Still(s) => Some(Box::new(s)),
                    aborted::AbortedStep::Ended => None,
                };
                return self.send_client(&out).await;
            }
            if self.held.is_none() {
                let reply = match &unit {
                    Unit::Extended(frames) => self.answer_locally(frames),
                    Unit::Simple(frame) => answer_tx_end_locally(frame),
                };
                if let Some(reply) = reply {
                    return self.send_client(&reply).await;
                }
            }
            let rare = self.rare.get();
            let (class, resolved) = unit.classify(&rare.statements, &self.classifier);
            // Kept in the session, not in this future (see `Rare::resolved`).
            rare.resolved = resolved;
            // Boxed, as every rare phase of a unit: see `boxed`.
            if self.block_must_move(&class) && Box::pin(self.close_held_block()).await {
                let synced = unit.ends_cleanly();
                return Box::pin(self.unit_error(synced, sqlstate::FEATURE_NOT_SUPPORTED, end::SETTING_NOT_CARRIED))
                    .await;
            }
            if tracing::enabled!(tracing::Level::TRACE) {
                let tags: String = match &unit {
                    Unit::Simple(f) => (f.tag() as char).to_string(),
                    Unit::Extended(fs) => fs.iter().map(|f| f.tag() as char).collect(),
                };
                tracing::trace!(key = self.key().pid(), %tags, held = self.held.is_some(), "unit");
            }
            let before = self.state.tx();
            // A lone BEGIN too: it changed nothing if its connection is lost before it answers.
            let retryable = self.held.is_none() && (class.tx == TxEffect::None || unit.only_begins(&class));
            // Bound by `let .. else`: as the scrutinee of a `match`, the result (and the `?`'s)
            // would be kept through the arms' awaits, ~500 bytes in every unit's future.
            let Some(mut tried) = self.attempt(&unit, &class, retryable).await? else { return Ok(()) };
            if matches!(tried.outcome, Outcome::ReadOnlyRejected | Outcome::RecoveryConflict | Outcome::NeverRan(_)) {
                // Boxed: rare, and inline its second try would double the state of every unit.
                return Box::pin(self.run_again(unit, class, tried, before)).await;
            }
            self.after_unit(&mut tried, &class, &mut unit, before).await
        }
    }

    /// The second try of a unit the first did not run: on the primary after a replica refused
    /// it (`25006`) or cancelled it for a recovery conflict, or on a newly opened connection
    /// after the first died before it ran.
    async fn run_again(
        &mut self,
        mut unit: Unit,
        mut class: Arc<Class>,
        mut first: Tried,
        before: TxStatus,
    ) -> Result<(), SessionEnd> {
        match &first.outcome {
            Outcome::ReadOnlyRejected => {
                self.shared.metrics.unit(UnitOutcome::ReadOnlyRetried);
                self.release_if_done(TxStatus::Idle).await;
                unit = whole_unit(unit, &mut first.streamed);
                unit.note_write(&self.classifier);
                class = Arc::new(Class::write(Reason::NotedWrite));
                // The definitions found were classified before the texts were noted as writes:
                // the statements the unit parses are defined afresh, with the noted class.
                self.rare.get().resolved = Resolved::default();
            }
            Outcome::RecoveryConflict => {
                tracing::info!("a replica cancelled a read for a recovery conflict; running it on the primary");
                self.shared.metrics.unit(UnitOutcome::ConflictRetried);
                self.release_if_done(TxStatus::Idle).await;
                unit = whole_unit(unit, &mut first.streamed);
                // Still a read (no write position to capture), sent where replay cancels nothing.
                class = Arc::new(Class { hint: Some(crate::router::Hint::Primary), ..Class::clone(&class) });
            }
            Outcome::NeverRan(e) => {
                tracing::info!(error = %e, "server connection died before the statement ran; retrying on a fresh one");
                self.shared.metrics.unit(UnitOutcome::ConnectionRetried);
                self.drop_held_and_siblings();
                // Not an idle sibling: the same kill may not have reached it yet.
                self.rare.get().new_conn = true;
                unit = whole_unit(unit, &mut first.streamed);
            }
            // Nothing to run again: what the first try came to stands.
            _ => return self.after_unit(&mut first, &class, &mut unit, before).await,
        }
        drop(first);
        let Some(mut tried) = self.attempt(&unit, &class, false).await? else { return Ok(()) };
        self.after_unit(&mut tried, &class, &mut unit, before).await
    }

    /// After an error in a unit the client had not synced (see [`Session::unit_error`]):
    /// discard `unit`, and if it holds the client's Sync, answer that and go on.
    async fn skip_to_sync(&mut self, unit: &Unit) -> Result<(), SessionEnd> {
        let Unit::Extended(frames) = unit else { return Ok(()) };
        if !frames.kinds().any(Kinds::SYNC) {
            return Ok(());
        }
        self.rare.get().skip_to_sync = false;
        let mut buf = BytesMut::new();
        messages::ready_for_query(&mut buf, self.state.tx());
        self.send_client(&buf).await
    }

    /// One try: acquire, forward, relay. `Ok(None)`: the client already got an error.
    #[allow(clippy::manual_async_fn)] // on purpose, see below
    fn attempt<'s>(
        &'s mut self,
        unit: &'s Unit,
        class: &'s Class,
        retryable: bool,
    ) -> impl std::future::Future<Output = Result<Option<Tried>, SessionEnd>> + use<'s, 'a> {
        // Not an `async fn`: see `run_unit`.
        async move {
            // The error as texts: the error itself, kept through the reply's await, would take its
            // room in every state of this future.
            let acquired = self.acquire(class, SyncMode::of(class), Rotation::of(unit)).await;
            let routed = match acquired.map_err(|e| (e.sqlstate().to_owned(), e.to_string())) {
                Ok(routed) => routed,
                Err((code, message)) => {
                    return Box::pin(self.unit_error(unit.ends_cleanly(), &code, &message)).await.map(|()| None);
                }
            };
            // A held connection's state sync may have carried notifications: they go first.
            // Asked here first: the call and its future's poll cost ~40 instructions a unit,
            // and nearly every unit has none.
            if self.has_kept_notifications() {
                self.pass_kept_notifications().await?;
            }
            // One topology read for all three, the one the unit was routed by (a held
            // connection's unit was not: read now): where the primary is, so whether writes
            // move, and whether a replica could take reads (else a write's position is not
            // asked for).
            let Routed { primary, replicas_readable } = routed.unwrap_or_else(|| Routed::now(&self.shared.topology));
            let unmeasured = self.last_write_lsn() == Some(UNMEASURED);
            let writes_move = self.writes_move_from(primary);
            // A unit not ended by Sync streams in the client's further messages while it runs. One
            // cut short by a message that needs its own routing gets a Flush instead: the server
            // holds its replies until a Flush or a Sync that is not coming.
            let streams = unit.is_open_block() && self.rare.get().lookahead.is_none();
            let in_transaction = self.state.tx() != TxStatus::Idle;
            let block_wrote = self.state.block() == Block::OpenWithWrite;
            // The texts are scanned for COPY only where the answer is read: not for the writes
            // inside a transaction block (most of its statements), whose position is learnt at its end.
            let may_copy = copy_matters(class, in_transaction, streams, block_wrote)
                && unit.may_copy_in(&self.rare.get().statements);
            let plan = Plan {
                retryable,
                streams,
                primary,
                owed: unmeasured && replicas_readable,
                replicas_readable,
                may_copy,
                in_transaction,
                block_wrote,
                writes_move,
            };
            // A phase of its own: what the batch, the send and the relay keep (the translated
            // messages, the expected replies, the relay) takes room only in its state, not beside
            // the checkout's and the write position's in every state of this future.
            //
            // Taken apart as it comes: bound whole (`let tried = ...await`), the result is written
            // in place and so takes its room through the relay's await too, in every state of
            // this future (128 bytes more, and the unit future with it).
            let Tried { outcome, errored, capture, streamed } = self.forward(unit, class, plan).await;
            if capture != Capture::None && matches!(outcome, Outcome::Ready(_) | Outcome::ReadOnlyRejected) {
                if replicas_readable {
                    self.capture_write(capture).await?;
                    return Ok(Some(Tried { outcome, errored, capture, streamed }));
                }
                self.write_unmeasured();
            }
            Ok(Some(Tried { outcome, errored, capture, streamed }))
        }
    }

    /// Translate the unit for the held connection, send it and relay the replies (see
    /// [`Session::attempt`]), and whether the write position is to be read. A failed send
    /// drops the connection and comes to [`Outcome::NotSent`], answered in `after_unit`:
    /// awaited here, the reply would keep the unit's messages beside the relay's state, and
    /// its own result beside every state of the callers' futures.
    #[allow(clippy::manual_async_fn)] // on purpose, see below
    fn forward<'s>(
        &'s mut self,
        unit: &'s Unit,
        class: &'s Class,
        plan: Plan,
    ) -> impl std::future::Future<Output = Tried> + use<'s, 'a> {
        // Not an `async fn`: see `run_unit`.
        async move {
            let held = self.held.as_mut().expect("acquire leaves a held connection");
            // In a block of its own: the messages sent die before the relay runs, instead of
            // taking room beside it.
            let (conn, mut queue, mut added, mut closed, on_primary, capture) = {
                let mut batch = Batch::new(held.checkout.conn(), &self.classifier);
                batch.begin();
                translate(&mut batch, self.rare.get(), unit, plan.streams);
                let Batch { conn, mut out, queue, added, closed, .. } = batch;
                let on_primary = plan.primary == Some(conn.node());
                // A position not asked for is asked for behind the next read on the primary, once a
                // replica could take the session's reads again.
                let owed = plan.owed;
                let capture = if on_primary {
                    primary_capture(class, unit.ends_cleanly(), plan.may_copy, plan.in_transaction, owed)
                } else {
                    Capture::None
                };
                // With no replica to read from, a write's position is not asked for (see `UNMEASURED`).
                if capture == Capture::Pipelined && plan.replicas_readable {
                    messages::query(&mut out, LSN_SQL);
                }
                // The error as a text: all the client is told of it.
                if let Some(message) = conn.send(&out).await.err().map(|e| e.to_string()) {
                    self.drop_held();
                    let outcome = Outcome::NotSent(message);
                    return Tried { outcome, errored: false, capture: Capture::None, streamed: None };
                }
                conn.keep_out(out);
                (conn, queue, added, closed, on_primary, capture)
            };
            let mut streamed: Option<Box<Streamed>> = None;
            let (outcome, errored) = {
                let mut relay = Relay::new(&mut self.client, conn, &mut queue, &mut self.params);
                relay.client_pid(self.entry.key().pid()).count_errors(&self.shared.metrics);
                // A lost connection may be retried for a read, a reset or a lone BEGIN (see
                // `Unit::only_resets`, `Unit::only_begins`: a retryable unit that opens a block
                // is one, `run_unit` asked).
                if plan.retryable {
                    let read = class.access == Access::Read;
                    let rerun = read || class.tx != TxEffect::None || unit.only_resets();
                    relay.retryable(rerun, read && !on_primary);
                }
                if plan.streams {
                    let replayable = !matches!(unit, Unit::Extended(f) if f.last_tag() == Some(tag::FLUSH));
                    relay.streaming(
                        &mut self.rare.get().statements,
                        &self.classifier,
                        plan.writes_move,
                        streamed.insert(Box::default()),
                        replayable,
                    );
                }
                let outcome = relay.run().await;
                (outcome, relay.errored)
            };
            if errored {
                if let Some(s) = streamed.as_deref_mut() {
                    added.append(&mut s.added);
                    closed.append(&mut s.closed);
                }
                conn.statements_mut().unit_failed(&added, closed);
                conn.set_unnamed(None);
            }
            if let Some(f) = streamed.as_deref_mut().and_then(|s| s.lookahead.take()) {
                let rare = self.rare.get();
                debug_assert!(rare.lookahead.is_none());
                rare.lookahead = Some(f);
            }
            let ran = Ran {
                on_primary,
                ready: matches!(outcome, Outcome::Ready(_)),
                streamed: plan.streams,
                block_wrote: plan.block_wrote,
            };
            let streamed_class = streamed.as_ref().and_then(|s| s.class.as_ref());
            let capture = late_lsn_capture(capture, class, streamed_class, ran, plan.may_copy, plan.in_transaction);
            Tried { outcome, errored, capture, streamed }
        }
    }

    /// Read the write position after a unit ([`Session::read_write_lsn`]), then pass on what
    /// the server sent meanwhile: one await for both, so that what the caller keeps through
    /// them is in one state of its future, not in all (a value live across two awaits is).
    async fn capture_write(&mut self, capture: Capture) -> Result<(), SessionEnd> {
        self.read_write_lsn(capture).await;
        self.pass_kept_notifications().await
    }
}
