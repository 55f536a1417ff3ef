//! HLT (exit reason 12; always L2→L1, §4, §2.8).
//!
//! The halt is forwarded with TDG.VP.VMCALL Instruction.HLT (§1.5), R12 = 1
//! when L2 had interrupts disabled. RIP advances past HLT in both cases. With
//! RFLAGS.IF = 0 nothing can wake L2 (interrupt delivery to L2 is not modelled
//! yet), so the loop stops with [`StopReason::Halted`]; with IF = 1 the loop
//! re-enters L2.

use super::{ExitAction, ExitCtx, ExitResult};
use crate::memory::Platform;
use crate::setup::RFLAGS_IF;
use crate::vcpu::StopReason;
use tdcall::vmcall::{TdVmcall, VmcallStatus};

/// Handles a HLT exit.
pub fn handle<P: Platform>(cx: &mut ExitCtx<'_, P>) -> ExitResult {
    let interrupts_blocked = cx.state.rflags & RFLAGS_IF == 0;
    let out = cx.vmcall(TdVmcall::Hlt { interrupts_blocked })?;
    if out.status != VmcallStatus::SUCCESS {
        log::warn!("host HLT returned GHCI status {:#x}", out.status.0);
    }
    cx.complete_instruction()?;
    if interrupts_blocked {
        Ok(ExitAction::Stop(StopReason::Halted))
    } else {
        Ok(ExitAction::Resume)
    }
}
