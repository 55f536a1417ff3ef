//! MMIO emulation on EPT violations inside a configured MMIO range (reason 48;
//! §3.5 — either a direct L2→L1 exit for an un-aliased private range, or a
//! host-routed exit, class 0x1100, for a GPA hole).
//!
//! 1. Fetch up to 15 instruction bytes at CS:RIP through L2's page tables
//!    ([`crate::walk`], from GUEST_CR3 and the paging controls of the L2
//!    VMCS) with [`GuestMemory::fetch_code`]: each page the bytes touch is
//!    translated on its own, must allow the fetch at L2's CPL and must have an
//!    executable L2 alias. L2 reached this exit by executing the instruction,
//!    so a translation that fails now means L2 changed its tables (or relies
//!    on a stale TLB entry): the handler injects #GP(0) and logs the reason
//!    rather than a #PF (which would need CR2, shared with L1, §2.10, and an
//!    error code for a fault the CPU never took). Only 64-bit code is decoded
//!    (EFER.LMA and CS.L); anything else is #GP(0) as well.
//! 2. Decode with [`crate::insn`] (MOV r/m↔reg, MOV r/m←imm, MOVZX/MOVSX).
//! 3. Check the decoded direction against the exit qualification; a mismatch,
//!    an instruction fetch from MMIO, or undecodable bytes inject #GP(0) (and
//!    are logged). The exit's GPA, not the decoded operand, is the address.
//! 4. Forward with TDG.VP.VMCALL #VE.RequestMMIO (§1.5); a load writes the
//!    value into the destination register; RIP advances by the decoded length.
//!    A host GHCI error reads as all ones and drops stores.

use tdcall::vmcall::{TdVmcall, VmcallStatus};
use tdcall::vmx::EptViolationQual;

use super::guest::{self, GuestMemory};
use super::{ExitCtx, ExitResult};
use crate::inject::Exception;
use crate::insn::{self, MmioOp, StoreSource, MAX_INSN_LEN};
use crate::memory::Platform;

/// Reads the instruction bytes at L2's CS:RIP for the exit in `cx` (64-bit
/// code only: CS base 0, [`GuestMemory::fetch_code`]). Logs and returns `None`
/// if they cannot be read; the caller injects #GP(0).
pub fn fetch_instruction<P: Platform>(
    cx: &mut ExitCtx<'_, P>,
    what: &str,
) -> Option<([u8; MAX_INSN_LEN], usize)> {
    let paging = match guest::read_paging(cx.platform, cx.vm) {
        Ok(p) => p,
        Err(e) => {
            log::warn!("{what}: cannot read L2 paging state: {e}");
            return None;
        }
    };
    fetch_instruction_with(cx, &paging, what)
}

/// [`fetch_instruction`] with L2's paging state already read.
pub fn fetch_instruction_with<P: Platform>(
    cx: &mut ExitCtx<'_, P>,
    paging: &crate::walk::Paging,
    what: &str,
) -> Option<([u8; MAX_INSN_LEN], usize)> {
    let rip = cx.state.rip;
    if !is_64bit_code(paging, cx.exit.cs_ar) {
        log::warn!(
            "{what}: L2 is not in 64-bit mode (EFER {:#x}, CS AR {:#x}); only 64-bit code is emulated",
            paging.efer,
            cx.exit.cs_ar
        );
        return None;
    }
    let user = cx.exit.cpl == 3;
    match GuestMemory::new(cx.platform, cx.vm).fetch_code(paging, rip, user) {
        Ok(b) => Some(b),
        Err(e) => {
            log::warn!("{what}: instruction bytes at RIP {rip:#x} unavailable: {e}");
            None
        }
    }
}

/// EFER.LMA and CS.L (VMX access rights bit 13, SDM Vol. 3C §25.4.1).
pub fn is_64bit_code(paging: &crate::walk::Paging, cs_ar: u16) -> bool {
    paging.efer & crate::walk::EFER_LMA != 0 && cs_ar & (1 << 13) != 0
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
    let Some((bytes, n)) = fetch_instruction(cx, "MMIO") else {
        log::warn!("MMIO at {gpa:#x} from RIP {rip:#x}: #GP(0)");
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
