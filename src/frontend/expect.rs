//! What a unit's server replies should look like, message by message.
//!
//! Every message sent to the server pushes what its reply is and whether the client sees it
//! (sluice's own injected Parse/Close are swallowed). Replies sluice answers itself (a Parse of a
//! statement the connection already has) are queued as synthesized messages so they reach the
//! client in protocol order. [`step`] is the pure decision for one server message. The queue,
//! [`Replies`], keeps a usual unit's expectations inline (no allocation per unit).
//!
//! A state sync pipelined in front of a unit ([`ReplyKind::StateSync`]) is answered entirely
//! to sluice: its replies, ParameterStatus included (the values are the session's own), never
//! reach the client. If it fails, the unit behind it ran with the wrong settings: everything it
//! answers is discarded, and the client gets the sync's error and the unit's ReadyForQuery.

use std::collections::VecDeque;

use crate::protocol::framer::peek_header;
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
    /// sluice's own state sync (a simple Query): everything up to ReadyForQuery, swallowed.
    StateSync,
}

impl ReplyKind {
    fn ends_with(self, t: u8) -> bool {
        match self {
            ReplyKind::Query | ReplyKind::Sync | ReplyKind::StateSync => t == tag::READY_FOR_QUERY,
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
    /// The server will answer, but the state sync before it failed: swallowed, errors too;
    /// only the unit's last ReadyForQuery reaches the client.
    Discard(ReplyKind),
}

/// How many expected replies a unit keeps without allocating: a driver's usual batch (Parse,
/// Bind, Describe, Execute, Sync) behind a state sync and a few re-closes, with room to spare.
const INLINE_REPLIES: usize = 16;

/// A unit's expected replies, in order: a queue whose first [`INLINE_REPLIES`] entries live
/// inline (in the unit's future, which is allocated anyway), so a usual unit allocates no
/// queue of its own (a `VecDeque` was one `malloc` and `free` per unit); more (a driver
/// pipelining thousands of messages) spill into a `VecDeque` behind them.
///
/// Invariant: every inline entry comes before every spilled one, so an entry goes inline only
/// while nothing is spilled.
#[derive(Clone, Debug, Default)]
pub struct Replies {
    /// A ring of `len` entries from `head`.
    inline: [Option<Expect>; INLINE_REPLIES],
    head: u8,
    len: u8,
    /// The entries after the inline ones.
    spill: VecDeque<Expect>,
}

impl Replies {
    /// An empty queue (allocates nothing).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Append one expectation.
    pub fn push_back(&mut self, e: Expect) {
        let len = usize::from(self.len);
        if len < INLINE_REPLIES && self.spill.is_empty() {
            self.inline[(usize::from(self.head) + len) % INLINE_REPLIES] = Some(e);
            self.len += 1;
        } else {
            self.spill.push_back(e);
        }
    }

    /// Take the first expectation.
    pub fn pop_front(&mut self) -> Option<Expect> {
        if self.len == 0 {
            return self.spill.pop_front();
        }
        let e = self.inline[usize::from(self.head)].take();
        self.head = u8::try_from((usize::from(self.head) + 1) % INLINE_REPLIES).unwrap_or(0);
        self.len -= 1;
        e
    }

    /// The first expectation.
    #[must_use]
    pub fn front(&self) -> Option<&Expect> {
        if self.len == 0 {
            return self.spill.front();
        }
        self.inline[usize::from(self.head)].as_ref()
    }

    /// True if nothing is expected.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0 && self.spill.is_empty()
    }

    /// Number of expectations.
    #[must_use]
    pub fn len(&self) -> usize {
        usize::from(self.len) + self.spill.len()
    }

    /// The expectations in order.
    pub fn iter(&self) -> impl Iterator<Item = &Expect> {
        let head = usize::from(self.head);
        (0..usize::from(self.len))
            .filter_map(move |i| self.inline[(head + i) % INLINE_REPLIES].as_ref())
            .chain(self.spill.iter())
    }

    /// Keep the first `n` expectations.
    pub fn truncate(&mut self, n: usize) {
        let len = usize::from(self.len);
        if n < len {
            for i in n..len {
                self.inline[(usize::from(self.head) + i) % INLINE_REPLIES] = None;
            }
            self.len = u8::try_from(n).unwrap_or(0);
            self.spill.clear();
        } else {
            self.spill.truncate(n - len);
        }
    }
}

impl Extend<Expect> for Replies {
    fn extend<I: IntoIterator<Item = Expect>>(&mut self, iter: I) {
        iter.into_iter().for_each(|e| self.push_back(e));
    }
}

impl FromIterator<Expect> for Replies {
    fn from_iter<I: IntoIterator<Item = Expect>>(iter: I) -> Self {
        let mut out = Self::new();
        out.extend(iter);
        out
    }
}

impl<const N: usize> From<[Expect; N]> for Replies {
    fn from(entries: [Expect; N]) -> Self {
        entries.into_iter().collect()
    }
}

impl IntoIterator for Replies {
    type Item = Expect;
    type IntoIter = IntoIter;

