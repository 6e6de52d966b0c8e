//! Bounded pools of server connections, one per (node, database, user).
//!
//! A semaphore bounds the connections of a pool (idle + checked out). Checkout waits up to the
//! checkout timeout, prefers the most recently used idle connection, and throws away idle ones
//! that are too old or whose socket shows they died. A [`Checkout`] that is dropped without
//! [`Checkout::release`] closes its connection: a connection left mid-query is never reused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::conn::{ConnectSpec, ServerConn};
use crate::auth::SaltCache;
use crate::config::{Config, PoolConfig};
use crate::error::BackendError;
use crate::live::Live;
use crate::metrics::{Metrics, NodeMetrics};

/// Which pool.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Node index.
    pub node: usize,
    /// Database.
    pub database: String,
    /// User.
    pub user: String,
}

/// One bounded pool.
pub struct Pool {
    spec: ArcSwap<ConnectSpec>,
    idle: Mutex<Vec<ServerConn>>,
    permits: Arc<Semaphore>,
    cfg: ArcSwap<PoolConfig>,
    /// The size now configured; permits beyond it are forgotten as they come back.
    size: AtomicUsize,
    /// Permits still to forget after a shrink (they were checked out at the time).
    owed: AtomicUsize,
    /// ParameterStatus values of this pool's first connection, before any session state:
    /// what a new client is told at login without waiting for a free connection.
    startup_params: std::sync::OnceLock<Vec<(String, String)>>,
    metrics: NodeMetrics,
    /// Bumped by every [`Pool::clear_idle`].
    epoch: std::sync::atomic::AtomicU64,
}

/// A checked-out connection and the permit that counts it.
pub struct Checkout {
    conn: Option<ServerConn>,
    pool: Arc<Pool>,
    /// The pool's epoch when this was checked out: a connection out while the pool was cleared
    /// (its node changed role) is closed at release, not returned.
    epoch: u64,
    permit: Option<OwnedSemaphorePermit>,
    /// When the unit took the connection (for the node's unit-time metric).
    taken: Instant,
}

impl Pool {
    fn new(spec: ConnectSpec, cfg: PoolConfig, metrics: NodeMetrics) -> Self {
        Self {
            spec: ArcSwap::from_pointee(spec),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(cfg.size)),
            size: AtomicUsize::new(cfg.size),
            owed: AtomicUsize::new(0),
            cfg: ArcSwap::from_pointee(cfg),
            startup_params: std::sync::OnceLock::new(),
            metrics,
            epoch: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Take a connection: an idle healthy one, or a new one.
    ///
    /// # Errors
    /// No permit within the checkout timeout, or opening a connection failed.
    pub async fn checkout(self: &Arc<Self>) -> Result<Checkout, BackendError> {
        let started = Instant::now();
        let cfg = self.cfg.load();
        let permit = tokio::time::timeout(cfg.checkout_timeout, self.permits.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                self.metrics.checkout_timed_out();
                BackendError::CheckoutTimeout {
                    node: self.spec.load().node_name.clone(),
                    waited_ms: started.elapsed().as_millis(),
                    size: self.size.load(Ordering::Relaxed),
                }
            })?;
        self.metrics.checkout_waited(started.elapsed());
        let epoch = self.epoch.load(std::sync::atomic::Ordering::Acquire);
        let conn = match self.take_idle() {
            Some(c) => c,
            None => {
                let c = ServerConn::connect(&self.spec.load()).await.inspect_err(|_| self.metrics.connect_failed())?;
                self.metrics.connected();
                self.startup_params.get_or_init(|| c.server_params.clone());
                c
            }
        };
        Ok(Checkout { conn: Some(conn), pool: Arc::clone(self), epoch, permit: Some(permit), taken: Instant::now() })
    }

    fn take_idle(&self) -> Option<ServerConn> {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(mut c) = idle.pop() {
            if self.fresh(&c) && !c.looks_dead() {
                return Some(c);
            }
        }
        None
    }

    fn fresh(&self, c: &ServerConn) -> bool {
        let cfg = self.cfg.load();
        c.created.elapsed() < cfg.server_lifetime && c.last_used.elapsed() < cfg.server_idle_timeout
    }

    fn put_back(&self, mut c: ServerConn, epoch: u64) {
        if !self.fresh(&c) || epoch != self.epoch.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        c.last_used = Instant::now();
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(c);
    }

    /// Close every idle connection (e.g. its node changed role).
    pub fn clear_idle(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        idle.clear();
    }

    /// Idle connections right now.
    #[must_use]
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// The server's startup ParameterStatus values, once this pool has connected (which also
    /// proves the database exists and the user may log in).
    #[must_use]
    pub fn startup_params(&self) -> Option<&[(String, String)]> {
        self.startup_params.get().map(Vec::as_slice)
    }

    /// Node index.
    #[must_use]
    pub fn node(&self) -> usize {
        self.spec.load().node
    }

    /// (database, user) this pool serves.
    #[must_use]
    pub fn target(&self) -> (String, String) {
        let spec = self.spec.load();
        (spec.database.clone(), spec.user.clone())
    }

    /// Configured size, connections checked out now, idle connections now.
    #[must_use]
    pub fn usage(&self) -> (usize, usize, usize) {
        let size = self.size.load(Ordering::Acquire);
        let free = self.permits.available_permits();
        let owed = self.owed.load(Ordering::Acquire);
        // Checked out = permits not free, counting those still to be forgotten.
        (size, (size + owed).saturating_sub(free), self.idle_count())
    }

