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
//!
//! A whole block can also sit inside one unit (a pipeline `BEGIN; SET ...; COMMIT` up to one
//! Sync: psycopg's pipeline mode, JDBC batches): [`lasting`] walks its statements in order,
//! with what PostgreSQL does between Syncs. The statements run in one transaction (a `BEGIN`
//! only makes it a block, taking along what ran before it); a `COMMIT` makes what ran so far
//! last, a `ROLLBACK` undoes it, the Sync commits the rest. A block the unit leaves open
//! (pgjdbc sends `BEGIN` with a transaction's first statement) keeps what is in it pending.
//! [`lasting_in_block`] does the same for a unit of several statements run inside a block, the
//! commands pending from before it taken as run first. Units of one statement inside a block
//! keep the table of [`step`].

use crate::frontend::executed::Executed;
use crate::frontend::unit::{is_reset_all, tx_end_outside_block};
use crate::protocol::TxStatus;
use crate::router::{Access, Classifier, SessionEffect};

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

/// What one statement of a unit is, for [`lasting`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A session command the history can replay (`SET`, `RESET`, `set_config`).
    Sets,
    /// A session command it cannot, or a statement that ties the session to its connection.
    Unreplayable,
    /// `COMMIT` / `END`: what ran since the last end lasts.
    Commit,
    /// `ROLLBACK` / `ABORT`: what ran since the last end is undone.
    Rollback,
    /// May undo part of a transaction, or end one in a way not modelled here: a savepoint
    /// rolled back, `COMMIT AND CHAIN`, `PREPARE TRANSACTION`, `COMMIT PREPARED`.
    Undo,
    /// Anything else, `BEGIN` included.
    Other,
}

/// The kind of `run`: told by its words (ends), then by its class.
pub(super) fn kind(run: &Executed, classifier: &Classifier) -> Kind {
    let sql = run.statement.as_str();
    match tx_end_outside_block(sql) {
        Some("COMMIT") => return Kind::Commit,
        Some(_) => return Kind::Rollback,
        None => {}
    }
    let mut words = sql.split_ascii_whitespace();
    let prepare = words.next().is_some_and(|w| w.eq_ignore_ascii_case("prepare"))
        && words.next().is_some_and(|w| w.eq_ignore_ascii_case("transaction"));
    if prepare || may_end_or_undo(sql) {
        return Kind::Undo;
    }
    let class = classifier.classify(sql);
    match class.session {
        SessionEffect::None => Kind::Other,
        SessionEffect::Pin => Kind::Unreplayable,
        SessionEffect::Parameter => match &run.texts {
            Some(texts)
                if class.access == Access::Read
                    || texts
                        .iter()
                        .all(|t| is_reset_all(t) || crate::backend::settings::set_config_name(t).is_some()) =>
            {
                Kind::Sets
            }
            _ => Kind::Unreplayable,
        },
    }
}

/// The statements with session commands of a successful unit that started outside a block
/// (indices into its kinds), by what became of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Lasting {
    /// Committed inside the unit: they last.
    pub committed: Vec<usize>,
    /// In the transaction still open at the unit's end: the Sync commits them, or they wait
    /// for the end of the block the unit left open.
    pub open: Vec<usize>,
}

/// [`Lasting`] for a successful unit that started outside a block; `None` if that cannot be
/// told (the session then stays on its connection).
pub(super) fn lasting(kinds: &[Kind]) -> Option<Lasting> {
    let mut lasting = Lasting::default();
    for (i, kind) in kinds.iter().enumerate() {
        match kind {
            Kind::Sets => lasting.open.push(i),
            Kind::Commit => lasting.committed.append(&mut lasting.open),
            Kind::Rollback => lasting.open.clear(),
            Kind::Other => {}
            Kind::Unreplayable | Kind::Undo => return None,
        }
    }
    Some(lasting)
}

/// What became of the commands pending from before a unit that ran inside a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Prior {
    /// The unit committed them: they join the history.
    Committed,
    /// Still pending: the block is still open.
    Pending,
    /// The unit rolled them back.
    Dropped,
}

