//! Units of client traffic and the pure facts about them: which messages a client may send,
//! what a unit needs (its class), whether it may enter COPY, whether it resets statements or
//! session state, and whether its write position must be learnt. No IO here.

use std::sync::Arc;

use super::statements::{Statements, StmtDef};
use crate::error::sqlstate;
use crate::error::BackendError;
use crate::protocol::messages;
use crate::protocol::{tag, Frame, Frames, Kinds, Msg};
use crate::router::{Access, Class, Classifier, Reason, TxEffect};

/// A unit of client traffic.
pub(super) enum Unit {
    /// One Query or FunctionCall message.
    Simple(Frame),
    /// Extended-protocol messages, ending with Sync (or Flush, or what the client had sent when
    /// the unit started: the relay streams in the rest), as one run.
    Extended(Frames),
}

impl Unit {
    /// An extended unit of these messages (tests build units message by message).
    #[cfg(test)]
    pub(super) fn extended(frames: Vec<Frame>) -> Unit {
        Unit::Extended(frames.into_iter().collect())
    }

    /// What the unit needs: its Query's class, or one class for all statements of a batch; and
    /// the definitions found on the way, for translating the unit ([`Resolved`]).
    pub(super) fn classify(&self, statements: &Statements, classifier: &Classifier) -> (Arc<Class>, Resolved) {
        let c = classifier;
        let mut resolved = Resolved::default();
        let class = match self {
            // Its text's bytes: an ASCII text is looked up without validating it first.
            Unit::Simple(f) if f.tag() == tag::QUERY => match messages::query_text(f.body()) {
                Some(text) => c.classify_query_text(text),
                None => None,
            }
            .unwrap_or_else(|| Arc::new(Class::write(Reason::UnknownStatement))),
            Unit::Simple(_) => Arc::new(Class::write(Reason::UnknownStatement)),
            Unit::Extended(frames) => {
                // Folded as it goes: a batch of one statement (the usual case) shares that
                // statement's class instead of allocating a list and a combined copy.
                let mut classes = Combined::default();
                // Statements parsed in this unit: a Bind of one of them is counted by its Parse,
                // not by the definition its name had before the unit (drivers parse every
                // query as the unnamed statement).
                let mut parsed = Parsed::default();
                // A Parse or a Close came before: what a name means may change as the unit is
                // translated (a Close, a `DEALLOCATE`), so later Binds are looked up again then.
                let mut redefines = false;
                for (i, f) in frames.iter().enumerate() {
                    let class = match f.tag() {
                        tag::PARSE => {
                            redefines = true;
                            let Some(p) = messages::decode_parse(f.body()) else {
                                classes.add(Arc::new(Class::write(Reason::UnknownStatement)));
                                continue;
                            };
                            parsed.note(p.name);
                            match statements.reparsed(p.name, p.query, p.param_types, c) {
                                Some(def) => {
                                    resolved.keep(i, def);
                                    Arc::clone(&def.class)
                                }
                                // The definition translating the Parse will record, made once.
                                None if resolved.has_room() => {
                                    let def = Arc::new(StmtDef::new(p.query, p.param_types, c));
                                    resolved.keep(i, &def);
                                    Arc::clone(&def.class)
                                }
                                None => c.classify(&String::from_utf8_lossy(p.query)),
                            }
                        }
                        tag::BIND => {
                            let stmt = messages::decode_bind_head(f.body())
                                .filter(|h| !parsed.has(h.statement))
                                .and_then(|h| statements.get(h.statement));
                            match stmt {
                                Some(def) => {
                                    if !redefines {
                                        resolved.keep(i, def);
                                    }
                                    Arc::clone(&def.class)
                                }
                                None => continue,
                            }
                        }
                        tag::CLOSE => {
                            redefines = true;
                            continue;
                        }
                        _ => continue,
                    };
                    classes.add(class);
                }
                classes.finish()
            }
        };
        (class, resolved)
    }

    /// True if the unit runs a statement (a Query, or an Execute in the batch); false for a
    /// batch that only prepares or describes, as drivers send before executing.
    pub(super) fn executes(&self) -> bool {
        match self {
            Unit::Simple(_) => true,
            Unit::Extended(frames) => frames.kinds().any(Kinds::EXECUTE),
        }
    }

