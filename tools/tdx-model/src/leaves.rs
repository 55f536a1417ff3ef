//! The model's implementation of every TDCALL leaf (§1.3, §1.4, §2, §3, §5).
#![forbid(unsafe_code)]

use crate::cpu::{L2Cpu, L2Regs, RunEnd};
use crate::engine::{DeliveredEvent, L2Engine};
use crate::host::{HostDecision, HostVmm};
use crate::measure::{self, ReportInputs};
use crate::memory::{GpaFault, PageState, PAGE_SIZE};
use crate::metadata::{self, MdResult, SYS_FIELDS, TD_FIELDS, TD_MEASUREMENT_FIELDS};
use crate::TdxModel;
use alloc::format;
use tdcall::attr::{AttrWrFlags, GpaAttr, GpaMapping, L2Attr, PageLevel};
use tdcall::enter::{EnterOutcome, L2EnterGuestState, VpEnterFlags};
use tdcall::field::{vcpu, vmcs, FieldId, L2Ctls};
use tdcall::leaf::{Leaf, LeafInput};
use tdcall::vmcall::{TdVmcall, VmcallOutput, VmcallStatus};
use tdcall::vmx::InterruptionInfo;
use tdcall::{L2Vm, OperandId, Registers, StatusCode, TdxStatus};

type Op = OperandId;

/// A leaf's failure: the status to return, or "the TD is gone".
enum Fail {
    Status(StatusCode, u32),
    Killed,
}

type LeafResult = Result<(), Fail>;

fn invalid(op: Op) -> Fail {
    Fail::Status(StatusCode::OPERAND_INVALID, op.0)
}

fn md(code: StatusCode) -> Fail {
    Fail::Status(code, 0)
}

pub(crate) fn dispatch<H: HostVmm, E: L2Engine>(m: &mut TdxModel<H, E>, r: &mut Registers) {
    let input = LeafInput::decode(r.rax);
    let result = match Leaf::from_number(input.number) {
        _ if input.reserved != 0 => Err(invalid(Op::RAX)),
        Some(Leaf::VmRd) if input.version > 1 => Err(invalid(Op::RAX)),
        Some(leaf) if leaf != Leaf::VmRd && input.version != 0 => Err(invalid(Op::RAX)),
        None => Err(invalid(Op::RAX)),
        Some(leaf) => run_leaf(m, leaf, input.version, r),
    };
    match result {
        Ok(()) => {}
        Err(Fail::Status(code, details)) => r.rax = TdxStatus::new(code, details).0,
        Err(Fail::Killed) => r.rax = TdxStatus::new(StatusCode::TD_FATAL, 0).0,
    }
}

fn run_leaf<H: HostVmm, E: L2Engine>(
    m: &mut TdxModel<H, E>,
    leaf: Leaf,
    version: u8,
    r: &mut Registers,
) -> LeafResult {
    // Leaves that succeed report TDX_SUCCESS unless they say otherwise.
    r.rax = 0;
    match leaf {
        Leaf::VpVmcall => vp_vmcall(m, r),
        Leaf::VpInfo => vp_info(m, r),
        Leaf::MrRtmrExtend => rtmr_extend(m, r),
        Leaf::VpVeinfoGet => veinfo_get(m, r),
        Leaf::MrReport => mr_report(m, r),
        Leaf::VpCpuidveSet => cpuidve_set(m, r),
        Leaf::MemPageAccept => page_accept(m, r),
        Leaf::VmRd => vm_rd(m, version, r),
        Leaf::VmWr => vm_wr(m, r),
        Leaf::VpRd => vp_rd(m, r),
        Leaf::VpWr => vp_wr(m, r),
        Leaf::SysRd => sys_rd(r),
        Leaf::SysRdAll => sys_rdall(m, r),
        Leaf::ServtdRd => servtd(m, false, r),
        Leaf::ServtdWr => servtd(m, true, r),
        Leaf::MrVerifyReport => verify_report(m, r),
        Leaf::MemPageAttrRd => attr_rd(m, r),
        Leaf::MemPageAttrWr => attr_wr(m, r),
        Leaf::VpEnter => vp_enter(m, r),
        Leaf::VpInvept => invept(m, r),
        Leaf::VpInvgla => invgla(m, r),
    }
}

/// Checks an operand GPA: alignment and privateness are operand errors; memory
/// the host never mapped (or a pending page) is a TD exit the model's host cannot
/// satisfy, so the TD dies with a reason.
fn check_gpa<H: HostVmm, E: L2Engine>(
    m: &mut TdxModel<H, E>,
    gpa: u64,
    align: u64,
    len: u64,
    op: Op,
) -> LeafResult {
    if !gpa.is_multiple_of(align) || !m.mem.is_private_gpa(gpa) {
        return Err(invalid(op));
    }
    match m.mem.check(gpa, len, true) {
        Ok(()) => Ok(()),
        Err(GpaFault::NotPrivate) => Err(invalid(op)),
        Err(fault) => {
            m.kill(format!(
                "TD exit on operand {op:?} GPA {gpa:#x}: {fault:?}, host has no memory to map"
            ));
            Err(Fail::Killed)
        }
    }
}