/// [`lasting`] for a successful unit of several statements that started inside a block
/// (`pending`: commands are pending from before it, as if they ran first in it); `after_idle`:
/// it ended outside a block, so the Sync committed what ran after its last end. The indices
/// are into `kinds`.
pub(super) fn lasting_in_block(pending: bool, kinds: &[Kind], after_idle: bool) -> Option<(Prior, Lasting)> {
    let mut all = Vec::with_capacity(kinds.len() + 1);
    if pending {
        all.push(Kind::Sets);
    }
    all.extend_from_slice(kinds);
    let mut l = lasting(&all)?;
    if after_idle {
        l.committed.append(&mut l.open);
    }
    let prior = if !pending || l.open.contains(&0) {
        Prior::Pending
    } else if l.committed.contains(&0) {
        Prior::Committed
    } else {
        Prior::Dropped
    };
    if pending {
        let shift = |v: &mut Vec<usize>| {
            v.retain(|&i| i != 0);
            v.iter_mut().for_each(|i| *i -= 1);
        };
        shift(&mut l.committed);
        shift(&mut l.open);
    }
    Some((prior, l))
}

/// True if a unit run outside a block whose kinds are `kinds` may have left session commands
/// in force although it failed: a session command followed by a commit (or what may be one).
/// The error came somewhere after the first statement; what the unit ran up to a commit lasts.
pub(super) fn failed_may_keep(kinds: &[Kind]) -> bool {
    let mut set = false;
    for kind in kinds {
        match kind {
            Kind::Sets | Kind::Unreplayable => set = true,
            Kind::Commit | Kind::Undo if set => return true,
            _ => {}
        }
    }
    false
}

