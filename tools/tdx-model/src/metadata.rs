//! Metadata fields the model serves: the L2 VMCS with module 1.5.01's L1
//! read/write masks and initial values (§2.5, §2.6), the per-VM management and
//! MSR-bitmap fields (§2.7), TD-scope fields and global fields (§1.4, §2.7),
//! plus the generic write rule of §2.4.
#![forbid(unsafe_code)]

use tdcall::field::{controls as c, vmcs, FieldId, VmcsField};
use tdcall::status::StatusCode;

/// Read/write masks and initial value of one L2 VMCS field.
#[derive(Clone, Copy, Debug)]
pub struct VmcsSpec {
    /// The field.
    pub field: VmcsField,
    /// Bits L1 may read (0 = not readable).
    pub rd: u64,
    /// Bits L1 may write (0 = not writable).
    pub wr: u64,
    /// Value in a fresh L2 VMCS (§2.6).
    pub init: u64,
}

const ALL: u64 = u64::MAX;

const fn spec(field: VmcsField, rd: u64, wr: u64, init: u64) -> VmcsSpec {
    VmcsSpec {
        field,
        rd,
        wr,
        init,
    }
}

/// Pin-based controls: external-interrupt exiting, NMI exiting, virtual NMIs (§2.5).
pub const PIN_BASED_L2_INIT: u64 = (1 << 0) | (1 << 3) | (1 << 5);
/// Base CR0 guest/host mask of the module (§2.6): NE, NW, CD, 63:32, 28:19, 17, 15:6.
pub const CR0_BASE_MASK: u64 = (1 << 5)
    | (1 << 29)
    | (1 << 30)
    | (0xFFFF_FFFF << 32)
    | (0x3FF << 19)
    | (1 << 17)
    | (0x3FF << 6);
/// CR0 bits that are architecturally reserved (subset of the base mask): setting them is #GP.
pub const CR0_RESERVED: u64 = (0xFFFF_FFFF << 32) | (0x3FF << 19) | (1 << 17) | (0x3FF << 6);
/// CR4 bits an L2 may own in this model's TD configuration (§2.5 GUEST_CR4 write mask).
pub const CR4_ALLOWED: u64 = c::GUEST_CR4_L1_WR_MASK;
/// CR4 bits the module always owns: MCE, VMXE, SMXE and everything not allowed (§2.6).
pub const CR4_BASE_MASK: u64 = !CR4_ALLOWED;
/// Base CR4 read shadow: MCE | VMXE (§2.6).
pub const CR4_BASE_SHADOW: u64 = (1 << 6) | (1 << 13);
/// Base CR0 read shadow: NE (§2.6).
pub const CR0_BASE_SHADOW: u64 = 1 << 5;

