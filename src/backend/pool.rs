//! Bounded pools of server connections, one per (node, database, user).
//!
//! A semaphore bounds the connections of a pool (idle + checked out). Checkout waits up to the
//! checkout timeout, prefers the most recently used idle connection, and throws away idle ones
//! that are too old or whose socket shows they died. [`Checkout::release`] is the one way a
//! connection goes back: it reuses, drains or closes by the connection's protocol state
//! ([`super::wire`]). A [`Checkout`] dropped without it closes its connection.
//!
//! In the per-core runtime layout a pool keeps one idle list per session thread
//! ([`crate::runtime::core`]): a connection goes back to the list of the thread whose reactor
//! watches its socket (the one that opened it, or the last to take it over), and a checkout
//! takes from its own thread's list first, so the socket it gets is watched by its own reactor
//! (no cross-thread wake-up per reply). Only when its list is empty does it take one from
//! another thread's list (still cheaper than a new connection, and the pool's size stays one
//! bound for the whole process); that one moves to the taking thread (its socket re-registered
//! with that thread's reactor) and goes back to that thread's list at release.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::conn::{ConnectSpec, ServerConn};
use super::wire::Release;
use crate::config::PoolConfig;
use crate::error::BackendError;
use crate::metrics::NodeMetrics;

/// How long a release may wait for the replies a connection still owes before closing it
/// instead (a statement its client left still running).
pub const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// Most sync statements a pool remembers as accepted by its node (then it starts over).
const MAX_ACCEPTED_SYNCS: usize = 4096;

/// Most parameter spellings a pool remembers (then it starts over).
const MAX_SPELLINGS: usize = 1024;

/// One bounded pool.
pub struct Pool {
    spec: ArcSwap<ConnectSpec>,
    /// `spec`'s node index, which a reload never changes (a pool is one node's): read per
    /// unit without an arc-swap load.
    node: usize,
    /// The origin of this pool's [`Stamp`]s.
    clock_base: Instant,
    /// Boxed on purpose: a checkout takes the box out and gives it back without copying the
    /// connection, and a session holding one carries a pointer.
    /// One list per session thread (one in the shared layout), indexed by
    /// [`crate::runtime::core`] modulo their number.
    idle: Box<[IdleList]>,
    permits: Arc<Semaphore>,
    cfg: ArcSwap<PoolConfig>,
    /// `cfg`'s server lifetime and idle timeout, read on every checkout and release without an
    /// arc-swap load (kept in step by `reconfigure`).
    ages: ConnAges,
    /// The size now configured; permits beyond it are forgotten as they come back.
    size: AtomicUsize,
    /// Permits still to forget after a shrink (they were checked out at the time).
    owed: AtomicUsize,
    /// ParameterStatus values of this pool's first connection, before any session state:
    /// what a new client is told at login without waiting for a free connection.
    startup_params: std::sync::OnceLock<Vec<(String, String)>>,
    metrics: NodeMetrics,
    /// How the server reports parameter values that clients spell differently (`client_encoding`
    /// `utf-8` is `UTF8`, `DateStyle` `iso` is `ISO, MDY`), learnt at logins through a server
    /// connection; keyed by lowercase name, then client value (so a login looks one up
    /// without building a key). At most [`MAX_SPELLINGS`] values.
    spellings: Mutex<HashMap<String, HashMap<String, String>>>,
    /// Bumped by every [`Pool::learn_spelling`]: a login's ParameterStatus block made before
    /// it may spell a value differently than one made after.
    spelling_generation: AtomicU64,
    /// The ParameterStatus block of the last login through this pool written from what the
    /// pool knows ([`Pool::write_login_status`]), and for which session state.
    login_status: Mutex<Option<LoginStatus>>,
    /// State-sync statements this node ran without error: only these are pipelined in front
    /// of a unit (a statement the node might refuse costs one round trip the first time).
    /// At most [`MAX_ACCEPTED_SYNCS`].
    accepted_syncs: Mutex<std::collections::HashSet<String>>,
    /// Bumped by every [`Pool::clear_idle`].
    epoch: std::sync::atomic::AtomicU64,
    /// A second handle on the socket of every open connection: a node declared down (it
    /// stopped answering, its packets may be dropped) has its sockets shut down, so a unit
    /// waiting on one ends with an error instead of hanging.
    sockets: Arc<Sockets>,
    /// Bumped whenever one of this pool's connections is found lost (see [`Pool::note_loss`]):
    /// an idle connection put back before the latest loss is confirmed before reuse.
    losses: AtomicU64,
}

