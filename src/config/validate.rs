//! Raw -> typed. Each check records a problem and carries on with a default, so one pass reports
//! everything that is wrong.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use super::raw::{RawConfig, RawFailover, RawLimits, RawMonitor, RawNode, RawPool, RawRouting, RawUser};
use super::{
    AuthMethod, Config, ConfigErrors, ConfigProblem, DefaultRoute, FailoverConfig, Limits, MonitorConfig, NodeConfig,
    PoolConfig, PoolMode, PrimaryReads, RoutingConfig, Secret, UserConfig,
};

/// Collects problems while converting.
#[derive(Default)]
pub(super) struct Checker {
    pub(super) problems: Vec<ConfigProblem>,
}

impl Checker {
    pub(super) fn problem(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.problems.push(ConfigProblem { key: key.into(), reason: reason.into() });
    }

    /// An integer within `[min, max]`, or `default` when absent.
    pub(super) fn int(&mut self, key: &str, value: Option<i64>, default: i64, min: i64, max: i64) -> i64 {
        let v = value.unwrap_or(default);
        if v < min || v > max {
            self.problem(key, format!("{v} is out of range ({min}..={max})"));
            return default;
        }
        v
    }

    /// A humantime duration (`"5s"`, `"250ms"`, `"10m"`), or `default` when absent.
    pub(super) fn duration(&mut self, key: &str, value: Option<&str>, default: Duration) -> Duration {
        let Some(text) = value else { return default };
        match humantime::parse_duration(text.trim()) {
            Ok(d) => d,
            Err(e) => {
                self.problem(key, format!("{text:?} is not a duration like \"5s\" ({e})"));
                default
            }
        }
    }

