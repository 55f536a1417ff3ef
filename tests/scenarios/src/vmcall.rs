//! VMCALL: the LVBS call gate. RDI = id, RSI/RDX/R8 = arguments, result in R8.

use crate::harness::*;
use paravisor::{
    DefaultHandlers, HypercallArgs, HypercallContext, HypercallHandler, StopReason, ENOSYS,
};
use tdcall::vmx::reason;
use tdx_model::engine::L2Action;

fn call(id: u64, a1: u64, a2: u64, a3: u64) -> [L2Action; 5] {
    [
        L2Action::SetGpr { gpr: 7, value: id },
        L2Action::SetGpr { gpr: 6, value: a1 },
        L2Action::SetGpr { gpr: 2, value: a2 },
        L2Action::SetGpr { gpr: 8, value: a3 },
        L2Action::Vmcall,
    ]
}

#[test]
fn default_handler_returns_enosys() {
    let mut actions = call(0x1FFE2, 1, 2, 3).to_vec();
    actions.push(L2Action::Hlt);
    let (engine, rips) = script(&actions);
    let mut td = Td::new(engine);
    let mut vcpu = boot(&mut td, &config());
    assert_eq!(
        run(&mut td, &mut vcpu, &mut DefaultHandlers::default()),
        StopReason::Halted
    );
    assert_eq!(vcpu.state.gprs[8], ENOSYS);
    assert_eq!(vcpu.state.gprs[8] as i64, -38);
    assert_eq!(vcpu.state.gprs[7], 0x1FFE2, "RDI preserved");
    assert_eq!(vcpu.state.rip, rips[5] + 1);
    assert_eq!(vcpu.stats.count(reason::VMCALL), 1);
}

/// Records calls, reads a qword of guest memory at a1, returns a token, and
/// asks for a translation flush.
#[derive(Default)]
struct Recorder {
    calls: Vec<HypercallArgs>,
    read: Vec<u64>,
}

impl HypercallHandler for Recorder {
    fn handle(&mut self, cx: &mut HypercallContext<'_>, args: &HypercallArgs) -> u64 {
        self.calls.push(*args);
        let mut b = [0u8; 8];
        if cx.platform.read(args.a1, &mut b).is_err() {
            return -14i64 as u64; // -EFAULT
        }
        self.read.push(u64::from_le_bytes(b));
        cx.invalidate_translations();
        7
    }
}

#[test]
fn calls_reach_the_hypercall_handler() {
    let mut actions = call(0x1FFE6, DATA, 0x20, 0x1).to_vec();
    actions.extend(call(0x1FFE6, MEMORY + 0x1000, 0, 0));
    actions.push(L2Action::Hlt);
    let (engine, _) = script(&actions);
    let mut td = Td::new(engine);
    td.0.write_memory(DATA, &0x1234_5678u64.to_le_bytes())
        .unwrap();
    let mut vcpu = boot(&mut td, &config());
    let mut h = DefaultHandlers::default().with_hypercalls(Recorder::default());
    step(&mut td, &mut vcpu, &mut h).unwrap();
    assert_eq!(vcpu.state.gprs[8], 7, "token in R8");
    assert!(vcpu.invalidation_pending());
    assert_eq!(run(&mut td, &mut vcpu, &mut h), StopReason::Halted);
    assert_eq!(vcpu.state.gprs[8] as i64, -14);
    assert_eq!(
        h.hypercalls.calls[0],
        HypercallArgs {
            id: 0x1FFE6,
            a1: DATA,
            a2: 0x20,
            a3: 0x1
        }
    );
    assert_eq!(h.hypercalls.read, [0x1234_5678]);
    assert_eq!(
        td.0.stats().invept[1],
        2,
        "first entry plus the requested flush"
    );
}
