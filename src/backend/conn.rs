//! One server connection: TCP connect (TLS as `[server_tls]` says), startup, authentication
//! (SCRAM-SHA-256 with a password or pass-through keys, md5, cleartext, trust), and the state it
//! carries (parameters applied, statements prepared).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::prepared::{PreparedStatements, StmtKey};
use super::settings::Settings;
use super::wire::{Release, Wire};
use crate::auth::{md5_response, PassThroughKeys, SaltCache, ScramClient};
use crate::error::BackendError;
use crate::protocol::messages::{self, auth_code};
use crate::protocol::{tag, Frame, FrameReader};
use crate::tls::{MaybeTls, ServerTls, ServerTlsError};

/// The largest message accepted from a server (PostgreSQL's own field limit is 1 GB).
pub const MAX_SERVER_MESSAGE: usize = (1 << 30) + 1024;

/// Everything needed to open a server connection.
#[derive(Clone)]
pub struct ConnectSpec {
    /// Node index in the configuration.
    pub node: usize,
    /// Node name (for errors).
    pub node_name: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Database.
    pub database: String,
    /// Password for the server's challenge, if sluice has one.
    pub password: Option<String>,
    /// Connect + startup + auth deadline.
    pub timeout: Duration,
    /// Cache of SCRAM salted passwords.
    pub salt_cache: SaltCache,
    /// TLS towards the server (`[server_tls]`).
    pub tls: ServerTls,
    /// Keys of users looked up with auth_query, used when there is no password.
    pub passthrough: PassThroughKeys,
    /// Most statements sluice keeps prepared on the connection (`pool.max_prepared_statements`).
    pub max_prepared_statements: usize,
    /// TCP keepalive's idle time (`limits.tcp_keepalive`; `None`: off).
    pub keepalive: Option<Duration>,
    /// Open in-memory pipes instead of sockets (`None` in the proxy; see [`MemoryDial`]).
    #[doc(hidden)]
    pub memory: Option<MemoryDial>,
}

/// Opens an in-memory pipe to a fake server of the given node index instead of a socket, so
/// `benches/engine.rs` runs the real pools and session engine without the kernel. Set only
/// through [`super::Pools::with_memory_servers`]; hidden from the docs because the proxy never
/// uses it (it is public only because benches link the library from outside).
#[doc(hidden)]
#[derive(Clone)]
pub struct MemoryDial(pub Arc<dyn Fn(usize) -> tokio::io::DuplexStream + Send + Sync>);

/// Where a cancel must go: a server and its BackendKeyData.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelTarget {
    /// Server host and port (shared with the connection, so setting a target allocates nothing).
    pub addr: Arc<(String, u16)>,
    /// Server process id.
    pub pid: i32,
    /// Server secret.
    pub secret: i32,
    /// TLS towards that server (`[server_tls]`).
    pub tls: ServerTls,
}

/// An authenticated server connection and the state it carries. Everything but the socket is
/// behind methods: the frontend asks, the connection keeps its own books.
pub struct ServerConn {
    /// The socket, framed (the relay reads its buffer in place).
    pub(crate) io: FrameReader<MaybeTls>,
    /// Node index.
    node: usize,
    /// Node name.
    node_name: String,
    /// Where and how a CancelRequest for this connection goes (its BackendKeyData, the same
    /// TLS as this connection). One allocation per connection, made at its startup: a session
    /// publishes it for every unit it runs here, which was a copy and two clones of `Arc`s
    /// shared by every connection of the node (the address and the TLS configuration).
    cancel: Arc<CancelTarget>,
    /// ParameterStatus values the server reported: at startup, then as they changed.
    server_params: Vec<(String, String)>,
    /// The session settings this connection carries (`None`: unknown, start over).
    carried: Option<Arc<Settings>>,
    /// A state sync decided at checkout, to go out in the same write as the unit, and the
    /// settings the connection carries once it ran.
    pending_sync: Option<(String, Arc<Settings>)>,
    /// A pipelined state sync failed: the unit's replies were discarded, the connection is
    /// closed at release.
    sync_failed: bool,
    /// Statements sluice prepared on this connection (bounded, least recently used evicted).
    prepared: PreparedStatements,
    /// The statement in the server's unnamed slot, if known.
    unnamed: Option<Arc<StmtKey>>,
    /// What it still owes (see [`Wire`]): updated by every send and every reply read.
    wire: Wire,
    /// The buffer a unit's messages for this server are put together in, kept empty between
    /// units (up to [`OUT_KEPT_BYTES`]): one allocation per connection instead of one per unit.
    out: BytesMut,
    /// NotificationResponses that arrived in the reply to one of sluice's own queries (a
    /// listening backend sends them before any ReadyForQuery, the one of a write-position
    /// query pipelined behind a unit too): the session forwards them, in order, before
    /// anything newer. Bounded by [`MAX_KEPT_NOTIFICATION_BYTES`].
    kept_notifications: Vec<Frame>,
    /// Their bytes, for the bound (a sum per message would be quadratic in a burst).
    kept_notification_bytes: usize,
}

