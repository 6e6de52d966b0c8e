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
//!
//! Two ways to the same key: [`plain_key`], one pass over the bytes for the common text (no
//! prefixed or dollar-quoted string, no `EXPLAIN`, nothing unterminated), and [`lexed_key`], the
//! full lexer, for everything `plain_key` declines. `plain_key` reuses the lexer's own scanners
//! for numbers, quoted forms and comments, so both see the same token boundaries.

use super::lexer::{
    block_comment_end, is_ident_byte, is_space, leading_hint, line_comment_end, number_end, quoted_end, Kind, Lexer,
    Token,
};
use super::Hint;

/// Stands for a plain numeric constant.
const NUMBER: u8 = 0x01;
/// Stands for a plain `'...'` string constant.
const STRING: u8 = 0x02;

/// The cache key of `sql` (see the module map).
#[must_use]
pub(crate) fn cache_key(sql: &str) -> String {
    plain_key(sql).unwrap_or_else(|| lexed_key(sql))
}

/// Longest text whose key [`InlineKey`] holds (a key is at most one byte longer than its text).
pub(crate) const INLINE_KEY_TEXT_BYTES: usize = 255;

/// Where a key is written: a `String`, or an [`InlineKey`] on the stack (no allocation for a
/// lookup that hits).
pub(crate) trait KeyOut {
    /// Append one ASCII byte (a mark, a gap or a placeholder).
    fn push_mark(&mut self, mark: u8);
    /// Append `sql[from..to]` (`from` and `to` are token boundaries: in a text that is UTF-8,
    /// character boundaries).
    fn push_piece(&mut self, sql: &[u8], from: usize, to: usize);
}

impl KeyOut for Vec<u8> {
    fn push_mark(&mut self, mark: u8) {
        self.push(mark);
    }

    fn push_piece(&mut self, sql: &[u8], from: usize, to: usize) {
        self.extend_from_slice(&sql[from..to]);
    }
}

/// A key built in place, for texts of at most [`INLINE_KEY_TEXT_BYTES`]. Filled only from
/// pieces of a UTF-8 text (a `str`, or bytes known to be ASCII) cut at token boundaries and
/// ASCII marks, so its bytes are UTF-8.
pub(crate) struct InlineKey {
    bytes: [u8; INLINE_KEY_TEXT_BYTES + 1],
    len: usize,
    /// A piece did not fit (cannot happen for a text within the bound; the key is then unusable).
    overflowed: bool,
}

impl InlineKey {
    pub(crate) const fn new() -> Self {
        Self { bytes: [0; INLINE_KEY_TEXT_BYTES + 1], len: 0, overflowed: false }
    }

    /// The key, or `None` if it did not fit.
    pub(crate) fn as_bytes(&self) -> Option<&[u8]> {
        (!self.overflowed).then(|| &self.bytes[..self.len])
    }

    fn push_bytes(&mut self, piece: &[u8]) {
        let end = self.len + piece.len();
        match self.bytes.get_mut(self.len..end) {
            Some(room) => {
                room.copy_from_slice(piece);
                self.len = end;
            }
            None => self.overflowed = true,
        }
    }
}

impl KeyOut for InlineKey {
    fn push_mark(&mut self, mark: u8) {
        debug_assert!(mark.is_ascii());
        self.push_bytes(&[mark]);
    }

    fn push_piece(&mut self, sql: &[u8], from: usize, to: usize) {
        match sql.get(from..to) {
            Some(piece) => self.push_bytes(piece),
            None => self.overflowed = true,
        }
    }
}

/// The key's first byte: the leading routing hint.
fn hint_mark(sql: &str) -> u8 {
    match leading_hint(sql) {
        None => b'-',
        Some(Hint::Primary) => b'P',
        Some(Hint::Replica) => b'R',
    }
}

