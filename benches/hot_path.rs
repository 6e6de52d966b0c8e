//! Per-unit costs outside the relay, without a PostgreSQL cluster: the route decision, a pool
//! checkout + release of an idle connection, the session-state diff made before a unit runs,
//! classification of statements that carry per-request comments or inlined literals, and the
//! per-unit latency observation every session of a node makes.
//!
//! The pool bench needs one real socket: a tiny in-process fake server on 127.0.0.1 answers
//! the startup once (AuthenticationOk, BackendKeyData, ReadyForQuery) and then stays silent, so
//! every measured checkout reuses the idle connection as a busy proxy does.
#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use prometheus_client::registry::Registry;
use sluice::backend::settings::{diff, to_query};
use sluice::backend::Pools;
use sluice::config::{Config, DefaultRoute};
use sluice::frontend::params::SessionParams;
use sluice::metrics::{Latency, Metrics};
use sluice::protocol::startup::StartupParams;
use sluice::router::{route, Access, Class, Classifier, Policy, Reason, SessionView};
use sluice::topology::{NodeView, Role, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn node(index: usize, role: Role) -> NodeView {
    NodeView {
        index,
        name: format!("pg{index}"),
        host: "127.0.0.1".into(),
        port: 5432,
        role,
        weight: 1,
        wal_lsn: Some(1000),
        excluded: None,
        timeline: Some(1),
        replay_lag: None,
    }
}

fn bench_route(c: &mut Criterion) {
    let topology =
        Topology { generation: 1, nodes: vec![node(0, Role::Primary), node(1, Role::Replica), node(2, Role::Replica)] };
    let policy = Policy::default();
    let read = Class::read(Reason::PureRead);
    let write = Class::new(Access::Write, Reason::Write);
    let mut view = SessionView {
        stuck_to: None,
        has_session_state: false,
        default_route: DefaultRoute::Auto,
        ticket: 0,
        min_lsn: None,
        standby_refused: false,
    };
    let mut g = c.benchmark_group("route");
    g.bench_function("read, 1 primary + 2 replicas", |b| {
        b.iter(|| {
            view.ticket += 1;
            route(black_box(&read), &view, &topology, &policy)
        })
    });
    view.min_lsn = Some(500);
    g.bench_function("read after a write (read-your-writes)", |b| {
        b.iter(|| {
            view.ticket += 1;
            route(black_box(&read), &view, &topology, &policy)
        })
    });
    g.bench_function("write", |b| b.iter(|| route(black_box(&write), &view, &topology, &policy)));
    g.finish();
}

/// Answer one startup on each accepted socket, then read (and drop) whatever comes.
async fn fake_server(listener: tokio::net::TcpListener) {
    while let Ok((mut s, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut len = [0u8; 4];
            if s.read_exact(&mut len).await.is_err() {
                return;
            }
            let mut startup = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
            if s.read_exact(&mut startup).await.is_err() {
                return;
            }
            let mut reply = Vec::new();
            reply.extend_from_slice(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]);
            reply.extend_from_slice(&[b'K', 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 2]);
            reply.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
            if s.write_all(&reply).await.is_err() {
                return;
            }
            let mut sink = [0u8; 256];
            while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
        });
    }
}

fn bench_pool(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(fake_server(listener));
    let toml = format!(
        "[[nodes]]\nname = \"pg\"\nhost = \"127.0.0.1\"\nport = {port}\n\n\
         [[users]]\nname = \"bench\"\nauth = \"trust\"\n"
    );
    let config = Arc::new(sluice::live::Live::new(Config::from_toml_str(&toml).unwrap()));
    let metrics = Metrics::new(&mut Registry::default(), &["pg".to_string()]);
    let pools = Pools::new(config, metrics);
    let pool = pools.get(0, "bench", "bench");
    // The first checkout connects; release keeps the connection idle for the measured ones.
    rt.block_on(async {
        pool.checkout().await.unwrap().release(false).await;
    });
    assert_eq!(pool.idle_count(), 1);
    c.bench_function("pool checkout + release (idle connection)", |b| {
        b.iter(|| {
            rt.block_on(async {
                pool.checkout().await.unwrap().release(false).await;
            })
        })
    });
}

fn bench_latency(c: &mut Criterion) {
    let latency = Latency::new(Latency::unit_histogram());
    c.bench_function("node unit latency: observe", |b| {
        b.iter(|| latency.observe(black_box(std::time::Duration::from_micros(300))));
    });
}

fn bench_params(c: &mut Criterion) {
    let startup = StartupParams::from_pairs([
        ("application_name", "pgbench"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("extra_float_digits", "3"),
    ]);
    let mut session = SessionParams::from_startup(&startup).unwrap();
    session.record("SET search_path = app, public");
    session.record("SET statement_timeout = '5s'");
    let carried = Arc::clone(session.settings());
    let mut changed = session.clone();
    changed.record("SET statement_timeout = '10s'");
    let mut g = c.benchmark_group("session state diff");
    g.bench_function("connection already matches", |b| {
        b.iter(|| diff(Some(black_box(&carried)), black_box(session.settings())).is_empty())
    });
    g.bench_function("one SET changed, 7 settings", |b| {
        b.iter(|| to_query(&diff(Some(black_box(&carried)), black_box(changed.settings()))))
    });
    g.bench_function("fold 5 parameters and 3 SETs", |b| {
        b.iter(|| {
            let mut s = black_box(&session).clone();
            s.record("SET work_mem = '8MB'");
            s.fingerprint()
        })
    });
    g.finish();
}

fn bench_comments(c: &mut Criterion) {
    let classifier = Classifier::new(10_000, Vec::new());
    let traced: Vec<String> = (0..4096)
        .map(|i| {
            format!(
                "SELECT id, name FROM users WHERE id = $1 \
                 /*controller='users',action='show',traceparent='00-{i:032x}-{i:016x}-01'*/"
            )
        })
        .collect();
    let inlined: Vec<String> = (0..4096)
        .map(|i| format!("SELECT abalance FROM pgbench_accounts WHERE aid = {};", i * 7919 % 1_000_000))
        .collect();
    let mut g = c.benchmark_group("classify per request");
    let mut i = 0;
    g.bench_function("sqlcommenter trace id per request", |b| {
        b.iter(|| {
            i = (i + 1) % traced.len();
            classifier.classify(black_box(&traced[i]))
        })
    });
    g.bench_function("inlined literal per request (pgbench -M simple)", |b| {
        b.iter(|| {
            i = (i + 1) % inlined.len();
            classifier.classify(black_box(&inlined[i]))
        })
    });
    g.finish();
}

criterion_group!(benches, bench_route, bench_pool, bench_params, bench_comments, bench_latency);
criterion_main!(benches);
