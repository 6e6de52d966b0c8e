//! The security sections: `[client_tls]`, `[server_tls]` and `[auth]` (raw form and checks).
//!
//! Only paths and modes are validated here; the PEM files are read when the proxy starts (and on
//! reload), where a broken file is reported with its key too.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::validate::Checker;

/// `[client_tls]`: TLS between clients and sluice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClientTlsMode {
    /// SSLRequest is answered `N`; direct TLS is refused.
    #[default]
    Disable,
    /// TLS when the client asks for it, plaintext otherwise.
    Allow,
    /// A plaintext startup is refused with `28000`.
    Require,
}

/// `[server_tls]`: TLS between sluice and the servers, with libpq's `sslmode` meanings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ServerTlsMode {
    /// Never TLS.
    #[default]
    Disable,
    /// TLS if the server offers it, certificate not checked.
    Prefer,
    /// TLS or fail, certificate not checked.
    Require,
    /// TLS, the certificate chain checked against `ca`.
    VerifyCa,
    /// Like `VerifyCa`, and the certificate must name the node's host.
    VerifyFull,
}

/// `[client_tls]`
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ClientTlsConfig {
    /// Whether clients may or must use TLS.
    pub mode: ClientTlsMode,
    /// Certificate chain (PEM); required unless the mode is `disable`.
    pub cert: Option<PathBuf>,
    /// Private key (PEM).
    pub key: Option<PathBuf>,
}

/// `[server_tls]`
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ServerTlsConfig {
    /// How sluice talks to servers.
    pub mode: ServerTlsMode,
    /// CA certificates (PEM) that server certificates must chain to (verify-ca / verify-full).
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for certificate authentication to servers.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub key: Option<PathBuf>,
}

/// `[auth]`: looking up users the configuration does not list (auth_query).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthQueryConfig {
    /// Index into `users` of the user sluice looks others up as.
    pub user: usize,
    /// The lookup query; `$1` is the user name, it returns (name, stored password).
    pub query: String,
    /// How long a looked-up verifier (or a "no such user") is trusted.
    pub cache_ttl: Duration,
    /// At most this many users are cached.
    pub cache_entries: usize,
}

/// The default lookup: needs a superuser; a `SECURITY DEFINER` function lets it be unprivileged.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = $1";

/// `[client_tls]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientTls {
    pub mode: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// `[server_tls]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerTls {
    pub mode: Option<String>,
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// `[auth]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub user: Option<String>,
    pub query: Option<String>,
    pub cache_ttl: Option<String>,
    pub cache_entries: Option<i64>,
}

fn path(c: &mut Checker, key: &str, value: Option<&str>) -> Option<PathBuf> {
    match value {
        Some(v) if v.trim().is_empty() => {
            c.problem(key, "must not be empty (leave the key out instead)");
            None
        }
        v => v.map(PathBuf::from),
    }
}

pub(super) fn client_tls(c: &mut Checker, raw: &RawClientTls) -> ClientTlsConfig {
    let modes =
        [("disable", ClientTlsMode::Disable), ("allow", ClientTlsMode::Allow), ("require", ClientTlsMode::Require)];
    let mode = c.choice("client_tls.mode", raw.mode.as_deref(), ClientTlsMode::Disable, &modes);
    let cert = path(c, "client_tls.cert", raw.cert.as_deref());
    let key = path(c, "client_tls.key", raw.key.as_deref());
    if mode != ClientTlsMode::Disable {
        if cert.is_none() {
            c.problem("client_tls.cert", "is required when client_tls.mode is not \"disable\"");
        }
        if key.is_none() {
            c.problem("client_tls.key", "is required when client_tls.mode is not \"disable\"");
        }
    }
    ClientTlsConfig { mode, cert, key }
}

