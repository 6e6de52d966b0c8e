//! The operator's hold on sessions: draining for shutdown, the pause gate, and the registry of
//! connected clients (for `SHOW CLIENTS` and `KILL`).
//!
//! A session asks two things of this module and nothing else: while it waits for its client
//! it races the read against [`ClientEntry::unless_stopped`] (a killed client goes at once; a
//! draining proxy sends away clients that are between units), and before a unit takes a server
//! connection it passes [`Lifecycle::pause_gate`]. Units already running are never interrupted.
//!
//! The race is one small future of our own ([`UnlessStopped`]): every idle client waits in it,
//! so it holds the read, two references and a flag, and registers its waker in the session's
//! record ([`ClientSlot`], lock-free) where `KILL` and drain find it.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::cancel::{CancelKey, ClientSlot};
use crate::error::sqlstate;

/// Which new units are held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Pause {
    /// Nothing is held.
    #[default]
    Running,
    /// Every new unit waits.
    All,
    /// New units routed to these node indexes wait.
    Nodes(BTreeSet<usize>),
}

impl Pause {
    /// True if a unit about to use `node` must wait.
    #[must_use]
    pub fn holds(&self, node: usize) -> bool {
        match self {
            Pause::Running => false,
            Pause::All => true,
            Pause::Nodes(nodes) => nodes.contains(&node),
        }
    }

    /// The state after `PAUSE` (`node` = `None`: everything).
    #[must_use]
    pub fn pause(&self, node: Option<usize>) -> Pause {
        match (self, node) {
            (_, None) | (Pause::All, _) => Pause::All,
            (Pause::Running, Some(n)) => Pause::Nodes(BTreeSet::from([n])),
            (Pause::Nodes(set), Some(n)) => Pause::Nodes(set.iter().copied().chain([n]).collect()),
        }
    }
}

/// Why a session must end while it waits for its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// An operator ran `KILL` on it.
    Killed,
    /// sluice is shutting down and the session is between units.
    Draining,
}

impl Stopped {
    /// The SQLSTATE and message the client gets (as FATAL).
    #[must_use]
    pub fn error(self) -> (&'static str, String) {
        let msg = match self {
            Stopped::Killed => "terminating connection due to administrator command",
            Stopped::Draining => "terminating connection due to administrator command: sluice is shutting down",
        };
        (sqlstate::ADMIN_SHUTDOWN, msg.to_string())
    }
}

/// One connected client, as `SHOW CLIENTS` lists it.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    /// The id `KILL` takes (the process id sluice gave the client in BackendKeyData).
    pub id: i32,
    /// Login user (shared with the session: one copy of the name per client).
    pub user: Arc<str>,
    /// Database (shared with the session).
    pub database: Arc<str>,
    /// The client's address.
    pub addr: Option<SocketAddr>,
    /// When the session began, in seconds since the Unix epoch (8 bytes, not a `SystemTime`'s
    /// 16: every client keeps one).
    pub since_secs: u64,
}

/// Seconds since the Unix epoch at `t` (0 for a clock set before it).
#[must_use]
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Shared by every session: drain flag, pause gate, client registry.
pub struct Lifecycle {
    draining: AtomicBool,
    pause: watch::Sender<Pause>,
    /// `pause` holds something other than [`Pause::Running`]; written with it (inside the
    /// watch's lock), read by [`Lifecycle::pause_gate`] before it subscribes to the watch: a
    /// unit passes a gate that holds nothing with one atomic load.
    pausing: AtomicBool,
    /// By client id (the pid of its cancel key): each client's record (what it is, its cancel
    /// key and target, how to stop it). One table for the registry and the cancel keys.
    clients: Mutex<BTreeMap<i32, Arc<ClientSlot>>>,
    /// User and database names the clients share (see [`Lifecycle::name`]).
    names: Mutex<Vec<Arc<str>>>,
}

