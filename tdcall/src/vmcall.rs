//! TDG.VP.VMCALL (leaf 0) and the GHCI sub-functions (§1.5).
#![forbid(unsafe_code)]

use crate::regs::Registers;

/// GHCI sub-function numbers in R11 with R10 = 0 (§1.5). The instruction
/// sub-functions reuse the VMX exit reason.
pub mod subfunction {
    /// Instruction.CPUID.
    pub const CPUID: u64 = 0x0A;
    /// Instruction.HLT.
    pub const HLT: u64 = 0x0C;
    /// Instruction.IO.
    pub const IO: u64 = 0x1E;
    /// Instruction.RDMSR.
    pub const RDMSR: u64 = 0x1F;
    /// Instruction.WRMSR.
    pub const WRMSR: u64 = 0x20;
    /// #VE.RequestMMIO.
    pub const MMIO: u64 = 0x30;
    /// Instruction.WBINVD.
    pub const WBINVD: u64 = 0x36;
    /// Instruction.PCONFIG (register usage unverified, §7).
    pub const PCONFIG: u64 = 0x41;
    /// GetTdVmCallInfo.
    pub const GET_TD_VMCALL_INFO: u64 = 0x10000;
    /// MapGPA.
    pub const MAP_GPA: u64 = 0x10001;
    /// GetQuote.
    pub const GET_QUOTE: u64 = 0x10002;
    /// ReportFatalError.
    pub const REPORT_FATAL_ERROR: u64 = 0x10003;
    /// SetupEventNotifyInterrupt.
    pub const SETUP_EVENT_NOTIFY_INTERRUPT: u64 = 0x10004;
    /// Service.
    pub const SERVICE: u64 = 0x10005;
}

/// GHCI status returned in R10 (§1.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VmcallStatus(pub u64);

impl VmcallStatus {
    /// Success.
    pub const SUCCESS: VmcallStatus = VmcallStatus(0);
    /// MapGPA: retry from the GPA in R11.
    pub const RETRY: VmcallStatus = VmcallStatus(1);
    /// Invalid operand.
    pub const INVALID_OPERAND: VmcallStatus = VmcallStatus(0x8000_0000_0000_0000);
    /// GPA already in use.
    pub const GPA_INUSE: VmcallStatus = VmcallStatus(0x8000_0000_0000_0001);
    /// Alignment error.
    pub const ALIGN_ERROR: VmcallStatus = VmcallStatus(0x8000_0000_0000_0002);
    /// The host does not implement this sub-function.
    pub const SUBFUNC_UNSUPPORTED: VmcallStatus = VmcallStatus(0x8000_0000_0000_0003);
}

/// Width of a port I/O or MMIO access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AccessSize {
    /// 1 byte.
    B1 = 1,
    /// 2 bytes.
    B2 = 2,
    /// 4 bytes.
    B4 = 4,
    /// 8 bytes (MMIO only).
    B8 = 8,
}

impl AccessSize {
    /// Decodes a byte count.
    pub const fn from_bytes(n: u64) -> Option<Self> {
        match n {
            1 => Some(AccessSize::B1),
            2 => Some(AccessSize::B2),
            4 => Some(AccessSize::B4),
            8 => Some(AccessSize::B8),
            _ => None,
        }
    }

    /// Mask of the accessed bytes.
    pub const fn mask(self) -> u64 {
        match self {
            AccessSize::B1 => 0xFF,
            AccessSize::B2 => 0xFFFF,
            AccessSize::B4 => 0xFFFF_FFFF,
            AccessSize::B8 => u64::MAX,
        }
    }
}

