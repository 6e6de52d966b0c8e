//! Bounded pools of server connections, one per (node, database, user).
//!
//! A semaphore bounds the connections of a pool (idle + checked out). Checkout waits up to the
//! checkout timeout, prefers the most recently used idle connection, and throws away idle ones
//! that are too old or whose socket shows they died. A [`Checkout`] that is dropped without
//! [`Checkout::release`] closes its connection: a connection left mid-query is never reused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::conn::{ConnectSpec, ServerConn};
use crate::auth::SaltCache;
use crate::config::{Config, PoolConfig};
use crate::error::BackendError;
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
    spec: ConnectSpec,
    idle: Mutex<Vec<ServerConn>>,
    permits: Arc<Semaphore>,
    cfg: PoolConfig,
    /// ParameterStatus values of this pool's first connection, before any session state:
    /// what a new client is told at login without waiting for a free connection.
    startup_params: std::sync::OnceLock<Vec<(String, String)>>,
    metrics: NodeMetrics,
    /// Bumped by every [`Pool::clear_idle`].
    epoch: std::sync::atomic::AtomicU64,
    /// A second handle on the socket of every checked-out connection, by checkout number: a
    /// node declared down (it stopped answering, its packets may be dropped) has its sockets
    /// shut down, so a unit waiting on it ends with an error instead of hanging.
    in_use: Mutex<HashMap<u64, std::net::TcpStream>>,
    /// Numbers checkouts for `in_use`.
    checkouts: std::sync::atomic::AtomicU64,
}

/// A checked-out connection and the permit that counts it.
pub struct Checkout {
    conn: Option<ServerConn>,
    pool: Arc<Pool>,
    /// The pool's epoch when this was checked out: a connection out while the pool was cleared
    /// (its node changed role) is closed at release, not returned.
    epoch: u64,
    /// Key of this checkout's socket handle in the pool's `in_use`.
    number: u64,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    fn new(spec: ConnectSpec, cfg: PoolConfig, metrics: NodeMetrics) -> Self {
        Self {
            spec,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(cfg.size)),
            cfg,
            startup_params: std::sync::OnceLock::new(),
            metrics,
            epoch: std::sync::atomic::AtomicU64::new(0),
            in_use: Mutex::new(HashMap::new()),
            checkouts: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Take a connection: an idle healthy one, or a new one.
    ///
    /// # Errors
    /// No permit within the checkout timeout, or opening a connection failed.
    pub async fn checkout(self: &Arc<Self>) -> Result<Checkout, BackendError> {
        let started = Instant::now();
        let permit = tokio::time::timeout(self.cfg.checkout_timeout, self.permits.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| {
                self.metrics.checkout_timed_out();
                BackendError::CheckoutTimeout {
                    node: self.spec.node_name.clone(),
                    waited_ms: started.elapsed().as_millis(),
                    size: self.cfg.size,
                }
            })?;
        self.metrics.checkout_waited(started.elapsed());
        let epoch = self.epoch.load(std::sync::atomic::Ordering::Acquire);
        let conn = match self.take_idle() {
            Some(c) => c,
            None => {
                let c = ServerConn::connect(&self.spec).await.inspect_err(|_| self.metrics.connect_failed())?;
                self.metrics.connected();
                self.startup_params.get_or_init(|| c.server_params.clone());
                c
            }
        };
        let number = self.checkouts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Safe Rust: a duplicated descriptor of the same socket, closed when the checkout ends.
        if let Ok(fd) = std::os::fd::AsFd::as_fd(conn.io.get_ref()).try_clone_to_owned() {
            self.in_use.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(number, fd.into());
        }
        Ok(Checkout { conn: Some(conn), pool: Arc::clone(self), epoch, number, _permit: permit })
    }

    /// Shut down the socket of every checked-out connection: whoever waits on one gets an
    /// error at once (the node was declared down).
    pub fn sever(&self) {
        let in_use = self.in_use.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for socket in in_use.values() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
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
        c.created.elapsed() < self.cfg.server_lifetime && c.last_used.elapsed() < self.cfg.server_idle_timeout
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

    /// Connections checked out right now (units running on them, or sessions holding them).
    #[must_use]
    pub fn checked_out(&self) -> usize {
        self.cfg.size.saturating_sub(self.permits.available_permits())
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
        self.spec.node
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        self.pool.in_use.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.number);
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
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    salt_cache: SaltCache,
    pools: Mutex<HashMap<PoolKey, Arc<Pool>>>,
}

impl Pools {
    /// Empty pools for `config`.
    #[must_use]
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>) -> Self {
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
            self.metrics.node(node).clone(),
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
