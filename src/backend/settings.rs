//! Session settings: what a server connection carries, what a session wants, and the fewest
//! statements that turn one into the other.
//!
//! A [`Settings`] value is built from a session's parameters (startup, or reported by the
//! server) and its history of session commands, folded so that only the last `SET x` of each
//! parameter counts. [`diff`] is a pure decision: the statements to send, in order, or nothing.
//! Sending them and reading the replies is the caller's business (`frontend::session`).

use std::hash::{Hash, Hasher};

/// One setting in effect, in the order it must be applied.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Item {
    /// Lowercase parameter name for a setting of one parameter; `None` for a statement whose
    /// effect depends on what ran before it (`SET ROLE`, `SET SESSION AUTHORIZATION`, a
    /// multi-statement string...).
    key: Option<String>,
    /// The statement that applies it.
    sql: String,
}

/// The settings in effect on a connection, or wanted by a session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    items: Vec<Item>,
    fingerprint: u64,
}

/// Parameters a plain `SET name ...` cannot be diffed for: who runs the later statements
/// depends on them, so their order matters.
const ORDERED_NAMES: [&str; 4] = ["role", "session_authorization", "session", "all"];

impl Settings {
    /// Fold parameters (applied like startup parameters, with `set_config`) then session
    /// commands, in order: a later setting of a parameter replaces an earlier one.
    #[must_use]
    pub fn build(params: &[(String, String)], history: &[String]) -> Settings {
        let mut items: Vec<Item> = Vec::with_capacity(params.len() + history.len());
        let param_items =
            params.iter().map(|(k, v)| Item { key: Some(k.to_ascii_lowercase()), sql: set_config_sql(k, v) });
        let history_items = history.iter().map(|stmt| {
            let sql = stmt.trim().trim_end_matches(';').trim_end().to_string();
            Item { key: parameter_of(&sql), sql }
        });
        for item in param_items.chain(history_items) {
            if let Some(key) = &item.key {
                items.retain(|old| old.key.as_ref() != Some(key));
            }
            items.push(item);
        }
        let fingerprint = if items.is_empty() {
            0
        } else {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            items.hash(&mut h);
            h.finish() | 1
        };
        Settings { items, fingerprint }
    }

    /// A quick identity: 0 for no settings; equal settings have equal fingerprints.
    #[must_use]
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// True when nothing is set (a pristine connection).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    fn ordered(&self) -> impl Iterator<Item = &str> {
        self.items.iter().filter(|i| i.key.is_none()).map(|i| i.sql.as_str())
    }

    fn get(&self, key: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.key.as_deref() == Some(key))
    }
}

/// The statements that make a connection carrying `have` (`None`: unknown) carry `want`, in
/// order; empty if it already does.
///
/// Settings of one parameter are diffed: changed ones are set, ones `want` lacks are reset
/// (`DateStyle` is reset before it is set: a partial `SET DateStyle` keeps the other half of the
/// old value). When the order-dependent statements differ, or the state is unknown, the
/// connection starts over: `SET SESSION AUTHORIZATION DEFAULT`, `RESET ALL`, then everything.
#[must_use]
pub fn diff(have: Option<&Settings>, want: &Settings) -> Vec<String> {
    let Some(have) = have else { return full(want) };
    if have.fingerprint == want.fingerprint && have.items == want.items {
        return Vec::new();
    }
    if have.is_empty() {
        return want.items.iter().map(|i| i.sql.clone()).collect();
    }
    if !have.ordered().eq(want.ordered()) {
        return full(want);
    }
    let mut out = Vec::new();
    for old in &have.items {
        let Some(key) = old.key.as_deref() else { continue };
        if want.get(key).is_none() && !is_reset(&old.sql) {
            out.push(format!("RESET {}", quote_ident(key)));
        }
    }
    for new in &want.items {
        let Some(key) = new.key.as_deref() else { continue };
        let old = have.get(key);
        if old.is_some_and(|o| o.sql == new.sql) {
            continue;
        }
        if key == "datestyle" && old.is_some() && !is_reset(&new.sql) {
            out.push("RESET DateStyle".to_string());
        }
        out.push(new.sql.clone());
    }
    out
}

