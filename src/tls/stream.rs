//! [`MaybeTls`]: one socket type for plaintext and TLS, either side, so framing, relaying and
//! authentication do not care which one they were given.
//!
//! A TLS write may accept plaintext while the encrypted records stay in rustls (the socket was
//! full), and callers here never `flush`: a plain socket needs none. So every TLS write first
//! sends what an earlier one left, and every read drives those leftovers too (a session writes,
//! then waits to read the same socket: the pending records go out while it waits).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::protocol::framer::WaitReadable;

/// A TCP socket, or TLS over one (sluice as the TLS server towards clients, or as the TLS client
/// towards PostgreSQL servers).
pub enum MaybeTls {
    /// No encryption.
    Plain(TcpStream),
    /// sluice is the TLS server (a client connection).
    Accepted(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// sluice is the TLS client (a server connection).
    Connected(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// An in-process pipe instead of a socket, so `benches/engine.rs` can run the real session
    /// engine against a fake client and fake servers without the kernel. Nothing in the proxy
    /// creates one; hidden from the docs because it is no transport a deployment can choose.
    #[doc(hidden)]
    Memory(tokio::io::DuplexStream),
}

impl MaybeTls {
    /// The TCP socket underneath (for peeking at hang-ups and readiness, never for data);
    /// `None` for an in-memory pipe, which has none.
    #[must_use]
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            MaybeTls::Plain(s) => Some(s),
            MaybeTls::Accepted(s) => Some(s.get_ref().0),
            MaybeTls::Connected(s) => Some(s.get_ref().0),
            MaybeTls::Memory(_) => None,
        }
    }

    /// Watch the socket with the reactor of the thread calling this (it must run inside a tokio
    /// runtime), instead of the one that registered it: each readiness event then wakes this
    /// thread directly, not another thread that has to wake this one. The socket is duplicated,
    /// the duplicate registered here and the old descriptor deregistered and closed (four
    /// syscalls, once); buffered TLS state is untouched. An in-memory pipe has no reactor.
    ///
    /// # Errors
    /// `dup` or the registration failed; the socket is then left as it was.
    pub fn watch_here(&mut self) -> io::Result<()> {
        let socket = match self {
            MaybeTls::Plain(s) => s,
            MaybeTls::Accepted(s) => s.get_mut().0,
            MaybeTls::Connected(s) => s.get_mut().0,
            MaybeTls::Memory(_) => return Ok(()),
        };
        let dup = std::os::fd::AsFd::as_fd(&*socket).try_clone_to_owned()?;
        // The duplicate shares the open file (and its non-blocking flag) with the original.
        *socket = TcpStream::from_std(std::net::TcpStream::from(dup))?;
        Ok(())
    }

    /// The peer's address, if it is a socket and the kernel still knows it.
    #[must_use]
    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.tcp().and_then(|s| s.peer_addr().ok())
    }

    /// `"TLSv1_3/TLS13_AES_256_GCM_SHA384"`-like text for logs, or `None` for plaintext.
    #[must_use]
    pub fn tls_description(&self) -> Option<String> {
        let (version, suite) = match self {
            MaybeTls::Plain(_) | MaybeTls::Memory(_) => return None,
            MaybeTls::Accepted(s) => (s.get_ref().1.protocol_version(), s.get_ref().1.negotiated_cipher_suite()),
            MaybeTls::Connected(s) => (s.get_ref().1.protocol_version(), s.get_ref().1.negotiated_cipher_suite()),
        };
        let version = version.map_or_else(|| "?".to_string(), |v| format!("{v:?}"));
        let suite = suite.map_or_else(|| "?".to_string(), |s| format!("{:?}", s.suite()));
        Some(format!("{version}/{suite}"))
    }

    /// True for a TLS connection.
    #[must_use]
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTls::Accepted(_) | MaybeTls::Connected(_))
    }
}

impl From<TcpStream> for MaybeTls {
    fn from(s: TcpStream) -> Self {
        MaybeTls::Plain(s)
    }
}

