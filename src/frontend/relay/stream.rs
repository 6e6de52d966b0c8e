//! The client-to-server half of a full-duplex unit: while the relay waits for the server's next
//! reply, the client's further messages are read, judged by `frontend::duplex`, translated and
//! written to the server. Bounded: at most [`READ_AHEAD_MESSAGES`] messages / [`READ_AHEAD_BYTES`]
//! bytes read ahead of what the server took, then the client is not read until it has.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::super::duplex::{self, Next, READ_AHEAD_BYTES, READ_AHEAD_MESSAGES};
use super::super::statements::{Batch, Statements};
use super::super::unit::{combine, Resolved, Unit};
use super::{Relay, RelayError, SessionEnd};
use crate::backend::prepared::StmtKey;
use crate::protocol::framer::Progress;
use crate::protocol::frames::FramesBuf;
use crate::protocol::{messages, tag, Frame, Frames};
use crate::router::{Access, Class, Classifier};

/// Streamed client messages are kept (for a replay, and for the session to judge the whole
/// unit) up to this many bytes; past it they are dropped: the unit can then no longer run again
/// elsewhere (its replies stream on), and what it set is known only to its connection.
pub(crate) const KEEP_LIMIT: usize = 1 << 20;

/// What streamed into a unit after it started, for the session to account for.
#[derive(Default)]
pub struct Streamed {
    /// Every streamed message, up to [`KEEP_LIMIT`] (`None` past it): the rest of the unit, for
    /// a replay and for the session to judge the whole unit.
    pub frames: Option<FramesBuf>,
    /// The unit may still run again elsewhere, unseen: its replies are held, every streamed
    /// message is kept and none was a Flush.
    pub(super) replayable: bool,
    /// The class of the streamed statements (combined).
    pub class: Option<Class>,
    /// Statements the streamed messages assume present on the connection.
    pub added: Vec<Arc<StmtKey>>,
    /// Server-side statements the streamed messages closed.
    pub closed: Vec<String>,
    /// The message that ended the unit because it needs its own routing.
    pub lookahead: Option<Frame>,
    /// The client's Sync streamed in: the unit's ReadyForQuery is owed to the client.
    pub synced: bool,
    /// Messages streamed in (all of them, kept for a replay or not): the unit the session
    /// holds is not all that ran.
    pub messages: usize,
}

/// The session's side of a streaming unit.
pub(super) struct Stream<'a> {
    pub(super) statements: &'a mut Statements,
    pub(super) classifier: &'a Classifier,
    /// A write may not run where the unit runs (see [`duplex::Streaming`]).
    pub(super) writes_move: bool,
    pub(super) out: &'a mut Streamed,
    /// The unit's Sync was forwarded, or a message ended it: the client is not read any more.
    pub(super) done: bool,
    /// Client bytes waiting to be written to the server, and how many messages they hold.
    pub(super) to_server: BytesMut,
    pub(super) ahead: usize,
}

