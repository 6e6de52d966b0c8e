//! Wiring: build every handle from a `Config` once, then run the monitor and the listener.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, AdminState};
use crate::backend::probe::SqlProbe;
use crate::backend::{PoolKey, Pools};
use crate::config::Config;
use crate::frontend::{listener, Shared};
use crate::metrics::Metrics;
use crate::topology::control::Control;
use crate::topology::monitor::{initial_topology, Monitor};
use crate::topology::transition::Limits;
use crate::topology::{Role, Topology, TopologyHandle};
use prometheus_client::registry::Registry;

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
}

/// The proxy, as a value: [`Proxy::start`] builds and runs it.
pub struct Proxy;

/// A running proxy. Dropping it stops accepting and stops the monitor.
pub struct ProxyHandle {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    topology: TopologyHandle,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Build every handle from `config`, probe the nodes once, and start listening.
    ///
    /// # Errors
    /// See [`StartError`].
    pub async fn start(config: Config) -> Result<ProxyHandle, StartError> {
        // Bind first: a taken port fails at once, before any node is probed.
        let listener = bind(config.listen, config.limits.listen_backlog)?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen { addr: config.listen, source })?;
        let admin = config.admin_listen.map(|a| bind(a, 128)).transpose()?;
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        let client_tls = crate::tls::ClientTls::new(&config.client_tls)?;
        let server_tls = crate::tls::ServerTls::new(&config.server_tls)?;
        let config = Arc::new(config);
        let topology = TopologyHandle::new(initial_topology(&config));
        let mut registry = Registry::default();
        let node_names: Vec<String> = config.nodes.iter().map(|n| n.name.clone()).collect();
        let metrics = Metrics::new(&mut registry, &node_names);
        let pools = Arc::new(Pools::new(Arc::clone(&config), Arc::clone(&metrics)).with_server_tls(server_tls));
        let probe = Arc::new(build_probe(&config, &pools));
        let mut monitor = build_monitor(&config, Arc::clone(&probe), &topology);
        monitor.tick().await;
        let control = monitor.control().clone();
        let (shutdown, rx) = watch::channel(false);
        let shared = Arc::new(
            Shared::new(Arc::clone(&config), topology.clone(), Arc::clone(&pools), Arc::clone(&metrics))
                .with_client_tls(client_tls),
        );
        let mut tasks = vec![
            tokio::spawn(monitor_loop(monitor, Arc::clone(&pools), config.monitor.interval, rx.clone())),
            tokio::spawn(listener::accept_loop(listener, Arc::clone(&shared), rx.clone())),
        ];
        if let Some(admin) = admin {
            let state = AdminState { registry: Arc::new(registry), topology: topology.clone(), metrics };
            let ops = admin::failover::FailoverAdmin::new(
                topology.clone(),
                control,
                probe,
                Arc::clone(&config),
                Arc::clone(&pools),
            );
            let routes = admin::router(state).merge(admin::failover::router(ops));
            tasks.push(tokio::spawn(serve_admin(admin, routes, rx)));
        }
        tracing::info!(%addr, admin = ?admin_addr, "sluice is listening");
        Ok(ProxyHandle { addr, admin_addr, shared, topology, shutdown, tasks })
    }
}

async fn serve_admin(listener: TcpListener, routes: axum::Router, mut stop: watch::Receiver<bool>) {
    let stopped = async move {
        let _ = stop.changed().await;
    };
    if let Err(e) = axum::serve(listener, routes).with_graceful_shutdown(stopped).await {
        tracing::warn!(error = %e, "the admin endpoint stopped");
    }
}

fn build_probe(config: &Config, pools: &Pools) -> SqlProbe {
    let user = &config.users[config.monitor.user].name;
    let specs = (0..config.nodes.len())
        .map(|node| {
            let key = PoolKey { node, database: config.monitor.database.clone(), user: user.clone() };
            pools.spec(&key, config.monitor.probe_timeout)
        })
        .collect();
    SqlProbe::new(specs)
}

fn build_monitor(config: &Config, probe: Arc<SqlProbe>, topology: &TopologyHandle) -> Monitor<Arc<SqlProbe>> {
    let limits = Limits {
        down_after: config.monitor.down_after,
        max_lag_bytes: config.routing.replica_max_lag_bytes,
        max_lag: config.routing.replica_max_lag,
    };
    Monitor::new(probe, topology.clone(), Control::default(), config.monitor.probe_timeout, limits)
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

fn bind(addr: SocketAddr, backlog: u32) -> Result<TcpListener, StartError> {
    let err = |source| StartError::Listen { addr, source };
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
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

    /// Reload what sluice learnt from the servers: every database's function catalog.
    pub fn reload(&self) {
        self.shared.classifiers.refresh_all();
        tracing::info!("function catalogs reloading");
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
        let _ = self.shutdown.send(true);
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}
