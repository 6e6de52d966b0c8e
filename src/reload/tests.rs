use super::*;

fn config(extra: &str, nodes: &[&str], users: &[&str]) -> Config {
    let listen = if extra.contains("listen =") { "" } else { "listen = \"127.0.0.1:7000\"\n" };
    let mut t = format!("{listen}{extra}\n");
    for (i, n) in nodes.iter().enumerate() {
        t.push_str(&format!("[[nodes]]\nname = \"{n}\"\nhost = \"127.0.0.1\"\nport = {}\n", 5000 + i));
    }
    for u in users {
        t.push_str(&format!("[[users]]\nname = \"{u}\"\npassword = \"p-{u}\"\n"));
    }
    Config::from_toml_str(&t).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn nodes_keep_their_slots_by_name() {
    let running = config("", &["a", "b", "c"], &["app"]);
    let p = plan(&running, &[true, true, true], config("", &["c", "d", "a"], &["app"]));
    let names: Vec<&str> = p.config.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    assert_eq!(p.active, [true, false, true, true]);
    assert!(p.report.changes.contains(&"node d added".to_string()), "{:?}", p.report);
    assert!(p.report.changes.contains(&"node b removed".to_string()), "{:?}", p.report);
    assert!(p.report.changes.contains(&"node c changed".to_string()), "port moved: {:?}", p.report);
    // b comes back into its old slot.
    let again = plan(&p.config, &p.active, config("", &["a", "b"], &["app"]));
    assert_eq!(again.active, [true, true, false, false]);
    assert!(again.report.changes.contains(&"node b added back".to_string()), "{:?}", again.report);
}

#[test]
fn users_and_live_keys_are_reported_and_restart_keys_keep_running_values() {
    let running = config("", &["a"], &["app", "old"]);
    let file = config("listen = \"127.0.0.1:7001\"\n[pool]\nsize = 5\nmode = \"session\"\n", &["a"], &["app", "new"]);
    let p = plan(&running, &[true], file);
    assert_eq!(p.config.listen, running.listen);
    assert_eq!(p.config.pool.mode, running.pool.mode);
    assert_eq!(p.config.pool.size, 5);
    let restart: Vec<&str> = p.report.needs_restart.iter().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(restart, ["listen", "pool.mode"]);
    for line in ["user new added", "user old removed", "pool.size: 20 -> 5"] {
        assert!(p.report.changes.contains(&line.to_string()), "{line} missing: {:?}", p.report);
    }
}

#[test]
fn an_unchanged_file_changes_nothing() {
    let running = config("", &["a", "b"], &["app"]);
    let p = plan(&running, &[true, true], config("", &["a", "b"], &["app"]));
    assert_eq!(p.report, ReloadReport::default());
    assert_eq!(p.config, running);
}
