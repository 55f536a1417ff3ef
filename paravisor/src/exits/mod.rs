//! L2 exit dispatch (§4) and the per-reason handlers.
//!
//! Each handler either completes the instruction (advances RIP past it, using
//! the exit's instruction length, R11[63:32], §2.3 — the module never advances
//! RIP on an L2→L1 exit, §4), injects an exception (RIP unchanged), or stops
//! the loop. Every value L2 controls (registers, instruction bytes, MSR and
//! port numbers) is treated as hostile: no panics, no unbounded work.

pub mod cpuid;
pub mod cr;
pub mod desc;
pub mod ept;
pub mod guest;
pub mod hlt;
pub mod io;
pub mod mmio;
pub mod msr;
pub mod vmcall;

use tdcall::field::vmcs;
use tdcall::leaves::VpVmcall;
use tdcall::vmcall::{TdVmcall, VmcallOutput};
use tdcall::vmx::{reason, EventType, InterruptionInfo};
use tdcall::{L2EnterGuestState, L2ExitInfo, L2Vm};

use crate::field;
use crate::handlers::ExitHandlers;
use crate::inject::Exception;
use crate::memory::Platform;
use crate::stats::ExitStats;
use crate::vcpu::{MmioRange, StopReason};

/// What the loop does after a handled exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitAction {
    /// Enter L2 again.
    Resume,
    /// Leave the loop.
    Stop(StopReason),
}

/// Handler result: `Err` for failures of L1's own calls.
pub type ExitResult = Result<ExitAction, StopReason>;

/// Everything an exit handler works on.
pub struct ExitCtx<'a, P: Platform> {
    /// The platform.
    pub platform: &'a mut P,
    /// The L2 VM that exited.
    pub vm: L2Vm,
    /// L2's registers (read back from the buffer).
    pub state: &'a mut L2EnterGuestState,
    /// The exit information (§2.3).
    pub exit: &'a L2ExitInfo,
    /// MMIO ranges of this vCPU.
    pub mmio: &'a [MmioRange],
    /// Set to flush L2 translations on the next entry.
    pub invalidate: &'a mut bool,
    /// Counters.
    pub stats: &'a mut ExitStats,
    /// An event was injected during this exit.
    pub injected: bool,
}

impl<P: Platform> ExitCtx<'_, P> {
    /// RIP += `len`.
    pub fn advance_rip(&mut self, len: u64) {
        self.state.rip = self.state.rip.wrapping_add(len);
    }

    /// RIP += the exit's instruction length (R11[63:32], §2.3).
    pub fn complete_instruction(&mut self) -> ExitResult {
        let len = self.exit.instruction_length as u64;
        self.advance_rip(len);
        Ok(ExitAction::Resume)
    }

    /// Injects `e` (RIP unchanged) and resumes.
    pub fn inject(&mut self, e: Exception) -> ExitResult {
        e.inject(self.platform, self.vm)?;
        self.injected = true;
        self.stats.injected += 1;
        Ok(ExitAction::Resume)
    }

    /// GPR `n` (0 = RAX … 15 = R15) of L2; numbers above 15 read as 0.
    pub fn gpr(&self, n: u8) -> u64 {
        self.state.gprs.get(n as usize).copied().unwrap_or(0)
    }

    /// Sets GPR `n`; numbers above 15 are ignored.
    pub fn set_gpr(&mut self, n: u8, value: u64) {
        if let Some(g) = self.state.gprs.get_mut(n as usize) {
            *g = value;
        }
    }

    /// Forwards a GHCI call to the host (§1.5). `Err` only if the TDCALL itself
    /// failed; a GHCI error status comes back in the output.
    pub fn vmcall(&mut self, call: TdVmcall) -> Result<VmcallOutput, StopReason> {
        tdcall::call(self.platform, &VpVmcall(call)).map_err(|error| {
            log::error!("TDG.VP.VMCALL {:#x} failed: {error}", call.subfunction());
            StopReason::VmcallFailed {
                subfunction: call.subfunction(),
                error,
            }
        })
    }

    /// Stop: an exit the core does not handle (fail closed).
    pub fn unhandled(&self, what: &str) -> ExitResult {
        log::error!(
            "unhandled L2 exit: {what}: reason {} qualification {:#x} RIP {:#x}",
            self.exit.reason,
            self.exit.qualification,
            self.state.rip
        );
        Ok(ExitAction::Stop(StopReason::UnhandledExit {
            reason: self.exit.reason,
            qualification: self.exit.qualification,
        }))
    }
}

