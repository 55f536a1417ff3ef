//! CPUID: forwarded to the host, VMX/SMX hidden, hypervisor leaves owned by L1.

use crate::harness::*;
use paravisor::handlers::{CPUID_1_ECX_HYPERVISOR, CPUID_1_ECX_SMX, CPUID_1_ECX_VMX};
use paravisor::{DefaultHandlers, StopReason};
use tdcall::vmx::reason;
use tdx_model::engine::L2Action;

#[test]
fn cpuid_policy_applies_to_host_answers() {
    let (engine, rips) = script(&[
        L2Action::SetGpr {
            gpr: 0,
            value: 0xFFFF_FFFF_0000_0001, // EAX = 1; upper half must not matter
        },
        L2Action::SetGpr { gpr: 1, value: 0 },
        L2Action::SetGpr {
            gpr: 3,
            value: 0xDEAD_BEEF_DEAD_BEEF,
        },
        L2Action::Cpuid,
        L2Action::SetGpr {
            gpr: 0,
            value: 0x4000_0000,
        },
        L2Action::Cpuid,
        L2Action::SetGpr {
            gpr: 0,
            value: 0x4000_0001,
        },
        L2Action::Cpuid,
        L2Action::SetGpr { gpr: 0, value: 7 },
        L2Action::Cpuid,
        L2Action::Hlt,
    ]);
    let mut td = Td::new(engine);
    let host_ecx = 0x7FFA_FB83 | CPUID_1_ECX_VMX | CPUID_1_ECX_SMX;
    let cpuid = &mut td.host_mut().cpuid;
    cpuid.insert((1, 0), [0x0009_06EA, 0x0001_0800, host_ecx, 0xBFEB_FBFF]);
    // A host hypervisor's leaves must never reach L2.
    cpuid.insert(
        (0x4000_0000, 0),
        [0x4000_0010, 0x4B4D_564B, 0x564B_4D56, 0x4D],
    );
    cpuid.insert((0x4000_0001, 0), [0xFFFF_FFFF; 4]);
    cpuid.insert((7, 0), [0, 0x029C_6FBF, 0x4040_5F5E, 0xBC00_0410]);
    let mut vcpu = boot(&mut td, &config());
    let mut h = DefaultHandlers::default();

    step(&mut td, &mut vcpu, &mut h).unwrap();
    let g = vcpu.state.gprs;
    assert_eq!(g[0], 0x0009_06EA);
    assert_eq!(g[3], 0x0001_0800, "EBX zero-extended into RBX");
    assert_eq!(
        g[1],
        ((host_ecx & !(CPUID_1_ECX_VMX | CPUID_1_ECX_SMX)) | CPUID_1_ECX_HYPERVISOR) as u64
    );
    assert_eq!(g[2], 0xBFEB_FBFF);
    assert_eq!(vcpu.state.rip, rips[3] + 2);

    step(&mut td, &mut vcpu, &mut h).unwrap();
    let g = vcpu.state.gprs;
    assert_eq!(g[0], 0x4000_0000);
    let mut sig = Vec::new();
    for r in [g[3], g[1], g[2]] {
        sig.extend_from_slice(&(r as u32).to_le_bytes());
    }
    assert_eq!(&sig, b"LVBSTDX\0\0\0\0\0");

    step(&mut td, &mut vcpu, &mut h).unwrap();
    assert_eq!(
        &vcpu.state.gprs[..4],
        &[0, 0, 0, 0],
        "0x4000_0001 reads as zero"
    );

    step(&mut td, &mut vcpu, &mut h).unwrap();
    assert_eq!(
        &vcpu.state.gprs[..4],
        &[0, 0x4040_5F5E, 0xBC00_0410, 0x029C_6FBF],
        "other leaves unchanged (RAX, RCX, RDX, RBX)"
    );
    assert_eq!(run(&mut td, &mut vcpu, &mut h), StopReason::Halted);
    assert_eq!(vcpu.stats.count(reason::CPUID), 4);
}