/// The L2 VMCS fields the model knows, with 1.5.01 masks (§2.5) and initial state (§2.6).
pub const VMCS_FIELDS: &[VmcsSpec] = &[
    spec(vmcs::VPID, 0, 0, 0),
    spec(vmcs::POSTED_INTR_NV, ALL, 0, 0),
    spec(vmcs::EPTP_INDEX, 0, 0, 0),
    spec(vmcs::HLAT_PREFIX_SIZE, ALL, ALL, 0),
    spec(vmcs::GUEST_ES_SELECTOR, ALL, ALL, 0),
    spec(vmcs::GUEST_CS_SELECTOR, ALL, ALL, 0),
    spec(vmcs::GUEST_SS_SELECTOR, ALL, ALL, 0),
    spec(vmcs::GUEST_DS_SELECTOR, ALL, ALL, 0),
    spec(vmcs::GUEST_FS_SELECTOR, ALL, ALL, 0),
    spec(vmcs::GUEST_GS_SELECTOR, ALL, ALL, 0),
    spec(vmcs::GUEST_LDTR_SELECTOR, ALL, ALL, 0),
    spec(vmcs::GUEST_TR_SELECTOR, ALL, ALL, 0),
    spec(vmcs::GUEST_INTR_STATUS, ALL, ALL, 0),
    spec(vmcs::PML_INDEX, 0, 0, 0),
    spec(vmcs::GUEST_UINV, ALL, ALL, 0),
    spec(vmcs::IO_BITMAP_A, ALL, 0, 0),
    spec(vmcs::IO_BITMAP_B, ALL, 0, 0),
    spec(vmcs::MSR_BITMAP, 0, 0, 0),
    spec(vmcs::TSC_OFFSET, 0, 0, 0),
    spec(
        vmcs::VIRTUAL_APIC_PAGE_ADDR,
        ALL,
        c::VIRTUAL_APIC_L1_WR_MASK,
        0,
    ),
    spec(vmcs::APIC_ACCESS_ADDR, 0, 0, 0),
    spec(vmcs::POSTED_INTR_DESC_ADDR, ALL, 0, 0),
    spec(vmcs::VM_FUNCTION_CONTROLS, ALL, 0, 0),
    spec(
        vmcs::EPT_POINTER,
        c::EPTP_L1_RD_MASK,
        c::EPTP_L1_WR_MASK,
        0x5E,
    ),
    spec(vmcs::EOI_EXIT_BITMAP0, ALL, ALL, 0),
    spec(vmcs::EOI_EXIT_BITMAP1, ALL, ALL, 0),
    spec(vmcs::EOI_EXIT_BITMAP2, ALL, ALL, 0),
    spec(vmcs::EOI_EXIT_BITMAP3, ALL, ALL, 0),
    spec(vmcs::VE_INFO_ADDR, ALL, 0, 0),
    spec(vmcs::XSS_EXIT_BITMAP, ALL, ALL, 0),
    spec(vmcs::ENCLS_EXITING_BITMAP, ALL, 0, ALL),
    spec(vmcs::TSC_MULTIPLIER, 0, 0, 0),
    spec(
        vmcs::TERTIARY_PROC_BASED_CTLS,
        ALL,
        c::TERTIARY_L1_WR_MASK,
        0,
    ),
    spec(vmcs::ENCLV_EXITING_BITMAP, ALL, 0, ALL),
    spec(vmcs::SHARED_EPTP, 0, 0, 0),
    spec(vmcs::HLAT_POINTER, ALL, c::HLAT_POINTER_L1_WR_MASK, 0),
    spec(vmcs::GUEST_PHYSICAL_ADDRESS, ALL, ALL, 0),
    spec(vmcs::VMCS_LINK_POINTER, 0, 0, ALL),
    spec(
        vmcs::GUEST_IA32_DEBUGCTL,
        !(1 << 13),
        c::GUEST_DEBUGCTL_L1_WR_MASK,
        0,
    ),
    spec(vmcs::GUEST_IA32_PAT, ALL, ALL, 0x0007_0406_0007_0406),
    spec(vmcs::GUEST_IA32_EFER, ALL, c::GUEST_EFER_L1_WR_MASK, 0x901),
    spec(vmcs::GUEST_IA32_PERF_GLOBAL_CTRL, ALL, ALL, 0xFF),
    spec(vmcs::GUEST_PDPTE0, ALL, ALL, 0),
    spec(vmcs::GUEST_PDPTE1, ALL, ALL, 0),
    spec(vmcs::GUEST_PDPTE2, ALL, ALL, 0),
    spec(vmcs::GUEST_PDPTE3, ALL, ALL, 0),
    spec(vmcs::GUEST_IA32_RTIT_CTL, ALL, ALL, 0),
    spec(vmcs::GUEST_IA32_LBR_CTL, ALL, ALL, 0),
    spec(vmcs::GUEST_IA32_PKRS, ALL, ALL, 0),
    spec(vmcs::PIN_BASED_CTLS, ALL, 0, PIN_BASED_L2_INIT),
    spec(
        vmcs::PROC_BASED_CTLS,
        ALL,
        c::PROC_BASED_L1_WR_MASK,
        c::PROC_BASED_L2_INIT,
    ),
    spec(
        vmcs::EXCEPTION_BITMAP,
        ALL,
        c::EXCEPTION_BITMAP_L1_WR_MASK,
        1 << 18,
    ),
    spec(vmcs::PAGE_FAULT_ERROR_CODE_MASK, ALL, ALL, 0),
    spec(vmcs::PAGE_FAULT_ERROR_CODE_MATCH, ALL, ALL, 0),
    spec(vmcs::CR3_TARGET_COUNT, ALL, ALL, 0),
    spec(vmcs::VM_EXIT_CONTROLS, ALL, 0, 0),
    spec(vmcs::VM_ENTRY_CONTROLS, ALL, c::VM_ENTRY_L1_WR_MASK, 0),
    spec(vmcs::VM_ENTRY_INTR_INFO, ALL, ALL, 0),
    spec(vmcs::VM_ENTRY_EXCEPTION_ERROR_CODE, ALL, ALL, 0),
    spec(vmcs::VM_ENTRY_INSTRUCTION_LEN, ALL, ALL, 0),
    spec(vmcs::TPR_THRESHOLD, ALL, ALL, 0),
    spec(
        vmcs::SECONDARY_PROC_BASED_CTLS,
        ALL,
        c::SECONDARY_L1_WR_MASK,
        c::SECONDARY_L2_INIT,
    ),
    spec(vmcs::PLE_GAP, ALL, ALL, 0),
    spec(vmcs::PLE_WINDOW, ALL, ALL, 0),
    spec(vmcs::INSTRUCTION_TIMEOUT_CONTROL, ALL, 0, 0),
    spec(vmcs::VM_INSTRUCTION_ERROR, ALL, ALL, 0),
    spec(vmcs::EXIT_REASON, ALL, ALL, 0),
    spec(vmcs::VM_EXIT_INTR_INFO, ALL, ALL, 0),
    spec(vmcs::VM_EXIT_INTR_ERROR_CODE, ALL, ALL, 0),
    spec(vmcs::IDT_VECTORING_INFO, ALL, ALL, 0),
    spec(vmcs::IDT_VECTORING_ERROR_CODE, ALL, ALL, 0),
    spec(vmcs::VM_EXIT_INSTRUCTION_LEN, ALL, ALL, 0),
    spec(vmcs::VM_EXIT_INSTRUCTION_INFO, ALL, ALL, 0),
    spec(vmcs::GUEST_ES_LIMIT, ALL, ALL, 0xFFFF_FFFF),
    spec(vmcs::GUEST_CS_LIMIT, ALL, ALL, 0xFFFF_FFFF),
    spec(vmcs::GUEST_SS_LIMIT, ALL, ALL, 0xFFFF_FFFF),
    spec(vmcs::GUEST_DS_LIMIT, ALL, ALL, 0xFFFF_FFFF),
    spec(vmcs::GUEST_FS_LIMIT, ALL, ALL, 0xFFFF_FFFF),
    spec(vmcs::GUEST_GS_LIMIT, ALL, ALL, 0xFFFF_FFFF),
    spec(vmcs::GUEST_LDTR_LIMIT, ALL, ALL, 0xFFFF),
    spec(vmcs::GUEST_TR_LIMIT, ALL, ALL, 0xFFFF),
    spec(vmcs::GUEST_GDTR_LIMIT, ALL, ALL, 0xFFFF),
    spec(vmcs::GUEST_IDTR_LIMIT, ALL, ALL, 0),
    spec(vmcs::GUEST_ES_AR, ALL, ALL, 0xC093),
    spec(vmcs::GUEST_CS_AR, ALL, ALL, 0xC09B),
    spec(vmcs::GUEST_SS_AR, ALL, ALL, 0xC093),
    spec(vmcs::GUEST_DS_AR, ALL, ALL, 0xC093),
    spec(vmcs::GUEST_FS_AR, ALL, ALL, 0xC093),
    spec(vmcs::GUEST_GS_AR, ALL, ALL, 0xC093),
    spec(vmcs::GUEST_LDTR_AR, ALL, ALL, 0x1_0082),
    spec(vmcs::GUEST_TR_AR, ALL, ALL, 0x8B),
    spec(vmcs::GUEST_INTERRUPTIBILITY, ALL, ALL, 0),
    spec(vmcs::GUEST_ACTIVITY_STATE, ALL, 0, 0),
    spec(vmcs::GUEST_SMBASE, 0, 0, 0),
    spec(vmcs::GUEST_SYSENTER_CS, ALL, ALL, 0),
    spec(vmcs::VMX_PREEMPTION_TIMER, 0, 0, 0),
    // L1's own mask/shadow start as all ones / 0 (§2.6).
    spec(vmcs::CR0_GUEST_HOST_MASK, ALL, ALL, ALL),
    spec(vmcs::CR4_GUEST_HOST_MASK, ALL, ALL, ALL),
    spec(vmcs::CR0_READ_SHADOW, ALL, ALL, 0),
    spec(vmcs::CR4_READ_SHADOW, ALL, ALL, 0),
    spec(vmcs::CR3_TARGET_VALUE0, ALL, ALL, 0),
    spec(vmcs::CR3_TARGET_VALUE1, ALL, ALL, 0),
    spec(vmcs::CR3_TARGET_VALUE2, ALL, ALL, 0),
    spec(vmcs::CR3_TARGET_VALUE3, ALL, ALL, 0),
    spec(vmcs::EXIT_QUALIFICATION, ALL, ALL, 0),
    spec(vmcs::IO_RCX, ALL, ALL, 0),
    spec(vmcs::IO_RSI, ALL, ALL, 0),
    spec(vmcs::IO_RDI, ALL, ALL, 0),
    spec(vmcs::IO_RIP, ALL, ALL, 0),
    spec(vmcs::GUEST_LINEAR_ADDRESS, ALL, ALL, 0),
    spec(vmcs::GUEST_CR0, ALL, c::GUEST_CR0_L1_WR_MASK, 0x21),
    spec(vmcs::GUEST_CR3, ALL, ALL, 0),
    spec(vmcs::GUEST_CR4, ALL, c::GUEST_CR4_L1_WR_MASK, 0x2040),
    spec(vmcs::GUEST_ES_BASE, ALL, ALL, 0),
    spec(vmcs::GUEST_CS_BASE, ALL, ALL, 0),
    spec(vmcs::GUEST_SS_BASE, ALL, ALL, 0),
    spec(vmcs::GUEST_DS_BASE, ALL, ALL, 0),
    spec(vmcs::GUEST_FS_BASE, ALL, ALL, 0),
    spec(vmcs::GUEST_GS_BASE, ALL, ALL, 0),
    spec(vmcs::GUEST_LDTR_BASE, ALL, ALL, 0),
    spec(vmcs::GUEST_TR_BASE, ALL, ALL, 0),
    spec(vmcs::GUEST_GDTR_BASE, ALL, ALL, 0),
    spec(vmcs::GUEST_IDTR_BASE, ALL, ALL, 0),
    spec(vmcs::GUEST_DR7, ALL, ALL, 0x400),
    spec(vmcs::GUEST_RSP, ALL, ALL, 0),
    spec(vmcs::GUEST_RIP, ALL, ALL, 0xFFFF_FFF0),
    spec(vmcs::GUEST_RFLAGS, ALL, ALL, 2),
    spec(vmcs::GUEST_PENDING_DBG_EXCEPTIONS, ALL, ALL, 0),
    spec(vmcs::GUEST_SYSENTER_ESP, ALL, ALL, 0),
    spec(vmcs::GUEST_SYSENTER_EIP, ALL, ALL, 0),
    spec(vmcs::GUEST_S_CET, ALL, ALL, 0),
    spec(vmcs::GUEST_SSP, ALL, ALL, 0),
    spec(vmcs::GUEST_INTR_SSP_TABLE_ADDR, ALL, ALL, 0),
];

