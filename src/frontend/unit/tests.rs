//! Table tests of the unit rules: classification of a unit, its captures, its resets.

use super::*;
use bytes::BytesMut;

use crate::frontend::statements::StmtDef;
use crate::router::SessionEffect;

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
fn an_owed_position_is_asked_for_behind_a_clean_read_only() {
    let write = Class::write(Reason::Dml);
    let read = Class::read(Reason::PureRead);
    let begin = Class::read(Reason::TxControl).with_tx(TxEffect::Begin { read_only: true });
    // (class, ends cleanly, in a transaction, position owed) -> capture
    let rows = [
        (&read, true, false, true, Capture::Pipelined),
        (&read, true, false, false, Capture::None),
        (&read, true, true, true, Capture::None),
        (&read, false, false, true, Capture::None),
        (&begin, true, false, true, Capture::None),
        (&write, true, false, true, Capture::Pipelined),
        (&write, true, true, true, Capture::None),
    ];
    for (i, &(class, clean, in_tx, owed, want)) in rows.iter().enumerate() {
        assert_eq!(primary_capture(class, clean, false, in_tx, owed), want, "row {i}");
    }
}

#[test]
fn late_captures_follow_what_streamed_in() {
    let read = Class::read(Reason::PureRead);
    let write = Class::write(Reason::Dml);
    let commit = Class::read(Reason::TxControl).with_tx(TxEffect::End);
    let ran = |on_primary, ready, streamed, block_wrote| Ran { on_primary, ready, streamed, block_wrote };
    let (p, a, n) = (Capture::Pipelined, Capture::After, Capture::None);
    // (early, class, streamed, ran, may_copy, in_transaction) -> capture
    let cases = [
        (p, &write, None, ran(true, true, false, false), false, false, p),
        (a, &write, None, ran(true, true, false, false), true, false, a),
        (p, &write, None, ran(true, false, false, false), false, false, p),
        (n, &read, Some(&write), ran(true, true, true, false), false, false, a),
        (n, &read, Some(&read), ran(true, true, true, false), false, false, n),
        (n, &read, Some(&write), ran(false, true, true, false), false, false, n),
        (n, &read, Some(&write), ran(true, false, true, false), false, false, n),
        (n, &read, Some(&write), ran(true, true, false, false), false, false, n),
        (n, &read, None, ran(true, true, false, true), false, false, a),
        (n, &read, None, ran(true, true, true, true), true, false, a),
        (n, &write, None, ran(true, true, true, false), false, true, n),
        (n, &read, Some(&commit), ran(true, true, true, false), false, true, a),
    ];
    for (i, (early, class, streamed, ran, may_copy, in_tx, want)) in cases.into_iter().enumerate() {
        assert_eq!(late_lsn_capture(early, class, streamed, ran, may_copy, in_tx), want, "case {i}");
    }
    assert_eq!(with_streamed(&read, Some(&write)).access, Access::Write);
    assert_eq!(with_streamed(&read, None).access, Access::Read);
}

#[test]
fn the_copy_scan_is_skipped_only_where_its_answer_is_not_read() {
    let read = Class::read(Reason::PureRead);
    let write = Class::write(Reason::Dml);
    let begin = Class::write(Reason::BeginReadWrite).with_tx(TxEffect::Begin { read_only: false });
    let commit = Class::read(Reason::TxControl).with_tx(TxEffect::End);
    let classes = [&read, &write, &begin, &commit];
    let mut skipped = 0;
    for class in classes {
        for (in_tx, streams, block_wrote, ends, on_primary, ready) in
            flag_combinations().map(|f| (f[0], f[1], f[2], f[3], f[4], f[5]))
        {
            if copy_matters(class, in_tx, streams, block_wrote) {
                continue;
            }
            skipped += 1;
            let ran = Ran { on_primary, ready, streamed: streams, block_wrote };
            for streamed in [None, Some(&read), Some(&write), Some(&commit)] {
                let capture = |may_copy| {
                    let early = lsn_capture(class, ends, may_copy, in_tx);
                    (early, late_lsn_capture(early, class, streamed, ran, may_copy, in_tx))
                };
                assert_eq!(capture(false), capture(true), "{class:?} in_tx={in_tx} streams={streams}");
            }
        }
    }
    assert!(skipped > 0);
    assert!(!copy_matters(&write, true, false, false), "a write inside a transaction block");
    assert!(!copy_matters(&begin, false, false, false), "BEGIN");
    assert!(copy_matters(&commit, true, false, false), "COMMIT");
    assert!(copy_matters(&write, false, false, false), "an autocommit write");
}

