//! The heap: a buddy allocator over a 2 MiB region in `.bss`, which the
//! Linux boot extends with accepted TD memory at the top of the TD
//! ([`extend`], `paravisor_boot::linux::L1_HEAP_EXTENSION`): the HEKI
//! page-state map of a 256 MiB TD (one entry per 4 KiB page once the end of
//! boot has swept it) and a module validation of up to
//! `LINUX_MAX_MODULE_BYTES` do not fit in the image's window below L2.

use core::cell::UnsafeCell;

use buddy_system_allocator::LockedHeap;

/// Heap bytes.
pub const HEAP_SIZE: usize = 2 << 20;

#[repr(C, align(4096))]
struct HeapSpace(UnsafeCell<[u8; HEAP_SIZE]>);

// SAFETY: the bytes are handed to the allocator once, in `init`, and from then
// on only reached through the allocator, which serialises access with its lock.
unsafe impl Sync for HeapSpace {}

static HEAP: HeapSpace = HeapSpace(UnsafeCell::new([0; HEAP_SIZE]));

#[global_allocator]
static ALLOCATOR: LockedHeap<32> = LockedHeap::empty();

/// Hands the heap region to the allocator; returns its GPA. Call once, after
/// `.bss` is accepted.
pub fn init() -> u64 {
    let start = HEAP.0.get() as usize;
    // SAFETY: `HEAP` is a static, accepted and zeroed `.bss` region of
    // `HEAP_SIZE` bytes that nothing else uses; `init` runs once, before any
    // allocation.
    unsafe { ALLOCATOR.lock().init(start, HEAP_SIZE) };
    start as u64
}

/// Adds `[start, end)` to the heap.
///
/// # Safety
///
/// The range must be accepted, identity-mapped private memory that nothing
/// else uses — not L2's (no alias), not the image's — for the rest of the run.
pub unsafe fn extend(start: u64, end: u64) {
    // SAFETY: the caller guarantees the range is free, mapped memory of L1.
    unsafe { ALLOCATOR.lock().add_to_heap(start as usize, end as usize) };
}

/// Bytes the heap manages, and bytes allocated (buddy blocks, as rounded).
pub fn usage() -> (usize, usize) {
    let heap = ALLOCATOR.lock();
    (heap.stats_total_bytes(), heap.stats_alloc_actual())
}
