//! Every leaf of the model: at least one success and one error status each, with
//! the exact codes of tdx-abi.md §1.2; plus the acceptance scenarios driven
//! through TDG.VP.ENTER on the scripted engine.

use tdcall::attr::{AttrWrFlags, GpaAttr, GpaMapping, L2Attr, PageLevel};
use tdcall::enter::{gpr, EnterOutcome, InvdTranslations, L2EnterGuestState, VpEnterFlags};
use tdcall::field::{controls, sys, td, vcpu, vmcs, FieldId};
use tdcall::leaves::*;
use tdcall::vmcall::{AccessSize, TdVmcall, VmcallStatus};
use tdcall::vmx::{reason, CrAccessQual, EptViolationQual};
use tdcall::{call, L2Vm, Leaf, OperandId, Registers, StatusCode, Tdcall, TdxError};
use tdx_model::engine::{AccessKind, L2Action, ScriptedEngine, Step};
use tdx_model::host::ScriptedHost;
use tdx_model::measure::MrtdBuilder;
use tdx_model::{ServtdBinding, TdConfig, TdxModel};

type Model = TdxModel<ScriptedHost, ScriptedEngine>;

const MIB: u64 = 1 << 20;
const VAPIC: u64 = 0x1_0000;
const BUF: u64 = 0x2_0000;
const SCRATCH: u64 = 0x3_0000;
const CODE: u64 = 0x40_0000;

fn model() -> Model {
    let mut c = TdConfig::new(16 * MIB);
    c.accepted_bytes = 8 * MIB;
    TdxModel::new(c, ScriptedHost::default(), ScriptedEngine::new(CODE))
}

fn err(code: StatusCode, op: OperandId) -> TdxError {
    TdxError::operand(code, op)
}

fn md(code: StatusCode) -> TdxError {
    TdxError::operand(code, OperandId(0))
}

fn vp_wr(m: &mut Model, field: FieldId, value: u64, mask: u64) -> Result<u64, TdxError> {
    call(m, &VpWr(FieldWrite { field, value, mask }))
}

fn vm1(f: tdcall::VmcsField) -> FieldId {
    FieldId::l2_vmcs(L2Vm::Vm1, f)
}

fn alias(m: &mut Model, gpa: u64, attr: L2Attr) -> Result<PageAttrs, TdxError> {
    call(
        m,
        &MemPageAttrWr {
            mapping: GpaMapping::new(gpa, PageLevel::Size4K),
            attr: GpaAttr::for_vm(L2Vm::Vm1, attr | L2Attr::VALID),
            flags: AttrWrFlags::for_vm(L2Vm::Vm1, L2Attr::PRESENT, true),
        },
    )
}

/// Minimal L1 setup for entering VM 1, and one entry.
fn setup(m: &mut Model) {
    vp_wr(m, vm1(vmcs::VIRTUAL_APIC_PAGE_ADDR), VAPIC, u64::MAX).unwrap();
}

fn enter(m: &mut Model, state: &L2EnterGuestState) -> Result<VpEnterResult, TdxError> {
    m.write_memory(BUF, &state.to_bytes()).unwrap();
    call(
        m,
        &VpEnter {
            flags: VpEnterFlags {
                vm: L2Vm::Vm1,
                invd: InvdTranslations::None,
            },
            guest_state_gpa: BUF,
        },
    )
}

fn state_at(rip: u64) -> L2EnterGuestState {
    L2EnterGuestState {
        rip,
        ..Default::default()
    }
}

fn read_state(m: &Model) -> L2EnterGuestState {
    let mut b = [0u8; 256];
    m.read_memory(BUF, &mut b).unwrap();
    L2EnterGuestState::from_bytes(&b)
}

#[test]
fn rax_checks() {
    let mut m = model();
    for rax in [1u64 << 24, 1 | (1 << 16), 13, 0x7FFF] {
        let mut r = Registers {
            rax,
            ..Default::default()
        };
        m.tdcall(&mut r);
        assert_eq!(r.rax, 0xC000_0100_0000_0000, "rax {rax:#x}");
    }
}

#[test]
fn leaf0_vmcall() {
    let mut m = model();
    let out = call(
        &mut m,
        &VpVmcall(TdVmcall::IoWrite {
            size: AccessSize::B1,
            port: 0x3F8,
            value: b'A' as u32,
        }),
    )
    .unwrap();
    assert_eq!(out.status, VmcallStatus::SUCCESS);
    assert_eq!(m.host.serial, b"A");
    let mut r = Registers {
        rax: 0,
        rcx: 1 << 32,
        ..Default::default()
    };
    m.tdcall(&mut r);
    assert_eq!(
        r.rax,
        err(StatusCode::OPERAND_INVALID, OperandId::RCX).status().0
    );
    let out = call(
        &mut m,
        &VpVmcall(TdVmcall::GetQuote {
            gpa: 0,
            size: 0x1000,
        }),
    )
    .unwrap();
    assert_eq!(out.status, VmcallStatus::SUBFUNC_UNSUPPORTED);
    let out = call(
        &mut m,
        &VpVmcall(TdVmcall::MapGpa {
            gpa: 0x1001,
            size: 0x1000,
        }),
    )
    .unwrap();
    assert_eq!(out.status, VmcallStatus::ALIGN_ERROR);
}

#[test]
fn leaf0_map_gpa_and_fatal_error() {
    let mut m = model();
    let shared = 1u64 << 47;
    call(
        &mut m,
        &VpVmcall(TdVmcall::MapGpa {
            gpa: shared | 0x8_0000,
            size: 0x2000,
        }),
    )
    .unwrap();
    assert!(
        m.read_memory(0x8_0000, &mut [0u8; 4]).is_err(),
        "converted to shared"
    );
    let mut msg = [0u8; 64];
    msg[..4].copy_from_slice(b"boom");
    call(
        &mut m,
        &VpVmcall(TdVmcall::ReportFatalError {
            code: 7,
            extended: 0,
            data_gpa: None,
            message: msg,
        }),
    )
    .unwrap();
    assert_eq!(m.host.fatal.as_ref().unwrap().message, "boom");
    assert!(m.dead().is_some());
    assert_eq!(
        call(&mut m, &VpInfo).unwrap_err().code(),
        StatusCode::TD_FATAL
    );
}