/// Finds a VMCS field's spec.
pub fn vmcs_spec(encoding: u32) -> Option<&'static VmcsSpec> {
    VMCS_FIELDS.iter().find(|s| s.field.0 as u32 == encoding)
}

/// The width mask of a VMCS field (natural width = 64 bits in a 64-bit TD).
pub fn vmcs_width_mask(field: VmcsField) -> u64 {
    field.element_size().mask()
}

/// A field that failed a metadata access, as the status the module returns.
pub type MdResult<T> = Result<T, StatusCode>;

/// The generic write rule of §2.4. Returns the new value.
///
/// `writable = wr_mask & mask`; nothing writable → NOT_WRITABLE; bits in `mask`
/// that are not writable must carry their current value → else VALUE_NOT_VALID.
pub fn apply_write(old: u64, value: u64, mask: u64, wr_mask: u64) -> MdResult<u64> {
    let writable = wr_mask & mask;
    if writable == 0 {
        return Err(StatusCode::METADATA_FIELD_NOT_WRITABLE);
    }
    let fixed = mask & !wr_mask;
    if (value ^ old) & fixed != 0 {
        return Err(StatusCode::METADATA_FIELD_VALUE_NOT_VALID);
    }
    Ok((old & !writable) | (value & writable))
}

/// A TD-scope or global field: lookup key, masks.
#[derive(Clone, Copy, Debug)]
pub struct SimpleField {
    /// The field id (any size/context bits; compared by lookup key).
    pub id: FieldId,
    /// Readable bits.
    pub rd: u64,
    /// Writable bits.
    pub wr: u64,
}

