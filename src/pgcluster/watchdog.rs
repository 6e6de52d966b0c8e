//! A safety net for clusters whose owner dies without running `Drop` (SIGKILL, a test runner's
//! timeout, `kill` of `sluice demo`): a small `sh` loop that outlives us, notices our pid is
//! gone, stops every server of the cluster at once and removes its directory.
//!
//! `pg_ctl` refuses to run as root, so the watchdog signals the postmasters directly (SIGQUIT
//! is PostgreSQL's immediate shutdown) with the pids from `postmaster.pid`. It ignores SIGINT
//! and SIGHUP, which a Ctrl-C in the terminal sends to our whole process group. A normal
//! `Drop` kills the watchdog first and cleans up itself.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::error::ClusterError;

/// `$1`: the owner's pid; `$2`: the cluster's root directory.
const SCRIPT: &str = r#"
trap '' INT HUP
while kill -0 "$1" 2>/dev/null; do sleep 1; done
for f in "$2"/node*/postmaster.pid; do
  [ -f "$f" ] && kill -QUIT "$(head -n 1 "$f")" 2>/dev/null
done
for _ in 1 2 3 4 5 6 7 8 9 10; do
  ls "$2"/node*/postmaster.pid >/dev/null 2>&1 || break
  sleep 0.5
done
rm -rf "$2"
"#;

/// The running watchdog of one cluster; [`Watchdog::disarm`] or dropping it stops it.
#[derive(Debug)]
pub struct Watchdog {
    child: Child,
}

impl Watchdog {
    /// Watch `owner` (a pid) and clean up `root` when it is gone.
    ///
    /// # Errors
    /// `sh` could not be spawned.
    pub fn arm(owner: u32, root: &Path) -> Result<Self, ClusterError> {
        let child = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("sluice-pgcluster-watchdog")
            .arg(owner.to_string())
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| ClusterError::io("spawning the cluster watchdog (sh)", e))?;
        Ok(Watchdog { child })
    }

    /// Stop watching (the owner is cleaning up itself).
    pub fn disarm(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.disarm();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_until_gone(path: &Path, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if !path.exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    #[test]
    fn the_root_is_removed_when_the_owner_dies() {
        let root = tempfile::tempdir().unwrap().keep();
        std::fs::create_dir(root.join("node0")).unwrap();
        let mut owner = Command::new("sleep").arg("0.3").spawn().unwrap();
        let _dog = Watchdog::arm(owner.id(), &root).unwrap();
        owner.wait().unwrap();
        assert!(wait_until_gone(&root, Duration::from_secs(10)), "{} survived", root.display());
    }

    #[test]
    fn a_disarmed_watchdog_leaves_everything_alone() {
        let root = tempfile::tempdir().unwrap();
        let mut owner = Command::new("sleep").arg("0.3").spawn().unwrap();
        let mut dog = Watchdog::arm(owner.id(), root.path()).unwrap();
        dog.disarm();
        owner.wait().unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        assert!(root.path().exists());
    }
}
