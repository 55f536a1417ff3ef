//! Port I/O (exit reason 30; unconditional I/O exiting, always L2→L1, §4).
//!
//! OUT forwards the low `size` bytes of RAX with TDG.VP.VMCALL Instruction.IO
//! (§1.5). IN asks the host and merges the value into AL/AX/EAX the way the
//! instruction does: IN to EAX zero-extends into RAX, IN to AL/AX keeps the
//! upper bits. A host GHCI error reads as all ones (floating bus) and drops
//! writes.
//!
//! String I/O (INS/OUTS, with or without REP) is **not supported yet**: it
//! injects #UD and logs the port. Nothing the demo guests or Linux's early
//! serial console do needs it.

use tdcall::enter::gpr;
use tdcall::vmcall::{AccessSize, TdVmcall, VmcallStatus};
use tdcall::vmx::IoQual;

use super::{ExitCtx, ExitResult};
use crate::inject::Exception;
use crate::memory::Platform;

/// Merges an IN result of `size` into the old RAX.
pub fn merge_in(old_rax: u64, size: AccessSize, value: u64) -> u64 {
    match size {
        AccessSize::B4 | AccessSize::B8 => value & 0xFFFF_FFFF,
        _ => (old_rax & !size.mask()) | (value & size.mask()),
    }
}

/// Handles an I/O-instruction exit.
pub fn handle<P: Platform>(cx: &mut ExitCtx<'_, P>) -> ExitResult {
    let q = IoQual::decode(cx.exit.qualification);
    let size = match AccessSize::from_bytes(q.size as u64) {
        Some(s) if s != AccessSize::B8 => s,
        _ => {
            log::error!(
                "I/O exit with invalid size {} (qual {:#x})",
                q.size,
                cx.exit.qualification
            );
            return cx.inject(Exception::InvalidOpcode);
        }
    };
    if q.string {
        log::warn!(
            "string I/O ({} port {:#x}, rep {}) not supported: #UD",
            if q.is_in { "INS" } else { "OUTS" },
            q.port,
            q.rep
        );
        return cx.inject(Exception::InvalidOpcode);
    }
    let rax = cx.state.gprs[gpr::RAX];
    if q.is_in {
        let out = cx.vmcall(TdVmcall::IoRead { size, port: q.port })?;
        let value = if out.status == VmcallStatus::SUCCESS {
            out.r11
        } else {
            log::warn!(
                "host IN port {:#x} failed: GHCI {:#x}",
                q.port,
                out.status.0
            );
            u64::MAX
        };
        cx.state.gprs[gpr::RAX] = merge_in(rax, size, value);
        log::trace!("IN {:#x}/{} -> {:#x}", q.port, q.size, value & size.mask());
    } else {
        let value = (rax & size.mask()) as u32;
        let out = cx.vmcall(TdVmcall::IoWrite {
            size,
            port: q.port,
            value,
        })?;
        if out.status != VmcallStatus::SUCCESS {
            log::warn!(
                "host OUT port {:#x} failed: GHCI {:#x}",
                q.port,
                out.status.0
            );
        }
        log::trace!("OUT {:#x}/{} <- {value:#x}", q.port, q.size);
    }
    cx.complete_instruction()
}

/// An access L1 answers itself ([`crate::handlers::PortAccess::Absent`]:
/// `value` all ones; [`crate::handlers::PortAccess::Value`]): IN reads
/// `value`, OUT is dropped, the host is not asked. String I/O still gets
/// #UD, as in [`handle`].
pub fn local<P: Platform>(cx: &mut ExitCtx<'_, P>, value: u32) -> ExitResult {
    let q = IoQual::decode(cx.exit.qualification);
    let size = match AccessSize::from_bytes(q.size as u64) {
        Some(s) if s != AccessSize::B8 && !q.string => s,
        _ => return cx.inject(Exception::InvalidOpcode),
    };
    if q.is_in {
        let rax = cx.state.gprs[gpr::RAX];
        cx.state.gprs[gpr::RAX] = merge_in(rax, size, value as u64);
    }
    log::trace!(
        "{} port {:#x}: answered by L1",
        if q.is_in { "IN" } else { "OUT" },
        q.port
    );
    cx.complete_instruction()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_merges_like_the_instruction() {
        let old = 0x1122_3344_5566_7788;
        assert_eq!(merge_in(old, AccessSize::B1, 0xAB), 0x1122_3344_5566_77AB);
        assert_eq!(merge_in(old, AccessSize::B2, 0xABCD), 0x1122_3344_5566_ABCD);
        assert_eq!(merge_in(old, AccessSize::B4, 0xDEAD_BEEF), 0xDEAD_BEEF);
        assert_eq!(
            merge_in(old, AccessSize::B1, u64::MAX),
            0x1122_3344_5566_77FF
        );
    }
}