/// True if `sql` starts with whitespace or what may be a comment: only then can it carry a
/// hint or need trivia skipped before its first token.
fn starts_with_trivia(sql: &[u8]) -> bool {
    sql.first().is_some_and(|&b| matches!(ACTS[usize::from(b)], Act::Blank | Act::Space | Act::Dash | Act::Slash))
}

/// The key of `sql` in one pass over its bytes, or `None` if the text has anything this scanner
/// leaves to [`lexed_key`]: a prefixed (`E'`, `B'`, `X'`, `N'`, `U&`) or dollar-quoted string,
/// a lone `$`, an `EXPLAIN`, or an unterminated string, identifier or comment. Where it answers,
/// the key is exactly `lexed_key`'s (`plain_key_agrees_with_the_lexer`).
///
/// The key is the text with runs copied as they are; only gaps (trivia between two tokens) and
/// plain literals are rewritten, so the scan only needs to find where each token ends.
pub(crate) fn plain_key(sql: &str) -> Option<String> {
    let mut key = Vec::with_capacity(sql.len() + 1);
    plain_key_into(sql.as_bytes(), &mut key)?;
    // Pieces of a `str` cut at token boundaries and ASCII marks: UTF-8.
    String::from_utf8(key).ok()
}

/// [`plain_key`] written to `key` (half-written if `None`).
///
/// Most bytes of a statement are copied into the key as they are whatever comes before or
/// after them (letters, `_`, non-ASCII bytes, punctuation and operator bytes): [`quiet_end`]
/// steps over a run of them with one table load per byte, and only the other bytes are looked
/// at one by one. Where a decision needs a word's start (a digit or `$` that continues a word, a
/// letter prefixing a string), it is read from the byte before: every byte from `seg` on was
/// stepped over by this loop, outside any literal, quoted form or gap, so an identifier byte
/// there is part of a word. Two lexer decisions are taken more widely than the lexer takes them
/// (the text is then left to [`lexed_key`], which keys it the same way): any `'` right after
/// `e`, `b`, `x` or `n`, any `&` between `u` and a quote, and any `explain` inside a word.
///
/// Bytes, so that a text known to be ASCII is keyed without validating it as UTF-8 first
/// (`Classifier::classify_query_text`); the key of a `str`'s bytes is that `str`'s.
pub(crate) fn plain_key_into(sql: &[u8], key: &mut impl KeyOut) -> Option<()> {
    let bytes = sql;
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    // The usual text starts with its first token: no hint, no trivia to skip.
    let mut i = 0;
    if starts_with_trivia(bytes) {
        // Trivia first: its end is found before the hint is read (an unterminated comment
        // declines), so the text up to there is whitespace and whole comments.
        i = skip_trivia(bytes, 0)?.0;
        key.push_mark(hint_mark(std::str::from_utf8(bytes.get(..i)?).ok()?));
    } else {
        key.push_mark(b'-');
    }
    // Start of the text not yet copied into the key.
    let mut run = i;
    // Start of the bytes this loop stepped over since the last literal, quoted form or gap.
    let mut seg = i;
    // True if the byte before `i` is an identifier byte this loop stepped over: `i` is then
    // inside a word.
    let in_word = |i: usize, seg: usize| i > seg && CLASSES[usize::from(bytes[i - 1])] & IDENT != 0;
    loop {
        i = quiet_end(bytes, i);
        let Some(&b) = bytes.get(i) else { break };
        match ACTS[usize::from(b)] {
            // The usual gap: one blank between two tokens, which the key keeps as it is, so the
            // run goes on (fewer, longer pieces).
            Act::Blank if plain_blank(bytes, i + 1) => i += 1,
            Act::Blank | Act::Space => (i, run, seg) = key_gap(sql, i, run, key)?,
            Act::Dash if at(i + 1) == b'-' => (i, run, seg) = key_gap(sql, i, run, key)?,
            Act::Slash if at(i + 1) == b'*' => (i, run, seg) = key_gap(sql, i, run, key)?,
            // `E'`, `B'`, `X'`, `N'` (or a word ending in one of those letters: declined too).
            Act::Quote if i > seg && matches!(bytes[i - 1] | 0x20, b'e' | b'b' | b'x' | b'n') => return None,
            Act::Quote => {
                let end = quoted_end(bytes, i + 1, b'\'', false)?;
                key.push_piece(sql, run, i);
                key.push_mark(STRING);
                (i, run, seg) = (end, end, end);
            }
            // A digit or `$` inside a word (`t1`, `a$b`): the word goes on.
            Act::Digit | Act::Dollar if in_word(i, seg) => i = ident_end(bytes, i + 1),
            // The usual inlined value, a decimal integer, here; any other number in `key_number`.
            Act::Digit => match integer_end(bytes, i) {
                Some(end) => {
                    key.push_piece(sql, run, i);
                    key.push_mark(NUMBER);
                    (i, run, seg) = (end, end, end);
                }
                None => (i, run, seg) = key_number(sql, i, run, key),
            },
            Act::Dot if at(i + 1).is_ascii_digit() => (i, run, seg) = key_number(sql, i, run, key),
            Act::DoubleQuote => {
                i = quoted_end(bytes, i + 1, b'"', false)?;
                seg = i;
            }
            // `$1`; a dollar quote or a lone `$` is left to the lexer.
            Act::Dollar if at(i + 1).is_ascii_digit() => {
                i += 2;
                while at(i).is_ascii_digit() {
                    i += 1;
                }
                seg = i;
            }
            Act::Dollar => return None,
            // `U&'` or `U&"` (or a word ending in `u`, then `&` and a quote: declined too).
            Act::Amp if i > seg && bytes[i - 1] | 0x20 == b'u' && matches!(at(i + 1), b'\'' | b'"') => return None,
            // An `x` inside `explain` (as a word, or inside a longer one: declined too).
            Act::Ex if i > seg && bytes[i - 1] | 0x20 == b'e' && is_plain_after_x(bytes, i + 1) => return None,
            // `-`, `/`, `.`, `&` and `x` that need no more: copied as they are.
            Act::Quiet | Act::Dash | Act::Slash | Act::Dot | Act::Amp | Act::Ex => i += 1,
        }
    }
    key.push_piece(sql, run, bytes.len());
    Some(())
}

