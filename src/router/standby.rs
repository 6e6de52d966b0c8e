//! Session defaults a hot standby refuses: with them, every read on a replica fails, so the
//! session's reads go to the primary (route reason `standby_refused`).
//!
//! - `default_transaction_isolation = serializable` (a startup parameter, `SET`, or `SET SESSION
//!   CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE`): a standby answers every
//!   transaction with "cannot use serializable mode in a hot standby";
//! - `transaction_isolation = serializable` given at startup (the same, for the first
//!   transaction on each connection);
//! - `transaction_read_only = off` forced at startup: "cannot set transaction read-write mode
//!   during recovery".
//!
//! [`StandbyRefusal`] folds the session's parameters and its `SET` / `RESET` history in order;
//! the last word on each setting wins.

use super::lexer::{Kind, Lexer, Token};

/// Which of a session's defaults a hot standby refuses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StandbyRefusal {
    /// The default isolation level is SERIALIZABLE.
    serializable: bool,
    /// Transactions are forced read-write.
    read_write: bool,
}

impl StandbyRefusal {
    /// True if a standby would refuse this session's statements.
    #[must_use]
    pub fn refused(&self) -> bool {
        self.serializable || self.read_write
    }

    /// Apply one parameter as set at startup (or by `set_config`).
    pub fn apply_param(&mut self, name: &str, value: &str) {
        // Compared without lowercased copies: every login's startup parameters pass here.
        let value = value.trim().trim_matches('\'');
        let is = |s: &str, w: &str| s.eq_ignore_ascii_case(w);
        if is(name, "default_transaction_isolation") || is(name, "transaction_isolation") {
            self.serializable = is(value, "serializable");
        } else if is(name, "transaction_read_only") {
            self.read_write = ["off", "false", "0", "no", "of"].iter().any(|w| is(value, w));
        }
    }

    /// Apply the `SET` / `RESET` statements of one session command text (several statements
    /// may be separated by `;`); anything else in it is ignored.
    pub fn apply_sql(&mut self, sql: &str) {
        let tokens: Vec<Token> = Lexer::new(sql).collect();
        for stmt in tokens.split(|t| t.kind == Kind::Semicolon) {
            self.apply_statement(sql, stmt);
        }
    }

    fn apply_statement(&mut self, sql: &str, toks: &[Token]) {
        let word = |i: usize| toks.get(i).map(|t| t.text(sql).trim_matches('"').to_ascii_lowercase());
        let mut i = 1;
        match word(0).as_deref() {
            Some("reset") => {
                if let Some(name) = word(1) {
                    self.apply_param(&name, "");
                }
            }
            Some("set") => {
                if matches!(word(1).as_deref(), Some("session")) {
                    i += 1;
                }
                if word(i).as_deref() == Some("characteristics") {
                    // SET SESSION CHARACTERISTICS AS TRANSACTION <modes>: the session defaults.
                    let rest: Vec<String> = (i + 1..toks.len()).filter_map(word).collect();
                    if let Some(at) = rest.windows(2).position(|w| w[0] == "isolation" && w[1] == "level") {
                        let level = rest.get(at + 2).map_or("", String::as_str);
                        self.apply_param("default_transaction_isolation", level);
                    }
                    return;
                }
                let (Some(name), Some(value)) = (word(i), word(i + 2)) else { return };
                if matches!(word(i + 1).as_deref(), Some("to" | "=")) {
                    let value = if value == "default" { String::new() } else { value };
                    self.apply_param(&name, &value);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(params: &[(&str, &str)], history: &[&str]) -> bool {
        let mut r = StandbyRefusal::default();
        for (k, v) in params {
            r.apply_param(k, v);
        }
        for h in history {
            r.apply_sql(h);
        }
        r.refused()
    }

    #[test]
    fn folds_parameters_and_history_in_order() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], bool);
        let cases: &[Case<'_>] = &[
            (&[], &[], false),
            (&[("default_transaction_isolation", "serializable")], &[], true),
            (&[("default_transaction_isolation", "SERIALIZABLE")], &["RESET default_transaction_isolation"], false),
            (&[("transaction_isolation", "serializable")], &[], true),
            (&[("default_transaction_isolation", "repeatable read")], &[], false),
            (&[("transaction_read_only", "off")], &[], true),
            (&[("transaction_read_only", "on")], &[], false),
            (&[("default_transaction_read_only", "off")], &[], false),
            (&[], &["SET default_transaction_isolation = 'serializable'"], true),
            (&[], &["set session DEFAULT_TRANSACTION_ISOLATION to serializable"], true),
            (&[], &["SET search_path = a; SET default_transaction_isolation TO serializable"], true),
            (
                &[],
                &[
                    "SET default_transaction_isolation = serializable",
                    "SET default_transaction_isolation = 'read committed'",
                ],
                false,
            ),
            (
                &[],
                &["SET default_transaction_isolation = serializable", "SET default_transaction_isolation TO DEFAULT"],
                false,
            ),
            (&[], &["SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE"], true),
            (&[], &["SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"], false),
            (&[], &["SET LOCAL default_transaction_isolation = serializable"], false),
            (&[], &["SET search_path = serializable"], false),
        ];
        for (params, history, want) in cases {
            assert_eq!(after(params, history), *want, "{params:?} {history:?}");
        }
    }
}