const fn simple(id: FieldId, rd: u64, wr: u64) -> SimpleField {
    SimpleField { id, rd, wr }
}

/// TD-scope fields (TDG.VM.RD/WR) the model serves (§2.7). Multi-element
/// measurement fields are addressed one element at a time (field code + i).
pub const TD_FIELDS: &[SimpleField] = {
    use tdcall::field::td;
    &[
        simple(td::NUM_VCPUS, 0xFFFF_FFFF, 0),
        simple(td::NUM_L2_VMS, 0xFFFF, 0),
        simple(td::ATTRIBUTES, ALL, 0),
        simple(td::XFAM, ALL, 0),
        simple(td::MAX_VCPUS, 0xFFFF_FFFF, 0),
        simple(td::GPAW, 0xFF, 0),
        simple(td::TSC_FREQUENCY, 0xFFFF, 0),
        simple(td::NOTIFY_ENABLES, ALL, 1),
        simple(td::CONFIG_FLAGS, ALL, 0),
        simple(td::TD_CTLS, ALL, 1),
    ]
};

/// Measurement register fields of TDG.VM.RD: base id and element count (§2.7).
pub const TD_MEASUREMENT_FIELDS: &[(FieldId, u32)] = {
    use tdcall::field::td;
    &[
        (td::MRTD, 6),
        (td::MRCONFIGID, 6),
        (td::MROWNER, 6),
        (td::MROWNERCONFIG, 6),
        (td::SERVTD_HASH, 6),
        (td::TD_UUID, 4),
    ]
};

