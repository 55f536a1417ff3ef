//! One-time set-up of an L2 VM on this vCPU through TDG.VP.WR (§2.2, §2.5–§2.7,
//! §5.8 step 5).
//!
//! [`setup_l2_vm`] programs, in order: the virtual-APIC page (mandatory before
//! the first TDG.VP.ENTER, §2.2 check 3), the processor-based controls (only bits
//! inside the 1.5.01 L1 write masks of [`tdcall::field::controls`]), the exception
//! bitmap, the CR0/CR4 guest/host masks and read shadows (§2.6), optionally a
//! 64-bit initial state, L2_CTLS (§2.7) and the L2 MSR bitmap (§2.7). Every
//! write is checked; a failure names the field. It returns the [`Vcpu`] that
//! runs the VM. RIP, RSP and RFLAGS go in the TDG.VP.ENTER buffer, never the
//! VMCS (§2.2).

use alloc::vec::Vec;
use core::fmt;

use tdcall::field::{controls, vmcs, FieldId, L2Ctls, VmcsField};
use tdcall::{L2EnterGuestState, L2Vm, Tdcall};

use crate::field::{self, FieldAccessError};
use crate::msr_bitmap::MsrBitmap;
use crate::vcpu::{MmioRange, Vcpu};

/// CR0.PE.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.MP.
pub const CR0_MP: u64 = 1 << 1;
/// CR0.TS.
pub const CR0_TS: u64 = 1 << 3;
/// CR0.ET.
pub const CR0_ET: u64 = 1 << 4;
/// CR0.NE (module-owned, always 1, §2.6).
pub const CR0_NE: u64 = 1 << 5;
/// CR0.WP.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.NW.
pub const CR0_NW: u64 = 1 << 29;
/// CR0.CD.
pub const CR0_CD: u64 = 1 << 30;
/// CR0.PG.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE.
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.MCE (not L1-writable in GUEST_CR4, §2.5).
pub const CR4_MCE: u64 = 1 << 6;
/// CR4.PGE.
pub const CR4_PGE: u64 = 1 << 7;
/// CR4.OSFXSR.
pub const CR4_OSFXSR: u64 = 1 << 9;
/// CR4.OSXMMEXCPT.
pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
/// CR4.VMXE (module-owned; L1 hides it with mask bit set and shadow 0, §2.6).
pub const CR4_VMXE: u64 = 1 << 13;
/// CR4.SMXE.
pub const CR4_SMXE: u64 = 1 << 14;
/// EFER.SCE.
pub const EFER_SCE: u64 = 1 << 0;
/// EFER.LME.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA.
pub const EFER_LMA: u64 = 1 << 10;
/// RFLAGS.IF.
pub const RFLAGS_IF: u64 = 1 << 9;
/// RFLAGS bit 1, always 1.
pub const RFLAGS_FIXED: u64 = 1 << 1;

/// Access rights of a 64-bit code segment: present, DPL 0, code exec/read, accessed, L.
pub const AR_CODE64: u32 = 0xA09B;
/// Access rights of a flat data segment: present, DPL 0, read/write, accessed, D/B, G.
pub const AR_DATA: u32 = 0xC093;
/// Access rights of a busy 64-bit TSS.
pub const AR_TSS_BUSY: u32 = 0x8B;
/// Access rights of an unusable segment (bit 16).
pub const AR_UNUSABLE: u32 = 0x1_0000;

/// A segment register's hidden and visible parts, as the VMCS holds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Base.
    pub base: u64,
    /// Limit.
    pub limit: u32,
    /// VMX access-rights format (type, S, DPL, P, AVL, L, D/B, G, unusable bit 16).
    pub access_rights: u32,
}

impl Segment {
    /// A flat 64-bit code segment.
    pub const fn code64(selector: u16) -> Self {
        Segment {
            selector,
            base: 0,
            limit: 0xFFFF_FFFF,
            access_rights: AR_CODE64,
        }
    }

    /// A flat data segment.
    pub const fn data(selector: u16) -> Self {
        Segment {
            selector,
            base: 0,
            limit: 0xFFFF_FFFF,
            access_rights: AR_DATA,
        }
    }

    /// An unusable segment (AR bit 16).
    pub const fn unusable() -> Self {
        Segment {
            selector: 0,
            base: 0,
            limit: 0,
            access_rights: AR_UNUSABLE,
        }
    }
}

