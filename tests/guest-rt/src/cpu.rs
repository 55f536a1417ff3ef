//! Instructions the guests use directly. In L2 `OUT`, CPUID and VMCALL exit
//! to the paravisor; RDTSC and HLT run natively (HLT with IF = 0 ends the
//! paravisor's loop).

/// Writes one byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: port output has no memory effects; in L2 it always exits to L1.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags));
    }
}

/// Writes a doubleword to an I/O port.
pub fn outl(port: u16, value: u32) {
    // SAFETY: as `outb`.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags));
    }
}

/// CPUID `leaf`/`subleaf`: EAX, EBX, ECX, EDX.
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let (eax, ecx, edx): (u32, u32, u32);
    let rbx: u64;
    // SAFETY: CPUID only writes the named registers; RBX (reserved by LLVM) is
    // saved in a scratch register and restored.
    unsafe {
        core::arch::asm!(
            "mov {tmp}, rbx",
            "cpuid",
            "xchg {tmp}, rbx",
            tmp = out(reg) rbx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nomem, nostack, preserves_flags),
        );
    }
    [eax, rbx as u32, ecx, edx]
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC writes EDX:EAX only.
    unsafe {
        core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    ((hi as u64) << 32) | lo as u64
}

/// VMCALL with the LVBS ABI: RDI = `id`, RSI, RDX, R8 = `a1`..`a3`;
/// returns R8 (a negative errno or a result).
pub fn vmcall(id: u64, a1: u64, a2: u64, a3: u64) -> u64 {
    let r8: u64;
    // SAFETY: VMCALL exits to L1, which may read and write guest memory the
    // arguments name (buffers the caller owns and does not hold references
    // into across the call), writes R8 and advances RIP. `memory` is not in
    // the options, so the compiler assumes memory may change.
    unsafe {
        core::arch::asm!(
            "vmcall",
            in("rdi") id,
            in("rsi") a1,
            inout("rdx") a2 => _,
            inout("r8") a3 => r8,
            options(nostack),
        );
    }
    r8
}

/// CR3 (L2 reads it without an exit).
pub fn read_cr3() -> u64 {
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe {
        core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags));
    }
    cr3
}

/// Stops: interrupts off and HLT (the paravisor ends the run on HLT with IF = 0).
pub fn halt() -> ! {
    loop {
        // SAFETY: CLI/HLT only stop this vCPU.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
