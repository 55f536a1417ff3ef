//! Metadata field identifiers for TDG.VP.RD/WR, TDG.VM.RD/WR and TDG.SYS.RD (§2.4),
//! with the named L2 VMCS fields (§2.5), the per-VM management fields (§2.7) and the
//! TD-scope and global fields L1 reads.
#![forbid(unsafe_code)]

use crate::L2Vm;
use core::fmt;

/// Element size code, field id bits 33:32 (§2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ElementSize {
    /// 8-bit.
    B8 = 0,
    /// 16-bit.
    B16 = 1,
    /// 32-bit.
    B32 = 2,
    /// 64-bit (also natural-width VMCS fields).
    B64 = 3,
}

impl ElementSize {
    /// All-ones mask of this width.
    pub const fn mask(self) -> u64 {
        match self {
            ElementSize::B8 => 0xFF,
            ElementSize::B16 => 0xFFFF,
            ElementSize::B32 => 0xFFFF_FFFF,
            ElementSize::B64 => u64::MAX,
        }
    }

    const fn from_bits(bits: u64) -> ElementSize {
        match bits & 3 {
            0 => ElementSize::B8,
            1 => ElementSize::B16,
            2 => ElementSize::B32,
            _ => ElementSize::B64,
        }
    }
}

/// Context code, field id bits 54:52 (§2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Context {
    /// Platform / global (TDG.SYS.RD).
    Platform = 0,
    /// TD scope (TDG.VM.RD/WR).
    Td = 1,
    /// vCPU scope (TDG.VP.RD/WR).
    Vcpu = 2,
}

/// TDVPS class codes (§2.4).
pub mod class {
    /// Management fields: L2_CTLS, TSC_DEADLINE, VCPU_INDEX, … (§2.4, §2.7).
    pub const MANAGEMENT: u8 = 32;
    /// L2 VMCS of VM 1; VM n is `L2_VMCS_VM1 + 8·(n−1)` (§2.4).
    pub const L2_VMCS_VM1: u8 = 36;
    /// L1-visible L2 MSR bitmap of VM 1; VM n is `+ 8·(n−1)` (§2.4).
    pub const L2_MSR_BITMAP_VM1: u8 = 37;
    /// Stride between the per-VM classes of consecutive L2 VMs (§2.4).
    pub const PER_VM_STRIDE: u8 = 8;
}

/// A 64-bit metadata field identifier (§2.4).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldId(pub u64);

impl FieldId {
    /// Bits that must be zero in a single-element field id: reserved 31:24, last
    /// element 37:34, last field 46:38, reserved 49:47, reserved 55 and 62 (§2.4).
    pub const SINGLE_ELEMENT_MUST_BE_ZERO: u64 =
        (0xFF << 24) | (0xF << 34) | (0x1FF << 38) | (0x7 << 47) | (1 << 55) | (1 << 62);

    /// Builds a single-element field id.
    pub const fn new(
        non_arch: bool,
        class: u8,
        context: Context,
        size: ElementSize,
        code: u32,
    ) -> FieldId {
        FieldId(
            ((non_arch as u64) << 63)
                | (((class & 0x3F) as u64) << 56)
                | ((context as u64) << 52)
                | ((size as u64) << 32)
                | (code & 0xFF_FFFF) as u64,
        )
    }

    /// Field id of an L2 VMCS field of `vm`: class 36/44/52, vCPU context, size
    /// from the VMCS encoding's width (§2.4).
    pub const fn l2_vmcs(vm: L2Vm, field: VmcsField) -> FieldId {
        FieldId::new(
            false,
            class::L2_VMCS_VM1 + class::PER_VM_STRIDE * (vm.index() - 1),
            Context::Vcpu,
            field.element_size(),
            field.0 as u32,
        )
    }

    /// Field id of qword `index` (0..512) of `vm`'s L2 MSR bitmap: class 37/45/53 (§2.4, §2.7).
    pub const fn l2_msr_bitmap(vm: L2Vm, index: u16) -> FieldId {
        FieldId::new(
            false,
            class::L2_MSR_BITMAP_VM1 + class::PER_VM_STRIDE * (vm.index() - 1),
            Context::Vcpu,
            ElementSize::B64,
            index as u32,
        )
    }

    /// L2_CTLS of `vm` (`A020000300000050` + n, §2.7).
    pub const fn l2_ctls(vm: L2Vm) -> FieldId {
        FieldId(vcpu::L2_CTLS_BASE.0 + vm.index() as u64)
    }

    /// TSC_DEADLINE of `vm` (`A020000300000058` + n, §2.7).
    pub const fn tsc_deadline(vm: L2Vm) -> FieldId {
        FieldId(vcpu::TSC_DEADLINE_BASE.0 + vm.index() as u64)
    }

