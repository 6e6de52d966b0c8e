//! Backend faults: while clients run queries in a loop through sluice (one tokio-postgres
//! connection each, kept for the whole run), every application backend on every node is
//! terminated with `pg_terminate_backend()`, run directly on the servers with psql. Each client
//! may see at most one error per round, and its next query must succeed on the same connection.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use sluice::pgcluster::LocalCluster;
use tokio::sync::watch;

use super::Target;

/// A query that does not answer within this counts as hung, and ends that client.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound on each client's loop (it normally ends when told to stop).
const MAX_QUERIES_PER_CLIENT: usize = 1_000_000;

/// What the clients run, in turn: a volatile call (runs on the primary, and long enough to be
/// running when a kill lands) and a pure read (a replica when there is one).
const QUERIES: [&str; 2] = ["SELECT pg_sleep(0.02)", "SELECT 1"];

/// The statement run on each node: terminate every client backend of `user` but ourselves.
pub fn terminate_sql(user: &str) -> String {
    format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND usename = '{}'",
        user.replace('\'', "''")
    )
}

/// One query's result as a client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Answered.
    Ok,
    /// Failed: the error, when it came, and the statement.
    Error(String, Instant, &'static str),
    /// No answer within [`QUERY_TIMEOUT`].
    Hung,
}

impl Seen {
    fn describe(&self) -> String {
        match self {
            Seen::Ok => "ok".into(),
            Seen::Error(e, _, sql) => format!("{sql}: {e}"),
            Seen::Hung => "hung".into(),
        }
    }
}

/// What one client saw, in order.
#[derive(Clone, Debug, Default)]
pub struct ClientLog {
    /// Every query's result.
    pub seen: Vec<Seen>,
    /// Why the client could not even connect, if so.
    pub connect_error: Option<String>,
}

impl ClientLog {
    fn errors(&self) -> usize {
        self.seen.iter().filter(|s| !matches!(s, Seen::Ok)).count()
    }

    /// Why this client's log breaks the rule, if it does. `rounds` are the kill rounds' start
    /// times, in order.
    fn violation(&self, rounds: &[Instant]) -> Option<String> {
        if let Some(e) = &self.connect_error {
            return Some(format!("could not connect: {e}"));
        }
        if self.seen.contains(&Seen::Hung) {
            return Some("a query hung".into());
        }
        if let Some(at) = self.seen.windows(2).position(|w| w[0] != Seen::Ok && w[1] != Seen::Ok) {
            let (a, b) = (self.seen[at].describe(), self.seen[at + 1].describe());
            return Some(format!(
                "two failures in a row at query #{at}: {a}; then {b} ({} errors in all)",
                self.errors()
            ));
        }
        if let Some(last) = self.seen.last().filter(|s| **s != Seen::Ok) {
            return Some(format!("the last query failed: {}", last.describe()));
        }
        let per_round = self.errors_per_round(rounds);
        if per_round.iter().any(|&n| n > 1) || per_round.len() > rounds.len() {
            return Some(format!(
                "errors per round {per_round:?} (errors before the first round last): {}",
                self.error_timeline(rounds).join("; ")
            ));
        }
        None
    }

    /// How many errors came after each round's start and before the next's; one more entry at
    /// the end if any came before the first round.
    fn errors_per_round(&self, rounds: &[Instant]) -> Vec<usize> {
        let mut per_round = vec![0; rounds.len()];
        let mut early = 0;
        for s in &self.seen {
            if let Seen::Error(_, at, _) = s {
                match rounds.iter().rposition(|r| r <= at) {
                    Some(i) => per_round[i] += 1,
                    None => early += 1,
                }
            }
        }
        if early > 0 {
            per_round.push(early);
        }
        per_round
    }

    /// Each error as "round N +offset: statement: error".
    fn error_timeline(&self, rounds: &[Instant]) -> Vec<String> {
        let mut lines = Vec::new();
        for (i, s) in self.seen.iter().enumerate() {
            if let Seen::Error(e, at, sql) = s {
                let place = match rounds.iter().rposition(|r| r <= at) {
                    Some(r) => format!("round {r} +{:.1?}", at.duration_since(rounds[r])),
                    None => "before round 0".to_string(),
                };
                lines.push(format!("query #{i} {place}: {sql}: {e}"));
            }
        }
        lines
    }

    fn error_texts(&self) -> Vec<&str> {
        self.seen.iter().filter_map(|s| if let Seen::Error(e, _, _) = s { Some(e.as_str()) } else { None }).collect()
    }
}

/// How often each text occurs.
fn count<'a>(texts: impl IntoIterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for t in texts {
        *counts.entry(t.to_string()).or_insert(0) += 1;
    }
    counts
}