    fn into_iter(self) -> IntoIter {
        IntoIter(self)
    }
}

/// [`Replies`] taken in order.
#[derive(Debug)]
pub struct IntoIter(Replies);

impl Iterator for IntoIter {
    type Item = Expect;

    fn next(&mut self) -> Option<Expect> {
        self.0.pop_front()
    }
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
    /// Pass this ErrorResponse on: it failed the pipelined state sync; the connection must
    /// not be reused, and the rest of the unit is discarded.
    SyncFailed,
}

/// Decide what one server message means, updating the queue. `errored` is set when an
/// ErrorResponse is seen.
pub fn step(queue: &mut Replies, t: u8, body: &[u8], errored: &mut bool) -> Step {
    let front = queue.front().copied();
    let syncing = matches!(front, Some(Expect::Server { kind: ReplyKind::StateSync, .. } | Expect::Discard(_)));
    if t == tag::PARAMETER_STATUS && syncing {
        return Step::Swallow;
    }
    if matches!(t, tag::NOTICE_RESPONSE | tag::NOTIFICATION | tag::PARAMETER_STATUS) {
        return Step::Forward;
    }
    let (kind, forward) = match front {
        Some(Expect::Server { kind: ReplyKind::StateSync, .. }) => return sync_step(queue, t, errored),
        Some(Expect::Discard(kind)) => return discard_step(queue, kind, t, body),
        Some(Expect::Server { kind, forward }) => (kind, forward),
        Some(Expect::Synth(_)) | None => return Step::Unexpected,
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

/// How many bytes at the front of `buf` are whole server messages that [`step`] would pass on
/// with nothing else to note, taken as one run and the queue advanced past them as `step` would.
/// A message is plain while the first expectation is a reply the client sees (not the state
/// sync's, not a discarded one, not a synthesized one) and its tag is none of those the relay or
/// the connection reads besides the reply shape: ErrorResponse, NoticeResponse, notification,
/// ParameterStatus, ReadyForQuery, CopyInResponse, CopyBothResponse. The run stops before the
/// first message that is not plain or not whole (or has a bad length), which the caller
/// decides on its own with [`step`].
///
/// Most of a unit's replies are plain (ParseComplete, BindComplete, RowDescription, DataRows,
/// CommandComplete): decided one by one they each paid for the whole decision.
#[inline]
pub fn plain_run(queue: &mut Replies, buf: &[u8], max: usize) -> usize {
    let mut at = 0;
    while let Some(&Expect::Server { kind, forward: true }) = queue.front() {
        if kind == ReplyKind::StateSync {
            break;
        }
        let Ok(Some((t, total))) = peek_header(&buf[at..], max) else { break };
        if buf.len() - at < total || !is_plain(t) {
            break;
        }
        if kind.ends_with(t) {
            queue.pop_front();
        }
        at += total;
    }
    at
}

/// False for the server messages [`step`] or the relay decide on beyond the reply shape.
fn is_plain(t: u8) -> bool {
    !matches!(
        t,
        tag::ERROR_RESPONSE
            | tag::NOTICE_RESPONSE
            | tag::NOTIFICATION
            | tag::PARAMETER_STATUS
            | tag::READY_FOR_QUERY
            | tag::COPY_IN_RESPONSE
            | tag::COPY_BOTH_RESPONSE
    )
}

/// A reply to the pipelined state sync. Out of line (and [`discard_step`]): only a unit behind
/// a state sync comes here, and inlined they made every message's [`step`] heavier.
#[cold]
#[inline(never)]
fn sync_step(queue: &mut Replies, t: u8, errored: &mut bool) -> Step {
    match t {
        tag::ERROR_RESPONSE => {
            *errored = true;
            queue.pop_front();
            let rest: Vec<Expect> = std::mem::take(queue)
                .into_iter()
                .filter_map(|e| match e {
                    Expect::Server { kind, .. } | Expect::Discard(kind) => Some(Expect::Discard(kind)),
                    Expect::Synth(_) => None,
                })
                .collect();
            // The sync's own ReadyForQuery, then the unit's replies.
            queue.push_back(Expect::Discard(ReplyKind::Query));
            queue.extend(rest);
            Step::SyncFailed
        }
        tag::READY_FOR_QUERY => {
            queue.pop_front();
            Step::Swallow
        }
        _ => Step::Swallow,
    }
}

/// A reply of a unit whose state sync failed: swallowed, except its last ReadyForQuery.
#[cold]
#[inline(never)]
fn discard_step(queue: &mut Replies, kind: ReplyKind, t: u8, body: &[u8]) -> Step {
    if t == tag::ERROR_RESPONSE && kind != ReplyKind::Query {
        while queue.front().is_some_and(|e| *e != Expect::Discard(ReplyKind::Sync)) {
            queue.pop_front();
        }
        return Step::Swallow;
    }
    if matches!(t, tag::COPY_IN_RESPONSE | tag::COPY_BOTH_RESPONSE) {
        // The client must not stream COPY data into a unit it was told failed.
        return Step::Unexpected;
    }
    if kind.ends_with(t) {
        queue.pop_front();
    }
    if t == tag::READY_FOR_QUERY && queue.is_empty() {
        return match body.first().copied().and_then(TxStatus::from_byte) {
            Some(status) => Step::Ready(status),
            None => Step::Unexpected,
        };
    }
    Step::Swallow
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn server(kind: ReplyKind) -> Expect {
        Expect::Server { kind, forward: true }
    }

    #[test]
    fn replies_keep_their_order_past_the_inline_ring() {
        // A model queue alongside, through pushes and pops that wrap the ring, spill, drain
        // the ring while spilled entries wait, and truncate on both sides of the boundary.
        let kinds = [ReplyKind::Parse, ReplyKind::Bind, ReplyKind::Describe, ReplyKind::Execute, ReplyKind::Sync];
        let mut n = 0usize;
        let mut next = || {
            n += 1;
            Expect::Server { kind: kinds[n % kinds.len()], forward: n.is_multiple_of(3) }
        };
        let mut q = Replies::new();
        let mut model = VecDeque::new();
        // (pushes, pops) per round
        let rounds = [(5, 3), (20, 2), (3, 10), (40, 30), (1, 40), (16, 0), (0, 16), (30, 7), (0, 100)];
        for (round, (pushes, pops)) in rounds.into_iter().enumerate() {
            for _ in 0..pushes {
                let e = next();
                q.push_back(e);
                model.push_back(e);
            }
            for _ in 0..pops {
                assert_eq!(q.front(), model.front(), "round {round}");
                assert_eq!(q.pop_front(), model.pop_front(), "round {round}");
            }
            assert_eq!(q.len(), model.len(), "round {round}");
            assert!(q.iter().eq(model.iter()), "round {round}");
        }
        assert!(q.is_empty());
        for (len, keep) in [(30, 20), (30, 5), (10, 3), (10, 12), (0, 0)] {
            let mut q = Replies::new();
            let mut model = VecDeque::new();
            q.pop_front();
            for _ in 0..len {
                let e = next();
                q.push_back(e);
                model.push_back(e);
            }
            q.truncate(keep);
            model.truncate(keep);
            assert!(q.iter().eq(model.iter()), "len {len} keep {keep}");
            let e = next();
            q.push_back(e);
            model.push_back(e);
            assert!(q.clone().into_iter().eq(model.iter().copied()), "len {len} keep {keep}, pushed after");
        }
    }

    #[test]
    fn extended_batch_walks_its_replies() {
        let mut q: Replies = [
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

    /// Whole messages of these tags (bodies of `body_len` bytes), back to back.
    fn wire(tags: &[u8], body_len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for &t in tags {
            out.push(t);
            out.extend_from_slice(&u32::try_from(4 + body_len).unwrap().to_be_bytes());
            out.extend(std::iter::repeat_n(b'I', body_len));
        }
        out
    }

    /// `plain_run` against `step` message by message: it takes exactly the messages `step`
    /// would forward with nothing else to note, and leaves the queue where `step` leaves it.
    #[test]
    fn a_plain_run_is_what_step_would_forward() {
        let swallowed = |kind| Expect::Server { kind, forward: false };
        let extended = [
            server(ReplyKind::Parse),
            server(ReplyKind::Bind),
            server(ReplyKind::Describe),
            server(ReplyKind::Execute),
            server(ReplyKind::Sync),
        ];
        let cases: Vec<(Vec<Expect>, &[u8], usize)> = vec![
            // A driver's unit: everything up to its ReadyForQuery.
            (extended.to_vec(), b"12TDDDCZ", 7),
            (extended.to_vec(), b"12TCZ", 4),
            // Stops at what is decided apart: an error, a notice, a notification, a report,
            // the start of a COPY.
            (extended.to_vec(), b"12TDEZ", 4),
            (extended.to_vec(), b"12NTDCZ", 2),
            (extended.to_vec(), b"12TADCZ", 3),
            (extended.to_vec(), b"1S2TDCZ", 1),
            (vec![server(ReplyKind::Execute), server(ReplyKind::Sync)], b"GZ", 0),
            (vec![server(ReplyKind::Query)], b"WZ", 0),
            // COPY TO STDOUT streams as plain rows.
            (vec![server(ReplyKind::Query)], b"HddcCZ", 5),
            // A reply of sluice's own, the state sync's, a discarded unit's, a synthesized one.
            (vec![swallowed(ReplyKind::Parse), server(ReplyKind::Bind), server(ReplyKind::Sync)], b"12Z", 0),
            (vec![server(ReplyKind::Bind), swallowed(ReplyKind::Close), server(ReplyKind::Sync)], b"23Z", 1),
            (vec![swallowed(ReplyKind::StateSync), server(ReplyKind::Query)], b"CZCZ", 0),
            (vec![Expect::Discard(ReplyKind::Query)], b"CZ", 0),
            (vec![Expect::Synth(Synth::ParseComplete), server(ReplyKind::Sync)], b"Z", 0),
            // Nothing expected.
            (vec![], b"C", 0),
        ];
        for (expects, tags, plain) in cases {
            let what = String::from_utf8_lossy(tags);
            let buf = wire(tags, 1);
            let mut run: Replies = expects.iter().copied().collect();
            let mut stepped: Replies = expects.iter().copied().collect();
            let mut err = false;
            for &t in &tags[..plain] {
                assert_eq!(step(&mut stepped, t, b"I", &mut err), Step::Forward, "{what}: {}", t as char);
            }
            assert!(!err);
            assert_eq!(plain_run(&mut run, &buf, usize::MAX), plain * 6, "{what}");
            assert!(run.iter().eq(stepped.iter()), "{what}: the queue as step leaves it");
        }
    }

    #[test]
    fn a_plain_run_takes_only_whole_messages() {
        let buf = wire(b"12TDCZ", 3);
        let whole = 5 * 8;
        for cut in 0..=buf.len() {
            let mut q: Replies =
                [ReplyKind::Parse, ReplyKind::Bind, ReplyKind::Describe, ReplyKind::Execute, ReplyKind::Sync]
                    .map(server)
                    .into();
            let got = plain_run(&mut q, &buf[..cut], usize::MAX);
            assert_eq!(got, (cut / 8 * 8).min(whole), "cut at {cut}");
            // ParseComplete, BindComplete, RowDescription and CommandComplete each end a reply.
            let ended = [0, 1, 2, 3, 3, 4][got / 8];
            assert_eq!(q.len(), 5 - ended, "cut at {cut}");
        }
        // A bad length or a message past the limit is left to `step`'s caller, which reports it.
        let mut q: Replies = [server(ReplyKind::Execute)].into();
        let mut bad = wire(b"DD", 3);
        bad[8 + 4] = 3;
        assert_eq!(plain_run(&mut q, &bad, usize::MAX), 8);
        assert_eq!(plain_run(&mut q, &wire(b"DD", 3), 7), 0);
    }

    #[test]
    fn an_error_skips_to_sync() {
        let mut q: Replies = [
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
        let mut q: Replies = [server(ReplyKind::Query)].into();
        let mut err = false;
        assert_eq!(step(&mut q, b'E', b"", &mut err), Step::Forward);
        assert_eq!(step(&mut q, b'G', b"", &mut err), Step::CopyIn);
        assert_eq!(step(&mut q, b'N', b"", &mut err), Step::Forward);
        assert_eq!(step(&mut q, b'Z', b"T", &mut err), Step::Ready(TxStatus::InTransaction));
        assert_eq!(step(&mut q, b'Z', b"T", &mut err), Step::Unexpected);
    }

    #[test]
    fn a_state_sync_is_swallowed() {
        let mut q: Replies =
            [Expect::Server { kind: ReplyKind::StateSync, forward: false }, server(ReplyKind::Query)].into();
        let mut err = false;
        for t in [b'T', b'D', b'C', b'S', b'C'] {
            assert_eq!(step(&mut q, t, b"", &mut err), Step::Swallow, "{}", t as char);
        }
        assert_eq!(step(&mut q, b'Z', b"I", &mut err), Step::Swallow);
        assert_eq!(step(&mut q, b'S', b"", &mut err), Step::Forward, "the unit's own ParameterStatus");
        assert_eq!(step(&mut q, b'C', b"", &mut err), Step::Forward);
        assert_eq!(step(&mut q, b'Z', b"I", &mut err), Step::Ready(TxStatus::Idle));
        assert!(!err);
    }

    #[test]
    fn a_failed_state_sync_discards_the_unit() {
        let mut q: Replies = [
            Expect::Server { kind: ReplyKind::StateSync, forward: false },
            server(ReplyKind::Parse),
            Expect::Synth(Synth::ParseComplete),
            server(ReplyKind::Bind),
            server(ReplyKind::Execute),
            server(ReplyKind::Sync),
        ]
        .into();
        let mut err = false;
        assert_eq!(step(&mut q, b'C', b"", &mut err), Step::Swallow);
        assert_eq!(step(&mut q, b'E', b"", &mut err), Step::SyncFailed);
        assert!(err);
        assert!(!q.iter().any(|e| matches!(e, Expect::Synth(_))), "nothing synthesized for a discarded unit");
        assert_eq!(step(&mut q, b'Z', b"I", &mut err), Step::Swallow, "the sync's ReadyForQuery");
        for t in [b'1', b'2', b'D', b'S', b'C'] {
            assert_eq!(step(&mut q, t, b"", &mut err), Step::Swallow, "{}", t as char);
        }
        assert_eq!(step(&mut q, b'Z', b"I", &mut err), Step::Ready(TxStatus::Idle));
        assert!(q.is_empty());
    }

    #[test]
    fn errors_of_a_discarded_unit_are_swallowed() {
        let mut q: Replies = [
            Expect::Server { kind: ReplyKind::StateSync, forward: false },
            server(ReplyKind::Parse),
            server(ReplyKind::Bind),
            server(ReplyKind::Sync),
        ]
        .into();
        let mut err = false;
        assert_eq!(step(&mut q, b'E', b"", &mut err), Step::SyncFailed);
        assert_eq!(step(&mut q, b'Z', b"I", &mut err), Step::Swallow);
        assert_eq!(step(&mut q, b'E', b"", &mut err), Step::Swallow);
        assert_eq!(step(&mut q, b'Z', b"I", &mut err), Step::Ready(TxStatus::Idle));
    }
}
