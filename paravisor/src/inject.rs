//! Event injection into L2 through the VM-entry interruption fields (§2.5, §2.8 path a).
//!
//! The event is delivered on the next TDG.VP.ENTER. A fault leaves RIP on the
//! faulting instruction, so exit handlers that inject must not advance RIP.

use tdcall::field::vmcs;
use tdcall::vmx::{vector, EventType, InterruptionInfo};
use tdcall::{L2Vm, Tdcall};

use crate::field::{self, FieldAccessError};

/// Writes VM_ENTRY_INTR_INFO (0x4016) and, when `error_code` is given,
/// VM_ENTRY_EXCEPTION_ERROR_CODE (0x4018) of `vm` (§2.5: both fully L1-writable).
pub fn inject_event<T: Tdcall + ?Sized>(
    tdcall: &mut T,
    vm: L2Vm,
    info: InterruptionInfo,
    error_code: Option<u32>,
) -> Result<(), FieldAccessError> {
    if let Some(code) = error_code {
        field::write_vmcs(
            tdcall,
            vm,
            vmcs::VM_ENTRY_EXCEPTION_ERROR_CODE,
            code as u64,
            0xFFFF_FFFF,
        )?;
    }
    field::write_vmcs(
        tdcall,
        vm,
        vmcs::VM_ENTRY_INTR_INFO,
        info.0 as u64,
        0xFFFF_FFFF,
    )?;
    Ok(())
}

/// Injects hardware exception `vector`, with an error code if one is given.
pub fn inject_exception<T: Tdcall + ?Sized>(
    tdcall: &mut T,
    vm: L2Vm,
    vector: u8,
    error_code: Option<u32>,
) -> Result<(), FieldAccessError> {
    let info = InterruptionInfo::new(vector, EventType::HardwareException, error_code.is_some());
    inject_event(tdcall, vm, info, error_code)
}

/// Injects #GP(0), the answer to every policy violation (design.md §4).
pub fn inject_gp0<T: Tdcall + ?Sized>(tdcall: &mut T, vm: L2Vm) -> Result<(), FieldAccessError> {
    inject_event(tdcall, vm, InterruptionInfo::general_protection(), Some(0))
}

/// Injects #UD (no error code).
pub fn inject_ud<T: Tdcall + ?Sized>(tdcall: &mut T, vm: L2Vm) -> Result<(), FieldAccessError> {
    inject_event(tdcall, vm, InterruptionInfo::invalid_opcode(), None)
}

/// The exceptions the exit handlers inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exception {
    /// #GP(0).
    GeneralProtection,
    /// #UD.
    InvalidOpcode,
}

impl Exception {
    /// The vector.
    pub const fn vector(self) -> u8 {
        match self {
            Exception::GeneralProtection => vector::GP,
            Exception::InvalidOpcode => vector::UD,
        }
    }

    /// Injects this exception into `vm`.
    pub fn inject<T: Tdcall + ?Sized>(
        self,
        tdcall: &mut T,
        vm: L2Vm,
    ) -> Result<(), FieldAccessError> {
        match self {
            Exception::GeneralProtection => inject_gp0(tdcall, vm),
            Exception::InvalidOpcode => inject_ud(tdcall, vm),
        }
    }
}