/// Every combination of six flags.
fn flag_combinations() -> impl Iterator<Item = [bool; 6]> {
    (0..64u32).map(|n| std::array::from_fn(|i| (n >> i) & 1 == 1))
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
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        assert_eq!(query_ends_tx_outside_block(&body), want, "{sql:?} as a Query body");
    }
    // The cheap first-byte test never turns away what the full check accepts.
    for sql in ["\u{a0}COMMIT", "\x0b\x0c end;", "\u{2003}rollback work", "\ncommit\n"] {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        assert_eq!(query_ends_tx_outside_block(&body), tx_end_outside_block(sql), "{sql:?}");
    }
    assert_eq!(query_ends_tx_outside_block(b"COMMIT"), None, "no terminator: not a Query body");
}

#[test]
fn first_letters_are_tested_before_the_text() {
    assert!(may_start_with(b" \t\r\n\x0b\x0cdeallocate x\0", b"D"));
    assert!(!may_start_with(b"  SELECT 1\0", b"RACE"));
    assert!(may_start_with("\u{a0}x".as_bytes(), b"D"), "maybe Unicode whitespace: the full check decides");
    assert!(!may_start_with(b"  \0", b"D"));
    assert!(!may_start_with(b"", b"D"));
}

#[test]
fn resets_are_recognised() {
    assert!(is_reset_all("RESET ALL"));
    assert!(is_reset_all("discard  all;"));
    assert!(!is_reset_all("RESET search_path"));
    // asyncpg's pool reset, as it sends it.
    assert!(is_reset_all("SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;"));
    assert!(is_reset_all("close all; Reset  All"));
    for not_reset in [
        "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;",
        "SELECT pg_advisory_unlock_all(); SET search_path = x; RESET ALL",
        "CLOSE ALL; RESET ALL; SELECT pg_advisory_lock(1)",
        "SELECT 'x; RESET ALL'; RESET ALL",
        "UNLISTEN * -- ; RESET ALL",
        "",
    ] {
        assert!(!is_reset_all(not_reset), "{not_reset}");
    }
    for alone in ["RESET ALL", "discard all ;", "close all; Reset  All"] {
        assert!(is_reset_alone(alone), "{alone}");
    }
    for more in ["RESET ALL; SET work_mem = '1MB'", "DISCARD ALL; SELECT 1"] {
        assert!(is_reset_all(more) && !is_reset_alone(more), "{more}");
    }
    let Unit::Simple(f) = query("DEALLOCATE ALL") else { unreachable!() };
    assert!(resets_statements(f.msg()));
    let Unit::Simple(f) = query("DEALLOCATE s1") else { unreachable!() };
    assert!(!resets_statements(f.msg()));
    let Unit::Simple(f) = query("\n discard all;") else { unreachable!() };
    assert!(resets_statements(f.msg()));
}

