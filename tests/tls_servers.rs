//! TLS between sluice and the servers: `[server_tls]` modes, `pg_stat_ssl` on the primary, a
//! certificate from another CA refused, cancels over TLS.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls::TestPki;
use common::{expect_sqlstate, Cluster, Proxy, ProxyBuilder};
use prometheus_client::registry::Registry;
use sluice::backend::{PoolKey, Pools, ServerConn};
use sluice::error::BackendError;
use sluice::pgcluster::{ServerPki, TEST_DATABASE, TEST_USER};
use tokio_postgres::NoTls;

fn server_tls(builder: ProxyBuilder, mode: &str, ca: Option<&std::path::Path>) -> ProxyBuilder {
    let b = builder.set("server_tls", "mode", &format!("{mode:?}"));
    match ca {
        Some(ca) => b.set("server_tls", "ca", &format!("{:?}", ca.display().to_string())),
        None => b,
    }
}

/// One connection to node 0 the way sluice's pools open them, outside any proxy.
async fn connect_once(builder: &ProxyBuilder) -> Result<ServerConn, BackendError> {
    let config = builder.config();
    let tls = sluice::tls::ServerTls::new(&config.server_tls).expect("server_tls files load");
    let metrics = sluice::metrics::Metrics::new(&mut Registry::default(), &["node0".to_string()]);
    let pools = Pools::new(Arc::new(sluice::live::Live::new(config)), metrics).with_server_tls(tls);
    let key = PoolKey { node: 0, database: TEST_DATABASE.into(), user: TEST_USER.into() };
    ServerConn::connect(&pools.spec(&key, Duration::from_secs(10))).await
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_full_encrypts_every_server_connection_and_refuses_another_ca() {
    let c = Cluster::start(0).await;
    let pki = TestPki::new("servers");
    let base = Proxy::builder().cluster(&c).monitor_interval("100ms");

    // Before the servers speak TLS: require fails with a reason, prefer falls back.
    let err = connect_once(&server_tls(base.clone(), "require", None)).await.err().expect("require without TLS");
    assert!(matches!(err, BackendError::Tls { .. }), "{err:?}");
    assert!(err.to_string().contains("does not support TLS"), "{err}");
    connect_once(&server_tls(base.clone(), "prefer", None)).await.expect("prefer falls back to plaintext");

    c.enable_ssl(ServerPki { cert: &pki.cert(), key: &pki.key(), client_ca: None }).await.unwrap();

    // A certificate from another CA is refused, saying why.
    let other = TestPki::new("other");
    let err = connect_once(&server_tls(base.clone(), "verify-full", Some(&other.ca()))).await.err().expect("refused");
    assert_eq!(err.sqlstate(), "08001");
    let text = err.to_string();
    assert!(text.contains("verify-full") && text.to_lowercase().contains("certificate"), "{text}");
    // verify-ca checks the chain as well.
    assert!(connect_once(&server_tls(base.clone(), "verify-ca", Some(&other.ca()))).await.is_err());
    connect_once(&server_tls(base.clone(), "verify-ca", Some(&pki.ca()))).await.expect("verify-ca, right CA");

    let p = server_tls(base, "verify-full", Some(&pki.ca())).start().await;
    p.wait_topology(1, 0).await;
    let client = p.connect().await;
    let ssl: bool =
        client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await.unwrap().get(0);
    assert!(ssl, "the server connection sluice used is not encrypted");
    let seen = c
        .psql(
            "SELECT count(*) FILTER (WHERE s.ssl) || ',' || count(*) FILTER (WHERE NOT s.ssl) \
             FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.usename = 'sluice_test' AND a.pid <> pg_backend_pid()",
        )
        .await;
    let (encrypted, plain) = seen.split_once(',').unwrap();
    assert!(encrypted.parse::<u32>().unwrap() >= 2, "pool and monitor connections: {seen}");
    assert_eq!(plain, "0", "sluice opened a plaintext connection: {seen}");

    // A cancel reaches the server over the same TLS.
    let token = client.cancel_token();
    let query = tokio::spawn(async move { client.simple_query("SELECT pg_sleep(30)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    token.cancel_query(NoTls).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), query).await.expect("cancelled in time").unwrap();
    expect_sqlstate(result, "57014");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn server_tls_sends_the_node_host_name_as_sni() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = TestPki::new("sni");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 8];
        tcp.read_exact(&mut request).await.unwrap();
        assert_eq!(request, [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f], "not an SSLRequest");
        tcp.write_all(b"S").await.unwrap();
        let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
        let hello = acceptor.await.unwrap();
        let name = hello.client_hello().server_name().map(str::to_string);
        let alpn: Vec<Vec<u8>> =
            hello.client_hello().alpn().map(|a| a.map(<[u8]>::to_vec).collect()).unwrap_or_default();
        (name, alpn)
    });
    let cfg = sluice::config::ServerTlsConfig {
        mode: sluice::config::ServerTlsMode::VerifyFull,
        ca: Some(pki.ca()),
        cert: None,
        key: None,
    };
    let tls = sluice::tls::ServerTls::new(&cfg).unwrap();
    // The fake server never finishes the handshake: only the ClientHello matters.
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.connect("localhost", port)).await;
    let (name, alpn) = tokio::time::timeout(Duration::from_secs(5), server).await.expect("hello seen").unwrap();
    assert_eq!(name.as_deref(), Some("localhost"));
    assert_eq!(alpn, vec![b"postgresql".to_vec()]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_logs_sluice_in_where_the_server_demands_one() {
    let c = Cluster::start(0).await;
    let pki = TestPki::new("certauth");
    c.enable_ssl(ServerPki { cert: &pki.cert(), key: &pki.key(), client_ca: Some(&pki.ca()) }).await.unwrap();
    c.psql("CREATE ROLE certuser LOGIN").await;
    c.require_client_cert("certuser").await.unwrap();
    let (cert, key) = pki.issue_for("certuser", 7, "certuser");
    let s = |p: &std::path::Path| format!("{:?}", p.display().to_string());
    let base = server_tls(Proxy::builder().cluster(&c), "verify-full", Some(&pki.ca()))
        .user_with_auth("certuser", "", "trust");

    let with_cert = base.clone().set("server_tls", "cert", &s(&cert)).set("server_tls", "key", &s(&key)).start().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let client = loop {
        match with_cert.try_connect_as("certuser", "", TEST_DATABASE).await {
            Ok(client) => break client,
            Err(e) => assert!(Instant::now() < deadline, "certuser cannot log in: {}", common::describe(&e)),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let who: String = client.query_one("SELECT current_user::text", &[]).await.unwrap().get(0);
    assert_eq!(who, "certuser");

    let without = base.start().await;
    let msg = expect_sqlstate(without.try_connect_as("certuser", "", TEST_DATABASE).await, "28000");
    assert!(msg.contains("certificate"), "{msg}");
}
