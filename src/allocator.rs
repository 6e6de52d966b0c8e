//! The process's allocator: the system's (glibc's `malloc`), except that blocks aligned to more
//! than `malloc` guarantees, up to a cache line pair, are carved out of a plain `malloc` block.
//!
//! Why: tokio makes two 128-byte-aligned allocations per client connection (the task cell of
//! the session's task and the socket's `ScheduledIo`, both padded against false sharing).
//! `std`'s `System` serves them with `posix_memalign`, which glibc 2.36 answers outside its
//! per-thread cache: `_int_memalign` takes a larger chunk from the arena under its lock, splits
//! the slack off both ends and frees it again, and the block's `free` later finds its cache bin
//! full of such blocks that no `memalign` reuses. That was ~1,300 instructions per login out of
//! ~31,800 (PERFORMANCE.md, "Fourteenth round"). Here such a block is `malloc`'s of `size +
//! align` bytes, and the caller gets its first `align`-aligned address past the start, with the
//! distance back stored in the `usize` just below it; `free` takes the distance back.
//!
//! The price is `align` bytes per such block (256 per connection), and this is the crate's only
//! `unsafe` code: everything else stays under the `unsafe_code` lint. Nothing here keeps state;
//! the choice of path depends on the layout's alignment alone, which `dealloc` and `realloc`
//! receive unchanged, so a block always goes back the way it came.
//!
//! It must not: allocate itself, hold locks, or serve alignments past [`MAX_PADDED_ALIGN`]
//! (page-aligned requests would waste a page each; they go to the system as before).

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// What `malloc` aligns every block to on the 64-bit targets sluice runs on (glibc's
/// `MALLOC_ALIGNMENT`, `std`'s own assumption for `System`). Requests up to it go to the system
/// unchanged. The padded path asks the system for this alignment explicitly, so it stays correct
/// (if slower) on a target whose `malloc` guarantees less.
const MALLOC_ALIGN: usize = 16;

/// The largest alignment served from a padded `malloc` block: tokio's cache-line padding (128
/// on x86_64 and aarch64). Above it the padding would cost more than `memalign`'s trimming.
pub const MAX_PADDED_ALIGN: usize = 128;

/// The global allocator of the `sluice` binary (see the module map).
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocator;

/// Whether `layout` is served from a padded `malloc` block (otherwise by [`System`] as is).
fn padded(layout: Layout) -> bool {
    layout.align() > MALLOC_ALIGN && layout.align() <= MAX_PADDED_ALIGN
}

/// The system block that holds a padded block of `layout`: `align` bytes more, at `malloc`'s
/// alignment. `None` if the size overflows.
fn outer(layout: Layout) -> Option<Layout> {
    let size = layout.size().checked_add(layout.align())?;
    Layout::from_size_align(size, MALLOC_ALIGN).ok()
}

