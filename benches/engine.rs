//! Whole units through the real session engine, without sockets and without a cluster: a
//! simple read (cached classification, 1 primary + 2 replicas so routing is real), a simple
//! write, an extended unnamed read (Parse/Bind/Describe/Execute/Sync) and a read of a prepared
//! statement (Bind/Execute/Sync).
//!
//! What runs is the proxy's own code from an authenticated client on: `Session` and its relay,
//! classification, routing on a topology snapshot, pool checkout and release, state sync,
//! statement mapping and expectation tracking. What is replaced: the client and the servers are
//! in-memory pipes (`MaybeTls::Memory`) answered by a tiny fake PostgreSQL below, so the kernel's
//! share of a transaction (socket syscalls, epoll, wake-ups across threads: ~70% of the proxy's
//! CPU under pgbench, see PERFORMANCE.md) and the pool's socket liveness probe are not measured;
//! the engine's user-space cost per unit is. One current-thread runtime runs the client, the
//! session and the fake servers, so a number is one unit's path through all three.
//!
//! Before measuring (and in `cargo test --bench engine`, where criterion runs each bench once),
//! `check_units` sends units of every kind and asserts the replies the client got and which
//! fake node executed them: the benches cannot silently measure errors or nothing.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion};
use prometheus_client::registry::Registry;
use sluice::backend::{MemoryDial, Pools};
use sluice::config::Config;
use sluice::frontend::handshake::Login;
use sluice::frontend::params::LoginState;
use sluice::frontend::session::Session;
use sluice::frontend::Shared;
use sluice::live::Live;
use sluice::metrics::Metrics;
use sluice::protocol::messages::{self, Severity};
use sluice::protocol::startup::StartupParams;
use sluice::protocol::{Frame, FrameReader, TxStatus};
use sluice::tls::MaybeTls;
use sluice::topology::{NodeView, Role, Topology, TopologyHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// Bytes an in-memory pipe buffers in each direction (a unit and its replies fit many times).
const PIPE_BYTES: usize = 64 * 1024;

/// Largest message either fake accepts.
const MAX_MESSAGE: usize = 1 << 20;

const NODES: usize = 3;

const READ_SQL: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
const SIMPLE_READ_SQL: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = 1";
const WRITE_SQL: &str = "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 1";
const PREPARED: &str = "P_0";

/// What each fake node executed, by node index.
#[derive(Default)]
struct Counts {
    /// Simple Queries on the bench's table (not sluice's own: catalog, WAL position, SET).
    queries: [AtomicU64; NODES],
    /// Execute messages.
    executes: [AtomicU64; NODES],
    /// Parse of a named statement.
    named_parses: [AtomicU64; NODES],
}

impl Counts {
    fn snapshot(&self) -> [[u64; NODES]; 3] {
        let load = |a: &[AtomicU64; NODES]| std::array::from_fn(|i| a[i].load(Ordering::Relaxed));
        [load(&self.queries), load(&self.executes), load(&self.named_parses)]
    }
}

// ---------------------------------------------------------------------------------------------
// The fake PostgreSQL server: one task per connection the pool opens.

/// The server's side of one connection: its prepared statements and whether it skips to Sync
/// after an error, as PostgreSQL does.
struct FakeConn {
    node: usize,
    counts: Arc<Counts>,
    named: HashSet<String>,
    unnamed: bool,
    failed: bool,
    out: BytesMut,
}

async fn fake_server(node: usize, mut io: DuplexStream, counts: Arc<Counts>) {
    // The startup packet has no tag: read it by its length, then frame the rest.
    let mut len = [0u8; 4];
    if io.read_exact(&mut len).await.is_err() {
        return;
    }
    let mut startup = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
    if io.read_exact(&mut startup).await.is_err() {
        return;
    }
    let mut out = BytesMut::new();
    messages::authentication(&mut out, messages::auth_code::OK, &[]);
    for (k, v) in [("server_version", "15.0"), ("client_encoding", "UTF8"), ("DateStyle", "ISO, MDY")] {
        messages::parameter_status(&mut out, k, v);
    }
    let pid = i32::try_from(node).unwrap_or(0) + 100;
    messages::backend_key_data(&mut out, pid, 7);
    messages::ready_for_query(&mut out, TxStatus::Idle);
    let mut conn = FakeConn { node, counts, named: HashSet::new(), unnamed: false, failed: false, out };
    let mut reader = FrameReader::new(io, MAX_MESSAGE);
    loop {
        let frame = match reader.buffered_frame() {
            Ok(Some(f)) => f,
            Ok(None) => {
                // Everything buffered is answered: send the replies, then wait for more.
                if !conn.out.is_empty() && reader.get_mut().write_all(&conn.out).await.is_err() {
                    return;
                }
                conn.out.clear();
                match reader.next().await {
                    Ok(Some(f)) => f,
                    _ => return,
                }
            }
            Err(_) => return,
        };
        if !conn.answer(&frame) {
            return;
        }
    }
}

impl FakeConn {
    /// Answer one frontend message; false on Terminate.
    fn answer(&mut self, frame: &Frame) -> bool {
        let body = frame.body();
        match frame.tag() {
            b'X' => return false,
            b'Q' => self.query(messages::decode_query(body).unwrap_or("")),
            b'S' => {
                self.failed = false;
                messages::ready_for_query(&mut self.out, TxStatus::Idle);
            }
            _ if self.failed => {}
            b'P' => self.parse(body),
            b'B' => self.bind(body),
            b'D' => self.describe(body),
            b'E' => {
                self.counts.executes[self.node].fetch_add(1, Ordering::Relaxed);
                messages::data_row(&mut self.out, &[Some("1")]);
                messages::command_complete(&mut self.out, "SELECT 1");
            }
            b'C' => {
                if let Some((b'S', name)) = messages::decode_target(body) {
                    self.named.remove(name);
                }
                messages::close_complete(&mut self.out);
            }
            b'H' => {}
            other => self.error("08P01", &format!("fake server: unexpected message {:?}", other as char)),
        }
        true
    }

    fn query(&mut self, sql: &str) {
        let word = sql.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
        if sql.contains("pgbench_accounts") {
            self.counts.queries[self.node].fetch_add(1, Ordering::Relaxed);
        }
        if sql.contains("wal_insert_lsn") {
            messages::row_description(&mut self.out, &["pg_current_wal_insert_lsn"]);
            messages::data_row(&mut self.out, &[Some("0/3000060")]);
            messages::command_complete(&mut self.out, "SELECT 1");
        } else if word == "SELECT" {
            messages::row_description(&mut self.out, &["abalance"]);
            messages::data_row(&mut self.out, &[Some("1")]);
            messages::command_complete(&mut self.out, "SELECT 1");
        } else if word == "UPDATE" {
            messages::command_complete(&mut self.out, "UPDATE 1");
        } else if word == "DISCARD" {
            messages::command_complete(&mut self.out, "DISCARD ALL");
        } else {
            messages::command_complete(&mut self.out, &word);
        }
        messages::ready_for_query(&mut self.out, TxStatus::Idle);
    }

    fn parse(&mut self, body: &[u8]) {
        let Some(p) = messages::decode_parse(body) else { return self.error("08P01", "bad Parse") };
        if p.name.is_empty() {
            self.unnamed = true;
        } else if !self.named.insert(p.name.to_string()) {
            let msg = format!("prepared statement \"{}\" already exists", p.name);
            return self.error("42P05", &msg);
        } else {
            self.counts.named_parses[self.node].fetch_add(1, Ordering::Relaxed);
        }
        messages::parse_complete(&mut self.out);
    }

    fn bind(&mut self, body: &[u8]) {
        let Some(b) = messages::decode_bind_head(body) else { return self.error("08P01", "bad Bind") };
        let known = if b.statement.is_empty() { self.unnamed } else { self.named.contains(b.statement) };
        if !known {
            let msg = format!("prepared statement \"{}\" does not exist", b.statement);
            return self.error("26000", &msg);
        }
        self.out.put_slice(&[b'2', 0, 0, 0, 4]);
    }

    fn describe(&mut self, body: &[u8]) {
        if let Some((b'S', _)) = messages::decode_target(body) {
            // ParameterDescription: one parameter of type int4.
            self.out.put_slice(&[b't', 0, 0, 0, 10, 0, 1, 0, 0, 0, 23]);
        }
        messages::row_description(&mut self.out, &["abalance"]);
    }

    fn error(&mut self, code: &str, message: &str) {
        messages::error_response(&mut self.out, Severity::Error, code, message);
        self.failed = true;
    }
}

// ---------------------------------------------------------------------------------------------
// The proxy, wired as `Proxy::start` does but with a fixed topology and in-memory servers.

struct Engine {
    rt: tokio::runtime::Runtime,
    shared: &'static Shared,
    counts: Arc<Counts>,
    /// Kept so the proxy's request channel stays open.
    _requests: tokio::sync::mpsc::Receiver<sluice::reload::Request>,
}

fn node(index: usize, role: Role) -> NodeView {
    NodeView {
        index,
        name: format!("pg{index}"),
        host: "127.0.0.1".into(),
        port: 5432,
        role,
        weight: 1,
        // Replicas have replayed every write the fake primary reports (0/3000060).
        wal_lsn: Some(1 << 40),
        excluded: None,
        timeline: Some(1),
        replay_lag: None,
    }
}

impl Engine {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let mut toml = String::new();
        for i in 0..NODES {
            toml.push_str(&format!("[[nodes]]\nname = \"pg{i}\"\nhost = \"127.0.0.1\"\nport = {}\n\n", 5432 + i));
        }
        toml.push_str("[[users]]\nname = \"bench\"\nauth = \"trust\"\n");
        let config = Config::from_toml_str(&toml).expect("bench configuration");
        let names: Vec<String> = config.nodes.iter().map(|n| n.name.clone()).collect();
        let metrics = Metrics::new(&mut Registry::default(), &names);
        let config = Arc::new(Live::new(config));
        let counts = Arc::new(Counts::default());
        let fakes = Arc::clone(&counts);
        let dial = MemoryDial(Arc::new(move |node| {
            let (proxy_end, server_end) = tokio::io::duplex(PIPE_BYTES);
            tokio::spawn(fake_server(node, server_end, Arc::clone(&fakes)));
            proxy_end
        }));
        let pools = Arc::new(Pools::new(Arc::clone(&config), Arc::clone(&metrics)).with_memory_servers(dial));
        let topology = TopologyHandle::new(Topology {
            generation: 1,
            nodes: vec![node(0, Role::Primary), node(1, Role::Replica), node(2, Role::Replica)],
        });
        let (control, requests) = sluice::reload::Control::channel();
        // Leaked: sessions borrow it for the life of the process, as the listener's tasks do.
        let shared: &'static Shared = Box::leak(Box::new(Shared::new(config, topology, pools, metrics, control)));
        Self { rt, shared, counts, _requests: requests }
    }

    /// A new client session, logged in (its login's replies read up to ReadyForQuery).
    fn client(&self) -> Client {
        let (client_end, proxy_end) = tokio::io::duplex(PIPE_BYTES);
        let startup = StartupParams::from_pairs([("client_encoding", "UTF8")]);
        let login = Login {
            client: FrameReader::new(MaybeTls::Memory(proxy_end), MAX_MESSAGE),
            user: "bench".into(),
            database: "bench".into(),
            addr: None,
            params: LoginState::new(startup, false).expect("startup parameters"),
            owed: BytesMut::new(),
        };
        let shared = self.shared;
        // Inside the runtime: a session's first classifier starts its catalog load as a task.
        self.rt.spawn(async move {
            if let Some(session) = Session::new(shared, login).login_boxed(BytesMut::new()).await {
                session.run().await;
            }
        });
        let mut client = Client { io: FrameReader::new(client_end, MAX_MESSAGE), tags: Vec::new() };
        self.rt.block_on(client.until_ready());
        client
    }
}

