//! The README's first command, as a new user runs it: `sluice demo` starts, prints a psql
//! command that works, and Ctrl-C (SIGINT) stops and removes everything.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Interrupts (then kills) the demo if the test ends early, so no cluster outlives it.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = Command::new("kill").args(["-INT", &self.0.id().to_string()]).status();
            for _ in 0..100 {
                if !matches!(self.0.try_wait(), Ok(None)) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.0.kill();
        }
    }
}

#[test]
fn sluice_demo_prints_a_working_psql_command_and_stops_on_ctrl_c() {
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("demo")
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sluice demo starts");
    let mut child = Running(child);
    let stdout = child.0.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut printed = Vec::new();
    let psql_line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.trim_start().starts_with("psql ") => break line.trim().to_string(),
            Ok(line) => printed.push(line),
            Err(_) => {
                panic!("sluice demo printed no psql command within 120 s; it printed:\n{}", printed.join("\n"));
            }
        }
    };
    let url = psql_line.trim_start_matches("psql ").trim_matches('"').to_string();
    let out = Command::new("psql").arg(&url).args(["-XAtc", "SELECT 40 + 2"]).output().expect("psql runs");
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let topology = printed.join("\n");
    let roles: Vec<&str> =
        printed.iter().filter(|l| l.starts_with("  node")).filter_map(|l| l.split_whitespace().nth(2)).collect();
    assert_eq!(roles, ["primary", "replica", "replica"], "{topology}");

    let status = Command::new("kill").args(["-INT", &child.0.id().to_string()]).status().expect("kill runs");
    assert!(status.success());
    let stop_deadline = Instant::now() + Duration::from_secs(60);
    let exit = loop {
        if let Some(s) = child.0.try_wait().expect("wait works") {
            break s;
        }
        if Instant::now() > stop_deadline {
            panic!("sluice demo did not stop within 60 s of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        answer,
        "42",
        "psql through the demo answered {answer:?}; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(exit.success(), "sluice demo exited with {exit}");
}
