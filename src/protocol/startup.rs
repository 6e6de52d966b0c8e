//! The startup phase: untagged packets (`i32` length, `i32` code, payload) parsed strictly.
//!
//! A length that does not match the content, an unterminated parameter, an unknown protocol
//! version: all are errors, never a wait for more bytes than the declared length.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::framer::nul_position;

/// SSLRequest code.
pub const SSL_REQUEST: i32 = 80_877_103;
/// GSSENCRequest code.
pub const GSSENC_REQUEST: i32 = 80_877_104;
/// CancelRequest code.
pub const CANCEL_REQUEST: i32 = 80_877_102;
/// Protocol 3.0.
pub const PROTOCOL_3_0: i32 = 196_608;
/// The largest startup packet accepted (PostgreSQL uses 10 000 bytes).
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// A parsed startup-phase packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartupPacket {
    /// The client asks for TLS.
    SslRequest,
    /// The client asks for GSSAPI encryption.
    GssEncRequest,
    /// Cancel the query running for this backend key.
    Cancel {
        /// Process id from BackendKeyData.
        pid: i32,
        /// Secret key from BackendKeyData.
        secret: i32,
    },
    /// Protocol 3.0 startup with its parameters (in order).
    Startup {
        /// Name/value pairs (`user`, `database`, `options`, GUCs...).
        params: StartupParams,
    },
}

/// A StartupMessage's name/value pairs, in order: the packet's strings kept as one text, each
/// ended by its NUL, checked as UTF-8 once and walked in place. One allocation per login; a
/// `String` per name and per value (with a UTF-8 check each) cost a login ~2,000 instructions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartupParams {
    /// `name NUL value NUL ...`: an even number of strings, none holding a NUL, names not empty.
    text: String,
}

impl StartupParams {
    /// From name/value pairs (tests, fakes): names must not be empty, nothing may hold a NUL.
    #[must_use]
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut text = String::new();
        for (name, value) in pairs {
            debug_assert!(!name.is_empty() && !name.contains('\0') && !value.contains('\0'));
            for s in [name, value] {
                text.push_str(s);
                text.push('\0');
            }
        }
        Self { text }
    }

    /// The pairs, in the packet's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let mut rest = self.text.as_str();
        std::iter::from_fn(move || Some((take_string(&mut rest)?, take_string(&mut rest)?)))
    }

    /// The value of a startup parameter (the first if the client sent it twice).
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// True if there is no pair.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

/// Why a startup packet was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StartupError {
    /// Length field out of range.
    #[error("invalid startup packet length {0}")]
    BadLength(i32),
    /// Version or request code sluice does not speak.
    #[error("unsupported frontend protocol {major}.{minor}: sluice supports 3.0")]
    UnsupportedProtocol {
        /// Major version.
        major: i32,
        /// Minor version.
        minor: i32,
    },
    /// The body does not match what the code requires.
    #[error("invalid startup packet layout: {0}")]
    Malformed(&'static str),
    /// The connection closed before the packet was complete.
    #[error("connection closed during startup")]
    Truncated,
    /// The packet did not arrive in time.
    #[error("timeout waiting for the startup packet")]
    Timeout,
    /// A socket error.
    #[error("socket error during startup: {0}")]
    Io(String),
}

/// Parse one complete startup packet (length prefix included).
///
/// # Errors
/// See [`StartupError`].
pub fn parse(packet: &[u8]) -> Result<StartupPacket, StartupError> {
    if packet.len() < 8 {
        return Err(StartupError::Malformed("shorter than 8 bytes"));
    }
    let len = i32::from_be_bytes([packet[0], packet[1], packet[2], packet[3]]);
    if len as usize != packet.len() {
        return Err(StartupError::BadLength(len));
    }
    let code = i32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let body = &packet[8..];
    match code {
        SSL_REQUEST | GSSENC_REQUEST if !body.is_empty() => Err(StartupError::Malformed("request with a body")),
        SSL_REQUEST => Ok(StartupPacket::SslRequest),
        GSSENC_REQUEST => Ok(StartupPacket::GssEncRequest),
        CANCEL_REQUEST => parse_cancel(body),
        PROTOCOL_3_0 => parse_params(body),
        _ => Err(StartupError::UnsupportedProtocol { major: code >> 16, minor: code & 0xffff }),
    }
}

fn parse_cancel(body: &[u8]) -> Result<StartupPacket, StartupError> {
    if body.len() != 8 {
        return Err(StartupError::Malformed("cancel request must carry exactly 8 bytes"));
    }
    Ok(StartupPacket::Cancel {
        pid: i32::from_be_bytes([body[0], body[1], body[2], body[3]]),
        secret: i32::from_be_bytes([body[4], body[5], body[6], body[7]]),
    })
}