/// Dispatches one exit (class 0 or 0x1100) on its basic reason (§4).
pub fn dispatch<P: Platform, H: ExitHandlers + ?Sized>(
    cx: &mut ExitCtx<'_, P>,
    handlers: &mut H,
) -> ExitResult {
    let exit_reason = cx.exit.exit_reason();
    let basic = exit_reason.basic();
    cx.stats.record_exit(basic);
    log::trace!(
        "L2 exit {} qual {:#x} gpa {:#x} rip {:#x}",
        basic,
        cx.exit.qualification,
        cx.exit.gpa,
        cx.state.rip
    );
    if exit_reason.is_entry_failure() {
        log::error!(
            "L2 VM entry failed: reason {:#x} qualification {:#x}",
            cx.exit.reason,
            cx.exit.qualification
        );
        return Ok(ExitAction::Stop(StopReason::EntryFailed {
            reason: cx.exit.reason,
            qualification: cx.exit.qualification,
        }));
    }
    let action = match basic {
        reason::CPUID => cpuid::handle(cx, handlers.cpuid_policy())?,
        reason::HLT => hlt::handle(cx)?,
        reason::VMCALL => vmcall::handle(cx, handlers.hypercalls())?,
        reason::CR_ACCESS => cr::handle(cx, handlers.cr_policy())?,
        reason::IO_INSTRUCTION => {
            let q = tdcall::vmx::IoQual::decode(cx.exit.qualification);
            match handlers.port_access(q.port, q.is_in) {
                crate::handlers::PortAccess::Forward => io::handle(cx)?,
                crate::handlers::PortAccess::Absent => io::local(cx, u32::MAX)?,
                crate::handlers::PortAccess::Value(v) => io::local(cx, v)?,
            }
        }
        reason::MSR_READ => msr::handle_read(cx, handlers.msr_policy())?,
        reason::MSR_WRITE => msr::handle_write(cx, handlers.msr_policy())?,
        reason::GDTR_IDTR_ACCESS | reason::LDTR_TR_ACCESS => desc::handle(cx)?,
        reason::EPT_VIOLATION => {
            if cx.mmio.iter().any(|r| r.contains(cx.exit.gpa)) {
                mmio::handle(cx)?
            } else {
                ept::handle(cx)?
            }
        }
        reason::XSETBV => {
            use crate::handlers::XsetbvOutcome;
            let xcr = cx.state.gprs[tdcall::enter::gpr::RCX] as u32;
            let value = (cx.state.gprs[tdcall::enter::gpr::RDX] << 32)
                | (cx.state.gprs[tdcall::enter::gpr::RAX] & 0xFFFF_FFFF);
            let outcome = if cx.exit.cpl != 0 {
                XsetbvOutcome::Fault
            } else {
                handlers.xsetbv(xcr, value)
            };
            match outcome {
                XsetbvOutcome::Done => cx.complete_instruction()?,
                XsetbvOutcome::Fault => {
                    log::warn!("L2 XSETBV {xcr:#x} <- {value:#x} refused: #GP(0)");
                    cx.inject(Exception::GeneralProtection)?
                }
                XsetbvOutcome::Unhandled => cx.unhandled("XSETBV")?,
            }
        }
        // Delivered to and handled by the host (§4); nothing left to do.
        reason::EXTERNAL_INTERRUPT => ExitAction::Resume,
        reason::TRIPLE_FAULT => {
            log::error!("L2 triple fault at RIP {:#x}", cx.state.rip);
            ExitAction::Stop(StopReason::TripleFault)
        }
        _ => cx.unhandled("exit reason")?,
    };
    if action == ExitAction::Resume {
        reinject_vectored_event(cx)?;
    }
    Ok(action)
}

/// An exit during event delivery (IDT-vectoring info valid, R10) loses the
/// event unless L1 re-injects it (§4 notes). If the handler injected its own
/// exception, that one wins (no #DF merging yet).
fn reinject_vectored_event<P: Platform>(cx: &mut ExitCtx<'_, P>) -> Result<(), StopReason> {
    let info = InterruptionInfo(cx.exit.idt_vectoring_info);
    if !info.is_valid() {
        return Ok(());
    }
    if cx.injected {
        log::warn!(
            "dropping IDT-vectored event {:#x}: handler injected its own exception",
            info.0
        );
        return Ok(());
    }
    // Bit 12 is undefined in IDT-vectoring info and reserved in the entry field.
    let entry = InterruptionInfo(info.0 & !(1 << 12));
    let software = matches!(
        entry.event_type(),
        t if t == EventType::SoftwareInterrupt as u8
            || t == EventType::PrivilegedSoftwareException as u8
            || t == EventType::SoftwareException as u8
    );
    if software {
        field::write_vmcs(
            cx.platform,
            cx.vm,
            vmcs::VM_ENTRY_INSTRUCTION_LEN,
            cx.exit.instruction_length as u64,
            0xFFFF_FFFF,
        )?;
    }
    let code = entry
        .has_error_code()
        .then_some(cx.exit.idt_vectoring_error);
    crate::inject::inject_event(cx.platform, cx.vm, entry, code)?;
    cx.injected = true;
    Ok(())
}
