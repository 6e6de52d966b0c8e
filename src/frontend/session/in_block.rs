//! Session commands run inside a transaction block, as a pure decision with a table test.
//!
//! A `SET` (or a `set_config`) inside a block lasts only if the block commits. The session
//! holds its connection for the whole block anyway, so such a command is kept aside (pending)
//! instead of pinning the session: a plain `COMMIT` moves it into the session's history, a
//! `ROLLBACK` (or a failed block, or a failed `COMMIT`) drops it. Whatever is not that simple
//! pins the session as before: a savepoint rolled back (it may undo part of what is pending),
//! `COMMIT AND CHAIN`, `PREPARE TRANSACTION`, an end inside a longer text, a command whose text
//! cannot be replayed. asyncpg sets `jit` inside its callers' transactions around its type
//! introspection; pinning there cost every asyncpg client a server connection of its own.

use crate::protocol::TxStatus;

/// What one unit that ran inside (or ended) a block does to the pending session commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Nothing.
    Keep,
    /// Its session commands are pending until the block ends.
    Add,
    /// The block committed: the pending commands join the history.
    Commit,
    /// The block rolled back: the pending commands are dropped.
    Discard,
    /// The session stays on its connection.
    Pin,
}

/// What a unit was, as far as pending session commands go.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Ran<'a> {
    /// Transaction status before the unit.
    pub before: Option<TxStatus>,
    /// And after it.
    pub after: Option<TxStatus>,
    /// The server reported an error in it.
    pub errored: bool,
    /// It changes session parameters (`SET`, `set_config`, ...).
    pub sets: bool,
    /// Those changes can be replayed as the texts that ran.
    pub replayable: bool,
    /// The statements it ran, if known (to tell COMMIT from ROLLBACK and spot a savepoint
    /// rollback); parameters left as `$n`.
    pub texts: Option<&'a [String]>,
    /// Session commands are pending from earlier in the block.
    pub pending: bool,
}

/// The step for a unit that started inside a block (`before` not idle). Units that started
/// outside one are the caller's ordinary case.
pub(super) fn step(ran: Ran<'_>) -> Step {
    use TxStatus::{Failed, Idle, InTransaction};
    let (Some(before), Some(after)) = (ran.before, ran.after) else { return Step::Keep };
    if before == Idle {
        return Step::Keep;
    }
    let single = ran.texts.and_then(|t| match t {
        [one] => crate::frontend::unit::tx_end_outside_block(one),
        _ => None,
    });
    if after == Idle {
        if !ran.pending {
            // A SET in the text that ended the block ("SET x = 1; COMMIT"): as before.
            return if ran.sets && !ran.errored { Step::Pin } else { Step::Keep };
        }
        return match single {
            Some("COMMIT") if before == InTransaction && !ran.errored && !ran.sets => Step::Commit,
            // PostgreSQL answers a failed block's COMMIT with ROLLBACK.
            Some("COMMIT") if before == Failed || ran.errored => Step::Discard,
            Some("ROLLBACK") => Step::Discard,
            _ => Step::Pin,
        };
    }
    if ran.pending && ran.texts.is_none_or(|t| t.iter().any(|s| may_end_or_undo(s))) {
        return Step::Pin;
    }
    if !ran.sets || ran.errored {
        return Step::Keep;
    }
    if before == InTransaction && after == InTransaction && ran.replayable && single.is_none() {
        Step::Add
    } else {
        Step::Pin
    }
}

