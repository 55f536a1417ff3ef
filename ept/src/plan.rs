//! Planning the fewest TDG.MEM.PAGE.ATTR.WR calls for a change (tdx-abi.md §3.4).
#![forbid(unsafe_code)]

use crate::{LARGE_PAGE, PAGE};
use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use tdcall::attr::{L2Attr, PageLevel};
use tdcall::L2Vm;

/// One TDG.MEM.PAGE.ATTR.WR call: set `vm`'s attribute of the 4 KiB or 2 MiB
/// page at `gpa` to exactly `attr` (an empty attribute removes the alias).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttrOp {
    /// Page address, aligned to `level`.
    pub gpa: u64,
    /// 4 KiB or 2 MiB.
    pub level: PageLevel,
    /// The attribute without VALID.
    pub attr: L2Attr,
    /// Flush the VM's EPT caches after this call (set on the last call only).
    pub invept: bool,
}

/// An ordered list of calls for one L2 VM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The VM the calls target.
    pub vm: Option<L2Vm>,
    /// The calls, in order.
    pub ops: Vec<AttrOp>,
}

impl Plan {
    /// Number of calls.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when nothing needs to change.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Plans `changes` (page, old attribute, new attribute) for `vm`.
///
/// `target` gives the attribute every page will have after the change (the new
/// one for changed pages, the current one elsewhere). A 2 MiB block that
/// contains a change and whose 512 pages all end up with the same attribute is
/// written with one 2 MiB call; otherwise each changed page gets a 4 KiB call.
/// Only the last call flushes.
pub fn plan(vm: L2Vm, changes: &[(u64, L2Attr, L2Attr)], target: impl Fn(u64) -> L2Attr) -> Plan {
    let changed: BTreeSet<u64> = changes
        .iter()
        .filter(|(_, old, new)| old != new)
        .map(|(p, _, _)| p & !(PAGE - 1))
        .collect();
    let mut ops = Vec::new();
    let mut blocks = changed
        .iter()
        .map(|p| p & !(LARGE_PAGE - 1))
        .collect::<Vec<_>>();
    blocks.dedup();
    for block in blocks {
        let first = target(block);
        let uniform = (1..LARGE_PAGE / PAGE).all(|i| target(block + i * PAGE) == first);
        if uniform {
            ops.push(AttrOp {
                gpa: block,
                level: PageLevel::Size2M,
                attr: first,
                invept: false,
            });
        } else {
            ops.extend(changed.range(block..block + LARGE_PAGE).map(|p| AttrOp {
                gpa: *p,
                level: PageLevel::Size4K,
                attr: target(*p),
                invept: false,
            }));
        }
    }
    if let Some(last) = ops.last_mut() {
        last.invept = true;
    }
    Plan { vm: Some(vm), ops }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RW: L2Attr = L2Attr::R.union(L2Attr::W);
    const RX: L2Attr = L2Attr::R.union(L2Attr::XS);

    #[test]
    fn whole_block_is_one_call() {
        let changes: Vec<_> = (0..512)
            .map(|i| (0x20_0000 + i * PAGE, L2Attr::empty(), RW))
            .collect();
        let p = plan(L2Vm::Vm1, &changes, |g| {
            if (0x20_0000..0x40_0000).contains(&g) {
                RW
            } else {
                L2Attr::empty()
            }
        });
        assert_eq!(
            p.ops,
            [AttrOp {
                gpa: 0x20_0000,
                level: PageLevel::Size2M,
                attr: RW,
                invept: true
            }]
        );
    }

    #[test]
    fn mixed_block_is_per_page() {
        // Two pages become text inside a block that stays data.
        let changes = [(0x20_1000, RW, RX), (0x20_2000, RW, RX)];
        let p = plan(L2Vm::Vm1, &changes, |g| {
            if g == 0x20_1000 || g == 0x20_2000 {
                RX
            } else {
                RW
            }
        });
        assert_eq!(p.len(), 2);
        assert!(p
            .ops
            .iter()
            .all(|o| o.level == PageLevel::Size4K && o.attr == RX));
        assert_eq!(p.ops.iter().filter(|o| o.invept).count(), 1);
        assert!(p.ops[1].invept);
    }

    #[test]
    fn unchanged_pages_cost_nothing() {
        let p = plan(L2Vm::Vm1, &[(0x1000, RW, RW)], |_| RW);
        assert!(p.is_empty());
    }

    #[test]
    fn uniform_block_covers_unchanged_neighbours() {
        // One page changes and the block becomes uniform: one 2 MiB call.
        let p = plan(L2Vm::Vm1, &[(0x40_5000, L2Attr::R, RW)], |_| RW);
        assert_eq!(
            p.ops,
            [AttrOp {
                gpa: 0x40_0000,
                level: PageLevel::Size2M,
                attr: RW,
                invept: true
            }]
        );
    }
}
