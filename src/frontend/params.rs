//! Session state: the parameters the client asked for at startup (and later changed through
//! reported parameters), plus the history of session commands (`SET ...`) it ran, and how to make
//! any server connection carry exactly that state. The state is folded into one
//! [`Settings`] value (the last `SET x` of each parameter wins); a server connection remembers
//! the settings it carries, so the common case (nothing to change) costs one integer comparison
//! and otherwise `backend::settings::diff` says which statements to send.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::backend::settings::Settings;
use crate::protocol::startup::StartupParams;

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
    /// The parameters the client gave at startup: what `RESET ALL` returns to.
    startup: Vec<(String, String)>,
    /// `params` and `history` folded (recomputed on every change).
    settings: Arc<Settings>,
    /// A hot standby would refuse this state (recomputed with the fingerprint).
    standby_refused: bool,
    /// Made by [`SessionParams::from_startup_unfolded`] and not folded yet: `settings`,
    /// `standby_refused` and `startup` are not filled in ([`SharedStates::intern`] does it).
    unfolded: bool,
}

impl SessionParams {
    /// From the startup packet: every GUC given directly, plus `-c name=value` in `options`.
    ///
    /// # Errors
    /// `options` holds something other than `-c name=value` / `--name=value`.
    pub fn from_startup(params: &StartupParams) -> Result<Self, String> {
        let mut out = Self::from_startup_unfolded(params)?;
        out.fold_startup();
        Ok(out)
    }

    /// [`SessionParams::from_startup`] without folding the parameters into `Settings` yet:
    /// [`SharedStates::intern`] finds the shared copy by the parameters alone and folds only a
    /// state it has not seen (a login storm of one application folded, copied and dropped the
    /// same state once per login).
    ///
    /// # Errors
    /// As [`SessionParams::from_startup`].
    pub fn from_startup_unfolded(params: &StartupParams) -> Result<Self, String> {
        let mut out = SessionParams { unfolded: true, ..SessionParams::default() };
        for (k, v) in params.iter() {
            if k == "options" {
                for (name, value) in parse_options(v)? {
                    out.put(&name, &value);
                }
            } else if is_parameter(k) {
                out.put(k, v);
            }
        }
        Ok(out)
    }

    /// [`SessionParams::from_startup_unfolded`] of a packet without `options` (which would be
    /// skipped: see [`LoginState::new`]), so nothing can fail.
    fn from_parameters_unfolded(params: &StartupParams) -> Self {
        let mut out = SessionParams { unfolded: true, ..SessionParams::default() };
        for (k, v) in params.iter().filter(|(k, _)| is_parameter(k)) {
            out.put(k, v);
        }
        out
    }

    /// True if this is the startup state of `params`, a packet without `options`: no history,
    /// its parameters still its startup ones, and those exactly the packet's parameters in the
    /// packet's order. (Then the packet repeats no name either: `put` keeps one of each, so
    /// [`SessionParams::from_parameters_unfolded`] would build this very list.)
    fn is_startup_state_of(&self, params: &StartupParams) -> bool {
        if !self.history.is_empty() || self.params != self.startup {
            return false;
        }
        let mut mine = self.params.iter();
        for (k, v) in params.iter().filter(|(k, _)| is_parameter(k)) {
            match mine.next() {
                Some((my_k, my_v)) if my_k == k && my_v == v => {}
                _ => return false,
            }
        }
        mine.next().is_none()
    }

    /// Fill in what [`SessionParams::from_startup_unfolded`] left out (nothing if done).
    fn fold_startup(&mut self) {
        if !std::mem::take(&mut self.unfolded) {
            return;
        }
        // Folded once for all of them (not once per parameter).
        if !self.params.is_empty() {
            self.refresh();
        }
        self.startup = self.params.clone();
    }

    /// Identity of this state: 0 for "nothing applied" (a pristine connection).
    #[must_use]
    pub fn fingerprint(&self) -> u64 {
        self.settings.fingerprint()
    }

    /// The settings a server connection must carry for this session.
    #[must_use]
    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// True if a hot standby refuses this state (`default_transaction_isolation = serializable`,
    /// `transaction_read_only = off` forced): the session's reads must go to the primary.
    #[must_use]
    pub fn standby_refused(&self) -> bool {
        self.standby_refused
    }

    fn refresh(&mut self) {
        let mut refusal = crate::router::StandbyRefusal::default();
        for (k, v) in &self.params {
            refusal.apply_param(k, v);
        }
        for stmt in &self.history {
            refusal.apply_sql(stmt);
        }
        self.standby_refused = refusal.refused();
        self.settings = Arc::new(Settings::build(&self.params, &self.history));
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

    /// The client ran `RESET ALL`: back to its startup parameters, as PostgreSQL does (values
    /// the server reported meanwhile are forgotten with the history).
    pub fn reset_all(&mut self) {
        self.history.clear();
        self.params.clone_from(&self.startup);
        self.refresh();
    }

    /// Set or replace one parameter.
    pub fn set(&mut self, name: &str, value: &str) {
        self.put(name, value);
        self.refresh();
    }

    /// Set or replace one parameter without folding the settings again (the caller does).
    fn put(&mut self, name: &str, value: &str) {
        match self.params.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
            Some(slot) => value.clone_into(&mut slot.1),
            None => self.params.push((name.to_string(), value.to_string())),
        }
    }

