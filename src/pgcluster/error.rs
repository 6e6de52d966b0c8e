//! Errors of the local cluster runner: each says which step failed and carries the evidence
//! (command line, exit code, stderr tail, server log tail) so a failing test explains itself.

use std::path::PathBuf;

/// Why a local cluster could not be started or driven.
///
/// `Debug` prints the same text as `Display`, so `unwrap()` in a test shows readable output.
#[derive(thiserror::Error)]
pub enum ClusterError {
    /// No directory holding `initdb`, `pg_ctl`, `postgres` and `pg_basebackup` was found.
    #[error(
        "PostgreSQL server binaries not found (looked in: {}); install the server package (Debian/Ubuntu: `sudo apt-get install postgresql`) or set SLUICE_PG_BINDIR",
        render_paths(.searched)
    )]
    NoBinaries {
        /// Every directory that was checked.
        searched: Vec<PathBuf>,
    },
    /// We run as root, and the unprivileged OS user the server must run as does not exist.
    #[error("running as root, but OS user {user:?} (needed to run the server) is not in /etc/passwd")]
    NoOsUser {
        /// The user looked for.
        user: String,
    },
    /// A file-system or process-spawn operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("`{command}` failed ({status})\n--- stderr (tail) ---\n{stderr_tail}{}", render_log(.log_tail))]
    Command {
        /// The command line, for copy-paste.
        command: String,
        /// The exit status as text (`exit code 1`, `killed by a signal`).
        status: String,
        /// The last lines of its stderr (and stdout when stderr is empty).
        stderr_tail: String,
        /// The last lines of the server log involved, if any.
        log_tail: Option<String>,
    },
    /// Something did not happen in time.
    #[error("timed out after {seconds}s waiting for {what}{}", render_log(.log_tail))]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        seconds: u64,
        /// The last lines of the server log involved, if any.
        log_tail: Option<String>,
    },
    /// No free TCP port was found below 32768.
    #[error("no free TCP port found on 127.0.0.1 after {attempts} attempts")]
    NoFreePort {
        /// How many ports were tried.
        attempts: u32,
    },
    /// A node index outside the cluster.
    #[error("node {index} does not exist (the cluster has {count} nodes)")]
    NoSuchNode {
        /// The index asked for.
        index: usize,
        /// How many nodes there are.
        count: usize,
    },
}

impl ClusterError {
    /// Wrap an IO error with what was being done.
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        ClusterError::Io { what: what.into(), source }
    }

    /// Attach a server log tail to an error that can carry one (others are returned as is).
    #[must_use]
    pub(crate) fn with_log(mut self, tail: Option<String>) -> Self {
        if let ClusterError::Command { log_tail, .. } | ClusterError::Timeout { log_tail, .. } = &mut self {
            if log_tail.is_none() {
                *log_tail = tail;
            }
        }
        self
    }
}

impl std::fmt::Debug for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

fn render_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
}

fn render_log(tail: &Option<String>) -> String {
    match tail {
        Some(t) if !t.is_empty() => format!("\n--- server log (tail) ---\n{t}"),
        _ => String::new(),
    }
}
