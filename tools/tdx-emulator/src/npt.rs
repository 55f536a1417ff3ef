//! Nested page tables (AMD NPT, 4-level, 4 KiB leaves). Every level has
//! P|W|U (nested walks are user accesses, see the SVM/TCG probe) and the
//! accessed bit, leaves also the dirty bit, so the CPU never writes them.

use crate::page::Page;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;

pub const P: u64 = 1;
pub const W: u64 = 2;
pub const U: u64 = 4;
pub const A: u64 = 1 << 5;
pub const D: u64 = 1 << 6;
pub const NX: u64 = 1 << 63;
const TABLE: u64 = P | W | U | A;

/// One nested page table tree.
pub struct Npt {
    pml4: Box<Page>,
    pdpts: BTreeMap<u64, Box<Page>>,
    pds: BTreeMap<u64, Box<Page>>,
    pts: BTreeMap<u64, Box<Page>>,
}

impl Npt {
    /// An empty tree (nothing mapped).
    pub fn new() -> Self {
        Npt {
            pml4: Page::new(),
            pdpts: BTreeMap::new(),
            pds: BTreeMap::new(),
            pts: BTreeMap::new(),
        }
    }

    /// N_CR3.
    pub fn root(&self) -> u64 {
        self.pml4.pa()
    }

    fn table<'a>(
        map: &'a mut BTreeMap<u64, Box<Page>>,
        parent: &Page,
        parent_index: usize,
        key: u64,
    ) -> &'a Page {
        map.entry(key).or_insert_with(|| {
            let t = Page::new();
            parent.set(parent_index, t.pa() | TABLE);
            t
        })
    }

    /// Sets the 4 KiB leaf for `gpa` to `entry` (host address | flags, or 0).
    pub fn set_leaf(&mut self, gpa: u64, entry: u64) {
        let i4 = ((gpa >> 39) & 0x1FF) as usize;
        let i3 = ((gpa >> 30) & 0x1FF) as usize;
        let i2 = ((gpa >> 21) & 0x1FF) as usize;
        let i1 = ((gpa >> 12) & 0x1FF) as usize;
        if entry == 0 && !self.pts.contains_key(&(gpa >> 21)) {
            return;
        }
        let pdpt = Self::table(&mut self.pdpts, &self.pml4, i4, gpa >> 39);
        let pd = Self::table(&mut self.pds, pdpt, i3, gpa >> 30);
        let pt = Self::table(&mut self.pts, pd, i2, gpa >> 21);
        pt.set(i1, entry);
    }

    /// The 4 KiB leaf for `gpa` (0 if none).
    pub fn leaf(&self, gpa: u64) -> u64 {
        self.pts
            .get(&(gpa >> 21))
            .map_or(0, |pt| pt.get(((gpa >> 12) & 0x1FF) as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_and_intermediate_tables() {
        let mut n = Npt::new();
        assert_eq!(n.leaf(0x1234_5000), 0);
        // Unmapping where nothing is mapped allocates nothing.
        n.set_leaf(0x1234_5000, 0);
        assert!(n.pts.is_empty());
        n.set_leaf(0x1234_5000, 0xABC_D000 | P | W | U);
        assert_eq!(n.leaf(0x1234_5000), 0xABC_D000 | P | W | U);
        assert_eq!(n.leaf(0x1234_6000), 0);
        // Every level is P|W|U|A and points at the next table.
        let pdpt = n.pml4.get(0);
        assert_eq!(pdpt & 0xFFF, P | W | U | A);
        assert_eq!(pdpt & !0xFFF, n.pdpts[&0].pa());
        // A shared GPA (bit 47) lands in another PML4 slot.
        n.set_leaf(1 << 47, 0x5000 | P);
        assert_eq!(
            n.pml4.get(256) & !0xFFF,
            n.pdpts[&((1u64 << 47) >> 39)].pa()
        );
        assert_eq!(n.root() & 0xFFF, 0);
    }
}
