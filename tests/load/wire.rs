//! A raw-socket PostgreSQL client, just enough to log in with SCRAM, run a simple query, and
//! send anything at all at any phase of a connection, then judge what came back.
//!
//! The SCRAM client side is sluice's own [`ScramClient`] with a shared [`SaltCache`]: sluice
//! answers every login of a user with the same salt, so a flood of logins costs this side a few
//! HMACs each and the measurement is sluice's, not the client's PBKDF2.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use sluice::auth::{SaltCache, ScramClient, SCRAM_SHA_256};
use sluice::protocol::framer::split_frame;
use sluice::protocol::messages::{self, auth_code, decode_authentication, decode_error};
use sluice::protocol::{tag, Frame, FrameReader};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::Target;

/// The client accepts any message size sluice sends.
const CLIENT_MAX_MESSAGE: usize = 1 << 30;
/// How long a TCP connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a raw-client step failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Connect, read or write failed, or the connection closed.
    Io(String),
    /// sluice (or a server through it) sent an ErrorResponse.
    Server {
        /// SQLSTATE.
        code: String,
        /// Message.
        message: String,
    },
    /// Something arrived that the protocol does not allow here.
    Protocol(String),
}

impl WireError {
    /// A short key for counting errors: the SQLSTATE, or the kind.
    pub fn key(&self) -> String {
        match self {
            WireError::Io(_) => "io".into(),
            WireError::Server { code, .. } => code.clone(),
            WireError::Protocol(_) => "protocol".into(),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Io(e) => write!(f, "io: {e}"),
            WireError::Server { code, message } => write!(f, "{code}: {message}"),
            WireError::Protocol(e) => write!(f, "protocol: {e}"),
        }
    }
}

/// What sluice did after the last bytes were sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// An ErrorResponse arrived (its SQLSTATE).
    Error(String),
    /// The connection was closed (EOF or reset) without an ErrorResponse.
    Closed,
    /// Other messages arrived (their tags) and the connection stayed open, with no error.
    Other(Vec<u8>),
    /// Nothing arrived and the connection stayed open.
    Silent,
}

/// A [`Reply`] and how long after the send it came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// What happened.
    pub reply: Reply,
    /// When (for `Other`/`Silent`: how long we waited).
    pub after: Duration,
}

impl Answer {
    /// An error or a close within `limit`.
    pub fn answered_within(&self, limit: Duration) -> bool {
        matches!(self.reply, Reply::Error(_) | Reply::Closed) && self.after <= limit
    }
}

/// One raw client connection.
pub struct RawConn {
    io: FrameReader<TcpStream>,
    /// The BackendKeyData sluice sent at login: (process id, secret).
    pub backend_key: Option<(i32, i32)>,
}

