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
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

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

    // The #UD gate of the attacker's IDT copy: marks that it ran, then takes
    // the ordinary path (so the fixup still resumes).
    .balign 16
    .globl probe_evil_ud
probe_evil_ud:
    movb $1, PROBE_EVIL_HIT(%rip)
    jmp probe_exception_stubs + 16 * 6

    // Kernel text the attack suite tries to overwrite (never executed).
    .section .text.probe_target, "ax", @progbits
    .balign 16
    .globl probe_text_target
probe_text_target:
    .fill 16, 1, 0xC3

    // The user page (PROTECT_MEMORY R: user-executable only) and the
    // executable-data page (R|W): each starts with `ret`.
    .section .probe_user, "aw", @progbits
    .balign 4096
    .globl probe_user_page
probe_user_page:
    .byte 0xC3
    .fill 4095, 1, 0xCC

    .section .probe_xdata, "aw", @progbits
    .balign 4096
    .globl probe_xdata_page
probe_xdata_page:
    .byte 0xC3
    .fill 4095, 1, 0xCC
"#,
    options(att_syntax)
);

/// Set by the #UD gate of the attacker's IDT copy.
#[no_mangle]
static PROBE_EVIL_HIT: AtomicU8 = AtomicU8::new(0);

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

/// `in al, dx`.
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: port input has no memory effects; in L2 it always exits to L1.
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags));
    }
    v
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
    static probe_evil_ud: u8;
    static probe_text_target: u8;
    static probe_user_page: u8;
    static probe_xdata_page: u8;
    static __probe_text_start: u8;
    static __probe_text_end: u8;
    static __probe_rodata_start: u8;
    static __probe_rodata_end: u8;
    static __probe_data_start: u8;
    static __probe_data_end: u8;
}

/// The probe's layout, from the linker script (all page aligned except the
/// targets).
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// `[start, end)` of `.text`.
    pub text: (u64, u64),
    /// `[start, end)` of `.rodata`.
    pub rodata: (u64, u64),
    /// `[start, end)` of `.data` and `.bss`.
    pub data: (u64, u64),
    /// The user page (starts with `ret`).
    pub user_page: u64,
    /// The executable-data page (starts with `ret`).
    pub xdata_page: u64,
    /// 16 bytes of `ret` in `.text` that nothing executes.
    pub text_target: u64,
}

/// The probe's layout.
pub fn layout() -> Layout {
    Layout {
        text: (
            (&raw const __probe_text_start) as u64,
            (&raw const __probe_text_end) as u64,
        ),
        rodata: (
            (&raw const __probe_rodata_start) as u64,
            (&raw const __probe_rodata_end) as u64,
        ),
        data: (
            (&raw const __probe_data_start) as u64,
            (&raw const __probe_data_end) as u64,
        ),
        user_page: (&raw const probe_user_page) as u64,
        xdata_page: (&raw const probe_xdata_page) as u64,
        text_target: (&raw const probe_text_target) as u64,
    }
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

/// Whether the attacker's #UD gate ran (and clears the mark).
pub fn evil_gate_ran() -> bool {
    PROBE_EVIL_HIT.swap(0, Ordering::SeqCst) != 0
}

/// CR0 (the read shadow for L1-owned bits).
pub fn read_cr0() -> u64 {
    let v: u64;
    // SAFETY: reading CR0 has no side effects (in L2 it may exit to the paravisor).
    unsafe {
        core::arch::asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags));
    }
    v
}

/// CR4 (the read shadow for L1-owned bits).
pub fn read_cr4() -> u64 {
    let v: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe {
        core::arch::asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags));
    }
    v
}

/// `mov cr0, value` (`cr` = 0) or `mov cr4, value` (`cr` = 4) with a fixup.
pub fn write_cr(cr: u8, value: u64) -> Option<Fault> {
    arm();
    // SAFETY: the probe only writes CR0/CR4 values that keep paging, protected
    // mode and its own mappings intact (it clears or sets WP, SMEP, SMAP); a
    // refused write raises #GP, which the handler fixes up (resume at 2).
    unsafe {
        if cr == 0 {
            core::arch::asm!(
                "lea {tmp}, [rip + 2f]",
                "mov qword ptr [{fixup}], {tmp}",
                "mov cr0, {v}",
                "2:",
                "mov qword ptr [{fixup}], 0",
                tmp = out(reg) _,
                fixup = in(reg) FIXUP.as_ptr(),
                v = in(reg) value,
                options(nostack),
            );
        } else {
            core::arch::asm!(
                "lea {tmp}, [rip + 2f]",
                "mov qword ptr [{fixup}], {tmp}",
                "mov cr4, {v}",
                "2:",
                "mov qword ptr [{fixup}], 0",
                tmp = out(reg) _,
                fixup = in(reg) FIXUP.as_ptr(),
                v = in(reg) value,
                options(nostack),
            );
        }
    }
    take_fault()
}

