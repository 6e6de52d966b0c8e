//! A server connection lost while sluice opens it (startup, authentication) or replays the
//! session's settings on it, before any of the client's statement was sent: sluice opens
//! another at once and the client sees nothing. Only a node that keeps closing its new
//! connections fails the statement, with a connection-failure SQLSTATE, and the session goes on.
//!
//! The losses are made by a forwarder in front of the primary ([`Cutter`]) that can close the
//! next connections of the test database as their startup arrives (with the FATAL a terminated
//! backend sends, or with nothing), or as sluice's settings replay or a pool's reset arrives
//! (a reset does nothing that outlives its connection: it runs again), and can cut every
//! connection it carries (so that sluice's idle ones are dead and the next statement opens new
//! ones). The monitor's connections (database `postgres`) are never cut.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use common::{Cluster, Proxy};
use sluice::pgcluster::{TEST_DATABASE, TEST_PASSWORD, TEST_USER};

/// The session setting every new server connection must get replayed; the replay is told
/// from the client's own statements by being a simple Query that sluice sends, after the
/// client's `SET` ran.
const SETTING: &str = "statement_timeout";

/// The code of an SSLRequest packet.
const SSL_REQUEST: u32 = 80_877_103;

/// What the forwarder does to the connections it is told to cut.
#[derive(Default)]
struct Cuts {
    /// Logins answered with a terminated backend's FATAL (57P01), then closed.
    fatal_logins: AtomicU32,
    /// Logins closed without a word.
    closed_logins: AtomicU32,
    /// Settings replays (a Query naming [`SETTING`]) closed before they reach the server.
    replays: AtomicU32,
    /// Queries naming `RESET ALL` (a pool's reset) closed before they reach the server.
    resets: AtomicU32,
    /// Connections of the test database carried now.
    open: AtomicU32,
}

/// Takes one cut of `n` if any is left.
fn take(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| k.checked_sub(1)).is_ok()
}

