//! The startup phase: TLS (SSLRequest answered `S` when `[client_tls]` has a certificate, or a
//! ClientHello as the very first bytes: direct TLS), GSSENCRequest (`N`), CancelRequest,
//! StartupMessage 3.0, then client authentication (`client_auth`). One audit line per client
//! connection says who came, how, and how it ended.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::client_auth::{authenticate, trusted, Failure, Method};
use super::params::LoginState;
use super::Shared;
use crate::config::ClientTlsMode;
use crate::error::sqlstate;
use crate::protocol::messages::{self, Severity};
use crate::protocol::startup::{self, StartupPacket, StartupParams};
use crate::protocol::FrameReader;
use crate::tls::MaybeTls;

/// Largest message accepted during authentication.
const MAX_AUTH_MESSAGE: usize = 16 * 1024;

/// The first byte of a TLS handshake record: a client starting TLS without SSLRequest.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// A client that completed startup and authentication.
pub struct Login {
    /// The framed client socket.
    pub client: FrameReader<MaybeTls>,
    /// User name (shared, not copied, by the session, its registry entry and the audit line).
    pub user: Arc<str>,
    /// Database (shared like the user name).
    pub database: Arc<str>,
    /// Session parameters from the startup packet (checked; shared by `intern_login`).
    pub params: LoginState,
    /// The client's address, read once at accept (the registry shows it; asking the socket
    /// again is one `getpeername` more per login).
    pub addr: Option<SocketAddr>,
    /// What authentication still owes the client (SCRAM's SASLFinal; usually empty): written in
    /// front of the login's reply, in the same `send`, by whoever writes that reply.
    pub owed: BytesMut,
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
pub async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, code: &str, message: &str) -> Refused {
    let mut buf = BytesMut::new();
    messages::error_response(&mut buf, Severity::Fatal, code, message);
    let _ = stream.write_all(&buf).await;
    let _ = stream.shutdown().await;
    Refused::Refused { code: code.to_string(), reason: message.to_string() }
}

/// [`refuse`] behind `owed` (what authentication still owed the client), in one `send`.
///
/// Not an `async fn`, which would keep `owed` twice (the argument and its local): awaited in
/// the handshake, that made every login's handshake box larger than the allocator caches per
/// thread. Not built on [`refuse`] either, which would then carry `owed` everywhere it is
/// awaited.
#[allow(clippy::manual_async_fn)] // on purpose, see above
fn refuse_after<'s, S: AsyncWrite + Unpin>(
    stream: &'s mut S,
    mut owed: BytesMut,
    code: &'s str,
    message: &'s str,
) -> impl std::future::Future<Output = Refused> + 's {
    async move {
        messages::error_response(&mut owed, Severity::Fatal, code, message);
        let _ = stream.write_all(&owed).await;
        let _ = stream.shutdown().await;
        Refused::Refused { code: code.to_string(), reason: message.to_string() }
    }
}

/// What the audit line reports about one client connection (never a secret).
#[derive(Default)]
struct Audit {
    client: Option<SocketAddr>,
    user: Arc<str>,
    database: Arc<str>,
    tls: Option<String>,
    method: Option<Method>,
}

impl Audit {
    fn log(&self, result: &Result<Login, Refused>) {
        // Borrowed where it can be: the line is usually filtered out, and its arguments are
        // evaluated only when it is not, but this value was made for every login.
        let outcome: std::borrow::Cow<'_, str> = match result {
            Ok(_) => "ok".into(),
            Err(Refused::Cancel) => return,
            // A socket that closed before saying who it is (a TCP health check) is no login.
            Err(Refused::Gone) if self.user.is_empty() => {
                tracing::debug!(client = ?self.client, "connection closed before its startup packet");
                return;
            }
            Err(Refused::Gone) => "client gone".into(),
            Err(Refused::Refused { code, reason }) => format!("refused {code}: {reason}").into(),
        };
        tracing::info!(
            target: "sluice::audit",
            client = %self.client.map_or_else(|| "?".to_string(), |a| a.to_string()),
            user = %self.user,
            database = %self.database,
            tls = %self.tls.as_deref().unwrap_or("none"),
            auth = %self.method.map_or("none", Method::as_str),
            result = %outcome,
            "client connection"
        );
    }
}

/// Run the startup phase and authentication within the configured startup timeout, and write
/// the connection's audit line. `addr` is the client's address as `accept` gave it (asking the
/// socket again would be one `getpeername` more per login).
///
/// # Errors
/// The client was refused (and told why) or handled a cancel.
pub async fn handshake(stream: TcpStream, addr: SocketAddr, shared: &Shared) -> Result<Login, Refused> {
    let mut audit = Audit { client: Some(addr), ..Audit::default() };
    let result = run(stream, shared, &mut audit).await;
    audit.log(&result);
    if result.is_ok() {
        shared.metrics.client_login(audit.tls.is_some());
    }
    result
}

