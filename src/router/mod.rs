//! Router: pure, synchronous statement classification and routing.
//!
//! [`classify`] (or [`Classifier::classify`], which adds a bounded cache and a function catalog)
//! says what a SQL text needs; [`route`] says which nodes may run it, in the order to try them,
//! and why. Nothing here does IO, awaits, or mutates session state: the session acts on the
//! decision. The product's promise lives here: a statement goes to a replica only if it is
//! provably a pure read; anything unknown, unparseable or odd is a [`Access::Write`].
//!
//! Layout:
//! - `lexer`: PostgreSQL tokens (comments, all quoting forms), leading routing hints;
//! - `statement`: splits a simple Query at top-level `;` and decides each statement from its
//!   first keywords (transactions, session commands, COPY, EXPLAIN, DML/DDL);
//! - `query`: SELECT / WITH / VALUES / TABLE: a token scan for locking clauses, writing CTEs,
//!   `SELECT INTO` and function calls; the parser only when the scan cannot prove a read;
//! - `ast`: the `sqlparser` fallback walk;
//! - `ddl`: which DDL changes the function catalog (only that reloads it);
//! - `functions` (tables in `builtins`): built-in read-only / writing functions, the
//!   [`FunctionCatalog`], the allow-list;
//! - `node_local`: statements whose answer describes the node that runs them (prepared
//!   transactions, locks, activity, recovery state): only the primary's answer is the cluster's;
//! - `cache`: [`Classifier`], the shared bounded cache; `cache_key`: the text it is keyed by
//!   (comments and plain literals dropped); `key_hash`: that key's hash, seeded per process;
//! - `route`: [`route`], [`SessionView`], [`Policy`];
//! - `standby`: [`StandbyRefusal`], session defaults a hot standby refuses.
//!
//! This module must not touch sockets, the topology handle, pools or metrics.

mod ast;
mod builtins;
mod cache;
mod cache_key;
mod ddl;
mod functions;
mod key_hash;
mod lexer;
mod node_local;
mod query;
mod route;
mod standby;
mod statement;

#[cfg(test)]
mod route_tests;
#[cfg(test)]
mod tests;

pub use cache::Classifier;
pub use functions::FunctionCatalog;
pub use route::{route, Candidates, Policy, SessionView};
pub use standby::StandbyRefusal;

pub use crate::config::{DefaultRoute, PrimaryReads};

/// Whether a statement may run on a replica. Ordered by strictness (Read < NodeLocal < Write):
/// `max` of two is what a unit holding both needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    /// A pure read: any caught-up replica may run it.
    Read,
    /// A read whose answer describes the node that runs it (`pg_prepared_xacts`, `pg_locks`,
    /// `pg_stat_activity`, `pg_backend_pid()`, `pg_is_in_recovery()`...): it writes nothing, but
    /// only the primary's answer is the cluster's, so the primary runs it.
    NodeLocal,
    /// Anything that writes, locks, or might: the primary only.
    Write,
}