/// A TCP forwarder in front of one server that cuts connections as told ([`Cuts`]).
struct Cutter {
    addr: SocketAddr,
    cuts: Arc<Cuts>,
    /// Bumped to cut every connection carried now.
    sever: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Cutter {
    async fn start(upstream: u16) -> Cutter {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cuts = Arc::new(Cuts::default());
        let (sever, severed) = watch::channel(0);
        let upstream = SocketAddr::from(([127, 0, 0, 1], upstream));
        let task = tokio::spawn(accept(listener, upstream, Arc::clone(&cuts), severed));
        Cutter { addr, cuts, sever, task }
    }

    /// Close every connection carried now, and wait until the test database's are closed:
    /// sluice's idle ones are then seen dead, and its next statement opens a new one.
    async fn sever_all(&self) {
        self.sever.send_modify(|n| *n += 1);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.cuts.open.load(Ordering::SeqCst) > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the forwarder's connections did not close");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Cutter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, cuts: Arc<Cuts>, severed: watch::Receiver<u64>) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((client, _)) = listener.accept().await {
        connections.spawn(carry(client, upstream, Arc::clone(&cuts), severed.clone()));
    }
}

/// One connection: the startup packet, then both directions until either side closes, a cut
/// applies, or every connection is severed.
async fn carry(mut client: TcpStream, upstream: SocketAddr, cuts: Arc<Cuts>, mut severed: watch::Receiver<u64>) {
    severed.borrow_and_update();
    let Ok(startup) = read_startup(&mut client).await else { return };
    let ours = startup.windows(TEST_DATABASE.len() + 2).any(|w| w[1..w.len() - 1] == *TEST_DATABASE.as_bytes());
    if ours && take(&cuts.fatal_logins) {
        let _ = client.write_all(&terminated()).await;
        return;
    }
    if ours && take(&cuts.closed_logins) {
        return;
    }
    let _open = ours.then(|| Open::count(&cuts));
    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
    if server.write_all(&startup).await.is_err() {
        return;
    }
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let down = tokio::io::copy(&mut from_server, &mut to_client);
    let up = async {
        while let Ok(message) = read_message(&mut from_client).await {
            let names = |what: &str| message[0] == b'Q' && message.windows(what.len()).any(|w| w == what.as_bytes());
            if ours && (names(SETTING) && take(&cuts.replays) || names("RESET ALL") && take(&cuts.resets)) {
                return;
            }
            if to_server.write_all(&message).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = down => {}
        () = up => {}
        _ = severed.changed() => {}
    }
}

/// The startup packet; an SSLRequest before it is answered "no" here (the server's
/// certificate is none of this test's business).
/// Counts a connection of the test database in [`Cuts::open`] while it lives.
struct Open(Arc<Cuts>);

impl Open {
    fn count(cuts: &Arc<Cuts>) -> Open {
        cuts.open.fetch_add(1, Ordering::SeqCst);
        Open(Arc::clone(cuts))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn read_startup(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = s.read_u32().await?;
    if len == 8 {
        let code = s.read_u32().await?;
        assert_eq!(code, SSL_REQUEST, "an 8-byte packet before the startup is an SSLRequest");
        s.write_all(b"N").await?;
        len = s.read_u32().await?;
    }
    let mut packet = len.to_be_bytes().to_vec();
    packet.resize(len as usize, 0);
    s.read_exact(&mut packet[4..]).await?;
    Ok(packet)
}

async fn read_message(s: &mut tokio::net::tcp::OwnedReadHalf) -> std::io::Result<Vec<u8>> {
    let tag = s.read_u8().await?;
    let len = s.read_u32().await?;
    let mut message = vec![tag];
    message.extend_from_slice(&len.to_be_bytes());
    message.resize(1 + len as usize, 0);
    s.read_exact(&mut message[5..]).await?;
    Ok(message)
}

/// What a backend terminated during its startup sends before it closes.
fn terminated() -> BytesMut {
    let mut fields = BytesMut::new();
    for (k, v) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "57P01"),
        (b'M', "terminating connection due to administrator command"),
    ] {
        fields.put_u8(k);
        fields.put_slice(v.as_bytes());
        fields.put_u8(0);
    }
    fields.put_u8(0);
    let mut out = BytesMut::new();
    out.put_u8(b'E');
    out.put_u32(u32::try_from(4 + fields.len()).unwrap());
    out.put_slice(&fields);
    out
}

/// A primary behind a [`Cutter`], sluice in front of that, and a client whose session has
/// [`SETTING`] set (every new server connection gets it replayed).
async fn setup() -> (Cluster, Cutter, Proxy, tokio_postgres::Client) {
    let c = Cluster::start(0).await;
    c.psql("CREATE TABLE opened (n int)").await;
    let cutter = Cutter::start(c.primary_port()).await;
    let p = Proxy::builder()
        .node("node0", cutter.addr.port())
        .user(TEST_USER, TEST_PASSWORD)
        .pool_size(4)
        .monitor_interval("100ms")
        .start()
        .await;
    p.wait_topology(1, 0).await;
    let client = p.connect().await;
    client.batch_execute(&format!("SET {SETTING} = '41s'")).await.unwrap();
    (c, cutter, p, client)
}

/// The session's setting as the server it runs on sees it.
async fn setting(client: &tokio_postgres::Client) -> Result<String, tokio_postgres::Error> {
    let row = client.query_one(&format!("SELECT current_setting('{SETTING}')"), &[]).await?;
    Ok(row.get(0))
}

async fn rows(client: &tokio_postgres::Client) -> i64 {
    client.query_one("SELECT count(*) FROM opened", &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_lost_as_it_is_opened_is_replaced_unseen() {
    let (_c, cutter, _p, client) = setup().await;

    // A read, then a write, each finding its idle connection dead and its first two new
    // ones lost at login: one terminated (57P01), one closed.
    for write in [false, true] {
        cutter.cuts.fatal_logins.store(1, Ordering::SeqCst);
        cutter.cuts.closed_logins.store(1, Ordering::SeqCst);
        cutter.sever_all().await;
        if write {
            client
                .batch_execute("INSERT INTO opened VALUES (1)")
                .await
                .expect("the write runs on the third connection");
        } else {
            assert_eq!(setting(&client).await.expect("the read runs on the third connection"), "41s");
        }
        assert_eq!(cutter.cuts.fatal_logins.load(Ordering::SeqCst), 0, "the cut was used");
        assert_eq!(cutter.cuts.closed_logins.load(Ordering::SeqCst), 0, "the cut was used");
    }
    assert_eq!(rows(&client).await, 1, "the write ran once");
    assert_eq!(setting(&client).await.unwrap(), "41s");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_lost_while_the_session_is_replayed_on_it_is_replaced_unseen() {
    let (_c, cutter, _p, client) = setup().await;
    // A write's replay is a round trip before the write (one simple Query) is sent: two lost,
    // the third connection serves.
    cutter.cuts.replays.store(2, Ordering::SeqCst);
    cutter.sever_all().await;
    client.batch_execute("INSERT INTO opened VALUES (1)").await.expect("the write runs after its replay");
    assert_eq!(cutter.cuts.replays.load(Ordering::SeqCst), 0, "the cuts were used");
    // A read's replay (accepted by the node before) goes in the same write as the read: the
    // read, lost before any reply, runs again on a new connection.
    cutter.cuts.replays.store(1, Ordering::SeqCst);
    cutter.sever_all().await;
    assert_eq!(setting(&client).await.expect("the read runs again"), "41s");
    assert_eq!(cutter.cuts.replays.load(Ordering::SeqCst), 0, "the cut was used");
    assert_eq!(rows(&client).await, 1, "the write ran once");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_closing_every_new_connection_fails_the_statement_and_the_session_goes_on() {
    let (_c, cutter, _p, client) = setup().await;
    cutter.cuts.closed_logins.store(1_000, Ordering::SeqCst);
    cutter.sever_all().await;
    let e = client.batch_execute("INSERT INTO opened VALUES (1)").await.expect_err("no connection opens");
    let code = e.as_db_error().map(|d| d.code().code().to_string());
    assert_eq!(code.as_deref(), Some("08006"), "{e:?}");
    let tries = 1_000 - cutter.cuts.closed_logins.swap(0, Ordering::SeqCst);
    assert!((1..=3).contains(&tries), "a few connections tried, not {tries}");
    // The same client connection goes on, its session state kept.
    assert_eq!(setting(&client).await.expect("the session goes on"), "41s");
    assert_eq!(rows(&client).await, 0, "the failed write never ran");
}

/// A pool's reset (asyncpg's, at every release) whose connection is lost before any reply runs
/// again on a new connection: what it undoes died with the lost one. asyncpg closes its client
/// connection when its reset fails.
#[tokio::test(flavor = "multi_thread")]
async fn a_pool_reset_whose_connection_is_lost_runs_again_unseen() {
    let (_c, cutter, _p, client) = setup().await;
    assert_eq!(setting(&client).await.unwrap(), "41s");
    cutter.cuts.resets.store(1, Ordering::SeqCst);
    client
        .batch_execute("SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;")
        .await
        .expect("the reset runs again");
    assert_eq!(cutter.cuts.resets.load(Ordering::SeqCst), 0, "the cut was used");
    assert_eq!(setting(&client).await.unwrap(), "0", "the session is reset");
}
