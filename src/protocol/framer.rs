//! Framing: walk 5-byte message headers (`tag`, big-endian `i32` length that counts itself) over a
//! `BytesMut`, split complete messages off as `Bytes` without copying, and refuse lengths below 4
//! or above the configured limit before reading their payload.
//!
//! A [`FrameReader`] starts without a buffer and sizes its reads with a [`ReadSizer`]: small
//! while the peer sends small messages (an idle client costs a few hundred bytes, not 64 KiB),
//! doubling while reads fill the buffer (large results), and giving a large buffer back once it
//! is drained and reads are small again. [`FrameReader::next_lean`] holds no buffer at all while
//! it waits for the first byte of a message, on streams that can say when they are readable.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

/// One complete tagged message: tag byte, length, payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// Wrap bytes known to hold exactly one message.
    #[must_use]
    pub fn from_bytes(b: Bytes) -> Self {
        debug_assert!(b.len() >= 5);
        Frame(b)
    }

    /// The tag byte.
    #[must_use]
    pub fn tag(&self) -> u8 {
        self.0[0]
    }

    /// The payload after the 5-byte header.
    #[must_use]
    pub fn body(&self) -> &[u8] {
        &self.0[5..]
    }

    /// The whole message, header included.
    #[must_use]
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The whole message, header included.
    #[must_use]
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

/// Why a byte stream is not a valid message sequence.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// The length field is below 4.
    #[error("invalid message length {0}")]
    LengthTooSmall(i32),
    /// A message type the reader does not accept here.
    #[error("invalid message type {0:#04x}")]
    UnknownTag(u8),
    /// The length field is above the limit.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// The header at the start of `buf`, if 5 bytes are there: `(tag, total message length)`.
///
/// # Errors
/// A length below 4 or a message longer than `max` bytes.
pub fn peek_header(buf: &[u8], max: usize) -> Result<Option<(u8, usize)>, FrameError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 {
        return Err(FrameError::LengthTooSmall(len));
    }
    let total = len as usize + 1;
    if total > max {
        return Err(FrameError::TooLarge { len: total, max });
    }
    Ok(Some((buf[0], total)))
}

/// Split one complete message off the front of `buf`, if one is there.
///
/// # Errors
/// See [`peek_header`].
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Frame>, FrameError> {
    match peek_header(buf, max)? {
        Some((_, total)) if buf.len() >= total => Ok(Some(Frame(buf.split_to(total).freeze()))),
        _ => Ok(None),
    }
}

/// Length of the longest prefix of `buf` made of complete messages, stopping after the first
/// message for which `stop(tag)` is true. Returns `(prefix length, stopped)`.
///
/// # Errors
/// See [`peek_header`].
pub fn complete_prefix(
    buf: &[u8],
    max: usize,
    mut stop: impl FnMut(u8, &[u8]) -> bool,
) -> Result<(usize, bool), FrameError> {
    let mut at = 0;
    while let Some((tag, total)) = peek_header(&buf[at..], max)? {
        if buf.len() - at < total {
            break;
        }
        let end = at + total;
        at = end;
        if stop(tag, &buf[end - total + 5..end]) {
            return Ok((at, true));
        }
    }
    Ok((at, false))
}

/// Errors from reading frames off a socket.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The byte stream is not valid framing.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer closed the connection in the middle of a message.
    #[error("connection closed in the middle of a message")]
    Truncated,
    /// A socket error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads whole frames off an async byte stream.
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    max: usize,
    accept: fn(u8) -> bool,
    sizer: ReadSizer,
}

fn any_tag(_: u8) -> bool {
    true
}

/// The smallest read, and about what an idle reader keeps allocated.
pub const MIN_READ: usize = 512;
/// The largest read asked of the kernel at once.
pub const MAX_READ: usize = 64 * 1024;

/// How much room to make before the next read: grows while reads fill it, shrinks while they
/// come back small. Pure arithmetic, so the policy is testable without sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadSizer {
    next: usize,
}

impl Default for ReadSizer {
    fn default() -> Self {
        Self { next: MIN_READ }
    }
}

