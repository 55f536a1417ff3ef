//! TDG.VP.ENTER: the RCX encoding, the 256-byte guest-state buffer and the exit
//! information an L2→L1 exit returns (§2.2, §2.3).
#![forbid(unsafe_code)]

use crate::regs::Registers;
use crate::status::{StatusCode, TdxStatus};
use crate::vmx::{ExitReason, InterruptionInfo};
use crate::L2Vm;

/// INVD_TRANSLATIONS, RCX bits 1:0 of TDG.VP.ENTER (§2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum InvdTranslations {
    /// No flush.
    None = 0,
    /// INVEPT single-context for this VM (TLB and EPT paging-structure caches).
    InveptSingleContext = 1,
    /// INVVPID single-context (linear TLB only).
    InvvpidSingleContext = 2,
    /// INVVPID single-context retaining globals.
    InvvpidRetainGlobals = 3,
}

/// RCX of TDG.VP.ENTER: the VM index in bits 53:52 and the flush selector in
/// bits 1:0; all other bits are reserved 0 (§2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VpEnterFlags {
    /// The L2 VM to run.
    pub vm: L2Vm,
    /// The flush to do just before entry.
    pub invd: InvdTranslations,
}

impl VpEnterFlags {
    /// Bits that are reserved: 51:2 and 63:54 (§2.2).
    pub const RESERVED: u64 = !((3 << 52) | 3);

    /// Encodes the RCX value.
    pub const fn encode(self) -> u64 {
        ((self.vm.index() as u64) << 52) | self.invd as u64
    }

    /// Splits an RCX value into the VM index (0..3, unvalidated), the flush
    /// selector and the reserved bits that were set.
    pub const fn decode_raw(rcx: u64) -> (u64, InvdTranslations, u64) {
        let invd = match rcx & 3 {
            0 => InvdTranslations::None,
            1 => InvdTranslations::InveptSingleContext,
            2 => InvdTranslations::InvvpidSingleContext,
            _ => InvdTranslations::InvvpidRetainGlobals,
        };
        ((rcx >> 52) & 3, invd, rcx & Self::RESERVED)
    }
}

/// The L2_ENTER_GUEST_STATE buffer (§2.2). It must sit at a 256-byte aligned
/// private GPA; the alignment of this type guarantees that for a buffer the L1
/// places in its own memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(256))]
pub struct L2EnterGuestState {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15 (architectural order), offset 0x00.
    pub gprs: [u64; 16],
    /// RFLAGS, offset 0x80.
    pub rflags: u64,
    /// RIP, offset 0x88.
    pub rip: u64,
    /// SSP, offset 0x90.
    pub ssp: u64,
    /// GUEST_INTERRUPT_STATUS, offset 0x98: bits 7:0 RVI, 15:8 SVI.
    pub guest_interrupt_status: u16,
}

impl Default for L2EnterGuestState {
    fn default() -> Self {
        L2EnterGuestState {
            gprs: [0; 16],
            rflags: 2,
            rip: 0,
            ssp: 0,
            guest_interrupt_status: 0,
        }
    }
}

/// GPR indices into [`L2EnterGuestState::gprs`] (architectural order, §2.2).
pub mod gpr {
    #![allow(missing_docs)]
    pub const RAX: usize = 0;
    pub const RCX: usize = 1;
    pub const RDX: usize = 2;
    pub const RBX: usize = 3;
    pub const RSP: usize = 4;
    pub const RBP: usize = 5;
    pub const RSI: usize = 6;
    pub const RDI: usize = 7;
    pub const R8: usize = 8;
    pub const R9: usize = 9;
    pub const R10: usize = 10;
    pub const R11: usize = 11;
    pub const R12: usize = 12;
    pub const R13: usize = 13;
    pub const R14: usize = 14;
    pub const R15: usize = 15;
}

impl L2EnterGuestState {
    /// Buffer size as the module reads and writes it (through the interrupt status, §2.2).
    pub const USED_BYTES: usize = 0x9A;
    /// Alignment the module requires of the buffer GPA (§2.2).
    pub const ALIGN: u64 = 256;

    /// Serializes the buffer into its 256-byte memory image.
    pub fn to_bytes(&self) -> [u8; 256] {
        let mut out = [0u8; 256];
        for (i, v) in self.gprs.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        out[0x80..0x88].copy_from_slice(&self.rflags.to_le_bytes());
        out[0x88..0x90].copy_from_slice(&self.rip.to_le_bytes());
        out[0x90..0x98].copy_from_slice(&self.ssp.to_le_bytes());
        out[0x98..0x9A].copy_from_slice(&self.guest_interrupt_status.to_le_bytes());
        out
    }

