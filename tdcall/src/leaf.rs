//! TDCALL leaf numbers (§1.3) and the RAX input encoding (§1.1).
#![forbid(unsafe_code)]

/// A guest-side TDCALL leaf of TDX module 1.5 (§1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Leaf {
    /// TDG.VP.VMCALL: call the host VMM (GHCI, §1.5).
    VpVmcall = 0,
    /// TDG.VP.INFO: TD and vCPU information.
    VpInfo = 1,
    /// TDG.MR.RTMR.EXTEND: extend a runtime measurement register.
    MrRtmrExtend = 2,
    /// TDG.VP.VEINFO.GET: read and clear the pending #VE information.
    VpVeinfoGet = 3,
    /// TDG.MR.REPORT: produce a TDREPORT_STRUCT.
    MrReport = 4,
    /// TDG.VP.CPUIDVE.SET: control unconditional #VE on CPUID.
    VpCpuidveSet = 5,
    /// TDG.MEM.PAGE.ACCEPT: accept a pending private page.
    MemPageAccept = 6,
    /// TDG.VM.RD: read a TD-scope metadata field.
    VmRd = 7,
    /// TDG.VM.WR: write a TD-scope metadata field.
    VmWr = 8,
    /// TDG.VP.RD: read a vCPU-scope metadata field (including L2 VMCS fields).
    VpRd = 9,
    /// TDG.VP.WR: write a vCPU-scope metadata field.
    VpWr = 10,
    /// TDG.SYS.RD: read a global TDX-module field.
    SysRd = 11,
    /// TDG.SYS.RDALL: read all global fields into a list page.
    SysRdAll = 12,
    /// TDG.SERVTD.RD: service TD reads a target TD's field.
    ServtdRd = 18,
    /// TDG.SERVTD.WR: service TD writes a target TD's field.
    ServtdWr = 20,
    /// TDG.MR.VERIFYREPORT: verify a REPORTMACSTRUCT's MAC.
    MrVerifyReport = 22,
    /// TDG.MEM.PAGE.ATTR.RD: read a private page's per-L2-VM attributes (§3.3).
    MemPageAttrRd = 23,
    /// TDG.MEM.PAGE.ATTR.WR: write a private page's per-L2-VM attributes (§3.4).
    MemPageAttrWr = 24,
    /// TDG.VP.ENTER: run an L2 VM on this vCPU (§2.2).
    VpEnter = 25,
    /// TDG.VP.INVEPT: flush EPT-derived translations of L2 VMs.
    VpInvept = 26,
    /// TDG.VP.INVGLA: flush guest-linear translations of an L2 VM (module name: INVVPID).
    VpInvgla = 27,
}

impl Leaf {
    /// Every leaf in 0..=27 that module 1.5.01 implements, in numeric order.
    pub const ALL: [Leaf; 21] = [
        Leaf::VpVmcall,
        Leaf::VpInfo,
        Leaf::MrRtmrExtend,
        Leaf::VpVeinfoGet,
        Leaf::MrReport,
        Leaf::VpCpuidveSet,
        Leaf::MemPageAccept,
        Leaf::VmRd,
        Leaf::VmWr,
        Leaf::VpRd,
        Leaf::VpWr,
        Leaf::SysRd,
        Leaf::SysRdAll,
        Leaf::ServtdRd,
        Leaf::ServtdWr,
        Leaf::MrVerifyReport,
        Leaf::MemPageAttrRd,
        Leaf::MemPageAttrWr,
        Leaf::VpEnter,
        Leaf::VpInvept,
        Leaf::VpInvgla,
    ];

    /// The leaf number (RAX bits 15:0).
    pub const fn number(self) -> u16 {
        self as u16
    }

    /// Decodes a leaf number; unimplemented numbers give `None`.
    pub fn from_number(n: u16) -> Option<Leaf> {
        Leaf::ALL.iter().copied().find(|l| l.number() == n)
    }

    /// RAX input for this leaf at `version` (bits 23:16, §1.1).
    pub const fn rax(self, version: u8) -> u64 {
        (self as u64) | ((version as u64) << 16)
    }
}

/// RAX input split into its fields (§1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafInput {
    /// Leaf number, bits 15:0.
    pub number: u16,
    /// Leaf version, bits 23:16.
    pub version: u8,
    /// Bits 63:24, which must be 0.
    pub reserved: u64,
}

impl LeafInput {
    /// Splits a raw RAX value.
    pub const fn decode(rax: u64) -> Self {
        LeafInput {
            number: rax as u16,
            version: (rax >> 16) as u8,
            reserved: rax >> 24,
        }
    }
}