/// Most distinct names [`Lifecycle::name`] keeps for sharing; past it a name is not shared.
const MAX_SHARED_NAMES: usize = 64;

impl Default for Lifecycle {
    fn default() -> Self {
        Self {
            draining: AtomicBool::new(false),
            pause: watch::channel(Pause::Running).0,
            pausing: AtomicBool::new(false),
            clients: Mutex::new(BTreeMap::new()),
            names: Mutex::new(Vec::new()),
        }
    }
}

impl Lifecycle {
    /// Begin draining: clients between units are sent away; held units are released so open
    /// transactions can finish.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        // After the flag: a session that registers its waker after this wake-up sees the flag.
        self.lock().values().for_each(|slot| slot.waker.wake());
        self.resume();
    }

    /// True once [`Lifecycle::drain`] was called.
    #[must_use]
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Hold new units (all, or those routed to `node`).
    pub fn pause(&self, node: Option<usize>) {
        self.set_pause(|p| p.pause(node));
    }

    /// Release every held unit.
    pub fn resume(&self) {
        self.set_pause(|_| Pause::Running);
    }

    /// The pause state becomes `next(current)`, and the flag the gate reads first with it,
    /// under the watch's lock: the last writer sets both.
    fn set_pause(&self, next: impl FnOnce(&Pause) -> Pause) {
        self.pause.send_modify(|p| {
            *p = next(p);
            self.pausing.store(*p != Pause::Running, Ordering::SeqCst);
        });
    }

    /// What is held now.
    #[must_use]
    pub fn paused(&self) -> Pause {
        self.pause.borrow().clone()
    }

    /// Wait while new units on `node` are held. True if anything was paused when the unit
    /// came (it may have waited: a caller's clock read from before is stale).
    ///
    /// Nothing paused (every unit, but for an operator's `PAUSE`) costs one atomic load: the
    /// watch's subscription, its lock and the receiver's drop were ~100 instructions a unit.
    pub async fn pause_gate(&self, node: usize) -> bool {
        if !self.pausing.load(Ordering::SeqCst) {
            return false;
        }
        let mut rx = self.pause.subscribe();
        // The sender lives as long as `self`: an error cannot happen while we borrow it.
        let _ = rx.wait_for(|p| !p.holds(node)).await;
        true
    }

    /// Add a client to the registry under a fresh unique key (`info.id` becomes its pid); it
    /// leaves, its key with it, when the entry is dropped.
    pub fn register(&self, mut info: ClientInfo) -> ClientEntry<'_> {
        let mut clients = self.lock();
        loop {
            let pid = rand::random::<i32>() & 0x7fff_ffff;
            if pid != 0 && !clients.contains_key(&pid) {
                info.id = pid;
                let slot = Arc::new(ClientSlot::new(info, rand::random::<i32>()));
                clients.insert(pid, Arc::clone(&slot));
                return ClientEntry { lifecycle: self, key: CancelKey::new(slot) };
            }
        }
    }

    /// Forward a CancelRequest if `(pid, secret)` belongs to a client running a statement.
    /// Unknown keys are ignored silently, as PostgreSQL does.
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let target = self.lock().get(&pid).and_then(|slot| slot.target_for(secret));
        if let Some(t) = target {
            super::cancel::send_cancel(&t).await;
        }
    }

    /// `name` (a user or database a client logged in with) as the copy other clients share:
    /// 10,000 clients of one user and database hold two strings, not 20,000 allocations.
    /// Borrowed, so a login of a known name allocates nothing (it made its own copy first, and
    /// dropped it here, two `malloc`s and `free`s per login). Names no client holds any more
    /// are dropped when the table is full.
    pub fn name(&self, name: &str) -> Arc<str> {
        let mut names = self.names.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(found) = names.iter().find(|n| ***n == *name) {
            return Arc::clone(found);
        }
        let name = Arc::<str>::from(name);
        if names.len() >= MAX_SHARED_NAMES {
            names.retain(|n| Arc::strong_count(n) > 1);
        }
        if names.len() < MAX_SHARED_NAMES {
            names.push(Arc::clone(&name));
        }
        name
    }

    /// Every connected client, by id.
    #[must_use]
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.lock().values().map(|slot| slot.info.clone()).collect()
    }

    /// End client `id` at its next wait for input; false if there is no such client.
    pub fn kill(&self, id: i32) -> bool {
        let Some(slot) = self.lock().get(&id).map(Arc::clone) else { return false };
        // The flag before the wake-up: a session polled by it (or registering its waker after
        // it) sees the flag.
        slot.killed.store(true, Ordering::SeqCst);
        slot.waker.wake();
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i32, Arc<ClientSlot>>> {
        self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A session's place in the registry, and its cancel key.
pub struct ClientEntry<'a> {
    lifecycle: &'a Lifecycle,
    /// The client's key: its record, shared with the registry.
    key: CancelKey,
}

impl ClientEntry<'_> {
    /// The client's cancel key (the pid and secret it was told, its cancel target).
    #[must_use]
    pub fn key(&self) -> &CancelKey {
        &self.key
    }

    /// What the registry lists for this client (its user and database among it).
    #[must_use]
    pub fn info(&self) -> &ClientInfo {
        &self.key.slot().info
    }

    /// Run `read` (a wait for the client) unless the session is killed, or sluice drains while
    /// the session is `between_units` (no transaction open). A stop is seen first when both
    /// are ready, as before any read.
    ///
    /// The future's output is `Err` with why the session must end instead.
    pub fn unless_stopped<F: Future>(&mut self, between_units: bool, read: F) -> UnlessStopped<'_, F> {
        UnlessStopped { entry: self, between_units, read }
    }
}