    /// One of `choices` (case-insensitive), or `default` when absent.
    pub(super) fn choice<T: Copy>(&mut self, key: &str, value: Option<&str>, default: T, choices: &[(&str, T)]) -> T {
        let Some(text) = value else { return default };
        if let Some((_, v)) = choices.iter().find(|(name, _)| name.eq_ignore_ascii_case(text)) {
            return *v;
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        self.problem(key, format!("{text:?} is not one of {}", names.join(" | ")));
        default
    }

    pub(super) fn nonempty(&mut self, key: &str, value: Option<&str>) -> String {
        match value {
            Some(v) if !v.trim().is_empty() => v.to_string(),
            _ => {
                self.problem(key, "is required and must not be empty");
                String::new()
            }
        }
    }
}

/// Turn the raw file into a typed `Config`, or report every problem.
pub(super) fn validate(raw: RawConfig) -> Result<Config, ConfigErrors> {
    let mut c = Checker::default();
    let listen = listen_addr(&mut c, raw.listen.as_deref());
    let admin_listen = raw.admin_listen.as_deref().and_then(|text| {
        text.parse()
            .map_err(|e| c.problem("admin_listen", format!("{text:?} is not an address like \"127.0.0.1:9187\" ({e})")))
            .ok()
    });
    let limits = limits(&mut c, &raw.limits);
    let pool = pool(&mut c, &raw.pool);
    let nodes = nodes(&mut c, &raw.nodes);
    let users = users(&mut c, &raw.users);
    let monitor = monitor(&mut c, &raw.monitor, &users);
    let routing = routing(&mut c, &raw.routing);
    let failover = failover(&mut c, &raw.failover);
    let client_tls = super::security::client_tls(&mut c, &raw.client_tls);
    let server_tls = super::security::server_tls(&mut c, &raw.server_tls);
    let auth = super::security::auth(&mut c, raw.auth.as_ref(), &users);
    let ops = super::ops::validate(&mut c, &raw, &users);
    if let Some(dbs) = &raw.databases {
        for (i, db) in dbs.iter().enumerate() {
            if db.trim().is_empty() {
                c.problem(format!("databases[{i}]"), "must not be empty");
            }
        }
    }
    if !c.problems.is_empty() {
        return Err(ConfigErrors(c.problems));
    }
    Ok(Config {
        listen,
        admin_listen,
        databases: raw.databases,
        limits,
        pool,
        monitor,
        routing,
        failover,
        nodes,
        users,
        client_tls,
        server_tls,
        auth,
        ops,
    })
}

fn listen_addr(c: &mut Checker, value: Option<&str>) -> SocketAddr {
    let fallback = SocketAddr::from(([127, 0, 0, 1], 6432));
    let Some(text) = value else { return fallback };
    text.parse().unwrap_or_else(|e| {
        c.problem("listen", format!("{text:?} is not an address like \"127.0.0.1:6432\" ({e})"));
        fallback
    })
}

fn limits(c: &mut Checker, raw: &RawLimits) -> Limits {
    let idle = c.duration("limits.idle_client_timeout", raw.idle_client_timeout.as_deref(), Duration::ZERO);
    let startup = c.duration("limits.startup_timeout", raw.startup_timeout.as_deref(), Duration::from_secs(5));
    if startup.is_zero() {
        c.problem("limits.startup_timeout", "must be greater than zero");
    }
    Limits {
        max_client_connections: c.int("limits.max_client_connections", raw.max_client_connections, 5000, 1, 1_000_000)
            as usize,
        listen_backlog: c.int("limits.listen_backlog", raw.listen_backlog, 1024, 1, 65535) as u32,
        max_message_bytes: c.int("limits.max_message_bytes", raw.max_message_bytes, 64 << 20, 1024, 1 << 30) as usize,
        startup_timeout: startup,
        idle_client_timeout: (!idle.is_zero()).then_some(idle),
        tcp_keepalive: {
            let k = c.duration("limits.tcp_keepalive", raw.tcp_keepalive.as_deref(), Duration::from_secs(60));
            (!k.is_zero()).then_some(k)
        },
    }
}

fn pool(c: &mut Checker, raw: &RawPool) -> PoolConfig {
    let modes = [("transaction", PoolMode::Transaction), ("session", PoolMode::Session)];
    // A zero wait would fail every checkout that finds the pool busy, and every connect.
    let positive = |c: &mut Checker, key: &str, value: Option<&str>, default: Duration| {
        let d = c.duration(key, value, default);
        if d.is_zero() {
            c.problem(key, "must be greater than zero");
        }
        d
    };
    let checkout_timeout =
        positive(c, "pool.checkout_timeout", raw.checkout_timeout.as_deref(), Duration::from_secs(5));
    let connect_timeout = positive(c, "pool.connect_timeout", raw.connect_timeout.as_deref(), Duration::from_secs(3));
    // Zero turns the limit off (as `limits.idle_client_timeout`, and PgBouncer's settings).
    let off_if_zero = |d: Duration| if d.is_zero() { Duration::MAX } else { d };
    PoolConfig {
        mode: c.choice("pool.mode", raw.mode.as_deref(), PoolMode::Transaction, &modes),
        size: c.int("pool.size", raw.size, 20, 1, 10_000) as usize,
        checkout_timeout,
        connect_timeout,
        server_idle_timeout: off_if_zero(c.duration(
            "pool.server_idle_timeout",
            raw.server_idle_timeout.as_deref(),
            Duration::from_secs(600),
        )),
        server_lifetime: off_if_zero(c.duration(
            "pool.server_lifetime",
            raw.server_lifetime.as_deref(),
            Duration::from_secs(3600),
        )),
        max_prepared_statements: c.int("pool.max_prepared_statements", raw.max_prepared_statements, 500, 1, 1_000_000)
            as usize,
    }
}

fn nodes(c: &mut Checker, raw: &[RawNode]) -> Vec<NodeConfig> {
    if raw.is_empty() {
        c.problem("nodes", "at least one [[nodes]] entry is required");
    }
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, n) in raw.iter().enumerate() {
        let key = format!("nodes[{i}]");
        let name = c.nonempty(&format!("{key}.name"), n.name.as_deref());
        if !name.is_empty() && !names.insert(name.clone()) {
            c.problem(format!("{key}.name"), format!("{name:?} is used by another node"));
        }
        let host = c.nonempty(&format!("{key}.host"), n.host.as_deref());
        if n.port.is_none() {
            c.problem(format!("{key}.port"), "is required");
        }
        let port = c.int(&format!("{key}.port"), n.port, 5432, 1, 65535) as u16;
        let weight = c.int(&format!("{key}.weight"), n.weight, 1, 1, 1000) as u32;
        out.push(NodeConfig { name, host, port, weight });
    }
    out
}

fn users(c: &mut Checker, raw: &[RawUser]) -> Vec<UserConfig> {
    if raw.is_empty() {
        c.problem("users", "at least one [[users]] entry is required");
    }
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, u) in raw.iter().enumerate() {
        let key = format!("users[{i}]");
        let name = c.nonempty(&format!("{key}.name"), u.name.as_deref());
        if !name.is_empty() && !names.insert(name.clone()) {
            c.problem(format!("{key}.name"), format!("{name:?} is listed twice"));
        }
        out.push(user(c, &key, name, u));
    }
    out
}

