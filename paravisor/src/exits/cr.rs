//! Control-register access (exit reason 28; §2.6, §4).
//!
//! An L2 write of CR0/CR4 reaches L1 when it changes a bit L1 owns (its
//! guest/host mask bit set and the new value differs from L1's read shadow), or
//! when it touches module-owned CD/NW/NE (§2.6). Handled forms: MOV to CR0/CR4
//! from a GPR, CLTS and LMSW. The handler
//!
//! 1. computes the guest-visible old value (GUEST_CRn outside L1's mask, the
//!    read shadow inside it) and the new value;
//! 2. applies the architectural checks a CPU would (#GP(0) on failure):
//!    reserved bits, PG without PE, NW without CD, clearing PG or PAE from
//!    64-bit code, CR4 bits no TD may set (VMXE, SMXE — VMX is hidden from L2);
//! 3. asks the [`CrPolicy`] (register pinning hook); a rejection injects #GP(0)
//!    and changes nothing;
//! 4. emulates: TDG.VP.WR GUEST_CRn under the L1 write mask (module-owned bits
//!    such as NE, CD, NW, MCE keep their value; a value the module refuses is
//!    answered with #GP(0)) and sets the read shadow of L1-owned bits to the
//!    new value, so L2 reads back what it wrote;
//! 5. advances RIP.
//!
//! Other CR exits (CR3/CR8 moves, MOV from CR) only happen with exiting
//! controls the core never sets, so they stop the loop (fail closed).

use tdcall::field::{controls, vmcs, VmcsField};
use tdcall::vmx::{CrAccessQual, CrAccessType};
use tdcall::StatusCode;

use super::{ExitCtx, ExitResult};
use crate::field;
use crate::handlers::{CrDecision, CrPolicy, CrWrite};
use crate::inject::Exception;
use crate::memory::Platform;
use crate::setup::{CR0_CD, CR0_NW, CR0_PE, CR0_PG, CR0_TS, CR4_MCE, CR4_PAE};

/// Guest CS access-rights bit 13: 64-bit code segment.
const AR_L: u16 = 1 << 13;

/// The VMCS fields of one control register.
struct CrFields {
    guest: VmcsField,
    mask: VmcsField,
    shadow: VmcsField,
    wr_mask: u64,
}

fn fields(cr: u8) -> Option<CrFields> {
    match cr {
        0 => Some(CrFields {
            guest: vmcs::GUEST_CR0,
            mask: vmcs::CR0_GUEST_HOST_MASK,
            shadow: vmcs::CR0_READ_SHADOW,
            wr_mask: controls::GUEST_CR0_L1_WR_MASK,
        }),
        4 => Some(CrFields {
            guest: vmcs::GUEST_CR4,
            mask: vmcs::CR4_GUEST_HOST_MASK,
            shadow: vmcs::CR4_READ_SHADOW,
            wr_mask: controls::GUEST_CR4_L1_WR_MASK,
        }),
        _ => None,
    }
}

/// The architectural check of a CR0/CR4 write; `Err` names the violated rule.
pub fn check_architectural(cr: u8, old: u64, new: u64, code64: bool) -> Result<(), &'static str> {
    match cr {
        0 => {
            if new >> 32 != 0 {
                return Err("CR0 reserved bits 63:32");
            }
            if new & CR0_PG != 0 && new & CR0_PE == 0 {
                return Err("CR0.PG without CR0.PE");
            }
            if new & CR0_NW != 0 && new & CR0_CD == 0 {
                return Err("CR0.NW without CR0.CD");
            }
            if code64 && old & CR0_PG != 0 && new & CR0_PG == 0 {
                return Err("clearing CR0.PG in 64-bit mode");
            }
            Ok(())
        }
        4 => {
            let settable = controls::GUEST_CR4_L1_WR_MASK | CR4_MCE;
            if new & !settable != 0 {
                return Err("CR4 bit not available to L2 (reserved, VMXE or SMXE)");
            }
            if code64 && old & CR4_PAE != 0 && new & CR4_PAE == 0 {
                return Err("clearing CR4.PAE in 64-bit mode");
            }
            Ok(())
        }
        _ => Err("not CR0 or CR4"),
    }
}

