//! TLS for the tests: a throwaway PKI made with the `openssl` command line (a CA, server
//! certificates for `localhost` and `127.0.0.1`), and a rustls connector for tokio-postgres that
//! supports `tls-server-end-point` channel binding (or deliberately gets it wrong).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// A CA and the files it issued, in a temporary directory.
pub struct TestPki {
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (is it installed?): {e}"));
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

impl TestPki {
    /// A new CA (`ca.crt`) and a server certificate `server.crt`/`server.key` with serial 1.
    pub fn new(name: &str) -> TestPki {
        let dir = tempfile::Builder::new().prefix("sluice-pki-").tempdir().expect("temp dir");
        let d = dir.path();
        openssl(d, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ca.key"]);
        let subject = format!("/CN={name} test CA");
        openssl(
            d,
            &["req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "3", "-subj", &subject, "-out", "ca.crt"],
        );
        let pki = TestPki { dir };
        pki.issue("server", 1);
        pki
    }

    /// Issue `<name>.crt`/`<name>.key` for localhost and 127.0.0.1 with this serial.
    pub fn issue(&self, name: &str, serial: u32) -> (PathBuf, PathBuf) {
        self.issue_for(name, serial, "localhost")
    }

    /// Like [`Self::issue`] with subject CN `cn` (a client certificate names its user there).
    pub fn issue_for(&self, name: &str, serial: u32, cn: &str) -> (PathBuf, PathBuf) {
        let d = self.dir.path();
        let (key, csr, crt) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"));
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        openssl(d, &["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", &key]);
        let subject = format!("/CN={cn}");
        openssl(d, &["req", "-new", "-key", &key, "-subj", &subject, "-out", &csr]);
        let serial = serial.to_string();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial,
                "-days",
                "3",
                "-sha256",
                "-extfile",
                "ext.cnf",
                "-out",
                &crt,
            ],
        );
        (d.join(crt), d.join(key))
    }

    /// The CA certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The server certificate (serial 1).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    /// The server key.
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// A path inside the PKI directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A rustls client config trusting this CA, offering ALPN `postgresql`.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(self.ca()).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Arc::new(config)
    }
}

/// The serial number of a DER certificate, as `openssl x509 -serial` prints it (`serial=02`).
pub fn serial_of(der: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("peer.der"), der).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["x509", "-inform", "DER", "-in", "peer.der", "-noout", "-serial"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What the connector does about channel binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// The real `tls-server-end-point` hash.
    Real,
    /// A hash of something else: the server must refuse the login.
    Wrong,
    /// None offered.
    None,
}

/// tokio-postgres over rustls; remembers the last peer certificate it saw.
#[derive(Clone)]
pub struct RustlsConnector {
    config: Arc<rustls::ClientConfig>,
    binding: Binding,
    /// The server certificate of the last handshake.
    pub peer: Arc<Mutex<Option<Vec<u8>>>>,
}

impl RustlsConnector {
    /// A connector with this client config and binding behaviour.
    pub fn new(config: Arc<rustls::ClientConfig>, binding: Binding) -> Self {
        Self { config, binding, peer: Arc::default() }
    }
}

/// One connection's TLS stream.
pub struct RustlsStream<S> {
    inner: tokio_rustls::client::TlsStream<S>,
    binding: Binding,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> MakeTlsConnect<S> for RustlsConnector {
    type Stream = RustlsStream<S>;
    type TlsConnect = OneConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<OneConnect, io::Error> {
        let name = ServerName::try_from(domain.to_string()).map_err(io::Error::other)?;
        Ok(OneConnect { connector: self.clone(), name })
    }
}

/// The connector for one connection.
pub struct OneConnect {
    connector: RustlsConnector,
    name: ServerName<'static>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> TlsConnect<S> for OneConnect {
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, io::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let tls =
                tokio_rustls::TlsConnector::from(Arc::clone(&self.connector.config)).connect(self.name, stream).await?;
            let peer = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
            *self.connector.peer.lock().unwrap() = peer;
            Ok(RustlsStream { inner: tls, binding: self.connector.binding })
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        use sha2::Digest;
        let cert = self.inner.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec());
        match (self.binding, cert) {
            (Binding::Real, Some(c)) => ChannelBinding::tls_server_end_point(sha2::Sha256::digest(&c).to_vec()),
            (Binding::Wrong, Some(c)) => {
                ChannelBinding::tls_server_end_point(sha2::Sha256::digest([c.as_slice(), b"x"].concat()).to_vec())
            }
            _ => ChannelBinding::none(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Run `psql` with a full conninfo string (`sslmode=...` and friends); Ok(stdout) or Err(stderr).
pub async fn psql_conninfo(conninfo: &str, password: &str, sql: &str) -> Result<String, String> {
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new("psql")
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql])
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .output(),
    )
    .await
    .expect("psql did not finish within 60 s")
    .expect("cannot run psql");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}