/// A moment as nanoseconds since the pool's `clock_base`: a connection's ages are integer
/// subtractions, not one `Instant` subtraction (a `Timespec` normalisation, ~37 instructions)
/// per age tested. One clock read at a checkout and one at a release are made stamps once each.
type Stamp = u64;

/// A pool's server lifetime and idle timeout, in nanoseconds (saturated).
struct ConnAges {
    lifetime: std::sync::atomic::AtomicU64,
    idle: std::sync::atomic::AtomicU64,
}

impl ConnAges {
    fn new(cfg: &PoolConfig) -> Self {
        let ages = Self { lifetime: 0.into(), idle: 0.into() };
        ages.set(cfg);
        ages
    }

    fn set(&self, cfg: &PoolConfig) {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.lifetime.store(nanos(cfg.server_lifetime), Ordering::Relaxed);
        self.idle.store(nanos(cfg.server_idle_timeout), Ordering::Relaxed);
    }

    /// Server lifetime, in nanoseconds.
    fn lifetime(&self) -> u64 {
        self.lifetime.load(Ordering::Relaxed)
    }

    /// Server idle timeout, in nanoseconds.
    fn idle(&self) -> u64 {
        self.idle.load(Ordering::Relaxed)
    }
}

/// A second handle on the socket of each open connection of a pool, by connection number
/// (see [`Pool::sever`]). A connection is entered once, when it is opened, and leaves when it is
/// closed: entered per checkout, it cost a lock shared by every session of the pool, a map
/// insert and remove and an `Arc` clone per unit.
#[derive(Default)]
struct Sockets {
    numbers: AtomicU64,
    open: Mutex<HashMap<u64, std::net::TcpStream, BuildHasherDefault<Sequential>>>,
}

impl Sockets {
    /// Enter a duplicate of `conn`'s socket; `None` for a connection without one (in-memory
    /// servers) or if `dup` failed.
    fn enter(self: &Arc<Self>, conn: &ServerConn) -> Option<SocketEntry> {
        let tcp = conn.io.get_ref().tcp()?;
        // Safe Rust: a duplicated descriptor of the same socket, closed with the entry.
        let dup = std::os::fd::AsFd::as_fd(tcp).try_clone_to_owned().ok()?;
        let number = self.numbers.fetch_add(1, Ordering::Relaxed);
        self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(number, dup.into());
        Some(SocketEntry { sockets: Arc::clone(self), number })
    }
}

/// A connection's place in its pool's [`Sockets`]: dropped with the connection, it takes the
/// duplicate out and closes it.
struct SocketEntry {
    sockets: Arc<Sockets>,
    number: u64,
}

impl Drop for SocketEntry {
    fn drop(&mut self) {
        let dup = self.sockets.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.number);
        // Closed outside the lock.
        drop(dup);
    }
}

/// Hashes the connection numbers that key [`Sockets`]: they are sluice's own (a counter, no
/// flooding to fear), so one multiplication spreads them instead of SipHash.
#[derive(Default)]
struct Sequential(u64);

