//! One PostgreSQL server of a local cluster: its data directory, log file and port, and the
//! `initdb` / `pg_basebackup` / `pg_ctl` steps that create, start, stop and promote it.
//!
//! Whether a node runs is not stored here: `postmaster.pid` in the data directory is the truth,
//! and cleanup reads it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cmd::{file_tail, As, Runner};
use super::error::ClusterError;
use super::ports::free_port;

/// Time allowed for initdb / pg_basebackup.
const SETUP_LIMIT: Duration = Duration::from_secs(180);
/// Seconds `pg_ctl` waits for a start, stop or promotion.
const PG_CTL_WAIT_SECS: u64 = 60;
/// Starts retried on a port clash before giving up.
const START_ATTEMPTS: u32 = 5;

/// How a node is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Disconnect clients, checkpoint, exit (`-m fast`).
    Fast,
    /// Exit at once, like a crash (`-m immediate`).
    Immediate,
}

impl StopMode {
    fn as_arg(self) -> &'static str {
        match self {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// One server's files and port.
#[derive(Clone, Debug)]
pub struct Node {
    /// Position in the cluster (0 is the first primary).
    pub index: usize,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The server log (`pg_ctl -l`).
    pub log_path: PathBuf,
    /// The TCP port on 127.0.0.1 (also names the unix socket).
    pub port: u16,
}

/// Settings appended to the primary's `postgresql.conf`; replicas inherit them through the
/// base backup. Durability is off: these clusters live for one test.
#[must_use]
pub fn server_conf(socket_dir: &Path) -> String {
    let socket_dir = socket_dir.display().to_string().replace('\'', "''");
    format!(
        "\n# added by sluice's pgcluster\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = '{socket_dir}'\n\
         max_connections = 200\n\
         max_prepared_transactions = 20\n\
         shared_buffers = 32MB\n\
         wal_level = replica\n\
         max_wal_senders = 20\n\
         max_replication_slots = 20\n\
         wal_keep_size = 256MB\n\
         hot_standby = on\n\
         hot_standby_feedback = on\n\
         wal_receiver_status_interval = 1s\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n\
         password_encryption = 'scram-sha-256'\n\
         max_parallel_workers_per_gather = 0\n\
         logging_collector = off\n\
         log_line_prefix = '%m [%p] %q%u@%d '\n"
    )
}

impl Node {
    /// A node whose files live under `root` (data in `root/node<i>`, log in `logs_dir`).
    #[must_use]
    pub fn new(index: usize, root: &Path, logs_dir: &Path, port: u16) -> Self {
        Node {
            index,
            data_dir: root.join(format!("node{index}")),
            log_path: logs_dir.join(format!("node{index}.log")),
            port,
        }
    }

    /// The last lines of this node's server log.
    #[must_use]
    pub fn log_tail(&self) -> Option<String> {
        file_tail(&self.log_path)
    }

    /// Create an empty cluster: superuser `postgres`, trust on the unix socket, SCRAM on TCP.
    ///
    /// # Errors
    /// initdb failed, or the config could not be appended.
    pub async fn initdb(&self, run: &Runner, socket_dir: &Path) -> Result<(), ClusterError> {
        let args: Vec<OsString> = vec![
            "-D".into(),
            self.data_dir.clone().into(),
            "-U".into(),
            "postgres".into(),
            "--auth-local=trust".into(),
            "--auth-host=scram-sha-256".into(),
            "--encoding=UTF8".into(),
            "--locale=C".into(),
            "--no-sync".into(),
            "--no-instructions".into(),
        ];
        run.run(As::Server, "initdb", &args, &[], SETUP_LIMIT).await?;
        append(&self.data_dir.join("postgresql.conf"), &server_conf(socket_dir))
    }

    /// Fill this node's data directory with a base backup of `primary` (reached through its
    /// unix socket in `socket_dir`), configured to stream from it (`-R`). No replication slot:
    /// `wal_keep_size` covers a test's writes, and slots would pin WAL of stopped nodes and
    /// get in the way of re-pointing replicas after a promotion.
    ///
    /// # Errors
    /// pg_basebackup failed (the primary's log tail is attached).
    pub async fn base_backup(&self, run: &Runner, primary: &Node, socket_dir: &Path) -> Result<(), ClusterError> {
        let args: Vec<OsString> = vec![
            "-D".into(),
            self.data_dir.clone().into(),
            "-h".into(),
            socket_dir.into(),
            "-p".into(),
            primary.port.to_string().into(),
            "-U".into(),
            "postgres".into(),
            "-R".into(),
            "-X".into(),
            "stream".into(),
            "--checkpoint=fast".into(),
            "--no-sync".into(),
        ];
        run.run(As::Server, "pg_basebackup", &args, &[], SETUP_LIMIT)
            .await
            .map(drop)
            .map_err(|e| e.with_log(primary.log_tail()))
    }

    /// Start the server and wait until it accepts connections. With `may_move`, a port that
    /// turns out to be taken is replaced by another free one (only before anyone knows it).
    ///
    /// # Errors
    /// pg_ctl failed for another reason than a port clash, or every attempt clashed.
    pub async fn start(&mut self, run: &Runner, may_move: bool) -> Result<(), ClusterError> {
        let mut attempt = 1;
        loop {
            let log_start = file_len(&self.log_path);
            let result = self.pg_ctl_start(run).await;
            let Err(err) = result else { return Ok(()) };
            let log = log_since(&self.log_path, log_start);
            if !(may_move && attempt < START_ATTEMPTS && is_port_clash(&log)) {
                return Err(err.with_log(Some(log)));
            }
            self.port = free_port()?;
            attempt += 1;
        }
    }

    async fn pg_ctl_start(&self, run: &Runner) -> Result<(), ClusterError> {
        let wait = PG_CTL_WAIT_SECS.to_string();
        let args: Vec<OsString> = vec![
            "start".into(),
            "-D".into(),
            self.data_dir.clone().into(),
            "-l".into(),
            self.log_path.clone().into(),
            "-o".into(),
            format!("-p {} -c cluster_name=node{}", self.port, self.index).into(),
            "-w".into(),
            "-t".into(),
            wait.into(),
        ];
        let limit = Duration::from_secs(PG_CTL_WAIT_SECS + 30);
        run.run(As::Server, "pg_ctl", &args, &[], limit).await?;
        Ok(())
    }

    /// Stop the server and wait until it is gone.
    ///
    /// # Errors
    /// pg_ctl failed (e.g. the server was not running).
    pub async fn stop(&self, run: &Runner, mode: StopMode) -> Result<(), ClusterError> {
        let args = self.stop_args(mode, PG_CTL_WAIT_SECS);
        let limit = Duration::from_secs(PG_CTL_WAIT_SECS + 30);
        run.run(As::Server, "pg_ctl", &args, &[], limit).await.map(drop).map_err(|e| e.with_log(self.log_tail()))
    }

    /// Turn a replica into a primary and wait until it accepts writes.
    ///
    /// # Errors
    /// pg_ctl failed (e.g. the node is not a standby).
    pub async fn promote(&self, run: &Runner) -> Result<(), ClusterError> {
        let wait = PG_CTL_WAIT_SECS.to_string();
        let args: Vec<OsString> =
            vec!["promote".into(), "-D".into(), self.data_dir.clone().into(), "-w".into(), "-t".into(), wait.into()];
        let limit = Duration::from_secs(PG_CTL_WAIT_SECS + 30);
        run.run(As::Server, "pg_ctl", &args, &[], limit).await.map(drop).map_err(|e| e.with_log(self.log_tail()))
    }

    /// Best-effort, blocking: stop the server at once if it looks alive; kill it if pg_ctl
    /// cannot. For `Drop`.
    pub fn kill_blocking(&self, run: &Runner) {
        let pid_file = self.data_dir.join("postmaster.pid");
        let Ok(contents) = std::fs::read_to_string(&pid_file) else {
            return; // never started, or shut down cleanly
        };
        let args = self.stop_args(StopMode::Immediate, 10);
        if run.run_blocking("pg_ctl", &args) || !pid_file.exists() {
            return;
        }
        if let Some(pid) = contents.lines().next().and_then(|l| l.trim().parse::<u32>().ok()) {
            let _ = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }

    fn stop_args(&self, mode: StopMode, wait_secs: u64) -> Vec<OsString> {
        vec![
            "stop".into(),
            "-D".into(),
            self.data_dir.clone().into(),
            "-m".into(),
            mode.as_arg().into(),
            "-w".into(),
            "-t".into(),
            wait_secs.to_string().into(),
        ]
    }
}

/// True if a server log says the port (TCP or the unix socket named after it) was taken.
#[must_use]
pub fn is_port_clash(log: &str) -> bool {
    log.contains("Address already in use") || (log.contains("lock file") && log.contains(".s.PGSQL."))
}

fn append(path: &Path, text: &str) -> Result<(), ClusterError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| ClusterError::io(format!("opening {}", path.display()), e))?;
    f.write_all(text.as_bytes()).map_err(|e| ClusterError::io(format!("writing {}", path.display()), e))
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn log_since(path: &Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset).unwrap_or(0).min(bytes.len());
    super::cmd::tail(&String::from_utf8_lossy(&bytes[start..]), 25)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_clashes_are_recognised() {
        let tcp = "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use";
        let sock = "FATAL:  lock file \"/tmp/x/run/.s.PGSQL.20001.lock\" already exists";
        let other = "FATAL:  data directory \"/x\" has invalid permissions";
        assert!(is_port_clash(tcp));
        assert!(is_port_clash(sock));
        assert!(!is_port_clash(other));
    }

    #[test]
    fn server_conf_quotes_the_socket_dir_and_listens_locally() {
        let conf = server_conf(Path::new("/tmp/it's/run"));
        assert!(conf.contains("unix_socket_directories = '/tmp/it''s/run'"));
        assert!(conf.contains("listen_addresses = '127.0.0.1'"));
        assert!(conf.contains("wal_level = replica"));
    }

    #[test]
    fn nodes_are_laid_out_under_the_root() {
        let n = Node::new(2, Path::new("/r"), Path::new("/r/logs"), 20002);
        assert_eq!(n.data_dir, Path::new("/r/node2"));
        assert_eq!(n.log_path, Path::new("/r/logs/node2.log"));
    }
}
