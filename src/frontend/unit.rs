//! Units of client traffic and the pure facts about them: which messages a client may send,
//! what a unit needs (its class), whether it may enter COPY, whether it resets statements or
//! session state, and whether its write position must be learnt. No IO here.

use std::sync::Arc;

use super::statements::Statements;
use crate::error::sqlstate;
use crate::error::BackendError;
use crate::protocol::messages;
use crate::protocol::{tag, Frame};
use crate::router::{Access, Class, Classifier, Reason, TxEffect};

/// A unit of client traffic.
pub(super) enum Unit {
    /// One Query or FunctionCall message.
    Simple(Frame),
    /// Extended-protocol messages, ending with Sync (or Flush, or what the client had sent when
    /// the unit started: the relay streams in the rest).
    Extended(Vec<Frame>),
}

impl Unit {
    /// What the unit needs: its Query's class, or one class for all statements of a batch.
    pub(super) fn classify(&self, statements: &Statements, classifier: &Classifier) -> Arc<Class> {
        let c = classifier;
        match self {
            Unit::Simple(f) if f.tag() == tag::QUERY => match messages::decode_query(f.body()) {
                Some(sql) => c.classify(sql),
                None => Arc::new(Class::write(Reason::UnknownStatement)),
            },
            Unit::Simple(_) => Arc::new(Class::write(Reason::UnknownStatement)),
            Unit::Extended(frames) => {
                let mut classes = Vec::new();
                for f in frames {
                    match f.tag() {
                        tag::PARSE => classes.push(match messages::decode_parse(f.body()) {
                            Some(p) => c.classify(&String::from_utf8_lossy(p.query)),
                            None => Arc::new(Class::write(Reason::UnknownStatement)),
                        }),
                        tag::BIND => {
                            let stmt = messages::decode_bind_head(f.body()).and_then(|h| statements.get(h.statement));
                            if let Some(def) = stmt {
                                classes.push(Arc::clone(&def.class));
                            }
                        }
                        _ => {}
                    }
                }
                Arc::new(combine(&classes))
            }
        }
    }

