//! L2 memory permissions for the paravisor.
//!
//! * [`state`]: the typed page-state machine. A page of L2 memory is unmapped,
//!   kernel data, kernel text, rodata, user-executable, sealed or
//!   paravisor-private; only legal transitions are accepted: nothing is ever
//!   writable and supervisor-executable at once, sealed pages never change, and
//!   after end of boot nothing is loosened except by a validated request.
//! * [`plan`]: turns target attributes into the fewest TDG.MEM.PAGE.ATTR.WR
//!   calls (2 MiB entries where a whole aligned 2 MiB block has one attribute,
//!   4 KiB entries otherwise, one EPT flush at the end).
//! * [`apply`]: runs a plan through any [`tdcall::Tdcall`], retrying on
//!   TDX_OPERAND_BUSY, splitting 2 MiB entries the host mapped with 4 KiB
//!   leaves, and failing closed: after an error no page is more permissive than
//!   it was before the request.
//! * [`Ept`] ties them together for one L2 VM.
//!
//! MBEC (secondary control bit 22, tdx-abi.md §3.2): with it on, Xs gates
//! supervisor fetches and Xu user fetches. The LVBS convention (heki-lvbs-abi.md
//! §5.3) makes every readable page user-executable; [`Policy::user_exec_on_readable`]
//! selects it.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod apply;
pub mod plan;
pub mod state;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use tdcall::attr::L2Attr;
use tdcall::{L2Vm, Tdcall};

pub use apply::{ApplyError, ApplyReport};
pub use plan::{AttrOp, Plan};
pub use state::{Authority, PageState, Phase, PolicyError, SealedKind};

/// 4 KiB.
pub const PAGE: u64 = 0x1000;
/// 2 MiB.
pub const LARGE_PAGE: u64 = 0x20_0000;

/// How states become L2 attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// MBEC is on for the VM: Xs and Xu are distinct.
    pub mbec: bool,
    /// The LVBS convention: every readable page is also user-executable (Xu).
    /// Only meaningful with MBEC.
    pub user_exec_on_readable: bool,
}

impl Policy {
    /// MBEC on with the LVBS convention.
    pub const LVBS: Policy = Policy {
        mbec: true,
        user_exec_on_readable: true,
    };

    /// The L2 attribute (without VALID) a page in `state` gets.
    pub fn attr(&self, state: PageState) -> L2Attr {
        let mut a = state.base_attr();
        if self.mbec && self.user_exec_on_readable && a.contains(L2Attr::R) {
            a |= L2Attr::XU;
        }
        if !self.mbec && a.contains(L2Attr::XU) {
            // Without MBEC, Xs gates every fetch and Xu is ignored (§3.2): a
            // user-executable page cannot be expressed without making it
            // supervisor-executable, which this policy refuses to do.
            a.remove(L2Attr::XU);
        }
        a
    }
}

/// A half-open GPA range `[start, end)` of whole 4 KiB pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpaRange {
    /// First byte, 4 KiB aligned.
    pub start: u64,
    /// One past the last byte, 4 KiB aligned.
    pub end: u64,
}

impl GpaRange {
    /// A range; `None` unless both ends are page aligned and `start < end`.
    pub fn new(start: u64, end: u64) -> Option<Self> {
        (start.is_multiple_of(PAGE) && end.is_multiple_of(PAGE) && start < end)
            .then_some(GpaRange { start, end })
    }

    /// The page addresses in the range.
    pub fn pages(&self) -> impl Iterator<Item = u64> {
        (self.start / PAGE..self.end / PAGE).map(|p| p * PAGE)
    }

    /// Number of 4 KiB pages.
    pub fn len_pages(&self) -> u64 {
        (self.end - self.start) / PAGE
    }
}

/// Why [`Ept::transition`] failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EptError {
    /// The request broke the state machine's rules; nothing changed.
    Policy(PolicyError),
    /// The TDX module refused the change; see the report for what was undone.
    Apply(ApplyError),
}

/// The permission state of one L2 VM's memory, kept in step with the TDX module.
#[derive(Clone, Debug)]
pub struct Ept {
    vm: L2Vm,
    policy: Policy,
    phase: Phase,
    /// Pages not present here are unmapped.
    pages: BTreeMap<u64, PageState>,
    /// Upper bound on pages one request may touch (guest input is hostile).
    pub max_pages_per_request: u64,
}