/// GDTR or IDTR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DescriptorTable {
    /// Linear base.
    pub base: u64,
    /// Limit.
    pub limit: u16,
}

/// A 64-bit initial L2 state.
///
/// `cr0` and `cr4` are the values the guest should see. Only bits inside
/// [`controls::GUEST_CR0_L1_WR_MASK`] / [`controls::GUEST_CR4_L1_WR_MASK`] are
/// written to GUEST_CR0/CR4; NE, MCE and VMXE are module-owned (§2.5, §2.6) and
/// keep their reset value, and what the guest reads for them follows the read
/// shadows (see [`L2VmConfig::cr4_guest_host_mask`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitialState {
    /// CR0 (e.g. PE|MP|ET|NE|WP|PG).
    pub cr0: u64,
    /// CR3: the L2 page-table root.
    pub cr3: u64,
    /// CR4 (e.g. PAE|PGE|OSFXSR|OSXMMEXCPT).
    pub cr4: u64,
    /// EFER; only SCE, LME and LMA are L1-writable (mask 0x501).
    pub efer: u64,
    /// Sets VM-entry control bit 9 (IA-32e mode guest).
    pub long_mode: bool,
    /// CS.
    pub cs: Segment,
    /// SS.
    pub ss: Segment,
    /// DS.
    pub ds: Segment,
    /// ES.
    pub es: Segment,
    /// FS.
    pub fs: Segment,
    /// GS.
    pub gs: Segment,
    /// TR (a usable busy TSS is required by VM entry).
    pub tr: Segment,
    /// LDTR (usually unusable).
    pub ldtr: Segment,
    /// GDTR.
    pub gdtr: DescriptorTable,
    /// IDTR.
    pub idtr: DescriptorTable,
    /// Entry RIP (goes in the ENTER buffer, §2.2).
    pub rip: u64,
    /// Entry RSP (ENTER buffer).
    pub rsp: u64,
    /// Entry RFLAGS (ENTER buffer); bit 1 is forced on.
    pub rflags: u64,
}

impl InitialState {
    /// A flat 64-bit kernel state: CS 0x08, data 0x10, TR 0x18, paging with
    /// PAE, EFER LME|LMA|SCE, interrupts disabled.
    pub const fn long_mode(
        cr3: u64,
        gdtr: DescriptorTable,
        idtr: DescriptorTable,
        rip: u64,
        rsp: u64,
    ) -> Self {
        InitialState {
            cr0: CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG,
            cr3,
            cr4: CR4_PAE | CR4_PGE | CR4_OSFXSR | CR4_OSXMMEXCPT,
            efer: EFER_SCE | EFER_LME | EFER_LMA,
            long_mode: true,
            cs: Segment::code64(0x08),
            ss: Segment::data(0x10),
            ds: Segment::data(0x10),
            es: Segment::data(0x10),
            fs: Segment::data(0x10),
            gs: Segment::data(0x10),
            tr: Segment {
                selector: 0x18,
                base: 0,
                limit: 0x67,
                access_rights: AR_TSS_BUSY,
            },
            ldtr: Segment::unusable(),
            gdtr,
            idtr,
            rip,
            rsp,
            rflags: RFLAGS_FIXED,
        }
    }
}

/// An MSR that L2 accesses without exiting to L1 (its L2 MSR-bitmap bits clear).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrPassthrough {
    /// MSR index (0..0x1FFF or 0xC000_0000..0xC000_1FFF).
    pub msr: u32,
    /// Reads do not exit.
    pub read: bool,
    /// Writes do not exit.
    pub write: bool,
}

