//! Statements sluice prepared on one server connection: a least-recently-used set bounded by
//! `pool.max_prepared_statements`.
//!
//! A statement's identity is its full text and parameter types ([`StmtKey`]), never a hash of
//! them: two texts can never share a server-side statement. Each statement gets a name unique on
//! its connection (`sluice_<n>`, never reused), so a statement closed or lost is never confused
//! with a later one. Inserting into a full set evicts the least recently used statement that the
//! unit being built does not use; its name is returned so the caller pipelines a `Close` for it
//! (its reply swallowed). A unit that uses more distinct statements than the bound may exceed it
//! until its end: its statements cannot be closed while it needs them.
//!
//! This module only keeps the books; sending the messages is the caller's job.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::keyed_hash::KeyedState;

/// What makes two prepared statements the same: the exact query text and parameter types.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StmtKey {
    /// Query text, as the client sent it in Parse.
    pub query: Vec<u8>,
    /// The Parse's raw parameter-type section (count and OIDs).
    pub param_types: Vec<u8>,
}

/// A server-side statement name, `sluice_<n>`, kept inline: every Bind and Describe of a
/// prepared statement needs one, and a `format!` per message showed in the profile.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct StmtName {
    buf: [u8; StmtName::MAX],
    len: u8,
}

impl StmtName {
    const PREFIX: &'static [u8] = b"sluice_";
    /// The prefix and the 20 digits of the largest `u64`.
    const MAX: usize = 7 + 20;

    fn new(id: u64) -> Self {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = id;
        loop {
            at -= 1;
            digits[at] = b'0' + u8::try_from(n % 10).expect("a digit");
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let digits = &digits[at..];
        let mut buf = [0u8; Self::MAX];
        let len = Self::PREFIX.len() + digits.len();
        buf[..Self::PREFIX.len()].copy_from_slice(Self::PREFIX);
        buf[Self::PREFIX.len()..len].copy_from_slice(digits);
        Self { buf, len: u8::try_from(len).expect("at most 27") }
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..usize::from(self.len)]).expect("ASCII digits")
    }
}

impl std::ops::Deref for StmtName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for StmtName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for StmtName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    /// Its name on the server, built once (every Bind of it needs the name).
    name: StmtName,
    /// Tick of the last use.
    used: u64,
    /// The tick `by_use` lists it under: its `used` when it was listed, at most `used` (a use
    /// does not move it there; eviction does, see [`PreparedStatements::insert`]).
    listed: u64,
}

/// The statements prepared on one connection.
#[derive(Debug)]
pub struct PreparedStatements {
    max: usize,
    /// Hashed with [`KeyedState`]: every Bind of a prepared statement looks its key up here.
    by_key: HashMap<Arc<StmtKey>, Slot, KeyedState>,
    /// Every statement once, under its `listed` tick: the oldest first. A statement used since
    /// it was listed is moved to its `used` tick only when it comes up for eviction, so a use
    /// (every Bind) costs no reordering of this tree.
    by_use: BTreeMap<u64, Arc<StmtKey>>,
    tick: u64,
    next_id: u64,
    /// Ticks from this one on belong to the unit being built: not evictable.
    unit_start: u64,
    /// Names whose Close may not have run (the unit that sent it failed first): closed again
    /// before the next unit. Closing a name that does not exist is not an error.
    reclose: Vec<String>,
}

