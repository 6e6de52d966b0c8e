//! What an operator asked the monitor for: drain a replica, clear a fence, hold writes during
//! a planned switchover. The admin endpoint writes these requests; the monitor, still the only
//! writer of the topology, folds them into its next snapshot and is woken to do so at once.
//! Nothing here does IO.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// Operator requests the pure transition reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Replicas taken out of read rotation.
    pub drained: BTreeSet<usize>,
    /// Nodes whose fence is to be cleared on the next tick (one-shot).
    pub unfence: BTreeSet<usize>,
    /// A planned switchover is in progress: the primary takes no new writes.
    pub hold_writes: bool,
}

/// The shared request box plus a bell that wakes the monitor for an early tick.
#[derive(Clone, Default)]
pub struct Control {
    overrides: Arc<Mutex<Overrides>>,
    wake: Arc<Notify>,
}

impl Control {
    /// The requests as they are now.
    #[must_use]
    pub fn overrides(&self) -> Overrides {
        self.overrides.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Change the requests and wake the monitor.
    pub fn update(&self, change: impl FnOnce(&mut Overrides)) {
        change(&mut self.overrides.lock().unwrap_or_else(PoisonError::into_inner));
        self.wake.notify_one();
    }

    /// Take the one-shot requests (unfence) once the monitor applied them.
    pub fn applied(&self, unfenced: &BTreeSet<usize>) {
        let mut o = self.overrides.lock().unwrap_or_else(PoisonError::into_inner);
        o.unfence.retain(|n| !unfenced.contains(n));
    }

    /// Wait until someone calls [`Control::update`] (the monitor's early wake-up).
    pub async fn woken(&self) {
        self.wake.notified().await;
    }
}