/// Why a statement was classified or routed the way it was (logged, counted in metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    // --- classification: reads ---
    /// Nothing but whitespace, comments or `;`.
    Empty,
    /// SELECT / WITH / VALUES / TABLE proven read by the lexical pass.
    PureRead,
    /// SELECT / WITH / VALUES / TABLE proven read by parsing it.
    ParsedRead,
    /// SHOW.
    Show,
    /// EXPLAIN without ANALYZE (nothing is executed).
    Explain,
    /// COPY ... TO STDOUT of a table or a read query.
    CopyOut,
    /// SET / RESET / DISCARD / DEALLOCATE: session bookkeeping, no data.
    SessionCommand,
    /// COMMIT / ROLLBACK / SAVEPOINT / RELEASE / SET TRANSACTION (a write for READ WRITE).
    TxControl,
    /// BEGIN / START TRANSACTION ... READ ONLY.
    BeginReadOnly,
    /// DECLARE of a read query, FETCH, MOVE, CLOSE.
    Cursor,
    // --- classification: writes ---
    /// BEGIN / START TRANSACTION (read-write).
    BeginReadWrite,
    /// SERIALIZABLE (even READ ONLY): a hot standby refuses it.
    Serializable,
    /// INSERT / UPDATE / DELETE / MERGE (also after a WITH).
    Dml,
    /// CREATE / ALTER / DROP / TRUNCATE / COMMENT / SECURITY LABEL / IMPORT ...
    Ddl,
    /// GRANT / REVOKE / REASSIGN OWNED.
    Privileges,
    /// VACUUM / ANALYZE / CLUSTER / REINDEX / REFRESH MATERIALIZED VIEW / CHECKPOINT / LOAD.
    Maintenance,
    /// COPY ... FROM.
    CopyIn,
    /// COPY ... TO a server file or program.
    CopyToFile,
    /// CALL / DO.
    Procedural,
    /// LOCK TABLE.
    Lock,
    /// NOTIFY / LISTEN / UNLISTEN (none of them run on a standby).
    Notify,
    /// PREPARE / EXECUTE (SQL-level prepared statements).
    PreparedStatement,
    /// PREPARE TRANSACTION / COMMIT PREPARED / ROLLBACK PREPARED.
    TwoPhase,
    /// FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE.
    LockingClause,
    /// A data-modifying CTE: `WITH x AS (INSERT ... RETURNING ...) SELECT ...`.
    WritingCte,
    /// SELECT ... INTO creates a table.
    SelectInto,
    /// Calls a built-in that writes or locks (nextval, advisory locks, set_config, ...).
    WritingFunction,
    /// Calls a function the catalog says is VOLATILE.
    VolatileFunction,
    /// Calls a function nobody knows.
    UnknownFunction,
    /// Could not be parsed (or is malformed): the primary decides.
    Unparseable,
    /// Starts with a keyword the router does not know.
    UnknownStatement,
    /// Reads what describes the node rather than the data (prepared transactions, locks,
    /// activity, replication, recovery state, the backend's pid...): the primary.
    NodeLocal,
    /// A multi-statement Query with at least one statement that is not a pure read.
    MultiStatementWrite,
    /// A replica rejected this exact text before (SQLSTATE 25006).
    NotedWrite,
    // --- routing ---
    /// A write: the primary.
    Write,
    /// A read served by a replica first.
    ReadOnReplica,
    /// A read whose first candidate is the primary (`primary_reads = always` rotation).
    ReadOnPrimary,
    /// A read with no replica available: the primary.
    ReadFallbackPrimary,
    /// The session is inside a transaction or pinned: the same node.
    InTransaction,
    /// A `/* sluice: primary */` hint.
    HintPrimary,
    /// A `/* sluice: replica */` hint.
    HintReplica,
    /// The session changed session state: the primary until state replay exists.
    SessionState,
    /// The user's `default_route` says primary.
    UserDefault,
    /// The user's `default_route` says replica.
    UserDefaultReplica,
    /// No primary in the topology.
    NoPrimary,
    /// No replica (and the primary may not serve reads).
    NoReplica,
    /// A read went to the primary because no replica has replayed the session's last write.
    ReadYourWrites,
    /// A read went to the primary because the session's defaults (SERIALIZABLE, forced read-write)
    /// make a hot standby refuse it.
    StandbyRefused,
}

