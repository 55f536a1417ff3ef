//! The Intel TDX module 1.5 ABI, as an L1 VMM inside a partitioned TD sees it.
//!
//! Section numbers (`§n.m`) in this crate refer to `shared/reference/tdx-abi.md`,
//! which distils TDX module 1.5.01 (`intel/tdx-module`, branch `tdx_1.5`).
//!
//! * [`Tdcall`] is the only boundary to the hardware: one method that executes a
//!   leaf with a register file. [`hw::HwTdcall`] is the instruction; a software model
//!   of the TDX module implements the same trait for tests and emulation.
//! * [`leaves`] has one typed request per leaf; [`call`] runs it and decodes the
//!   completion status into [`TdxError`] or a typed result.
//! * [`field`], [`attr`], [`enter`], [`vmcall`] and [`vmx`] hold the encodings that
//!   those requests carry.
//!
//! Everything except the `hw` module is `forbid(unsafe_code)`.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod attr;
pub mod enter;
pub mod field;
#[cfg(target_arch = "x86_64")]
pub mod hw;
pub mod leaf;
pub mod leaves;
pub mod regs;
pub mod status;
pub mod vmcall;
pub mod vmx;

pub use attr::{AttrWrFlags, GpaAttr, GpaMapping, L2Attr, PageLevel};
pub use enter::{EnterOutcome, InvdTranslations, L2EnterGuestState, L2ExitInfo, VpEnterFlags};
pub use field::{FieldId, VmcsField};
pub use leaf::Leaf;
pub use leaves::{call, TdcallRequest};
pub use regs::{Registers, Tdcall};
pub use status::{OperandId, StatusCode, TdxError, TdxStatus};

/// Index of an L2 VM inside a partitioned TD (§2.1). VM 0 is the L1 VMM itself
/// and is never a valid target of an L2 operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum L2Vm {
    /// L2 VM #1.
    Vm1 = 1,
    /// L2 VM #2.
    Vm2 = 2,
    /// L2 VM #3.
    Vm3 = 3,
}

impl L2Vm {
    /// All three L2 VM slots a TD can have (§2.1: `NUM_L2_VMS` is 0..3).
    pub const ALL: [L2Vm; 3] = [L2Vm::Vm1, L2Vm::Vm2, L2Vm::Vm3];

    /// The VM index as a number (1..=3).
    pub const fn index(self) -> u8 {
        self as u8
    }

    /// Converts a VM index; 0 (L1) and values above 3 are not L2 VMs.
    pub const fn from_index(index: u64) -> Option<L2Vm> {
        match index {
            1 => Some(L2Vm::Vm1),
            2 => Some(L2Vm::Vm2),
            3 => Some(L2Vm::Vm3),
            _ => None,
        }
    }
}
