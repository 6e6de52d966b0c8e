//! SELECT-like queries (SELECT, WITH, VALUES, TABLE, a parenthesised query): one token scan,
//! then the parser only if the scan cannot prove a pure read.
//!
//! The scan looks for everything that makes a query write or lock: INSERT / UPDATE / DELETE /
//! MERGE words (a writing CTE, or the main statement after WITH), locking clauses, `INTO`, and
//! function calls (a word or quoted identifier followed by `(`, optionally schema-qualified).
//! Each call is resolved at once; only a call the resolver does not know as read-only sends the
//! statement to [`super::ast`], which knows exactly which names are calls (a table alias with a
//! column list, `t(a, b)`, looks like a call to the scan).

use super::functions::{FnVerdict, Resolver};
use super::lexer::{Kind, Token};
use super::node_local;
use super::statement::{keyword, Stmt};
use super::{ast, Access, Class, Reason, SessionEffect};

/// Reserved (and column-name-only) keywords: PostgreSQL never takes them as a function name, so
/// one before `(` is syntax, not a call. Unreserved keywords (OVER, FILTER, CUBE, SEARCH, ...)
/// may name user functions: they are not here, and other rules (see [`call_verdict`]) or the
/// parser decide them. Sorted (binary search).
const NOT_CALLS: &[&str] = &[
    "all",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "between",
    "case",
    "cast",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "exists",
    "fetch",
    "for",
    "from",
    "group",
    "having",
    "in",
    "intersect",
    "into",
    "lateral",
    "limit",
    "not",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "returning",
    "row",
    "select",
    "some",
    "table",
    "then",
    "to",
    "union",
    "unique",
    "using",
    "values",
    "variadic",
    "when",
    "where",
    "window",
    "with",
];

/// What the scan found.
#[derive(Debug, Default)]
struct Scan {
    /// INSERT/UPDATE/DELETE/MERGE outside parentheses: the statement itself writes.
    main_write: bool,
    /// INSERT/UPDATE/DELETE/MERGE inside parentheses: a data-modifying CTE.
    cte_write: bool,
    /// A locking clause.
    locking: bool,
    /// `INTO`: SELECT INTO creates a table.
    into: bool,
    /// `INTO TEMP` / `INTO TEMPORARY`.
    into_temp: bool,
    /// A built-in writer was called; its strongest session effect.
    writer: Option<SessionEffect>,
    /// A call the resolver could not prove read-only.
    doubtful_call: bool,
    /// A node-local view, function or setting (see `node_local`).
    node_local: bool,
}

/// Classify a SELECT-like statement.
pub(crate) fn classify_query(stmt: Stmt<'_>, resolver: Resolver<'_>) -> Class {
    let scan = scan(stmt, resolver);
    let session = match (scan.writer, scan.into_temp) {
        (_, true) => SessionEffect::Pin,
        (Some(effect), false) => effect,
        (None, false) => SessionEffect::None,
    };
    let reason = if scan.main_write {
        Reason::Dml
    } else if scan.cte_write {
        Reason::WritingCte
    } else if scan.locking {
        Reason::LockingClause
    } else if scan.into {
        Reason::SelectInto
    } else if scan.writer.is_some() {
        Reason::WritingFunction
    } else if scan.doubtful_call {
        let parsed = ast::classify_parsed(stmt.text(), resolver);
        return if scan.node_local && parsed.access == Access::Read { Class::node_local() } else { parsed };
    } else if scan.node_local {
        return Class::node_local();
    } else {
        return Class::read(Reason::PureRead);
    };
    Class::write(reason).with_session(session)
}

/// One pass over the tokens.
fn scan(stmt: Stmt<'_>, resolver: Resolver<'_>) -> Scan {
    let mut found = Scan::default();
    let mut depth = 0usize;
    for (i, tok) in stmt.toks.iter().enumerate() {
        match tok.kind {
            Kind::LParen => depth += 1,
            Kind::RParen => depth = depth.saturating_sub(1),
            Kind::Word => scan_word(stmt, i, depth, &mut found),
            _ => {}
        }
        let next_is_paren = stmt.toks.get(i + 1).is_some_and(|t| t.kind == Kind::LParen);
        if !next_is_paren && tok.kind == Kind::Word {
            found.node_local |= node_local::relation_at(stmt, i);
        }
        if next_is_paren && matches!(tok.kind, Kind::Word | Kind::QuotedIdent) {
            match call_verdict(stmt, i, resolver) {
                None => {}
                Some(FnVerdict::ReadOnly) => {
                    found.node_local |=
                        tok.is_word(stmt.sql, "current_setting") && node_local::current_setting_at(stmt, i);
                }
                Some(FnVerdict::NodeLocal) => found.node_local = true,
                Some(FnVerdict::Writer(effect)) => {
                    let prior = found.writer.unwrap_or(SessionEffect::None);
                    found.writer = Some(prior.max(effect));
                }
                Some(FnVerdict::Volatile | FnVerdict::Unknown) => found.doubtful_call = true,
            }
        }
    }
    found
}