impl Reason {
    /// A stable snake_case name (log fields, metric labels).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        use Reason::*;
        match self {
            Empty => "empty",
            PureRead => "pure_read",
            ParsedRead => "parsed_read",
            Show => "show",
            Explain => "explain",
            CopyOut => "copy_out",
            SessionCommand => "session_command",
            TxControl => "tx_control",
            BeginReadOnly => "begin_read_only",
            Cursor => "cursor",
            BeginReadWrite => "begin_read_write",
            Serializable => "serializable",
            Dml => "dml",
            Ddl => "ddl",
            Privileges => "privileges",
            Maintenance => "maintenance",
            CopyIn => "copy_in",
            CopyToFile => "copy_to_file",
            Procedural => "procedural",
            Lock => "lock",
            Notify => "notify",
            PreparedStatement => "prepared_statement",
            TwoPhase => "two_phase",
            LockingClause => "locking_clause",
            WritingCte => "writing_cte",
            SelectInto => "select_into",
            WritingFunction => "writing_function",
            VolatileFunction => "volatile_function",
            UnknownFunction => "unknown_function",
            Unparseable => "unparseable",
            UnknownStatement => "unknown_statement",
            NodeLocal => "node_local",
            MultiStatementWrite => "multi_statement_write",
            NotedWrite => "noted_write",
            Write => "write",
            ReadOnReplica => "read_on_replica",
            ReadOnPrimary => "read_on_primary",
            ReadFallbackPrimary => "read_fallback_primary",
            InTransaction => "in_transaction",
            HintPrimary => "hint_primary",
            HintReplica => "hint_replica",
            SessionState => "session_state",
            UserDefault => "user_default",
            UserDefaultReplica => "user_default_replica",
            NoPrimary => "no_primary",
            NoReplica => "no_replica",
            ReadYourWrites => "read_your_writes",
            StandbyRefused => "standby_refused",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Effect of a statement on the transaction state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxEffect {
    /// Does not open or close a transaction (also SAVEPOINT, RELEASE, ROLLBACK TO, and
    /// COMMIT/ROLLBACK AND CHAIN, after which the transaction goes on).
    None,
    /// BEGIN / START TRANSACTION.
    Begin {
        /// `READ ONLY` was given.
        read_only: bool,
    },
    /// COMMIT / ROLLBACK / END / ABORT / PREPARE TRANSACTION.
    End,
    /// `SET TRANSACTION READ ONLY`: the current transaction becomes read-only.
    SetReadOnly,
}

/// Effect of a statement on state that outlives the transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SessionEffect {
    /// Changes nothing beyond the transaction.
    None,
    /// SET / RESET / DISCARD ALL / set_config(...): session parameters change.
    Parameter,
    /// Creates state bound to one server connection (temp table, LISTEN, PREPARE, WITH HOLD
    /// cursor, session advisory lock): the session must stay on that connection.
    Pin,
}

impl SessionEffect {
    /// The stronger of two effects (Pin > Parameter > None).
    #[must_use]
    pub fn max(self, other: Self) -> Self {
        fn rank(e: SessionEffect) -> u8 {
            match e {
                SessionEffect::None => 0,
                SessionEffect::Parameter => 1,
                SessionEffect::Pin => 2,
            }
        }
        if rank(other) > rank(self) {
            other
        } else {
            self
        }
    }
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
    /// Creates, changes or drops functions (or what resolves them: schemas, extensions): the
    /// function catalog must be reloaded once it is committed.
    pub changes_functions: bool,
}

impl Class {
    /// A class with no transaction or session effect and no hint.
    #[must_use]
    pub fn new(access: Access, reason: Reason) -> Self {
        Self { access, reason, tx: TxEffect::None, session: SessionEffect::None, hint: None, changes_functions: false }
    }

    /// A read for `reason`.
    #[must_use]
    pub fn read(reason: Reason) -> Self {
        Self::new(Access::Read, reason)
    }

    /// A write for `reason`.
    #[must_use]
    pub fn write(reason: Reason) -> Self {
        Self::new(Access::Write, reason)
    }

    /// A node-local read (the primary answers it).
    #[must_use]
    pub fn node_local() -> Self {
        Self::new(Access::NodeLocal, Reason::NodeLocal)
    }

    /// The same class with transaction effect `tx`.
    #[must_use]
    pub fn with_tx(mut self, tx: TxEffect) -> Self {
        self.tx = tx;
        self
    }

    /// The same class with session effect `session`.
    #[must_use]
    pub fn with_session(mut self, session: SessionEffect) -> Self {
        self.session = session;
        self
    }
}

/// Classify one SQL text (a simple Query string or a Parse's statement) without a cache or a
/// function catalog: calls to functions that are not built-in are writes.
#[must_use]
pub fn classify(sql: &str) -> Class {
    let allow = functions::AllowList::default();
    statement::classify_text(sql, functions::Resolver { catalog: None, allow: &allow })
}

/// The decision: node indices to try in order (empty: nothing can serve it), and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Nodes to try, in order. A later one is tried only if nothing was sent to the earlier one.
    pub candidates: Candidates,
    /// Why.
    pub reason: Reason,
}
