//! The TDG.VP.ENTER loop (§2.2, §2.3).
//!
//! A [`Vcpu`] owns the L2 register state of one L2 VM on this L1 vCPU. Before
//! each TDG.VP.ENTER it writes the 256-byte guest-state buffer to its private
//! GPA with [`L1Memory::write`]; after the call it reads the buffer back, since
//! the module stores L2's GPRs, RIP, RSP, RFLAGS, SSP and interrupt status there
//! on every exit (§2.2). Exit handlers edit [`Vcpu::state`] and the next entry
//! carries the edit.
//!
//! Status classes (§2.3): class 0 and 0x1100 (host-routed) are dispatched on
//! the exit reason; 0x1101 re-enters (the host already completed L2's
//! TDVMCALL); 0x1102 and 0x1120 run [`ExitHandlers::pending_interrupt`] and
//! re-enter; an error status stops the loop.

use alloc::vec::Vec;
use core::fmt;

use tdcall::leaves::{VpEnter, VpEnterResult};
use tdcall::{
    EnterOutcome, InvdTranslations, L2EnterGuestState, L2ExitInfo, L2Vm, TdxError, VpEnterFlags,
};

use crate::exits::{self, ExitAction};
use crate::field::FieldAccessError;
use crate::handlers::ExitHandlers;
use crate::memory::{MemoryError, Platform};
use crate::stats::ExitStats;

/// A GPA range the vCPU emulates as MMIO: EPT violations inside it are decoded
/// and forwarded to the host (see [`crate::exits::mmio`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioRange {
    /// First GPA.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
}

impl MmioRange {
    /// Whether `gpa` lies inside the range.
    pub const fn contains(&self, gpa: u64) -> bool {
        gpa >= self.base && gpa - self.base < self.size
    }
}

/// Why [`Vcpu::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// L2 executed HLT with RFLAGS.IF = 0 (the host was told, §1.5 Instruction.HLT).
    Halted,
    /// The loop made `max_entries` TDG.VP.ENTER calls.
    ExitLimit,
    /// L2 triple-faulted (exit reason 2).
    TripleFault,
    /// VM entry failed (exit reason bit 31, e.g. 33 invalid guest state, §2.3).
    EntryFailed {
        /// Full exit reason.
        reason: u32,
        /// Exit qualification.
        qualification: u64,
    },
    /// An exit reason (or form of it) the core does not handle: fail closed.
    UnhandledExit {
        /// Full exit reason.
        reason: u32,
        /// Exit qualification.
        qualification: u64,
    },
    /// TDG.VP.ENTER returned an error status.
    EnterFailed(TdxError),
    /// TDG.VP.VMCALL itself failed (not a GHCI status from the host).
    VmcallFailed {
        /// GHCI sub-function.
        subfunction: u64,
        /// The module's status.
        error: TdxError,
    },
    /// A TDG.VP.RD/WR the loop needed failed.
    Field(FieldAccessError),
    /// L1 memory (the guest-state buffer) could not be accessed.
    Memory(MemoryError),
}

impl From<FieldAccessError> for StopReason {
    fn from(e: FieldAccessError) -> Self {
        StopReason::Field(e)
    }
}

impl From<MemoryError> for StopReason {
    fn from(e: MemoryError) -> Self {
        StopReason::Memory(e)
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Halted => f.write_str("L2 halted with interrupts disabled"),
            StopReason::ExitLimit => f.write_str("exit limit reached"),
            StopReason::TripleFault => f.write_str("L2 triple fault"),
            StopReason::EntryFailed {
                reason,
                qualification,
            } => write!(
                f,
                "L2 VM entry failed: reason {reason:#x}, qualification {qualification:#x}"
            ),
            StopReason::UnhandledExit {
                reason,
                qualification,
            } => write!(
                f,
                "unhandled L2 exit reason {} ({reason:#x}), qualification {qualification:#x}",
                *reason as u16
            ),
            StopReason::EnterFailed(e) => write!(f, "TDG.VP.ENTER failed: {e}"),
            StopReason::VmcallFailed { subfunction, error } => {
                write!(f, "TDG.VP.VMCALL {subfunction:#x} failed: {error}")
            }
            StopReason::Field(e) => write!(f, "{e}"),
            StopReason::Memory(e) => write!(f, "L1 memory: {e}"),
        }
    }
}

/// The buffer GPA is not 256-byte aligned (§2.2 check 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MisalignedBuffer(pub u64);

/// One L2 VM's virtual CPU on this L1 vCPU.
#[derive(Clone, Debug)]
pub struct Vcpu {
    vm: L2Vm,
    guest_state_gpa: u64,
    /// L2's registers: written to the buffer before each entry, read back after.
    pub state: L2EnterGuestState,
    mmio: Vec<MmioRange>,
    invalidate: bool,
    /// Exit counters.
    pub stats: ExitStats,
    pub(crate) last_exit: Option<L2ExitInfo>,
}