/// True if `sql`, run inside a block, may end it or undo part of it while the block goes on: a
/// savepoint rolled back, `COMMIT AND CHAIN`, an end followed by a new `BEGIN`. Spotted by
/// words, quoted or not, and any text of several statements: when in doubt the session is
/// pinned.
fn may_end_or_undo(sql: &str) -> bool {
    const WORDS: [&str; 4] = ["rollback", "abort", "commit", "chain"];
    let body = sql.trim().trim_end_matches(';');
    let words = || body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| !w.is_empty());
    body.contains(';')
        || words().next().is_some_and(|w| w.eq_ignore_ascii_case("end"))
        || words().any(|w| WORDS.iter().any(|k| w.eq_ignore_ascii_case(k)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use TxStatus::{Failed as E, Idle as I, InTransaction as T};

    fn texts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn pending_session_commands_by_unit() {
        let set = texts(&["SET search_path = a"]);
        let commit = texts(&["COMMIT"]);
        let end = texts(&["end work;"]);
        let rollback = texts(&["ROLLBACK"]);
        let chain = texts(&["COMMIT AND CHAIN"]);
        let prepare = texts(&["PREPARE TRANSACTION 'x'"]);
        let to_savepoint = texts(&["ROLLBACK TO SAVEPOINT s"]);
        let select = texts(&["SELECT 1"]);
        let set_and_commit = texts(&["SET a.b = '1'; COMMIT"]);
        let end_begin = texts(&["END; BEGIN"]);
        #[rustfmt::skip]
        let cases: Vec<(&str, Ran, Step)> = vec![
            // (name, unit, step)
            ("outside a block: the caller's case", Ran { before: Some(I), after: Some(I), sets: true, replayable: true, texts: Some(&set), ..Ran::default() }, Step::Keep),
            ("BEGIN; SET in one unit: the caller pins", Ran { before: Some(I), after: Some(T), sets: true, ..Ran::default() }, Step::Keep),
            ("SET in a block", Ran { before: Some(T), after: Some(T), sets: true, replayable: true, texts: Some(&set), ..Ran::default() }, Step::Add),
            ("SET in a block, not replayable", Ran { before: Some(T), after: Some(T), sets: true, texts: Some(&set), ..Ran::default() }, Step::Pin),
            ("SET in a block, statements unknown", Ran { before: Some(T), after: Some(T), sets: true, ..Ran::default() }, Step::Pin),
            ("SET that failed", Ran { before: Some(T), after: Some(E), sets: true, replayable: true, errored: true, texts: Some(&set), ..Ran::default() }, Step::Keep),
            ("a read while pending", Ran { before: Some(T), after: Some(T), texts: Some(&select), pending: true, ..Ran::default() }, Step::Keep),
            ("an unknown text while pending", Ran { before: Some(T), after: Some(T), pending: true, ..Ran::default() }, Step::Pin),
            ("a savepoint rolled back while pending", Ran { before: Some(E), after: Some(T), texts: Some(&to_savepoint), pending: true, ..Ran::default() }, Step::Pin),
            ("a savepoint rolled back, nothing pending", Ran { before: Some(E), after: Some(T), texts: Some(&to_savepoint), ..Ran::default() }, Step::Keep),
            ("COMMIT while pending", Ran { before: Some(T), after: Some(I), texts: Some(&commit), pending: true, ..Ran::default() }, Step::Commit),
            ("END WORK while pending", Ran { before: Some(T), after: Some(I), texts: Some(&end), pending: true, ..Ran::default() }, Step::Commit),
            ("COMMIT that failed (deferred constraint)", Ran { before: Some(T), after: Some(I), errored: true, texts: Some(&commit), pending: true, ..Ran::default() }, Step::Discard),
            ("COMMIT of a failed block", Ran { before: Some(E), after: Some(I), texts: Some(&commit), pending: true, ..Ran::default() }, Step::Discard),
            ("ROLLBACK while pending", Ran { before: Some(T), after: Some(I), texts: Some(&rollback), pending: true, ..Ran::default() }, Step::Discard),
            ("ROLLBACK of a failed block", Ran { before: Some(E), after: Some(I), texts: Some(&rollback), pending: true, ..Ran::default() }, Step::Discard),
            ("COMMIT AND CHAIN while pending", Ran { before: Some(T), after: Some(T), texts: Some(&chain), pending: true, ..Ran::default() }, Step::Pin),
            ("an end and a BEGIN in one text while pending", Ran { before: Some(T), after: Some(T), texts: Some(&end_begin), pending: true, ..Ran::default() }, Step::Pin),
            ("PREPARE TRANSACTION while pending", Ran { before: Some(T), after: Some(I), texts: Some(&prepare), pending: true, ..Ran::default() }, Step::Pin),
            ("an end in a longer text while pending", Ran { before: Some(T), after: Some(I), sets: true, replayable: true, texts: Some(&set_and_commit), pending: true, ..Ran::default() }, Step::Pin),
            ("a SET with the end, nothing pending", Ran { before: Some(T), after: Some(I), sets: true, replayable: true, texts: Some(&set_and_commit), ..Ran::default() }, Step::Pin),
            ("COMMIT, nothing pending", Ran { before: Some(T), after: Some(I), texts: Some(&commit), ..Ran::default() }, Step::Keep),
            ("status unknown", Ran { before: Some(T), after: None, sets: true, ..Ran::default() }, Step::Keep),
        ];
        for (name, ran, want) in cases {
            assert_eq!(step(ran), want, "{name}");
        }
    }

    #[test]
    fn ends_and_undos_are_spotted_in_any_spelling() {
        for yes in [
            "rollback to savepoint s",
            "ABORT",
            "SELECT 1; SELECT 2",
            "SELECT 'rollback'",
            "commit and chain",
            "End",
            "end transaction;",
        ] {
            assert!(may_end_or_undo(yes), "{yes}");
        }
        for no in [
            "SELECT rollbacks FROM t",
            "RELEASE SAVEPOINT s",
            "SELECT CASE WHEN a THEN 1 END",
            "SET x = 1;",
            "SAVEPOINT s",
        ] {
            assert!(!may_end_or_undo(no), "{no}");
        }
    }
}