/// WRMSR of `value` to `msr`: `None` if it completed, else the fault.
pub fn wrmsr(msr: u32, value: u64) -> Option<Fault> {
    arm();
    // SAFETY: the probe writes MSRs whose values it does not depend on (the
    // syscall MSRs point at its own handler and are never used); a #GP is
    // fixed up (resume at 2).
    unsafe {
        core::arch::asm!(
            "lea {tmp}, [rip + 2f]",
            "mov qword ptr [{fixup}], {tmp}",
            "wrmsr",
            "2:",
            "mov qword ptr [{fixup}], 0",
            tmp = out(reg) _,
            fixup = in(reg) FIXUP.as_ptr(),
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack),
        );
    }
    take_fault()
}

/// `call target` with a fixup: `None` if the code there ran and returned
/// (the probe only calls pages that start with `ret`), else the fault the
/// fetch raised. RSP is restored either way.
pub fn call_to(target: u64) -> Option<Fault> {
    arm();
    // SAFETY: `target` holds a `ret` (or must not be executable at all: then
    // the fetch faults and the handler resumes at 2 with the registers
    // preserved). R12 keeps RSP across a faulting call (the pushed return
    // address is dropped), R13 the fixup slot; the callee is a bare `ret`.
    unsafe {
        core::arch::asm!(
            "lea {tmp}, [rip + 2f]",
            "mov qword ptr [r13], {tmp}",
            "mov r12, rsp",
            "call {target}",
            "2:",
            "mov rsp, r12",
            "mov qword ptr [r13], 0",
            tmp = out(reg) _,
            target = in(reg) target,
            in("r13") FIXUP.as_ptr(),
            out("r12") _,
        );
    }
    take_fault()
}

/// Calls the System V leaf function at `target` with `(a, b)` and returns
/// RAX, or the fault its fetch (or body) raised.
pub fn call2(target: u64, a: u64, b: u64) -> Result<u64, Fault> {
    arm();
    let ret: u64;
    // SAFETY: `target` is a leaf function of the HEKI test module that only
    // computes in caller-saved registers (or is not executable: the fetch
    // faults and the handler resumes at 2 with the registers preserved). R12
    // keeps RSP across a faulting call, R13 the fixup slot; every
    // caller-saved register is declared clobbered.
    unsafe {
        core::arch::asm!(
            "lea r11, [rip + 2f]",
            "mov qword ptr [r13], r11",
            "mov r12, rsp",
            "xor eax, eax",
            "call r10",
            "2:",
            "mov rsp, r12",
            "mov qword ptr [r13], 0",
            in("r10") target,
            in("r13") FIXUP.as_ptr(),
            out("r12") _,
            inout("rdi") a => _,
            inout("rsi") b => _,
            out("rax") ret,
            clobber_abi("C"),
        );
    }
    match take_fault() {
        Some(f) => Err(f),
        None => Ok(ret),
    }
}

/// Copies `data` to `addr`: free L2 memory outside the image that no Rust
/// object covers (the HEKI module checks' area).
pub fn copy_to(addr: u64, data: &[u8]) {
    // SAFETY: callers pass writable, identity-mapped L2 pages outside the
    // probe's image (so `data` cannot overlap them) that no reference covers.
    unsafe {
        core::ptr::copy_nonoverlapping(
            data.as_ptr(),
            core::ptr::with_exposed_provenance_mut::<u8>(addr as usize),
            data.len(),
        )
    }
}

/// GDTR/IDTR (limit, base) and the LDTR/TR selectors as SGDT, SIDT, SLDT and
/// STR report them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredTables {
    /// SGDT.
    pub gdt: (u16, u64),
    /// SIDT.
    pub idt: (u16, u64),
    /// SLDT (32-bit register form, zero-extended).
    pub ldt: u64,
    /// STR (64-bit register form).
    pub tr: u64,
}

/// Two pages for an SGDT image that crosses a page boundary.
#[repr(C, align(4096))]
struct TwoPages(UnsafeCell<[u8; 8192]>);

// SAFETY: only `store_tables` writes it, through SGDT, on the one vCPU.
unsafe impl Sync for TwoPages {}

