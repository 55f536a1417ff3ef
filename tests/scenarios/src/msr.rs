//! RDMSR/WRMSR: emulated, forwarded, denied (#GP) and passed-through MSRs.

use crate::harness::*;
use paravisor::{DefaultHandlers, MsrPassthrough, StopReason};
use tdcall::vmx::reason;
use tdx_model::engine::{L2Action, Step};

fn set(gpr: u8, value: u64) -> L2Action {
    L2Action::SetGpr { gpr, value }
}

const RAX: u8 = 0;
const RCX: u8 = 1;
const RDX: u8 = 2;

#[test]
fn msr_policy_table() {
    let (engine, rips) = script(&[
        set(RCX, 0x1B), // IA32_APIC_BASE: emulated
        L2Action::Rdmsr,
        set(RCX, 0xCE), // PLATFORM_INFO: forwarded
        L2Action::Rdmsr,
        set(RCX, 0x2FF), // MTRR_DEF_TYPE: forwarded write
        set(RAX, 0xFFFF_FFFF_0000_0C06),
        set(RDX, 0xFFFF_FFFF_0000_0001),
        L2Action::Wrmsr,
        set(RCX, 0x1234), // unknown: #GP
        L2Action::Rdmsr,
        set(RCX, 0x3A), // FEATURE_CONTROL: emulated read-only, write #GP
        L2Action::Wrmsr,
        set(RCX, 0xFE), // MTRRCAP: forwarded, but the host refuses: #GP
        L2Action::Rdmsr,
        set(RCX, 0x1B), // APIC_BASE write is stored by L1
        set(RAX, 0xFEE0_0900),
        set(RDX, 0),
        L2Action::Wrmsr,
        L2Action::Rdmsr,
        L2Action::Hlt,
    ]);
    let mut td = Td::new(engine);
    td.host_mut().msrs.insert(0xCE, 0x0000_0004_8000_0C00);
    let mut vcpu = boot(&mut td, &config());
    let mut h = DefaultHandlers::default();

    step(&mut td, &mut vcpu, &mut h).unwrap();
    assert_eq!((vcpu.state.gprs[0], vcpu.state.gprs[2]), (0xFEE0_0D00, 0));
    assert_eq!(vcpu.state.rip, rips[1] + 2);
    step(&mut td, &mut vcpu, &mut h).unwrap();
    assert_eq!((vcpu.state.gprs[0], vcpu.state.gprs[2]), (0x8000_0C00, 4));
    step(&mut td, &mut vcpu, &mut h).unwrap();
    assert_eq!(
        td.host().msrs.get(&0x2FF),
        Some(&0x1_0000_0C06),
        "EDX:EAX, upper halves ignored"
    );
    assert_eq!(run(&mut td, &mut vcpu, &mut h), StopReason::Halted);
    assert_eq!(
        (vcpu.state.gprs[0], vcpu.state.gprs[2]),
        (0xFEE0_0900, 0),
        "stored APIC_BASE"
    );
    assert_eq!(
        td.events(),
        [gp0_at(rips[9]), gp0_at(rips[11]), gp0_at(rips[13])]
    );
    assert_eq!(vcpu.stats.count(reason::MSR_READ), 5);
    assert_eq!(vcpu.stats.count(reason::MSR_WRITE), 3);
    assert_eq!(
        h.msr.rule(0x1B),
        Some(paravisor::MsrRule::Emulated {
            value: 0xFEE0_0900,
            writable: true
        })
    );
}

#[test]
fn passed_through_msrs_never_exit() {
    let (engine, rips) = script(&[
        set(RCX, 0xC000_0082), // LSTAR
        set(RAX, 0xDEAD_0000),
        set(RDX, 0xFFFF_FFFF),
        L2Action::Wrmsr,
        set(RAX, 0),
        L2Action::Rdmsr,
        L2Action::Hlt,
    ]);
    let mut td = Td::new(engine);
    let mut cfg = config();
    cfg.msr_passthrough.push(MsrPassthrough {
        msr: 0xC000_0082,
        read: true,
        write: true,
    });
    let mut vcpu = boot(&mut td, &cfg);
    assert_eq!(
        run(&mut td, &mut vcpu, &mut DefaultHandlers::default()),
        StopReason::Halted
    );
    assert_eq!(
        vcpu.stats.count(reason::MSR_READ) + vcpu.stats.count(reason::MSR_WRITE),
        0
    );
    let t: Vec<_> = td
        .trace()
        .iter()
        .filter(|t| t.rip == rips[3] || t.rip == rips[5])
        .collect();
    assert_eq!(t.len(), 2);
    assert!(t.iter().all(|t| t.step == Step::Completed));
    assert_eq!(t[1].value, Some(0xFFFF_FFFF_DEAD_0000));
    assert_eq!(
        (vcpu.state.gprs[0], vcpu.state.gprs[2]),
        (0xDEAD_0000, 0xFFFF_FFFF)
    );
}
