//! CPUID (exit reason 10; always L2→L1, §4).
//!
//! The leaf is answered by the [`CpuidPolicy`] if it owns it, else forwarded to
//! the host with TDG.VP.VMCALL Instruction.CPUID (§1.5) and adjusted by the
//! policy. EAX..EDX are written zero-extended into RAX..RDX and RIP advances
//! past the instruction.

use tdcall::enter::gpr;
use tdcall::vmcall::{TdVmcall, VmcallStatus};

use super::{ExitCtx, ExitResult};
use crate::handlers::{CpuidPolicy, CpuidResult};
use crate::memory::Platform;

/// Handles a CPUID exit. A host GHCI error yields an all-zero result.
pub fn handle<P: Platform>(cx: &mut ExitCtx<'_, P>, policy: &mut dyn CpuidPolicy) -> ExitResult {
    let leaf = cx.state.gprs[gpr::RAX] as u32;
    let subleaf = cx.state.gprs[gpr::RCX] as u32;
    let result = match policy.local(leaf, subleaf) {
        Some(r) => r,
        None => {
            let out = cx.vmcall(TdVmcall::Cpuid { leaf, subleaf })?;
            let mut r = if out.status == VmcallStatus::SUCCESS {
                CpuidResult {
                    eax: out.r12_r15[0] as u32,
                    ebx: out.r12_r15[1] as u32,
                    ecx: out.r12_r15[2] as u32,
                    edx: out.r12_r15[3] as u32,
                }
            } else {
                log::warn!(
                    "host CPUID {leaf:#x}/{subleaf:#x} failed with GHCI status {:#x}",
                    out.status.0
                );
                CpuidResult::default()
            };
            policy.adjust(leaf, subleaf, &mut r);
            r
        }
    };
    log::debug!("CPUID {leaf:#x}/{subleaf:#x} -> {result:x?}");
    cx.state.gprs[gpr::RAX] = result.eax as u64;
    cx.state.gprs[gpr::RBX] = result.ebx as u64;
    cx.state.gprs[gpr::RCX] = result.ecx as u64;
    cx.state.gprs[gpr::RDX] = result.edx as u64;
    cx.complete_instruction()
}
