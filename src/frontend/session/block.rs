//! The extended-protocol block on a held server connection, as a state machine: which state a
//! unit's end leaves it in is one pure function with a table test; what ran in a block a Flush
//! left open, kept until a unit ends it.

use crate::frontend::relay::KEEP_LIMIT;
use crate::frontend::unit::with_streamed;
use crate::protocol::frames::FramesBuf;
use crate::protocol::{Frames, TxStatus};
use crate::router::Class;

/// The extended-protocol block on the held connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Block {
    /// None open: the last unit ended with ReadyForQuery.
    Closed,
    /// Left open (by Flush, or a unit that returned before its Sync); only reads ran in it, so
    /// a write may close it and move to the primary (issue item 3).
    Open,
    /// Left open after a write ran in it: it stays, and the primary's WAL position is learnt
    /// when it ends (read-your-writes for a pipelined write whose Sync comes later).
    OpenWithWrite,
    /// Open, and the server reported an error in it: like PostgreSQL, every client message up
    /// to the next Sync is discarded, and that Sync ends the block.
    Failed,
}

/// How a unit on the held connection ended, as far as its block is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UnitEnd {
    /// ReadyForQuery arrived.
    Ready,
    /// Its replies are all in, the block stays open; `errored`: the server reported an error,
    /// `wrote`: a statement classified as a write ran in it.
    Partial {
        /// The server reported an error.
        errored: bool,
        /// A write ran.
        wrote: bool,
    },
}

impl Block {
    /// The block after a unit ended.
    pub(super) fn after(self, end: UnitEnd) -> Block {
        match (self, end) {
            (_, UnitEnd::Ready) => Block::Closed,
            (_, UnitEnd::Partial { errored: true, .. }) => Block::Failed,
            // A failed block stays failed until its Sync (a unit that returned before it).
            (Block::Failed, UnitEnd::Partial { .. }) => Block::Failed,
            (Block::OpenWithWrite, UnitEnd::Partial { .. }) | (_, UnitEnd::Partial { wrote: true, .. }) => {
                Block::OpenWithWrite
            }
            (Block::Closed | Block::Open, UnitEnd::Partial { .. }) => Block::Open,
        }
    }
}

/// What ran in an extended block a Flush left open, kept until a unit ends it: that unit holds
/// only its own statements, and what the block set is judged on all of them (psycopg's pipeline
/// asks for results with Flush before its Sync). Kept from the first unit that executed
/// something: a unit that only prepares (asyncpg's Parse/Describe/Flush) changes nothing.
pub(super) struct OpenBlock {
    /// The units' messages, in order; `None` past [`KEEP_LIMIT`] or when a unit's streamed
    /// messages were not all kept: the block cannot be told, a session command in it pins.
    pub(super) frames: Option<FramesBuf>,
    bytes: usize,
    /// The units' classes, combined.
    pub(super) class: Class,
    /// The transaction status before the first of them.
    pub(super) before: TxStatus,
    /// The server reported an error in one of them.
    pub(super) errored: bool,
}

impl OpenBlock {
    /// A block whose first kept unit, of `class`, ran from `before`.
    pub(super) fn new(class: &Class, before: TxStatus) -> Self {
        OpenBlock { frames: Some(FramesBuf::default()), bytes: 0, class: class.clone(), before, errored: false }
    }