fn parse_params(body: &[u8]) -> Result<StartupPacket, StartupError> {
    // The same walk PostgreSQL does: name NUL value NUL ... NUL, and the final NUL must be the
    // last byte. The pairs before `at` are whole; they are checked as UTF-8 in one go at the
    // end, or before any other error (which pair failed first is reported, as when each string
    // was checked as it was read).
    let fail = |at: usize, e: StartupError| match std::str::from_utf8(&body[..at]) {
        Ok(_) => e,
        Err(_) => not_utf8(),
    };
    let mut at = 0;
    while at < body.len() && body[at] != 0 {
        let name = cstr_at(body, at).map_err(|e| fail(at, e))?;
        let value_at = at + name.len() + 1;
        if value_at >= body.len() {
            return Err(fail(at, StartupError::Malformed("parameter without a value")));
        }
        let value = cstr_at(body, value_at).map_err(|e| fail(at, e))?;
        at = value_at + value.len() + 1;
    }
    if body.is_empty() || at != body.len() - 1 {
        return Err(fail(at, StartupError::Malformed("expected terminator as last byte")));
    }
    if at == 0 {
        return Err(StartupError::Malformed("no parameters (user is required)"));
    }
    // NUL is ASCII, so the strings are UTF-8 each if and only if their text is.
    let text = std::str::from_utf8(&body[..at]).map_err(|_| not_utf8())?;
    Ok(StartupPacket::Startup { params: StartupParams { text: text.to_owned() } })
}

fn cstr_at(body: &[u8], at: usize) -> Result<&[u8], StartupError> {
    let len = nul_position(&body[at..]).ok_or(StartupError::Malformed("parameter is not terminated"))?;
    Ok(&body[at..at + len])
}

/// The string up to the next NUL, and `rest` moved past that NUL (a `str` split, which
/// searches by `char`, spent ~10 times more per login).
fn take_string<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let end = nul_position(rest.as_bytes())?;
    let s = &rest[..end];
    *rest = &rest[end + 1..];
    Some(s)
}

fn not_utf8() -> StartupError {
    StartupError::Malformed("parameter is not UTF-8")
}

/// Bytes asked of the socket by a startup read: a StartupMessage (its size unknown until its
/// first 4 bytes are in) comes in one `recv`, not a head and then the rest. The same as the
/// framer's smallest read, so the buffer can go on as the session reader's first.
pub const STARTUP_READ: usize = super::framer::MIN_READ;

/// Read one startup packet from `io`, by `deadline`, through `buf`: bytes already in `buf`
/// come first (`buf` may hold the next packet, or part of it, from the read that brought the
/// last). The packet's bytes are taken out of `buf`; what the client sent after them stays
/// there, for the caller to judge (after an SSLRequest nothing may follow) or to read on.
///
/// A deadline, not a duration: the whole startup phase has one, and a duration would have the
/// caller read the clock for what is left and the timer read it again to turn it back into an
/// instant (four clock reads per login of the two packets most clients send).
///
/// # Errors
/// Timeout, bad length, truncation, or a parse error.
pub async fn read_packet<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<StartupPacket, StartupError> {
    let len = match tokio::time::timeout_at(deadline, fill_packet(io, buf)).await {
        Ok(len) => len?,
        Err(_) => return Err(StartupError::Timeout),
    };
    let packet = parse(&buf[..len]);
    buf.advance(len);
    packet
}

/// Reads until `buf` holds a whole packet; returns its length. The length is checked as soon as
/// its 4 bytes are in, so a bad one is refused without waiting for more; a read asks for what
/// the packet still lacks, or [`STARTUP_READ`] while its length is unknown.
async fn fill_packet<R: AsyncRead + Unpin>(io: &mut R, buf: &mut BytesMut) -> Result<usize, StartupError> {
    loop {
        let want = if buf.len() >= 4 {
            let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            if len < 8 || len as usize > MAX_STARTUP_PACKET {
                return Err(StartupError::BadLength(len));
            }
            match (len as usize).checked_sub(buf.len()) {
                None | Some(0) => return Ok(len as usize),
                Some(missing) => missing,
            }
        } else {
            STARTUP_READ
        };
        buf.reserve(want);
        match io.read_buf(buf).await {
            Ok(0) => return Err(StartupError::Truncated),
            Ok(_) => {}
            Err(e) => return Err(StartupError::Io(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests;
