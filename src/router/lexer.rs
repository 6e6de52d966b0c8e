//! The lexical pass: PostgreSQL tokens without a parser.
//!
//! Knows exactly as much of PostgreSQL's lexer as routing needs: whitespace, `--` and nested
//! `/* */` comments, `'...'` strings with `''` escapes, `E'...'` strings with backslash escapes,
//! `"quoted identifiers"`, `U&` forms, dollar quotes (`$tag$ ... $tag$`), parameters (`$1`),
//! numbers, parentheses, `;`, `.`, `,` and `::`. Everything else is an operator byte.
//!
//! Tokens are byte ranges into the input (no allocation per token). Identifier and keyword
//! characters are ASCII letters, digits, `_`, `$` (not first) and every byte >= 0x80, as in
//! PostgreSQL, so every range starts and ends on a UTF-8 character boundary.
//!
//! Assumption: `standard_conforming_strings = on` (PostgreSQL's default since 9.1), so a
//! backslash only escapes inside `E'...'`.

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A keyword or unquoted identifier.
    Word,
    /// A `"quoted identifier"` (`U&"..."` too).
    QuotedIdent,
    /// A string constant of any form, or a dollar-quoted body.
    String,
    /// A numeric constant.
    Number,
    /// A positional parameter such as `$1`.
    Param,
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `;`
    Semicolon,
    /// `,`
    Comma,
    /// `.`
    Dot,
    /// `::`
    Cast,
    /// Any other byte (operators, brackets, `:`): one token per byte.
    Op,
    /// A string, quoted identifier or comment that never ends: the statement is malformed.
    Unterminated,
}

/// One token: its kind and byte range in the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    /// What it is.
    pub kind: Kind,
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Token {
    /// The token's text.
    pub fn text<'a>(&self, sql: &'a str) -> &'a str {
        &sql[self.start..self.end]
    }

    /// True if this is the unquoted word `kw` (ASCII case-insensitive; `kw` is lowercase).
    pub fn is_word(&self, sql: &str, kw: &str) -> bool {
        self.kind == Kind::Word && self.text(sql).eq_ignore_ascii_case(kw)
    }
}

/// PostgreSQL's whitespace: space, tab, newline, carriage return, form feed, vertical tab.
pub(super) const fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0c | 0x0b)
}

