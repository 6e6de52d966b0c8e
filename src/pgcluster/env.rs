//! The machine side: where the PostgreSQL server binaries live and which OS user runs them.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (containers, CI), every server
//! command runs as the `postgres` OS user instead, and the files it needs are chowned to it.
//! Everything here is looked up once per cluster and passed down; nothing is global.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::error::ClusterError;

/// Environment variable that overrides the server binary directory.
pub const BINDIR_ENV: &str = "SLUICE_PG_BINDIR";

/// The binaries a cluster needs in one directory.
const REQUIRED: [&str; 4] = ["initdb", "pg_ctl", "postgres", "pg_basebackup"];

/// The OS user PostgreSQL runs as when we are root.
const SERVER_OS_USER: &str = "postgres";

/// A directory holding the server binaries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Find the server binaries: `$SLUICE_PG_BINDIR`, `pg_config --bindir`,
    /// `/usr/lib/postgresql/<version>/bin` (Debian keeps the server there), then `PATH`.
    ///
    /// # Errors
    /// [`ClusterError::NoBinaries`] naming every place that was checked.
    pub fn locate() -> Result<Self, ClusterError> {
        let candidates = candidate_dirs();
        for dir in &candidates {
            if REQUIRED.iter().all(|b| dir.join(b).is_file()) {
                return Ok(Binaries { dir: dir.clone() });
            }
        }
        Err(ClusterError::NoBinaries { searched: candidates })
    }

    /// The full path of `name` (a server binary or a client such as `psql`).
    ///
    /// Clients missing from the server directory are taken from `PATH`.
    #[must_use]
    pub fn path(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        if p.is_file() {
            p
        } else {
            PathBuf::from(name)
        }
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os(BINDIR_ENV) {
        dirs.push(PathBuf::from(d));
    }
    if let Some(d) = command_stdout("pg_config", &["--bindir"]) {
        dirs.push(PathBuf::from(d.trim()));
    }
    if let Some(v) = command_stdout("pg_config", &["--version"]).and_then(|s| major_version(&s)) {
        dirs.push(PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")));
    }
    dirs.extend(debian_dirs_newest_first());
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.dedup();
    dirs
}

fn debian_dirs_newest_first() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") else {
        return Vec::new();
    };
    let mut versions: Vec<u32> = entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    versions.sort_unstable_by(|a, b| b.cmp(a));
    versions.into_iter().map(|v| PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"))).collect()
}

fn command_stdout(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The major version in `pg_config --version` output (`PostgreSQL 15.8 (Debian ...)` -> 15).
#[must_use]
pub fn major_version(text: &str) -> Option<u32> {
    let rest = text.trim().strip_prefix("PostgreSQL ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Who server commands run as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OsUser {
    /// Run as ourselves (we are not root).
    Current,
    /// Run as this uid/gid (we are root; PostgreSQL refuses root).
    Switch {
        /// User id.
        uid: u32,
        /// Primary group id.
        gid: u32,
    },
}

impl OsUser {
    /// Decide from our effective uid; when root, look up the `postgres` user.
    ///
    /// # Errors
    /// We are root and there is no `postgres` user.
    pub fn detect() -> Result<Self, ClusterError> {
        // The owner of /proc/self is our effective uid; reading it needs no `unsafe`.
        let euid = std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .map_err(|e| ClusterError::io("reading /proc/self to learn our uid", e))?;
        if euid != 0 {
            return Ok(OsUser::Current);
        }
        let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| ClusterError::io("reading /etc/passwd", e))?;
        let (uid, gid) = passwd_lookup(&passwd, SERVER_OS_USER)
            .ok_or_else(|| ClusterError::NoOsUser { user: SERVER_OS_USER.to_string() })?;
        Ok(OsUser::Switch { uid, gid })
    }

    /// Give `path` to the server's OS user (no-op when we run as ourselves).
    ///
    /// # Errors
    /// The chown failed.
    pub fn give(self, path: &Path) -> Result<(), ClusterError> {
        if let OsUser::Switch { uid, gid } = self {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| ClusterError::io(format!("chown {}", path.display()), e))?;
        }
        Ok(())
    }

    /// Make a `tokio` command run as this user.
    pub fn apply(self, cmd: &mut tokio::process::Command) {
        if let OsUser::Switch { uid, gid } = self {
            cmd.uid(uid).gid(gid);
        }
    }

    /// Make a blocking `std` command run as this user (used from `Drop`).
    pub fn apply_std(self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        if let OsUser::Switch { uid, gid } = self {
            cmd.uid(uid).gid(gid);
        }
    }
}

/// The uid and gid of `user` in `/etc/passwd` text.
#[must_use]
pub fn passwd_lookup(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != user {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lookup_finds_the_user_and_ignores_prefixes() {
        let text = "root:x:0:0:root:/root:/bin/bash\n\
                    postgresx:x:7:7::/:/bin/false\n\
                    postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";
        assert_eq!(passwd_lookup(text, "postgres"), Some((101, 104)));
        assert_eq!(passwd_lookup(text, "root"), Some((0, 0)));
        assert_eq!(passwd_lookup(text, "nobody"), None);
        assert_eq!(passwd_lookup("postgres:x:abc:1::/:/bin/sh", "postgres"), None);
    }

    #[test]
    fn major_version_parses_pg_config_output() {
        let cases = [
            ("PostgreSQL 15.8 (Debian 15.8-0+deb12u1)\n", Some(15)),
            ("PostgreSQL 9.6.24", Some(9)),
            ("PostgreSQL 17beta1", Some(17)),
            ("postgres 15", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(major_version(text), want, "{text:?}");
        }
    }

    #[test]
    fn binaries_are_found_on_this_machine() {
        let b = Binaries::locate().unwrap();
        assert!(b.dir().join("initdb").is_file());
        assert!(b.path("psql").to_str().unwrap().ends_with("psql"));
    }
}