static CROSSING: TwoPages = TwoPages(UnsafeCell::new([0; 8192]));

fn image(b: &[u8]) -> (u16, u64) {
    let mut base = [0u8; 8];
    base.copy_from_slice(&b[2..10]);
    (u16::from_le_bytes([b[0], b[1]]), u64::from_le_bytes(base))
}

/// Runs SGDT, SIDT, SLDT and STR (after LOCK_REGS each exits to the paravisor,
/// which emulates it), plus an SGDT whose 10-byte image starts 4 bytes before
/// a page boundary. Returns the registers and the page-crossing SGDT's image.
pub fn store_tables() -> (StoredTables, (u16, u64)) {
    let mut g = [0u8; 10];
    let mut i = [0u8; 10];
    let (ldt, tr): (u64, u64);
    let crossing = CROSSING.0.get().cast::<u8>().wrapping_add(4096 - 4);
    // SAFETY: SGDT/SIDT write 10 bytes to the two local buffers and to
    // `CROSSING` at 4092..4102 (inside the static); SLDT/STR only write the
    // output registers. Preset RAX/RCX bits show the zero-extension.
    unsafe {
        core::arch::asm!(
            "sgdt [{g}]",
            "sidt [{i}]",
            "sgdt [{c}]",
            "sldt {l:e}",
            "str {t}",
            g = in(reg) g.as_mut_ptr(),
            i = in(reg) i.as_mut_ptr(),
            c = in(reg) crossing,
            l = inout(reg) u64::MAX => ldt,
            t = inout(reg) u64::MAX => tr,
            options(nostack, preserves_flags),
        );
    }
    let mut c = [0u8; 10];
    // SAFETY: 4092..4102 is inside `CROSSING`; only the asm above writes it.
    unsafe { core::ptr::copy_nonoverlapping(crossing, c.as_mut_ptr(), 10) };
    (
        StoredTables {
            gdt: image(&g),
            idt: image(&i),
            ldt,
            tr,
        },
        image(&c),
    )
}

/// The GDTR and IDTR values [`load_tables`] loaded.
pub fn own_tables() -> ((u16, u64), (u16, u64)) {
    (
        (
            (core::mem::size_of_val(&GDT) - 1) as u16,
            GDT.as_ptr() as u64,
        ),
        (4095, IDT.0.get() as u64),
    )
}

/// `lidt` (`idt`) or `lgdt` of `base`/`limit` with a fixup.
pub fn load_table(idt: bool, base: u64, limit: u16) -> Option<Fault> {
    let dtr = Dtr { limit, base };
    arm();
    // SAFETY: the table is a complete copy of the live one (only the #UD gate
    // or an extra data descriptor differ), so should the load succeed the
    // probe keeps working; a refused load raises #GP, fixed up at 2.
    unsafe {
        if idt {
            core::arch::asm!(
                "lea {tmp}, [rip + 2f]",
                "mov qword ptr [{fixup}], {tmp}",
                "lidt [{dtr}]",
                "2:",
                "mov qword ptr [{fixup}], 0",
                tmp = out(reg) _,
                fixup = in(reg) FIXUP.as_ptr(),
                dtr = in(reg) &dtr,
                options(nostack),
            );
        } else {
            core::arch::asm!(
                "lea {tmp}, [rip + 2f]",
                "mov qword ptr [{fixup}], {tmp}",
                "lgdt [{dtr}]",
                "2:",
                "mov qword ptr [{fixup}], 0",
                tmp = out(reg) _,
                fixup = in(reg) FIXUP.as_ptr(),
                dtr = in(reg) &dtr,
                options(nostack),
            );
        }
    }
    take_fault()
}

/// Loads ES with `selector` (then puts the data selector back): `None` if
/// the descriptor exists in the live GDT, else the fault (#GP(selector)).
pub fn load_es(selector: u16) -> Option<Fault> {
    arm();
    // SAFETY: ES is unused in 64-bit mode; it is reloaded with the flat data
    // selector afterwards. A selector beyond the GDT limit raises #GP, fixed
    // up at 2.
    unsafe {
        core::arch::asm!(
            "lea {tmp}, [rip + 2f]",
            "mov qword ptr [{fixup}], {tmp}",
            "mov es, {sel:e}",
            "2:",
            "mov qword ptr [{fixup}], 0",
            "mov {sel:e}, 0x10",
            "mov es, {sel:e}",
            tmp = out(reg) _,
            fixup = in(reg) FIXUP.as_ptr(),
            sel = inout(reg) selector as u64 => _,
            options(nostack),
        );
    }
    take_fault()
}

