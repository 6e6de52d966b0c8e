//! The startup phase: SSLRequest/GSSENCRequest (answered `N` until TLS lands), CancelRequest,
//! StartupMessage 3.0, then client authentication (SCRAM-SHA-256, md5, trust). Unknown users and
//! wrong passwords get the same `28P01` error.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::params::SessionParams;
use super::Shared;
use crate::auth::{ScramServer, ScramVerifier};
use crate::config::AuthMethod;
use crate::error::sqlstate;
use crate::protocol::messages::{self, auth_code, Severity};
use crate::protocol::startup::{self, StartupPacket};
use crate::protocol::{tag, FrameReader};

/// Largest message accepted during authentication.
const MAX_AUTH_MESSAGE: usize = 16 * 1024;

/// A client that completed startup and authentication.
pub struct Login {
    /// The framed client socket.
    pub client: FrameReader<TcpStream>,
    /// User name.
    pub user: String,
    /// Database.
    pub database: String,
    /// Session parameters from the startup packet.
    pub params: SessionParams,
}

/// Why the handshake ended without a session (already reported to the client where possible).
#[derive(Debug)]
pub enum Refused {
    /// A CancelRequest was handled; the connection is done.
    Cancel,
    /// The client was refused with this SQLSTATE; the text is for the log.
    Refused {
        /// The SQLSTATE sent.
        code: String,
        /// Why, for the log.
        reason: String,
    },
    /// The client went away during the handshake.
    Gone,
}

/// Write a FATAL error and close the connection.
pub async fn refuse(stream: &mut TcpStream, code: &str, message: &str) -> Refused {
    let mut buf = BytesMut::new();
    messages::error_response(&mut buf, Severity::Fatal, code, message);
    let _ = stream.write_all(&buf).await;
    let _ = stream.shutdown().await;
    Refused::Refused { code: code.to_string(), reason: message.to_string() }
}

/// Run the startup phase and authentication within the configured startup timeout.
///
/// # Errors
/// The client was refused (and told why) or handled a cancel.
pub async fn handshake(mut stream: TcpStream, shared: &Shared) -> Result<Login, Refused> {
    let timeout = shared.config.limits.startup_timeout;
    let deadline = tokio::time::Instant::now() + timeout;
    let params = match startup_packet(&mut stream, shared, deadline).await? {
        StartupOutcome::Params(p) => p,
        StartupOutcome::Cancelled => return Err(Refused::Cancel),
    };
    let (user, database, session) = match check_params(&params) {
        Ok(v) => v,
        Err((code, msg)) => return Err(refuse(&mut stream, code, &msg).await),
    };
    let mut client = FrameReader::new(stream, MAX_AUTH_MESSAGE);
    match tokio::time::timeout_at(deadline, authenticate(&mut client, shared, &user)).await {
        Ok(Ok(())) => {}
        Ok(Err((code, msg))) => return Err(refuse(client.get_mut(), code, &msg).await),
        Err(_) => {
            return Err(refuse(client.get_mut(), sqlstate::PROTOCOL_VIOLATION, "authentication timed out").await);
        }
    }
    let console = database == super::admin_console::DATABASE;
    if !console && !shared.config.database_allowed(&database) {
        let msg = format!("database \"{database}\" is not served by this proxy");
        return Err(refuse(client.get_mut(), sqlstate::INVALID_CATALOG_NAME, &msg).await);
    }
    Ok(Login { client, user, database, params: session })
}

enum StartupOutcome {
    Params(Vec<(String, String)>),
    Cancelled,
}

async fn startup_packet(
    stream: &mut TcpStream,
    shared: &Shared,
    deadline: tokio::time::Instant,
) -> Result<StartupOutcome, Refused> {
    // At most one SSLRequest and one GSSENCRequest may precede the startup packet.
    for _ in 0..3 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match startup::read_packet(stream, left).await {
            Ok(StartupPacket::SslRequest | StartupPacket::GssEncRequest) => {
                if stream.write_all(b"N").await.is_err() {
                    return Err(Refused::Gone);
                }
            }
            Ok(StartupPacket::Cancel { pid, secret }) => {
                shared.cancels.cancel(pid, secret).await;
                return Ok(StartupOutcome::Cancelled);
            }
            Ok(StartupPacket::Startup { params }) => return Ok(StartupOutcome::Params(params)),
            Err(startup::StartupError::Truncated) => return Err(Refused::Gone),
            Err(e) => return Err(refuse(stream, sqlstate::PROTOCOL_VIOLATION, &e.to_string()).await),
        }
    }
    Err(refuse(stream, sqlstate::PROTOCOL_VIOLATION, "too many encryption requests").await)
}

