//! Ring 3: entering a TA instance and getting control back.
//!
//! [`enter`] saves the kernel's callee-saved registers and RSP, loads the
//! instance's registers from a [`UserRegs`] and `iretq`s to CPL 3 (user code
//! selector [`USER_CS`], data [`USER_DS`]; GDT in `entry`). Control comes
//! back only through the IDT: the DPL-3 system-call gate
//! ([`lvbs_tee::sandbox::syscall::VECTOR`], `int 0x80`, on the TSS.RSP0
//! stack) or any exception raised at CPL 3 (the exception stubs of `idt`
//! test the saved CS and branch here instead of to the fatal handler).
//! `pv_user_trap` stores the instance's registers, vector, error code and
//! CR2 in the [`UserRegs`], reloads the kernel segments and stack and returns
//! from [`enter`]. Interrupts stay disabled throughout (IF = 0 in the kernel
//! and forced 0 for the instance), so nothing else can arrive in between.
//!
//! While an instance runs, CR0.TS is set ([`with_fpu_trapping`]): the x87,
//! MMX and SSE registers hold L2's state (TDX shares them between L1 and L2,
//! and the paravisor itself never uses them), so any FPU instruction in a TA
//! is #NM and kills it rather than reading or changing L2's registers.

use x86_64::registers::control::{Cr0, Cr0Flags};

/// Ring-3 data selector: GDT slot 0x28, RPL 3.
pub const USER_DS: u64 = 0x2B;
/// Ring-3 64-bit code selector: GDT slot 0x30, RPL 3.
pub const USER_CS: u64 = 0x33;
/// RFLAGS bits an instance may carry across a system call: CF, PF, AF, ZF,
/// SF, DF, OF. IF, TF, IOPL, NT, AC and the rest are never loaded (bit 1 is
/// always 1).
pub const USER_RFLAGS: u64 = 0x0CD5;
/// The highest user address + 1: the lower canonical half.
pub const USER_LIMIT: u64 = 0x0000_8000_0000_0000;

/// Bytes of the stack the system-call gate switches to (TSS.RSP0). The trap
/// path uses 22 words of it before switching back to the kernel stack.
const TRAP_STACK_SIZE: usize = 4096;

core::arch::global_asm!(
    r#"
    .section .data.pv_user, "aw", @progbits
    .balign 16
pv_kernel_rsp:
    .quad 0
pv_user_regs:
    .quad 0
    .balign 16
    .globl pv_trap_stack_bottom
pv_trap_stack_bottom:
    .fill {trap_stack}, 1, 0
    .globl pv_trap_stack_top
pv_trap_stack_top:

    .section .text.pv_user, "ax", @progbits
    .balign 16
    .globl pv_user_enter
pv_user_enter:
    pushq %rbx
    pushq %rbp
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, pv_kernel_rsp(%rip)
    movq %rdi, pv_user_regs(%rip)
    pushq 168(%rdi)
    pushq 160(%rdi)
    pushq 152(%rdi)
    pushq 144(%rdi)
    pushq 136(%rdi)
    movl ${user_ds}, %eax
    movw %ax, %ds
    movw %ax, %es
    movq 0(%rdi), %r15
    movq 8(%rdi), %r14
    movq 16(%rdi), %r13
    movq 24(%rdi), %r12
    movq 32(%rdi), %r11
    movq 40(%rdi), %r10
    movq 48(%rdi), %r9
    movq 56(%rdi), %r8
    movq 64(%rdi), %rbp
    movq 80(%rdi), %rsi
    movq 88(%rdi), %rdx
    movq 96(%rdi), %rcx
    movq 104(%rdi), %rbx
    movq 112(%rdi), %rax
    movq 72(%rdi), %rdi
    iretq

    .balign 16
    .globl pv_syscall_stub
pv_syscall_stub:
    pushq $0
    pushq ${vector}
    jmp pv_user_trap

    .balign 16
    .globl pv_user_trap
pv_user_trap:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    cld
    movq pv_user_regs(%rip), %rdi
    movq %rsp, %rsi
    movl $22, %ecx
    rep movsq
    movq %cr2, %rax
    movq %rax, (%rdi)
    movq pv_kernel_rsp(%rip), %rsp
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbp
    popq %rbx
    ret
"#,
    trap_stack = const TRAP_STACK_SIZE,
    user_ds = const USER_DS,
    vector = const lvbs_tee::sandbox::syscall::VECTOR as u64,
    options(att_syntax)
);