/// True if `plain` (any case) starts at `i`: with the `ex` before it, `explain`.
#[cold]
fn is_plain_after_x(bytes: &[u8], i: usize) -> bool {
    bytes.get(i..i + 5).is_some_and(|w| w.eq_ignore_ascii_case(b"plain"))
}

/// The gap (trivia) at `i` keyed as one mark, dropped at the end of the text (the text before
/// it is copied first). Returns where scanning, the uncopied run and the segment continue, or
/// `None` if a comment never ends.
#[inline]
fn key_gap(sql: &[u8], i: usize, run: usize, key: &mut impl KeyOut) -> Option<(usize, usize, usize)> {
    let (end, newline) = skip_trivia(sql, i)?;
    key.push_piece(sql, run, i);
    if end < sql.len() {
        key.push_mark(if newline { b'\n' } else { b' ' });
    }
    Some((end, end, end))
}

/// True if the blank before `next` is a whole gap the key keeps as it is: a token follows it
/// (not more trivia, not the end of the text).
#[inline]
fn plain_blank(bytes: &[u8], next: usize) -> bool {
    let Some(&b) = bytes.get(next) else { return false };
    // One bit test for the usual token; trivia or what may start a comment looked at closer.
    if CLASSES[usize::from(b)] & (SPACE | MAY_COMMENT) == 0 {
        return true;
    }
    match b {
        b'-' => bytes.get(next + 1) != Some(&b'-'),
        b'/' => bytes.get(next + 1) != Some(&b'*'),
        _ => false,
    }
}

