//! TLS between clients and sluice: psql (`sslmode=require`, `verify-full`, `channel_binding=require`),
//! tokio-postgres over rustls with and without channel binding, direct TLS, and what `require`
//! refuses.

mod common;

use std::time::Duration;

use common::tls::{psql_conninfo, Binding, RustlsConnector, TestPki};
use common::{expect_sqlstate, Cluster, Proxy};
use sluice::pgcluster::{TEST_DATABASE, TEST_PASSWORD, TEST_USER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pg_config(port: u16, host: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port)
        .user(TEST_USER)
        .password(TEST_PASSWORD)
        .dbname(TEST_DATABASE)
        .connect_timeout(Duration::from_secs(10));
    config
}

async fn tls_client(
    config: &tokio_postgres::Config,
    connector: RustlsConnector,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(connector).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn tls_proxy(c: &Cluster, pki: &TestPki, mode: &str) -> Proxy {
    let s = |p: std::path::PathBuf| format!("{:?}", p.display().to_string());
    Proxy::builder()
        .cluster(c)
        .set("client_tls", "mode", &format!("{mode:?}"))
        .set("client_tls", "cert", &s(pki.cert()))
        .set("client_tls", "key", &s(pki.key()))
        .start()
        .await
}

#[tokio::test]
async fn psql_and_tokio_postgres_connect_over_tls_with_channel_binding() {
    let c = Cluster::start(0).await;
    let pki = TestPki::new("clients");
    let p = tls_proxy(&c, &pki, "require").await;
    let port = p.port();
    let ca = pki.ca().display().to_string();
    for conninfo in [
        format!("host=127.0.0.1 port={port} sslmode=require"),
        format!("host=localhost port={port} sslmode=verify-full sslrootcert={ca}"),
        format!("host=127.0.0.1 port={port} sslmode=verify-full sslrootcert={ca}"),
        format!("host=localhost port={port} sslmode=verify-full sslrootcert={ca} channel_binding=require"),
    ] {
        let conninfo = format!("{conninfo} user={TEST_USER} dbname={TEST_DATABASE}");
        let out = psql_conninfo(&conninfo, TEST_PASSWORD, "SELECT 40 + 2").await;
        assert_eq!(out.as_deref(), Ok("42"), "{conninfo}");
    }

    let mut config = pg_config(port, "localhost");
    config.ssl_mode(tokio_postgres::config::SslMode::Require);
    config.channel_binding(tokio_postgres::config::ChannelBinding::Require);
    let client = tls_client(&config, RustlsConnector::new(pki.client_config(), Binding::Real)).await.unwrap();
    let row = client.query_one("SELECT 1 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    // Tens of megabytes each way through both TLS legs: nothing stalls in rustls's buffers.
    let big = "SELECT repeat(md5(g::text), 100000) FROM generate_series(1, 10) g";
    let rows = tokio::time::timeout(Duration::from_secs(60), client.query(big, &[])).await.expect("bounded").unwrap();
    assert_eq!(rows.iter().map(|r| r.get::<_, String>(0).len()).sum::<usize>(), 32_000_000);
    let echo: String = client.query_one("SELECT $1::text", &[&"y".repeat(8_000_000)]).await.unwrap().get(0);
    assert_eq!(echo.len(), 8_000_000);

    // A binding that does not match sluice's certificate is a failed login.
    let wrong = tls_client(&config, RustlsConnector::new(pki.client_config(), Binding::Wrong)).await;
    expect_sqlstate(wrong, "28P01");

    // Direct TLS (PostgreSQL 17's negotiation): a ClientHello with ALPN "postgresql" first.
    config.ssl_negotiation(tokio_postgres::config::SslNegotiation::Direct);
    config.channel_binding(tokio_postgres::config::ChannelBinding::Prefer);
    let direct = tls_client(&config, RustlsConnector::new(pki.client_config(), Binding::Real)).await.unwrap();
    assert_eq!(direct.query_one("SELECT 'direct'", &[]).await.unwrap().get::<_, String>(0), "direct");
}

#[tokio::test]
async fn require_refuses_plaintext_and_bytes_smuggled_after_ssl_request() {
    let c = Cluster::start(0).await;
    let pki = TestPki::new("require");
    let p = tls_proxy(&c, &pki, "require").await;
    let msg = expect_sqlstate(common::connect(p.port(), TEST_USER, TEST_PASSWORD, TEST_DATABASE).await, "28000");
    assert!(msg.contains("requires TLS"), "{msg}");

    // SSLRequest and a plaintext StartupMessage in one packet: never answered, never read.
    let mut sock = tokio::net::TcpStream::connect(p.addr()).await.unwrap();
    let mut packet = vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let mut startup = Vec::new();
    startup.extend_from_slice(&196_608i32.to_be_bytes());
    for kv in ["user", TEST_USER, "database", TEST_DATABASE, ""] {
        startup.extend_from_slice(kv.as_bytes());
        startup.push(0);
    }
    packet.extend_from_slice(&((startup.len() + 4) as i32).to_be_bytes());
    packet.extend_from_slice(&startup);
    sock.write_all(&packet).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "sluice kept a smuggling client open");
    assert!(answer.is_empty(), "sluice answered {answer:?} instead of closing");

    // A client that asks for TLS and then says nothing is closed (limits.startup_timeout, 5 s).
    let mut silent = tokio::net::TcpStream::connect(p.addr()).await.unwrap();
    silent.write_all(&packet[..8]).await.unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(30), silent.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a silent TLS handshake was kept open");
    assert_eq!(rest, b"S");

    // Direct TLS without ALPN "postgresql" is refused.
    let mut config = (*pki.client_config()).clone();
    config.alpn_protocols.clear();
    let tcp = tokio::net::TcpStream::connect(p.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), async {
        let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await?;
        let mut buf = [0u8; 1];
        tls.write_all(&packet[8..]).await?;
        tls.read(&mut buf).await
    })
    .await
    .expect("bounded");
    assert!(matches!(outcome, Ok(0) | Err(_)), "a direct TLS client without ALPN got {outcome:?}");

    // `allow` still serves plaintext clients.
    let allow = tls_proxy(&c, &pki, "allow").await;
    let client = common::connect(allow.port(), TEST_USER, TEST_PASSWORD, TEST_DATABASE).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
}