async fn run(stream: TcpStream, shared: &Shared, audit: &mut Audit) -> Result<Login, Refused> {
    let deadline = Instant::now() + shared.config.limits.startup_timeout;
    let (stream, end_point, params, read) = match startup_phase(stream, shared, deadline).await? {
        (s, e, StartupOutcome::Params(p, read)) => (s, e, p, read),
        (_, _, StartupOutcome::Cancelled) => return Err(Refused::Cancel),
    };
    // A future of its own: its locals (the client, names, state...) live across several
    // awaits, so inline they would take room of their own beside the startup phase's state
    // instead of sharing it (the handshake box was 3,440 bytes, past the allocator's per-thread
    // cache of 1,032: a slower `malloc` and `free` per login).
    // The client's reader goes on with the startup reads' buffer (what the client sent after
    // its StartupMessage, and the room of the reader's first read).
    let client = FrameReader::with_buffer(stream, reader_buffer(read), MAX_AUTH_MESSAGE);
    authenticate_login(client, end_point, params, shared, audit, deadline).await
}

/// The rest of the login after the startup packet: the user and database, the session state,
/// TLS required, authentication and the database allowed.
async fn authenticate_login(
    mut client: FrameReader<MaybeTls>,
    end_point: Option<Arc<[u8]>>,
    params: StartupParams,
    shared: &Shared,
    audit: &mut Audit,
    deadline: Instant,
) -> Result<Login, Refused> {
    audit.tls = client.get_ref().tls_description();
    let (user, database, has_options) = match check_params(&params) {
        Ok((user, database, has_options)) => {
            (shared.lifecycle.name(user), shared.lifecycle.name(database), has_options)
        }
        Err((code, msg)) => return Err(refuse(client.get_mut(), code, &msg).await),
    };
    let session = match LoginState::new(params, has_options) {
        Ok(session) => session,
        Err(msg) => return Err(refuse(client.get_mut(), sqlstate::PROTOCOL_VIOLATION, &msg).await),
    };
    audit.user = Arc::clone(&user);
    audit.database = Arc::clone(&database);
    if shared.client_tls.mode() == ClientTlsMode::Require && !client.get_ref().is_tls() {
        let msg = "sluice requires TLS: connect with sslmode=require (or stronger)";
        return Err(refuse(client.get_mut(), sqlstate::INVALID_AUTHORIZATION, msg).await);
    }
    let owed = 'auth: {
        if trusted(shared, &user, &mut audit.method) {
            break 'auth BytesMut::new();
        }
        // Boxed, like the TLS upgrade and the cancel below: the exchange's state (~1,000 bytes
        // with its timer) inline made every login's handshake box too large for the
        // allocator's per-thread cache (1,032 bytes), a slow `malloc` and `free` per trust login.
        let auth = authenticate(&mut client, shared, &user, &database, end_point, &mut audit.method);
        // The result taken apart before a refusal is awaited: matched around it, the whole
        // result stayed in the handshake's state (8 bytes past the size the test holds).
        let (code, msg) = match Box::pin(tokio::time::timeout_at(deadline, auth)).await {
            Ok(Ok(owed)) => break 'auth owed,
            Ok(Err(failure)) => failure,
            Err(_) => (sqlstate::PROTOCOL_VIOLATION, "authentication timed out".to_string()),
        };
        return Err(refuse(client.get_mut(), code, &msg).await);
    };
    let console = &*database == super::admin_console::DATABASE;
    if !console && !shared.config.database_allowed(&database) {
        let msg = format!("database \"{database}\" is not served by this proxy");
        return Err(refuse_after(client.get_mut(), owed, sqlstate::INVALID_CATALOG_NAME, &msg).await);
    }
    Ok(Login { client, user, database, params: session, addr: audit.client, owed })
}

enum StartupOutcome {
    /// The StartupMessage's parameters, and the buffer it was read through.
    Params(StartupParams, BytesMut),
    Cancelled,
}

/// The startup reads' buffer as the client reader's first: it holds what the client sent after
/// its StartupMessage (usually nothing), and its room is the reader's first read's. One grown
/// by a large packet is dropped when empty, so an idle client keeps the usual room.
fn reader_buffer(read: BytesMut) -> BytesMut {
    if read.is_empty() && read.capacity() > startup::STARTUP_READ {
        BytesMut::new()
    } else {
        read
    }
}

/// The socket (encrypted if the client asked), the channel binding data of its certificate,
/// and what the client asked for.
type Negotiated = (MaybeTls, Option<Arc<[u8]>>, StartupOutcome);

