//! Privileged instructions. Every `unsafe` block of the emulator that executes
//! an instruction lives here, each with its justification.
//!
//! The emulator is the only software on the (virtual) machine, runs at CPL 0
//! with interrupts disabled on one CPU, and owns every device it touches, so
//! port I/O, MSR and control-register accesses cannot race with anyone.

#![allow(unsafe_code)]

use core::arch::asm;

/// Guest GPRs that VMRUN does not switch (RAX and RSP live in the VMCB).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Gprs {
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

extern "C" {
    fn svm_run(vmcb_pa: u64, gprs: *mut Gprs);
    fn svm_run_irq(vmcb_pa: u64, gprs: *mut Gprs);
    fn timer_isr();
    fn spurious_isr();
    static isr_table: [u64; 32];
}

/// [`vmrun`] with physical interrupts able to end the guest's slice: host
/// RFLAGS.IF = 1 while the guest runs (GIF = 0 before VMRUN and after
/// #VMEXIT), so with the VMCB's INTR intercept a pending interrupt is a
/// #VMEXIT(INTR) and stays pending afterwards ([`take_pending_interrupts`]).
/// Same contract as [`vmrun`].
pub fn vmrun_irq(vmcb_pa: u64, gprs: &mut Gprs) {
    // SAFETY: as for `vmrun`; the only difference is CLGI/STI before and
    // CLI/STGI after, so no interrupt reaches the host between VMRUN and the
    // return (IF = 0 when GIF becomes 1). The host IDT has gates for every
    // vector a physical interrupt can use (`idt.rs`: the LAPIC timer and
    // spurious vectors; the PIC and LINT0/1 are masked by `lapic::init`).
    unsafe { svm_run_irq(vmcb_pa, gprs) }
}

/// Lets pending physical interrupts in (STI; NOP; CLI): each runs its host
/// IDT handler (`timer_isr` EOIs the LAPIC timer).
pub fn take_pending_interrupts() {
    // SAFETY: the handlers only acknowledge the LAPIC and IRET; interrupts
    // are disabled again before the next instruction of the caller.
    unsafe { asm!("sti", "nop", "cli", options(nomem, nostack)) }
}

/// Addresses of the LAPIC timer and spurious-interrupt stubs in `boot.rs`.
pub fn irq_stub_addresses() -> (u64, u64) {
    (
        timer_isr as *const () as u64,
        spurious_isr as *const () as u64,
    )
}

/// Runs the guest of the VMCB at `vmcb_pa` until the next #VMEXIT.
///
/// The caller guarantees (see [`crate::svm`]) that `vmcb_pa` is a 4 KiB-aligned
/// page owned by the emulator, that the VMCB's NPT, MSRPM and IOPM point at
/// emulator-owned pages and map guest memory only inside the TD's backing
/// store, its shared pages and the identity page directory, and that SVM is
/// enabled with VM_HSAVE_PA set.
pub fn vmrun(vmcb_pa: u64, gprs: &mut Gprs) {
    // SAFETY: per the contract above the guest can only touch memory the NPT
    // maps (never the emulator's own), VMRUN/#VMEXIT restore the host's
    // RSP/RIP/RAX, control registers and flat segments from VM_HSAVE_PA, and
    // `svm_run` preserves every callee-saved register. The state VMLOAD loads
    // (FS/GS/TR/LDTR, syscall MSRs) stays the guest's after the exit; the
    // emulator never uses it (see `boot.rs`). `gprs` is exclusively borrowed.
    unsafe { svm_run(vmcb_pa, gprs) }
}

/// The addresses of the 32 exception stubs in `boot.rs`.
pub fn isr_addresses() -> [u64; 32] {
    // SAFETY: `isr_table` is an immutable table of 32 quads in .rodata, written
    // by the assembler and never modified.
    unsafe { isr_table }
}

/// Loads the IDT register.
pub fn lidt(base: u64, limit: u16) {
    let desc = [limit as u64 | (base << 16), base >> 48];
    // SAFETY: the caller passes a leaked (never freed) IDT whose gates point
    // at the stubs of `boot.rs`; `desc` is a valid 10-byte pseudo-descriptor.
    unsafe { asm!("lidt [{}]", in(reg) desc.as_ptr(), options(readonly, nostack, preserves_flags)) }
}

/// `in` of 1, 2 or 4 bytes.
pub fn port_in(port: u16, size: u8) -> u32 {
    let v: u32;
    // SAFETY: port I/O has no memory effects visible to Rust; the emulator owns
    // the machine's devices (see the module docs).
    unsafe {
        match size {
            1 => {
                let b: u8;
                asm!("in al, dx", out("al") b, in("dx") port, options(nomem, nostack, preserves_flags));
                v = b as u32;
            }
            2 => {
                let w: u16;
                asm!("in ax, dx", out("ax") w, in("dx") port, options(nomem, nostack, preserves_flags));
                v = w as u32;
            }
            _ => {
                asm!("in eax, dx", out("eax") v, in("dx") port, options(nomem, nostack, preserves_flags));
            }
        }
    }
    v
}

/// `out` of 1, 2 or 4 bytes.
pub fn port_out(port: u16, size: u8, value: u32) {
    // SAFETY: as for `port_in`.
    unsafe {
        match size {
            1 => {
                asm!("out dx, al", in("dx") port, in("al") value as u8, options(nomem, nostack, preserves_flags))
            }
            2 => {
                asm!("out dx, ax", in("dx") port, in("ax") value as u16, options(nomem, nostack, preserves_flags))
            }
            _ => {
                asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
            }
        }
    }
}

/// RDMSR.
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only called for architectural MSRs the emulator knows exist
    // (EFER, VM_HSAVE_PA, TSC_AUX); a missing MSR would #GP into the host
    // exception handler, which reports it.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    }
    (hi as u64) << 32 | lo as u64
}

/// WRMSR.
pub fn wrmsr(msr: u32, value: u64) {
    // SAFETY: only called for EFER (adding SVME/NXE, which leave the current
    // paging mode intact), VM_HSAVE_PA (an emulator-owned page) and TSC_AUX.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nomem, nostack, preserves_flags))
    }
}

/// CPUID.
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Stops the CPU for good (interrupts are off).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: CLI; HLT stops this CPU and touches no memory.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) }
    }
}

/// CR2 (the faulting address of the host's last #PF).
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// RDTSC (QEMU TCG passes the host's TSC through: a cheap wall clock).
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}
