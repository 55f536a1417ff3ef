//! `guest_rt`: the runtime shared by the bare-metal L2 test guests of
//! lvbs-tdx (docs/emulator-contract.md, "Paravisor ⇄ probe").
//!
//! * [`entry!`] names the guest's main function; the runtime's entry point
//!   `guest_rt_start` (link the guest with `ENTRY(guest_rt_start)` and keep
//!   `.text.entry` first) aligns the stack, loads the runtime's GDT and IDT
//!   and calls it with the contract's entry registers ([`Boot`]).
//! * [`fault`]: exception gates 0..31 with *fault-resume*: an instruction
//!   that is expected to fault runs with a fixup address, and the handler
//!   records the fault and resumes there; any other exception is reported
//!   as a failed check and ends the run.
//! * [`console`]: COM1 output with a per-guest prefix ([`say!`]).
//! * [`checks`]: `<prefix>: check <name>: PASS|FAIL <detail>` lines and the
//!   end of the run (failure count to the debug-exit port 0xF4).
//! * [`cpu`]: port output, CPUID, RDTSC, VMCALL (LVBS ABI: RDI = id,
//!   RSI/RDX/R8 = arguments, status in R8), HLT.
//! * `heap` (feature `heap`): a global allocator over guest memory.
//!
//! On any other target than `x86_64-unknown-none` the crate is empty.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

#[cfg(target_os = "none")]
pub mod checks;
#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
pub mod cpu;
#[cfg(target_os = "none")]
mod entry;
#[cfg(target_os = "none")]
pub mod fault;
#[cfg(all(target_os = "none", feature = "heap"))]
pub mod heap;

#[cfg(target_os = "none")]
pub use entry::Boot;

/// COM1 data port (console).
pub const COM1: u16 = 0x3F8;
/// QEMU `isa-debug-exit`: the guest writes its failure count here to end the run.
pub const DEBUG_EXIT_PORT: u16 = 0xF4;
/// The emulator's statistics-mark port: a 32-bit write of 0 starts an
/// interval, a write of `n > 0` ends it and makes the emulator print the
/// exits, TDCALLs and time of the interval divided by `n` (docs/emulator.md).
pub const STATS_MARK_PORT: u16 = 0xF8;
/// Start value for [`STATS_MARK_PORT`]: the emulator also counts L1's
/// instructions in the interval (single-stepping L1; slow, so for a few
/// iterations only; `tdx-emulator` `host::MARK_COUNT_L1`).
pub const MARK_COUNT_L1: u32 = 1 << 31;
/// Highest failure count the guest reports (0x7C..0x7F mean the paravisor
/// or the emulator ended the run).
pub const MAX_EXIT_VALUE: u32 = 0x7B;

/// Names the guest's main function, `fn(guest_rt::Boot) -> !`, which the
/// runtime calls once the GDT and IDT are loaded.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[no_mangle]
        extern "Rust" fn guest_rt_user_main(boot: $crate::Boot) -> ! {
            let main: fn($crate::Boot) -> ! = $main;
            main(boot)
        }
    };
}

/// Prints `<prefix>: <formatted text>` and a newline on the console.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::console::line(format_args!($($arg)*))
    };
}