fn read_gpa<H: HostVmm, E: L2Engine, const N: usize>(
    m: &mut TdxModel<H, E>,
    gpa: u64,
    align: u64,
    op: Op,
) -> Result<[u8; N], Fail> {
    check_gpa(m, gpa, align, N as u64, op)?;
    let mut b = [0u8; N];
    m.mem.read(gpa, &mut b).map_err(|_| invalid(op))?;
    Ok(b)
}

fn vp_vmcall<H: HostVmm, E: L2Engine>(m: &mut TdxModel<H, E>, r: &mut Registers) -> LeafResult {
    if r.rcx >> 32 != 0 {
        return Err(invalid(Op::RCX));
    }
    let vcpu = m.current as u32;
    let out = match TdVmcall::decode(r) {
        None => VmcallOutput::status(VmcallStatus::SUBFUNC_UNSUPPORTED),
        Some(TdVmcall::MapGpa { gpa, size }) => {
            let shared = m.mem.shared_bit();
            let base = gpa & !shared;
            if !gpa.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
                VmcallOutput::status(VmcallStatus::ALIGN_ERROR)
            } else if base.checked_add(size).is_none_or(|end| end > m.mem.size()) {
                VmcallOutput::status(VmcallStatus::INVALID_OPERAND)
            } else {
                let state = if gpa & shared != 0 {
                    PageState::Removed
                } else {
                    PageState::Pending
                };
                m.mem.set_state(base, size, state);
                m.host.tdvmcall(vcpu, &TdVmcall::MapGpa { gpa, size })
            }
        }
        Some(call @ TdVmcall::ReportFatalError { code, .. }) => {
            m.host.tdvmcall(vcpu, &call);
            m.kill(format!("L1 ReportFatalError code {code:#x}"));
            VmcallOutput::status(VmcallStatus::SUCCESS)
        }
        Some(call) => m.host.tdvmcall(vcpu, &call),
    };
    out.write_registers(r);
    Ok(())
}

fn vp_info<H: HostVmm, E: L2Engine>(m: &mut TdxModel<H, E>, r: &mut Registers) -> LeafResult {
    r.rcx = m.config.gpaw as u64;
    r.rdx = m.config.attributes;
    r.r8 = (m.vcpus.len() as u64) << 32 | m.vcpus.len() as u64;
    r.r9 = m.current as u64;
    r.r10 = 1;
    r.r11 = 0;
    Ok(())
}

fn rtmr_extend<H: HostVmm, E: L2Engine>(m: &mut TdxModel<H, E>, r: &mut Registers) -> LeafResult {
    let data: [u8; 48] = read_gpa(m, r.rcx, 64, Op::RCX)?;
    let index = usize::try_from(r.rdx)
        .ok()
        .filter(|i| *i < 4)
        .ok_or(invalid(Op::RDX))?;
    measure::rtmr_extend(&mut m.rtmr[index], &data);
    Ok(())
}

fn veinfo_get<H: HostVmm, E: L2Engine>(m: &mut TdxModel<H, E>, r: &mut Registers) -> LeafResult {
    (r.rcx, r.rdx, r.r8, r.r9, r.r10) = (0, 0, 0, 0, 0);
    let ve = m.vcpus[m.current]
        .ve_info
        .take()
        .ok_or(md(StatusCode::NO_VALID_VE_INFO))?;
    r.rcx = ve.exit_reason as u64;
    r.rdx = ve.qualification;
    r.r8 = ve.gla;
    r.r9 = ve.gpa;
    r.r10 = ve.instruction_length as u64 | (ve.instruction_info as u64) << 32;
    Ok(())
}

fn mr_report<H: HostVmm, E: L2Engine>(m: &mut TdxModel<H, E>, r: &mut Registers) -> LeafResult {
    check_gpa(m, r.rcx, 1024, 1024, Op::RCX)?;
    let reportdata: [u8; 64] = read_gpa(m, r.rdx, 64, Op::RDX)?;
    if r.r8 != 0 {
        return Err(invalid(Op::R8));
    }
    let c = &m.config;
    let report = measure::build_report(
        &ReportInputs {
            attributes: c.attributes,
            xfam: c.xfam,
            mrtd: &c.mrtd,
            mrconfigid: &c.mrconfigid,
            mrowner: &c.mrowner,
            mrownerconfig: &c.mrownerconfig,
            rtmr: &m.rtmr,
            reportdata: &reportdata,
        },
        &c.report_key,
    );
    m.mem.write(r.rcx, &report).map_err(|_| invalid(Op::RCX))
}

fn cpuidve_set<H: HostVmm, E: L2Engine>(m: &mut TdxModel<H, E>, r: &mut Registers) -> LeafResult {
    if r.rcx & !3 != 0 {
        return Err(invalid(Op::RCX));
    }
    m.vcpus[m.current].cpuid_ve = [r.rcx & 1, (r.rcx >> 1) & 1];
    Ok(())
}

