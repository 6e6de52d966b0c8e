//! Wiring: build every handle from a `Config` once, then run the monitor, the listener, the
//! admin endpoint and the applier of operator requests (reload, shutdown); and the graceful
//! drain that `main` runs on SIGTERM.

mod reloader;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::failover::FailoverAdmin;
use crate::admin::{self, AdminState, Events};
use crate::backend::probe::SqlProbe;
use crate::backend::Pools;
use crate::config::{Config, ConfigErrors, RuntimeLayout};
use crate::frontend::{listener, Shared};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::reload::{Control, ReloadError, ReloadReport};
use crate::topology::control::Control as NodeControl;
use crate::topology::monitor::{initial_topology, Monitor};
use crate::topology::transition::Limits;
use crate::topology::{Role, Topology, TopologyHandle};
use prometheus_client::registry::Registry;

/// How often a drain looks whether every client has gone.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A `[client_tls]` or `[server_tls]` file cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// A session thread could not be started (per-core layout).
    #[error("cannot start a session thread: {0}")]
    Thread(std::io::Error),
    /// The configuration file is invalid.
    #[error("invalid configuration:\n{0}")]
    Config(#[from] ConfigErrors),
}

/// The proxy, as a value: [`Proxy::start`] builds and runs it.
pub struct Proxy;

/// A running proxy. Dropping it stops accepting and stops the monitor.
pub struct ProxyHandle {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    topology: TopologyHandle,
    events: Arc<Events>,
    /// Stops the accept loop only (a drain keeps the rest running).
    stop_accepting: watch::Sender<bool>,
    /// Stops everything else.
    shutdown: watch::Sender<bool>,
    /// Turns true when an operator asked for a shutdown (admin console `SHUTDOWN`).
    stop_requested: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Build every handle from `config`, probe the nodes once, and start listening. Such a
    /// proxy has no file to reload from.
    ///
    /// # Errors
    /// See [`StartError`].
    pub async fn start(config: Config) -> Result<ProxyHandle, StartError> {
        Self::start_with(config, None).await
    }

    /// Load `path`, start on it, and reload from it on request (SIGHUP, `POST /reload`,
    /// `RELOAD`).
    ///
    /// # Errors
    /// See [`StartError`].
    pub async fn start_from_file(path: &Path) -> Result<ProxyHandle, StartError> {
        let config = Config::load(path)?;
        Self::start_with(config, Some(path.to_path_buf())).await
    }