/// A GHCI request (R10 = 0), one variant per sub-function of §1.5.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TdVmcall {
    /// Instruction.CPUID: R12 = leaf, R13 = subleaf.
    Cpuid {
        /// EAX input.
        leaf: u32,
        /// ECX input.
        subleaf: u32,
    },
    /// Instruction.HLT: R12 = 1 when the caller had interrupts blocked.
    Hlt {
        /// RFLAGS.IF was 0.
        interrupts_blocked: bool,
    },
    /// Instruction.IO read: R12 size, R13 = 0, R14 port.
    IoRead {
        /// 1, 2 or 4 bytes.
        size: AccessSize,
        /// Port.
        port: u16,
    },
    /// Instruction.IO write: R12 size, R13 = 1, R14 port, R15 value.
    IoWrite {
        /// 1, 2 or 4 bytes.
        size: AccessSize,
        /// Port.
        port: u16,
        /// Value written.
        value: u32,
    },
    /// Instruction.RDMSR: R12 = MSR.
    RdMsr {
        /// MSR index.
        msr: u32,
    },
    /// Instruction.WRMSR: R12 = MSR, R13 = value.
    WrMsr {
        /// MSR index.
        msr: u32,
        /// Value.
        value: u64,
    },
    /// #VE.RequestMMIO read: R12 size, R13 = 0, R14 GPA.
    MmioRead {
        /// 1, 2, 4 or 8 bytes.
        size: AccessSize,
        /// GPA (shared).
        gpa: u64,
    },
    /// #VE.RequestMMIO write: R12 size, R13 = 1, R14 GPA, R15 value.
    MmioWrite {
        /// 1, 2, 4 or 8 bytes.
        size: AccessSize,
        /// GPA (shared).
        gpa: u64,
        /// Value.
        value: u64,
    },
    /// Instruction.WBINVD: R12 = 0 WBINVD, 1 WBNOINVD.
    Wbinvd {
        /// WBNOINVD instead of WBINVD.
        no_invalidate: bool,
    },
    /// GetTdVmCallInfo: R12 = leaf.
    GetTdVmCallInfo {
        /// Leaf (0).
        leaf: u64,
    },
    /// MapGPA: R12 = start GPA including the shared bit, R13 = size.
    MapGpa {
        /// Start GPA; the shared bit selects the direction.
        gpa: u64,
        /// Size, a 4 KiB multiple.
        size: u64,
    },
    /// GetQuote: R12 = shared buffer GPA, R13 = size.
    GetQuote {
        /// Shared GPA of the buffer, 4 KiB aligned.
        gpa: u64,
        /// Buffer size, a 4 KiB multiple.
        size: u64,
    },
    /// ReportFatalError: R12 = code | extended << 32 | gpa-valid << 63, R13 = GPA,
    /// optional 64-byte message in R14, R15, RBX, RDI, RSI, R8, R9, RDX.
    ReportFatalError {
        /// Error code, R12 bits 31:0.
        code: u32,
        /// Extended code, R12 bits 62:32.
        extended: u32,
        /// GPA of extra data (sets R12 bit 63).
        data_gpa: Option<u64>,
        /// ASCII message, NUL padded.
        message: [u8; 64],
    },
    /// SetupEventNotifyInterrupt: R12 = vector.
    SetupEventNotifyInterrupt {
        /// Vector 32..255.
        vector: u8,
    },
    /// Service: R12 command GPA, R13 response GPA, R14 vector, R15 timeout.
    Service {
        /// Shared command buffer GPA.
        command_gpa: u64,
        /// Shared response buffer GPA.
        response_gpa: u64,
        /// Notify vector, 0 = blocking.
        vector: u64,
        /// Timeout, 0 = infinite.
        timeout: u64,
    },
}

/// The message registers of ReportFatalError, in order (§1.5).
const FATAL_MESSAGE_GPRS: [u8; 8] = [14, 15, 3, 7, 6, 8, 9, 2];

/// RCX bits that expose R10..R15 to the host: every GHCI call passes them (§1.5).
pub const EXPOSE_R10_R15: u64 = 0xFC00;

