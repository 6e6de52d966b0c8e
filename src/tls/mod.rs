//! TLS for both sides of the proxy (rustls with the ring provider).
//!
//! - [`stream`]: [`MaybeTls`], the socket type the rest of the crate reads and writes.
//! - [`acceptor`]: towards clients. [`ClientTls`] holds the current certificate behind an
//!   `ArcSwap` so a reload (SIGHUP) swaps it for new handshakes while established sessions keep
//!   theirs; it also knows the certificate's `tls-server-end-point` hash for SCRAM-SHA-256-PLUS.
//! - [`connector`]: towards servers. [`ServerTls`] negotiates (SSLRequest) and verifies with
//!   libpq's `sslmode` meanings, sending SNI with the node's host name.
//!
//! Must not touch: the startup protocol beyond the 8-byte SSLRequest and its one-byte answer,
//! authentication, config parsing.

pub mod acceptor;
pub mod connector;
mod der;
pub mod stream;

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub use acceptor::{Accepted, ClientTls};
pub use connector::{ServerTls, ServerTlsError};
pub use stream::MaybeTls;

/// The ALPN protocol name PostgreSQL uses (required for direct TLS, offered always).
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// A certificate or key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file is missing, unreadable, or holds no usable PEM item.
    #[error("{key}: cannot use {path}: {reason}")]
    File {
        /// The config key that named the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the combination (e.g. the key does not match the certificate).
    #[error("{key}: {reason}")]
    Config {
        /// The config key at fault.
        key: &'static str,
        /// rustls's reason.
        reason: String,
    },
}

/// Every certificate in a PEM file, in order.
///
/// # Errors
/// Unreadable file, bad PEM, or no certificate in it.
pub fn load_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::File { key, path: path.to_path_buf(), reason };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
///
/// # Errors
/// Unreadable file, bad PEM, or no key in it.
pub fn load_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        key,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// The ring crypto provider every config here is built on.
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// `tls-server-end-point` channel binding data (RFC 5929 section 4.1): the hash of the
/// certificate, with the hash function of its signature algorithm (MD5 and SHA-1 become
/// SHA-256), as PostgreSQL computes it.
#[must_use]
pub fn end_point_hash(cert: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    match der::signature_hash(cert) {
        der::SigHash::Sha384 => sha2::Sha384::digest(cert).to_vec(),
        der::SigHash::Sha512 => sha2::Sha512::digest(cert).to_vec(),
        der::SigHash::Sha256 => sha2::Sha256::digest(cert).to_vec(),
    }
}
