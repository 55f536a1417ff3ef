//! The host VMM as the model sees it: TDG.VP.VMCALL targets and L2 exits that
//! TD-exit to the host (§1.5, §3.5, §4). [`ScriptedHost`] is a deterministic host
//! for tests: a UART, port and MMIO tables, MSRs, CPUID and the debug-exit port.
#![forbid(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use tdcall::vmcall::{AccessSize, TdVmcall, VmcallOutput, VmcallStatus};
use tdcall::{L2ExitInfo, L2Vm};

/// What the host does with an L2 exit that the module routed to it (§2.3, §3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostDecision {
    /// Re-enter the TD with RESUME_L1: L1 sees class 0x1100 with the original exit.
    ResumeL1,
    /// Tear the TD down.
    KillTd,
}

/// The untrusted host VMM.
pub trait HostVmm {
    /// Serves a GHCI TDG.VP.VMCALL from `vcpu` (from L1, or from L2 with
    /// L2_CTLS.ENABLE_TDVMCALL). MapGPA's page-state effect is applied by the model.
    fn tdvmcall(&mut self, vcpu: u32, call: &TdVmcall) -> VmcallOutput;

    /// An L2 exit the module routes to the host (shared or unmapped GPA, §3.5).
    fn l2_exit_routed(&mut self, vcpu: u32, vm: L2Vm, exit: &L2ExitInfo) -> HostDecision;
}

/// COM1 data port (the UART the emulator forwards).
pub const COM1: u16 = 0x3F8;
/// QEMU `isa-debug-exit` port used by the project to end a run.
pub const DEBUG_EXIT: u16 = 0xF4;

/// A recorded port or MMIO write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Write {
    /// Port or GPA.
    pub address: u64,
    /// Bytes.
    pub size: u8,
    /// Value.
    pub value: u64,
}

/// A fatal error an L1 reported with ReportFatalError.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatalReport {
    /// Error code (R12 31:0).
    pub code: u32,
    /// The message, up to the first NUL.
    pub message: String,
}

/// A deterministic host for tests and model runs.
#[derive(Clone, Debug, Default)]
pub struct ScriptedHost {
    /// Bytes written to COM1.
    pub serial: Vec<u8>,
    /// Values returned by port reads (missing ports read all ones).
    pub port_values: BTreeMap<u16, u32>,
    /// Every port write, COM1 included.
    pub port_writes: Vec<Write>,
    /// Values returned by MMIO reads (missing addresses read all ones).
    pub mmio_values: BTreeMap<u64, u64>,
    /// Every MMIO write.
    pub mmio_writes: Vec<Write>,
    /// MSR values the host returns and stores.
    pub msrs: BTreeMap<u32, u64>,
    /// CPUID results by (leaf, subleaf): EAX, EBX, ECX, EDX.
    pub cpuid: BTreeMap<(u32, u32), [u32; 4]>,
    /// Number of HLT calls.
    pub halts: u32,
    /// Status written to the debug-exit port.
    pub exit_code: Option<u32>,
    /// ReportFatalError, if any.
    pub fatal: Option<FatalReport>,
    /// L2 exits routed to the host.
    pub routed_exits: Vec<L2ExitInfo>,
    /// Kill the TD on routed L2 exits instead of resuming L1.
    pub kill_on_routed_exit: bool,
    /// MapGPA requests (gpa, size).
    pub map_gpa: Vec<(u64, u64)>,
    /// GetQuote requests (shared buffer GPA, size). The quote service itself is
    /// outside the model: requests are accepted and recorded.
    pub quote_requests: Vec<(u64, u64)>,
}

impl ScriptedHost {
    /// The UART output as text (lossy).
    pub fn serial_text(&self) -> String {
        String::from_utf8_lossy(&self.serial).into_owned()
    }
}

impl HostVmm for ScriptedHost {
    fn tdvmcall(&mut self, _vcpu: u32, call: &TdVmcall) -> VmcallOutput {
        match *call {
            TdVmcall::Cpuid { leaf, subleaf } => {
                let r = self
                    .cpuid
                    .get(&(leaf, subleaf))
                    .or_else(|| self.cpuid.get(&(leaf, 0)))
                    .copied()
                    .unwrap_or([0; 4]);
                VmcallOutput {
                    status: VmcallStatus::SUCCESS,
                    r11: 0,
                    r12_r15: [r[0] as u64, r[1] as u64, r[2] as u64, r[3] as u64],
                }
            }
            TdVmcall::Hlt { .. } => {
                self.halts += 1;
                VmcallOutput::status(VmcallStatus::SUCCESS)
            }
            TdVmcall::IoRead { size, port } => {
                let v = self.port_values.get(&port).copied().unwrap_or(u32::MAX);
                VmcallOutput::value(v as u64 & size.mask())
            }
            TdVmcall::IoWrite { size, port, value } => {
                if port == COM1 && size == AccessSize::B1 {
                    self.serial.push(value as u8);
                }
                if port == DEBUG_EXIT {
                    self.exit_code = Some(value);
                }
                self.port_writes.push(Write {
                    address: port as u64,
                    size: size as u8,
                    value: value as u64,
                });
                VmcallOutput::status(VmcallStatus::SUCCESS)
            }
            TdVmcall::RdMsr { msr } => match self.msrs.get(&msr) {
                Some(v) => VmcallOutput::value(*v),
                None => VmcallOutput::status(VmcallStatus::INVALID_OPERAND),
            },
            TdVmcall::WrMsr { msr, value } => {
                self.msrs.insert(msr, value);
                VmcallOutput::status(VmcallStatus::SUCCESS)
            }
            TdVmcall::MmioRead { size, gpa } => {
                let v = self.mmio_values.get(&gpa).copied().unwrap_or(u64::MAX);
                VmcallOutput::value(v & size.mask())
            }
            TdVmcall::MmioWrite { size, gpa, value } => {
                self.mmio_writes.push(Write {
                    address: gpa,
                    size: size as u8,
                    value,
                });
                VmcallOutput::status(VmcallStatus::SUCCESS)
            }
            TdVmcall::MapGpa { gpa, size } => {
                self.map_gpa.push((gpa, size));
                VmcallOutput::status(VmcallStatus::SUCCESS)
            }
            TdVmcall::ReportFatalError { code, message, .. } => {
                let end = message
                    .iter()
                    .position(|b| *b == 0)
                    .unwrap_or(message.len());
                self.fatal = Some(FatalReport {
                    code,
                    message: String::from_utf8_lossy(&message[..end]).into_owned(),
                });
                VmcallOutput::status(VmcallStatus::SUCCESS)
            }
            TdVmcall::GetTdVmCallInfo { leaf: 0 } => VmcallOutput::status(VmcallStatus::SUCCESS),
            TdVmcall::Wbinvd { .. } | TdVmcall::SetupEventNotifyInterrupt { .. } => {
                VmcallOutput::status(VmcallStatus::SUCCESS)
            }
            TdVmcall::GetTdVmCallInfo { .. }
            | TdVmcall::GetQuote { .. }
            | TdVmcall::Service { .. } => VmcallOutput::status(VmcallStatus::SUBFUNC_UNSUPPORTED),
        }
    }

    fn l2_exit_routed(&mut self, _vcpu: u32, _vm: L2Vm, exit: &L2ExitInfo) -> HostDecision {
        self.routed_exits.push(*exit);
        if self.kill_on_routed_exit {
            HostDecision::KillTd
        } else {
            HostDecision::ResumeL1
        }
    }
}