impl std::hash::Hasher for Sequential {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in so the hasher stays correct.
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the high bits, which the map's control bytes use, vary too.
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A login's ParameterStatus block, as [`Pool::keep_login_status`] keeps it.
struct LoginStatus {
    /// The session state it was made for. Held weakly, so its allocation (the identity
    /// compared) cannot be reused by another state while this is kept; an `Arc` that states
    /// share is never changed in place (a change copies it first), so the same allocation
    /// means the same parameters.
    state: std::sync::Weak<dyn std::any::Any + Send + Sync>,
    /// [`Pool::spelling_generation`] when it was made.
    generation: u64,
    block: bytes::Bytes,
}

/// A server connection as its pool keeps it, boxed: a checkout (and a session holding one)
/// carries a pointer, not the whole connection, and moving it between the idle list and a
/// checkout copies nothing.
struct Pooled {
    conn: ServerConn,
    /// Its socket's entry in the pool's [`Sockets`] for [`Pool::sever`], made once per
    /// connection and kept only to be dropped with it. `None` without one.
    _sever: Option<SocketEntry>,
    /// The session thread whose reactor watches its socket ([`crate::runtime::core`]): the one
    /// that opened it, or the last that took it from another's list. Its idle list is the one
    /// it goes back to. Put back on the list of whichever
    /// thread released it, a borrowed connection stayed on the other thread's list, and every
    /// reply on it woke a thread across cores (an `eventfd` write and a context switch).
    home: usize,
    /// The pool's [`Pool::note_loss`] count when it was last put back: behind the current
    /// count, a sibling has been lost since, and this one may have gone with it.
    losses_seen: u64,
    /// When it began to be opened (for the server lifetime).
    opened: Stamp,
    /// When it was last put back (for the idle timeout).
    released: Stamp,
}

impl Pooled {
    fn new(conn: ServerConn, sockets: &Arc<Sockets>, opened: Stamp) -> Box<Self> {
        let sever = sockets.enter(&conn);
        Box::new(Self { conn, _sever: sever, home: crate::runtime::core(), losses_seen: 0, opened, released: opened })
    }

    /// Not older than `lifetime` nanoseconds at `now`.
    fn younger_than(&self, now: Stamp, lifetime: u64) -> bool {
        now.saturating_sub(self.opened) < lifetime
    }
}

/// One idle list (boxed entries on purpose, see [`Pool`]'s `idle`).
#[allow(clippy::vec_box)]
type IdleList = Mutex<Vec<Box<Pooled>>>;

/// Whether a checkout may take an idle connection.
#[derive(Clone, Copy)]
enum Reuse {
    Idle,
    New,
}

/// A checked-out connection and the permit that counts it.
pub struct Checkout {
    conn: Option<Box<Pooled>>,
    pool: Arc<Pool>,
    /// The pool's epoch when this was checked out: a connection out while the pool was cleared
    /// (its node changed role) is closed at release, not returned.
    epoch: u64,
    permit: Option<OwnedSemaphorePermit>,
    /// When the unit took the connection (for the node's unit-time metric; `None` once
    /// counted).
    taken: Option<Stamp>,
}

impl Pool {
    pub(super) fn new(spec: ConnectSpec, cfg: PoolConfig, metrics: NodeMetrics, shards: usize) -> Self {
        Self {
            node: spec.node,
            clock_base: Instant::now(),
            spec: ArcSwap::from_pointee(spec),
            idle: (0..shards.max(1)).map(|_| Mutex::new(Vec::new())).collect(),
            permits: Arc::new(Semaphore::new(cfg.size)),
            size: AtomicUsize::new(cfg.size),
            owed: AtomicUsize::new(0),
            ages: ConnAges::new(&cfg),
            cfg: ArcSwap::from_pointee(cfg),
            startup_params: std::sync::OnceLock::new(),
            metrics,
            spellings: Mutex::new(HashMap::new()),
            spelling_generation: AtomicU64::new(0),
            login_status: Mutex::new(None),
            accepted_syncs: Mutex::new(std::collections::HashSet::new()),
            epoch: std::sync::atomic::AtomicU64::new(0),
            sockets: Arc::default(),
            losses: AtomicU64::new(0),
        }
    }

    /// `f` of how the server reports `value` of parameter `name`, if a login has shown it
    /// (called under the lock: the spelling is written where it goes, not copied out first).
    pub fn with_server_spelling<R>(&self, name: &str, value: &str, f: impl FnOnce(&str) -> R) -> Option<R> {
        let spellings = self.spellings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        spellings.get(name)?.get(value).map(|spelled| f(spelled.as_str()))
    }

