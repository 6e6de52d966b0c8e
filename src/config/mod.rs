//! Configuration: TOML -> raw serde structs ([`raw`]) -> validated, typed [`Config`].
//!
//! Every problem in a file is reported at once, each naming its key and the reason. Code outside
//! this module only ever sees typed values: `Duration`, `SocketAddr`, enums.

mod ops;
mod raw;
mod security;
mod validate;

pub use ops::{AdminConfig, LifecycleConfig, LogConfig, LogFormat, OpsConfig, RuntimeConfig, RuntimeLayout};
pub use security::{
    AuthQueryConfig, ClientTlsConfig, ClientTlsMode, ServerTlsConfig, ServerTlsMode, DEFAULT_AUTH_QUERY,
};

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// How server connections are shared between clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    /// A server connection is held for one transaction (released at ReadyForQuery `I`).
    Transaction,
    /// A server connection is held for the client's whole session, reset with `DISCARD ALL`.
    Session,
}

/// How a client must prove who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    /// SCRAM-SHA-256 (RFC 5802 / 7677).
    ScramSha256,
    /// PostgreSQL's salted md5.
    Md5,
    /// No password.
    Trust,
}

/// Whether the primary serves reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PrimaryReads {
    /// Never: reads fail when no replica can serve them.
    Never,
    /// Only when no replica can serve the read (the default).
    #[default]
    Fallback,
    /// Always: the primary is one more member of the read rotation.
    Always,
}

/// Where a user's statements go by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DefaultRoute {
    /// Classify each statement (the default).
    #[default]
    Auto,
    /// Everything to the primary.
    Primary,
    /// Reads only from replicas, never falling back to the primary.
    Replica,
}

/// The client's password as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Secret {
    /// A plain-text password.
    Plain(String),
    /// A `SCRAM-SHA-256$...` verifier (sluice can check clients but needs `server_password`).
    ScramVerifier(String),
    /// An `md5...` stored hash.
    Md5Hash(String),
    /// No password (trust).
    None,
}

/// One PostgreSQL node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// Unique name.
    pub name: String,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Share of replica reads (>= 1).
    pub weight: u32,
}

/// One user that may log in through sluice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserConfig {
    /// Login name (also used towards the servers).
    pub name: String,
    /// How clients prove they are this user.
    pub auth: AuthMethod,
    /// What clients are checked against.
    pub secret: Secret,
    /// The password sluice sends to servers, if it has one.
    pub server_password: Option<String>,
    /// Default routing for this user's statements.
    pub default_route: DefaultRoute,
}

/// `[limits]`: every resource has a named bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Clients connected at once; more get `53300`.
    pub max_client_connections: usize,
    /// The listen socket's accept backlog.
    pub listen_backlog: u32,
    /// The largest message a client may send.
    pub max_message_bytes: usize,
    /// Time allowed from accept to the end of authentication.
    pub startup_timeout: Duration,
    /// Idle clients are disconnected after this long (`None`: never).
    pub idle_client_timeout: Option<Duration>,
    /// TCP keepalive on client and server sockets: idle time before the first probe (`None`:
    /// off).
    pub tcp_keepalive: Option<Duration>,
}

/// `[pool]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Transaction or session pooling.
    pub mode: PoolMode,
    /// Server connections per (node, database, user).
    pub size: usize,
    /// How long a statement waits for a server connection.
    pub checkout_timeout: Duration,
    /// TCP connect + startup + auth time allowed for a new server connection.
    pub connect_timeout: Duration,
    /// Idle server connections older than this are closed.
    pub server_idle_timeout: Duration,
    /// Server connections older than this are closed at release.
    pub server_lifetime: Duration,
    /// Most statements sluice keeps prepared on one server connection (least recently used
    /// ones are closed).
    pub max_prepared_statements: usize,
}

/// `[monitor]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorConfig {
    /// Index into `users` of the user the monitor logs in as.
    pub user: usize,
    /// Database the monitor connects to.
    pub database: String,
    /// Time between probes.
    pub interval: Duration,
    /// How long one probe (connect included) may take before it counts as a timeout.
    pub probe_timeout: Duration,
    /// Probe timeouts in a row before a node is down (a refused connection acts at once).
    pub down_after: u32,
}

