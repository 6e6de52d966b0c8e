//! The integration-test harness: real PostgreSQL servers, a real sluice in front, read like a
//! sentence.
//!
//! ```ignore
//! let c = Cluster::start(2).await;
//! let p = Proxy::builder().cluster(&c).pool_size(10).pool_mode("transaction").start().await;
//! let client = p.connect().await;
//! ```
//!
//! Everything panics with a message that says what failed, so tests stay free of plumbing.
//! Each test builds its own cluster and proxy; nothing is shared between tests.

// Every test binary compiles this module but uses only part of it.
#![allow(dead_code, unused_imports)]

mod builder;
mod process;
pub mod tls;

use std::net::SocketAddr;
use std::ops::Deref;
use std::time::Duration;

use sluice::pgcluster::{LocalCluster, TEST_DATABASE, TEST_PASSWORD, TEST_USER};
use sluice::topology::Role;

pub use builder::{ProxyBuilder, UserSpec};
pub use process::{raise_nofile_limit, ProxyProcess};

/// The `/proc` parsers, exposed for the harness's own tests.
pub mod process_parsers {
    pub use super::process::{nofile_limits, proc_status_kib, status_field_kib};
}

/// A local PostgreSQL cluster that panics instead of returning errors. Everything of
/// [`LocalCluster`] (ports, `stop_node`, `promote`...) is reachable through `Deref`.
pub struct Cluster {
    inner: LocalCluster,
}

impl Cluster {
    /// A primary and `replicas` streaming replicas. Prefer `Cluster::start(0)` where a test
    /// does not need replicas: each one costs a base backup.
    pub async fn start(replicas: usize) -> Cluster {
        match LocalCluster::start(replicas).await {
            Ok(inner) => Cluster { inner },
            Err(e) => {
                panic!("cannot start a local PostgreSQL cluster with {replicas} replicas:\n{e}")
            }
        }
    }

    /// Run `sql` directly on the primary (not through sluice) as the test user; returns the
    /// unaligned, tuples-only output.
    pub async fn psql(&self, sql: &str) -> String {
        self.inner.psql(sql).await.unwrap_or_else(|e| panic!("psql on the primary failed:\n{e}"))
    }

    /// Run `sql` on any local port (a node, or a proxy) as the test user.
    pub async fn psql_at(&self, port: u16, sql: &str) -> String {
        self.inner.psql_at(port, sql).await.unwrap_or_else(|e| panic!("psql on port {port} failed:\n{e}"))
    }

    /// Create a login role with a SCRAM password on the servers.
    pub async fn create_user(&self, name: &str, password: &str) {
        self.inner.create_user(name, password).await.unwrap_or_else(|e| panic!("cannot create user {name}:\n{e}"));
    }

    /// A cluster with `replicas`, `setup` run on the primary and replayed everywhere, and a proxy
    /// in front whose monitor (every 100 ms) already sees every node.
    pub async fn with_proxy(replicas: usize, setup: &str) -> (Cluster, Proxy) {
        let c = Cluster::start(replicas).await;
        if !setup.is_empty() {
            c.psql(setup).await;
            c.wait_replayed().await;
        }
        let p = Proxy::builder().cluster(&c).monitor_interval("100ms").start().await;
        p.wait_topology(1, replicas).await;
        (c, p)
    }

    /// Wait until every replica has replayed the primary's writes so far.
    pub async fn wait_replayed(&self) {
        self.inner.wait_replayed().await.unwrap_or_else(|e| panic!("replicas did not catch up:\n{e}"));
    }
}

impl Deref for Cluster {
    type Target = LocalCluster;
    fn deref(&self) -> &LocalCluster {
        &self.inner
    }
}

/// A sluice running in this process. Dropping it stops it.
pub struct Proxy {
    handle: Option<sluice::ProxyHandle>,
    user: String,
    password: String,
    /// The file a proxy started with `start_from_file` reloads from.
    config_file: Option<tempfile::NamedTempFile>,
}

