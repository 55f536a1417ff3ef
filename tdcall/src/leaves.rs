//! One typed request per TDCALL leaf (§1.4), and [`call`], which runs a request
//! through any [`Tdcall`] implementation and decodes the completion status.
#![forbid(unsafe_code)]

use crate::attr::{AttrWrFlags, GpaAttr, GpaMapping, PageLevel};
use crate::enter::{EnterOutcome, L2ExitInfo, VpEnterFlags};
use crate::field::FieldId;
use crate::leaf::Leaf;
use crate::regs::{Registers, Tdcall};
use crate::status::{StatusCode, TdxError, TdxStatus};
use crate::vmcall::{TdVmcall, VmcallOutput};
use crate::L2Vm;

/// A typed TDCALL request: how it fills the registers and how it reads the result.
pub trait TdcallRequest {
    /// The leaf this request calls.
    const LEAF: Leaf;
    /// The typed result of a successful call.
    type Output;

    /// Leaf version in RAX bits 23:16 (§1.1); only TDG.VM.RD has version 1.
    fn version(&self) -> u8 {
        0
    }

    /// Writes the inputs (everything except RAX).
    fn encode(&self, regs: &mut Registers);

    /// Reads the outputs of a call whose status had bit 63 clear.
    fn decode(&self, status: TdxStatus, regs: &Registers) -> Self::Output;
}

/// Runs `req` through `tdcall`. A status with bit 63 set becomes [`TdxError`];
/// any other status is passed to the request's decoder.
pub fn call<T: Tdcall + ?Sized, R: TdcallRequest>(
    tdcall: &mut T,
    req: &R,
) -> Result<R::Output, TdxError> {
    let mut regs = Registers {
        rax: R::LEAF.rax(req.version()),
        ..Registers::default()
    };
    req.encode(&mut regs);
    tdcall.tdcall(&mut regs);
    let status = TdxStatus(regs.rax).into_result()?;
    Ok(req.decode(status, &regs))
}

/// Leaf 0, TDG.VP.VMCALL: a GHCI call to the host (§1.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VpVmcall(pub TdVmcall);

impl TdcallRequest for VpVmcall {
    const LEAF: Leaf = Leaf::VpVmcall;
    type Output = VmcallOutput;
    fn encode(&self, regs: &mut Registers) {
        self.0.encode(regs)
    }
    fn decode(&self, _: TdxStatus, regs: &Registers) -> VmcallOutput {
        VmcallOutput::from_registers(regs)
    }
}

/// Leaf 1, TDG.VP.INFO (§1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VpInfo;

/// Result of TDG.VP.INFO (§1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TdInfo {
    /// RCX 5:0: GPA width, 48 or 52; the shared bit is GPAW − 1 (§5.2).
    pub gpaw: u8,
    /// RDX: TD ATTRIBUTES (§5.6).
    pub attributes: u64,
    /// R8 31:0.
    pub num_vcpus: u32,
    /// R8 63:32.
    pub max_vcpus: u32,
    /// R9: this vCPU's index.
    pub vcpu_index: u32,
    /// R10 bit 0: TDG.SYS.RD is available.
    pub sys_rd_available: bool,
}

impl TdInfo {
    /// The shared-bit mask, `1 << (GPAW − 1)` (§5.2).
    pub const fn shared_bit(&self) -> u64 {
        1 << (self.gpaw - 1)
    }
}

impl TdcallRequest for VpInfo {
    const LEAF: Leaf = Leaf::VpInfo;
    type Output = TdInfo;
    fn encode(&self, _: &mut Registers) {}
    fn decode(&self, _: TdxStatus, r: &Registers) -> TdInfo {
        TdInfo {
            gpaw: (r.rcx & 0x3F) as u8,
            attributes: r.rdx,
            num_vcpus: r.r8 as u32,
            max_vcpus: (r.r8 >> 32) as u32,
            vcpu_index: r.r9 as u32,
            sys_rd_available: r.r10 & 1 != 0,
        }
    }
}

/// Leaf 2, TDG.MR.RTMR.EXTEND: RCX = 64-byte aligned GPA of 48 bytes, RDX = index 0..3 (§1.4, §5.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MrRtmrExtend {
    /// Private GPA of the 48-byte extend value, 64-byte aligned.
    pub data_gpa: u64,
    /// RTMR index 0..3.
    pub index: u64,
}