#[test]
fn leaf1_vp_info() {
    let mut m = model();
    let info = call(&mut m, &VpInfo).unwrap();
    assert_eq!((info.gpaw, info.num_vcpus, info.vcpu_index), (48, 1, 0));
    assert_eq!(info.shared_bit(), 1 << 47);
    let mut r = Registers {
        rax: 1 | (1 << 16),
        ..Default::default()
    };
    m.tdcall(&mut r);
    assert_eq!(
        r.rax,
        err(StatusCode::OPERAND_INVALID, OperandId::RAX).status().0
    );
}

#[test]
fn leaf2_rtmr_extend() {
    let mut m = model();
    m.write_memory(SCRATCH, &[0xAB; 48]).unwrap();
    call(
        &mut m,
        &MrRtmrExtend {
            data_gpa: SCRATCH,
            index: 2,
        },
    )
    .unwrap();
    let mut expect = [0u8; 48];
    tdx_model::measure::rtmr_extend(&mut expect, &[0xAB; 48]);
    assert_eq!(m.rtmr(2).unwrap(), expect);
    assert_eq!(
        call(
            &mut m,
            &MrRtmrExtend {
                data_gpa: SCRATCH,
                index: 4
            }
        )
        .unwrap_err(),
        err(StatusCode::OPERAND_INVALID, OperandId::RDX)
    );
    assert_eq!(
        call(
            &mut m,
            &MrRtmrExtend {
                data_gpa: SCRATCH + 8,
                index: 0
            }
        )
        .unwrap_err(),
        err(StatusCode::OPERAND_INVALID, OperandId::RCX)
    );
}

#[test]
fn leaf3_veinfo_get() {
    let mut m = model();
    assert_eq!(
        call(&mut m, &VpVeinfoGet).unwrap_err(),
        md(StatusCode::NO_VALID_VE_INFO)
    );
    let ve = VeInfo {
        exit_reason: 48,
        qualification: 2,
        gla: 3,
        gpa: 4,
        instruction_length: 5,
        instruction_info: 6,
    };
    m.post_ve(ve);
    assert_eq!(call(&mut m, &VpVeinfoGet).unwrap(), ve);
    assert!(call(&mut m, &VpVeinfoGet).is_err(), "read clears it");
}

#[test]
fn leaf4_report_and_leaf22_verify() {
    let mut m = model();
    m.write_memory(SCRATCH + 0x400, &[0x5A; 64]).unwrap();
    call(
        &mut m,
        &MrReport {
            report_gpa: SCRATCH,
            reportdata_gpa: SCRATCH + 0x400,
            subtype: 0,
        },
    )
    .unwrap();
    let mut rep = [0u8; 1024];
    m.read_memory(SCRATCH, &mut rep).unwrap();
    assert_eq!(rep[0], 0x81);
    assert_eq!(&rep[128..192], &[0x5A; 64]);
    call(
        &mut m,
        &MrVerifyReport {
            reportmac_gpa: SCRATCH,
        },
    )
    .unwrap();
    m.write_memory(SCRATCH + 130, &[0]).unwrap();
    assert_eq!(
        call(
            &mut m,
            &MrVerifyReport {
                reportmac_gpa: SCRATCH
            }
        )
        .unwrap_err(),
        md(StatusCode::INVALID_REPORTMACSTRUCT)
    );
    assert_eq!(
        call(
            &mut m,
            &MrVerifyReport {
                reportmac_gpa: SCRATCH + 0x80
            }
        )
        .unwrap_err(),
        err(StatusCode::OPERAND_INVALID, OperandId::RCX)
    );
    assert_eq!(
        call(
            &mut m,
            &MrReport {
                report_gpa: SCRATCH,
                reportdata_gpa: SCRATCH + 0x400,
                subtype: 1
            }
        )
        .unwrap_err(),
        err(StatusCode::OPERAND_INVALID, OperandId::R8)
    );
    assert_eq!(
        call(
            &mut m,
            &MrReport {
                report_gpa: SCRATCH + 0x200,
                reportdata_gpa: SCRATCH + 0x400,
                subtype: 0
            }
        )
        .unwrap_err(),
        err(StatusCode::OPERAND_INVALID, OperandId::RCX)
    );
}

#[test]
fn leaf5_cpuidve_set() {
    let mut m = model();
    call(
        &mut m,
        &VpCpuidveSet {
            supervisor: true,
            user: true,
        },
    )
    .unwrap();
    assert_eq!(call(&mut m, &VpRd(vcpu::CPUID_USER_VE)).unwrap().value, 1);
    let mut r = Registers {
        rax: 5,
        rcx: 4,
        ..Default::default()
    };
    m.tdcall(&mut r);
    assert_eq!(
        r.rax,
        err(StatusCode::OPERAND_INVALID, OperandId::RCX).status().0
    );
}

#[test]
fn leaf6_accept() {
    let mut m = model();
    let gpa = 10 * MIB;
    assert_eq!(
        m.memory().state(gpa),
        Some(tdx_model::memory::PageState::Pending)
    );
    assert_eq!(
        call(
            &mut m,
            &MemPageAccept {
                gpa,
                level: PageLevel::Size2M
            }
        )
        .unwrap(),
        AcceptOutcome::Accepted
    );
    assert_eq!(
        call(
            &mut m,
            &MemPageAccept {
                gpa,
                level: PageLevel::Size2M
            }
        )
        .unwrap(),
        AcceptOutcome::AlreadyAccepted
    );
    // The image region is mapped with 4 KiB leaves: a 2 MiB accept there mismatches.
    let e = call(
        &mut m,
        &MemPageAccept {
            gpa: 0,
            level: PageLevel::Size2M,
        },
    )
    .unwrap_err();
    assert_eq!(e.status().0, 0xC000_0B0B_0000_0000);
    assert_eq!(
        call(
            &mut m,
            &MemPageAccept {
                gpa: 0,
                level: PageLevel::Size4K
            }
        )
        .unwrap(),
        AcceptOutcome::AlreadyAccepted
    );
    let e = call(
        &mut m,
        &MemPageAccept {
            gpa: 12 * MIB + 0x1000,
            level: PageLevel::Size2M,
        },
    )
    .unwrap_err();
    assert_eq!(
        e,
        err(StatusCode::OPERAND_INVALID, OperandId::RCX),
        "misaligned"
    );
    let mut r = Registers {
        rax: 6,
        rcx: 2,
        ..Default::default()
    };
    m.tdcall(&mut r);
    assert_eq!(
        r.rax,
        err(StatusCode::OPERAND_INVALID, OperandId::RCX).status().0,
        "1 GiB rejected"
    );
    // 4 KiB accept inside a pending 2 MiB leaf: the host demotes it.
    call(
        &mut m,
        &MemPageAccept {
            gpa: 14 * MIB + 0x3000,
            level: PageLevel::Size4K,
        },
    )
    .unwrap();
    assert_eq!(m.memory().mapping_level(14 * MIB), PageLevel::Size4K);
}

