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

mod process;

use std::net::SocketAddr;
use std::ops::Deref;
use std::time::Duration;

use sluice::pgcluster::{LocalCluster, TEST_DATABASE, TEST_PASSWORD, TEST_USER};
use sluice::topology::Role;

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

/// One `[[users]]` entry of the proxy's configuration.
#[derive(Clone, Debug)]
pub struct UserSpec {
    /// Login name.
    pub name: String,
    /// What clients are checked against (plain, or a verifier).
    pub password: String,
    /// `scram-sha-256`, `md5` or `trust`.
    pub auth: String,
    /// The password sluice uses towards the servers, when `password` is not plain.
    pub server_password: Option<String>,
    /// `auto`, `primary` or `replica`.
    pub default_route: Option<String>,
}

impl UserSpec {
    /// A SCRAM user whose password is the same for clients and servers.
    pub fn scram(name: &str, password: &str) -> UserSpec {
        UserSpec {
            name: name.into(),
            password: password.into(),
            auth: "scram-sha-256".into(),
            server_password: None,
            default_route: None,
        }
    }

    fn to_toml(&self) -> String {
        let mut t = format!(
            "\n[[users]]\nname = {}\npassword = {}\nauth = {}\n",
            s(&self.name),
            s(&self.password),
            s(&self.auth)
        );
        if let Some(p) = &self.server_password {
            t.push_str(&format!("server_password = {}\n", s(p)));
        }
        if let Some(r) = &self.default_route {
            t.push_str(&format!("default_route = {}\n", s(r)));
        }
        t
    }
}