/// Everything [`setup_l2_vm`] programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L2VmConfig {
    /// The L2 VM.
    pub vm: L2Vm,
    /// Private, 4 KiB aligned GPA of this vCPU's virtual-APIC page for `vm` (§2.2, §2.8).
    pub vapic_gpa: u64,
    /// Private, 256-byte aligned GPA of the TDG.VP.ENTER guest-state buffer (§2.2).
    pub guest_state_gpa: u64,
    /// Turn on MBEC (secondary control bit 22, §3.2). Fails if the TD's virtual
    /// VMX capabilities do not allow it (§8 audit note).
    pub mbec: bool,
    /// Extra primary processor-based control bits to set; must be inside
    /// [`controls::PROC_BASED_L1_WR_MASK`].
    pub primary_set: u64,
    /// Primary control bits to clear; must be inside the write mask.
    pub primary_clear: u64,
    /// Extra secondary control bits to set (MBEC comes from `mbec`).
    pub secondary_set: u64,
    /// Secondary control bits to clear.
    pub secondary_clear: u64,
    /// Exception bitmap (bit 18 #MC is not L1-writable and is ignored).
    pub exception_bitmap: u32,
    /// CR0 bits L1 owns (§2.6). Writes changing them exit to L1.
    pub cr0_guest_host_mask: u64,
    /// CR4 bits L1 owns (§2.6). Must include VMXE so L2 does not see the
    /// module's VMXE=1 base shadow (§7).
    pub cr4_guest_host_mask: u64,
    /// 64-bit initial state; `None` keeps the module's reset state (§2.6).
    pub initial: Option<InitialState>,
    /// L2_CTLS (§2.7): default none (shared EPT off, L2 TDVMCALLs exit to L1).
    pub l2_ctls: L2Ctls,
    /// MSRs that do not exit to L1; every other MSR stays intercepted (§2.7).
    pub msr_passthrough: Vec<MsrPassthrough>,
    /// GPA ranges that the vCPU emulates as MMIO on EPT violations.
    pub mmio: Vec<MmioRange>,
}

impl L2VmConfig {
    /// The default CR0 guest/host mask: PE, WP, PG (the bits LVBS pins, design.md §4).
    pub const DEFAULT_CR0_MASK: u64 = CR0_PE | CR0_WP | CR0_PG;
    /// The default CR4 guest/host mask: MCE and VMXE (§2.6).
    pub const DEFAULT_CR4_MASK: u64 = CR4_MCE | CR4_VMXE;

    /// A configuration with defaults: no MBEC, no extra controls, no exceptions
    /// intercepted, default CR masks, reset state, everything intercepted, no MMIO.
    pub fn new(vm: L2Vm, vapic_gpa: u64, guest_state_gpa: u64) -> Self {
        L2VmConfig {
            vm,
            vapic_gpa,
            guest_state_gpa,
            mbec: false,
            primary_set: 0,
            primary_clear: 0,
            secondary_set: 0,
            secondary_clear: 0,
            exception_bitmap: 0,
            cr0_guest_host_mask: Self::DEFAULT_CR0_MASK,
            cr4_guest_host_mask: Self::DEFAULT_CR4_MASK,
            initial: None,
            l2_ctls: L2Ctls::empty(),
            msr_passthrough: Vec::new(),
            mmio: Vec::new(),
        }
    }

    /// The CR0 the guest should read: the initial state's CR0, else the reset value PE|NE.
    pub fn guest_cr0(&self) -> u64 {
        self.initial.map_or(CR0_PE | CR0_NE, |s| s.cr0)
    }

    /// The CR4 the guest should read: the initial state's CR4, else 0.
    pub fn guest_cr4(&self) -> u64 {
        self.initial.map_or(0, |s| s.cr4)
    }

    /// The initial TDG.VP.ENTER buffer: RIP/RSP/RFLAGS from the initial state.
    pub fn initial_guest_state(&self) -> L2EnterGuestState {
        let mut s = L2EnterGuestState::default();
        if let Some(init) = self.initial {
            s.rip = init.rip;
            s.gprs[tdcall::enter::gpr::RSP] = init.rsp;
            s.rflags = init.rflags | RFLAGS_FIXED;
        }
        s
    }
}

/// Why [`setup_l2_vm`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// A TDG.VP.WR failed; the error names the field.
    Field(FieldAccessError),
    /// A GPA is not aligned as the module requires.
    Misaligned {
        /// Which GPA.
        what: &'static str,
        /// Its value.
        gpa: u64,
    },
    /// Requested control bits lie outside the L1 write mask.
    ControlOutsideMask {
        /// The control field.
        field: &'static str,
        /// The offending bits.
        bits: u64,
    },
    /// An MSR outside the two MSR-bitmap ranges cannot be passed through (§2.7).
    MsrNotInBitmap(u32),
}

impl From<FieldAccessError> for SetupError {
    fn from(e: FieldAccessError) -> Self {
        SetupError::Field(e)
    }
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Field(e) => write!(f, "L2 setup: {e}"),
            SetupError::Misaligned { what, gpa } => {
                write!(f, "L2 setup: {what} GPA {gpa:#x} is misaligned")
            }
            SetupError::ControlOutsideMask { field, bits } => {
                write!(f, "L2 setup: {field} bits {bits:#x} are not L1-writable")
            }
            SetupError::MsrNotInBitmap(msr) => {
                write!(f, "L2 setup: MSR {msr:#x} is outside the MSR bitmap")
            }
        }
    }
}

