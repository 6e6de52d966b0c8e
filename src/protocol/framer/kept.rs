//! Empty read buffers kept per thread for the next reader that needs one.
//!
//! A client's reader gives its buffer back whenever it waits with nothing buffered (an idle
//! client holds none, see [`FrameReader::next_lean`](super::FrameReader::next_lean)), and a
//! client that sends a unit and waits for its reply waits that way after every unit: freed
//! there, the buffer cost a `malloc` and a `free` per unit, and a second pair for the shared
//! reference count the first frame split off it made (`BytesMut::split_to`). Kept here, it
//! comes back with its reference count, unshared, and neither pair is paid again.
//!
//! Per thread, not in the proxy's shared state: it is a cache of free memory, like the
//! allocator's own per-thread cache (no state anyone can observe, no lock, nothing shared
//! between proxies a test runs in one process). Bounded: at most [`MAX_KEPT`] buffers of at
//! most [`MAX_KEPT_BYTES`] each per thread.

use std::cell::RefCell;

use bytes::BytesMut;

use super::MIN_READ;

/// Most buffers one thread keeps.
pub const MAX_KEPT: usize = 64;
/// Largest buffer kept (a reader that grew past it for a large result gives it to the
/// allocator; a kept one serves small reads).
pub const MAX_KEPT_BYTES: usize = 2 * MIN_READ;

thread_local! {
    static KEPT: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// Keep the empty `buf` for another reader on this thread, if it is small and no frame
/// split off it still shares its allocation; otherwise drop it.
pub fn put(mut buf: BytesMut) {
    debug_assert!(buf.is_empty());
    // Asking for one byte more than its own room makes the buffer take back the room its
    // frames were split off from: possible only if none of them is alive.
    let room = buf.capacity();
    if room == 0 || !buf.try_reclaim(room + 1) || buf.capacity() > MAX_KEPT_BYTES {
        return;
    }
    let _ = KEPT.try_with(|kept| {
        if let Ok(mut kept) = kept.try_borrow_mut() {
            if kept.len() < MAX_KEPT {
                kept.push(buf);
            }
        }
    });
}

/// A buffer [`put`] kept on this thread, if there is one.
pub fn take() -> Option<BytesMut> {
    KEPT.try_with(|kept| kept.try_borrow_mut().ok()?.pop()).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each test runs on a thread of its own: the per-thread list starts empty.
    fn kept() -> usize {
        KEPT.with_borrow(Vec::len)
    }

    #[test]
    fn a_buffer_is_kept_once_its_frames_are_gone_and_comes_back_whole() {
        let split = |buf: &mut BytesMut| {
            buf.extend_from_slice(&[7; 100]);
            buf.split_to(100).freeze()
        };
        // A frame still shares the allocation: not kept.
        let mut buf = BytesMut::with_capacity(MIN_READ);
        let frame = split(&mut buf);
        put(buf);
        assert_eq!(kept(), 0);
        assert_eq!(frame.len(), 100);
        let mut buf = BytesMut::with_capacity(MIN_READ);
        drop(split(&mut buf));
        put(buf);
        assert_eq!(kept(), 1);
        let back = take().expect("kept");
        assert!(back.is_empty());
        assert!(back.capacity() >= MIN_READ, "{}", back.capacity());
        assert!(take().is_none());
    }

    #[test]
    fn large_and_excess_buffers_go_to_the_allocator() {
        let mut large = BytesMut::with_capacity(MAX_KEPT_BYTES * 4);
        large.extend_from_slice(b"x");
        let _ = large.split_to(1);
        put(large);
        assert_eq!(kept(), 0);
        for _ in 0..MAX_KEPT + 3 {
            let mut b = BytesMut::with_capacity(MIN_READ);
            b.extend_from_slice(b"abcde");
            drop(b.split_to(5));
            put(b);
        }
        assert_eq!(kept(), MAX_KEPT);
    }

    #[test]
    fn an_empty_handle_is_not_kept() {
        put(BytesMut::new());
        assert_eq!(kept(), 0);
    }
}