#[test]
fn leaf7_8_vm_rd_wr() {
    let mut m = model();
    assert_eq!(
        call(
            &mut m,
            &VmRd {
                field: td::NUM_L2_VMS,
                version: 0
            }
        )
        .unwrap()
        .value,
        1
    );
    let v1 = call(
        &mut m,
        &VmRd {
            field: td::NUM_VCPUS,
            version: 1,
        },
    )
    .unwrap();
    assert_eq!(v1.next, td::NUM_L2_VMS);
    assert_eq!(
        call(
            &mut m,
            &VmRd {
                field: FieldId(0x1110_0003_0000_0999),
                version: 0
            }
        )
        .unwrap_err(),
        md(StatusCode::METADATA_FIELD_ID_INCORRECT)
    );
    let mut r = Registers {
        rax: 7,
        rcx: 1,
        rdx: td::NUM_L2_VMS.0,
        ..Default::default()
    };
    m.tdcall(&mut r);
    assert_eq!(
        r.rax,
        err(StatusCode::OPERAND_INVALID, OperandId::RCX).status().0
    );
    assert_eq!(
        call(
            &mut m,
            &VmWr(FieldWrite {
                field: td::NOTIFY_ENABLES,
                value: 1,
                mask: 1
            })
        )
        .unwrap(),
        0
    );
    assert_eq!(
        call(
            &mut m,
            &VmRd {
                field: td::NOTIFY_ENABLES,
                version: 0
            }
        )
        .unwrap()
        .value,
        1
    );
    assert_eq!(
        call(
            &mut m,
            &VmWr(FieldWrite {
                field: td::ATTRIBUTES,
                value: 0,
                mask: u64::MAX
            })
        )
        .unwrap_err(),
        md(StatusCode::METADATA_FIELD_NOT_WRITABLE)
    );
    // MRTD elements read back.
    let mut c = TdConfig::new(4 * MIB);
    let mut b = MrtdBuilder::new();
    b.page_add(0);
    c.mrtd = b.finish();
    let mut m2 = TdxModel::new(c.clone(), ScriptedHost::default(), ScriptedEngine::new(0));
    let q0 = call(
        &mut m2,
        &VmRd {
            field: td::MRTD,
            version: 0,
        },
    )
    .unwrap()
    .value;
    assert_eq!(q0.to_le_bytes(), c.mrtd[..8]);
}

#[test]
fn leaf9_10_vp_rd_wr() {
    let mut m = model();
    let id = vm1(vmcs::VIRTUAL_APIC_PAGE_ADDR);
    assert_eq!(id.0, 0x2420_0003_0000_2012);
    assert_eq!(vp_wr(&mut m, id, VAPIC, u64::MAX).unwrap(), 0);
    assert_eq!(
        vp_wr(&mut m, id, VAPIC | 1, u64::MAX).unwrap_err(),
        md(StatusCode::METADATA_FIELD_VALUE_NOT_VALID)
    );
    assert_eq!(call(&mut m, &VpRd(id)).unwrap().value, VAPIC);
    // Initial L2 state (§2.6).
    assert_eq!(
        call(&mut m, &VpRd(vm1(vmcs::GUEST_CR0))).unwrap().value,
        0x21
    );
    assert_eq!(
        call(&mut m, &VpRd(vm1(vmcs::CR0_GUEST_HOST_MASK)))
            .unwrap()
            .value,
        u64::MAX
    );
    assert_eq!(
        call(&mut m, &VpRd(vm1(vmcs::PROC_BASED_CTLS)))
            .unwrap()
            .value,
        0x9122_0088
    );
    assert_eq!(
        call(&mut m, &VpRd(FieldId::l2_msr_bitmap(L2Vm::Vm1, 0x182)))
            .unwrap()
            .value,
        u64::MAX
    );
    // Errors.
    assert_eq!(
        call(&mut m, &VpRd(vm1(vmcs::VPID))).unwrap_err(),
        md(StatusCode::METADATA_FIELD_NOT_READABLE)
    );
    assert_eq!(
        call(&mut m, &VpRd(FieldId::l2_vmcs(L2Vm::Vm2, vmcs::GUEST_CR0))).unwrap_err(),
        md(StatusCode::METADATA_FIELD_ID_INCORRECT),
        "VM 2 does not exist"
    );
    assert_eq!(
        vp_wr(&mut m, vm1(vmcs::PIN_BASED_CTLS), 0, u64::MAX).unwrap_err(),
        md(StatusCode::METADATA_FIELD_NOT_WRITABLE)
    );
    // CR4.VMXE is not L1-writable in GUEST_CR4: asking to clear it is VALUE_NOT_VALID.
    assert_eq!(
        vp_wr(&mut m, vm1(vmcs::GUEST_CR4), 0x20, u64::MAX).unwrap_err(),
        md(StatusCode::METADATA_FIELD_VALUE_NOT_VALID)
    );
    assert_eq!(
        vp_wr(
            &mut m,
            vm1(vmcs::GUEST_CR4),
            0x20,
            controls::GUEST_CR4_L1_WR_MASK
        )
        .unwrap(),
        0x2040
    );
    assert_eq!(
        call(&mut m, &VpRd(vm1(vmcs::GUEST_CR4))).unwrap().value,
        0x2060,
        "MCE and VMXE stay"
    );
    // HLT exiting is fixed.
    assert_eq!(
        vp_wr(&mut m, vm1(vmcs::PROC_BASED_CTLS), 0, 1 << 7).unwrap_err(),
        md(StatusCode::METADATA_FIELD_NOT_WRITABLE)
    );
    assert_eq!(
        vp_wr(&mut m, FieldId::l2_ctls(L2Vm::Vm1), 4, 7).unwrap_err(),
        md(StatusCode::METADATA_FIELD_VALUE_NOT_VALID)
    );
    let mut r = Registers {
        rax: 9,
        rcx: 1,
        rdx: id.0,
        ..Default::default()
    };
    m.tdcall(&mut r);
    assert_eq!(
        r.rax,
        err(StatusCode::OPERAND_INVALID, OperandId::RCX).status().0
    );
    // MBEC needs the capability.
    let mut c = TdConfig::new(4 * MIB);
    c.mbec_supported = false;
    let mut m2 = TdxModel::new(c, ScriptedHost::default(), ScriptedEngine::new(0));
    assert_eq!(
        vp_wr(
            &mut m2,
            vm1(vmcs::SECONDARY_PROC_BASED_CTLS),
            controls::SECONDARY_MBEC,
            controls::SECONDARY_MBEC
        )
        .unwrap_err(),
        md(StatusCode::METADATA_FIELD_VALUE_NOT_VALID)
    );
}