/// Start over, then apply everything.
fn full(want: &Settings) -> Vec<String> {
    let mut out = vec!["SET SESSION AUTHORIZATION DEFAULT".to_string(), "RESET ALL".to_string()];
    out.extend(want.items.iter().map(|i| i.sql.clone()));
    out
}

/// The statements as one simple-query string.
#[must_use]
pub fn to_query(statements: &[String]) -> String {
    let mut sql = String::new();
    for s in statements {
        sql.push_str(s);
        sql.push(';');
    }
    sql
}

fn is_reset(sql: &str) -> bool {
    sql.get(..6).is_some_and(|w| w.eq_ignore_ascii_case("RESET "))
}

/// The parameter a single `SET [SESSION] name {TO|=} ...` or `RESET name` sets (lowercase), or
/// `None` when the statement is anything else (its order then matters).
fn parameter_of(sql: &str) -> Option<String> {
    if let Some(name) = set_config_name(sql) {
        return (!ORDERED_NAMES.contains(&name.as_str())).then_some(name);
    }
    if sql.contains(';') || sql.contains("--") || sql.contains("/*") {
        return None;
    }
    let mut words = sql.split_whitespace();
    let first = words.next()?.to_ascii_lowercase();
    let mut name = words.next()?.to_ascii_lowercase();
    let name = match first.as_str() {
        "reset" => {
            if words.next().is_some() {
                return None;
            }
            name
        }
        "set" => {
            if name == "session" {
                name = words.next()?.to_ascii_lowercase();
            }
            if name == "local" {
                return None;
            }
            if name == "time" {
                return (words.next()?.eq_ignore_ascii_case("zone")).then(|| "timezone".to_string());
            }
            let (name, rest) = match name.split_once('=') {
                Some((n, r)) => (n.to_string(), Some(r.to_string())),
                None => (name, None),
            };
            let has_value =
                rest.is_some() || words.next().is_some_and(|w| w.eq_ignore_ascii_case("to") || w.starts_with('='));
            if !has_value {
                return None;
            }
            name
        }
        _ => return None,
    };
    let plain = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    (plain && !ORDERED_NAMES.contains(&name.as_str())).then_some(name)
}

/// A SQL string literal.
/// Append `s` as a string literal.
fn push_literal(out: &mut String, s: &str) {
    out.push('\'');
    let mut parts = s.split('\'');
    out.push_str(parts.next().unwrap_or_default());
    for part in parts {
        out.push_str("''");
        out.push_str(part);
    }
    out.push('\'');
}

const SET_CONFIG_HEAD: &str = "SELECT pg_catalog.set_config(";
const SET_CONFIG_TAIL: &str = ", false)";

/// `SELECT pg_catalog.set_config('name', 'value', false)`, built in one allocation: settings are
/// folded for every login, and `format!` of two quoted literals cost three.
#[must_use]
pub(crate) fn set_config_sql(name: &str, value: &str) -> String {
    const HEAD: &str = SET_CONFIG_HEAD;
    const TAIL: &str = SET_CONFIG_TAIL;
    let mut sql = String::with_capacity(HEAD.len() + name.len() + value.len() + 6 + TAIL.len());
    sql.push_str(HEAD);
    push_literal(&mut sql, name);
    sql.push_str(", ");
    push_literal(&mut sql, value);
    sql.push_str(TAIL);
    sql
}

/// The parameter (lowercase) a text made by [`set_config_sql`] sets, or `None` for any other
/// text: the history records session commands run through `set_config` in that form.
#[must_use]
pub(crate) fn set_config_name(sql: &str) -> Option<String> {
    let rest = sql.strip_prefix(SET_CONFIG_HEAD)?;
    let (name, rest) = take_literal(rest)?;
    let rest = rest.strip_prefix(", ")?;
    let (_, rest) = take_literal(rest)?;
    (rest == SET_CONFIG_TAIL).then(|| name.to_ascii_lowercase())
}