/// True if `sql` (a simple Query's text, maybe several statements) has a word that may end a
/// transaction so that what ran before it lasts: `COMMIT`, `END`, `PREPARE`. By words, quoted
/// or not: when in doubt, yes.
pub(super) fn mentions_an_end(sql: &str) -> bool {
    const WORDS: [&str; 3] = ["commit", "end", "prepare"];
    sql.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| WORDS.iter().any(|k| w.eq_ignore_ascii_case(k)))
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
    fn session_commands_that_last_in_a_unit_run_outside_a_block() {
        use Kind::{Commit as C, Other as O, Rollback as R, Sets as S, Undo as U, Unreplayable as X};
        // (name, kinds in order, indices that last)
        type Case<'a> = (&'a str, &'a [Kind], Option<(&'a [usize], &'a [usize])>);
        #[rustfmt::skip]
        let cases: [Case; 15] = [
            ("a lone SET", &[S], Some((&[], &[0]))),
            ("nothing set", &[O, O], Some((&[], &[]))),
            ("a SET and a read: only the SET", &[S, O], Some((&[], &[0]))),
            ("BEGIN; SET; COMMIT", &[O, S, C], Some((&[1], &[]))),
            ("BEGIN; SET; ROLLBACK", &[O, S, R], Some((&[], &[]))),
            ("a SET before BEGIN is in the block that rolls back", &[S, O, S, R], Some((&[], &[]))),
            ("a block that commits, then one that rolls back", &[O, S, C, O, S, R], Some((&[1], &[]))),
            ("a block that rolls back, then a SET", &[O, S, R, S], Some((&[], &[3]))),
            ("ROLLBACK with no block still undoes the unit so far", &[S, R, S], Some((&[], &[2]))),
            ("COMMIT with no block commits the unit so far", &[S, C, S], Some((&[0], &[2]))),
            ("BEGIN; SET: a block left open (pgjdbc's first statement)", &[O, S], Some((&[], &[1]))),
            ("a block that commits, then one left open", &[O, S, C, O, S, O], Some((&[1], &[4]))),
            ("a savepoint rolled back", &[O, S, U, C], None),
            ("an unreplayable SET", &[X], None),
            ("an unreplayable SET that rolls back", &[O, X, R], None),
        ];
        for (name, kinds, want) in cases {
            let got = lasting(kinds);
            let got = got.as_ref().map(|l| (l.committed.as_slice(), l.open.as_slice()));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn session_commands_of_a_unit_run_inside_a_block() {
        use Kind::{Commit as C, Other as O, Rollback as R, Sets as S, Undo as U};
        // (name, pending before, kinds, ended outside a block, prior's fate, committed, open)
        type Case<'a> = (&'a str, bool, &'a [Kind], bool, Option<(Prior, &'a [usize], &'a [usize])>);
        #[rustfmt::skip]
        let cases: [Case; 9] = [
            ("SET and a write, block goes on", false, &[S, O], false, Some((Prior::Pending, &[], &[0]))),
            ("SET and a write with pending, block goes on", true, &[S, O], false, Some((Prior::Pending, &[], &[0]))),
            ("SET; COMMIT", false, &[S, C], true, Some((Prior::Pending, &[0], &[]))),
            ("pending, SET; COMMIT", true, &[S, C], true, Some((Prior::Committed, &[0], &[]))),
            ("pending, SET; ROLLBACK", true, &[S, R], true, Some((Prior::Dropped, &[], &[]))),
            ("pending, COMMIT; SET (the Sync commits it)", true, &[C, S], true, Some((Prior::Committed, &[1], &[]))),
            ("pending, ROLLBACK; BEGIN; SET: a new block", true, &[R, O, S], false, Some((Prior::Dropped, &[], &[2]))),
            ("pending, COMMIT; BEGIN; SET", true, &[C, O, S], false, Some((Prior::Committed, &[], &[2]))),
            ("a savepoint rolled back", true, &[S, U], false, None),
        ];
        for (name, pending, kinds, after_idle, want) in cases {
            let got = lasting_in_block(pending, kinds, after_idle);
            let got = got.as_ref().map(|(p, l)| (*p, l.committed.as_slice(), l.open.as_slice()));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_failed_unit_may_keep_what_it_committed() {
        use Kind::{Commit as C, Other as O, Rollback as R, Sets as S, Undo as U, Unreplayable as X};
        for (kinds, want) in [
            (vec![S, O], false),
            (vec![O, S, C, O], true),
            (vec![S, C], true),
            (vec![O, S, R, O], false),
            (vec![O, C, S, O], false),
            (vec![X, U], true),
            (vec![O, U, S], false),
        ] {
            assert_eq!(failed_may_keep(&kinds), want, "{kinds:?}");
        }
        assert!(mentions_an_end("BEGIN; SET x = 1; COMMIT; SELECT 1/0"));
        assert!(mentions_an_end("begin; set x = 1; end; select 1/0"));
        assert!(!mentions_an_end("SET x = 1; SELECT 1/0"));
        assert!(!mentions_an_end("BEGIN; SET x = 1; SELECT 1/0"));
    }

    #[test]
    fn kinds_of_statements() {
        let classifier = Classifier::new(64, Vec::new());
        let run = |sql: &str, texts: Option<&[&str]>| Executed {
            statement: sql.to_string(),
            texts: texts.map(|t| t.iter().map(|s| (*s).to_string()).collect()),
        };
        let set = "SET work_mem = '7MB'";
        let set_config = "SELECT set_config('app.user', $1, false)";
        let inlined = crate::backend::settings::set_config_sql("app.user", "alice");
        let cases = [
            (run(set, Some(&[set])), Kind::Sets),
            (run(set, None), Kind::Unreplayable),
            (run(set_config, Some(&[inlined.as_str()])), Kind::Sets),
            (run(set_config, None), Kind::Unreplayable),
            (run("RESET ALL", Some(&["RESET ALL"])), Kind::Sets),
            (run("BEGIN", Some(&["BEGIN"])), Kind::Other),
            (run("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", None), Kind::Other),
            (run("SELECT $1::int", None), Kind::Other),
            (run("INSERT INTO t VALUES ($1)", None), Kind::Other),
            (run("commit", None), Kind::Commit),
            (run("END WORK", None), Kind::Commit),
            (run("abort", None), Kind::Rollback),
            (run("ROLLBACK TO SAVEPOINT s", None), Kind::Undo),
            (run("COMMIT AND CHAIN", None), Kind::Undo),
            (run("PREPARE TRANSACTION 'x'", None), Kind::Undo),
            (run("COMMIT PREPARED 'x'", None), Kind::Undo),
            (run("LISTEN c", None), Kind::Unreplayable),
        ];
        for (ran, want) in cases {
            assert_eq!(kind(&ran, &classifier), want, "{}", ran.statement);
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
