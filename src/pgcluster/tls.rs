//! Turning TLS on in a running local cluster: every node gets the given certificate and key
//! (and optionally a CA for client certificates) in its data directory, `ssl = on` through
//! `ALTER SYSTEM`, and a reload; this returns once new connections to every node can use TLS.

use std::path::Path;
use std::time::Duration;

use super::sql::quote_literal;
use super::{set_mode, ClusterError, LocalCluster};

/// How long a node may take to show `ssl = on` after the reload.
const SSL_WAIT: Duration = Duration::from_secs(30);

/// PEM files a node serves TLS with.
#[derive(Clone, Copy, Debug)]
pub struct ServerPki<'a> {
    /// The server certificate (chain).
    pub cert: &'a Path,
    /// Its private key.
    pub key: &'a Path,
    /// CA that client certificates must chain to (enables `clientcert` checks in pg_hba).
    pub client_ca: Option<&'a Path>,
}

impl LocalCluster {
    /// Serve TLS on every node with `pki` (plaintext stays allowed).
    ///
    /// # Errors
    /// A file could not be copied, or psql failed, or a node did not pick `ssl = on` up in time.
    pub async fn enable_ssl(&self, pki: ServerPki<'_>) -> Result<(), ClusterError> {
        for node in &self.nodes {
            let mut settings = vec![
                "ALTER SYSTEM SET ssl = on".to_string(),
                format!(
                    "ALTER SYSTEM SET ssl_cert_file = {}",
                    quote_literal(&self.install(node.index, pki.cert, "server.crt")?)
                ),
                format!(
                    "ALTER SYSTEM SET ssl_key_file = {}",
                    quote_literal(&self.install(node.index, pki.key, "server.key")?)
                ),
            ];
            if let Some(ca) = pki.client_ca {
                let path = self.install(node.index, ca, "client_ca.crt")?;
                settings.push(format!("ALTER SYSTEM SET ssl_ca_file = {}", quote_literal(&path)));
            }
            settings.push("SELECT pg_reload_conf()".to_string());
            self.admin_sql(node.port, "postgres", &settings).await?;
        }
        for node in &self.nodes {
            let deadline = tokio::time::Instant::now() + SSL_WAIT;
            while self.admin_sql(node.port, "postgres", &["SHOW ssl"]).await? != "on" {
                if tokio::time::Instant::now() >= deadline {
                    return Err(self.timeout(format!("node{} to turn ssl on", node.index), node.index));
                }
                tokio::time::sleep(super::POLL_EVERY).await;
            }
        }
        Ok(())
    }

    /// Make `role` log in over TCP only with a client certificate (`hostssl ... cert`, CN =
    /// role name) on every node; needs [`Self::enable_ssl`] with a `client_ca`. New connections
    /// see the rule once the servers have reloaded (shortly after this returns).
    ///
    /// # Errors
    /// pg_hba.conf could not be rewritten, or psql failed.
    pub async fn require_client_cert(&self, role: &str) -> Result<(), ClusterError> {
        for node in &self.nodes {
            let hba = node.data_dir.join("pg_hba.conf");
            let old =
                std::fs::read_to_string(&hba).map_err(|e| ClusterError::io(format!("reading {}", hba.display()), e))?;
            let line = format!("hostssl all {} 127.0.0.1/32 cert\n", super::quote_ident(role));
            std::fs::write(&hba, format!("{line}{old}"))
                .map_err(|e| ClusterError::io(format!("writing {}", hba.display()), e))?;
            self.admin_sql(node.port, "postgres", &["SELECT pg_reload_conf()"]).await?;
        }
        Ok(())
    }

    /// Copy `from` into node `index`'s data directory, owned by the server's user, mode 0600.
    fn install(&self, index: usize, from: &Path, name: &str) -> Result<String, ClusterError> {
        let to = self.nodes[index].data_dir.join(name);
        std::fs::copy(from, &to)
            .map_err(|e| ClusterError::io(format!("copying {} to {}", from.display(), to.display()), e))?;
        set_mode(&to, 0o600)?;
        self.run.os_user().give(&to)?;
        Ok(to.display().to_string())
    }
}
