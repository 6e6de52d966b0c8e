//! `[lifecycle]`, `[runtime]`, `[admin]` and `[log]`: the keys that say how sluice is operated
//! (shutdown, threads, the admin endpoint and SQL console, logging), parsed and validated apart
//! from the keys that say what it proxies.

use std::time::Duration;

use serde::Deserialize;

use super::raw::RawConfig;
use super::validate::Checker;
use super::UserConfig;

/// `[lifecycle]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLifecycle {
    pub shutdown_timeout: Option<String>,
    pub reuse_port: Option<bool>,
}

/// `[runtime]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub workers: Option<i64>,
    pub layout: Option<String>,
}

/// `[admin]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub token: Option<String>,
    pub users: Option<Vec<String>>,
}

/// `[log]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<String>,
    pub level: Option<String>,
}

/// `[lifecycle]`: how sluice stops and restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// After SIGTERM/SIGINT, how long open transactions and running statements may take to
    /// finish before sluice exits anyway.
    pub shutdown_timeout: Duration,
    /// Set `SO_REUSEPORT` on the client listener, so a new sluice can bind the same port while
    /// the old one drains (rolling restarts).
    pub reuse_port: bool,
}

/// How client sessions are spread over threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RuntimeLayout {
    /// One work-stealing runtime with `workers` threads: any session may run on any thread.
    Shared,
    /// `workers` single-threaded runtimes, one per thread, each accepting on its own
    /// `SO_REUSEPORT` listener: a session and the server connections it opens stay on the
    /// thread that accepted it (no cross-thread wake-ups, no balancing after accept). The
    /// default: on 2 cores it cost about 30% less CPU per transaction than `shared` at the same
    /// throughput (PERFORMANCE.md, "Third round").
    #[default]
    PerCore,
}

/// `[runtime]`: threads. Read once at start (a change needs a restart).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RuntimeConfig {
    /// How many threads serve sessions; `None`: one per available core.
    pub workers: Option<usize>,
    /// Shared work-stealing or one runtime per thread.
    pub layout: RuntimeLayout,
}

impl RuntimeConfig {
    /// Most `runtime.workers`.
    pub const MAX_WORKERS: i64 = 256;

    /// The number of session threads: `workers`, or the available cores.
    #[must_use]
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
    }
}

/// `[admin]`: who may operate sluice.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// A bearer token the admin HTTP endpoint requires (`Authorization: Bearer <token>`) on
    /// everything but `/health` and `/health/read`; `None`: no token.
    pub token: Option<String>,
    /// Users (from `[[users]]`) who may open the SQL admin console (database `sluice`).
    pub users: Vec<String>,
}

impl std::fmt::Debug for AdminConfig {
    // The token is a secret: never in a log line or a `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = self.token.as_ref().map(|_| "<redacted>");
        f.debug_struct("AdminConfig").field("token", &token).field("users", &self.users).finish()
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Text or JSON lines.
    pub format: LogFormat,
    /// A tracing filter (`info`, `sluice=debug`); `SLUICE_LOG` overrides it.
    pub level: String,
}

/// The operating keys together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpsConfig {
    /// `[lifecycle]`
    pub lifecycle: LifecycleConfig,
    /// `[runtime]`
    pub runtime: RuntimeConfig,
    /// `[admin]`
    pub admin: AdminConfig,
    /// `[log]`
    pub log: LogConfig,
}

impl Default for OpsConfig {
    fn default() -> Self {
        OpsConfig {
            lifecycle: LifecycleConfig { shutdown_timeout: Duration::from_secs(30), reuse_port: false },
            runtime: RuntimeConfig::default(),
            admin: AdminConfig { token: None, users: Vec::new() },
            log: LogConfig { format: LogFormat::Text, level: "info".to_string() },
        }
    }
}

