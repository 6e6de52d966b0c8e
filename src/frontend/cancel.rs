//! Cancel keys: each client gets sluice's own BackendKeyData; a CancelRequest carrying it reaches
//! the server connection currently running that client's statement, and nothing else. The
//! CancelRequest goes to the server over the same kind of socket (TLS or not) as its connection.
//!
//! The keys live in the client registry (`frontend::lifecycle`), one table for both: a client's
//! pid is its registry id, and its record ([`ClientSlot`]) holds its secret.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::sync::atomic::AtomicBool;

use futures_util::task::AtomicWaker;

use super::lifecycle::ClientInfo;
use crate::protocol::messages;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

pub use crate::backend::conn::CancelTarget;

/// One client's record, shared by its session and the client registry (`frontend::lifecycle`):
/// one allocation per client for what `SHOW CLIENTS` lists, its cancel key and target, and its
/// stop signal. The session reads its user and database here too.
pub struct ClientSlot {
    /// What `SHOW CLIENTS` lists (`id` is the pid of the client's key).
    pub info: ClientInfo,
    /// The secret sluice reported to the client.
    secret: i32,
    /// Set by `KILL`. Beside the secret, not in a struct with the waker: the two fit in one
    /// word, and the record in a 16-byte smaller allocation.
    pub(crate) killed: AtomicBool,
    /// The server connection running the client's statement, written by its session without
    /// touching the registry's lock.
    target: Mutex<Option<Arc<CancelTarget>>>,
    /// The session's wait for its client, woken by `KILL` and drain (lock-free: a `watch`
    /// channel for all sessions cost each idle one a 120-byte `changed()` future in its wait,
    /// and a lock per unit to register it).
    pub(crate) waker: AtomicWaker,
}

impl ClientSlot {
    /// A client's record; `info.id` is its key's pid.
    #[must_use]
    pub fn new(info: ClientInfo, secret: i32) -> Self {
        Self { info, secret, killed: AtomicBool::new(false), target: Mutex::default(), waker: AtomicWaker::new() }
    }

    /// The server connection to cancel if `secret` is this client's, and it is running a
    /// statement.
    #[must_use]
    pub fn target_for(&self, secret: i32) -> Option<Arc<CancelTarget>> {
        if secret != self.secret {
            return None;
        }
        self.target.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// A client's key (its record, where the pid and secret are); the registry entry that owns it
/// forgets the key when dropped.
pub struct CancelKey {
    slot: Arc<ClientSlot>,
}

impl CancelKey {
    /// The key of the client `slot` records.
    #[must_use]
    pub fn new(slot: Arc<ClientSlot>) -> Self {
        Self { slot }
    }

    /// The pid sluice reported to the client.
    #[must_use]
    pub fn pid(&self) -> i32 {
        self.slot.info.id
    }

    /// The secret sluice reported to the client.
    #[must_use]
    pub fn secret(&self) -> i32 {
        self.slot.secret
    }

    /// Record (or clear) the server connection running this client's statement.
    pub fn set_target(&self, target: Option<Arc<CancelTarget>>) {
        *self.slot.target.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = target;
    }

    /// The client's record.
    #[must_use]
    pub fn slot(&self) -> &Arc<ClientSlot> {
        &self.slot
    }
}

/// Open a connection to the server and send a CancelRequest (best effort, bounded in time).
pub async fn send_cancel(t: &CancelTarget) {
    let attempt = async {
        let mut s = t.tls.connect(&t.addr.0, t.addr.1).await.map_err(std::io::Error::other)?;
        let mut buf = BytesMut::new();
        messages::cancel_request(&mut buf, t.pid, t.secret);
        s.write_all(&buf).await?;
        s.shutdown().await
    };
    if let Err(e) = tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "cancel timed out")))
    {
        tracing::debug!(host = %t.addr.0, port = t.addr.1, error = %e, "cancel request failed");
    }
}