impl Proxy {
    /// Start describing a proxy.
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder::default()
    }

    /// What SIGHUP does to a running sluice: reload the function catalogs.
    pub fn reload(&self) {
        self.handle().reload();
    }

    /// What SIGHUP also does: read the client TLS certificate and key again.
    pub fn reload_tls(&self) {
        self.handle().reload_tls();
    }

    /// Replace the configuration file (of a proxy started with `start_from_file`); the
    /// listen address stays what it is.
    pub fn rewrite_config(&self, text: &str) {
        let file = self.config_file.as_ref().expect("started with start_from_file");
        std::fs::write(file.path(), text).unwrap();
    }

    /// The configuration in force now.
    pub fn running_config(&self) -> &'static sluice::config::Config {
        self.handle().config()
    }

    /// The admin HTTP endpoint's address, when `admin_listen` was set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.handle().admin_addr()
    }

    /// The value of one series of the admin endpoint's `/metrics` (e.g.
    /// `sluice_state_syncs_total{outcome="pipelined"}`); 0 if it is not there yet. Needs
    /// `admin_listen` (`.set("", "admin_listen", "\"127.0.0.1:0\"")`).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series).filter(|v| v.starts_with(' ')).map(|v| v.trim().parse().unwrap()))
            .unwrap_or(0.0)
    }

    /// The whole `/metrics` page of the admin endpoint (with its HTTP head). Needs
    /// `admin_listen`.
    pub async fn metrics_text(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let admin = self.admin_addr().expect("metrics need admin_listen");
        let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: sluice\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        String::from_utf8_lossy(&raw).into_owned()
    }

    /// The `sluice_session_pins_total` series of `/metrics` (none: no session was pinned).
    pub async fn session_pins(&self) -> Vec<String> {
        let text = self.metrics_text().await;
        text.lines().filter(|l| l.starts_with("sluice_session_pins_total")).map(str::to_string).collect()
    }

    fn handle(&self) -> &sluice::ProxyHandle {
        self.handle.as_ref().expect("the proxy was shut down")
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.handle().addr()
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// The current topology snapshot.
    pub fn topology(&self) -> std::sync::Arc<sluice::topology::Topology> {
        self.handle().topology()
    }

    /// A libpq URL for the first configured user and the `app` database.
    pub fn conn_string(&self) -> String {
        url(&self.user, &self.password, self.port(), TEST_DATABASE)
    }

    /// A tokio-postgres client as the first configured user on `app`.
    pub async fn connect(&self) -> tokio_postgres::Client {
        self.connect_as(&self.user, &self.password, TEST_DATABASE).await
    }

    /// A tokio-postgres client as `user` on `database`; panics if the login fails.
    pub async fn connect_as(&self, user: &str, password: &str, database: &str) -> tokio_postgres::Client {
        self.try_connect_as(user, password, database)
            .await
            .unwrap_or_else(|e| panic!("cannot connect through sluice as {user} to {database}: {}", describe(&e)))
    }

    /// A tokio-postgres client as `user` on `database`, or the error the login produced.
    pub async fn try_connect_as(
        &self,
        user: &str,
        password: &str,
        database: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        connect(self.port(), user, password, database).await
    }

    /// A client as the first configured user on `app`, and its connection task (abort it to
    /// kill the client without a goodbye).
    pub async fn connect_killable(&self) -> (tokio_postgres::Client, tokio::task::JoinHandle<()>) {
        connect_with_task(self.port(), &self.user, &self.password, TEST_DATABASE)
            .await
            .unwrap_or_else(|e| panic!("cannot connect through sluice: {}", describe(&e)))
    }

    /// Wait (up to 10 s) until sluice's topology shows `primaries` primaries and `replicas`
    /// replicas.
    pub async fn wait_topology(&self, primaries: usize, replicas: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let t = self.topology();
            let count = |role| t.nodes.iter().filter(|n| n.role == role).count();
            if count(Role::Primary) == primaries && count(Role::Replica) == replicas {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "topology did not settle to {primaries} primary / {replicas} replicas: {t:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stop accepting and close every connection.
    pub async fn shutdown(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }
}

/// Connect a tokio-postgres client to 127.0.0.1:`port` without TLS; the connection task is
/// spawned and logs its end only when it ends with an error.
pub async fn connect(
    port: u16,
    user: &str,
    password: &str,
    database: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    connect_with_task(port, user, password, database).await.map(|(client, _task)| client)
}

/// Like [`connect`], also returning the connection task: aborting it drops the socket without
/// a Terminate message, as a killed client would.
pub async fn connect_with_task(
    port: u16,
    user: &str,
    password: &str,
    database: &str,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname(database)
        .connect_timeout(Duration::from_secs(10));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    let task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("(client connection ended: {e})");
        }
    });
    Ok((client, task))
}

/// A `postgresql://` URL with the user and password percent-encoded.
pub fn url(user: &str, password: &str, port: u16, database: &str) -> String {
    format!("postgresql://{}:{}@127.0.0.1:{port}/{}", pct(user), pct(password), pct(database))
}

fn pct(text: &str) -> String {
    let keep = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    text.bytes().map(|b| if keep(b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// A tokio-postgres error with its SQLSTATE and server message (its `Display` says only
/// "db error").
pub fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => err.to_string(),
    }
}

/// The SQLSTATE of a tokio-postgres error, if the server (or sluice) sent one.
pub fn sqlstate(err: &tokio_postgres::Error) -> Option<String> {
    err.code().map(|c| c.code().to_string())
}

/// The message of the ErrorResponse behind a tokio-postgres error, if any.
pub fn db_message(err: &tokio_postgres::Error) -> Option<String> {
    err.as_db_error().map(|e| e.message().to_string())
}

/// Panic unless `result` failed with SQLSTATE `code`; returns the error's message.
pub fn expect_sqlstate<T: std::fmt::Debug>(result: Result<T, tokio_postgres::Error>, code: &str) -> String {
    match result {
        Ok(v) => panic!("expected SQLSTATE {code}, got success: {v:?}"),
        Err(e) => {
            assert_eq!(sqlstate(&e).as_deref(), Some(code), "wrong error: {e:?}");
            db_message(&e).unwrap_or_default()
        }
    }
}
