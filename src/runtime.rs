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
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => listener::accept_loop(l, shared, stop_accepting).await,
                Err(e) => tracing::error!(error = %e, core = index, "cannot watch the listener"),
            }
            // Sessions go on (a drain lets them finish) until the proxy stops.
            let _ = shutdown.wait_for(|stopped| *stopped).await;
        });
    })
}