/// Programs `config.vm` on this vCPU and returns the vCPU that runs it.
///
/// Assumes the VM's L1-visible MSR bitmap is still in the module's reset state
/// (all ones, §2.7): only the qwords that contain a pass-through bit are written.
pub fn setup_l2_vm<T: Tdcall + ?Sized>(
    tdcall: &mut T,
    config: &L2VmConfig,
) -> Result<Vcpu, SetupError> {
    let vm = config.vm;
    if config.vapic_gpa & 0xFFF != 0 {
        return Err(SetupError::Misaligned {
            what: "virtual-APIC page",
            gpa: config.vapic_gpa,
        });
    }
    if config.guest_state_gpa & (L2EnterGuestState::ALIGN - 1) != 0 {
        return Err(SetupError::Misaligned {
            what: "TDG.VP.ENTER guest-state buffer",
            gpa: config.guest_state_gpa,
        });
    }
    let bitmap = MsrBitmap::with_passthrough(&config.msr_passthrough)?;
    let mut w = |f: VmcsField, value: u64, mask: u64| -> Result<(), SetupError> {
        field::write_vmcs(tdcall, vm, f, value, mask)?;
        Ok(())
    };

    // §2.2 check 3: mandatory before the first TDG.VP.ENTER.
    w(
        vmcs::VIRTUAL_APIC_PAGE_ADDR,
        config.vapic_gpa,
        controls::VIRTUAL_APIC_L1_WR_MASK,
    )?;

    // Controls (§2.5), each only inside its L1 write mask.
    let secondary_set = config.secondary_set
        | if config.mbec {
            controls::SECONDARY_MBEC
        } else {
            0
        };
    for (name, f, set, clear, wr_mask) in [
        (
            "PROC_BASED_CTLS",
            vmcs::PROC_BASED_CTLS,
            config.primary_set,
            config.primary_clear,
            controls::PROC_BASED_L1_WR_MASK,
        ),
        (
            "SECONDARY_PROC_BASED_CTLS",
            vmcs::SECONDARY_PROC_BASED_CTLS,
            secondary_set,
            config.secondary_clear,
            controls::SECONDARY_L1_WR_MASK,
        ),
    ] {
        let bits = set | clear;
        if bits & !wr_mask != 0 {
            return Err(SetupError::ControlOutsideMask {
                field: name,
                bits: bits & !wr_mask,
            });
        }
        if set & clear != 0 {
            return Err(SetupError::ControlOutsideMask {
                field: name,
                bits: set & clear,
            });
        }
        if bits != 0 {
            w(f, set, bits)?;
        }
    }
    w(
        vmcs::EXCEPTION_BITMAP,
        config.exception_bitmap as u64 & controls::EXCEPTION_BITMAP_L1_WR_MASK,
        controls::EXCEPTION_BITMAP_L1_WR_MASK,
    )?;

    // CR0/CR4 ownership (§2.6): L1's shadow holds the guest-visible value of
    // the bits L1 owns.
    let cr0_mask = config.cr0_guest_host_mask;
    let cr4_mask = config.cr4_guest_host_mask;
    w(vmcs::CR0_GUEST_HOST_MASK, cr0_mask, u64::MAX)?;
    w(vmcs::CR4_GUEST_HOST_MASK, cr4_mask, u64::MAX)?;
    w(
        vmcs::CR0_READ_SHADOW,
        config.guest_cr0() & cr0_mask,
        u64::MAX,
    )?;
    w(
        vmcs::CR4_READ_SHADOW,
        config.guest_cr4() & cr4_mask,
        u64::MAX,
    )?;

    if let Some(init) = &config.initial {
        write_initial_state(&mut w, init)?;
    }

    // L2_CTLS (§2.7): bits 0-1 are always written; bit 2 only when requested.
    let ctls_mask = 0b11 | (config.l2_ctls.bits() & L2Ctls::ENABLE_EXTENDED_VE.bits());
    field::write(
        tdcall,
        "L2_CTLS",
        FieldId::l2_ctls(vm),
        config.l2_ctls.bits(),
        ctls_mask,
    )?;

    for (index, qword) in bitmap.changed_qwords() {
        field::write(
            tdcall,
            "L2 MSR bitmap",
            FieldId::l2_msr_bitmap(vm, index),
            qword,
            u64::MAX,
        )?;
    }

    log::info!(
        "L2 VM {} set up: vAPIC {:#x}, MBEC {}, CR0 mask {:#x}, CR4 mask {:#x}, {} MSR(s) passed through",
        vm.index(),
        config.vapic_gpa,
        config.mbec,
        cr0_mask,
        cr4_mask,
        config.msr_passthrough.len()
    );
    Vcpu::new(
        vm,
        config.guest_state_gpa,
        config.initial_guest_state(),
        config.mmio.clone(),
    )
    .map_err(|_| SetupError::Misaligned {
        what: "TDG.VP.ENTER guest-state buffer",
        gpa: config.guest_state_gpa,
    })
}