    /// Remember that the server reports `value` of parameter `name` as `reported`.
    pub fn learn_spelling(&self, name: &str, value: &str, reported: &str) {
        let mut spellings = self.spellings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if spellings.values().map(HashMap::len).sum::<usize>() >= MAX_SPELLINGS {
            spellings.clear();
        }
        let values = spellings.entry(name.to_ascii_lowercase()).or_default();
        values.insert(value.to_string(), reported.to_string());
        self.spelling_generation.fetch_add(1, Ordering::Release);
    }

    /// Changes whenever a spelling is learnt (read it before making a block to keep).
    #[must_use]
    pub fn spelling_generation(&self) -> u64 {
        self.spelling_generation.load(Ordering::Acquire)
    }

    /// Append the ParameterStatus block kept for the session state at `state` (the address of
    /// its `Arc`), if one was kept for it and no spelling was learnt since. True if it was.
    /// The logins of one application share their state, so a login storm (`pgbench -C`)
    /// copies one block instead of writing every parameter and looking its spelling up.
    pub fn write_login_status(&self, state: *const (), buf: &mut bytes::BytesMut) -> bool {
        let kept = self.login_status.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &*kept {
            Some(k)
                if std::ptr::eq(k.state.as_ptr().cast::<()>(), state) && k.generation == self.spelling_generation() =>
            {
                buf.extend_from_slice(&k.block);
                true
            }
            _ => false,
        }
    }

    /// Keep `block`, made for `state` when the spelling generation was `generation`.
    pub fn keep_login_status(
        &self,
        state: std::sync::Weak<dyn std::any::Any + Send + Sync>,
        generation: u64,
        block: &[u8],
    ) {
        let status = LoginStatus { state, generation, block: bytes::Bytes::copy_from_slice(block) };
        *self.login_status.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(status);
    }

    /// True if the node ran every one of these sync statements before without error.
    #[must_use]
    pub fn accepts_sync(&self, statements: &[String]) -> bool {
        let accepted = self.accepted_syncs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        statements.iter().all(|s| accepted.contains(s))
    }

    /// The node ran these sync statements without error.
    pub fn sync_accepted(&self, statements: &[String]) {
        let mut accepted = self.accepted_syncs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if accepted.len() + statements.len() > MAX_ACCEPTED_SYNCS {
            accepted.clear();
        }
        accepted.extend(statements.iter().cloned());
    }

    /// Count a state sync (see [`crate::metrics::SyncOutcome`]).
    pub fn state_sync(&self, outcome: crate::metrics::SyncOutcome, statements: usize) {
        self.metrics.state_sync(outcome, statements);
    }

    /// Take a connection: an idle healthy one, or a new one.
    ///
    /// # Errors
    /// No permit within the checkout timeout, or opening a connection failed.
    pub async fn checkout(self: &Arc<Self>) -> Result<Checkout, BackendError> {
        self.checkout_with(Reuse::Idle, Instant::now()).await
    }

    /// [`Pool::checkout`] at `now`: a clock read the caller made for its unit just before
    /// (the session's, at the unit's start), which the pool's ages and the unit time go by.
    /// A wait for a permit reads the clock again.
    ///
    /// # Errors
    /// No permit within the checkout timeout, or opening a connection failed.
    pub async fn checkout_at(self: &Arc<Self>, now: Instant) -> Result<Checkout, BackendError> {
        self.checkout_with(Reuse::Idle, now).await
    }

    /// Take a newly opened connection, not an idle one: for a unit whose connection was just
    /// lost, at `now` (see [`Pool::checkout_at`]). A backend terminated with its siblings
    /// (`pg_terminate_backend` of every backend signals them one after another) may still be
    /// signalled after it answered [`ServerConn::confirm_alive`]; one opened after the loss was
    /// not among them.
    ///
    /// # Errors
    /// No permit within the checkout timeout, or opening a connection failed.
    pub async fn checkout_new_at(self: &Arc<Self>, now: Instant) -> Result<Checkout, BackendError> {
        self.checkout_with(Reuse::New, now).await
    }

