//! The SQL admin console: a login to the virtual database `sluice` by a user listed in
//! `admin.users` gets this instead of a proxied session (others get `28000`). It speaks the simple
//! query protocol with psql-friendly result sets: `SHOW NODES | POOLS | CLIENTS | SERVERS | STATS
//! | CONFIG | VERSION`, `RELOAD`, `PAUSE [node]`, `RESUME`, `KILL <id>`, `SHUTDOWN`, and the
//! failover actions of the HTTP API: `SWITCHOVER [node]`, `DRAIN <node>`, `UNDRAIN <node>`,
//! `UNFENCE <node>`.
//!
//! `command` parses, `show` builds result sets; this file runs the session and acts. It never
//! touches a server connection; reload and shutdown go through [`crate::reload::Control`], the
//! failover actions through the same [`FailoverAdmin`] the HTTP endpoint uses.

mod command;
mod show;

pub use command::{parse, Command};
pub use show::ResultSet;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::handshake::Login;
use super::lifecycle::ClientInfo;
use super::Shared;
use crate::admin::failover::{FailoverAdmin, Refusal};
use crate::error::sqlstate;
use crate::protocol::messages::{self, Severity};
use crate::protocol::{tag, TxStatus};
use crate::reload::ReloadError;

/// The virtual database name that opens the console.
pub const DATABASE: &str = "sluice";

/// An SQLSTATE for errors in a statement the console understood but could not do.
const UNDEFINED_OBJECT: &str = "42704";
/// `config_file_error`: RELOAD found an invalid file.
const CONFIG_FILE_ERROR: &str = "F0000";
/// `syntax_error`.
const SYNTAX_ERROR: &str = "42601";
/// Not possible in the cluster's state now.
const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";