    /// True if any statement of the unit (parsed now or bound from earlier) mentions COPY.
    pub(super) fn may_copy_in(&self, statements: &Statements) -> bool {
        let mentions = |t: &[u8]| t.windows(4).any(|w| w.eq_ignore_ascii_case(b"copy"));
        match self {
            Unit::Simple(f) => mentions(f.body()),
            Unit::Extended(frames) => frames.iter().any(|f| match f.tag() {
                tag::PARSE => mentions(f.body()),
                tag::BIND => messages::decode_bind_head(f.body())
                    .and_then(|h| statements.get(h.statement))
                    .is_none_or(|def| mentions(&def.key.query)),
                _ => false,
            }),
        }
    }

    /// An extended-protocol unit not (yet) ended by its Sync.
    pub(super) fn is_open_block(&self) -> bool {
        matches!(self, Unit::Extended(frames) if frames.last_tag() != Some(tag::SYNC))
    }

    /// True if the server answers the unit with ReadyForQuery (a Query, or a batch ending
    /// with Sync), so that a query can be pipelined right behind it.
    pub(super) fn ends_cleanly(&self) -> bool {
        match self {
            Unit::Simple(f) => f.tag() == tag::QUERY,
            Unit::Extended(frames) => frames.last_tag() == Some(tag::SYNC),
        }
    }

    /// True if the unit is a Query that only resets the connection's session state (`RESET
    /// ALL`, `DISCARD ALL`, a driver pool's reset: [`is_reset_all`]). What it does dies with
    /// the connection, so one whose connection was lost before any reply reached the client may
    /// run again on another, as a read may: asyncpg runs its reset at every release, and closes
    /// its connection when the reset fails.
    ///
    /// Asked of every autocommit write that runs on a fresh checkout, so the first word is
    /// looked at before the whole text is split: an `UPDATE` or a `DELETE` stops there.
    pub(super) fn only_resets(&self) -> bool {
        const FIRST_WORDS: [&str; 5] = ["reset", "discard", "select", "close", "unlisten"];
        let Unit::Simple(f) = self else { return false };
        if f.tag() != tag::QUERY || !may_start_with(f.body(), b"CDRSU") {
            return false;
        }
        let Some(sql) = messages::decode_query(f.body()) else { return false };
        let first = sql.split_whitespace().next().unwrap_or("");
        FIRST_WORDS.iter().any(|w| first.eq_ignore_ascii_case(w)) && is_reset_alone(sql)
    }

    /// True if the unit is a Query of one `BEGIN` / `START TRANSACTION` (with any modes) that
    /// `class` says opens a block: it changes nothing until a statement runs in it, so one whose
    /// connection was lost before any reply may run again on another, as a read may. Failed
    /// instead, asyncpg keeps its transaction object as the connection's open one (it records
    /// it before sending BEGIN and drops it only at the block's end), and every later
    /// `transaction()` of that connection became a `SAVEPOINT` outside any block (`25P01`).
    pub(super) fn only_begins(&self, class: &Class) -> bool {
        let Unit::Simple(f) = self else { return false };
        if !matches!(class.tx, TxEffect::Begin { .. }) || f.tag() != tag::QUERY {
            return false;
        }
        let Some(sql) = messages::decode_query(f.body()) else { return false };
        let text = sql.trim().trim_end_matches(';');
        let first = text.split_whitespace().next().unwrap_or("");
        !text.contains(';') && (first.eq_ignore_ascii_case("begin") || first.eq_ignore_ascii_case("start"))
    }

    /// Remember the unit's statement texts as writes (a node refused them as read-only).
    pub(super) fn note_write(&self, classifier: &Classifier) {
        let c = classifier;
        match self {
            Unit::Simple(f) => {
                if let Some(sql) = messages::decode_query(f.body()) {
                    c.note_write(sql);
                }
            }
            Unit::Extended(frames) => {
                for p in
                    frames.iter().filter(|f| f.tag() == tag::PARSE).filter_map(|f| messages::decode_parse(f.body()))
                {
                    c.note_write(&String::from_utf8_lossy(p.query));
                }
            }
        }
    }
}

/// How many of a unit's Parse and Bind messages [`Resolved`] keeps the definition of: a
/// driver's usual unit has one of each.
const RESOLVED_MESSAGES: usize = 2;

