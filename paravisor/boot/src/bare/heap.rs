//! The heap: a buddy allocator over an 8 MiB region in `.bss`.
//!
//! 8 MiB holds the HEKI page-state map of a 256 MiB Linux TD once the end of
//! boot has made every page kernel data (one map entry per 4 KiB page), next
//! to a module validation of up to `LINUX_MAX_MODULE_BYTES`.

use core::cell::UnsafeCell;

use buddy_system_allocator::LockedHeap;

/// Heap bytes.
pub const HEAP_SIZE: usize = 8 << 20;

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
