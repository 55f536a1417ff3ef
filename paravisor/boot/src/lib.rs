//! The platform-independent part of the lvbs-tdx bare-metal paravisor binary.
//!
//! Everything between "64-bit mode with a stack" and the TDG.VP.ENTER loop
//! lives here, generic over [`paravisor::Platform`], so `cargo test` runs the
//! same boot sequence against the TDX-module model that the `paravisor` binary
//! runs in a TD (docs/emulator-contract.md). The binary (`src/main.rs`) adds
//! what needs the real machine: the 32-bit entry, page tables, GDT/IDT, heap,
//! console and panic handling.
//!
//! * [`bootinfo`]: the `BootInfo` page at GPA `0x1000` and the L2 layout.
//! * [`memory`]: TDG.MEM.PAGE.ACCEPT and TDG.MEM.PAGE.ATTR.WR over ranges.
//! * [`l2`]: L2's page tables, GDT/TSS, initial state and the probe echo call.
//! * [`checks`]: self-checks (illegal TDCALLs must fail with the right status).
//! * [`measured`]: RTMR measurements of the L2 payload and the attestation calls.
//! * [`boot`]: the sequence that ties them together.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod boot;
pub mod bootinfo;
pub mod checks;
pub mod l2;
pub mod linux;
pub mod measured;
pub mod memory;

#[cfg(test)]
mod tests;