pub(super) fn server_tls(c: &mut Checker, raw: &RawServerTls) -> ServerTlsConfig {
    let modes = [
        ("disable", ServerTlsMode::Disable),
        ("prefer", ServerTlsMode::Prefer),
        ("require", ServerTlsMode::Require),
        ("verify-ca", ServerTlsMode::VerifyCa),
        ("verify-full", ServerTlsMode::VerifyFull),
    ];
    let mode = c.choice("server_tls.mode", raw.mode.as_deref(), ServerTlsMode::Disable, &modes);
    let ca = path(c, "server_tls.ca", raw.ca.as_deref());
    let cert = path(c, "server_tls.cert", raw.cert.as_deref());
    let key = path(c, "server_tls.key", raw.key.as_deref());
    if matches!(mode, ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull) && ca.is_none() {
        c.problem("server_tls.ca", "is required for verify-ca and verify-full");
    }
    if cert.is_some() != key.is_some() {
        c.problem("server_tls.key", "server_tls.cert and server_tls.key go together");
    }
    ServerTlsConfig { mode, ca, cert, key }
}

pub(super) fn auth(c: &mut Checker, raw: Option<&RawAuth>, users: &[super::UserConfig]) -> Option<AuthQueryConfig> {
    let raw = raw?;
    let user = match raw.user.as_deref() {
        None => {
            c.problem("auth.user", "is required: the [[users]] entry sluice looks other users up as");
            0
        }
        Some(name) => users.iter().position(|u| u.name == name).unwrap_or_else(|| {
            c.problem("auth.user", format!("{name:?} is not one of [[users]]"));
            0
        }),
    };
    let query = raw.query.clone().unwrap_or_else(|| DEFAULT_AUTH_QUERY.to_string());
    if !query.contains("$1") {
        c.problem("auth.query", "must use $1 for the user name");
    }
    let cache_ttl = c.duration("auth.cache_ttl", raw.cache_ttl.as_deref(), Duration::from_secs(60));
    let cache_entries = c.int("auth.cache_entries", raw.cache_entries, 10_000, 1, 10_000_000) as usize;
    Some(AuthQueryConfig { user, query, cache_ttl, cache_entries })
}

#[cfg(test)]
mod tests {
    use crate::config::{ClientTlsMode, Config, ServerTlsMode};

    const BASE: &str =
        "[[nodes]]\nname = \"a\"\nhost = \"db\"\nport = 5432\n[[users]]\nname = \"u\"\npassword = \"p\"\n";

    fn keys(extra: &str) -> Vec<String> {
        match Config::from_toml_str(&format!("{BASE}{extra}")) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.into_iter().map(|p| p.key).collect(),
        }
    }

    #[test]
    fn defaults_are_plaintext_without_lookup() {
        let c = Config::from_toml_str(BASE).unwrap();
        assert_eq!(c.client_tls.mode, ClientTlsMode::Disable);
        assert_eq!(c.server_tls.mode, ServerTlsMode::Disable);
        assert!(c.auth.is_none());
    }

    #[test]
    fn problems_name_their_keys() {
        let cases: [(&str, &[&str]); 7] = [
            ("[client_tls]\nmode = \"require\"\n", &["client_tls.cert", "client_tls.key"]),
            ("[client_tls]\nmode = \"always\"\n", &["client_tls.mode"]),
            ("[server_tls]\nmode = \"verify-full\"\n", &["server_tls.ca"]),
            ("[server_tls]\nmode = \"require\"\ncert = \"c.pem\"\n", &["server_tls.key"]),
            ("[auth]\nuser = \"ghost\"\n", &["auth.user"]),
            ("[auth]\nuser = \"u\"\nquery = \"SELECT 1\"\ncache_ttl = \"soon\"\n", &["auth.query", "auth.cache_ttl"]),
            ("[server_tls]\nmode = \"verify-ca\"\nca = \"ca.pem\"\n[auth]\nuser = \"u\"\n", &[]),
        ];
        for (extra, want) in cases {
            assert_eq!(keys(extra), want.to_vec(), "{extra}");
        }
    }
}