    /// [`SessionParams::note_reported`] on a state other sessions may share: copied only if
    /// the reported value is new to it (a server echoing the session's own value, the usual
    /// case, changes nothing and shares nothing less).
    pub fn note_reported_shared(this: &mut Arc<SessionParams>, name: &str, value: &str) -> bool {
        let current = this.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name));
        if current.is_some_and(|(_, v)| v == value) {
            return true;
        }
        Arc::make_mut(this).note_reported(name, value)
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
}

/// True for a startup packet's name that is a session parameter (not `user`, `options`, a
/// protocol extension...).
fn is_parameter(name: &str) -> bool {
    !NOT_PARAMETERS.contains(&name) && !name.starts_with("_pq_.")
}

/// The state a login asked for, as the handshake checked it: the startup parameters as they
/// came (no `options`: the usual case, found among the shared states by comparing them in
/// place), or, with `options`, the state built from them (parsing `options` is where a startup
/// packet can be refused, so it happens in the handshake).
#[derive(Debug)]
pub struct LoginState(Checked);

#[derive(Debug)]
enum Checked {
    /// No `options`: the parameters are the state.
    Startup(StartupParams),
    /// Built, not folded ([`SessionParams::from_startup_unfolded`]).
    Built(SessionParams),
}

impl LoginState {
    /// The state `params` asks for. `has_options`: whether it has an `options` key (the
    /// handshake's walk over the packet saw it; a walk more here cost ~100 instructions).
    ///
    /// # Errors
    /// As [`SessionParams::from_startup`].
    pub fn new(params: StartupParams, has_options: bool) -> Result<Self, String> {
        debug_assert_eq!(has_options, params.iter().any(|(k, _)| k == "options"));
        if has_options {
            return SessionParams::from_startup_unfolded(&params).map(|s| Self(Checked::Built(s)));
        }
        Ok(Self(Checked::Startup(params)))
    }
}

/// Most distinct startup states shared at once; sessions past it keep a state of their own.
const MAX_SHARED_STATES: usize = 64;

/// Startup states shared between sessions: the clients of one application log in with the
/// same parameters, so thousands of idle sessions need one copy (and one `Settings`), not one
/// each. A session that changes its state copies it first (`Arc::make_mut`), which also drops
/// it from here (the cache holds only weak references, so a state nobody uses is freed).
#[derive(Default)]
pub struct SharedStates {
    states: Mutex<Vec<Weak<SessionParams>>>,
}

impl SharedStates {
    /// The shared state a login asked for. Without `options` the shared copy is found by the
    /// startup parameters themselves: building the session's own state to compare and drop
    /// cost a login of a known state ~1,000 instructions (a `Vec` and two `String`s per
    /// parameter, made and freed).
    pub fn intern_login(&self, login: LoginState) -> Arc<SessionParams> {
        let params = match login.0 {
            Checked::Built(state) => return self.intern(state),
            Checked::Startup(params) => params,
        };
        {
            let states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(found) = states.iter().filter_map(Weak::upgrade).find(|s| s.is_startup_state_of(&params)) {
                return found;
            }
        }
        self.intern(SessionParams::from_parameters_unfolded(&params))
    }

    /// The shared copy of `state`, or `state` itself (folded if it was not), now shared.
    pub fn intern(&self, mut state: SessionParams) -> Arc<SessionParams> {
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        // An unfolded startup state is the shared one that has its parameters, no history and
        // them as startup parameters: the rest of a state is folded from these.
        let same = |s: &SessionParams| {
            if state.unfolded {
                s.history.is_empty() && s.params == state.params && s.startup == state.params
            } else {
                *s == state
            }
        };
        if let Some(found) = states.iter().filter_map(Weak::upgrade).find(|s| same(s)) {
            return found;
        }
        state.fold_startup();
        let state = Arc::new(state);
        if states.len() >= MAX_SHARED_STATES {
            states.retain(|w| w.strong_count() > 0);
        }
        if states.len() < MAX_SHARED_STATES {
            states.push(Arc::downgrade(&state));
        }
        state
    }
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

    fn p(pairs: &[(&str, &str)]) -> StartupParams {
        StartupParams::from_pairs(pairs.iter().copied())
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
    }