/// True for bytes that may continue an identifier.
pub(super) const fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// True for bytes that may start an identifier.
pub(super) const fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// Iterator over the tokens of a SQL text, skipping whitespace and comments.
pub(crate) struct Lexer<'a> {
    sql: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    /// A lexer positioned at the start of `sql`.
    pub fn new(sql: &'a str) -> Self {
        Self { sql, bytes: sql.as_bytes(), pos: 0 }
    }

    fn peek_at(&self, at: usize) -> u8 {
        self.bytes.get(at).copied().unwrap_or(0)
    }

    /// Skip whitespace and comments. Returns false if a block comment never ends.
    fn skip_trivia(&mut self) -> bool {
        loop {
            let b = self.peek_at(self.pos);
            if is_space(b) {
                self.pos += 1;
            } else if b == b'-' && self.peek_at(self.pos + 1) == b'-' {
                self.pos = line_comment_end(self.bytes, self.pos);
            } else if b == b'/' && self.peek_at(self.pos + 1) == b'*' {
                match block_comment_end(self.bytes, self.pos) {
                    Some(end) => self.pos = end,
                    None => return false,
                }
            } else {
                return true;
            }
        }
    }

    /// Scan one token starting at `self.pos` (which is not trivia and not the end).
    fn scan(&mut self) -> Kind {
        let start = self.pos;
        let b = self.bytes[start];
        match b {
            b'\'' => self.quoted(start + 1, b'\'', false, Kind::String),
            b'"' => self.quoted(start + 1, b'"', false, Kind::QuotedIdent),
            b'$' => self.dollar(start),
            b'(' => self.one(Kind::LParen),
            b')' => self.one(Kind::RParen),
            b';' => self.one(Kind::Semicolon),
            b',' => self.one(Kind::Comma),
            b':' if self.peek_at(start + 1) == b':' => {
                self.pos += 2;
                Kind::Cast
            }
            b'.' if self.peek_at(start + 1).is_ascii_digit() => self.number(),
            b'.' => self.one(Kind::Dot),
            b'0'..=b'9' => self.number(),
            _ if is_ident_start(b) => self.word(start),
            _ => self.one(Kind::Op),
        }
    }

    fn one(&mut self, kind: Kind) -> Kind {
        self.pos += 1;
        kind
    }

    fn number(&mut self) -> Kind {
        self.pos = number_end(self.bytes, self.pos);
        Kind::Number
    }

    /// A word, or a prefixed string/identifier: `E'..'`, `U&'..'`, `U&".."`, `B'..'`, `X'..'`,
    /// `N'..'`.
    fn word(&mut self, start: usize) -> Kind {
        let next = self.peek_at(start + 1);
        match (self.bytes[start].to_ascii_lowercase(), next) {
            (b'e', b'\'') => return self.quoted(start + 2, b'\'', true, Kind::String),
            (b'b' | b'x' | b'n', b'\'') => return self.quoted(start + 2, b'\'', false, Kind::String),
            (b'u', b'&') => match self.peek_at(start + 2) {
                b'\'' => return self.quoted(start + 3, b'\'', false, Kind::String),
                b'"' => return self.quoted(start + 3, b'"', false, Kind::QuotedIdent),
                _ => {}
            },
            _ => {}
        }
        self.pos = start + 1;
        while is_ident_byte(self.peek_at(self.pos)) {
            self.pos += 1;
        }
        Kind::Word
    }

    /// A quoted form whose body starts at `from` (see [`quoted_end`]).
    fn quoted(&mut self, from: usize, quote: u8, backslash: bool, kind: Kind) -> Kind {
        match quoted_end(self.bytes, from, quote, backslash) {
            Some(end) => {
                self.pos = end;
                kind
            }
            None => {
                self.pos = self.bytes.len();
                Kind::Unterminated
            }
        }
    }

    /// `$1` (a parameter), `$tag$ ... $tag$` / `$$ ... $$` (a string), or a lone `$`.
    fn dollar(&mut self, start: usize) -> Kind {
        let after = self.peek_at(start + 1);
        if after.is_ascii_digit() {
            self.pos = start + 1;
            while self.peek_at(self.pos).is_ascii_digit() {
                self.pos += 1;
            }
            return Kind::Param;
        }
        let mut tag_end = start + 1;
        if is_ident_start(after) {
            while is_ident_byte(self.peek_at(tag_end)) && self.peek_at(tag_end) != b'$' {
                tag_end += 1;
            }
        }
        if self.peek_at(tag_end) != b'$' {
            return self.one(Kind::Op);
        }
        let tag = &self.bytes[start..=tag_end];
        let body = tag_end + 1;
        match find(&self.bytes[body..], tag) {
            Some(at) => {
                self.pos = body + at + tag.len();
                Kind::String
            }
            None => {
                self.pos = self.bytes.len();
                Kind::Unterminated
            }
        }
    }
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        if !self.skip_trivia() {
            let start = self.pos;
            self.pos = self.bytes.len();
            return Some(Token { kind: Kind::Unterminated, start, end: self.pos });
        }
        if self.pos >= self.bytes.len() {
            return None;
        }
        let start = self.pos;
        let kind = self.scan();
        debug_assert!(self.pos > start && self.sql.is_char_boundary(self.pos));
        Some(Token { kind, start, end: self.pos })
    }
}