fn write_initial_state(
    w: &mut impl FnMut(VmcsField, u64, u64) -> Result<(), SetupError>,
    init: &InitialState,
) -> Result<(), SetupError> {
    w(vmcs::GUEST_CR0, init.cr0, controls::GUEST_CR0_L1_WR_MASK)?;
    w(vmcs::GUEST_CR3, init.cr3, u64::MAX)?;
    w(vmcs::GUEST_CR4, init.cr4, controls::GUEST_CR4_L1_WR_MASK)?;
    w(
        vmcs::GUEST_IA32_EFER,
        init.efer,
        controls::GUEST_EFER_L1_WR_MASK,
    )?;
    w(
        vmcs::VM_ENTRY_CONTROLS,
        if init.long_mode {
            controls::ENTRY_IA32E_MODE
        } else {
            0
        },
        controls::VM_ENTRY_L1_WR_MASK,
    )?;
    let segments = [
        (
            init.es,
            vmcs::GUEST_ES_SELECTOR,
            vmcs::GUEST_ES_BASE,
            vmcs::GUEST_ES_LIMIT,
            vmcs::GUEST_ES_AR,
        ),
        (
            init.cs,
            vmcs::GUEST_CS_SELECTOR,
            vmcs::GUEST_CS_BASE,
            vmcs::GUEST_CS_LIMIT,
            vmcs::GUEST_CS_AR,
        ),
        (
            init.ss,
            vmcs::GUEST_SS_SELECTOR,
            vmcs::GUEST_SS_BASE,
            vmcs::GUEST_SS_LIMIT,
            vmcs::GUEST_SS_AR,
        ),
        (
            init.ds,
            vmcs::GUEST_DS_SELECTOR,
            vmcs::GUEST_DS_BASE,
            vmcs::GUEST_DS_LIMIT,
            vmcs::GUEST_DS_AR,
        ),
        (
            init.fs,
            vmcs::GUEST_FS_SELECTOR,
            vmcs::GUEST_FS_BASE,
            vmcs::GUEST_FS_LIMIT,
            vmcs::GUEST_FS_AR,
        ),
        (
            init.gs,
            vmcs::GUEST_GS_SELECTOR,
            vmcs::GUEST_GS_BASE,
            vmcs::GUEST_GS_LIMIT,
            vmcs::GUEST_GS_AR,
        ),
        (
            init.ldtr,
            vmcs::GUEST_LDTR_SELECTOR,
            vmcs::GUEST_LDTR_BASE,
            vmcs::GUEST_LDTR_LIMIT,
            vmcs::GUEST_LDTR_AR,
        ),
        (
            init.tr,
            vmcs::GUEST_TR_SELECTOR,
            vmcs::GUEST_TR_BASE,
            vmcs::GUEST_TR_LIMIT,
            vmcs::GUEST_TR_AR,
        ),
    ];
    for (seg, sel, base, limit, ar) in segments {
        w(sel, seg.selector as u64, 0xFFFF)?;
        w(base, seg.base, u64::MAX)?;
        w(limit, seg.limit as u64, 0xFFFF_FFFF)?;
        w(ar, seg.access_rights as u64, 0xFFFF_FFFF)?;
    }
    w(vmcs::GUEST_GDTR_BASE, init.gdtr.base, u64::MAX)?;
    w(vmcs::GUEST_GDTR_LIMIT, init.gdtr.limit as u64, 0xFFFF_FFFF)?;
    w(vmcs::GUEST_IDTR_BASE, init.idtr.base, u64::MAX)?;
    w(vmcs::GUEST_IDTR_LIMIT, init.idtr.limit as u64, 0xFFFF_FFFF)?;
    Ok(())
}
