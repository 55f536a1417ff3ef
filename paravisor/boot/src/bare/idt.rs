//! L1's IDT: one stub per exception vector 0..31 that reports the vector,
//! error code, RIP and CR2 on the console, sends ReportFatalError and stops.
//! L1 never continues after an exception *of its own*. Interrupts stay
//! disabled (RFLAGS.IF is 0 from reset and never set), so vectors 32..255
//! have no gates; a stray one raises #GP/#NP, which lands here too.
//!
//! Exceptions raised in ring 3 — by a TA instance (`user`, `sandbox`) —
//! are not the paravisor's: the common stub tests the CPL of the saved CS
//! and hands those to `user`'s trap path, which ends the instance's run
//! instead of the TD. The one gate a ring-3 instance may use itself is the
//! system call, vector 0x80 (DPL 3, on the TSS.RSP0 stack); every other
//! gate is DPL 0, so `int n` from ring 3 is #GP.
//!
//! Every exception gate switches to a separate 16 KiB exception stack (IST1
//! of a TSS in GDT slot 0x18), so a stack overflow into the guard page is
//! reported too.

use core::cell::UnsafeCell;
use core::fmt::Write;

use super::console::{self, MessageBuf, RawConsole};

core::arch::global_asm!(
    r#"
    .section .text.pv_exceptions, "ax", @progbits
    .balign 16
    .globl pv_exception_stubs
pv_exception_stubs:
    .set pv_vec, 0
    .rept 32
    .balign 16
    .if ((0x60227D00 >> pv_vec) & 1) == 0
    pushq $0
    .endif
    pushq $pv_vec
    jmp pv_exception_common
    .set pv_vec, pv_vec + 1
    .endr

pv_exception_common:
    testb $3, 24(%rsp)
    jnz pv_user_trap
    movq %rsp, %rdi
    andq $-16, %rsp
    call paravisor_exception
.Lpv_exc_hang:
    pause
    jmp .Lpv_exc_hang
"#,
    options(att_syntax)
);

extern "C" {
    static pv_exception_stubs: u8;
    /// L1's GDT (entry.rs): null, code 0x08, data 0x10, two zero slots for
    /// the TSS, ring-3 data 0x28 and code 0x30.
    static pv_gdt: u8;
}

/// TSS selector in L1's GDT.
const TSS_SELECTOR: u16 = 0x18;
/// Bytes of a 64-bit TSS.
const TSS_SIZE: usize = 104;
/// Offset of RSP0 in the TSS (the stack of the ring-3 system-call gate).
const TSS_RSP0: usize = 0x04;
/// Offset of IST1 in the TSS.
const TSS_IST1: usize = 0x24;
/// Offset of the I/O-map base in the TSS.
const TSS_IOMAP: usize = 0x66;
/// Bytes of the exception stack.
const EXCEPTION_STACK_SIZE: usize = 16 << 10;

#[repr(C, align(16))]
struct Tss(UnsafeCell<[u8; TSS_SIZE]>);

#[repr(C, align(16))]
struct ExceptionStack(UnsafeCell<[u8; EXCEPTION_STACK_SIZE]>);

// SAFETY: the TSS is written once by `load` before LTR; afterwards only the CPU
// reads it. The exception stack is only ever used by the CPU as a stack.
unsafe impl Sync for Tss {}
// SAFETY: as above.
unsafe impl Sync for ExceptionStack {}

#[link_section = ".data.pv_tss"]
static TSS: Tss = Tss(UnsafeCell::new([0; TSS_SIZE]));
#[link_section = ".data.pv_exception_stack"]
static EXCEPTION_STACK: ExceptionStack = ExceptionStack(UnsafeCell::new([0; EXCEPTION_STACK_SIZE]));

/// Distance between the stubs in `pv_exception_stubs`.
const STUB_STRIDE: u64 = 16;
/// Vectors with a stub.
const VECTORS: usize = 32;
/// 64-bit kernel code selector of L1's GDT (entry.rs).
const KERNEL_CS: u64 = 0x08;
/// Present, DPL 0, 64-bit interrupt gate.
const INTERRUPT_GATE: u64 = 0x8E;
/// Present, DPL 3, 64-bit interrupt gate (reachable with `int n` from ring 3).
const USER_INTERRUPT_GATE: u64 = 0xEE;

/// 256 gates of 16 bytes. In `.data` so it can be filled before `.bss` is accepted.
#[repr(C, align(16))]
struct Idt(UnsafeCell<[u64; 512]>);

// SAFETY: written only by `load` on the one running vCPU before interrupts or
// exceptions can use it; afterwards only the CPU reads it.
unsafe impl Sync for Idt {}

#[link_section = ".data.pv_idt"]
static IDT: Idt = Idt(UnsafeCell::new([0; 512]));

/// The 16-byte gate for a handler at `offset`, on IST1.
const fn gate(offset: u64) -> [u64; 2] {
    gate_with(offset, 1, INTERRUPT_GATE)
}