fn page_accept<H: HostVmm, E: L2Engine>(m: &mut TdxModel<H, E>, r: &mut Registers) -> LeafResult {
    let mapping = GpaMapping(r.rcx);
    let level = match mapping.level() {
        Some(l @ (PageLevel::Size4K | PageLevel::Size2M)) if mapping.reserved_bits() == 0 => l,
        _ => return Err(invalid(Op::RCX)),
    };
    let gpa = mapping.gpa();
    if !gpa.is_multiple_of(level.bytes()) || !m.mem.is_private_gpa(gpa) {
        return Err(invalid(Op::RCX));
    }
    if gpa + level.bytes() > m.mem.size() || m.mem.state(gpa) == Some(PageState::Removed) {
        m.kill(format!(
            "TDG.MEM.PAGE.ACCEPT of {gpa:#x}: the host has no page there"
        ));
        return Err(Fail::Killed);
    }
    let mapped = m.mem.mapping_level(gpa);
    match level {
        PageLevel::Size2M if mapped != PageLevel::Size2M => {
            return Err(Fail::Status(StatusCode::PAGE_SIZE_MISMATCH, mapped as u32));
        }
        // The host demotes a 2 MiB leaf when the guest accepts at 4 KiB.
        PageLevel::Size4K if mapped == PageLevel::Size2M => m.mem.demote(gpa),
        _ => {}
    }
    let all_accepted = (0..level.bytes() / PAGE_SIZE)
        .all(|i| m.mem.state(gpa + i * PAGE_SIZE) == Some(PageState::Accepted));
    if all_accepted {
        r.rax = TdxStatus::new(StatusCode::PAGE_ALREADY_ACCEPTED, level as u32).0;
        return Ok(());
    }
    m.mem.accept(gpa, level.bytes());
    Ok(())
}

/// A field's readable/writable masks and current value, resolved from its id.
struct FieldRef {
    rd: u64,
    wr: u64,
    value: u64,
}

fn single_element(id: FieldId) -> MdResult<()> {
    if id.is_single_element() {
        Ok(())
    } else {
        Err(StatusCode::METADATA_FIELD_ID_INCORRECT)
    }
}

fn td_field<H: HostVmm, E: L2Engine>(m: &TdxModel<H, E>, id: FieldId) -> MdResult<FieldRef> {
    single_element(id)?;
    let key = id.lookup_key();
    if let Some(f) = TD_FIELDS.iter().find(|f| f.id.lookup_key() == key) {
        use tdcall::field::td;
        let c = &m.config;
        let value = match f.id {
            td::NUM_VCPUS | td::MAX_VCPUS => m.vcpus.len() as u64,
            td::NUM_L2_VMS => c.num_l2_vms as u64,
            td::ATTRIBUTES => c.attributes,
            td::XFAM => c.xfam,
            td::GPAW => (c.gpaw == 52) as u64,
            td::TSC_FREQUENCY => c.tsc_frequency as u64,
            td::NOTIFY_ENABLES => m.notify_enables,
            td::CONFIG_FLAGS => (c.gpaw == 52) as u64,
            td::TD_CTLS => m.td_ctls,
            _ => 0,
        };
        return Ok(FieldRef {
            rd: f.rd,
            wr: f.wr,
            value,
        });
    }
    for (base, elements) in TD_MEASUREMENT_FIELDS {
        let first = base.lookup_key();
        if key >= first && key < first + *elements as u64 {
            let i = (key - first) as usize;
            let bytes: &[u8] = match *base {
                tdcall::field::td::MRTD => &m.config.mrtd,
                tdcall::field::td::MRCONFIGID => &m.config.mrconfigid,
                tdcall::field::td::MROWNER => &m.config.mrowner,
                tdcall::field::td::MROWNERCONFIG => &m.config.mrownerconfig,
                _ => &[0u8; 48],
            };
            let mut q = [0u8; 8];
            q.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            return Ok(FieldRef {
                rd: u64::MAX,
                wr: 0,
                value: u64::from_le_bytes(q),
            });
        }
    }
    Err(StatusCode::METADATA_FIELD_ID_INCORRECT)
}

fn vm_rd<H: HostVmm, E: L2Engine>(
    m: &mut TdxModel<H, E>,
    version: u8,
    r: &mut Registers,
) -> LeafResult {
    if r.rcx != 0 {
        return Err(invalid(Op::RCX));
    }
    let id = FieldId(r.rdx);
    r.r8 = 0;
    if id.is_null() {
        r.rdx = TD_FIELDS[0].id.0;
        return Err(md(StatusCode::METADATA_FIRST_FIELD_ID_IN_CONTEXT));
    }
    let f = td_field(m, id).map_err(md)?;
    r.r8 = f.value & f.rd;
    if f.rd == 0 {
        return Err(md(StatusCode::METADATA_FIELD_NOT_READABLE));
    }
    if version == 1 {
        let pos = TD_FIELDS
            .iter()
            .position(|t| t.id.lookup_key() == id.lookup_key());
        r.rdx = pos
            .and_then(|p| TD_FIELDS.get(p + 1))
            .map_or(u64::MAX, |t| t.id.0);
    }
    Ok(())
}

fn vm_wr<H: HostVmm, E: L2Engine>(m: &mut TdxModel<H, E>, r: &mut Registers) -> LeafResult {
    if r.rcx != 0 {
        return Err(invalid(Op::RCX));
    }
    let id = FieldId(r.rdx);
    let f = td_field(m, id).map_err(md)?;
    let new = metadata::apply_write(f.value, r.r8, r.r9, f.wr).map_err(md)?;
    match id.lookup_key() {
        k if k == tdcall::field::td::NOTIFY_ENABLES.lookup_key() => m.notify_enables = new,
        k if k == tdcall::field::td::TD_CTLS.lookup_key() => m.td_ctls = new,
        _ => return Err(md(StatusCode::METADATA_FIELD_NOT_WRITABLE)),
    }
    r.r8 = f.value & f.rd;
    Ok(())
}