    /// Add a unit's messages (`complete`: all of them, streamed ones included), its class and
    /// whether it failed.
    pub(super) fn add(&mut self, frames: &Frames, class: &Class, errored: bool, complete: bool) {
        self.class = with_streamed(&self.class, Some(class));
        self.errored |= errored;
        self.bytes += frames.bytes().len();
        match self.frames.as_mut() {
            Some(kept) if complete && self.bytes <= KEEP_LIMIT => kept.append(frames),
            _ => self.frames = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Frame, Msg};

    #[test]
    fn extended_blocks_by_unit_end() {
        let read = UnitEnd::Partial { errored: false, wrote: false };
        let write = UnitEnd::Partial { errored: false, wrote: true };
        let error = UnitEnd::Partial { errored: true, wrote: false };
        let write_error = UnitEnd::Partial { errored: true, wrote: true };
        use Block::*;
        // (before, unit end) -> after
        let cases = [
            (Closed, UnitEnd::Ready, Closed),
            (Open, UnitEnd::Ready, Closed),
            (OpenWithWrite, UnitEnd::Ready, Closed),
            (Failed, UnitEnd::Ready, Closed),
            (Closed, read, Open),
            (Open, read, Open),
            (OpenWithWrite, read, OpenWithWrite),
            (Failed, read, Failed),
            (Closed, write, OpenWithWrite),
            (Open, write, OpenWithWrite),
            (OpenWithWrite, write, OpenWithWrite),
            (Failed, write, Failed),
            (Closed, error, Failed),
            (Open, error, Failed),
            (OpenWithWrite, error, Failed),
            (Failed, error, Failed),
            (Open, write_error, Failed),
        ];
        for (before, end, want) in cases {
            assert_eq!(before.after(end), want, "{before:?} + {end:?}");
        }
    }

    fn frame(tag: u8, body_len: usize) -> Frame {
        let mut b = bytes::BytesMut::new();
        b.extend_from_slice(&[tag]);
        b.extend_from_slice(&(body_len as i32 + 4).to_be_bytes());
        b.resize(5 + body_len, b'x');
        Frame::from_bytes(b.freeze())
    }

    #[test]
    fn an_open_block_keeps_its_units_in_order_until_it_cannot_be_told() {
        use crate::protocol::tag;
        use crate::router::{Access, Reason, SessionEffect};
        let read = Class::read(Reason::PureRead);
        let set = Class::read(Reason::SessionCommand).with_session(SessionEffect::Parameter);
        let write = Class::new(Access::Write, Reason::Write);
        let mut block = OpenBlock::new(&read, TxStatus::Idle);
        block.add(&[frame(tag::PARSE, 10), frame(tag::EXECUTE, 5)].into_iter().collect(), &read, false, true);
        block.add(&[frame(tag::BIND, 7)].into_iter().collect(), &set, false, true);
        let tags: Vec<u8> = block.frames.clone().unwrap().freeze().iter().map(Msg::tag).collect();
        assert_eq!(tags, [tag::PARSE, tag::EXECUTE, tag::BIND]);
        assert_eq!(block.class.session, SessionEffect::Parameter, "the classes combine");
        assert_eq!((block.before, block.errored), (TxStatus::Idle, false));
        // An error stays with the block; the class takes the write.
        block.add(&[frame(tag::EXECUTE, 5)].into_iter().collect(), &write, true, true);
        assert!(block.errored);
        assert_eq!(block.class.access, Access::Write);
        assert_eq!(block.frames.clone().map(|f| f.freeze().len()), Some(4));
        // A unit whose streamed messages were not all kept: the block cannot be told any more.
        let mut partial = OpenBlock::new(&read, TxStatus::InTransaction);
        partial.add(&[frame(tag::EXECUTE, 5)].into_iter().collect(), &set, false, false);
        assert!(partial.frames.is_none());
        partial.add(&[frame(tag::EXECUTE, 5)].into_iter().collect(), &read, false, true);
        assert!(partial.frames.is_none(), "dropped for good");
        // Past the keep limit.
        let mut long = OpenBlock::new(&read, TxStatus::Idle);
        long.add(&[frame(tag::PARSE, KEEP_LIMIT / 2)].into_iter().collect(), &read, false, true);
        assert!(long.frames.is_some());
        long.add(&[frame(tag::PARSE, KEEP_LIMIT / 2)].into_iter().collect(), &read, false, true);
        assert!(long.frames.is_none(), "past the limit");
    }
}
