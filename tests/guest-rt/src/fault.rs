//! Descriptor tables and fault-resume.
//!
//! [`load_tables`] installs a flat GDT (code 0x08, data 0x10) and an IDT
//! whose gates 0..31 enter one handler. Before an instruction that is
//! expected to fault, a guarded operation stores its resume address in the
//! fixup slot; the handler, finding it set, records vector, error code and
//! RIP, clears it and resumes there. Without a fixup an exception is
//! unexpected: the handler prints a failed check and ends the run.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::checks;

core::arch::global_asm!(
    r#"
    .section .text.guest_rt_exceptions, "ax", @progbits
    .balign 16
    .globl guest_rt_exception_stubs
guest_rt_exception_stubs:
    .set guest_rt_vec, 0
    .rept 32
    .balign 16
    .if ((0x60227D00 >> guest_rt_vec) & 1) == 0
    pushq $0
    .endif
    pushq $guest_rt_vec
    jmp guest_rt_exception_common
    .set guest_rt_vec, guest_rt_vec + 1
    .endr

guest_rt_exception_common:
    pushq %rax
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %rbx
    movq %rsp, %rbx
    leaq 80(%rsp), %rdi
    andq $-16, %rsp
    call guest_rt_exception
    movq %rbx, %rsp
    popq %rbx
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rax
    addq $16, %rsp
    iretq
"#,
    options(att_syntax)
);

/// Resume address for an expected fault; 0 = none.
static FIXUP: AtomicU64 = AtomicU64::new(0);
/// Vector of the last fixed-up fault, `u64::MAX` = none.
static FAULT_VECTOR: AtomicU64 = AtomicU64::new(u64::MAX);
static FAULT_ERROR: AtomicU64 = AtomicU64::new(0);
static FAULT_RIP: AtomicU64 = AtomicU64::new(0);

/// A fault the handler resumed from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Exception vector.
    pub vector: u64,
    /// Error code (0 for vectors without one).
    pub error_code: u64,
    /// RIP at the fault.
    pub rip: u64,
}

impl core::fmt::Debug for Fault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "vector {} error {:#x} at RIP {:#x}",
            self.vector, self.error_code, self.rip
        )
    }
}

/// Clears the last recorded fault; call before a guarded instruction.
pub fn arm() {
    FAULT_VECTOR.store(u64::MAX, Ordering::SeqCst);
}

/// The fault recorded since [`arm`], if any.
pub fn take_fault() -> Option<Fault> {
    let vector = FAULT_VECTOR.swap(u64::MAX, Ordering::SeqCst);
    (vector != u64::MAX).then(|| Fault {
        vector,
        error_code: FAULT_ERROR.load(Ordering::SeqCst),
        rip: FAULT_RIP.load(Ordering::SeqCst),
    })
}

/// The fixup slot, for guarded instructions written elsewhere: store the
/// resume address before the instruction and 0 after it.
pub fn fixup_slot() -> *mut u64 {
    FIXUP.as_ptr()
}