    async fn start_with(config: Config, path: Option<PathBuf>) -> Result<ProxyHandle, StartError> {
        // Bind first: a taken port fails at once, before any node is probed.
        let (listeners, addr) = bind_clients(&config)?;
        let layout = config.ops.runtime.layout;
        let admin = config.admin_listen.map(|a| bind(a, 128, false, None)).transpose()?;
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        let client_tls = crate::tls::ClientTls::new(&config.client_tls)?;
        let server_tls = crate::tls::ServerTls::new(&config.server_tls)?;
        let topology = TopologyHandle::new(initial_topology(&config));
        let mut registry = Registry::default();
        let node_names: Vec<String> = config.nodes.iter().map(|n| n.name.clone()).collect();
        let metrics = Metrics::new(&mut registry, &node_names);
        let config = Arc::new(Live::new(config));
        let pools = Arc::new(Pools::new(Arc::clone(&config), Arc::clone(&metrics)).with_server_tls(server_tls));
        let node_control = NodeControl::default();
        let mut monitor = build_monitor(&config, &pools, &topology, node_control.clone());
        monitor.tick().await;
        let (shutdown, rx) = watch::channel(false);
        let (stop_accepting, accept_rx) = watch::channel(false);
        let (control, requests) = Control::channel();
        // One handle for the failover actions: the admin endpoint and the console share it (and
        // with it the one-switchover-at-a-time lock).
        let failover =
            FailoverAdmin::new(topology.clone(), node_control.clone(), Arc::clone(&config), Arc::clone(&pools));
        let shared = Arc::new(
            Shared::new(Arc::clone(&config), topology.clone(), Arc::clone(&pools), Arc::clone(&metrics), control)
                .with_client_tls(client_tls)
                .with_failover(failover.clone()),
        );
        let events = Arc::new(Events::default());
        let (stop_tx, stop_requested) = watch::channel(false);
        let monitor_task = spawn_monitor(monitor, &shared, rx.clone());
        let applier = reloader::Reloader::new(
            path,
            Arc::clone(&shared),
            Arc::clone(&events),
            monitor_task,
            node_control.clone(),
            rx.clone(),
        );
        let mut tasks = vec![
            tokio::spawn(applier.run(requests, stop_tx)),
            tokio::spawn(reloader::watch_topology(Arc::clone(&shared), Arc::clone(&events), rx.clone())),
            tokio::spawn(sweep_loop(Arc::clone(&pools), rx.clone())),
        ];
        for (index, listener) in listeners.into_iter().enumerate() {
            if layout == RuntimeLayout::Shared {
                tasks.push(tokio::spawn(listener::accept_loop(listener, Arc::clone(&shared), accept_rx.clone())));
                continue;
            }
            // The session thread watches the socket on its own reactor.
            let std_listener = listener.into_std().map_err(|source| StartError::Listen { addr, source })?;
            crate::runtime::spawn_core(index, std_listener, Arc::clone(&shared), accept_rx.clone(), rx.clone())
                .map_err(StartError::Thread)?;
        }
        if let Some(admin) = admin {
            let registry = Arc::new(registry);
            let state = AdminState {
                registry,
                topology: topology.clone(),
                metrics,
                shared: Arc::clone(&shared),
                events: Arc::clone(&events),
            };
            tasks.push(tokio::spawn(serve_admin(admin, state, admin::failover::router(failover), rx)));
        }
        tracing::info!(%addr, admin = ?admin_addr, "sluice is listening");
        Ok(ProxyHandle { addr, admin_addr, shared, topology, events, stop_accepting, shutdown, stop_requested, tasks })
    }
}

async fn serve_admin(listener: TcpListener, state: AdminState, extra: axum::Router, mut stop: watch::Receiver<bool>) {
    let stopped = async move {
        let _ = stop.changed().await;
    };
    if let Err(e) = admin::serve(listener, state, extra, stopped).await {
        tracing::warn!(error = %e, "the admin endpoint stopped");
    }
}

fn build_monitor(
    config: &Config,
    pools: &Pools,
    topology: &TopologyHandle,
    control: NodeControl,
) -> Monitor<Arc<SqlProbe>> {
    let limits = Limits {
        down_after: config.monitor.down_after,
        max_lag_bytes: config.routing.replica_max_lag_bytes,
        max_lag: config.routing.replica_max_lag,
    };
    let probe = Arc::new(SqlProbe::for_config(config, pools));
    Monitor::new(probe, topology.clone(), control, config.monitor.probe_timeout, limits)
}

fn spawn_monitor(monitor: Monitor<Arc<SqlProbe>>, shared: &Shared, stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(monitor_loop(monitor, Arc::clone(&shared.pools), shared.config.monitor.interval, stop))
}

/// Close idle server connections past the idle timeout or the server lifetime, at the pace
/// the configuration in force asks for ([`Pools::sweep_every`]), until told to stop.
async fn sweep_loop(pools: Arc<Pools>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(pools.sweep_every()) => {
                let closed = pools.sweep_idle();
                if closed > 0 {
                    tracing::debug!(closed, "idle server connections closed (idle timeout or lifetime)");
                }
            }
        }
    }
}

async fn monitor_loop(
    monitor: Monitor<Arc<SqlProbe>>,
    pools: Arc<Pools>,
    every: std::time::Duration,
    mut stop: watch::Receiver<bool>,
) {
    let stopped = async move {
        let _ = stop.changed().await;
    };
    // A node that changed role may hold connections opened for its old role; one that is down
    // or fenced gets nothing more, and units waiting on it end now rather than hang.
    monitor
        .run(every, stopped, |node, role| match role {
            Role::Down | Role::Fenced => pools.sever_node(node),
            _ => pools.clear_node(node),
        })
        .await;
}

