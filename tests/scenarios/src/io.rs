//! Port I/O: OUT forwards the masked value, IN merges into AL/AX/EAX.

use crate::harness::*;
use paravisor::{DefaultHandlers, StopReason};
use tdcall::vmx::reason;
use tdx_model::engine::L2Action;
use tdx_model::host::Write;

fn rax(value: u64) -> L2Action {
    L2Action::SetGpr { gpr: 0, value }
}

#[test]
fn out_reaches_the_host_serial_and_ports() {
    let (engine, rips) = script(&[
        rax(0xFFFF_FFFF_FFFF_FF48), // 'H' in AL
        L2Action::Out {
            port: 0x3F8,
            size: 1,
        },
        rax(0x69), // 'i'
        L2Action::Out {
            port: 0x3F8,
            size: 1,
        },
        rax(0xAAAA_BBBB_1234_5678),
        L2Action::Out {
            port: 0x80,
            size: 2,
        },
        L2Action::Out {
            port: 0xCF8,
            size: 4,
        },
        L2Action::Hlt,
    ]);
    let mut td = Td::new(engine);
    let mut vcpu = boot(&mut td, &config());
    assert_eq!(
        run(&mut td, &mut vcpu, &mut DefaultHandlers::default()),
        StopReason::Halted
    );
    assert_eq!(td.host().serial_text(), "Hi");
    let w = |address, size, value| Write {
        address,
        size,
        value,
    };
    assert_eq!(
        td.host().port_writes,
        [
            w(0x3F8, 1, 0x48),
            w(0x3F8, 1, 0x69),
            w(0x80, 2, 0x5678),
            w(0xCF8, 4, 0x1234_5678)
        ]
    );
    assert_eq!(vcpu.stats.count(reason::IO_INSTRUCTION), 4);
    assert_eq!(vcpu.state.rip, rips[7] + 1);
    assert_eq!(
        vcpu.state.gprs[0], 0xAAAA_BBBB_1234_5678,
        "OUT leaves RAX alone"
    );
}

#[test]
fn in_merges_like_the_instruction() {
    let (engine, rips) = script(&[
        rax(0x1111_2222_3333_4444),
        L2Action::In {
            port: 0x60,
            size: 1,
        },
        L2Action::In {
            port: 0x64,
            size: 2,
        }, // no device: all ones
        L2Action::In {
            port: 0xCFC,
            size: 4,
        },
        L2Action::Hlt,
    ]);
    let mut td = Td::new(engine);
    td.host_mut().port_values.insert(0x60, 0xAB);
    td.host_mut().port_values.insert(0xCFC, 0x8086_1237);
    let mut vcpu = boot(&mut td, &config());
    let mut h = DefaultHandlers::default();
    step(&mut td, &mut vcpu, &mut h).unwrap();
    assert_eq!(vcpu.state.gprs[0], 0x1111_2222_3333_44AB, "AL only");
    assert_eq!(vcpu.state.rip, rips[1] + 2);
    step(&mut td, &mut vcpu, &mut h).unwrap();
    assert_eq!(vcpu.state.gprs[0], 0x1111_2222_3333_FFFF, "AX only");
    step(&mut td, &mut vcpu, &mut h).unwrap();
    assert_eq!(vcpu.state.gprs[0], 0x8086_1237, "EAX zero-extends");
    assert_eq!(run(&mut td, &mut vcpu, &mut h), StopReason::Halted);
    assert!(td.host().port_writes.is_empty());
}