async fn startup_phase(tcp: TcpStream, shared: &Shared, deadline: Instant) -> Result<Negotiated, Refused> {
    let direct_tls = shared.client_tls.enabled() && Box::pin(starts_with_client_hello(&tcp, deadline)).await?;
    let mut stream = MaybeTls::Plain(tcp);
    let mut end_point = None;
    if direct_tls {
        (stream, end_point) = Box::pin(upgrade(stream, shared, deadline, Upgrade::Direct)).await?;
    }
    // Each read asks for a whole StartupMessage (one `recv`, not a head and then the rest);
    // what comes after a packet stays here for the next.
    let mut read = BytesMut::with_capacity(startup::STARTUP_READ);
    // At most one SSLRequest and one GSSENCRequest may precede the startup packet.
    for _ in 0..3 {
        let packet = match startup::read_packet(&mut stream, &mut read, deadline).await {
            Ok(p) => p,
            Err(startup::StartupError::Truncated) => return Err(Refused::Gone),
            Err(e) => return Err(refuse(&mut stream, sqlstate::PROTOCOL_VIOLATION, &e.to_string()).await),
        };
        let transport = if stream.is_tls() { Transport::Tls } else { Transport::Plain };
        match next_step(&packet, transport, shared.client_tls.enabled()) {
            // Boxed: the TLS handshake's state (~1,500 bytes) inline made every login's
            // handshake box larger than the allocator caches per thread.
            Step::StartTls => {
                // Bytes after the SSLRequest, read with it, were sent before the answer: never
                // encrypted, so refused as those `upgrade` finds waiting on the socket are.
                let early = !read.is_empty();
                (stream, end_point) = Box::pin(upgrade(stream, shared, deadline, Upgrade::Answer { early })).await?;
            }
            Step::Decline => {
                if stream.write_all(b"N").await.is_err() {
                    return Err(Refused::Gone);
                }
            }
            Step::Refuse(msg) => return Err(refuse(&mut stream, sqlstate::PROTOCOL_VIOLATION, msg).await),
            Step::Cancel => {
                if let StartupPacket::Cancel { pid, secret } = packet {
                    Box::pin(shared.lifecycle.cancel(pid, secret)).await;
                }
                return Ok((stream, end_point, StartupOutcome::Cancelled));
            }
            Step::Startup => {
                let StartupPacket::Startup { params } = packet else { unreachable!("next_step said Startup") };
                return Ok((stream, end_point, StartupOutcome::Params(params, read)));
            }
        }
    }
    Err(refuse(&mut stream, sqlstate::PROTOCOL_VIOLATION, "too many encryption requests").await)
}

/// Whether the client socket is encrypted yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Plain,
    Tls,
}

/// What the startup phase does with one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Answer `S` and run the TLS handshake.
    StartTls,
    /// Answer `N`: that encryption is not offered.
    Decline,
    /// A protocol violation: refuse and close.
    Refuse(&'static str),
    /// Forward a CancelRequest, then close.
    Cancel,
    /// The StartupMessage: go on to authentication.
    Startup,
}

/// The pure decision of the startup phase: (packet, transport, TLS configured) -> step.
fn next_step(packet: &StartupPacket, transport: Transport, tls_available: bool) -> Step {
    match (packet, transport) {
        (StartupPacket::SslRequest, Transport::Plain) if tls_available => Step::StartTls,
        (StartupPacket::SslRequest | StartupPacket::GssEncRequest, Transport::Plain) => Step::Decline,
        (StartupPacket::SslRequest | StartupPacket::GssEncRequest, Transport::Tls) => {
            Step::Refuse("encryption requested over an encrypted connection")
        }
        (StartupPacket::Cancel { .. }, _) => Step::Cancel,
        (StartupPacket::Startup { .. }, _) => Step::Startup,
    }
}

/// Whether the first byte the client sends opens a TLS handshake (direct TLS).
async fn starts_with_client_hello(tcp: &TcpStream, deadline: Instant) -> Result<bool, Refused> {
    let mut first = [0u8; 1];
    match tokio::time::timeout_at(deadline, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => Ok(first[0] == TLS_HANDSHAKE_RECORD),
        Ok(_) => Err(Refused::Gone),
        Err(_) => {
            Err(Refused::Refused { code: sqlstate::PROTOCOL_VIOLATION.into(), reason: "startup timed out".into() })
        }
    }
}

/// How a TLS handshake begins.
#[derive(Clone, Copy)]
enum Upgrade {
    /// The client sent a ClientHello first (direct TLS).
    Direct,
    /// The client sent an SSLRequest, to be answered `S`; `early`: bytes after it were read
    /// with it.
    Answer { early: bool },
}