/// Where a vCPU-scope field lives.
enum VpField {
    Vmcs(L2Vm, &'static metadata::VmcsSpec),
    MsrBitmap(L2Vm, usize),
    L2Ctls(usize),
    TscDeadline(usize),
    VcpuIndex,
    CpuidVe(usize),
}

fn vp_field<H: HostVmm, E: L2Engine>(m: &TdxModel<H, E>, id: FieldId) -> MdResult<VpField> {
    single_element(id)?;
    let incorrect = StatusCode::METADATA_FIELD_ID_INCORRECT;
    let vm_exists = |vm: L2Vm| vm.index() <= m.config.num_l2_vms;
    if let Some((vm, msr)) = id.l2_vm_class() {
        if !vm_exists(vm) {
            return Err(incorrect);
        }
        let code = id.code();
        if msr {
            return if code < 512 {
                Ok(VpField::MsrBitmap(vm, code as usize))
            } else {
                Err(incorrect)
            };
        }
        if code & 1 != 0 {
            return Err(incorrect);
        }
        return metadata::vmcs_spec(code)
            .map(|s| VpField::Vmcs(vm, s))
            .ok_or(incorrect);
    }
    let key = id.lookup_key();
    let base = |f: FieldId| f.lookup_key();
    let l2_index = |n: u64| -> MdResult<usize> {
        if n == 0 || L2Vm::from_index(n).is_some_and(vm_exists) {
            Ok(n as usize)
        } else {
            Err(incorrect)
        }
    };
    match key {
        k if k == base(vcpu::VCPU_INDEX) => Ok(VpField::VcpuIndex),
        k if k == base(vcpu::CPUID_SUPERVISOR_VE) => Ok(VpField::CpuidVe(0)),
        k if k == base(vcpu::CPUID_USER_VE) => Ok(VpField::CpuidVe(1)),
        k if (base(vcpu::L2_CTLS_BASE)..base(vcpu::L2_CTLS_BASE) + 4).contains(&k) => {
            l2_index(k - base(vcpu::L2_CTLS_BASE)).map(VpField::L2Ctls)
        }
        k if (base(vcpu::TSC_DEADLINE_BASE)..base(vcpu::TSC_DEADLINE_BASE) + 4).contains(&k) => {
            l2_index(k - base(vcpu::TSC_DEADLINE_BASE)).map(VpField::TscDeadline)
        }
        _ => Err(incorrect),
    }
}

fn vp_get<H: HostVmm, E: L2Engine>(m: &TdxModel<H, E>, f: &VpField) -> FieldRef {
    let v = &m.vcpus[m.current];
    match *f {
        VpField::Vmcs(vm, s) => FieldRef {
            rd: s.rd & s.field.element_size().mask(),
            wr: s.wr & s.field.element_size().mask(),
            value: v.vms[vm.index() as usize - 1]
                .vmcs
                .get(&s.field.0)
                .copied()
                .unwrap_or(0),
        },
        VpField::MsrBitmap(vm, i) => FieldRef {
            rd: u64::MAX,
            wr: u64::MAX,
            value: v.vms[vm.index() as usize - 1].msr_bitmap[i],
        },
        VpField::L2Ctls(n) => FieldRef {
            rd: u64::MAX,
            wr: 0x7,
            value: v.l2_ctls[n],
        },
        VpField::TscDeadline(n) => FieldRef {
            rd: u64::MAX,
            wr: u64::MAX,
            value: v.tsc_deadline[n],
        },
        VpField::VcpuIndex => FieldRef {
            rd: 0xFFFF_FFFF,
            wr: 0,
            value: m.current as u64,
        },
        VpField::CpuidVe(i) => FieldRef {
            rd: 0xFF,
            wr: 1,
            value: v.cpuid_ve[i],
        },
    }
}

fn vp_rd<H: HostVmm, E: L2Engine>(m: &mut TdxModel<H, E>, r: &mut Registers) -> LeafResult {
    if r.rcx != 0 {
        return Err(invalid(Op::RCX));
    }
    let id = FieldId(r.rdx);
    r.r8 = 0;
    r.rdx = u64::MAX;
    if id.is_null() {
        r.rdx = vcpu::VCPU_INDEX.0;
        return Err(md(StatusCode::METADATA_FIRST_FIELD_ID_IN_CONTEXT));
    }
    let field = vp_field(m, id).map_err(md)?;
    let f = vp_get(m, &field);
    if f.rd == 0 {
        return Err(md(StatusCode::METADATA_FIELD_NOT_READABLE));
    }
    r.r8 = f.value & f.rd;
    r.rdx = match field {
        VpField::Vmcs(vm, s) => {
            let pos = metadata::VMCS_FIELDS
                .iter()
                .position(|x| x.field == s.field)
                .unwrap_or(0);
            metadata::VMCS_FIELDS
                .get(pos + 1)
                .map_or(u64::MAX, |n| FieldId::l2_vmcs(vm, n.field).0)
        }
        VpField::MsrBitmap(vm, i) if i < 511 => FieldId::l2_msr_bitmap(vm, i as u16 + 1).0,
        _ => u64::MAX,
    };
    Ok(())
}

fn vp_wr<H: HostVmm, E: L2Engine>(m: &mut TdxModel<H, E>, r: &mut Registers) -> LeafResult {
    if r.rcx != 0 {
        return Err(invalid(Op::RCX));
    }
    let field = vp_field(m, FieldId(r.rdx)).map_err(md)?;
    let f = vp_get(m, &field);
    let new = metadata::apply_write(f.value, r.r8, r.r9, f.wr).map_err(md)?;
    let not_valid = md(StatusCode::METADATA_FIELD_VALUE_NOT_VALID);
    let mbec_supported = m.config.mbec_supported;
    let gpa_ok = m.mem.is_private_gpa(new);
    let v = &mut m.vcpus[m.current];
    match field {
        VpField::Vmcs(vm, s) => {
            // Field-specific checks the module applies after the generic rule (§2.4, §8).
            if s.field == vmcs::VIRTUAL_APIC_PAGE_ADDR && !gpa_ok {
                return Err(not_valid);
            }
            if s.field == vmcs::SECONDARY_PROC_BASED_CTLS
                && new & tdcall::field::controls::SECONDARY_MBEC != 0
                && !mbec_supported
            {
                return Err(not_valid);
            }
            let state = &mut v.vms[vm.index() as usize - 1];
            state.vapic_set |= s.field == vmcs::VIRTUAL_APIC_PAGE_ADDR;
            state.vmcs.insert(s.field.0, new);
        }
        VpField::MsrBitmap(vm, i) => v.vms[vm.index() as usize - 1].msr_bitmap[i] = new,
        VpField::L2Ctls(n) => {
            // Only ENABLE_SHARED_EPTP and ENABLE_TDVMCALL are allowed in 1.5.01 (§2.7).
            if new & L2Ctls::ENABLE_EXTENDED_VE.bits() != 0 {
                return Err(not_valid);
            }
            v.l2_ctls[n] = new;
        }
        VpField::TscDeadline(n) => v.tsc_deadline[n] = new,
        VpField::CpuidVe(i) => v.cpuid_ve[i] = new,
        VpField::VcpuIndex => return Err(md(StatusCode::METADATA_FIELD_NOT_WRITABLE)),
    }
    r.r8 = f.value & f.rd;
    Ok(())
}

fn sys_rd(r: &mut Registers) -> LeafResult {
    let id = FieldId(r.rdx);
    r.r8 = 0;
    r.rdx = u64::MAX;
    if id.is_null() {
        r.rdx = SYS_FIELDS[0].0 .0;
        return Err(md(StatusCode::METADATA_FIRST_FIELD_ID_IN_CONTEXT));
    }
    single_element(id).map_err(md)?;
    let pos = SYS_FIELDS
        .iter()
        .position(|(f, _)| f.lookup_key() == id.lookup_key())
        .ok_or(md(StatusCode::METADATA_FIELD_ID_INCORRECT))?;
    let (f, value) = SYS_FIELDS[pos];
    r.r8 = value & f.element_size().mask();
    r.rdx = SYS_FIELDS.get(pos + 1).map_or(u64::MAX, |(n, _)| n.0);
    Ok(())
}

fn sys_rdall<H: HostVmm, E: L2Engine>(m: &mut TdxModel<H, E>, r: &mut Registers) -> LeafResult {
    let start = FieldId(r.r8);
    r.r8 = u64::MAX;
    check_gpa(m, r.rdx, PAGE_SIZE, PAGE_SIZE, Op::RDX)?;
    let first = if start.is_null() {
        0
    } else {
        SYS_FIELDS
            .iter()
            .position(|(f, _)| f.lookup_key() == start.lookup_key())
            .ok_or(md(StatusCode::METADATA_FIELD_ID_INCORRECT))?
    };
    // List page: 8-byte header (u16 bytes used, u16 sequences, u32 reserved),
    // then one single-element sequence per field: field id, value.
    let mut page = [0u8; PAGE_SIZE as usize];
    let mut off = 8;
    for (f, v) in &SYS_FIELDS[first..] {
        page[off..off + 8].copy_from_slice(&f.0.to_le_bytes());
        page[off + 8..off + 16].copy_from_slice(&v.to_le_bytes());
        off += 16;
    }
    page[0..2].copy_from_slice(&(off as u16).to_le_bytes());
    page[2..4].copy_from_slice(&((SYS_FIELDS.len() - first) as u16).to_le_bytes());
    m.mem.write(r.rdx, &page).map_err(|_| invalid(Op::RDX))
}

fn servtd<H: HostVmm, E: L2Engine>(
    m: &mut TdxModel<H, E>,
    write: bool,
    r: &mut Registers,
) -> LeafResult {
    // Binding handle bits 11:0 = slot; 1.5.01 has MAX_SERV_TDS = 1. The model
    // uses the slot alone as the handle (the module also folds in the target's
    // TDR page and this TD's UUID).
    if r.rcx & 0xFFF >= 1 || r.rcx >> 12 != 0 {
        return Err(invalid(Op::RCX));
    }
    let id = FieldId(r.rdx);
    r.r8 = if write { r.r8 } else { 0 };
    let Some(binding) = m.config.servtd_binding.as_mut() else {
        // Not bound: the module takes a cross-TD trap (an asynchronous TD exit),
        // which the model's host does not resume.
        m.kill(format!(
            "TDG.SERVTD access with handle {:#x}: no service-TD binding (cross-TD trap)",
            r.rcx
        ));
        return Err(Fail::Killed);
    };
    if [r.r10, r.r11, r.r12, r.r13] != binding.uuid {
        return Err(md(StatusCode::TARGET_UUID_MISMATCH));
    }
    if !write && id.is_null() {
        r.rdx = binding.fields.keys().next().copied().unwrap_or(u64::MAX);
        return Err(md(StatusCode::METADATA_FIRST_FIELD_ID_IN_CONTEXT));
    }
    single_element(id).map_err(md)?;
    let key = id.lookup_key();
    let Some((stored_id, (value, wr))) = binding
        .fields
        .iter_mut()
        .find(|(k, _)| FieldId(**k).lookup_key() == key)
    else {
        return Err(md(StatusCode::METADATA_FIELD_ID_INCORRECT));
    };
    let old = *value;
    if write {
        *value = metadata::apply_write(old, r.r8, r.r9, *wr).map_err(md)?;
    } else {
        let next = *stored_id;
        r.rdx = binding
            .fields
            .range(next + 1..)
            .next()
            .map_or(u64::MAX, |(k, _)| *k);
    }
    r.r8 = old;
    Ok(())
}

fn verify_report<H: HostVmm, E: L2Engine>(m: &mut TdxModel<H, E>, r: &mut Registers) -> LeafResult {
    let mac: [u8; measure::REPORTMAC_SIZE] = read_gpa(m, r.rcx, 256, Op::RCX)?;
    if measure::verify_reportmac(&mac, &m.config.report_key) {
        Ok(())
    } else {
        Err(md(StatusCode::INVALID_REPORTMACSTRUCT))
    }
}

/// GPA_ATTR of a 4 KiB page for all existing L2 VMs (§3.3).
fn page_gpa_attr<H: HostVmm, E: L2Engine>(m: &TdxModel<H, E>, gpa: u64) -> GpaAttr {
    L2Vm::ALL[..m.config.num_l2_vms as usize]
        .iter()
        .fold(GpaAttr(0), |a, vm| a.with_slot(*vm, m.mem.attr(gpa, *vm)))
}

fn mapping_out<H: HostVmm, E: L2Engine>(m: &TdxModel<H, E>, gpa: u64) -> u64 {
    let level = m.mem.mapping_level(gpa);
    let base = gpa & !(level.bytes() - 1);
    let pending = m.mem.state(gpa) == Some(PageState::Pending);
    GpaMapping::new(base, level).0 | if pending { GpaMapping::PENDING } else { 0 }
}

fn attr_rd<H: HostVmm, E: L2Engine>(m: &mut TdxModel<H, E>, r: &mut Registers) -> LeafResult {
    let gpa = r.rcx & GpaMapping::GPA_MASK;
    if !m.mem.is_private_gpa(r.rcx) {
        return Err(invalid(Op::RCX));
    }
    if gpa >= m.mem.size() || m.mem.state(gpa) == Some(PageState::Removed) {
        m.kill(format!(
            "TDG.MEM.PAGE.ATTR.RD of unmapped {gpa:#x}: EPT-violation TD exit"
        ));
        return Err(Fail::Killed);
    }
    r.rcx = mapping_out(m, gpa);
    r.rdx = page_gpa_attr(m, gpa).0;
    Ok(())
}

fn attr_wr<H: HostVmm, E: L2Engine>(m: &mut TdxModel<H, E>, r: &mut Registers) -> LeafResult {
    let mapping = GpaMapping(r.rcx);
    let Some(level) = mapping.level().filter(|_| mapping.reserved_bits() == 0) else {
        return Err(invalid(Op::RCX));
    };
    let gpa = mapping.gpa();
    if !gpa.is_multiple_of(level.bytes()) || !m.mem.is_private_gpa(gpa) {
        return Err(invalid(Op::RCX));
    }
    let (new, flags) = (GpaAttr(r.rdx), AttrWrFlags(r.r8));
    let nvms = m.config.num_l2_vms;
    // VM0 slot and slots of VMs that do not exist must be 0 (§3.4).
    let live = |slot: u8| slot >= 1 && slot <= nvms;
    for slot in 0..4u8 {
        let a = new.slot_bits(slot);
        if a != 0 && (!live(slot) || a & L2Attr::VALID.bits() == 0) {
            return Err(invalid(Op::RDX));
        }
        if a & !L2Attr::GUEST_WRITABLE_MASK != 0 {
            return Err(invalid(Op::RDX));
        }
        let f = flags.slot_bits(slot);
        if (!live(slot) && f != 0) || f & 0x7FFF & !L2Attr::GUEST_WRITABLE_MASK != 0 {
            return Err(invalid(Op::R8));
        }
    }
    if gpa + level.bytes() > m.mem.size() || m.mem.state(gpa) == Some(PageState::Removed) {
        m.kill(format!(
            "TDG.MEM.PAGE.ATTR.WR of unmapped {gpa:#x}: EPT-violation TD exit"
        ));
        return Err(Fail::Killed);
    }
    let mapped = m.mem.mapping_level(gpa);
    if level > mapped {
        return Err(Fail::Status(StatusCode::PAGE_SIZE_MISMATCH, mapped as u32));
    }
    // Compute every VM's result first; nothing changes unless all are legal (§3.4).
    let mut results = [None::<L2Attr>; 3];
    for vm in &L2Vm::ALL[..nvms as usize] {
        let mask = flags.mask(*vm);
        let masked =
            L2Attr::from_bits_retain(new.slot(*vm).bits() & (mask.bits() | L2Attr::VALID.bits()));
        if !masked.contains(L2Attr::VALID) {
            continue;
        }
        let current = m.mem.attr(gpa, *vm);
        let result = if current.contains(L2Attr::VALID) {
            L2Attr::from_bits_retain((current.bits() & !mask.bits()) | masked.bits())
        } else {
            masked
        };
        if !result.is_legal() {
            r.rcx = 0;
            r.rdx = page_gpa_attr(m, gpa).0;
            return Err(md(StatusCode::PAGE_ATTR_INVALID));
        }
        results[vm.index() as usize - 1] = Some(result);
    }
    let mut out = page_gpa_attr(m, gpa);
    for vm in &L2Vm::ALL[..nvms as usize] {
        if let Some(result) = results[vm.index() as usize - 1] {
            // An alias without R/W/Xs/Xu is removed; the output still shows VALID.
            let stored = if result.is_present() {
                result
            } else {
                L2Attr::empty()
            };
            for page in 0..level.bytes() / PAGE_SIZE {
                m.mem.set_attr(gpa + page * PAGE_SIZE, *vm, stored);
            }
            out = out.with_slot(*vm, result);
        }
        if flags.invept(*vm) {
            m.stats.invept[vm.index() as usize] += 1;
        }
    }
    m.stats.attr_writes += 1;
    let pending = m.mem.state(gpa) == Some(PageState::Pending);
    r.rcx = GpaMapping::new(gpa, level).0 | if pending { GpaMapping::PENDING } else { 0 };
    r.rdx = out.0;
    Ok(())
}

fn invept<H: HostVmm, E: L2Engine>(m: &mut TdxModel<H, E>, r: &mut Registers) -> LeafResult {
    let nvms = m.config.num_l2_vms as u32;
    if r.rcx & 1 != 0 || r.rcx >> (nvms + 1) != 0 {
        return Err(invalid(Op::RCX));
    }
    for vm in 1..=nvms as usize {
        if r.rcx >> vm & 1 != 0 {
            m.stats.invept[vm] += 1;
        }
    }
    Ok(())
}

fn canonical(gla: u64) -> bool {
    let top = (gla as i64) >> 47;
    top == 0 || top == -1
}

fn invgla<H: HostVmm, E: L2Engine>(m: &mut TdxModel<H, E>, r: &mut Registers) -> LeafResult {
    let list = r.rcx & 1 != 0;
    let reserved = r.rcx & !(1 | (3 << 52));
    let vm = L2Vm::from_index((r.rcx >> 52) & 3).filter(|vm| vm.index() <= m.config.num_l2_vms);
    let (Some(vm), 0) = (vm, reserved) else {
        return Err(invalid(Op::RCX));
    };
    if list {
        let first = r.rdx & 0x1FF;
        let count = (r.rdx >> 52) & 0x3FF;
        if r.rdx & ((7 << 9) | (3 << 62)) != 0 || first + count > 512 {
            return Err(invalid(Op::RDX));
        }
        let page_gpa = r.rdx & 0x000F_FFFF_FFFF_F000;
        let page: [u8; PAGE_SIZE as usize] = read_gpa(m, page_gpa, PAGE_SIZE, Op::RDX)?;
        for i in first..first + count {
            let o = i as usize * 8;
            let mut q = [0u8; 8];
            q.copy_from_slice(&page[o..o + 8]);
            if !canonical(u64::from_le_bytes(q) & !0xFFF) {
                return Err(md(StatusCode::GLA_NOT_CANONICAL));
            }
            m.stats.invgla[vm.index() as usize] += 1;
        }
        r.rdx = (r.rdx & !(0x1FF | (0x3FF << 52))) | ((first + count) & 0x1FF);
    } else {
        if !canonical(r.rdx & !0xFFF) {
            return Err(md(StatusCode::GLA_NOT_CANONICAL));
        }
        m.stats.invgla[vm.index() as usize] += 1;
    }
    Ok(())
}

fn vp_enter<H: HostVmm, E: L2Engine>(m: &mut TdxModel<H, E>, r: &mut Registers) -> LeafResult {
    // Input checks in the module's order (§2.2).
    let buf_gpa = r.rdx;
    if !buf_gpa.is_multiple_of(L2EnterGuestState::ALIGN) || !m.mem.is_private_gpa(buf_gpa) {
        return Err(invalid(Op::RDX));
    }
    let (vm_index, invd, reserved) = VpEnterFlags::decode_raw(r.rcx);
    let vm = L2Vm::from_index(vm_index).filter(|vm| vm.index() <= m.config.num_l2_vms);
    let (Some(vm), 0) = (vm, reserved) else {
        return Err(invalid(Op::RCX));
    };
    let slot = vm.index() as usize - 1;
    let vmstate = &m.vcpus[m.current].vms[slot];
    let vapic = vmstate.vmcs[&vmcs::VIRTUAL_APIC_PAGE_ADDR.0];
    if !vmstate.vapic_set {
        return Err(invalid(Op::L2_VAPIC_GPA));
    }
    if m.vcpus[m.current].l1_interrupt_pending {
        r.rax = TdxStatus::new(StatusCode::PENDING_INTERRUPT, 0).0;
        return Ok(());
    }
    let buf: [u8; 256] = read_gpa(m, buf_gpa, 256, Op::RDX)?;
    check_gpa(m, vapic, PAGE_SIZE, PAGE_SIZE, Op::L2_VAPIC_GPA)?;
    let state = L2EnterGuestState::from_bytes(&buf);
    if invd == tdcall::InvdTranslations::InveptSingleContext {
        m.stats.invept[vm.index() as usize] += 1;
    } else if invd != tdcall::InvdTranslations::None {
        m.stats.invgla[vm.index() as usize] += 1;
    }

    let vcpu_index = m.current as u32;
    let v = &mut m.vcpus[m.current];
    let l2_ctls = v.l2_ctls[vm.index() as usize];
    let tsc_deadline = v.tsc_deadline[vm.index() as usize];
    let vmstate = &mut v.vms[slot];
    // GUEST_RSP/RIP/RFLAGS/SSP/interrupt status come from the buffer (§2.2).
    for (f, val) in [
        (vmcs::GUEST_RSP, state.gprs[4]),
        (vmcs::GUEST_RIP, state.rip),
        (vmcs::GUEST_RFLAGS, state.rflags),
        (vmcs::GUEST_SSP, state.ssp),
        (vmcs::GUEST_INTR_STATUS, state.guest_interrupt_status as u64),
    ] {
        vmstate.vmcs.insert(f.0, val);
    }
    let injected = InterruptionInfo(vmstate.vmcs[&vmcs::VM_ENTRY_INTR_INFO.0] as u32);
    let error_code = vmstate.vmcs[&vmcs::VM_ENTRY_EXCEPTION_ERROR_CODE.0] as u32;
    // The valid bit of the VM-entry interruption field clears on entry (SDM).
    vmstate.vmcs.insert(vmcs::VM_ENTRY_INTR_INFO.0, 0);
    let mut cpu = L2Cpu {
        vm,
        vcpu_index,
        regs: L2Regs {
            gprs: state.gprs,
            rip: state.rip,
            rflags: state.rflags,
            ssp: state.ssp,
            intr_status: state.guest_interrupt_status,
        },
        vmcs: &mut vmstate.vmcs,
        msr_bitmap: &vmstate.msr_bitmap,
        shared_msrs: &mut v.shared_msrs,
        mem: &mut m.mem,
        host: &mut m.host,
        l2_ctls,
        end: None,
        last_value: None,
        tsc_deadline,
    };
    // VM-entry checks on event injection (SDM 26.3.1.5): an external
    // interrupt needs RFLAGS.IF = 1 and no blocking by STI or MOV SS, else
    // the entry fails with invalid guest state (§2.3, reason 33 | bit 31).
    let external = injected.is_valid()
        && injected.event_type() == tdcall::vmx::EventType::ExternalInterrupt as u8;
    if external && !cpu.interruptible() {
        cpu.entry_failure(tdcall::vmx::reason::INVALID_GUEST_STATE);
    } else {
        if injected.is_valid() {
            let event = DeliveredEvent {
                rip: cpu.regs.rip,
                vector: injected.vector(),
                error_code: injected.has_error_code().then_some(error_code),
            };
            m.engine.deliver_event(&mut cpu, event);
        }
        m.engine.run(&mut cpu);
    }
    let end = cpu.end.take();
    let regs = cpu.regs;
    let Some(end) = end else {
        m.kill(format!(
            "L2 engine returned without an exit (VM {})",
            vm.index()
        ));
        return Err(Fail::Killed);
    };
    // Write L2 state back to the buffer on every exit (§2.2).
    let out = L2EnterGuestState {
        gprs: regs.gprs,
        rflags: regs.rflags,
        rip: regs.rip,
        ssp: regs.ssp,
        guest_interrupt_status: regs.intr_status,
    };
    m.mem
        .write(buf_gpa, &out.to_bytes())
        .map_err(|_| invalid(Op::RDX))?;
    let (outcome, info) = match end {
        RunEnd::ToL1(info) => (EnterOutcome::L2ToL1, info),
        RunEnd::ToHost(info) => match m.host.l2_exit_routed(vcpu_index, vm, &info) {
            HostDecision::ResumeL1 => (EnterOutcome::HostRoutedAsync, info),
            HostDecision::KillTd => {
                m.kill(format!(
                    "host killed the TD on a routed L2 exit at GPA {:#x}",
                    info.gpa
                ));
                return Err(Fail::Killed);
            }
        },
    };
    *m.stats
        .l2_exits
        .entry(info.exit_reason().basic())
        .or_default() += 1;
    let vmstate = &mut m.vcpus[m.current].vms[slot];
    for (f, val) in [
        (vmcs::GUEST_RSP, regs.gprs[4]),
        (vmcs::GUEST_RIP, regs.rip),
        (vmcs::GUEST_RFLAGS, regs.rflags),
        (vmcs::EXIT_REASON, info.reason as u64),
        (vmcs::EXIT_QUALIFICATION, info.qualification),
        (vmcs::GUEST_PHYSICAL_ADDRESS, info.gpa),
        (vmcs::GUEST_LINEAR_ADDRESS, info.gla),
        (
            vmcs::VM_EXIT_INSTRUCTION_LEN,
            info.instruction_length as u64,
        ),
        (vmcs::VM_EXIT_INSTRUCTION_INFO, info.instruction_info as u64),
    ] {
        vmstate.vmcs.insert(f.0, val);
    }
    info.write_registers(outcome, r);
    Ok(())
}
