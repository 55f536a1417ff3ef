//! The attack suite as model scenarios (enforcement issue §6): a guest kernel
//! that boots normally, asks for its registers to be locked and its memory
//! protected, and is then taken over. Every attack must be BLOCKED: the
//! paravisor (or the TDX module on its behalf) stops it, injects #GP(0), and
//! the targeted register or memory is unchanged.

use crate::harness::*;
use ept::{Authority, Ept, GpaRange, PageState, Policy};
use paravisor::handlers::MSR_IA32_APIC_BASE;
use paravisor::pinning::{lock_registers, PinnedCr, PinnedMsrs, MSR_CSTAR, MSR_EFER, MSR_LSTAR};
use paravisor::pinning::{
    MSR_SFMASK, MSR_STAR, MSR_SYSENTER_CS, MSR_SYSENTER_EIP, MSR_SYSENTER_ESP,
};
use paravisor::setup::{CR0_WP, CR4_PAE, CR4_PGE};
use paravisor::{AllowCrWrites, DefaultHandlers, MsrPassthrough, MsrTable, StopReason};
use tdcall::field::vmcs;
use tdcall::L2Vm;
use tdx_model::engine::{AccessKind, L2Action};

const TEXT: u64 = 0x70_0000;
const RODATA: u64 = 0x71_0000;
const KDATA: u64 = 0x72_0000;
const USER: u64 = 0x73_0000;
const SHARED_BIT: u64 = 1 << 47;
const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;
const CR4_OSFXSR: u64 = 1 << 9;
const KERNEL_LSTAR: u64 = 0xFFFF_FFFF_8100_0000;
const EVIL: u64 = 0x4141_4141_4141_0000;

/// One attack: its name and the actions that carry it out (the last one is the
/// attacking instruction, whose RIP must receive #GP(0)).
struct Attack {
    name: &'static str,
    actions: Vec<L2Action>,
}

fn wrmsr(name: &'static str, msr: u32, value: u64) -> Attack {
    Attack {
        name,
        actions: vec![
            L2Action::SetGpr {
                gpr: 1,
                value: msr as u64,
            },
            L2Action::SetGpr {
                gpr: 0,
                value: value & 0xFFFF_FFFF,
            },
            L2Action::SetGpr {
                gpr: 2,
                value: value >> 32,
            },
            L2Action::Wrmsr,
        ],
    }
}

fn mov_cr(name: &'static str, cr: u8, value: u64) -> Attack {
    Attack {
        name,
        actions: vec![
            L2Action::SetGpr { gpr: 3, value },
            L2Action::MovToCr { cr, gpr: 3 },
        ],
    }
}

fn access(name: &'static str, kind: AccessKind, gpa: u64) -> Attack {
    // Loads put the value in RBP (GPR 5); stores write 0xCC.
    let value = if kind == AccessKind::Read { 5 } else { 0xCC };
    let gla = 0xFFFF_8880_0000_0000 | (gpa & !SHARED_BIT);
    Attack {
        name,
        actions: vec![L2Action::Access {
            kind,
            gpa,
            gla,
            cpl: 0,
            size: 8,
            value,
        }],
    }
}