/// Largest unit buffer a server connection keeps for the next unit.
const OUT_KEPT_BYTES: usize = 4096;

/// Most notification bytes one internal reply may carry before the connection is given up as
/// lost (a loss the session reports, never a notification silently dropped).
pub const MAX_KEPT_NOTIFICATION_BYTES: usize = 8 << 20;

impl ServerConn {
    /// Open and authenticate a connection within `spec.timeout`.
    ///
    /// # Errors
    /// Connect failure, timeout, authentication failure, or the server's startup error.
    pub async fn connect(spec: &ConnectSpec) -> Result<ServerConn, BackendError> {
        match tokio::time::timeout(spec.timeout, Self::connect_inner(spec)).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::ConnectTimeout { node: spec.node_name.clone() }),
        }
    }

    async fn connect_inner(spec: &ConnectSpec) -> Result<ServerConn, BackendError> {
        let stream = match &spec.memory {
            Some(dial) => MaybeTls::Memory((dial.0)(spec.node)),
            None => spec.tls.connect(&spec.host, spec.port).await.map_err(|e| match e {
                ServerTlsError::Io(source) => BackendError::Connect { node: spec.node_name.clone(), source },
                other => BackendError::Tls { node: spec.node_name.clone(), detail: other.to_string() },
            })?,
        };
        if let (Some(idle), Some(tcp)) = (spec.keepalive, stream.tcp()) {
            if let Err(e) = crate::net::keepalive(tcp, idle) {
                tracing::debug!(error = %e, "TCP keepalive not set on a server connection");
            }
        }
        let mut conn = ServerConn {
            io: FrameReader::new(stream, MAX_SERVER_MESSAGE),
            node: spec.node,
            node_name: spec.node_name.clone(),
            cancel: Arc::new(CancelTarget {
                addr: Arc::new((spec.host.clone(), spec.port)),
                pid: 0,
                secret: 0,
                tls: spec.tls.clone(),
            }),
            server_params: Vec::new(),
            carried: Some(Arc::default()),
            pending_sync: None,
            sync_failed: false,
            prepared: PreparedStatements::new(spec.max_prepared_statements),
            unnamed: None,
            wire: Wire::default(),
            out: BytesMut::new(),
            kept_notifications: Vec::new(),
            kept_notification_bytes: 0,
        };
        let mut buf = BytesMut::new();
        messages::startup_message(&mut buf, &[("user", &spec.user), ("database", &spec.database)]);
        conn.write_raw(&buf).await?;
        conn.authenticate(spec).await?;
        conn.read_until_ready().await?;
        conn.wire = Wire::default();
        Ok(conn)
    }

    /// Node index.
    #[must_use]
    pub fn node(&self) -> usize {
        self.node
    }

    /// Node name.
    #[must_use]
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The server process id (BackendKeyData).
    #[must_use]
    pub fn backend_pid(&self) -> i32 {
        self.cancel.pid
    }

    /// Where a CancelRequest for this connection goes.
    #[must_use]
    pub fn cancel_target(&self) -> Arc<CancelTarget> {
        Arc::clone(&self.cancel)
    }

    /// ParameterStatus values the server reported: at startup, then as they changed.
    #[must_use]
    pub fn server_params(&self) -> &[(String, String)] {
        &self.server_params
    }

    /// Record a parameter value the server reported.
    pub(crate) fn note_server_param(&mut self, name: String, value: String) {
        match self.server_params.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.server_params.push((name, value)),
        }
    }

    /// The session settings this connection carries (`None`: unknown).
    #[must_use]
    pub fn carried(&self) -> Option<&Settings> {
        self.carried.as_deref()
    }

    /// True if it carries exactly `want` (the same allocation, else a fingerprint compare, then
    /// the full value).
    #[must_use]
    pub fn carries(&mut self, want: &Arc<Settings>) -> bool {
        let Some(have) = self.carried.as_ref() else { return false };
        // The same allocation: sessions of one state share it (no field compared).
        if Arc::ptr_eq(have, want) {
            return true;
        }
        if have.fingerprint() != want.fingerprint() || **have != **want {
            return false;
        }
        // Equal but not shared (a new connection's startup settings, a sync made for another
        // session): keep the session's, so the next check of this pair is the pointer compare
        // (the fields compared cost ~100 instructions a unit).
        self.carried = Some(Arc::clone(want));
        true
    }

    /// The connection now carries these settings (they ran on it).
    pub(crate) fn carry(&mut self, settings: Arc<Settings>) {
        self.carried = Some(settings);
    }

    /// What the connection carries is no longer known (the client ran `RESET ALL`...): the
    /// next sync starts over.
    pub(crate) fn carry_unknown(&mut self) {
        self.carried = None;
    }

    /// Send `sql` ahead of the next unit, in the same write (see [`ServerConn::take_pending_sync`]);
    /// the connection then carries `settings`.
    pub(crate) fn set_pending_sync(&mut self, sql: String, settings: Arc<Settings>) {
        self.pending_sync = Some((sql, settings));
    }

    /// The pipelined sync to put in front of the unit being written now, if any. From here on
    /// the connection is taken to carry its settings: if the sync fails, the connection is
    /// closed ([`ServerConn::sync_failed`]).
    pub(crate) fn take_pending_sync(&mut self) -> Option<String> {
        let (sql, settings) = self.pending_sync.take()?;
        self.carried = Some(settings);
        Some(sql)
    }

    /// An empty buffer to put a unit's messages together in (the kept one, if any).
    pub(crate) fn take_out(&mut self) -> BytesMut {
        std::mem::take(&mut self.out)
    }

    /// Give back the buffer of [`ServerConn::take_out`] once its bytes are sent: kept, emptied,
    /// for the next unit unless it grew large.
    pub(crate) fn keep_out(&mut self, mut out: BytesMut) {
        if out.capacity() <= OUT_KEPT_BYTES {
            out.clear();
            self.out = out;
        }
    }

    /// Drop a pending sync that no unit carried out.
    pub(crate) fn take_pending_sync_unsent(&mut self) {
        self.pending_sync = None;
    }

    /// The pipelined sync failed: nothing this connection carries can be trusted; it is
    /// closed, not reused.
    pub(crate) fn sync_failed(&mut self) {
        self.sync_failed = true;
        self.carried = None;
        self.wire.break_off();
    }

    /// True once, after a pipelined sync failed on it.
    pub(crate) fn take_sync_failure(&mut self) -> bool {
        std::mem::take(&mut self.sync_failed)
    }

    /// The statements sluice keeps prepared here.
    pub(crate) fn statements_mut(&mut self) -> &mut PreparedStatements {
        &mut self.prepared
    }

    /// The statement in the server's unnamed slot, if known.
    #[must_use]
    pub fn unnamed(&self) -> Option<&Arc<StmtKey>> {
        self.unnamed.as_ref()
    }

    /// Record what the server's unnamed slot holds (`None`: unknown).
    pub(crate) fn set_unnamed(&mut self, key: Option<Arc<StmtKey>>) {
        self.unnamed = key;
    }

    /// Forget every statement sluice prepared here (the server dropped them, or may have).
    pub(crate) fn forget_statements(&mut self) {
        self.prepared.clear();
        self.unnamed = None;
    }

    /// After `DISCARD ALL`: no session state, no statements.
    pub(crate) fn discarded(&mut self) {
        self.carried = Some(Arc::default());
        self.pending_sync = None;
        self.forget_statements();
    }

    /// The notifications kept from internal replies, oldest first, for the session to forward
    /// (see [`ServerConn::read_internal_reply`]).
    pub fn take_notifications(&mut self) -> Vec<Frame> {
        self.kept_notification_bytes = 0;
        std::mem::take(&mut self.kept_notifications)
    }

    /// True if an internal reply carried notifications not yet taken.
    #[must_use]
    pub fn has_notifications(&self) -> bool {
        !self.kept_notifications.is_empty()
    }

    /// Keep a notification that arrived in an internal reply; `Err` past the bound.
    fn keep_notification(&mut self, frame: Frame) -> Result<(), BackendError> {
        let kept = self.kept_notification_bytes + frame.bytes().len();
        if kept > MAX_KEPT_NOTIFICATION_BYTES {
            return Err(self.lost("too many notifications arrived during one of sluice's own queries"));
        }
        self.kept_notification_bytes = kept;
        self.kept_notifications.push(frame);
        Ok(())
    }

    /// Write bytes to the server.
    ///
    /// # Errors
    /// The socket failed.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        self.wire.sent(bytes);
        self.write_raw(bytes).await
    }

    /// Write bytes that are not protocol messages to account for (startup, authentication).
    async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), BackendError> {
        match self.io.get_mut().write_all(bytes).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.wire.break_off();
                Err(self.lost(&e.to_string()))
            }
        }
    }

    /// Account for client messages the relay writes itself, as they stream in (whole frames).
    pub fn note_sent(&mut self, bytes: &[u8]) {
        self.wire.sent(bytes);
    }

    /// Account for the whole server message at `at..at + total` of the read buffer (the relay
    /// reads in place).
    pub fn note_buffered(&mut self, at: usize, total: usize) {
        let msg = &self.io.buffered()[at..at + total];
        self.wire.received(msg[0], &msg[5..]);
    }

    /// `bytes` of plain replies passed on in one run (see `frontend::expect::plain_run`): whole
    /// messages none of which changes what the connection owes or its state.
    pub fn note_plain(&mut self, bytes: usize) {
        self.wire.received_plain(bytes);
    }

    /// `n` Syncs sent behind an Execute that entered COPY FROM STDIN were read by the server in
    /// copy mode, which ignores them: no ReadyForQuery will answer them.
    pub fn syncs_ignored_by_copy(&mut self, n: usize) {
        self.wire.syncs_ignored(n);
    }

    /// Nothing this connection says can be trusted any more: it will be closed, not reused.
    pub fn break_off(&mut self) {
        self.wire.break_off();
    }

    /// Protocol bytes (sent, received) since the last call.
    pub fn take_traffic(&mut self) -> (u64, u64) {
        self.wire.take_traffic()
    }

    /// Its protocol state.
    #[must_use]
    pub fn wire(&self) -> &Wire {
        &self.wire
    }

    /// The release decision for this connection now (see [`Wire::verdict`]).
    #[must_use]
    pub fn verdict(&self) -> Release {
        self.wire.verdict(self.io.has_buffered())
    }

    /// Read every reply still due (closing an open extended block with a Sync first) within
    /// `limit`. True if the connection ended provably clean and idle. Statements a failed
    /// block may have left unprepared are forgotten.
    pub async fn drain(&mut self, limit: Duration) -> bool {
        let mut failed = false;
        let work = async {
            if self.wire.block_open() {
                let mut buf = BytesMut::new();
                messages::sync(&mut buf);
                self.send(&buf).await?;
            }
            while self.wire.mode() == super::wire::Mode::Normal && !self.wire.settled() {
                failed |= self.recv().await?.tag() == tag::ERROR_RESPONSE;
            }
            Ok::<(), BackendError>(())
        };
        let done = matches!(tokio::time::timeout(limit, work).await, Ok(Ok(())));
        if failed {
            self.forget_statements();
        }
        done && self.verdict() == Release::Reuse
    }

    /// Read the next frame; end of stream is an error.
    ///
    /// # Errors
    /// The socket failed, closed, or sent bad framing.
    pub async fn recv(&mut self) -> Result<Frame, BackendError> {
        match self.io.next().await {
            Ok(Some(f)) => {
                self.wire.received(f.tag(), f.body());
                Ok(f)
            }
            Ok(None) => {
                self.wire.break_off();
                Err(self.lost("server closed the connection"))
            }
            Err(e) => {
                self.wire.break_off();
                Err(self.lost(&e.to_string()))
            }
        }
    }

    /// A protocol/IO error naming this node.
    #[must_use]
    pub fn lost(&self, detail: &str) -> BackendError {
        BackendError::Protocol { node: self.node_name.clone(), detail: detail.to_string() }
    }

    async fn authenticate(&mut self, spec: &ConnectSpec) -> Result<(), BackendError> {
        let mut scram: Option<ScramClient> = None;
        loop {
            let frame = self.recv().await?;
            match frame.tag() {
                tag::AUTHENTICATION => {}
                tag::ERROR_RESPONSE => return Err(self.server_error(&frame)),
                tag::NOTICE_RESPONSE => continue,
                _ => return Err(self.lost("unexpected message during authentication")),
            }
            let (code, data) = messages::decode_authentication(frame.body())
                .ok_or_else(|| self.lost("malformed authentication request"))?;
            let mut out = BytesMut::new();
            match code {
                auth_code::OK => return Ok(()),
                auth_code::CLEARTEXT => {
                    messages::password_message(&mut out, self.password(spec, "password")?.as_bytes())
                }
                auth_code::MD5 => {
                    let salt: [u8; 4] = data.try_into().map_err(|_| self.lost("md5 salt is not 4 bytes"))?;
                    let stored = crate::auth::md5_password_hash(&spec.user, self.password(spec, "md5")?);
                    messages::password_message(&mut out, md5_response(&stored, salt).as_bytes());
                }
                auth_code::SASL => {
                    if !data.split(|&b| b == 0).any(|m| m == b"SCRAM-SHA-256") {
                        return Err(self.auth_error("server offers no SASL mechanism sluice supports".into()));
                    }
                    let mut client = match (&spec.password, spec.passthrough.get(&spec.user)) {
                        (None, Some(keys)) => ScramClient::with_keys(keys),
                        _ => ScramClient::new(self.password(spec, "SCRAM-SHA-256")?, &spec.salt_cache),
                    };
                    messages::sasl_initial_response(&mut out, "SCRAM-SHA-256", &client.client_first());
                    scram = Some(client);
                }
                auth_code::SASL_CONTINUE => {
                    let client = scram.as_mut().ok_or_else(|| self.lost("SASL continue before SASL start"))?;
                    let reply = client.server_first(data).map_err(|e| self.auth_error(e.to_string()))?;
                    messages::sasl_response(&mut out, &reply);
                }
                auth_code::SASL_FINAL => {
                    let client = scram.as_mut().ok_or_else(|| self.lost("SASL final before SASL start"))?;
                    client.server_final(data).map_err(|e| self.auth_error(e.to_string()))?;
                    continue;
                }
                other => return Err(self.auth_error(format!("unsupported authentication request {other}"))),
            }
            self.write_raw(&out).await?;
        }
    }

    fn password<'a>(&self, spec: &'a ConnectSpec, method: &str) -> Result<&'a str, BackendError> {
        spec.password.as_deref().ok_or_else(|| {
            self.auth_error(format!(
                "the server asks user {:?} for {method} authentication but sluice has no plain password for it (set server_password)",
                spec.user
            ))
        })
    }

    fn auth_error(&self, detail: String) -> BackendError {
        BackendError::Auth { node: self.node_name.clone(), detail }
    }

    /// Turn an ErrorResponse frame into an error carrying the server's SQLSTATE.
    #[must_use]
    pub fn server_error(&self, frame: &Frame) -> BackendError {
        BackendError::Server { node: self.node_name.clone(), info: messages::decode_error(frame.body()) }
    }

    async fn read_until_ready(&mut self) -> Result<(), BackendError> {
        loop {
            let frame = self.recv().await?;
            match frame.tag() {
                tag::PARAMETER_STATUS => {
                    if let Some(kv) = messages::decode_parameter_status(frame.body()) {
                        self.server_params.push(kv);
                    }
                }
                tag::BACKEND_KEY_DATA => {
                    let (pid, secret) = messages::decode_backend_key(frame.body())
                        .ok_or_else(|| self.lost("malformed BackendKeyData"))?;
                    // Not shared yet at startup: set in place.
                    let target = Arc::make_mut(&mut self.cancel);
                    (target.pid, target.secret) = (pid, secret);
                }
                tag::READY_FOR_QUERY => return Ok(()),
                tag::ERROR_RESPONSE => return Err(self.server_error(&frame)),
                _ => {}
            }
        }
    }

    /// Run sluice's own simple query and swallow its replies; an ErrorResponse becomes an error.
    ///
    /// # Errors
    /// The server rejected it or the connection failed.
    pub async fn run_internal(&mut self, sql: &str) -> Result<Vec<Frame>, BackendError> {
        let mut buf = BytesMut::new();
        messages::query(&mut buf, sql);
        self.send(&buf).await?;
        self.read_internal_reply().await
    }

    /// Prove the server still answers: a lone Sync, read up to its ReadyForQuery. For an idle
    /// connection that may have been terminated since its last use: a backend that was
    /// signalled to terminate sends its FATAL instead of answering, so the Sync never runs
    /// anything, and the connection is left as it was.
    ///
    /// # Errors
    /// The connection failed, or the server sent an error.
    pub async fn confirm_alive(&mut self) -> Result<(), BackendError> {
        let mut buf = BytesMut::new();
        messages::sync(&mut buf);
        self.send(&buf).await?;
        self.read_internal_reply().await.map(drop)
    }

    /// Read the replies of one of sluice's own simple queries (already sent) up to
    /// ReadyForQuery: its DataRows, or the server's error. A NotificationResponse among them
    /// is not part of the reply but a message for the client (a listening backend sends the
    /// notifications it was signalled for before its next ReadyForQuery, and before reading
    /// the next query): it is kept for the session ([`ServerConn::take_notifications`]).
    ///
    /// # Errors
    /// The server rejected it or the connection failed.
    pub async fn read_internal_reply(&mut self) -> Result<Vec<Frame>, BackendError> {
        let mut failure = None;
        let mut rows = Vec::new();
        loop {
            let frame = self.recv().await?;
            match frame.tag() {
                tag::READY_FOR_QUERY => break,
                tag::ERROR_RESPONSE => failure = Some(self.server_error(&frame)),
                // RESET ALL, DISCARD ALL and replayed settings change reported parameters.
                tag::PARAMETER_STATUS => self.note_parameter_status(&frame),
                tag::NOTIFICATION => self.keep_notification(frame)?,
                b'D' => rows.push(frame),
                _ => {}
            }
        }
        failure.map_or(Ok(rows), Err)
    }

    /// Record a ParameterStatus: `server_params` always holds what the server last reported.
    fn note_parameter_status(&mut self, frame: &Frame) {
        if let Some((name, value)) = messages::decode_parameter_status(frame.body()) {
            self.note_server_param(name, value);
        }
    }

    /// True if the socket shows the connection is gone (EOF, reset, or unsolicited bytes such
    /// as the FATAL a terminated backend sends). Never blocks.
    #[must_use]
    pub fn looks_dead(&mut self) -> bool {
        if self.io.has_buffered() {
            return true;
        }
        // An in-memory connection (benches) has no socket to probe without a task context: its
        // fake server never hangs up, so it is taken as alive.
        let Some(tcp) = self.io.get_ref().tcp() else { return false };
        let mut probe = [0u8; 1];
        !matches!(tcp.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// Walk a DataRow's fields in order, `each(index, value)` (`None` for NULL); false if the row
/// is malformed (a length past its end, a truncated header).
fn walk_fields<'a>(row: &'a Frame, mut each: impl FnMut(usize, Option<&'a [u8]>)) -> bool {
    let mut b = row.body();
    let Some(n) = crate::protocol::framer::take_i16(&mut b) else { return false };
    for k in 0..usize::try_from(n).unwrap_or(0) {
        let Some(len) = crate::protocol::framer::take_i32(&mut b) else { return false };
        let Ok(len) = usize::try_from(len) else {
            each(k, None);
            continue;
        };
        if b.len() < len {
            return false;
        }
        each(k, Some(&b[..len]));
        b = &b[len..];
    }
    true
}

/// The text columns of a DataRow (NULL is `None`); empty on a malformed row.
#[must_use]
pub fn columns(row: &Frame) -> Vec<Option<String>> {
    let mut out = Vec::new();
    let whole = walk_fields(row, |_, v| out.push(v.map(|v| String::from_utf8_lossy(v).into_owned())));
    if whole {
        out
    } else {
        Vec::new()
    }
}

/// Column `i` of a DataRow as text: what `columns(row)` has there (`None` for NULL, a missing
/// column or a malformed row), borrowed from the row where it is valid UTF-8. The write
/// position read behind every writing unit takes its one column this way instead of copying
/// the row into a `Vec` of `String`s.
#[must_use]
pub fn column(row: &Frame, i: usize) -> Option<std::borrow::Cow<'_, str>> {
    let mut found = None;
    let whole = walk_fields(row, |k, v| {
        if k == i {
            found = v.map(String::from_utf8_lossy);
        }
    });
    found.filter(|_| whole)
}

/// Parse a PostgreSQL LSN (`16/B374D848`) into a comparable number.
#[must_use]
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[cfg(test)]
mod tests;
