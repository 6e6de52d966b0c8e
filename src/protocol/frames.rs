//! A run of whole messages back to back in one buffer: an extended-protocol unit as the client
//! sent it (Parse, Bind, Describe, Execute, Sync), split off the read buffer in one piece.
//!
//! One `Bytes` for the run instead of one per message: a driver's five-message unit used to
//! cost five splits of the read buffer (each an atomic reference count increment), a `Vec` to
//! hold them and five drops. Messages are found by walking their headers, which were checked
//! when the run was split off (or built); nothing here can fail on bytes it was given.

use bytes::{Bytes, BytesMut};

use super::framer::{peek_header, Frame};

/// Whole messages, back to back, with how many there are and the last one's tag (asked several
/// times per unit: whether it ends with Sync or Flush).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frames {
    bytes: Bytes,
    count: u32,
    last: u8,
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
    /// Wrap `bytes` known to hold exactly `count` whole messages, the last tagged `last`.
    pub(super) fn from_run(bytes: Bytes, count: usize, last: u8) -> Self {
        debug_assert_eq!(Frames::counted(&bytes), (count, last));
        Frames { bytes, count: u32::try_from(count).unwrap_or(u32::MAX), last }
    }

    /// Count and last tag of whole messages in `bytes` (for checks and for runs built by hand).
    fn counted(bytes: &[u8]) -> (usize, u8) {
        let it = Iter { rest: bytes };
        it.fold((0, 0), |(n, _), m| (n + 1, m.tag()))
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
        self.append_bytes(frame.bytes(), 1, frame.tag());
    }

    /// Append another run (copying).
    pub fn append(&mut self, other: &Frames) {
        if let Some(last) = other.last_tag() {
            self.append_bytes(&other.bytes, other.len(), last);
        }
    }

    fn append_bytes(&mut self, more: &[u8], count: usize, last: u8) {
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
    }
}

impl From<Frame> for Frames {
    fn from(frame: Frame) -> Self {
        let last = frame.tag();
        Frames { bytes: frame.into_bytes(), count: 1, last }
    }
}

impl FromIterator<Frame> for Frames {
    fn from_iter<I: IntoIterator<Item = Frame>>(iter: I) -> Self {
        let mut out = BytesMut::new();
        let (mut count, mut last) = (0, 0);
        for f in iter {
            out.extend_from_slice(f.bytes());
            count += 1;
            last = f.tag();
        }
        Frames::from_run(out.freeze(), count, last)
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
        let (count, last) = Frames::counted(&self.bytes);
        Frames::from_run(self.bytes.freeze(), count, last)
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
    fn a_walk_over_a_short_tail_stops_instead_of_panicking() {
        let it = Iter { rest: b"S\0\0\0\x04P\0\0\0\x10ab" };
        assert_eq!(it.map(Msg::tag).collect::<Vec<_>>(), b"S");
        let it = Iter { rest: b"S\0\0\0\x01" };
        assert_eq!(it.count(), 0);
    }
}
