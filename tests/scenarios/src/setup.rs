//! L2 set-up: the model's VMCS and MSR bitmap reflect `setup_l2_vm`, the first
//! entry flushes, and the mandatory/optional pieces fail the way §2.2 and §8 say.

use crate::harness::*;
use paravisor::setup::{
    CR0_ET, CR0_MP, CR0_PE, CR0_PG, CR0_WP, CR4_MCE, CR4_VMXE, EFER_LMA, EFER_LME, EFER_SCE,
};
use paravisor::{setup_l2_vm, DefaultHandlers, MsrPassthrough, SetupError, StopReason};
use tdcall::field::{controls, vmcs};
use tdcall::{L2EnterGuestState, OperandId, StatusCode};
use tdx_model::engine::L2Action;
use tdx_model::TdConfig;

#[test]
fn setup_programs_the_model_vmcs() {
    let (engine, _) = script(&[L2Action::Hlt]);
    let mut td = Td::new(engine);
    let mut cfg = config();
    cfg.msr_passthrough.push(MsrPassthrough {
        msr: 0xC000_0082, // LSTAR: reads and writes
        read: true,
        write: true,
    });
    cfg.msr_passthrough.push(MsrPassthrough {
        msr: 0x10, // TSC: reads only
        read: true,
        write: false,
    });
    let _vcpu = boot(&mut td, &cfg);

    assert_eq!(td.vmcs(vmcs::VIRTUAL_APIC_PAGE_ADDR), VAPIC);
    let secondary = td.vmcs(vmcs::SECONDARY_PROC_BASED_CTLS);
    assert_ne!(secondary & controls::SECONDARY_MBEC, 0, "MBEC on");
    assert_eq!(
        secondary & !controls::SECONDARY_MBEC,
        controls::SECONDARY_L2_INIT & !controls::SECONDARY_MBEC,
        "no other secondary bit changed"
    );
    assert_eq!(
        td.vmcs(vmcs::EXCEPTION_BITMAP),
        1 << 18,
        "only #MC, which L1 cannot clear"
    );
    assert_eq!(td.vmcs(vmcs::CR0_GUEST_HOST_MASK), CR0_PE | CR0_WP | CR0_PG);
    assert_eq!(td.vmcs(vmcs::CR0_READ_SHADOW), CR0_PE | CR0_WP | CR0_PG);
    assert_eq!(td.vmcs(vmcs::CR4_GUEST_HOST_MASK), CR4_MCE | CR4_VMXE);
    assert_eq!(td.vmcs(vmcs::CR4_READ_SHADOW), 0, "VMXE and MCE hidden");
    assert_eq!(
        td.vmcs(vmcs::GUEST_CR0) & controls::GUEST_CR0_L1_WR_MASK,
        CR0_PE | CR0_MP | CR0_ET | CR0_WP | CR0_PG
    );
    assert_eq!(td.vmcs(vmcs::GUEST_CR3), PML4);
    assert_eq!(
        td.vmcs(vmcs::GUEST_CR4) & controls::GUEST_CR4_L1_WR_MASK,
        0x6A0
    );
    assert_eq!(
        td.vmcs(vmcs::GUEST_IA32_EFER) & controls::GUEST_EFER_L1_WR_MASK,
        EFER_SCE | EFER_LME | EFER_LMA
    );
    assert_ne!(
        td.vmcs(vmcs::VM_ENTRY_CONTROLS) & controls::ENTRY_IA32E_MODE,
        0
    );
    assert_eq!(td.vmcs(vmcs::GUEST_CS_SELECTOR), 0x08);
    assert_eq!(td.vmcs(vmcs::GUEST_CS_AR), 0xA09B);
    assert_eq!(td.vmcs(vmcs::GUEST_SS_AR), 0xC093);
    assert_eq!(td.vmcs(vmcs::GUEST_DS_LIMIT), 0xFFFF_FFFF);
    assert_eq!(td.vmcs(vmcs::GUEST_TR_AR), 0x8B);
    assert_eq!(td.vmcs(vmcs::GUEST_LDTR_AR), 0x1_0000);
    assert_eq!(td.vmcs(vmcs::GUEST_GDTR_BASE), GDT);
    assert_eq!(td.vmcs(vmcs::GUEST_IDTR_LIMIT), 0xFFF);
    let bitmap = |i| td.0.l2_msr_bitmap(0, tdcall::L2Vm::Vm1, i).unwrap();
    assert_eq!(bitmap(0x082), !(1 << 2), "LSTAR read passes through");
    assert_eq!(bitmap(0x182), !(1 << 2), "LSTAR write passes through");
    assert_eq!(bitmap(0x000), !(1 << 0x10), "TSC read passes through");
    assert_eq!(bitmap(0x100), u64::MAX, "TSC write intercepted");
    assert!((0..512)
        .filter(|i| ![0x0, 0x82, 0x182].contains(i))
        .all(|i| bitmap(i) == u64::MAX));
}

