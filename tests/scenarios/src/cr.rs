//! CR0/CR4 writes of L1-owned bits: emulated when allowed, #GP when the policy
//! or the architecture rejects them.

use crate::harness::*;
use paravisor::setup::{CR0_PE, CR0_PG, CR0_WP, CR4_MCE, CR4_VMXE};
use paravisor::{CrDecision, CrPolicy, CrWrite, DefaultHandlers, StopReason};
use tdcall::field::vmcs;
use tdcall::vmx::reason;
use tdx_model::engine::{L2Action, Step};

const CR0_INIT: u64 = 0x8001_0033; // PE|MP|ET|NE|WP|PG
const CR4_INIT: u64 = 0x6A0; // PAE|PGE|OSFXSR|OSXMMEXCPT

fn cr_script() -> (tdx_model::engine::ScriptedEngine, Vec<u64>) {
    script(&[
        L2Action::SetGpr {
            gpr: 3,
            value: CR0_INIT & !CR0_WP,
        },
        L2Action::MovToCr { cr: 0, gpr: 3 },
        L2Action::MovFromCr { cr: 0, gpr: 1 },
        L2Action::SetGpr {
            gpr: 2,
            value: CR4_INIT | CR4_MCE,
        },
        L2Action::MovToCr { cr: 4, gpr: 2 },
        L2Action::MovFromCr { cr: 4, gpr: 8 },
        L2Action::SetGpr {
            gpr: 6,
            value: CR4_INIT | CR4_MCE | CR4_VMXE,
        },
        L2Action::MovToCr { cr: 4, gpr: 6 },
        L2Action::MovFromCr { cr: 4, gpr: 9 },
        L2Action::Hlt,
    ])
}

fn value_at(td: &Td, rip: u64) -> Option<u64> {
    td.trace()
        .iter()
        .find(|t| t.rip == rip)
        .and_then(|t| t.value)
}

#[test]
fn allowed_cr_writes_are_emulated() {
    let (engine, rips) = cr_script();
    let mut td = Td::new(engine);
    let mut vcpu = boot(&mut td, &config());
    assert_eq!(
        run(&mut td, &mut vcpu, &mut DefaultHandlers::default()),
        StopReason::Halted
    );

    // CR0.WP cleared: GUEST_CR0 and the shadow follow, L2 reads it back.
    assert_eq!(td.vmcs(vmcs::GUEST_CR0) & CR0_WP, 0);
    assert_eq!(td.vmcs(vmcs::CR0_READ_SHADOW), CR0_PE | CR0_PG);
    assert_eq!(value_at(&td, rips[2]), Some(CR0_INIT & !CR0_WP));
    // CR4.MCE set: module-owned in GUEST_CR4, so L1 shows it through its shadow.
    assert_eq!(td.vmcs(vmcs::CR4_READ_SHADOW), CR4_MCE);
    assert_eq!(value_at(&td, rips[5]), Some(CR4_INIT | CR4_MCE));
    // CR4.VMXE is refused architecturally (VMX is hidden): #GP, nothing changes.
    assert_eq!(td.events(), [gp0_at(rips[7])]);
    assert_eq!(
        value_at(&td, rips[8]),
        Some(CR4_INIT | CR4_MCE),
        "VMXE still reads 0"
    );
    assert_eq!(vcpu.stats.count(reason::CR_ACCESS), 3);
    let after_movs: Vec<_> = [rips[1], rips[4]]
        .iter()
        .map(|r| td.trace().iter().filter(|t| t.rip == *r).count())
        .collect();
    assert_eq!(
        after_movs,
        [1, 1],
        "each emulated MOV ran once, then RIP moved on"
    );
}

/// Pins CR0.WP once set, like LVBS register locking.
struct PinWp;

impl CrPolicy for PinWp {
    fn check(&mut self, w: &CrWrite) -> CrDecision {
        if w.cr == 0 && w.old & CR0_WP != 0 && w.new & CR0_WP == 0 {
            CrDecision::Reject
        } else {
            CrDecision::Allow
        }
    }
}

#[test]
fn rejected_cr_write_injects_gp_and_keeps_the_value() {
    let (engine, rips) = cr_script();
    let mut td = Td::new(engine);
    let mut vcpu = boot(&mut td, &config());
    let mut h = DefaultHandlers::default().with_cr_policy(PinWp);
    assert_eq!(run(&mut td, &mut vcpu, &mut h), StopReason::Halted);
    assert_eq!(td.events(), [gp0_at(rips[1]), gp0_at(rips[7])]);
    assert_ne!(td.vmcs(vmcs::GUEST_CR0) & CR0_WP, 0);
    assert_eq!(td.vmcs(vmcs::CR0_READ_SHADOW), CR0_PE | CR0_WP | CR0_PG);
    assert_eq!(value_at(&td, rips[2]), Some(CR0_INIT), "WP still set");
    let mov = td.trace().iter().find(|t| t.rip == rips[1]).unwrap();
    assert_eq!(mov.step, Step::Exit);
}