/// What classifying an extended unit found, kept for translating it after the acquire
/// (`Statements::translate`), so that the messages are not decoded and looked up twice: for
/// each of its first Parse messages, the definition it records (the client's statement it
/// defines again, or one made from it); for each of its first Binds of a statement defined
/// before the unit (with no Parse or Close before them in the unit, which could change what
/// the name means), that statement. By message index, which a replay keeps (it only appends).
///
/// A Parse's definition depends only on the message (its text and types; the class got for
/// them), so it stands wherever the unit is translated.
#[derive(Default)]
pub(super) struct Resolved {
    found: [Option<(usize, Arc<StmtDef>)>; RESOLVED_MESSAGES],
}

impl Resolved {
    fn has_room(&self) -> bool {
        self.found.iter().any(Option::is_none)
    }

    fn keep(&mut self, index: usize, def: &Arc<StmtDef>) {
        if let Some(slot) = self.found.iter_mut().find(|s| s.is_none()) {
            *slot = Some((index, Arc::clone(def)));
        }
    }

    /// The definition found for the unit's message at `index`, if one was kept.
    pub(super) fn at(&self, index: usize) -> Option<&Arc<StmtDef>> {
        self.found.iter().flatten().find(|(i, _)| *i == index).map(|(_, def)| def)
    }

    /// The definitions kept, by message index in order, for a walk of the unit's messages.
    pub(super) fn in_order(&self) -> std::iter::Peekable<impl Iterator<Item = (usize, &Arc<StmtDef>)>> {
        self.found.iter().flatten().map(|(i, def)| (*i, def)).peekable()
    }
}

/// Every message type a client may send after authentication.
pub(super) fn is_frontend_tag(t: u8) -> bool {
    is_extended(t)
        || matches!(
            t,
            tag::QUERY | tag::FUNCTION_CALL | tag::TERMINATE | tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL
        )
}

pub(super) fn is_extended(t: u8) -> bool {
    matches!(t, tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE | tag::SYNC | tag::FLUSH)
}

/// DISCARD ALL / DEALLOCATE ALL drop every server-side statement on the connection.
pub(super) fn resets_statements(query: Msg<'_>) -> bool {
    if !may_start_with(query.body(), b"D") {
        return false;
    }
    let Some(sql) = messages::decode_query(query.body()) else { return false };
    first_words_are(sql, &["discard", "deallocate"], "all")
}

/// True if `sql` starts with one of `firsts` followed by `second` (case-insensitive, `;` allowed
/// after the second word). Allocation-free: it runs on every simple Query.
fn first_words_are(sql: &str, firsts: &[&str], second: &str) -> bool {
    let mut words = sql.split_whitespace();
    let (Some(a), Some(b)) = (words.next(), words.next()) else { return false };
    firsts.iter().any(|f| a.eq_ignore_ascii_case(f)) && b.trim_end_matches(';').eq_ignore_ascii_case(second)
}

pub(super) fn no_node_error(class: &Class) -> BackendError {
    let what = if class.access == Access::Write {
        "no primary is available for writes"
    } else {
        "no node is available for reads"
    };
    BackendError::Server {
        node: "-".into(),
        info: messages::ErrorInfo {
            severity: "ERROR".into(),
            code: sqlstate::CANNOT_CONNECT_NOW.into(),
            message: format!("sluice: {what}"),
        },
    }
}

/// One class for an extended batch: a write if any statement is, the strongest session effect,
/// the first transaction effect and hint.
pub(super) fn combine(classes: &[Arc<Class>]) -> Class {
    let mut out = Combined::default();
    classes.iter().for_each(|c| out.add(Arc::clone(c)));
    Class::clone(&out.finish())
}

/// [`combine`], one class at a time.
#[derive(Default)]
pub(super) enum Combined {
    /// No Parse and no Bind of a known statement (Close/Describe/Sync only): nothing runs.
    #[default]
    Empty,
    /// One class so far, shared.
    One(Arc<Class>),
    /// Several, merged into a copy of the first.
    Many(Class),
}