impl RawConn {
    /// Connect to sluice on 127.0.0.1:`port`.
    ///
    /// # Errors
    /// The connect failed or took longer than [`CONNECT_TIMEOUT`].
    pub async fn connect(port: u16) -> Result<RawConn, WireError> {
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(("127.0.0.1", port))).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(WireError::Io(format!("connect: {e}"))),
            Err(_) => return Err(WireError::Io("connect timed out".into())),
        };
        let _ = stream.set_nodelay(true);
        Ok(RawConn { io: FrameReader::new(stream, CLIENT_MAX_MESSAGE), backend_key: None })
    }

    /// Write `bytes`; false if the socket refused them (sluice may already have hung up).
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.io.get_mut().write_all(bytes).await.is_ok()
    }

    /// Half-close: tell sluice no more bytes will come.
    pub async fn close_write(&mut self) {
        let _ = self.io.get_mut().shutdown().await;
    }

    /// Send an SSLRequest and read the one-byte answer (`N` or `S`).
    ///
    /// # Errors
    /// The socket failed or closed.
    pub async fn ssl_request(&mut self) -> Result<u8, WireError> {
        let mut req = BytesMut::new();
        req.extend_from_slice(&8i32.to_be_bytes());
        req.extend_from_slice(&sluice::protocol::startup::SSL_REQUEST.to_be_bytes());
        if !self.send(&req).await {
            return Err(WireError::Io("write failed".into()));
        }
        while self.io.buffered().is_empty() {
            match self.io.fill().await {
                Ok(0) => return Err(WireError::Io("closed before answering SSLRequest".into())),
                Ok(_) => {}
                Err(e) => return Err(WireError::Io(e.to_string())),
            }
        }
        Ok(self.io.buffer().get_u8())
    }

    /// The next whole message from sluice; an ErrorResponse becomes [`WireError::Server`].
    ///
    /// # Errors
    /// An ErrorResponse, a socket error, or the connection closed.
    pub async fn next(&mut self) -> Result<Frame, WireError> {
        match self.io.next().await {
            Ok(Some(f)) if f.tag() == tag::ERROR_RESPONSE => {
                let info = decode_error(f.body());
                Err(WireError::Server { code: info.code, message: info.message })
            }
            Ok(Some(f)) => Ok(f),
            Ok(None) => Err(WireError::Io("connection closed".into())),
            Err(e) => Err(WireError::Io(e.to_string())),
        }
    }

    /// Send a StartupMessage for `t` and read the authentication request that follows.
    ///
    /// # Errors
    /// sluice refused the startup or asked for something other than SASL.
    pub async fn startup(&mut self, t: &Target) -> Result<(), WireError> {
        let mut buf = BytesMut::new();
        messages::startup_message(&mut buf, &[("user", &t.user), ("database", &t.database)]);
        if !self.send(&buf).await {
            return Err(WireError::Io("write failed".into()));
        }
        let (code, _) = self.auth_request().await?;
        if code != auth_code::SASL {
            return Err(WireError::Protocol(format!("expected AuthenticationSASL, got code {code}")));
        }
        Ok(())
    }

    /// Read an Authentication message: `(code, data)`.
    async fn auth_request(&mut self) -> Result<(i32, Vec<u8>), WireError> {
        let f = self.next().await?;
        if f.tag() != tag::AUTHENTICATION {
            return Err(WireError::Protocol(format!("expected Authentication, got tag {:?}", f.tag() as char)));
        }
        let (code, data) = decode_authentication(f.body())
            .ok_or_else(|| WireError::Protocol("short Authentication message".into()))?;
        Ok((code, data.to_vec()))
    }

    /// Send SASLInitialResponse with a client-first message and read SASLContinue; returns the
    /// exchange, ready for [`RawConn::scram_final`].
    ///
    /// # Errors
    /// sluice refused the message.
    pub async fn scram_first(
        &mut self,
        password: &str,
        salts: &SaltCache,
    ) -> Result<(ScramClient, Vec<u8>), WireError> {
        let mut scram = ScramClient::new(password, salts);
        let mut buf = BytesMut::new();
        messages::sasl_initial_response(&mut buf, SCRAM_SHA_256, &scram.client_first());
        if !self.send(&buf).await {
            return Err(WireError::Io("write failed".into()));
        }
        let (code, server_first) = self.auth_request().await?;
        if code != auth_code::SASL_CONTINUE {
            return Err(WireError::Protocol(format!("expected SASLContinue, got code {code}")));
        }
        Ok((scram, server_first))
    }

    /// Answer server-first, check server-final, and read up to the first ReadyForQuery.
    ///
    /// # Errors
    /// Wrong password, a bad server signature, or sluice refused the session.
    pub async fn scram_final(&mut self, mut scram: ScramClient, server_first: &[u8]) -> Result<(), WireError> {
        let client_final = scram.server_first(server_first).map_err(|e| WireError::Protocol(e.to_string()))?;
        let mut buf = BytesMut::new();
        messages::sasl_response(&mut buf, &client_final);
        if !self.send(&buf).await {
            return Err(WireError::Io("write failed".into()));
        }
        let (code, server_final) = self.auth_request().await?;
        if code != auth_code::SASL_FINAL {
            return Err(WireError::Protocol(format!("expected SASLFinal, got code {code}")));
        }
        scram.server_final(&server_final).map_err(|e| WireError::Protocol(e.to_string()))?;
        let (code, _) = self.auth_request().await?;
        if code != auth_code::OK {
            return Err(WireError::Protocol(format!("expected AuthenticationOk, got code {code}")));
        }
        self.until_ready().await
    }

    /// Startup and a whole SCRAM login, up to the first ReadyForQuery.
    ///
    /// # Errors
    /// Any step failed.
    pub async fn login(&mut self, t: &Target, salts: &SaltCache) -> Result<(), WireError> {
        self.startup(t).await?;
        let (scram, server_first) = self.scram_first(&t.password, salts).await?;
        self.scram_final(scram, &server_first).await
    }

    /// Read messages up to ReadyForQuery; the first ErrorResponse is returned after it.
    async fn until_ready(&mut self) -> Result<(), WireError> {
        let mut first_error = None;
        loop {
            match self.next().await {
                Ok(f) if f.tag() == tag::READY_FOR_QUERY => return first_error.map_or(Ok(()), Err),
                Ok(f) if f.tag() == tag::BACKEND_KEY_DATA => {
                    self.backend_key = messages::decode_backend_key(f.body());
                }
                Ok(_) => {}
                Err(e @ WireError::Server { .. }) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => return Err(first_error.unwrap_or(e)),
            }
        }
    }

    /// Run one simple query and read up to ReadyForQuery.
    ///
    /// # Errors
    /// The query failed or the connection broke.
    pub async fn query(&mut self, sql: &str) -> Result<(), WireError> {
        let mut buf = BytesMut::new();
        messages::query(&mut buf, sql);
        if !self.send(&buf).await {
            return Err(WireError::Io("write failed".into()));
        }
        self.until_ready().await
    }

    /// The next whole message, ErrorResponse included, within `wait`.
    ///
    /// # Errors
    /// The connection closed or failed, or nothing came within `wait`.
    pub async fn recv(&mut self, wait: Duration) -> Result<Frame, WireError> {
        recv_within(&mut self.io, wait).await
    }

    /// Two halves, to write and read at once (a long pipeline).
    pub fn split(self) -> (RawReader, RawWriter) {
        let (stream, buf) = self.io.into_parts();
        let (read, write) = stream.into_split();
        (RawReader { io: FrameReader::with_buffer(read, buf, CLIENT_MAX_MESSAGE) }, RawWriter { io: write })
    }

    /// Every message up to and including the next ReadyForQuery, each within `wait`.
    ///
    /// # Errors
    /// See [`RawConn::recv`].
    pub async fn until_ready_frames(&mut self, wait: Duration) -> Result<Vec<Frame>, WireError> {
        let mut out = Vec::new();
        loop {
            let f = self.recv(wait).await?;
            let done = f.tag() == tag::READY_FOR_QUERY;
            out.push(f);
            if done {
                return Ok(out);
            }
        }
    }

    /// True if sluice closes the connection within `wait` (whatever it sends first is read and
    /// dropped).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.io.buffer().clear();
            match tokio::time::timeout_at(deadline, self.io.fill()).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    /// Vanish with a reset (RST) instead of a FIN: `SO_LINGER` 0, then close.
    pub fn reset(self) {
        let _ = self.io.get_ref().set_zero_linger();
    }

    /// Say goodbye with Terminate.
    pub async fn terminate(mut self) {
        let mut buf = BytesMut::new();
        messages::terminate(&mut buf);
        let _ = self.send(&buf).await;
        let _ = self.io.get_mut().shutdown().await;
    }

    /// Wait up to `wait` for sluice's reaction: the first ErrorResponse, or the close.
    pub async fn answer(&mut self, wait: Duration) -> Answer {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + wait;
        let mut seen = Vec::new();
        loop {
            if let Some(code) = take_error(self.io.buffer(), &mut seen) {
                return Answer { reply: Reply::Error(code), after: started.elapsed() };
            }
            match tokio::time::timeout_at(deadline, self.io.fill()).await {
                Ok(Ok(0) | Err(_)) => {
                    let reply = take_error(self.io.buffer(), &mut seen).map_or(Reply::Closed, Reply::Error);
                    return Answer { reply, after: started.elapsed() };
                }
                Ok(Ok(_)) => {}
                Err(_) => {
                    let reply = if seen.is_empty() { Reply::Silent } else { Reply::Other(seen) };
                    return Answer { reply, after: started.elapsed() };
                }
            }
        }
    }
}