fn attacks(cr0: u64, cr4: u64) -> Vec<Attack> {
    vec![
        mov_cr("clear CR0.WP", 0, cr0 & !CR0_WP),
        mov_cr("clear CR4.SMEP", 4, cr4 & !CR4_SMEP),
        mov_cr("clear CR4.SMAP", 4, cr4 & !CR4_SMAP),
        mov_cr(
            "restore a saved CR4 with mov cr4",
            4,
            CR4_PAE | CR4_PGE | CR4_OSFXSR,
        ),
        wrmsr("write LSTAR", MSR_LSTAR, EVIL),
        wrmsr("write STAR", MSR_STAR, EVIL),
        wrmsr("write CSTAR", MSR_CSTAR, EVIL),
        wrmsr("write SFMASK", MSR_SFMASK, 0),
        wrmsr("clear EFER.NXE", MSR_EFER, 0xD01 & !(1 << 11)),
        wrmsr("write SYSENTER_EIP", MSR_SYSENTER_EIP, EVIL),
        wrmsr("write SYSENTER_ESP", MSR_SYSENTER_ESP, EVIL),
        wrmsr("write SYSENTER_CS", MSR_SYSENTER_CS, 0x33),
        wrmsr("move APIC_BASE", MSR_IA32_APIC_BASE, 0xDEAD_0900),
        Attack {
            name: "load a copied IDT",
            actions: vec![L2Action::LoadDescriptorTable {
                idt: true,
                base: KDATA,
                limit: 0xFFF,
            }],
        },
        Attack {
            name: "load a copied GDT",
            actions: vec![L2Action::LoadDescriptorTable {
                idt: false,
                base: KDATA,
                limit: 0x7F,
            }],
        },
        access("write kernel text", AccessKind::Write, TEXT + 0x10),
        access("write rodata", AccessKind::Write, RODATA + 0x20),
        access("execute kernel data at CPL 0", AccessKind::Fetch, KDATA),
        access(
            "execute a user page at CPL 0 (MBEC)",
            AccessKind::Fetch,
            USER,
        ),
        access("execute rodata at CPL 0", AccessKind::Fetch, RODATA),
        access(
            "write paravisor memory (ENTER buffer)",
            AccessKind::Write,
            BUF + 0x80,
        ),
        access(
            "write paravisor memory (vAPIC page)",
            AccessKind::Write,
            VAPIC,
        ),
        access(
            "write private memory through the shared alias",
            AccessKind::Write,
            KDATA | SHARED_BIT,
        ),
        access(
            "read private memory through the shared alias",
            AccessKind::Read,
            KDATA | SHARED_BIT,
        ),
    ]
}

/// What the attacker targets, read back after the run.
fn snapshot(td: &Td) -> Vec<u64> {
    let mut v = vec![
        td.vmcs(vmcs::GUEST_CR0),
        td.vmcs(vmcs::CR0_READ_SHADOW),
        td.vmcs(vmcs::GUEST_CR4),
        td.vmcs(vmcs::CR4_READ_SHADOW),
        td.vmcs(vmcs::GUEST_IA32_EFER),
        td.vmcs(vmcs::GUEST_SYSENTER_CS),
        td.vmcs(vmcs::GUEST_SYSENTER_ESP),
        td.vmcs(vmcs::GUEST_SYSENTER_EIP),
        td.vmcs(vmcs::GUEST_GDTR_BASE),
        td.vmcs(vmcs::GUEST_IDTR_BASE),
    ];
    for msr in [MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SFMASK] {
        v.push(td.0.shared_msr(0, msr).unwrap());
    }
    // (The ENTER buffer is rewritten by L1 on every entry, so it is not compared.)
    for gpa in [TEXT, RODATA, KDATA, VAPIC] {
        let mut b = [0u8; 0x20];
        td.0.read_memory(gpa, &mut b).unwrap();
        v.extend(
            b.chunks(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap())),
        );
    }
    v
}

