//! `sluice demo`: a throwaway primary + 2 replicas on this machine with sluice in front, until
//! Ctrl-C.
//!
//! [`run`] starts a [`LocalCluster`], writes a configuration for it (listening on
//! 127.0.0.1:6432, or any free port when 6432 is taken; the admin endpoint on 127.0.0.1:9187 or
//! any free port), starts the proxy, prints the topology it found, a ready `psql` command, a
//! query that shows which server answered, a pgbench line, the admin console command and the
//! status page URL, then waits for Ctrl-C (or SIGTERM / SIGHUP) and removes everything. The pieces ([`Demo::start`], [`demo_toml`], [`render_topology`]) are public so
//! the demo can be tested without a terminal.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{Config, ConfigErrors};
use crate::pgcluster::{port_is_free, ClusterError, LocalCluster, TEST_DATABASE, TEST_PASSWORD, TEST_USER};
use crate::topology::Topology;
use crate::{Proxy, ProxyHandle, StartError};

/// The port the demo prefers (pgbouncer's customary one).
pub const PREFERRED_PORT: u16 = 6432;
/// The admin endpoint port the demo prefers.
pub const PREFERRED_ADMIN_PORT: u16 = 9187;
/// Replicas the demo starts.
const REPLICAS: usize = 2;
/// How long to wait for the monitor's first complete picture before printing what is known.
const TOPOLOGY_WAIT: Duration = Duration::from_secs(10);

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The local PostgreSQL servers could not be started.
    #[error("cannot start the local PostgreSQL cluster: {0}")]
    Cluster(#[from] ClusterError),
    /// The generated configuration was rejected (a bug in the demo).
    #[error("the demo's configuration is invalid:\n{0}")]
    Config(#[from] ConfigErrors),
    /// The proxy did not start.
    #[error("cannot start sluice: {0}")]
    Start(#[from] StartError),
    /// Waiting for Ctrl-C / SIGTERM failed.
    #[error("cannot wait for Ctrl-C: {0}")]
    Signal(std::io::Error),
}

/// A running demo: the cluster and the proxy in front of it.
pub struct Demo {
    // The proxy is declared first so it stops before the servers behind it.
    handle: ProxyHandle,
    cluster: LocalCluster,
}

impl Demo {
    /// Start the cluster and the proxy, and wait (bounded) until the proxy knows every node's
    /// role.
    ///
    /// # Errors
    /// See [`DemoError`]; a started cluster is removed again.
    pub async fn start() -> Result<Demo, DemoError> {
        let cluster = LocalCluster::start(REPLICAS).await?;
        let handle = start_proxy(&cluster.ports()).await?;
        wait_for_roles(&handle).await;
        Ok(Demo { handle, cluster })
    }

    /// Where clients connect.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr()
    }

    /// The admin endpoint (status page, `/health`, `/metrics`).
    #[must_use]
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.handle.admin_addr()
    }

    /// The cluster behind the proxy.
    #[must_use]
    pub fn cluster(&self) -> &LocalCluster {
        &self.cluster
    }

    /// The text printed once the demo is up: topology and how to connect.
    #[must_use]
    pub fn banner(&self) -> String {
        let addr = self.addr();
        let url = connection_url(addr, TEST_DATABASE);
        let status = self.admin_addr().map_or_else(|| "(no admin endpoint)".to_string(), |a| format!("http://{a}/"));
        format!(
            "sluice is listening on {addr}\n\n{topology}\nConnect with:\n  {psql}\n\n\
             See where statements run (reads go to the replicas' ports above, writes to the primary's):\n  \
             psql \"{url}\" -Atc \"SELECT inet_server_port()\" -c \"SELECT inet_server_port()\"\n\n\
             Put load on it (read-only, so it spreads over the replicas):\n  \
             pgbench -i \"{url}\" && pgbench -c 8 -j 2 -T 30 -S \"{url}\"\n\n\
             Admin console (SHOW NODES, SHOW POOLS, SHOW STATS, PAUSE, RESUME, RELOAD, DRAIN, SWITCHOVER):\n  \
             psql \"{console}\" -c \"SHOW NODES\"\n\n\
             Live status page:\n  {status}\n\nPress Ctrl-C to stop and remove everything.",
            topology = render_topology(&self.handle.topology()),
            psql = psql_command(addr),
            console = connection_url(addr, crate::frontend::admin_console::DATABASE),
        )
    }

    /// Stop the proxy, then the servers, and remove their files.
    pub async fn shutdown(self) {
        let Demo { handle, cluster } = self;
        handle.shutdown().await;
        drop(cluster);
    }
}

/// Run the demo until Ctrl-C (or SIGTERM / SIGHUP, so `kill` and a closed terminal clean up too).
///
/// # Errors
/// See [`DemoError`].
pub async fn run() -> Result<(), DemoError> {
    println!("Starting a local PostgreSQL primary and {REPLICAS} streaming replicas...");
    let demo = Demo::start().await?;
    println!("{}", demo.banner());
    let waited = stop_requested().await;
    println!("\nStopping sluice and the PostgreSQL servers...");
    demo.shutdown().await;
    waited.map_err(DemoError::Signal)
}

/// Resolves at the first SIGINT, SIGTERM or SIGHUP.
async fn stop_requested() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
        _ = hup.recv() => Ok(()),
    }
}

