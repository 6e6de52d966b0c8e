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
    }
}

async fn start(roles: &[Role]) -> Admin {
    let nodes: Vec<NodeView> = roles.iter().enumerate().map(|(i, r)| node(i, *r)).collect();
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let topology = TopologyHandle::new(Topology { generation: 7, nodes });
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::new(&mut registry, &names);
    let state = AdminState { registry: Arc::new(registry), topology: topology.clone(), metrics };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state, async move { stopped.await.unwrap_or(()) }));
    Admin { addr, topology, stop, task }
}

impl Admin {
    /// One GET with `Connection: close`, read to the end.
    async fn get(&self, path: &str) -> Reply {
        let mut stream = timeout(LIMIT, TcpStream::connect(self.addr)).await.unwrap().unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        timeout(LIMIT, stream.read_to_end(&mut raw)).await.unwrap().unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        Reply { status, head: head.to_ascii_lowercase(), body: body.to_string() }
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
async fn health_follows_the_primary() {
    let admin = start(&[Role::Primary, Role::Replica]).await;
    let reply = admin.get("/health").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok\n"));
    admin.topology.publish_nodes(vec![node(0, Role::Down), node(1, Role::Replica)]);
    let reply = admin.get("/health").await;
    assert_eq!((reply.status, reply.body.as_str()), (503, "no primary\n"));
    assert_eq!(admin.get("/health/read").await.status, 200);
    admin.topology.publish_nodes(vec![node(0, Role::Down), node(1, Role::Down)]);
    assert_eq!(admin.get("/health/read").await.status, 503);
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
async fn status_page_lists_nodes_and_unknown_paths_are_404() {
    let admin = start(&[Role::Primary]).await;
    let reply = admin.get("/").await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.contains("pg0   127.0.0.1  5432  primary  1       0/2A\n"), "{}", reply.body);
    assert_eq!(admin.get("/nope").await.status, 404);
    admin.stop().await;
}
