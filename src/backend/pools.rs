//! Every pool of the process, one per (node, database, user), created on first use and
//! forgotten when nobody holds it and it has no idle connection ([`Pools::sweep_idle`]).
//! [`super::pool`] is one pool; this is the map, the connect specs made from the live
//! configuration (reconfigured at a reload), and the node-wide operations the monitor asks for
//! (close idle connections, sever the sockets of a node declared down).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::conn::ConnectSpec;
use super::pool::Pool;
use crate::auth::{PassThroughKeys, SaltCache};
use crate::config::Config;
use crate::keyed_hash::KeyedState;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::tls::ServerTls;
/// Which pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolKey {
    /// Node index.
    pub node: usize,
    /// Database.
    pub database: String,
    /// User.
    pub user: String,
}

/// A pool's key as borrowed parts: [`Pools::get`] looks a pool up without building a
/// [`PoolKey`] (two `String`s, made and dropped once per session).
trait KeyParts {
    fn parts(&self) -> (usize, &str, &str);
}

impl KeyParts for PoolKey {
    fn parts(&self) -> (usize, &str, &str) {
        (self.node, &self.database, &self.user)
    }
}

impl KeyParts for (usize, &str, &str) {
    fn parts(&self) -> (usize, &str, &str) {
        *self
    }
}

// The key and its borrowed form hash and compare alike (the parts, in order), as `Borrow` requires.
impl std::hash::Hash for PoolKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl std::hash::Hash for dyn KeyParts + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialEq for dyn KeyParts + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyParts + '_ {}

impl<'a> std::borrow::Borrow<dyn KeyParts + 'a> for PoolKey {
    fn borrow(&self) -> &(dyn KeyParts + 'a) {
        self
    }
}

/// All pools, created on first use.
pub struct Pools {
    config: Arc<Live<Config>>,
    metrics: Arc<Metrics>,
    salt_cache: SaltCache,
    /// Hashed with [`KeyedState`]: every login looks its pool up here (SipHash cost ~500).
    pools: Mutex<HashMap<PoolKey, Arc<Pool>, KeyedState>>,
    tls: ServerTls,
    passthrough: PassThroughKeys,
    /// In-memory servers instead of sockets (benches only, see [`Pools::with_memory_servers`]).
    memory: Option<super::conn::MemoryDial>,
}

impl Pools {
    /// Empty pools for `config`.
    #[must_use]
    pub fn new(config: Arc<Live<Config>>, metrics: Arc<Metrics>) -> Self {
        let passthrough = PassThroughKeys::with_limit(config.auth.as_ref().map_or(1, |a| a.cache_entries));
        Self {
            config,
            metrics,
            salt_cache: SaltCache::default(),
            pools: Mutex::new(HashMap::default()),
            tls: ServerTls::disabled(),
            passthrough,
            memory: None,
        }
    }

    /// Connect every pool (and the catalog load) through `dial` to in-memory fake servers
    /// instead of the configured hosts. For `benches/engine.rs`, which measures the session
    /// engine without sockets; hidden from the docs because no proxy is built with it.
    #[doc(hidden)]
    #[must_use]
    pub fn with_memory_servers(mut self, dial: super::conn::MemoryDial) -> Self {
        self.memory = Some(dial);
        self
    }

    /// Open server connections (pools, monitor probes, cancels) with this TLS.
    #[must_use]
    pub fn with_server_tls(mut self, tls: ServerTls) -> Self {
        self.tls = tls;
        self
    }

    /// Keys of users looked up with auth_query (written at their login, read at connect).
    #[must_use]
    pub fn passthrough(&self) -> &PassThroughKeys {
        &self.passthrough
    }

    /// The pool for (node, database, user), created if needed.
    ///
    /// # Panics
    /// If `node` is not a configured node index (a programming error).
    pub fn get(&self, node: usize, database: &str, user: &str) -> Arc<Pool> {
        let mut pools = self.pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = pools.get(&(node, database, user) as &dyn KeyParts) {
            return Arc::clone(p);
        }
        let key = PoolKey { node, database: database.to_string(), user: user.to_string() };
        let pool = Arc::new(Pool::new(
            self.spec(&key, self.config.pool.connect_timeout),
            self.config.pool.clone(),
            self.metrics.node(node),
            crate::runtime::pool_shards(&self.config.ops.runtime),
        ));
        pools.insert(key, Arc::clone(&pool));
        pool
    }

    /// How to connect as `key` (also used by the monitor, outside any pool).
    #[must_use]
    pub fn spec(&self, key: &PoolKey, timeout: Duration) -> ConnectSpec {
        let node = &self.config.nodes[key.node];
        let password = self.config.user(&key.user).and_then(|u| u.server_password.clone());
        ConnectSpec {
            node: key.node,
            node_name: node.name.clone(),
            host: node.host.clone(),
            port: node.port,
            user: key.user.clone(),
            database: key.database.clone(),
            password,
            timeout,
            salt_cache: self.salt_cache.clone(),
            tls: self.tls.clone(),
            passthrough: self.passthrough.clone(),
            max_prepared_statements: self.config.pool.max_prepared_statements,
            keepalive: self.config.limits.tcp_keepalive,
            memory: self.memory.clone(),
        }
    }