#[test]
fn attack_suite_is_blocked() {
    let mut cfg = config();
    let mut state = cfg.initial.unwrap();
    state.cr4 |= CR4_SMEP | CR4_SMAP;
    state.efer = 0xD01; // SCE | LME | LMA, NXE fixed by the module
    cfg.initial = Some(state);
    for msr in [
        MSR_STAR,
        MSR_LSTAR,
        MSR_CSTAR,
        MSR_SFMASK,
        MSR_SYSENTER_CS,
        MSR_SYSENTER_ESP,
        MSR_SYSENTER_EIP,
        MSR_EFER,
    ] {
        cfg.msr_passthrough.push(MsrPassthrough {
            msr,
            read: true,
            write: true,
        });
    }
    let (cr0, cr4) = (state.cr0, state.cr4);

    // Boot: the kernel sets its syscall MSRs natively, then halts to hand
    // over to the "LOCK_REGS" step below.
    let mut engine = tdx_model::engine::ScriptedEngine::new(CODE);
    for (msr, value) in [
        (MSR_LSTAR, KERNEL_LSTAR),
        (MSR_STAR, 0x0023_0010_0000_0000),
        (MSR_SYSENTER_EIP, KERNEL_LSTAR + 0x40),
        (MSR_SFMASK, 0x4_7700),
        (MSR_CSTAR, KERNEL_LSTAR + 0x80),
    ] {
        engine.extend(wrmsr("boot", msr, value).actions);
    }
    engine.push(L2Action::Hlt);
    let mut rips = Vec::new();
    let suite = attacks(cr0, cr4);
    for attack in &suite {
        let mut last = 0;
        for a in &attack.actions {
            last = engine.push(*a);
        }
        rips.push(last);
    }
    engine.push(L2Action::Hlt);

    let mut td = Td::new(engine);
    let mut vcpu = boot(&mut td, &cfg);
    let mut handlers = DefaultHandlers::default()
        .with_cr_policy(PinnedCr::new(AllowCrWrites))
        .with_msr_policy(PinnedMsrs::new(MsrTable::default()));
    assert_eq!(run(&mut td, &mut vcpu, &mut handlers), StopReason::Halted);
    assert_eq!(
        td.0.shared_msr(0, MSR_LSTAR),
        Some(KERNEL_LSTAR),
        "boot wrote LSTAR natively"
    );

    // PROTECT_MEMORY and END_OF_BOOT, then LOCK_REGS.
    let mut mem = Ept::new(L2Vm::Vm1, Policy::LVBS);
    let range = |base: u64| GpaRange::new(base, base + 0x1000).unwrap();
    for (base, state) in [
        (TEXT, PageState::KernelText),
        (RODATA, PageState::Rodata),
        (KDATA, PageState::KernelData),
        (USER, PageState::UserExecutable),
    ] {
        mem.transition(&mut td, range(base), state, Authority::Guest)
            .unwrap();
    }
    mem.end_boot();
    td.0.write_memory(TEXT, &[0x90; 0x20]).unwrap();
    td.0.write_memory(RODATA, &[0x52; 0x20]).unwrap();
    let pins = lock_registers(&mut td, L2Vm::Vm1, &mut handlers.msr).unwrap();
    handlers.cr.lock(&pins);
    handlers.msr.lock(&pins);
    vcpu.invalidate_translations();
    let before = snapshot(&td);

    assert_eq!(run(&mut td, &mut vcpu, &mut handlers), StopReason::Halted);

    let after = snapshot(&td);
    let mut blocked = 0;
    let mut report = String::new();
    for (attack, rip) in suite.iter().zip(&rips) {
        let gp = td.events().iter().any(|e| *e == gp0_at(*rip));
        let verdict = if gp { "BLOCKED" } else { "ALLOWED" };
        blocked += gp as usize;
        report.push_str(&format!("attack {}: {verdict}\n", attack.name));
    }
    println!(
        "{report}attacks: {blocked} blocked, {} allowed",
        suite.len() - blocked
    );
    assert_eq!(blocked, suite.len(), "{report}");
    assert!(suite.len() >= 20);
    assert_eq!(before, after, "no targeted register or byte changed");
    assert_eq!(
        td.events().len(),
        suite.len(),
        "one #GP per attack and no other event"
    );
}