impl TdcallRequest for MrRtmrExtend {
    const LEAF: Leaf = Leaf::MrRtmrExtend;
    type Output = ();
    fn encode(&self, r: &mut Registers) {
        r.rcx = self.data_gpa;
        r.rdx = self.index;
    }
    fn decode(&self, _: TdxStatus, _: &Registers) {}
}

/// Leaf 3, TDG.VP.VEINFO.GET (§1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VpVeinfoGet;

/// Result of TDG.VP.VEINFO.GET. Note the packing of R10 is the opposite of
/// TDG.VP.ENTER's R11 (§8): length in the low half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VeInfo {
    /// RCX: exit reason.
    pub exit_reason: u32,
    /// RDX: exit qualification.
    pub qualification: u64,
    /// R8: guest linear address.
    pub gla: u64,
    /// R9: guest physical address.
    pub gpa: u64,
    /// R10 31:0: instruction length.
    pub instruction_length: u32,
    /// R10 63:32: instruction information.
    pub instruction_info: u32,
}

impl TdcallRequest for VpVeinfoGet {
    const LEAF: Leaf = Leaf::VpVeinfoGet;
    type Output = VeInfo;
    fn encode(&self, _: &mut Registers) {}
    fn decode(&self, _: TdxStatus, r: &Registers) -> VeInfo {
        VeInfo {
            exit_reason: r.rcx as u32,
            qualification: r.rdx,
            gla: r.r8,
            gpa: r.r9,
            instruction_length: r.r10 as u32,
            instruction_info: (r.r10 >> 32) as u32,
        }
    }
}

/// Leaf 4, TDG.MR.REPORT: RCX = 1024-aligned report GPA, RDX = 64-aligned
/// REPORTDATA GPA, R8 = subtype 0 (§1.4, §5.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MrReport {
    /// Output TDREPORT_STRUCT GPA, 1024-byte aligned.
    pub report_gpa: u64,
    /// Input REPORTDATA GPA, 64-byte aligned.
    pub reportdata_gpa: u64,
    /// Report subtype; must be 0.
    pub subtype: u64,
}

impl TdcallRequest for MrReport {
    const LEAF: Leaf = Leaf::MrReport;
    type Output = ();
    fn encode(&self, r: &mut Registers) {
        r.rcx = self.report_gpa;
        r.rdx = self.reportdata_gpa;
        r.r8 = self.subtype;
    }
    fn decode(&self, _: TdxStatus, _: &Registers) {}
}

/// Leaf 5, TDG.VP.CPUIDVE.SET: RCX bit 0 supervisor, bit 1 user (§1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VpCpuidveSet {
    /// Unconditional #VE on CPUID at CPL 0.
    pub supervisor: bool,
    /// Unconditional #VE on CPUID at CPL > 0.
    pub user: bool,
}

impl TdcallRequest for VpCpuidveSet {
    const LEAF: Leaf = Leaf::VpCpuidveSet;
    type Output = ();
    fn encode(&self, r: &mut Registers) {
        r.rcx = self.supervisor as u64 | (self.user as u64) << 1;
    }
    fn decode(&self, _: TdxStatus, _: &Registers) {}
}

/// Leaf 6, TDG.MEM.PAGE.ACCEPT: RCX = level | GPA (§1.4, §5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemPageAccept {
    /// Private GPA aligned to `level`.
    pub gpa: u64,
    /// 4 KiB or 2 MiB.
    pub level: PageLevel,
}

/// Non-error outcomes of TDG.MEM.PAGE.ACCEPT (§1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// The page was pending and is now accepted and zeroed.
    Accepted,
    /// PAGE_ALREADY_ACCEPTED: not an error; the page was not zeroed again.
    AlreadyAccepted,
}

