use super::*;

const MINIMAL: &str = r#"
[[nodes]]
name = "a"
host = "127.0.0.1"
port = 5432

[[users]]
name = "app"
password = "secret"
"#;

#[test]
fn minimal_file_gets_defaults() {
    let c = Config::from_toml_str(MINIMAL).unwrap();
    assert_eq!(c.listen.port(), 6432);
    assert_eq!(c.pool.mode, PoolMode::Transaction);
    assert_eq!(c.pool.size, 20);
    assert_eq!(c.limits.listen_backlog, 1024);
    assert_eq!(c.limits.idle_client_timeout, None);
    assert_eq!(c.users[0].auth, AuthMethod::ScramSha256);
    assert_eq!(c.users[0].server_password.as_deref(), Some("secret"));
    assert!(c.database_allowed("anything"));
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let text = r#"
listen = "nowhere"
[pool]
mode = "statement"
size = 0
checkout_timeout = "soon"
[[nodes]]
name = "a"
host = ""
[[users]]
name = "u"
auth = "md5"
[monitor]
user = "ghost"
"#;
    let err = Config::from_toml_str(text).unwrap_err();
    let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
    for expected in [
        "listen",
        "pool.mode",
        "pool.size",
        "pool.checkout_timeout",
        "nodes[0].host",
        "nodes[0].port",
        "users[0].password",
        "monitor.user",
    ] {
        assert!(keys.contains(&expected), "missing {expected} in {keys:?}");
    }
}

#[test]
fn pool_waits_must_be_positive_and_zero_turns_connection_ages_off() {
    let with = |pool: &str| Config::from_toml_str(&format!("{MINIMAL}\n[pool]\n{pool}\n"));
    for key in ["checkout_timeout", "connect_timeout"] {
        let err = with(&format!("{key} = \"0s\"")).unwrap_err();
        let problem = err.0.iter().find(|p| p.key == format!("pool.{key}")).expect("the key is named");
        assert_eq!(problem.reason, "must be greater than zero");
    }
    let c = with("server_idle_timeout = \"0s\"\nserver_lifetime = \"0s\"").unwrap();
    assert_eq!((c.pool.server_idle_timeout, c.pool.server_lifetime), (Duration::MAX, Duration::MAX));
    let c = with("server_idle_timeout = \"30s\"").unwrap();
    assert_eq!(c.pool.server_idle_timeout, Duration::from_secs(30));
}

#[test]
fn unknown_keys_are_rejected() {
    let err = Config::from_toml_str(&format!("{MINIMAL}\n[pool]\nsizee = 3\n")).unwrap_err();
    assert!(err.to_string().contains("sizee"), "{err}");
}

#[test]
fn secrets_are_recognised() {
    assert_eq!(super::validate_secret_for_tests("md53175bce1d3201d16594cebf9d7eb3f9d"), "md5");
    assert_eq!(super::validate_secret_for_tests("SCRAM-SHA-256$4096:abc$d:e"), "scram");
    assert_eq!(super::validate_secret_for_tests("plain"), "plain");
}

#[test]
fn duplicate_names_are_rejected() {
    let text = format!("{MINIMAL}\n[[nodes]]\nname = \"a\"\nhost = \"h\"\nport = 1\n");
    let err = Config::from_toml_str(&text).unwrap_err();
    assert_eq!(err.0[0].key, "nodes[1].name");
}

#[test]
fn failover_keys_have_defaults_and_bad_values_name_their_key() {
    let c = Config::from_toml_str(MINIMAL).unwrap();
    assert_eq!(c.failover.hold_timeout, Duration::from_secs(10));
    assert_eq!(c.failover.switchover_timeout, Duration::from_secs(30));
    assert_eq!((c.monitor.down_after, c.monitor.probe_timeout), (3, Duration::from_secs(1)));
    assert_eq!(c.routing.replica_max_lag, Some(Duration::from_secs(10)));
    let off = Config::from_toml_str(&format!("{MINIMAL}\n[routing]\nreplica_max_lag = \"0s\"\n")).unwrap();
    assert_eq!(off.routing.replica_max_lag, None);
    let bad = "[failover]\nhold_timeout = \"soon\"\nswitchover_timeout = \"later\"\n\
               [monitor]\ndown_after = 0\nprobe_timeout = \"1ms\"\n[routing]\nreplica_max_lag = \"x\"\n";
    let err = Config::from_toml_str(&format!("{MINIMAL}\n{bad}")).unwrap_err();
    let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
    for expected in [
        "failover.hold_timeout",
        "failover.switchover_timeout",
        "monitor.down_after",
        "monitor.probe_timeout",
        "routing.replica_max_lag",
    ] {
        assert!(keys.contains(&expected), "missing {expected} in {keys:?}");
    }
}
