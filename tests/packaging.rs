//! The packaging files, checked where no Docker engine, hadolint or systemd runs: the Dockerfile
//! parses into known instructions and does what the README promises (locked release build,
//! non-root, ships `config/`, exposes both ports, health check on `/health`); the systemd unit
//! reloads with SIGHUP, stops with SIGTERM within a drain's time and raises the open-files limit.

use std::collections::HashMap;
use std::path::Path;

fn repo(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Dockerfile instructions: (keyword, arguments), continuation lines joined, comments dropped.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current.split_once(char::is_whitespace).unwrap_or((&current, ""));
                out.push((keyword.to_ascii_uppercase(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    assert!(current.is_empty(), "the Dockerfile ends inside a continued line");
    out
}

const KNOWN: [&str; 18] = [
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
    "MAINTAINER",
];

fn has(set: &[(String, String)], keyword: &str, needle: &str) -> bool {
    set.iter().any(|(k, a)| k == keyword && a.contains(needle))
}

#[test]
fn the_dockerfile_parses_and_keeps_its_promises() {
    let all = instructions(&repo("Dockerfile"));
    assert_eq!(all.first().map(|i| i.0.as_str()), Some("FROM"), "a Dockerfile starts with FROM");
    for (keyword, args) in &all {
        assert!(KNOWN.contains(&keyword.as_str()), "unknown instruction {keyword}");
        assert!(!args.is_empty(), "{keyword} without arguments");
        if args.starts_with('[') {
            let parsed: Result<Vec<String>, _> = serde_json::from_str(args);
            assert!(parsed.is_ok(), "{keyword}: exec form is not a JSON array of strings: {args}");
        }
    }
    let last_from = all.iter().rposition(|i| i.0 == "FROM").unwrap();
    let runtime = &all[last_from..];
    assert!(has(&all, "RUN", "cargo build --release --locked"), "release build from the lock file");
    let user = runtime.iter().rev().find(|i| i.0 == "USER").expect("the runtime stage sets USER");
    assert!(!matches!(user.1.as_str(), "0" | "root") && !user.1.starts_with("0:"), "runs as non-root: {}", user.1);
    assert!(has(runtime, "COPY", "config /etc/sluice"), "ships config/");
    let exposed: Vec<&str> = runtime.iter().filter(|i| i.0 == "EXPOSE").flat_map(|i| i.1.split_whitespace()).collect();
    let example_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sluice.example.toml");
    let example = sluice::config::Config::load(&example_path).unwrap();
    for port in [example.listen.port(), example.admin_listen.unwrap().port()] {
        let port = port.to_string();
        assert!(exposed.contains(&port.as_str()), "port {port} of the example config is not exposed: {exposed:?}");
    }
    assert!(has(runtime, "HEALTHCHECK", "/health"), "a health check on /health");
    assert!(has(runtime, "ENTRYPOINT", "/usr/local/bin/sluice"));
    for (_, args) in all.iter().filter(|i| i.0 == "COPY" && !i.1.starts_with("--from")) {
        let words: Vec<&str> = args.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join(source).exists(), "COPY {source}: no such file");
        }
    }
}

/// `section.key` -> value of an INI-style unit file.
fn unit_keys(text: &str) -> HashMap<String, String> {
    let mut section = String::new();
    let mut keys = HashMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line}"));
        keys.insert(format!("{section}.{k}"), v.to_string());
    }
    keys
}

#[test]
fn the_systemd_unit_reloads_drains_and_raises_limits() {
    let keys = unit_keys(&repo("contrib/sluice.service"));
    for section in ["Unit", "Service", "Install"] {
        assert!(keys.keys().any(|k| k.starts_with(&format!("{section}."))), "no [{section}]");
    }
    assert!(keys["Service.ExecStart"].contains("sluice run --config"));
    assert!(keys["Service.ExecReload"].contains("-HUP"), "reload is SIGHUP");
    assert_eq!(keys.get("Service.KillSignal").map(String::as_str), Some("SIGTERM"));
    let nofile: u64 = keys["Service.LimitNOFILE"].parse().unwrap();
    assert!(nofile >= 16384, "LimitNOFILE {nofile} is too low for thousands of clients");
    let stop: u64 = keys["Service.TimeoutStopSec"].parse().unwrap();
    let drain = sluice::config::OpsConfig::default().lifecycle.shutdown_timeout.as_secs();
    assert!(stop > drain, "TimeoutStopSec {stop} would cut the {drain}s drain short");
    assert_ne!(keys.get("Service.User").map(String::as_str), Some("root"));
}
