//! Threads: which tokio runtimes run sluice, and on which one a session lives.
//!
//! Two layouts (`[runtime] layout`):
//!
//! - `shared`: one work-stealing runtime with `workers` threads runs everything; a session may
//!   move between threads, and a reply that arrives on one thread's reactor may wake the session
//!   on another.
//! - `per-core`: one *control* runtime on the main thread (monitor, admin endpoint, reload,
//!   signals, drain) plus `workers` session threads, each a single-threaded runtime accepting on
//!   its own `SO_REUSEPORT` listener (the kernel spreads new connections). A session, its timers
//!   and the server connections it opens stay on the thread that accepted it; the pools keep
//!   one idle list per thread ([`core`] picks it) so a unit normally reuses a connection its own
//!   reactor watches.
//!
//! Owns no state but a thread-local index; the wiring of listeners is in `app`.

use std::cell::Cell;
use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{RuntimeConfig, RuntimeLayout};
use crate::frontend::{listener, Shared};

thread_local! {
    static CORE: Cell<usize> = const { Cell::new(0) };
}

/// The index of the session thread running the caller (0 outside the per-core session threads,
/// e.g. on the control runtime or in the shared layout).
#[must_use]
pub fn core() -> usize {
    CORE.with(Cell::get)
}

/// How many idle lists a pool keeps: one per session thread in the per-core layout, else one.
#[must_use]
pub fn pool_shards(cfg: &RuntimeConfig) -> usize {
    match cfg.layout {
        RuntimeLayout::Shared => 1,
        RuntimeLayout::PerCore => cfg.worker_count(),
    }
}

/// The runtime `main` blocks on: the shared one (`workers` threads), or the control runtime of
/// the per-core layout (a single thread; the session threads are started by the proxy).
///
/// # Errors
/// The OS refused a thread or an event queue.
pub fn build_main(cfg: &RuntimeConfig) -> std::io::Result<tokio::runtime::Runtime> {
    match cfg.layout {
        RuntimeLayout::Shared => {
            tokio::runtime::Builder::new_multi_thread().worker_threads(cfg.worker_count()).enable_all().build()
        }
        RuntimeLayout::PerCore => tokio::runtime::Builder::new_current_thread().enable_all().build(),
    }
}

/// Start session thread `index`: a single-threaded runtime that accepts on `listener` until
/// `stop_accepting`, then keeps its sessions running until `shutdown` (a drain waits for them
/// in between), then drops them.
///
/// # Errors
/// The OS refused the thread.
pub fn spawn_core(
    index: usize,
    listener: StdListener,
    shared: Arc<Shared>,
    stop_accepting: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("sluice-core-{index}")).spawn(move || {
        CORE.with(|c| c.set(index));
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, core = index, "cannot start a session runtime");
                return;
            }
        };
        runtime.block_on(async move {
            tokio::spawn(anchor_timers());
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => listener::accept_loop(l, shared, stop_accepting).await,
                Err(e) => tracing::error!(error = %e, core = index, "cannot watch the listener"),
            }
            // Sessions go on (a drain lets them finish) until the proxy stops.
            let _ = shutdown.wait_for(|stopped| *stopped).await;
        });
    })
}

/// How far ahead a session thread's reactor always has a timer due (see [`anchor_timers`]).
const ANCHOR_PERIOD: Duration = Duration::from_secs(1);

/// Keep a timer due within [`ANCHOR_PERIOD`] on this session thread, for ever.
///
/// tokio's time driver wakes its reactor (a `write` to its eventfd, and one more `epoll_wait`)
/// whenever a timer is armed that is due before the deadline the reactor last parked with, or
/// while it parked with none; it does so even when the timer is armed by the thread running
/// that reactor, which is the only one that arms timers here. A session thread with no timer
/// pending paid that for nearly every login (the startup deadline is armed once the client's
/// first packet is answered: 0.75 eventfd writes per login under `pgbench -C`). With this tick
/// the reactor always parks with a deadline at most a second away, so the startup, checkout
/// and statement timeouts (seconds) are armed without a wake-up; the cost is one wake-up a
/// second on an idle thread.
async fn anchor_timers() {
    let mut tick = tokio::time::interval(ANCHOR_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}
