//! VMX exit encodings an L1 receives from TDG.VP.ENTER (§2.3, §3.5, §4): exit
//! reasons, exit-qualification layouts and interruption information. Layouts
//! are the Intel SDM's (Vol. 3, "VM-exit information fields").
#![forbid(unsafe_code)]

/// The full 32-bit VMX exit-reason field (§2.3): bits 15:0 basic reason, bit 31
/// VM-entry failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExitReason(pub u32);

impl ExitReason {
    /// Bit 31: VM-entry failure.
    pub const ENTRY_FAILURE: u32 = 1 << 31;

    /// An exit reason with the given basic reason and no flag bits.
    pub const fn basic_reason(basic: u16) -> Self {
        ExitReason(basic as u32)
    }

    /// Bits 15:0.
    pub const fn basic(self) -> u16 {
        self.0 as u16
    }

    /// Bit 31.
    pub const fn is_entry_failure(self) -> bool {
        self.0 & Self::ENTRY_FAILURE != 0
    }
}

/// Basic exit reasons that reach L1 (§4 table; numbers from the Intel SDM).
pub mod reason {
    /// Exception or NMI.
    pub const EXCEPTION_NMI: u16 = 0;
    /// External interrupt.
    pub const EXTERNAL_INTERRUPT: u16 = 1;
    /// Triple fault.
    pub const TRIPLE_FAULT: u16 = 2;
    /// Interrupt window.
    pub const INTERRUPT_WINDOW: u16 = 7;
    /// NMI window.
    pub const NMI_WINDOW: u16 = 8;
    /// CPUID: always L2→L1.
    pub const CPUID: u16 = 10;
    /// HLT: always L2→L1.
    pub const HLT: u16 = 12;
    /// INVLPG.
    pub const INVLPG: u16 = 14;
    /// RDPMC.
    pub const RDPMC: u16 = 15;
    /// RDTSC.
    pub const RDTSC: u16 = 16;
    /// VMCALL: always L2→L1.
    pub const VMCALL: u16 = 18;
    /// Control-register access.
    pub const CR_ACCESS: u16 = 28;
    /// MOV DR.
    pub const DR_ACCESS: u16 = 29;
    /// I/O instruction: always L2→L1.
    pub const IO_INSTRUCTION: u16 = 30;
    /// RDMSR.
    pub const MSR_READ: u16 = 31;
    /// WRMSR.
    pub const MSR_WRITE: u16 = 32;
    /// VM entry failed: invalid guest state (with bit 31).
    pub const INVALID_GUEST_STATE: u16 = 33;
    /// MWAIT.
    pub const MWAIT: u16 = 36;
    /// Monitor trap flag (not handled for L2 in 1.5.01).
    pub const MTF: u16 = 37;
    /// MONITOR.
    pub const MONITOR: u16 = 39;
    /// PAUSE.
    pub const PAUSE: u16 = 40;
    /// TPR below threshold.
    pub const TPR_BELOW_THRESHOLD: u16 = 43;
    /// Virtualized EOI.
    pub const VIRTUALIZED_EOI: u16 = 45;
    /// LGDT/LIDT/SGDT/SIDT with descriptor-table exiting.
    pub const GDTR_IDTR_ACCESS: u16 = 46;
    /// LLDT/LTR/SLDT/STR with descriptor-table exiting.
    pub const LDTR_TR_ACCESS: u16 = 47;
    /// EPT violation.
    pub const EPT_VIOLATION: u16 = 48;
    /// EPT misconfiguration.
    pub const EPT_MISCONFIG: u16 = 49;
    /// VMX-preemption timer = TDVPS TSC_DEADLINE expiry (§2.7).
    pub const PREEMPTION_TIMER: u16 = 52;
    /// WBINVD.
    pub const WBINVD: u16 = 54;
    /// XSETBV: always L2→L1.
    pub const XSETBV: u16 = 55;
    /// APIC write.
    pub const APIC_WRITE: u16 = 56;
    /// RDRAND.
    pub const RDRAND: u16 = 57;
    /// RDSEED.
    pub const RDSEED: u16 = 61;
    /// TDCALL from L2 (§4).
    pub const TDCALL: u16 = 77;
}

/// Control-register access type, qualification bits 5:4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrAccessType {
    /// MOV to CR.
    MovTo,
    /// MOV from CR.
    MovFrom,
    /// CLTS.
    Clts,
    /// LMSW.
    Lmsw,
}

