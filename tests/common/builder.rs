//! [`ProxyBuilder`]: configuration knobs in, a TOML file out, and a running sluice (in this
//! process or as a child). Tests go through the real config parser this way.

use sluice::pgcluster::{TEST_PASSWORD, TEST_USER};

use super::{Cluster, Proxy, ProxyProcess};

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
        // Top-level keys (`admin_listen`...) are set with the section "".
        t.push_str(&self.section(""));
        if let Some(dbs) = &self.databases {
            let list: Vec<String> = dbs.iter().map(|d| s(d)).collect();
            t.push_str(&format!("databases = [{}]\n", list.join(", ")));
        }
        for section in [
            "limits",
            "pool",
            "monitor",
            "routing",
            "failover",
            "client_tls",
            "server_tls",
            "auth",
            "lifecycle",
            "runtime",
            "admin",
            "log",
        ] {
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
        // `SLUICE_TEST_LAYOUT=per-core` runs a whole test binary on that runtime layout (a
        // test that sets the layout itself keeps its own).
        let layout = std::env::var("SLUICE_TEST_LAYOUT").ok().filter(|l| !l.is_empty()).map(|l| s(&l));
        if let (Some(layout), "runtime") = (&layout, section) {
            keys.push(("layout", layout.as_str()));
        }
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
        Proxy { handle: Some(handle), user, password, config_file: None }
    }

    /// Start sluice in this process from a configuration file it can reload
    /// (`Proxy::rewrite_config`, then a reload).
    pub async fn start_from_file(self) -> Proxy {
        let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(file.path(), self.toml()).unwrap();
        let handle = sluice::Proxy::start_from_file(file.path())
            .await
            .unwrap_or_else(|e| panic!("sluice did not start: {e}\n--- toml ---\n{}", self.toml()));
        let (user, password) = self.first_login();
        Proxy { handle: Some(handle), user, password, config_file: Some(file) }
    }

    /// Start sluice as a child process (`sluice run --config FILE`) on a free port.
    pub async fn spawn_process(self) -> ProxyProcess {
        ProxyProcess::spawn(self).await
    }
}

impl ProxyBuilder {
    /// The user and password `connect()` logs in with: the first configured user.
    pub(super) fn first_login(&self) -> (String, String) {
        match self.users.first() {
            Some(u) => (u.name.clone(), u.server_password.clone().unwrap_or_else(|| u.password.clone())),
            None => (sluice::pgcluster::TEST_USER.into(), sluice::pgcluster::TEST_PASSWORD.into()),
        }
    }
}