/// The same attacks after a guest kernel that protected itself through the
/// HEKI boot calls (`paravisor::heki::HekiService`): it sets its syscall MSRs,
/// calls LOCK_REGS, PROTECT_MEMORY for its layout and SIGNAL_END_OF_BOOT, and
/// is then taken over.
#[test]
fn attack_suite_is_blocked_after_the_heki_boot_calls() {
    use crate::heki::{alias_guest_memory, call, put_list, service};
    use heki_tdx::abi::{HekiCall, MemAttr};

    let mut cfg = crate::heki::heki_config();
    let mut state = cfg.initial.unwrap();
    state.efer = 0xD01;
    cfg.initial = Some(state);
    for msr in [
        MSR_CSTAR,
        MSR_SFMASK,
        MSR_SYSENTER_CS,
        MSR_SYSENTER_ESP,
        MSR_SYSENTER_EIP,
        MSR_EFER,
    ] {
        cfg.msr_passthrough.push(MsrPassthrough {
            msr,
            read: true,
            write: true,
        });
    }
    let (cr0, cr4) = (state.cr0, state.cr4);
    let mut engine = tdx_model::engine::ScriptedEngine::new(CODE);
    for (msr, value) in [
        (MSR_LSTAR, KERNEL_LSTAR),
        (MSR_STAR, 0x0023_0010_0000_0000),
        (MSR_SYSENTER_EIP, KERNEL_LSTAR + 0x40),
        (MSR_SFMASK, 0x4_7700),
        (MSR_CSTAR, KERNEL_LSTAR + 0x80),
    ] {
        engine.extend(wrmsr("boot", msr, value).actions);
    }
    engine.extend(call(HekiCall::LockRegs, 0, 0));
    engine.extend(call(HekiCall::ProtectMemory, DATA, 4));
    engine.extend(call(HekiCall::SignalEndOfBoot, 0, 0));
    let mut rips = Vec::new();
    let mut suite = attacks(cr0, cr4);
    // Beyond the 24: code written into memory the kernel never protected
    // (it lost Xs at the end of boot) and run at CPL 0.
    let loose = crate::heki::LOOSE;
    suite.push(Attack {
        name: "execute injected code at CPL 0",
        actions: vec![
            L2Action::Access {
                kind: AccessKind::Write,
                gpa: loose,
                gla: loose,
                cpl: 0,
                size: 1,
                value: 0xC3,
            },
            access("", AccessKind::Fetch, loose).actions[0],
        ],
    });
    for attack in &suite {
        let mut last = 0;
        for a in &attack.actions {
            last = engine.push(*a);
        }
        rips.push(last);
    }
    engine.push(L2Action::Hlt);

    let mut td = Td::new(engine);
    alias_guest_memory(&mut td);
    let (r, rw, rx) = (
        MemAttr::READ.bits(),
        (MemAttr::READ | MemAttr::WRITE).bits(),
        (MemAttr::READ | MemAttr::EXEC).bits(),
    );
    put_list(
        &mut td,
        DATA,
        &[
            (TEXT, TEXT + 0x1000, rx),
            (RODATA, RODATA + 0x1000, r),
            (KDATA, KDATA + 0x1000, rw),
            (USER, USER + 0x1000, r),
        ],
    );
    td.0.write_memory(TEXT, &[0x90; 0x20]).unwrap();
    td.0.write_memory(RODATA, &[0x52; 0x20]).unwrap();
    let mut vcpu = boot(&mut td, &cfg);
    let mut heki = service();
    let mut statuses = Vec::new();
    while statuses.len() < 3 {
        let r = step(&mut td, &mut vcpu, &mut heki).expect("boot runs");
        if r.exit.exit_reason().basic() == tdcall::vmx::reason::VMCALL {
            statuses.push(vcpu.state.gprs[8] as i64);
        }
    }
    assert_eq!(
        statuses,
        [0, 0, 0],
        "LOCK_REGS, PROTECT_MEMORY, END_OF_BOOT"
    );
    let before = snapshot(&td);
    assert_eq!(
        heki.pins()
            .map(|p| p.msrs.contains(&(MSR_LSTAR, KERNEL_LSTAR))),
        Some(true)
    );

    assert_eq!(run(&mut td, &mut vcpu, &mut heki), StopReason::Halted);
    let after = snapshot(&td);
    let mut blocked = 0;
    let mut report = String::new();
    for (attack, rip) in suite.iter().zip(&rips) {
        let gp = td.events().iter().any(|e| *e == gp0_at(*rip));
        blocked += gp as usize;
        let verdict = if gp { "BLOCKED" } else { "ALLOWED" };
        report.push_str(&format!("attack {}: {verdict}\n", attack.name));
    }
    println!(
        "{report}attacks: {blocked} blocked, {} allowed",
        suite.len() - blocked
    );
    assert_eq!(blocked, suite.len(), "{report}");
    assert_eq!(before, after, "no targeted register or byte changed");
    assert_eq!(td.events().len(), suite.len(), "one #GP per attack only");
}