/// A TOML string literal.
fn s(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// Builds a proxy configuration from knobs, as TOML, and starts it.
#[derive(Clone, Debug, Default)]
pub struct ProxyBuilder {
    listen: Option<String>,
    nodes: Vec<(String, u16)>,
    users: Vec<UserSpec>,
    databases: Option<Vec<String>>,
    /// `(section, key, TOML value)`; later entries for the same key win.
    settings: Vec<(String, String, String)>,
}

impl ProxyBuilder {
    /// Put every node of `cluster` behind the proxy (`node0`, `node1`, ...) and add the
    /// cluster's test user (SCRAM) as the first user.
    pub fn cluster(mut self, cluster: &Cluster) -> Self {
        for (i, port) in cluster.ports().into_iter().enumerate() {
            self.nodes.push((format!("node{i}"), port));
        }
        if !self.users.iter().any(|u| u.name == TEST_USER) {
            self.users.insert(0, UserSpec::scram(TEST_USER, TEST_PASSWORD));
        }
        self
    }

    /// Add a node by port.
    pub fn node(mut self, name: &str, port: u16) -> Self {
        self.nodes.push((name.into(), port));
        self
    }

    /// Add a SCRAM user (create it on the servers with `Cluster::create_user`).
    pub fn user(self, name: &str, password: &str) -> Self {
        self.user_spec(UserSpec::scram(name, password))
    }

    /// Add a user with another auth method (`md5`, `trust`, `scram-sha-256`).
    pub fn user_with_auth(self, name: &str, password: &str, auth: &str) -> Self {
        let mut spec = UserSpec::scram(name, password);
        spec.auth = auth.into();
        self.user_spec(spec)
    }

    /// Add a fully specified user.
    pub fn user_spec(mut self, spec: UserSpec) -> Self {
        self.users.retain(|u| u.name != spec.name);
        self.users.push(spec);
        self
    }

    /// Listen somewhere else than `127.0.0.1:0`.
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = Some(addr.into());
        self
    }

    /// The `databases` allow-list.
    pub fn databases(mut self, names: &[&str]) -> Self {
        self.databases = Some(names.iter().map(|n| n.to_string()).collect());
        self
    }

    /// Set any key: `.set("pool", "server_lifetime", "\"1s\"")` (the value is raw TOML).
    pub fn set(mut self, section: &str, key: &str, toml_value: &str) -> Self {
        self.settings.push((section.into(), key.into(), toml_value.into()));
        self
    }

    fn set_str(self, section: &str, key: &str, value: &str) -> Self {
        let v = s(value);
        self.set(section, key, &v)
    }

    /// `pool.size`: server connections per (node, database, user).
    pub fn pool_size(self, n: usize) -> Self {
        self.set("pool", "size", &n.to_string())
    }

    /// `pool.mode`: `transaction` or `session`.
    pub fn pool_mode(self, mode: &str) -> Self {
        self.set_str("pool", "mode", mode)
    }

    /// `pool.checkout_timeout`, e.g. `"2s"`.
    pub fn checkout_timeout(self, d: &str) -> Self {
        self.set_str("pool", "checkout_timeout", d)
    }

    /// `limits.max_client_connections`.
    pub fn max_client_connections(self, n: usize) -> Self {
        self.set("limits", "max_client_connections", &n.to_string())
    }

    /// `limits.max_message_bytes`.
    pub fn max_message_bytes(self, n: usize) -> Self {
        self.set("limits", "max_message_bytes", &n.to_string())
    }

    /// `limits.startup_timeout`, e.g. `"1s"`.
    pub fn startup_timeout(self, d: &str) -> Self {
        self.set_str("limits", "startup_timeout", d)
    }

    /// `limits.idle_client_timeout`, e.g. `"2s"`.
    pub fn idle_client_timeout(self, d: &str) -> Self {
        self.set_str("limits", "idle_client_timeout", d)
    }

    /// `monitor.interval`, e.g. `"200ms"`.
    pub fn monitor_interval(self, d: &str) -> Self {
        self.set_str("monitor", "interval", d)
    }

    /// `routing.primary_reads`: `never`, `fallback` or `always`.
    pub fn primary_reads(self, policy: &str) -> Self {
        self.set_str("routing", "primary_reads", policy)
    }

    /// The configuration file this builder describes.
    pub fn toml(&self) -> String {
        let listen = self.listen.as_deref().unwrap_or("127.0.0.1:0");
        let mut t = format!("listen = {}\n", s(listen));
        if let Some(dbs) = &self.databases {
            let list: Vec<String> = dbs.iter().map(|d| s(d)).collect();
            t.push_str(&format!("databases = [{}]\n", list.join(", ")));
        }
        for section in ["limits", "pool", "monitor", "routing"] {
            let keys = self.section(section);
            if !keys.is_empty() {
                t.push_str(&format!("\n[{section}]\n{keys}"));
            }
        }
        for (name, port) in &self.nodes {
            t.push_str(&format!("\n[[nodes]]\nname = {}\nhost = \"127.0.0.1\"\nport = {port}\n", s(name)));
        }
        for u in &self.users {
            t.push_str(&u.to_toml());
        }
        t
    }

    fn section(&self, section: &str) -> String {
        let mut keys: Vec<(&str, &str)> = Vec::new();
        for (sec, key, value) in &self.settings {
            if sec == section {
                keys.retain(|(k, _)| k != key);
                keys.push((key, value));
            }
        }
        keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
    }

    /// The validated configuration (panics listing every problem and the TOML).
    pub fn config(&self) -> sluice::config::Config {
        let toml = self.toml();
        sluice::config::Config::from_toml_str(&toml)
            .unwrap_or_else(|e| panic!("the harness wrote a bad config:\n{e}\n--- toml ---\n{toml}"))
    }

    /// Start sluice in this process.
    pub async fn start(self) -> Proxy {
        let config = self.config();
        let handle = sluice::Proxy::start(config)
            .await
            .unwrap_or_else(|e| panic!("sluice did not start: {e}\n--- toml ---\n{}", self.toml()));
        let (user, password) = self.first_login();
        Proxy { handle: Some(handle), user, password }
    }

    /// Start sluice as a child process (`sluice run --config FILE`) on a free port.
    pub async fn spawn_process(self) -> ProxyProcess {
        ProxyProcess::spawn(self).await
    }
}

/// A sluice running in this process. Dropping it stops it.
pub struct Proxy {
    handle: Option<sluice::ProxyHandle>,
    user: String,
    password: String,
}

impl Proxy {
    /// Start describing a proxy.
    pub fn builder() -> ProxyBuilder {
        ProxyBuilder::default()
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
