//! The global allocator: a buddy allocator over a RAM range `main` picks
//! (above the emulator image, below the TD image QEMU loaded).

#![allow(unsafe_code)]

use buddy_system_allocator::LockedHeap;

#[global_allocator]
static HEAP: LockedHeap<33> = LockedHeap::empty();

/// Hands `[start, end)` to the allocator. Call once.
pub fn init(start: u64, end: u64) {
    // SAFETY: `main` calls this once, before any allocation, with a range of
    // identity-mapped RAM that the memory map reports usable and that does not
    // overlap the emulator image, its stack, the PVH structures or the TD
    // image (see `main::heap_range`). Nothing else ever uses that range.
    unsafe { HEAP.lock().init(start as usize, (end - start) as usize) }
}

/// Bytes currently allocated.
pub fn used() -> usize {
    HEAP.lock().stats_alloc_actual()
}
