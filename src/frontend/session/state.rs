//! The session's hold on a server connection, as one state: whether it keeps one between
//! units, why (its transaction, an open extended block, state bound to it, session pooling),
//! the transaction status and the extended block. One pure transition per event, with a table
//! test; the session stores only this (and the checkout itself).

use super::block::{Block, UnitEnd};
use super::AfterLoss;
use crate::protocol::TxStatus;

/// Why a kept server connection is the session's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tie {
    /// Only for the running unit, its transaction or its open block: released once none is.
    Unit,
    /// State bound to the connection (temp table, LISTEN, SQL PREPARE, a SET inside a
    /// transaction...): kept for the session's life.
    Pinned,
    /// Session pooling: the connection is the session's for its life.
    SessionPooled,
}

/// The session's hold on a server connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SessionState {
    /// No server connection.
    Free,
    /// A server connection is held.
    Held {
        /// Why.
        tie: Tie,
        /// Transaction status of its last ReadyForQuery.
        tx: TxStatus,
        /// The extended-protocol block open on it.
        block: Block,
    },
}

/// What happens to the session's hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// A server connection was checked out for a unit.
    Acquired {
        /// Session pooling is configured.
        session_pooling: bool,
    },
    /// A unit ended with ReadyForQuery.
    Ready(TxStatus),
    /// A unit returned before its Sync (Flush without Sync), its replies all in.
    Partial {
        /// The server reported an error in it.
        errored: bool,
        /// A write ran in it.
        wrote: bool,
    },
    /// A unit left state bound to the connection.
    Pin,
    /// The held block was closed on its connection (Sync sent, reply swallowed), and the
    /// connection given back: the next unit moves.
    BlockClosed,
    /// The connection died (under a unit, or a FATAL or close while the client was idle), or
    /// was dropped.
    Lost,
}

impl SessionState {
    /// The state after `event`.
    pub(super) fn after(self, event: Event) -> SessionState {
        let SessionState::Held { tie, tx, block } = self else {
            return match event {
                Event::Acquired { session_pooling: true } => Self::held(Tie::SessionPooled),
                Event::Acquired { session_pooling: false } => Self::held(Tie::Unit),
                // Nothing held: nothing changes.
                _ => SessionState::Free,
            };
        };
        match event {
            Event::Acquired { .. } => self,
            Event::Ready(TxStatus::Idle) if tie == Tie::Unit => SessionState::Free,
            Event::Ready(tx) => SessionState::Held { tie, tx, block: block.after(UnitEnd::Ready) },
            Event::Partial { errored, wrote } => {
                SessionState::Held { tie, tx, block: block.after(UnitEnd::Partial { errored, wrote }) }
            }
            Event::Pin if tie == Tie::Unit => SessionState::Held { tie: Tie::Pinned, tx, block },
            Event::Pin => self,
            Event::BlockClosed if tie == Tie::Unit && tx == TxStatus::Idle => SessionState::Free,
            Event::BlockClosed => self,
            Event::Lost => SessionState::Free,
        }
    }

    fn held(tie: Tie) -> SessionState {
        SessionState::Held { tie, tx: TxStatus::Idle, block: Block::Closed }
    }

    /// Transaction status (idle when nothing is held).
    pub(super) fn tx(self) -> TxStatus {
        match self {
            SessionState::Free => TxStatus::Idle,
            SessionState::Held { tx, .. } => tx,
        }
    }

    /// The open extended block (closed when nothing is held).
    pub(super) fn block(self) -> Block {
        match self {
            SessionState::Free => Block::Closed,
            SessionState::Held { block, .. } => block,
        }
    }

    /// Why the connection is held, if it is.
    pub(super) fn tie(self) -> Option<Tie> {
        match self {
            SessionState::Free => None,
            SessionState::Held { tie, .. } => Some(tie),
        }
    }

    /// The connection carries session state another client must not inherit: reset it when
    /// it is given back.
    pub(super) fn needs_reset(self) -> bool {
        matches!(self.tie(), Some(Tie::Pinned | Tie::SessionPooled))
    }

    /// Nothing but the running unit keeps the session on its connection: a write may move to
    /// another node.
    pub(super) fn may_move(self) -> bool {
        self.tie() == Some(Tie::Unit) && self.tx() == TxStatus::Idle
    }

