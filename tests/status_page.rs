//! The live status page in a real headless browser (Debian `chromium`): it shows the primary and
//! both replicas, and a replica stopped while the page is open shows as down without a reload.
//! Skipped (with a note) where no `chromium` is installed; `scripts/test.sh` installs it.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{Cluster, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BROWSER: &str = "chromium";

fn browser_available() -> bool {
    std::process::Command::new(BROWSER).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// Load `url` in a fresh headless chromium and print the DOM after `budget_ms` of virtual time.
fn dump_dom(url: &str, budget_ms: u32, profile: &Path) -> tokio::process::Child {
    tokio::process::Command::new(BROWSER)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium starts")
}

async fn dom(child: tokio::process::Child) -> String {
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium ran");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `<tr id="node-NAME">` row of the DOM.
fn row<'a>(dom: &'a str, node: &str) -> &'a str {
    let start = dom.find(&format!("id=\"node-{node}\"")).unwrap_or_else(|| panic!("no row for {node}:\n{dom}"));
    let end = dom[start..].find("</tr>").map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

async fn watchers(admin: SocketAddr) -> u64 {
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: sluice\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("{}");
    serde_json::from_str::<serde_json::Value>(body).unwrap()["watchers"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_shows_every_node_and_a_stopped_replica_without_a_reload() {
    if !browser_available() {
        eprintln!("(skipped: no `{BROWSER}`; scripts/test.sh installs it)");
        return;
    }
    let c = Cluster::start(2).await;
    let p =
        Proxy::builder().cluster(&c).monitor_interval("100ms").set("", "admin_listen", "\"127.0.0.1:0\"").start().await;
    p.wait_topology(1, 2).await;
    let admin = p.admin_addr().unwrap();
    let url = format!("http://{admin}/");
    let profile = tempfile::tempdir().unwrap();

    let first = dom(dump_dom(&url, 3000, &profile.path().join("a"))).await;
    assert!(row(&first, "node0").contains(">primary<"), "{first}");
    assert!(row(&first, "node1").contains(">replica<"), "{first}");
    assert!(row(&first, "node2").contains(">replica<"), "{first}");

    let open = dump_dom(&url, 8000, &profile.path().join("b"));
    // Once the page has rendered it waits on /stats for the next topology change.
    for _ in 0..600 {
        if watchers(admin).await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(watchers(admin).await > 0, "the page never started waiting for changes");
    c.stop_node(2).await.unwrap();
    let after = dom(open).await;
    assert!(row(&after, "node2").contains(">down<"), "{after}");
    assert!(row(&after, "node1").contains(">replica<"), "{after}");
    assert!(after.contains("node2: replica -&gt; down") || after.contains("node2: replica -> down"), "{after}");
}
