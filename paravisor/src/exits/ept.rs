//! EPT violations outside the MMIO ranges (exit reason 48; §3.5).
//!
//! Such an exit means L2 touched a private page without (enough) L2 alias
//! permissions. L1 fails closed: the access does not happen, L1 logs the GPA,
//! GLA and access, and injects #GP(0) into L2 — never a #PF, which Linux would
//! treat as spurious and retry forever (design.md §4).
//!
//! Known gap: a PENDING_EPT_VIOLATION (R13 type 6, the page is not accepted
//! yet) should later be answered by accepting and aliasing the page (§3.5,
//! §5.8 step 4, as Intel's SVSM does lazily). For now it is logged and gets
//! #GP(0) like any other violation.

use tdcall::enter::EXT_EXIT_QUAL_PENDING_EPT_VIOLATION;
use tdcall::vmx::EptViolationQual;

use super::{ExitCtx, ExitResult};
use crate::inject::Exception;
use crate::memory::Platform;

/// A one-word description of the access in an EPT-violation qualification.
pub fn access_name(q: EptViolationQual) -> &'static str {
    if q.contains(EptViolationQual::FETCH) {
        "fetch"
    } else if q.contains(EptViolationQual::WRITE) {
        // Bits 0 and 1 together are an A/D write to a paging structure (§3.5).
        "write"
    } else if q.contains(EptViolationQual::READ) {
        "read"
    } else {
        "access"
    }
}

/// Handles an EPT violation that is not MMIO: log and inject #GP(0).
pub fn handle<P: Platform>(cx: &mut ExitCtx<'_, P>) -> ExitResult {
    let q = EptViolationQual::from_bits_retain(cx.exit.qualification);
    let gla = if q.contains(EptViolationQual::GLA_VALID) {
        cx.exit.gla
    } else {
        0
    };
    let allowed = |bit: EptViolationQual, c: char| if q.contains(bit) { c } else { '-' };
    let pending = cx.exit.ext_qual_type == EXT_EXIT_QUAL_PENDING_EPT_VIOLATION;
    log::warn!(
        "L2 EPT violation: {} GPA {:#x} GLA {:#x} (valid {}) CPL {} RIP {:#x}, page allows {}{}{}{}{}: #GP(0)",
        access_name(q),
        cx.exit.gpa,
        gla,
        q.contains(EptViolationQual::GLA_VALID),
        cx.exit.cpl,
        cx.state.rip,
        allowed(EptViolationQual::READABLE, 'r'),
        allowed(EptViolationQual::WRITABLE, 'w'),
        allowed(EptViolationQual::EXECUTABLE, 'x'),
        allowed(EptViolationQual::USER_EXECUTABLE, 'u'),
        if pending { " (page pending: accept not implemented yet)" } else { "" },
    );
    cx.inject(Exception::GeneralProtection)
}