impl TdVmcall {
    /// The sub-function number in R11.
    pub const fn subfunction(&self) -> u64 {
        use subfunction as f;
        match self {
            TdVmcall::Cpuid { .. } => f::CPUID,
            TdVmcall::Hlt { .. } => f::HLT,
            TdVmcall::IoRead { .. } | TdVmcall::IoWrite { .. } => f::IO,
            TdVmcall::RdMsr { .. } => f::RDMSR,
            TdVmcall::WrMsr { .. } => f::WRMSR,
            TdVmcall::MmioRead { .. } | TdVmcall::MmioWrite { .. } => f::MMIO,
            TdVmcall::Wbinvd { .. } => f::WBINVD,
            TdVmcall::GetTdVmCallInfo { .. } => f::GET_TD_VMCALL_INFO,
            TdVmcall::MapGpa { .. } => f::MAP_GPA,
            TdVmcall::GetQuote { .. } => f::GET_QUOTE,
            TdVmcall::ReportFatalError { .. } => f::REPORT_FATAL_ERROR,
            TdVmcall::SetupEventNotifyInterrupt { .. } => f::SETUP_EVENT_NOTIFY_INTERRUPT,
            TdVmcall::Service { .. } => f::SERVICE,
        }
    }

    /// Writes RCX (expose bitmap), R10 (0 = GHCI), R11 and the argument registers.
    pub fn encode(&self, r: &mut Registers) {
        r.rcx = EXPOSE_R10_R15;
        r.r10 = 0;
        r.r11 = self.subfunction();
        let (r12, r13, r14, r15) = match *self {
            TdVmcall::Cpuid { leaf, subleaf } => (leaf as u64, subleaf as u64, 0, 0),
            TdVmcall::Hlt { interrupts_blocked } => (interrupts_blocked as u64, 0, 0, 0),
            TdVmcall::IoRead { size, port } => (size as u64, 0, port as u64, 0),
            TdVmcall::IoWrite { size, port, value } => {
                (size as u64, 1, port as u64, value as u64 & size.mask())
            }
            TdVmcall::RdMsr { msr } => (msr as u64, 0, 0, 0),
            TdVmcall::WrMsr { msr, value } => (msr as u64, value, 0, 0),
            TdVmcall::MmioRead { size, gpa } => (size as u64, 0, gpa, 0),
            TdVmcall::MmioWrite { size, gpa, value } => (size as u64, 1, gpa, value & size.mask()),
            TdVmcall::Wbinvd { no_invalidate } => (no_invalidate as u64, 0, 0, 0),
            TdVmcall::GetTdVmCallInfo { leaf } => (leaf, 0, 0, 0),
            TdVmcall::MapGpa { gpa, size } => (gpa, size, 0, 0),
            TdVmcall::GetQuote { gpa, size } => (gpa, size, 0, 0),
            TdVmcall::SetupEventNotifyInterrupt { vector } => (vector as u64, 0, 0, 0),
            TdVmcall::Service {
                command_gpa,
                response_gpa,
                vector,
                timeout,
            } => (command_gpa, response_gpa, vector, timeout),
            TdVmcall::ReportFatalError {
                code,
                extended,
                data_gpa,
                message,
            } => {
                for (i, reg) in FATAL_MESSAGE_GPRS.iter().enumerate() {
                    let mut q = [0u8; 8];
                    q.copy_from_slice(&message[i * 8..i * 8 + 8]);
                    r.set_gpr(*reg, u64::from_le_bytes(q));
                    r.rcx |= 1 << reg;
                }
                let r12 = code as u64
                    | ((extended as u64 & 0x7FFF_FFFF) << 32)
                    | ((data_gpa.is_some() as u64) << 63);
                (r12, data_gpa.unwrap_or(0), r.r14, r.r15)
            }
        };
        r.r12 = r12;
        r.r13 = r13;
        r.r14 = r14;
        r.r15 = r15;
    }

