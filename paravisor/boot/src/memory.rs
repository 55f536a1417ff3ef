//! Accepting private memory (TDG.MEM.PAGE.ACCEPT, §5.3) and aliasing the L2
//! region into L2 VM #1 (TDG.MEM.PAGE.ATTR.WR, §3.4).
//!
//! Nothing here logs or allocates: the bare-metal binary accepts its own `.bss`
//! with [`accept_range`] before its logger and heap (which live in `.bss`) exist.

use core::fmt;

use tdcall::leaves::{AcceptOutcome, MemPageAccept, MemPageAttrWr};
use tdcall::{
    AttrWrFlags, GpaAttr, GpaMapping, L2Attr, L2Vm, PageLevel, StatusCode, Tdcall, TdxError,
};

use crate::bootinfo::{L2Layout, LARGE_PAGE_SIZE, PAGE_SIZE};

/// How often a TDCALL that returned OPERAND_BUSY is retried before giving up.
pub const MAX_BUSY_RETRIES: u32 = 10_000;

/// Full access for L2: R|W|Xs|Xu (MBEC on) and VALID.
pub const L2_FULL: L2Attr = L2Attr::VALID
    .union(L2Attr::R)
    .union(L2Attr::W)
    .union(L2Attr::XS)
    .union(L2Attr::XU);
/// The RO test page: readable and user-executable only.
pub const L2_RO_TEST: L2Attr = L2Attr::VALID.union(L2Attr::R).union(L2Attr::XU);

/// A memory TDCALL that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemError {
    /// "TDG.MEM.PAGE.ACCEPT" or "TDG.MEM.PAGE.ATTR.WR".
    pub op: &'static str,
    /// GPA of the failing call.
    pub gpa: u64,
    /// Its page level.
    pub level: PageLevel,
    /// What the module said.
    pub error: MemErrorKind,
}

/// Why a memory operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemErrorKind {
    /// The TDCALL returned an error.
    Tdx(TdxError),
    /// ATTR.WR succeeded but the resulting attribute is not the requested one.
    AttrMismatch {
        /// Requested.
        want: L2Attr,
        /// Reported by the module.
        got: L2Attr,
    },
    /// The range is not 4 KiB aligned.
    Misaligned,
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let size = match self.level {
            PageLevel::Size4K => "4K",
            PageLevel::Size2M => "2M",
            PageLevel::Size1G => "1G",
        };
        write!(f, "{} {:#x} ({size}): ", self.op, self.gpa)?;
        match self.error {
            MemErrorKind::Tdx(e) => write!(f, "{e}"),
            MemErrorKind::AttrMismatch { want, got } => write!(
                f,
                "attribute is {:#06x}, wanted {:#06x}",
                got.bits(),
                want.bits()
            ),
            MemErrorKind::Misaligned => f.write_str("range not 4 KiB aligned"),
        }
    }
}

/// What [`accept_range`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptStats {
    /// 2 MiB pages newly accepted.
    pub accepted_2m: u64,
    /// 4 KiB pages newly accepted.
    pub accepted_4k: u64,
    /// 4 KiB pages that were accepted already (PAGE_ALREADY_ACCEPTED: left as they were).
    pub already_4k: u64,
    /// 2 MiB attempts that got PAGE_SIZE_MISMATCH and fell back to 4 KiB.
    pub fallbacks: u64,
}

/// Runs `f` until it stops returning OPERAND_BUSY (at most [`MAX_BUSY_RETRIES`] retries).
fn retry_busy<R>(mut f: impl FnMut() -> Result<R, TdxError>) -> Result<R, TdxError> {
    let mut tries = 0;
    loop {
        match f() {
            Err(e) if e.is_busy() && tries < MAX_BUSY_RETRIES => tries += 1,
            r => return r,
        }
    }
}

fn accept_one<T: Tdcall + ?Sized>(
    t: &mut T,
    gpa: u64,
    level: PageLevel,
) -> Result<AcceptOutcome, TdxError> {
    retry_busy(|| tdcall::call(t, &MemPageAccept { gpa, level }))
}

