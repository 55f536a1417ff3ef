//! MMIO emulation on EPT violations inside a configured MMIO range (reason 48;
//! §3.5 — either a direct L2→L1 exit for an un-aliased private range, or a
//! host-routed exit, class 0x1100, for a GPA hole).
//!
//! 1. Fetch up to 15 instruction bytes at GPA = L2 RIP with
//!    [`L1Memory::read`](crate::L1Memory::read). **Known gap:** this assumes L2
//!    runs identity-mapped (linear = physical), which holds for the current test
//!    guests; a Linux L2 needs a walk of L2's page tables (CR3) to translate RIP.
//! 2. Decode with [`crate::insn`] (MOV r/m↔reg, MOV r/m←imm, MOVZX/MOVSX).
//! 3. Check the decoded direction against the exit qualification; a mismatch,
//!    an instruction fetch from MMIO, or undecodable bytes inject #GP(0) (and
//!    are logged). The exit's GPA, not the decoded operand, is the address.
//! 4. Forward with TDG.VP.VMCALL #VE.RequestMMIO (§1.5); a load writes the
//!    value into the destination register; RIP advances by the decoded length.
//!    A host GHCI error reads as all ones and drops stores.

use tdcall::vmcall::{TdVmcall, VmcallStatus};
use tdcall::vmx::EptViolationQual;

use super::{ExitCtx, ExitResult};
use crate::inject::Exception;
use crate::insn::{self, MmioOp, StoreSource, MAX_INSN_LEN};
use crate::memory::Platform;

/// Reads the instruction bytes at `rip` (identity-mapped L2). If 15 bytes are
/// not readable it falls back to the bytes up to the end of RIP's 4 KiB page.
/// Returns the buffer and the number of valid bytes.
pub fn fetch_instruction<P: Platform + ?Sized>(
    platform: &mut P,
    rip: u64,
) -> Option<([u8; MAX_INSN_LEN], usize)> {
    let mut buf = [0u8; MAX_INSN_LEN];
    if platform.read(rip, &mut buf).is_ok() {
        return Some((buf, MAX_INSN_LEN));
    }
    let to_page_end = (0x1000 - (rip & 0xFFF)) as usize;
    let n = to_page_end.min(MAX_INSN_LEN);
    if n < MAX_INSN_LEN && platform.read(rip, &mut buf[..n]).is_ok() {
        return Some((buf, n));
    }
    None
}

/// Handles an EPT violation at a GPA inside an MMIO range.
pub fn handle<P: Platform>(cx: &mut ExitCtx<'_, P>) -> ExitResult {
    let q = EptViolationQual::from_bits_retain(cx.exit.qualification);
    let gpa = cx.exit.gpa;
    let rip = cx.state.rip;
    if q.contains(EptViolationQual::FETCH) {
        log::warn!("L2 instruction fetch from MMIO GPA {gpa:#x}: #GP(0)");
        return cx.inject(Exception::GeneralProtection);
    }
    let Some((bytes, n)) = fetch_instruction(cx.platform, rip) else {
        log::warn!("MMIO at {gpa:#x}: instruction bytes at RIP {rip:#x} unreadable: #GP(0)");
        return cx.inject(Exception::GeneralProtection);
    };
    let decoded = match insn::decode_mmio(&bytes[..n], rip) {
        Ok(d) => d,
        Err(e) => {
            log::warn!(
                "MMIO at {gpa:#x}: cannot emulate instruction {:02x?} at RIP {rip:#x} ({e:?}): #GP(0)",
                &bytes[..n]
            );
            return cx.inject(Exception::GeneralProtection);
        }
    };
    let exit_is_write = q.contains(EptViolationQual::WRITE);
    if decoded.op.is_store() != exit_is_write {
        log::warn!(
            "MMIO at {gpa:#x}: decoded {:?} disagrees with the exit qualification {:#x}: #GP(0)",
            decoded.op,
            cx.exit.qualification
        );
        return cx.inject(Exception::GeneralProtection);
    }
    match decoded.op {
        MmioOp::Store { src, size } => {
            let value = match src {
                StoreSource::Gpr(g) => g.read(cx.gpr(g.index)),
                StoreSource::Imm(v) => v,
            } & size.mask();
            let out = cx.vmcall(TdVmcall::MmioWrite { size, gpa, value })?;
            if out.status != VmcallStatus::SUCCESS {
                log::warn!("host MMIO write {gpa:#x} failed: GHCI {:#x}", out.status.0);
            }
            log::trace!("MMIO write {gpa:#x}/{} <- {value:#x}", size as u8);
        }
        MmioOp::Load { dest, size, extend } => {
            let out = cx.vmcall(TdVmcall::MmioRead { size, gpa })?;
            let raw = if out.status == VmcallStatus::SUCCESS {
                out.r11
            } else {
                log::warn!("host MMIO read {gpa:#x} failed: GHCI {:#x}", out.status.0);
                u64::MAX
            };
            let value = insn::extend_value(raw, size, extend);
            let full = dest.write(cx.gpr(dest.index), value);
            cx.set_gpr(dest.index, full);
            log::trace!(
                "MMIO read {gpa:#x}/{} -> {:#x}",
                size as u8,
                raw & size.mask()
            );
        }
    }
    cx.advance_rip(decoded.len);
    Ok(super::ExitAction::Resume)
}