    /// Connections to `node` checked out right now, over every pool.
    #[must_use]
    pub fn checked_out(&self, node: usize) -> usize {
        let pools = self.pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        pools.values().filter(|p| p.node() == node).map(|p| p.checked_out()).sum()
    }

    /// Close idle connections of every pool on `node` and shut down the sockets of the
    /// checked-out ones (the node is down or fenced: nothing on it may go on).
    pub fn sever_node(&self, node: usize) {
        self.clear_node(node);
        let pools = self.pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for p in pools.values().filter(|p| p.node() == node) {
            p.sever();
        }
    }

    /// Close idle connections of every pool on `node`.
    pub fn clear_node(&self, node: usize) {
        let pools = self.pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for p in pools.values().filter(|p| p.node() == node) {
            p.clear_idle();
        }
    }
}

impl Pools {
    /// Apply the configuration now in force to every pool (see [`Pool::reconfigure`]).
    pub fn reconfigure(&self) {
        let pools = self.pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, pool) in pools.iter() {
            pool.reconfigure(&self.config.pool, self.spec(key, self.config.pool.connect_timeout));
        }
    }

    /// Close the idle connections of every pool that outlived the server lifetime or the idle
    /// timeout ([`Pool::sweep_idle`]), then forget the pools nobody uses; returns how many
    /// connections were closed.
    ///
    /// A pool is forgotten once no session or checkout holds it (only this map does) and it
    /// keeps no idle connection: pools are made per (node, database, user) at first use, and
    /// with `auth_query` users, or clients trying database after database, the map grew for
    /// ever. What a pool learnt (startup parameters, spellings) is learnt again by the next
    /// login's first connection, which must be opened anyway.
    pub fn sweep_idle(&self) -> usize {
        let now = Instant::now();
        let closed = self.all().iter().map(|p| p.sweep_idle(now)).sum();
        let mut pools = self.pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Under the map's lock: a session gets a pool only through it, so a count of one stays
        // one until the lock is let go.
        pools.retain(|_, p| Arc::strong_count(p) > 1 || p.idle_count() > 0);
        closed
    }

    /// How often [`Pools::sweep_idle`] runs: a quarter of the shorter of the idle timeout and
    /// the server lifetime, within 100 ms and 15 s (a connection is closed at most that late).
    #[must_use]
    pub fn sweep_every(&self) -> Duration {
        let pool = &self.config.pool;
        (pool.server_idle_timeout.min(pool.server_lifetime) / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(15))
    }

    /// Every pool, for `SHOW POOLS` (in no particular order).
    #[must_use]
    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_forgets_the_pools_nobody_holds() {
        let toml = "[[nodes]]\nname = \"pg\"\nhost = \"127.0.0.1\"\nport = 1\n\
                    [[users]]\nname = \"app\"\nauth = \"trust\"\n";
        let config = Arc::new(Live::new(Config::from_toml_str(toml).unwrap()));
        let metrics = Metrics::new(&mut prometheus_client::registry::Registry::default(), &["pg".to_string()]);
        let pools = Pools::new(config, metrics);
        let held = pools.get(0, "kept", "app");
        for i in 0..50 {
            drop(pools.get(0, &format!("db{i}"), "app"));
        }
        assert_eq!(pools.all().len(), 51);
        assert_eq!(pools.sweep_idle(), 0, "no connection to close");
        let left = pools.all();
        assert_eq!(left.len(), 1, "only the pool a session holds stays");
        assert!(Arc::ptr_eq(&left[0], &held), "and it is the same pool, not a new one");
        drop((left, held));
        pools.sweep_idle();
        assert!(pools.all().is_empty());
    }

    #[test]
    fn a_pool_key_is_found_by_its_borrowed_parts() {
        let key = |node, database: &str, user: &str| PoolKey { node, database: database.into(), user: user.into() };
        let map: HashMap<PoolKey, u8> = [(key(0, "d", "u"), 1), (key(1, "d", "u"), 2), (key(0, "du", ""), 3)].into();
        assert_eq!(map.get(&(0_usize, "d", "u") as &dyn KeyParts), Some(&1));
        assert_eq!(map.get(&(1_usize, "d", "u") as &dyn KeyParts), Some(&2));
        assert_eq!(map.get(&(0_usize, "du", "") as &dyn KeyParts), Some(&3));
        assert_eq!(map.get(&(0_usize, "d", "") as &dyn KeyParts), None);
        assert_eq!(map.get(&(0_usize, "", "du") as &dyn KeyParts), None);
        assert_eq!(map.get(&key(1, "d", "u")), Some(&2));
    }
}
