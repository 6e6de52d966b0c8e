//! What a streaming unit does with the client's next message. Pure: the relay (`relay.rs`)
//! acts on the answer.
//!
//! While a unit runs, the relay keeps reading the client (a pipeline of any length streams
//! through) and must decide, message by message, whether the message belongs to the running
//! unit. It does not own routing: a message that needs another node ends the unit before any
//! byte of it is sent, and the session routes it afresh.

use crate::protocol::tag;

/// At most this many client messages are read ahead of what was written to the server; then
/// the client is not read until the server takes them (backpressure).
pub(super) const READ_AHEAD_MESSAGES: usize = 1024;
/// At most this many client bytes are read ahead of what was written to the server.
pub(super) const READ_AHEAD_BYTES: usize = 1 << 20;

/// What to do with the client's next message while a unit streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// It continues the unit: send it on now.
    Forward,
    /// A Sync: send it on, and it ends the unit (stop reading the client).
    EndAtSync,
    /// Read and dropped: the server would discard it (the block failed and waits for its
    /// Sync), or it means nothing here (copy messages outside COPY, as PostgreSQL ignores them).
    Discard,
    /// It needs its own routing (a simple Query, a write while the unit runs on a replica, a
    /// Terminate): the unit ends before it, and the session takes it as its next message.
    Reroute,
}

/// What the relay knows about the running unit when the next client message arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Streaming {
    /// The server reported an error since the last Sync: it discards all up to the next Sync.
    pub failed: bool,
    /// A write may not run where this unit runs: it reads on a replica outside a transaction
    /// block, with nothing bound to the connection (the Flush-held rule, issue item 3).
    pub writes_move: bool,
}

/// Decide for one client message of type `t`; `writes` says whether it is (or binds) a statement
/// classified as a write (only Parse and Bind can be).
pub(super) fn next(t: u8, writes: bool, unit: Streaming) -> Next {
    match t {
        tag::SYNC => Next::EndAtSync,
        tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE | tag::FLUSH => {
            if unit.failed {
                Next::Discard
            } else if writes && unit.writes_move {
                Next::Reroute
            } else {
                Next::Forward
            }
        }
        tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => Next::Discard,
        // Query, FunctionCall, Terminate, and anything the session refuses: the session decides.
        _ => Next::Reroute,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_message_while_a_unit_streams() {
        let ok = Streaming { failed: false, writes_move: false };
        let on_replica = Streaming { failed: false, writes_move: true };
        let failed = Streaming { failed: true, writes_move: true };
        // (tag, writes, unit) -> decision
        let cases = [
            (tag::PARSE, false, ok, Next::Forward),
            (tag::BIND, false, ok, Next::Forward),
            (tag::DESCRIBE, false, ok, Next::Forward),
            (tag::EXECUTE, false, ok, Next::Forward),
            (tag::CLOSE, false, ok, Next::Forward),
            (tag::FLUSH, false, ok, Next::Forward),
            (tag::SYNC, false, ok, Next::EndAtSync),
            (tag::PARSE, true, ok, Next::Forward),
            (tag::PARSE, false, on_replica, Next::Forward),
            (tag::PARSE, true, on_replica, Next::Reroute),
            (tag::BIND, true, on_replica, Next::Reroute),
            (tag::PARSE, true, failed, Next::Discard),
            (tag::EXECUTE, false, failed, Next::Discard),
            (tag::FLUSH, false, failed, Next::Discard),
            (tag::SYNC, false, failed, Next::EndAtSync),
            (tag::QUERY, false, ok, Next::Reroute),
            (tag::QUERY, false, failed, Next::Reroute),
            (tag::FUNCTION_CALL, false, ok, Next::Reroute),
            (tag::TERMINATE, false, ok, Next::Reroute),
            (tag::COPY_DATA, false, ok, Next::Discard),
            (tag::COPY_DONE, false, ok, Next::Discard),
            (tag::COPY_FAIL, false, failed, Next::Discard),
            (b'?', false, ok, Next::Reroute),
        ];
        for (t, writes, unit, want) in cases {
            assert_eq!(next(t, writes, unit), want, "{:?} writes={writes} {unit:?}", t as char);
        }
    }
}
