//! A session that is never deaf: while it waits for its client with a server connection
//! attached (pinned, session pooling, open transaction, Flush-held block), it also reads that
//! connection. Notifications, notices and parameter changes go to the client at once; an error
//! or a close there is the loss of the connection, decided like one under a unit.

use std::task::{Context, Poll};

use super::*;
use crate::protocol::framer::split_frame;

/// What woke an idle session.
enum Woke {
    /// The client has bytes (or closed).
    Client,
    /// The held connection sent bytes.
    Server,
    /// The held connection closed or failed.
    ServerGone(String),
}

impl<'a> Session<'a> {
    /// Wait until the client has something to say, meanwhile serving the held connection.
    /// `Err` if the session must end (the held connection died and the session cannot go on,
    /// or the client is gone).
    ///
    /// Runs before every statement of a transaction, so it is light: not an `async fn` (which
    /// keeps `self` twice), the wait itself a poll of both readers (two references, no state of
    /// its own), and only the rare work (forwarding what the server sent unasked) boxed. It
    /// used to be boxed whole, one allocation per statement, to keep its state (~190 bytes) out
    /// of the future every idle client holds.
    #[allow(clippy::manual_async_fn)] // on purpose, see above
    pub(super) fn watch_while_idle(
        &mut self,
    ) -> impl std::future::Future<Output = Result<(), SessionEnd>> + use<'_, 'a> {
        async move {
            // What the connection sent right behind the last reply may have come in the same
            // read (a notification after ReadyForQuery): it is in the buffer already, and
            // waiting for the socket would leave it there until the server sends something else.
            if self.held.as_mut().is_some_and(|h| h.checkout.conn().io.has_buffered()) {
                Box::pin(self.pass_idle_messages()).await?;
            }
            while self.held.is_some() && !self.client.has_buffered() {
                // Decided in a `let`, so that the wake (24 bytes) is not kept across the await
                // below: this future lives inside every idle client's.
                let server_sent = match std::future::poll_fn(|cx| self.poll_either(cx)).await {
                    Woke::Client => return Ok(()),
                    Woke::Server => true,
                    Woke::ServerGone(detail) => {
                        let e = self.conn().lost(&detail);
                        self.held_lost(&e)?;
                        false
                    }
                };
                if server_sent {
                    Box::pin(self.pass_idle_messages()).await?;
                }
            }
            Ok(())
        }
    }

    /// Read whichever of the client and the held connection has bytes first. Reading (not just
    /// waiting for readability) also sees plaintext a TLS layer already decrypted and holds; a
    /// read that is not ready loses nothing, so dropping this wait between polls is safe.
    ///
    /// The client first: it is what wakes the wait before nearly every statement of a
    /// transaction, and then the connection is not asked at all. When both have bytes either
    /// order is right (the `select!` this replaced picked one at random): what the server sent
    /// reaches the client with the replies of the statement that runs next.
    fn poll_either(&mut self, cx: &mut Context<'_>) -> Poll<Woke> {
        let Some(held) = self.held.as_mut() else { return Poll::Ready(Woke::Client) };
        // Whatever the client read gave (bytes, its end, an error), the next read sees it.
        if self.client.poll_fill(cx).is_ready() {
            return Poll::Ready(Woke::Client);
        }
        held.checkout.conn().io.poll_fill(cx).map(|r| match r {
            Ok(0) => Woke::ServerGone("server closed the connection".into()),
            Ok(_) => Woke::Server,
            Err(e) => Woke::ServerGone(e.to_string()),
        })
    }

