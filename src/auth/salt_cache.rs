//! A bounded cache of PBKDF2 results for the client side of SCRAM.
//!
//! A pool opening many connections to one server sees the same salt and iteration count every time
//! (PostgreSQL keeps them in `pg_authid`), so `SaltedPassword` is computed once and reused.
//! Entries are keyed by an HMAC (under a random per-cache key) of password, salt and iterations,
//! so the map never holds a plain password.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::crypto::{self, Key};

/// Most entries kept. One per (server password, server salt) pair; a few hundred covers every
/// node and user a proxy talks to. When full, one arbitrary entry is dropped.
pub(crate) const SALT_CACHE_CAPACITY: usize = 512;

/// Shared cache of `SaltedPassword = PBKDF2(password, salt, iterations)`.
///
/// Cheap to clone (an `Arc`); clones share entries. Create one per proxy and hand it to every
/// [`ScramClient`](super::ScramClient).
#[derive(Clone)]
pub struct SaltCache {
    inner: Arc<Inner>,
}

struct Inner {
    /// Random key for the entry HMAC: cache keys reveal nothing outside this process.
    key_secret: Key,
    entries: Mutex<HashMap<Key, Key>>,
}

impl Default for SaltCache {
    fn default() -> Self {
        let mut key_secret = [0u8; crypto::KEY_LEN];
        key_secret.copy_from_slice(&crypto::random_bytes(crypto::KEY_LEN));
        SaltCache { inner: Arc::new(Inner { key_secret, entries: Mutex::new(HashMap::new()) }) }
    }
}

impl SaltCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// `SaltedPassword` for these inputs: from the cache, or computed (PBKDF2) and remembered.
    ///
    /// PBKDF2 runs outside the lock; two connections racing on a cold entry may both compute it.
    pub(crate) fn salted_password(&self, password: &[u8], salt: &[u8], iterations: u32) -> Key {
        let key = self.entry_key(password, salt, iterations);
        if let Some(hit) = self.lock().get(&key) {
            return *hit;
        }
        let salted = crypto::salted_password(password, salt, iterations);
        let mut entries = self.lock();
        if entries.len() >= SALT_CACHE_CAPACITY && !entries.contains_key(&key) {
            if let Some(victim) = entries.keys().next().copied() {
                entries.remove(&victim);
            }
        }
        entries.insert(key, salted);
        salted
    }

    /// Number of cached entries.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lengths are prefixed so that (password, salt) pairs cannot collide by shifting bytes.
    fn entry_key(&self, password: &[u8], salt: &[u8], iterations: u32) -> Key {
        let mut data = Vec::with_capacity(password.len() + salt.len() + 20);
        data.extend_from_slice(&(password.len() as u64).to_be_bytes());
        data.extend_from_slice(password);
        data.extend_from_slice(&(salt.len() as u64).to_be_bytes());
        data.extend_from_slice(salt);
        data.extend_from_slice(&iterations.to_be_bytes());
        crypto::hmac(&self.inner.key_secret, &data)
    }

    /// The map stays consistent even if a holder panicked: each insert is one call.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Key>> {
        self.inner.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for SaltCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaltCache").field("len", &self.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_per_password_salt_and_iterations() {
        let cache = SaltCache::default();
        let a = cache.salted_password(b"pw", b"salt", 8);
        assert_eq!(a, crypto::salted_password(b"pw", b"salt", 8));
        assert_eq!(cache.salted_password(b"pw", b"salt", 8), a);
        assert_eq!(cache.len(), 1);
        cache.salted_password(b"pw", b"salt", 9);
        cache.salted_password(b"pw", b"salt2", 8);
        cache.clone().salted_password(b"pws", b"alt", 8);
        assert_eq!(cache.len(), 4, "clones share entries; shifted bytes do not collide");
    }

    #[test]
    fn stays_bounded() {
        let cache = SaltCache::default();
        for i in 0..SALT_CACHE_CAPACITY + 10 {
            cache.salted_password(b"pw", &i.to_be_bytes(), 1);
        }
        assert_eq!(cache.len(), SALT_CACHE_CAPACITY);
    }

    #[test]
    fn is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<SaltCache>();
    }
}