#[test]
fn leaf11_12_sys_rd() {
    let mut m = model();
    assert_eq!(
        call(&mut m, &SysRd(sys::GUEST_L2_GPA_ATTR_MASK))
            .unwrap()
            .value,
        0x807F
    );
    assert_ne!(
        call(&mut m, &SysRd(sys::TDX_FEATURES0)).unwrap().value & (1 << 7),
        0
    );
    assert_eq!(
        call(&mut m, &SysRd(FieldId(0x0A00_0003_0000_0777))).unwrap_err(),
        md(StatusCode::METADATA_FIELD_ID_INCORRECT)
    );
    assert_eq!(
        call(
            &mut m,
            &SysRdAll {
                list_gpa: SCRATCH,
                first: FieldId(u64::MAX)
            }
        )
        .unwrap(),
        FieldId(u64::MAX)
    );
    let mut hdr = [0u8; 24];
    m.read_memory(SCRATCH, &mut hdr).unwrap();
    assert_eq!(u16::from_le_bytes([hdr[2], hdr[3]]), 7);
    assert_eq!(u64::from_le_bytes(hdr[16..24].try_into().unwrap()), 0x8086);
    assert_eq!(
        call(
            &mut m,
            &SysRdAll {
                list_gpa: SCRATCH + 8,
                first: FieldId(u64::MAX)
            }
        )
        .unwrap_err(),
        err(StatusCode::OPERAND_INVALID, OperandId::RDX)
    );
}

#[test]
fn leaf18_20_servtd() {
    let mut c = TdConfig::new(4 * MIB);
    let field = FieldId(0x9110_0003_0000_0010);
    let mut binding = ServtdBinding {
        uuid: [1, 2, 3, 4],
        ..Default::default()
    };
    binding.fields.insert(field.0, (5, 1));
    c.servtd_binding = Some(binding);
    let mut m = TdxModel::new(c, ScriptedHost::default(), ScriptedEngine::new(0));
    let target = ServtdTarget {
        binding_handle: 0,
        uuid: [1, 2, 3, 4],
    };
    assert_eq!(call(&mut m, &ServtdRd { target, field }).unwrap().value, 5);
    assert_eq!(
        call(
            &mut m,
            &ServtdWr {
                target,
                write: FieldWrite {
                    field,
                    value: 0,
                    mask: 1
                }
            }
        )
        .unwrap(),
        5
    );
    assert_eq!(call(&mut m, &ServtdRd { target, field }).unwrap().value, 4);
    let bad = ServtdTarget {
        binding_handle: 0,
        uuid: [9, 9, 9, 9],
    };
    assert_eq!(
        call(&mut m, &ServtdRd { target: bad, field }).unwrap_err(),
        md(StatusCode::TARGET_UUID_MISMATCH)
    );
    let slot1 = ServtdTarget {
        binding_handle: 1,
        uuid: [1, 2, 3, 4],
    };
    assert_eq!(
        call(
            &mut m,
            &ServtdRd {
                target: slot1,
                field
            }
        )
        .unwrap_err(),
        err(StatusCode::OPERAND_INVALID, OperandId::RCX)
    );
    assert_eq!(
        call(
            &mut m,
            &ServtdWr {
                target,
                write: FieldWrite {
                    field,
                    value: 2,
                    mask: 2
                }
            }
        )
        .unwrap_err(),
        md(StatusCode::METADATA_FIELD_NOT_WRITABLE)
    );
}

