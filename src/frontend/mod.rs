//! Frontend: the listener, the startup handshake and client authentication, and one session
//! state machine per client.
//!
//! A session reads a unit of client traffic (one Query, or an extended batch up to Sync), asks the
//! router where it goes, checks out a server connection, forwards the unit and relays the replies
//! up to ReadyForQuery, then releases the connection by the transaction status byte. This module
//! owns client-facing errors; it never publishes topology.

pub mod admin_console;
pub mod cancel;
pub mod catalog;
pub mod client_auth;
mod duplex;
mod executed;
pub mod expect;
pub mod handshake;
pub mod lifecycle;
pub mod listener;
pub mod lookup;
pub mod params;
mod relay;
pub mod session;
mod statements;
mod unit;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use crate::auth::ScramVerifier;
use crate::backend::Pools;
use crate::config::{AuthMethod, Config, Secret};
use crate::keyed_hash::KeyedState;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::reload::Control;
use crate::topology::TopologyHandle;

/// What a client is checked against, prepared once at startup (no PBKDF2 per login).
pub struct Credentials {
    /// How the client must authenticate.
    pub method: AuthMethod,
    /// For SCRAM.
    pub scram: Option<Arc<ScramVerifier>>,
    /// For md5: the stored `md5...` hash.
    pub md5: Option<String>,
}

impl Credentials {
    fn for_user(name: &str, method: AuthMethod, secret: &Secret) -> Self {
        let scram = match secret {
            Secret::Plain(p) => Some(ScramVerifier::generate(p)),
            Secret::ScramVerifier(v) => ScramVerifier::parse(v).ok(),
            Secret::Md5Hash(_) | Secret::None => None,
        };
        let md5 = match secret {
            Secret::Plain(p) => Some(crate::auth::md5_password_hash(name, p)),
            Secret::Md5Hash(h) => Some(h.clone()),
            _ => None,
        };
        Self { method, scram: scram.map(Arc::new), md5 }
    }
}

/// Handles every session shares.
pub struct Shared {
    /// The configuration (replaced by a reload; every access reads the current one).
    pub config: Arc<Live<Config>>,
    /// Current topology.
    pub topology: TopologyHandle,
    /// Server connection pools.
    pub pools: Arc<Pools>,
    /// Per-user credentials (replaced by a reload).
    pub credentials: Live<CredentialsByUser>,
    /// Statement classifiers, one per database.
    pub classifiers: catalog::Classifiers,
    /// Round-robin ticket counter for replica choice.
    pub tickets: AtomicU64,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// Statements a server accepted, keyed by (database, user, session state, statement): a
    /// later Parse of one is answered without a server connection.
    pub accepted_statements: Mutex<HashSet<u64>>,
    /// Startup states shared by the sessions that logged in with the same parameters.
    pub session_states: params::SharedStates,
    /// TLS towards clients (certificate swapped on reload).
    pub client_tls: crate::tls::ClientTls,
    /// auth_query lookups of users the configuration does not list.
    pub lookup: Option<lookup::UserLookup>,
    /// Drain, pause and the registry of connected clients.
    pub lifecycle: lifecycle::Lifecycle,
    /// Reload and shutdown requests (the admin console sends them).
    pub control: Control,
    /// The failover actions (switchover, drain, undrain, unfence), shared by the admin HTTP
    /// endpoint and the admin console (`None`: this proxy was built without them).
    pub failover: Option<crate::admin::failover::FailoverAdmin>,
}

impl Shared {
    /// Build the shared handles.
    #[must_use]
    pub fn new(
        config: Arc<Live<Config>>,
        topology: TopologyHandle,
        pools: Arc<Pools>,
        metrics: Arc<Metrics>,
        control: Control,
    ) -> Self {
        let credentials = Live::new(credentials(&config));
        let classifiers = catalog::Classifiers::new(Arc::clone(&config), Arc::clone(&pools), topology.clone());
        let lookup = config.auth.as_ref().map(|a| {
            let as_user = config.users[a.user].name.clone();
            let timeout = config.pool.checkout_timeout + config.pool.connect_timeout;
            lookup::UserLookup::new(a.clone(), as_user, Arc::clone(&pools), topology.clone(), timeout)
        });
        Self {
            config,
            topology,
            pools,
            credentials,
            classifiers,
            tickets: AtomicU64::new(0),
            metrics,
            accepted_statements: Mutex::new(HashSet::new()),
            session_states: params::SharedStates::default(),
            client_tls: crate::tls::ClientTls::disabled(),
            lookup,
            lifecycle: lifecycle::Lifecycle::default(),
            control,
            failover: None,
        }
    }

    /// Serve clients with this TLS configuration.
    #[must_use]
    pub fn with_client_tls(mut self, tls: crate::tls::ClientTls) -> Self {
        self.client_tls = tls;
        self
    }

    /// Carry out the admin console's failover commands through `ops`.
    #[must_use]
    pub fn with_failover(mut self, ops: crate::admin::failover::FailoverAdmin) -> Self {
        self.failover = Some(ops);
        self
    }
}

/// Credentials by user name: looked up at every login, so hashed with [`KeyedState`] (SipHash
/// cost a trust login ~200 instructions here).
pub type CredentialsByUser = HashMap<String, Credentials, KeyedState>;

/// What every configured user is checked against, prepared once per configuration.
#[must_use]
pub fn credentials(config: &Config) -> CredentialsByUser {
    config.users.iter().map(|u| (u.name.clone(), Credentials::for_user(&u.name, u.auth, &u.secret))).collect()
}

/// The size of the future `f` returns, without calling it (the size tests of the futures a
/// task keeps for an idle client's life).
#[cfg(test)]
pub(crate) fn future_size<A, B, F: FnOnce(A, B) -> Fut, Fut>(_: &F) -> usize {
    std::mem::size_of::<Fut>()
}