type Failure = (&'static str, String);

fn check_params(params: &[(String, String)]) -> Result<(String, String, SessionParams), Failure> {
    let get = |k| StartupPacket::param(params, k);
    if get("replication").is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "false" | "off" | "no" | "0")) {
        return Err((sqlstate::FEATURE_NOT_SUPPORTED, "sluice does not proxy replication connections".into()));
    }
    let user = match get("user") {
        Some(u) if !u.is_empty() => u.to_string(),
        _ => {
            return Err((sqlstate::INVALID_AUTHORIZATION, "no PostgreSQL user name specified in startup packet".into()))
        }
    };
    let database = get("database").filter(|d| !d.is_empty()).unwrap_or(&user).to_string();
    let session = SessionParams::from_startup(params).map_err(|e| (sqlstate::PROTOCOL_VIOLATION, e))?;
    Ok((user, database, session))
}

async fn authenticate(client: &mut FrameReader<TcpStream>, shared: &Shared, user: &str) -> Result<(), Failure> {
    let failed = || (sqlstate::INVALID_PASSWORD, format!("password authentication failed for user \"{user}\""));
    let creds = shared.credentials.get(user);
    let method = creds.map_or(AuthMethod::ScramSha256, |c| c.method);
    let ok = match method {
        AuthMethod::Trust => true,
        AuthMethod::Md5 => md5_exchange(client, creds.and_then(|c| c.md5.as_deref())).await?,
        AuthMethod::ScramSha256 => scram_exchange(client, creds.and_then(|c| c.scram.as_deref())).await?,
    };
    if !ok || creds.is_none() {
        return Err(failed());
    }
    Ok(())
}

async fn send(client: &mut FrameReader<TcpStream>, buf: &[u8]) -> Result<(), Failure> {
    client.get_mut().write_all(buf).await.map_err(|e| (sqlstate::CONNECTION_FAILURE, e.to_string()))
}

async fn read_password(client: &mut FrameReader<TcpStream>) -> Result<bytes::Bytes, Failure> {
    match client.next().await {
        Ok(Some(f)) if f.tag() == tag::PASSWORD => Ok(f.into_bytes().slice(5..)),
        Ok(Some(f)) => {
            Err((sqlstate::PROTOCOL_VIOLATION, format!("expected a password message, got {:?}", f.tag() as char)))
        }
        Ok(None) => Err((sqlstate::CONNECTION_FAILURE, "client closed the connection during authentication".into())),
        Err(e) => Err((sqlstate::PROTOCOL_VIOLATION, e.to_string())),
    }
}

async fn md5_exchange(client: &mut FrameReader<TcpStream>, stored: Option<&str>) -> Result<bool, Failure> {
    let salt: [u8; 4] = rand::random();
    let mut buf = BytesMut::new();
    messages::authentication(&mut buf, auth_code::MD5, &salt);
    send(client, &buf).await?;
    let body = read_password(client).await?;
    let response =
        messages::decode_password(&body).ok_or((sqlstate::PROTOCOL_VIOLATION, "malformed password message".into()))?;
    Ok(stored.is_some_and(|s| crate::auth::md5_verify(s, salt, response)))
}

async fn scram_exchange(
    client: &mut FrameReader<TcpStream>,
    verifier: Option<&ScramVerifier>,
) -> Result<bool, Failure> {
    let mut server = verifier.map_or_else(ScramServer::mock, ScramServer::new);
    let mut buf = BytesMut::new();
    messages::authentication(&mut buf, auth_code::SASL, b"SCRAM-SHA-256\0\0");
    send(client, &buf).await?;
    let body = read_password(client).await?;
    let malformed = || (sqlstate::PROTOCOL_VIOLATION, "malformed SASL message".to_string());
    let (mech, data) = messages::decode_sasl_initial(&body).ok_or_else(malformed)?;
    if mech != b"SCRAM-SHA-256" {
        return Err((sqlstate::PROTOCOL_VIOLATION, "client selected an invalid SASL authentication mechanism".into()));
    }
    let Ok(first) = server.client_first(data) else { return Ok(false) };
    buf.clear();
    messages::authentication(&mut buf, auth_code::SASL_CONTINUE, &first);
    send(client, &buf).await?;
    let body = read_password(client).await?;
    let Ok(last) = server.client_final(&body) else { return Ok(false) };
    buf.clear();
    messages::authentication(&mut buf, auth_code::SASL_FINAL, &last);
    send(client, &buf).await?;
    Ok(true)
}
