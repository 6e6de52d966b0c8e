//! `contrib/grafana-dashboard.json` is built on series sluice really exports: every `sluice_*`
//! name in its queries appears in a running proxy's `/metrics`.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use common::{Cluster, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn metrics(admin: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: sluice\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()
}

fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| exprs(i, out)),
        _ => {}
    }
}

/// Every `sluice_...` identifier in a PromQL expression.
fn series_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("sluice_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn every_series_the_dashboard_uses_is_exported() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 10, "{queries:?}");
    let used: BTreeSet<String> = queries.iter().flat_map(|e| series_names(e)).collect();

    let c = Cluster::start(0).await;
    let p = Proxy::builder().cluster(&c).set("", "admin_listen", "\"127.0.0.1:0\"").start().await;
    p.wait_topology(1, 0).await;
    p.connect().await.simple_query("SELECT 1").await.unwrap();
    let _ = common::connect(p.port(), "nobody", "wrong", "app").await.expect_err("unknown user");
    let body = metrics(p.admin_addr().unwrap()).await;
    let exported: BTreeSet<&str> =
        body.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    let missing: Vec<&String> = used.iter().filter(|s| !exported.contains(s.as_str())).collect();
    assert!(missing.is_empty(), "the dashboard uses series /metrics does not have: {missing:?}\n{body}");
    // The list: errors by SQLSTATE class, held writes and hold time, failovers and
    // fences, classification cache hits/misses, TLS connections, pool wait p99; and traffic.
    for wanted in [
        "sluice_client_errors_total",
        "sluice_held_units_total",
        "sluice_hold_wait_seconds_bucket",
        "sluice_topology_changes_total",
        "sluice_classify_cache_hits_total",
        "sluice_classify_cache_misses_total",
        "sluice_client_logins_total",
        "sluice_pool_checkout_wait_seconds_bucket",
        "sluice_server_sent_bytes_total",
        "sluice_server_received_bytes_total",
    ] {
        assert!(used.contains(wanted), "the dashboard should chart {wanted}");
    }
}