    /// Field code, bits 23:0 (the VMCS encoding for VMCS classes).
    pub const fn code(self) -> u32 {
        (self.0 & 0xFF_FFFF) as u32
    }

    /// Element size code, bits 33:32.
    pub const fn element_size(self) -> ElementSize {
        ElementSize::from_bits(self.0 >> 32)
    }

    /// Context code, bits 54:52 (`None` for the undefined values 3..7).
    pub const fn context(self) -> Option<Context> {
        match (self.0 >> 52) & 7 {
            0 => Some(Context::Platform),
            1 => Some(Context::Td),
            2 => Some(Context::Vcpu),
            _ => None,
        }
    }

    /// Class code, bits 61:56.
    pub const fn class(self) -> u8 {
        ((self.0 >> 56) & 0x3F) as u8
    }

    /// Bit 63, non-architectural.
    pub const fn is_non_arch(self) -> bool {
        self.0 >> 63 != 0
    }

    /// A null field id starts an enumeration: all ones apart from the context code (§2.4).
    pub const fn is_null(self) -> bool {
        (self.0 | (7 << 52)) == u64::MAX
    }

    /// True if the id is usable for single-element access: reserved, last-element and
    /// last-field bits all zero (§2.4).
    pub const fn is_single_element(self) -> bool {
        self.0 & Self::SINGLE_ELEMENT_MUST_BE_ZERO == 0
    }

    /// The same field with the ignored parts (size, inc-size, write-mask-valid,
    /// context) cleared, which is how the module looks fields up (§2.4).
    pub const fn lookup_key(self) -> u64 {
        self.0 & !((3 << 32) | (1 << 50) | (1 << 51) | (7 << 52))
    }

    /// For an L2 VMCS or MSR-bitmap class, the L2 VM it belongs to and whether it is
    /// the MSR bitmap (`true`) or the VMCS (`false`).
    pub const fn l2_vm_class(self) -> Option<(L2Vm, bool)> {
        let c = self.class();
        let (vm, msr) = match c {
            36 => (L2Vm::Vm1, false),
            44 => (L2Vm::Vm2, false),
            52 => (L2Vm::Vm3, false),
            37 => (L2Vm::Vm1, true),
            45 => (L2Vm::Vm2, true),
            53 => (L2Vm::Vm3, true),
            _ => return None,
        };
        if self.is_non_arch() {
            None
        } else {
            Some((vm, msr))
        }
    }
}

impl fmt::Debug for FieldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FieldId({:016X})", self.0)
    }
}

/// TD-scope fields L1 reads with TDG.VM.RD (§2.7).
pub mod td {
    use super::FieldId;
    /// NUM_VCPUS (§2.7).
    pub const NUM_VCPUS: FieldId = FieldId(0x9010_0002_0000_0001);
    /// NUM_L2_VMS (§2.1, §2.7).
    pub const NUM_L2_VMS: FieldId = FieldId(0x9010_0001_0000_0005);
    /// TD_UUID, 4 elements (§2.7).
    pub const TD_UUID: FieldId = FieldId(0x8010_0003_0000_0020);
    /// ATTRIBUTES (§2.7).
    pub const ATTRIBUTES: FieldId = FieldId(0x1110_0003_0000_0000);
    /// XFAM (§2.7).
    pub const XFAM: FieldId = FieldId(0x1110_0003_0000_0001);
    /// MAX_VCPUS (§2.7).
    pub const MAX_VCPUS: FieldId = FieldId(0x1110_0002_0000_0002);
    /// GPAW: 0 = 48-bit, 1 = 52-bit (§2.7).
    pub const GPAW: FieldId = FieldId(0x1110_0000_0000_0003);
    /// TSC_FREQUENCY in units of 25 MHz (§2.7).
    pub const TSC_FREQUENCY: FieldId = FieldId(0x1110_0001_0000_000C);
    /// NOTIFY_ENABLES, writable bit 0 (§2.7).
    pub const NOTIFY_ENABLES: FieldId = FieldId(0x9110_0003_0000_0010);
    /// CONFIG_FLAGS (§2.7).
    pub const CONFIG_FLAGS: FieldId = FieldId(0x1110_0003_0000_0016);
    /// TD_CTLS, writable bit 0 PENDING_VE_DISABLE (§2.7).
    pub const TD_CTLS: FieldId = FieldId(0x1110_0003_0000_0017);
    /// MRTD, 6 × 8 bytes (§2.7).
    pub const MRTD: FieldId = FieldId(0x1310_0003_0000_0000);
    /// MRCONFIGID (§2.7).
    pub const MRCONFIGID: FieldId = FieldId(0x1310_0003_0000_0010);
    /// MROWNER (§2.7).
    pub const MROWNER: FieldId = FieldId(0x1310_0003_0000_0018);
    /// MROWNERCONFIG (§2.7).
    pub const MROWNERCONFIG: FieldId = FieldId(0x1310_0003_0000_0020);
    /// SERVTD_HASH (§2.7).
    pub const SERVTD_HASH: FieldId = FieldId(0x9910_0003_0000_0000);
}