    /// True if the unit runs a statement (a Query, or an Execute in the batch); false for a
    /// batch that only prepares or describes, as drivers send before executing.
    pub(super) fn executes(&self) -> bool {
        match self {
            Unit::Simple(_) => true,
            Unit::Extended(frames) => frames.iter().any(|f| f.tag() == tag::EXECUTE),
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
        matches!(self, Unit::Extended(frames) if frames.last().map(Frame::tag) != Some(tag::SYNC))
    }

    /// True if the server answers the unit with ReadyForQuery (a Query, or a batch ending
    /// with Sync), so that a query can be pipelined right behind it.
    pub(super) fn ends_cleanly(&self) -> bool {
        match self {
            Unit::Simple(f) => f.tag() == tag::QUERY,
            Unit::Extended(frames) => frames.last().is_some_and(|f| f.tag() == tag::SYNC),
        }
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
pub(super) fn resets_statements(frame: &Frame) -> bool {
    let Some(sql) = messages::decode_query(frame.body()) else { return false };
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
    let Some(first) = classes.first() else {
        // No Parse and no Bind of a known statement (Close/Describe/Sync only): nothing runs.
        return Class::read(Reason::Empty);
    };
    let mut out = Class::clone(first);
    for c in &classes[1..] {
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
    out
}

/// The SQL texts of a unit (the Query, or each Parse of a batch).
pub(super) fn unit_texts(unit: &Unit) -> Vec<String> {
    match unit {
        Unit::Simple(f) => messages::decode_query(f.body()).map(str::to_string).into_iter().collect(),
        Unit::Extended(frames) => frames
            .iter()
            .filter(|f| f.tag() == tag::PARSE)
            .filter_map(|f| messages::decode_parse(f.body()))
            .map(|p| String::from_utf8_lossy(p.query).into_owned())
            .collect(),
    }
}

/// `RESET ALL` / `DISCARD ALL`: the session's replayable state starts over.
pub(super) fn is_reset_all(sql: &str) -> bool {
    first_words_are(sql, &["reset", "discard"], "all")
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
    // Inside a transaction block only its end makes writes visible: capture then. A unit that
    // starts outside one and writes (`INSERT ...`, or `BEGIN; INSERT ...; COMMIT` in one Query)
    // captures after itself; a lone BEGIN writes nothing yet.
    let writes = class.tx == TxEffect::End
        || (class.access == Access::Write && !in_transaction && class.reason != Reason::BeginReadWrite);
    if !(ends_cleanly && writes) {
        return Capture::None;
    }
    if may_copy {
        Capture::After
    } else {
        Capture::Pipelined
    }
}

/// What a session does after its server connection died (decided by
/// `session::state::SessionState::on_loss`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AfterLoss {
    /// Nothing the session needs was on it: an ERROR, and the next unit gets a new connection.
    Continue,
    /// Its open transaction died with it (rolled back by the server): an ERROR saying so, the
    /// session is idle again (ReadyForQuery `I`) and goes on on a new connection. Failover cuts
    /// transactions this way; the client keeps its connection.
    TransactionLost,
    /// What died with it (named) was the session's: FATAL, and the client is closed.
    End(&'static str),
}

/// A simple Query that only ends a transaction block (`ROLLBACK`, `ABORT`, `COMMIT`, `END`,
/// optionally with `WORK`/`TRANSACTION` and a semicolon): outside a block it does nothing on
/// any server, so a session holding no connection answers it itself (PostgreSQL's WARNING
/// `25P01` and the command tag) instead of waiting for a primary. Returns the command tag.
pub(super) fn tx_end_outside_block(sql: &str) -> Option<&'static str> {
    let mut words = sql.trim().trim_end_matches(';').split_ascii_whitespace();
    let tag = match words.next()?.to_ascii_uppercase().as_str() {
        "ROLLBACK" | "ABORT" => "ROLLBACK",
        "COMMIT" | "END" => "COMMIT",
        _ => return None,
    };
    match (words.next().map(str::to_ascii_uppercase).as_deref(), words.next()) {
        (None | Some("WORK" | "TRANSACTION"), None) => Some(tag),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn query(sql: &str) -> Unit {
        let mut b = BytesMut::new();
        messages::query(&mut b, sql);
        Unit::Simple(Frame::from_bytes(b.freeze()))
    }

    #[test]
    fn a_batch_is_a_write_if_any_statement_is() {
        let read = Arc::new(Class::read(Reason::PureRead));
        let write = Arc::new(Class::write(Reason::Dml));
        assert_eq!(combine(&[Arc::clone(&read), Arc::clone(&read)]).access, Access::Read);
        let both = combine(&[read, write]);
        assert_eq!((both.access, both.reason), (Access::Write, Reason::Dml));
        assert_eq!(combine(&[]).access, Access::Read, "a batch that runs nothing");
    }

    #[test]
    fn write_positions_are_learnt_without_breaking_copy() {
        let write = Class::write(Reason::Dml);
        let read = Class::read(Reason::PureRead);
        let commit = Class::read(Reason::TxControl).with_tx(TxEffect::End);
        let unit = query("INSERT INTO t VALUES (1)").ends_cleanly();
        assert_eq!(lsn_capture(&write, unit, false, false), Capture::Pipelined);
        assert_eq!(lsn_capture(&write, unit, true, false), Capture::After);
        assert_eq!(lsn_capture(&write, unit, false, true), Capture::None, "inside a transaction block");
        assert_eq!(lsn_capture(&read, unit, false, false), Capture::None);
        assert_eq!(lsn_capture(&commit, query("COMMIT").ends_cleanly(), false, true), Capture::Pipelined);
        assert_eq!(lsn_capture(&write, false, false, false), Capture::None, "a Flush-held block");
        assert!(query("copy t from stdin").may_copy_in(&Statements::default()));
        assert!(!query("SELECT 1").may_copy_in(&Statements::default()));
    }

    #[test]
    fn only_bare_transaction_ends_are_answered_outside_a_block() {
        let cases = [
            ("ROLLBACK", Some("ROLLBACK")),
            ("rollback;", Some("ROLLBACK")),
            ("  abort work ", Some("ROLLBACK")),
            ("COMMIT TRANSACTION;", Some("COMMIT")),
            ("end", Some("COMMIT")),
            ("COMMIT PREPARED 'x'", None),
            ("ROLLBACK PREPARED 'x'", None),
            ("ROLLBACK AND CHAIN", None),
            ("ROLLBACK TO SAVEPOINT a", None),
            ("COMMIT; INSERT INTO t VALUES (1)", None),
            ("SELECT 1", None),
            ("", None),
        ];
        for (sql, want) in cases {
            assert_eq!(tx_end_outside_block(sql), want, "{sql:?}");
        }
    }

    #[test]
    fn resets_are_recognised() {
        assert!(is_reset_all("RESET ALL"));
        assert!(is_reset_all("discard  all;"));
        assert!(!is_reset_all("RESET search_path"));
        let Unit::Simple(f) = query("DEALLOCATE ALL") else { unreachable!() };
        assert!(resets_statements(&f));
        let Unit::Simple(f) = query("DEALLOCATE s1") else { unreachable!() };
        assert!(!resets_statements(&f));
    }
}