/// Handles a CR-access exit.
pub fn handle<P: Platform>(cx: &mut ExitCtx<'_, P>, policy: &mut dyn CrPolicy) -> ExitResult {
    let q = CrAccessQual::decode(cx.exit.qualification);
    let Some(f) = fields(q.cr) else {
        return cx.unhandled("CR access to a register other than CR0/CR4");
    };
    if q.access == CrAccessType::MovFrom || (q.cr == 4 && q.access != CrAccessType::MovTo) {
        return cx.unhandled("CR access form");
    }
    let guest = field::read_vmcs(cx.platform, cx.vm, f.guest)?;
    let mask = field::read_vmcs(cx.platform, cx.vm, f.mask)?;
    let shadow = field::read_vmcs(cx.platform, cx.vm, f.shadow)?;
    let old = (guest & !mask) | (shadow & mask);
    let new = match q.access {
        CrAccessType::MovTo => cx.gpr(q.gpr),
        CrAccessType::Clts => old & !CR0_TS,
        // LMSW loads PE, MP, EM, TS; it can set PE but never clear it.
        CrAccessType::Lmsw => (old & !0xE) | (q.lmsw_data as u64 & 0xF) | (old & CR0_PE),
        CrAccessType::MovFrom => return cx.unhandled("MOV from CR"),
    };
    let code64 = cx.exit.cs_ar & AR_L != 0;
    if let Err(rule) = check_architectural(q.cr, old, new, code64) {
        log::warn!(
            "L2 CR{} write {old:#x} -> {new:#x} at RIP {:#x}: {rule}: #GP(0)",
            q.cr,
            cx.state.rip
        );
        return cx.inject(Exception::GeneralProtection);
    }
    let write = CrWrite { cr: q.cr, old, new };
    if policy.check(&write) == CrDecision::Reject {
        log::warn!(
            "L2 CR{} write {old:#x} -> {new:#x} at RIP {:#x} rejected by policy: #GP(0)",
            q.cr,
            cx.state.rip
        );
        return cx.inject(Exception::GeneralProtection);
    }
    match field::write_vmcs(cx.platform, cx.vm, f.guest, new, f.wr_mask) {
        Ok(_) => {}
        Err(e) if e.error.code() == StatusCode::METADATA_FIELD_VALUE_NOT_VALID => {
            log::warn!(
                "L2 CR{} value {new:#x} refused by the module ({e}): #GP(0)",
                q.cr
            );
            return cx.inject(Exception::GeneralProtection);
        }
        Err(e) => return Err(e.into()),
    }
    if mask != 0 {
        field::write_vmcs(cx.platform, cx.vm, f.shadow, new, mask)?;
    }
    log::debug!("L2 CR{} {old:#x} -> {new:#x}", q.cr);
    cx.complete_instruction()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::{CR0_NE, CR0_WP, CR4_SMXE, CR4_VMXE};

    #[test]
    fn architectural_rules() {
        let cr0 = CR0_PE | CR0_NE | CR0_WP | CR0_PG;
        assert_eq!(check_architectural(0, cr0, cr0 & !CR0_WP, true), Ok(()));
        assert!(check_architectural(0, cr0, cr0 & !CR0_PG, true).is_err());
        assert_eq!(check_architectural(0, cr0, cr0 & !CR0_PG, false), Ok(()));
        assert!(check_architectural(0, 0, CR0_PG, false).is_err());
        assert!(check_architectural(0, 0, CR0_PE | CR0_NW, false).is_err());
        assert!(check_architectural(0, 0, 1 << 32 | CR0_PE, false).is_err());
        assert!(check_architectural(4, 0, CR4_VMXE, false).is_err());
        assert!(check_architectural(4, 0, CR4_SMXE, false).is_err());
        assert_eq!(check_architectural(4, 0, CR4_MCE | CR4_PAE, false), Ok(()));
        assert!(check_architectural(4, CR4_PAE, 0, true).is_err());
    }
}