impl PreparedStatements {
    /// An empty set holding at most `max` statements (at least 1).
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            by_key: HashMap::default(),
            by_use: BTreeMap::new(),
            tick: 0,
            next_id: 0,
            unit_start: 0,
            reclose: Vec::new(),
        }
    }

    /// Number of statements believed present on the server.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True if none is.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Start building a unit: statements used from now on are not evicted by it. Returns the
    /// names to close first (left over from a failed unit).
    pub fn begin_unit(&mut self) -> Vec<String> {
        self.unit_start = self.tick + 1;
        std::mem::take(&mut self.reclose)
    }

    /// The server-side name of `key` if the connection has it; marks it used.
    pub fn get(&mut self, key: &StmtKey) -> Option<StmtName> {
        self.tick += 1;
        let slot = self.by_key.get_mut(key)?;
        slot.used = self.tick;
        Some(slot.name)
    }

    /// Record `key` as prepared under a new name. Returns that name and the names of statements
    /// evicted to make room (the caller closes them on the server).
    pub fn insert(&mut self, key: Arc<StmtKey>) -> (StmtName, Vec<String>) {
        let mut evicted = Vec::new();
        if let Some(name) = self.remove(&key) {
            evicted.push(name);
        }
        while self.by_key.len() >= self.max {
            match self.by_use.first_key_value() {
                Some((&listed, _)) if listed < self.unit_start => {
                    let victim = self.by_use.remove(&listed).expect("first key exists");
                    let slot = self.by_key.get_mut(&victim).expect("by_use and by_key agree");
                    if slot.used != listed {
                        // Used since it was listed: listed again under its last use, which is
                        // later, so this loop ends (each statement moves at most once).
                        slot.listed = slot.used;
                        self.by_use.insert(slot.used, victim);
                        continue;
                    }
                    let slot = self.by_key.remove(&victim).expect("by_use and by_key agree");
                    evicted.push(slot.name.to_string());
                }
                // Everything left is used by the unit being built.
                _ => break,
            }
        }
        self.tick += 1;
        self.next_id += 1;
        let name = StmtName::new(self.next_id);
        self.by_use.insert(self.tick, Arc::clone(&key));
        self.by_key.insert(key, Slot { name, used: self.tick, listed: self.tick });
        debug_assert_eq!(self.by_key.len(), self.by_use.len());
        (name, evicted)
    }

    /// Forget `key`; its name if it was there.
    pub fn remove(&mut self, key: &StmtKey) -> Option<String> {
        let slot = self.by_key.remove(key)?;
        self.by_use.remove(&slot.listed);
        Some(slot.name.to_string())
    }

    /// Forget everything (the server dropped them all: DISCARD ALL, DEALLOCATE ALL).
    pub fn clear(&mut self) {
        self.by_key.clear();
        self.by_use.clear();
        self.reclose.clear();
    }

    /// The unit failed before all its messages ran: the statements it added may not exist, and
    /// the Closes it sent may not have run. Forget the first, close the second again next time.
    pub fn unit_failed(&mut self, added: &[Arc<StmtKey>], closed: Vec<String>) {
        for key in added {
            if let Some(name) = self.remove(key) {
                // Its Parse may have run before the error: close it to be sure.
                self.reclose.push(name);
            }
        }
        self.reclose.extend(closed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(q: &str) -> Arc<StmtKey> {
        Arc::new(StmtKey { query: q.as_bytes().to_vec(), param_types: vec![0, 0] })
    }

    #[test]
    fn least_recently_used_is_evicted_and_names_are_never_reused() {
        let mut p = PreparedStatements::new(2);
        p.begin_unit();
        let (a, none) = p.insert(key("a"));
        assert!(none.is_empty());
        p.begin_unit();
        let (b, _) = p.insert(key("b"));
        p.begin_unit();
        assert_eq!(p.get(&key("a")), Some(a), "a is used again: b is now the oldest");
        p.begin_unit();
        let (c, evicted) = p.insert(key("c"));
        assert_eq!(evicted, vec![b.to_string()]);
        assert_eq!(p.len(), 2);
        assert_eq!(p.get(&key("b")), None);
        p.begin_unit();
        let (b2, evicted) = p.insert(key("b"));
        assert_eq!(evicted, vec![a.to_string()]);
        assert!(c != b2 && b2.as_str() != "sluice_2", "a new name for b: {b2}");
    }

    #[test]
    fn names_are_built_inline() {
        for id in [0, 1, 9, 10, 12_345, u64::MAX] {
            assert_eq!(StmtName::new(id).as_str(), format!("sluice_{id}"));
        }
    }

    #[test]
    fn identity_is_text_and_types() {
        let mut p = PreparedStatements::new(10);
        p.insert(key("SELECT $1"));
        let other_types = StmtKey { query: b"SELECT $1".to_vec(), param_types: vec![0, 1, 0, 0, 0, 23] };
        assert_eq!(p.get(&other_types), None);
        assert!(p.get(&key("SELECT $1")).is_some());
    }

    #[test]
    fn evicts_as_a_plain_least_recently_used_list_would() {
        // Uses are not reordered until eviction (see `by_use`): the order evicted must still be
        // that of a list moved to the front on every use. Units of one or two statements.
        let mut p = PreparedStatements::new(3);
        let mut model: Vec<String> = Vec::new(); // least recently used first
        let mut names = HashMap::new();
        let mut x: u32 = 7;
        for _ in 0..2_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            p.begin_unit();
            for k in [x >> 16, x >> 8].iter().take(1 + (x % 2) as usize) {
                let q = format!("q{}", k % 6);
                let before: Vec<String> = model.clone();
                model.retain(|m| *m != q);
                model.push(q.clone());
                match p.get(&key(&q)) {
                    Some(name) => assert_eq!(names.get(&q), Some(&name), "{q} kept its name"),
                    None => {
                        assert!(!before.contains(&q), "{q} was there");
                        let (name, evicted) = p.insert(key(&q));
                        names.insert(q.clone(), name);
                        // The model evicts its oldest that this unit did not use.
                        let expected: Vec<String> = if model.len() > 3 && model[0] != q {
                            vec![names[&model.remove(0)].to_string()]
                        } else {
                            Vec::new()
                        };
                        assert_eq!(evicted, expected);
                    }
                }
            }
            assert_eq!(p.len(), model.len());
        }
    }

    #[test]
    fn a_unit_never_evicts_what_it_uses() {
        let mut p = PreparedStatements::new(2);
        p.begin_unit();
        p.insert(key("a"));
        p.insert(key("b"));
        let (_, evicted) = p.insert(key("c"));
        assert!(evicted.is_empty(), "all three are used by this unit");
        assert_eq!(p.len(), 3);
        p.begin_unit();
        let (_, evicted) = p.insert(key("d"));
        assert_eq!(evicted.len(), 2, "back to the bound as soon as it can");
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn a_failed_unit_forgets_its_statements_and_closes_again() {
        let mut p = PreparedStatements::new(1);
        p.begin_unit();
        let (a, _) = p.insert(key("a"));
        p.begin_unit();
        let (b, evicted) = p.insert(key("b"));
        assert_eq!(evicted, vec![a.to_string()]);
        p.unit_failed(&[key("b")], evicted);
        assert!(p.is_empty());
        assert_eq!(p.begin_unit(), vec![b.to_string(), a.to_string()]);
        assert!(p.begin_unit().is_empty());
    }
}
