//! What a unit left behind, judged once its replies are in: what it set (recorded for the
//! session's next connections, kept pending in a block, or pinning the session), the block a
//! Flush left open that it ended, and its other effects (statements reset, functions changed).

use super::*;

impl Session<'_> {
    /// `tried` and `unit` by reference: by value they would be kept twice in this future (an
    /// `async fn` keeps its argument and the local it moves into), inside every unit's. What
    /// streamed in is taken from them to judge the whole unit.
    pub(super) async fn after_unit(
        &mut self,
        tried: &mut Tried,
        class: &Class,
        unit: &mut Unit,
        before: TxStatus,
    ) -> Result<(), SessionEnd> {
        let Tried { outcome, errored, streamed, .. } = tried;
        let errored = *errored;
        tracing::trace!(key = self.key().pid(), ?outcome, "unit done");
        let counted = match &outcome {
            Outcome::Ready(_) => Some(UnitOutcome::Ready),
            Outcome::Partial => Some(UnitOutcome::Partial),
            Outcome::ServerLost(_) => Some(UnitOutcome::ServerLost),
            Outcome::End(_) => Some(UnitOutcome::ClientGone),
            Outcome::ReadOnlyRejected | Outcome::RecoveryConflict | Outcome::NeverRan(_) | Outcome::NotSent(_) => None,
        };
        if let Some(o) = counted {
            self.shared.metrics.unit(o);
        }
        // What streamed in after the unit started counts as much as what started it.
        let class = &with_streamed(class, streamed.as_ref().and_then(|s| s.class.as_ref()));
        // Messages that streamed in after the unit started are judged with it (psycopg flushes
        // each statement of a pipeline as it is queued, so its Sync and later statements often
        // stream in). Past the keep limit they were not all kept.
        let complete = streamed.as_ref().is_none_or(|s| s.messages == 0 || s.frames.is_some());
        match outcome {
            &mut Outcome::Ready(status) => {
                // Judged before the await: what it takes is not kept in every unit's future.
                self.judge_ready(unit, streamed, class, before, status, errored, complete);
                self.release_if_done(status).await;
                Ok(())
            }
            Outcome::Partial => {
                let wrote = class.access == Access::Write;
                self.state = self.state.after(Event::Partial { errored, wrote });
                // What lasts of the block is known when a later unit ends it.
                if let Unit::Extended(frames) =
                    whole_unit(std::mem::replace(unit, Unit::Extended(Frames::default())), streamed)
                {
                    let rare = self.rare.get();
                    if rare.open_block.is_some() || frames.kinds().any(Kinds::EXECUTE) {
                        let block = rare.open_block.get_or_insert_with(|| Box::new(OpenBlock::new(class, before)));
                        block.add(&frames, class, errored, complete);
                    }
                }
                Ok(())
            }
            Outcome::ServerLost(e) => {
                let synced = unit.ends_cleanly() || streamed.as_ref().is_some_and(|s| s.synced);
                Box::pin(self.server_lost(e, class.tx == TxEffect::End, synced)).await
            }
            Outcome::End(end) => Err(end.clone()),
            Outcome::NotSent(message) => {
                Box::pin(self.unit_error(unit.ends_cleanly(), sqlstate::CONNECTION_FAILURE, message)).await
            }
            Outcome::ReadOnlyRejected | Outcome::RecoveryConflict | Outcome::NeverRan(_) => Ok(()),
        }
    }

    /// A unit that came to ReadyForQuery (with what streamed into it, and the block a Flush
    /// left open before it): what it set, what it left pending, whether the session stays on
    /// its connection. `complete`: every streamed message was kept.
    ///
    /// Most units (every statement of a TPC-B transaction, every read) set nothing, streamed
    /// nothing, end no block a Flush left open and find nothing pending: for those only the
    /// effects that need no walk are noted, where [`Session::judge_whole`] would take the unit
    /// apart to find the same.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(super) fn judge_ready(
        &mut self,
        unit: &mut Unit,
        streamed: &mut Option<Box<Streamed>>,
        class: &Class,
        before: TxStatus,
        status: TxStatus,
        errored: bool,
        complete: bool,
    ) {
        let quiet = streamed.is_none()
            && class.session == SessionEffect::None
            && self.rare.peek().is_none_or(|r| r.open_block.is_none() && r.pending_sets.is_empty());
        if !quiet {
            let unit = std::mem::replace(unit, Unit::Extended(Frames::default()));
            return self.judge_whole(unit, streamed, class, before, status, errored, complete);
        }
        // What `judge_whole` comes to for such a unit: `settle_in_block` finds nothing pending
        // and nothing set, `note_effects` no session effect.
        if !errored {
            self.note_other_effects(class, unit);
            self.note_accepted(unit);
        }
    }

    /// [`Session::judge_ready`] for a unit that may have set something, streamed, ended a
    /// Flush-held block or found session commands pending.
    ///
    /// Out of line: inlined, its frame and saved registers were paid by every unit.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    pub(super) fn judge_whole(
        &mut self,
        unit: Unit,
        streamed: &mut Option<Box<Streamed>>,
        class: &Class,
        before: TxStatus,
        status: TxStatus,
        errored: bool,
        complete: bool,
    ) {
        let unit = whole_unit(unit, streamed);
        // The block a Flush left open ends here: its units are judged with this one.
        let block = self.rare.peek_mut().and_then(|r| r.open_block.take());
        let (unit, class, before, errored, complete) = match block {
            None => (unit, Cow::Borrowed(class), before, errored, complete),
            Some(b) => {
                let class = Cow::Owned(with_streamed(&b.class, Some(class)));
                match (b.frames, unit) {
                    (Some(mut kept), Unit::Extended(frames)) => {
                        kept.append(&frames);
                        (Unit::Extended(kept.freeze()), class, b.before, errored || b.errored, complete)
                    }
                    // PostgreSQL runs a Query in the block's transaction and commits both at its
                    // end (psycopg leaving pipeline mode sends its next statement so): judged as
                    // the block's last statement.
                    (Some(mut kept), Unit::Simple(query)) if query.tag() == tag::QUERY => {
                        kept.push(query.msg());
                        (Unit::Extended(kept.freeze()), class, b.before, errored || b.errored, complete)
                    }
                    (_, unit) => (unit, class, b.before, errored || b.errored, false),
                }
            }
        };
        let (unit, class) = (&unit, &*class);
        // What ran cannot be told: what it set is known only to the connection, and
        // the session stays on it.
        if !complete && class.session == SessionEffect::Parameter {
            self.pin(class);
        }
        let settled = self.settle_in_block(class, unit, before, status, errored);
        let autocommit = before == TxStatus::Idle && status == TxStatus::Idle;
        if !errored {
            self.note_effects(class, unit, before, status, settled);
            self.note_accepted(unit);
        } else if autocommit && class.session == SessionEffect::Parameter && self.failed_may_keep(unit) {
            // Part of it may have committed before the error: what is in force is
            // known only to this connection.
            self.pin(class);
        }
    }

    /// The pending session commands of a unit that ran inside a block (or ended it); true if
    /// the unit's own parameter effect was dealt with here. Costs two loads for a unit that
    /// sets nothing while nothing is pending (every statement of a TPC-B transaction).
    pub(super) fn settle_in_block(
        &mut self,
        class: &Class,
        unit: &Unit,
        before: TxStatus,
        after: TxStatus,
        errored: bool,
    ) -> bool {
        let pending = self.rare.peek().is_some_and(|r| !r.pending_sets.is_empty());
        let sets = class.session == SessionEffect::Parameter;
        if before == TxStatus::Idle || !(pending || sets && !errored) {
            return false;
        }
        if before == TxStatus::InTransaction && !errored {
            if let Some(settled) = self.settle_pipelined_in_block(class, unit, pending, after) {
                return settled;
            }
        }
        let statements = &self.rare.get().statements;
        let texts = executed_texts(unit, statements);
        let ran_statements = executed_statements(unit, statements);
        // A reset inside a block is left to the ordinary rule (it pins): rare, and it would need
        // the history reset at the commit.
        let replayable = texts.as_ref().is_some_and(|t| {
            !t.iter().any(|t| is_reset_all(t))
                && (class.access == Access::Read || t.iter().all(|t| set_config_name(t).is_some()))
        });
        let ran = in_block::Ran {
            before: Some(before),
            after: Some(after),
            errored,
            sets,
            replayable,
            texts: ran_statements.as_deref(),
            pending,
        };
        let step = in_block::step(ran);
        tracing::trace!(?step, "session commands in a block");
        match step {
            in_block::Step::Keep => false,
            in_block::Step::Add => {
                self.rare.get().pending_sets.extend(texts.unwrap_or_default());
                true
            }
            in_block::Step::Commit => {
                let pending = std::mem::take(&mut self.rare.get().pending_sets);
                if !pending.iter().all(|t| Arc::make_mut(&mut self.params).record(t)) {
                    self.pin(class);
                }
                if let Some(h) = self.held.as_mut() {
                    h.checkout.conn().carry(Arc::clone(self.params.settings()));
                }
                false
            }
            in_block::Step::Discard => {
                self.rare.get().pending_sets.clear();
                false
            }
            in_block::Step::Pin => {
                self.rare.get().pending_sets.clear();
                self.pin(class);
                true
            }
        }
    }

    /// [`Session::settle_in_block`] for an extended unit of several statements that ran inside
    /// a block without error (psycopg's pipeline inside a transaction: a SET beside
    /// parameterised writes, a COMMIT after them): its statements walked one by one
    /// ([`in_block::lasting_in_block`]). `None`: not such a unit, the caller's table decides.
    pub(super) fn settle_pipelined_in_block(
        &mut self,
        class: &Class,
        unit: &Unit,
        pending: bool,
        after: TxStatus,
    ) -> Option<bool> {
        if !matches!(unit, Unit::Extended(_)) {
            return None;
        }
        let ran = self.executed(unit).filter(|ran| ran.len() > 1)?;
        let kinds = self.kinds(&ran);
        let texts = |indices: &[usize]| -> Vec<String> {
            indices.iter().flat_map(|&i| ran[i].texts.iter().flatten().cloned()).collect()
        };
        let walked = in_block::lasting_in_block(pending, &kinds, after == TxStatus::Idle);
        // A reset inside a block pins, as in the table's rule.
        let walked = walked.map(|(prior, l)| (prior, texts(&l.committed), texts(&l.open)));
        let Some((prior, committed, open)) = walked.filter(|(_, c, o)| !c.iter().chain(o).any(|t| is_reset_all(t)))
        else {
            self.rare.get().pending_sets.clear();
            self.pin(class);
            return Some(true);
        };
        tracing::trace!(
            ?prior,
            committed = committed.len(),
            open = open.len(),
            "session commands in a pipelined block"
        );
        let rare = self.rare.get();
        let mut record = match prior {
            in_block::Prior::Committed => std::mem::take(&mut rare.pending_sets),
            in_block::Prior::Dropped => {
                rare.pending_sets.clear();
                Vec::new()
            }
            in_block::Prior::Pending => Vec::new(),
        };
        rare.pending_sets.extend(open);
        record.extend(committed);
        if !record.is_empty() {
            if !record.iter().all(|t| Arc::make_mut(&mut self.params).record(t)) {
                self.pin(class);
            }
            if let Some(h) = self.held.as_mut() {
                h.checkout.conn().carry(Arc::clone(self.params.settings()));
            }
        }
        Some(true)
    }

    /// The session stays on its server connection from now on, for a unit of `class`.
    pub(super) fn pin(&mut self, class: &Class) {
        if !matches!(self.state.tie(), Some(state::Tie::Pinned | state::Tie::SessionPooled)) {
            // A unit's class carries the reason of its routing (a SET beside a write routes as
            // the write): a session command is what pins here.
            let reason = if class.session == SessionEffect::Parameter { Reason::SessionCommand } else { class.reason };
            tracing::debug!(reason = reason.as_str(), session = ?class.session, "session pinned to its server connection");
            self.shared.metrics.session_pinned(reason);
        }
        self.state = self.state.after(Event::Pin);
    }

    /// `before` / `after`: the transaction status around the unit. `settled`: the unit's
    /// parameter effect was dealt with by [`Session::settle_in_block`].
    pub(super) fn note_effects(
        &mut self,
        class: &Class,
        unit: &Unit,
        before: TxStatus,
        after: TxStatus,
        settled: bool,
    ) {
        // A unit that started outside a block and ended there, or in a block it opened with the
        // extended protocol (pgjdbc sends BEGIN with the first statement of a transaction).
        let outside = before == TxStatus::Idle
            && (after == TxStatus::Idle || after == TxStatus::InTransaction && matches!(unit, Unit::Extended(_)));
        match class.session {
            SessionEffect::Parameter if settled => {}
            SessionEffect::Pin => self.pin(class),
            // A session command run outside a transaction block is replayed, as the text that
            // ran, on whichever connection the session uses next; inside one (it may roll
            // back), or when it also writes, or when what ran cannot be told as a text, or when
            // the history is full, the session stays on this connection. A reset replays
            // nothing and `set_config` calls are recorded as such, so a write in those does not
            // hold the session (asyncpg unlocks advisory locks in its pool reset, and sets
            // `jit` through `set_config` around its type introspection: pinning there would
            // cost every asyncpg client a server connection of its own).
            SessionEffect::Parameter if outside => {
                let Some((texts, pending)) = self.unit_texts(class, unit, after) else {
                    self.pin(class);
                    return self.note_other_effects(class, unit);
                };
                if !self.record_texts(&texts) {
                    self.pin(class);
                }
                if !pending.is_empty() {
                    self.rare.get().pending_sets.extend(pending);
                }
            }
            SessionEffect::Parameter => self.pin(class),
            SessionEffect::None => {}
        }
        self.note_other_effects(class, unit);
    }

    /// Record `texts`, session commands that ran and last, in the session's history, in order
    /// (a reset forgets what came before it), and say that the held connection carries them.
    /// False if the history could not take one (it is full).
    pub(super) fn record_texts(&mut self, texts: &[String]) -> bool {
        let mut reset = false;
        let params = Arc::make_mut(&mut self.params);
        let recorded = texts.iter().all(|t| {
            if is_reset_all(t) {
                reset = true;
                params.reset_all();
                true
            } else {
                params.record(t)
            }
        });
        if let Some(h) = self.held.as_mut() {
            let conn = h.checkout.conn();
            // After RESET ALL the connection holds server defaults, not the session's startup
            // parameters: the next sync starts over.
            if reset {
                conn.carry_unknown();
            } else {
                conn.carry(Arc::clone(self.params.settings()));
            }
        }
        recorded
    }

    /// The block a Flush left open is ended by sluice (the next unit must run elsewhere): the
    /// Sync sent at the release commits what the block set, which is recorded for the session
    /// to take along. True if it set something that cannot be told or recorded: the connection
    /// is then reset before anyone else gets it, and the session goes on without it.
    pub(super) fn settle_closed_block(&mut self) -> bool {
        let Some(block) = self.rare.peek_mut().and_then(|r| r.open_block.take()) else { return false };
        // A failed block rolls back at the Sync: nothing of it lasts.
        if block.class.session != SessionEffect::Parameter || block.errored {
            return false;
        }
        let unit = block.frames.map(|f| Unit::Extended(f.freeze()));
        match unit.as_ref().and_then(|unit| self.unit_texts(&block.class, unit, TxStatus::Idle)) {
            Some((texts, pending)) if pending.is_empty() && self.record_texts(&texts) => false,
            _ => {
                tracing::info!("a session command in a Flush-held block could not be taken along when the block moved");
                true
            }
        }
    }

    /// The session commands a unit that started outside a block left in force, as texts to
    /// replay in order, and those of the block it left open (`after` in a block), pending until
    /// that block ends; `None` if that cannot be told (the session is pinned). A simple Query's
    /// text is recorded as it ran; an extended unit's statements are walked one by one
    /// ([`in_block::lasting`]): a block inside it that rolled back leaves nothing, and its
    /// reads, writes, BEGIN and COMMIT are not replayed.
    pub(super) fn unit_texts(&self, class: &Class, unit: &Unit, after: TxStatus) -> Option<(Vec<String>, Vec<String>)> {
        let ran = self.executed(unit)?;
        if let Unit::Simple(_) = unit {
            let texts = ran.into_iter().next()?.texts?;
            // A reset followed by more in one text cannot be told apart: it is not a reset
            // alone, and replayed whole it would undo the startup parameters too.
            let reset_and_more = texts.iter().any(|t| is_reset_all(t) && !is_reset_alone(t));
            let replayable =
                class.access == Access::Read || texts.iter().all(|t| is_reset_all(t) || set_config_name(t).is_some());
            return (after == TxStatus::Idle && replayable && !reset_and_more).then_some((texts, Vec::new()));
        }
        let kinds = self.kinds(&ran);
        let lasting = in_block::lasting(&kinds)?;
        let texts = |indices: &[usize]| -> Vec<String> {
            indices.iter().flat_map(|&i| ran[i].texts.iter().flatten().cloned()).collect()
        };
        let (mut committed, open) = (texts(&lasting.committed), texts(&lasting.open));
        if after == TxStatus::Idle {
            // The Sync committed the rest.
            committed.extend(open);
            return Some((committed, Vec::new()));
        }
        // A reset inside a block pins, as in [`Session::settle_in_block`].
        (!open.iter().any(|t| is_reset_all(t))).then_some((committed, open))
    }

    /// What `unit` ran ([`executed`]), with the session's statements.
    pub(super) fn executed(&self, unit: &Unit) -> Option<Vec<Executed>> {
        match self.rare.peek() {
            Some(rare) => executed(unit, &rare.statements),
            None => executed(unit, &Statements::default()),
        }
    }

    /// The kind of each statement in `ran`, for the walks of [`in_block`].
    pub(super) fn kinds(&self, ran: &[Executed]) -> Vec<in_block::Kind> {
        ran.iter().map(|r| in_block::kind(r, &self.classifier)).collect()
    }

    /// True if a unit run outside a block that failed may have left session commands in
    /// force: one that committed before the error (`BEGIN; SET ...; COMMIT; <error>`).
    /// Without a commit the unit's one transaction rolled back.
    pub(super) fn failed_may_keep(&self, unit: &Unit) -> bool {
        let Some(ran) = self.executed(unit) else { return true };
        if let Unit::Simple(_) = unit {
            return ran.iter().any(|r| in_block::mentions_an_end(&r.statement));
        }
        let kinds = self.kinds(&ran);
        in_block::failed_may_keep(&kinds)
    }

    /// The effects of a unit other than on session parameters.
    pub(super) fn note_other_effects(&mut self, class: &Class, unit: &Unit) {
        // Functions changed: reload the catalog once that is committed (see `release_if_done`).
        if class.changes_functions {
            self.rare.get().catalog_stale = true;
        }
        // A Query's, or that of the Query that ended a Flush-held block (judged with it).
        let query = match unit {
            Unit::Simple(f) => Some(f.msg()),
            Unit::Extended(frames) if frames.last_tag() == Some(tag::QUERY) => frames.iter().last(),
            Unit::Extended(_) => None,
        };
        if let Some(f) = query {
            if resets_statements(f) {
                if let Some(rare) = self.rare.peek_mut() {
                    rare.statements.clear();
                }
                if let Some(h) = self.held.as_mut() {
                    h.checkout.conn().statements_mut().clear();
                }
            }
        }
    }
}
