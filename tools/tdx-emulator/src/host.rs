//! `QemuHost`: the untrusted host VMM, backed by the QEMU machine's real
//! devices. TDG.VP.VMCALLs reach the UART, the debug-exit port and device
//! MMIO; a debug-exit write prints the statistics first, and a write to the
//! statistics-mark port ([`STATS_MARK_PORT`]) measures an interval.

use crate::arch;
use crate::emu_println;
use alloc::collections::BTreeMap;
use alloc::string::String;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use lvbs_loader::layout::{DEBUG_EXIT_PORT, EXIT_FATAL, SHARED_BIT};
use spin::Mutex;
use tdcall::vmcall::{TdVmcall, VmcallOutput, VmcallStatus};
use tdcall::{L2ExitInfo, L2Vm};
use tdx_model::host::{HostDecision, HostVmm};

/// Statistics-mark port (never forwarded to a device): a 32-bit write of 0
/// starts an interval; a write of `n > 0` ends it and prints what the
/// interval cost divided by `n` (`emu: mark: …`), so a guest can time `n`
/// repetitions of one operation (docs/emulator.md).
pub const STATS_MARK_PORT: u16 = 0xF8;

/// Start value [`MARK_COUNT_L1`]: the interval also counts L1's
/// instructions, by single-stepping L1 (`crate::l1`, "Counting L1
/// instructions"); slow, so for a few iterations only.
pub const MARK_COUNT_L1: u32 = 1 << 31;

/// Whether L1 is single-stepped now.
static COUNTING_L1: AtomicBool = AtomicBool::new(false);
/// L1 instructions stepped in the current interval: CPL 0, CPL 3.
static L1_INSNS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Whether the current interval counts L1's instructions.
pub fn counting_l1() -> bool {
    COUNTING_L1.load(Ordering::Relaxed)
}

/// One L1 instruction executed at `cpl` (0 or 3) while counting.
pub fn count_l1_instruction(cpl: u8) {
    L1_INSNS[usize::from(cpl == 3)].fetch_add(1, Ordering::Relaxed);
}

/// Counters at the start of a marked interval.
struct Mark {
    ns: u64,
    tdcalls: BTreeMap<u16, u64>,
    l2_to_l1: u64,
    l2_in_engine: u64,
    l2_svm: u64,
    l1_svm: u64,
}

static MARK: Mutex<Option<Mark>> = Mutex::new(None);

fn snapshot() -> Mark {
    let ns = crate::hpet::now_ns();
    crate::stats::with(|s| Mark {
        ns,
        tdcalls: s.tdcalls.clone(),
        l2_to_l1: s.l2_to_l1,
        l2_in_engine: s.l2_in_engine,
        l2_svm: s.l2_svm_exits.values().sum(),
        l1_svm: s.l1_svm_exits.values().sum(),
    })
}

/// `x / n` with two decimals.
struct Per(u64, u64);

impl core::fmt::Display for Per {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let hundredths = self.0 * 100 / self.1.max(1);
        write!(f, "{}.{:02}", hundredths / 100, hundredths % 100)
    }
}

fn stats_mark(n: u32) {
    let now = snapshot();
    if n & !MARK_COUNT_L1 == 0 {
        for c in &L1_INSNS {
            c.store(0, Ordering::Relaxed);
        }
        COUNTING_L1.store(n & MARK_COUNT_L1 != 0, Ordering::Relaxed);
        *MARK.lock() = Some(now);
        return;
    }
    let counted = COUNTING_L1.swap(false, Ordering::Relaxed);
    let n = n & !MARK_COUNT_L1;
    let Some(start) = MARK.lock().take() else {
        emu_println!("mark: end of an interval that never started");
        return;
    };
    let n = u64::from(n);
    let insns = if counted {
        let [r0, r3] = [0, 1].map(|i| L1_INSNS[i].load(Ordering::Relaxed));
        alloc::format!(
            ", L1 instructions {} (CPL 0 {}, CPL 3 {})",
            Per(r0 + r3, n),
            Per(r0, n),
            Per(r3, n)
        )
    } else {
        String::new()
    };
    let mut leaves = String::new();
    for (leaf, count) in &now.tdcalls {
        let d = count - start.tdcalls.get(leaf).copied().unwrap_or(0);
        if d > 0 {
            leaves += &alloc::format!(" leaf {leaf}: {}", Per(d, n));
        }
    }
    let tdcalls: u64 = now.tdcalls.values().sum::<u64>() - start.tdcalls.values().sum::<u64>();
    let (l2, l1) = (now.l2_svm - start.l2_svm, now.l1_svm - start.l1_svm);
    emu_println!(
        "mark: {n} iterations, per iteration: {} us, {} emulator exits ({} L2 + {} L1 #VMEXITs), {} L2 exits to L1, {} L2 exits completed in TDG.VP.ENTER, {} TDCALLs ({}){insns}",
        Per((now.ns - start.ns) / 1000, n),
        Per(l2 + l1, n),
        Per(l2, n),
        Per(l1, n),
        Per(now.l2_to_l1 - start.l2_to_l1, n),
        Per(now.l2_in_engine - start.l2_in_engine, n),
        Per(tdcalls, n),
        leaves.trim_start()
    );
}

/// Ports of devices the emulator itself depends on: the 8259 PIC pair (kept
/// masked), the 8254 PIT and port 0x61, the ELCR, and PCI configuration
/// space. A TD's I/O to them is answered as an absent device would be —
/// reads all ones, writes dropped — and logged once per port, so that no
/// guest (the probe path forwards every port L2 touches) can unmask the PIC
/// or reprogram the timer under the emulator.
pub fn host_owned_port(port: u16) -> bool {
    matches!(
        port,
        0x20..=0x21 | 0xA0..=0xA1 | 0x40..=0x43 | 0x61 | 0x4D0..=0x4D1 | 0xCF8..=0xCFF
    )
}

/// The host VMM of the emulated TD.
#[derive(Default)]
pub struct QemuHost {
    warned_msr: bool,
    refused_ports: BTreeMap<u16, u64>,
}

impl QemuHost {
    /// Records a refused access; logs the first one of each port.
    fn refuse_port(&mut self, port: u16, write: bool) {
        let n = self.refused_ports.entry(port).or_default();
        if *n == 0 {
            log::warn!(
                "host: TD {} of port {port:#x} refused (the emulator's own device; reads all ones)",
                if write { "write" } else { "read" }
            );
        }
        *n += 1;
    }
}

impl HostVmm for QemuHost {
    fn tdvmcall(&mut self, _vcpu: u32, call: &TdVmcall) -> VmcallOutput {
        match *call {
            TdVmcall::IoWrite { size, port, value } => {
                if port == DEBUG_EXIT_PORT {
                    emu_println!("debug-exit write {value:#x}: the TD ends the run");
                    crate::finish(value);
                }
                if port == STATS_MARK_PORT {
                    stats_mark(value);
                    return VmcallOutput::status(VmcallStatus::SUCCESS);
                }
                if host_owned_port(port) {
                    self.refuse_port(port, true);
                    return VmcallOutput::status(VmcallStatus::SUCCESS);
                }
                arch::port_out(port, size as u8, value);
                VmcallOutput::status(VmcallStatus::SUCCESS)
            }
            TdVmcall::IoRead { size, port } => {
                if host_owned_port(port) {
                    self.refuse_port(port, false);
                    let ones = match size as u8 {
                        1 => 0xFF,
                        2 => 0xFFFF,
                        _ => 0xFFFF_FFFF,
                    };
                    return VmcallOutput::value(ones);
                }
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