/// A Bind of a statement parsed earlier in the same unit is classified by that Parse, not by
/// the definition the name had before the unit (drivers reuse the unnamed statement for every
/// query: a read after a write must not be taken for a write).
#[test]
fn a_bind_follows_the_parse_of_its_own_unit() {
    let classifier = Classifier::new(64, Vec::new());
    let mut statements = Statements::default();
    let no_types = 0i16.to_be_bytes();
    statements.define("", Arc::new(StmtDef::new(b"INSERT INTO t VALUES (1)", &no_types, &classifier)));
    statements.define("s1", Arc::new(StmtDef::new(b"SET work_mem = '1MB'", &no_types, &classifier)));
    let frame = |build: &dyn Fn(&mut BytesMut)| {
        let mut b = BytesMut::new();
        build(&mut b);
        Frame::from_bytes(b.freeze())
    };
    for name in ["", "s1"] {
        let frames = vec![
            frame(&|b| messages::parse(b, name, b"SELECT 1", &no_types)),
            frame(&|b| messages::bind_renamed(b, b"", name, &[0, 0, 0, 0, 0, 0])),
            frame(&|b| messages::execute(b, "", 0)),
            frame(&|b| messages::sync(b)),
        ];
        let (class, _) = Unit::extended(frames).classify(&statements, &classifier);
        assert_eq!((class.access, class.session), (Access::Read, SessionEffect::None), "statement {name:?}");
    }
}

/// A unit that only resets session state may run again when its connection is lost; anything
/// with effects beyond the connection may not.
#[test]
fn only_resets_rerun_when_lost() {
    for reset in [
        "RESET ALL",
        " discard all;",
        "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;",
        "unlisten *; reset all",
    ] {
        assert!(query(reset).only_resets(), "{reset}");
    }
    for other in [
        "RESET search_path",
        "INSERT INTO t VALUES (1); RESET ALL",
        "RESET ALL; INSERT INTO t VALUES (1)",
        "DISCARD ALL; DELETE FROM t",
        "SELECT pg_advisory_unlock_all()",
        "",
        "DELETE FROM t",
    ] {
        assert!(!query(other).only_resets(), "{other}");
    }
    let mut b = BytesMut::new();
    messages::parse(&mut b, "", b"RESET ALL", &[0, 0]);
    assert!(!Unit::extended(vec![Frame::from_bytes(b.freeze())]).only_resets(), "only a simple Query is judged");
}

/// A Query of one BEGIN / START TRANSACTION may run again when its connection is lost; one
/// that also runs a statement in the block may not.
#[test]
fn only_a_lone_begin_reruns_when_lost() {
    let classifier = Classifier::new(64, Vec::new());
    let statements = Statements::default();
    let judged = |sql: &str| {
        let unit = query(sql);
        let (class, _) = unit.classify(&statements, &classifier);
        unit.only_begins(&class)
    };
    for begin in [
        "BEGIN",
        "begin;",
        "BEGIN ISOLATION LEVEL SERIALIZABLE",
        " START TRANSACTION READ ONLY ;",
        "BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ DEFERRABLE",
    ] {
        assert!(judged(begin), "{begin}");
    }
    for other in [
        "BEGIN; INSERT INTO t VALUES (1)",
        "BEGIN; SELECT 1",
        "COMMIT",
        "SELECT 1",
        "INSERT INTO t VALUES (1)",
        "SAVEPOINT a",
        "",
    ] {
        assert!(!judged(other), "{other}");
    }
    let mut b = BytesMut::new();
    messages::parse(&mut b, "", b"BEGIN", &[0, 0]);
    let unit = Unit::extended(vec![Frame::from_bytes(b.freeze())]);
    let (class, _) = unit.classify(&statements, &classifier);
    assert!(!unit.only_begins(&class), "only a simple Query is judged");
}

