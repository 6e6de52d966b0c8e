//! [`Live`]: a value that a reload replaces while every reader keeps borrowing it like a plain
//! field (`shared.config.pool.size`).
//!
//! Readers never hold a guard: each version is leaked on publication, so a `&Config` taken from
//! it stays valid however long a reader keeps it. A reload therefore keeps its version in memory
//! for the life of the process; reloads are operator actions (a handful a day) and a version is
//! a few kilobytes, which is the price of not threading a guard through every session. Nothing
//! else lives here.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// The current version of a reloadable value.
pub struct Live<T: 'static> {
    current: ArcSwap<&'static Version<T>>,
    /// The number of the version in `current`, stored after it: what [`Live::current`] checks
    /// a kept version against with one atomic load, where `current` is an arc-swap load
    /// (~50 instructions).
    published: AtomicU64,
    /// Held while a version is published, so that `published` is always the number of the
    /// one in `current` once a publication is over (two reloads at once cannot interleave).
    publishing: Mutex<()>,
}

/// One published version: the value and its number, in the one leaked allocation, so that a
/// reader keeping a reference to it ([`Seen`], 8 bytes) can tell whether it is still current.
struct Version<T> {
    number: u64,
    value: T,
}

/// The version a reader last used, kept by the reader (a session) for [`Live::current`]:
/// `Seen::default()` before its first access.
pub struct Seen<T: 'static>(Option<&'static Version<T>>);

impl<T> Default for Seen<T> {
    fn default() -> Self {
        Seen(None)
    }
}

impl<T> std::fmt::Debug for Seen<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Seen").field(&self.0.map(|v| v.number)).finish()
    }
}

impl<T: Send + Sync + 'static> Live<T> {
    /// Start with `value`.
    pub fn new(value: T) -> Self {
        Self {
            current: ArcSwap::from_pointee(Box::leak(Box::new(Version { number: 0, value }))),
            published: AtomicU64::new(0),
            publishing: Mutex::new(()),
        }
    }

    /// The current version; later reloads do not change what it points to.
    #[must_use]
    pub fn snapshot(&self) -> &'static T {
        let version: &'static Version<T> = **self.current.load();
        &version.value
    }

    /// The current version, as [`Live::snapshot`], for a reader that keeps what it read in
    /// `seen`: the kept version if none was published since (one atomic load), else the
    /// current one (an arc-swap load), kept in its place.
    #[inline]
    pub fn current(&self, seen: &mut Seen<T>) -> &'static T {
        match seen.0 {
            Some(version) if version.number == self.published.load(Ordering::Acquire) => &version.value,
            _ => self.keep_current(seen),
        }
    }

    /// [`Live::current`] after a publication (or at a reader's first access): out of line.
    #[inline(never)]
    fn keep_current(&self, seen: &mut Seen<T>) -> &'static T {
        let version: &'static Version<T> = **self.current.load();
        seen.0 = Some(version);
        &version.value
    }

    /// Publish `value`; readers see it from their next access on.
    pub fn replace(&self, value: T) {
        let _publishing = self.publishing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let number = self.published.load(Ordering::Relaxed) + 1;
        self.current.store(Arc::new(Box::leak(Box::new(Version { number, value }))));
        self.published.store(number, Ordering::Release);
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

    #[test]
    fn a_kept_version_is_used_until_another_is_published() {
        let live = Live::new(vec![1]);
        let mut seen = Seen::default();
        let first = live.current(&mut seen);
        assert_eq!(first, &[1]);
        assert!(std::ptr::eq(live.current(&mut seen), first), "the kept version, not another load");
        live.replace(vec![2]);
        assert_eq!(live.current(&mut seen), &[2], "the next access after a publication sees it");
        let mut other = Seen::default();
        assert_eq!(live.current(&mut other), &[2]);
        live.replace(vec![3]);
        live.replace(vec![4]);
        assert_eq!((live.current(&mut seen), live.current(&mut other)), (&vec![4], &vec![4]));
        assert_eq!(first, &[1], "a version read before stays as it was");
    }

    #[test]
    fn readers_on_other_threads_see_each_publication() {
        let live = Live::new(0_u64);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut seen = Seen::default();
                let mut last = 0;
                while last < 1_000 {
                    let now = *live.current(&mut seen);
                    assert!(now >= last, "a version older than one read before: {now} after {last}");
                    last = now;
                }
            });
            for v in 1..=1_000 {
                live.replace(v);
            }
            reader.join().unwrap();
        });
    }
}
