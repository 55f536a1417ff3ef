//! RDMSR / WRMSR (exit reasons 31 / 32; §2.7, §4).
//!
//! Only MSRs whose bit is set in L1's L2 MSR bitmap (or that lie outside the
//! bitmap ranges, or that the module's own policy sends to L1) get here. The
//! [`MsrPolicy`] decides: emulate in L1, forward to the host with
//! TDG.VP.VMCALL Instruction.RDMSR/WRMSR (§1.5), or deny with #GP(0). A host
//! GHCI error also becomes #GP(0), as in a TDX Linux guest. On success RIP
//! advances by 2; a #GP leaves it on the instruction.
//!
//! Pinning (LVBS `LOCK_REGS`) plugs in as an `MsrPolicy` wrapper; see
//! [`MsrPolicy`].

use tdcall::enter::gpr;
use tdcall::vmcall::{TdVmcall, VmcallStatus};

use super::{ExitCtx, ExitResult};
use crate::handlers::{MsrPolicy, MsrRead, MsrWrite};
use crate::inject::Exception;
use crate::memory::Platform;

/// Length of RDMSR and WRMSR (`0F 32`, `0F 30`).
pub const MSR_INSN_LEN: u64 = 2;

/// Handles an RDMSR exit: ECX = index, result in EDX:EAX.
pub fn handle_read<P: Platform>(cx: &mut ExitCtx<'_, P>, policy: &mut dyn MsrPolicy) -> ExitResult {
    let msr = cx.state.gprs[gpr::RCX] as u32;
    let value = match policy.read(msr) {
        MsrRead::Value(v) => v,
        MsrRead::Forward => {
            let out = cx.vmcall(TdVmcall::RdMsr { msr })?;
            if out.status != VmcallStatus::SUCCESS {
                log::warn!("host RDMSR {msr:#x} failed: GHCI {:#x}: #GP", out.status.0);
                return cx.inject(Exception::GeneralProtection);
            }
            out.r11
        }
        MsrRead::Deny => {
            log::warn!(
                "L2 RDMSR {msr:#x} denied: #GP(0) at RIP {:#x}",
                cx.state.rip
            );
            return cx.inject(Exception::GeneralProtection);
        }
    };
    log::trace!("RDMSR {msr:#x} -> {value:#x}");
    cx.state.gprs[gpr::RAX] = value & 0xFFFF_FFFF;
    cx.state.gprs[gpr::RDX] = value >> 32;
    cx.advance_rip(MSR_INSN_LEN);
    Ok(super::ExitAction::Resume)
}

/// Handles a WRMSR exit: ECX = index, value = EDX:EAX.
pub fn handle_write<P: Platform>(
    cx: &mut ExitCtx<'_, P>,
    policy: &mut dyn MsrPolicy,
) -> ExitResult {
    let msr = cx.state.gprs[gpr::RCX] as u32;
    let value = (cx.state.gprs[gpr::RDX] << 32) | (cx.state.gprs[gpr::RAX] & 0xFFFF_FFFF);
    match policy.write(msr, value) {
        MsrWrite::Done => {}
        MsrWrite::Forward => {
            let out = cx.vmcall(TdVmcall::WrMsr { msr, value })?;
            if out.status != VmcallStatus::SUCCESS {
                log::warn!("host WRMSR {msr:#x} failed: GHCI {:#x}: #GP", out.status.0);
                return cx.inject(Exception::GeneralProtection);
            }
        }
        MsrWrite::Deny => {
            log::warn!(
                "L2 WRMSR {msr:#x} <- {value:#x} denied: #GP(0) at RIP {:#x}",
                cx.state.rip
            );
            return cx.inject(Exception::GeneralProtection);
        }
    }
    log::trace!("WRMSR {msr:#x} <- {value:#x}");
    cx.advance_rip(MSR_INSN_LEN);
    Ok(super::ExitAction::Resume)
}
