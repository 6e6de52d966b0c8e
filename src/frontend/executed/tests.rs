//! What a unit ran, told as texts: simple queries, batches, statements prepared before the
//! unit, and `set_config` calls with their parameters inlined.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use super::*;
use crate::frontend::statements::StmtDef;
use crate::protocol::Frame;
use crate::router::Classifier;

fn frame(build: impl FnOnce(&mut BytesMut)) -> Frame {
    let mut b = BytesMut::new();
    build(&mut b);
    Frame::from_bytes(b.freeze())
}

fn simple(sql: &str) -> Unit {
    Unit::Simple(frame(|b| messages::query(b, sql)))
}

fn parse(name: &str, sql: &str) -> Frame {
    frame(|b| messages::parse(b, name, sql.as_bytes(), &[0, 0]))
}

/// Parameter types section declaring `oids`.
fn types(oids: &[i32]) -> Vec<u8> {
    let mut t = (oids.len() as i16).to_be_bytes().to_vec();
    for o in oids {
        t.extend_from_slice(&o.to_be_bytes());
    }
    t
}

/// Bind of `statement` to the unnamed portal: `formats` as sent, then `values` (`None`: NULL).
fn bind(statement: &str, formats: &[i16], values: &[Option<&[u8]>]) -> Frame {
    let mut rest = BytesMut::new();
    rest.put_i16(formats.len() as i16);
    for f in formats {
        rest.put_i16(*f);
    }
    rest.put_i16(values.len() as i16);
    for v in values {
        match v {
            Some(v) => {
                rest.put_i32(v.len() as i32);
                rest.put_slice(v);
            }
            None => rest.put_i32(-1),
        }
    }
    rest.put_i16(0);
    frame(|b| messages::bind_renamed(b, b"", statement, &rest))
}

fn execute() -> Frame {
    frame(|b| messages::execute(b, "", 0))
}

fn sync() -> Frame {
    frame(messages::sync)
}

fn ran(unit: &Unit) -> Option<Vec<String>> {
    executed_texts(unit, &Statements::default())
}

const JIT_ON: &str = "SELECT pg_catalog.set_config('jit', 'on', false)";
const JIT_OFF: &str = "SELECT pg_catalog.set_config('jit', 'off', false)";

#[test]
fn a_simple_query_ran_its_text_and_settings_are_told_as_set_config() {
    assert_eq!(ran(&simple("SET search_path = a")), Some(vec!["SET search_path = a".to_string()]));
    // asyncpg's introspection prelude.
    let jit = "SELECT\n    current_setting('jit') AS cur,\n    set_config('jit', 'off', false) AS new\n";
    assert_eq!(ran(&simple(jit)), Some(vec![JIT_OFF.to_string()]));
    let two = "select pg_catalog.set_config('App.User', 'o''brien', false) u, set_config('b.c', '', false);";
    let want = [
        "SELECT pg_catalog.set_config('app.user', 'o''brien', false)",
        "SELECT pg_catalog.set_config('b.c', '', false)",
    ];
    assert_eq!(ran(&simple(two)), Some(want.map(String::from).to_vec()));
    // Not a settings select: kept as it ran (and judged as such by the session).
    for other in [
        "SELECT set_config('jit', 'off', true)",
        "SELECT set_config('jit', E'o\\\\ff', false)",
        "SELECT set_config('jit', 'off', false), now()",
        "SELECT current_setting('jit')",
        "SELECT set_config('jit', 'off', false) FROM t",
        "SELECT set_config('jit', 'off', false); DELETE FROM t",
    ] {
        assert_eq!(ran(&simple(other)), Some(vec![other.to_string()]), "{other}");
    }
}

#[test]
fn a_batch_ran_what_its_executes_ran() {
    // Prepared only (Parse, Describe, Sync): nothing ran.
    let prepare = Unit::extended(vec![parse("s1", "SET work_mem = '8MB'"), sync()]);
    assert_eq!(ran(&prepare), Some(vec![]));
    // Parsed, bound and executed in the batch.
    let once = Unit::extended(vec![parse("", "SET work_mem = '8MB'"), bind("", &[], &[]), execute(), sync()]);
    assert_eq!(ran(&once), Some(vec!["SET work_mem = '8MB'".to_string()]));
    // The unnamed statement parsed twice: each Execute runs the one bound before it.
    let twice = Unit::extended(vec![
        parse("", "SET a.x = '1'"),
        bind("", &[], &[]),
        execute(),
        parse("", "SET a.x = '2'"),
        bind("", &[], &[]),
        execute(),
        sync(),
    ]);
    assert_eq!(ran(&twice), Some(vec!["SET a.x = '1'".to_string(), "SET a.x = '2'".to_string()]));
    // A portal bound before the unit, or a statement nobody prepared: cannot be told.
    assert_eq!(ran(&Unit::extended(vec![execute(), sync()])), None);
    assert_eq!(ran(&Unit::extended(vec![bind("nobody", &[], &[]), execute(), sync()])), None);
}