/// vCPU-scope management fields (class 32) of §2.7.
pub mod vcpu {
    use super::FieldId;
    /// VCPU_INDEX (§2.7).
    pub const VCPU_INDEX: FieldId = FieldId(0xA020_0002_0000_0002);
    /// CPUID_SUPERVISOR_VE (§2.7).
    pub const CPUID_SUPERVISOR_VE: FieldId = FieldId(0xA020_0000_0000_0007);
    /// CPUID_USER_VE (§2.7).
    pub const CPUID_USER_VE: FieldId = FieldId(0xA020_0000_0000_0008);
    /// L2_CTLS[0]; VM n is `+ n` (§2.7).
    pub const L2_CTLS_BASE: FieldId = FieldId(0xA020_0003_0000_0050);
    /// TSC_DEADLINE[0]; VM n is `+ n` (§2.7).
    pub const TSC_DEADLINE_BASE: FieldId = FieldId(0xA020_0003_0000_0058);
}

/// Global fields a TD guest may read with TDG.SYS.RD (§1.4).
pub mod sys {
    use super::FieldId;
    /// VENDOR_ID (§1.4).
    pub const VENDOR_ID: FieldId = FieldId(0x0800_0002_0000_0000);
    /// MINOR_VERSION (§1.4).
    pub const MINOR_VERSION: FieldId = FieldId(0x0800_0001_0000_0003);
    /// MAJOR_VERSION (§1.4).
    pub const MAJOR_VERSION: FieldId = FieldId(0x0800_0001_0000_0004);
    /// SYS_ATTRIBUTES (§1.4).
    pub const SYS_ATTRIBUTES: FieldId = FieldId(0x0A00_0002_0000_0000);
    /// NUM_TDX_FEATURES (§1.4).
    pub const NUM_TDX_FEATURES: FieldId = FieldId(0x0A00_0000_0000_0001);
    /// TDX_FEATURES0; bit 7 = TD partitioning (§1.4).
    pub const TDX_FEATURES0: FieldId = FieldId(0x0A00_0003_0000_0008);
    /// GUEST_L2_GPA_ATTR_MASK, `0x807F` in 1.5.01 (§1.4, §3.2).
    pub const GUEST_L2_GPA_ATTR_MASK: FieldId = FieldId(0xA200_0001_0000_0000);
}

/// TDX_FEATURES0 bit 7: TD partitioning is supported (§1.4).
pub const TDX_FEATURES0_TD_PARTITIONING: u64 = 1 << 7;

bitflags::bitflags! {
    /// L2_CTLS per-VM bits (§2.7).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct L2Ctls: u64 {
        /// L2 may use the host's shared EPT for shared GPAs.
        const ENABLE_SHARED_EPTP = 1 << 0;
        /// L2 TDG.VP.VMCALL goes straight to the host.
        const ENABLE_TDVMCALL = 1 << 1;
        /// Defined; not reported as allowed by 1.5.01.
        const ENABLE_EXTENDED_VE = 1 << 2;
    }
}

/// A VMX VMCS field encoding (Intel SDM Vol. 3 appendix B; §2.5 lists L1's access).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VmcsField(pub u16);

/// Width of a VMCS field, encoding bits 14:13 (Intel SDM Vol. 3 §25.11.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmcsWidth {
    /// 16-bit.
    W16,
    /// 64-bit.
    W64,
    /// 32-bit.
    W32,
    /// Natural width (64 bits in a 64-bit TD).
    Natural,
}

impl VmcsField {
    /// The field's width, from encoding bits 14:13.
    pub const fn width(self) -> VmcsWidth {
        match (self.0 >> 13) & 3 {
            0 => VmcsWidth::W16,
            1 => VmcsWidth::W64,
            2 => VmcsWidth::W32,
            _ => VmcsWidth::Natural,
        }
    }

    /// The metadata element size of this field: 16, 32, or 64 for 64-bit and natural (§2.4).
    pub const fn element_size(self) -> ElementSize {
        match self.width() {
            VmcsWidth::W16 => ElementSize::B16,
            VmcsWidth::W32 => ElementSize::B32,
            VmcsWidth::W64 | VmcsWidth::Natural => ElementSize::B64,
        }
    }

    /// Bit 0 selects the high half of a 64-bit field; the module rejects it (§2.4).
    pub const fn is_high_access(self) -> bool {
        self.0 & 1 != 0
    }
}