/// `[failover]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverConfig {
    /// How long a unit that needs the primary waits for one to be published before `57P03`.
    pub hold_timeout: Duration,
    /// How long a planned switchover waits for its target to catch up before giving up.
    pub switchover_timeout: Duration,
}

/// `[routing]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Whether the primary serves reads.
    pub primary_reads: PrimaryReads,
    /// Functions known to be read-only though the catalog says VOLATILE (`schema.name` or `name`).
    pub read_only_functions: Vec<String>,
    /// Entries in the statement classification cache.
    pub classify_cache_entries: usize,
    /// Replicas further behind the primary than this many bytes of WAL serve no reads
    /// (`None`: no limit).
    pub replica_max_lag_bytes: Option<u64>,
    /// Replicas missing WAL the primary had longer ago than this serve no reads (`None`: no
    /// limit).
    pub replica_max_lag: Option<Duration>,
}

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Where the admin HTTP endpoint (`/metrics`, `/health`, `/topology`) listens, if anywhere.
    pub admin_listen: Option<SocketAddr>,
    /// Databases clients may ask for (`None`: any).
    pub databases: Option<Vec<String>>,
    /// Resource limits.
    pub limits: Limits,
    /// Pooling.
    pub pool: PoolConfig,
    /// The node monitor.
    pub monitor: MonitorConfig,
    /// Routing policy.
    pub routing: RoutingConfig,
    /// Failover hold and planned switchover.
    pub failover: FailoverConfig,
    /// Nodes, in order; their index is their identity.
    pub nodes: Vec<NodeConfig>,
    /// Users.
    pub users: Vec<UserConfig>,
    /// TLS towards clients.
    pub client_tls: ClientTlsConfig,
    /// TLS towards servers.
    pub server_tls: ServerTlsConfig,
    /// Looking up users the file does not list (`None`: only listed users may log in).
    pub auth: Option<AuthQueryConfig>,
    /// How sluice is operated: shutdown, the admin endpoint and console, logging.
    pub ops: OpsConfig,
}

/// One problem in a configuration: the key and the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key, e.g. `pool.size` or `users[1].auth`.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Every problem found in a configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.0))]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

fn render(problems: &[ConfigProblem]) -> String {
    let lines: Vec<String> = problems.iter().map(|p| format!("{}: {}", p.key, p.reason)).collect();
    lines.join("\n")
}

impl Config {
    /// Parse and validate a TOML document.
    ///
    /// # Errors
    /// Every problem at once: TOML syntax, unknown keys, bad values, broken references.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigErrors> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            ConfigErrors(vec![ConfigProblem { key: toml_error_key(&e), reason: e.message().to_string() }])
        })?;
        validate::validate(raw)
    }

    /// Read, parse and validate a file.
    ///
    /// # Errors
    /// The file cannot be read, or [`Config::from_toml_str`] fails.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigProblem {
                key: path.display().to_string(),
                reason: format!("cannot read the file: {e}"),
            }])
        })?;
        Config::from_toml_str(&text)
    }

    /// The user with this name.
    #[must_use]
    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }

    /// True if clients may use this database.
    #[must_use]
    pub fn database_allowed(&self, db: &str) -> bool {
        self.databases.as_ref().is_none_or(|list| list.iter().any(|d| d == db))
    }
}

/// TOML errors carry a byte span, not a key: name the line instead.
fn toml_error_key(e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => format!("(toml, at byte {})", span.start),
        None => "(toml)".to_string(),
    }
}

#[cfg(test)]
fn validate_secret_for_tests(p: &str) -> &'static str {
    match validate::secret_kind(p) {
        Secret::Plain(_) => "plain",
        Secret::ScramVerifier(_) => "scram",
        Secret::Md5Hash(_) => "md5",
        Secret::None => "none",
    }
}

#[cfg(test)]
mod tests;