fn user(c: &mut Checker, key: &str, name: String, u: &RawUser) -> UserConfig {
    let methods = [("scram-sha-256", AuthMethod::ScramSha256), ("md5", AuthMethod::Md5), ("trust", AuthMethod::Trust)];
    let auth = c.choice(&format!("{key}.auth"), u.auth.as_deref(), AuthMethod::ScramSha256, &methods);
    let secret = secret(u.password.as_deref());
    match (auth, &secret) {
        (AuthMethod::Trust, _) => {}
        (_, Secret::None) => c.problem(format!("{key}.password"), "is required unless auth = \"trust\""),
        (AuthMethod::Md5, Secret::ScramVerifier(_)) => c.problem(
            format!("{key}.password"),
            "a SCRAM verifier cannot check md5 logins: give the plain password or an md5 hash",
        ),
        (AuthMethod::ScramSha256, Secret::Md5Hash(_)) => c.problem(
            format!("{key}.password"),
            "an md5 hash cannot check SCRAM logins: give the plain password or a SCRAM verifier",
        ),
        (AuthMethod::ScramSha256, Secret::ScramVerifier(v)) => {
            if let Err(e) = crate::auth::ScramVerifier::parse(v) {
                c.problem(format!("{key}.password"), format!("not a valid SCRAM verifier: {e}"));
            }
        }
        _ => {}
    }
    let routes = [("auto", DefaultRoute::Auto), ("primary", DefaultRoute::Primary), ("replica", DefaultRoute::Replica)];
    let default_route =
        c.choice(&format!("{key}.default_route"), u.default_route.as_deref(), DefaultRoute::Auto, &routes);
    let server_password = u.server_password.clone().or_else(|| match &secret {
        Secret::Plain(p) => Some(p.clone()),
        _ => None,
    });
    UserConfig { name, auth, secret, server_password, default_route }
}

#[cfg(test)]
pub(super) fn secret_kind(p: &str) -> Secret {
    secret(Some(p))
}

fn secret(password: Option<&str>) -> Secret {
    match password {
        None | Some("") => Secret::None,
        Some(p) if p.starts_with("SCRAM-SHA-256$") => Secret::ScramVerifier(p.to_string()),
        Some(p) if p.len() == 35 && p.starts_with("md5") && p[3..].bytes().all(|b| b.is_ascii_hexdigit()) => {
            Secret::Md5Hash(p.to_string())
        }
        Some(p) => Secret::Plain(p.to_string()),
    }
}

fn monitor(c: &mut Checker, raw: &RawMonitor, users: &[UserConfig]) -> MonitorConfig {
    let user = match raw.user.as_deref() {
        None => 0,
        Some(name) => users.iter().position(|u| u.name == name).unwrap_or_else(|| {
            c.problem("monitor.user", format!("{name:?} is not one of [[users]]"));
            0
        }),
    };
    let interval = c.duration("monitor.interval", raw.interval.as_deref(), Duration::from_millis(250));
    if interval < Duration::from_millis(10) {
        c.problem("monitor.interval", "must be at least 10ms");
    }
    let probe_timeout = c.duration("monitor.probe_timeout", raw.probe_timeout.as_deref(), Duration::from_secs(1));
    if probe_timeout < Duration::from_millis(10) {
        c.problem("monitor.probe_timeout", "must be at least 10ms");
    }
    let down_after = c.int("monitor.down_after", raw.down_after, 3, 1, 1000) as u32;
    let database = raw.database.clone().unwrap_or_else(|| "postgres".to_string());
    MonitorConfig { user, database, interval, probe_timeout, down_after }
}

fn failover(c: &mut Checker, raw: &RawFailover) -> FailoverConfig {
    FailoverConfig {
        hold_timeout: c.duration("failover.hold_timeout", raw.hold_timeout.as_deref(), Duration::from_secs(10)),
        switchover_timeout: c.duration(
            "failover.switchover_timeout",
            raw.switchover_timeout.as_deref(),
            Duration::from_secs(30),
        ),
    }
}

fn routing(c: &mut Checker, raw: &RawRouting) -> RoutingConfig {
    let reads =
        [("never", PrimaryReads::Never), ("fallback", PrimaryReads::Fallback), ("always", PrimaryReads::Always)];
    RoutingConfig {
        primary_reads: c.choice("routing.primary_reads", raw.primary_reads.as_deref(), PrimaryReads::Fallback, &reads),
        read_only_functions: raw.read_only_functions.clone().unwrap_or_default(),
        classify_cache_entries: c.int(
            "routing.classify_cache_entries",
            raw.classify_cache_entries,
            10_000,
            0,
            10_000_000,
        ) as usize,
        replica_max_lag_bytes: match c.int(
            "routing.replica_max_lag_bytes",
            raw.replica_max_lag_bytes,
            64 << 20,
            0,
            i64::MAX,
        ) {
            0 => None,
            n => Some(n as u64),
        },
        replica_max_lag: Some(c.duration(
            "routing.replica_max_lag",
            raw.replica_max_lag.as_deref(),
            Duration::from_secs(10),
        ))
        .filter(|d| !d.is_zero()),
    }
}
