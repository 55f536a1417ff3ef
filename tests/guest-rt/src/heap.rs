//! A global allocator (buddy system) over a region of guest memory the guest
//! hands over once with [`init`].

use buddy_system_allocator::LockedHeap;

#[global_allocator]
static ALLOCATOR: LockedHeap<32> = LockedHeap::empty();

/// Gives `[start, start + size)` to the allocator. Call once, before the
/// first allocation.
///
/// # Safety
///
/// The range must be mapped writable guest memory that nothing else uses
/// for the rest of the run.
pub unsafe fn init(start: u64, size: u64) {
    // SAFETY: the caller guarantees the range is private, mapped memory.
    unsafe { ALLOCATOR.lock().init(start as usize, size as usize) };
}
