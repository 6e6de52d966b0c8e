//! The listener: accepts clients up to the connection limit (read from the live configuration
//! at each accept, so a reload changes it), answers the rest with `53300`, and runs one task per
//! session; a login to the virtual database `sluice` gets the admin console instead.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::handshake::{handshake, refuse, Refused};
use super::session::Session;
use super::Shared;
use crate::error::sqlstate;
use crate::metrics::Rejection;

/// Accept clients until `shutdown` turns true.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    // One wait for the change across all accepts: made per accept, it registered with the
    // watch's waiter list (a lock) and left it (the lock again) per client, and the unbiased
    // `select!` drew a random number to pick which to poll first. The accept is polled first:
    // each poll of the registered wait takes the list's lock again, so it is polled only when
    // no client is waiting. A stream of connections still lets it be seen: the accept spends
    // tokio's cooperative budget and answers `Pending` when the budget is gone.
    let stop = shutdown.changed();
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            biased;
            r = listener.accept() => r,
            _ = &mut stop => return,
        };
        let (stream, addr) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        // Only this loop opens counts, so the check cannot race past the limit.
        let limit = i64::try_from(shared.config.limits.max_client_connections).unwrap_or(i64::MAX);
        if shared.metrics.clients() < limit {
            // Boxed until the handshake takes them: what the task captures stays in it for the
            // client's life (the socket and address inline are 48 bytes more per idle client
            // than a pointer).
            tokio::spawn(serve_client(Box::new((stream, addr)), ClientCount::new(shared)));
        } else {
            shared.metrics.client_rejected(Rejection::TooManyConnections);
            tokio::spawn(async move {
                let mut stream = stream;
                let msg = "sorry, too many clients already";
                let _ = tokio::time::timeout(
                    shared.config.limits.startup_timeout,
                    refuse(&mut stream, sqlstate::TOO_MANY_CONNECTIONS, msg),
                )
                .await;
            });
        }
    }
}

/// One client's task. The session runs inline in it, so a client costs one allocation (tokio's
/// task cell, sized to the session) instead of a cell plus a boxed session; the handshake and
/// the admin console are boxed, so their (larger) states do not set every idle session's size.
///
/// Not an `async fn`: one would keep each argument twice (the argument and the local it is
/// moved into). Nothing here is borrowed across an await but `shared`: a borrowed local (say
/// the login, matched on its database) would stay in the task for the session's life.
/// `client.0` is the shared state (no reference to it is kept in a local of its own: that
/// would be 8 bytes more in every client's task).
#[allow(clippy::manual_async_fn)] // on purpose, see above
fn serve_client(
    accepted: Box<(TcpStream, SocketAddr)>,
    client: ClientCount,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    async move {
        // Out of its box in a block of its own, so the box is freed now: moved out of with `*`
        // alone, it would be freed only when the task ends (held for the client's life).
        let (stream, addr) = {
            let boxed = accepted;
            *boxed
        };
        let login = match Box::pin(handshake(stream, addr, &client.0)).await {
            Ok(login) => login,
            Err(refused) => return note_refused(&client.0, refused),
        };
        // A `let`, not a `match` around the session: a matched value would stay in the task.
        let (session, owed) = match begin(&client.0, login) {
            Ok(begun) => begun,
            Err(console) => return console.await,
        };
        // Boxed: the login's state is no idle session's (see `Session::login`).
        let Some(session) = session.login_boxed(owed).await else { return };
        session.run().await;
    }
}

/// The admin console, boxed: rare, and larger than an idle session.
type Console<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'a>>;

/// A session for an accepted login and what authentication still owes its client (written
/// with the login's reply), or the admin console if it asked for it.
fn begin(shared: &Shared, mut login: super::handshake::Login) -> Result<(Session<'_>, BytesMut), Console<'_>> {
    if &*login.database == super::admin_console::DATABASE {
        Err(Box::pin(super::admin_console::run(shared, login)))
    } else {
        let owed = std::mem::take(&mut login.owed);
        Ok((Session::new(shared, login), owed))
    }
}

fn note_refused(shared: &Shared, refused: Refused) {
    if let Refused::Refused { code, reason } = refused {
        tracing::debug!(%code, %reason, "client refused");
        shared.metrics.client_error(&code);
        shared.metrics.client_rejected(rejection(&code, &reason));
    }
}

/// The metric label of a refused handshake.
fn rejection(code: &str, reason: &str) -> Rejection {
    match code {
        sqlstate::INVALID_PASSWORD | sqlstate::INVALID_AUTHORIZATION => Rejection::AuthFailed,
        _ if reason.contains("timeout") || reason.contains("timed out") => Rejection::StartupTimeout,
        _ => Rejection::Protocol,
    }
}

/// Counts a connected client for as long as it lives, whichever way its task ends; the task's
/// hold on the shared state too (one field for both).
struct ClientCount(Arc<Shared>);

impl ClientCount {
    fn new(shared: Arc<Shared>) -> Self {
        shared.metrics.client_opened();
        Self(shared)
    }
}

impl Drop for ClientCount {
    fn drop(&mut self) {
        self.0.metrics.client_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::future_size;

    /// Every idle client keeps its task: what the login sends (SCRAM's SASLFinal carried to
    /// the login's reply) must not stay in it. 264 bytes in a debug build when the SASLFinal
    /// was carried; passing it into `Session::run` made it 328, awaiting the login beside the
    /// session 496.
    #[test]
    fn an_idle_clients_task_keeps_nothing_of_its_login() {
        let size = future_size::<Box<(TcpStream, SocketAddr)>, ClientCount, _, _>(&serve_client);
        assert!(size <= 264, "the client's task is {size} bytes");
    }

    #[test]
    fn the_login_box_fits_the_allocators_thread_cache() {
        // Boxed per login: past 1,032 bytes (the largest chunk glibc keeps in its per-thread
        // cache) each `malloc` and `free` of it takes the slow path.
        let size = future_size::<Session<'static>, BytesMut, _, _>(&Session::login);
        assert!(size <= 1_032, "the login future is {size} bytes");
    }
}
