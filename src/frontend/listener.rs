//! The listener: accepts clients up to the connection limit (read from the live configuration
//! at each accept, so a reload changes it), answers the rest with `53300`, and runs one task per
//! session; a login to the virtual database `sluice` gets the admin console instead.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::handshake::{handshake, refuse, Refused};
use super::session::Session;
use super::Shared;
use crate::error::sqlstate;
use crate::metrics::{Metrics, Rejection};

/// Accept clients until `shutdown` turns true.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
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
            let counted = ClientCount::new(Arc::clone(&shared.metrics));
            tokio::spawn(async move {
                serve_client(stream, addr, &shared).await;
                drop(counted);
            });
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

async fn serve_client(stream: TcpStream, addr: SocketAddr, shared: &Shared) {
    // Both phases boxed: a task's future is allocated once, at the size of its largest state,
    // so inline they would make every idle session carry the (larger) handshake state too.
    // For the same reason the login is moved out before the next await (a `match` on it would
    // keep all 200 bytes of it in the task cell for the session's life).
    let login = match Box::pin(handshake(stream, addr, shared)).await {
        Ok(login) => login,
        Err(refused) => return note_refused(shared, refused),
    };
    if &*login.database == super::admin_console::DATABASE {
        Box::pin(super::admin_console::run(shared, login)).await;
    } else {
        let session = Session::new(shared, login);
        Box::pin(session.run()).await;
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

/// Counts a connected client for as long as it lives, whichever way its task ends.
struct ClientCount(Arc<Metrics>);

impl ClientCount {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.client_opened();
        Self(metrics)
    }
}

impl Drop for ClientCount {
    fn drop(&mut self) {
        self.0.client_closed();
    }
}
