//! Statements: split a simple Query at top-level `;`, decide each from its first keywords, and
//! fold the decisions of all statements into one [`Class`].
//!
//! Everything that is not a SELECT-like query is decided here without the parser; queries go to
//! [`super::query`]. Unknown first keywords are writes.

use super::functions::Resolver;
use super::lexer::{leading_hint, Kind, Lexer, Token};
use super::{ddl, node_local, query, Access, Class, Reason, SessionEffect, TxEffect};

/// One statement: its tokens (never empty) and the text they point into.
#[derive(Clone, Copy)]
pub(crate) struct Stmt<'a> {
    pub sql: &'a str,
    pub toks: &'a [Token],
}

impl<'a> Stmt<'a> {
    /// True if token `i` is the unquoted word `kw` (lowercase).
    pub fn is(&self, i: usize, kw: &str) -> bool {
        self.toks.get(i).is_some_and(|t| t.is_word(self.sql, kw))
    }

    /// True if token `i` is one of the unquoted words `kws`.
    pub fn is_any(&self, i: usize, kws: &[&str]) -> bool {
        kws.iter().any(|kw| self.is(i, kw))
    }

    /// Index of the first unquoted word `kw` at or after `from`.
    pub fn find(&self, from: usize, kw: &str) -> Option<usize> {
        (from..self.toks.len()).find(|&i| self.is(i, kw))
    }

    /// The statement from token `from` on (may be empty).
    pub fn tail(&self, from: usize) -> Stmt<'a> {
        Stmt { sql: self.sql, toks: self.toks.get(from..).unwrap_or(&[]) }
    }

    /// The statement's text (from its first to its last token).
    pub fn text(&self) -> &'a str {
        match (self.toks.first(), self.toks.last()) {
            (Some(first), Some(last)) => &self.sql[first.start..last.end],
            _ => "",
        }
    }

    /// Index of the `)` matching the `(` at `open`.
    pub fn matching_paren(&self, open: usize) -> Option<usize> {
        let mut depth = 0usize;
        for (i, t) in self.toks.iter().enumerate().skip(open) {
            match t.kind {
                Kind::LParen => depth += 1,
                Kind::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(i);
                    }
                }
                _ => {}
            }
        }
        None
    }
}

/// Classify a whole SQL text: every statement, folded; the hint from the leading comment.
pub(crate) fn classify_text(sql: &str, resolver: Resolver<'_>) -> Class {
    // About one token per five bytes of SQL; capped so a huge text grows the vector as needed.
    let mut tokens: Vec<Token> = Vec::with_capacity((sql.len() / 5 + 4).min(4096));
    tokens.extend(Lexer::new(sql));
    let mut folded: Option<Class> = None;
    let mut count = 0usize;
    for toks in split(sql, &tokens) {
        let class = classify_statement(Stmt { sql, toks }, resolver, 0);
        count += 1;
        folded = Some(match folded {
            None => class,
            Some(acc) => fold(acc, class),
        });
    }
    let mut class = folded.unwrap_or_else(|| Class::read(Reason::Empty));
    if count > 1 && class.access == Access::Write {
        class.reason = Reason::MultiStatementWrite;
    }
    class.hint = leading_hint(sql);
    class
}

/// Combine the class of the statements so far with the next one's.
fn fold(acc: Class, next: Class) -> Class {
    let access = acc.access.max(next.access);
    let tx = match (acc.tx, next.tx) {
        (TxEffect::Begin { .. }, TxEffect::SetReadOnly) => TxEffect::Begin { read_only: true },
        (earlier, TxEffect::None) => earlier,
        (_, later) => later,
    };
    Class {
        access,
        reason: if access != acc.access { next.reason } else { acc.reason },
        tx,
        session: acc.session.max(next.session),
        hint: None,
        changes_functions: acc.changes_functions || next.changes_functions,
    }
}

/// The statements of a token list: split at `;` outside parentheses and outside the `BEGIN
/// ATOMIC ... END` body of a CREATE FUNCTION / PROCEDURE (as psql does). Empty ones are skipped.
fn split<'t>(sql: &'t str, tokens: &'t [Token]) -> impl Iterator<Item = &'t [Token]> + 't {
    let mut rest = tokens;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        let end = statement_end(sql, rest);
        let stmt = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or(&[]);
        if !stmt.is_empty() {
            return Some(stmt);
        }
    })
}

