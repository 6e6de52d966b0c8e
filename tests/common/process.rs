//! sluice as a child process (`sluice run --config FILE`), for tests that measure the process
//! itself (memory) or need it isolated; and the open-files limit for tests with thousands of
//! sockets.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice::pgcluster::{free_port, TEST_DATABASE};

use super::{connect, url, ProxyBuilder};

/// Attempts to start the child on a fresh port when the previous one turned out taken.
const SPAWN_ATTEMPTS: u32 = 3;
/// How long the child may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// A sluice child process; killed on drop.
pub struct ProxyProcess {
    child: Child,
    port: u16,
    user: String,
    password: String,
    // Kept alive for the child's lifetime.
    _config: tempfile::NamedTempFile,
    log: tempfile::NamedTempFile,
}

impl ProxyProcess {
    /// Write `builder`'s config (listening on a free port) and start `sluice run` on it.
    pub async fn spawn(builder: ProxyBuilder) -> ProxyProcess {
        let mut last_log = String::new();
        for _ in 0..SPAWN_ATTEMPTS {
            let port = free_port().expect("no free port for sluice");
            let b = builder.clone().listen(&format!("127.0.0.1:{port}"));
            let mut p = Self::spawn_on(&b, port);
            if p.wait_ready().await {
                return p;
            }
            last_log = p.log();
            if !last_log.contains("in use") {
                break;
            }
        }
        panic!("sluice (child process) did not start accepting connections:\n{last_log}");
    }

    fn spawn_on(builder: &ProxyBuilder, port: u16) -> ProxyProcess {
        let config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        std::fs::write(config.path(), builder.toml()).unwrap();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("run")
            .arg("--config")
            .arg(config.path())
            .env("SLUICE_LOG", std::env::var("SLUICE_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("cannot spawn the sluice binary");
        let user = builder.first_login();
        ProxyProcess { child, port, user: user.0, password: user.1, _config: config, log }
    }

    /// True once the port accepts TCP; false if the child exited or time ran out.
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_WITHIN;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return false;
            }
            let addr = self.addr();
            let up = tokio::task::spawn_blocking(move || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            });
            if up.await.unwrap_or(false) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// The child's pid (for `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A libpq URL for the first configured user and `app`.
    pub fn conn_string(&self) -> String {
        url(&self.user, &self.password, self.port, TEST_DATABASE)
    }

    /// A tokio-postgres client as the first configured user on `app`.
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(self.port, &self.user, &self.password, TEST_DATABASE)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the sluice child: {}\n{}", super::describe(&e), self.log()))
    }

    /// Peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM").unwrap_or(0)
    }

    /// Current resident memory (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS").unwrap_or(0)
    }

    /// Send a signal by name (`TERM`, `INT`, `HUP`) with `kill(1)` (the crate forbids `unsafe`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.pid().to_string()).status();
        assert!(matches!(status, Ok(s) if s.success()), "kill -{name} failed: {status:?}");
    }

    /// Wait up to `limit` for the child to exit; its exit code (`None`: still running, or
    /// ended by a signal).
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Replace the configuration file the child was started with (then `signal("HUP")`).
    pub fn rewrite_config(&self, builder: &ProxyBuilder) {
        let b = builder.clone().listen(&format!("127.0.0.1:{}", self.port));
        std::fs::write(self._config.path(), b.toml()).unwrap();
    }

    /// Everything the child wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        read_lossy(self.log.path())
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_lossy(path: &Path) -> String {
    let mut bytes = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A `kB` field of `/proc/<pid>/status`.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field_kib(&text, field)
}

/// Parse `Field:   1234 kB` out of `/proc/<pid>/status` text.
pub fn status_field_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `(soft, hard)` of "Max open files" in `/proc/<pid>/limits` text.
pub fn nofile_limits(limits: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut numbers = line["Max open files".len()..].split_whitespace();
    let soft = numbers.next()?.parse().ok()?;
    let hard = numbers.next()?.parse().ok()?;
    Some((soft, hard))
}

/// Raise this process's open-files soft limit to its hard limit (the crate forbids `unsafe`,
/// so `setrlimit` is reached through `prlimit(1)`); returns the soft limit now in force.
pub fn raise_nofile_limit() -> u64 {
    let read = || {
        let text = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        nofile_limits(&text).unwrap_or((1024, 1024))
    };
    let (soft, hard) = read();
    if soft >= hard {
        return soft;
    }
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={hard}:{hard}"))
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("(could not raise the open-files limit from {soft} to {hard}: {status:?})");
    }
    read().0
}