impl Combined {
    /// Take one more statement's class into account.
    pub(super) fn add(&mut self, c: Arc<Class>) {
        match self {
            Combined::Empty => *self = Combined::One(c),
            // The same statement again (a driver's Parse and Bind of the unnamed statement):
            // merging a class with itself changes nothing, and would copy it.
            Combined::One(first) if Arc::ptr_eq(first, &c) => {}
            Combined::One(first) => {
                let mut out = Class::clone(first);
                merge(&mut out, &c);
                *self = Combined::Many(out);
            }
            Combined::Many(out) => merge(out, &c),
        }
    }

    /// The class of everything added.
    pub(super) fn finish(self) -> Arc<Class> {
        match self {
            Combined::Empty => Arc::new(Class::read(Reason::Empty)),
            Combined::One(c) => c,
            Combined::Many(c) => Arc::new(c),
        }
    }
}

/// The names of the statements a unit parsed, so far: the unnamed one as a flag (every unit of
/// most drivers parses it), named ones in a set made on the first.
#[derive(Default)]
struct Parsed<'a> {
    unnamed: bool,
    named: Option<std::collections::HashSet<&'a str>>,
}

impl<'a> Parsed<'a> {
    fn note(&mut self, name: &'a str) {
        if name.is_empty() {
            self.unnamed = true;
        } else {
            self.named.get_or_insert_with(Default::default).insert(name);
        }
    }

    fn has(&self, name: &str) -> bool {
        if name.is_empty() {
            self.unnamed
        } else {
            self.named.as_ref().is_some_and(|n| n.contains(name))
        }
    }
}

fn merge(out: &mut Class, c: &Class) {
    if out.access.max(c.access) != out.access {
        out.access = c.access;
        out.reason = c.reason;
    }
    out.session = out.session.max(c.session);
    out.changes_functions |= c.changes_functions;
    if out.tx == TxEffect::None {
        out.tx = c.tx;
    }
    out.hint = out.hint.or(c.hint);
}

/// `RESET ALL` / `DISCARD ALL`, or a pool's reset made of them ([`is_pool_reset`]): the
/// session's replayable state starts over.
pub(super) fn is_reset_all(sql: &str) -> bool {
    first_words_are(sql, &["reset", "discard"], "all") || is_pool_reset(sql)
}

/// [`is_reset_all`] with nothing else in the text but a pool's reset pieces: `RESET ALL; SET
/// x = 1` is not one.
pub(super) fn is_reset_alone(sql: &str) -> bool {
    is_pool_reset(sql) || is_reset_all(sql) && sql.trim().trim_end_matches(';').split_whitespace().nth(2).is_none()
}

/// What a driver's pool sends to hand a connection back clean, besides `RESET ALL`: asyncpg's
/// pool runs `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;` at every
/// release. On a session that is not pinned, the other statements find nothing to undo: a
/// session that took a session-level advisory lock, kept a cursor past its transaction or
/// listened is pinned already, and those statements are not replayed anywhere.
const POOL_RESET_PIECES: &[&str] =
    &["select pg_advisory_unlock_all()", "select pg_catalog.pg_advisory_unlock_all()", "close all", "unlisten *"];

/// True if `sql` is `RESET ALL` with only [`POOL_RESET_PIECES`] around it. Split on every `;`
/// without a lexer: a piece with a quote, a comment or anything else matches no entry, so a
/// text cut inside a literal is never taken for a reset.
fn is_pool_reset(sql: &str) -> bool {
    let mut reset = false;
    for piece in sql.split(';') {
        let mut words = piece.split_whitespace();
        let Some(first) = words.next() else { continue };
        let mut spelled = first.to_ascii_lowercase();
        for w in words {
            spelled.push(' ');
            spelled.push_str(&w.to_ascii_lowercase());
        }
        if spelled == "reset all" {
            reset = true;
        } else if !POOL_RESET_PIECES.contains(&spelled.as_str()) {
            return false;
        }
    }
    reset
}

/// Asks the primary where its WAL is after a write, for read-your-writes. The insert position,
/// not the write position: with `synchronous_commit = off` the commit record may not be written
/// yet when the client hears of the commit.
pub(super) const LSN_SQL: &str = "SELECT pg_catalog.pg_current_wal_insert_lsn()";

/// How a unit's write position is learnt, if at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Capture {
    /// Not a unit later reads must wait for.
    None,
    /// The position query is pipelined right behind the unit (no extra round trip).
    Pipelined,
    /// The unit may enter COPY FROM STDIN, where a pipelined query would break the copy: ask
    /// after it finished.
    After,
}