    /// Parses a 256-byte memory image.
    pub fn from_bytes(b: &[u8; 256]) -> Self {
        let q = |off: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[off..off + 8]);
            u64::from_le_bytes(x)
        };
        let mut gprs = [0u64; 16];
        for (i, g) in gprs.iter_mut().enumerate() {
            *g = q(i * 8);
        }
        L2EnterGuestState {
            gprs,
            rflags: q(0x80),
            rip: q(0x88),
            ssp: q(0x90),
            guest_interrupt_status: u16::from_le_bytes([b[0x98], b[0x99]]),
        }
    }
}

/// What a TDG.VP.ENTER that did not fail reports in the status class (§2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EnterOutcome {
    /// Class 0: a normal L2→L1 exit; dispatch on the exit reason.
    L2ToL1,
    /// 0x1100: L2 exited to the host, which resumed L1; the exit info is the original exit.
    HostRoutedAsync,
    /// 0x1101: L2's TDG.VP.VMCALL was completed by the host; usually just re-enter.
    HostRoutedTdvmcall,
    /// 0x1102: a posted interrupt for L1 arrived while L2 ran.
    PendingInterruptExit,
    /// 0x1120: L2 was not entered because L1 has a deliverable interrupt;
    /// no exit information is valid and L1 GPRs are intact.
    NotEnteredPendingInterrupt,
}

impl EnterOutcome {
    /// Classifies a non-error status code; `None` for codes TDG.VP.ENTER never returns.
    pub const fn from_code(code: StatusCode) -> Option<Self> {
        match code.0 {
            0 => Some(EnterOutcome::L2ToL1),
            0x1100 => Some(EnterOutcome::HostRoutedAsync),
            0x1101 => Some(EnterOutcome::HostRoutedTdvmcall),
            0x1102 => Some(EnterOutcome::PendingInterruptExit),
            0x1120 => Some(EnterOutcome::NotEnteredPendingInterrupt),
            _ => None,
        }
    }

    /// The status code of this outcome.
    pub const fn code(self) -> StatusCode {
        match self {
            EnterOutcome::L2ToL1 => StatusCode::SUCCESS,
            EnterOutcome::HostRoutedAsync => StatusCode::L2_EXIT_HOST_ROUTED_ASYNC,
            EnterOutcome::HostRoutedTdvmcall => StatusCode::L2_EXIT_HOST_ROUTED_TDVMCALL,
            EnterOutcome::PendingInterruptExit => StatusCode::L2_EXIT_PENDING_INTERRUPT,
            EnterOutcome::NotEnteredPendingInterrupt => StatusCode::PENDING_INTERRUPT,
        }
    }
}

/// Extended exit qualification type, R13 bits 3:0 (§2.3): PENDING_EPT_VIOLATION.
pub const EXT_EXIT_QUAL_PENDING_EPT_VIOLATION: u8 = 6;

/// Everything TDG.VP.ENTER returns on an exit from L2 (§2.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct L2ExitInfo {
    /// RAX 31:0: the full VMX exit reason.
    pub reason: u32,
    /// RCX: exit qualification.
    pub qualification: u64,
    /// RDX: guest linear address.
    pub gla: u64,
    /// RSI 15:0: L2 CS selector.
    pub cs_selector: u16,
    /// RSI 31:16: L2 CS access rights.
    pub cs_ar: u16,
    /// RSI 63:32: L2 CS limit.
    pub cs_limit: u32,
    /// RDI: L2 CS base.
    pub cs_base: u64,
    /// R8: guest physical address.
    pub gpa: u64,
    /// R9 31:0: VM-exit interruption information.
    pub interruption_info: u32,
    /// R9 63:32: VM-exit interruption error code.
    pub interruption_error: u32,
    /// R10 31:0: IDT-vectoring information.
    pub idt_vectoring_info: u32,
    /// R10 63:32: IDT-vectoring error code.
    pub idt_vectoring_error: u32,
    /// R11 31:0: VM-exit instruction information.
    pub instruction_info: u32,
    /// R11 63:32: VM-exit instruction length.
    pub instruction_length: u32,
    /// R12 1:0: L2 CPL at exit.
    pub cpl: u8,
    /// R13 3:0: extended exit qualification type (6 = pending EPT violation).
    pub ext_qual_type: u8,
}

impl L2ExitInfo {
    /// The exit reason as a typed value.
    pub const fn exit_reason(&self) -> ExitReason {
        ExitReason(self.reason)
    }

    /// The VM-exit interruption information as a typed value.
    pub const fn exit_interruption(&self) -> InterruptionInfo {
        InterruptionInfo(self.interruption_info)
    }