/// The fake client: sends a unit, reads its replies up to ReadyForQuery.
struct Client {
    io: FrameReader<DuplexStream>,
    /// Tags of the last unit's replies.
    tags: Vec<u8>,
}

impl Client {
    async fn unit(&mut self, unit: &[u8]) {
        self.io.get_mut().write_all(unit).await.expect("the session reads its client");
        self.until_ready().await;
    }

    async fn until_ready(&mut self) {
        self.tags.clear();
        loop {
            let frame = self.io.next().await.expect("framing").expect("the session ended");
            self.tags.push(frame.tag());
            match frame.tag() {
                b'E' => panic!("the unit failed: {:?}", messages::decode_error(frame.body())),
                b'Z' => return,
                _ => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The units.

fn simple(sql: &str) -> Bytes {
    let mut b = BytesMut::new();
    messages::query(&mut b, sql);
    b.freeze()
}

/// Bind of `statement` to the unnamed portal with one text parameter.
fn bind(b: &mut BytesMut, statement: &str) {
    let mut rest = BytesMut::new();
    rest.put_i16(0);
    rest.put_i16(1);
    rest.put_i32(1);
    rest.put_u8(b'1');
    rest.put_i16(0);
    messages::bind_renamed(b, b"", statement, &rest);
}

/// pgbench `-M extended`: Parse/Bind/Describe/Execute/Sync of the unnamed statement.
fn extended() -> Bytes {
    let mut b = BytesMut::new();
    messages::parse(&mut b, "", READ_SQL.as_bytes(), &[0, 0]);
    bind(&mut b, "");
    messages::describe(&mut b, b'P', "");
    messages::execute(&mut b, "", 0);
    messages::sync(&mut b);
    b.freeze()
}

/// Prepare the named statement once (Parse/Sync).
fn prepare() -> Bytes {
    let mut b = BytesMut::new();
    messages::parse(&mut b, PREPARED, READ_SQL.as_bytes(), &[0, 0]);
    messages::sync(&mut b);
    b.freeze()
}

/// pgbench `-M prepared` after the first run: Bind/Execute/Sync of the named statement.
fn prepared() -> Bytes {
    let mut b = BytesMut::new();
    bind(&mut b, PREPARED);
    messages::execute(&mut b, "", 0);
    messages::sync(&mut b);
    b.freeze()
}

/// Run `n` units on a new session; the replies of the last one and what each node did meanwhile.
fn run(engine: &Engine, setup: Option<&Bytes>, unit: &Bytes, n: u64) -> (Vec<u8>, [[u64; NODES]; 3]) {
    let mut client = engine.client();
    if let Some(setup) = setup {
        engine.rt.block_on(client.unit(setup));
    }
    let before = engine.counts.snapshot();
    for _ in 0..n {
        engine.rt.block_on(client.unit(unit));
    }
    let after = engine.counts.snapshot();
    let delta = std::array::from_fn(|k| std::array::from_fn(|i| after[k][i] - before[k][i]));
    (client.tags, delta)
}

/// Every kind of unit completes with the replies a client expects, on the node routing must
/// choose; panics otherwise (criterion's test mode runs this too).
fn check_units(engine: &Engine) {
    let n = 10;
    let (tags, [queries, ..]) = run(engine, None, &simple(SIMPLE_READ_SQL), n);
    assert_eq!(tags, b"TDCZ", "simple read replies");
    assert_eq!(queries, [0, n / 2, n / 2], "simple reads take turns over the two replicas");
    let (tags, [queries, ..]) = run(engine, None, &simple(WRITE_SQL), n);
    assert_eq!(tags, b"CZ", "simple write replies");
    assert_eq!(queries, [n, 0, 0], "writes go to the primary");
    let (tags, [_, executes, _]) = run(engine, None, &extended(), n);
    assert_eq!(tags, b"12TDCZ", "extended read replies");
    assert_eq!(executes, [0, n / 2, n / 2], "extended reads take turns over the replicas");
    let (tags, [_, executes, _]) = run(engine, Some(&prepare()), &prepared(), n);
    assert_eq!(tags, b"2DCZ", "prepared read replies");
    assert_eq!(executes, [0, n / 2, n / 2], "prepared reads take turns over the replicas");
}

fn bench_units(c: &mut Criterion) {
    let engine = Engine::start();
    check_units(&engine);
    let mut g = c.benchmark_group("engine unit (in-memory, 1 primary + 2 replicas)");
    let cases = [
        ("simple read, cached classification", None, simple(SIMPLE_READ_SQL)),
        ("simple write", None, simple(WRITE_SQL)),
        ("extended read, unnamed (Parse/Bind/Describe/Execute/Sync)", None, extended()),
        ("prepared read (Bind/Execute/Sync)", Some(prepare()), prepared()),
    ];
    for (name, setup, unit) in &cases {
        let mut client = engine.client();
        if let Some(setup) = setup {
            engine.rt.block_on(client.unit(setup));
        }
        g.bench_function(*name, |b| b.iter(|| engine.rt.block_on(client.unit(unit))));
    }
    g.finish();
}

criterion_group!(benches, bench_units);
criterion_main!(benches);
