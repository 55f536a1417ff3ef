//! HLT: forwarded to the host; stops the loop only with interrupts disabled.

use crate::harness::*;
use paravisor::setup::RFLAGS_IF;
use paravisor::{DefaultHandlers, StopReason};
use tdcall::vmx::reason;
use tdx_model::engine::L2Action;

#[test]
fn hlt_with_interrupts_disabled_halts() {
    let (engine, rips) = script(&[L2Action::Cpuid, L2Action::Hlt, L2Action::Cpuid]);
    let mut td = Td::new(engine);
    let mut vcpu = boot(&mut td, &config());
    assert_eq!(
        run(&mut td, &mut vcpu, &mut DefaultHandlers::default()),
        StopReason::Halted
    );
    assert_eq!(td.host().halts, 1);
    assert_eq!(vcpu.state.rip, rips[1] + 1, "RIP past HLT");
    assert_eq!(vcpu.stats.count(reason::HLT), 1);
    assert_eq!(td.trace().len(), 2, "the CPUID after HLT never ran");
}

#[test]
fn hlt_with_interrupts_enabled_resumes() {
    let (engine, rips) = script(&[L2Action::Hlt, L2Action::Hlt, L2Action::Cpuid]);
    let end = engine.end_rip();
    let mut td = Td::new(engine);
    let mut cfg = config();
    if let Some(init) = cfg.initial.as_mut() {
        init.rflags |= RFLAGS_IF;
    }
    let mut vcpu = boot(&mut td, &cfg);
    // Both HLTs re-enter; the guest then runs off its script (triple fault).
    assert_eq!(
        run(&mut td, &mut vcpu, &mut DefaultHandlers::default()),
        StopReason::TripleFault
    );
    assert_eq!(td.host().halts, 2);
    assert_eq!(vcpu.stats.count(reason::HLT), 2);
    assert_eq!(vcpu.state.rip, end);
    let ran: Vec<u64> = td.trace().iter().map(|t| t.rip).collect();
    assert_eq!(ran, rips);
}
