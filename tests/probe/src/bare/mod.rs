//! The probe's checks (docs/emulator-contract.md, "Paravisor ⇄ probe"):
//!
//! * CPUID: a vendor string comes back; the paravisor's `DefaultCpuidPolicy`
//!   hides VMX (leaf 1 ECX bit 5), sets the hypervisor bit (ECX bit 31) and
//!   answers leaf 0x4000_0000 itself with the "LVBSTDX" signature.
//! * RDMSR: the paravisor's default `MsrTable` emulates IA32_APIC_BASE
//!   (0xFEE0_0D00) and IA32_FEATURE_CONTROL (1, locked with VMX off) and
//!   denies MSRs it does not list with #GP(0).
//! * VMCALL: id 0x1FFFF echoes `RSI ^ 0x5A5A_5A5A` in R8; an unknown id
//!   returns -ENOSYS in R8.
//! * Memory: an ordinary L2 page is writable; the RO test page
//!   (`l2_base + 0x1F_0000`, R|Xu) reads, a write gets #GP(0) and leaves the
//!   byte unchanged, and a supervisor fetch from it gets #GP(0) (MBEC: no Xs).
//!
//! * Entry state: RDI/RSI/RSP and CR3 as the contract says.
//! * The LVBS boot ([`lvbs`]): SMEP/SMAP, syscall MSRs, a user page, then the
//!   HEKI calls LOCK_REGS, PROTECT_MEMORY (its own layout), LOAD_KDATA and
//!   SIGNAL_END_OF_BOOT, and what must be refused afterwards; then the HEKI
//!   module checks (validate the signed test module, refuse tampered copies,
//!   run its text, a registered and an unregistered PATCH_TEXT, free its
//!   init, unload it twice).
//! * The attack suite ([`attacks`]): `probe: attack <name>: BLOCKED|ALLOWED`.
//!
//! It ends with `probe: done, N passed, M failed; B attacks blocked, A
//! allowed` and writes M + A to port 0xF4.

mod cpu;

use core::fmt::{self, Write};
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicU32, Ordering};

/// COM1 data port.
const COM1: u16 = 0x3F8;
/// QEMU `isa-debug-exit`.
const DEBUG_EXIT: u16 = 0xF4;
/// The probe echo hypercall and its XOR (contract).
const ECHO_ID: u64 = 0x1_FFFF;
const ECHO_XOR: u64 = 0x5A5A_5A5A;
/// An id nothing serves.
const UNKNOWN_ID: u64 = 0x7777;
/// -ENOSYS as the 64-bit R8 status.
const ENOSYS: u64 = -38i64 as u64;
/// Offset of the RO test page in the L2 region.
const RO_TEST_PAGE_OFFSET: u64 = 0x1F_0000;
/// The last 64 KiB of the region: L2 page tables; the stack starts below.
const TAIL_SIZE: u64 = 0x1_0000;
/// A page the probe may scribble on (inside the region, not the image).
const SCRATCH_PAGE_OFFSET: u64 = 0x1E_0000;
/// 4 MiB of the region (past the image, never protected: kernel data after
/// the end of boot) where the HEKI module checks load the test module.
const HEKI_MODULE_AREA_OFFSET: u64 = 0x40_0000;
/// IA32_APIC_BASE and the value the paravisor emulates.
const MSR_APIC_BASE: u32 = 0x1B;
const APIC_BASE_VALUE: u64 = 0xFEE0_0D00;
/// IA32_FEATURE_CONTROL and its emulated value.
const MSR_FEATURE_CONTROL: u32 = 0x3A;
/// An MSR outside the paravisor's table (KVM's wall clock): denied with #GP(0).
const MSR_UNLISTED: u32 = 0x4B56_4D00;

const VEC_GP: u64 = 13;

static PASSED: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);

/// Console on COM1, one `OUT` per byte.
struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(|b| cpu::outb(COM1, b));
        Ok(())
    }
}

macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = core::fmt::Write::write_fmt(
            &mut $crate::bare::Console,
            format_args!("probe: {}\n", format_args!($($arg)*)),
        );
    }};
}

mod attacks;
mod lvbs;

/// Attacks the paravisor stopped, and attacks it let through.
static ATTACKS_BLOCKED: AtomicU32 = AtomicU32::new(0);
static ATTACKS_ALLOWED: AtomicU32 = AtomicU32::new(0);

