//! A bounded cache of PBKDF2 results for the client side of SCRAM.
//!
//! A pool opening many connections to one server sees the same salt and iteration count every time
//! (PostgreSQL keeps them in `pg_authid`), so `SaltedPassword` is computed once and reused, and
//! with it the keys derived from it ([`ClientKeys`]: ClientKey, StoredKey and ServerKey, the
//! last two as ready HMAC states), which only depend on it.
//! Entries are keyed by an HMAC (under a random per-cache key) of password, salt and iterations,
//! so the map never holds a plain password.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::crypto::{self, HmacKey, Key};

/// What the client side of an exchange proves itself with, derived from one `SaltedPassword`
/// (or given, in SCRAM pass-through): made once per cache entry, not per server connection
/// (nine SHA-256 blocks to derive, four more to make the two signing keys ready; an exchange
/// then hashes only its AuthMessage).
#[derive(Clone)]
pub(crate) struct ClientKeys {
    /// `ClientKey := HMAC(SaltedPassword, "Client Key")`, XORed into the proof.
    pub(crate) client_key: Key,
    /// `StoredKey := H(ClientKey)`, ready to sign AuthMessage (ClientSignature).
    pub(crate) stored: HmacKey,
    /// `ServerKey := HMAC(SaltedPassword, "Server Key")`, ready to sign AuthMessage (the
    /// ServerSignature the server must show).
    pub(crate) server: HmacKey,
}

impl ClientKeys {
    /// The keys of a ClientKey and ServerKey.
    pub(crate) fn new(client_key: Key, server_key: &Key) -> Self {
        ClientKeys { client_key, stored: HmacKey::new(&crypto::sha256(&client_key)), server: HmacKey::new(server_key) }
    }

    /// The keys of a `SaltedPassword`.
    pub(crate) fn from_salted(salted: &Key) -> Self {
        Self::new(crypto::client_key(salted), &crypto::server_key(salted))
    }
}

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
    /// Random key for the entry HMAC: cache keys reveal nothing outside this process. Made
    /// ready once (its padded blocks hashed).
    key_secret: HmacKey,
    entries: Mutex<HashMap<Key, Arc<ClientKeys>>>,
}

impl Default for SaltCache {
    fn default() -> Self {
        let key_secret = HmacKey::new(&crypto::random_bytes(crypto::KEY_LEN));
        SaltCache { inner: Arc::new(Inner { key_secret, entries: Mutex::new(HashMap::new()) }) }
    }
}

impl SaltCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The keys of `SaltedPassword` for these inputs: from the cache, or computed (PBKDF2 and
    /// the keys derived from it) and remembered.
    ///
    /// PBKDF2 runs outside the lock; two connections racing on a cold entry may both compute it.
    pub(crate) fn keys(&self, password: &[u8], salt: &[u8], iterations: u32) -> Arc<ClientKeys> {
        let key = self.entry_key(password, salt, iterations);
        if let Some(hit) = self.lock().get(&key) {
            return Arc::clone(hit);
        }
        let keys = Arc::new(ClientKeys::from_salted(&crypto::salted_password(password, salt, iterations)));
        let mut entries = self.lock();
        if entries.len() >= SALT_CACHE_CAPACITY && !entries.contains_key(&key) {
            if let Some(victim) = entries.keys().next().copied() {
                entries.remove(&victim);
            }
        }
        entries.insert(key, Arc::clone(&keys));
        keys
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
        self.inner.key_secret.sign(&[
            &(password.len() as u64).to_be_bytes(),
            password,
            &(salt.len() as u64).to_be_bytes(),
            salt,
            &iterations.to_be_bytes(),
        ])
    }

    /// The map stays consistent even if a holder panicked: each insert is one call.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<ClientKeys>>> {
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
        let a = cache.keys(b"pw", b"salt", 8);
        let salted = crypto::salted_password(b"pw", b"salt", 8);
        assert_eq!(a.client_key, crypto::client_key(&salted));
        assert!(Arc::ptr_eq(&cache.keys(b"pw", b"salt", 8), &a));
        assert_eq!(cache.len(), 1);
        cache.keys(b"pw", b"salt", 9);
        cache.keys(b"pw", b"salt2", 8);
        cache.clone().keys(b"pws", b"alt", 8);
        assert_eq!(cache.len(), 4, "clones share entries; shifted bytes do not collide");
    }

    #[test]
    fn the_entry_key_is_the_hmac_of_the_length_prefixed_inputs() {
        let cache = SaltCache::default();
        let ready = cache.entry_key(b"pw", b"salt", 8);
        assert_eq!(ready, cache.entry_key(b"pw", b"salt", 8));
        assert_ne!(ready, cache.entry_key(b"pws", b"alt", 8));
        assert_ne!(ready, SaltCache::default().entry_key(b"pw", b"salt", 8), "a key of its own per cache");
    }

    #[test]
    fn cached_keys_sign_as_keys_derived_per_exchange_do() {
        let salted = crypto::salted_password(b"pencil", b"salt", 16);
        let keys = SaltCache::default().keys(b"pencil", b"salt", 16);
        let message: [&[u8]; 2] = [b"client-first-bare,server-first,", b"client-final-without-proof"];
        let joined = message.concat();
        let stored_key = crypto::sha256(&crypto::client_key(&salted));
        assert_eq!(keys.stored.sign(&message), crypto::hmac(&stored_key, &joined));
        assert_eq!(keys.server.sign(&message), crypto::hmac(&crypto::server_key(&salted), &joined));
    }

    #[test]
    fn stays_bounded() {
        let cache = SaltCache::default();
        for i in 0..SALT_CACHE_CAPACITY + 10 {
            cache.keys(b"pw", &i.to_be_bytes(), 1);
        }
        assert_eq!(cache.len(), SALT_CACHE_CAPACITY);
    }

    #[test]
    fn is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<SaltCache>();
    }
}
