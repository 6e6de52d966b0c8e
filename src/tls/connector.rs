//! Towards servers: SSLRequest negotiation and the TLS handshake, with libpq's `sslmode`
//! meanings (`[server_tls] mode`) and SNI with the node's host name.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{load_certs, load_key, provider, MaybeTls, TlsError, ALPN_POSTGRESQL};
use crate::config::{ServerTlsConfig, ServerTlsMode};
use crate::protocol::startup::SSL_REQUEST;

/// How sluice opens server sockets: plaintext, or TLS with a prepared rustls config. Cheap to
/// clone (one `Arc`).
#[derive(Clone)]
pub struct ServerTls {
    mode: ServerTlsMode,
    config: Option<Arc<rustls::ClientConfig>>,
}

/// Why a server socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    /// TCP connect or the SSLRequest exchange failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server answered `N` to SSLRequest but the mode needs TLS.
    #[error("the server does not support TLS, but server_tls.mode = \"{0}\" requires it")]
    NotOffered(&'static str),
    /// The TLS handshake failed (for verify modes: the certificate was not accepted).
    #[error("TLS handshake failed ({mode}): {source}")]
    Handshake {
        /// The configured mode.
        mode: &'static str,
        /// rustls's reason, e.g. an unknown issuer.
        source: std::io::Error,
    },
}

impl ServerTls {
    /// Plaintext to every server.
    #[must_use]
    pub fn disabled() -> Self {
        Self { mode: ServerTlsMode::Disable, config: None }
    }

    /// Prepare `[server_tls]`: read the CA and the optional client certificate.
    ///
    /// # Errors
    /// A file cannot be used.
    pub fn new(cfg: &ServerTlsConfig) -> Result<Self, TlsError> {
        if cfg.mode == ServerTlsMode::Disable {
            return Ok(Self::disabled());
        }
        let bad = |key| move |e: rustls::Error| TlsError::Config { key, reason: e.to_string() };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(bad("server_tls.mode"))?;
        let builder = match (cfg.mode, &cfg.ca) {
            (ServerTlsMode::VerifyFull, Some(ca)) => builder.with_root_certificates(roots(ca)?),
            (ServerTlsMode::VerifyCa, Some(ca)) => {
                let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::Config { key: "server_tls.ca", reason: e.to_string() })?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(Lenient { chain: Some(inner), provider: provider() }))
            }
            (ServerTlsMode::VerifyCa | ServerTlsMode::VerifyFull, None) => {
                return Err(TlsError::Config { key: "server_tls.ca", reason: "is required".into() })
            }
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Lenient { chain: None, provider: provider() })),
        };
        let mut config = match (&cfg.cert, &cfg.key) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(load_certs("server_tls.cert", cert)?, load_key("server_tls.key", key)?)
                .map_err(bad("server_tls.key"))?,
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
        Ok(Self { mode: cfg.mode, config: Some(Arc::new(config)) })
    }

    /// Open a socket to `host:port` and negotiate TLS as the mode says. The caller bounds the time.
    ///
    /// # Errors
    /// See [`ServerTlsError`].
    pub async fn connect(&self, host: &str, port: u16) -> Result<MaybeTls, ServerTlsError> {
        let mut tcp = TcpStream::connect((host, port)).await?;
        let _ = tcp.set_nodelay(true);
        let Some(config) = &self.config else { return Ok(MaybeTls::Plain(tcp)) };
        let mut request = [0u8; 8];
        request[..4].copy_from_slice(&8i32.to_be_bytes());
        request[4..].copy_from_slice(&SSL_REQUEST.to_be_bytes());
        tcp.write_all(&request).await?;
        match tcp.read_u8().await? {
            b'S' => {}
            b'N' if self.mode == ServerTlsMode::Prefer => return Ok(MaybeTls::Plain(tcp)),
            b'N' => return Err(ServerTlsError::NotOffered(mode_name(self.mode))),
            other => {
                let msg = format!("unexpected answer {:?} to SSLRequest", other as char);
                return Err(ServerTlsError::Io(std::io::Error::other(msg)));
            }
        }
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| ServerTlsError::Io(std::io::Error::other(format!("host {host:?}: {e}"))))?;
        let tls = TlsConnector::from(Arc::clone(config))
            .connect(name, tcp)
            .await
            .map_err(|source| ServerTlsError::Handshake { mode: mode_name(self.mode), source })?;
        Ok(MaybeTls::Connected(Box::new(tls)))
    }
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("mode", &self.mode).finish_non_exhaustive()
    }
}

impl PartialEq for ServerTls {
    fn eq(&self, other: &Self) -> bool {
        self.mode == other.mode
            && match (&self.config, &other.config) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl Eq for ServerTls {}

fn mode_name(mode: ServerTlsMode) -> &'static str {
    match mode {
        ServerTlsMode::Disable => "disable",
        ServerTlsMode::Prefer => "prefer",
        ServerTlsMode::Require => "require",
        ServerTlsMode::VerifyCa => "verify-ca",
        ServerTlsMode::VerifyFull => "verify-full",
    }
}

fn roots(ca: &std::path::Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs("server_tls.ca", ca)? {
        roots.add(cert).map_err(|e| TlsError::Config { key: "server_tls.ca", reason: e.to_string() })?;
    }
    Ok(roots)
}

/// The verifier of `prefer`/`require` (`chain: None`: encryption without checking who the server
/// is, libpq's meaning) and `verify-ca` (the chain must lead to the CA; the host name is not
/// checked). The handshake signature is checked against the presented certificate either way.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else { return Ok(ServerCertVerified::assertion()) };
        // webpki checks the chain before the name: a name error means the chain was good.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