#[test]
fn leaf23_24_attr() {
    let mut m = model();
    let rwx = L2Attr::R | L2Attr::W | L2Attr::XS;
    let out = alias(&mut m, SCRATCH, rwx).unwrap();
    assert_eq!(out.attr.slot(L2Vm::Vm1), rwx | L2Attr::VALID);
    let rd = call(&mut m, &MemPageAttrRd { gpa: SCRATCH }).unwrap();
    assert_eq!(rd.attr.0, ((rwx | L2Attr::VALID).bits() as u64) << 16);
    assert_eq!(rd.mapping.level(), Some(PageLevel::Size4K));
    assert!(!rd.mapping.is_pending());
    assert_eq!(m.stats().invept[1], 1);
    // Illegal result: W without R. Nothing changes; RDX = current attributes.
    let e = call(
        &mut m,
        &MemPageAttrWr {
            mapping: GpaMapping::new(SCRATCH, PageLevel::Size4K),
            attr: GpaAttr::for_vm(L2Vm::Vm1, L2Attr::VALID | L2Attr::W),
            flags: AttrWrFlags::for_vm(L2Vm::Vm1, L2Attr::PRESENT, false),
        },
    )
    .unwrap_err();
    assert_eq!(e, md(StatusCode::PAGE_ATTR_INVALID));
    assert_eq!(m.page_attr(SCRATCH, L2Vm::Vm1), rwx | L2Attr::VALID);
    // Removing the alias.
    let out = call(
        &mut m,
        &MemPageAttrWr {
            mapping: GpaMapping::new(SCRATCH, PageLevel::Size4K),
            attr: GpaAttr::for_vm(L2Vm::Vm1, L2Attr::VALID),
            flags: AttrWrFlags::for_vm(L2Vm::Vm1, L2Attr::PRESENT, false),
        },
    )
    .unwrap();
    assert_eq!(out.attr.slot(L2Vm::Vm1), L2Attr::VALID);
    assert_eq!(m.page_attr(SCRATCH, L2Vm::Vm1), L2Attr::empty());
    // Operand errors.
    let vm0 = MemPageAttrWr {
        mapping: GpaMapping::new(SCRATCH, PageLevel::Size4K),
        attr: GpaAttr(0x8001),
        flags: AttrWrFlags(0),
    };
    assert_eq!(
        call(&mut m, &vm0).unwrap_err(),
        err(StatusCode::OPERAND_INVALID, OperandId::RDX)
    );
    let vm2_flags = MemPageAttrWr {
        mapping: GpaMapping::new(SCRATCH, PageLevel::Size4K),
        attr: GpaAttr::for_vm(L2Vm::Vm1, L2Attr::VALID | L2Attr::R),
        flags: AttrWrFlags::for_vm(L2Vm::Vm2, L2Attr::R, false),
    };
    assert_eq!(
        call(&mut m, &vm2_flags).unwrap_err(),
        err(StatusCode::OPERAND_INVALID, OperandId::R8)
    );
    let big = MemPageAttrWr {
        mapping: GpaMapping::new(0, PageLevel::Size2M),
        attr: GpaAttr::for_vm(L2Vm::Vm1, L2Attr::VALID | L2Attr::R),
        flags: AttrWrFlags::for_vm(L2Vm::Vm1, L2Attr::R, false),
    };
    assert_eq!(
        call(&mut m, &big).unwrap_err().code(),
        StatusCode::PAGE_SIZE_MISMATCH
    );
    let big_ok = MemPageAttrWr {
        mapping: GpaMapping::new(10 * MIB, PageLevel::Size2M),
        ..big
    };
    let out = call(&mut m, &big_ok).unwrap();
    assert!(out.mapping.is_pending());
    assert_eq!(
        m.page_attr(10 * MIB + 0x1F_F000, L2Vm::Vm1),
        L2Attr::VALID | L2Attr::R
    );
    assert_eq!(
        call(&mut m, &MemPageAttrRd { gpa: 1 << 47 }).unwrap_err(),
        err(StatusCode::OPERAND_INVALID, OperandId::RCX)
    );
}

#[test]
fn busy_is_injected_and_retryable() {
    let mut m = model();
    m.inject_busy(Leaf::MemPageAttrWr, 2);
    let e = alias(&mut m, SCRATCH, L2Attr::R).unwrap_err();
    assert!(e.is_busy());
    assert_eq!(e.operand_id(), Some(OperandId::SEPT_ENTRY));
    assert!(alias(&mut m, SCRATCH, L2Attr::R).unwrap_err().is_busy());
    assert!(alias(&mut m, SCRATCH, L2Attr::R).is_ok());
}

#[test]
fn leaf25_vp_enter_checks_and_exit() {
    let mut m = model();
    // No vAPIC page yet.
    assert_eq!(
        enter(&mut m, &state_at(CODE)).unwrap_err(),
        err(StatusCode::OPERAND_INVALID, OperandId::L2_VAPIC_GPA)
    );
    setup(&mut m);
    let bad_buf = VpEnter {
        flags: VpEnterFlags {
            vm: L2Vm::Vm1,
            invd: InvdTranslations::None,
        },
        guest_state_gpa: BUF + 0x80,
    };
    assert_eq!(
        call(&mut m, &bad_buf).unwrap_err(),
        err(StatusCode::OPERAND_INVALID, OperandId::RDX)
    );
    let vm2 = VpEnter {
        flags: VpEnterFlags {
            vm: L2Vm::Vm2,
            invd: InvdTranslations::None,
        },
        guest_state_gpa: BUF,
    };
    assert_eq!(
        call(&mut m, &vm2).unwrap_err(),
        err(StatusCode::OPERAND_INVALID, OperandId::RCX)
    );
    m.set_l1_interrupt_pending(true);
    assert_eq!(
        enter(&mut m, &state_at(CODE)).unwrap().outcome,
        EnterOutcome::NotEnteredPendingInterrupt
    );
    m.set_l1_interrupt_pending(false);
    // CPUID exits to L1 with its length; GPRs come back in the buffer.
    m.engine.push(L2Action::SetGpr { gpr: 0, value: 7 });
    m.engine.push(L2Action::Cpuid);
    let res = enter(&mut m, &state_at(CODE)).unwrap();
    assert_eq!(res.outcome, EnterOutcome::L2ToL1);
    assert_eq!(
        (res.exit.reason, res.exit.instruction_length),
        (reason::CPUID as u32, 2)
    );
    let st = read_state(&m);
    assert_eq!(st.gprs[gpr::RAX], 7);
    assert_eq!(st.rip, CODE + 1, "CPUID's RIP, not advanced by the module");
    assert_eq!(m.stats().l2_exits[&reason::CPUID], 1);
}

