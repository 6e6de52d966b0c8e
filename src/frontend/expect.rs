//! What a unit's server replies should look like, message by message.
//!
//! Every message sent to the server pushes what its reply is and whether the client sees it
//! (sluice's own injected Parse/Close are swallowed). Replies sluice answers itself (a Parse of a
//! statement the connection already has) are queued as synthesized messages so they reach the
//! client in protocol order. [`step`] is the pure decision for one server message.

use std::collections::VecDeque;

use crate::protocol::{tag, TxStatus};

/// The reply shape of one frontend message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// Simple Query or FunctionCall: everything up to ReadyForQuery.
    Query,
    /// ParseComplete.
    Parse,
    /// BindComplete.
    Bind,
    /// ParameterDescription? then RowDescription or NoData.
    Describe,
    /// Rows, then CommandComplete / EmptyQueryResponse / PortalSuspended (COPY in between).
    Execute,
    /// CloseComplete.
    Close,
    /// ReadyForQuery.
    Sync,
}

impl ReplyKind {
    fn ends_with(self, t: u8) -> bool {
        match self {
            ReplyKind::Query | ReplyKind::Sync => t == tag::READY_FOR_QUERY,
            ReplyKind::Parse => t == tag::PARSE_COMPLETE,
            ReplyKind::Bind => t == tag::BIND_COMPLETE,
            ReplyKind::Describe => t == tag::ROW_DESCRIPTION || t == tag::NO_DATA,
            ReplyKind::Execute => matches!(t, tag::COMMAND_COMPLETE | tag::EMPTY_QUERY | tag::PORTAL_SUSPENDED),
            ReplyKind::Close => t == tag::CLOSE_COMPLETE,
        }
    }
}

/// A reply sluice makes up itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synth {
    /// ParseComplete.
    ParseComplete,
    /// CloseComplete.
    CloseComplete,
}

/// One expected reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The server will answer; `forward` says whether the client sees it.
    Server {
        /// Reply shape.
        kind: ReplyKind,
        /// False for sluice's own injected messages.
        forward: bool,
    },
    /// sluice answers this one itself.
    Synth(Synth),
}

/// What to do with one server message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Pass it to the client.
    Forward,
    /// Drop it (a reply to sluice's own message).
    Swallow,
    /// Pass it on; the client now streams COPY data to the server.
    CopyIn,
    /// Pass it on; the unit is over with this transaction status.
    Ready(TxStatus),
    /// The server sent something no message asked for.
    Unexpected,
}

/// Decide what one server message means, updating the queue. `errored` is set when an
/// ErrorResponse is seen.
pub fn step(queue: &mut VecDeque<Expect>, t: u8, body: &[u8], errored: &mut bool) -> Step {
    if matches!(t, tag::NOTICE_RESPONSE | tag::NOTIFICATION | tag::PARAMETER_STATUS) {
        return Step::Forward;
    }
    let Some(Expect::Server { kind, forward }) = queue.front().copied() else {
        return Step::Unexpected;
    };
    if t == tag::ERROR_RESPONSE {
        *errored = true;
        if kind != ReplyKind::Query {
            // The server skips everything up to Sync: so do our expectations.
            while queue.front().is_some_and(|e| !matches!(e, Expect::Server { kind: ReplyKind::Sync, .. })) {
                queue.pop_front();
            }
        }
        return Step::Forward;
    }
    if kind.ends_with(t) {
        queue.pop_front();
    }
    if t == tag::READY_FOR_QUERY {
        return match body.first().copied().and_then(TxStatus::from_byte) {
            Some(status) => Step::Ready(status),
            None => Step::Unexpected,
        };
    }
    if t == tag::COPY_IN_RESPONSE || t == tag::COPY_BOTH_RESPONSE {
        return Step::CopyIn;
    }
    if forward {
        Step::Forward
    } else {
        Step::Swallow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(kind: ReplyKind) -> Expect {
        Expect::Server { kind, forward: true }
    }

    #[test]
    fn extended_batch_walks_its_replies() {
        let mut q: VecDeque<Expect> = [
            Expect::Server { kind: ReplyKind::Parse, forward: false },
            server(ReplyKind::Bind),
            server(ReplyKind::Execute),
            server(ReplyKind::Sync),
        ]
        .into();
        let mut err = false;
        assert_eq!(step(&mut q, b'1', b"", &mut err), Step::Swallow);
        assert_eq!(step(&mut q, b'2', b"", &mut err), Step::Forward);
        assert_eq!(step(&mut q, b'D', b"", &mut err), Step::Forward);
        assert_eq!(step(&mut q, b'C', b"", &mut err), Step::Forward);
        assert_eq!(step(&mut q, b'Z', b"I", &mut err), Step::Ready(TxStatus::Idle));
        assert!(q.is_empty());
        assert!(!err);
    }

    #[test]
    fn an_error_skips_to_sync() {
        let mut q: VecDeque<Expect> = [
            server(ReplyKind::Parse),
            Expect::Synth(Synth::ParseComplete),
            server(ReplyKind::Bind),
            server(ReplyKind::Sync),
        ]
        .into();
        let mut err = false;
        assert_eq!(step(&mut q, b'E', b"", &mut err), Step::Forward);
        assert!(err);
        assert_eq!(q.len(), 1);
        assert_eq!(step(&mut q, b'Z', b"E", &mut err), Step::Ready(TxStatus::Failed));
    }

    #[test]
    fn simple_query_errors_do_not_skip() {
        let mut q: VecDeque<Expect> = [server(ReplyKind::Query)].into();
        let mut err = false;
        assert_eq!(step(&mut q, b'E', b"", &mut err), Step::Forward);
        assert_eq!(step(&mut q, b'G', b"", &mut err), Step::CopyIn);
        assert_eq!(step(&mut q, b'N', b"", &mut err), Step::Forward);
        assert_eq!(step(&mut q, b'Z', b"T", &mut err), Step::Ready(TxStatus::InTransaction));
        assert_eq!(step(&mut q, b'Z', b"T", &mut err), Step::Unexpected);
    }
}