    /// What the session does after its connection died in this state, under a unit that
    /// `ends_block` (COMMIT, ROLLBACK... : only a running unit can) or not: an open transaction
    /// died with it (the client hears so until it ends it, unless that unit was ending it), or
    /// state only that connection had (the session ends), or an open extended block that wrote
    /// or failed (its Sync must not pass for a commit, nor what follows run elsewhere), or
    /// nothing it needs (it goes on on a new connection).
    pub(super) fn on_loss(self, ends_block: bool) -> AfterLoss {
        match (self.tie(), self.tx()) {
            (Some(Tie::SessionPooled), _) => AfterLoss::End("the session's server connection (session pooling)"),
            (Some(Tie::Pinned), _) => {
                AfterLoss::End("state bound to that connection (temporary tables, LISTEN, prepared SQL)")
            }
            (_, TxStatus::Idle) | (None, _) => match self.block() {
                Block::OpenWithWrite => AfterLoss::BlockLost,
                Block::Failed => AfterLoss::BlockFailed,
                Block::Open | Block::Closed => AfterLoss::Continue,
            },
            (Some(Tie::Unit), _) if ends_block => AfterLoss::TransactionEnded,
            (Some(Tie::Unit), _) => AfterLoss::TransactionLost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(tie: Tie, tx: TxStatus, block: Block) -> SessionState {
        SessionState::Held { tie, tx, block }
    }

    #[test]
    fn the_hold_on_a_server_connection_by_event() {
        use Block::{Closed, Failed, Open, OpenWithWrite};
        use SessionState::Free;
        use Tie::{Pinned, SessionPooled, Unit};
        use TxStatus::{Failed as TxFailed, Idle, InTransaction};
        let acquired = Event::Acquired { session_pooling: false };
        let flush_read = Event::Partial { errored: false, wrote: false };
        let flush_write = Event::Partial { errored: false, wrote: true };
        let flush_error = Event::Partial { errored: true, wrote: false };
        // (before, event) -> after
        let cases = [
            (Free, acquired, held(Unit, Idle, Closed)),
            (Free, Event::Acquired { session_pooling: true }, held(SessionPooled, Idle, Closed)),
            (held(Unit, Idle, Closed), Event::Ready(Idle), Free),
            (held(Unit, Idle, Closed), Event::Ready(InTransaction), held(Unit, InTransaction, Closed)),
            (held(Unit, InTransaction, Closed), Event::Ready(TxFailed), held(Unit, TxFailed, Closed)),
            (held(Unit, TxFailed, Closed), Event::Ready(Idle), Free),
            (held(Pinned, Idle, Closed), Event::Ready(Idle), held(Pinned, Idle, Closed)),
            (held(SessionPooled, InTransaction, Closed), Event::Ready(Idle), held(SessionPooled, Idle, Closed)),
            // Flush without Sync: the block keeps the connection, even with no transaction.
            (held(Unit, Idle, Closed), flush_read, held(Unit, Idle, Open)),
            (held(Unit, Idle, Open), flush_write, held(Unit, Idle, OpenWithWrite)),
            (held(Unit, InTransaction, Closed), flush_error, held(Unit, InTransaction, Failed)),
            (held(Unit, Idle, Failed), Event::Ready(Idle), Free),
            (held(Pinned, Idle, Open), Event::Ready(Idle), held(Pinned, Idle, Closed)),
            // A write after a Flush-held read on a replica: the block is closed, the unit moves.
            (held(Unit, Idle, Open), Event::BlockClosed, Free),
            (held(Pinned, Idle, Open), Event::BlockClosed, held(Pinned, Idle, Open)),
            (held(Unit, InTransaction, Open), Event::BlockClosed, held(Unit, InTransaction, Open)),
            (held(Unit, InTransaction, Closed), Event::Pin, held(Pinned, InTransaction, Closed)),
            (held(SessionPooled, Idle, Closed), Event::Pin, held(SessionPooled, Idle, Closed)),
            // A FATAL (or close) while idle, in any state: the connection is gone.
            (held(Pinned, Idle, Closed), Event::Lost, Free),
            (held(Unit, InTransaction, Open), Event::Lost, Free),
            // Events with nothing held change nothing.
            (Free, Event::Ready(Idle), Free),
            (Free, flush_read, Free),
            (Free, Event::Pin, Free),
            (Free, Event::Lost, Free),
            (Free, Event::BlockClosed, Free),
        ];
        for (before, event, want) in cases {
            assert_eq!(before.after(event), want, "{before:?} + {event:?}");
        }
    }

    #[test]
    fn a_lost_connection_ends_only_sessions_that_lost_their_state() {
        use Block::{Closed, Failed, Open, OpenWithWrite};
        use Tie::{Pinned, SessionPooled, Unit};
        use TxStatus::{Failed as TxFailed, Idle, InTransaction};
        // (state, the lost unit ends the block) -> verdict
        let cases = [
            (SessionState::Free, false, AfterLoss::Continue),
            (held(Unit, Idle, Closed), false, AfterLoss::Continue),
            (held(Unit, Idle, Closed), true, AfterLoss::Continue),
            (held(Unit, Idle, Open), false, AfterLoss::Continue),
            // A Flush-held block that wrote: its implicit transaction died uncommitted.
            (held(Unit, Idle, OpenWithWrite), false, AfterLoss::BlockLost),
            (held(Unit, Idle, OpenWithWrite), true, AfterLoss::BlockLost),
            // One that failed: what the client sends up to its Sync is still discarded.
            (held(Unit, Idle, Failed), false, AfterLoss::BlockFailed),
            // Inside a transaction block the transaction's loss says it all.
            (held(Unit, InTransaction, OpenWithWrite), false, AfterLoss::TransactionLost),
            (held(Unit, InTransaction, Closed), false, AfterLoss::TransactionLost),
            (held(Unit, TxFailed, Open), false, AfterLoss::TransactionLost),
            (held(Unit, InTransaction, Closed), true, AfterLoss::TransactionEnded),
            (held(Unit, TxFailed, Closed), true, AfterLoss::TransactionEnded),
        ];
        for (state, ends_block, want) in cases {
            assert_eq!(state.on_loss(ends_block), want, "{state:?}, ends block: {ends_block}");
        }
        for state in [held(Pinned, Idle, Closed), held(Pinned, InTransaction, Closed), held(SessionPooled, Idle, Open)]
        {
            for ends_block in [false, true] {
                assert!(matches!(state.on_loss(ends_block), AfterLoss::End(_)), "{state:?} must end");
            }
        }
        assert!(held(Pinned, Idle, Closed).needs_reset() && !held(Unit, Idle, Closed).needs_reset());
        assert!(held(Unit, Idle, Open).may_move());
        assert!(!held(Unit, InTransaction, Open).may_move() && !held(Pinned, Idle, Open).may_move());
    }
}
