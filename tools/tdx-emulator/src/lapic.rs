//! The host's local APIC timer: it ends an L2 slice at the L2's TSC_DEADLINE
//! (tdx-abi.md §2.7). The emulator runs L2 with host RFLAGS.IF = 1, the INTR
//! intercept and V_INTR_MASKING (`arch::vmrun_irq`), so the timer interrupt is
//! a #VMEXIT(INTR) whatever L2's own RFLAGS.IF; the engine then compares the
//! TSC with the deadline and turns the slice's end into exit reason 52.
//!
//! xAPIC MMIO at 0xFEE0_0000 (identity-mapped, in the device window), one-shot
//! mode with divide-by-1. The timer's count rate is calibrated against the TSC
//! once (which `hpet` calibrated against the HPET). The 8259 PIC and LINT0/1
//! are masked so no other interrupt can reach the host.

use crate::arch::{port_out, rdtsc};
use crate::phys::{mmio_read, mmio_write};
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Vector of the host timer interrupt (gate in `idt.rs`, stub in `boot.rs`).
pub const TIMER_VECTOR: u8 = 0xEF;

const BASE: u64 = 0xFEE0_0000;
const SVR: u64 = 0xF0;
const LVT_TIMER: u64 = 0x320;
const LVT_LINT0: u64 = 0x350;
const LVT_LINT1: u64 = 0x360;
const LVT_ERROR: u64 = 0x370;
const TIMER_INITIAL: u64 = 0x380;
const TIMER_CURRENT: u64 = 0x390;
const TIMER_DIVIDE: u64 = 0x3E0;
const MASKED: u64 = 1 << 16;

/// APIC timer counts per 2^32 TSC ticks (0 until calibrated: no timer).
static COUNTS_PER_TSC_FX: AtomicU64 = AtomicU64::new(0);

fn read(reg: u64) -> u64 {
    mmio_read(BASE + reg, 4).unwrap_or(0)
}

fn write(reg: u64, v: u64) {
    mmio_write(BASE + reg, 4, v);
}

/// Masks the PIC, LINT0/1 and the error LVT, software-enables the APIC and
/// calibrates the timer against the TSC over about 2 ms.
pub fn init() {
    port_out(0x21, 1, 0xFF);
    port_out(0xA1, 1, 0xFF);
    write(SVR, 0x1FF);
    write(LVT_LINT0, MASKED);
    write(LVT_LINT1, MASKED);
    write(LVT_ERROR, MASKED);
    write(LVT_TIMER, MASKED | TIMER_VECTOR as u64);
    write(TIMER_DIVIDE, 0xB);
    write(TIMER_INITIAL, 0xFFFF_FFFF);
    let t0 = rdtsc();
    let ns0 = crate::hpet::now_ns();
    while crate::hpet::now_ns().saturating_sub(ns0) < 2_000_000 {}
    let counted = 0xFFFF_FFFF - read(TIMER_CURRENT);
    let t1 = rdtsc();
    write(TIMER_INITIAL, 0);
    if counted != 0 && t1 > t0 {
        let fx = ((counted as u128) << 32) / (t1 - t0) as u128;
        COUNTS_PER_TSC_FX.store(fx as u64, Relaxed);
    }
}

/// APIC timer counts per second (for the log), from the TSC rate.
pub fn counts_per_second() -> u64 {
    ((crate::hpet::tsc_hz() as u128 * COUNTS_PER_TSC_FX.load(Relaxed) as u128) >> 32) as u64
}

/// Arms the one-shot timer to fire at TSC value `deadline`. Returns `false`
/// (and arms nothing) when the deadline has already passed.
pub fn arm(deadline: u64) -> bool {
    let now = rdtsc();
    if now >= deadline {
        return false;
    }
    let fx = COUNTS_PER_TSC_FX.load(Relaxed);
    let counts = ((deadline - now) as u128 * fx as u128) >> 32;
    write(LVT_TIMER, TIMER_VECTOR as u64);
    write(TIMER_INITIAL, counts.clamp(1, 0xFFFF_FFFF) as u64);
    true
}

/// Arms the timer to fire as soon as possible (one count).
pub fn arm_now() {
    write(LVT_TIMER, TIMER_VECTOR as u64);
    write(TIMER_INITIAL, 1);
}

/// Stops the timer (a pending interrupt stays pending).
pub fn disarm() {
    write(TIMER_INITIAL, 0);
    write(LVT_TIMER, MASKED | TIMER_VECTOR as u64);
}