#[test]
fn leaf26_27_invept_invgla() {
    let mut m = model();
    call(&mut m, &VpInvept::vms(&[L2Vm::Vm1])).unwrap();
    assert_eq!(m.stats().invept[1], 1);
    assert_eq!(
        call(&mut m, &VpInvept { vm_bitmap: 1 }).unwrap_err(),
        err(StatusCode::OPERAND_INVALID, OperandId::RCX)
    );
    assert_eq!(
        call(&mut m, &VpInvept { vm_bitmap: 4 }).unwrap_err(),
        err(StatusCode::OPERAND_INVALID, OperandId::RCX)
    );
    call(
        &mut m,
        &VpInvgla {
            vm: L2Vm::Vm1,
            target: InvglaTarget::Range {
                gla: 0xFFFF_8000_0000_0000,
                pages: 4,
            },
        },
    )
    .unwrap();
    assert_eq!(
        call(
            &mut m,
            &VpInvgla {
                vm: L2Vm::Vm1,
                target: InvglaTarget::Range {
                    gla: 0x8000_0000_0000,
                    pages: 1
                }
            }
        )
        .unwrap_err(),
        md(StatusCode::GLA_NOT_CANONICAL)
    );
    m.write_memory(SCRATCH, &0x7000u64.to_le_bytes()).unwrap();
    let progress = call(
        &mut m,
        &VpInvgla {
            vm: L2Vm::Vm1,
            target: InvglaTarget::List {
                list_gpa: SCRATCH,
                first: 0,
                count: 1,
            },
        },
    )
    .unwrap();
    assert_eq!(progress & 0x1FF, 1);
    assert_eq!(
        call(
            &mut m,
            &VpInvgla {
                vm: L2Vm::Vm2,
                target: InvglaTarget::Range { gla: 0, pages: 1 }
            }
        )
        .unwrap_err(),
        err(StatusCode::OPERAND_INVALID, OperandId::RCX)
    );
}

/// Acceptance: an L2 write to a page without W exits with the write bit and the GPA.
#[test]
fn scenario_write_to_readonly_page_is_ept_violation() {
    let mut m = model();
    setup(&mut m);
    alias(&mut m, SCRATCH, L2Attr::R | L2Attr::XS).unwrap();
    m.engine.push(L2Action::Access {
        kind: AccessKind::Write,
        gpa: SCRATCH + 0x10,
        gla: 0xFFFF_8000_0003_0010,
        cpl: 0,
        size: 8,
        value: 0x4141_4141,
    });
    let res = enter(&mut m, &state_at(CODE)).unwrap();
    assert_eq!(res.exit.reason, reason::EPT_VIOLATION as u32);
    let q = EptViolationQual::from_bits_retain(res.exit.qualification);
    assert!(q.contains(EptViolationQual::WRITE));
    assert!(q.contains(EptViolationQual::READABLE | EptViolationQual::EXECUTABLE));
    assert!(!q.contains(EptViolationQual::WRITABLE));
    assert_eq!(res.exit.gpa, SCRATCH + 0x10);
    assert_eq!(res.exit.gla, 0xFFFF_8000_0003_0010);
    let mut b = [0u8; 8];
    m.read_memory(SCRATCH + 0x10, &mut b).unwrap();
    assert_eq!(b, [0; 8], "the write did not happen");
}

/// Acceptance: clearing CR0.WP while L1 owns WP exits with the CR-access qualification.
#[test]
fn scenario_clearing_cr0_wp_exits_to_l1() {
    let mut m = model();
    setup(&mut m);
    let cr0 = 0x8005_0033u64; // PG | WP | NE | ET | MP | PE
    vp_wr(
        &mut m,
        vm1(vmcs::GUEST_CR0),
        cr0,
        controls::GUEST_CR0_L1_WR_MASK,
    )
    .unwrap();
    vp_wr(
        &mut m,
        vm1(vmcs::CR0_GUEST_HOST_MASK),
        (1 << 16) | (1 << 31) | 1,
        u64::MAX,
    )
    .unwrap();
    vp_wr(&mut m, vm1(vmcs::CR0_READ_SHADOW), cr0, u64::MAX).unwrap();
    // Writing the same value is handled by the module; clearing WP exits.
    m.engine.push(L2Action::SetGpr { gpr: 3, value: cr0 });
    m.engine.push(L2Action::MovToCr { cr: 0, gpr: 3 });
    m.engine.push(L2Action::SetGpr {
        gpr: 3,
        value: cr0 & !(1 << 16),
    });
    let exiting = m.engine.push(L2Action::MovToCr { cr: 0, gpr: 3 });
    let res = enter(&mut m, &state_at(CODE)).unwrap();
    assert_eq!(res.exit.reason, reason::CR_ACCESS as u32);
    assert_eq!(res.exit.qualification, CrAccessQual::mov_to(0, 3).encode());
    assert_eq!(res.exit.qualification, 0x300);
    assert_eq!(res.exit.instruction_length, 3);
    assert_eq!(read_state(&m).rip, exiting);
    assert_eq!(
        m.l2_vmcs(0, L2Vm::Vm1, vmcs::GUEST_CR0),
        Some(cr0),
        "WP still set"
    );
    assert_eq!(m.engine.trace()[1].step, Step::Completed);
}

/// Acceptance: with MBEC, an Xu-only page cannot be fetched at CPL 0 but can at CPL 3.
#[test]
fn scenario_mbec_user_only_page() {
    let mut m = model();
    setup(&mut m);
    vp_wr(
        &mut m,
        vm1(vmcs::SECONDARY_PROC_BASED_CTLS),
        controls::SECONDARY_MBEC,
        controls::SECONDARY_MBEC,
    )
    .unwrap();
    alias(&mut m, SCRATCH, L2Attr::R | L2Attr::XU).unwrap();
    let fetch = |cpl| L2Action::Access {
        kind: AccessKind::Fetch,
        gpa: SCRATCH,
        gla: SCRATCH,
        cpl,
        size: 1,
        value: 0,
    };
    m.engine.push(fetch(3));
    let kernel_fetch = m.engine.push(fetch(0));
    let res = enter(&mut m, &state_at(CODE)).unwrap();
    assert_eq!(
        m.engine.trace()[0].step,
        Step::Completed,
        "CPL 3 fetch succeeds"
    );
    assert_eq!(res.exit.reason, reason::EPT_VIOLATION as u32);
    assert_eq!(res.exit.cpl, 0);
    assert_eq!(read_state(&m).rip, kernel_fetch);
    let q = EptViolationQual::from_bits_retain(res.exit.qualification);
    assert!(q.contains(
        EptViolationQual::FETCH | EptViolationQual::USER_EXECUTABLE | EptViolationQual::READABLE
    ));
    assert!(!q.contains(EptViolationQual::EXECUTABLE));
    // Without MBEC, Xs gates every fetch: the CPL 3 fetch faults too.
    let mut m = model();
    setup(&mut m);
    alias(&mut m, SCRATCH, L2Attr::R | L2Attr::XU).unwrap();
    m.engine.push(fetch(3));
    let res = enter(&mut m, &state_at(CODE)).unwrap();
    assert_eq!(res.exit.reason, reason::EPT_VIOLATION as u32);
    assert_eq!(res.exit.cpl, 3);
}

