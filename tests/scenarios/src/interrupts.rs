//! Interrupts and the timer for L2 (tdx-abi.md §2.7, §2.8): the paravisor's
//! virtual x2APIC, its TSC-deadline timer on the VM's TSC_DEADLINE, external
//! interrupt injection and interrupt-window exiting, on the scripted engine
//! (whose virtual TSC advances 1000 ticks per L2 action and 10 per read).

use crate::harness::*;
use paravisor::apic::VirtualApic;
use paravisor::setup::RFLAGS_IF;
use paravisor::{Clock, DefaultHandlers, Interrupts, StopReason, Vcpu};
use tdcall::field::{controls, vmcs, FieldId};
use tdcall::leaves::VpRd;
use tdcall::vmx::reason;
use tdcall::L2Vm;
use tdx_model::engine::L2Action;

impl Clock for Td {
    fn tsc(&mut self) -> u64 {
        self.0.tsc()
    }

    /// The scripted clock only moves when something reads it or L2 runs:
    /// waiting jumps straight to the deadline.
    fn wait_until(&mut self, deadline: u64) {
        let now = self.0.engine.peek_tsc();
        self.0.engine.advance_tsc(deadline.saturating_sub(now));
    }
}

const TIMER_VECTOR: u8 = 0xEC;
/// LVT timer: TSC-deadline mode (bits 18:17 = 2), vector 0xEC.
const LVT_DEADLINE: u64 = (2 << 17) | TIMER_VECTOR as u64;

fn wrmsr(msr: u32, value: u64) -> [L2Action; 4] {
    [
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
    ]
}

fn rdmsr(msr: u32) -> [L2Action; 2] {
    [
        L2Action::SetGpr {
            gpr: 1,
            value: msr as u64,
        },
        L2Action::Rdmsr,
    ]
}

fn nops(n: usize) -> Vec<L2Action> {
    vec![L2Action::SetGpr { gpr: 3, value: 0 }; n]
}

/// The APIC enabled and the LVT timer in TSC-deadline mode.
fn apic_setup() -> Vec<L2Action> {
    let mut v = Vec::new();
    v.extend(wrmsr(0x80F, 0x1FF));
    v.extend(wrmsr(0x832, LVT_DEADLINE));
    v
}

fn irq() -> Interrupts {
    // 100 TSC ticks per APIC count (a 2.5 GHz TSC over the 25 MHz crystal).
    Interrupts::new(VirtualApic::new(0, 100))
}

fn run_irq(td: &mut Td, vcpu: &mut Vcpu, irq: &mut Interrupts) -> StopReason {
    vcpu.run_with_interrupts(td, &mut DefaultHandlers::default(), irq, MAX_ENTRIES)
}

fn with_if(mut cfg: paravisor::L2VmConfig) -> paravisor::L2VmConfig {
    if let Some(init) = cfg.initial.as_mut() {
        init.rflags |= RFLAGS_IF;
    }
    cfg
}

fn deadline_field(td: &mut Td) -> u64 {
    tdcall::call(td, &VpRd(FieldId::tsc_deadline(L2Vm::Vm1)))
        .unwrap()
        .value
}

#[test]
fn tsc_deadline_timer_interrupt_reaches_l2() {
    // Deadline 30 000 ticks: about 30 actions after the APIC set-up.
    let mut actions = apic_setup();
    actions.extend(wrmsr(0x6E0, 30_000));
    let armed_at = actions.len();
    actions.extend(nops(60));
    actions.push(L2Action::Hlt);
    let (engine, rips) = script(&actions);
    let mut td = Td::new(engine);
    let mut vcpu = boot(&mut td, &with_if(config()));
    let mut irq = irq();
    // IF = 1 at HLT but nothing armed any more: the loop stops there.
    assert_eq!(run_irq(&mut td, &mut vcpu, &mut irq), StopReason::Halted);
    // One timer exit (reason 52), then the injection at the next instruction.
    assert_eq!(vcpu.stats.count(reason::PREEMPTION_TIMER), 1);
    assert_eq!(td.events().len(), 1);
    let ev = td.events()[0];
    assert_eq!(ev.vector, TIMER_VECTOR);
    assert_eq!(ev.error_code, None);
    assert!(ev.rip > rips[armed_at] && ev.rip < rips[armed_at + 30]);
    assert_eq!(irq.stats.injected, 1);
    assert!(irq.apic.in_service(TIMER_VECTOR), "not EOIed by the script");
    assert_eq!(irq.apic.stats.timer_fired, 1);
    // Three APIC MSR exits; TSC_DEADLINE armed once and disabled after expiry.
    assert_eq!(irq.stats.apic_msr_exits, 3);
    assert_eq!(irq.stats.deadline_writes, 2);
    assert_eq!(deadline_field(&mut td), u64::MAX);
}

