//! The admin endpoint over real HTTP/1.1 on 127.0.0.1, with a hand-made topology.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::*;
use crate::topology::{NodeView, Role, Topology};

const LIMIT: Duration = Duration::from_secs(10);

struct Admin {
    addr: SocketAddr,
    topology: TopologyHandle,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

fn node(index: usize, role: Role) -> NodeView {
    let name = format!("pg{index}");
    NodeView {
        index,
        name,
        host: "127.0.0.1".into(),
        port: 5432 + index as u16,
        role,
        weight: 1,
        wal_lsn: Some(42),
        excluded: None,
        timeline: None,
        replay_lag: None,
    }
}

/// Handles the admin endpoint reads besides the topology: a one-node configuration.
fn shared(topology: &TopologyHandle, metrics: &Arc<Metrics>, token: Option<&str>) -> Arc<crate::frontend::Shared> {
    let mut toml = "[[nodes]]\nname = \"pg0\"\nhost = \"127.0.0.1\"\nport = 5432\n\
                    [[users]]\nname = \"app\"\npassword = \"p\"\n"
        .to_string();
    if let Some(t) = token {
        toml.push_str(&format!("[admin]\ntoken = \"{t}\"\n"));
    }
    let config = Arc::new(crate::live::Live::new(crate::config::Config::from_toml_str(&toml).unwrap()));
    let pools = Arc::new(crate::backend::Pools::new(Arc::clone(&config), Arc::clone(metrics)));
    let (control, _requests) = crate::reload::Control::channel();
    Arc::new(crate::frontend::Shared::new(config, topology.clone(), pools, Arc::clone(metrics), control))
}

async fn start(roles: &[Role]) -> Admin {
    start_with_token(roles, None).await
}

async fn start_with_token(roles: &[Role], token: Option<&str>) -> Admin {
    let nodes: Vec<NodeView> = roles.iter().enumerate().map(|(i, r)| node(i, *r)).collect();
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let topology = TopologyHandle::new(Topology { generation: 7, nodes });
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::new(&mut registry, &names);
    let shared = shared(&topology, &metrics, token);
    let events = Arc::new(Events::default());
    let state = AdminState { registry: Arc::new(registry), topology: topology.clone(), metrics, shared, events };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state, axum::Router::new(), async move { stopped.await.unwrap_or(()) }));
    Admin { addr, topology, stop, task }
}

/// One HTTP/1.1 request with `Connection: close`, read to the end.
async fn http(addr: SocketAddr, method: &str, path: &str, headers: &str) -> Reply {
    let mut stream = timeout(LIMIT, TcpStream::connect(addr)).await.unwrap().unwrap();

    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    timeout(LIMIT, stream.read_to_end(&mut raw)).await.unwrap().unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Reply { status, head: head.to_ascii_lowercase(), body: body.to_string() }
}

impl Admin {
    /// One GET with `Connection: close`, read to the end.
    async fn get(&self, path: &str) -> Reply {
        self.request("GET", path, "").await
    }

    /// One request with extra header lines, read to the end.
    async fn request(&self, method: &str, path: &str, headers: &str) -> Reply {
        http(self.addr, method, path, headers).await
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        timeout(LIMIT, self.task).await.unwrap().unwrap().unwrap();
    }
}