extern "C" {
    static pv_trap_stack_top: u8;
    static pv_syscall_stub: u8;
    fn pv_user_enter(regs: *mut UserRegs);
}

/// Top of the TSS.RSP0 stack (for `idt`).
pub fn trap_stack_top() -> u64 {
    (&raw const pv_trap_stack_top) as u64
}

/// Address of the system-call gate's stub (for `idt`).
pub fn syscall_stub() -> u64 {
    (&raw const pv_syscall_stub) as u64
}

/// An instance's registers, in the order `pv_user_trap` stores them: the
/// general registers as pushed, then the vector and error code the stub
/// pushed, the CPU's interrupt frame and CR2.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Vector that ended the run (0x80: system call).
    pub vector: u64,
    /// The exception's error code (0 if it has none).
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
    /// CR2 when the run ended (the #PF address).
    pub cr2: u64,
}

/// Why [`enter`] refused to run the instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadUserState;

/// Runs the instance with `regs` until it traps back; `regs` then holds its
/// state at the trap. The segment selectors and RFLAGS are forced to ring-3
/// values first; a RIP or RSP outside the user half is refused (the
/// instance could only have got there by a fault, and `iretq` to a
/// non-canonical address would fault in the kernel). Call with the
/// instance's CR3 loaded and inside [`with_fpu_trapping`].
pub fn enter(regs: &mut UserRegs) -> Result<(), BadUserState> {
    if regs.rip >= USER_LIMIT || regs.rsp >= USER_LIMIT {
        return Err(BadUserState);
    }
    regs.cs = USER_CS;
    regs.ss = USER_DS;
    regs.rflags = (regs.rflags & USER_RFLAGS) | 0x2;
    // SAFETY: `pv_user_enter` saves the callee-saved registers and RSP and
    // `iretq`s to CPL 3 with `regs` (CS/SS ring 3, RFLAGS without IF/IOPL,
    // RIP and RSP in the user half, checked above). The CPU can come back
    // only through the IDT gates, which store the instance's state into
    // `*regs` (valid: a unique reference for the whole call) and restore the
    // saved registers, segments and stack before returning here. Caller-saved
    // registers are clobbered as by any call; the instance cannot touch
    // kernel memory (its page tables map nothing of the kernel for CPL 3).
    unsafe { pv_user_enter(regs) };
    Ok(())
}

/// Runs `f` with CR0.TS set (FPU instructions trap, see the module docs).
pub fn with_fpu_trapping<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: setting TS only makes x87/MMX/SSE instructions raise #NM; the
    // paravisor is soft-float and never executes them, and TS is cleared
    // again before returning.
    unsafe { Cr0::update(|c| c.insert(Cr0Flags::TASK_SWITCHED)) };
    let r = f();
    // SAFETY: as above; clears the bit set above.
    unsafe { Cr0::update(|c| c.remove(Cr0Flags::TASK_SWITCHED)) };
    r
}

/// What [`harden_cr4`] turned on.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cr4Hardening {
    /// CR4.SMEP: the paravisor never executes a TA's (user) pages.
    pub smep: bool,
    /// CR4.UMIP: a TA cannot read GDTR/IDTR/LDTR/TR or the machine status
    /// word (SGDT/SIDT/SLDT/STR/SMSW at CPL 3 raise #GP, which ends it).
    pub umip: bool,
}

/// Turns on SMEP and UMIP for L1 where the CPU has them (CPUID.7.0:EBX[7],
/// ECX[2]; SDM Vol. 3A §2.5). SMAP is left off: an interrupt gate keeps the
/// TA's RFLAGS.AC, so the entry path would need CLAC first, and the
/// paravisor reaches TA memory only through its supervisor identity map.
pub fn harden_cr4() -> Cr4Hardening {
    use core::arch::x86_64::__cpuid_count;
    use x86_64::registers::control::{Cr4, Cr4Flags};
    let leaf7 = __cpuid_count(7, 0);
    let h = Cr4Hardening {
        smep: leaf7.ebx & (1 << 7) != 0,
        umip: leaf7.ecx & (1 << 2) != 0,
    };
    let mut add = Cr4Flags::empty();
    if h.smep {
        add |= Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION;
    }
    if h.umip {
        add |= Cr4Flags::USER_MODE_INSTRUCTION_PREVENTION;
    }
    // SAFETY: SMEP only forbids supervisor fetches from user pages, which the
    // paravisor never executes (TA code runs at CPL 3); UMIP only affects
    // CPL 3. Both are supported (checked above); nothing else changes.
    unsafe { Cr4::update(|c| c.insert(add)) };
    h
}
