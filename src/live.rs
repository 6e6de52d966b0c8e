//! [`Live`]: a value that a reload replaces while every reader keeps borrowing it like a plain
//! field (`shared.config.pool.size`).
//!
//! Readers never hold a guard: each version is leaked on publication, so a `&Config` taken from
//! it stays valid however long a reader keeps it. A reload therefore keeps its version in memory
//! for the life of the process; reloads are operator actions (a handful a day) and a version is
//! a few kilobytes, which is the price of not threading a guard through every session. Nothing
//! else lives here.

use std::ops::Deref;
use std::sync::Arc;

use arc_swap::ArcSwap;

/// The current version of a reloadable value.
pub struct Live<T: 'static> {
    current: ArcSwap<&'static T>,
}

impl<T: Send + Sync + 'static> Live<T> {
    /// Start with `value`.
    pub fn new(value: T) -> Self {
        Self { current: ArcSwap::from_pointee(Box::leak(Box::new(value))) }
    }

    /// The current version; later reloads do not change what it points to.
    #[must_use]
    pub fn snapshot(&self) -> &'static T {
        **self.current.load()
    }

    /// Publish `value`; readers see it from their next access on.
    pub fn replace(&self, value: T) {
        self.current.store(Arc::new(Box::leak(Box::new(value))));
    }
}

impl<T: Send + Sync + 'static> Deref for Live<T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.snapshot()
    }
}

impl<T: std::fmt::Debug + Send + Sync + 'static> std::fmt::Debug for Live<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_keep_their_version_and_see_the_next_one_on_their_next_access() {
        let live = Live::new(vec![1]);
        let before: &Vec<i32> = &live;
        live.replace(vec![2, 3]);
        assert_eq!(before, &[1], "a borrowed version stays as it was");
        assert_eq!(live.len(), 2);
        assert_eq!(live.snapshot(), &[2, 3]);
    }
}