/// The number at `i` keyed: a plain one becomes a placeholder (the text before it is copied
/// first). Returns where scanning, the uncopied run and the segment continue.
#[inline]
fn key_number(sql: &[u8], i: usize, run: usize, key: &mut impl KeyOut) -> (usize, usize, usize) {
    let bytes = sql;
    let (end, plain) = match integer_end(bytes, i) {
        Some(end) => (end, true),
        None => {
            let end = number_end(bytes, i);
            (end, is_plain_number(&sql[i..end]))
        }
    };
    if !plain {
        return (end, run, end);
    }
    key.push_piece(sql, run, i);
    key.push_mark(NUMBER);
    (end, end, end)
}

/// What [`plain_key_into`] does at a byte.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Act {
    /// Letters (but `x`), `_`, non-ASCII bytes, punctuation and operator bytes (but those
    /// below): copied as they are, whatever is around them.
    Quiet,
    /// `' '`.
    Blank,
    /// Other whitespace.
    Space,
    Dash,
    Slash,
    Quote,
    Digit,
    Dot,
    DoubleQuote,
    Dollar,
    /// `&`: may be `U&'` or `U&"`.
    Amp,
    /// `x` or `X`: may be in `EXPLAIN`.
    Ex,
}

const ACTS: [Act; 256] = {
    let mut t = [Act::Quiet; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = match c {
            b' ' => Act::Blank,
            b'-' => Act::Dash,
            b'/' => Act::Slash,
            b'\'' => Act::Quote,
            b'0'..=b'9' => Act::Digit,
            b'.' => Act::Dot,
            b'"' => Act::DoubleQuote,
            b'$' => Act::Dollar,
            b'&' => Act::Amp,
            b'x' | b'X' => Act::Ex,
            _ if is_space(c) => Act::Space,
            _ => Act::Quiet,
        };
        b += 1;
    }
    t
};

/// The lexer's whitespace and identifier bytes as tables (one load per byte in the loops).
const SPACE: u8 = 1;
const IDENT: u8 = 2;
/// `-` and `/`: a comment may start there.
const MAY_COMMENT: u8 = 4;
const CLASSES: [u8; 256] = {
    let mut t = [0; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if is_space(c) { SPACE } else { 0 }
            | if is_ident_byte(c) { IDENT } else { 0 }
            | if c == b'-' || c == b'/' { MAY_COMMENT } else { 0 };
        b += 1;
    }
    t
};

/// The first byte from `i` on that [`plain_key_into`] must look at: one that is not
/// [`Act::Quiet`], or a blank not followed by what surely starts a token. Eight bytes at a time
/// ([`stop_lanes`]): a run of quiet bytes and plain blanks is most of a statement
/// (`UPDATE pgbench_accounts SET abalance = abalance + `), where a loop over bytes stopped at
/// every blank. A byte that stops the scan at once is answered without the lanes (the byte after
/// a literal or a blank before one); the last bytes (fewer than eight) one at a time, stopping
/// at every blank.
#[inline]
fn quiet_end(bytes: &[u8], mut i: usize) -> usize {
    if bytes.get(i).is_some_and(|&b| !matches!(ACTS[usize::from(b)], Act::Quiet | Act::Blank)) {
        return i;
    }
    // Nine bytes: the eight looked at, and the one after them (for a blank in the last lane).
    while let Some(&[b0, b1, b2, b3, b4, b5, b6, b7, next]) = bytes.get(i..).and_then(<[u8]>::first_chunk::<9>) {
        let stops = stop_lanes(u64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7]), next);
        if stops != 0 {
            return i + (stops.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    let rest = bytes.get(i..).unwrap_or_default();
    i + rest.iter().position(|&b| ACTS[usize::from(b)] != Act::Quiet).unwrap_or(rest.len())
}

/// Every lane's low bit, and high bit.
const LOWS: u64 = u64::from_le_bytes([0x01; 8]);
const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);

