//! The idle-footprint client of `scripts/load.sh` (`MODE=idle`): open many authenticated
//! connections to one endpoint (sluice, PgBouncer or PostgreSQL, on 127.0.0.1), hold them idle,
//! then run `SELECT 1` on each, so a script can read the endpoint's memory in between.
//!
//! ```sh
//! target/release/examples/idle --port 6432 --user bench --password secret --database bench \
//!     --clients 10000 --hold-secs 10
//! ```
//!
//! It prints one line per phase, `connected=N failed=M secs=S`, then (after `--hold-secs`)
//! `selected=N failed=M secs=S`, then holds again and exits. The script waits for each line
//! (bounded) and samples the endpoint's RSS while the connections are held.
//!
//! Logins use sluice's own server-side client (`backend::ServerConn`), whose SCRAM salted
//! password is cached per (user, salt): the load generator does not spend seconds of PBKDF2 on
//! 10,000 logins, so the endpoint's login path is what is exercised.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::auth::SaltCache;
use sluice::backend::{ConnectSpec, ServerConn};
use tokio::sync::Semaphore;

/// Logins or queries in flight at once.
const IN_FLIGHT: usize = 200;

struct Args {
    port: u16,
    user: String,
    password: Option<String>,
    database: String,
    clients: usize,
    hold: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 5432,
        user: "postgres".into(),
        password: None,
        database: "postgres".into(),
        clients: 10_000,
        hold: Duration::from_secs(10),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--port" => args.port = value.parse().map_err(|e| bad(&e))?,
            "--user" => args.user = value,
            "--password" => args.password = Some(value),
            "--database" => args.database = value,
            "--clients" => args.clients = value.parse().map_err(|e| bad(&e))?,
            "--hold-secs" => args.hold = Duration::from_secs(value.parse().map_err(|e| bad(&e))?),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

/// Run `f` on every item with at most [`IN_FLIGHT`] at once; returns how many succeeded.
async fn bounded<T, U, F, Fut>(items: Vec<T>, f: F) -> (Vec<U>, usize)
where
    U: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Option<U>> + Send + 'static,
{
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = Vec::with_capacity(items.len());
    for item in items {
        let permit = Arc::clone(&gate).acquire_owned().await.expect("never closed");
        let fut = f(item);
        tasks.push(tokio::spawn(async move {
            let out = fut.await;
            drop(permit);
            out
        }));
    }
    let mut kept = Vec::with_capacity(tasks.len());
    let mut failed = 0;
    for t in tasks {
        match t.await {
            Ok(Some(item)) => kept.push(item),
            _ => failed += 1,
        }
    }
    (kept, failed)
}

async fn select_one(mut conn: ServerConn) -> Option<ServerConn> {
    match conn.run_internal("SELECT 1").await {
        Ok(_) => Some(conn),
        Err(e) => {
            eprintln!("SELECT 1 failed: {e}");
            None
        }
    }
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("idle: {e}");
            std::process::exit(2);
        }
    };
    let spec = ConnectSpec {
        node: 0,
        node_name: "target".into(),
        host: "127.0.0.1".into(),
        port: args.port,
        user: args.user.clone(),
        database: args.database.clone(),
        password: args.password.clone(),
        timeout: Duration::from_secs(30),
        salt_cache: SaltCache::default(),
        tls: sluice::tls::ServerTls::disabled(),
        passthrough: sluice::auth::PassThroughKeys::default(),
        max_prepared_statements: 500,
        keepalive: None,
        memory: None,
    };
    let started = Instant::now();
    let (conns, failed) = bounded(vec![spec; args.clients], |spec| async move {
        ServerConn::connect(&spec).await.map_err(|e| eprintln!("login failed: {e}")).ok()
    })
    .await;
    println!("connected={} failed={failed} secs={:.1}", conns.len(), started.elapsed().as_secs_f64());
    tokio::time::sleep(args.hold).await;
    let started = Instant::now();
    let (conns, failed) = bounded(conns, select_one).await;
    println!("selected={} failed={failed} secs={:.1}", conns.len(), started.elapsed().as_secs_f64());
    tokio::time::sleep(args.hold).await;
    drop(conns);
}