/// The end of the numeric constant starting at `start`: `123`, `1_000`, `1.5`, `.5`, `1e-3`,
/// `0x1F`, `0o17`, `0b101`. It stops at the first byte that cannot continue it, so `1for` is `1`
/// then `for`, as PostgreSQL before 15 read it (later versions reject it).
pub(super) fn number_end(bytes: &[u8], start: usize) -> usize {
    let at = |i: usize| bytes.get(i).copied().unwrap_or(0);
    // Skip digits accepted by `is_digit`, and `_` separators.
    let digits = |mut i: usize, is_digit: fn(u8) -> bool| {
        while is_digit(at(i)) || at(i) == b'_' {
            i += 1;
        }
        i
    };
    let radix_digit: Option<fn(u8) -> bool> = match (bytes[start], at(start + 1).to_ascii_lowercase()) {
        (b'0', b'x') => Some(|d| d.is_ascii_hexdigit()),
        (b'0', b'o') => Some(|d| matches!(d, b'0'..=b'7')),
        (b'0', b'b') => Some(|d| matches!(d, b'0' | b'1')),
        _ => None,
    };
    if let Some(is_digit) = radix_digit {
        if is_digit(at(start + 2)) {
            return digits(start + 2, is_digit);
        }
    }
    let mut pos = digits(start, |d| d.is_ascii_digit());
    if at(pos) == b'.' && at(pos + 1) != b'.' {
        pos = digits(pos + 1, |d| d.is_ascii_digit());
    }
    if at(pos).eq_ignore_ascii_case(&b'e') {
        let mut exp = pos + 1;
        if matches!(at(exp), b'+' | b'-') {
            exp += 1;
        }
        if at(exp).is_ascii_digit() {
            pos = digits(exp, |d| d.is_ascii_digit());
        }
    }
    pos
}

