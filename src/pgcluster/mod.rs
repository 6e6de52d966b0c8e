//! Local PostgreSQL clusters for `sluice demo` and the tests: a real primary and streaming
//! replicas on 127.0.0.1, in a temporary directory that disappears with the value.
//!
//! [`LocalCluster::start`] runs `initdb`, starts the primary, creates the test user
//! ([`TEST_USER`] / [`TEST_PASSWORD`], a superuser authenticated with SCRAM on TCP) and its
//! database [`TEST_DATABASE`], clones replicas with `pg_basebackup -R -X stream` in parallel and
//! waits until the primary sees every one of them streaming. Dropping the value stops every
//! server (`pg_ctl stop -m immediate`) and removes the directory, also when a test panics.
//!
//! Layout of the temporary directory: `node<i>/` data directories, `logs/node<i>.log` server
//! logs, `run/` the unix sockets. sluice's own administration (setup SQL, replication) goes
//! through those sockets as the bootstrap superuser `postgres` with trust; everything a test
//! does goes through TCP with passwords, as a client of sluice would.
//!
//! If the owning process dies without unwinding (SIGKILL, a test runner's timeout), a watchdog
//! process stops the servers and removes the directory within seconds ([`watchdog`]).
//!
//! This module only drives PostgreSQL binaries; it knows nothing of the proxy.

mod cmd;
mod env;
mod error;
mod node;
mod ports;
mod sql;
mod tls;
mod watchdog;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use env::{Binaries, OsUser, BINDIR_ENV};
pub use error::ClusterError;
pub use node::StopMode;
pub use ports::{free_port, port_is_free};
pub use sql::{quote_ident, quote_literal};
pub use tls::ServerPki;

use cmd::{As, Runner};
use node::Node;
use watchdog::Watchdog;

/// The test user every cluster has: a superuser with a SCRAM password.
pub const TEST_USER: &str = "sluice_test";
/// [`TEST_USER`]'s password.
pub const TEST_PASSWORD: &str = "sluice-test-pw";
/// The database owned by [`TEST_USER`].
pub const TEST_DATABASE: &str = "app";

/// How long `psql` may run one call.
const PSQL_LIMIT: Duration = Duration::from_secs(120);
/// How long replicas may take to reach `streaming` or to replay a position.
const REPLICATION_WAIT: Duration = Duration::from_secs(60);
/// Pause between polls of a replication condition.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// A running local cluster. Node 0 starts as the primary, nodes `1..` as its replicas.
pub struct LocalCluster {
    run: Runner,
    nodes: Vec<Node>,
    primary: AtomicUsize,
    socket_dir: PathBuf,
    logs_dir: PathBuf,
    watchdog: Watchdog,
    // Declared last: dropped after `Drop::drop` has stopped the servers.
    root: tempfile::TempDir,
}

impl LocalCluster {
    /// Start a primary and `replicas` streaming replicas, each on its own free port.
    ///
    /// # Errors
    /// Any step failed; the error names the command, its exit status, stderr and the server
    /// log tail. Whatever was started is stopped and removed before this returns.
    pub async fn start(replicas: usize) -> Result<Self, ClusterError> {
        let bins = Binaries::locate()?;
        let user = OsUser::detect()?;
        let root = tempfile::Builder::new()
            .prefix("sluice-pg-")
            .tempdir()
            .map_err(|e| ClusterError::io("creating the cluster's temporary directory", e))?;
        // The server's OS user must be able to enter it.
        set_mode(root.path(), 0o755)?;
        let socket_dir = make_dir(&root.path().join("run"), 0o755, user)?;
        let logs_dir = make_dir(&root.path().join("logs"), 0o755, user)?;
        let watchdog = Watchdog::arm(std::process::id(), root.path())?;
        let mut cluster = LocalCluster {
            run: Runner::new(bins, user, root.path().to_path_buf()),
            nodes: Vec::new(),
            primary: AtomicUsize::new(0),
            socket_dir,
            logs_dir,
            watchdog,
            root,
        };
        cluster.start_primary().await?;
        cluster.start_replicas(replicas).await?;
        cluster.wait_streaming(replicas).await?;
        Ok(cluster)
    }