impl ReadSizer {
    /// Room to make before the next read.
    #[must_use]
    pub fn next(&self) -> usize {
        self.next
    }

    /// A read of `room` bytes of space returned `got` bytes: a full read doubles the next one
    /// (more is likely waiting), one under a quarter halves it.
    pub fn after_read(&mut self, room: usize, got: usize) {
        if got >= room {
            self.next = (self.next * 2).min(MAX_READ);
        } else if got < self.next / 4 {
            self.next = (self.next / 2).max(MIN_READ);
        }
    }

    /// Whether a drained buffer of `capacity` bytes is worth giving back (it outgrew the reads).
    #[must_use]
    pub fn should_shrink(&self, capacity: usize) -> bool {
        capacity > 4 * self.next
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader refusing messages longer than `max` bytes.
    pub fn new(io: R, max: usize) -> Self {
        Self::with_buffer(io, BytesMut::new(), max)
    }

    /// A reader that starts with bytes already read off `io`.
    pub fn with_buffer(io: R, buf: BytesMut, max: usize) -> Self {
        Self { io, buf, max, accept: any_tag, sizer: ReadSizer::default() }
    }

    /// Refuse messages whose tag `accept` rejects as soon as their header arrives, without
    /// waiting for the body their length announces.
    pub fn set_accepted_tags(&mut self, accept: fn(u8) -> bool) {
        self.accept = accept;
    }

    /// The next frame; `Ok(None)` on a clean end of stream between messages.
    ///
    /// # Errors
    /// Bad framing, a stream closed mid-message, or a socket error.
    pub async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if self.buf.len() >= 5 && !(self.accept)(self.buf[0]) {
                return Err(FrameError::UnknownTag(self.buf[0]).into());
            }
            if let Some(frame) = split_frame(&mut self.buf, self.max)? {
                return Ok(Some(frame));
            }
            if self.fill().await? == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(ReadError::Truncated) };
            }
        }
    }

    /// The next complete frame already buffered, without reading; `Ok(None)` if more bytes
    /// are needed first.
    ///
    /// # Errors
    /// Bad framing or a refused tag (see [`FrameReader::set_accepted_tags`]).
    pub fn buffered_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() >= 5 && !(self.accept)(self.buf[0]) {
            return Err(FrameError::UnknownTag(self.buf[0]));
        }
        split_frame(&mut self.buf, self.max)
    }

    /// Read more bytes into the buffer; returns how many (0 at end of stream).
    ///
    /// # Errors
    /// A socket error.
    pub fn fill(&mut self) -> impl Future<Output = Result<usize, ReadError>> + '_ {
        // One read path for every caller: tokio's `read_buf` is then instantiated in one place
        // (`poll_fill`), where the optimiser inlines it; with two, it was left out of line.
        poll_fn(move |cx| self.poll_fill(cx))
    }

    /// Reserve room for the next read; returns how much to read.
    fn make_room(&mut self) -> usize {
        if self.buf.is_empty() && self.sizer.should_shrink(self.buf.capacity()) {
            self.buf = BytesMut::new();
        }
        let mut want = self.sizer.next();
        // A message whose header is here: make room for the rest of it (up to one large read).
        if let Ok(Some((_, total))) = peek_header(&self.buf, self.max) {
            want = want.max(total.saturating_sub(self.buf.len()).min(MAX_READ));
        }
        if self.buf.capacity() - self.buf.len() < want {
            self.buf.reserve(want);
        }
        want
    }

    /// [`FrameReader::fill`] as a poll, so that one task can wait on several streams (and on
    /// writes to them) at once.
    ///
    /// The read goes into the buffer's spare room as it is, not zeroed first: tokio's
    /// `read_buf` fills uninitialised room soundly, and its future keeps no state between polls
    /// (it asks the stream afresh each time), so one made for this poll and dropped after it
    /// loses nothing. Zeroing the room (what this did before) cost a `memset` of the whole read
    /// size (512 bytes or more) on every poll, once per client message at the least.
    ///
    /// # Errors
    /// A socket error.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, ReadError>> {
        let want = self.make_room();
        let room = self.buf.capacity() - self.buf.len();
        debug_assert!(room >= want);
        let read = std::pin::pin!(self.io.read_buf(&mut self.buf));
        let got = std::task::ready!(read.poll(cx))?;
        self.sizer.after_read(room, got);
        Poll::Ready(Ok(got))
    }

    /// The bytes read but not yet consumed.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The bytes read but not yet consumed, read-only.
    #[must_use]
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// True if unconsumed bytes are waiting.
    #[must_use]
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Change the message size limit (authentication uses a small one).
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// The message size limit.
    #[must_use]
    pub fn max(&self) -> usize {
        self.max
    }

    /// The underlying stream.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.io
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &R {
        &self.io
    }

    /// The stream and the bytes read but not consumed (to split a stream in two halves).
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.io, self.buf)
    }
}

