//! Wall-clock time: the HPET at 0xFED0_0000 (QEMU: 10 ns period) calibrates
//! the TSC once; hot paths then read the TSC, which is far cheaper than an
//! emulated MMIO read.

use crate::arch::rdtsc;
use crate::phys::{mmio_read, mmio_write};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

const BASE: u64 = 0xFED0_0000;
static PERIOD_FS: AtomicU64 = AtomicU64::new(0);
static TSC0: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds per TSC tick as 32.32 fixed point (0 until calibrated).
static NS_PER_TICK_FX: AtomicU64 = AtomicU64::new(0);

fn hpet_ns() -> u64 {
    let ticks = mmio_read(BASE + 0xF0, 8).unwrap_or(0);
    (ticks as u128 * PERIOD_FS.load(Relaxed) as u128 / 1_000_000) as u64
}

/// Starts the HPET and calibrates the TSC against it over 5 ms.
pub fn init() {
    let caps = mmio_read(BASE, 8).unwrap_or(0);
    PERIOD_FS.store(caps >> 32, Relaxed);
    let cfg = mmio_read(BASE + 0x10, 8).unwrap_or(0);
    mmio_write(BASE + 0x10, 8, cfg | 1);
    if caps >> 32 == 0 {
        return;
    }
    let (h0, t0) = (hpet_ns(), rdtsc());
    let mut h1 = h0;
    while h1.saturating_sub(h0) < 5_000_000 {
        h1 = hpet_ns();
    }
    let t1 = rdtsc();
    TSC0.store(t0, Relaxed);
    let fx = ((h1 - h0) as u128) << 32;
    NS_PER_TICK_FX.store((fx / (t1 - t0).max(1) as u128) as u64, Relaxed);
}

/// Nanoseconds since [`init`] (0 without an HPET).
pub fn now_ns() -> u64 {
    let dt = rdtsc().saturating_sub(TSC0.load(Relaxed));
    ((dt as u128 * NS_PER_TICK_FX.load(Relaxed) as u128) >> 32) as u64
}

/// TSC ticks per second (0 until calibrated).
pub fn tsc_hz() -> u64 {
    let fx = NS_PER_TICK_FX.load(Relaxed);
    if fx == 0 {
        return 0;
    }
    ((1_000_000_000u128 << 32) / fx as u128) as u64
}