/// Global fields of TDG.SYS.RD (§1.4) with the model's values.
pub const SYS_FIELDS: &[(FieldId, u64)] = {
    use tdcall::field::sys;
    &[
        (sys::VENDOR_ID, 0x8086),
        (sys::MINOR_VERSION, 5),
        (sys::MAJOR_VERSION, 1),
        (sys::SYS_ATTRIBUTES, 0),
        (sys::NUM_TDX_FEATURES, 1),
        // TDG_VP_RDWR (3) | TD_PARTITIONING (7) | TD_ENTRY_ENHANCEMENTS (9).
        (sys::TDX_FEATURES0, (1 << 3) | (1 << 7) | (1 << 9)),
        (sys::GUEST_L2_GPA_ATTR_MASK, 0x807F),
    ]
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_rule() {
        assert_eq!(
            apply_write(0xF0, 0x0F, 0xFF, 0x0F),
            Err(StatusCode::METADATA_FIELD_VALUE_NOT_VALID)
        );
        assert_eq!(apply_write(0xF0, 0xFF, 0xFF, 0x0F), Ok(0xFF));
        assert_eq!(apply_write(0xF0, 0x05, 0x0F, 0x0F), Ok(0xF5));
        assert_eq!(
            apply_write(0, 1, 0x10, 0x0F),
            Err(StatusCode::METADATA_FIELD_NOT_WRITABLE)
        );
    }

    #[test]
    fn table_is_consistent() {
        // (DEBUGCTL really has a writable bit 13 that L1 cannot read back, §2.5.)
        for (i, a) in VMCS_FIELDS.iter().enumerate() {
            for b in &VMCS_FIELDS[i + 1..] {
                assert_ne!(a.field, b.field, "duplicate");
            }
        }
        for (name, f) in vmcs::ALL {
            assert!(
                vmcs_spec(f.0 as u32).is_some(),
                "{name} missing from the model"
            );
        }
    }
}
