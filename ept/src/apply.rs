//! Running a [`Plan`] against the TDX module, failing closed.
#![forbid(unsafe_code)]

use crate::plan::{AttrOp, Plan};
use crate::{LARGE_PAGE, PAGE};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use tdcall::attr::{AttrWrFlags, GpaAttr, GpaMapping, L2Attr, PageLevel};
use tdcall::leaves::{MemPageAttrWr, VpInvept};
use tdcall::{call, L2Vm, StatusCode, Tdcall, TdxError};

/// How often one call is retried on TDX_OPERAND_BUSY before giving up.
pub const MAX_BUSY_RETRIES: u32 = 1000;

/// The attribute bits a plan defines completely: R, W, Xs, Xu, VGP, PWA, SSS.
const DEFINED_BITS: L2Attr = L2Attr::from_bits_retain(0x7F);

/// What applying a plan cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Successful TDG.MEM.PAGE.ATTR.WR calls.
    pub calls: u32,
    /// Of those, 2 MiB calls.
    pub calls_2m: u32,
    /// Calls retried after TDX_OPERAND_BUSY.
    pub busy_retries: u32,
    /// 2 MiB calls split into 4 KiB calls after PAGE_SIZE_MISMATCH.
    pub splits: u32,
}

/// A failed apply, after the rollback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyError {
    /// The status that stopped the plan.
    pub error: TdxError,
    /// The call that failed.
    pub op: AttrOp,
    /// Pages whose earlier loosening was undone.
    pub restored: Vec<u64>,
    /// Pages whose alias had to be removed because restoring failed.
    pub removed: Vec<u64>,
    /// Pages whose state is unknown: even removal failed (the module is broken).
    pub unknown: Vec<u64>,
    /// What was spent before the failure.
    pub report: ApplyReport,
}

fn write<T: Tdcall + ?Sized>(
    tdcall: &mut T,
    vm: L2Vm,
    gpa: u64,
    level: PageLevel,
    attr: L2Attr,
    invept: bool,
    report: &mut ApplyReport,
) -> Result<(), TdxError> {
    let req = MemPageAttrWr {
        mapping: GpaMapping::new(gpa, level),
        attr: GpaAttr::for_vm(vm, (attr & DEFINED_BITS) | L2Attr::VALID),
        flags: AttrWrFlags::for_vm(vm, DEFINED_BITS, invept),
    };
    let mut retries = 0;
    loop {
        match call(tdcall, &req) {
            Ok(_) => {
                report.calls += 1;
                report.calls_2m += (level == PageLevel::Size2M) as u32;
                return Ok(());
            }
            Err(e) if e.is_busy() && retries < MAX_BUSY_RETRIES => {
                retries += 1;
                report.busy_retries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Applies `plan`. `changes` lists (page, old attribute, new attribute) and is
/// what a rollback restores. On error, every page the plan had already
/// loosened (new attribute not a subset of the old) is written back to its old
/// attribute, or stripped of its alias if that fails, and the VM's EPT caches
/// are flushed: no page ends more permissive than before.
pub fn apply<T: Tdcall + ?Sized>(
    tdcall: &mut T,
    vm: L2Vm,
    plan: &Plan,
    changes: &[(u64, L2Attr, L2Attr)],
) -> Result<ApplyReport, ApplyError> {
    let mut report = ApplyReport::default();
    let old: BTreeMap<u64, (L2Attr, L2Attr)> =
        changes.iter().map(|(p, o, n)| (*p, (*o, *n))).collect();
    let mut done: Vec<(u64, u64)> = Vec::new(); // completed [start, end)
    for op in &plan.ops {
        let result = match write(
            tdcall,
            vm,
            op.gpa,
            op.level,
            op.attr,
            op.invept,
            &mut report,
        ) {
            Err(e)
                if e.code() == StatusCode::PAGE_SIZE_MISMATCH && op.level == PageLevel::Size2M =>
            {
                // The host mapped this block with 4 KiB leaves: write each page.
                report.splits += 1;
                let pages = LARGE_PAGE / PAGE;
                let mut r = Ok(());
                for i in 0..pages {
                    let gpa = op.gpa + i * PAGE;
                    r = write(
                        tdcall,
                        vm,
                        gpa,
                        PageLevel::Size4K,
                        op.attr,
                        op.invept && i + 1 == pages,
                        &mut report,
                    );
                    if r.is_err() {
                        break;
                    }
                    done.push((gpa, gpa + PAGE));
                }
                r
            }
            Err(e) => Err(e),
            Ok(()) => {
                done.push((op.gpa, op.gpa + op.level.bytes()));
                Ok(())
            }
        };
        if let Err(error) = result {
            log::error!(
                "ept: ATTR.WR {:#x} ({:?}) failed: {error}; rolling back",
                op.gpa,
                op.level
            );
            return Err(rollback(tdcall, vm, *op, error, &done, &old, report));
        }
    }
    Ok(report)
}

fn rollback<T: Tdcall + ?Sized>(
    tdcall: &mut T,
    vm: L2Vm,
    op: AttrOp,
    error: TdxError,
    done: &[(u64, u64)],
    old: &BTreeMap<u64, (L2Attr, L2Attr)>,
    mut report: ApplyReport,
) -> ApplyError {
    let (mut restored, mut removed, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
    for (start, end) in done {
        for (page, (old_attr, new_attr)) in old.range(*start..*end) {
            if old_attr.contains(*new_attr) {
                continue; // tightened (or unchanged): already no more permissive
            }
            if write(
                tdcall,
                vm,
                *page,
                PageLevel::Size4K,
                *old_attr,
                false,
                &mut report,
            )
            .is_ok()
            {
                restored.push(*page);
            } else if write(
                tdcall,
                vm,
                *page,
                PageLevel::Size4K,
                L2Attr::empty(),
                false,
                &mut report,
            )
            .is_ok()
            {
                removed.push(*page);
            } else {
                unknown.push(*page);
            }
        }
    }
    let _ = call(tdcall, &VpInvept::vms(&[vm]));
    ApplyError {
        error,
        op,
        restored,
        removed,
        unknown,
        report,
    }
}