    async fn checkout_with(self: &Arc<Self>, reuse: Reuse, now: Instant) -> Result<Checkout, BackendError> {
        // A free permit (the common case on a pool that is not saturated) is taken without
        // arming the checkout timer.
        let (permit, now) = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => {
                self.metrics.checkout_not_waited();
                (permit, now)
            }
            // Boxed: a wait parks the task anyway, and inline its timer and semaphore state
            // would grow every checkout's future (and a session's per-statement one with it).
            Err(_) => Box::pin(self.wait_for_permit()).await?,
        };
        let epoch = self.epoch.load(std::sync::atomic::Ordering::Acquire);
        let stamp = self.stamp(now);
        let idle = match reuse {
            Reuse::Idle => self.take_live_idle(stamp).await,
            Reuse::New => None,
        };
        let (conn, taken) = match idle {
            Some(c) => (c, stamp),
            None => {
                // Boxed: opening a connection (TCP, TLS, authentication) is ~1.9 KB of future
                // state, and every checkout's future (a session's per-statement unit among
                // them) would carry it inline, though most checkouts take an idle connection.
                let c = Box::pin(ServerConn::connect(&self.spec.load()))
                    .await
                    .inspect_err(|_| self.metrics.connect_failed())?;
                self.metrics.connected();
                self.startup_params.get_or_init(|| c.server_params().to_vec());
                (Pooled::new(c, &self.sockets, stamp), self.stamp(Instant::now()))
            }
        };
        Ok(Checkout { conn: Some(conn), pool: Arc::clone(self), epoch, permit: Some(permit), taken: Some(taken) })
    }