#[test]
fn pending_interrupt_waits_for_sti_through_the_interrupt_window() {
    // IF = 0 when the timer fires: window exiting, then STI opens the window
    // one instruction later (the STI shadow).
    let mut actions = apic_setup();
    actions.extend(wrmsr(0x6E0, 20_000));
    actions.extend(nops(30));
    let sti = actions.len();
    actions.push(L2Action::Sti);
    actions.extend(nops(3));
    actions.push(L2Action::Cli);
    actions.push(L2Action::Hlt);
    let (engine, rips) = script(&actions);
    let mut td = Td::new(engine);
    let mut vcpu = boot(&mut td, &config());
    let mut irq = irq();
    assert_eq!(run_irq(&mut td, &mut vcpu, &mut irq), StopReason::Halted);
    assert_eq!(vcpu.stats.count(reason::PREEMPTION_TIMER), 1);
    assert_eq!(vcpu.stats.count(reason::INTERRUPT_WINDOW), 1);
    // Delivered after the instruction in the STI shadow.
    assert_eq!(td.events().len(), 1);
    assert_eq!(td.events()[0].rip, rips[sti + 2]);
    assert!(!irq.window_requested(), "window exiting turned off again");
    assert_eq!(
        td.vmcs(vmcs::PROC_BASED_CTLS) & controls::PROC_INTERRUPT_WINDOW_EXITING,
        0
    );
}

#[test]
fn hlt_with_interrupts_enabled_waits_for_the_timer() {
    let mut actions = apic_setup();
    actions.extend(wrmsr(0x6E0, 1_000_000));
    let hlt = actions.len();
    actions.push(L2Action::Hlt);
    actions.extend(wrmsr(0x80B, 0)); // EOI
    actions.push(L2Action::Cli);
    actions.push(L2Action::Hlt);
    let (engine, rips) = script(&actions);
    let mut td = Td::new(engine);
    let mut vcpu = boot(&mut td, &with_if(config()));
    let mut irq = irq();
    assert_eq!(run_irq(&mut td, &mut vcpu, &mut irq), StopReason::Halted);
    assert_eq!(irq.stats.halts, 1);
    assert!(
        irq.stats.halted_ticks > 900_000,
        "waited until the deadline"
    );
    assert!(td.0.engine.peek_tsc() >= 1_000_000);
    // The interrupt arrives after the HLT; the handler's EOI retires it.
    assert_eq!(td.events().len(), 1);
    assert_eq!(td.events()[0].rip, rips[hlt + 1]);
    assert!(!irq.apic.in_service(TIMER_VECTOR));
    assert_eq!(irq.apic.stats.eois, 1);
    // The final CLI; HLT stops the loop the usual way (forwarded to the host).
    assert_eq!(td.host().halts, 1);
}

#[test]
fn hlt_with_nothing_armed_stops() {
    let mut actions = apic_setup();
    actions.push(L2Action::Hlt);
    let (engine, _) = script(&actions);
    let mut td = Td::new(engine);
    let mut vcpu = boot(&mut td, &with_if(config()));
    let mut irq = irq();
    assert_eq!(run_irq(&mut td, &mut vcpu, &mut irq), StopReason::Halted);
    assert_eq!(irq.stats.halts, 1);
    assert!(td.events().is_empty());
}

#[test]
fn self_ipi_is_injected_and_priorities_hold() {
    let mut actions = apic_setup();
    actions.extend(wrmsr(0x83F, 0x40)); // SELF_IPI 0x40
    let first = actions.len();
    actions.extend(wrmsr(0x830, (1 << 18) | 0x80)); // ICR, shorthand self, 0x80
    let second = actions.len();
    actions.extend(nops(2));
    actions.extend(wrmsr(0x80B, 0)); // EOI 0x80
    let third = actions.len();
    actions.extend(nops(2));
    actions.push(L2Action::Cli);
    actions.push(L2Action::Hlt);
    let (engine, rips) = script(&actions);
    let mut td = Td::new(engine);
    let mut vcpu = boot(&mut td, &with_if(config()));
    let mut irq = irq();
    assert_eq!(run_irq(&mut td, &mut vcpu, &mut irq), StopReason::Halted);
    let got: Vec<(u8, u64)> = td.events().iter().map(|e| (e.vector, e.rip)).collect();
    // 0x40 right after its WRMSR; 0x80 (higher class) nests after the ICR
    // write; 0x40 would need 0x40's EOI first, which never comes.
    assert_eq!(got, vec![(0x40, rips[first]), (0x80, rips[second])]);
    assert!(irq.apic.in_service(0x40));
    assert!(!irq.apic.in_service(0x80));
    assert_eq!(irq.stats.injected, 2);
    let _ = third;
}

#[test]
fn refused_apic_msr_access_is_gp() {
    let mut actions = apic_setup();
    let bad_read = actions.len() + 1;
    actions.extend(rdmsr(0x80B)); // EOI is write-only
    let bad_write = actions.len() + 3;
    actions.extend(wrmsr(0x802, 7)); // ID is read-only
    actions.extend(rdmsr(0x802));
    actions.push(L2Action::Hlt);
    let (engine, rips) = script(&actions);
    let mut td = Td::new(engine);
    let mut vcpu = boot(&mut td, &config());
    let mut irq = irq();
    assert_eq!(run_irq(&mut td, &mut vcpu, &mut irq), StopReason::Halted);
    assert_eq!(
        td.events(),
        [gp0_at(rips[bad_read]), gp0_at(rips[bad_write])]
    );
    assert_eq!(irq.stats.apic_faults, 2);
    assert_eq!(vcpu.state.gprs[0], 0, "APIC ID 0");
}