    #[test]
    fn an_unfolded_startup_state_interns_as_the_folded_one() {
        let states = SharedStates::default();
        let raw = p(&[("application_name", "app"), ("options", "-c default_transaction_isolation=serializable")]);
        let folded = SessionParams::from_startup(&raw).unwrap();
        // A miss folds it: the same state from_startup makes.
        let first = states.intern(SessionParams::from_startup_unfolded(&raw).unwrap());
        assert_eq!(*first, folded);
        assert!(first.standby_refused() && first.fingerprint() != 0);
        // A hit, unfolded or not, is the shared copy.
        let again = states.intern(SessionParams::from_startup_unfolded(&raw).unwrap());
        assert!(Arc::ptr_eq(&first, &again));
        assert!(Arc::ptr_eq(&first, &states.intern(folded)));
        // A state that has changed since its startup is not the startup state of its parameters.
        let mut changed = (*first).clone();
        changed.record("SET search_path = x");
        let changed = states.intern(changed);
        assert!(!Arc::ptr_eq(&first, &changed));
        let other = states.intern(SessionParams::from_startup_unfolded(&p(&[("application_name", "b")])).unwrap());
        assert_eq!(*other, SessionParams::from_startup(&p(&[("application_name", "b")])).unwrap());
        // No parameters at all: the empty state, as from_startup makes it.
        let empty = states.intern(SessionParams::from_startup_unfolded(&p(&[("user", "u")])).unwrap());
        assert_eq!(*empty, SessionParams::default());
    }

    #[test]
    fn a_login_finds_the_state_its_packet_builds() {
        let states = SharedStates::default();
        let packets = [
            p(&[("user", "u"), ("application_name", "app"), ("client_encoding", "UTF8")]),
            p(&[("client_encoding", "UTF8"), ("application_name", "app")]),
            p(&[("application_name", "app")]),
            p(&[("application_name", "app"), ("client_encoding", "UTF8"), ("DateStyle", "ISO")]),
            // A repeated name (any case) keeps its first spelling and its last value.
            p(&[("application_name", "x"), ("client_encoding", "UTF8"), ("Application_Name", "app")]),
            p(&[("_pq_.extension", "1"), ("application_name", "app"), ("database", "d")]),
            p(&[("options", "-c application_name=app"), ("client_encoding", "UTF8")]),
            p(&[("user", "u")]),
        ];
        for round in 0..2 {
            for packet in &packets {
                let want = SessionParams::from_startup(packet).unwrap();
                let login =
                    states.intern_login(LoginState::new(packet.clone(), packet.get("options").is_some()).unwrap());
                assert_eq!(*login, want, "{packet:?}");
                let built = states.intern(SessionParams::from_startup_unfolded(packet).unwrap());
                assert!(Arc::ptr_eq(&login, &built), "round {round}: {packet:?}");
            }
        }
        // A state changed since its startup is not handed to a login of its parameters.
        let first = states.intern_login(LoginState::new(packets[2].clone(), false).unwrap());
        let mut changed = (*first).clone();
        changed.record("SET search_path = x");
        drop(first);
        let _changed = states.intern(changed);
        let again = states.intern_login(LoginState::new(packets[2].clone(), false).unwrap());
        assert!(again.history.is_empty());
        assert!(LoginState::new(p(&[("options", "-X")]), true).is_err());
    }

    #[test]
    fn sessions_with_the_same_startup_state_share_it_until_one_changes_it() {
        let states = SharedStates::default();
        let startup = |app| SessionParams::from_startup(&p(&[("application_name", app)])).unwrap();
        let mut a = states.intern(startup("app"));
        let b = states.intern(startup("app"));
        let other = states.intern(startup("other"));
        assert!(Arc::ptr_eq(&a, &b) && !Arc::ptr_eq(&a, &other));
        // The server echoing the session's own value copies nothing.
        assert!(SessionParams::note_reported_shared(&mut a, "application_name", "app"));
        assert!(Arc::ptr_eq(&a, &b));
        // A new value is the session's own: the other one keeps the shared state.
        assert!(SessionParams::note_reported_shared(&mut a, "application_name", "renamed"));
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(b.params, owned(&[("application_name", "app")]));
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert!(!SessionParams::note_reported_shared(&mut a, "server_version", "15"), "read-only");
        // A state nobody uses any more is not handed out again.
        drop((a, b));
        let c = states.intern(startup("app"));
        assert_eq!(Arc::strong_count(&c), 1);
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
            owned(&[
                ("application_name", "app"),
                ("search_path", "a,b"),
                ("statement_timeout", "5s"),
                ("x", "has space")
            ])
        );
        assert!(SessionParams::from_startup(&p(&[("options", "-X")])).is_err());
    }

    #[test]
    fn settings_follow_parameters_and_history() {
        let mut a = SessionParams::from_startup(&p(&[("application_name", "it's")])).unwrap();
        let before = a.fingerprint();
        assert_ne!(before, 0);
        assert!(a.record("SET search_path = s1;"));
        assert_ne!(a.fingerprint(), before);
        let from_nothing = crate::backend::settings::diff(Some(&Settings::default()), a.settings());
        assert_eq!(
            from_nothing,
            ["SELECT pg_catalog.set_config('application_name', 'it''s', false)", "SET search_path = s1"]
        );
        a.note_reported("application_name", "other");
        a.reset_all();
        assert_eq!(a.fingerprint(), before);
        assert_eq!(a.params, owned(&[("application_name", "it's")]));
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
        assert_eq!(s.params, owned(&[("TimeZone", "UTC")]));
    }
}
