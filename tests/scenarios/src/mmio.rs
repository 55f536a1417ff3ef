//! MMIO emulation: instruction bytes at L2 RIP are decoded, the access is
//! forwarded with #VE.RequestMMIO, loads land in the decoded register. Both
//! the direct L2→L1 path (un-aliased private range) and the host-routed path
//! (GPA hole, class 0x1100) are covered.

use crate::harness::*;
use paravisor::{DefaultHandlers, StopReason};
use tdcall::vmx::reason;
use tdx_model::engine::{AccessKind, L2Action};
use tdx_model::host::Write;

fn access(kind: AccessKind, gpa: u64, size: u8, value: u64) -> L2Action {
    L2Action::Access {
        kind,
        gpa,
        gla: gpa,
        cpl: 0,
        size,
        value,
    }
}

#[test]
fn mov_loads_and_stores_are_emulated() {
    let (engine, rips) = script(&[
        L2Action::SetGpr {
            gpr: 0,
            value: MMIO_PRIVATE,
        },
        L2Action::SetGpr {
            gpr: 3,
            value: 0x1122_3344_5566_7788,
        },
        L2Action::SetGpr {
            gpr: 2,
            value: 0xFFFF_FFFF_FFFF_FFFF,
        },
        // mov [rax+0x10], ebx
        access(AccessKind::Write, MMIO_PRIVATE + 0x10, 4, 0x5566_7788),
        // mov rcx, [rax]
        access(AccessKind::Read, MMIO_PRIVATE + 0x20, 8, 1),
        // mov ah, [rax+0x30]
        access(AccessKind::Read, MMIO_PRIVATE + 0x30, 1, 0),
        // mov byte [rax], 0x5a
        access(AccessKind::Write, MMIO_HOLE + 0x40, 1, 0x5A),
        // movzx edx, word [rax]
        access(AccessKind::Read, MMIO_HOLE + 0x48, 2, 2),
        // mov [rax], bx (66 89 18)
        access(AccessKind::Write, MMIO_HOLE + 0x50, 2, 0x7788),
        L2Action::Hlt,
    ]);
    let mut td = Td::new(engine);
    L2PageTables::identity(&mut td);
    for (i, bytes) in [
        (3, [0x89, 0x58, 0x10]),
        (4, [0x48, 0x8B, 0x08]),
        (5, [0x8A, 0x60, 0x30]),
        (6, [0xC6, 0x00, 0x5A]),
        (7, [0x0F, 0xB7, 0x10]),
        (8, [0x66, 0x89, 0x18]),
    ] {
        td.put_code(rips[i], &bytes);
    }
    let host = td.host_mut();
    host.mmio_values
        .insert(MMIO_PRIVATE + 0x20, 0xCAFE_F00D_1234_5678);
    host.mmio_values.insert(MMIO_PRIVATE + 0x30, 0x9A);
    host.mmio_values.insert(MMIO_HOLE + 0x48, 0xBEEF);
    let mut vcpu = boot(&mut td, &config());
    assert_eq!(
        run(&mut td, &mut vcpu, &mut DefaultHandlers::default()),
        StopReason::Halted
    );

    let w = |address, size, value| Write {
        address,
        size,
        value,
    };
    assert_eq!(
        td.host().mmio_writes,
        [
            w(MMIO_PRIVATE + 0x10, 4, 0x5566_7788),
            w(MMIO_HOLE + 0x40, 1, 0x5A),
            w(MMIO_HOLE + 0x50, 2, 0x7788),
        ]
    );
    let g = vcpu.state.gprs;
    assert_eq!(g[1], 0xCAFE_F00D_1234_5678, "RCX");
    assert_eq!(g[0], (MMIO_PRIVATE & !0xFF00) | 0x9A00, "AH");
    assert_eq!(g[2], 0xBEEF, "MOVZX into EDX zero-extends");
    assert_eq!(vcpu.state.rip, rips[9] + 1);
    assert_eq!(vcpu.stats.count(reason::EPT_VIOLATION), 6);
    assert_eq!(
        vcpu.stats.host_routed_async, 3,
        "the hole goes through the host"
    );
    assert_eq!(td.host().routed_exits.len(), 3);
    assert!(td.events().is_empty());
    // The private MMIO page itself was never touched.
    let mut b = [0u8; 8];
    td.0.read_memory(MMIO_PRIVATE + 0x10, &mut b).unwrap();
    assert_eq!(b, [0; 8]);
}

