//! Router: pure, synchronous statement classification and routing.
//!
//! `classify(sql) -> Class` says what a statement needs; `route(class, session, topology, policy)
//! -> Route` says which nodes may run it, in the order to try them, and why. Nothing here does IO,
//! awaits, or mutates session state: the session acts on the decision.
//!
//! (Skeleton: the classifier is being written; until then everything is a write.)

use crate::topology::Topology;

/// Whether a statement may run on a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// A pure read: any caught-up replica may run it.
    Read,
    /// Anything that writes, locks, or might: the primary only.
    Write,
}

/// Why a statement was classified or routed the way it was (logged, later counted in metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Not classified yet (skeleton).
    Unclassified,
}

/// Effect of a statement on the transaction state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxEffect {
    /// Does not open or close a transaction.
    None,
    /// BEGIN / START TRANSACTION.
    Begin {
        /// `READ ONLY` was given.
        read_only: bool,
    },
    /// COMMIT / ROLLBACK / END / ABORT.
    End,
}

/// Effect of a statement on state that outlives the transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionEffect {
    /// Changes nothing beyond the transaction.
    None,
    /// SET / RESET / set_config(...): session parameters change.
    Parameter,
    /// Creates state bound to one server connection (temp table, LISTEN, PREPARE, WITH HOLD
    /// cursor, session advisory lock): the session must stay on that connection.
    Pin,
}

/// A routing hint from a leading comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hint {
    /// `/* sluice: primary */`
    Primary,
    /// `/* sluice: replica */`
    Replica,
}

/// What a statement (or all statements of one simple Query) needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Class {
    /// Read or write.
    pub access: Access,
    /// Why.
    pub reason: Reason,
    /// Transaction effect.
    pub tx: TxEffect,
    /// Session effect.
    pub session: SessionEffect,
    /// Routing hint, if any.
    pub hint: Option<Hint>,
}

/// Classify one SQL text (skeleton: everything is a write).
#[must_use]
pub fn classify(_sql: &str) -> Class {
    Class {
        access: Access::Write,
        reason: Reason::Unclassified,
        tx: TxEffect::None,
        session: SessionEffect::None,
        hint: None,
    }
}

/// The decision: node indices to try in order (empty: nothing can serve it), and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Nodes to try, in order. A later one is tried only if nothing was sent to the earlier one.
    pub candidates: Vec<usize>,
    /// Why.
    pub reason: Reason,
}

/// Route a classified statement (skeleton: the primary).
#[must_use]
pub fn route(_class: &Class, topology: &Topology) -> Route {
    Route {
        candidates: topology.primary().map(|p| p.index).into_iter().collect(),
        reason: Reason::Unclassified,
    }
}