impl TdcallRequest for MemPageAccept {
    const LEAF: Leaf = Leaf::MemPageAccept;
    type Output = AcceptOutcome;
    fn encode(&self, r: &mut Registers) {
        r.rcx = GpaMapping::new(self.gpa, self.level).0;
    }
    fn decode(&self, status: TdxStatus, _: &Registers) -> AcceptOutcome {
        if status.code() == StatusCode::PAGE_ALREADY_ACCEPTED {
            AcceptOutcome::AlreadyAccepted
        } else {
            AcceptOutcome::Accepted
        }
    }
}

/// A metadata read result: the value and the next field id (§1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldValue {
    /// R8: the value, masked by the readable bits.
    pub value: u64,
    /// RDX: the next field id in the context (all ones at the end).
    pub next: FieldId,
}

/// Leaf 7, TDG.VM.RD: RCX = 0, RDX = field id; version 1 also returns the next id (§1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmRd {
    /// Field to read.
    pub field: FieldId,
    /// Leaf version, 0 or 1.
    pub version: u8,
}

impl TdcallRequest for VmRd {
    const LEAF: Leaf = Leaf::VmRd;
    type Output = FieldValue;
    fn version(&self) -> u8 {
        self.version
    }
    fn encode(&self, r: &mut Registers) {
        r.rdx = self.field.0;
    }
    fn decode(&self, _: TdxStatus, r: &Registers) -> FieldValue {
        FieldValue {
            value: r.r8,
            next: FieldId(r.rdx),
        }
    }
}

/// A metadata write: RDX = field, R8 = value, R9 = write mask (§2.4). Output: old value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldWrite {
    /// Field to write.
    pub field: FieldId,
    /// New value of the bits in `mask`.
    pub value: u64,
    /// Bits to write.
    pub mask: u64,
}

impl FieldWrite {
    fn encode_into(&self, r: &mut Registers) {
        r.rdx = self.field.0;
        r.r8 = self.value;
        r.r9 = self.mask;
    }
}

/// Leaf 8, TDG.VM.WR (§1.4, §2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmWr(pub FieldWrite);

impl TdcallRequest for VmWr {
    const LEAF: Leaf = Leaf::VmWr;
    type Output = u64;
    fn encode(&self, r: &mut Registers) {
        self.0.encode_into(r)
    }
    fn decode(&self, _: TdxStatus, r: &Registers) -> u64 {
        r.r8
    }
}

/// Leaf 9, TDG.VP.RD: RCX = 0, RDX = field id (§1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VpRd(pub FieldId);

impl TdcallRequest for VpRd {
    const LEAF: Leaf = Leaf::VpRd;
    type Output = FieldValue;
    fn encode(&self, r: &mut Registers) {
        r.rdx = self.0 .0;
    }
    fn decode(&self, _: TdxStatus, r: &Registers) -> FieldValue {
        FieldValue {
            value: r.r8,
            next: FieldId(r.rdx),
        }
    }
}

/// Leaf 10, TDG.VP.WR (§1.4, §2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VpWr(pub FieldWrite);

impl TdcallRequest for VpWr {
    const LEAF: Leaf = Leaf::VpWr;
    type Output = u64;
    fn encode(&self, r: &mut Registers) {
        self.0.encode_into(r)
    }
    fn decode(&self, _: TdxStatus, r: &Registers) -> u64 {
        r.r8
    }
}

/// Leaf 11, TDG.SYS.RD: RDX = field id (§1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRd(pub FieldId);

impl TdcallRequest for SysRd {
    const LEAF: Leaf = Leaf::SysRd;
    type Output = FieldValue;
    fn encode(&self, r: &mut Registers) {
        r.rdx = self.0 .0;
    }
    fn decode(&self, _: TdxStatus, r: &Registers) -> FieldValue {
        FieldValue {
            value: r.r8,
            next: FieldId(r.rdx),
        }
    }
}

/// Leaf 12, TDG.SYS.RDALL: RDX = 4 KiB aligned GPA of the list page, R8 = first
/// field id. Output R8 = the next field id (all ones when done).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRdAll {
    /// Private, 4 KiB aligned list page.
    pub list_gpa: u64,
    /// Field id to start from.
    pub first: FieldId,
}

impl TdcallRequest for SysRdAll {
    const LEAF: Leaf = Leaf::SysRdAll;
    type Output = FieldId;
    fn encode(&self, r: &mut Registers) {
        r.rdx = self.list_gpa;
        r.r8 = self.first.0;
    }
    fn decode(&self, _: TdxStatus, r: &Registers) -> FieldId {
        FieldId(r.r8)
    }
}

