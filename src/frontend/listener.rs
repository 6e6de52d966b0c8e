//! The listener: accepts clients up to the connection limit (a permit per client), answers the
//! rest with `53300`, and runs one task per session.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use super::handshake::{handshake, refuse, Refused};
use super::session::Session;
use super::Shared;
use crate::error::sqlstate;

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
                    serve_client(stream, &shared).await;
                    drop(permit);
                });
            }
            Err(_) => {
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
    match handshake(stream, shared).await {
        Ok(login) => Session::new(shared, login).run().await,
        Err(Refused::Cancel) => {}
        Err(Refused::Failed(reason)) => tracing::debug!(%reason, "client refused"),
    }
}
