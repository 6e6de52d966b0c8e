//! Session state: the parameters the client asked for at startup (and later changed through
//! reported parameters), plus the history of session commands (`SET ...`) it ran, and how to make
//! any server connection carry exactly that state (MaxScale's session-command history, for
//! PostgreSQL). A server connection remembers the fingerprint of the state it carries, so the
//! common case (nothing to change) costs one integer comparison.

/// Startup keys that are not session parameters.
const NOT_PARAMETERS: [&str; 4] = ["user", "database", "replication", "options"];

/// Reported parameters a client may change with SET; others (server_version, is_superuser...)
/// are read-only and never replayed.
const SETTABLE_REPORTED: [&str; 6] =
    ["application_name", "client_encoding", "datestyle", "intervalstyle", "timezone", "standard_conforming_strings"];

/// Most session commands replayed; a session past this is pinned to its connection instead.
pub const MAX_HISTORY_STATEMENTS: usize = 100;
/// Most bytes of session commands replayed.
pub const MAX_HISTORY_BYTES: usize = 64 * 1024;

/// The state a session wants on any server connection it uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionParams {
    /// Parameters, in the order they were first set.
    pub params: Vec<(String, String)>,
    /// Session commands to replay after the parameters, in order.
    pub history: Vec<String>,
    fingerprint: u64,
    /// A hot standby would refuse this state (recomputed with the fingerprint).
    standby_refused: bool,
}

impl SessionParams {
    /// From the startup packet: every GUC given directly, plus `-c name=value` in `options`.
    ///
    /// # Errors
    /// `options` holds something other than `-c name=value` / `--name=value`.
    pub fn from_startup(params: &[(String, String)]) -> Result<Self, String> {
        let mut out = SessionParams::default();
        for (k, v) in params {
            if k == "options" {
                for (name, value) in parse_options(v)? {
                    out.set(&name, &value);
                }
            } else if !NOT_PARAMETERS.contains(&k.as_str()) && !k.starts_with("_pq_.") {
                out.set(k, v);
            }
        }
        Ok(out)
    }

    /// Identity of this state: 0 for "nothing applied" (a pristine connection).
    #[must_use]
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// True if a hot standby refuses this state (`default_transaction_isolation = serializable`,
    /// `transaction_read_only = off` forced): the session's reads must go to the primary.
    #[must_use]
    pub fn standby_refused(&self) -> bool {
        self.standby_refused
    }

    fn refresh(&mut self) {
        use std::hash::{Hash, Hasher};
        let mut refusal = crate::router::StandbyRefusal::default();
        for (k, v) in &self.params {
            refusal.apply_param(k, v);
        }
        for stmt in &self.history {
            refusal.apply_sql(stmt);
        }
        self.standby_refused = refusal.refused();
        self.fingerprint = if self.params.is_empty() && self.history.is_empty() {
            0
        } else {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.params.hash(&mut h);
            self.history.hash(&mut h);
            h.finish() | 1
        };
    }

    /// Append a session command to replay. False if the history is full (pin instead).
    pub fn record(&mut self, statement: &str) -> bool {
        let bytes: usize = self.history.iter().map(String::len).sum();
        if self.history.len() >= MAX_HISTORY_STATEMENTS || bytes + statement.len() > MAX_HISTORY_BYTES {
            return false;
        }
        self.history.push(statement.to_string());
        self.refresh();
        true
    }

    /// Forget the command history (after `RESET ALL` / `DISCARD ALL`).
    pub fn clear_history(&mut self) {
        self.history.clear();
        self.refresh();
    }

    /// Set or replace one parameter.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.params.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
            Some(slot) => value.clone_into(&mut slot.1),
            None => self.params.push((name.to_string(), value.to_string())),
        }
        self.refresh();
    }

    /// Record a ParameterStatus the server sent while running this session's statement.
    /// Returns true if it was recorded (a settable parameter).
    pub fn note_reported(&mut self, name: &str, value: &str) -> bool {
        let known = self.params.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        if known || SETTABLE_REPORTED.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            self.set(name, value);
            return true;
        }
        false
    }

    /// The SQL that makes a connection carry this state: reset, set each parameter with
    /// `set_config` (the semantics of a startup parameter), then replay the history.
    #[must_use]
    pub fn sync_sql(&self) -> String {
        let mut sql = String::from("RESET ALL;");
        for (k, v) in &self.params {
            sql.push_str(&format!("SELECT pg_catalog.set_config({}, {}, false);", literal(k), literal(v)));
        }
        for stmt in &self.history {
            sql.push_str(stmt.trim_end().trim_end_matches(';'));
            sql.push(';');
        }
        sql
    }
}

/// A SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `options` as libpq sends it: whitespace-separated, backslash escapes a character.
fn parse_options(options: &str) -> Result<Vec<(String, String)>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.extend(chars.next()),
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next().ok_or("\"-c\" without a setting in options")?
        } else if let Some(rest) = w.strip_prefix("-c").or_else(|| w.strip_prefix("--")) {
            rest.to_string()
        } else {
            return Err(format!("unsupported startup option {w:?} (only -c name=value)"));
        };
        let (k, v) = setting.split_once('=').ok_or(format!("option {setting:?} is not name=value"))?;
        out.push((k.replace('-', "_"), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
    }

    #[test]
    fn startup_params_and_options_become_session_params() {
        let s = SessionParams::from_startup(&p(&[
            ("user", "u"),
            ("database", "d"),
            ("application_name", "app"),
            ("options", "-c search_path=a,b --statement-timeout=5s -c x=has\\ space"),
        ]))
        .unwrap();
        assert_eq!(
            s.params,
            p(&[("application_name", "app"), ("search_path", "a,b"), ("statement_timeout", "5s"), ("x", "has space")])
        );
        assert!(SessionParams::from_startup(&p(&[("options", "-X")])).is_err());
    }

    #[test]
    fn sync_sql_sets_parameters_then_replays_history() {
        let mut a = SessionParams::default();
        assert_eq!(a.fingerprint(), 0);
        a.set("application_name", "it's");
        let before = a.fingerprint();
        assert_ne!(before, 0);
        assert!(a.record("SET search_path = s1;"));
        assert_ne!(a.fingerprint(), before);
        assert_eq!(
            a.sync_sql(),
            "RESET ALL;SELECT pg_catalog.set_config('application_name', 'it''s', false);SET search_path = s1;"
        );
        a.clear_history();
        assert_eq!(a.fingerprint(), before);
    }

    #[test]
    fn standby_refusal_follows_parameters_and_history() {
        let mut s =
            SessionParams::from_startup(&p(&[("options", "-c default_transaction_isolation=serializable")])).unwrap();
        assert!(s.standby_refused());
        assert!(s.record("SET default_transaction_isolation = 'read committed'"));
        assert!(!s.standby_refused());
        assert!(s.record("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE"));
        assert!(s.standby_refused());
        s.clear_history();
        s.set("default_transaction_isolation", "repeatable read");
        assert!(!s.standby_refused());
    }

    #[test]
    fn history_is_bounded() {
        let mut a = SessionParams::default();
        for _ in 0..MAX_HISTORY_STATEMENTS {
            assert!(a.record("SET x.y = 1"));
        }
        assert!(!a.record("SET x.y = 2"));
    }

    #[test]
    fn read_only_reports_are_ignored() {
        let mut s = SessionParams::default();
        assert!(!s.note_reported("is_superuser", "on"));
        assert!(s.note_reported("TimeZone", "UTC"));
        assert_eq!(s.params, p(&[("TimeZone", "UTC")]));
    }
}