/// A plain `'...'` literal (quotes doubled inside, as [`push_literal`] writes them) at the start
/// of `text`: its value and what follows.
pub(crate) fn take_literal(text: &str) -> Option<(String, &str)> {
    let mut rest = text.strip_prefix('\'')?;
    let mut value = String::new();
    loop {
        let end = rest.find('\'')?;
        value.push_str(&rest[..end]);
        rest = &rest[end + 1..];
        match rest.strip_prefix('\'') {
            Some(after) => {
                value.push('\'');
                rest = after;
            }
            None => return Some((value, rest)),
        }
    }
}

/// A parameter name as an identifier (names are plain: see [`parameter_of`]).
fn quote_ident(name: &str) -> String {
    // A custom parameter's parts may be reserved words (`app.user`): each is quoted.
    if name.contains('.') {
        let parts: Vec<String> = name.split('.').map(|p| format!("\"{}\"", p.replace('"', "\"\""))).collect();
        return parts.join(".");
    }
    if name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(params: &[(&str, &str)], history: &[&str]) -> Settings {
        let params: Vec<(String, String)> = params.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect();
        let history: Vec<String> = history.iter().map(|h| (*h).to_string()).collect();
        Settings::build(&params, &history)
    }

    const AUTH_RESET: [&str; 2] = ["SET SESSION AUTHORIZATION DEFAULT", "RESET ALL"];

    #[test]
    fn set_config_quotes_both_literals() {
        let cases = [
            ("application_name", "a", "SELECT pg_catalog.set_config('application_name', 'a', false)"),
            ("x.y", "", "SELECT pg_catalog.set_config('x.y', '', false)"),
            ("a'b", "it's ''q''", "SELECT pg_catalog.set_config('a''b', 'it''s ''''q''''', false)"),
            ("search_path", "'", "SELECT pg_catalog.set_config('search_path', '''', false)"),
        ];
        for (name, value, want) in cases {
            assert_eq!(set_config_sql(name, value), want, "{name} = {value}");
        }
    }

    #[test]
    fn set_config_texts_are_read_back_as_the_parameter_they_set() {
        for (name, value) in [("jit", "off"), ("App.User", "o'brien"), ("a'b", "''"), ("x.y", "")] {
            assert_eq!(set_config_name(&set_config_sql(name, value)), Some(name.to_ascii_lowercase()), "{name}");
        }
        for other in [
            "SELECT pg_catalog.set_config('jit', 'off', true)",
            "SELECT pg_catalog.set_config('jit', 'off', false); DROP TABLE t",
            "SELECT pg_catalog.set_config('jit', off, false)",
            "SELECT set_config('jit', 'off', false)",
        ] {
            assert_eq!(set_config_name(other), None, "{other}");
        }
        // In a history they fold like SET: the last one of a parameter counts, in its place.
        let off = set_config_sql("jit", "off");
        let on = set_config_sql("jit", "on");
        assert_eq!(s(&[], &["SET jit = on", &off]), s(&[], &[&off]));
        assert_eq!(s(&[], &[&off, "SET ROLE x", &on]), s(&[], &["SET ROLE x", &on]));
        // Reset by a name whose parts are quoted: `user` is a reserved word.
        let user = set_config_sql("app.user", "alice");
        assert_eq!(diff(Some(&s(&[], &[&user])), &s(&[], &[])), vec!["RESET \"app\".\"user\"".to_string()]);
        // `role` is order-dependent, set either way.
        let role = set_config_sql("role", "x");
        assert_eq!(parameter_of(&role), None);
    }

    #[test]
    fn the_difference_is_what_is_sent() {
        let app = "SELECT pg_catalog.set_config('application_name', 'a', false)";
        let cases: Vec<(&str, Option<Settings>, Settings, Vec<&str>)> = vec![
            (
                "same state: nothing",
                Some(s(&[("application_name", "a")], &[])),
                s(&[("application_name", "a")], &[]),
                vec![],
            ),
            (
                "pristine connection: everything, no reset",
                Some(Settings::default()),
                s(&[("application_name", "a")], &["SET work_mem = '8MB'"]),
                vec![app, "SET work_mem = '8MB'"],
            ),
            (
                "unknown state: start over",
                None,
                s(&[("application_name", "a")], &[]),
                vec![AUTH_RESET[0], AUTH_RESET[1], app],
            ),
            (
                "repeated SET collapses to the last",
                Some(Settings::default()),
                s(&[], &["SET work_mem = '1MB'", "set work_mem to '2MB';", "SET search_path = x"]),
                vec!["set work_mem to '2MB'", "SET search_path = x"],
            ),
            (
                "only the changed parameter",
                Some(s(&[("application_name", "a")], &["SET work_mem = '1MB'"])),
                s(&[("application_name", "a")], &["SET work_mem = '2MB'"]),
                vec!["SET work_mem = '2MB'"],
            ),
            (
                "a parameter no longer set is reset",
                Some(s(&[("application_name", "a")], &["SET work_mem = '1MB'"])),
                s(&[("application_name", "a")], &[]),
                vec!["RESET work_mem"],
            ),
            (
                "a later SET overrides a startup parameter",
                Some(s(&[("search_path", "a")], &[])),
                s(&[("search_path", "a")], &["SET search_path = b"]),
                vec!["SET search_path = b"],
            ),
            (
                "DateStyle is reset before it is set",
                Some(s(&[], &["SET DateStyle = 'ISO, DMY'"])),
                s(&[], &["SET DateStyle = 'German'"]),
                vec!["RESET DateStyle", "SET DateStyle = 'German'"],
            ),
            (
                "SET ROLE makes order matter: start over",
                Some(s(&[], &["SET ROLE r1", "SET work_mem = '1MB'"])),
                s(&[], &["SET ROLE r2", "SET work_mem = '1MB'"]),
                vec![AUTH_RESET[0], AUTH_RESET[1], "SET ROLE r2", "SET work_mem = '1MB'"],
            ),
            (
                "SET SESSION AUTHORIZATION dropped: start over",
                Some(s(&[], &["SET SESSION AUTHORIZATION u"])),
                s(&[("application_name", "a")], &[]),
                vec![AUTH_RESET[0], AUTH_RESET[1], app],
            ),
            (
                "the same ordered statements: diff the rest",
                Some(s(&[], &["SET ROLE r1", "SET work_mem = '1MB'"])),
                s(&[], &["SET ROLE r1", "SET work_mem = '2MB'"]),
                vec!["SET work_mem = '2MB'"],
            ),
            (
                "a multi-statement string keeps its place",
                Some(Settings::default()),
                s(&[], &["SET a.b = 1; SET c.d = 2"]),
                vec!["SET a.b = 1; SET c.d = 2"],
            ),
            (
                "SET TIME ZONE is the timezone parameter",
                Some(s(&[("TimeZone", "UTC")], &[])),
                s(&[("TimeZone", "UTC")], &["SET TIME ZONE 'Europe/Paris'"]),
                vec!["SET TIME ZONE 'Europe/Paris'"],
            ),
        ];
        for (name, have, want, expected) in cases {
            assert_eq!(diff(have.as_ref(), &want), expected, "{name}");
        }
    }

    #[test]
    fn parameters_of_statements() {
        let cases = [
            ("SET work_mem = '1MB'", Some("work_mem")),
            ("SET SESSION search_path TO a, b", Some("search_path")),
            ("set x.y=1", Some("x.y")),
            ("RESET Work_Mem", Some("work_mem")),
            ("SET LOCAL work_mem = 1", None),
            ("SET ROLE r", None),
            ("SET role = r", None),
            ("SET SESSION AUTHORIZATION u", None),
            ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", None),
            ("RESET ALL", None),
            ("SET a = 1; SET b = 2", None),
            ("SET \"odd name\" = 1", None),
        ];
        for (sql, key) in cases {
            assert_eq!(parameter_of(sql).as_deref(), key, "{sql}");
        }
    }

    #[test]
    fn equal_settings_share_a_fingerprint() {
        assert_eq!(Settings::default().fingerprint(), 0);
        let a = s(&[], &["SET work_mem = '1MB'", "SET work_mem = '2MB'"]);
        let b = s(&[], &["SET work_mem = '2MB'"]);
        assert_eq!(a, b);
        assert_ne!(a.fingerprint(), 0);
        assert_eq!(to_query(&["SET a = 1".into(), "RESET b".into()]), "SET a = 1;RESET b;");
    }
}