#[test]
fn entry_state_lives_in_the_buffer_and_first_entry_flushes() {
    let (engine, rips) = script(&[L2Action::Cpuid, L2Action::Hlt]);
    let mut td = Td::new(engine);
    let mut vcpu = boot(&mut td, &config());
    assert_eq!(vcpu.state.rip, CODE);
    assert_eq!(vcpu.state.gprs[4], STACK);
    assert_eq!(
        run(&mut td, &mut vcpu, &mut DefaultHandlers::default()),
        StopReason::Halted
    );
    assert_eq!(td.0.stats().invept[1], 1, "INVEPT on the first entry only");
    assert_eq!(vcpu.stats.entries, 2);
    assert_eq!(vcpu.state.rip, rips[1] + 1);
    // The buffer in L1 memory holds what the module wrote back last.
    let mut buf = [0u8; 256];
    td.0.read_memory(BUF, &mut buf).unwrap();
    assert_eq!(L2EnterGuestState::from_bytes(&buf).rip, rips[1]);
    assert_eq!(td.vmcs(vmcs::GUEST_RSP), STACK);
}

#[test]
fn setup_failures_name_the_field() {
    let (engine, _) = script(&[L2Action::Hlt]);
    let mut c = TdConfig::new(MEMORY);
    c.mbec_supported = false;
    let mut td = Td::with_config(c, engine);
    match setup_l2_vm(&mut td, &config()) {
        Err(SetupError::Field(e)) => {
            assert_eq!(e.name, "SECONDARY_PROC_BASED_CTLS");
            assert_eq!(e.error.code(), StatusCode::METADATA_FIELD_VALUE_NOT_VALID);
        }
        other => panic!("expected a field error, got {other:?}"),
    }
    let (engine, _) = script(&[L2Action::Hlt]);
    let mut td = Td::new(engine);
    let mut cfg = config();
    cfg.vapic_gpa = 1 << 47; // the shared bit: not a private GPA
    let err = setup_l2_vm(&mut td, &cfg).unwrap_err();
    assert!(
        matches!(err, SetupError::Field(e) if e.name == "VIRTUAL_APIC_PAGE_ADDR"),
        "{err}"
    );
}

#[test]
fn entering_without_setup_fails_on_the_vapic_page() {
    let (engine, _) = script(&[L2Action::Hlt]);
    let mut td = Td::new(engine);
    let mut vcpu =
        paravisor::Vcpu::new(tdcall::L2Vm::Vm1, BUF, Default::default(), Vec::new()).unwrap();
    match run(&mut td, &mut vcpu, &mut DefaultHandlers::default()) {
        StopReason::EnterFailed(e) => {
            assert_eq!(e.code(), StatusCode::OPERAND_INVALID);
            assert_eq!(e.operand_id(), Some(OperandId::L2_VAPIC_GPA));
        }
        other => panic!("{other:?}"),
    }
    assert!(td.trace().is_empty(), "L2 never ran");
}