/// The outcome of the kill rounds.
#[derive(Clone, Debug, Default)]
pub struct KillReport {
    /// Rounds run.
    pub rounds: usize,
    /// Backends terminated per round (summed over the nodes).
    pub killed: Vec<usize>,
    /// When each round started.
    pub round_at: Vec<Instant>,
    /// Kill statements that failed (they are counted as rounds anyway).
    pub kill_errors: Vec<String>,
    /// One log per client.
    pub clients: Vec<ClientLog>,
}

impl KillReport {
    /// One line per client that broke the rule.
    pub fn violations(&self) -> Vec<String> {
        self.clients
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.violation(&self.round_at).map(|v| format!("client {i}: {v}")))
            .collect()
    }

    /// Distinct error texts the clients saw, with counts.
    pub fn error_kinds(&self) -> BTreeMap<String, usize> {
        count(self.clients.iter().flat_map(ClientLog::error_texts))
    }

    /// One line for a report.
    pub fn summary(&self) -> String {
        let queries: usize = self.clients.iter().map(|c| c.seen.len()).sum();
        let errors: usize = self.clients.iter().map(ClientLog::errors).sum();
        let worst = self.clients.iter().map(ClientLog::errors).max().unwrap_or(0);
        format!(
            "terminate backends: {} rounds killing {:?} backends; {} clients ran {queries} queries, {errors} errors \
             (at most {worst} for one client), {} clients broke the rule",
            self.rounds,
            self.killed,
            self.clients.len(),
            self.violations().len()
        )
    }
}

/// Clients connected through sluice (tokio-postgres), ready to loop; connect them before a canary starts, so it
/// measures the faults and not the logins.
pub struct Clients(Vec<Result<tokio_postgres::Client, String>>);

impl Clients {
    /// Connect `n` clients, one after the other.
    pub async fn connect(t: &Target, n: usize) -> Clients {
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            clients.push(connect(t).await);
        }
        Clients(clients)
    }
}

/// Run `clients` in a loop; after `gap`, `rounds` times: terminate every backend of the
/// proxy's user on every node in `ports`, then wait `gap`.
pub async fn terminate_rounds(
    cluster: &LocalCluster,
    ports: &[u16],
    user: &str,
    clients: Clients,
    rounds: usize,
    gap: Duration,
) -> KillReport {
    let (stop, rx) = watch::channel(false);
    let tasks: Vec<_> = clients.0.into_iter().map(|c| tokio::spawn(client_loop(c, rx.clone()))).collect();
    tokio::time::sleep(gap).await;
    let mut report = KillReport { rounds, ..KillReport::default() };
    let sql = terminate_sql(user);
    for _ in 0..rounds {
        report.round_at.push(Instant::now());
        // All nodes at once: a client has one statement in flight, so one round can hit it once.
        let kills = join_all(ports.iter().map(|&port| cluster.psql_at(port, &sql))).await;
        let mut killed = 0;
        for (port, result) in ports.iter().zip(kills) {
            match result {
                Ok(n) => killed += n.trim().parse::<usize>().unwrap_or(0),
                Err(e) => report.kill_errors.push(format!("port {port}: {e}")),
            }
        }
        report.killed.push(killed);
        tokio::time::sleep(gap).await;
    }
    let _ = stop.send(true);
    report.clients = join_all(tasks).await.into_iter().map(|r| r.expect("a client task panicked")).collect();
    report
}

async fn client_loop(client: Result<tokio_postgres::Client, String>, stop: watch::Receiver<bool>) -> ClientLog {
    let mut log = ClientLog::default();
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            log.connect_error = Some(e);
            return log;
        }
    };
    for i in 0..MAX_QUERIES_PER_CLIENT {
        if *stop.borrow() {
            break;
        }
        let sql = QUERIES[i % QUERIES.len()];
        let seen = match tokio::time::timeout(QUERY_TIMEOUT, client.simple_query(sql)).await {
            Ok(Ok(_)) => Seen::Ok,
            Ok(Err(e)) => Seen::Error(describe(&e), Instant::now(), sql),
            Err(_) => Seen::Hung,
        };
        let hung = seen == Seen::Hung;
        log.seen.push(seen);
        if hung {
            break;
        }
    }
    log
}

async fn connect(t: &Target) -> Result<tokio_postgres::Client, String> {
    let mut config = tokio_postgres::Config::new();
    config.host("127.0.0.1").port(t.port).user(&t.user).password(&t.password).dbname(&t.database);
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.map_err(|e| describe(&e))?;
    tokio::spawn(connection);
    Ok(client)
}

/// A tokio-postgres error with its SQLSTATE and message (its `Display` says only "db error").
pub fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => err.to_string(),
    }
}