/// `ud2` with a fixup: the #UD it raised (always `Some`).
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

/// `mov rax, [addr]` with a fixup: the value, or the fault.
pub fn read_u64(addr: u64) -> Result<u64, Fault> {
    let v: u64;
    arm();
    // SAFETY: a load from an address the caller maps (or expects to fault,
    // which the handler fixes up at 2).
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

/// VMCALL with RDI = `id`, RSI = `a1`, RDX = `a2`, R8 = 0; returns R8.
pub fn vmcall3(id: u64, a1: u64, a2: u64) -> u64 {
    let r8: u64;
    // SAFETY: VMCALL exits to L1, which reads guest memory the arguments name
    // (never writes it), writes R8 and advances RIP.
    unsafe {
        core::arch::asm!(
            "vmcall",
            in("rdi") id,
            in("rsi") a1,
            inout("rdx") a2 => _,
            inout("r8") 0u64 => r8,
            options(nostack),
        );
    }
    r8
}

/// Flushes the TLB entries and paging-structure caches for `va`.
pub fn invlpg(va: u64) {
    // SAFETY: INVLPG only drops cached translations.
    unsafe {
        core::arch::asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags));
    }
}

/// Reads the qword at `addr` (a page-table entry or a probe static).
pub fn peek(addr: u64) -> u64 {
    // SAFETY: callers pass 8-byte aligned addresses of the probe's own page
    // tables or statics, which are mapped readable.
    unsafe { core::ptr::with_exposed_provenance::<u64>(addr as usize).read_volatile() }
}

/// Writes the qword at `addr` (a page-table entry or a probe buffer).
pub fn poke(addr: u64, value: u64) {
    // SAFETY: callers pass 8-byte aligned addresses of L2 page tables or of
    // the probe's own buffers, which no Rust reference covers.
    unsafe { core::ptr::with_exposed_provenance_mut::<u64>(addr as usize).write_volatile(value) }
}

/// The attacker's copy of the live IDT, with the #UD gate pointing at
/// `probe_evil_ud`; returns its base and limit.
pub fn evil_idt() -> (u64, u16) {
    let copy = EVIL_IDT.0.get();
    let mut table = [0u64; 512];
    // SAFETY: the live IDT static was written once by `load_tables`; it is
    // only read here. EVIL_IDT is written only here, before it is used.
    unsafe {
        table.copy_from_slice(&*IDT.0.get());
    }
    let handler = (&raw const probe_evil_ud) as u64;
    table[12] =
        (handler & 0xFFFF) | (0x08 << 16) | (0x8E << 40) | (((handler >> 16) & 0xFFFF) << 48);
    table[13] = handler >> 32;
    // SAFETY: see above.
    unsafe { copy.write(table) };
    (copy as u64, 4095)
}

/// The attacker's copy of the live GDT with one more data descriptor (0x18);
/// returns its base and limit.
pub fn evil_gdt() -> (u64, u16) {
    let copy = EVIL_GDT.0.get();
    // SAFETY: written only here, before it is used.
    unsafe { copy.write([GDT[0], GDT[1], GDT[2], GDT[2]]) };
    (copy as u64, 31)
}

#[repr(C, align(16))]
struct EvilIdt(UnsafeCell<[u64; 512]>);
// SAFETY: only `evil_idt` writes it, on the one vCPU.
unsafe impl Sync for EvilIdt {}
static EVIL_IDT: EvilIdt = EvilIdt(UnsafeCell::new([0; 512]));

#[repr(C, align(16))]
struct EvilGdt(UnsafeCell<[u64; 4]>);
// SAFETY: only `evil_gdt` writes it, on the one vCPU.
unsafe impl Sync for EvilGdt {}
static EVIL_GDT: EvilGdt = EvilGdt(UnsafeCell::new([0; 4]));

/// A 4 KiB-aligned page in `.bss` (page tables, HEKI lists).
#[repr(C, align(4096))]
pub struct Page(UnsafeCell<[u8; 4096]>);
// SAFETY: reached only through `Page::addr` by GPA/VA on the one vCPU.
unsafe impl Sync for Page {}

impl Page {
    /// A zeroed page.
    pub const fn new() -> Self {
        Page(UnsafeCell::new([0; 4096]))
    }

    /// Its address (identity mapped: VA = GPA).
    pub fn addr(&self) -> u64 {
        self.0.get() as u64
    }
}
