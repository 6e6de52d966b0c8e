//! A run of whole messages back to back in one buffer: an extended-protocol unit as the client
//! sent it (Parse, Bind, Describe, Execute, Sync), split off the read buffer in one piece.
//!
//! One `Bytes` for the run instead of one per message: a driver's five-message unit used to
//! cost five splits of the read buffer (each an atomic reference count increment), a `Vec` to
//! hold them and five drops. Messages are found by walking their headers, which were checked
//! when the run was split off (or built); nothing here can fail on bytes it was given.

use bytes::{Bytes, BytesMut};

use super::framer::{peek_header, Frame};
use super::tag;

/// Whole messages, back to back, with how many there are, the last one's tag (asked several
/// times per unit: whether it ends with Sync or Flush) and which kinds of message are among
/// them ([`Kinds`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frames {
    bytes: Bytes,
    count: u32,
    /// In what was padding: a run is as large as without it (40 bytes).
    kinds: Kinds,
    last: u8,
}

/// Which kinds of message a run holds, one bit each, gathered as the run is made. A unit asks
/// several times whether it executes, whether it only prepares and closes statements, whether
/// it names a statement; a walk of its messages for each cost ~15-20 instructions a message
/// (a driver's unit: five).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Kinds(u16);

impl Kinds {
    /// Parse.
    pub const PARSE: Kinds = Kinds(1);
    /// A Parse of a named statement (its body does not start with the empty name); set
    /// together with [`Kinds::PARSE`].
    pub const NAMED_PARSE: Kinds = Kinds(1 << 1);
    /// Bind.
    pub const BIND: Kinds = Kinds(1 << 2);
    /// Describe.
    pub const DESCRIBE: Kinds = Kinds(1 << 3);
    /// Execute.
    pub const EXECUTE: Kinds = Kinds(1 << 4);
    /// Close.
    pub const CLOSE: Kinds = Kinds(1 << 5);
    /// Sync.
    pub const SYNC: Kinds = Kinds(1 << 6);
    /// Flush.
    pub const FLUSH: Kinds = Kinds(1 << 7);
    /// Any other message.
    pub const OTHER: Kinds = Kinds(1 << 8);

    /// The kind of one whole message (header included).
    #[must_use]
    pub fn of(msg: &[u8]) -> Kinds {
        match msg.first() {
            Some(&t) => Kinds::of_tag(t, t == tag::PARSE && msg.get(5).is_some_and(|&b| b != 0)),
            None => Kinds::OTHER,
        }
    }

    /// The kind of a message tagged `t`; `named`: it is a Parse whose body does not start with
    /// the empty name. By table: a `match` cost ~10 instructions a message where the run is
    /// split off the client's buffer.
    #[must_use]
    #[inline]
    pub fn of_tag(t: u8, named: bool) -> Kinds {
        debug_assert!(!named || t == tag::PARSE, "only a Parse names a statement");
        Kinds(KINDS_BY_TAG[usize::from(t)] | if named { Self::NAMED_PARSE.0 } else { 0 })
    }

    /// True if a message of any kind in `kinds` is among them.
    #[must_use]
    pub fn any(self, kinds: Kinds) -> bool {
        self.0 & kinds.0 != 0
    }

    /// True if every message among them is of a kind in `kinds`.
    #[must_use]
    pub fn within(self, kinds: Kinds) -> bool {
        self.0 & !kinds.0 == 0
    }
}

/// The kind of each tag byte (a Parse's name is looked at apart).
const KINDS_BY_TAG: [u16; 256] = {
    let mut kinds = [Kinds::OTHER.0; 256];
    kinds[tag::PARSE as usize] = Kinds::PARSE.0;
    kinds[tag::BIND as usize] = Kinds::BIND.0;
    kinds[tag::DESCRIBE as usize] = Kinds::DESCRIBE.0;
    kinds[tag::EXECUTE as usize] = Kinds::EXECUTE.0;
    kinds[tag::CLOSE as usize] = Kinds::CLOSE.0;
    kinds[tag::SYNC as usize] = Kinds::SYNC.0;
    kinds[tag::FLUSH as usize] = Kinds::FLUSH.0;
    kinds
};

impl std::ops::BitOr for Kinds {
    type Output = Kinds;

    fn bitor(self, other: Kinds) -> Kinds {
        Kinds(self.0 | other.0)
    }
}

impl std::ops::BitOrAssign for Kinds {
    fn bitor_assign(&mut self, other: Kinds) {
        self.0 |= other.0;
    }
}

/// One message of a [`Frames`] run, borrowed: tag byte, length, payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msg<'a>(&'a [u8]);

impl<'a> Msg<'a> {
    /// The tag byte.
    #[must_use]
    pub fn tag(self) -> u8 {
        self.0[0]
    }

    /// The payload after the 5-byte header.
    #[must_use]
    pub fn body(self) -> &'a [u8] {
        &self.0[5..]
    }

    /// The whole message, header included.
    #[must_use]
    pub fn bytes(self) -> &'a [u8] {
        self.0
    }
}