/// What [`FrameReader::fill_or_write`] got done.
#[derive(Debug)]
pub enum Progress {
    /// This reader read this many bytes (0: end of stream).
    Read(usize),
    /// The peer reader read this many bytes (0: end of stream).
    PeerRead(usize),
    /// The peer's stream failed.
    PeerFailed(ReadError),
    /// This many pending bytes were written to this reader's stream.
    Wrote(usize),
}

impl<R: AsyncRead + AsyncWrite + Unpin> FrameReader<R> {
    /// Wait until one of three things happens, whichever is first: this stream has bytes,
    /// `peer` has bytes (if given), or part of `pending` is written to this stream (if any is
    /// pending; the written bytes are taken off its front). A full-duplex relay waits here: the
    /// server's replies, the client's next messages and the write of earlier ones to the server
    /// all progress at once, and neither direction waits for the other.
    ///
    /// # Errors
    /// This stream failed (reading or writing); the peer's failures are [`Progress::PeerFailed`].
    pub async fn fill_or_write<P: AsyncRead + Unpin>(
        &mut self,
        mut peer: Option<&mut FrameReader<P>>,
        pending: &mut BytesMut,
    ) -> Result<Progress, ReadError> {
        poll_fn(|cx| {
            if !pending.is_empty() {
                if let Poll::Ready(r) = Pin::new(&mut self.io).poll_write(cx, pending) {
                    let n = r?;
                    if n == 0 {
                        return Poll::Ready(Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into()));
                    }
                    pending.advance(n);
                    return Poll::Ready(Ok(Progress::Wrote(n)));
                }
            }
            if let Poll::Ready(r) = self.poll_fill(cx) {
                return Poll::Ready(r.map(Progress::Read));
            }
            if let Some(peer) = peer.as_deref_mut() {
                if let Poll::Ready(r) = peer.poll_fill(cx) {
                    return Poll::Ready(Ok(r.map_or_else(Progress::PeerFailed, Progress::PeerRead)));
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// A stream that can say when a read would not block, without being given a buffer.
pub trait WaitReadable {
    /// Ready once bytes, the end of the stream or an error are there to read; ready at once
    /// when the stream cannot tell (a TLS layer may hold decrypted bytes the socket does not
    /// show).
    ///
    /// # Errors
    /// A socket error.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl<R: AsyncRead + WaitReadable + Unpin> FrameReader<R> {
    /// [`FrameReader::next`] for a reader that mostly waits: with nothing buffered, it gives its
    /// buffer back and waits for readability first, so a waiting reader (an idle client) holds
    /// no buffer; the buffer is allocated when bytes arrive.
    ///
    /// A poll over the reader alone, not an `async fn`: all its state is the reader's buffer,
    /// so the future is one reference (every idle client keeps it; `next()`'s state was 96
    /// bytes). Cancelling it between polls loses nothing: read bytes stay buffered.
    ///
    /// # Errors
    /// See [`FrameReader::next`].
    pub fn next_lean(&mut self) -> impl Future<Output = Result<Option<Frame>, ReadError>> + '_ {
        poll_fn(move |cx| self.poll_lean(cx, Self::buffered_frame))
    }

    /// [`FrameReader::next_lean`] that leaves the message in the buffer and gives its tag: the
    /// caller splits it off, alone or with the messages behind it ([`FrameReader::split_run`]).
    ///
    /// # Errors
    /// See [`FrameReader::next`].
    pub fn whole_lean(&mut self) -> impl Future<Output = Result<Option<(u8, usize)>, ReadError>> + '_ {
        poll_fn(move |cx| self.poll_lean(cx, Self::buffered_whole))
    }

    /// One step of [`FrameReader::next_lean`]: what `take` finds buffered, else wait for
    /// readability (with an empty buffer) and read what is there without blocking.
    fn poll_lean<T>(
        &mut self,
        cx: &mut Context<'_>,
        take: fn(&mut Self) -> Result<Option<T>, FrameError>,
    ) -> Poll<Result<Option<T>, ReadError>> {
        loop {
            if let Some(found) = take(self)? {
                return Poll::Ready(Ok(Some(found)));
            }
            if self.buf.is_empty() {
                self.give_back_buffer();
                std::task::ready!(self.io.poll_readable(cx))?;
                // Here, not in every read's `make_room`: only a lean wait gives buffers back.
                if self.sizer.next() <= kept::MAX_KEPT_BYTES {
                    if let Some(buf) = kept::take() {
                        self.buf = buf;
                    }
                }
            }
            let got = match self.poll_fill(cx) {
                Poll::Ready(got) => got?,
                Poll::Pending => {
                    // Readable, yet nothing came (or a TLS record is not complete yet):
                    // still no buffer while waiting, if no message has begun.
                    if self.buf.is_empty() {
                        self.give_back_buffer();
                    }
                    return Poll::Pending;
                }
            };
            if got == 0 {
                let end = if self.buf.is_empty() { Ok(None) } else { Err(ReadError::Truncated) };
                return Poll::Ready(end);
            }
        }
    }

    /// Give an empty buffer's room back: to this thread's kept buffers (the next reader to
    /// need one takes it, see `kept`), or to the allocator.
    fn give_back_buffer(&mut self) {
        debug_assert!(self.buf.is_empty());
        if self.buf.capacity() > 0 {
            kept::put(std::mem::take(&mut self.buf));
        }
    }
}

/// Read a big-endian i32 from a payload cursor, if 4 bytes are there.
pub fn take_i32(b: &mut &[u8]) -> Option<i32> {
    (b.len() >= 4).then(|| b.get_i32())
}

/// Read a big-endian i16 from a payload cursor, if 2 bytes are there.
pub fn take_i16(b: &mut &[u8]) -> Option<i16> {
    (b.len() >= 2).then(|| b.get_i16())
}

/// Read a NUL-terminated string from a payload cursor (without the NUL).
///
/// The empty string is taken inline: the unnamed statement and portal, named in most drivers'
/// Parse, Bind and Describe messages, need neither the word-at-a-time search nor a call.
#[inline]
pub fn take_cstr<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    if let Some((&0, rest)) = b.split_first() {
        *b = rest;
        return Some(&[]);
    }
    take_nonempty_cstr(b)
}

fn take_nonempty_cstr<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let end = nul_position(b)?;
    let (s, rest) = b.split_at(end);
    *b = &rest[1..];
    Some(s)
}

/// Position of the first NUL byte, eight bytes at a time: a statement's text is the longest
/// string read here (every Query and Parse), and a byte loop spent ~4 instructions per byte.
pub(crate) fn nul_position(b: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut words = b.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let v = u64::from_le_bytes(word.try_into().unwrap_or_default());
        // A byte's high bit is set here if it is zero (and, through the borrow, possibly in
        // bytes above a zero one): the lowest one flagged is the first zero byte.
        let zeros = v.wrapping_sub(ONES) & !v & HIGHS;
        if zeros != 0 {
            return Some(at + (zeros.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    words.remainder().iter().position(|&c| c == 0).map(|p| at + p)
}

mod kept;
mod run;

#[cfg(test)]
mod tests;