impl Ept {
    /// Empty state (every page unmapped, boot phase).
    pub fn new(vm: L2Vm, policy: Policy) -> Self {
        Ept {
            vm,
            policy,
            phase: Phase::Boot,
            pages: BTreeMap::new(),
            max_pages_per_request: 1 << 20,
        }
    }

    /// The state of the page holding `gpa`.
    pub fn state(&self, gpa: u64) -> PageState {
        self.pages
            .get(&(gpa & !(PAGE - 1)))
            .copied()
            .unwrap_or(PageState::Unmapped)
    }

    /// The attribute the module should hold for the page at `gpa`.
    pub fn attr(&self, gpa: u64) -> L2Attr {
        self.policy.attr(self.state(gpa))
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// End of boot: from now on only validated requests may loosen anything.
    pub fn end_boot(&mut self) {
        self.phase = Phase::Locked;
    }

    /// Checks a request against the rules without changing anything.
    pub fn check(
        &self,
        range: GpaRange,
        to: PageState,
        authority: Authority,
    ) -> Result<(), PolicyError> {
        if range.len_pages() > self.max_pages_per_request {
            return Err(PolicyError::TooLarge);
        }
        for page in range.pages() {
            state::check_transition(self.phase, self.policy, self.state(page), to, authority)
                .map_err(|e| e.at(page))?;
        }
        Ok(())
    }

    /// Moves every page of `range` to `to`; see [`Ept::transition_batch`].
    pub fn transition<T: Tdcall + ?Sized>(
        &mut self,
        tdcall: &mut T,
        range: GpaRange,
        to: PageState,
        authority: Authority,
    ) -> Result<ApplyReport, EptError> {
        self.transition_batch(tdcall, &[(range, to)], authority)
    }

    /// Applies several (range, state) requests as one change (what one HEKI
    /// PROTECT_MEMORY or VALIDATE_MODULE call asks for): checks every page of
    /// every request first (a refused request changes nothing), plans the
    /// fewest ATTR.WR calls for the combined result, applies them, and records
    /// the new states. Later requests win where ranges overlap. On an apply
    /// error the module state is rolled back so that no page is more
    /// permissive than before; pages whose rollback failed are recorded as
    /// unmapped (their alias was removed).
    pub fn transition_batch<T: Tdcall + ?Sized>(
        &mut self,
        tdcall: &mut T,
        requests: &[(GpaRange, PageState)],
        authority: Authority,
    ) -> Result<ApplyReport, EptError> {
        let total: u64 = requests.iter().map(|(r, _)| r.len_pages()).sum();
        if total > self.max_pages_per_request {
            return Err(EptError::Policy(PolicyError::TooLarge));
        }
        let mut target: BTreeMap<u64, PageState> = BTreeMap::new();
        for (range, to) in requests {
            for page in range.pages() {
                target.insert(page, *to);
            }
        }
        for (page, to) in &target {
            state::check_transition(self.phase, self.policy, self.state(*page), *to, authority)
                .map_err(|e| EptError::Policy(e.at(*page)))?;
        }
        let changes: Vec<(u64, L2Attr, L2Attr)> = target
            .iter()
            .map(|(p, to)| (*p, self.attr(*p), self.policy.attr(*to)))
            .filter(|(_, old, new)| old != new)
            .collect();
        let plan = plan::plan(self.vm, &changes, |gpa| match target.get(&gpa) {
            Some(to) => self.policy.attr(*to),
            None => self.attr(gpa),
        });
        match apply::apply(tdcall, self.vm, &plan, &changes) {
            Ok(report) => {
                for (page, to) in target {
                    self.set(page, to);
                }
                Ok(report)
            }
            Err(err) => {
                for page in &err.removed {
                    self.set(*page, PageState::Unmapped);
                }
                Err(EptError::Apply(err))
            }
        }
    }

    fn set(&mut self, page: u64, state: PageState) {
        if state == PageState::Unmapped {
            self.pages.remove(&page);
        } else {
            self.pages.insert(page, state);
        }
    }
}