/// The high bit of each lane of `x` (every lane below 0x80) below `c`.
#[inline]
fn lanes_below(x: u64, c: u8) -> u64 {
    !(x + LOWS * u64::from(0x80 - c))
}

/// The high bit of each lane of `x` (every lane below 0x80) in `lo..=hi`.
#[inline]
fn lanes_within(x: u64, lo: u8, hi: u8) -> u64 {
    (x + LOWS * u64::from(0x80 - lo)) & lanes_below(x, hi + 1)
}

/// The lanes (bytes, little-endian) of the eight text bytes `w` where [`plain_key_into`] must
/// stop and look, as each lane's high bit, `next` being the byte after them: every byte that
/// is not [`Act::Quiet`] but a blank (control bytes, `!`, `#` and `%` too, at the price of a
/// look: one test covers all bytes below `(`), and a blank followed by a control byte,
/// whitespace, `-`, `.` or `/` (it may be a gap of its own or start a comment). Bytes of 0x80
/// and above are identifier bytes, never a stop (a blank before one whose low seven bits are
/// below `!` or `-` to `/`, a UTF-8 continuation byte, is). Every other lane is a byte the scan
/// copies with nothing more to do (`stop_lanes_agree_with_the_byte_rules`). The sums stay
/// within their lane: every lane of `x` is below 0x80.
#[inline]
fn stop_lanes(w: u64, next: u8) -> u64 {
    let x = w & !HIGHS;
    let below_paren = lanes_below(x, b'(');
    let blanks = !((x ^ (LOWS * 0x20)) + LOWS * 0x7f);
    let dash_to_nine = lanes_within(x, b'-', b'9');
    let exes = !(((x | (LOWS * 0x20)) ^ (LOWS * 0x78)) + LOWS * 0x7f);
    let gap_starts = lanes_below(x, b'!') | lanes_within(x, b'-', b'/');
    let next_gap = u64::from(next < b'!' || matches!(next, b'-'..=b'/'));
    let unsure_blanks = blanks & ((gap_starts >> 8) | (next_gap << 63));
    ((below_paren & !blanks) | dash_to_nine | exes | unsure_blanks) & !w & HIGHS
}

/// The end of the identifier bytes from `i` on (an iterator: no bounds check per byte).
#[inline]
fn ident_end(bytes: &[u8], i: usize) -> usize {
    let rest = bytes.get(i..).unwrap_or_default();
    i + rest.iter().position(|&b| CLASSES[usize::from(b)] & IDENT == 0).unwrap_or(rest.len())
}

/// Skip whitespace and comments from `i`: where they end and whether they hold a newline, or
/// `None` if a block comment never ends.
#[inline]
fn skip_trivia(bytes: &[u8], mut i: usize) -> Option<(usize, bool)> {
    let mut newline = false;
    loop {
        let b = bytes.get(i).copied().unwrap_or(0);
        if CLASSES[usize::from(b)] & SPACE != 0 {
            newline |= b == b'\n';
            i += 1;
            continue;
        }
        let next = bytes.get(i + 1).copied().unwrap_or(0);
        let end = if b == b'-' && next == b'-' {
            line_comment_end(bytes, i)
        } else if b == b'/' && next == b'*' {
            block_comment_end(bytes, i)?
        } else {
            return Some((i, newline));
        };
        newline |= bytes[i..end].contains(&b'\n');
        i = end;
    }
}

/// The cache key of `sql` through the lexer: the reference [`plain_key`] must agree with.
#[must_use]
pub(crate) fn lexed_key(sql: &str) -> String {
    let mut key = String::with_capacity(sql.len() + 1);
    key.push(char::from(hint_mark(sql)));
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
        Kind::Number if literals && is_plain_number(text.as_bytes()) => key.push(char::from(NUMBER)),
        Kind::String if literals && is_plain_string(text) => key.push(char::from(STRING)),
        _ => key.push_str(text),
    }
}