    async fn start_primary(&mut self) -> Result<(), ClusterError> {
        let node = Node::new(0, self.root.path(), &self.logs_dir, free_port()?);
        make_dir(&node.data_dir, 0o700, self.run.os_user())?;
        node.initdb(&self.run, &self.socket_dir).await?;
        self.nodes.push(node);
        self.nodes[0].start(&self.run, true).await?;
        let setup = [
            format!("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}", quote_ident(TEST_USER), quote_literal(TEST_PASSWORD)),
            format!("CREATE DATABASE {} OWNER {}", quote_ident(TEST_DATABASE), quote_ident(TEST_USER)),
        ];
        self.admin_sql(self.nodes[0].port, "postgres", &setup).await.map(drop)
    }

    /// Clone and start the replicas in parallel; every node is registered before any task
    /// runs so that `Drop` cleans it up whatever happens.
    async fn start_replicas(&mut self, count: usize) -> Result<(), ClusterError> {
        let primary = self.nodes[0].clone();
        // Every fallible preparation first: once tasks run, all of them are awaited.
        for index in 1..=count {
            let node = Node::new(index, self.root.path(), &self.logs_dir, free_port()?);
            make_dir(&node.data_dir, 0o700, self.run.os_user())?;
            self.nodes.push(node);
        }
        let mut tasks = Vec::with_capacity(count);
        for node in &self.nodes[1..] {
            let (mut node, run, primary, socket_dir) =
                (node.clone(), self.run.clone(), primary.clone(), self.socket_dir.clone());
            tasks.push(tokio::spawn(async move {
                node.base_backup(&run, &primary, &socket_dir).await?;
                node.start(&run, true).await?;
                Ok::<u16, ClusterError>(node.port)
            }));
        }
        let mut first_error = None;
        for (offset, task) in tasks.into_iter().enumerate() {
            let outcome = task.await.unwrap_or_else(|e| {
                Err(ClusterError::io("a replica start task", std::io::Error::other(e.to_string())))
            });
            match outcome {
                Ok(port) => self.nodes[offset + 1].port = port,
                Err(e) => first_error = first_error.or(Some(e)),
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Wait until the current primary sees `count` replicas in state `streaming`.
    ///
    /// # Errors
    /// [`ClusterError::Timeout`] after 60 s (with the primary's log), or psql failed.
    pub async fn wait_streaming(&self, count: usize) -> Result<(), ClusterError> {
        let port = self.primary_port();
        let sql = ["SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"];
        let deadline = tokio::time::Instant::now() + REPLICATION_WAIT;
        loop {
            let seen: usize = self.admin_sql(port, "postgres", &sql).await?.parse().unwrap_or(0);
            if seen >= count {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.timeout(format!("{count} streaming replicas (saw {seen})"), self.primary_index()));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Wait until every running replica has replayed everything the primary had written when
    /// this was called (so reads on replicas see earlier writes). The insert position is used:
    /// with `synchronous_commit = off` a commit may not be written out yet.
    ///
    /// # Errors
    /// [`ClusterError::Timeout`] after 60 s, or psql failed.
    pub async fn wait_replayed(&self) -> Result<(), ClusterError> {
        let primary = self.primary_index();
        let lsn = self.admin_sql(self.nodes[primary].port, "postgres", &["SELECT pg_current_wal_insert_lsn()"]).await?;
        let check = format!("SELECT coalesce(pg_last_wal_replay_lsn() >= {}::pg_lsn, true)", quote_literal(&lsn));
        for node in self.nodes.iter().filter(|n| n.index != primary) {
            if !node.data_dir.join("postmaster.pid").exists() {
                continue; // stopped
            }
            let deadline = tokio::time::Instant::now() + REPLICATION_WAIT;
            while self.admin_sql(node.port, "postgres", &[check.as_str()]).await? != "t" {
                if tokio::time::Instant::now() >= deadline {
                    return Err(self.timeout(format!("node{} to replay {lsn}", node.index), node.index));
                }
                tokio::time::sleep(POLL_EVERY).await;
            }
        }
        Ok(())
    }

    fn timeout(&self, what: String, node: usize) -> ClusterError {
        ClusterError::Timeout { what, seconds: REPLICATION_WAIT.as_secs(), log_tail: self.nodes[node].log_tail() }
    }

    /// Index of the node currently believed to be the primary (0 until [`Self::promote`]).
    #[must_use]
    pub fn primary_index(&self) -> usize {
        self.primary.load(Ordering::Relaxed)
    }

    /// The primary's port.
    #[must_use]
    pub fn primary_port(&self) -> u16 {
        self.nodes[self.primary_index()].port
    }

    /// Every other node's port, in node order.
    #[must_use]
    pub fn replica_ports(&self) -> Vec<u16> {
        let primary = self.primary_index();
        let others = self.nodes.iter().filter(|n| n.index != primary);
        others.map(|n| n.port).collect()
    }

    /// Every node's port, in node order (index 0 first).
    #[must_use]
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// How many nodes the cluster has (primary included).
    #[must_use]
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Node `index`'s data directory.
    ///
    /// # Panics
    /// `index` is out of range.
    #[must_use]
    pub fn data_dir(&self, index: usize) -> &Path {
        &self.nodes[index].data_dir
    }

    /// The last lines of node `index`'s server log (for assertion messages).
    #[must_use]
    pub fn log_tail(&self, index: usize) -> Option<String> {
        self.nodes.get(index).and_then(Node::log_tail)
    }

    /// The temporary directory holding everything (removed on drop).
    #[must_use]
    pub fn root_dir(&self) -> &Path {
        self.root.path()
    }

    fn node(&self, index: usize) -> Result<&Node, ClusterError> {
        self.nodes.get(index).ok_or(ClusterError::NoSuchNode { index, count: self.nodes.len() })
    }

    /// Stop node `index` cleanly (`-m fast`) and wait until it is gone.
    ///
    /// # Errors
    /// No such node, or pg_ctl failed (e.g. it was not running).
    pub async fn stop_node(&self, index: usize) -> Result<(), ClusterError> {
        self.node(index)?.stop(&self.run, StopMode::Fast).await
    }

    /// Stop node `index` like a crash (`-m immediate`).
    ///
    /// # Errors
    /// No such node, or pg_ctl failed.
    pub async fn kill_node(&self, index: usize) -> Result<(), ClusterError> {
        self.node(index)?.stop(&self.run, StopMode::Immediate).await
    }

    /// Start node `index` again on its old port and wait until it accepts connections.
    ///
    /// # Errors
    /// No such node, or pg_ctl failed (the log tail says why).
    pub async fn start_node(&self, index: usize) -> Result<(), ClusterError> {
        let mut node = self.node(index)?.clone();
        node.start(&self.run, false).await
    }

    /// Promote replica `index` to primary and wait until it accepts writes. Other replicas
    /// keep following the old primary until [`Self::follow`] re-points them.
    ///
    /// # Errors
    /// No such node, or pg_ctl failed (e.g. the node is not a replica).
    pub async fn promote(&self, index: usize) -> Result<(), ClusterError> {
        self.node(index)?.promote(&self.run).await?;
        self.primary.store(index, Ordering::Relaxed);
        Ok(())
    }

    /// Make replica `index` stream from node `upstream` (after a promotion). The replica must
    /// be running; it switches timelines by itself (`recovery_target_timeline = latest`).
    ///
    /// # Errors
    /// No such node, or psql failed.
    pub async fn follow(&self, index: usize, upstream: usize) -> Result<(), ClusterError> {
        let (node, upstream) = (self.node(index)?, self.node(upstream)?);
        let conninfo = format!("host={} port={} user=postgres", self.socket_dir.display(), upstream.port);
        let set = format!("ALTER SYSTEM SET primary_conninfo = {}", quote_literal(&conninfo));
        let reload = "SELECT pg_reload_conf()".to_string();
        self.admin_sql(node.port, "postgres", &[set, reload]).await.map(drop)
    }

    /// Run `sql` on the primary in [`TEST_DATABASE`] as [`TEST_USER`] over TCP; returns
    /// psql's unaligned, tuples-only output (rows on lines, columns split by `|`), trimmed.
    ///
    /// # Errors
    /// psql failed (the SQL error is in the message).
    pub async fn psql(&self, sql: &str) -> Result<String, ClusterError> {
        self.psql_at(self.primary_port(), sql).await
    }

    /// Like [`Self::psql`], on any port of 127.0.0.1 (a node, or a proxy in front of them).
    ///
    /// # Errors
    /// psql failed.
    pub async fn psql_at(&self, port: u16, sql: &str) -> Result<String, ClusterError> {
        self.psql_as(port, TEST_USER, TEST_PASSWORD, TEST_DATABASE, sql).await
    }

    /// Run `sql` on 127.0.0.1:`port` as `user` with `password` in `database`.
    ///
    /// # Errors
    /// psql failed.
    pub async fn psql_as(
        &self,
        port: u16,
        user: &str,
        password: &str,
        database: &str,
        sql: &str,
    ) -> Result<String, ClusterError> {
        let port = port.to_string();
        let args = [
            "-X",
            "-A",
            "-t",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            user,
            "-d",
            database,
            "-c",
            sql,
        ];
        let env = [("PGPASSWORD", password), ("PGCONNECT_TIMEOUT", "10")];
        let out = self.run.run(As::Client, "psql", &args, &env, PSQL_LIMIT).await?;
        Ok(out.trim_end().to_string())
    }

    /// Run statements one by one (each its own `-c`, so `CREATE DATABASE` works) as the
    /// bootstrap superuser through node `port`'s unix socket.
    async fn admin_sql<S: AsRef<str>>(
        &self,
        port: u16,
        database: &str,
        statements: &[S],
    ) -> Result<String, ClusterError> {
        let mut args: Vec<String> =
            ["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-U", "postgres"].map(String::from).to_vec();
        args.extend(["-h".into(), self.socket_dir.display().to_string()]);
        args.extend(["-p".into(), port.to_string(), "-d".into(), database.into()]);
        for s in statements {
            args.extend(["-c".to_string(), s.as_ref().to_string()]);
        }
        let out = self.run.run(As::Client, "psql", &args, &[], PSQL_LIMIT).await?;
        Ok(out.trim().to_string())
    }

    /// Create a login role with a SCRAM password that may create objects in
    /// [`TEST_DATABASE`]'s `public` schema.
    ///
    /// # Errors
    /// psql failed (e.g. the role exists).
    pub async fn create_user(&self, name: &str, password: &str) -> Result<(), ClusterError> {
        let role = quote_ident(name);
        let create = format!("CREATE ROLE {role} LOGIN PASSWORD {}", quote_literal(password));
        let grant = format!("GRANT ALL ON SCHEMA public TO {role}");
        self.admin_sql(self.primary_port(), TEST_DATABASE, &[create, grant]).await.map(drop)
    }

    /// Create a database owned by [`TEST_USER`].
    ///
    /// # Errors
    /// psql failed (e.g. it exists).
    pub async fn create_database(&self, name: &str) -> Result<(), ClusterError> {
        let sql = format!("CREATE DATABASE {} OWNER {}", quote_ident(name), quote_ident(TEST_USER));
        self.admin_sql(self.primary_port(), "postgres", &[sql]).await.map(drop)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &self.nodes {
            node.kill_blocking(&self.run);
        }
        self.watchdog.disarm();
        // `root` is dropped after this and removes every file.
    }
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("root", &self.root.path())
            .field("ports", &self.ports())
            .field("primary", &self.primary_index())
            .finish_non_exhaustive()
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ClusterError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| ClusterError::io(format!("chmod {mode:o} {}", path.display()), e))
}

fn make_dir(path: &Path, mode: u32, user: OsUser) -> Result<PathBuf, ClusterError> {
    std::fs::create_dir(path).map_err(|e| ClusterError::io(format!("creating {}", path.display()), e))?;
    set_mode(path, mode)?;
    user.give(path)?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests;
