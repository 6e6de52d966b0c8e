//! The classification cache's key: a statement text reduced to what its class depends on.
//!
//! Two texts get the same key only if they classify the same way:
//! - comments are dropped (per-request trace ids, sqlcommenter tags), except that the routing
//!   hint of the leading comments (`/* sluice: replica */`) is part of the key;
//! - whitespace is reduced to whether a gap exists and whether it holds a newline (`<=` is
//!   not `< =`, and only a newline lets two string constants continue each other);
//! - plain numeric constants (`42`, `4.2`) and plain `'...'` strings become placeholders, so
//!   statements that differ only in literal values (simple-protocol clients inline them) share
//!   one entry instead of churning the cache. Escaped, prefixed and dollar-quoted strings stay
//!   verbatim, and so do all literals of a text that has an `EXPLAIN` (its `ANALYZE 0|'off'`
//!   option is read by value). Classification never reads any other literal's value.
//!
//! Placeholders are control bytes that cannot occur in a Query's text (it is NUL-terminated and
//! they are not valid tokens), so no real text collides with them. Texts the lexer finds
//! malformed (an unterminated string or comment) are keyed verbatim behind their own prefix.
//! This module owns no state; [`super::Classifier`] hashes the key.

use super::lexer::{leading_hint, Kind, Lexer, Token};
use super::Hint;

/// Stands for a plain numeric constant.
const NUMBER: char = '\u{1}';
/// Stands for a plain `'...'` string constant.
const STRING: char = '\u{2}';

/// The cache key of `sql` (see the module map).
#[must_use]
pub(crate) fn cache_key(sql: &str) -> String {
    let mut key = String::with_capacity(sql.len() + 1);
    key.push(match leading_hint(sql) {
        None => '-',
        Some(Hint::Primary) => 'P',
        Some(Hint::Replica) => 'R',
    });
    if push_tokens(&mut key, sql, true).is_err() {
        // An EXPLAIN: its literals matter; start over keeping them.
        key.truncate(1);
        let _ = push_tokens(&mut key, sql, false);
    }
    key
}

/// Append the tokens of `sql`, literals replaced by placeholders if `literals`. `Err` (key
/// half-built) if `literals` and the text has an EXPLAIN.
fn push_tokens(key: &mut String, sql: &str, literals: bool) -> Result<(), ()> {
    let mut prev_end = None;
    for t in Lexer::new(sql) {
        if t.kind == Kind::Unterminated {
            verbatim(sql, key);
            return Ok(());
        }
        if literals && t.is_word(sql, "explain") {
            return Err(());
        }
        push_gap(key, sql, prev_end, t.start);
        push_token(key, sql, t, literals);
        prev_end = Some(t.end);
    }
    Ok(())
}

/// A malformed text, keyed as it is (behind its own prefix so it matches no normalised key).
fn verbatim(sql: &str, key: &mut String) {
    key.clear();
    key.push('!');
    key.push_str(sql);
}

/// Record the gap between two tokens: none, blank, or one that holds a newline.
fn push_gap(key: &mut String, sql: &str, prev_end: Option<usize>, start: usize) {
    let Some(end) = prev_end else { return };
    if start > end {
        key.push(if sql.as_bytes()[end..start].contains(&b'\n') { '\n' } else { ' ' });
    }
}

fn push_token(key: &mut String, sql: &str, t: Token, literals: bool) {
    let text = t.text(sql);
    match t.kind {
        Kind::Number if literals && is_plain_number(text) => key.push(NUMBER),
        Kind::String if literals && is_plain_string(text) => key.push(STRING),
        _ => key.push_str(text),
    }
}

/// Digits with at most one `.` (no exponent, radix prefix or separators).
fn is_plain_number(text: &str) -> bool {
    text.bytes().filter(|&b| b == b'.').count() <= 1 && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// `'...'` without a prefix (no `E`, `U&`, `B`, `X`, `N`, no dollar quotes).
fn is_plain_string(text: &str) -> bool {
    text.len() >= 2 && text.starts_with('\'') && text.ends_with('\'')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (a, b, same key?)
    const PAIRS: &[(&str, &str, bool)] = &[
        ("SELECT 1", "SELECT 2", true),
        ("SELECT * FROM t WHERE id = 17", "select * from t where id = 123456", false),
        ("SELECT * FROM t WHERE id = 17", "SELECT  *  FROM t WHERE id = 9", true),
        ("SELECT * FROM t WHERE name = 'bob'", "SELECT * FROM t WHERE name = 'it''s'", true),
        ("SELECT 1 /* traceparent='00-abc-01' */", "SELECT 1 /* traceparent='00-def-01' */", true),
        ("/* trace_id=1 */ SELECT 1", "/* trace_id=2 */ SELECT 1", true),
        ("/* trace_id=1 */ SELECT 1", "SELECT 1 -- done", true),
        ("/* sluice: replica */ SELECT 1", "SELECT 1", false),
        ("/* sluice: replica */ SELECT 1", "/* sluice: primary */ SELECT 1", false),
        ("/* app=x */ /* sluice: replica */ SELECT 1", "/* sluice:replica */ SELECT 2", true),
        ("SELECT a <= 1", "SELECT a < = 1", false),
        ("SELECT a<=1", "SELECT a <= 1", false),
        ("SELECT 'a'\n'b'", "SELECT 'a' 'b'", false),
        ("SELECT E'\\x'", "SELECT E'\\y'", false),
        ("SELECT $$a$$", "SELECT $$b$$", false),
        ("SELECT 1e5", "SELECT 2e5", false),
        ("SELECT 1", "SELECT '1'", false),
        ("EXPLAIN (ANALYZE 0) DELETE FROM t", "EXPLAIN (ANALYZE 1) DELETE FROM t", false),
        ("EXPLAIN (ANALYZE 'off') DELETE FROM t", "EXPLAIN (ANALYZE 'on') DELETE FROM t", false),
        ("SELECT 'unterminated", "SELECT 'unterminated2", false),
        ("SELECT a ? 'k'", "SELECT a ? 'j'", true),
    ];

    #[test]
    fn equal_keys_exactly_where_the_class_cannot_differ() {
        for (a, b, same) in PAIRS {
            assert_eq!(cache_key(a) == cache_key(b), *same, "{a:?} vs {b:?}: {:?} {:?}", cache_key(a), cache_key(b));
        }
    }

    #[test]
    fn texts_with_the_same_key_classify_the_same() {
        let c = super::super::Classifier::new(0, vec![]);
        for (a, b, same) in PAIRS {
            if *same {
                assert_eq!(c.classify_uncached(a), c.classify_uncached(b), "{a:?} vs {b:?}");
            }
        }
    }
}
