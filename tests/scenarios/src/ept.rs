//! EPT violations outside MMIO: the access does not happen and L2 gets #GP(0),
//! never a #PF (design.md §4).

use crate::harness::*;
use paravisor::{DefaultHandlers, StopReason};
use tdcall::attr::{AttrWrFlags, GpaAttr, GpaMapping, L2Attr, PageLevel};
use tdcall::leaves::MemPageAttrWr;
use tdcall::vmx::{reason, EptViolationQual};
use tdcall::L2Vm;
use tdx_model::engine::{AccessKind, L2Action, Step};

fn access(kind: AccessKind, gpa: u64, cpl: u8, value: u64) -> L2Action {
    L2Action::Access {
        kind,
        gpa,
        gla: 0xFFFF_8880_0000_0000 + gpa,
        cpl,
        size: 8,
        value,
    }
}

fn alias(td: &mut Td, gpa: u64, attr: L2Attr) {
    tdcall::call(
        td,
        &MemPageAttrWr {
            mapping: GpaMapping::new(gpa, PageLevel::Size4K),
            attr: GpaAttr::for_vm(L2Vm::Vm1, attr | L2Attr::VALID),
            flags: AttrWrFlags::for_vm(L2Vm::Vm1, L2Attr::PRESENT, true),
        },
    )
    .expect("ATTR.WR");
}

#[test]
fn violations_inject_gp_and_the_access_does_not_happen() {
    let (engine, rips) = script(&[
        access(AccessKind::Read, DATA + 8, 0, 3),       // allowed: R
        access(AccessKind::Write, DATA + 8, 0, 0x99),   // read-only page
        access(AccessKind::Read, DATA + 0x1000, 0, 3),  // no alias at all
        access(AccessKind::Fetch, DATA, 0, 0),          // not executable
        access(AccessKind::Fetch, DATA + 0x2000, 3, 0), // Xs only, user fetch with MBEC
        access(AccessKind::Read, PENDING, 0, 3),        // never accepted
        L2Action::Hlt,
    ]);
    let mut td = Td::new(engine);
    td.0.write_memory(DATA + 8, &0x4242u64.to_le_bytes())
        .unwrap();
    alias(&mut td, DATA, L2Attr::R);
    alias(&mut td, DATA + 0x2000, L2Attr::R | L2Attr::XS);
    let mut vcpu = boot(&mut td, &config());
    let mut h = DefaultHandlers::default();

    let mut exits = Vec::new();
    loop {
        match step(&mut td, &mut vcpu, &mut h) {
            Ok(r) => exits.push(r.exit),
            Err(stop) => {
                assert_eq!(stop, StopReason::Halted);
                break;
            }
        }
    }
    assert_eq!(exits.len(), 5);
    assert!(exits
        .iter()
        .all(|e| e.reason == reason::EPT_VIOLATION as u32));
    let q = |i: usize| EptViolationQual::from_bits_retain(exits[i].qualification);
    assert!(q(0).contains(EptViolationQual::WRITE | EptViolationQual::READABLE));
    assert!(!q(0).contains(EptViolationQual::WRITABLE));
    assert_eq!(exits[1].gpa, DATA + 0x1000);
    assert!(q(3).contains(EptViolationQual::FETCH | EptViolationQual::EXECUTABLE));
    assert!(!q(3).contains(EptViolationQual::USER_EXECUTABLE));
    assert_eq!(exits[3].cpl, 3);
    assert_eq!(exits[4].ext_qual_type, 6, "pending page");

    assert_eq!(
        td.events(),
        [
            gp0_at(rips[1]),
            gp0_at(rips[2]),
            gp0_at(rips[3]),
            gp0_at(rips[4]),
            gp0_at(rips[5])
        ]
    );
    assert!(td.events().iter().all(|e| e.vector != 14), "never a #PF");
    let first = &td.trace()[0];
    assert_eq!((first.step, first.value), (Step::Completed, Some(0x4242)));
    let mut b = [0u8; 8];
    td.0.read_memory(DATA + 8, &mut b).unwrap();
    assert_eq!(
        u64::from_le_bytes(b),
        0x4242,
        "the denied write did not happen"
    );
    assert_eq!(vcpu.stats.count(reason::EPT_VIOLATION), 5);
    assert_eq!(vcpu.stats.injected, 5);
}