/// A 16-byte gate: handler `offset`, IST index `ist` (0: TSS.RSP0 on a
/// privilege change), type and DPL byte `kind`.
const fn gate_with(offset: u64, ist: u64, kind: u64) -> [u64; 2] {
    let low = (offset & 0xFFFF)
        | (KERNEL_CS << 16)
        | (ist << 32)
        | (kind << 40)
        | (((offset >> 16) & 0xFFFF) << 48);
    [low, offset >> 32]
}

/// Fills the TSS (IST1 = top of the exception stack), puts its descriptor in
/// GDT slots 3-4 and loads TR.
fn load_tss() {
    let tss = TSS.0.get();
    let ist1 = EXCEPTION_STACK.0.get() as u64 + EXCEPTION_STACK_SIZE as u64;
    let base = tss as u64;
    let limit = TSS_SIZE as u64 - 1;
    // Available 64-bit TSS (type 9), present.
    let low = (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (0x89 << 40)
        | (((limit >> 16) & 0xF) << 48)
        | (((base >> 24) & 0xFF) << 56);
    let mut bytes = [0u8; TSS_SIZE];
    bytes[TSS_RSP0..TSS_RSP0 + 8].copy_from_slice(&super::user::trap_stack_top().to_le_bytes());
    bytes[TSS_IST1..TSS_IST1 + 8].copy_from_slice(&ist1.to_le_bytes());
    bytes[TSS_IOMAP..TSS_IOMAP + 2].copy_from_slice(&(TSS_SIZE as u16).to_le_bytes());
    let gdt = (&raw const pv_gdt).cast::<u64>().cast_mut();
    // SAFETY: `tss` is the TSS static; `gdt` is L1's 5-slot GDT in `.data`
    // (entry.rs) and slots 3-4 are the zero TSS slots no segment register uses.
    // Nothing else touches either while this runs. LTR then marks the
    // descriptor busy.
    unsafe {
        tss.write(bytes);
        gdt.add(3).write_volatile(low);
        gdt.add(4).write_volatile(base >> 32);
        core::arch::asm!("ltr {0:x}", in(reg) TSS_SELECTOR, options(nostack, preserves_flags));
    }
}

/// Loads TR, fills the IDT and loads IDTR.
pub fn load() {
    load_tss();
    let stubs = (&raw const pv_exception_stubs) as u64;
    let idt = IDT.0.get();
    let mut table = [0u64; 512];
    for v in 0..VECTORS {
        let [low, high] = gate(stubs + v as u64 * STUB_STRIDE);
        table[2 * v] = low;
        table[2 * v + 1] = high;
    }
    let v = usize::from(lvbs_tee::sandbox::syscall::VECTOR);
    let [low, high] = gate_with(super::user::syscall_stub(), 0, USER_INTERRUPT_GATE);
    table[2 * v] = low;
    table[2 * v + 1] = high;
    // SAFETY: `idt` is the IDT static; nothing else accesses it while it is
    // written (exceptions cannot use it before LIDT below).
    unsafe { idt.write(table) };
    #[repr(C, packed)]
    struct Dtr {
        limit: u16,
        base: u64,
    }
    let dtr = Dtr {
        limit: (512 * 8 - 1) as u16,
        base: idt as u64,
    };
    // SAFETY: the descriptor names a static, fully initialised IDT whose gates
    // point at the stubs above; LIDT only reads the 10-byte descriptor.
    unsafe {
        core::arch::asm!("lidt [{}]", in(reg) &dtr, options(readonly, nostack, preserves_flags));
    }
}

/// What the stubs push, then the CPU's interrupt frame.
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

const NAMES: [&str; 32] = [
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP", "#SS",
    "#GP", "#PF", "-", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "-", "-", "-", "-", "-", "-",
    "#HV", "#VC", "#SX", "-",
];

fn read_cr2() -> u64 {
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe {
        core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags));
    }
    cr2
}

#[no_mangle]
extern "C" fn paravisor_exception(frame: &ExceptionFrame) -> ! {
    let name = NAMES.get(frame.vector as usize).copied().unwrap_or("?");
    let cr2 = read_cr2();
    let _ = writeln!(
        RawConsole,
        "paravisor: FATAL: CPU exception {} {name} error code {:#x} at RIP {:#x} \
         (CS {:#x} RFLAGS {:#x} RSP {:#x} SS {:#x} CR2 {cr2:#x})",
        frame.vector, frame.error_code, frame.rip, frame.cs, frame.rflags, frame.rsp, frame.ss
    );
    let mut msg = MessageBuf::new();
    let _ = write!(
        msg,
        "L1 exception {} {name} err {:#x} RIP {:#x}",
        frame.vector, frame.error_code, frame.rip
    );
    console::fatal(console::FATAL_EXCEPTION, msg.as_bytes())
}