/// Named L2 VMCS fields (§2.5 table). Encodings follow the Intel SDM.
pub mod vmcs {
    use super::VmcsField;
    macro_rules! fields {
        ($($(#[$doc:meta])* $name:ident = $enc:expr;)*) => {
            $($(#[$doc])* pub const $name: VmcsField = VmcsField($enc);)*
            /// Every field named in this module, for tables and tests.
            pub const ALL: &[(&str, VmcsField)] = &[$((stringify!($name), $name)),*];
        };
    }
    fields! {
        /// VPID (§2.5: no L1 access).
        VPID = 0x0000;
        /// Posted-interrupt notification vector (§2.5).
        POSTED_INTR_NV = 0x0002;
        /// EPTP index (§2.5).
        EPTP_INDEX = 0x0004;
        /// HLAT prefix size (§2.5).
        HLAT_PREFIX_SIZE = 0x0006;
        /// Guest ES selector (§2.5).
        GUEST_ES_SELECTOR = 0x0800;
        /// Guest CS selector (§2.5).
        GUEST_CS_SELECTOR = 0x0802;
        /// Guest SS selector (§2.5).
        GUEST_SS_SELECTOR = 0x0804;
        /// Guest DS selector (§2.5).
        GUEST_DS_SELECTOR = 0x0806;
        /// Guest FS selector (§2.5).
        GUEST_FS_SELECTOR = 0x0808;
        /// Guest GS selector (§2.5).
        GUEST_GS_SELECTOR = 0x080A;
        /// Guest LDTR selector (§2.5).
        GUEST_LDTR_SELECTOR = 0x080C;
        /// Guest TR selector (§2.5).
        GUEST_TR_SELECTOR = 0x080E;
        /// Guest interrupt status (§2.5; use the ENTER buffer instead).
        GUEST_INTR_STATUS = 0x0810;
        /// PML index (§2.5).
        PML_INDEX = 0x0812;
        /// Guest UINV (§2.5).
        GUEST_UINV = 0x0814;
        /// I/O bitmap A (§2.5).
        IO_BITMAP_A = 0x2000;
        /// I/O bitmap B (§2.5).
        IO_BITMAP_B = 0x2002;
        /// MSR-bitmap address (§2.5: use class 37/45/53).
        MSR_BITMAP = 0x2004;
        /// TSC offset (§2.5).
        TSC_OFFSET = 0x2010;
        /// Virtual-APIC page address: mandatory before the first TDG.VP.ENTER (§2.2, §2.5).
        VIRTUAL_APIC_PAGE_ADDR = 0x2012;
        /// APIC-access address (§2.5).
        APIC_ACCESS_ADDR = 0x2014;
        /// Posted-interrupt descriptor address (§2.5).
        POSTED_INTR_DESC_ADDR = 0x2016;
        /// VM-function controls (§2.5).
        VM_FUNCTION_CONTROLS = 0x2018;
        /// EPT pointer; L1 may toggle only bit 7 (§2.5).
        EPT_POINTER = 0x201A;
        /// EOI-exit bitmap 0 (§2.5).
        EOI_EXIT_BITMAP0 = 0x201C;
        /// EOI-exit bitmap 1 (§2.5).
        EOI_EXIT_BITMAP1 = 0x201E;
        /// EOI-exit bitmap 2 (§2.5).
        EOI_EXIT_BITMAP2 = 0x2020;
        /// EOI-exit bitmap 3 (§2.5).
        EOI_EXIT_BITMAP3 = 0x2022;
        /// #VE information address (§2.5).
        VE_INFO_ADDR = 0x202A;
        /// XSS-exiting bitmap (§2.5).
        XSS_EXIT_BITMAP = 0x202C;
        /// ENCLS-exiting bitmap (§2.5).
        ENCLS_EXITING_BITMAP = 0x202E;
        /// TSC multiplier (§2.5).
        TSC_MULTIPLIER = 0x2032;
        /// Tertiary processor-based controls (§2.5).
        TERTIARY_PROC_BASED_CTLS = 0x2034;
        /// ENCLV-exiting bitmap (§2.5).
        ENCLV_EXITING_BITMAP = 0x2036;
        /// Shared EPTP (§2.5).
        SHARED_EPTP = 0x203C;
        /// HLAT pointer (§2.5).
        HLAT_POINTER = 0x2040;
        /// Guest-physical address of the last exit (§2.5).
        GUEST_PHYSICAL_ADDRESS = 0x2400;
        /// VMCS link pointer (§2.5).
        VMCS_LINK_POINTER = 0x2800;
        /// Guest IA32_DEBUGCTL (§2.5).
        GUEST_IA32_DEBUGCTL = 0x2802;
        /// Guest IA32_PAT (§2.5).
        GUEST_IA32_PAT = 0x2804;
        /// Guest IA32_EFER; L1 may write SCE, LME, LMA (§2.5).
        GUEST_IA32_EFER = 0x2806;
        /// Guest IA32_PERF_GLOBAL_CTRL (§2.5).
        GUEST_IA32_PERF_GLOBAL_CTRL = 0x2808;
        /// Guest PDPTE0 (§2.5).
        GUEST_PDPTE0 = 0x280A;
        /// Guest PDPTE1 (§2.5).
        GUEST_PDPTE1 = 0x280C;
        /// Guest PDPTE2 (§2.5).
        GUEST_PDPTE2 = 0x280E;
        /// Guest PDPTE3 (§2.5).
        GUEST_PDPTE3 = 0x2810;
        /// Guest IA32_RTIT_CTL (§2.5).
        GUEST_IA32_RTIT_CTL = 0x2814;
        /// Guest IA32_LBR_CTL (§2.5).
        GUEST_IA32_LBR_CTL = 0x2816;
        /// Guest IA32_PKRS (§2.5).
        GUEST_IA32_PKRS = 0x2818;
        /// Pin-based controls (§2.5: read-only for L1).
        PIN_BASED_CTLS = 0x4000;
        /// Primary processor-based controls (§2.5).
        PROC_BASED_CTLS = 0x4002;
        /// Exception bitmap (§2.5).
        EXCEPTION_BITMAP = 0x4004;
        /// #PF error-code mask (§2.5).
        PAGE_FAULT_ERROR_CODE_MASK = 0x4006;
        /// #PF error-code match (§2.5).
        PAGE_FAULT_ERROR_CODE_MATCH = 0x4008;
        /// CR3-target count (§2.5).
        CR3_TARGET_COUNT = 0x400A;
        /// VM-exit controls (§2.5).
        VM_EXIT_CONTROLS = 0x400C;
        /// VM-entry controls; L1 may write bit 9 only (§2.5).
        VM_ENTRY_CONTROLS = 0x4012;
        /// VM-entry interruption information (§2.5).
        VM_ENTRY_INTR_INFO = 0x4016;
        /// VM-entry exception error code (§2.5).
        VM_ENTRY_EXCEPTION_ERROR_CODE = 0x4018;
        /// VM-entry instruction length (§2.5).
        VM_ENTRY_INSTRUCTION_LEN = 0x401A;
        /// TPR threshold (§2.5).
        TPR_THRESHOLD = 0x401C;
        /// Secondary processor-based controls (§2.5).
        SECONDARY_PROC_BASED_CTLS = 0x401E;
        /// PLE gap (§2.5).
        PLE_GAP = 0x4020;
        /// PLE window (§2.5).
        PLE_WINDOW = 0x4022;
        /// Instruction-timeout control (§2.5).
        INSTRUCTION_TIMEOUT_CONTROL = 0x4024;
        /// VM-instruction error (§2.5).
        VM_INSTRUCTION_ERROR = 0x4400;
        /// Exit reason (§2.5).
        EXIT_REASON = 0x4402;
        /// VM-exit interruption information (§2.5).
        VM_EXIT_INTR_INFO = 0x4404;
        /// VM-exit interruption error code (§2.5).
        VM_EXIT_INTR_ERROR_CODE = 0x4406;
        /// IDT-vectoring information (§2.5).
        IDT_VECTORING_INFO = 0x4408;
        /// IDT-vectoring error code (§2.5).
        IDT_VECTORING_ERROR_CODE = 0x440A;
        /// VM-exit instruction length (§2.5).
        VM_EXIT_INSTRUCTION_LEN = 0x440C;
        /// VM-exit instruction information (§2.5).
        VM_EXIT_INSTRUCTION_INFO = 0x440E;
        /// Guest ES limit (§2.5).
        GUEST_ES_LIMIT = 0x4800;
        /// Guest CS limit (§2.5).
        GUEST_CS_LIMIT = 0x4802;
        /// Guest SS limit (§2.5).
        GUEST_SS_LIMIT = 0x4804;
        /// Guest DS limit (§2.5).
        GUEST_DS_LIMIT = 0x4806;
        /// Guest FS limit (§2.5).
        GUEST_FS_LIMIT = 0x4808;
        /// Guest GS limit (§2.5).
        GUEST_GS_LIMIT = 0x480A;
        /// Guest LDTR limit (§2.5).
        GUEST_LDTR_LIMIT = 0x480C;
        /// Guest TR limit (§2.5).
        GUEST_TR_LIMIT = 0x480E;
        /// Guest GDTR limit (§2.5).
        GUEST_GDTR_LIMIT = 0x4810;
        /// Guest IDTR limit (§2.5).
        GUEST_IDTR_LIMIT = 0x4812;
        /// Guest ES access rights (§2.5).
        GUEST_ES_AR = 0x4814;
        /// Guest CS access rights (§2.5).
        GUEST_CS_AR = 0x4816;
        /// Guest SS access rights (§2.5).
        GUEST_SS_AR = 0x4818;
        /// Guest DS access rights (§2.5).
        GUEST_DS_AR = 0x481A;
        /// Guest FS access rights (§2.5).
        GUEST_FS_AR = 0x481C;
        /// Guest GS access rights (§2.5).
        GUEST_GS_AR = 0x481E;
        /// Guest LDTR access rights (§2.5).
        GUEST_LDTR_AR = 0x4820;
        /// Guest TR access rights (§2.5).
        GUEST_TR_AR = 0x4822;
        /// Guest interruptibility state (§2.5).
        GUEST_INTERRUPTIBILITY = 0x4824;
        /// Guest activity state (§2.5: read-only for L1).
        GUEST_ACTIVITY_STATE = 0x4826;
        /// Guest SMBASE (§2.5).
        GUEST_SMBASE = 0x4828;
        /// Guest IA32_SYSENTER_CS (§2.5).
        GUEST_SYSENTER_CS = 0x482A;
        /// VMX-preemption timer value (§2.5).
        VMX_PREEMPTION_TIMER = 0x482E;
        /// CR0 guest/host mask (§2.5, §2.6).
        CR0_GUEST_HOST_MASK = 0x6000;
        /// CR4 guest/host mask (§2.5, §2.6).
        CR4_GUEST_HOST_MASK = 0x6002;
        /// CR0 read shadow (§2.5, §2.6).
        CR0_READ_SHADOW = 0x6004;
        /// CR4 read shadow (§2.5, §2.6).
        CR4_READ_SHADOW = 0x6006;
        /// CR3-target value 0 (§2.5).
        CR3_TARGET_VALUE0 = 0x6008;
        /// CR3-target value 1 (§2.5).
        CR3_TARGET_VALUE1 = 0x600A;
        /// CR3-target value 2 (§2.5).
        CR3_TARGET_VALUE2 = 0x600C;
        /// CR3-target value 3 (§2.5).
        CR3_TARGET_VALUE3 = 0x600E;
        /// Exit qualification (§2.5).
        EXIT_QUALIFICATION = 0x6400;
        /// I/O RCX (§2.5).
        IO_RCX = 0x6402;
        /// I/O RSI (§2.5).
        IO_RSI = 0x6404;
        /// I/O RDI (§2.5).
        IO_RDI = 0x6406;
        /// I/O RIP (§2.5).
        IO_RIP = 0x6408;
        /// Guest-linear address (§2.5).
        GUEST_LINEAR_ADDRESS = 0x640A;
        /// Guest CR0 (§2.5, §2.6).
        GUEST_CR0 = 0x6800;
        /// Guest CR3 (§2.5).
        GUEST_CR3 = 0x6802;
        /// Guest CR4 (§2.5, §2.6).
        GUEST_CR4 = 0x6804;
        /// Guest ES base (§2.5).
        GUEST_ES_BASE = 0x6806;
        /// Guest CS base (§2.5).
        GUEST_CS_BASE = 0x6808;
        /// Guest SS base (§2.5).
        GUEST_SS_BASE = 0x680A;
        /// Guest DS base (§2.5).
        GUEST_DS_BASE = 0x680C;
        /// Guest FS base (§2.5).
        GUEST_FS_BASE = 0x680E;
        /// Guest GS base (§2.5).
        GUEST_GS_BASE = 0x6810;
        /// Guest LDTR base (§2.5).
        GUEST_LDTR_BASE = 0x6812;
        /// Guest TR base (§2.5).
        GUEST_TR_BASE = 0x6814;
        /// Guest GDTR base (§2.5).
        GUEST_GDTR_BASE = 0x6816;
        /// Guest IDTR base (§2.5).
        GUEST_IDTR_BASE = 0x6818;
        /// Guest DR7 (§2.5).
        GUEST_DR7 = 0x681A;
        /// Guest RSP (§2.5: overwritten from the ENTER buffer).
        GUEST_RSP = 0x681C;
        /// Guest RIP (§2.5: overwritten from the ENTER buffer).
        GUEST_RIP = 0x681E;
        /// Guest RFLAGS (§2.5: overwritten from the ENTER buffer).
        GUEST_RFLAGS = 0x6820;
        /// Guest pending debug exceptions (§2.5).
        GUEST_PENDING_DBG_EXCEPTIONS = 0x6822;
        /// Guest IA32_SYSENTER_ESP (§2.5).
        GUEST_SYSENTER_ESP = 0x6824;
        /// Guest IA32_SYSENTER_EIP (§2.5).
        GUEST_SYSENTER_EIP = 0x6826;
        /// Guest IA32_S_CET (§2.5).
        GUEST_S_CET = 0x6828;
        /// Guest SSP (§2.5: overwritten from the ENTER buffer).
        GUEST_SSP = 0x682A;
        /// Guest interrupt-SSP-table address (§2.5).
        GUEST_INTR_SSP_TABLE_ADDR = 0x682C;
    }
}

/// L1 write masks and L2 initial values of the control fields (§2.5), TDX module 1.5.01.
/// Other module builds differ (§7): read the virtual VMX capability MSRs at run time.
pub mod controls {
    /// PROC_BASED_CTLS bits L1 may write (§2.5).
    pub const PROC_BASED_L1_WR_MASK: u64 = 0x48D9_9A04;
    /// SECONDARY_PROC_BASED_CTLS bits L1 may write (§2.5).
    pub const SECONDARY_L1_WR_MASK: u64 = 0x0C51_3E0C;
    /// EXCEPTION_BITMAP bits L1 may write: all but #MC (§2.5).
    pub const EXCEPTION_BITMAP_L1_WR_MASK: u64 = 0xFFFB_FFFF;
    /// VM_ENTRY_CONTROLS bits L1 may write: bit 9 IA-32e mode guest (§2.5).
    pub const VM_ENTRY_L1_WR_MASK: u64 = 0x200;
    /// TERTIARY_PROC_BASED_CTLS bits L1 may write (§2.5).
    pub const TERTIARY_L1_WR_MASK: u64 = 0xE;
    /// GUEST_CR0 bits L1 may write: PE, MP, EM, TS, ET, WP, AM, PG (§2.5).
    pub const GUEST_CR0_L1_WR_MASK: u64 = 0x8005_001F;
    /// GUEST_CR4 bits L1 may write: all but MCE, VMXE, SMXE, bit 15 (§2.5).
    pub const GUEST_CR4_L1_WR_MASK: u64 = 0x03FF_1FBF;
    /// GUEST_IA32_EFER bits L1 may write: SCE, LME, LMA (§2.5).
    pub const GUEST_EFER_L1_WR_MASK: u64 = 0x501;
    /// GUEST_IA32_DEBUGCTL bits L1 may write (§2.5).
    pub const GUEST_DEBUGCTL_L1_WR_MASK: u64 = 0xFFC7;
    /// Virtual-APIC page address bits L1 may write (§2.5).
    pub const VIRTUAL_APIC_L1_WR_MASK: u64 = 0xFFFF_FFFF_FFFF_F000;
    /// EPTP bits L1 may write: bit 7 supervisor shadow-stack control (§2.5).
    pub const EPTP_L1_WR_MASK: u64 = 0x80;
    /// EPTP bits L1 may read (§2.5).
    pub const EPTP_L1_RD_MASK: u64 = 0xFFF0_0000_0000_0FFF;
    /// HLAT pointer bits L1 may write (§2.5).
    pub const HLAT_POINTER_L1_WR_MASK: u64 = 0xF_FFFF_FFFF_F018;
    /// Primary controls initial L2 value (§2.5), before per-TD adjustments.
    pub const PROC_BASED_L2_INIT: u64 = 0x9122_0088;
    /// Secondary controls initial L2 value (§2.5).
    pub const SECONDARY_L2_INIT: u64 = 0x1338_B3FA;
    /// Primary control bit 31: activate secondary controls.
    pub const PROC_ACTIVATE_SECONDARY: u64 = 1 << 31;
    /// Primary control bit 7: HLT exiting (fixed 1 for L2).
    pub const PROC_HLT_EXITING: u64 = 1 << 7;
    /// Primary control bit 24: unconditional I/O exiting (fixed 1 for L2).
    pub const PROC_UNCOND_IO_EXITING: u64 = 1 << 24;
    /// Primary control bit 28: use MSR bitmaps (fixed 1 for L2).
    pub const PROC_USE_MSR_BITMAPS: u64 = 1 << 28;
    /// Primary control bit 15: CR3-load exiting.
    pub const PROC_CR3_LOAD_EXITING: u64 = 1 << 15;
    /// Primary control bit 2: interrupt-window exiting (exit reason 7, §2.8).
    pub const PROC_INTERRUPT_WINDOW_EXITING: u64 = 1 << 2;
    /// Guest interruptibility state bit 0: blocking by STI.
    pub const INTERRUPTIBILITY_STI: u64 = 1 << 0;
    /// Guest interruptibility state bit 1: blocking by MOV SS / POP SS.
    pub const INTERRUPTIBILITY_MOV_SS: u64 = 1 << 1;
    /// Secondary control bit 2: descriptor-table exiting (GDTR/IDTR/LDTR/TR).
    pub const SECONDARY_DESC_TABLE_EXITING: u64 = 1 << 2;
    /// Secondary control bit 22: mode-based execute control for EPT (MBEC, §3.2).
    pub const SECONDARY_MBEC: u64 = 1 << 22;
    /// VM-entry control bit 9: IA-32e mode guest.
    pub const ENTRY_IA32E_MODE: u64 = 1 << 9;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vapic_field_id_vm1() {
        // Class 36, vCPU context, 64-bit size, VMCS encoding 0x2012 (§2.4, §2.5).
        let id = FieldId::l2_vmcs(L2Vm::Vm1, vmcs::VIRTUAL_APIC_PAGE_ADDR);
        assert_eq!(id.0, 0x2420_0003_0000_2012);
        assert_eq!(id.class(), 36);
        assert_eq!(id.context(), Some(Context::Vcpu));
        assert_eq!(id.element_size(), ElementSize::B64);
        assert!(id.is_single_element());
    }

    #[test]
    fn reference_table_examples() {
        // §2.4 example table, all three VMs.
        let cases = [
            (
                vmcs::GUEST_CR0,
                [
                    0x2420_0003_0000_6800u64,
                    0x2C20_0003_0000_6800,
                    0x3420_0003_0000_6800,
                ],
            ),
            (
                vmcs::PROC_BASED_CTLS,
                [
                    0x2420_0002_0000_4002,
                    0x2C20_0002_0000_4002,
                    0x3420_0002_0000_4002,
                ],
            ),
            (
                vmcs::GUEST_CS_SELECTOR,
                [
                    0x2420_0001_0000_0802,
                    0x2C20_0001_0000_0802,
                    0x3420_0001_0000_0802,
                ],
            ),
        ];
        for (field, ids) in cases {
            for (vm, id) in L2Vm::ALL.iter().zip(ids) {
                assert_eq!(FieldId::l2_vmcs(*vm, field).0, id, "{field:?} {vm:?}");
            }
        }
        assert_eq!(
            FieldId::l2_msr_bitmap(L2Vm::Vm1, 0).0,
            0x2520_0003_0000_0000
        );
        assert_eq!(
            FieldId::l2_msr_bitmap(L2Vm::Vm2, 0).0,
            0x2D20_0003_0000_0000
        );
        assert_eq!(
            FieldId::l2_msr_bitmap(L2Vm::Vm3, 0x182).0,
            0x3520_0003_0000_0182
        );
    }

    #[test]
    fn management_fields() {
        assert_eq!(FieldId::l2_ctls(L2Vm::Vm1).0, 0xA020_0003_0000_0051);
        assert_eq!(FieldId::l2_ctls(L2Vm::Vm3).0, 0xA020_0003_0000_0053);
        assert_eq!(FieldId::tsc_deadline(L2Vm::Vm1).0, 0xA020_0003_0000_0059);
        assert_eq!(vcpu::L2_CTLS_BASE.class(), class::MANAGEMENT);
        assert!(vcpu::L2_CTLS_BASE.is_non_arch());
        assert_eq!(td::NUM_L2_VMS.class(), 16);
        assert_eq!(td::NUM_L2_VMS.context(), Some(Context::Td));
        assert_eq!(sys::GUEST_L2_GPA_ATTR_MASK.class(), 34);
    }

    #[test]
    fn widths_from_encoding() {
        assert_eq!(vmcs::GUEST_CS_SELECTOR.width(), VmcsWidth::W16);
        assert_eq!(vmcs::VIRTUAL_APIC_PAGE_ADDR.width(), VmcsWidth::W64);
        assert_eq!(vmcs::PROC_BASED_CTLS.width(), VmcsWidth::W32);
        assert_eq!(vmcs::GUEST_CR0.width(), VmcsWidth::Natural);
        for (name, f) in vmcs::ALL {
            assert!(!f.is_high_access(), "{name} must use the full access type");
        }
    }

    #[test]
    fn single_element_and_null() {
        assert!(FieldId(u64::MAX).is_null());
        assert!(FieldId(!(7 << 52)).is_null());
        assert!(!FieldId(0x2420_0003_0000_2012 | (1 << 34)).is_single_element());
        assert!(!FieldId(0x2420_0003_0100_2012).is_single_element());
        // Size and context do not change the lookup key.
        assert_eq!(
            FieldId(0x9100_0000_0000_0010).lookup_key(),
            td::NOTIFY_ENABLES.lookup_key()
        );
        assert_eq!(
            FieldId::l2_vmcs(L2Vm::Vm2, vmcs::GUEST_CR4).l2_vm_class(),
            Some((L2Vm::Vm2, false))
        );
    }
}
