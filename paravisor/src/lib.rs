//! lvbs-tdx paravisor core: the L1 VMM of a partitioned TD, as a library.
//!
//! Generic over a [`Platform`] (TDCALL + L1 memory), so the same code runs on
//! bare metal and on the host against the TDX-module model. Section numbers
//! (`§n.m`) refer to `shared/reference/tdx-abi.md`.
//!
//! * [`setup_l2_vm`] programs an L2 VM's VMCS, controls, CR ownership, initial
//!   state, L2_CTLS and MSR bitmap (§2.2–§2.7) and returns its [`Vcpu`].
//! * [`Vcpu::run`] is the TDG.VP.ENTER loop (§2.3) with exit dispatch (§4) to
//!   the handlers in [`exits`], which reach the host through TDG.VP.VMCALL (§1.5).
//! * [`handlers`] holds the policy hooks (CPUID, MSR, CR, hypercalls) and their
//!   defaults; [`inject`] injects exceptions into L2.
//! * [`pinning`] pins CR0/CR4, the syscall MSRs and the descriptor tables
//!   (LVBS `LOCK_REGS`); [`heki`] serves the HEKI boot calls (`LOCK_REGS`,
//!   `PROTECT_MEMORY`, `LOAD_KDATA`, `SIGNAL_END_OF_BOOT`) and enforces them.
//! * [`measure`] extends RTMRs, keeps the CCEL event log and serves TDREPORTs
//!   to L2 (measured boot and code admissions).
//! * [`tee`] serves the OP-TEE message call 0x1FFF0 with `lvbs_tee` and its
//!   trusted applications, behind the HEKI service.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod apic;
pub mod exits;
pub mod field;
pub mod handlers;
pub mod heki;
pub mod inject;
pub mod insn;
pub mod interrupts;
pub mod linux;
pub mod measure;
pub mod memory;
pub mod msr_bitmap;
pub mod pinning;
pub mod setup;
pub mod stats;
pub mod tee;
pub mod vcpu;
pub mod walk;

pub use field::FieldAccessError;
pub use handlers::{
    AllowCrWrites, CpuidPolicy, CpuidResult, CrDecision, CrPolicy, CrWrite, DefaultCpuidPolicy,
    DefaultHandlers, EnosysHypercalls, ExitHandlers, Handlers, HypercallArgs, HypercallContext,
    HypercallHandler, MsrPolicy, MsrRead, MsrRule, MsrTable, MsrWrite, PortAccess, ENOSYS,
};
pub use heki::{HekiConfig, HekiService};
pub use interrupts::{Clock, Interrupts};
pub use memory::{L1Memory, MemoryError, Platform};
pub use msr_bitmap::MsrBitmap;
pub use setup::{
    setup_l2_vm, DescriptorTable, InitialState, L2VmConfig, MsrPassthrough, Segment, SetupError,
};
pub use stats::ExitStats;
pub use vcpu::{MmioRange, StopReason, Vcpu};

#[cfg(test)]
mod tests;
