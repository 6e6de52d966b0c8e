//! The admin endpoint of a running sluice: Prometheus metrics that count what happened, health
//! that follows the primary, and the topology as JSON.

mod common;

use std::net::SocketAddr;

use common::{Cluster, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain HTTP/1.1 GET: (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: sluice\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// The `status` of a `/health` body.
fn health_status(body: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    json["status"].as_str().unwrap_or_default().to_string()
}

/// Poll `/health` (up to 15 s) until it says `want` with HTTP `code`.
async fn wait_health(admin: SocketAddr, want: &str, code: u16) -> serde_json::Value {
    let mut last = (0, String::new());
    for _ in 0..150 {
        last = get(admin, "/health").await;
        if last.0 == code && health_status(&last.1) == want {
            return serde_json::from_str(&last.1).unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("/health never said {want} ({code}); last: {last:?}");
}

/// The value of one series in OpenMetrics text.
fn value(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap_or(f64::NAN)))
        .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_health_and_topology_describe_the_running_proxy() {
    let c = Cluster::start(1).await;
    let p = Proxy::builder().cluster(&c).set("", "admin_listen", "\"127.0.0.1:0\"").start().await;
    p.wait_topology(1, 1).await;
    let admin = p.admin_addr().expect("admin_listen is set");
    let client = p.connect().await;
    for _ in 0..3 {
        client.simple_query("SELECT 1").await.unwrap();
    }
    client.simple_query("CREATE TABLE m (x int)").await.unwrap();
    // A server's error reaches the client through sluice: counted like sluice's own.
    common::expect_sqlstate(client.simple_query("SELECT 1/0").await, "22012");
    common::expect_sqlstate(client.simple_query("SELECT 'x'::int").await, "22P02");
    let _ = common::connect(p.port(), "nobody", "wrong", "app").await.expect_err("unknown user");

    let (status, body) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    // The login's own checkout is routed (and counted) like a read.
    assert!(value(&body, "sluice_route_decisions_total{reason=\"read_on_replica\"}") >= 3.0, "{body}");
    assert!(value(&body, "sluice_units_total{outcome=\"ready\"}") >= 4.0, "{body}");
    for line in [
        "sluice_route_decisions_total{reason=\"write\"} 1",
        "sluice_client_connections 1",
        "sluice_client_rejections_total{reason=\"auth_failed\"} 1",
        "sluice_client_errors_total{class=\"22\"} 2",
        "sluice_node_role{node=\"node0\"} 2",
        "sluice_node_role{node=\"node1\"} 1",
    ] {
        assert!(body.contains(line), "missing {line:?} in:\n{body}");
    }
    assert!(body.contains("sluice_server_connections_opened_total{node=\"node0\"}"), "{body}");
    // CREATE TABLE went to node0, the SELECTs to node1: both saw protocol bytes both ways.
    for node in ["node0", "node1"] {
        for way in ["sent", "received"] {
            let series = format!("sluice_server_{way}_bytes_total{{node=\"{node}\"}}");
            assert!(value(&body, &series) > 0.0, "{series} in:\n{body}");
        }
    }

    let (status, body) = get(admin, "/health").await;
    assert_eq!((status, health_status(&body).as_str()), (200, "ok"));
    let (status, body) = get(admin, "/topology").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"node0\"") && body.contains("\"primary\"") && body.contains("\"replica\""), "{body}");

    c.kill_node(0).await.unwrap();
    let mut unhealthy = false;
    for _ in 0..50 {
        if get(admin, "/health").await.0 == 503 {
            unhealthy = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(unhealthy, "/health stayed 200 after the primary died");
    assert_eq!(get(admin, "/health/read").await.0, 200, "the replica still serves reads");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_goes_ok_degraded_down_and_back() {
    let c = Cluster::start(1).await;
    let p =
        Proxy::builder().cluster(&c).monitor_interval("100ms").set("", "admin_listen", "\"127.0.0.1:0\"").start().await;
    let admin = p.admin_addr().expect("admin_listen is set");
    let ok = wait_health(admin, "ok", 200).await;
    assert_eq!(ok["primary"]["name"], "node0");
    assert_eq!(ok["replicas"][0]["name"], "node1");
    assert!(ok["replicas"][0]["lag_bytes"].is_u64(), "{ok}");
    assert!(ok["replicas"][0]["lag_seconds"].is_number(), "the replica's replay lag in time: {ok}");

    c.stop_node(1).await.unwrap();
    let degraded = wait_health(admin, "degraded", 200).await;
    assert_eq!(degraded["replicas"][0]["role"], "down");
    assert!(degraded["replicas"][0]["excluded_reason"].is_string(), "{degraded}");

    c.stop_node(0).await.unwrap();
    let down = wait_health(admin, "down", 503).await;
    assert_eq!(down["primary"], serde_json::Value::Null);

    c.start_node(0).await.unwrap();
    c.start_node(1).await.unwrap();
    wait_health(admin, "ok", 200).await;
}