/// Accepts `[start, end)` (4 KiB aligned): 2 MiB at a time where a whole
/// aligned 2 MiB page fits, falling back to 4 KiB on PAGE_SIZE_MISMATCH, and
/// treating PAGE_ALREADY_ACCEPTED as success. Already-accepted pages keep
/// their contents (pages the host added, e.g. a loaded image); new pages are
/// zeroed by the module.
pub fn accept_range<T: Tdcall + ?Sized>(
    t: &mut T,
    start: u64,
    end: u64,
) -> Result<AcceptStats, MemError> {
    let err = |gpa, level, error| MemError {
        op: "TDG.MEM.PAGE.ACCEPT",
        gpa,
        level,
        error,
    };
    if !start.is_multiple_of(PAGE_SIZE) || !end.is_multiple_of(PAGE_SIZE) {
        return Err(err(start, PageLevel::Size4K, MemErrorKind::Misaligned));
    }
    let mut stats = AcceptStats::default();
    let mut gpa = start;
    while gpa < end {
        if gpa.is_multiple_of(LARGE_PAGE_SIZE) && end - gpa >= LARGE_PAGE_SIZE {
            match accept_one(t, gpa, PageLevel::Size2M) {
                Ok(AcceptOutcome::Accepted) => {
                    stats.accepted_2m += 1;
                    gpa += LARGE_PAGE_SIZE;
                    continue;
                }
                Ok(AcceptOutcome::AlreadyAccepted) => {
                    stats.already_4k += LARGE_PAGE_SIZE / PAGE_SIZE;
                    gpa += LARGE_PAGE_SIZE;
                    continue;
                }
                Err(e) if e.code() == StatusCode::PAGE_SIZE_MISMATCH => stats.fallbacks += 1,
                Err(e) => return Err(err(gpa, PageLevel::Size2M, MemErrorKind::Tdx(e))),
            }
            for page in (gpa..gpa + LARGE_PAGE_SIZE).step_by(PAGE_SIZE as usize) {
                accept_4k(t, page, &mut stats).map_err(|e| err(page, PageLevel::Size4K, e))?;
            }
            gpa += LARGE_PAGE_SIZE;
        } else {
            accept_4k(t, gpa, &mut stats).map_err(|e| err(gpa, PageLevel::Size4K, e))?;
            gpa += PAGE_SIZE;
        }
    }
    Ok(stats)
}

fn accept_4k<T: Tdcall + ?Sized>(
    t: &mut T,
    gpa: u64,
    stats: &mut AcceptStats,
) -> Result<(), MemErrorKind> {
    match accept_one(t, gpa, PageLevel::Size4K).map_err(MemErrorKind::Tdx)? {
        AcceptOutcome::Accepted => stats.accepted_4k += 1,
        AcceptOutcome::AlreadyAccepted => stats.already_4k += 1,
    }
    Ok(())
}

/// What [`alias_l2_region`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AliasStats {
    /// ATTR.WR calls at 2 MiB.
    pub writes_2m: u64,
    /// ATTR.WR calls at 4 KiB.
    pub writes_4k: u64,
}

/// One TDG.MEM.PAGE.ATTR.WR for `vm` that changes R|W|Xs|Xu to `attr` and
/// checks the module reports exactly `attr` back.
pub fn attr_write<T: Tdcall + ?Sized>(
    t: &mut T,
    vm: L2Vm,
    gpa: u64,
    level: PageLevel,
    attr: L2Attr,
    invept: bool,
) -> Result<(), MemError> {
    let err = |error| MemError {
        op: "TDG.MEM.PAGE.ATTR.WR",
        gpa,
        level,
        error,
    };
    let req = MemPageAttrWr {
        mapping: GpaMapping::new(gpa, level),
        attr: GpaAttr::for_vm(vm, attr),
        flags: AttrWrFlags::for_vm(vm, L2Attr::PRESENT, invept),
    };
    let out = retry_busy(|| tdcall::call(t, &req)).map_err(|e| err(MemErrorKind::Tdx(e)))?;
    let got = out.attr.slot(vm);
    if got != attr {
        return Err(err(MemErrorKind::AttrMismatch { want: attr, got }));
    }
    Ok(())
}

/// Aliases the whole L2 region into `vm`: R|W|Xs|Xu everywhere except the RO
/// test page (R|Xu). 2 MiB pages where the L1 mapping allows it (falling back
/// to 4 KiB on PAGE_SIZE_MISMATCH), 4 KiB in the 2 MiB page that holds the RO
/// test page. The RO test page is written last, with the per-VM INVEPT flag,
/// so one flush covers every change. Pages outside the region — L1's own — are
/// never aliased.
pub fn alias_l2_region<T: Tdcall + ?Sized>(
    t: &mut T,
    vm: L2Vm,
    layout: &L2Layout,
) -> Result<AliasStats, MemError> {
    let mut stats = AliasStats::default();
    let ro_chunk = layout.ro_page & !(LARGE_PAGE_SIZE - 1);
    for chunk in (layout.base..layout.end()).step_by(LARGE_PAGE_SIZE as usize) {
        if chunk != ro_chunk {
            match attr_write(t, vm, chunk, PageLevel::Size2M, L2_FULL, false) {
                Ok(()) => {
                    stats.writes_2m += 1;
                    continue;
                }
                Err(MemError {
                    error: MemErrorKind::Tdx(e),
                    ..
                }) if e.code() == StatusCode::PAGE_SIZE_MISMATCH => {}
                Err(e) => return Err(e),
            }
        }
        for page in (chunk..chunk + LARGE_PAGE_SIZE).step_by(PAGE_SIZE as usize) {
            if page != layout.ro_page {
                attr_write(t, vm, page, PageLevel::Size4K, L2_FULL, false)?;
                stats.writes_4k += 1;
            }
        }
    }
    attr_write(t, vm, layout.ro_page, PageLevel::Size4K, L2_RO_TEST, true)?;
    stats.writes_4k += 1;
    Ok(stats)
}