#[tokio::test]
async fn metrics_are_openmetrics_text_with_fresh_node_gauges() {
    let admin = start(&[Role::Primary, Role::Replica]).await;
    let reply = admin.get("/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(reply.head.contains(&format!("content-type: {OPENMETRICS_CONTENT_TYPE}")), "{}", reply.head);
    assert!(reply.body.contains("sluice_topology_generation 7\n"), "{}", reply.body);
    assert!(reply.body.contains("sluice_node_role{node=\"pg0\"} 2\n"), "{}", reply.body);
    assert!(reply.body.contains("sluice_node_wal_lsn{node=\"pg1\"} 42\n"), "{}", reply.body);
    assert!(reply.body.ends_with("# EOF\n"));
    admin.stop().await;
}

#[tokio::test]
async fn health_is_json_ok_degraded_or_down() {
    let admin = start(&[Role::Primary, Role::Replica]).await;
    let reply = admin.get("/health").await;
    assert_eq!(reply.status, 200);
    assert!(reply.head.contains("content-type: application/json"), "{}", reply.head);
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!((json["status"].as_str(), json["primary"]["name"].as_str()), (Some("ok"), Some("pg0")));
    admin.topology.publish_nodes(vec![node(0, Role::Primary), node(1, Role::Down)]);
    let reply = admin.get("/health").await;
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!((reply.status, json["status"].as_str()), (200, Some("degraded")));
    admin.topology.publish_nodes(vec![node(0, Role::Down), node(1, Role::Replica)]);
    let reply = admin.get("/health").await;
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!((reply.status, json["status"].as_str()), (503, Some("down")));
    assert_eq!(json["primary"], serde_json::Value::Null);
    assert_eq!(admin.get("/health/read").await.status, 200);
    admin.topology.publish_nodes(vec![node(0, Role::Down), node(1, Role::Down)]);
    assert_eq!(admin.get("/health/read").await.status, 503);
    admin.stop().await;
}

#[tokio::test]
async fn a_token_guards_everything_but_health() {
    let admin = start_with_token(&[Role::Primary], Some("s3cret")).await;
    assert_eq!(admin.get("/health").await.status, 200);
    assert_eq!(admin.get("/health/read").await.status, 200);
    for path in ["/metrics", "/topology", "/stats", "/"] {
        assert_eq!(admin.get(path).await.status, 401, "{path}");
        assert_eq!(admin.request("GET", path, "Authorization: Bearer wrong!\r\n").await.status, 401, "{path}");
        assert_eq!(admin.request("GET", path, "Authorization: Bearer s3cret\r\n").await.status, 200, "{path}");
    }
    admin.stop().await;
}

#[tokio::test]
async fn stats_waits_for_the_next_generation() {
    let admin = start(&[Role::Primary, Role::Replica]).await;
    let json: serde_json::Value = serde_json::from_str(&admin.get("/stats").await.body).unwrap();
    assert_eq!(json["nodes"][1]["role"], "replica");
    let waiting = {
        let addr = admin.addr;
        tokio::spawn(async move { http(addr, "GET", "/stats?wait_generation=7", "").await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "no change yet: the request waits");
    admin.topology.publish_nodes(vec![node(0, Role::Primary), node(1, Role::Down)]);
    let reply = timeout(LIMIT, waiting).await.unwrap().unwrap();
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!((json["generation"].as_u64(), json["nodes"][1]["role"].as_str()), (Some(8), Some("down")));
    admin.stop().await;
}

#[tokio::test]
async fn topology_is_json_naming_every_node() {
    let admin = start(&[Role::Replica, Role::Primary]).await;
    let reply = admin.get("/topology").await;
    assert_eq!(reply.status, 200);
    assert!(reply.head.contains("content-type: application/json"), "{}", reply.head);
    let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(json["generation"], 7);
    assert_eq!(json["primary"], "pg1");
    assert_eq!(json["nodes"][0]["name"], "pg0");
    assert_eq!(json["nodes"][0]["role"], "replica");
    assert_eq!(json["nodes"][1]["port"], 5433);
    assert_eq!(json["nodes"][1]["wal_lsn"], 42);
    admin.stop().await;
}

#[tokio::test]
async fn status_page_is_one_html_file_and_unknown_paths_are_404() {
    let admin = start(&[Role::Primary]).await;
    let reply = admin.get("/").await;
    assert_eq!(reply.status, 200);
    assert!(reply.head.contains("content-type: text/html"), "{}", reply.head);
    assert!(reply.body.contains("fetch(\"/stats\""), "it polls /stats");
    assert!(!reply.body.contains("src=\"http") && !reply.body.contains("href=\"http"), "no external assets");
    assert_eq!(admin.get("/nope").await.status, 404);
    admin.stop().await;
}