/// Target of a service-TD access: RCX = binding handle, R10..R13 = target TD UUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServtdTarget {
    /// Binding handle.
    pub binding_handle: u64,
    /// Target TD_UUID, four qwords.
    pub uuid: [u64; 4],
}

impl ServtdTarget {
    fn encode_into(&self, r: &mut Registers) {
        r.rcx = self.binding_handle;
        r.r10 = self.uuid[0];
        r.r11 = self.uuid[1];
        r.r12 = self.uuid[2];
        r.r13 = self.uuid[3];
    }
}

/// Leaf 18, TDG.SERVTD.RD (service TDs only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServtdRd {
    /// Bound target TD.
    pub target: ServtdTarget,
    /// Field to read (TD context).
    pub field: FieldId,
}

impl TdcallRequest for ServtdRd {
    const LEAF: Leaf = Leaf::ServtdRd;
    type Output = FieldValue;
    fn encode(&self, r: &mut Registers) {
        self.target.encode_into(r);
        r.rdx = self.field.0;
    }
    fn decode(&self, _: TdxStatus, r: &Registers) -> FieldValue {
        FieldValue {
            value: r.r8,
            next: FieldId(r.rdx),
        }
    }
}

/// Leaf 20, TDG.SERVTD.WR (service TDs only). Output: old value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServtdWr {
    /// Bound target TD.
    pub target: ServtdTarget,
    /// The write.
    pub write: FieldWrite,
}

impl TdcallRequest for ServtdWr {
    const LEAF: Leaf = Leaf::ServtdWr;
    type Output = u64;
    fn encode(&self, r: &mut Registers) {
        self.target.encode_into(r);
        self.write.encode_into(r);
    }
    fn decode(&self, _: TdxStatus, r: &Registers) -> u64 {
        r.r8
    }
}

/// Leaf 22, TDG.MR.VERIFYREPORT: RCX = 256-byte aligned GPA of a REPORTMACSTRUCT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MrVerifyReport {
    /// GPA of the 256-byte REPORTMACSTRUCT.
    pub reportmac_gpa: u64,
}

impl TdcallRequest for MrVerifyReport {
    const LEAF: Leaf = Leaf::MrVerifyReport;
    type Output = ();
    fn encode(&self, r: &mut Registers) {
        r.rcx = self.reportmac_gpa;
    }
    fn decode(&self, _: TdxStatus, _: &Registers) {}
}

/// Attributes of one private page as ATTR.RD/WR report them (§3.3, §3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageAttrs {
    /// RCX: mapping level, GPA and PENDING bit.
    pub mapping: GpaMapping,
    /// RDX: per-VM attributes.
    pub attr: GpaAttr,
}

/// Leaf 23, TDG.MEM.PAGE.ATTR.RD: RCX = GPA (§3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemPageAttrRd {
    /// Private GPA; bits 11:0 are ignored.
    pub gpa: u64,
}

impl TdcallRequest for MemPageAttrRd {
    const LEAF: Leaf = Leaf::MemPageAttrRd;
    type Output = PageAttrs;
    fn encode(&self, r: &mut Registers) {
        r.rcx = self.gpa;
    }
    fn decode(&self, _: TdxStatus, r: &Registers) -> PageAttrs {
        PageAttrs {
            mapping: GpaMapping(r.rcx),
            attr: GpaAttr(r.rdx),
        }
    }
}

/// Leaf 24, TDG.MEM.PAGE.ATTR.WR: RCX = mapping, RDX = GPA_ATTR, R8 = ATTR_FLAGS (§3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemPageAttrWr {
    /// GPA and level.
    pub mapping: GpaMapping,
    /// New attributes per VM.
    pub attr: GpaAttr,
    /// Per-VM change masks and flush bits.
    pub flags: AttrWrFlags,
}

