//! SCRAM pass-through keys: for a user looked up with auth_query, the ClientKey recovered from
//! the client's own proof and the ServerKey of the stored verifier. With them sluice answers the
//! servers' SCRAM challenges as that user without knowing the password: PostgreSQL checks the
//! same verifier (same salt and iterations), so the same ClientKey proves it.
//!
//! Held only in memory, bounded, replaced at each successful login of the user.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The keys that stand in for a password towards servers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ScramKeys {
    /// `HMAC(SaltedPassword, "Client Key")`, recovered from the client's proof.
    pub client_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`, from the verifier: checks the server's signature.
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramKeys {
    /// Never shows the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScramKeys(..)")
    }
}

/// Users' pass-through keys, shared by the logins that learn them and the pools that use them.
#[derive(Clone, Debug)]
pub struct PassThroughKeys {
    keys: Arc<RwLock<HashMap<String, ScramKeys>>>,
    max: usize,
}

impl Default for PassThroughKeys {
    fn default() -> Self {
        Self::with_limit(10_000)
    }
}

impl PassThroughKeys {
    /// A store that keeps at most `max` users.
    #[must_use]
    pub fn with_limit(max: usize) -> Self {
        Self { keys: Arc::default(), max: max.max(1) }
    }

    /// Remember (or replace) `user`'s keys; when full, an arbitrary other user is forgotten
    /// (its next login brings its keys back).
    pub fn insert(&self, user: &str, keys: ScramKeys) {
        let mut map = self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= self.max && !map.contains_key(user) {
            if let Some(victim) = map.keys().next().cloned() {
                map.remove(&victim);
            }
        }
        map.insert(user.to_string(), keys);
    }

    /// `user`'s keys, if a login taught them.
    #[must_use]
    pub fn get(&self, user: &str) -> Option<ScramKeys> {
        self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(user).copied()
    }

    /// How many users are held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// True when no user is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_bounded_and_replaces() {
        let store = PassThroughKeys::with_limit(2);
        let k = |b| ScramKeys { client_key: [b; 32], server_key: [b; 32] };
        store.insert("a", k(1));
        store.insert("a", k(2));
        assert_eq!(store.get("a"), Some(k(2)));
        store.insert("b", k(3));
        store.insert("c", k(4));
        assert_eq!(store.len(), 2);
        assert_eq!(store.get("c"), Some(k(4)));
        assert_eq!(format!("{:?}", k(9)), "ScramKeys(..)");
    }
}
