//! Reading a message without splitting it off, and splitting off a run of messages in one
//! piece ([`Frames`]): how an extended-protocol unit leaves the client's read buffer.

use tokio::io::AsyncRead;

use super::{peek_header, Frame, FrameError, FrameReader};
use crate::protocol::frames::{Frames, Kinds};
use crate::protocol::tag;

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// The tag and length of the whole message at the front of the buffer, left there;
    /// `Ok(None)` if more bytes are needed first.
    ///
    /// # Errors
    /// See [`FrameReader::buffered_frame`].
    pub fn buffered_whole(&mut self) -> Result<Option<(u8, usize)>, FrameError> {
        if self.buf.len() >= 5 && !(self.accept)(self.buf[0]) {
            return Err(FrameError::UnknownTag(self.buf[0]));
        }
        Ok(peek_header(&self.buf, self.max)?.filter(|&(_, total)| self.buf.len() >= total))
    }

    /// Split off the message [`FrameReader::buffered_whole`] found (`total` bytes, checked
    /// there) without walking its header again; `None` if the buffer no longer starts with
    /// one that long (it was consumed in between: a caller's error, never a panic).
    pub fn split_whole(&mut self, total: usize) -> Option<Frame> {
        debug_assert!(
            matches!(peek_header(&self.buf, usize::MAX), Ok(Some((_, t))) if t == total),
            "split_whole of {total} bytes that buffered_whole did not find"
        );
        (self.buf.len() >= total && total >= 5).then(|| Frame(self.buf.split_to(total).freeze()))
    }

    /// Split off, in one piece, the longest run of whole buffered messages (at most
    /// `max_messages`) whose tags `continues` accepts, ending after the first one `ends`
    /// accepts. `None` if the first message is not whole, or not accepted by `continues`, or
    /// its header is bad: [`FrameReader::buffered_frame`] then tells why. `continues` narrows
    /// what the reader accepts ([`FrameReader::set_accepted_tags`]): a tag the reader refuses
    /// must not continue a run (checked in debug builds; the check per message cost a call).
    pub fn split_run(
        &mut self,
        max_messages: usize,
        continues: impl Fn(u8) -> bool,
        ends: impl Fn(u8) -> bool,
    ) -> Option<Frames> {
        let (mut at, mut count, mut last, mut kinds) = (0, 0, 0, Kinds::default());
        while count < max_messages {
            match peek_header(&self.buf[at..], self.max) {
                Ok(Some((t, total))) if self.buf.len() - at >= total && continues(t) => {
                    debug_assert!((self.accept)(t), "a run continued by a refused tag {t:#04x}");
                    // A Parse's body starts with its statement's name (the byte after the
                    // header, if the body is not empty); no other message's body is read.
                    let named = t == tag::PARSE && total > 5 && self.buf.get(at + 5).is_some_and(|&b| b != 0);
                    kinds |= Kinds::of_tag(t, named);
                    at += total;
                    count += 1;
                    last = t;
                    if ends(t) {
                        break;
                    }
                }
                _ => break,
            }
        }
        (count > 0).then(|| Frames::from_run(self.buf.split_to(at).freeze(), count, last, kinds))
    }
}