/// A decoded control-register-access exit qualification (exit reason 28).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrAccessQual {
    /// Control register number, bits 3:0.
    pub cr: u8,
    /// Access type, bits 5:4.
    pub access: CrAccessType,
    /// LMSW operand is memory, bit 6.
    pub lmsw_memory: bool,
    /// GPR operand of MOV CR, bits 11:8 (0 = RAX … 15 = R15).
    pub gpr: u8,
    /// LMSW source data, bits 31:16.
    pub lmsw_data: u16,
}

impl CrAccessQual {
    /// Decodes a qualification value.
    pub const fn decode(q: u64) -> Self {
        CrAccessQual {
            cr: (q & 0xF) as u8,
            access: match (q >> 4) & 3 {
                0 => CrAccessType::MovTo,
                1 => CrAccessType::MovFrom,
                2 => CrAccessType::Clts,
                _ => CrAccessType::Lmsw,
            },
            lmsw_memory: (q >> 6) & 1 != 0,
            gpr: ((q >> 8) & 0xF) as u8,
            lmsw_data: (q >> 16) as u16,
        }
    }

    /// Encodes this qualification.
    pub const fn encode(self) -> u64 {
        let access = match self.access {
            CrAccessType::MovTo => 0,
            CrAccessType::MovFrom => 1,
            CrAccessType::Clts => 2,
            CrAccessType::Lmsw => 3,
        };
        (self.cr as u64 & 0xF)
            | (access << 4)
            | ((self.lmsw_memory as u64) << 6)
            | ((self.gpr as u64 & 0xF) << 8)
            | ((self.lmsw_data as u64) << 16)
    }

    /// The qualification of `MOV CRn, gpr`.
    pub const fn mov_to(cr: u8, gpr: u8) -> Self {
        CrAccessQual {
            cr,
            access: CrAccessType::MovTo,
            lmsw_memory: false,
            gpr,
            lmsw_data: 0,
        }
    }
}

/// A decoded I/O-instruction exit qualification (exit reason 30).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoQual {
    /// Access size in bytes (1, 2 or 4), from bits 2:0 (size − 1).
    pub size: u8,
    /// Direction, bit 3: true = IN.
    pub is_in: bool,
    /// String instruction, bit 4.
    pub string: bool,
    /// REP prefix, bit 5.
    pub rep: bool,
    /// Operand encoding, bit 6: true = immediate port.
    pub immediate: bool,
    /// Port, bits 31:16.
    pub port: u16,
}

impl IoQual {
    /// Decodes a qualification value.
    pub const fn decode(q: u64) -> Self {
        IoQual {
            size: ((q & 7) + 1) as u8,
            is_in: (q >> 3) & 1 != 0,
            string: (q >> 4) & 1 != 0,
            rep: (q >> 5) & 1 != 0,
            immediate: (q >> 6) & 1 != 0,
            port: (q >> 16) as u16,
        }
    }

    /// Encodes this qualification (size must be 1, 2 or 4).
    pub const fn encode(self) -> u64 {
        ((self.size.saturating_sub(1) as u64) & 7)
            | ((self.is_in as u64) << 3)
            | ((self.string as u64) << 4)
            | ((self.rep as u64) << 5)
            | ((self.immediate as u64) << 6)
            | ((self.port as u64) << 16)
    }
}

bitflags::bitflags! {
    /// EPT-violation exit qualification (exit reason 48) bits (§3.5).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct EptViolationQual: u64 {
        /// Data read.
        const READ = 1 << 0;
        /// Data write.
        const WRITE = 1 << 1;
        /// Instruction fetch.
        const FETCH = 1 << 2;
        /// The translation allowed reads.
        const READABLE = 1 << 3;
        /// The translation allowed writes.
        const WRITABLE = 1 << 4;
        /// The translation allowed execution (supervisor-mode when MBEC is on).
        const EXECUTABLE = 1 << 5;
        /// User-mode execution allowed; defined only with MBEC.
        const USER_EXECUTABLE = 1 << 6;
        /// The guest-linear-address field is valid.
        const GLA_VALID = 1 << 7;
        /// With bit 7: the access was to the final translation.
        const FINAL_TRANSLATION = 1 << 8;
        /// The linear address was user-mode (advanced information).
        const USER_MODE_LINEAR = 1 << 9;
        /// The linear address was writable (advanced information).
        const WRITABLE_LINEAR = 1 << 10;
        /// The linear address was execute-disable (advanced information).
        const XD_LINEAR = 1 << 11;
        /// NMI unblocking due to IRET.
        const NMI_UNBLOCKING = 1 << 12;
        /// Shadow-stack access.
        const SHADOW_STACK = 1 << 13;
        /// Supervisor shadow-stack control.
        const SSS_CONTROL = 1 << 14;
    }
}

