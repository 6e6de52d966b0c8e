//! Towards clients: the current server certificate and the TLS handshake.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::{end_point_hash, load_certs, load_key, provider, MaybeTls, TlsError, ALPN_POSTGRESQL};
use crate::config::{ClientTlsConfig, ClientTlsMode};

/// One loaded certificate: what a handshake uses, and its channel binding hash.
struct Loaded {
    acceptor: TlsAcceptor,
    end_point: Arc<[u8]>,
}

/// sluice's TLS server side: mode, files, and the certificate in use (swapped on reload).
pub struct ClientTls {
    mode: ClientTlsMode,
    files: Option<(PathBuf, PathBuf)>,
    current: ArcSwapOption<Loaded>,
}

/// A client connection after a successful TLS handshake.
pub struct Accepted {
    /// The encrypted stream.
    pub stream: MaybeTls,
    /// `tls-server-end-point` data of the certificate this handshake used.
    pub end_point: Arc<[u8]>,
}

impl ClientTls {
    /// Load the certificate and key named by `[client_tls]` (nothing for `disable`).
    ///
    /// # Errors
    /// A file cannot be read or parsed, or the key does not fit the certificate.
    pub fn new(cfg: &ClientTlsConfig) -> Result<Self, TlsError> {
        let files = match (cfg.mode, &cfg.cert, &cfg.key) {
            (ClientTlsMode::Disable, _, _) => None,
            (_, Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            _ => return Err(TlsError::Config { key: "client_tls", reason: "cert and key are required".into() }),
        };
        let current = match &files {
            Some((cert, key)) => Some(Arc::new(load(cert, key)?)),
            None => None,
        };
        Ok(Self { mode: cfg.mode, files, current: ArcSwapOption::new(current) })
    }

    /// No TLS for clients (SSLRequest is answered `N`).
    #[must_use]
    pub fn disabled() -> Self {
        Self { mode: ClientTlsMode::Disable, files: None, current: ArcSwapOption::empty() }
    }

    /// The configured mode.
    #[must_use]
    pub fn mode(&self) -> ClientTlsMode {
        self.mode
    }

    /// Whether clients can get TLS at all.
    #[must_use]
    pub fn enabled(&self) -> bool {
        self.current.load().is_some()
    }

    /// Read the certificate and key files again. New handshakes use them; established sessions
    /// keep what they negotiated. On error the old certificate stays in use.
    ///
    /// # Errors
    /// The new files cannot be used (the reason names the key and file).
    pub fn reload(&self) -> Result<bool, TlsError> {
        let Some((cert, key)) = &self.files else { return Ok(false) };
        let loaded = load(cert, key)?;
        self.current.store(Some(Arc::new(loaded)));
        Ok(true)
    }

    /// Run the TLS handshake on `tcp`. `direct`: the client started with a ClientHello
    /// (PostgreSQL 17's direct negotiation), which must name the `postgresql` ALPN protocol.
    ///
    /// # Errors
    /// TLS is not configured, the handshake failed, or a direct client did not ask for ALPN
    /// `postgresql`. The caller bounds the time.
    pub async fn accept(&self, tcp: TcpStream, direct: bool) -> Result<Accepted, std::io::Error> {
        let Some(loaded) = self.current.load_full() else {
            return Err(std::io::Error::other("TLS is not configured"));
        };
        let tls = loaded.acceptor.accept(tcp).await?;
        if direct && tls.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL) {
            return Err(std::io::Error::other("direct TLS connection without ALPN \"postgresql\""));
        }
        Ok(Accepted { stream: MaybeTls::Accepted(Box::new(tls)), end_point: Arc::clone(&loaded.end_point) })
    }
}

fn load(cert: &Path, key: &Path) -> Result<Loaded, TlsError> {
    let certs = load_certs("client_tls.cert", cert)?;
    let private = load_key("client_tls.key", key)?;
    let end_point: Arc<[u8]> = end_point_hash(&certs[0]).into();
    let bad = |e: rustls::Error| TlsError::Config { key: "client_tls.key", reason: e.to_string() };
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(bad)?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(bad)?;
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Loaded { acceptor: TlsAcceptor::from(Arc::new(config)), end_point })
}