/// A Flush-held block ended by a simple Query is judged as one unit: the Query runs last, its
/// text told as a simple Query's; a reset with more in the same text cannot be replayed.
#[test]
fn a_query_that_ended_a_flush_held_block_ran_after_the_block() {
    let query = |sql: &str| frame(|b| messages::query(b, sql));
    let block =
        |sql: &str| Unit::extended(vec![parse("", "SET work_mem = '8MB'"), bind("", &[], &[]), execute(), query(sql)]);
    assert_eq!(ran(&block("SELECT 1")), Some(vec!["SET work_mem = '8MB'".to_string(), "SELECT 1".to_string()]));
    let jit = "SELECT set_config('jit', 'off', false)";
    assert_eq!(ran(&block(jit)), Some(vec!["SET work_mem = '8MB'".to_string(), JIT_OFF.to_string()]));
    assert_eq!(ran(&block("RESET ALL")), Some(vec!["SET work_mem = '8MB'".to_string(), "RESET ALL".to_string()]));
    assert_eq!(ran(&block("RESET ALL; SET work_mem = '9MB'")), None);
}

#[test]
fn a_statement_prepared_before_the_unit_is_told_by_its_name() {
    let classifier = Classifier::new(16, Vec::new());
    let mut statements = Statements::default();
    let restore = "SELECT\n    set_config('jit', $1, false)\n";
    statements.define("__asyncpg_stmt_1__", Arc::new(StmtDef::new(restore.as_bytes(), &types(&[]), &classifier)));
    statements.define("set", Arc::new(StmtDef::new(b"SET jit = off", &types(&[]), &classifier)));
    let run = |frames: Vec<Frame>| executed_texts(&Unit::extended(frames), &statements);
    // asyncpg: binary text parameter; JDBC / libpq: text.
    assert_eq!(
        run(vec![bind("__asyncpg_stmt_1__", &[1], &[Some(b"on")]), execute(), sync()]),
        Some(vec![JIT_ON.into()])
    );
    assert_eq!(
        run(vec![bind("__asyncpg_stmt_1__", &[], &[Some(b"on")]), execute(), sync()]),
        Some(vec![JIT_ON.into()])
    );
    assert_eq!(run(vec![bind("set", &[], &[]), execute(), sync()]), Some(vec!["SET jit = off".into()]));
    // What cannot be inlined: NULL, not UTF-8, a missing parameter.
    assert_eq!(run(vec![bind("__asyncpg_stmt_1__", &[], &[None]), execute(), sync()]), None);
    assert_eq!(run(vec![bind("__asyncpg_stmt_1__", &[0], &[Some(b"\xff")]), execute(), sync()]), None);
    assert_eq!(run(vec![bind("__asyncpg_stmt_1__", &[], &[]), execute(), sync()]), None);
}

#[test]
fn parameters_are_inlined_only_for_text_types() {
    let sql = "SELECT set_config($1, $2, false)";
    let with = |oids: &[i32], formats: &[i16]| {
        let p = frame(|b| messages::parse(b, "", sql.as_bytes(), &types(oids)));
        let unit = Unit::extended(vec![p, bind("", formats, &[Some(b"app.user"), Some(b"42")]), execute(), sync()]);
        ran(&unit)
    };
    let want = Some(vec!["SELECT pg_catalog.set_config('app.user', '42', false)".to_string()]);
    assert_eq!(with(&[], &[1]), want, "undeclared, binary");
    assert_eq!(with(&[25, 1043], &[1, 1]), want, "text and varchar, binary");
    assert_eq!(with(&[25, 23], &[0]), want, "text format whatever the type");
    assert_eq!(with(&[25, 23], &[1]), None, "an int4 in binary is not its text");
    // A parameter elsewhere than in set_config's arguments: not a settings select.
    let p = frame(|b| messages::parse(b, "", b"SELECT $1::int", &types(&[])));
    assert_eq!(ran(&Unit::extended(vec![p, bind("", &[], &[Some(b"1")]), execute(), sync()])), None);
}

#[test]
fn statements_are_told_with_their_parameters_left_in() {
    let sql = "SELECT * FROM t WHERE id = $1";
    let p = frame(|b| messages::parse(b, "", sql.as_bytes(), &types(&[])));
    let unit = Unit::extended(vec![p, bind("", &[], &[Some(b"1")]), execute(), sync()]);
    assert_eq!(ran(&unit), None, "not replayable");
    assert_eq!(executed_statements(&unit, &Statements::default()), Some(vec![sql.to_string()]));
    let set = "SELECT set_config('a.b', 'c', false)";
    assert_eq!(executed_statements(&simple(set), &Statements::default()), Some(vec![set.to_string()]));
}