/// Event type in interruption-information fields, bits 10:8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EventType {
    /// External interrupt.
    ExternalInterrupt = 0,
    /// NMI.
    Nmi = 2,
    /// Hardware exception.
    HardwareException = 3,
    /// Software interrupt (INT n).
    SoftwareInterrupt = 4,
    /// Privileged software exception (INT1).
    PrivilegedSoftwareException = 5,
    /// Software exception (INT3, INTO).
    SoftwareException = 6,
}

/// VM-entry / VM-exit interruption information (VMCS 0x4016, 0x4404; §2.3, §2.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct InterruptionInfo(pub u32);

impl InterruptionInfo {
    /// Bit 31: valid.
    pub const VALID: u32 = 1 << 31;
    /// Bit 11: deliver an error code.
    pub const ERROR_CODE_VALID: u32 = 1 << 11;

    /// Builds a valid event.
    pub const fn new(vector: u8, kind: EventType, has_error_code: bool) -> Self {
        InterruptionInfo(
            Self::VALID
                | ((kind as u32) << 8)
                | vector as u32
                | if has_error_code {
                    Self::ERROR_CODE_VALID
                } else {
                    0
                },
        )
    }

    /// #GP with an error code (the code itself goes in VM_ENTRY_EXCEPTION_ERROR_CODE).
    pub const fn general_protection() -> Self {
        Self::new(vector::GP, EventType::HardwareException, true)
    }

    /// #UD.
    pub const fn invalid_opcode() -> Self {
        Self::new(vector::UD, EventType::HardwareException, false)
    }

    /// Bit 31.
    pub const fn is_valid(self) -> bool {
        self.0 & Self::VALID != 0
    }

    /// Bits 7:0.
    pub const fn vector(self) -> u8 {
        self.0 as u8
    }

    /// Bits 10:8.
    pub const fn event_type(self) -> u8 {
        ((self.0 >> 8) & 7) as u8
    }

    /// Bit 11.
    pub const fn has_error_code(self) -> bool {
        self.0 & Self::ERROR_CODE_VALID != 0
    }
}

/// Exception vectors used by L1 (Intel SDM Vol. 3 Table 6-1).
pub mod vector {
    /// #UD.
    pub const UD: u8 = 6;
    /// #GP.
    pub const GP: u8 = 13;
    /// #PF.
    pub const PF: u8 = 14;
    /// #MC.
    pub const MC: u8 = 18;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cr_qualification_roundtrip() {
        // MOV CR0, RBX: cr 0, access 0, gpr 3.
        let q = CrAccessQual::mov_to(0, 3);
        assert_eq!(q.encode(), 0x300);
        assert_eq!(CrAccessQual::decode(0x300), q);
        // LMSW with source 0x0011 from register.
        let l = CrAccessQual::decode(0x0011_0030);
        assert_eq!(l.access, CrAccessType::Lmsw);
        assert_eq!(l.lmsw_data, 0x11);
        assert_eq!(CrAccessQual::decode(0x14).cr, 4);
        assert_eq!(CrAccessQual::decode(0x14).access, CrAccessType::MovFrom);
    }

    #[test]
    fn io_qualification() {
        // OUT DX, AL to 0x3F8: size 1, out, port in bits 31:16.
        let q = IoQual {
            size: 1,
            is_in: false,
            string: false,
            rep: false,
            immediate: false,
            port: 0x3F8,
        };
        assert_eq!(q.encode(), 0x03F8_0000);
        let r = IoQual::decode(0x0CF8_000B);
        assert_eq!((r.size, r.is_in, r.port), (4, true, 0xCF8));
    }

    #[test]
    fn gp_injection_encoding() {
        assert_eq!(InterruptionInfo::general_protection().0, 0x8000_0B0D);
        assert_eq!(InterruptionInfo::invalid_opcode().0, 0x8000_0306);
        assert_eq!(ExitReason(0x8000_0021).basic(), reason::INVALID_GUEST_STATE);
        assert!(ExitReason(0x8000_0021).is_entry_failure());
    }
}
