//! What a server connection still owes: the protocol state that decides whether it may go back
//! to a pool.
//!
//! Every message written to a server passes [`Wire::sent`], every message read from it that
//! matters passes [`Wire::received`]. Replies are counted by their barrier: each Sync, Query
//! and FunctionCall is answered by exactly one ReadyForQuery, after every reply to what was sent
//! before it (PostgreSQL answers in order, and after an error skips to the Sync, still answering
//! it). So "no ReadyForQuery due and no extended message sent since the last Sync" proves every
//! reply of every message (the client's, and sluice's own injected Parse/Close/queries) was read.
//! [`Wire::verdict`] is the one pure decision every release goes through. No IO here.

use crate::protocol::{framer::peek_header, messages, tag, TxStatus};

/// What to do with a server connection its session is done with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Provably clean: back to the pool.
    Reuse,
    /// Replies are still due but will come (a Sync closes an open block first): read them,
    /// within a bounded wait, then decide again.
    Drain,
    /// Its state cannot be proved clean cheaply: close it.
    Close,
}

/// Where the connection's message stream stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Ordinary request/reply traffic.
    Normal,
    /// The server waits for CopyData from a client (COPY FROM STDIN).
    CopyIn,
    /// Something happened after which nothing it says can be trusted: a FATAL, a Terminate,
    /// a ReadyForQuery nothing asked for, bad framing.
    Broken,
}

/// The protocol state of one server connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wire {
    /// Sync / Query / FunctionCall messages sent whose ReadyForQuery was not read yet.
    readies_due: u32,
    /// Extended-protocol messages were sent since the last Sync (a block left open by Flush,
    /// or cut short by a client that left).
    block_open: bool,
    /// The status of the last ReadyForQuery read.
    status: TxStatus,
    mode: Mode,
    /// Protocol bytes written to and read from the server since [`Wire::take_traffic`] last ran
    /// (plain counters: the connection has one owner; the pool adds them to the node's
    /// metrics when a checkout ends, never per message).
    traffic: (u64, u64),
}

impl Default for Wire {
    /// A connection just logged in: ReadyForQuery `I` read, nothing sent.
    fn default() -> Self {
        Wire { readies_due: 0, block_open: false, status: TxStatus::Idle, mode: Mode::Normal, traffic: (0, 0) }
    }
}

/// Longest message accepted while walking bytes sluice itself writes.
const WALK_LIMIT: usize = usize::MAX;

impl Wire {
    /// Account for client or sluice messages written to the server (whole frames).
    pub fn sent(&mut self, bytes: &[u8]) {
        self.traffic.0 += bytes.len() as u64;
        let mut at = 0;
        while let Ok(Some((t, total))) = peek_header(&bytes[at..], WALK_LIMIT) {
            self.sent_tag(t);
            at += total;
            if at >= bytes.len() {
                break;
            }
        }
    }

    /// Bytes (sent, received) since the last call, and start counting afresh.
    pub fn take_traffic(&mut self) -> (u64, u64) {
        std::mem::take(&mut self.traffic)
    }

    fn sent_tag(&mut self, t: u8) {
        match t {
            tag::QUERY | tag::FUNCTION_CALL | tag::SYNC => {
                self.readies_due += 1;
                self.block_open = false;
            }
            tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE => self.block_open = true,
            tag::COPY_DONE | tag::COPY_FAIL if self.mode == Mode::CopyIn => self.mode = Mode::Normal,
            tag::TERMINATE => self.mode = Mode::Broken,
            _ => {}
        }
    }

    /// Account for one server message (tag and payload).
    pub fn received(&mut self, t: u8, body: &[u8]) {
        // The tag and the length word, then the body.
        self.traffic.1 += 5 + body.len() as u64;
        match t {
            tag::READY_FOR_QUERY => match (self.readies_due, body.first().copied().and_then(TxStatus::from_byte)) {
                (1.., Some(status)) => {
                    self.readies_due -= 1;
                    self.status = status;
                    if self.mode == Mode::CopyIn {
                        // A COPY the server ended itself (an error): it reads messages again.
                        self.mode = Mode::Normal;
                    }
                }
                _ => self.mode = Mode::Broken,
            },
            tag::COPY_IN_RESPONSE | tag::COPY_BOTH_RESPONSE => self.mode = Mode::CopyIn,
            tag::ERROR_RESPONSE if messages::is_fatal(body) => self.mode = Mode::Broken,
            _ => {}
        }
    }