/// Start the proxy on [`PREFERRED_PORT`], or on any free port if that one is taken.
async fn start_proxy(ports: &[u16]) -> Result<ProxyHandle, DemoError> {
    let admin_port = if port_is_free(PREFERRED_ADMIN_PORT) { PREFERRED_ADMIN_PORT } else { 0 };
    let with_admin = |listen: &str| {
        let toml = demo_toml(ports, listen);
        Config::from_toml_str(&format!("admin_listen = \"127.0.0.1:{admin_port}\"\n{toml}"))
    };
    let any = || with_admin("127.0.0.1:0");
    if !port_is_free(PREFERRED_PORT) {
        return Ok(Proxy::start(any()?).await?);
    }
    let preferred = format!("127.0.0.1:{PREFERRED_PORT}");
    let first = Proxy::start(with_admin(&preferred)?).await;
    // Taken between the check and the bind: fall back all the same.
    if let Err(StartError::Listen { .. }) = first {
        return Ok(Proxy::start(any()?).await?);
    }
    Ok(first?)
}

async fn wait_for_roles(handle: &ProxyHandle) {
    let deadline = tokio::time::Instant::now() + TOPOLOGY_WAIT;
    while tokio::time::Instant::now() < deadline {
        let t = handle.topology();
        if t.primary().is_some() && t.replicas().count() == REPLICAS {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The demo's configuration: node `i` is `node<i>` on 127.0.0.1:`ports[i]`, one SCRAM user
/// (the cluster's test user), transaction pooling.
#[must_use]
pub fn demo_toml(ports: &[u16], listen: &str) -> String {
    let mut toml = format!(
        "listen = \"{listen}\"\n\n[pool]\nmode = \"transaction\"\nsize = 20\n\n\
         [monitor]\nuser = \"{TEST_USER}\"\ninterval = \"500ms\"\n"
    );
    for (i, port) in ports.iter().enumerate() {
        toml.push_str(&format!("\n[[nodes]]\nname = \"node{i}\"\nhost = \"127.0.0.1\"\nport = {port}\n"));
    }
    toml.push_str(&format!(
        "\n[[users]]\nname = \"{TEST_USER}\"\npassword = \"{TEST_PASSWORD}\"\nauth = \"scram-sha-256\"\n"
    ));
    toml.push_str(&format!("\n[admin]\nusers = [\"{TEST_USER}\"]\n"));
    toml
}

/// One line per node: name, address, role.
#[must_use]
pub fn render_topology(topology: &Topology) -> String {
    let mut text = format!("Topology (generation {}):\n", topology.generation);
    for n in &topology.nodes {
        text.push_str(&format!("  {:<8} {}:{:<5}  {}\n", n.name, n.host, n.port, n.role.as_str()));
    }
    text
}

/// A `psql` command line that connects through sluice as the demo user.
#[must_use]
pub fn psql_command(addr: SocketAddr) -> String {
    format!("psql \"{}\"", connection_url(addr, TEST_DATABASE))
}

/// A libpq URL for the demo user on `database` through sluice.
#[must_use]
pub fn connection_url(addr: SocketAddr, database: &str) -> String {
    format!("postgresql://{TEST_USER}:{TEST_PASSWORD}@{}:{}/{database}", addr.ip(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{NodeView, Role};

    #[test]
    fn the_demo_config_is_valid_and_names_every_node() {
        let config = Config::from_toml_str(&demo_toml(&[20001, 20002, 20003], "127.0.0.1:6432"))
            .unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = config.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["node0", "node1", "node2"]);
        assert_eq!(config.nodes[2].port, 20003);
        assert_eq!(config.listen.port(), PREFERRED_PORT);
        assert_eq!(config.users[0].name, TEST_USER);
    }

    #[test]
    fn topology_and_psql_command_render_for_humans() {
        let node = |index: usize, role| NodeView {
            index,
            name: format!("node{index}"),
            host: "127.0.0.1".into(),
            port: 20000 + u16::try_from(index).unwrap(),
            role,
            weight: 1,
            wal_lsn: None,
            excluded: None,
            timeline: None,
            replay_lag: None,
        };
        let t = Topology { generation: 3, nodes: vec![node(0, Role::Primary), node(1, Role::Replica)] };
        let text = render_topology(&t);
        assert!(text.contains("generation 3"), "{text}");
        assert!(text.contains("node0    127.0.0.1:20000  primary"), "{text}");
        assert!(text.contains("node1    127.0.0.1:20001  replica"), "{text}");
        let psql = psql_command("127.0.0.1:6432".parse().unwrap());
        assert_eq!(psql, format!("psql \"postgresql://{TEST_USER}:{TEST_PASSWORD}@127.0.0.1:6432/app\""));
    }

    async fn http_get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// The whole demo against real servers: up, reachable with the printed credentials, gone.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_demo_starts_serves_and_cleans_up() {
        let demo = Demo::start().await.unwrap_or_else(|e| panic!("{e}"));
        let banner = demo.banner();
        assert!(banner.contains("primary"), "{banner}");
        assert_eq!(banner.lines().filter(|l| l.ends_with("  replica")).count(), REPLICAS, "{banner}");
        for line in ["inet_server_port()", "pgbench -i", "/sluice\" -c \"SHOW NODES\"", "Live status page:\n  http://"]
        {
            assert!(banner.contains(line), "{line:?} missing from:\n{banner}");
        }
        let port = demo.addr().port();
        let out = demo.cluster().psql_at(port, "SELECT 40 + 2").await;
        assert_eq!(out.unwrap_or_else(|e| panic!("{e}")), "42");
        let nodes = demo.cluster().psql_as(port, TEST_USER, TEST_PASSWORD, "sluice", "SHOW NODES").await;
        assert_eq!(nodes.unwrap_or_else(|e| panic!("{e}")).lines().count(), REPLICAS + 1, "the console answers");
        let admin = demo.admin_addr().expect("the demo serves the admin endpoint");
        let page = http_get(admin, "/").await;
        assert!(page.starts_with("HTTP/1.1 200") && page.contains("<title>sluice</title>"), "{page}");
        let root = demo.cluster().root_dir().to_path_buf();
        demo.shutdown().await;
        assert!(!root.exists());
    }
}