/// Answer an SSLRequest with `S` (unless direct) and run the TLS handshake by the deadline.
/// Bytes the client sent after its SSLRequest, before the handshake, are refused with a close:
/// they were never encrypted, so they must not be read as part of the session.
async fn upgrade(
    stream: MaybeTls,
    shared: &Shared,
    deadline: Instant,
    how: Upgrade,
) -> Result<(MaybeTls, Option<Arc<[u8]>>), Refused> {
    let MaybeTls::Plain(mut tcp) = stream else {
        return Err(Refused::Refused { code: sqlstate::PROTOCOL_VIOLATION.into(), reason: "TLS twice".into() });
    };
    let direct = matches!(how, Upgrade::Direct);
    if let Upgrade::Answer { early } = how {
        let mut extra = [0u8; 1];
        let waiting = if early { Ok(1) } else { tcp.try_read(&mut extra) };
        match waiting {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok(0) | Err(_) => return Err(Refused::Gone),
            Ok(_) => {
                let _ = tcp.shutdown().await;
                let reason = "received unencrypted data after SSL request".to_string();
                return Err(Refused::Refused { code: sqlstate::PROTOCOL_VIOLATION.into(), reason });
            }
        }
        if tcp.write_all(b"S").await.is_err() {
            return Err(Refused::Gone);
        }
    }
    match tokio::time::timeout_at(deadline, shared.client_tls.accept(tcp, direct)).await {
        Ok(Ok(accepted)) => Ok((accepted.stream, Some(accepted.end_point))),
        Ok(Err(e)) => Err(Refused::Refused { code: sqlstate::PROTOCOL_VIOLATION.into(), reason: format!("TLS: {e}") }),
        Err(_) => Err(Refused::Refused {
            code: sqlstate::PROTOCOL_VIOLATION.into(),
            reason: "TLS handshake timed out".into(),
        }),
    }
}

/// The user and database a startup packet names (the database defaulting to the user), and
/// whether it has `options`, or why it is refused. Borrowed: [`Lifecycle::name`] hands out
/// the copies the clients share.
///
/// [`Lifecycle::name`]: super::lifecycle::Lifecycle::name
fn check_params(params: &StartupParams) -> Result<(&str, &str, bool), Failure> {
    // One walk for the four (the first of each counts, as with `StartupParams::get`).
    let (mut replication, mut user, mut database, mut options) = (None, None, None, None);
    for (k, v) in params.iter() {
        let slot = match k {
            "replication" => &mut replication,
            "user" => &mut user,
            "database" => &mut database,
            "options" => &mut options,
            _ => continue,
        };
        slot.get_or_insert(v);
    }
    if replication.is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "false" | "off" | "no" | "0")) {
        return Err((sqlstate::FEATURE_NOT_SUPPORTED, "sluice does not proxy replication connections".into()));
    }
    let user = match user {
        Some(u) if !u.is_empty() => u,
        _ => {
            return Err((sqlstate::INVALID_AUTHORIZATION, "no PostgreSQL user name specified in startup packet".into()))
        }
    };
    Ok((user, database.filter(|d| !d.is_empty()).unwrap_or(user), options.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns.
    fn future_size<A, B, C, F: FnOnce(A, B, C) -> Fut, Fut>(_: &F) -> usize {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn the_handshake_box_fits_the_allocators_thread_cache() {
        // Every login boxes this future: past 1,032 bytes (the largest chunk glibc keeps in
        // its per-thread cache) each `malloc` and `free` of it takes the slow path. The TLS
        // upgrade, the password exchange and the cancel are boxed to keep it below.
        let size = future_size::<TcpStream, SocketAddr, &'static Shared, _, _>(&handshake);
        assert!(size <= 1_032, "the handshake future is {size} bytes");
    }

    #[test]
    fn startup_steps_by_packet_transport_and_configuration() {
        let startup = StartupPacket::Startup { params: StartupParams::default() };
        let cancel = StartupPacket::Cancel { pid: 1, secret: 2 };
        let over_tls = Step::Refuse("encryption requested over an encrypted connection");
        let cases = [
            (StartupPacket::SslRequest, Transport::Plain, true, Step::StartTls),
            (StartupPacket::SslRequest, Transport::Plain, false, Step::Decline),
            (StartupPacket::SslRequest, Transport::Tls, true, over_tls),
            (StartupPacket::GssEncRequest, Transport::Plain, true, Step::Decline),
            (StartupPacket::GssEncRequest, Transport::Plain, false, Step::Decline),
            (StartupPacket::GssEncRequest, Transport::Tls, true, over_tls),
            (cancel.clone(), Transport::Plain, false, Step::Cancel),
            (cancel, Transport::Tls, true, Step::Cancel),
            (startup.clone(), Transport::Plain, true, Step::Startup),
            (startup, Transport::Tls, true, Step::Startup),
        ];
        for (packet, transport, tls, want) in cases {
            assert_eq!(next_step(&packet, transport, tls), want, "{packet:?} {transport:?} tls={tls}");
        }
    }
}
