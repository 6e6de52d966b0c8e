//! auth_query: users the configuration does not list are looked up on the primary (as the
//! `[auth] user`, with `[auth] query`, in the database the client asked for), their stored SCRAM
//! verifier cached for `cache_ttl` in a bounded cache. A user the query does not find is cached
//! as absent too, so probing names costs the primary one query per name and TTL.
//!
//! Failures say which part failed: no primary, the lookup user cannot log in (`28000`), the
//! query failed, e.g. a missing function (`28000`), the primary is unreachable or slow (`08006`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::client_auth::Failure;
use crate::auth::ScramVerifier;
use crate::backend::conn::columns;
use crate::backend::Pools;
use crate::config::AuthQueryConfig;
use crate::error::{sqlstate, BackendError};
use crate::protocol::messages;
use crate::topology::TopologyHandle;

/// Looks users up and caches what it found.
pub struct UserLookup {
    config: AuthQueryConfig,
    /// The `[auth] user` name.
    as_user: String,
    pools: Arc<Pools>,
    topology: TopologyHandle,
    /// Bounds one lookup (checkout, connect and query).
    timeout: Duration,
    cache: Mutex<VerifierCache>,
}

impl UserLookup {
    /// A lookup as `as_user` with `config`, bounded by `timeout`.
    #[must_use]
    pub fn new(
        config: AuthQueryConfig,
        as_user: String,
        pools: Arc<Pools>,
        topology: TopologyHandle,
        timeout: Duration,
    ) -> Self {
        let cache = Mutex::new(VerifierCache::new(config.cache_ttl, config.cache_entries));
        Self { config, as_user, pools, topology, timeout, cache }
    }

    /// `user`'s stored verifier (`None`: no such user, or it has no SCRAM password), from the
    /// cache or the primary.
    ///
    /// # Errors
    /// The lookup itself failed; the SQLSTATE and message name the cause.
    pub async fn verifier(&self, user: &str, database: &str) -> Result<Option<Arc<ScramVerifier>>, Failure> {
        if let Some(hit) = self.lock().get(user, Instant::now()) {
            return Ok(hit);
        }
        let found = match tokio::time::timeout(self.timeout, self.query(user, database)).await {
            Ok(r) => r?,
            Err(_) => {
                let msg =
                    format!("cannot look up user \"{user}\": the primary did not answer within {:?}", self.timeout);
                return Err((sqlstate::CONNECTION_FAILURE, msg));
            }
        };
        self.lock().put(user, found.clone(), Instant::now());
        Ok(found)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VerifierCache> {
        self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn query(&self, user: &str, database: &str) -> Result<Option<Arc<ScramVerifier>>, Failure> {
        let Some(primary) = self.topology.load().primary().map(|p| p.index) else {
            return Err((
                sqlstate::CONNECTION_FAILURE,
                format!("cannot look up user \"{user}\": no primary is available"),
            ));
        };
        let pool = self.pools.get(primary, database, &self.as_user);
        let mut checkout = pool.checkout().await.map_err(|e| self.login_failure(user, &e))?;
        let mut buf = BytesMut::new();
        messages::parse(&mut buf, "", self.config.query.as_bytes(), &[0, 0]);
        messages::bind_text(&mut buf, &[user]);
        messages::execute(&mut buf, "", 0);
        messages::sync(&mut buf);
        let conn = checkout.conn();
        // The unnamed statement is replaced: no session may rely on what it held.
        conn.set_unnamed(None);
        let reply = match conn.send(&buf).await {
            Ok(()) => conn.read_internal_reply().await,
            Err(e) => Err(e),
        };
        let rows = match reply {
            Ok(rows) => {
                checkout.release(false).await;
                rows
            }
            Err(e) => {
                checkout.discard();
                return Err(self.query_failure(user, &e));
            }
        };
        let stored = rows.first().map(columns).and_then(|c| c.get(1).cloned().flatten());
        let verifier = stored.as_deref().and_then(|s| ScramVerifier::parse(s).ok());
        if stored.is_some() && verifier.is_none() {
            tracing::info!(user, "auth_query: the user's stored password is not a SCRAM verifier");
        }
        Ok(verifier.map(Arc::new))
    }

    fn login_failure(&self, user: &str, e: &BackendError) -> Failure {
        let auth = matches!(e, BackendError::Auth { .. })
            || matches!(e, BackendError::Server { info, .. } if info.code.starts_with("28") || info.code == "3D000");
        let code = if auth { sqlstate::INVALID_AUTHORIZATION } else { sqlstate::CONNECTION_FAILURE };
        let msg = format!("cannot look up user \"{user}\": the lookup user \"{}\" cannot log in: {e}", self.as_user);
        (code, msg)
    }

    fn query_failure(&self, user: &str, e: &BackendError) -> Failure {
        match e {
            BackendError::Server { .. } => {
                (sqlstate::INVALID_AUTHORIZATION, format!("cannot look up user \"{user}\": auth_query failed: {e}"))
            }
            _ => (sqlstate::CONNECTION_FAILURE, format!("cannot look up user \"{user}\": {e}")),
        }
    }
}

/// Verifiers by user name, each trusted for `ttl`, at most `max` of them.
struct VerifierCache {
    ttl: Duration,
    max: usize,
    entries: HashMap<String, (Instant, Option<Arc<ScramVerifier>>)>,
}

impl VerifierCache {
    fn new(ttl: Duration, max: usize) -> Self {
        Self { ttl, max: max.max(1), entries: HashMap::new() }
    }

    /// `Some(found)` while fresh (`found` may be `None`: known absent).
    fn get(&self, user: &str, now: Instant) -> Option<Option<Arc<ScramVerifier>>> {
        let (at, found) = self.entries.get(user)?;
        (now.saturating_duration_since(*at) < self.ttl).then(|| found.clone())
    }

    /// Store; when full, drop the expired entries, then the oldest.
    fn put(&mut self, user: &str, found: Option<Arc<ScramVerifier>>, now: Instant) {
        if self.entries.len() >= self.max && !self.entries.contains_key(user) {
            let ttl = self.ttl;
            self.entries.retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
            if self.entries.len() >= self.max {
                let oldest = self.entries.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    self.entries.remove(&k);
                }
            }
        }
        self.entries.insert(user.to_string(), (now, found));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_expires_and_stays_bounded() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let v = Some(Arc::new(ScramVerifier::derive("pw", b"salt", 1)));
        let mut c = VerifierCache::new(Duration::from_secs(10), 2);
        assert_eq!(c.get("a", t0), None);
        c.put("a", v.clone(), t0);
        c.put("ghost", None, s(1));
        assert_eq!(c.get("a", s(9)), Some(v.clone()));
        assert_eq!(c.get("ghost", s(9)), Some(None), "absence is cached too");
        assert_eq!(c.get("a", s(10)), None, "expired at the TTL");
        c.put("b", v.clone(), s(2));
        assert_eq!(c.entries.len(), 2);
        assert_eq!(c.get("a", s(3)), None, "the oldest made room");
        c.put("c", None, s(20));
        assert_eq!(c.entries.len(), 1, "expired entries dropped first");
    }
}