/// Look at one unquoted word for write keywords, locking clauses and INTO.
fn scan_word(stmt: Stmt<'_>, i: usize, depth: usize, found: &mut Scan) {
    let text = stmt.toks[i].text(stmt.sql).as_bytes();
    // Most words are none of these: reject them on length and first letter before folding.
    let candidate =
        matches!(text.len(), 3..=6) && matches!(text[0].to_ascii_lowercase(), b'f' | b'i' | b'u' | b'd' | b'm');
    if !candidate {
        return;
    }
    let mut buf = [0u8; 16];
    let prev_is_dot = i > 0 && stmt.toks[i - 1].kind == Kind::Dot;
    match keyword(stmt.toks[i].text(stmt.sql), &mut buf) {
        "for" => found.locking |= locking_clause_at(stmt, i + 1),
        "into" if !prev_is_dot => {
            found.into = true;
            found.into_temp |= stmt.is_any(i + 1, &["temp", "temporary"]);
        }
        "insert" | "update" | "delete" | "merge" if !prev_is_dot => {
            // `FOR UPDATE`, `FOR NO KEY UPDATE` are locking clauses, found through `for`.
            if i > 0 && stmt.is_any(i - 1, &["for", "key"]) {
                return;
            }
            if depth == 0 {
                found.main_write = true;
            } else {
                found.cte_write = true;
            }
        }
        _ => {}
    }
}

/// True if the tokens from `i` are `UPDATE`, `SHARE`, `NO KEY UPDATE` or `KEY SHARE`.
fn locking_clause_at(stmt: Stmt<'_>, i: usize) -> bool {
    stmt.is_any(i, &["update", "share"])
        || (stmt.is(i, "no") && stmt.is(i + 1, "key") && stmt.is(i + 2, "update"))
        || (stmt.is(i, "key") && stmt.is(i + 1, "share"))
}

/// The verdict for a name token at `i` that is followed by `(`, or `None` if it is not a call.
fn call_verdict(stmt: Stmt<'_>, i: usize, resolver: Resolver<'_>) -> Option<FnVerdict> {
    let toks = stmt.toks;
    let qualified = i >= 2 && toks[i - 1].kind == Kind::Dot;
    let (schema, before) = if qualified { (Some(toks[i - 2]), i.checked_sub(3)) } else { (None, i.checked_sub(1)) };
    // `x::numeric(10, 2)`, `AS t(a, b)`, `CAST(x AS numeric(10, 2))`: types and aliases. After
    // `)` a name and `(` are an alias with columns (`(SELECT ...) s(a)`) or a clause
    // (`count(*) OVER (...)`, `FILTER (...)`): valid SQL never puts a call right after `)`.
    if let Some(b) = before {
        if matches!(toks[b].kind, Kind::Cast | Kind::RParen) || stmt.is(b, "as") {
            return None;
        }
    }
    let name = toks[i];
    if !qualified && name.kind == Kind::Word && is_syntax(stmt, i) {
        return None;
    }
    let Some(name) = ident(stmt.sql, name) else {
        return Some(FnVerdict::Unknown);
    };
    let schema = match schema.map(|s| ident(stmt.sql, s)) {
        None => None,
        Some(Some(s)) => Some(s),
        Some(None) => return Some(FnVerdict::Unknown),
    };
    Some(resolver.resolve_raw(schema, name))
}

/// True if the unqualified word at `i` (followed by `(`) is syntax rather than a call.
fn is_syntax(stmt: Stmt<'_>, i: usize) -> bool {
    let mut buf = [0u8; 16];
    match keyword(stmt.toks[i].text(stmt.sql), &mut buf) {
        "by" => i > 0 && stmt.is_any(i - 1, &["order", "group", "partition"]),
        "materialized" => i > 0 && stmt.is_any(i - 1, &["as", "not"]),
        word => NOT_CALLS.binary_search(&word).is_ok(),
    }
}

/// A name token as (text, quoted), or `None` if it is not a plain identifier the resolver can
/// match (an expression before the dot, a `U&"..."` or a `""` escape inside quotes).
fn ident(sql: &str, tok: Token) -> Option<(&str, bool)> {
    let text = tok.text(sql);
    match tok.kind {
        Kind::Word => Some((text, false)),
        Kind::QuotedIdent => {
            let inner = text.strip_prefix('"')?.strip_suffix('"')?;
            (!inner.contains('"')).then_some((inner, true))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_calls_is_sorted() {
        for pair in NOT_CALLS.windows(2) {
            assert!(pair[0] < pair[1], "{pair:?}");
        }
    }
}