#[test]
fn scenario_pending_page_and_host_routed_mmio() {
    let mut m = model();
    setup(&mut m);
    let pending = 12 * MIB;
    m.engine.push(L2Action::Access {
        kind: AccessKind::Read,
        gpa: pending,
        gla: pending,
        cpl: 0,
        size: 4,
        value: 0,
    });
    let res = enter(&mut m, &state_at(CODE)).unwrap();
    assert_eq!(
        (res.exit.reason, res.exit.ext_qual_type),
        (reason::EPT_VIOLATION as u32, 6)
    );
    // A GPA outside private memory goes to the host, which resumes L1.
    let mut m = model();
    setup(&mut m);
    m.engine.push(L2Action::Access {
        kind: AccessKind::Write,
        gpa: 0xFEC0_0000,
        gla: 0,
        cpl: 0,
        size: 4,
        value: 1,
    });
    let res = enter(&mut m, &state_at(CODE)).unwrap();
    assert_eq!(res.outcome, EnterOutcome::HostRoutedAsync);
    assert_eq!(res.exit.gpa, 0xFEC0_0000);
    assert_eq!(m.host.routed_exits.len(), 1);
}

#[test]
fn scenario_msr_bitmap_and_injected_gp() {
    let mut m = model();
    setup(&mut m);
    // Pass LSTAR writes through, keep EFER intercepted.
    let (idx, bit) = tdx_model::cpu::msr_bitmap_position(0xC000_0082, true).unwrap();
    vp_wr(
        &mut m,
        FieldId::l2_msr_bitmap(L2Vm::Vm1, idx as u16),
        !(1u64 << bit),
        u64::MAX,
    )
    .unwrap();
    m.engine.extend([
        L2Action::SetGpr {
            gpr: 1,
            value: 0xC000_0082,
        },
        L2Action::SetGpr {
            gpr: 0,
            value: 0x1234,
        },
        L2Action::Wrmsr,
        L2Action::SetGpr {
            gpr: 1,
            value: 0xC000_0080,
        },
        L2Action::Wrmsr,
        L2Action::Hlt,
    ]);
    let res = enter(&mut m, &state_at(CODE)).unwrap();
    assert_eq!(m.engine.trace()[2].step, Step::Completed);
    assert_eq!(res.exit.reason, reason::MSR_WRITE as u32);
    // L1 injects #GP(0) for the blocked write; the guest's fixup continues at HLT.
    vp_wr(&mut m, vm1(vmcs::VM_ENTRY_INTR_INFO), 0x8000_0B0D, u64::MAX).unwrap();
    vp_wr(
        &mut m,
        vm1(vmcs::VM_ENTRY_EXCEPTION_ERROR_CODE),
        0,
        u64::MAX,
    )
    .unwrap();
    let st = read_state(&m);
    let res = enter(&mut m, &st).unwrap();
    assert_eq!(m.engine.events()[0].vector, 13);
    assert_eq!(res.exit.reason, reason::HLT as u32);
    assert_eq!(
        m.l2_vmcs(0, L2Vm::Vm1, vmcs::VM_ENTRY_INTR_INFO),
        Some(0),
        "valid bit cleared on entry"
    );
}

/// RFLAGS with IF set (bit 1 is always 1).
const RFLAGS_IF: u64 = 0x202;

#[test]
fn scenario_tsc_deadline_exits_with_reason_52() {
    let mut m = model();
    setup(&mut m);
    m.engine.ticks_per_action = 100;
    for _ in 0..50 {
        m.engine.push(L2Action::SetGpr { gpr: 0, value: 1 });
    }
    m.engine.push(L2Action::Hlt);
    // Disabled by default.
    let deadline_field = FieldId::tsc_deadline(L2Vm::Vm1);
    assert_eq!(call(&mut m, &VpRd(deadline_field)).unwrap().value, u64::MAX);
    // A deadline 10 actions ahead stops L2 after exactly 10 actions.
    let now = m.engine.peek_tsc();
    vp_wr(&mut m, deadline_field, now + 1_000, u64::MAX).unwrap();
    let res = enter(&mut m, &state_at(CODE)).unwrap();
    assert_eq!(res.outcome, EnterOutcome::L2ToL1);
    assert_eq!(res.exit.reason, reason::PREEMPTION_TIMER as u32);
    assert_eq!(res.exit.instruction_length, 0);
    assert_eq!(m.engine.trace().len(), 10);
    let st = read_state(&m);
    assert_eq!(st.rip, CODE + 10, "stopped between instructions");
    // The deadline stays armed: re-entering exits again before any instruction.
    let res = enter(&mut m, &st).unwrap();
    assert_eq!(res.exit.reason, reason::PREEMPTION_TIMER as u32);
    assert_eq!(m.engine.trace().len(), 10, "a past deadline runs nothing");
    // Disarmed, L2 continues to its HLT.
    vp_wr(&mut m, deadline_field, u64::MAX, u64::MAX).unwrap();
    let st = read_state(&m);
    let res = enter(&mut m, &st).unwrap();
    assert_eq!(res.exit.reason, reason::HLT as u32);
    assert_eq!(m.stats().l2_exits[&reason::PREEMPTION_TIMER], 2);
}