/// Classifying a unit keeps what it found for translating it: the definition each Parse
/// records, and the statement a Bind runs unless a Parse or a Close before it in the unit could
/// change what its name means by then.
#[test]
fn classifying_keeps_the_definitions_for_translating() {
    let classifier = Classifier::new(64, Vec::new());
    let mut statements = Statements::default();
    let no_types = 0i16.to_be_bytes();
    statements.define("", Arc::new(StmtDef::new(b"SELECT 1", &no_types, &classifier)));
    statements.define("s1", Arc::new(StmtDef::new(b"SELECT 2", &no_types, &classifier)));
    let frame = |build: &dyn Fn(&mut BytesMut)| {
        let mut b = BytesMut::new();
        build(&mut b);
        Frame::from_bytes(b.freeze())
    };
    let parse = |name: &'static str, sql: &'static [u8]| frame(&move |b| messages::parse(b, name, sql, &no_types));
    let bind = |name: &'static str| frame(&move |b| messages::bind_renamed(b, b"", name, &[0, 0, 0, 0, 0, 0]));
    let close = |name: &'static str| frame(&move |b| messages::close(b, b'S', name));
    let execute = || frame(&|b| messages::execute(b, "", 0));
    let sync = || frame(&|b| messages::sync(b));
    let same = |a: Option<&Arc<StmtDef>>, b: &str| a.is_some_and(|a| Arc::ptr_eq(a, statements.get(b).unwrap()));

    // The unnamed statement parsed again: its definition; its Bind follows the Parse.
    let (_, r) =
        Unit::extended(vec![parse("", b"SELECT 1"), bind(""), execute(), sync()]).classify(&statements, &classifier);
    assert!(same(r.at(0), ""));
    assert!(r.at(1).is_none());
    // A new text: the definition made from the message.
    let (class, r) = Unit::extended(vec![parse("", b"SELECT 3"), sync()]).classify(&statements, &classifier);
    let made = r.at(0).expect("a definition made from the Parse");
    assert_eq!((made.key.query.as_slice(), Arc::ptr_eq(&made.class, &class)), (&b"SELECT 3"[..], true));
    // A Bind of a statement prepared before the unit.
    let (_, r) = Unit::extended(vec![bind("s1"), execute(), sync()]).classify(&statements, &classifier);
    assert!(same(r.at(0), "s1"));
    // Not after a Close or a Parse (a `DEALLOCATE s1` would forget it), nor past the room kept.
    for first in [close("s1"), parse("", b"DEALLOCATE s1")] {
        let (_, r) = Unit::extended(vec![first, bind("s1"), execute(), sync()]).classify(&statements, &classifier);
        assert!(r.at(1).is_none());
    }
    let (_, r) = Unit::extended(vec![bind("s1"), bind("s1"), bind("s1"), sync()]).classify(&statements, &classifier);
    assert!(same(r.at(0), "s1") && same(r.at(1), "s1") && r.at(2).is_none());
}

/// A Query whose text is not UTF-8 is an unknown statement (a write), also where its bytes
/// would make the cache key of a text already classified (a string's bytes are a placeholder
/// in the key) and where its text is ASCII up to the bad byte; an ASCII text gets its class.
#[test]
fn a_query_text_that_is_not_utf8_is_an_unknown_statement() {
    let classifier = Classifier::new(64, Vec::new());
    let statements = Statements::default();
    let raw_query = |text: &[u8]| {
        let mut b = BytesMut::new();
        b.extend_from_slice(b"Q");
        b.extend_from_slice(&i32::try_from(text.len() + 5).unwrap().to_be_bytes());
        b.extend_from_slice(text);
        b.extend_from_slice(&[0]);
        Unit::Simple(Frame::from_bytes(b.freeze()))
    };
    let (read, _) = query("SELECT * FROM t WHERE name = 'a'").classify(&statements, &classifier);
    assert_eq!(read.access, Access::Read);
    let (again, _) = raw_query(b"SELECT * FROM t WHERE name = 'b'").classify(&statements, &classifier);
    assert!(Arc::ptr_eq(&read, &again));
    for text in [b"SELECT * FROM t WHERE name = '\xff'".as_slice(), b"SELECT 1\xc3", b"\xe9"] {
        let (class, _) = raw_query(text).classify(&statements, &classifier);
        assert_eq!((class.access, class.reason), (Access::Write, Reason::UnknownStatement), "{text:?}");
    }
}
