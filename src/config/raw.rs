//! The file as written: serde structs that mirror the TOML, every field optional where the file
//! may omit it. Nothing here is trusted; `validate` turns it into a typed `Config`.

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub databases: Option<Vec<String>>,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub pool: RawPool,
    #[serde(default)]
    pub monitor: RawMonitor,
    #[serde(default)]
    pub routing: RawRouting,
    #[serde(default)]
    pub failover: RawFailover,
    #[serde(default)]
    pub nodes: Vec<RawNode>,
    #[serde(default)]
    pub users: Vec<RawUser>,
    #[serde(default)]
    pub client_tls: super::security::RawClientTls,
    #[serde(default)]
    pub server_tls: super::security::RawServerTls,
    pub auth: Option<super::security::RawAuth>,
    #[serde(default)]
    pub lifecycle: super::ops::RawLifecycle,
    #[serde(default)]
    pub runtime: super::ops::RawRuntime,
    #[serde(default)]
    pub admin: super::ops::RawAdmin,
    #[serde(default)]
    pub log: super::ops::RawLog,
}

/// `[limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_client_connections: Option<i64>,
    pub listen_backlog: Option<i64>,
    pub max_message_bytes: Option<i64>,
    pub startup_timeout: Option<String>,
    pub idle_client_timeout: Option<String>,
    pub tcp_keepalive: Option<String>,
}

/// `[pool]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub mode: Option<String>,
    pub size: Option<i64>,
    pub checkout_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub server_idle_timeout: Option<String>,
    pub server_lifetime: Option<String>,
    pub max_prepared_statements: Option<i64>,
}

/// `[monitor]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMonitor {
    pub user: Option<String>,
    pub database: Option<String>,
    pub interval: Option<String>,
    pub probe_timeout: Option<String>,
    pub down_after: Option<i64>,
}

/// `[failover]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailover {
    pub hold_timeout: Option<String>,
    pub switchover_timeout: Option<String>,
}

/// `[routing]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouting {
    pub primary_reads: Option<String>,
    pub read_only_functions: Option<Vec<String>>,
    pub classify_cache_entries: Option<i64>,
    pub replica_max_lag_bytes: Option<i64>,
    pub replica_max_lag: Option<String>,
}

/// `[[nodes]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub name: Option<String>,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub weight: Option<i64>,
}

/// `[[users]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    pub name: Option<String>,
    pub password: Option<String>,
    pub auth: Option<String>,
    pub server_password: Option<String>,
    pub default_route: Option<String>,
}