impl Frame {
    /// The message, borrowed as one of a run.
    #[must_use]
    pub fn msg(&self) -> Msg<'_> {
        Msg(self.bytes())
    }
}

/// The messages of a run, in order.
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Iter<'a> {
    type Item = Msg<'a>;

    fn next(&mut self) -> Option<Msg<'a>> {
        let (_, total) = peek_header(self.rest, usize::MAX).ok()??;
        // Checked as the run was made; a short tail ends the walk rather than panicking.
        let (msg, rest) = self.rest.split_at_checked(total)?;
        self.rest = rest;
        Some(Msg(msg))
    }
}

impl Frames {
    /// Wrap `bytes` known to hold exactly `count` whole messages, the last tagged `last`, of
    /// the kinds `kinds`.
    pub(super) fn from_run(bytes: Bytes, count: usize, last: u8, kinds: Kinds) -> Self {
        debug_assert_eq!(Frames::counted(&bytes), (count, last, kinds));
        Frames { bytes, count: u32::try_from(count).unwrap_or(u32::MAX), kinds, last }
    }

    /// Count, last tag and kinds of whole messages in `bytes` (for checks and for runs built
    /// by hand).
    fn counted(bytes: &[u8]) -> (usize, u8, Kinds) {
        let it = Iter { rest: bytes };
        it.fold((0, 0, Kinds::default()), |(n, _, k), m| (n + 1, m.tag(), k | Kinds::of(m.bytes())))
    }

    /// Which kinds of message are among them.
    #[must_use]
    pub fn kinds(&self) -> Kinds {
        self.kinds
    }

    /// The messages, in order.
    #[must_use]
    pub fn iter(&self) -> Iter<'_> {
        Iter { rest: &self.bytes }
    }

    /// How many messages.
    #[must_use]
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True if there is none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The last message's tag.
    #[must_use]
    pub fn last_tag(&self) -> Option<u8> {
        (self.count > 0).then_some(self.last)
    }

    /// Every message, headers included, back to back.
    #[must_use]
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Append one message (copying: for the rare units that come in pieces).
    pub fn push(&mut self, frame: &Frame) {
        self.append_bytes(frame.bytes(), 1, frame.tag(), Kinds::of(frame.bytes()));
    }

    /// Append another run (copying).
    pub fn append(&mut self, other: &Frames) {
        if let Some(last) = other.last_tag() {
            self.append_bytes(&other.bytes, other.len(), last, other.kinds);
        }
    }

    fn append_bytes(&mut self, more: &[u8], count: usize, last: u8, kinds: Kinds) {
        if self.is_empty() {
            self.bytes = Bytes::copy_from_slice(more);
        } else {
            let mut joined = BytesMut::with_capacity(self.bytes.len() + more.len());
            joined.extend_from_slice(&self.bytes);
            joined.extend_from_slice(more);
            self.bytes = joined.freeze();
        }
        self.count = self.count.saturating_add(u32::try_from(count).unwrap_or(u32::MAX));
        self.last = last;
        self.kinds |= kinds;
    }
}

impl From<Frame> for Frames {
    fn from(frame: Frame) -> Self {
        let (last, kinds) = (frame.tag(), Kinds::of(frame.bytes()));
        Frames { bytes: frame.into_bytes(), count: 1, kinds, last }
    }
}

impl FromIterator<Frame> for Frames {
    fn from_iter<I: IntoIterator<Item = Frame>>(iter: I) -> Self {
        let mut out = BytesMut::new();
        let (mut count, mut last, mut kinds) = (0, 0, Kinds::default());
        for f in iter {
            out.extend_from_slice(f.bytes());
            count += 1;
            last = f.tag();
            kinds |= Kinds::of(f.bytes());
        }
        Frames::from_run(out.freeze(), count, last, kinds)
    }
}

impl<'a> IntoIterator for &'a Frames {
    type Item = Msg<'a>;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Messages gathered across several runs (a Flush-held block, what streamed into a unit): one
/// growing buffer, so that many small appends cost their own bytes, not the whole run's again.
/// Only the bytes: it sits in every unit's result (`Streamed`), whose moves cost by size; the
/// messages are counted when it is frozen.
#[derive(Clone, Debug, Default)]
pub struct FramesBuf {
    bytes: BytesMut,
}

impl FramesBuf {
    /// Append one message.
    pub fn push(&mut self, msg: Msg<'_>) {
        self.bytes.extend_from_slice(msg.bytes());
    }

    /// Append a run.
    pub fn append(&mut self, frames: &Frames) {
        self.bytes.extend_from_slice(frames.bytes());
    }

