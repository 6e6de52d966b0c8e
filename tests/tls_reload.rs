//! Certificate reload on SIGHUP (the real binary): new handshakes get the new certificate,
//! established sessions keep working, a broken file keeps the old certificate and says why; and
//! the audit line each client connection leaves.

mod common;

use std::time::Duration;

use common::tls::{serial_of, Binding, RustlsConnector, TestPki};
use common::{Cluster, Proxy};
use sluice::pgcluster::{TEST_DATABASE, TEST_PASSWORD, TEST_USER};

async fn serial_seen(port: u16, pki: &TestPki) -> (String, tokio_postgres::Client) {
    let mut config = tokio_postgres::Config::new();
    config
        .host("localhost")
        .port(port)
        .user(TEST_USER)
        .password(TEST_PASSWORD)
        .dbname(TEST_DATABASE)
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .channel_binding(tokio_postgres::config::ChannelBinding::Require)
        .connect_timeout(Duration::from_secs(10));
    let connector = RustlsConnector::new(pki.client_config(), Binding::Real);
    let (client, connection) = config.connect(connector.clone()).await.expect("TLS login through sluice");
    tokio::spawn(connection);
    let der = connector.peer.lock().unwrap().clone().expect("a peer certificate");
    (serial_of(&der), client)
}

#[tokio::test]
async fn sighup_swaps_the_certificate_for_new_connections_and_each_login_is_audited() {
    let c = Cluster::start(0).await;
    let pki = TestPki::new("reload");
    let (live_cert, live_key) = (pki.path("live.crt"), pki.path("live.key"));
    std::fs::copy(pki.cert(), &live_cert).unwrap();
    std::fs::copy(pki.key(), &live_key).unwrap();
    let s = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    let p = Proxy::builder()
        .cluster(&c)
        .set("client_tls", "mode", "\"require\"")
        .set("client_tls", "cert", &s(&live_cert))
        .set("client_tls", "key", &s(&live_key))
        .spawn_process()
        .await;
    let hup = || {
        let status = std::process::Command::new("kill").args(["-HUP", &p.pid().to_string()]).status().unwrap();
        assert!(status.success());
    };
    // SIGHUP is handled asynchronously: wait (bounded) for the child to log the outcome.
    let wait_log = |needle: &'static str, times: usize| {
        let p = &p;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while p.log().matches(needle).count() < times {
                assert!(tokio::time::Instant::now() < deadline, "no {needle:?} in the log:\n{}", p.log());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    let (first, old_session) = serial_seen(p.port(), &pki).await;
    assert_eq!(first, "serial=01");

    let (cert2, key2) = pki.issue("second", 2);
    std::fs::copy(&cert2, &live_cert).unwrap();
    std::fs::copy(&key2, &live_key).unwrap();
    hup();
    wait_log("client TLS certificate reloaded", 1).await;
    let (second, _new_session) = serial_seen(p.port(), &pki).await;
    assert_eq!(second, "serial=02", "a new connection still got the old certificate");
    let one: i32 = old_session.query_one("SELECT 1", &[]).await.expect("the old session survives").get(0);
    assert_eq!(one, 1);

    // A broken file: the previous certificate stays in use.
    std::fs::write(&live_cert, "not a certificate").unwrap();
    hup();
    wait_log("NOT reloaded", 1).await;
    let (third, _) = serial_seen(p.port(), &pki).await;
    assert_eq!(third, "serial=02");
    assert!(p.log().contains("no PEM certificate"), "the log does not say why:\n{}", p.log());

    // One audit line per login, with TLS and method, never the password.
    let wrong = common::connect(p.port(), TEST_USER, "wrong-password", TEST_DATABASE).await;
    assert!(wrong.is_err());
    wait_log("refused 28000", 1).await;
    let log = strip_ansi(&p.log());
    let audits: Vec<&str> = log.lines().filter(|l| l.contains("sluice::audit")).collect();
    assert_eq!(audits.len(), 4, "{log}");
    for line in &audits[..3] {
        for part in ["user=sluice_test", "database=app", "tls=TLSv1_3/TLS13_", "auth=scram-sha-256-plus", "result=ok"] {
            assert!(line.contains(part), "{part} missing in {line}");
        }
    }
    assert!(audits[3].contains("tls=none") && audits[3].contains("requires TLS"), "{}", audits[3]);
    assert!(!log.contains(TEST_PASSWORD) && !log.contains("wrong-password"), "a password reached the log");
}

/// The log without terminal colour sequences.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