impl TdcallRequest for MemPageAttrWr {
    const LEAF: Leaf = Leaf::MemPageAttrWr;
    type Output = PageAttrs;
    fn encode(&self, r: &mut Registers) {
        r.rcx = self.mapping.0;
        r.rdx = self.attr.0;
        r.r8 = self.flags.0;
    }
    fn decode(&self, _: TdxStatus, r: &Registers) -> PageAttrs {
        PageAttrs {
            mapping: GpaMapping(r.rcx),
            attr: GpaAttr(r.rdx),
        }
    }
}

/// Leaf 25, TDG.VP.ENTER: RCX = VM and flags, RDX = guest-state buffer GPA (§2.2).
///
/// A successful TDG.VP.ENTER clobbers every GPR but RSP (§2.3); the register file
/// the [`Tdcall`] implementation returns is the only place the outputs live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VpEnter {
    /// VM index and flush selector.
    pub flags: VpEnterFlags,
    /// Private, 256-byte aligned GPA of the [`crate::L2EnterGuestState`].
    pub guest_state_gpa: u64,
}

/// Result of TDG.VP.ENTER that did not fail (§2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VpEnterResult {
    /// The status class.
    pub outcome: EnterOutcome,
    /// The exit information; all zero for [`EnterOutcome::NotEnteredPendingInterrupt`].
    pub exit: L2ExitInfo,
}

impl TdcallRequest for VpEnter {
    const LEAF: Leaf = Leaf::VpEnter;
    type Output = VpEnterResult;
    fn encode(&self, r: &mut Registers) {
        r.rcx = self.flags.encode();
        r.rdx = self.guest_state_gpa;
    }
    fn decode(&self, status: TdxStatus, r: &Registers) -> VpEnterResult {
        // A non-error code TDG.VP.ENTER is not documented to return is treated as a
        // normal exit so the caller sees its reason rather than losing it.
        let outcome = EnterOutcome::from_code(status.code()).unwrap_or(EnterOutcome::L2ToL1);
        let exit = match outcome {
            EnterOutcome::NotEnteredPendingInterrupt => L2ExitInfo::default(),
            _ => L2ExitInfo::from_registers(r),
        };
        VpEnterResult { outcome, exit }
    }
}

/// Leaf 26, TDG.VP.INVEPT: RCX = bitmap of L2 VMs (bit n = VM n; bit 0 must be 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VpInvept {
    /// Raw bitmap.
    pub vm_bitmap: u64,
}

impl VpInvept {
    /// Flush the given VMs.
    pub fn vms(vms: &[L2Vm]) -> Self {
        VpInvept {
            vm_bitmap: vms.iter().fold(0, |acc, vm| acc | 1 << vm.index()),
        }
    }
}

impl TdcallRequest for VpInvept {
    const LEAF: Leaf = Leaf::VpInvept;
    type Output = ();
    fn encode(&self, r: &mut Registers) {
        r.rcx = self.vm_bitmap;
    }
    fn decode(&self, _: TdxStatus, _: &Registers) {}
}

/// What TDG.VP.INVGLA flushes (§1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvglaTarget {
    /// One range: `pages` 4 KiB pages (1..=4096) from `gla`.
    Range {
        /// Base GLA, 4 KiB aligned.
        gla: u64,
        /// Number of pages, 1..=4096.
        pages: u16,
    },
    /// A list page of up to 512 range entries.
    List {
        /// Private GPA of the list page.
        list_gpa: u64,
        /// First entry, 0..512.
        first: u16,
        /// Number of entries; first + count ≤ 512.
        count: u16,
    },
}

/// Leaf 27, TDG.VP.INVGLA: RCX = LIST | VM index << 52, RDX = range or list info (§1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VpInvgla {
    /// The L2 VM.
    pub vm: L2Vm,
    /// What to flush.
    pub target: InvglaTarget,
}