/// The client listeners: one (shared layout), or one `SO_REUSEPORT` socket per session thread
/// on the same address (per-core layout; port 0 is resolved by the first). Returns them and the
/// address they listen on.
fn bind_clients(config: &Config) -> Result<(Vec<TcpListener>, SocketAddr), StartError> {
    let backlog = config.limits.listen_backlog;
    let rt = &config.ops.runtime;
    let count = if rt.layout == RuntimeLayout::Shared { 1 } else { rt.worker_count() };
    let reuse_port = config.ops.lifecycle.reuse_port || count > 1;
    let keepalive = config.limits.tcp_keepalive;
    let first = bind(config.listen, backlog, reuse_port, keepalive)?;
    let addr = first.local_addr().map_err(|source| StartError::Listen { addr: config.listen, source })?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(bind(addr, backlog, true, keepalive)?);
    }
    Ok((listeners, addr))
}

/// `keepalive`: TCP keepalive's idle time for the sockets the listener accepts (they inherit it).
fn bind(
    addr: SocketAddr,
    backlog: u32,
    reuse_port: bool,
    keepalive: Option<Duration>,
) -> Result<TcpListener, StartError> {
    let err = |source| StartError::Listen { addr, source };
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    if reuse_port {
        // A new sluice may bind the same port while this one drains (rolling restarts).
        socket.set_reuseport(true).map_err(err)?;
    }
    if let Some(idle) = keepalive {
        crate::net::keepalive(&socket, idle).map_err(err)?;
    }
    socket.bind(addr).map_err(err)?;
    socket.listen(backlog).map_err(err)
}

impl ProxyHandle {
    /// The address clients connect to.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the admin HTTP endpoint, if one is configured.
    #[must_use]
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The current topology snapshot.
    #[must_use]
    pub fn topology(&self) -> Arc<Topology> {
        self.topology.load()
    }

    /// The configuration in force now.
    #[must_use]
    pub fn config(&self) -> &'static Config {
        self.shared.config.snapshot()
    }

    /// What SIGHUP does: reload the configuration file (when started from one; the outcome is
    /// logged) and every database's function catalog.
    pub fn reload(&self) {
        self.shared.classifiers.refresh_all();
        tracing::info!("function catalogs reloading");
        let control = self.shared.control.clone();
        tokio::spawn(async move {
            // The applier logs the outcome.
            let _ = control.reload().await;
        });
    }

    /// Reload the configuration file and wait for the outcome.
    ///
    /// # Errors
    /// See [`ReloadError`]: nothing was changed.
    pub async fn reload_config(&self) -> Result<ReloadReport, ReloadError> {
        self.shared.control.reload().await
    }

    /// Resolves when an operator asked for a shutdown (the admin console's `SHUTDOWN`).
    pub async fn stop_requested(&self) {
        let mut rx = self.stop_requested.clone();
        if rx.wait_for(|v| *v).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Graceful shutdown: stop accepting at once, send clients that are between transactions
    /// away with `57P01`, let open transactions and running statements finish, then stop. Gives
    /// up waiting after `timeout`. Returns how many clients were still connected at the end.
    pub async fn drain(self, timeout: Duration) -> i64 {
        let _ = self.stop_accepting.send(true);
        self.shared.lifecycle.drain();
        self.events.push("lifecycle", "draining: no new connections".to_string());
        let deadline = tokio::time::Instant::now() + timeout;
        let left = loop {
            let left = self.shared.metrics.clients();
            if left <= 0 || tokio::time::Instant::now() >= deadline {
                break left;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        };
        self.shutdown().await;
        left
    }

    /// Read the client TLS certificate and key again (SIGHUP): new handshakes use them,
    /// established sessions keep theirs; a file that cannot be used keeps the old certificate
    /// and is logged with the reason.
    pub fn reload_tls(&self) {
        match self.shared.client_tls.reload() {
            Ok(true) => tracing::info!("client TLS certificate reloaded"),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "client TLS certificate NOT reloaded; the previous one stays in use"),
        }
    }

    /// Stop accepting and stop the monitor; sessions in progress finish on their own.
    pub async fn shutdown(mut self) {
        let _ = self.stop_accepting.send(true);
        let _ = self.shutdown.send(true);
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        let _ = self.stop_accepting.send(true);
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}
