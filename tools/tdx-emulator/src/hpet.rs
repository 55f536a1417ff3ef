//! The HPET at 0xFED0_0000 as a wall clock (QEMU: 10 ns period).

use crate::phys::{mmio_read, mmio_write};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

const BASE: u64 = 0xFED0_0000;
static PERIOD_FS: AtomicU64 = AtomicU64::new(0);

/// Starts the main counter.
pub fn init() {
    let caps = mmio_read(BASE, 8).unwrap_or(0);
    PERIOD_FS.store(caps >> 32, Relaxed);
    let cfg = mmio_read(BASE + 0x10, 8).unwrap_or(0);
    mmio_write(BASE + 0x10, 8, cfg | 1);
}

/// Nanoseconds since the counter started (0 without an HPET).
pub fn now_ns() -> u64 {
    let ticks = mmio_read(BASE + 0xF0, 8).unwrap_or(0);
    (ticks as u128 * PERIOD_FS.load(Relaxed) as u128 / 1_000_000) as u64
}