    /// Apply a reloaded configuration: timeouts at once; a larger size at once, a smaller one
    /// as checked-out connections come back; a new address or password closes the idle
    /// connections made with the old one.
    fn reconfigure(&self, cfg: &PoolConfig, spec: ConnectSpec) {
        let old = self.spec.load();
        if (old.host.as_str(), old.port, old.password.as_deref())
            != (spec.host.as_str(), spec.port, spec.password.as_deref())
        {
            self.spec.store(Arc::new(spec));
            self.clear_idle();
        }
        self.cfg.store(Arc::new(cfg.clone()));
        self.resize(cfg.size);
    }

    fn resize(&self, size: usize) {
        let old = self.size.swap(size, Ordering::AcqRel);
        if size > old {
            let mut grow = size - old;
            // Cancel a pending shrink before adding permits.
            let _ = self.owed.fetch_update(Ordering::AcqRel, Ordering::Acquire, |owed| {
                let cancel = owed.min(grow);
                grow -= cancel;
                Some(owed - cancel)
            });
            self.permits.add_permits(grow);
        } else if size < old {
            let shrink = old - size;
            let forgotten = self.permits.forget_permits(shrink);
            self.owed.fetch_add(shrink - forgotten, Ordering::AcqRel);
        }
    }

    /// A checked-out permit comes back: forgotten if a shrink still owes one.
    fn give_back(&self, permit: OwnedSemaphorePermit) {
        let owed = self.owed.fetch_update(Ordering::AcqRel, Ordering::Acquire, |o| o.checked_sub(1));
        if owed.is_ok() {
            permit.forget();
        }
    }
}

impl Checkout {
    /// The connection.
    pub fn conn(&mut self) -> &mut ServerConn {
        self.conn.as_mut().expect("a checkout holds its connection until released")
    }

    /// Return a clean, idle connection to the pool.
    pub fn release(mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.put_back(c, self.epoch);
        }
    }

    /// Close the connection instead of returning it.
    pub fn discard(mut self) {
        self.conn.take();
    }

    /// The pool this came from.
    #[must_use]
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }
}

/// All pools, created on first use.
pub struct Pools {
    config: Arc<Live<Config>>,
    metrics: Arc<Metrics>,
    salt_cache: SaltCache,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

impl Pools {
    /// Empty pools for `config`.
    #[must_use]
    pub fn new(config: Arc<Live<Config>>, metrics: Arc<Metrics>) -> Self {
        Self { config, metrics, salt_cache: SaltCache::default(), pools: Mutex::new(HashMap::new()) }
    }

    /// The pool for (node, database, user), created if needed.
    ///
    /// # Panics
    /// If `node` is not a configured node index (a programming error).
    pub fn get(&self, node: usize, database: &str, user: &str) -> Arc<Pool> {
        let key = PoolKey { node, database: database.to_string(), user: user.to_string() };
        let mut pools = self.pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = pools.get(&key) {
            return Arc::clone(p);
        }
        let pool = Arc::new(Pool::new(
            self.spec(&key, self.config.pool.connect_timeout),
            self.config.pool.clone(),
            self.metrics.node(node),
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

impl Drop for Checkout {
    fn drop(&mut self) {
        self.pool.metrics.unit_done(self.taken.elapsed());
        if let Some(permit) = self.permit.take() {
            self.pool.give_back(permit);
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

    /// Every pool, for `SHOW POOLS` (in no particular order).
    #[must_use]
    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.pools.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect()
    }
}

#[cfg(test)]
mod resize_tests {
    use super::*;

    fn pool(size: usize) -> Arc<Pool> {
        let spec = ConnectSpec {
            node: 0,
            node_name: "n".into(),
            host: "127.0.0.1".into(),
            port: 1,
            user: "u".into(),
            database: "d".into(),
            password: None,
            timeout: Duration::from_millis(10),
            salt_cache: SaltCache::default(),
        };
        let cfg = PoolConfig {
            mode: crate::config::PoolMode::Transaction,
            size,
            checkout_timeout: Duration::from_millis(10),
            connect_timeout: Duration::from_millis(10),
            server_idle_timeout: Duration::from_secs(60),
            server_lifetime: Duration::from_secs(60),
        };
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Metrics::new(&mut registry, &["n".to_string()]);
        Arc::new(Pool::new(spec, cfg, metrics.node(0)))
    }

    #[test]
    fn grow_at_once_shrink_as_permits_return() {
        let p = pool(3);
        let held: Vec<_> = (0..3).map(|_| Arc::clone(&p.permits).try_acquire_owned().unwrap()).collect();
        assert_eq!(p.usage().1, 3);
        p.resize(1);
        assert_eq!(p.permits.available_permits(), 0);
        let mut held = held.into_iter();
        p.give_back(held.next().unwrap());
        p.give_back(held.next().unwrap());
        assert_eq!(p.permits.available_permits(), 0, "two returns pay the shrink");
        p.give_back(held.next().unwrap());
        assert_eq!(p.permits.available_permits(), 1);
        p.resize(4);
        assert_eq!(p.permits.available_permits(), 4);
        let all: Vec<_> = (0..4).map(|_| Arc::clone(&p.permits).try_acquire_owned().unwrap()).collect();
        p.resize(2);
        p.resize(3);
        all.into_iter().for_each(|permit| p.give_back(permit));
        assert_eq!(p.permits.available_permits(), 3, "a grow cancels what a shrink still owed");
    }
}
