//! The emulator's own IDT: any exception in the emulator is a bug; report it
//! and end the run instead of triple-faulting silently.

use crate::arch;
use crate::emu_println;
use alloc::boxed::Box;

/// Installs gates for vectors 0–31 (64-bit interrupt gates, CS 0x08), the
/// LAPIC timer vector [`crate::lapic::TIMER_VECTOR`] and the spurious vector 0xFF.
pub fn init() {
    let isrs = arch::isr_addresses();
    let table: &'static mut [u64; 512] = Box::leak(Box::new([0u64; 512]));
    let mut gate = |v: usize, addr: u64| {
        table[2 * v] =
            (addr & 0xFFFF) | (0x08 << 16) | (0x8E00 << 32) | ((addr >> 16) & 0xFFFF) << 48;
        table[2 * v + 1] = addr >> 32;
    };
    for (v, &addr) in isrs.iter().enumerate() {
        gate(v, addr);
    }
    let (timer, spurious) = arch::irq_stub_addresses();
    gate(crate::lapic::TIMER_VECTOR as usize, timer);
    gate(0xFF, spurious);
    arch::lidt(table.as_ptr() as u64, (512 * 8 - 1) as u16);
}

/// Called by the stubs in `boot.rs` with `[vector, error, rip, cs, rflags, rsp, ss]`.
// The exception stubs in `boot.rs` call this by name.
#[allow(unsafe_code)]
#[no_mangle]
extern "C" fn emulator_exception(frame: &[u64; 7]) -> ! {
    emu_println!(
        "FATAL: emulator exception {} error {:#x} at RIP {:#x} (RSP {:#x}, CR2 {:#x})",
        frame[0],
        frame[1],
        frame[2],
        frame[5],
        arch::read_cr2()
    );
    crate::finish(crate::EXIT_EMULATOR_BUG)
}