#[test]
fn unsupported_mmio_instructions_get_gp() {
    let (engine, rips) = script(&[
        // ud2: undecodable as MMIO
        access(AccessKind::Read, MMIO_PRIVATE, 4, 0),
        // a load instruction behind a write exit: mismatch
        access(AccessKind::Write, MMIO_PRIVATE + 8, 4, 0),
        // add [rax], ebx: read-modify-write is not emulated
        access(AccessKind::Write, MMIO_HOLE, 4, 0),
        // executing from MMIO
        access(AccessKind::Fetch, MMIO_PRIVATE + 0x100, 1, 0),
        L2Action::Hlt,
    ]);
    let mut td = Td::new(engine);
    L2PageTables::identity(&mut td);
    td.put_code(rips[0], &[0x0F, 0x0B, 0x90]);
    td.put_code(rips[1], &[0x8B, 0x18, 0x90]);
    td.put_code(rips[2], &[0x01, 0x18, 0x90]);
    let mut vcpu = boot(&mut td, &config());
    assert_eq!(
        run(&mut td, &mut vcpu, &mut DefaultHandlers::default()),
        StopReason::Halted
    );
    assert_eq!(
        td.events(),
        [
            gp0_at(rips[0]),
            gp0_at(rips[1]),
            gp0_at(rips[2]),
            gp0_at(rips[3])
        ]
    );
    assert!(td.host().mmio_writes.is_empty());
    assert_eq!(vcpu.stats.injected, 4);
}

#[test]
fn unreadable_instruction_bytes_get_gp() {
    // L2 code outside L1's memory: L1 cannot fetch the instruction.
    let mut engine = tdx_model::engine::ScriptedEngine::new(MEMORY + 0x1000);
    let rip = engine.push(access(AccessKind::Read, MMIO_PRIVATE, 4, 0));
    engine.push(L2Action::Hlt);
    let mut td = Td::new(engine);
    L2PageTables::identity(&mut td);
    let mut cfg = config();
    if let Some(init) = cfg.initial.as_mut() {
        init.rip = MEMORY + 0x1000;
    }
    let mut vcpu = boot(&mut td, &cfg);
    assert_eq!(
        run(&mut td, &mut vcpu, &mut DefaultHandlers::default()),
        StopReason::Halted
    );
    assert_eq!(td.events(), [gp0_at(rip)]);
}

#[test]
fn mmio_at_kernel_virtual_addresses_walks_l2_page_tables() {
    // Linux runs at kernel virtual addresses: the instruction is found through
    // L2's page tables, here split over two 4 KiB pages with unrelated GPAs.
    const KV: u64 = 0xFFFF_FFFF_C000_0000;
    for second_page_mapped in [true, false] {
        let mut engine = tdx_model::engine::ScriptedEngine::new(KV + 0xFFD);
        let set = engine.push(L2Action::SetGpr {
            gpr: 0,
            value: MMIO_PRIVATE,
        });
        // mov [rax+0x10], ebx: 89 58 | 10
        let rip = engine.push(access(AccessKind::Write, MMIO_PRIVATE + 0x10, 4, 0x77));
        engine.push(L2Action::Hlt);
        assert_eq!((set, rip), (KV + 0xFFD, KV + 0xFFE));
        let mut td = Td::new(engine);
        let mut pt = L2PageTables::new(&mut td);
        pt.map(&mut td, KV, CODE, 0x1000, 0);
        if second_page_mapped {
            pt.map(&mut td, KV + 0x1000, CODE + 0x3000, 0x1000, 0);
        }
        for page in [CODE, CODE + 0x3000] {
            l2_alias(
                &mut td,
                page,
                tdcall::attr::L2Attr::R | tdcall::attr::L2Attr::XS,
            );
        }
        td.put_code(CODE + 0xFFE, &[0x89, 0x58]);
        td.put_code(CODE + 0x3000, &[0x10]);
        let mut cfg = config();
        if let Some(init) = cfg.initial.as_mut() {
            init.rip = KV + 0xFFD;
        }
        let mut vcpu = boot(&mut td, &cfg);
        vcpu.state.gprs[3] = 0x77;
        assert_eq!(
            run(&mut td, &mut vcpu, &mut DefaultHandlers::default()),
            StopReason::Halted
        );
        if second_page_mapped {
            assert!(td.events().is_empty());
            assert_eq!(
                td.host().mmio_writes,
                [Write {
                    address: MMIO_PRIVATE + 0x10,
                    size: 4,
                    value: 0x77
                }]
            );
        } else {
            // Only "89 58" is readable: a truncated instruction, #GP(0).
            assert_eq!(td.events(), [gp0_at(rip)]);
            assert!(td.host().mmio_writes.is_empty());
        }
    }
}
