//! Getting, preparing, holding and giving back the server connection a unit runs on.

use super::*;
use crate::metrics::{SyncOutcome, UnitOutcome};
use std::time::Instant;

/// How a state sync may reach a server connection at checkout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SyncMode {
    /// In the same write as the unit, if the node accepted these statements before.
    Pipelined,
    /// Run and answered before the unit.
    RoundTrip,
}

impl SyncMode {
    /// For a unit of `class`. Only a read may ride behind a pipelined sync: if the sync fails,
    /// the read ran with the wrong settings and its replies are thrown away, which a write's
    /// effects would not be.
    pub(super) fn of(class: &Class) -> Self {
        if class.access == Access::Read && class.tx == TxEffect::None {
            SyncMode::Pipelined
        } else {
            SyncMode::RoundTrip
        }
    }
}

/// Most server connections one unit takes on one node when each is lost before any of the
/// unit was sent on it (see [`Session::checkout_prepared`]): a kill that hits a connection as
/// it is opened costs the client nothing, a node that closes every new connection fails the
/// unit after this many.
const OPEN_ATTEMPTS: u32 = 3;

/// Why no prepared connection came out of a pool.
enum Opening {
    /// No connection: none became free in time, or opening one failed.
    Checkout(BackendError),
    /// A connection, but the session's settings could not be brought onto it.
    Prepare(BackendError),
}

impl Opening {
    fn error(&self) -> &BackendError {
        match self {
            Opening::Checkout(e) | Opening::Prepare(e) => e,
        }
    }
}

/// Monitor intervals a read waits for a replica to be seen replaying the session's last write
/// when there is no primary to read from instead.
const RYW_WAIT_TICKS: u32 = 4;

/// What the rest of a unit reads of the topology snapshot it was routed by: one snapshot per
/// unit (each load is an arc-swap load, ~50 instructions).
#[derive(Clone, Copy, Debug)]
pub(super) struct Routed {
    /// The primary's node index, if there is one to write on.
    pub primary: Option<usize>,
    /// A replica could take reads.
    pub replicas_readable: bool,
}

impl Routed {
    fn of(topology: &crate::topology::Topology) -> Self {
        Routed { primary: topology.primary().map(|p| p.index), replicas_readable: topology.replicas().next().is_some() }
    }

    /// Read from the current snapshot: for a unit that was not routed (its connection was
    /// held).
    pub(super) fn now(topology: &crate::topology::TopologyHandle) -> Self {
        Routed::of(&topology.snapshot())
    }
}