/// Read-only data the attacks try to overwrite and execute (16 × `ret`).
#[used]
static RODATA_TARGET: [u8; 16] = [0xC3; 16];

fn check(name: &str, ok: bool, detail: fmt::Arguments<'_>) {
    if ok {
        PASSED.fetch_add(1, Ordering::SeqCst);
        say!("check {name}: PASS {detail}");
    } else {
        FAILED.fetch_add(1, Ordering::SeqCst);
        say!("check {name}: FAIL {detail}");
    }
}

/// Prints the summary and writes the number of failed checks plus allowed
/// attacks to the debug-exit port (at most 0x7B: 0x7C..0x7F mean the
/// paravisor or the emulator ended the run).
fn finish() -> ! {
    let passed = PASSED.load(Ordering::SeqCst);
    let failed = FAILED.load(Ordering::SeqCst);
    let blocked = ATTACKS_BLOCKED.load(Ordering::SeqCst);
    let allowed = ATTACKS_ALLOWED.load(Ordering::SeqCst);
    say!("done, {passed} passed, {failed} failed; {blocked} attacks blocked, {allowed} allowed");
    cpu::outb(DEBUG_EXIT, (failed + allowed).min(0x7B) as u8);
    cpu::halt()
}

/// An exception no check expected: report it as a failure and end.
fn unexpected_exception(vector: u64, error_code: u64, rip: u64) -> ! {
    check(
        "no_unexpected_exception",
        false,
        format_args!("vector {vector} error code {error_code:#x} at RIP {rip:#x}"),
    );
    finish()
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    check("no_panic", false, format_args!("{info}"));
    finish()
}

fn ascii(words: &[u32]) -> ([u8; 16], usize) {
    let mut out = [0u8; 16];
    let mut n = 0;
    for w in words {
        for b in w.to_le_bytes() {
            if b != 0 && n < out.len() {
                out[n] = b;
                n += 1;
            }
        }
    }
    (out, n)
}

fn cpuid_checks() {
    let [max, ebx, ecx, edx] = cpu::cpuid(0, 0);
    let (vendor, n) = ascii(&[ebx, edx, ecx]);
    let vendor = core::str::from_utf8(&vendor[..n]).unwrap_or("?");
    check(
        "cpuid_vendor",
        n == 12 && vendor.bytes().all(|b| b.is_ascii_graphic()),
        format_args!("\"{vendor}\", max leaf {max:#x}"),
    );

    let ecx = cpu::cpuid(1, 0)[2];
    check(
        "cpuid_vmx_hidden",
        ecx & (1 << 5) == 0 && ecx & (1 << 31) != 0,
        format_args!("leaf 1 ECX {ecx:#010x} (VMX bit 5 clear, hypervisor bit 31 set)"),
    );

    let [eax, ebx, ecx, edx] = cpu::cpuid(0x4000_0000, 0);
    let (sig, n) = ascii(&[ebx, ecx, edx]);
    let sig = core::str::from_utf8(&sig[..n]).unwrap_or("?");
    check(
        "cpuid_hypervisor_leaf",
        sig == "LVBSTDX" && eax == 0x4000_0000,
        format_args!("\"{sig}\", max leaf {eax:#x}"),
    );
}

/// The host's 8259 PIC is the emulator's (kept masked): unmasking it through
/// L1's port forwarding must not reach it (reads all ones, as absent).
fn host_device_checks() {
    const PIC1_DATA: u16 = 0x21;
    cpu::outb(PIC1_DATA, 0x00);
    let mask = cpu::inb(PIC1_DATA);
    check(
        "host_pic_not_reachable",
        mask == 0xFF,
        format_args!("PIC mask after writing 0: {mask:#04x} (the host refuses the port)"),
    );
}