/// The byte after a quoted form whose body starts at `from`, or `None` if it never ends. A
/// doubled quote is an escaped quote, and with `backslash` a backslash escapes the next byte.
pub(super) fn quoted_end(bytes: &[u8], from: usize, quote: u8, backslash: bool) -> Option<usize> {
    let mut i = from;
    while i < bytes.len() {
        let b = bytes[i];
        if backslash && b == b'\\' {
            i += 2;
        } else if b == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return Some(i + 1);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// The byte after a `--` comment (its newline included).
pub(super) fn line_comment_end(bytes: &[u8], start: usize) -> usize {
    match bytes[start..].iter().position(|&b| b == b'\n' || b == b'\r') {
        Some(at) => start + at + 1,
        None => bytes.len(),
    }
}

/// The byte after a (nested) `/* */` comment starting at `start`, or `None` if it never ends.
pub(super) fn block_comment_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < bytes.len() {
        match (bytes[i], bytes[i + 1]) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// Position of `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..=hay.len() - needle.len()].iter().position(|&b| b == first) {
            Some(at) => {
                i += at;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
            None => return None,
        }
    }
    None
}

/// The routing hint in the comments before the first token, if any (the first hint wins).
///
/// A hint is a comment whose whole body is `sluice: primary` or `sluice: replica`, in any case,
/// with any whitespace around the words and the colon: `/* sluice: replica */`,
/// `/*SLUICE:Primary*/`, `-- sluice: replica`.
pub(crate) fn leading_hint(sql: &str) -> Option<super::Hint> {
    let bytes = sql.as_bytes();
    let mut i = 0;
    loop {
        while i < bytes.len() && is_space(bytes[i]) {
            i += 1;
        }
        let (body, next) = if bytes[i..].starts_with(b"--") {
            let end = line_comment_end(bytes, i);
            (&sql[i + 2..end], end)
        } else if bytes[i..].starts_with(b"/*") {
            let end = block_comment_end(bytes, i)?;
            (&sql[i + 2..end - 2], end)
        } else {
            return None;
        };
        if let Some(hint) = parse_hint(body) {
            return Some(hint);
        }
        i = next;
    }
}

/// `sluice : primary|replica`, whitespace-tolerant and case-insensitive.
fn parse_hint(body: &str) -> Option<super::Hint> {
    let (head, tail) = body.split_once(':')?;
    if !head.trim().eq_ignore_ascii_case("sluice") {
        return None;
    }
    let target = tail.trim();
    if target.eq_ignore_ascii_case("primary") {
        Some(super::Hint::Primary)
    } else if target.eq_ignore_ascii_case("replica") {
        Some(super::Hint::Replica)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Hint;

    fn kinds(sql: &str) -> Vec<(Kind, &str)> {
        Lexer::new(sql).map(|t| (t.kind, t.text(sql))).collect()
    }

    #[test]
    fn tokens_of_every_kind() {
        use Kind::*;
        let sql = "SELECT a.\"B\"(1.5, $1, 'x''y', E'a\\'b', $q$ ; $q$)::int; -- c\n/* /* n */ */ x";
        assert_eq!(
            kinds(sql),
            vec![
                (Word, "SELECT"),
                (Word, "a"),
                (Dot, "."),
                (QuotedIdent, "\"B\""),
                (LParen, "("),
                (Number, "1.5"),
                (Comma, ","),
                (Param, "$1"),
                (Comma, ","),
                (String, "'x''y'"),
                (Comma, ","),
                (String, "E'a\\'b'"),
                (Comma, ","),
                (String, "$q$ ; $q$"),
                (RParen, ")"),
                (Cast, "::"),
                (Word, "int"),
                (Semicolon, ";"),
                (Word, "x"),
            ]
        );
    }

    #[test]
    fn unterminated_forms() {
        for sql in ["'abc", "\"abc", "E'abc\\'", "$$ abc", "/* /* */ abc", "$a$ $b$"] {
            let toks = kinds(sql);
            assert_eq!(toks.last().unwrap().0, Kind::Unterminated, "{sql}");
        }
    }

    #[test]
    fn dollar_forms() {
        assert_eq!(kinds("$1")[0].0, Kind::Param);
        assert_eq!(kinds("$ x")[0].0, Kind::Op);
        assert_eq!(kinds("a$b")[0], (Kind::Word, "a$b"));
        assert_eq!(kinds("$_$x$_$")[0], (Kind::String, "$_$x$_$"));
    }

    #[test]
    fn numbers_stop_where_pg_stops() {
        use Kind::*;
        assert_eq!(kinds("1for"), vec![(Number, "1"), (Word, "for")]);
        assert_eq!(kinds("1.5e-3x"), vec![(Number, "1.5e-3"), (Word, "x")]);
        assert_eq!(kinds("1e"), vec![(Number, "1"), (Word, "e")]);
        assert_eq!(
            kinds(".5 0x1F 0o17 0b101 1_000"),
            vec![(Number, ".5"), (Number, "0x1F"), (Number, "0o17"), (Number, "0b101"), (Number, "1_000"),]
        );
        assert_eq!(kinds("0b2"), vec![(Number, "0"), (Word, "b2")]);
        assert_eq!(kinds("1..2"), vec![(Number, "1"), (Dot, "."), (Number, ".2")]);
        assert_eq!(kinds("\x0bSELECT"), vec![(Word, "SELECT")]);
    }

    #[test]
    fn multibyte_identifiers() {
        assert_eq!(kinds("SELECT héllo")[1], (Kind::Word, "héllo"));
    }

    #[test]
    fn hints() {
        assert_eq!(leading_hint("/* sluice: primary */ SELECT 1"), Some(Hint::Primary));
        assert_eq!(leading_hint("  /*SLUICE:Replica*/SELECT 1"), Some(Hint::Replica));
        assert_eq!(leading_hint("-- x\n/* sluice : replica */ SELECT"), Some(Hint::Replica));
        assert_eq!(leading_hint("-- sluice: primary\nSELECT"), Some(Hint::Primary));
        assert_eq!(leading_hint("SELECT /* sluice: primary */ 1"), None);
        assert_eq!(leading_hint("/* sluice: elsewhere */ SELECT 1"), None);
        assert_eq!(leading_hint("/* sluice: primary"), None);
        assert_eq!(leading_hint(""), None);
    }
}
