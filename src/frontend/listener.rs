//! The listener: accepts clients up to the connection limit (a permit per client), answers the
//! rest with `53300`, and runs one task per session.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use super::handshake::{handshake, refuse, Refused};
use super::session::Session;
use super::Shared;
use crate::error::sqlstate;
use crate::metrics::{Metrics, Rejection};

/// Accept clients until `shutdown` turns true.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(shared.config.limits.max_client_connections));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    let _counted = ClientCount::new(&shared.metrics);
                    serve_client(stream, &shared).await;
                    drop(permit);
                });
            }
            Err(_) => {
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
}

async fn serve_client(stream: TcpStream, shared: &Shared) {
    // Both phases boxed: a task's future is allocated once, at the size of its largest state,
    // so inline they would make every idle session carry the (larger) handshake state too.
    match Box::pin(handshake(stream, shared)).await {
        Ok(login) => Box::pin(Session::new(shared, login).run()).await,
        Err(Refused::Cancel | Refused::Gone) => {}
        Err(Refused::Refused { code, reason }) => {
            tracing::debug!(%code, %reason, "client refused");
            shared.metrics.client_rejected(rejection(&code, &reason));
        }
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
struct ClientCount<'a>(&'a Metrics);

impl<'a> ClientCount<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics.client_opened();
        Self(metrics)
    }
}

impl Drop for ClientCount<'_> {
    fn drop(&mut self) {
        self.0.client_closed();
    }
}
