//! Guest page-table walks (linear → guest-physical) for the instruction bytes
//! and operands the emulator decodes itself: QEMU's SVM has no decode assists.
//! Pure logic over a reader of guest-physical qwords.

/// The guest's paging controls.
#[derive(Clone, Copy, Debug, Default)]
pub struct PagingMode {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// Result of a successful walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The guest-physical address.
    pub gpa: u64,
    /// Every level allows user mode (a user-mode linear address, MBEC's Xu case).
    pub user: bool,
    /// Every level allows writes.
    pub writable: bool,
    /// Some level forbids execution.
    pub nx: bool,
}

/// Why a walk failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// A paging entry is not present.
    NotPresent,
    /// A paging-structure GPA could not be read.
    Unreadable(u64),
    /// 5-level paging.
    Unsupported,
}

const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const EFER_LMA: u64 = 1 << 10;
const ADDR: u64 = 0x000F_FFFF_FFFF_F000;

/// Translates `la`. `read(gpa)` returns the little-endian qword at `gpa`.
pub fn translate(
    mode: &PagingMode,
    la: u64,
    mut read: impl FnMut(u64) -> Option<u64>,
) -> Result<Translation, WalkError> {
    if mode.cr0 & CR0_PG == 0 {
        return Ok(Translation {
            gpa: la & 0xFFFF_FFFF,
            user: false,
            writable: true,
            nx: false,
        });
    }
    let mut t = Translation {
        gpa: 0,
        user: true,
        writable: true,
        nx: false,
    };
    let mut entry = |gpa: u64, wide: bool, t: &mut Translation| -> Result<u64, WalkError> {
        let raw = read(gpa).ok_or(WalkError::Unreadable(gpa))?;
        let e = if wide { raw } else { raw & 0xFFFF_FFFF };
        if e & 1 == 0 {
            return Err(WalkError::NotPresent);
        }
        t.writable &= e & 2 != 0;
        t.user &= e & 4 != 0;
        t.nx |= wide && e >> 63 != 0;
        Ok(e)
    };
    if mode.efer & EFER_LMA != 0 {
        if mode.cr4 & CR4_LA57 != 0 {
            return Err(WalkError::Unsupported);
        }
        let mut table = mode.cr3 & ADDR;
        for level in (0..4).rev() {
            let shift = 12 + 9 * level;
            let e = entry(table + ((la >> shift) & 0x1FF) * 8, true, &mut t)?;
            if level == 0 || (level <= 2 && e & 0x80 != 0) {
                let page_mask = (1u64 << shift) - 1;
                t.gpa = (e & ADDR & !page_mask) | (la & page_mask);
                return Ok(t);
            }
            table = e & ADDR;
        }
        unreachable!("level 0 always returns")
    } else if mode.cr4 & CR4_PAE != 0 {
        let la = la & 0xFFFF_FFFF;
        // PDPTEs carry no U/S or R/W bits: only P matters.
        let mut ignore = t;
        let pdpte = entry((mode.cr3 & 0xFFFF_FFE0) + (la >> 30) * 8, true, &mut ignore)?;
        let pde = entry((pdpte & ADDR) + ((la >> 21) & 0x1FF) * 8, true, &mut t)?;
        if pde & 0x80 != 0 {
            t.gpa = (pde & ADDR & !0x1F_FFFF) | (la & 0x1F_FFFF);
            return Ok(t);
        }
        let pte = entry((pde & ADDR) + ((la >> 12) & 0x1FF) * 8, true, &mut t)?;
        t.gpa = (pte & ADDR) | (la & 0xFFF);
        Ok(t)
    } else {
        let la = la & 0xFFFF_FFFF;
        let pde = entry((mode.cr3 & 0xFFFF_F000) + (la >> 22) * 4, false, &mut t)?;
        if pde & 0x80 != 0 && mode.cr4 & CR4_PSE != 0 {
            t.gpa = (pde & 0xFFC0_0000) | ((pde >> 13) & 0xFF) << 32 | (la & 0x3F_FFFF);
            return Ok(t);
        }
        let pte = entry(
            (pde & 0xFFFF_F000) + ((la >> 12) & 0x3FF) * 4,
            false,
            &mut t,
        )?;
        t.gpa = (pte & 0xFFFF_F000) | (la & 0xFFF);
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn reader(m: &BTreeMap<u64, u64>) -> impl FnMut(u64) -> Option<u64> + '_ {
        |gpa| {
            let base = gpa & !7;
            let lo = m.get(&base).copied().unwrap_or(0);
            if gpa % 8 == 0 {
                Some(lo)
            } else {
                Some(lo >> 32 | m.get(&(base + 8)).copied().unwrap_or(0) << 32)
            }
        }
    }

    const LONG: PagingMode = PagingMode {
        cr0: CR0_PG | 1,
        cr3: 0x1000,
        cr4: CR4_PAE,
        efer: EFER_LMA | (1 << 8),
    };

    #[test]
    fn paging_off_is_identity() {
        let m = BTreeMap::new();
        let t = translate(&PagingMode::default(), 0x1234_5678, reader(&m)).unwrap();
        assert_eq!(t.gpa, 0x1234_5678);
        assert!(!t.user);
    }

    #[test]
    fn four_level_4k_2m_and_1g() {
        let mut m = BTreeMap::new();
        // la 0x0000_7F00_0020_3123: PML4[254] PDPT[0] PD[1] PT[3]
        m.insert(0x1000 + 254 * 8, 0x2000 | 7);
        m.insert(0x2000, 0x3000 | 7);
        m.insert(0x3000 + 8, 0x4000 | 7);
        m.insert(0x4000 + 3 * 8, 0xABC_D000 | 5 | 1 << 63);
        let t = translate(&LONG, 0x0000_7F00_0020_3123, reader(&m)).unwrap();
        assert_eq!(t.gpa, 0xABC_D123);
        assert!(t.user && !t.writable && t.nx);
        // 2 MiB page, supervisor.
        m.insert(0x3000 + 2 * 8, 0x4000_0000 | 0x83);
        let t = translate(&LONG, 0x0000_7F00_0045_6789, reader(&m)).unwrap();
        assert_eq!(t.gpa, 0x4005_6789);
        assert!(!t.user && t.writable);
        // 1 GiB page.
        m.insert(0x2000 + 8, 0x8000_0000 | 0x87);
        let t = translate(&LONG, 0x0000_7F00_4123_4567, reader(&m)).unwrap();
        assert_eq!(t.gpa, 0x8123_4567);
        // Not present.
        assert_eq!(
            translate(&LONG, 0x1000, reader(&m)),
            Err(WalkError::NotPresent)
        );
        // Unreadable table.
        let t = translate(&LONG, 0, |_| None);
        assert_eq!(t, Err(WalkError::Unreadable(0x1000)));
    }

    #[test]
    fn pae_and_legacy() {
        let mut m = BTreeMap::new();
        let pae = PagingMode {
            cr0: CR0_PG | 1,
            cr3: 0x1020,
            cr4: CR4_PAE,
            efer: 0,
        };
        m.insert(0x1020 + 8, 0x2000 | 1);
        m.insert(0x2000 + 2 * 8, 0x3000 | 7);
        m.insert(0x3000 + 5 * 8, 0x9000 | 7);
        let t = translate(&pae, 0x4040_5010, reader(&m)).unwrap();
        assert_eq!(t.gpa, 0x9010);
        let legacy = PagingMode {
            cr0: CR0_PG | 1,
            cr3: 0x5000,
            cr4: CR4_PSE,
            efer: 0,
        };
        // PDE 1 → 4 MiB page at 0x0800_0000; PDE 2 → PT at 0x6000.
        m.insert(0x5000, (0x0800_0000_u64 | 0x87) << 32);
        m.insert(0x5008, 0x6000 | 3);
        m.insert(0x6000, (0x7000_u64 | 3) << 32);
        let t = translate(&legacy, 0x0040_1234, reader(&m)).unwrap();
        assert_eq!(t.gpa, 0x0800_1234);
        let t = translate(&legacy, 0x0080_1234, reader(&m)).unwrap();
        assert_eq!(t.gpa, 0x7234);
        assert!(!t.user);
    }
}