/// Serve one console session until the client leaves (or is killed, or sluice drains).
pub async fn run(shared: &Shared, login: Login) {
    let Login { mut client, user, database, addr, mut owed, .. } = login;
    if !shared.config.ops.admin.users.iter().any(|u| **u == *user) {
        let msg = format!("user \"{user}\" may not use the admin console (it is not in admin.users)");
        messages::error_response(&mut owed, Severity::Fatal, sqlstate::INVALID_AUTHORIZATION, &msg);
        let _ = client.get_mut().write_all(&owed).await;
        shared.metrics.client_error(sqlstate::INVALID_AUTHORIZATION);
        return;
    }
    let since_secs = super::lifecycle::unix_secs(std::time::SystemTime::now());
    let info = ClientInfo { id: 0, user, database, addr, since_secs };
    let mut entry = shared.lifecycle.register(info);
    let (pid, secret) = (entry.key().pid(), entry.key().secret());
    // Behind what authentication still owed the client (SASLFinal), in the same `send`.
    let greeted = write(&mut client, owed, |b| {
        messages::authentication(b, messages::auth_code::OK, &[]);
        for (k, v) in [
            ("server_version", "15.0 (sluice console)"),
            ("client_encoding", "UTF8"),
            ("server_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
        ] {
            messages::parameter_status(b, k, v);
        }
        messages::backend_key_data(b, pid, secret);
        messages::ready_for_query(b, TxStatus::Idle);
    });
    if greeted.await.is_err() {
        return;
    }
    loop {
        let frame = match entry.unless_stopped(true, client.next()).await {
            Ok(Ok(Some(f))) => f,
            Ok(_) => return,
            Err(stopped) => {
                let (code, msg) = stopped.error();
                let _ =
                    write(&mut client, BytesMut::new(), |b| messages::error_response(b, Severity::Fatal, code, &msg))
                        .await;
                return;
            }
        };
        let reply = match frame.tag() {
            tag::TERMINATE => return,
            tag::QUERY => answer(shared, messages::decode_query(frame.body()).unwrap_or("")).await,
            tag::SYNC => ready(BytesMut::new()),
            _ => error(
                shared,
                sqlstate::FEATURE_NOT_SUPPORTED,
                "the admin console speaks the simple query protocol only",
            ),
        };
        if client.get_mut().write_all(&reply).await.is_err() {
            return;
        }
    }
}

async fn write(
    client: &mut crate::protocol::FrameReader<crate::tls::MaybeTls>,
    mut buf: BytesMut,
    build: impl FnOnce(&mut BytesMut),
) -> std::io::Result<()> {
    build(&mut buf);
    client.get_mut().write_all(&buf).await
}

/// Everything the client gets for one Query, ending with ReadyForQuery.
async fn answer(shared: &Shared, sql: &str) -> BytesMut {
    match parse(sql) {
        Ok(command) => match execute(shared, command).await {
            Ok(rs) => ready(encode(&rs)),
            Err((code, msg)) => error(shared, code, &msg),
        },
        Err(msg) => error(shared, SYNTAX_ERROR, &msg),
    }
}

type Failure = (&'static str, String);

/// Run one command.
async fn execute(shared: &Shared, command: Command) -> Result<ResultSet, Failure> {
    let done = |tag: &str| ResultSet { tag: tag.to_string(), ..ResultSet::default() };
    Ok(match command {
        Command::ShowNodes => show::nodes(shared),
        Command::ShowPools => show::pools(shared),
        Command::ShowClients => show::clients(shared),
        Command::ShowServers => show::servers(shared),
        Command::ShowStats => show::stats(shared),
        Command::ShowConfig => show::config(&shared.config),
        Command::ShowVersion => show::version(),
        Command::Reload => reload(shared).await?,
        Command::Pause(node) => {
            let index = node.map(|name| node_index(shared, &name)).transpose()?;
            shared.lifecycle.pause(index);
            done("PAUSE")
        }
        Command::Resume => {
            shared.lifecycle.resume();
            done("RESUME")
        }
        Command::Kill(id) if shared.lifecycle.kill(id) => done("KILL"),
        Command::Kill(id) => return Err((UNDEFINED_OBJECT, format!("no client with id {id} (see SHOW CLIENTS)"))),
        Command::Shutdown => {
            shared.control.shutdown();
            done("SHUTDOWN")
        }
        Command::Switchover(target) => switchover(shared, target).await?,
        Command::Drain(name) => {
            show::node_outcome(&failover(shared)?.set_drained(&name, true).await.map_err(refused)?, "DRAIN")
        }
        Command::Undrain(name) => {
            show::node_outcome(&failover(shared)?.set_drained(&name, false).await.map_err(refused)?, "UNDRAIN")
        }
        Command::Unfence(name) => {
            show::node_outcome(&failover(shared)?.unfence(&name).await.map_err(refused)?, "UNFENCE")
        }
        Command::Empty => ResultSet::default(),
    })
}

async fn reload(shared: &Shared) -> Result<ResultSet, Failure> {
    match shared.control.reload().await {
        Ok(report) => {
            let mut lines = report.changes;
            lines.extend(report.needs_restart.into_iter().map(|l| format!("needs a restart: {l}")));
            Ok(show::lines("change", &lines, "RELOAD"))
        }
        Err(ReloadError::Invalid(e)) => Err((CONFIG_FILE_ERROR, e.to_string())),
        Err(e) => Err((sqlstate::FEATURE_NOT_SUPPORTED, e.to_string())),
    }
}

/// The failover actions, if this proxy was built with them.
fn failover(shared: &Shared) -> Result<&FailoverAdmin, Failure> {
    shared.failover.as_ref().ok_or_else(|| {
        (sqlstate::FEATURE_NOT_SUPPORTED, "this proxy was started without the failover actions".to_string())
    })
}

fn refused(r: Refusal) -> Failure {
    (r.sqlstate(), r.reason)
}

async fn switchover(shared: &Shared, target: Option<String>) -> Result<ResultSet, Failure> {
    let ops = failover(shared)?;
    let target = target.or_else(|| ops.default_target()).ok_or_else(|| {
        (OBJECT_NOT_IN_PREREQUISITE_STATE, "no readable replica to switch over to (see SHOW NODES)".to_string())
    })?;
    let done = ops.switchover(&target).await.map_err(refused)?;
    Ok(show::switched(&done))
}

fn node_index(shared: &Shared, name: &str) -> Result<usize, Failure> {
    let topology = shared.topology.load();
    topology
        .nodes
        .iter()
        .find(|n| n.name == name)
        .map(|n| n.index)
        .ok_or_else(|| (UNDEFINED_OBJECT, format!("no node named {name:?} (see SHOW NODES)")))
}

fn encode(rs: &ResultSet) -> BytesMut {
    let mut buf = BytesMut::new();
    if rs.columns.is_empty() && rs.tag.is_empty() {
        buf.extend_from_slice(&[tag::EMPTY_QUERY, 0, 0, 0, 4]);
        return buf;
    }
    if !rs.columns.is_empty() {
        messages::row_description(&mut buf, &rs.columns);
        for row in &rs.rows {
            let values: Vec<Option<&str>> = row.iter().map(Option::as_deref).collect();
            messages::data_row(&mut buf, &values);
        }
    }
    messages::command_complete(&mut buf, &rs.tag);
    buf
}

fn ready(mut buf: BytesMut) -> BytesMut {
    messages::ready_for_query(&mut buf, TxStatus::Idle);
    buf
}

fn error(shared: &Shared, code: &str, message: &str) -> BytesMut {
    shared.metrics.client_error(code);
    let mut buf = BytesMut::new();
    messages::error_response(&mut buf, Severity::Error, code, message);
    ready(buf)
}