/// Index of the `;` ending the first statement in `toks` (or `toks.len()`).
fn statement_end(sql: &str, toks: &[Token]) -> usize {
    let is_create = toks.first().is_some_and(|t| t.is_word(sql, "create"));
    let mut routine = false;
    let mut parens = 0usize;
    let mut atomic = 0usize;
    for (i, t) in toks.iter().enumerate() {
        match t.kind {
            Kind::Semicolon if parens == 0 && atomic == 0 => return i,
            Kind::LParen => parens += 1,
            Kind::RParen => parens = parens.saturating_sub(1),
            Kind::Word if is_create => {
                let word = t.text(sql);
                if word.eq_ignore_ascii_case("function") || word.eq_ignore_ascii_case("procedure") {
                    routine = true;
                } else if !routine {
                } else if word.eq_ignore_ascii_case("begin") {
                    let next_atomic = toks.get(i + 1).is_some_and(|n| n.is_word(sql, "atomic"));
                    if atomic > 0 || next_atomic {
                        atomic += 1;
                    }
                } else if atomic > 0 && word.eq_ignore_ascii_case("case") {
                    atomic += 1;
                } else if word.eq_ignore_ascii_case("end") {
                    atomic = atomic.saturating_sub(1);
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// Lowercase a short keyword into `buf`; longer or non-ASCII words give `""`.
pub(crate) fn keyword<'b>(text: &str, buf: &'b mut [u8; 16]) -> &'b str {
    let bytes = text.as_bytes();
    if bytes.len() > buf.len() || !bytes.is_ascii() {
        return "";
    }
    let out = &mut buf[..bytes.len()];
    out.copy_from_slice(bytes);
    out.make_ascii_lowercase();
    std::str::from_utf8(out).unwrap_or("")
}

/// How deep statements may nest (EXPLAIN ANALYZE EXPLAIN ANALYZE ..., COPY (...), DECLARE):
/// deeper is not valid SQL, and the bound keeps a hostile text from exhausting the stack.
const MAX_NESTING: usize = 4;

/// Classify one statement; `depth` counts the enclosing EXPLAIN / COPY / DECLARE statements.
pub(crate) fn classify_statement(stmt: Stmt<'_>, resolver: Resolver<'_>, depth: usize) -> Class {
    let Some(first) = stmt.toks.first() else {
        return Class::read(Reason::Empty);
    };
    if depth > MAX_NESTING {
        return Class::write(Reason::Unparseable);
    }
    if stmt.toks.iter().any(|t| t.kind == Kind::Unterminated) {
        return Class::write(Reason::Unparseable);
    }
    match first.kind {
        Kind::LParen => return query::classify_query(stmt, resolver),
        Kind::Word => {}
        _ => return Class::write(Reason::UnknownStatement),
    }
    let mut class = classify_keyword(stmt, resolver, depth);
    class.changes_functions = ddl::changes_functions(stmt);
    class
}

/// Classify one well-formed statement by its first keyword.
fn classify_keyword(stmt: Stmt<'_>, resolver: Resolver<'_>, depth: usize) -> Class {
    let mut buf = [0u8; 16];
    match keyword(stmt.toks[0].text(stmt.sql), &mut buf) {
        "select" | "with" | "values" | "table" => query::classify_query(stmt, resolver),
        "insert" | "update" | "delete" | "merge" => Class::write(Reason::Dml),
        "create" => create(stmt),
        "alter" | "drop" | "truncate" | "comment" | "security" | "import" => Class::write(Reason::Ddl),
        "grant" | "revoke" | "reassign" => Class::write(Reason::Privileges),
        "vacuum" | "analyze" | "analyse" | "cluster" | "reindex" | "refresh" | "checkpoint" => {
            Class::write(Reason::Maintenance)
        }
        // The library stays loaded in that server process.
        "load" => Class::write(Reason::Maintenance).with_session(SessionEffect::Pin),
        "call" | "do" => Class::write(Reason::Procedural),
        "lock" => Class::write(Reason::Lock),
        "notify" | "unlisten" => Class::write(Reason::Notify),
        "listen" => Class::write(Reason::Notify).with_session(SessionEffect::Pin),
        "copy" => copy(stmt, resolver, depth),
        "begin" | "start" => begin(stmt),
        "commit" | "end" | "abort" | "rollback" => end(stmt),
        "savepoint" | "release" => Class::read(Reason::TxControl),
        "prepare" => prepare(stmt),
        "execute" => Class::write(Reason::PreparedStatement),
        "deallocate" => Class::read(Reason::SessionCommand),
        "declare" => declare(stmt, resolver, depth),
        "fetch" | "move" | "close" => Class::read(Reason::Cursor),
        "set" => set(stmt),
        "reset" => Class::read(Reason::SessionCommand).with_session(SessionEffect::Parameter),
        "discard" => discard(stmt),
        "show" if node_local::show_is_node_local(stmt) => Class::node_local(),
        "show" => Class::read(Reason::Show),
        "explain" => explain(stmt, resolver, depth),
        _ => Class::write(Reason::UnknownStatement),
    }
}

/// Words that may stand between CREATE and the kind of object.
const CREATE_MODIFIERS: &[&str] = &["or", "replace", "global", "local", "temp", "temporary", "unlogged", "recursive"];

/// CREATE: DDL; temporary objects (`CREATE [OR REPLACE] [GLOBAL|LOCAL] TEMP[ORARY] ...`, or
/// anything in `pg_temp`) pin the session to the connection that holds them.
fn create(stmt: Stmt<'_>) -> Class {
    let modifiers = (1..stmt.toks.len()).take_while(|&i| stmt.is_any(i, CREATE_MODIFIERS));
    let temp_keyword = modifiers.into_iter().any(|i| stmt.is_any(i, &["temp", "temporary"]));
    let pg_temp_schema = stmt.toks.iter().any(|t| {
        let name = t.text(stmt.sql).trim_matches('"').to_ascii_lowercase();
        matches!(t.kind, Kind::Word | Kind::QuotedIdent) && (name == "pg_temp" || name.starts_with("pg_temp_"))
    });
    let class = Class::write(Reason::Ddl);
    if temp_keyword || pg_temp_schema {
        class.with_session(SessionEffect::Pin)
    } else {
        class
    }
}

/// BEGIN [WORK | TRANSACTION] [modes] / START TRANSACTION [modes].
fn begin(stmt: Stmt<'_>) -> Class {
    if stmt.is(0, "start") && !stmt.is(1, "transaction") {
        return Class::write(Reason::UnknownStatement);
    }
    let read_only = transaction_read_only(stmt).unwrap_or(false);
    if read_only && stmt.find(1, "serializable").is_some() {
        // A hot standby refuses SERIALIZABLE (0A000), read-only or not.
        Class::write(Reason::Serializable).with_tx(TxEffect::Begin { read_only: true })
    } else if read_only {
        Class::read(Reason::BeginReadOnly).with_tx(TxEffect::Begin { read_only: true })
    } else {
        Class::write(Reason::BeginReadWrite).with_tx(TxEffect::Begin { read_only: false })
    }
}

/// The last `READ ONLY` / `READ WRITE` in a statement's transaction modes.
fn transaction_read_only(stmt: Stmt<'_>) -> Option<bool> {
    let mut last = None;
    for i in 0..stmt.toks.len() {
        if stmt.is(i, "read") {
            if stmt.is(i + 1, "only") {
                last = Some(true);
            } else if stmt.is(i + 1, "write") {
                last = Some(false);
            }
        }
    }
    last
}

/// COMMIT / END / ABORT / ROLLBACK and their PREPARED, TO SAVEPOINT and AND CHAIN forms.
fn end(stmt: Stmt<'_>) -> Class {
    if stmt.is(1, "prepared") {
        return Class::write(Reason::TwoPhase);
    }
    let mut after = 1;
    if stmt.is_any(after, &["work", "transaction"]) {
        after += 1;
    }
    if stmt.is(after, "to") {
        return Class::read(Reason::TxControl);
    }
    let chains = stmt.is(after, "and") && stmt.is(after + 1, "chain");
    if chains {
        // The transaction ends and a new one starts at once, on the same connection.
        return Class::read(Reason::TxControl);
    }
    Class::read(Reason::TxControl).with_tx(TxEffect::End)
}

/// PREPARE TRANSACTION (ends the transaction) or PREPARE name AS ... (a pinned statement).
fn prepare(stmt: Stmt<'_>) -> Class {
    if stmt.is(1, "transaction") {
        return Class::write(Reason::TwoPhase).with_tx(TxEffect::End);
    }
    Class::write(Reason::PreparedStatement).with_session(SessionEffect::Pin)
}

/// DECLARE name ... CURSOR [WITH HOLD] FOR query: the query decides; WITH HOLD pins.
fn declare(stmt: Stmt<'_>, resolver: Resolver<'_>, depth: usize) -> Class {
    let Some(cursor) = stmt.find(1, "cursor") else {
        return Class::write(Reason::UnknownStatement);
    };
    let hold = stmt.is(cursor + 1, "with") && stmt.is(cursor + 2, "hold");
    let Some(for_at) = stmt.find(cursor + 1, "for") else {
        return Class::write(Reason::UnknownStatement);
    };
    let inner = classify_statement(stmt.tail(for_at + 1), resolver, depth + 1);
    let mut class = match inner.access {
        Access::Read => Class::read(Reason::Cursor),
        access => Class::new(access, inner.reason),
    };
    class.session = inner.session;
    if hold {
        class.session = class.session.max(SessionEffect::Pin);
    }
    class
}

/// SET: session parameters, except SET LOCAL / SET CONSTRAINTS (this transaction only) and SET
/// TRANSACTION (this transaction's modes; READ WRITE and SERIALIZABLE fail on a hot standby).
fn set(stmt: Stmt<'_>) -> Class {
    if stmt.is(1, "transaction") {
        let read_only = transaction_read_only(stmt);
        let class = if stmt.find(2, "serializable").is_some() {
            Class::write(Reason::Serializable)
        } else if read_only == Some(false) {
            Class::write(Reason::TxControl)
        } else {
            Class::read(Reason::TxControl)
        };
        return match read_only {
            Some(true) => class.with_tx(TxEffect::SetReadOnly),
            _ => class,
        };
    }
    if stmt.is_any(1, &["local", "constraints"]) {
        return Class::read(Reason::SessionCommand);
    }
    Class::read(Reason::SessionCommand).with_session(SessionEffect::Parameter)
}

/// DISCARD ALL resets every parameter; DISCARD PLANS / SEQUENCES / TEMP do not.
fn discard(stmt: Stmt<'_>) -> Class {
    let class = Class::read(Reason::SessionCommand);
    if stmt.is(1, "all") {
        class.with_session(SessionEffect::Parameter)
    } else {
        class
    }
}

/// COPY table|(query) TO STDOUT is a read of the table or query; TO a file or program, and
/// every FROM, are writes.
fn copy(stmt: Stmt<'_>, resolver: Resolver<'_>, depth: usize) -> Class {
    let mut i = 1;
    if stmt.is(i, "binary") {
        i += 1;
    }
    let mut inner = None;
    if stmt.toks.get(i).is_some_and(|t| t.kind == Kind::LParen) {
        let Some(close) = stmt.matching_paren(i) else {
            return Class::write(Reason::Unparseable);
        };
        inner = Some(Stmt { sql: stmt.sql, toks: &stmt.toks[i + 1..close] });
        i = close + 1;
    } else {
        // A possibly qualified table name, then an optional column list.
        while stmt.toks.get(i).is_some_and(|t| matches!(t.kind, Kind::Word | Kind::QuotedIdent | Kind::Dot))
            && !stmt.is_any(i, &["to", "from"])
        {
            i += 1;
        }
        if stmt.toks.get(i).is_some_and(|t| t.kind == Kind::LParen) {
            match stmt.matching_paren(i) {
                Some(close) => i = close + 1,
                None => return Class::write(Reason::Unparseable),
            }
        }
    }
    if !stmt.is(i, "to") {
        return Class::write(Reason::CopyIn);
    }
    if !stmt.is(i + 1, "stdout") {
        return Class::write(Reason::CopyToFile);
    }
    match inner.map(|q| classify_statement(q, resolver, depth + 1)) {
        Some(class) if class.access != Access::Read => class,
        Some(class) => Class::read(Reason::CopyOut).with_session(class.session),
        None => Class::read(Reason::CopyOut),
    }
}

/// EXPLAIN without ANALYZE executes nothing (a read); EXPLAIN ANALYZE runs the statement, so the
/// statement decides.
fn explain(stmt: Stmt<'_>, resolver: Resolver<'_>, depth: usize) -> Class {
    let mut i = 1;
    let mut analyze = false;
    if stmt.toks.get(1).is_some_and(|t| t.kind == Kind::LParen) {
        let Some(close) = stmt.matching_paren(1) else {
            return Class::write(Reason::Unparseable);
        };
        analyze = explain_options_analyze(stmt, 2, close);
        i = close + 1;
    } else {
        while stmt.is_any(i, &["analyze", "analyse", "verbose"]) {
            analyze |= !stmt.is(i, "verbose");
            i += 1;
        }
    }
    if !analyze {
        return Class::read(Reason::Explain);
    }
    let inner = classify_statement(stmt.tail(i), resolver, depth + 1);
    Class { tx: TxEffect::None, ..inner }
}

/// True if the option list `toks[from..close]` turns ANALYZE on (`ANALYZE`, `ANALYZE true|on|1`).
fn explain_options_analyze(stmt: Stmt<'_>, from: usize, close: usize) -> bool {
    let mut analyze = false;
    let mut i = from;
    while i < close {
        if stmt.is_any(i, &["analyze", "analyse"]) {
            let value = stmt.toks[i + 1];
            let off = matches!(value.kind, Kind::Word | Kind::Number | Kind::String)
                && matches!(
                    value.text(stmt.sql).trim_matches('\'').to_ascii_lowercase().as_str(),
                    "false" | "off" | "0" | "no"
                );
            analyze = !off;
        }
        i += 1;
    }
    analyze
}
