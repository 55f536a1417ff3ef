//! Descriptor-table exits (reasons 46 and 47; §2.5 secondary bit 2, §4).
//!
//! Descriptor-table exiting is only turned on by [`crate::pinning::lock_registers`],
//! so every such exit happens after LOCK_REGS: LGDT, LIDT, LLDT and LTR are
//! refused with #GP(0). SGDT, SIDT, SLDT and STR trap too; emulating them needs
//! the memory operand translated through L2's page tables, which the core does
//! not do yet, so they are refused the same way (logged, never silently).

use super::{ExitCtx, ExitResult};
use crate::inject::Exception;
use crate::memory::Platform;
use tdcall::vmx::reason;

/// Instruction-information bits 29:28 name the instruction (SDM Vol. 3 "VM-exit
/// instruction information"): for reason 46 SGDT, SIDT, LGDT, LIDT; for 47
/// SLDT, STR, LLDT, LTR.
fn instruction(basic: u16, info: u32) -> &'static str {
    const GDTR_IDTR: [&str; 4] = ["SGDT", "SIDT", "LGDT", "LIDT"];
    const LDTR_TR: [&str; 4] = ["SLDT", "STR", "LLDT", "LTR"];
    let i = ((info >> 28) & 3) as usize;
    if basic == reason::GDTR_IDTR_ACCESS {
        GDTR_IDTR[i]
    } else {
        LDTR_TR[i]
    }
}

/// Handles exits 46 and 47.
pub fn handle<P: Platform>(cx: &mut ExitCtx<'_, P>) -> ExitResult {
    let name = instruction(cx.exit.exit_reason().basic(), cx.exit.instruction_info);
    log::warn!(
        "L2 {name} at RIP {:#x} after LOCK_REGS: #GP(0)",
        cx.state.rip
    );
    cx.inject(Exception::GeneralProtection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(instruction(46, 3 << 28), "LIDT");
        assert_eq!(instruction(46, 2 << 28), "LGDT");
        assert_eq!(instruction(47, 3 << 28), "LTR");
        assert_eq!(instruction(47, 0), "SLDT");
    }
}