pin_project_lite::pin_project! {
    /// [`ClientEntry::unless_stopped`]: the read, raced against the session's stop slot.
    #[must_use = "futures do nothing unless polled"]
    pub struct UnlessStopped<'a, F> {
        // One reference for the lifecycle and the stop slot: every idle client keeps this.
        entry: &'a ClientEntry<'a>,
        between_units: bool,
        #[pin]
        read: F,
    }
}

impl<F: Future> Future for UnlessStopped<'_, F> {
    type Output = Result<F::Output, Stopped>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The waker first, then the flags: a stop set after the check wakes this task again.
        let slot = this.entry.key.slot();
        slot.waker.register(cx.waker());
        if slot.killed.load(Ordering::SeqCst) {
            return Poll::Ready(Err(Stopped::Killed));
        }
        if *this.between_units && this.entry.lifecycle.is_draining() {
            return Poll::Ready(Err(Stopped::Draining));
        }
        this.read.poll(cx).map(Ok)
    }
}

impl Drop for ClientEntry<'_> {
    fn drop(&mut self) {
        self.lifecycle.lock().remove(&self.key.pid());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pause_transitions() {
        let one = |n| Pause::Nodes(BTreeSet::from([n]));
        let cases: [(Pause, Option<usize>, Pause); 5] = [
            (Pause::Running, None, Pause::All),
            (Pause::Running, Some(1), one(1)),
            (one(1), Some(2), Pause::Nodes(BTreeSet::from([1, 2]))),
            (one(1), None, Pause::All),
            (Pause::All, Some(3), Pause::All),
        ];
        for (state, node, next) in cases {
            assert_eq!(state.pause(node), next, "{state:?} + PAUSE {node:?}");
        }
        assert!(one(1).holds(1) && !one(1).holds(0) && Pause::All.holds(7) && !Pause::Running.holds(0));
    }

    fn info(id: i32) -> ClientInfo {
        ClientInfo { id, user: "u".into(), database: "d".into(), addr: None, since_secs: 0 }
    }

    /// A client in `l`; its id is its key's (random) pid.
    fn register(l: &Lifecycle) -> (ClientEntry<'_>, i32) {
        let entry = l.register(info(0));
        let id = entry.key().pid();
        assert_eq!(entry.info().id, id);
        (entry, id)
    }

    #[tokio::test]
    async fn drain_stops_only_sessions_between_units_and_kill_stops_any() {
        let l = Lifecycle::default();
        let (mut a, a_id) = register(&l);
        let never = std::future::pending::<()>;
        l.drain();
        assert_eq!(a.unless_stopped(true, never()).await, Err(Stopped::Draining));
        let in_tx = tokio::time::timeout(Duration::from_millis(50), a.unless_stopped(false, never())).await;
        assert!(in_tx.is_err(), "a session in a transaction is not drained");
        assert!(l.kill(a_id) && !l.kill(a_id ^ 1));
        assert_eq!(a.unless_stopped(false, never()).await, Err(Stopped::Killed));
        assert_eq!(l.clients().len(), 1);
        drop(a);
        assert!(l.clients().is_empty());
    }

    #[tokio::test]
    async fn a_kill_stops_only_its_client_even_while_it_waits() {
        let l = std::sync::Arc::new(Lifecycle::default());
        let (mut a, _) = register(&l);
        let (mut b, b_id) = register(&l);
        let never = std::future::pending::<()>;
        assert!(l.kill(b_id));
        let a_waits = tokio::time::timeout(Duration::from_millis(50), a.unless_stopped(true, never())).await;
        assert!(a_waits.is_err(), "another client's KILL wakes a but does not stop it");
        assert_eq!(b.unless_stopped(true, never()).await, Err(Stopped::Killed));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let waiting = tokio::spawn({
            let l = std::sync::Arc::clone(&l);
            async move {
                let (mut c, c_id) = register(&l);
                let _ = tx.send(c_id);
                c.unless_stopped(false, never()).await
            }
        });
        let c_id = rx.await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(l.kill(c_id));
        let got = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert_eq!(got, Err(Stopped::Killed));
        drop(a);
    }

    #[test]
    fn names_are_shared_and_the_table_stays_bounded() {
        let l = Lifecycle::default();
        let a = l.name("app");
        assert!(Arc::ptr_eq(&a, &l.name("app")), "one copy for every client");
        let held: Vec<_> = (0..MAX_SHARED_NAMES).map(|i| l.name(&format!("db{i}"))).collect();
        let extra = l.name("one more");
        assert_eq!(&*extra, "one more");
        assert!(!Arc::ptr_eq(&extra, &l.name("one more")), "a full table shares no new name");
        drop((held, extra));
        let again = l.name("another");
        assert!(Arc::ptr_eq(&again, &l.name("another")), "names nobody holds make room");
        assert!(Arc::ptr_eq(&a, &l.name("app")));
    }

    #[tokio::test]
    async fn the_gate_says_whether_anything_was_paused() {
        let l = Lifecycle::default();
        assert!(!l.pause_gate(0).await, "nothing paused: the fast path");
        l.pause(Some(1));
        assert!(l.pause_gate(0).await, "another node paused: through the watch, not held");
        l.resume();
        assert!(!l.pause_gate(1).await);
        l.pause(None);
        let held = tokio::time::timeout(Duration::from_millis(50), l.pause_gate(0)).await;
        assert!(held.is_err(), "a pause after a resume holds again");
        l.drain();
        assert!(!l.pause_gate(0).await, "a drain resumes");
    }

    #[tokio::test]
    async fn the_gate_holds_paused_nodes_until_resume() {
        let l = std::sync::Arc::new(Lifecycle::default());
        l.pause(Some(1));
        tokio::time::timeout(Duration::from_millis(50), l.pause_gate(0)).await.unwrap();
        let held = tokio::spawn({
            let l = std::sync::Arc::clone(&l);
            async move { l.pause_gate(1).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!held.is_finished());
        l.resume();
        tokio::time::timeout(Duration::from_secs(5), held).await.unwrap().unwrap();
    }
}