// SAFETY: every block is either the system's, untouched, or a padded one whose bytes lie inside
// a live system block of `outer(layout)`; which of the two is decided by `padded(layout)` on the
// layout the caller must pass back unchanged (GlobalAlloc's contract).
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !padded(layout) {
            return System.alloc(layout);
        }
        let Some(outer) = outer(layout) else { return ptr::null_mut() };
        let raw = System.alloc(outer);
        if raw.is_null() {
            return raw;
        }
        // `raw` is 16-aligned and `align` a larger power of two, so the distance to the next
        // aligned address is a multiple of 16 in 16..=align: room below the block for the
        // distance, and `align` spare bytes cover it.
        let align = layout.align();
        let distance = align - (raw as usize & (align - 1));
        debug_assert!(distance >= size_of::<usize>() && distance <= align);
        let block = raw.add(distance);
        block.sub(size_of::<usize>()).cast::<usize>().write(distance);
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if !padded(layout) {
            return System.dealloc(block, layout);
        }
        let distance = block.sub(size_of::<usize>()).cast::<usize>().read();
        debug_assert!(distance >= size_of::<usize>() && distance <= layout.align());
        // `outer` succeeded when the block was made with the same layout.
        let outer = outer(layout).unwrap_or(layout);
        System.dealloc(block.sub(distance), outer);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !padded(layout) {
            return System.alloc_zeroed(layout);
        }
        let block = self.alloc(layout);
        if !block.is_null() {
            block.write_bytes(0, layout.size());
        }
        block
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !padded(layout) {
            return System.realloc(block, layout, new_size);
        }
        // Rare (tokio's padded blocks never grow): a new block, the bytes copied, the old freed.
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        let new_block = self.alloc(new_layout);
        if !new_block.is_null() {
            ptr::copy_nonoverlapping(block, new_block, layout.size().min(new_size));
            self.dealloc(block, layout);
        }
        new_block
    }
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    const ALIGNS: [usize; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 4096];
    const SIZES: [usize; 9] = [1, 7, 16, 100, 128, 384, 1_000, 5_000, 300_000];

    /// Fills `len` bytes at `block` with a pattern that depends on `seed` and the position.
    unsafe fn fill(block: *mut u8, len: usize, seed: u8) {
        for i in 0..len {
            block.add(i).write(seed.wrapping_add(i as u8));
        }
    }

    unsafe fn holds(block: *const u8, len: usize, seed: u8) -> bool {
        (0..len).all(|i| block.add(i).read() == seed.wrapping_add(i as u8))
    }

    #[test]
    fn only_alignments_past_mallocs_and_up_to_a_cache_line_pair_are_padded() {
        let path = |align| padded(Layout::from_size_align(64, align).unwrap());
        assert!(!path(8) && !path(16) && path(32) && path(64) && path(128) && !path(256));
    }

    #[test]
    fn every_block_is_aligned_and_holds_what_was_written() {
        // Many live blocks at once, so the padded ones land at every distance from `malloc`'s
        // addresses, each written whole and checked after the others were written.
        let mut live = Vec::new();
        for (n, &align) in ALIGNS.iter().cycle().take(ALIGNS.len() * 8).enumerate() {
            let size = SIZES[n % SIZES.len()];
            let layout = Layout::from_size_align(size, align).unwrap();
            let block = unsafe { Allocator.alloc(layout) };
            assert!(!block.is_null());
            assert_eq!(block as usize % align, 0, "size {size} align {align}");
            unsafe { fill(block, size, n as u8) };
            live.push((block, layout, n as u8));
        }
        for (block, layout, seed) in live {
            assert!(unsafe { holds(block, layout.size(), seed) });
            unsafe { Allocator.dealloc(block, layout) };
        }
    }

    #[test]
    fn a_zeroed_block_is_zero_even_where_a_freed_one_was_written() {
        for align in ALIGNS {
            let layout = Layout::from_size_align(384, align).unwrap();
            unsafe {
                let dirty = Allocator.alloc(layout);
                fill(dirty, 384, 0xA5);
                Allocator.dealloc(dirty, layout);
                let block = Allocator.alloc_zeroed(layout);
                assert_eq!(block as usize % align, 0);
                assert!((0..384).all(|i| block.add(i).read() == 0), "align {align}");
                Allocator.dealloc(block, layout);
            }
        }
    }

    #[test]
    fn realloc_keeps_the_alignment_and_the_bytes_both_ways() {
        for align in ALIGNS {
            for (from, to) in [(100, 5_000), (5_000, 100), (384, 384), (1, 300_000), (300_000, 7)] {
                let layout = Layout::from_size_align(from, align).unwrap();
                unsafe {
                    let block = Allocator.alloc(layout);
                    fill(block, from, 3);
                    let moved = Allocator.realloc(block, layout, to);
                    assert!(!moved.is_null());
                    assert_eq!(moved as usize % align, 0, "{from} -> {to}, align {align}");
                    assert!(holds(moved, from.min(to), 3), "{from} -> {to}, align {align}");
                    fill(moved, to, 9);
                    Allocator.dealloc(moved, Layout::from_size_align(to, align).unwrap());
                }
            }
        }
    }

    #[test]
    fn a_block_the_system_cannot_give_is_null() {
        // The padded size still fits a `Layout`; `malloc` refuses it.
        let layout = Layout::from_size_align(isize::MAX as usize - 255, 128).unwrap();
        assert!(unsafe { Allocator.alloc(layout) }.is_null());
    }

    #[test]
    fn a_padded_type_and_a_growing_buffer_round_trip_through_it() {
        #[repr(align(128))]
        struct Padded([u64; 40]);
        let layout = Layout::new::<Padded>();
        unsafe {
            let block = Allocator.alloc(layout).cast::<Padded>();
            block.write(Padded([7; 40]));
            assert_eq!((*block).0[39], 7);
            Allocator.dealloc(block.cast(), layout);
        }
        // The unpadded path's `realloc` is the system's, as a `Vec` grows and shrinks.
        let mut size = 24;
        let mut block = unsafe { Allocator.alloc(Layout::from_size_align(size, 8).unwrap()) };
        for (seed, next) in [48, 1_000, 200_000, 16].into_iter().enumerate() {
            unsafe {
                fill(block, size, seed as u8);
                block = Allocator.realloc(block, Layout::from_size_align(size, 8).unwrap(), next);
                assert!(holds(block, size.min(next), seed as u8));
            }
            size = next;
        }
        unsafe { Allocator.dealloc(block, Layout::from_size_align(size, 8).unwrap()) };
    }
}