impl Session<'_> {
    /// Make sure a server connection is held: keep the current one, or route and check one out.
    /// Failover hold: while no node can take the unit (no primary published yet, or its
    /// connection could not be opened: nothing was sent), wait for the next topology generation
    /// (or one monitor interval) and try again, up to `failover.hold_timeout`, then `57P03`.
    /// `sync`: how a state sync may be sent ([`SyncMode::of`] for a unit).
    ///
    /// `Some`: what the unit was routed by; `None`: the held connection was kept (no route).
    ///
    /// The unit's clock read is made here, once: the hold counts from it, and the pool judges
    /// its idle connections' ages and starts the unit time by it ([`Pool::checkout_at`]); only
    /// a wait (the pause gate, the hold, a permit, another candidate or attempt) reads it again.
    pub(super) async fn acquire(
        &mut self,
        class: &Class,
        sync: SyncMode,
        rotation: Rotation,
    ) -> Result<Option<Routed>, BackendError> {
        if self.held.is_some() {
            return self.resync_held().await.map(|()| None);
        }
        // One read of the live configuration per unit for the hold, the route and the pool
        // mode (each access is an arc-swap load); read again only after waiting.
        let mut config = self.config();
        let hold = config.failover.hold_timeout;
        let started = Instant::now();
        let mut now = started;
        let mut held = false;
        let new = self.rare.peek_mut().is_some_and(|r| std::mem::take(&mut r.new_conn));
        loop {
            // The generation alone (an atomic read), not the snapshot: `route` loads that.
            let seen = self.shared.topology.generation();
            let err = match self.checkout_routed(class, sync, rotation, config, new, now).await {
                Err(e) if e.may_try_elsewhere() && !matches!(e, BackendError::CheckoutTimeout { .. }) => e,
                other => {
                    if held {
                        self.shared.metrics.held(false, started.elapsed());
                    }
                    return other.map(Some);
                }
            };
            let waited = started.elapsed();
            let left = hold.saturating_sub(waited);
            if left.is_zero() {
                self.shared.metrics.held(true, waited);
                let cause = self.shared.topology.load().no_primary_cause();
                return Err(crate::topology::hold_expired(&err, hold, &cause));
            }
            held = true;
            tracing::debug!(error = %err, "held until the topology changes");
            // Boxed: only while no node can take the unit.
            Box::pin(self.shared.topology.changed_since(seen, left.min(config.monitor.interval))).await;
            config = self.config();
            now = Instant::now();
        }
    }

    /// Route once and check out a connection from the first candidate that gives one (a newly
    /// opened one if `new`).
    async fn checkout_routed(
        &mut self,
        class: &Class,
        sync: SyncMode,
        rotation: Rotation,
        config: &Config,
        new: bool,
        now: Instant,
    ) -> Result<Routed, BackendError> {
        // Routed at once nearly always: the waiting loop (boxed, rare) only for a read that
        // waits for a replica to replay the session's last write. An `async fn` called for
        // every unit cost ~30 instructions in its future's calls and polls alone.
        let (route, routed) = match self.route_now(class, rotation, config, 0) {
            Some(routed) => routed,
            None => Box::pin(self.route_after_waits(class, rotation, config)).await,
        };
        let mut last = None;
        // The unit's clock read for the first candidate; a later one comes after a failed
        // checkout (a connect timeout, perhaps), and the gate may have held the unit.
        let mut first = Some(now);
        for &node in route.candidates.iter() {
            let waited = self.shared.lifecycle.pause_gate(node).await;
            let now = first.take().filter(|_| !waited).unwrap_or_else(Instant::now);
            let pool = self.pool(node);
            match self.checkout_prepared(&pool, sync, config, new, now).await {
                Ok(checkout) => {
                    self.hold(checkout, config.pool.mode);
                    return Ok(routed);
                }
                // The session's state would not apply here (a replica may refuse a setting), or
                // the connections kept being lost while it was replayed: nothing of the unit
                // was sent, so the next candidate may take it.
                Err(Opening::Prepare(e)) => last = Some(e),
                Err(Opening::Checkout(e)) if e.may_try_elsewhere() => last = Some(e),
                Err(Opening::Checkout(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| no_node_error(class)))
    }

    /// A connection of `pool` (a newly opened one if `new`) in line with the session's
    /// settings. One lost before any of the unit was sent on it (a backend terminated while the
    /// connection was opened, or while the session's settings were replayed on it, see
    /// [`BackendError::is_lost_connection`]) is replaced by a newly opened one at once, up to
    /// [`OPEN_ATTEMPTS`] connections within the checkout timeout of the first loss; its pool
    /// then confirms its idle connections before their next use. A connect refused or timed
    /// out is not retried here: a node that is down is the failover hold's business
    /// ([`Session::acquire`]), and fails as fast as before.
    async fn checkout_prepared(
        &self,
        pool: &Arc<Pool>,
        sync: SyncMode,
        config: &Config,
        new: bool,
        now: Instant,
    ) -> Result<Checkout, Opening> {
        // Set at the first loss: the clock is not read for a checkout that loses nothing.
        let mut deadline = None;
        let mut attempt = 1;
        loop {
            // A later attempt comes after a lost connection: the unit's clock read is stale.
            let now = if attempt == 1 { now } else { Instant::now() };
            let checkout =
                if new || attempt > 1 { pool.checkout_new_at(now).await } else { pool.checkout_at(now).await };
            let failed = match checkout {
                Ok(mut checkout) => {
                    // Asked here first: nearly every connection carries the session's settings
                    // already, and the call and its future's poll cost ~75 instructions a unit.
                    if checkout.conn().carries(self.params.settings()) {
                        return Ok(checkout);
                    }
                    match self.prepare_conn(&mut checkout, sync).await {
                        Ok(()) => return Ok(checkout),
                        Err(e) => {
                            checkout.discard();
                            Opening::Prepare(e)
                        }
                    }
                }
                Err(e) => Opening::Checkout(e),
            };
            let e = failed.error();
            if !e.is_lost_connection() || attempt >= OPEN_ATTEMPTS {
                return Err(failed);
            }
            let now = tokio::time::Instant::now();
            if now >= *deadline.get_or_insert(now + config.pool.checkout_timeout) {
                return Err(failed);
            }
            tracing::info!(error = %e, attempt, "server connection lost before the unit was sent; opening another");
            self.shared.metrics.unit(UnitOutcome::ConnectionRetried);
            pool.note_loss();
            attempt += 1;
        }
    }

    /// Decide where a unit goes, after `waited` monitor intervals of waiting for replicas to
    /// replay the session's last write; `None` if it should wait one more. A read that only
    /// replicas which have not replayed it could serve, with no primary to fall back on, waits
    /// a few monitor intervals for their positions to be seen: the write may well be there
    /// already ([`Session::route_after_waits`]). Also what the rest of the unit needs of the
    /// snapshot it was routed by.
    pub(super) fn route_now(
        &self,
        class: &Class,
        rotation: Rotation,
        config: &Config,
        waited: u32,
    ) -> Option<(Route, Routed)> {
        let policy = router::Policy { primary_reads: config.routing.primary_reads };
        let default_route = config.user(self.user()).map(|u| u.default_route).unwrap_or_default();
        // Borrowed, not cloned: a synchronous decision.
        let topology = self.shared.topology.snapshot();
        let view = SessionView {
            stuck_to: None,
            has_session_state: false,
            default_route,
            ticket: match rotation {
                Rotation::Advance => self.shared.tickets.fetch_add(1, Ordering::Relaxed),
                Rotation::Keep => self.shared.tickets.load(Ordering::Relaxed),
            },
            min_lsn: self.last_write_lsn(),
            standby_refused: self.params.standby_refused(),
        };
        let route = router::route(class, &view, &topology, &policy);
        // A position not asked for is never seen replayed: nothing to wait for.
        let waiting_for_replay = route.candidates.is_empty()
            && self.last_write_lsn().is_some_and(|lsn| lsn != UNMEASURED)
            && topology.replicas().next().is_some()
            && waited < RYW_WAIT_TICKS;
        if waiting_for_replay {
            return None;
        }
        tracing::debug!(reason = route.reason.as_str(), candidates = ?route.candidates, "route");
        self.shared.metrics.route(route.reason);
        Some((route, Routed::of(&topology)))
    }

    /// [`Session::route_now`] again after each monitor interval, until it routes.
    async fn route_after_waits(&self, class: &Class, rotation: Rotation, config: &Config) -> (Route, Routed) {
        let mut waited = 0;
        loop {
            waited += 1;
            tokio::time::sleep(config.monitor.interval).await;
            if let Some(routed) = self.route_now(class, rotation, config, waited) {
                return routed;
            }
        }
    }

    pub(super) fn pool(&mut self, node: usize) -> Arc<Pool> {
        if node >= self.pools.len() {
            // The login's lookup, or a reload added nodes after this session began: a slot for
            // every node there is (one allocation, no spare capacity to give back).
            let nodes = self.shared.topology.snapshot().nodes.len().max(node + 1);
            let mut pools = Vec::with_capacity(nodes);
            pools.extend(std::mem::take(&mut self.pools).into_vec());
            pools.resize(nodes, None);
            self.pools = pools.into_boxed_slice();
        }
        let slot = &mut self.pools[node];
        let info = self.entry.info();
        Arc::clone(slot.get_or_insert_with(|| self.shared.pools.get(node, &info.database, &info.user)))
    }

    /// Bring a connection's session settings in line with this session's: nothing if it
    /// carries them, else the difference (see `backend::settings::diff`). Statements this node
    /// ran without error before are pipelined in front of the unit; others (or `RoundTrip`) are
    /// run and answered first, so that a refusal can still move the unit elsewhere.
    pub(super) async fn prepare_conn(&self, checkout: &mut Checkout, sync: SyncMode) -> Result<(), BackendError> {
        let want = self.params.settings();
        let conn = checkout.conn();
        if conn.carries(want) {
            return Ok(());
        }
        let statements = crate::backend::settings::diff(conn.carried(), want);
        let sql = crate::backend::settings::to_query(&statements);
        let pool = Arc::clone(checkout.pool());
        if sync == SyncMode::Pipelined && pool.accepts_sync(&statements) {
            checkout.conn().set_pending_sync(sql, Arc::clone(want));
            pool.state_sync(SyncOutcome::Pipelined, statements.len());
            return Ok(());
        }
        let conn = checkout.conn();
        // Boxed: a round trip, so the allocation is lost in it, and inline its state would
        // grow every unit's future, most of whose checkouts need no sync or a pipelined one.
        match Box::pin(conn.run_internal(&sql)).await {
            Ok(_) => {
                conn.carry(Arc::clone(want));
                pool.sync_accepted(&statements);
                pool.state_sync(SyncOutcome::RoundTrip, statements.len());
                Ok(())
            }
            Err(e) => {
                conn.carry_unknown();
                pool.state_sync(SyncOutcome::Failed, statements.len());
                Err(e)
            }
        }
    }

    /// A connection held across units follows the session's settings by itself, except
    /// after a client `RESET ALL` (the server went back to its defaults, the session to its
    /// startup parameters): between units, bring it back before the next one runs.
    async fn resync_held(&mut self) -> Result<(), BackendError> {
        let between_units = self.state.tx() == TxStatus::Idle && self.state.block() == Block::Closed;
        // Looked at in place: taken out and put back (56 bytes each way) only to be synced.
        let settings = self.params.settings();
        if !between_units || self.held.as_mut().is_none_or(|h| h.checkout.conn().carries(settings)) {
            return Ok(());
        }
        let Some(mut held) = self.held.take() else { return Ok(()) };
        let result = self.prepare_conn(&mut held.checkout, SyncMode::RoundTrip).await;
        self.held.put(held);
        result
    }

    /// Keep `checkout` for the unit; `mode` is the pool mode of the configuration the unit was
    /// routed by.
    pub(super) fn hold(&mut self, mut checkout: Checkout, mode: PoolMode) {
        self.key().set_target(Some(checkout.conn().cancel_target()));
        self.held.put(Held { checkout });
        let session_pooling = mode == PoolMode::Session;
        self.state = self.state.after(Event::Acquired { session_pooling });
    }

    pub(super) fn conn(&mut self) -> &mut ServerConn {
        self.held.as_mut().expect("held").checkout.conn()
    }

    /// Release at ReadyForQuery `I` unless something else holds the connection (see
    /// [`SessionState`]).
    pub(super) async fn release_if_done(&mut self, status: TxStatus) {
        if status == TxStatus::Idle && self.rare.peek_mut().is_some_and(|r| std::mem::take(&mut r.catalog_stale)) {
            // Committed (or rolled back, which a reload does not mind): judge calls by the new
            // catalog.
            self.shared.classifiers.refresh(self.database(), self.user());
        }
        if self.held.is_none() {
            return;
        }
        self.state = self.state.after(Event::Ready(status));
        if self.state == SessionState::Free {
            self.key().set_target(None);
            self.held.take().expect("checked above").checkout.release(false).await;
        }
    }

    /// An extended block left open (by Flush, or cut short) holds its connection only while
    /// the next unit can run there: a write after a block that read on a replica must go to
    /// the primary. Inside a transaction block, or with state bound to the connection, nothing
    /// moves.
    pub(super) fn block_must_move(&self, class: &Class) -> bool {
        self.state.block() == Block::Open && class.access == Access::Write && self.writes_move()
    }

    /// A write may not run on the held connection, and nothing keeps the session there: it is
    /// not the primary's, outside a transaction block, with no state bound to it, under
    /// transaction pooling ([`SessionState::may_move`]).
    pub(super) fn writes_move(&self) -> bool {
        self.held.is_some()
            && self.state.may_move()
            && self.writes_move_from(self.shared.topology.snapshot().primary().map(|p| p.index))
    }

    /// [`Session::writes_move`] with the primary's index already read.
    pub(super) fn writes_move_from(&self, primary: Option<usize>) -> bool {
        let Some(held) = self.held.as_ref() else { return false };
        self.state.may_move() && primary != Some(held.checkout.pool().node())
    }

    /// End the held block on its connection (a Sync, its ReadyForQuery swallowed) and give the
    /// connection back, so the next unit is routed afresh. Statements the block prepared are
    /// prepared again lazily wherever they are needed. True if the block set something the
    /// session could not take along ([`Session::settle_closed_block`]): the connection was
    /// reset, and the unit that needed the move must not run as if it had been kept.
    pub(super) async fn close_held_block(&mut self) -> bool {
        self.key().set_target(None);
        self.state = self.state.after(Event::BlockClosed);
        debug_assert_eq!(self.state, SessionState::Free);
        let lost = self.settle_closed_block();
        if let Some(held) = self.held.take() {
            tracing::debug!("closing a Flush-held block on a replica: the next unit writes");
            held.checkout.release(lost).await;
        }
        lost
    }

    /// Close the held connection, and the idle ones to the same node only if the monitor no
    /// longer lets the node take traffic. One lost backend (`pg_terminate_backend`) does not
    /// prove its siblings dead, but they may be: the pool confirms each with a round trip
    /// before its next use ([`Pool::note_loss`](crate::backend::pool::Pool::note_loss)), and
    /// the monitor closes them once the node is seen down.
    pub(super) fn drop_held_and_siblings(&mut self) {
        if let Some(h) = self.held.as_ref() {
            let node = h.checkout.pool().node();
            let topology = self.shared.topology.load();
            let healthy = topology.nodes.get(node).is_some_and(|n| n.excluded.is_none());
            if !healthy {
                self.shared.pools.clear_node(node);
            }
        }
        self.drop_held();
    }

    /// The held connection was lost: close it, and have its pool confirm the idle ones.
    pub(super) fn drop_held(&mut self) {
        self.key().set_target(None);
        self.state = self.state.after(Event::Lost);
        // A block dies with its connection: what it set is gone too.
        if let Some(rare) = self.rare.peek_mut() {
            rare.pending_sets.clear();
            rare.open_block = None;
        }
        if let Some(h) = self.held.take() {
            h.checkout.pool().note_loss();
            h.checkout.discard();
        }
    }
}

/// Whether a unit takes the next turn of the replica rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rotation {
    /// The unit runs a statement: it takes the next replica in turn.
    Advance,
    /// The unit only prepares or describes (Parse/Describe/Sync before an execute, as
    /// tokio-postgres, pgjdbc and asyncpg send): it goes where the next executing unit will go,
    /// without taking a turn. Otherwise a lone client whose every read is prepare + execute
    /// would spend two turns per read and land every execute on the same replica; this way the
    /// statement is also prepared on the node that runs it.
    Keep,
}

impl Rotation {
    pub(super) fn of(unit: &Unit) -> Rotation {
        if unit.executes() {
            Rotation::Advance
        } else {
            Rotation::Keep
        }
    }
}
