//! `QemuHost`: the untrusted host VMM, backed by the QEMU machine's real
//! devices. TDG.VP.VMCALLs reach the UART, the debug-exit port and device
//! MMIO; a debug-exit write prints the statistics first.

use crate::arch;
use crate::emu_println;
use alloc::string::String;
use lvbs_loader::layout::{DEBUG_EXIT_PORT, EXIT_FATAL, SHARED_BIT};
use tdcall::vmcall::{TdVmcall, VmcallOutput, VmcallStatus};
use tdcall::{L2ExitInfo, L2Vm};
use tdx_model::host::{HostDecision, HostVmm};

/// The host VMM of the emulated TD.
#[derive(Default)]
pub struct QemuHost {
    warned_msr: bool,
}

impl HostVmm for QemuHost {
    fn tdvmcall(&mut self, _vcpu: u32, call: &TdVmcall) -> VmcallOutput {
        match *call {
            TdVmcall::IoWrite { size, port, value } => {
                if port == DEBUG_EXIT_PORT {
                    emu_println!("debug-exit write {value:#x}: the TD ends the run");
                    crate::finish(value);
                }
                arch::port_out(port, size as u8, value);
                VmcallOutput::status(VmcallStatus::SUCCESS)
            }
            TdVmcall::IoRead { size, port } => {
                VmcallOutput::value(arch::port_in(port, size as u8) as u64)
            }
            TdVmcall::MmioRead { size, gpa } => {
                match crate::phys::mmio_read(gpa & !SHARED_BIT, size as u8) {
                    Some(v) => VmcallOutput::value(v),
                    None => {
                        log::warn!(
                            "host: MMIO read of {gpa:#x}/{} outside the device window",
                            size as u8
                        );
                        VmcallOutput::status(VmcallStatus::INVALID_OPERAND)
                    }
                }
            }
            TdVmcall::MmioWrite { size, gpa, value } => {
                if crate::phys::mmio_write(gpa & !SHARED_BIT, size as u8, value) {
                    VmcallOutput::status(VmcallStatus::SUCCESS)
                } else {
                    log::warn!(
                        "host: MMIO write of {gpa:#x}/{} outside the device window",
                        size as u8
                    );
                    VmcallOutput::status(VmcallStatus::INVALID_OPERAND)
                }
            }
            TdVmcall::Cpuid { leaf, subleaf } => {
                let r = arch::cpuid(leaf, subleaf);
                VmcallOutput {
                    status: VmcallStatus::SUCCESS,
                    r11: 0,
                    r12_r15: [r[0] as u64, r[1] as u64, r[2] as u64, r[3] as u64],
                }
            }
            // No interrupt sources exist; a halt returns at once.
            TdVmcall::Hlt { .. } => VmcallOutput::status(VmcallStatus::SUCCESS),
            TdVmcall::RdMsr { msr } | TdVmcall::WrMsr { msr, .. } => {
                if !self.warned_msr {
                    self.warned_msr = true;
                    log::warn!("host: MSR {msr:#x} requested; the host serves no MSRs (GHCI INVALID_OPERAND)");
                }
                VmcallOutput::status(VmcallStatus::INVALID_OPERAND)
            }
            TdVmcall::ReportFatalError {
                code,
                extended,
                message,
                ..
            } => {
                let end = message
                    .iter()
                    .position(|b| *b == 0)
                    .unwrap_or(message.len());
                let text = String::from_utf8_lossy(&message[..end]);
                emu_println!(
                    "TD reported a fatal error: code {code:#x} extended {extended:#x}: {text}"
                );
                crate::finish(EXIT_FATAL)
            }
            TdVmcall::MapGpa { .. }
            | TdVmcall::GetTdVmCallInfo { leaf: 0 }
            | TdVmcall::Wbinvd { .. }
            | TdVmcall::SetupEventNotifyInterrupt { .. } => {
                VmcallOutput::status(VmcallStatus::SUCCESS)
            }
            TdVmcall::GetTdVmCallInfo { .. }
            | TdVmcall::GetQuote { .. }
            | TdVmcall::Service { .. } => VmcallOutput::status(VmcallStatus::SUBFUNC_UNSUPPORTED),
        }
    }

    fn l2_exit_routed(&mut self, _vcpu: u32, _vm: L2Vm, _exit: &L2ExitInfo) -> HostDecision {
        HostDecision::ResumeL1
    }
}