#[test]
fn scenario_past_deadline_still_delivers_the_injected_event() {
    let mut m = model();
    setup(&mut m);
    m.engine.push(L2Action::Hlt);
    let now = m.engine.peek_tsc();
    vp_wr(&mut m, FieldId::tsc_deadline(L2Vm::Vm1), now, u64::MAX).unwrap();
    // External interrupt, vector 0xEC.
    vp_wr(&mut m, vm1(vmcs::VM_ENTRY_INTR_INFO), 0x8000_00EC, u64::MAX).unwrap();
    let mut st = state_at(CODE);
    st.rflags = RFLAGS_IF;
    let res = enter(&mut m, &st).unwrap();
    assert_eq!(res.exit.reason, reason::PREEMPTION_TIMER as u32);
    assert_eq!(m.engine.events().len(), 1);
    assert_eq!(m.engine.events()[0].vector, 0xEC);
    assert!(m.engine.trace().is_empty());
}

#[test]
fn scenario_external_interrupt_injection_honours_if_and_sti_blocking() {
    let mut m = model();
    setup(&mut m);
    m.engine.push(L2Action::Hlt);
    // IF = 0: the VM entry fails (invalid guest state, bit 31), nothing runs.
    vp_wr(&mut m, vm1(vmcs::VM_ENTRY_INTR_INFO), 0x8000_0030, u64::MAX).unwrap();
    let res = enter(&mut m, &state_at(CODE)).unwrap();
    assert_eq!(res.outcome, EnterOutcome::L2ToL1);
    assert_eq!(
        res.exit.reason,
        0x8000_0000 | reason::INVALID_GUEST_STATE as u32
    );
    assert!(res.exit.exit_reason().is_entry_failure());
    assert!(m.engine.events().is_empty());
    assert!(m.engine.trace().is_empty());
    // IF = 1 but blocking by STI: fails the same way.
    vp_wr(&mut m, vm1(vmcs::GUEST_INTERRUPTIBILITY), 1, u64::MAX).unwrap();
    vp_wr(&mut m, vm1(vmcs::VM_ENTRY_INTR_INFO), 0x8000_0030, u64::MAX).unwrap();
    let mut st = state_at(CODE);
    st.rflags = RFLAGS_IF;
    let res = enter(&mut m, &st).unwrap();
    assert_eq!(
        res.exit.reason,
        0x8000_0000 | reason::INVALID_GUEST_STATE as u32
    );
    // IF = 1, no blocking: delivered, and L2 continues to its HLT.
    vp_wr(&mut m, vm1(vmcs::GUEST_INTERRUPTIBILITY), 0, u64::MAX).unwrap();
    vp_wr(&mut m, vm1(vmcs::VM_ENTRY_INTR_INFO), 0x8000_0030, u64::MAX).unwrap();
    let res = enter(&mut m, &st).unwrap();
    assert_eq!(res.exit.reason, reason::HLT as u32);
    assert_eq!(m.engine.events()[0].vector, 0x30);
    assert_eq!(m.engine.events()[0].error_code, None);
    // Exceptions do not depend on IF.
    vp_wr(&mut m, vm1(vmcs::VM_ENTRY_INTR_INFO), 0x8000_0306, u64::MAX).unwrap();
    let res = enter(&mut m, &state_at(CODE)).unwrap();
    assert!(!res.exit.exit_reason().is_entry_failure());
    assert_eq!(m.engine.events()[1].vector, 6);
}

#[test]
fn scenario_interrupt_window_exiting() {
    let mut m = model();
    setup(&mut m);
    let window = controls::PROC_INTERRUPT_WINDOW_EXITING;
    // Writable by L1 (bit 2 of the primary write mask).
    vp_wr(&mut m, vm1(vmcs::PROC_BASED_CTLS), window, window).unwrap();
    m.engine.extend([
        L2Action::SetGpr { gpr: 0, value: 1 },
        L2Action::Sti,
        L2Action::SetGpr { gpr: 0, value: 2 },
        L2Action::SetGpr { gpr: 0, value: 3 },
        L2Action::Hlt,
    ]);
    // IF = 0 at entry: L2 runs until STI has opened the window and the
    // instruction after it (the STI shadow) retired.
    let res = enter(&mut m, &state_at(CODE)).unwrap();
    assert_eq!(res.exit.reason, reason::INTERRUPT_WINDOW as u32);
    assert_eq!(res.exit.instruction_length, 0);
    let st = read_state(&m);
    assert_eq!(
        st.gprs[gpr::RAX],
        2,
        "the instruction in the STI shadow ran"
    );
    assert_eq!(st.rflags & 0x200, 0x200, "STI set IF");
    assert_eq!(m.engine.trace().len(), 3);
    // Still set: an open window exits before any instruction.
    let res = enter(&mut m, &st).unwrap();
    assert_eq!(res.exit.reason, reason::INTERRUPT_WINDOW as u32);
    assert_eq!(m.engine.trace().len(), 3);
    // L1 clears the control and injects: the interrupt arrives, L2 goes on.
    vp_wr(&mut m, vm1(vmcs::PROC_BASED_CTLS), 0, window).unwrap();
    vp_wr(&mut m, vm1(vmcs::VM_ENTRY_INTR_INFO), 0x8000_0041, u64::MAX).unwrap();
    let res = enter(&mut m, &st).unwrap();
    assert_eq!(res.exit.reason, reason::HLT as u32);
    assert_eq!(m.engine.events()[0].vector, 0x41);
    assert_eq!(m.engine.events()[0].rip, CODE + 3);
    assert_eq!(m.stats().l2_exits[&reason::INTERRUPT_WINDOW], 2);
}

#[test]
fn scripted_tsc_advances_with_actions_and_reads() {
    let mut m = model();
    setup(&mut m);
    let t0 = m.tsc();
    let t1 = m.tsc();
    assert!(t1 > t0, "every read moves the clock");
    m.engine.ticks_per_action = 500;
    m.engine.extend([L2Action::Cli, L2Action::Hlt]);
    let before = m.engine.peek_tsc();
    enter(&mut m, &state_at(CODE)).unwrap();
    assert_eq!(m.engine.peek_tsc() - before, 1_000);
}
