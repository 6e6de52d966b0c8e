//! Running the PostgreSQL binaries: as the right OS user, in a neutral working directory, with
//! no inherited `PG*` variables, bounded in time, and failing with the command line, the exit
//! status and the tail of its output.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use super::env::{Binaries, OsUser};
use super::error::ClusterError;

/// Lines of stderr / server log kept in an error.
const TAIL_LINES: usize = 25;

/// libpq variables that would silently redirect our commands elsewhere.
const PG_ENV: [&str; 9] =
    ["PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGSERVICE", "PGOPTIONS", "PGDATA"];

/// Who runs a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum As {
    /// The server's OS user (server binaries: initdb, pg_ctl, pg_basebackup).
    Server,
    /// Ourselves (clients: psql).
    Client,
}

/// Runs binaries for one cluster.
#[derive(Clone, Debug)]
pub struct Runner {
    bins: Binaries,
    user: OsUser,
    cwd: PathBuf,
}

impl Runner {
    /// A runner using `bins`, switching to `user` for server commands, running in `cwd`
    /// (a directory the server user can enter).
    #[must_use]
    pub fn new(bins: Binaries, user: OsUser, cwd: PathBuf) -> Self {
        Runner { bins, user, cwd }
    }

    /// The OS user server commands run as.
    #[must_use]
    pub fn os_user(&self) -> OsUser {
        self.user
    }

    /// Run `program` with `args` and extra `env`, wait at most `limit`, return its stdout.
    ///
    /// # Errors
    /// It could not be spawned, it timed out (and was killed), or it exited non-zero.
    pub async fn run<S: AsRef<OsStr>>(
        &self,
        who: As,
        program: &str,
        args: &[S],
        env: &[(&str, &str)],
        limit: Duration,
    ) -> Result<String, ClusterError> {
        let path = self.bins.path(program);
        let mut cmd = tokio::process::Command::new(&path);
        cmd.args(args)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for var in PG_ENV {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied());
        if who == As::Server {
            self.user.apply(&mut cmd);
        }
        let line = command_line(&path, args);
        let output = match tokio::time::timeout(limit, cmd.output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(ClusterError::io(format!("spawning `{line}`"), e)),
            Err(_) => {
                return Err(ClusterError::Timeout {
                    what: format!("`{line}`"),
                    seconds: limit.as_secs(),
                    log_tail: None,
                })
            }
        };
        check(line, output)
    }

    /// Blocking, best-effort run of a server command (for `Drop`, which cannot await).
    /// Returns true if it exited zero.
    pub fn run_blocking(&self, program: &str, args: &[OsString]) -> bool {
        let mut cmd = std::process::Command::new(self.bins.path(program));
        cmd.args(args).current_dir(&self.cwd).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        for var in PG_ENV {
            cmd.env_remove(var);
        }
        self.user.apply_std(&mut cmd);
        cmd.status().is_ok_and(|s| s.success())
    }
}

fn check(line: String, output: Output) -> Result<String, ClusterError> {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let evidence = if stderr.trim().is_empty() { &stdout } else { stderr.as_ref() };
    let status = match output.status.code() {
        Some(code) => format!("exit code {code}"),
        None => "killed by a signal".to_string(),
    };
    Err(ClusterError::Command { command: line, status, stderr_tail: tail(evidence, TAIL_LINES), log_tail: None })
}

fn command_line<S: AsRef<OsStr>>(program: &Path, args: &[S]) -> String {
    let mut parts = vec![program.display().to_string()];
    parts.extend(args.iter().map(|a| shell_quote(&a.as_ref().to_string_lossy())));
    parts.join(" ")
}

fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_=./:,@%+".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The last `n` lines of `text`.
#[must_use]
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// The last lines of a log file, or `None` if it cannot be read.
#[must_use]
pub fn file_tail(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(tail(&String::from_utf8_lossy(&bytes), TAIL_LINES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
        assert_eq!(tail("", 3), "");
    }

    #[test]
    fn command_lines_are_copy_pasteable() {
        let line = command_line(Path::new("/bin/psql"), &["-c", "select 'x'", "-p", "5432"]);
        assert_eq!(line, r"/bin/psql -c 'select '\''x'\''' -p 5432");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn failed_commands_report_status_and_stderr() {
        let out = std::process::Command::new("sh").args(["-c", "echo out; echo boom >&2; exit 3"]).output().unwrap();
        let err = check("sh -c ...".into(), out).unwrap_err().to_string();
        assert!(err.contains("exit code 3"), "{err}");
        assert!(err.contains("boom"), "{err}");
    }
}
