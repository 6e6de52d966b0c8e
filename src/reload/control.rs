//! The handle through which operators' requests (SIGHUP, `POST /reload`, `RELOAD`,
//! `SHUTDOWN`) reach the one task that applies them, in order.

use tokio::sync::{mpsc, oneshot};

use super::ReloadReport;
use crate::config::ConfigErrors;

/// Requests queued at once before senders wait.
const QUEUE: usize = 16;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is invalid; every problem, with its key.
    #[error("the configuration file is invalid; nothing was changed:\n{0}")]
    Invalid(ConfigErrors),
    /// The proxy was started from a configuration value, not a file.
    #[error("sluice was not started from a configuration file; there is nothing to reload")]
    NoFile,
    /// The proxy is stopping.
    #[error("sluice is stopping")]
    Stopped,
}

/// One operator request.
#[derive(Debug)]
pub enum Request {
    /// Read, validate and apply the configuration file; the answer says what happened.
    Reload(oneshot::Sender<Result<ReloadReport, ReloadError>>),
    /// Drain and stop (as SIGTERM).
    Shutdown,
}

/// A cheap, cloneable sender of [`Request`]s.
#[derive(Clone, Debug)]
pub struct Control {
    tx: mpsc::Sender<Request>,
}

impl Control {
    /// A control handle and the receiving end its applier reads.
    #[must_use]
    pub fn channel() -> (Control, mpsc::Receiver<Request>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Control { tx }, rx)
    }

    /// Reload and wait for the outcome.
    ///
    /// # Errors
    /// See [`ReloadError`].
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Request::Reload(tx)).await.map_err(|_| ReloadError::Stopped)?;
        rx.await.map_err(|_| ReloadError::Stopped)?
    }

    /// Ask the proxy to drain and stop; returns at once.
    pub fn shutdown(&self) {
        let _ = self.tx.try_send(Request::Shutdown);
    }
}
