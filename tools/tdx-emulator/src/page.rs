//! Memory the CPU reads or writes behind Rust's back — VMCBs, nested page
//! tables, the MSR and I/O permission maps — as page-aligned arrays of
//! `AtomicU64`. Atomics make the accesses sound without `unsafe`: the CPU
//! writes a VMCB only during VMRUN, when no Rust code runs, and relaxed loads
//! and stores compile to plain moves.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// `N` qwords, 4 KiB aligned, at a fixed host-physical (= identity-mapped) address.
#[repr(C, align(4096))]
pub struct Pages<const N: usize>(pub [AtomicU64; N]);

/// One 4 KiB page.
pub type Page = Pages<512>;

impl<const N: usize> Pages<N> {
    /// A zeroed, heap-allocated block.
    pub fn new() -> Box<Self> {
        Box::new(Pages(core::array::from_fn(|_| AtomicU64::new(0))))
    }

    /// A block with every bit set.
    pub fn ones() -> Box<Self> {
        Box::new(Pages(core::array::from_fn(|_| AtomicU64::new(u64::MAX))))
    }

    /// The host-physical address (the emulator identity-maps its RAM).
    pub fn pa(&self) -> u64 {
        self as *const Self as u64
    }

    /// Qword `i`.
    pub fn get(&self, i: usize) -> u64 {
        self.0[i].load(Relaxed)
    }

    /// Sets qword `i`.
    pub fn set(&self, i: usize, v: u64) {
        self.0[i].store(v, Relaxed)
    }

    /// Reads `width` bytes (1, 2, 4, 8) at byte offset `off`, which must not
    /// cross a qword boundary.
    pub fn read(&self, off: usize, width: usize) -> u64 {
        let q = self.get(off / 8) >> ((off % 8) * 8);
        if width >= 8 {
            q
        } else {
            q & ((1u64 << (width * 8)) - 1)
        }
    }

    /// Writes `width` bytes (1, 2, 4, 8) at byte offset `off` (no qword crossing).
    pub fn write(&self, off: usize, width: usize, v: u64) {
        if width >= 8 {
            self.set(off / 8, v);
            return;
        }
        let shift = (off % 8) * 8;
        let mask = ((1u64 << (width * 8)) - 1) << shift;
        let q = self.get(off / 8);
        self.set(off / 8, (q & !mask) | ((v << shift) & mask));
    }

    /// Sets bit `bit` of the block.
    pub fn set_bit(&self, bit: usize, on: bool) {
        let q = self.get(bit / 64);
        let m = 1u64 << (bit % 64);
        self.set(bit / 64, if on { q | m } else { q & !m });
    }
}
