//! VMCALL (exit reason 18; always L2→L1, §4): the LVBS/HEKI call gate
//! (design.md §4, heki-lvbs-abi.md §2.1).
//!
//! RDI = function id, RSI/RDX/R8 = arguments; the [`HypercallHandler`]'s
//! result goes in R8 (a negative errno or a non-negative token) and RIP
//! advances past the 3-byte VMCALL. A VMCALL from CPL > 0 is refused with #UD,
//! so user space cannot reach the handlers.

use tdcall::enter::gpr;

use super::{ExitAction, ExitCtx, ExitResult};
use crate::handlers::{HypercallArgs, HypercallContext, HypercallHandler};
use crate::inject::Exception;
use crate::memory::Platform;

/// Length of VMCALL (`0F 01 C1`).
pub const VMCALL_LEN: u64 = 3;

/// Handles a VMCALL exit.
pub fn handle<P: Platform>(
    cx: &mut ExitCtx<'_, P>,
    handler: &mut dyn HypercallHandler,
) -> ExitResult {
    if cx.exit.cpl != 0 {
        log::warn!(
            "VMCALL from CPL {} at RIP {:#x}: #UD",
            cx.exit.cpl,
            cx.state.rip
        );
        return cx.inject(Exception::InvalidOpcode);
    }
    let args = HypercallArgs {
        id: cx.state.gprs[gpr::RDI],
        a1: cx.state.gprs[gpr::RSI],
        a2: cx.state.gprs[gpr::RDX],
        a3: cx.state.gprs[gpr::R8],
    };
    let ret = {
        let mut hc = HypercallContext {
            platform: &mut *cx.platform,
            vm: cx.vm,
            state: &*cx.state,
            invalidate: &mut *cx.invalidate,
        };
        handler.handle(&mut hc, &args)
    };
    log::debug!(
        "VMCALL id {:#x} ({:#x}, {:#x}, {:#x}) -> {}",
        args.id,
        args.a1,
        args.a2,
        args.a3,
        ret as i64
    );
    cx.state.gprs[gpr::R8] = ret;
    cx.advance_rip(VMCALL_LEN);
    Ok(ExitAction::Resume)
}
