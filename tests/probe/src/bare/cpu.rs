//! Everything that touches the CPU directly: the entry point, GDT/IDT, the
//! exception handler with its fixup mechanism, port output, CPUID, RDMSR,
//! VMCALL and the guarded accesses the checks use. All `unsafe` of the probe
//! is in this module.
//!
//! Fixups: before an instruction that is expected to fault, the probe stores
//! the address to resume at in [`FIXUP`]. The exception handler, finding it
//! set, records the vector, error code and RIP, clears it and resumes there.
//! Without a fixup an exception is unexpected: the handler reports it and ends
//! the run.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

core::arch::global_asm!(
    r#"
    .section .text.entry, "ax", @progbits
    .globl probe_start
probe_start:
    cli
    movq %rsp, %rdx
    andq $-16, %rsp
    xorl %ebp, %ebp
    call probe_main
.Lprobe_hang:
    cli
    hlt
    jmp .Lprobe_hang

    .section .text.probe_exceptions, "ax", @progbits
    .balign 16
    .globl probe_exception_stubs
probe_exception_stubs:
    .set probe_vec, 0
    .rept 32
    .balign 16
    .if ((0x60227D00 >> probe_vec) & 1) == 0
    pushq $0
    .endif
    pushq $probe_vec
    jmp probe_exception_common
    .set probe_vec, probe_vec + 1
    .endr

probe_exception_common:
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
    call probe_exception
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

/// A fault the handler fixed up.
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

fn arm() {
    FAULT_VECTOR.store(u64::MAX, Ordering::SeqCst);
}

fn take_fault() -> Option<Fault> {
    let vector = FAULT_VECTOR.swap(u64::MAX, Ordering::SeqCst);
    (vector != u64::MAX).then(|| Fault {
        vector,
        error_code: FAULT_ERROR.load(Ordering::SeqCst),
        rip: FAULT_RIP.load(Ordering::SeqCst),
    })
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
extern "C" fn probe_exception(frame: &mut ExceptionFrame) {
    let fixup = FIXUP.swap(0, Ordering::SeqCst);
    if fixup != 0 {
        FAULT_ERROR.store(frame.error_code, Ordering::SeqCst);
        FAULT_RIP.store(frame.rip, Ordering::SeqCst);
        FAULT_VECTOR.store(frame.vector, Ordering::SeqCst);
        frame.rip = fixup;
        return;
    }
    super::unexpected_exception(frame.vector, frame.error_code, frame.rip)
}

/// Writes one byte to an I/O port (an L2 I/O exit the paravisor forwards).
pub fn outb(port: u16, value: u8) {
    // SAFETY: port output has no memory effects; in L2 it always exits to L1.
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags));
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

/// VMCALL with RDI = `id`, RSI = `a1`, RDX = R8 = 0; returns R8 (LVBS ABI status).
pub fn vmcall(id: u64, a1: u64) -> u64 {
    let r8: u64;
    // SAFETY: VMCALL exits to L1, which writes R8 and advances RIP; it touches
    // no memory of this program.
    unsafe {
        core::arch::asm!(
            "vmcall",
            in("rdi") id,
            in("rsi") a1,
            inout("rdx") 0u64 => _,
            inout("r8") 0u64 => r8,
            options(nostack),
        );
    }
    r8
}

/// RDMSR of `msr`: `Ok(value)`, or the fault it raised.
pub fn rdmsr(msr: u32) -> Result<u64, Fault> {
    let (lo, hi): (u32, u32);
    arm();
    // SAFETY: RDMSR writes EDX:EAX only; a #GP is fixed up by the handler,
    // which resumes at label 2 with all registers preserved.
    unsafe {
        core::arch::asm!(
            "lea {tmp}, [rip + 2f]",
            "mov qword ptr [{fixup}], {tmp}",
            "rdmsr",
            "2:",
            "mov qword ptr [{fixup}], 0",
            tmp = out(reg) _,
            fixup = in(reg) FIXUP.as_ptr(),
            in("ecx") msr,
            inout("eax") 0u32 => lo,
            inout("edx") 0u32 => hi,
            options(nostack),
        );
    }
    match take_fault() {
        Some(f) => Err(f),
        None => Ok((hi as u64) << 32 | lo as u64),
    }
}

/// Reads the byte at `addr`.
pub fn read_u8(addr: u64) -> u8 {
    let p = core::ptr::with_exposed_provenance::<u8>(addr as usize);
    // SAFETY: the callers pass addresses inside the L2 region, which the
    // paravisor maps readable (identity map, alias with R).
    unsafe { p.read_volatile() }
}

/// `mov byte ptr [addr], value` with a fixup: `None` if it completed, else the fault.
pub fn write_u8(addr: u64, value: u8) -> Option<Fault> {
    arm();
    // SAFETY: the callers pass addresses inside the L2 region that no Rust
    // object uses (test pages). A fault (e.g. #GP for a page without W) is
    // fixed up: the handler resumes at label 2.
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

/// Unmapped linear address (beyond the 1 GiB identity map): RAX while
/// jumping into a page that must not be executed. Should the fetch wrongly
/// succeed, the zero bytes there decode as `add [rax], al`, which then #PFs.
const UNMAPPED: u64 = 0x40_0000_0000;

/// `jmp target` with a fixup; returns the fault the fetch raised (`None`
/// cannot happen: the page either faults on fetch or on `add [rax], al`).
pub fn jump_to(target: u64) -> Option<Fault> {
    arm();
    // SAFETY: control leaves only through a fault, which the handler fixes up
    // by resuming at label 2 with the registers preserved (RAX is clobbered
    // and declared so).
    unsafe {
        core::arch::asm!(
            "lea {tmp}, [rip + 2f]",
            "mov qword ptr [{fixup}], {tmp}",
            "mov rax, {unmapped}",
            "jmp {target}",
            "2:",
            "mov qword ptr [{fixup}], 0",
            tmp = out(reg) _,
            fixup = in(reg) FIXUP.as_ptr(),
            target = in(reg) target,
            unmapped = const UNMAPPED,
            out("rax") _,
            options(nostack),
        );
    }
    take_fault()
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
    static probe_exception_stubs: u8;
}

/// Loads the probe's own GDT (reloading CS and the data segments) and an IDT
/// with exception gates 0..31.
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
    let stubs = (&raw const probe_exception_stubs) as u64;
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
