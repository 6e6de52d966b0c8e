//! Cancel keys: each client gets sluice's own BackendKeyData; a CancelRequest carrying it reaches
//! the server connection currently running that client's statement, and nothing else. The
//! CancelRequest goes to the server over the same kind of socket (TLS or not) as its connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::lifecycle::{ClientInfo, StopSlot};
use crate::protocol::messages;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

pub use crate::backend::conn::CancelTarget;

/// One client's record, shared by its session, this table and the client registry
/// (`frontend::lifecycle`): one allocation per client for what `SHOW CLIENTS` lists, its
/// cancel target and its stop signal. The session reads its user and database here too.
pub struct ClientSlot {
    /// What `SHOW CLIENTS` lists (`id` is the key's pid).
    pub info: ClientInfo,
    /// The server connection running the client's statement, written by its session without
    /// touching the table's lock.
    target: Mutex<Option<CancelTarget>>,
    /// How `KILL` and drain reach the session's wait for its client.
    pub(crate) stop: StopSlot,
}

type Slot = Arc<ClientSlot>;

struct Entry {
    secret: i32,
    slot: Slot,
}

/// Live client keys and what each is running on.
#[derive(Clone, Default)]
pub struct CancelRegistry {
    entries: Arc<Mutex<HashMap<i32, Entry>>>,
}

/// A client's key; dropping it forgets the key.
pub struct CancelKey {
    registry: CancelRegistry,
    slot: Slot,
    /// The pid sluice reported to the client.
    pub pid: i32,
    /// The secret sluice reported to the client.
    pub secret: i32,
}

impl CancelRegistry {
    /// A fresh unique key for a new client, with its record (`info.id` becomes the key's pid).
    #[must_use]
    pub fn register(&self, mut info: ClientInfo) -> CancelKey {
        let mut entries = self.lock();
        loop {
            let pid = rand::random::<i32>() & 0x7fff_ffff;
            if pid != 0 && !entries.contains_key(&pid) {
                let secret = rand::random::<i32>();
                info.id = pid;
                let slot = Slot::new(ClientSlot { info, target: Mutex::default(), stop: StopSlot::default() });
                entries.insert(pid, Entry { secret, slot: Arc::clone(&slot) });
                return CancelKey { registry: self.clone(), slot, pid, secret };
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Entry>> {
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forward a CancelRequest if `(pid, secret)` belongs to a client running a statement.
    /// Unknown keys are ignored silently, as PostgreSQL does.
    pub async fn cancel(&self, pid: i32, secret: i32) {
        let target = {
            let entries = self.lock();
            let slot = entries.get(&pid).filter(|e| e.secret == secret).map(|e| Arc::clone(&e.slot));
            slot.and_then(|t| t.target.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
        };
        if let Some(t) = target {
            send_cancel(&t).await;
        }
    }
}

impl CancelKey {
    /// Record (or clear) the server connection running this client's statement.
    pub fn set_target(&self, target: Option<CancelTarget>) {
        *self.slot.target.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = target;
    }

    /// The client's record, for its registry entry.
    #[must_use]
    pub fn slot(&self) -> &Arc<ClientSlot> {
        &self.slot
    }
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.pid);
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
