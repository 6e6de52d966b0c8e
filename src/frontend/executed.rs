//! What a unit ran, as texts the session can replay on another connection: the statements a
//! session command history records.
//!
//! A simple Query ran its text. An extended batch ran what its Executes ran: each Execute runs
//! the portal its Bind made, from a statement parsed in the batch or before it (drivers prepare
//! in one unit and execute by name in the next; a prepare-only unit runs nothing). A statement
//! with parameters cannot be replayed as text, except one the history understands: a call of
//! `set_config(name, value, false)` (asyncpg restores `jit` with `set_config('jit', $1, false)`;
//! row-level-security setups set `app.user` the same way), recorded with its values inlined as
//! the statement that applies a parameter ([`crate::backend::settings::set_config_sql`]).
//! Parameter-free selects of `set_config` / `current_setting` calls alone are recorded the same
//! way, so the history keeps one setting per parameter, whatever the driver spelled.

use super::statements::Statements;
use super::unit::{is_reset_all, is_reset_alone, Unit};
use crate::backend::settings::{set_config_sql, take_literal};
use crate::protocol::framer::{take_cstr, take_i16, take_i32};
use crate::protocol::{messages, tag, Msg};

/// Parameter types a `set_config` argument may be declared with: unspecified, `text`,
/// `varchar`. Their text and binary formats are the same UTF-8 bytes.
const TEXT_TYPES: [i32; 3] = [0, 25, 1043];

/// One statement a unit ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Executed {
    /// Its text with any parameters left as `$n`: to tell what kind of statement ran, not to
    /// replay it.
    pub statement: String,
    /// The texts that replay it, parameters inlined; `None` if it cannot be told as texts (a
    /// parameter it cannot inline).
    pub texts: Option<Vec<String>>,
}

/// The texts `unit` ran, in order, for the session's history; `None` if some run cannot be
/// told as a text (an Execute of a portal bound before the unit, a parameter it cannot
/// inline, a statement it does not know).
pub(super) fn executed_texts(unit: &Unit, statements: &Statements) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for e in executed(unit, statements)? {
        out.extend(e.texts?);
    }
    Some(out)
}

/// The statements `unit` ran, as their texts with any parameters left as `$n` (to tell what
/// kind of statement ran, not to replay it); `None` as for [`executed_texts`].
pub(super) fn executed_statements(unit: &Unit, statements: &Statements) -> Option<Vec<String>> {
    Some(executed(unit, statements)?.into_iter().map(|e| e.statement).collect())
}

/// The statements `unit` ran, in order; `None` if some run cannot be told (an Execute of a
/// portal bound before the unit, a statement it does not know, a text not in UTF-8).
pub(super) fn executed(unit: &Unit, statements: &Statements) -> Option<Vec<Executed>> {
    let frames = match unit {
        Unit::Simple(f) => return Some(vec![query_run(f.msg())?]),
        Unit::Extended(frames) => frames,
    };
    // Statements parsed in this unit, latest last (one may be parsed again under its name).
    let mut parsed: Vec<(&str, &[u8], &[u8])> = Vec::new();
    // Portals bound in this unit: name, and what their execution runs.
    let mut portals: Vec<(&[u8], Executed)> = Vec::new();
    let mut out = Vec::new();
    for f in frames {
        match f.tag() {
            tag::PARSE => {
                let p = messages::decode_parse(f.body())?;
                parsed.push((p.name, p.query, p.param_types));
            }
            tag::BIND => {
                let head = messages::decode_bind_head(f.body())?;
                let (query, types) = match parsed.iter().rev().find(|(name, ..)| *name == head.statement) {
                    Some(&(_, query, types)) => (query, types),
                    None => {
                        let def = statements.get(head.statement)?;
                        (def.key.query.as_slice(), def.key.param_types.as_slice())
                    }
                };
                let sql = std::str::from_utf8(query).ok()?;
                let run = Executed { statement: sql.to_string(), texts: bound_texts(sql, types, head.rest) };
                portals.retain(|(name, _)| *name != head.portal);
                portals.push((head.portal, run));
            }
            tag::EXECUTE => {
                let mut body = f.body();
                let portal = take_cstr(&mut body)?;
                let (_, run) = portals.iter().find(|(name, _)| *name == portal)?;
                out.push(run.clone());
            }
            // The Query that ended a block a Flush left open, judged with the block's units.
            // A reset with more in one text cannot be replayed in pieces.
            tag::QUERY => {
                let mut run = query_run(f)?;
                if run.texts.as_ref().is_some_and(|t| t.iter().any(|t| is_reset_all(t) && !is_reset_alone(t))) {
                    run.texts = None;
                }
                out.push(run);
            }
            _ => {}
        }
    }
    Some(out)
}

/// What a simple Query ran: its text, or the settings of a select of `set_config` calls.
fn query_run(f: Msg<'_>) -> Option<Executed> {
    let sql = messages::decode_query(f.body())?;
    let texts = settings_texts(sql, &[]).unwrap_or_else(|| vec![sql.to_string()]);
    Some(Executed { statement: sql.to_string(), texts: Some(texts) })
}

/// The texts a Bind of `sql` (declared parameter types `types`, the Bind's bytes after its
/// names `rest`) runs: the text itself without parameters, `set_config` calls with them inlined.
fn bound_texts(sql: &str, types: &[u8], rest: &[u8]) -> Option<Vec<String>> {
    let values = text_values(types, rest)?;
    match settings_texts(sql, &values) {
        Some(texts) => Some(texts),
        // Without parameters the text is what ran (a `$1` in it means the Bind failed, or a
        // literal that looks like one: not told, to be safe).
        None if values.is_empty() && !mentions_parameter(sql) => Some(vec![sql.to_string()]),
        None => None,
    }
}