    /// Reads the exit information out of the registers TDG.VP.ENTER returned (§2.3).
    pub const fn from_registers(r: &Registers) -> Self {
        L2ExitInfo {
            reason: r.rax as u32,
            qualification: r.rcx,
            gla: r.rdx,
            cs_selector: r.rsi as u16,
            cs_ar: (r.rsi >> 16) as u16,
            cs_limit: (r.rsi >> 32) as u32,
            cs_base: r.rdi,
            gpa: r.r8,
            interruption_info: r.r9 as u32,
            interruption_error: (r.r9 >> 32) as u32,
            idt_vectoring_info: r.r10 as u32,
            idt_vectoring_error: (r.r10 >> 32) as u32,
            instruction_info: r.r11 as u32,
            instruction_length: (r.r11 >> 32) as u32,
            cpl: (r.r12 & 3) as u8,
            ext_qual_type: (r.r13 & 0xF) as u8,
        }
    }

    /// Writes the exit registers the way the module does (§2.3): RBX, R14, R15 = 0;
    /// RBP is left alone. `status` goes in RAX with the exit reason in its low half.
    pub fn write_registers(&self, outcome: EnterOutcome, r: &mut Registers) {
        r.rax = TdxStatus::new(outcome.code(), self.reason).0;
        r.rbx = 0;
        r.rcx = self.qualification;
        r.rdx = self.gla;
        r.rsi = self.cs_selector as u64 | (self.cs_ar as u64) << 16 | (self.cs_limit as u64) << 32;
        r.rdi = self.cs_base;
        r.r8 = self.gpa;
        r.r9 = self.interruption_info as u64 | (self.interruption_error as u64) << 32;
        r.r10 = self.idt_vectoring_info as u64 | (self.idt_vectoring_error as u64) << 32;
        r.r11 = self.instruction_info as u64 | (self.instruction_length as u64) << 32;
        r.r12 = self.cpl as u64 & 3;
        r.r13 = self.ext_qual_type as u64 & 0xF;
        r.r14 = 0;
        r.r15 = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rcx_encoding() {
        let f = VpEnterFlags {
            vm: L2Vm::Vm1,
            invd: InvdTranslations::InveptSingleContext,
        };
        assert_eq!(f.encode(), 0x0010_0000_0000_0001);
        let f3 = VpEnterFlags {
            vm: L2Vm::Vm3,
            invd: InvdTranslations::None,
        };
        assert_eq!(f3.encode(), 0x0030_0000_0000_0000);
        assert_eq!(
            VpEnterFlags::decode_raw(0x0020_0000_0000_0006),
            (2, InvdTranslations::InvvpidSingleContext, 4)
        );
        assert_eq!(VpEnterFlags::decode_raw(1 << 54).2, 1 << 54);
    }

    #[test]
    fn buffer_layout() {
        assert_eq!(core::mem::size_of::<L2EnterGuestState>(), 256);
        assert_eq!(core::mem::align_of::<L2EnterGuestState>(), 256);
        assert_eq!(core::mem::offset_of!(L2EnterGuestState, rflags), 0x80);
        assert_eq!(core::mem::offset_of!(L2EnterGuestState, rip), 0x88);
        assert_eq!(core::mem::offset_of!(L2EnterGuestState, ssp), 0x90);
        assert_eq!(
            core::mem::offset_of!(L2EnterGuestState, guest_interrupt_status),
            0x98
        );
        let mut s = L2EnterGuestState::default();
        s.gprs[gpr::R15] = 0x1111;
        s.rip = 0xFFFF_8000_0000_1000;
        s.guest_interrupt_status = 0x2031;
        let b = s.to_bytes();
        assert_eq!(&b[0x78..0x80], &0x1111u64.to_le_bytes());
        assert_eq!(&b[0x98..0x9A], &[0x31, 0x20]);
        assert_eq!(L2EnterGuestState::from_bytes(&b), s);
    }

    #[test]
    fn exit_info_roundtrip() {
        let info = L2ExitInfo {
            reason: 48,
            qualification: 0x182,
            gla: 0xFFFF_8880_0000_1000,
            cs_selector: 0x10,
            cs_ar: 0xA09B,
            cs_limit: 0xFFFF_FFFF,
            cs_base: 0,
            gpa: 0x1000,
            interruption_info: 0,
            interruption_error: 0,
            idt_vectoring_info: 0x8000_0B0E,
            idt_vectoring_error: 2,
            instruction_info: 7,
            instruction_length: 3,
            cpl: 0,
            ext_qual_type: 6,
        };
        let mut r = Registers {
            rbp: 0x5555,
            ..Registers::default()
        };
        info.write_registers(EnterOutcome::HostRoutedAsync, &mut r);
        assert_eq!(r.rax, 0x0000_1100_0000_0030);
        assert_eq!(r.r11, 0x0000_0003_0000_0007);
        assert_eq!(r.rsi, 0xFFFF_FFFF_A09B_0010);
        assert_eq!(r.rbp, 0x5555, "RBP is not an output");
        assert_eq!(L2ExitInfo::from_registers(&r), info);
    }
}
