//! Exit counters, for measurements and for tests that check what the loop did.

use tdcall::EnterOutcome;

/// Highest basic exit reason counted individually (TDCALL, §4).
pub const MAX_COUNTED_REASON: u16 = 77;

/// Per-vCPU counters of the TDG.VP.ENTER loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitStats {
    /// TDG.VP.ENTER calls made.
    pub entries: u64,
    /// Exits dispatched (class 0 and 0x1100), by basic exit reason 0..=77.
    pub by_reason: [u64; MAX_COUNTED_REASON as usize + 1],
    /// Dispatched exits with a basic reason above 77.
    pub other_reasons: u64,
    /// Class 0x1100 (host-routed, processed like a normal exit).
    pub host_routed_async: u64,
    /// Class 0x1101 (host completed L2's TDVMCALL; re-entered).
    pub host_routed_tdvmcall: u64,
    /// Class 0x1102 and 0x1120 (L1 interrupt pending).
    pub pending_interrupt: u64,
    /// Exceptions the handlers injected into L2.
    pub injected: u64,
}

impl Default for ExitStats {
    fn default() -> Self {
        ExitStats {
            entries: 0,
            by_reason: [0; MAX_COUNTED_REASON as usize + 1],
            other_reasons: 0,
            host_routed_async: 0,
            host_routed_tdvmcall: 0,
            pending_interrupt: 0,
            injected: 0,
        }
    }
}

impl ExitStats {
    /// Exits dispatched with basic reason `reason`.
    pub fn count(&self, reason: u16) -> u64 {
        self.by_reason.get(reason as usize).copied().unwrap_or(0)
    }

    /// All dispatched exits.
    pub fn total_exits(&self) -> u64 {
        self.by_reason.iter().sum::<u64>() + self.other_reasons
    }

    pub(crate) fn record_outcome(&mut self, outcome: EnterOutcome) {
        match outcome {
            EnterOutcome::L2ToL1 => {}
            EnterOutcome::HostRoutedAsync => self.host_routed_async += 1,
            EnterOutcome::HostRoutedTdvmcall => self.host_routed_tdvmcall += 1,
            EnterOutcome::PendingInterruptExit | EnterOutcome::NotEnteredPendingInterrupt => {
                self.pending_interrupt += 1
            }
        }
    }

    pub(crate) fn record_exit(&mut self, basic: u16) {
        match self.by_reason.get_mut(basic as usize) {
            Some(c) => *c += 1,
            None => self.other_reasons += 1,
        }
    }
}