/// The reading half of a [`RawConn`].
pub struct RawReader {
    io: FrameReader<tokio::net::tcp::OwnedReadHalf>,
}

impl RawReader {
    /// See [`RawConn::recv`].
    ///
    /// # Errors
    /// See [`RawConn::recv`].
    pub async fn recv(&mut self, wait: Duration) -> Result<Frame, WireError> {
        recv_within(&mut self.io, wait).await
    }
}

/// The writing half of a [`RawConn`].
pub struct RawWriter {
    io: tokio::net::tcp::OwnedWriteHalf,
}

impl RawWriter {
    /// Write `bytes`; false if the socket refused them.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.io.write_all(bytes).await.is_ok()
    }
}

/// The next whole message, ErrorResponse included, within `wait`.
async fn recv_within<R: tokio::io::AsyncRead + Unpin>(
    io: &mut FrameReader<R>,
    wait: Duration,
) -> Result<Frame, WireError> {
    match tokio::time::timeout(wait, io.next()).await {
        Ok(Ok(Some(f))) => Ok(f),
        Ok(Ok(None)) => Err(WireError::Io("connection closed".into())),
        Ok(Err(e)) => Err(WireError::Io(e.to_string())),
        Err(_) => Err(WireError::Io(format!("nothing arrived within {wait:?}"))),
    }
}

/// Consume whole messages from `buf`, noting their tags in `seen`, until an ErrorResponse (its
/// SQLSTATE is returned). Bytes that do not frame are dropped and noted as tag 0.
fn take_error(buf: &mut BytesMut, seen: &mut Vec<u8>) -> Option<String> {
    loop {
        match split_frame(buf, CLIENT_MAX_MESSAGE) {
            Ok(Some(f)) if f.tag() == tag::ERROR_RESPONSE => return Some(decode_error(f.body()).code),
            Ok(Some(f)) => seen.push(f.tag()),
            Ok(None) => return None,
            Err(_) => {
                seen.push(0);
                buf.clear();
                return None;
            }
        }
    }
}