    /// Bytes held.
    #[must_use]
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// The messages as one run.
    #[must_use]
    pub fn freeze(self) -> Frames {
        let (count, last, kinds) = Frames::counted(&self.bytes);
        Frames::from_run(self.bytes.freeze(), count, last, kinds)
    }
}

impl From<&Frames> for FramesBuf {
    fn from(frames: &Frames) -> Self {
        FramesBuf { bytes: BytesMut::from(&frames.bytes()[..]) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Frame {
        let mut b = BytesMut::new();
        b.extend_from_slice(&[tag]);
        b.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        b.extend_from_slice(body);
        Frame::from_bytes(b.freeze())
    }

    #[test]
    fn a_run_walks_its_messages_and_grows_by_copies() {
        let frames = [frame(b'P', b"\0SELECT 1\0\0\0"), frame(b'B', b"\0\0\0\0\0\0\0\0"), frame(b'S', b"")];
        let mut run: Frames = frames[..2].iter().cloned().collect();
        assert_eq!((run.len(), run.last_tag()), (2, Some(b'B')));
        run.push(&frames[2]);
        assert_eq!((run.len(), run.last_tag()), (3, Some(b'S')));
        let tags: Vec<u8> = run.iter().map(Msg::tag).collect();
        assert_eq!(tags, b"PBS");
        let bodies: Vec<&[u8]> = run.iter().map(Msg::body).collect();
        assert_eq!(bodies, [frames[0].body(), frames[1].body(), frames[2].body()]);
        let mut one = Frames::from(frames[0].clone());
        one.append(&run);
        assert_eq!(one.len(), 4);
        assert_eq!(one.iter().map(Msg::tag).collect::<Vec<_>>(), b"PPBS");
        let empty = Frames::default();
        assert_eq!((empty.len(), empty.last_tag(), empty.iter().count()), (0, None, 0));
        let mut buf = FramesBuf::from(&run);
        buf.push(frames[1].msg());
        assert_eq!(buf.byte_len(), run.bytes().len() + frames[1].bytes().len());
        let all = buf.freeze();
        assert_eq!(all.iter().map(Msg::tag).collect::<Vec<_>>(), b"PBSB");
        assert_eq!(all.last_tag(), Some(b'B'));
    }

    #[test]
    fn a_runs_kinds_are_those_of_its_messages() {
        let unnamed = frame(b'P', b"\0SELECT 1\0\0\0");
        let named = frame(b'P', b"s1\0SELECT 1\0\0\0");
        let empty = frame(b'P', b"");
        let (bind, execute, sync) = (frame(b'B', &[0; 8]), frame(b'E', b"\0\0\0\0\0"), frame(b'S', b""));
        let kinds = |fs: &[&Frame]| fs.iter().map(|f| (*f).clone()).collect::<Frames>().kinds();
        assert_eq!(kinds(&[&unnamed]), Kinds::PARSE);
        assert_eq!(kinds(&[&empty]), Kinds::PARSE);
        assert_eq!(kinds(&[&named]), Kinds::PARSE | Kinds::NAMED_PARSE);
        let unit = kinds(&[&unnamed, &bind, &execute, &sync]);
        assert!(unit.any(Kinds::EXECUTE) && unit.any(Kinds::SYNC) && !unit.any(Kinds::NAMED_PARSE | Kinds::CLOSE));
        assert!(unit.within(Kinds::PARSE | Kinds::BIND | Kinds::EXECUTE | Kinds::SYNC));
        assert!(!unit.within(Kinds::PARSE | Kinds::CLOSE | Kinds::SYNC));
        let tags = [b'D', b'C', b'H', b'Q', b'd', b'c'];
        let others: Vec<Kinds> = tags.iter().map(|&t| Frames::from(frame(t, b"S\0")).kinds()).collect();
        assert_eq!(others, [Kinds::DESCRIBE, Kinds::CLOSE, Kinds::FLUSH, Kinds::OTHER, Kinds::OTHER, Kinds::OTHER]);
        // Every way a run grows keeps them.
        let mut run = Frames::from(bind.clone());
        run.push(&named);
        assert_eq!(run.kinds(), Kinds::BIND | Kinds::PARSE | Kinds::NAMED_PARSE);
        let mut run = Frames::from(sync.clone());
        run.append(&[&execute].into_iter().cloned().collect());
        assert_eq!(run.kinds(), Kinds::SYNC | Kinds::EXECUTE);
        let mut buf = FramesBuf::default();
        buf.push(named.msg());
        buf.push(execute.msg());
        assert_eq!(buf.freeze().kinds(), Kinds::PARSE | Kinds::NAMED_PARSE | Kinds::EXECUTE);
        assert_eq!(Frames::default().kinds(), Kinds::default());
    }

    #[test]
    fn a_walk_over_a_short_tail_stops_instead_of_panicking() {
        let it = Iter { rest: b"S\0\0\0\x04P\0\0\0\x10ab" };
        assert_eq!(it.map(Msg::tag).collect::<Vec<_>>(), b"S");
        let it = Iter { rest: b"S\0\0\0\x01" };
        assert_eq!(it.count(), 0);
    }
}