    /// Forward every complete message the held connection sent unasked. `Err` if the session
    /// ends.
    async fn pass_idle_messages(&mut self) -> Result<(), SessionEnd> {
        let client_pid = self.key().pid();
        loop {
            let conn = self.conn();
            let frame = match split_frame(conn.io.buffer(), crate::backend::conn::MAX_SERVER_MESSAGE) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => {
                    let e = conn.lost(&e.to_string());
                    return self.held_lost(&e);
                }
            };
            match frame.tag() {
                tag::NOTIFICATION | tag::NOTICE_RESPONSE | tag::PARAMETER_STATUS => {
                    let out = own_notification(frame.into_bytes(), conn.backend_pid(), client_pid);
                    self.send_client(&out).await?;
                }
                tag::ERROR_RESPONSE => {
                    let e = conn.server_error(&frame);
                    return self.held_lost(&e);
                }
                other => {
                    let e = conn.lost(&format!("unexpected message {:?} while idle", other as char));
                    return self.held_lost(&e);
                }
            }
        }
    }

    /// True if the held connection kept notifications for [`Session::pass_kept_notifications`].
    pub(super) fn has_kept_notifications(&mut self) -> bool {
        self.held.as_mut().is_some_and(|h| h.checkout.conn().has_notifications())
    }

    /// Forward the notifications the held connection's last internal reply carried (see
    /// `ServerConn::read_internal_reply`), before anything newer from it reaches the client.
    /// `Err` if the client is gone.
    pub(super) async fn pass_kept_notifications(&mut self) -> Result<(), SessionEnd> {
        let client_pid = self.key().pid();
        let Some(held) = self.held.as_mut() else { return Ok(()) };
        let conn = held.checkout.conn();
        if !conn.has_notifications() {
            return Ok(());
        }
        let server_pid = conn.backend_pid();
        let mut out = BytesMut::new();
        for frame in conn.take_notifications() {
            out.extend_from_slice(&own_notification(frame.into_bytes(), server_pid, client_pid));
        }
        self.send_client(&out).await
    }

    /// The held connection died while the client was idle: drop it; if the session cannot go
    /// on without it, it ends (FATAL to the client).
    fn held_lost(&mut self, e: &BackendError) -> Result<(), SessionEnd> {
        tracing::info!(error = %e, "held server connection lost while the client was idle");
        // No unit runs while the client is idle, so none was ending the block.
        let verdict = self.state.on_loss(false);
        self.drop_held_and_siblings();
        match verdict {
            // The next unit gets a fresh connection with the session's state replayed.
            AfterLoss::Continue => Ok(()),
            // The block's Sync must not pass for its commit: the client's next message hears of
            // the loss (see `run_unit`).
            AfterLoss::BlockLost => {
                self.rare.get().block_lost = Some(Box::new((e.sqlstate().to_string(), end::block_lost(e))));
                Ok(())
            }
            // The client has its error: what it sends up to its Sync is discarded, as the
            // server would have.
            AfterLoss::BlockFailed => {
                self.rare.get().skip_to_sync = true;
                Ok(())
            }
            // Its open transaction is gone: the client's next statement hears so (25P02 until
            // it ends the block, even if with COMMIT), never runs in autocommit.
            AfterLoss::TransactionLost | AfterLoss::TransactionEnded => {
                let msg = format!(
                    "server connection lost while the transaction was open ({e}); it was rolled back; end it (ROLLBACK) and the session continues on a new server connection"
                );
                self.rare.get().aborted = Some(Box::new(super::aborted::Aborted::noticed_idle(e.sqlstate(), msg)));
                Ok(())
            }
            AfterLoss::End(what) => Err(SessionEnd::server_lost(e, what)),
        }
    }
}

/// A NotificationResponse raised by the session's own server connection carries the process id
/// the client was given in BackendKeyData (clients use it to skip their own notifications).
/// Anything else is returned unchanged.
pub(super) fn own_notification(frame: bytes::Bytes, server_pid: i32, client_pid: i32) -> bytes::Bytes {
    if frame.first() != Some(&tag::NOTIFICATION) || frame.get(5..9) != Some(&server_pid.to_be_bytes()[..]) {
        return frame;
    }
    let mut out = BytesMut::from(&frame[..]);
    out[5..9].copy_from_slice(&client_pid.to_be_bytes());
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::own_notification;
    use bytes::{BufMut, Bytes, BytesMut};

    fn notification(pid: i32) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(b'A');
        b.put_i32(4 + 4 + 3 + 1);
        b.put_i32(pid);
        b.put_slice(b"ch\0\0");
        b.freeze()
    }

    #[test]
    fn only_the_sessions_own_notifications_get_its_pid() {
        assert_eq!(own_notification(notification(77), 77, 5), notification(5));
        assert_eq!(own_notification(notification(78), 77, 5), notification(78), "another session's");
        let notice = Bytes::from_static(b"N\0\0\0\x08\0\0\0\x4d");
        assert_eq!(own_notification(notice.clone(), 77, 5), notice);
    }
}