/// What the stubs push, then the CPU's frame (same privilege level).
#[repr(C)]
struct ExceptionFrame {
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

#[no_mangle]
extern "C" fn guest_rt_exception(frame: &mut ExceptionFrame) {
    let fixup = FIXUP.swap(0, Ordering::SeqCst);
    if fixup != 0 {
        FAULT_ERROR.store(frame.error_code, Ordering::SeqCst);
        FAULT_RIP.store(frame.rip, Ordering::SeqCst);
        FAULT_VECTOR.store(frame.vector, Ordering::SeqCst);
        frame.rip = fixup;
        return;
    }
    checks::check(
        "no_unexpected_exception",
        false,
        format_args!(
            "vector {} error code {:#x} at RIP {:#x}",
            frame.vector, frame.error_code, frame.rip
        ),
    );
    checks::finish(0)
}

#[repr(C, align(16))]
struct Idt(UnsafeCell<[u64; 512]>);

// SAFETY: written once by `load_tables` before any exception can use it.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([0; 512]));

/// Null, 64-bit code (0x08), data (0x10); accessed bits preset, so the CPU
/// never writes it.
static GDT: [u64; 3] = [0, 0x00AF_9B00_0000_FFFF, 0x00CF_9300_0000_FFFF];

#[repr(C, packed)]
struct Dtr {
    limit: u16,
    base: u64,
}

extern "C" {
    static guest_rt_exception_stubs: u8;
}

/// Loads the runtime's GDT (reloading CS and the data segments) and an IDT
/// with exception gates 0..31. The entry code calls it first.
pub fn load_tables() {
    let gdtr = Dtr {
        limit: (core::mem::size_of_val(&GDT) - 1) as u16,
        base: GDT.as_ptr() as u64,
    };
    // SAFETY: the GDT is a static with valid flat 64-bit code and data
    // descriptors; the far return reloads CS with the code selector and lands
    // on the next instruction; DS/ES/SS get the data selector.
    unsafe {
        core::arch::asm!(
            "lgdt [{gdtr}]",
            "push 0x08",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov {tmp:e}, 0x10",
            "mov ds, {tmp:e}",
            "mov es, {tmp:e}",
            "mov ss, {tmp:e}",
            gdtr = in(reg) &gdtr,
            tmp = out(reg) _,
        );
    }
    let stubs = (&raw const guest_rt_exception_stubs) as u64;
    let mut table = [0u64; 512];
    for v in 0..32u64 {
        let handler = stubs + 16 * v;
        table[2 * v as usize] =
            (handler & 0xFFFF) | (0x08 << 16) | (0x8E << 40) | (((handler >> 16) & 0xFFFF) << 48);
        table[2 * v as usize + 1] = handler >> 32;
    }
    let idt = IDT.0.get();
    let idtr = Dtr {
        limit: 4095,
        base: idt as u64,
    };
    // SAFETY: `idt` is the IDT static, written before LIDT makes the CPU use
    // it; the gates point at the stubs above with the code selector just loaded.
    unsafe {
        idt.write(table);
        core::arch::asm!("lidt [{}]", in(reg) &idtr, options(readonly, nostack, preserves_flags));
    }
}

/// `mov rax, [addr]` with a fixup: the value, or the fault.
pub fn read_u64(addr: u64) -> Result<u64, Fault> {
    let v: u64;
    arm();
    // SAFETY: a load from an address the caller expects to be mapped or to
    // fault; a fault is fixed up (resume at 2) with the registers preserved.
    unsafe {
        core::arch::asm!(
            "lea {tmp}, [rip + 2f]",
            "mov qword ptr [{fixup}], {tmp}",
            "xor {v:e}, {v:e}",
            "mov {v}, qword ptr [{addr}]",
            "2:",
            "mov qword ptr [{fixup}], 0",
            tmp = out(reg) _,
            fixup = in(reg) FIXUP.as_ptr(),
            addr = in(reg) addr,
            v = out(reg) v,
            options(nostack),
        );
    }
    match take_fault() {
        Some(f) => Err(f),
        None => Ok(v),
    }
}

/// `mov byte ptr [addr], value` with a fixup: `None` if it completed, else the fault.
pub fn write_u8(addr: u64, value: u8) -> Option<Fault> {
    arm();
    // SAFETY: the caller passes an address no Rust object uses (a test page)
    // or one that must fault; a fault is fixed up (resume at 2).
    unsafe {
        core::arch::asm!(
            "lea {tmp}, [rip + 2f]",
            "mov qword ptr [{fixup}], {tmp}",
            "mov byte ptr [{addr}], {val}",
            "2:",
            "mov qword ptr [{fixup}], 0",
            tmp = out(reg) _,
            fixup = in(reg) FIXUP.as_ptr(),
            addr = in(reg) addr,
            val = in(reg_byte) value,
            options(nostack),
        );
    }
    take_fault()
}

/// `ud2` with a fixup: the #UD it raised (a self-test of fault-resume).
pub fn ud2() -> Option<Fault> {
    arm();
    // SAFETY: UD2 raises #UD, which the handler fixes up at 2.
    unsafe {
        core::arch::asm!(
            "lea {tmp}, [rip + 2f]",
            "mov qword ptr [{fixup}], {tmp}",
            "ud2",
            "2:",
            "mov qword ptr [{fixup}], 0",
            tmp = out(reg) _,
            fixup = in(reg) FIXUP.as_ptr(),
            options(nostack),
        );
    }
    take_fault()
}