fn msr_checks() {
    for (name, msr, want) in [
        ("rdmsr_apic_base", MSR_APIC_BASE, APIC_BASE_VALUE),
        ("rdmsr_feature_control", MSR_FEATURE_CONTROL, 1),
    ] {
        match cpu::rdmsr(msr) {
            Ok(v) => check(name, v == want, format_args!("MSR {msr:#x} = {v:#x}")),
            Err(f) => check(name, false, format_args!("MSR {msr:#x} faulted: {f:?}")),
        }
    }
    match cpu::rdmsr(MSR_UNLISTED) {
        Err(f) => check(
            "rdmsr_unlisted_gp",
            f.vector == VEC_GP && f.error_code == 0,
            format_args!(
                "MSR {MSR_UNLISTED:#x}: vector {} error {:#x}",
                f.vector, f.error_code
            ),
        ),
        Ok(v) => check(
            "rdmsr_unlisted_gp",
            false,
            format_args!("MSR {MSR_UNLISTED:#x} read {v:#x} instead of #GP"),
        ),
    }
}

fn vmcall_checks() {
    let a1 = 0x0123_4567_89AB_CDEF;
    let r8 = cpu::vmcall(ECHO_ID, a1);
    check(
        "vmcall_echo",
        r8 == a1 ^ ECHO_XOR,
        format_args!("R8 {r8:#x}, expected {:#x}", a1 ^ ECHO_XOR),
    );
    let r8 = cpu::vmcall(UNKNOWN_ID, 1);
    check(
        "vmcall_unknown_enosys",
        r8 == ENOSYS,
        format_args!("id {UNKNOWN_ID:#x}: R8 {} ", r8 as i64),
    );
}

fn memory_checks(l2_base: u64) {
    let scratch = l2_base + SCRATCH_PAGE_OFFSET;
    let fault = cpu::write_u8(scratch, 0x5A);
    let back = cpu::read_u8(scratch);
    check(
        "rw_page_write",
        fault.is_none() && back == 0x5A,
        format_args!("{scratch:#x}: fault {fault:?}, read back {back:#x}"),
    );

    let ro = l2_base + RO_TEST_PAGE_OFFSET;
    let before = cpu::read_u8(ro);
    let fault = cpu::write_u8(ro, !before);
    let after = cpu::read_u8(ro);
    let ok = matches!(fault, Some(f) if f.vector == VEC_GP && f.error_code == 0) && after == before;
    check(
        "ro_page_write_gp",
        ok,
        format_args!("{ro:#x}: fault {fault:?}, byte {before:#x} -> {after:#x}"),
    );

    let fault = cpu::jump_to(ro);
    let ok = matches!(fault, Some(f) if f.vector == VEC_GP && f.error_code == 0 && f.rip == ro);
    check(
        "ro_page_supervisor_fetch_gp",
        ok,
        format_args!("{ro:#x}: fault {fault:?}"),
    );
}

/// The entry state the contract promises: RDI/RSI describe a 2 MiB-aligned
/// region that holds this image, RSP and CR3 are the region's top minus 64 KiB
/// (stack below, page tables above).
fn entry_checks(l2_base: u64, l2_size: u64, entry_rsp: u64) {
    let image = probe_main as *const () as u64;
    let tail = l2_base.wrapping_add(l2_size).wrapping_sub(TAIL_SIZE);
    check(
        "entry_registers",
        l2_base.is_multiple_of(1 << 21)
            && l2_size.is_multiple_of(1 << 21)
            && (l2_base..l2_base + l2_size).contains(&image)
            && entry_rsp == tail,
        format_args!("RDI {l2_base:#x} RSI {l2_size:#x} RSP {entry_rsp:#x}"),
    );
    let cr3 = cpu::read_cr3();
    check(
        "entry_paging",
        cr3 & !0xFFF == tail,
        format_args!("CR3 {cr3:#x}, expected {tail:#x}"),
    );
}

/// Called by `probe_start` with RDI = L2 base, RSI = L2 size and RDX = RSP at entry.
#[no_mangle]
extern "C" fn probe_main(l2_base: u64, l2_size: u64, entry_rsp: u64) -> ! {
    cpu::load_tables();
    say!("hello from L2: region {l2_base:#x}+{l2_size:#x}, RSP {entry_rsp:#x}");
    entry_checks(l2_base, l2_size, entry_rsp);
    cpuid_checks();
    msr_checks();
    host_device_checks();
    vmcall_checks();
    memory_checks(l2_base);
    let boot = lvbs::boot(l2_base + SCRATCH_PAGE_OFFSET, entry_rsp);
    lvbs::after_boot_checks(&boot);
    lvbs::module_checks(l2_base + HEKI_MODULE_AREA_OFFSET);
    attacks::run(&boot);
    finish()
}