impl Vcpu {
    /// A vCPU for `vm` whose guest-state buffer lives at `guest_state_gpa`
    /// (private, 256-byte aligned). The first entry flushes L2 translations.
    pub fn new(
        vm: L2Vm,
        guest_state_gpa: u64,
        state: L2EnterGuestState,
        mmio: Vec<MmioRange>,
    ) -> Result<Self, MisalignedBuffer> {
        if guest_state_gpa & (L2EnterGuestState::ALIGN - 1) != 0 {
            return Err(MisalignedBuffer(guest_state_gpa));
        }
        Ok(Vcpu {
            vm,
            guest_state_gpa,
            state,
            mmio,
            invalidate: true,
            stats: ExitStats::default(),
            last_exit: None,
        })
    }

    /// The L2 VM.
    pub fn vm(&self) -> L2Vm {
        self.vm
    }

    /// GPA of the guest-state buffer.
    pub fn guest_state_gpa(&self) -> u64 {
        self.guest_state_gpa
    }

    /// The MMIO ranges.
    pub fn mmio_ranges(&self) -> &[MmioRange] {
        &self.mmio
    }

    /// Adds an MMIO range.
    pub fn add_mmio_range(&mut self, range: MmioRange) {
        self.mmio.push(range);
    }

    /// The exit information of the last exit that was dispatched.
    pub fn last_exit(&self) -> Option<&L2ExitInfo> {
        self.last_exit.as_ref()
    }

    /// Request INVEPT single-context on the next entry: call after L1 changed
    /// L2 page attributes without the per-VM INVEPT flag (§2.9).
    pub fn invalidate_translations(&mut self) {
        self.invalidate = true;
    }

    /// Whether the next entry will flush (first entry, or after a request).
    pub fn invalidation_pending(&self) -> bool {
        self.invalidate
    }

    /// One TDG.VP.ENTER: write the buffer, enter, read the buffer back.
    pub fn enter<P: Platform + ?Sized>(
        &mut self,
        platform: &mut P,
    ) -> Result<VpEnterResult, StopReason> {
        platform.write(self.guest_state_gpa, &self.state.to_bytes())?;
        let invd = if self.invalidate {
            InvdTranslations::InveptSingleContext
        } else {
            InvdTranslations::None
        };
        let req = VpEnter {
            flags: VpEnterFlags { vm: self.vm, invd },
            guest_state_gpa: self.guest_state_gpa,
        };
        self.stats.entries += 1;
        let result = tdcall::call(platform, &req).map_err(|e| {
            log::error!("TDG.VP.ENTER VM {} failed: {e}", self.vm.index());
            StopReason::EnterFailed(e)
        })?;
        self.stats.record_outcome(result.outcome);
        if result.outcome != EnterOutcome::NotEnteredPendingInterrupt {
            // L2 ran (§2.2 step 4 passed): the flush happened and the module
            // wrote the buffer back.
            self.invalidate = false;
            let mut buf = [0u8; 256];
            platform.read(self.guest_state_gpa, &mut buf)?;
            self.state = L2EnterGuestState::from_bytes(&buf);
        }
        Ok(result)
    }

    /// Handles one TDG.VP.ENTER result. `Ok(())` means "enter again".
    pub fn handle<P: Platform, H: ExitHandlers + ?Sized>(
        &mut self,
        platform: &mut P,
        handlers: &mut H,
        result: &VpEnterResult,
    ) -> Result<(), StopReason> {
        match result.outcome {
            EnterOutcome::L2ToL1 | EnterOutcome::HostRoutedAsync => {
                self.last_exit = Some(result.exit);
                let mut cx = exits::ExitCtx {
                    platform,
                    vm: self.vm,
                    state: &mut self.state,
                    exit: &result.exit,
                    mmio: &self.mmio,
                    invalidate: &mut self.invalidate,
                    stats: &mut self.stats,
                    injected: false,
                };
                match exits::dispatch(&mut cx, handlers) {
                    Ok(ExitAction::Resume) => Ok(()),
                    Ok(ExitAction::Stop(s)) | Err(s) => Err(s),
                }
            }
            EnterOutcome::HostRoutedTdvmcall => {
                log::trace!("class 0x1101: host completed L2 TDVMCALL, re-entering");
                Ok(())
            }
            EnterOutcome::PendingInterruptExit | EnterOutcome::NotEnteredPendingInterrupt => {
                handlers.pending_interrupt(platform);
                Ok(())
            }
        }
    }

    /// Runs L2 until a handler stops it, an error occurs, or `max_entries`
    /// TDG.VP.ENTER calls were made ([`StopReason::ExitLimit`]).
    pub fn run<P: Platform, H: ExitHandlers + ?Sized>(
        &mut self,
        platform: &mut P,
        handlers: &mut H,
        max_entries: u64,
    ) -> StopReason {
        for _ in 0..max_entries {
            let stop = self
                .enter(platform)
                .and_then(|r| self.handle(platform, handlers, &r));
            if let Err(stop) = stop {
                match stop {
                    StopReason::Halted => log::info!("L2 VM {} halted", self.vm.index()),
                    _ => log::error!("L2 VM {} stopped: {stop}", self.vm.index()),
                }
                return stop;
            }
        }
        log::warn!(
            "L2 VM {}: exit limit of {max_entries} entries reached",
            self.vm.index()
        );
        StopReason::ExitLimit
    }
}