    /// `bytes` of whole messages that change nothing of the connection's state (the relay's
    /// plain replies: rows, completions, descriptions): only counted.
    pub fn received_plain(&mut self, bytes: usize) {
        self.traffic.1 += bytes as u64;
    }

    /// `n` Syncs already counted were swallowed by COPY FROM STDIN (the server ignores Sync in
    /// copy mode): they will get no ReadyForQuery.
    pub fn syncs_ignored(&mut self, n: usize) {
        self.readies_due = self.readies_due.saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// Nothing can be trusted any more (bad framing, a lost socket).
    pub fn break_off(&mut self) {
        self.mode = Mode::Broken;
    }

    /// True when every reply was read and no block is open: the connection waits for a new
    /// request (its transaction status is [`Wire::status`]).
    #[must_use]
    pub fn settled(&self) -> bool {
        self.mode == Mode::Normal && self.readies_due == 0 && !self.block_open
    }

    /// An extended block was sent since the last Sync.
    #[must_use]
    pub fn block_open(&self) -> bool {
        self.block_open
    }

    /// The status of the last ReadyForQuery read.
    #[must_use]
    pub fn status(&self) -> TxStatus {
        self.status
    }

    /// The stream mode.
    #[must_use]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The release decision. `unread` says whether bytes nobody asked for sit in the read
    /// buffer (the FATAL of a terminated backend, a stray reply).
    #[must_use]
    pub fn verdict(&self, unread: bool) -> Release {
        match self.mode {
            Mode::Broken | Mode::CopyIn => Release::Close,
            Mode::Normal if self.readies_due > 0 || self.block_open => Release::Drain,
            // Nothing is due, so unread bytes are something no message asked for.
            Mode::Normal if unread => Release::Close,
            // A transaction block (open or failed) and its portals belong to the client that
            // opened it: never handed to another.
            Mode::Normal if self.status != TxStatus::Idle => Release::Close,
            Mode::Normal => Release::Reuse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    fn sent(w: &mut Wire, build: impl FnOnce(&mut BytesMut)) {
        let mut b = BytesMut::new();
        build(&mut b);
        w.sent(&b);
    }

    fn fatal() -> Vec<u8> {
        let mut b = BytesMut::new();
        messages::error_response(&mut b, messages::Severity::Fatal, "57P01", "terminating connection");
        b[5..].to_vec()
    }

    fn error() -> Vec<u8> {
        let mut b = BytesMut::new();
        messages::error_response(&mut b, messages::Severity::Error, "42P01", "no such table");
        b[5..].to_vec()
    }

    /// (how the connection got here, unread bytes) -> verdict.
    #[test]
    fn release_verdicts() {
        type Setup = fn(&mut Wire);
        let cases: &[(&str, Setup, bool, Release)] = &[
            ("fresh", |_| {}, false, Release::Reuse),
            (
                "query answered",
                |w| {
                    sent(w, |b| messages::query(b, "SELECT 1"));
                    w.received(tag::READY_FOR_QUERY, b"I");
                },
                false,
                Release::Reuse,
            ),
            ("client gone mid-query", |w| sent(w, |b| messages::query(b, "SELECT pg_sleep(9)")), false, Release::Drain),
            (
                "pipelined query and lsn capture, one answered",
                |w| {
                    sent(w, |b| {
                        messages::query(b, "INSERT 1");
                        messages::query(b, "SELECT lsn");
                    });
                    w.received(tag::READY_FOR_QUERY, b"I");
                },
                false,
                Release::Drain,
            ),
            (
                "Parse/Describe/Flush block held",
                |w| {
                    sent(w, |b| {
                        messages::parse(b, "", b"SELECT 1", &[0, 0]);
                        messages::describe(b, b'S', "");
                        messages::flush(b);
                    });
                    w.received(tag::PARSE_COMPLETE, b"");
                },
                false,
                Release::Drain,
            ),
            ("Close without Sync", |w| sent(w, |b| messages::close(b, b'P', "")), false, Release::Drain),
            (
                "block closed by Sync and answered",
                |w| {
                    sent(w, |b| messages::close(b, b'P', ""));
                    sent(w, messages::sync);
                    w.received(tag::CLOSE_COMPLETE, b"");
                    w.received(tag::READY_FOR_QUERY, b"I");
                },
                false,
                Release::Reuse,
            ),
            (
                "error then its Sync answered",
                |w| {
                    sent(w, |b| {
                        messages::parse(b, "", b"SELECT nope", &[0, 0]);
                        messages::sync(b);
                    });
                    w.received(tag::ERROR_RESPONSE, &error());
                    w.received(tag::READY_FOR_QUERY, b"I");
                },
                false,
                Release::Reuse,
            ),
            (
                "in a transaction block",
                |w| {
                    sent(w, |b| messages::query(b, "BEGIN"));
                    w.received(tag::READY_FOR_QUERY, b"T");
                },
                false,
                Release::Close,
            ),
            (
                "in a failed transaction block",
                |w| {
                    sent(w, |b| messages::query(b, "BEGIN; SELECT 1/0"));
                    w.received(tag::READY_FOR_QUERY, b"E");
                },
                false,
                Release::Close,
            ),
            (
                "COPY FROM STDIN open",
                |w| {
                    sent(w, |b| messages::query(b, "COPY t FROM STDIN"));
                    w.received(tag::COPY_IN_RESPONSE, b"");
                },
                false,
                Release::Close,
            ),
            (
                "extended COPY: the Sync behind its Execute ignored, a fresh one after CopyDone",
                |w| {
                    sent(w, |b| {
                        messages::execute(b, "", 0);
                        messages::sync(b);
                    });
                    w.received(tag::COPY_IN_RESPONSE, b"");
                    w.syncs_ignored(1);
                    sent(w, |b| b.extend_from_slice(b"c\0\0\0\x04"));
                    sent(w, messages::sync);
                    w.received(tag::COMMAND_COMPLETE, b"COPY 1\0");
                    w.received(tag::READY_FOR_QUERY, b"I");
                },
                false,
                Release::Reuse,
            ),
            (
                "COPY finished",
                |w| {
                    sent(w, |b| messages::query(b, "COPY t FROM STDIN"));
                    w.received(tag::COPY_IN_RESPONSE, b"");
                    sent(w, |b| b.extend_from_slice(b"c\0\0\0\x04"));
                    w.received(tag::READY_FOR_QUERY, b"I");
                },
                false,
                Release::Reuse,
            ),
            ("FATAL read", |w| w.received(tag::ERROR_RESPONSE, &fatal()), false, Release::Close),
            ("Terminate sent", |w| sent(w, messages::terminate), false, Release::Close),
            ("ReadyForQuery nobody asked for", |w| w.received(tag::READY_FOR_QUERY, b"I"), false, Release::Close),
            ("stray bytes while idle", |_| {}, true, Release::Close),
            ("lost", Wire::break_off, false, Release::Close),
        ];
        for (name, setup, unread, want) in cases {
            let mut w = Wire::default();
            setup(&mut w);
            assert_eq!(w.verdict(*unread), *want, "{name}: {w:?}");
        }
    }

    #[test]
    fn traffic_counts_whole_messages_both_ways_until_taken() {
        let mut w = Wire::default();
        sent(&mut w, |b| messages::query(b, "SELECT 1"));
        w.received(tag::READY_FOR_QUERY, b"I");
        assert_eq!(w.take_traffic(), (5 + 9, 6));
        assert_eq!(w.take_traffic(), (0, 0));
    }

    #[test]
    fn settled_only_with_nothing_due() {
        let mut w = Wire::default();
        assert!(w.settled());
        sent(&mut w, |b| messages::parse(b, "s", b"SELECT 1", &[0, 0]));
        assert!(!w.settled() && w.block_open());
        sent(&mut w, messages::sync);
        assert!(!w.settled() && !w.block_open());
        w.received(tag::READY_FOR_QUERY, b"T");
        assert!(w.settled());
        assert_eq!(w.status(), TxStatus::InTransaction);
    }
}
