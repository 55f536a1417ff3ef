//! The attack suite from the emulator (enforcement issue §6), mirroring
//! `tests/scenarios/src/attacks.rs`: after the LVBS boot the probe behaves
//! like a compromised kernel. Each attack must raise #GP(0) (the paravisor,
//! or the TDX module on its behalf, refuses it) and leave its target as it
//! was, as far as the probe can read it back (CRs, RDMSR, memory; SGDT/SIDT
//! trap after LOCK_REGS, so the descriptor tables are checked by their
//! effect). Each prints `attack <name>: BLOCKED …` or `attack <name>: ALLOWED <detail>`.

use core::fmt;
use core::sync::atomic::Ordering;

use super::cpu::{self, Fault};
use super::lvbs::*;
use super::{ATTACKS_ALLOWED, ATTACKS_BLOCKED};

/// #GP(0), as the paravisor injects it.
fn gp0(f: Option<Fault>) -> bool {
    matches!(f, Some(f) if f.vector == 13 && f.error_code == 0)
}

/// #GP(0) raised by fetching `target`.
fn gp0_at(f: Option<Fault>, target: u64) -> bool {
    matches!(f, Some(f) if f.vector == 13 && f.error_code == 0 && f.rip == target)
}

fn attack(name: &str, blocked: bool, detail: fmt::Arguments<'_>) {
    if blocked {
        ATTACKS_BLOCKED.fetch_add(1, Ordering::SeqCst);
        say!("attack {name}: BLOCKED {detail}");
    } else {
        ATTACKS_ALLOWED.fetch_add(1, Ordering::SeqCst);
        say!("attack {name}: ALLOWED {detail}");
    }
}

fn cr_attack(name: &str, cr: u8, value: u64) {
    let read = || {
        if cr == 0 {
            cpu::read_cr0()
        } else {
            cpu::read_cr4()
        }
    };
    let before = read();
    let fault = cpu::write_cr(cr, value);
    let after = read();
    if after != before {
        // Let the kernel carry on as it was, if the pin let this through too.
        let _ = cpu::write_cr(cr, before);
    }
    attack(
        name,
        gp0(fault) && after == before,
        format_args!("(mov cr{cr} {value:#x}: fault {fault:?}, CR{cr} {before:#x} -> {after:#x})"),
    );
}

fn msr_attack(name: &str, msr: u32, value: u64) {
    let before = cpu::rdmsr(msr);
    let fault = cpu::wrmsr(msr, value);
    let after = cpu::rdmsr(msr);
    attack(
        name,
        gp0(fault) && before.is_ok() && after == before,
        format_args!(
            "(wrmsr {msr:#x} <- {value:#x}: fault {fault:?}, value {before:x?} -> {after:x?})"
        ),
    );
}

fn write_attack(name: &str, addr: u64, readable: bool) {
    let before = readable.then(|| cpu::read_u8(addr));
    let fault = cpu::write_u8(addr, before.map_or(0xCC, |b| !b));
    let after = readable.then(|| cpu::read_u8(addr));
    attack(
        name,
        gp0(fault) && after == before,
        format_args!("(write {addr:#x}: fault {fault:?}, byte {before:x?} -> {after:x?})"),
    );
}

fn exec_attack(name: &str, target: u64) {
    let fault = cpu::call_to(target);
    attack(
        name,
        gp0_at(fault, target),
        format_args!("(call {target:#x}: fault {fault:?})"),
    );
}

