//! Wiring: build every handle from a `Config` and run the listener.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::topology::Topology;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The proxy, as a value: [`Proxy::start`] builds and runs it.
pub struct Proxy;

/// A running proxy. Dropping it stops it.
pub struct ProxyHandle {
    addr: SocketAddr,
}

impl Proxy {
    /// Build every handle from `config` and start listening.
    ///
    /// # Errors
    /// See [`StartError`].
    pub async fn start(config: Config) -> Result<ProxyHandle, StartError> {
        let _ = config;
        todo!()
    }
}

impl ProxyHandle {
    /// The address clients connect to.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current topology snapshot.
    #[must_use]
    pub fn topology(&self) -> Arc<Topology> {
        todo!()
    }

    /// Stop accepting, close client and server connections.
    pub async fn shutdown(self) {}
}
