//! The TDG.VP.ENTER loop itself: pending interrupts, the entry cap, and
//! fail-closed stops on exits the core does not handle.

use crate::harness::*;
use paravisor::{DefaultHandlers, StopReason};
use tdcall::vmx::reason;
use tdx_model::engine::L2Action;

#[test]
fn pending_l1_interrupt_calls_the_hook_and_re_enters() {
    let (engine, _) = script(&[L2Action::Cpuid, L2Action::Hlt]);
    let mut td = Td::new(engine);
    let mut vcpu = boot(&mut td, &config());
    let mut h = DefaultHandlers::default();
    td.0.set_l1_interrupt_pending(true);
    assert_eq!(vcpu.run(&mut td, &mut h, 5), StopReason::ExitLimit);
    assert_eq!(h.pending_interrupts, 5);
    assert_eq!(vcpu.stats.pending_interrupt, 5);
    assert!(td.trace().is_empty(), "L2 never entered");
    assert!(
        vcpu.invalidation_pending(),
        "the first-entry flush is still owed"
    );
    td.0.set_l1_interrupt_pending(false);
    assert_eq!(run(&mut td, &mut vcpu, &mut h), StopReason::Halted);
    assert_eq!(td.0.stats().invept[1], 1);
}

#[test]
fn unhandled_exits_stop_the_loop_and_lgdt_is_refused() {
    // LGDT with descriptor-table exiting on (only LOCK_REGS turns it on): #GP(0),
    // GDTR unchanged, and the guest's fixup continues at HLT.
    let (engine, rips) = script(&[
        L2Action::LoadDescriptorTable {
            idt: false,
            base: 0x1000,
            limit: 0x7,
        },
        L2Action::Hlt,
    ]);
    let mut td = Td::new(engine);
    let mut cfg = config();
    cfg.secondary_set = tdcall::field::controls::SECONDARY_DESC_TABLE_EXITING;
    let mut vcpu = boot(&mut td, &cfg);
    assert_eq!(
        run(&mut td, &mut vcpu, &mut DefaultHandlers::default()),
        StopReason::Halted
    );
    assert_eq!(td.events(), &[gp0_at(rips[0])]);
    assert_eq!(td.vmcs(tdcall::field::vmcs::GUEST_GDTR_BASE), GDT);

    // TDCALL from L2 with L2_CTLS.ENABLE_TDVMCALL off: exit 77, not handled yet.
    let (engine, _) = script(&[L2Action::Tdcall, L2Action::Hlt]);
    let mut td = Td::new(engine);
    let mut vcpu = boot(&mut td, &config());
    assert!(matches!(
        run(&mut td, &mut vcpu, &mut DefaultHandlers::default()),
        StopReason::UnhandledExit { reason, .. } if reason == reason::TDCALL as u32
    ));

    // Running off the script is a triple fault.
    let (engine, _) = script(&[L2Action::Cpuid]);
    let mut td = Td::new(engine);
    let mut vcpu = boot(&mut td, &config());
    assert_eq!(
        run(&mut td, &mut vcpu, &mut DefaultHandlers::default()),
        StopReason::TripleFault
    );
}

#[test]
fn an_endless_guest_is_capped() {
    // L2 keeps executing CPUIDs at the same RIP: the handler advances RIP, so
    // build a long script instead and cap it.
    let actions = vec![L2Action::Cpuid; 50];
    let (engine, _) = script(&actions);
    let mut td = Td::new(engine);
    let mut vcpu = boot(&mut td, &config());
    assert_eq!(
        vcpu.run(&mut td, &mut DefaultHandlers::default(), 10),
        StopReason::ExitLimit
    );
    assert_eq!(vcpu.stats.entries, 10);
    assert_eq!(vcpu.stats.count(reason::CPUID), 10);
}