/// Runs every attack.
pub fn run(b: &Boot) {
    let cr0 = cpu::read_cr0();
    let cr4 = cpu::read_cr4();
    cr_attack("clear CR0.WP", 0, cr0 & !CR0_WP);
    cr_attack("clear CR4.SMEP", 4, cr4 & !CR4_SMEP);
    cr_attack("clear CR4.SMAP", 4, cr4 & !CR4_SMAP);
    cr_attack("restore a saved CR4 with mov cr4", 4, b.saved_cr4);

    // Attacker entry points: canonical kernel addresses (a non-canonical value
    // would #GP on its own and prove nothing).
    let gadget = b.layout.text_target;
    msr_attack("write LSTAR", MSR_LSTAR, gadget);
    msr_attack("write STAR", MSR_STAR, 0x0033_0008_0000_0000);
    msr_attack("write CSTAR", MSR_CSTAR, gadget);
    msr_attack("write SFMASK", MSR_SFMASK, 0);
    let efer = cpu::rdmsr(MSR_EFER).unwrap_or(0);
    msr_attack("clear EFER.NXE", MSR_EFER, efer & !EFER_NXE);
    msr_attack("write SYSENTER_EIP", MSR_SYSENTER_EIP, gadget);
    msr_attack("write SYSENTER_ESP", MSR_SYSENTER_ESP, b.scratch + 0x800);
    msr_attack("write SYSENTER_CS", MSR_SYSENTER_CS, 0x33);
    msr_attack("move APIC_BASE", MSR_APIC_BASE, 0xDEAD_0900);

    // The copied IDT routes #UD to the attacker; after the load, a #UD shows
    // which IDT is live.
    let (base, limit) = cpu::evil_idt();
    let fault = cpu::load_table(true, base, limit);
    let ud = cpu::ud2();
    let evil = cpu::evil_gate_ran();
    attack(
        "load a copied IDT",
        gp0(fault) && !evil && matches!(ud, Some(f) if f.vector == 6),
        format_args!(
            "(lidt {base:#x}: fault {fault:?}; then ud2: {ud:?}, attacker gate ran: {evil})"
        ),
    );
    // The copied GDT has a fourth descriptor; selector 0x18 loads only if it is live.
    let (base, limit) = cpu::evil_gdt();
    let fault = cpu::load_table(false, base, limit);
    let es = cpu::load_es(0x18);
    attack(
        "load a copied GDT",
        gp0(fault) && matches!(es, Some(f) if f.vector == 13 && f.error_code == 0x18),
        format_args!("(lgdt {base:#x}: fault {fault:?}; then mov es, 0x18: {es:?})"),
    );

    write_attack("write kernel text", b.layout.text_target + 8, true);
    write_attack(
        "write rodata",
        super::RODATA_TARGET.as_ptr() as u64 + 8,
        true,
    );
    exec_attack("execute kernel data at CPL 0", b.layout.xdata_page);
    // The user page is user-executable only (Xu). Through its U=1 mapping
    // SMEP already stops a CPL-0 fetch; the attacker maps it again as a
    // supervisor page, as the kernel's direct map does, and MBEC (no Xs) stops that.
    let alias = map_alias(0, b.layout.user_page);
    exec_attack("execute a user page at CPL 0 (MBEC)", alias);
    exec_attack(
        "execute rodata at CPL 0",
        super::RODATA_TARGET.as_ptr() as u64,
    );
    write_attack(
        "write paravisor memory (ENTER buffer)",
        b.enter_buffer + 0x80,
        false,
    );
    write_attack("write paravisor memory (vAPIC page)", b.vapic, false);

    // The exec-data page through a VA that maps its GPA with the shared bit.
    let private = b.layout.xdata_page;
    let shared = map_alias(1, private | SHARED_BIT);
    let before = cpu::read_u8(private + 0x10);
    let fault = cpu::write_u8(shared + 0x10, !before);
    let after = cpu::read_u8(private + 0x10);
    attack(
        "write private memory through the shared alias",
        gp0(fault) && after == before,
        format_args!(
            "({shared:#x} -> GPA {:#x}: fault {fault:?}, private byte {before:#x} -> {after:#x})",
            private | SHARED_BIT
        ),
    );
    let read = cpu::read_u64(shared);
    attack(
        "read private memory through the shared alias",
        gp0(read.err()),
        format_args!("({shared:#x}: {read:x?})"),
    );

    // Beyond the model suite.
    write_attack("write paravisor memory (image)", b.l1_image, false);
    let fault = cpu::write_u8(b.scratch, 0xC3);
    if fault.is_some() {
        say!("scratch page {:#x} not writable: {fault:?}", b.scratch);
    }
    exec_attack("execute injected code at CPL 0", b.scratch);
}