impl Relay<'_> {
    /// Nothing of the unit is in flight and the client said nothing more yet (or the unit has
    /// ended): a unit whose replies are all in returns to the session, its block left open.
    pub(super) fn stream_settled(&self) -> bool {
        self.stream
            .as_ref()
            .is_none_or(|s| s.to_server.is_empty() && (s.done || self.errored || !self.client.has_buffered()))
    }

    /// Make progress when the next server reply is not here yet: take the client's buffered
    /// messages into the unit, then wait for whichever comes first of server bytes, client
    /// bytes (while under the read-ahead bounds) and the write of streamed messages.
    pub(super) async fn pump(&mut self) -> Result<(), RelayError> {
        self.take_client_messages().await?;
        let Some(s) = self.stream.as_mut() else { return self.fill().await };
        let read_client = !s.done && s.to_server.len() < READ_AHEAD_BYTES && s.ahead < READ_AHEAD_MESSAGES;
        if !read_client && s.to_server.is_empty() {
            // Only the server can say more now, and with no reply owed it will not: the unit
            // has ended (a lone Flush whose next message needs its own routing). The caller
            // sees it settled; waiting here would wait for ever.
            if self.queue.is_empty() {
                return Ok(());
            }
            return self.fill().await;
        }
        let peer = if read_client { Some(&mut *self.client) } else { None };
        let progress = self.conn.io.fill_or_write(peer, &mut s.to_server).await;
        match progress {
            Ok(Progress::Read(0)) => Err(RelayError::Server(self.conn.lost("server closed the connection"))),
            Ok(Progress::Read(_) | Progress::PeerRead(1..)) => Ok(()),
            Ok(Progress::PeerRead(0)) => Err(RelayError::Client(SessionEnd::ClientGone)),
            Ok(Progress::PeerFailed(e)) => Err(RelayError::Client(SessionEnd::unreadable(&e))),
            Ok(Progress::Wrote(_)) => {
                if s.to_server.is_empty() {
                    s.ahead = 0;
                    // A TLS layer may hold the last record until flushed.
                    let flushed = self.conn.io.get_mut().flush().await;
                    flushed.map_err(|e| RelayError::Server(self.conn.lost(&e.to_string())))?;
                }
                Ok(())
            }
            Err(e) => Err(RelayError::Server(self.conn.lost(&e.to_string()))),
        }
    }

    /// Decide, for each complete client message already read, whether it continues the unit
    /// (then translate it and queue it for the server), until the read-ahead bound.
    async fn take_client_messages(&mut self) -> Result<(), RelayError> {
        loop {
            let Some(s) = self.stream.as_mut() else { return Ok(()) };
            if s.done || s.to_server.len() >= READ_AHEAD_BYTES || s.ahead >= READ_AHEAD_MESSAGES {
                return Ok(());
            }
            let frame = match self.client.buffered_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(RelayError::Client(SessionEnd::bad_frame(&e))),
            };
            let (class, resolved) = match frame.tag() {
                tag::PARSE | tag::BIND => {
                    let (class, resolved) =
                        Unit::Extended(Frames::from(frame.clone())).classify(s.statements, s.classifier);
                    (Some(class), resolved)
                }
                _ => (None, Resolved::default()),
            };
            let writes = class.as_ref().is_some_and(|c| c.access == Access::Write);
            let unit = duplex::Streaming { failed: self.errored, writes_move: s.writes_move };
            let next = duplex::next(frame.tag(), writes, unit);
            if next == Next::Reroute {
                s.done = true;
                s.out.lookahead = Some(frame);
                if !self.queue.is_empty() {
                    // The server holds the replies of what it has until a Flush or a Sync.
                    messages::flush(&mut s.to_server);
                }
                return Ok(());
            }
            self.record(&frame).await?;
            let Some(s) = self.stream.as_mut() else { return Ok(()) };
            if next == Next::Discard {
                continue;
            }
            if let Some(c) = class {
                s.out.class = Some(match s.out.class.take() {
                    Some(before) => combine(&[Arc::new(before), c]),
                    None => Class::clone(&c),
                });
            }
            let mut batch = Batch::continuing(self.conn, s.classifier);
            s.statements.translate(frame.msg(), resolved.at(0), &mut batch);
            let Batch { out, queue, added, closed, .. } = batch;
            self.conn.note_sent(&out);
            s.to_server.extend_from_slice(&out);
            s.ahead += 1;
            self.queue.extend(queue);
            s.out.added.extend(added);
            s.out.closed.extend(closed);
            s.done = next == Next::EndAtSync;
            s.out.synced |= s.done;
        }
    }

    /// Keep a streamed message, within [`KEEP_LIMIT`]. Once the unit may not run again
    /// elsewhere, replies are no longer held back. A Flush ends that at once: the client may
    /// wait for the replies it asks for before it sends anything more.
    async fn record(&mut self, frame: &Frame) -> Result<(), RelayError> {
        let holding = self.hold.is_some();
        let Some(s) = self.stream.as_mut() else { return Ok(()) };
        s.out.messages += 1;
        if let Some(frames) = s.out.frames.as_mut() {
            if frames.byte_len() + frame.bytes().len() <= KEEP_LIMIT {
                frames.push(frame.msg());
            } else {
                s.out.frames = None;
            }
        }
        s.out.replayable &= holding && frame.tag() != tag::FLUSH && s.out.frames.is_some();
        if s.out.replayable {
            return Ok(());
        }
        if !self.rejected {
            self.release_hold().await?;
        }
        Ok(())
    }

    /// Write every streamed message still waiting (before COPY takes the connection over).
    pub(super) async fn send_streamed(&mut self) -> Result<(), RelayError> {
        let Some(s) = self.stream.as_mut() else { return Ok(()) };
        if s.to_server.is_empty() {
            return Ok(());
        }
        let io = self.conn.io.get_mut();
        let written = async { io.write_all(&s.to_server).await.and(io.flush().await) }.await;
        written.map_err(|e| RelayError::Server(self.conn.lost(&e.to_string())))?;
        s.to_server.clear();
        s.ahead = 0;
        Ok(())
    }
}