    /// Decodes a GHCI request from the registers of a TDG.VP.VMCALL (R10 must be 0).
    /// Returns `None` for an unknown sub-function or malformed operands.
    pub fn decode(r: &Registers) -> Option<TdVmcall> {
        use subfunction as f;
        if r.r10 != 0 {
            return None;
        }
        Some(match r.r11 {
            f::CPUID => TdVmcall::Cpuid {
                leaf: r.r12 as u32,
                subleaf: r.r13 as u32,
            },
            f::HLT => TdVmcall::Hlt {
                interrupts_blocked: r.r12 & 1 != 0,
            },
            f::IO => {
                let size = AccessSize::from_bytes(r.r12).filter(|s| *s != AccessSize::B8)?;
                let port = u16::try_from(r.r14).ok()?;
                match r.r13 {
                    0 => TdVmcall::IoRead { size, port },
                    1 => TdVmcall::IoWrite {
                        size,
                        port,
                        value: (r.r15 & size.mask()) as u32,
                    },
                    _ => return None,
                }
            }
            f::RDMSR => TdVmcall::RdMsr {
                msr: u32::try_from(r.r12).ok()?,
            },
            f::WRMSR => TdVmcall::WrMsr {
                msr: u32::try_from(r.r12).ok()?,
                value: r.r13,
            },
            f::MMIO => {
                let size = AccessSize::from_bytes(r.r12)?;
                match r.r13 {
                    0 => TdVmcall::MmioRead { size, gpa: r.r14 },
                    1 => TdVmcall::MmioWrite {
                        size,
                        gpa: r.r14,
                        value: r.r15 & size.mask(),
                    },
                    _ => return None,
                }
            }
            f::WBINVD => TdVmcall::Wbinvd {
                no_invalidate: r.r12 == 1,
            },
            f::GET_TD_VMCALL_INFO => TdVmcall::GetTdVmCallInfo { leaf: r.r12 },
            f::MAP_GPA => TdVmcall::MapGpa {
                gpa: r.r12,
                size: r.r13,
            },
            f::GET_QUOTE => TdVmcall::GetQuote {
                gpa: r.r12,
                size: r.r13,
            },
            f::SETUP_EVENT_NOTIFY_INTERRUPT => TdVmcall::SetupEventNotifyInterrupt {
                vector: u8::try_from(r.r12).ok()?,
            },
            f::SERVICE => TdVmcall::Service {
                command_gpa: r.r12,
                response_gpa: r.r13,
                vector: r.r14,
                timeout: r.r15,
            },
            f::REPORT_FATAL_ERROR => {
                let mut message = [0u8; 64];
                for (i, reg) in FATAL_MESSAGE_GPRS.iter().enumerate() {
                    if r.rcx & (1 << reg) != 0 {
                        message[i * 8..i * 8 + 8].copy_from_slice(&r.gpr(*reg).to_le_bytes());
                    }
                }
                TdVmcall::ReportFatalError {
                    code: r.r12 as u32,
                    extended: ((r.r12 >> 32) & 0x7FFF_FFFF) as u32,
                    data_gpa: (r.r12 >> 63 != 0).then_some(r.r13),
                    message,
                }
            }
            _ => return None,
        })
    }
}

/// What the host returned for a TDG.VP.VMCALL (§1.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmcallOutput {
    /// R10: GHCI status.
    pub status: VmcallStatus,
    /// R11: value of IO/RDMSR/MMIO reads, MapGPA retry GPA.
    pub r11: u64,
    /// R12..R15: CPUID EAX, EBX, ECX, EDX; GetTdVmCallInfo outputs.
    pub r12_r15: [u64; 4],
}

impl VmcallOutput {
    /// Reads the outputs from the registers.
    pub const fn from_registers(r: &Registers) -> Self {
        VmcallOutput {
            status: VmcallStatus(r.r10),
            r11: r.r11,
            r12_r15: [r.r12, r.r13, r.r14, r.r15],
        }
    }

    /// Writes the outputs into the registers (the host side of the call).
    pub fn write_registers(&self, r: &mut Registers) {
        r.r10 = self.status.0;
        r.r11 = self.r11;
        r.r12 = self.r12_r15[0];
        r.r13 = self.r12_r15[1];
        r.r14 = self.r12_r15[2];
        r.r15 = self.r12_r15[3];
    }