impl AsyncRead for MaybeTls {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Accepted(s) => {
                // Registers for write readiness too while records are pending; errors show on read.
                let _ = Pin::new(s.as_mut()).poll_flush(cx);
                Pin::new(s.as_mut()).poll_read(cx, buf)
            }
            MaybeTls::Connected(s) => {
                let _ = Pin::new(s.as_mut()).poll_flush(cx);
                Pin::new(s.as_mut()).poll_read(cx, buf)
            }
            MaybeTls::Memory(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Accepted(s) => tls_write(Pin::new(s.as_mut()), cx, buf),
            MaybeTls::Connected(s) => tls_write(Pin::new(s.as_mut()), cx, buf),
            MaybeTls::Memory(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Accepted(s) => tls_write(Pin::new(s.as_mut()), cx, first_nonempty(bufs)),
            MaybeTls::Connected(s) => tls_write(Pin::new(s.as_mut()), cx, first_nonempty(bufs)),
            MaybeTls::Memory(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Memory(s) => s.is_write_vectored(),
            MaybeTls::Accepted(_) | MaybeTls::Connected(_) => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Accepted(s) => Pin::new(s.as_mut()).poll_flush(cx),
            MaybeTls::Connected(s) => Pin::new(s.as_mut()).poll_flush(cx),
            MaybeTls::Memory(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Accepted(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            MaybeTls::Connected(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            MaybeTls::Memory(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl WaitReadable for MaybeTls {
    /// A plain socket waits for the kernel's readiness; TLS is ready at once (rustls may hold
    /// plaintext already decrypted), so its reader reads as usual, and so does an in-memory pipe
    /// (it has no readiness to wait for without reading).
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            MaybeTls::Plain(s) => s.poll_read_ready(cx),
            MaybeTls::Accepted(_) | MaybeTls::Connected(_) | MaybeTls::Memory(_) => Poll::Ready(Ok(())),
        }
    }
}

/// Send what an earlier write left in rustls (backpressure: `Pending` until it is out), accept
/// `buf`, and try to send it at once; what the socket cannot take now goes with the next write
/// or read.
fn tls_write<T: AsyncWrite>(mut s: Pin<&mut T>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    match s.as_mut().poll_flush(cx) {
        Poll::Ready(Ok(())) => {}
        other => return other.map(|r| r.map(|()| 0)),
    }
    let n = match s.as_mut().poll_write(cx, buf) {
        Poll::Ready(Ok(n)) => n,
        other => return other,
    };
    let _ = s.poll_flush(cx);
    Poll::Ready(Ok(n))
}

fn first_nonempty<'a>(bufs: &'a [io::IoSlice<'a>]) -> &'a [u8] {
    bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FrameReader;
    use tokio::io::AsyncWriteExt;

    /// A socket registered by a runtime that is gone fails its next read; once `watch_here`
    /// moves it to the current runtime's reactor (as a pool does with a connection another
    /// session thread opened), it is served again, with nothing lost.
    #[test]
    fn a_socket_moved_to_this_reactor_is_served_by_it() {
        use tokio::io::AsyncReadExt;
        let runtime = || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (ours, peer) = runtime().block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let (accepted, connected) =
                tokio::join!(listener.accept(), TcpStream::connect(listener.local_addr().unwrap()));
            (accepted.unwrap().0, connected.unwrap().into_std().unwrap())
        });
        // That runtime, and the reactor `ours` is registered with, are dropped now.
        runtime().block_on(async move {
            let mut peer = TcpStream::from_std(peer).unwrap();
            let mut ours = MaybeTls::Plain(ours);
            let mut buf = [0u8; 5];
            peer.write_all(b"hello").await.unwrap();
            let stale = tokio::time::timeout(std::time::Duration::from_secs(5), ours.read(&mut buf)).await;
            assert!(matches!(stale, Ok(Err(_))), "a read on a dead reactor fails: {stale:?}");
            ours.watch_here().unwrap();
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), ours.read_exact(&mut buf)).await;
            assert!(matches!(read, Ok(Ok(5))), "{read:?}");
            assert_eq!(&buf, b"hello");
            ours.write_all(b"back").await.unwrap();
            let mut back = [0u8; 4];
            peer.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, b"back");
        });
    }

    /// A pipe has no socket, is not TLS, and a waiting reader on it (`next_lean`, as a session
    /// waits for its client) reads frames as they come instead of waiting on a readiness it
    /// cannot have; the end of the pipe is a clean end of stream.
    #[tokio::test]
    async fn an_in_memory_pipe_frames_like_a_socket() {
        let (mut peer, ours) = tokio::io::duplex(64);
        let stream = MaybeTls::Memory(ours);
        assert!(stream.tcp().is_none() && stream.peer_addr().is_none());
        assert!(!stream.is_tls() && stream.tls_description().is_none());
        let mut reader = FrameReader::new(stream, 1 << 10);
        let writer = tokio::spawn(async move {
            peer.write_all(&[b'Q', 0, 0, 0, 6, b'x']).await.unwrap();
            tokio::task::yield_now().await;
            peer.write_all(&[0, b'S', 0, 0, 0, 4]).await.unwrap();
        });
        // Bounded: a readiness wait that never resolves would hang here.
        let within = std::time::Duration::from_secs(5);
        let first = tokio::time::timeout(within, reader.next_lean()).await.unwrap().unwrap().unwrap();
        assert_eq!((first.tag(), first.body()), (b'Q', &b"x\0"[..]));
        let second = tokio::time::timeout(within, reader.next_lean()).await.unwrap().unwrap().unwrap();
        assert_eq!(second.tag(), b'S');
        writer.await.unwrap();
        assert!(tokio::time::timeout(within, reader.next_lean()).await.unwrap().unwrap().is_none());
    }
}
