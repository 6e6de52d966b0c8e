//! Session parameters: what the client asked for at startup (and later changed through reported
//! parameters), and how to make a server connection match it.

/// Startup keys that are not session parameters.
const NOT_PARAMETERS: [&str; 4] = ["user", "database", "replication", "options"];

/// Reported parameters a client may change with SET; others (server_version, is_superuser...)
/// are read-only and never replayed.
const SETTABLE_REPORTED: [&str; 6] =
    ["application_name", "client_encoding", "datestyle", "intervalstyle", "timezone", "standard_conforming_strings"];

/// The parameters a session wants, in the order they were first set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionParams(pub Vec<(String, String)>);

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

    /// Set or replace one parameter.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
            Some(slot) => value.clone_into(&mut slot.1),
            None => self.0.push((name.to_string(), value.to_string())),
        }
    }

    /// Record a ParameterStatus the server sent while running this session's statement.
    /// Returns true if it was recorded (a settable parameter).
    pub fn note_reported(&mut self, name: &str, value: &str) -> bool {
        let known = self.0.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        if known || SETTABLE_REPORTED.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            self.set(name, value);
            return true;
        }
        false
    }

    /// The SQL that makes a connection carrying `current` carry `self` instead: reset, then set
    /// each parameter with `set_config`, which has the same semantics as a startup parameter.
    #[must_use]
    pub fn sync_sql(&self, current: &SessionParams) -> Option<String> {
        if self == current {
            return None;
        }
        let mut sql = String::from("RESET ALL;");
        for (k, v) in &self.0 {
            sql.push_str(&format!("SELECT pg_catalog.set_config({}, {}, false);", literal(k), literal(v)));
        }
        Some(sql)
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
            s.0,
            p(&[("application_name", "app"), ("search_path", "a,b"), ("statement_timeout", "5s"), ("x", "has space")])
        );
        assert!(SessionParams::from_startup(&p(&[("options", "-X")])).is_err());
    }

    #[test]
    fn sync_sql_only_when_different() {
        let a = SessionParams(p(&[("application_name", "it's")]));
        assert_eq!(a.sync_sql(&a.clone()), None);
        let sql = a.sync_sql(&SessionParams::default()).unwrap();
        assert_eq!(sql, "RESET ALL;SELECT pg_catalog.set_config('application_name', 'it''s', false);");
    }

    #[test]
    fn read_only_reports_are_ignored() {
        let mut s = SessionParams::default();
        assert!(!s.note_reported("is_superuser", "on"));
        assert!(s.note_reported("TimeZone", "UTC"));
        assert_eq!(s.0, p(&[("TimeZone", "UTC")]));
    }
}