impl TdcallRequest for VpInvgla {
    const LEAF: Leaf = Leaf::VpInvgla;
    /// RDX on return: the list info with progress (list form).
    type Output = u64;
    fn encode(&self, r: &mut Registers) {
        let vm = (self.vm.index() as u64) << 52;
        match self.target {
            InvglaTarget::Range { gla, pages } => {
                r.rcx = vm;
                r.rdx = (gla & !0xFFF) | (pages.saturating_sub(1) as u64 & 0xFFF);
            }
            InvglaTarget::List {
                list_gpa,
                first,
                count,
            } => {
                r.rcx = vm | 1;
                r.rdx = (first as u64 & 0x1FF)
                    | (list_gpa & 0x000F_FFFF_FFFF_F000)
                    | ((count as u64 & 0x3FF) << 52);
            }
        }
    }
    fn decode(&self, _: TdxStatus, r: &Registers) -> u64 {
        r.rdx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::L2Attr;
    use crate::enter::InvdTranslations;
    use crate::status::OperandId;

    /// A Tdcall that records the registers it saw and replies with a fixed file.
    struct Canned {
        seen: Registers,
        reply: Registers,
    }

    impl Tdcall for Canned {
        fn tdcall(&mut self, regs: &mut Registers) {
            self.seen = *regs;
            *regs = self.reply;
        }
    }

    fn canned(reply: Registers) -> Canned {
        Canned {
            seen: Registers::default(),
            reply,
        }
    }

    #[test]
    fn leaf_numbers() {
        let expect = [
            0u16, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 18, 20, 22, 23, 24, 25, 26, 27,
        ];
        let got: [u16; 21] = core::array::from_fn(|i| Leaf::ALL[i].number());
        assert_eq!(got, expect);
        assert_eq!(Leaf::from_number(25), Some(Leaf::VpEnter));
        assert_eq!(Leaf::from_number(13), None);
        assert_eq!(Leaf::VmRd.rax(1), 0x1_0007);
    }

    #[test]
    fn vp_info_decodes() {
        let mut t = canned(Registers {
            rcx: 52,
            rdx: 1 << 28,
            r8: (4 << 32) | 2,
            r9: 1,
            r10: 1,
            ..Default::default()
        });
        let info = call(&mut t, &VpInfo).unwrap();
        assert_eq!(t.seen.rax, 1);
        assert_eq!(
            (info.gpaw, info.num_vcpus, info.max_vcpus, info.vcpu_index),
            (52, 2, 4, 1)
        );
        assert_eq!(info.shared_bit(), 1 << 51);
        assert!(info.sys_rd_available);
    }

    #[test]
    fn errors_are_decoded() {
        let mut t = canned(Registers {
            rax: 0xC000_0100_0000_0001,
            ..Default::default()
        });
        let e = call(&mut t, &VpRd(FieldId(0))).unwrap_err();
        assert_eq!(e.code(), StatusCode::OPERAND_INVALID);
        assert_eq!(e.operand_id(), Some(OperandId::RCX));
    }

    #[test]
    fn accept_already_accepted_is_ok() {
        let mut t = canned(Registers {
            rax: 0x0000_0B0A_0000_0000,
            ..Default::default()
        });
        let r = call(
            &mut t,
            &MemPageAccept {
                gpa: 0x20_0000,
                level: PageLevel::Size2M,
            },
        )
        .unwrap();
        assert_eq!(r, AcceptOutcome::AlreadyAccepted);
        assert_eq!(t.seen.rcx, 0x20_0001);
        assert_eq!(t.seen.rax, 6);
    }

    #[test]
    fn attr_wr_registers() {
        let mut t = canned(Registers {
            rcx: 0x5000,
            rdx: 0x8007 << 16,
            ..Default::default()
        });
        let req = MemPageAttrWr {
            mapping: GpaMapping::new(0x5000, PageLevel::Size4K),
            attr: GpaAttr::for_vm(
                L2Vm::Vm1,
                L2Attr::VALID | L2Attr::R | L2Attr::W | L2Attr::XS,
            ),
            flags: AttrWrFlags::for_vm(L2Vm::Vm1, L2Attr::PRESENT, true),
        };
        let out = call(&mut t, &req).unwrap();
        assert_eq!(
            (t.seen.rax, t.seen.rcx, t.seen.rdx, t.seen.r8),
            (24, 0x5000, 0x8007 << 16, 0x800F << 16)
        );
        assert_eq!(
            out.attr.slot(L2Vm::Vm1),
            L2Attr::VALID | L2Attr::R | L2Attr::W | L2Attr::XS
        );
    }

    #[test]
    fn vp_enter_outcomes() {
        let req = VpEnter {
            flags: VpEnterFlags {
                vm: L2Vm::Vm1,
                invd: InvdTranslations::None,
            },
            guest_state_gpa: 0x7000,
        };
        let mut t = canned(Registers {
            rax: 0x0000_0000_0000_000C,
            r11: 1 << 32,
            ..Default::default()
        });
        let r = call(&mut t, &req).unwrap();
        assert_eq!((t.seen.rax, t.seen.rcx, t.seen.rdx), (25, 1 << 52, 0x7000));
        assert_eq!(r.outcome, EnterOutcome::L2ToL1);
        assert_eq!((r.exit.reason, r.exit.instruction_length), (12, 1));
        let mut t = canned(Registers {
            rax: 0x0000_1120_0000_0000,
            rcx: 99,
            ..Default::default()
        });
        let r = call(&mut t, &req).unwrap();
        assert_eq!(r.outcome, EnterOutcome::NotEnteredPendingInterrupt);
        assert_eq!(r.exit, L2ExitInfo::default());
        let mut t = canned(Registers {
            rax: 0xC000_0100_0000_00AA,
            ..Default::default()
        });
        let e = call(&mut t, &req).unwrap_err();
        assert_eq!(e.operand_id(), Some(OperandId::L2_VAPIC_GPA));
    }

    #[test]
    fn invept_and_invgla_encoding() {
        assert_eq!(VpInvept::vms(&[L2Vm::Vm1, L2Vm::Vm3]).vm_bitmap, 0b1010);
        let mut r = Registers::default();
        VpInvgla {
            vm: L2Vm::Vm2,
            target: InvglaTarget::Range {
                gla: 0xFFFF_8000_0010_0000,
                pages: 16,
            },
        }
        .encode(&mut r);
        assert_eq!((r.rcx, r.rdx), (2 << 52, 0xFFFF_8000_0010_000F));
        VpInvgla {
            vm: L2Vm::Vm1,
            target: InvglaTarget::List {
                list_gpa: 0x9000,
                first: 3,
                count: 10,
            },
        }
        .encode(&mut r);
        assert_eq!((r.rcx, r.rdx), ((1 << 52) | 1, (10 << 52) | 0x9000 | 3));
    }

    #[test]
    fn remaining_leaves_encode() {
        let mut r = Registers::default();
        MrRtmrExtend {
            data_gpa: 0x1040,
            index: 2,
        }
        .encode(&mut r);
        assert_eq!((r.rcx, r.rdx), (0x1040, 2));
        MrReport {
            report_gpa: 0x2000,
            reportdata_gpa: 0x2400,
            subtype: 0,
        }
        .encode(&mut r);
        assert_eq!((r.rcx, r.rdx, r.r8), (0x2000, 0x2400, 0));
        VpCpuidveSet {
            supervisor: false,
            user: true,
        }
        .encode(&mut r);
        assert_eq!(r.rcx, 2);
        VmWr(FieldWrite {
            field: crate::field::td::NOTIFY_ENABLES,
            value: 1,
            mask: 1,
        })
        .encode(&mut r);
        assert_eq!((r.rdx, r.r8, r.r9), (0x9110_0003_0000_0010, 1, 1));
        SysRdAll {
            list_gpa: 0x3000,
            first: FieldId(u64::MAX),
        }
        .encode(&mut r);
        assert_eq!((r.rdx, r.r8), (0x3000, u64::MAX));
        ServtdWr {
            target: ServtdTarget {
                binding_handle: 7,
                uuid: [1, 2, 3, 4],
            },
            write: FieldWrite {
                field: FieldId(5),
                value: 6,
                mask: 7,
            },
        }
        .encode(&mut r);
        assert_eq!((r.rcx, r.rdx, r.r8, r.r9, r.r10, r.r13), (7, 5, 6, 7, 1, 4));
        MrVerifyReport {
            reportmac_gpa: 0x4100,
        }
        .encode(&mut r);
        assert_eq!(r.rcx, 0x4100);
        let ve = VpVeinfoGet.decode(
            TdxStatus::SUCCESS,
            &Registers {
                r10: (9 << 32) | 3,
                ..Default::default()
            },
        );
        assert_eq!((ve.instruction_length, ve.instruction_info), (3, 9));
    }
}