/// A unit whose effects later reads must see: a write, or the end of a transaction block.
/// (Units that do not end cleanly, see [`Unit::ends_cleanly`], cannot have a query appended;
/// they get no capture here, the session asks once their ReadyForQuery came.) Only ever used
/// on the primary, where the query cannot fail and so can never abort a client's transaction.
pub(super) fn lsn_capture(class: &Class, ends_cleanly: bool, may_copy: bool, in_transaction: bool) -> Capture {
    if !(ends_cleanly && makes_writes_visible(class, in_transaction)) {
        return Capture::None;
    }
    if may_copy {
        Capture::After
    } else {
        Capture::Pipelined
    }
}

/// Whether a unit of `class` makes writes visible to other sessions once it ends. Inside a
/// transaction block only its end does: capture then. A unit that starts outside one and writes
/// (`INSERT ...`, or `BEGIN; INSERT ...; COMMIT` in one Query) captures after itself; a lone
/// BEGIN writes nothing yet.
fn makes_writes_visible(class: &Class, in_transaction: bool) -> bool {
    class.tx == TxEffect::End
        || (class.access == Access::Write && !in_transaction && class.reason != Reason::BeginReadWrite)
}

/// Whether [`Unit::may_copy_in`] (a scan of the unit's texts) can change how its write position
/// is learnt, i.e. whether [`lsn_capture`] or [`late_lsn_capture`] would read `may_copy`: a
/// write or a transaction end that makes writes visible, or a unit that may turn out to (its
/// end streams in: `streams`; it ends an extended block that wrote: `block_wrote`). A write
/// inside a transaction block (most statements of one) need not be scanned.
pub(super) fn copy_matters(class: &Class, in_transaction: bool, streams: bool, block_wrote: bool) -> bool {
    (class.access == Access::Write || class.tx == TxEffect::End)
        && (streams || block_wrote || makes_writes_visible(class, in_transaction))
}

/// The capture of a unit that runs on the primary: its own ([`lsn_capture`]); or, when the
/// session owes a position (its last write's was not asked for, and a replica could take its
/// reads again), a read that ends cleanly outside a transaction block asks for it behind itself.
/// (Not behind a BEGIN: the query would take the transaction's snapshot early.)
pub(super) fn primary_capture(
    class: &Class,
    ends_cleanly: bool,
    may_copy: bool,
    in_transaction: bool,
    position_owed: bool,
) -> Capture {
    match lsn_capture(class, ends_cleanly, may_copy, in_transaction) {
        Capture::None if position_owed && class.tx == TxEffect::None && !in_transaction && ends_cleanly => {
            Capture::Pipelined
        }
        own => own,
    }
}

/// The unit's class with that of the statements that streamed in after it started.
pub(super) fn with_streamed(class: &Class, streamed: Option<&Class>) -> Class {
    let mut out = class.clone();
    if let Some(more) = streamed {
        merge(&mut out, more);
    }
    out
}

/// How a unit that ran ended, as far as learning its write position goes.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ran {
    /// On the primary.
    pub(super) on_primary: bool,
    /// With ReadyForQuery.
    pub(super) ready: bool,
    /// It started as an open block: its end (and maybe writes) streamed in while it ran.
    pub(super) streamed: bool,
    /// It ended an extended block that had written before it.
    pub(super) block_wrote: bool,
}

/// The capture decided before the unit was sent (`early`, see [`lsn_capture`]), looked at
/// again once it ran: a unit whose end streamed in, or that ended a block that wrote, could
/// have nothing pipelined behind it, so it asks after its ReadyForQuery if what it turned out
/// to be (`class` with the `streamed` statements) needs a capture.
pub(super) fn late_lsn_capture(
    early: Capture,
    class: &Class,
    streamed: Option<&Class>,
    ran: Ran,
    may_copy: bool,
    in_transaction: bool,
) -> Capture {
    if early != Capture::None || !(ran.on_primary && ran.ready && (ran.streamed || ran.block_wrote)) {
        return early;
    }
    let mut full = with_streamed(class, streamed);
    if ran.block_wrote {
        full.access = Access::Write;
    }
    match lsn_capture(&full, true, may_copy, in_transaction) {
        Capture::None => Capture::None,
        Capture::Pipelined | Capture::After => Capture::After,
    }
}