/// True if `sql` has a `$` followed by a digit anywhere, quoted or not.
fn mentions_parameter(sql: &str) -> bool {
    sql.as_bytes().windows(2).any(|w| w[0] == b'$' && w[1].is_ascii_digit())
}

/// A Bind's parameter values, each as text; `None` if one is NULL, not UTF-8, or of a type whose
/// binary format is not its text.
fn text_values<'a>(types: &[u8], mut rest: &'a [u8]) -> Option<Vec<&'a str>> {
    let mut declared = types;
    let declared_count = usize::try_from(take_i16(&mut declared)?).ok()?;
    let formats = usize::try_from(take_i16(&mut rest)?).ok()?;
    let mut format_codes = Vec::with_capacity(formats);
    for _ in 0..formats {
        format_codes.push(take_i16(&mut rest)?);
    }
    let count = usize::try_from(take_i16(&mut rest)?).ok()?;
    let mut values = Vec::with_capacity(count);
    for i in 0..count {
        let len = usize::try_from(take_i32(&mut rest)?).ok()?;
        let value = rest.get(..len)?;
        rest = &rest[len..];
        let binary = match formats {
            0 => false,
            1 => format_codes[0] == 1,
            _ => *format_codes.get(i)? == 1,
        };
        let oid =
            if i < declared_count { i32::from_be_bytes(declared.get(i * 4..i * 4 + 4)?.try_into().ok()?) } else { 0 };
        if binary && !TEXT_TYPES.contains(&oid) {
            return None;
        }
        values.push(std::str::from_utf8(value).ok()?);
    }
    Some(values)
}

/// If `sql` is a select of `set_config(name, value, false)` / `current_setting(name)` calls
/// only, with at least one `set_config`, its settings as the statements that apply them, in
/// order. Arguments are plain `'...'` literals or `$n` (from `values`).
fn settings_texts(sql: &str, values: &[&str]) -> Option<Vec<String>> {
    let settings = select_settings(sql, values)?;
    Some(settings.iter().map(|(name, value)| set_config_sql(name, value)).collect())
}

/// The `(name, value)` pairs of [`settings_texts`].
fn select_settings(sql: &str, values: &[&str]) -> Option<Vec<(String, String)>> {
    let mut t = Tokens { rest: sql.trim().trim_end_matches(';').trim_end() };
    if !t.word()?.eq_ignore_ascii_case("select") {
        return None;
    }
    let mut settings = Vec::new();
    loop {
        let mut function = t.word()?.to_ascii_lowercase();
        if function == "pg_catalog" {
            t.punct('.')?;
            function = t.word()?.to_ascii_lowercase();
        }
        t.punct('(')?;
        match function.as_str() {
            "set_config" => {
                let name = t.argument(values)?;
                t.punct(',')?;
                let value = t.argument(values)?;
                t.punct(',')?;
                if !t.word()?.eq_ignore_ascii_case("false") {
                    return None;
                }
                settings.push((name.to_ascii_lowercase(), value));
            }
            "current_setting" => {
                t.argument(values)?;
                if t.peek() == Some(',') {
                    t.punct(',')?;
                    let missing_ok = t.word()?;
                    if !missing_ok.eq_ignore_ascii_case("true") && !missing_ok.eq_ignore_ascii_case("false") {
                        return None;
                    }
                }
            }
            _ => return None,
        }
        t.punct(')')?;
        // An optional alias: `AS name` or a bare name.
        if t.peek().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && t.word()?.eq_ignore_ascii_case("as") {
            t.word()?;
        }
        match t.peek() {
            None => break,
            Some(',') => t.punct(',')?,
            Some(_) => return None,
        }
    }
    (!settings.is_empty()).then_some(settings)
}

/// A cursor over the few tokens [`select_settings`] accepts.
struct Tokens<'a> {
    rest: &'a str,
}

impl<'a> Tokens<'a> {
    fn peek(&mut self) -> Option<char> {
        self.rest = self.rest.trim_start();
        self.rest.chars().next()
    }

    fn punct(&mut self, c: char) -> Option<()> {
        (self.peek()? == c).then(|| self.rest = &self.rest[1..])
    }

    /// An unquoted identifier or keyword.
    fn word(&mut self) -> Option<&'a str> {
        self.peek()?;
        let end = self.rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(self.rest.len());
        if end == 0 || self.rest.as_bytes()[0].is_ascii_digit() {
            return None;
        }
        let (word, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(word)
    }

    /// A plain string literal (no prefix, no backslash: its meaning would depend on
    /// `standard_conforming_strings`) or a parameter `$n` taken from `values`.
    fn argument(&mut self, values: &[&str]) -> Option<String> {
        match self.peek()? {
            '\'' => {
                let (value, rest) = take_literal(self.rest)?;
                // A backslash's meaning depends on `standard_conforming_strings`: not taken.
                if value.contains('\\') {
                    return None;
                }
                self.rest = rest;
                Some(value)
            }
            '$' => {
                let digits = self.rest[1..].find(|c: char| !c.is_ascii_digit()).unwrap_or(self.rest.len() - 1);
                let n: usize = self.rest[1..1 + digits].parse().ok()?;
                self.rest = &self.rest[1 + digits..];
                values.get(n.checked_sub(1)?).map(|v| (*v).to_string())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
