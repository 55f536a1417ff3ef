//! SVM bring-up and the VMRUN entry point.

use crate::arch::{self, Gprs};
use crate::page::Page;
use crate::vmcb::{Vmcb, EFER_SVME};
use alloc::boxed::Box;

const MSR_EFER: u32 = 0xC000_0080;
const MSR_VM_HSAVE_PA: u32 = 0xC001_0117;
const EFER_NXE: u64 = 1 << 11;

/// Checks SVM and NPT, sets EFER.SVME|NXE and VM_HSAVE_PA.
pub fn init() -> Result<(), &'static str> {
    if arch::cpuid(0x8000_0001, 0)[2] & (1 << 2) == 0 {
        return Err("no SVM (CPUID 0x80000001 ECX bit 2); run QEMU with -cpu max");
    }
    if arch::cpuid(0x8000_000A, 0)[3] & 1 == 0 {
        return Err("no nested paging (CPUID 0x8000000A EDX bit 0)");
    }
    arch::wrmsr(MSR_EFER, arch::rdmsr(MSR_EFER) | EFER_SVME | EFER_NXE);
    let hsave: &'static Page = Box::leak(Page::new());
    arch::wrmsr(MSR_VM_HSAVE_PA, hsave.pa());
    Ok(())
}

/// Runs the guest of `vmcb` until its next #VMEXIT.
pub fn run(vmcb: &Vmcb, gprs: &mut Gprs) {
    arch::vmrun(vmcb.pa(), gprs);
}

/// [`run`] with host interrupts able to end the guest's slice (`arch::vmrun_irq`).
pub fn run_irq(vmcb: &Vmcb, gprs: &mut Gprs) {
    arch::vmrun_irq(vmcb.pa(), gprs);
}