    /// `now` as a [`Stamp`] of this pool.
    fn stamp(&self, now: Instant) -> Stamp {
        u64::try_from(now.saturating_duration_since(self.clock_base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Wait (bounded by the checkout timeout) for a connection to be released; the permit and
    /// when it came.
    async fn wait_for_permit(&self) -> Result<(OwnedSemaphorePermit, Instant), BackendError> {
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
        let now = Instant::now();
        self.metrics.checkout_waited(now.saturating_duration_since(started));
        Ok((permit, now))
    }

    /// Shut down the socket of every open connection: whoever waits on one gets an error at
    /// once (the node was declared down; its idle connections are closed beside this, and one
    /// put back meanwhile shows a dead socket at its next checkout).
    pub fn sever(&self) {
        let open = self.sockets.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for socket in open.values() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }

    /// The most recently used healthy idle connection: of this thread's list, else of the
    /// others in turn. One taken from another thread's list moves to this thread: its socket is
    /// watched by this thread's reactor from now on, and it goes back to this thread's list.
    /// Left on the other reactor, every reply on it would wake that thread only for it to wake
    /// this one (an `eventfd` write and a context switch per statement: ~0.44 `write` calls per
    /// TPC-B statement before this); moving costs four syscalls once.
    fn take_idle(&self, now: Stamp) -> Option<Box<Pooled>> {
        let own = crate::runtime::core();
        let lists = self.idle.len();
        if let Some(c) = self.take_idle_from(&self.idle[own % lists], now) {
            return Some(c);
        }
        let mut c = (1..lists).find_map(|i| self.take_idle_from(&self.idle[(own + i) % lists], now))?;
        match c.conn.io.get_mut().watch_here() {
            Ok(()) => c.home = own,
            // Still usable where it is: the replies just keep crossing threads.
            Err(e) => tracing::debug!(error = %e, "a borrowed server connection stays on its thread's reactor"),
        }
        Some(c)
    }

    fn take_idle_from(&self, list: &IdleList, now: Stamp) -> Option<Box<Pooled>> {
        let mut idle = list.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some(mut c) = idle.pop() {
            if !self.fresh(&c, now) {
                self.metrics.expired(1);
                continue;
            }
            if c.conn.looks_dead() {
                // Whatever killed it (`pg_terminate_backend` of every backend, a restart) may
                // have killed its siblings too, whose sockets do not show it yet.
                self.metrics.idle_found_lost();
                self.note_loss();
                continue;
            }
            return Some(c);
        }
        None
    }

    /// An idle connection ([`Pool::take_idle`]) known to be alive: one put back before a
    /// sibling was lost is confirmed first with a round trip ([`ServerConn::confirm_alive`]);
    /// one that fails it is closed and the next is tried.
    ///
    /// Why: `pg_terminate_backend` signals a backend, and its FATAL reaches the socket only
    /// when the backend next runs. On a busy machine that is many milliseconds later, so a
    /// connection the same round terminated passes [`ServerConn::looks_dead`], and the unit
    /// sent on it is lost: a client whose statement was just lost to the kill would lose the
    /// next one too. The round trip costs one Sync, and only after a loss.
    ///
    /// The confirmations of one checkout share one connect timeout: a server that stopped
    /// answering costs it that once, then it opens a new connection (bounded by the same
    /// timeout) instead of waiting on each idle one in turn.
    async fn take_live_idle(&self, now: Stamp) -> Option<Box<Pooled>> {
        let mut deadline = None;
        loop {
            let mut c = self.take_idle(now)?;
            if c.losses_seen == self.losses.load(Ordering::Acquire) {
                return Some(c);
            }
            let limit = self.cfg.load().connect_timeout;
            let until = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + limit);
            // Boxed: only after a loss; inline, its state would grow every checkout's future.
            match Box::pin(tokio::time::timeout_at(until, c.conn.confirm_alive())).await {
                Ok(Ok(())) => return Some(c),
                Ok(Err(e)) => {
                    self.metrics.idle_found_lost();
                    tracing::info!(error = %e, "an idle server connection was lost since its last use; closed");
                }
                Err(_) => {
                    self.metrics.idle_found_lost();
                    tracing::info!(?limit, "an idle server connection did not confirm it is alive; closed");
                    return None;
                }
            }
        }
    }

    /// One of this pool's connections was found lost (by a session mid-unit, or at checkout):
    /// every connection idle now is confirmed before its next use.
    pub fn note_loss(&self) {
        self.losses.fetch_add(1, Ordering::AcqRel);
    }

    /// Young enough and not idle too long at `now` (one clock read per checkout or release,
    /// not one per comparison: the two `elapsed` calls were ~2% of a simple unit's instructions).
    fn fresh(&self, c: &Pooled, now: Stamp) -> bool {
        c.younger_than(now, self.ages.lifetime()) && now.saturating_sub(c.released) < self.ages.idle()
    }

    /// Back to the idle list, unless it outlived the server lifetime or the pool was cleared
    /// since its checkout. Not judged by the idle timeout: it was in use until now (a session
    /// that held it longer than the timeout did not leave it idle).
    fn put_back(&self, mut c: Box<Pooled>, epoch: u64, now: Stamp) {
        if !c.younger_than(now, self.ages.lifetime()) {
            self.metrics.expired(1);
            return;
        }
        if epoch != self.epoch.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        c.released = now;
        c.losses_seen = self.losses.load(Ordering::Acquire);
        self.idle[c.home % self.idle.len()].lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(c);
    }

    /// Close the idle connections that outlived the server lifetime or the idle timeout at
    /// `now`; returns how many. A checkout would skip them too, but only those it pops first:
    /// the idle lists are taken from the top (the most recently used), so after a burst the
    /// connections below would hold their server backends for ever.
    pub fn sweep_idle(&self, now: Instant) -> usize {
        let now = self.stamp(now);
        let mut closed = Vec::new();
        for list in &self.idle {
            let mut idle = list.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            // One pass; the kept connections keep their order (the top is the most recently used).
            closed.extend(idle.extract_if(.., |c| !self.fresh(c, now)));
        }
        // Closed outside the lists' locks.
        let count = closed.len();
        drop(closed);
        if count > 0 {
            self.metrics.expired(count);
        }
        count
    }

    /// Close every idle connection (e.g. its node changed role).
    pub fn clear_idle(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        for list in &self.idle {
            list.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        }
    }

    /// Connections checked out right now (units running on them, or sessions holding them).
    #[must_use]
    pub fn checked_out(&self) -> usize {
        self.usage().1
    }

    /// Idle connections right now.
    #[must_use]
    pub fn idle_count(&self) -> usize {
        self.idle.iter().map(|list| list.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()).sum()
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
        self.node
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
    pub(super) fn reconfigure(&self, cfg: &PoolConfig, spec: ConnectSpec) {
        let old = self.spec.load();
        if (old.host.as_str(), old.port, old.password.as_deref())
            != (spec.host.as_str(), spec.port, spec.password.as_deref())
        {
            self.spec.store(Arc::new(spec));
            self.clear_idle();
        }
        self.cfg.store(Arc::new(cfg.clone()));
        self.ages.set(cfg);
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

impl Drop for Checkout {
    fn drop(&mut self) {
        self.account();
        if self.conn.as_mut().is_some_and(|c| c.conn.take_sync_failure()) {
            self.pool.state_sync(crate::metrics::SyncOutcome::Failed, 0);
        }
        if let Some(taken) = self.taken {
            let now = self.pool.stamp(Instant::now());
            self.pool.metrics.unit_done(Duration::from_nanos(now.saturating_sub(taken)));
        }
        if let Some(permit) = self.permit.take() {
            self.pool.give_back(permit);
        }
    }
}

impl Checkout {
    /// The connection.
    pub fn conn(&mut self) -> &mut ServerConn {
        &mut self.conn.as_mut().expect("a checkout holds its connection until released").conn
    }

    /// Give the connection back: to the pool only with proof it is clean (every reply read,
    /// ReadyForQuery `I`, no COPY, no open block), after draining what is still due within
    /// [`DRAIN_LIMIT`] and, with `discard_state`, a `DISCARD ALL`; otherwise it is closed.
    /// Returns what was done (never [`Release::Drain`]).
    pub async fn release(mut self, discard_state: bool) -> Release {
        let Some(conn) = self.conn.as_mut().map(|c| &mut c.conn) else { return Release::Close };
        // A sync decided at checkout but never sent (no unit followed) changed nothing.
        conn.take_pending_sync_unsent();
        if conn.take_sync_failure() {
            self.pool.state_sync(crate::metrics::SyncOutcome::Failed, 0);
        }
        let mut verdict = conn.verdict();
        if verdict == Release::Drain {
            verdict = if conn.drain(DRAIN_LIMIT).await { Release::Reuse } else { Release::Close };
            tracing::debug!(?verdict, "drained a server connection its session left with replies due");
        }
        if verdict == Release::Reuse && discard_state {
            verdict = match conn.run_internal("DISCARD ALL").await {
                Ok(_) => conn.verdict(),
                Err(_) => Release::Close,
            };
            conn.discarded();
        }
        // Notifications kept from an internal reply belong to the session that listened.
        drop(conn.take_notifications());
        self.account();
        // One clock read for the unit's time and the connection's idle clock.
        let now = self.pool.stamp(Instant::now());
        if let Some(taken) = self.taken.take() {
            self.pool.metrics.unit_done(Duration::from_nanos(now.saturating_sub(taken)));
        }
        if let (Release::Reuse, Some(c)) = (verdict, self.conn.take()) {
            self.pool.put_back(c, self.epoch, now);
        }
        verdict
    }

    /// Close the connection instead of returning it.
    pub fn discard(mut self) {
        self.account();
        if self.conn.as_mut().is_some_and(|c| c.conn.take_sync_failure()) {
            self.pool.state_sync(crate::metrics::SyncOutcome::Failed, 0);
        }
        self.conn.take();
    }

    /// Add the bytes this checkout moved to the node's counters (once per checkout).
    fn account(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            let (sent, received) = conn.conn.take_traffic();
            self.pool.metrics.traffic(sent, received);
        }
    }

    /// The pool this came from.
    #[must_use]
    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }
}

#[cfg(test)]
mod resize_tests;