/// Digits with at most one `.` (no exponent, radix prefix or separators).
fn is_plain_number(text: &[u8]) -> bool {
    text.iter().filter(|&&b| b == b'.').count() <= 1 && text.iter().all(|&b| b.is_ascii_digit() || b == b'.')
}

/// The end of the decimal integer at `start` (`42`), or `None` if the number may go on in a
/// form only [`number_end`] reads (a fraction, an exponent, `_` separators, `0x`/`0o`/`0b`) or
/// does not start with a digit. Where it answers, `number_end` ends there too and the text is
/// plain (`is_plain_number`): the usual inlined value takes one loop over its digits.
#[inline]
fn integer_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut end = start;
    while bytes.get(end).is_some_and(u8::is_ascii_digit) {
        end += 1;
    }
    let after = bytes.get(end).copied().unwrap_or(0);
    let radix = bytes[start] == b'0' && end == start + 1 && matches!(after.to_ascii_lowercase(), b'x' | b'o' | b'b');
    (end > start && !matches!(after, b'.' | b'e' | b'E' | b'_') && !radix).then_some(end)
}

/// `'...'` without a prefix (no `E`, `U&`, `B`, `X`, `N`, no dollar quotes).
fn is_plain_string(text: &str) -> bool {
    text.len() >= 2 && text.starts_with('\'') && text.ends_with('\'')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Texts where a one-pass scanner could go wrong; each either takes the fast path with the
    /// lexer's key or is declined.
    const TRICKY: &[&str] = &[
        "SELECT 1e5, 1E+5, 1e-5, 1e, 1e+",
        "SELECT .5, 1., 1.5.3, 1..2, a.5, t.col",
        "SELECT 0x1F, 0X1f, 0o17, 0b101, 0b2, 0x, 1_000, 1_",
        "SELECT a1, 1a, a$1, _x9, 1for",
        "SELECT \"a b\", \"x\"\"y\", \"\" FROM \"T\"",
        "SELECT 'it''s', '', '''', 'a''' 'b'",
        "SELECT 'a'\n'b', 'a' 'b', 'a'\r\n'b', 'a'\t\n\t'b'",
        "SELECT a <= 1, a < = 1, a<=1, a<>b, a!=b",
        "SELECT 1::int, x::text[], a: :b, ::",
        "SELECT $1, $12, $1::int, a$1",
        "SELECT $$x$$, $q$y$q$, $ x, $",
        "SELECT 1;",
        "SELECT 1 ;  ",
        "  \n SELECT 1\n",
        "/* sluice: replica */ SELECT 1",
        "/* sluice: primary */SELECT 'x'",
        "-- sluice: replica\nSELECT 1",
        "/* app=x */ /* sluice:replica */ SELECT 2 -- trailing",
        "SELECT 1 /* c\n */ + 2",
        "SELECT 1/* c */+2",
        "SELECT 1 -- c\r+ 2",
        "SELECT 1 /* /* nested */ */ , 2",
        "SELECT 1 /* unterminated",
        "SELECT 'unterminated",
        "SELECT \"unterminated",
        "SELECT E'a\\'b', e'x', B'101', X'1F', N'n', U&'d', u&\"q\", u&x",
        "SELECT abe'x', xe'y', nb'z'",
        "SELECT E'x'",
        "EXPLAIN SELECT 1",
        "explain (analyze 0) delete from t",
        "SELECT explained, exp, lain FROM explain_t",
        "SELECT héllo, 'naïve', \"ü\" FROM t WHERE x = 'é'",
        "SELECT a ? 'k', a @> '{1}', a || 'x', -1, - 1, --1\n2",
        "SELECT a[1], b[1:2], c{}, d^2, e%3, f#g, h~i, j`k",
        "SELECT \u{1}, \u{2}, '\u{0}'",
        "INSERT INTO t VALUES (1, 'a', 2.5, NULL)",
        "",
        "   ",
        "/* only a comment */",
        "-- only a comment",
        ";",
        "SELECT-1",
        "SELECT 1-- x",
        "SELECT 1/*x*/",
        "SELECT 1\x0b\x0c2",
        "-1 + 2",
        "/2",
        "- -1",
        "\tSELECT 1",
        "SELECT  1 ,2  ",
        "SELECT a -- c\n, b",
        "SELECT a /* c */, b",
        "SELECT 1 / 2, 3 - 4, a -1, a /1",
        // A word and the blank after it (taken together when the blank is the whole gap).
        "SELECT a ",
        "SELECT a  b, c \tb, d \nb, e --x\nb, f /*x*/b, g -b, h /b, i 'x', j 1",
        "SELECT x 'a', e 'b', u &c, explain x",
        "SELECT 12 a, 12a b, 1.5 c, .5 d",
        // Words of seven letters that may start a prefixed string: only `EXPLAIN` is declined.
        "SELECT a BETWEEN 1 AND 2, explode(b), unknown, Explain1, bigints",
        "SELECT x FROM t WHERE eXpLaIn",
        // Numbers a letter or a quote follows; prefixes and `explain` inside longer words.
        "SELECT 0b12, 0o78, 0x1e'a', 1e'x', 0b'1', 0x'1', 1u&'x', 12e, 1.5e'x'",
        "SELECT a1e'x', t1.c2, a$1$2, x1, max(x), 1explain, ab u&'x', menu&'x', u&x, t.explain_x",
        "SELECT \"a\"1, 'a'1, $1a, $1'x', \"x\"'y', \"e\"'z', 'e''x'",
        // Blanks and runs across eight-byte chunks.
        "SELECT a  b,  c\t, d\n\ne, 'a'  'b', f -- x\n",
        "SELECT abcdefg , hijklmn  opq, rstuvwx\t yz, abcdefg -1, abcdefg /2, abcdef /*c*/ 2",
        "UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 12345;  ",
        "SELECT 1 FROM t WHERE a = 'x' AND b = 12345678 AND c = 'it''s'        ",
        "SELECT é ¢, a \u{a0}b, \u{80}\u{7ff} ¡ 'ü' x",
        "SELECT (a),(b)#%c+d*e,f FROM t WHERE a=1 AND b=$2 AND c=$3::int",
    ];

    /// The scanner's key, written to a `String` and to an [`InlineKey`], is the lexer's (or the
    /// scanner declines with both).
    fn agrees(sql: &str) -> bool {
        let mut inline = InlineKey::new();
        let inline = plain_key_into(sql.as_bytes(), &mut inline).and_then(|()| inline.as_bytes().map(<[u8]>::to_vec));
        let plain = plain_key(sql);
        inline.as_deref() == plain.as_deref().map(str::as_bytes) && plain.is_none_or(|k| k == lexed_key(sql))
    }

    #[test]
    fn plain_key_agrees_with_the_lexer() {
        for sql in TRICKY {
            assert!(agrees(sql), "{sql:?}: {:?} vs {:?}", plain_key(sql), lexed_key(sql));
        }
    }

    #[test]
    fn integers_end_where_the_lexer_ends_them() {
        for text in ["42", "0", "007", "12x", "1.5", "1e5", "1_000", "0x1F", "0b1", "0o7", "0xg", "9a", "1..2", "5 "] {
            let bytes = text.as_bytes();
            if let Some(end) = integer_end(bytes, 0) {
                assert_eq!(end, number_end(bytes, 0), "{text:?}");
                assert!(is_plain_number(&bytes[..end]), "{text:?}");
            }
        }
        assert_eq!(integer_end(b"42;", 0), Some(2));
        assert_eq!(integer_end(b"1.5", 0), None);
        assert_eq!(integer_end(b"0x1F", 0), None);
        assert_eq!(integer_end(b".5", 0), None);
    }

    #[test]
    fn common_texts_take_the_fast_path() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;",
            "UPDATE pgbench_accounts SET abalance = abalance + -2346 WHERE aid = 81904;",
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (5, 1, 3, 42, CURRENT_TIMESTAMP);",
            "BEGIN;",
            "END;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            "/* sluice: replica */ SELECT * FROM t WHERE name = 'it''s' AND x = .5",
            "SELECT 1 -- trace\n",
        ] {
            assert_eq!(plain_key(sql).as_deref(), Some(lexed_key(sql).as_str()), "{sql:?}");
        }
    }

    /// What the scan would do at byte `b` (followed by `next`, if any) by the byte rules: true if
    /// it copies it and goes on with nothing more to do.
    fn passes(b: u8, next: Option<u8>) -> bool {
        match ACTS[usize::from(b)] {
            Act::Quiet => true,
            Act::Blank => plain_blank(&[b' ', next.unwrap_or(b' ')], 1) && next.is_some(),
            _ => false,
        }
    }

    #[test]
    fn stop_lanes_agree_with_the_byte_rules() {
        // Every byte in every lane, before every byte (in the next lane, or after the chunk): a
        // lane passed over must be a byte the byte rules pass; the lanes stopped at beyond
        // those are the documented few.
        for lane in 0..8 {
            for b in 0..=255u8 {
                for next in 0..=255u8 {
                    let mut chunk = [b'a'; 9];
                    chunk[lane] = b;
                    chunk[lane + 1] = next;
                    let word = u64::from_le_bytes(chunk[..8].try_into().unwrap());
                    let stops = stop_lanes(word, chunk[8]);
                    let stopped = stops & (0x80 << (8 * lane)) != 0;
                    let known_next = Some(next);
                    let extra = matches!(b, 0..=0x08 | 0x0e..=0x1f | b'!' | b'#' | b'%')
                        || (b == b' '
                            && (matches!(next, 0..=0x08 | 0x0e..=0x1f | b'-'..=b'/')
                                || (lane < 7
                                    && next >= 0x80
                                    && (next & 0x7f < 0x21 || matches!(next & 0x7f, 0x2d..=0x2f)))));
                    assert_eq!(stopped, !passes(b, known_next) || extra, "byte {b:#x} in lane {lane} before {next:#x}");
                    // The lanes of `a` before it pass.
                    assert_eq!(stops & ((0x80 << (8 * lane)) - 1), 0, "byte {b:#x} in lane {lane}");
                }
            }
        }
    }

    /// Pieces that start or end tokens, to build texts that hit the scanner's edges.
    const PIECES: &[&str] = &[
        "SELECT", "a", "e", "E", "x", "b", "n", "u", "U&", "&", "explain", "_", "é", "1", "0", "5", ".", "e5", "x1F",
        "_0", "'", "''", "\"", "$", "$1", "$$", "--", "-", "/*", "*/", "/", "*", " ", "\n", "\r", "\t", ":", "::", ";",
        ",", "(", ")", "<", "=", "+", "\u{1}", "\\", "1e", "0b", "0x", "t1", "a$", "X", "ab", "plain", "ex", "  ",
        "abcdefgh", "#", "\u{a0}",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn plain_key_agrees_on_pieced_texts(pieces in proptest::collection::vec(proptest::sample::select(PIECES), 0..16)) {
            let sql = pieces.concat();
            prop_assert!(agrees(&sql), "{:?}: {:?} vs {:?}", sql, plain_key(&sql), lexed_key(&sql));
        }

        #[test]
        fn plain_key_agrees_on_random_texts(sql in "[ -~\n\té]{0,40}") {
            prop_assert!(agrees(&sql), "{:?}: {:?} vs {:?}", sql, plain_key(&sql), lexed_key(&sql));
        }
    }

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