/// Validate the operating sections; problems go into `c`.
pub(super) fn validate(c: &mut Checker, raw: &RawConfig, users: &[UserConfig]) -> OpsConfig {
    let defaults = OpsConfig::default();
    let l = &raw.lifecycle;
    let shutdown_timeout =
        c.duration("lifecycle.shutdown_timeout", l.shutdown_timeout.as_deref(), defaults.lifecycle.shutdown_timeout);
    let lifecycle = LifecycleConfig { shutdown_timeout, reuse_port: l.reuse_port.unwrap_or(false) };
    let runtime = validate_runtime(c, &raw.runtime);
    let token = raw.admin.token.clone();
    if token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        c.problem("admin.token", "must not be empty (omit it to serve without a token)");
    }
    let admin_users = raw.admin.users.clone().unwrap_or_default();
    for (i, name) in admin_users.iter().enumerate() {
        if !users.iter().any(|u| &u.name == name) {
            c.problem(format!("admin.users[{i}]"), format!("{name:?} is not one of [[users]]"));
        }
    }
    let formats = [("text", LogFormat::Text), ("json", LogFormat::Json)];
    let format = c.choice("log.format", raw.log.format.as_deref(), LogFormat::Text, &formats);
    let level = raw.log.level.clone().unwrap_or(defaults.log.level);
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        c.problem("log.level", format!("{level:?} is not a log filter like \"info\" or \"sluice=debug\""));
    }
    OpsConfig { lifecycle, runtime, admin: AdminConfig { token, users: admin_users }, log: LogConfig { format, level } }
}

fn validate_runtime(c: &mut Checker, raw: &RawRuntime) -> RuntimeConfig {
    let workers = raw.workers.map(|w| c.int("runtime.workers", Some(w), 1, 1, RuntimeConfig::MAX_WORKERS));
    let layouts = [("shared", RuntimeLayout::Shared), ("per-core", RuntimeLayout::PerCore)];
    let layout = c.choice("runtime.layout", raw.layout.as_deref(), RuntimeLayout::default(), &layouts);
    RuntimeConfig { workers: workers.and_then(|w| usize::try_from(w).ok()), layout }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    const BASE: &str = "[[nodes]]\nname = \"a\"\nhost = \"h\"\nport = 1\n[[users]]\nname = \"app\"\npassword = \"p\"\n";

    #[test]
    fn defaults_when_absent() {
        let c = Config::from_toml_str(BASE).unwrap();
        assert_eq!(c.ops, OpsConfig::default());
        assert_eq!(c.ops.lifecycle.shutdown_timeout, Duration::from_secs(30));
    }

    #[test]
    fn values_and_problems_name_their_keys() {
        let good = format!(
            "{BASE}[lifecycle]\nshutdown_timeout = \"2s\"\nreuse_port = true\n[runtime]\nworkers = 3\nlayout = \"per-core\"\n[admin]\ntoken = \"t\"\nusers = [\"app\"]\n\
             [log]\nformat = \"json\"\nlevel = \"sluice=debug\"\n"
        );
        let c = Config::from_toml_str(&good).unwrap();
        assert!(c.ops.lifecycle.reuse_port);
        assert_eq!(c.ops.runtime, RuntimeConfig { workers: Some(3), layout: RuntimeLayout::PerCore });
        assert_eq!(c.ops.runtime.worker_count(), 3);
        assert_eq!(c.ops.log.format, LogFormat::Json);
        assert_eq!(c.ops.admin.users, ["app"]);
        assert!(!format!("{:?}", c.ops.admin).contains("\"t\""), "the token is never printed");
        let bad = format!(
            "{BASE}[lifecycle]\nshutdown_timeout = \"never\"\n[runtime]\nworkers = 0\nlayout = \"per-thread\"\n[admin]\ntoken = \"\"\nusers = [\"ghost\"]\n\
             [log]\nformat = \"xml\"\nlevel = \"[[\"\n"
        );
        let err = Config::from_toml_str(&bad).unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "lifecycle.shutdown_timeout",
                "runtime.workers",
                "runtime.layout",
                "admin.token",
                "admin.users[0]",
                "log.format",
                "log.level"
            ]
        );
    }
}