/// What a session does after its server connection died (decided by
/// `session::state::SessionState::on_loss`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AfterLoss {
    /// Nothing the session needs was on it: an ERROR, and the next unit gets a new connection.
    Continue,
    /// An extended block left open (by Flush, or replies that came before the client's Sync)
    /// had run a write outside a transaction block: that implicit transaction died uncommitted,
    /// though the client may hold the write's CommandComplete. Under a unit, as `Continue` (the
    /// unit's error tells it). Noticed while the client was idle: its next message gets the
    /// ERROR, what it sends up to its Sync is discarded and the Sync answered `I`, as
    /// PostgreSQL answers an implicit transaction that fails at its Sync; never a bare
    /// ReadyForQuery, which a driver takes for the commit.
    BlockLost,
    /// The open block had already failed (the client has its error; PostgreSQL discards what
    /// it sends up to its Sync): noticed while the client was idle, those messages are
    /// discarded and the Sync answered, never run on a new connection. Under a unit, as
    /// `Continue`.
    BlockFailed,
    /// Its open transaction died with it (rolled back by the server): an ERROR saying so and
    /// ReadyForQuery `E`; the session answers for the failed block until the client ends it,
    /// then goes on on a new connection. Failover cuts transactions this way; the client keeps
    /// its connection.
    TransactionLost,
    /// The statement that ended its transaction (`COMMIT`, `ROLLBACK`...) lost it: the block is
    /// over whatever happened on the server, as PostgreSQL ends a block at a failed `COMMIT`.
    /// An ERROR and ReadyForQuery `I`; the session goes on on a new connection. Answered `E`
    /// instead, a driver would take its block as still open (psycopg then opens its next
    /// transaction as a savepoint in it) and never send the ROLLBACK that ends it.
    TransactionEnded,
    /// What died with it (named) was the session's: FATAL, and the client is closed.
    End(&'static str),
}

/// A simple Query that only ends a transaction block (`ROLLBACK`, `ABORT`, `COMMIT`, `END`,
/// optionally with `WORK`/`TRANSACTION` and a semicolon): outside a block it does nothing on
/// any server, so a session holding no connection answers it itself (PostgreSQL's WARNING
/// `25P01` and the command tag) instead of waiting for a primary. Returns the command tag.
pub(super) fn tx_end_outside_block(sql: &str) -> Option<&'static str> {
    let mut words = sql.trim().trim_end_matches(';').split_ascii_whitespace();
    let first = words.next()?;
    let is = |w: &str, words: &[&str]| words.iter().any(|k| w.eq_ignore_ascii_case(k));
    let tag = if is(first, &["ROLLBACK", "ABORT"]) {
        "ROLLBACK"
    } else if is(first, &["COMMIT", "END"]) {
        "COMMIT"
    } else {
        return None;
    };
    match (words.next(), words.next()) {
        (None, None) => Some(tag),
        (Some(w), None) if is(w, &["WORK", "TRANSACTION"]) => Some(tag),
        _ => None,
    }
}

/// [`tx_end_outside_block`] of a Query message's body. Every simple Query outside a
/// transaction asks this, so the first byte that is not ASCII whitespace is looked at before
/// the text is validated and split: only `R`, `A`, `C` and `E` (either case) or a non-ASCII
/// byte (which `str::trim` may skip as Unicode whitespace) can start a transaction end.
pub(super) fn query_ends_tx_outside_block(body: &[u8]) -> Option<&'static str> {
    if !may_start_with(body, b"RACE") {
        return None;
    }
    tx_end_outside_block(messages::decode_query(body)?)
}

/// False if the first word of `text` cannot start with one of `initials` (upper-case ASCII
/// letters, matched in either case): a test on one byte that lets the checks that run on every
/// simple Query skip validating and splitting texts that start otherwise (most of them). Only
/// ASCII whitespace is skipped; a non-ASCII first byte may be Unicode whitespace, which the
/// full checks (`str::trim`, `split_whitespace`) skip too, so it passes.
pub(super) fn may_start_with(text: &[u8], initials: &[u8]) -> bool {
    let Some(first) = text.iter().copied().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)) else {
        return false;
    };
    !first.is_ascii() || initials.contains(&first.to_ascii_uppercase())
}

#[cfg(test)]
mod tests;