    /// A success with a value in R11.
    pub const fn value(v: u64) -> Self {
        VmcallOutput {
            status: VmcallStatus::SUCCESS,
            r11: v,
            r12_r15: [0; 4],
        }
    }

    /// A bare status.
    pub const fn status(status: VmcallStatus) -> Self {
        VmcallOutput {
            status,
            r11: 0,
            r12_r15: [0; 4],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_write_encoding() {
        let mut r = Registers::default();
        TdVmcall::IoWrite {
            size: AccessSize::B1,
            port: 0x3F8,
            value: 0x141,
        }
        .encode(&mut r);
        assert_eq!(
            (r.rcx, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15),
            (0xFC00, 0, 0x1E, 1, 1, 0x3F8, 0x41)
        );
        assert_eq!(
            TdVmcall::decode(&r),
            Some(TdVmcall::IoWrite {
                size: AccessSize::B1,
                port: 0x3F8,
                value: 0x41
            })
        );
    }

    #[test]
    fn all_roundtrip() {
        let mut msg = [0u8; 64];
        msg[..5].copy_from_slice(b"panic");
        msg[63] = b'!';
        let calls = [
            TdVmcall::Cpuid {
                leaf: 7,
                subleaf: 1,
            },
            TdVmcall::Hlt {
                interrupts_blocked: true,
            },
            TdVmcall::IoRead {
                size: AccessSize::B4,
                port: 0xCFC,
            },
            TdVmcall::RdMsr { msr: 0xC000_0080 },
            TdVmcall::WrMsr {
                msr: 0x1B,
                value: 0xFEE0_0900,
            },
            TdVmcall::MmioRead {
                size: AccessSize::B8,
                gpa: 0x8000_FEC0_0000,
            },
            TdVmcall::MmioWrite {
                size: AccessSize::B4,
                gpa: 0x8000_FEE0_00B0,
                value: 0,
            },
            TdVmcall::Wbinvd {
                no_invalidate: true,
            },
            TdVmcall::GetTdVmCallInfo { leaf: 0 },
            TdVmcall::MapGpa {
                gpa: 0x8000_0010_0000,
                size: 0x2000,
            },
            TdVmcall::GetQuote {
                gpa: 0x8000_0020_0000,
                size: 0x2000,
            },
            TdVmcall::ReportFatalError {
                code: 0xDEAD,
                extended: 3,
                data_gpa: Some(0x5000),
                message: msg,
            },
            TdVmcall::SetupEventNotifyInterrupt { vector: 0xF3 },
            TdVmcall::Service {
                command_gpa: 1,
                response_gpa: 2,
                vector: 0,
                timeout: 9,
            },
        ];
        for c in calls {
            let mut r = Registers::default();
            c.encode(&mut r);
            assert_eq!(TdVmcall::decode(&r), Some(c), "{c:?}");
        }
        let mut r = Registers::default();
        TdVmcall::ReportFatalError {
            code: 1,
            extended: 0,
            data_gpa: None,
            message: msg,
        }
        .encode(&mut r);
        assert_eq!(r.r14, u64::from_le_bytes(*b"panic\0\0\0"));
        assert_eq!(r.rdx >> 56, b'!' as u64, "last message qword is RDX");
        assert_eq!(r.r12 >> 63, 0);
    }

    #[test]
    fn malformed_requests() {
        let mut r = Registers {
            r11: subfunction::IO,
            r12: 3,
            r13: 0,
            r14: 0x60,
            ..Default::default()
        };
        assert_eq!(TdVmcall::decode(&r), None, "size 3");
        r.r12 = 1;
        r.r13 = 2;
        assert_eq!(TdVmcall::decode(&r), None, "direction 2");
        r.r13 = 0;
        r.r14 = 0x1_0000;
        assert_eq!(TdVmcall::decode(&r), None, "port > 0xFFFF");
        r.r11 = 0x9999;
        assert_eq!(TdVmcall::decode(&r), None);
        r.r10 = 1;
        assert_eq!(TdVmcall::decode(&r), None, "non-GHCI");
    }
}
