//! Translating L2 linear addresses through L2's own page tables.
//!
//! Exit handlers that emulate an instruction need its bytes (at CS:RIP) and,
//! for SGDT/SIDT/SLDT/STR, its memory operand, both *linear* addresses of L2.
//! TDX reports neither translation (EPT-violation exits carry a GPA only for
//! the faulting access, descriptor-table exits none), so L1 walks L2's paging
//! structures itself, as the CPU would (Intel SDM Vol. 3A chapter 4).
//!
//! Supported: paging off (linear = physical), 4-level paging (CR0.PG, CR4.PAE,
//! EFER.LMA; §4.5) and 5-level paging (CR4.LA57 as well; §4.5), with 4 KiB,
//! 2 MiB and 1 GiB pages. Refused with [`WalkError::UnsupportedMode`]: 32-bit
//! and PAE paging (CR0.PG without EFER.LMA), which no 64-bit L2 the paravisor
//! runs uses. Not done: protection keys, HLAT, LAM, and setting accessed/dirty
//! bits (the walk only reads; see [`Translation`]).
//!
//! Guest page tables are hostile input. The walk reads at most one entry per
//! level (≤ 5 reads), never loops, and every failure is a [`WalkError`]: an
//! unreadable table ([`WalkError::Table`]), a non-present entry, a reserved bit
//! set (SDM Vol. 3A §4.5.4, tables 4-14 to 4-20), a non-canonical address.
//! Table reads go through a [`TableReader`], so callers decide which GPAs L1
//! may read on L2's behalf (the exit handlers require an L2 alias with R, as
//! the CPU's own walk needs EPT read access, [`crate::exits::guest`]).

use core::fmt;

use crate::memory::MemoryError;

/// CR0.WP (SDM Vol. 3A §2.5).
pub const CR0_WP: u64 = 1 << 16;
/// CR0.PG.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE.
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.UMIP: SGDT/SIDT/SLDT/SMSW/STR #GP at CPL > 0 (SDM Vol. 3A §2.5).
pub const CR4_UMIP: u64 = 1 << 11;
/// CR4.LA57: 5-level paging.
pub const CR4_LA57: u64 = 1 << 12;
/// CR4.SMEP.
pub const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP.
pub const CR4_SMAP: u64 = 1 << 21;
/// EFER.LMA (SDM Vol. 3A §2.2.1).
pub const EFER_LMA: u64 = 1 << 10;
/// EFER.NXE.
pub const EFER_NXE: u64 = 1 << 11;
/// RFLAGS.AC: with CR4.SMAP, allows supervisor data accesses to user pages.
pub const RFLAGS_AC: u64 = 1 << 18;

/// Paging-structure entry bits (SDM Vol. 3A tables 4-14 to 4-20).
mod pte {
    pub const P: u64 = 1 << 0;
    pub const RW: u64 = 1 << 1;
    pub const US: u64 = 1 << 2;
    pub const PS: u64 = 1 << 7;
    pub const XD: u64 = 1 << 63;
}

/// Page-fault error-code bits (SDM Vol. 3A §4.7, figure 4-12).
pub mod pf {
    /// The fault was a protection violation (0: not present).
    pub const P: u32 = 1 << 0;
    /// The access was a write.
    pub const W: u32 = 1 << 1;
    /// The access was a user-mode access.
    pub const U: u32 = 1 << 2;
    /// A reserved bit was set in a paging-structure entry.
    pub const RSVD: u32 = 1 << 3;
    /// The access was an instruction fetch.
    pub const ID: u32 = 1 << 4;
}

/// The largest MAXPHYADDR (SDM Vol. 3A §4.1.4): with it, only the
/// architecturally reserved bits are checked. L1 does not know the MAXPHYADDR
/// the CPU reports to L2, so the exit handlers use this; an address beyond the
/// TD's memory then fails as an unreadable table or page instead.
pub const MAX_PHYS_BITS: u8 = 52;

/// L2's paging controls, as the CPU uses them (the real CR0/CR4, not the
/// read shadows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// MAXPHYADDR: entry address bits at or above it are reserved (≤ 52).
    pub phys_bits: u8,
}

/// The paging mode [`Paging`] selects (SDM Vol. 3A §4.1.1, table 4-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// CR0.PG = 0: linear = physical.
    Off,
    /// 32-bit or PAE paging: not walked.
    Legacy,
    /// 4-level paging.
    Level4,
    /// 5-level paging.
    Level5,
}

impl Paging {
    /// The paging mode.
    pub const fn mode(&self) -> Mode {
        if self.cr0 & CR0_PG == 0 {
            Mode::Off
        } else if self.efer & EFER_LMA == 0 || self.cr4 & CR4_PAE == 0 {
            Mode::Legacy
        } else if self.cr4 & CR4_LA57 != 0 {
            Mode::Level5
        } else {
            Mode::Level4
        }
    }

    const fn nxe(&self) -> bool {
        self.efer & EFER_NXE != 0
    }

    /// Address bits 51:12 below MAXPHYADDR.
    const fn frame_mask(&self) -> u64 {
        let bits = if self.phys_bits > 52 || self.phys_bits < 13 {
            52
        } else {
            self.phys_bits
        };
        ((1u64 << bits) - 1) & !0xFFF
    }
}

/// Which kind of access a translation is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessKind {
    /// Data read.
    Read,
    /// Data write.
    Write,
    /// Instruction fetch.
    Fetch,
}

/// An access to check against a [`Translation`] (SDM Vol. 3A §4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Read, write or fetch.
    pub kind: AccessKind,
    /// CPL 3 (user-mode access); CPL 0–2 are supervisor-mode accesses.
    pub user: bool,
    /// RFLAGS.AC (lets supervisor data accesses reach user pages under SMAP).
    pub ac: bool,
}

/// A completed walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The guest-physical address of the linear address.
    pub gpa: u64,
    /// Size of the page that maps it (4 KiB, 2 MiB or 1 GiB; 4 KiB when paging
    /// is off).
    pub page_size: u64,
    /// U/S = 1 at every level.
    pub user: bool,
    /// R/W = 1 at every level.
    pub writable: bool,
    /// XD = 1 at some level (with EFER.NXE).
    pub no_execute: bool,
}

impl Translation {
    /// Bytes from the address to the end of its page (≥ 1).
    pub const fn to_page_end(&self) -> u64 {
        self.page_size - (self.gpa & (self.page_size - 1))
    }
}

/// Why a linear address does not translate, or an access is not allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// 32-bit or PAE paging (CR0.PG without EFER.LMA or CR4.PAE).
    UnsupportedMode,
    /// The address is not canonical for the paging mode (a real CPU: #GP/#SS).
    NonCanonical {
        /// The linear address.
        linear: u64,
    },
    /// A paging-structure entry had P = 0.
    NotPresent {
        /// The linear address.
        linear: u64,
        /// 5 (PML5E) … 1 (PTE).
        level: u8,
    },
    /// A paging-structure entry had a reserved bit set.
    Reserved {
        /// The linear address.
        linear: u64,
        /// 5 (PML5E) … 1 (PTE).
        level: u8,
        /// The entry.
        entry: u64,
    },
    /// A paging structure could not be read.
    Table {
        /// The linear address.
        linear: u64,
        /// 5 (PML5E) … 1 (PTE).
        level: u8,
        /// The reader's error.
        error: MemoryError,
    },
    /// The translation exists but does not allow the access (§4.6).
    Protection {
        /// The linear address.
        linear: u64,
    },
}

impl WalkError {
    /// The #PF error code a CPU would report for this failure of `access`
    /// (SDM Vol. 3A §4.7); `None` where the CPU raises no #PF (unsupported
    /// mode, non-canonical address, an unreadable table — an EPT violation on
    /// hardware).
    pub fn page_fault_code(&self, paging: &Paging, access: Access) -> Option<u32> {
        let mut code = match self {
            WalkError::NotPresent { .. } => 0,
            WalkError::Reserved { .. } => pf::P | pf::RSVD,
            WalkError::Protection { .. } => pf::P,
            _ => return None,
        };
        match access.kind {
            AccessKind::Write => code |= pf::W,
            AccessKind::Fetch if paging.nxe() || paging.cr4 & CR4_SMEP != 0 => code |= pf::ID,
            _ => {}
        }
        if access.user {
            code |= pf::U;
        }
        Some(code)
    }
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkError::UnsupportedMode => {
                f.write_str("32-bit/PAE paging is not supported (only 4- and 5-level)")
            }
            WalkError::NonCanonical { linear } => write!(f, "{linear:#x} is not canonical"),
            WalkError::NotPresent { linear, level } => {
                write!(f, "{linear:#x}: level-{level} entry not present")
            }
            WalkError::Reserved {
                linear,
                level,
                entry,
            } => write!(
                f,
                "{linear:#x}: level-{level} entry {entry:#x} has reserved bits set"
            ),
            WalkError::Table {
                linear,
                level,
                error,
            } => write!(f, "{linear:#x}: level-{level} table unreadable: {error}"),
            WalkError::Protection { linear } => {
                write!(f, "{linear:#x}: access not allowed by L2's page tables")
            }
        }
    }
}

/// Reads 8-byte paging-structure entries by GPA.
pub trait TableReader {
    /// The little-endian u64 at `gpa` (8-byte aligned).
    fn read_entry(&mut self, gpa: u64) -> Result<u64, MemoryError>;
}

/// Whether `linear` is canonical with `bits` linear-address bits (48 or 57).
pub const fn is_canonical(linear: u64, bits: u32) -> bool {
    let shift = 64 - bits;
    (((linear << shift) as i64) >> shift) as u64 == linear
}

/// Reserved bits of an entry at `level` (1 = PTE … 5 = PML5E), for a leaf
/// when `leaf` (SDM Vol. 3A tables 4-14 to 4-20; bits 62:52 are ignored or
/// protection keys, never reserved).
fn reserved_bits(paging: &Paging, level: u8, entry: u64) -> u64 {
    // Address bits 51:MAXPHYADDR.
    let mut rsvd = ((1u64 << 52) - 1) & !(paging.frame_mask() | 0xFFF);
    if !paging.nxe() {
        rsvd |= pte::XD;
    }
    match level {
        // PML5E/PML4E: PS is reserved.
        4 | 5 => rsvd |= pte::PS,
        // 1 GiB page: bits 29:13 (12 is PAT).
        3 if entry & pte::PS != 0 => rsvd |= 0x3FFF_E000,
        // 2 MiB page: bits 20:13.
        2 if entry & pte::PS != 0 => rsvd |= 0x1F_E000,
        _ => {}
    }
    entry & rsvd
}

/// Translates `linear` through L2's page tables (no permission check, see
/// [`check`]). Reads at most one entry per level.
pub fn translate<R: TableReader + ?Sized>(
    paging: &Paging,
    reader: &mut R,
    linear: u64,
) -> Result<Translation, WalkError> {
    let levels: u8 = match paging.mode() {
        Mode::Off => {
            return Ok(Translation {
                gpa: linear,
                page_size: 0x1000,
                user: true,
                writable: true,
                no_execute: false,
            })
        }
        Mode::Legacy => return Err(WalkError::UnsupportedMode),
        Mode::Level4 => 4,
        Mode::Level5 => 5,
    };
    let bits = 12 + 9 * levels as u32;
    if !is_canonical(linear, bits) {
        return Err(WalkError::NonCanonical { linear });
    }
    let mut table = paging.cr3 & paging.frame_mask();
    let (mut user, mut writable, mut no_execute) = (true, true, false);
    for level in (1..=levels).rev() {
        let shift = 12 + 9 * (level as u32 - 1);
        let index = (linear >> shift) & 0x1FF;
        let entry = reader
            .read_entry(table + index * 8)
            .map_err(|error| WalkError::Table {
                linear,
                level,
                error,
            })?;
        if entry & pte::P == 0 {
            return Err(WalkError::NotPresent { linear, level });
        }
        if reserved_bits(paging, level, entry) != 0 {
            return Err(WalkError::Reserved {
                linear,
                level,
                entry,
            });
        }
        user &= entry & pte::US != 0;
        writable &= entry & pte::RW != 0;
        no_execute |= paging.nxe() && entry & pte::XD != 0;
        let leaf = level == 1 || (level <= 3 && entry & pte::PS != 0);
        if leaf {
            let page_size = 1u64 << shift;
            let frame = entry & paging.frame_mask() & !(page_size - 1);
            return Ok(Translation {
                gpa: frame | (linear & (page_size - 1)),
                page_size,
                user,
                writable,
                no_execute,
            });
        }
        table = entry & paging.frame_mask();
    }
    // Unreachable: level 1 is always a leaf. Fail closed all the same.
    Err(WalkError::NotPresent { linear, level: 1 })
}

/// Checks `access` against a translation of `linear` (SDM Vol. 3A §4.6:
/// U/S, R/W with CR0.WP, XD, SMEP, SMAP with RFLAGS.AC). With paging off every
/// access is allowed.
pub fn check(
    paging: &Paging,
    t: &Translation,
    linear: u64,
    access: Access,
) -> Result<(), WalkError> {
    if paging.mode() == Mode::Off {
        return Ok(());
    }
    let denied = if access.user {
        !t.user
            || match access.kind {
                AccessKind::Read => false,
                AccessKind::Write => !t.writable,
                AccessKind::Fetch => t.no_execute,
            }
    } else {
        let smap = paging.cr4 & CR4_SMAP != 0 && !access.ac;
        match access.kind {
            AccessKind::Read => t.user && smap,
            AccessKind::Write => (t.user && smap) || (!t.writable && paging.cr0 & CR0_WP != 0),
            AccessKind::Fetch => t.no_execute || (t.user && paging.cr4 & CR4_SMEP != 0),
        }
    };
    if denied {
        Err(WalkError::Protection { linear })
    } else {
        Ok(())
    }
}

/// [`translate`] then [`check`].
pub fn translate_checked<R: TableReader + ?Sized>(
    paging: &Paging,
    reader: &mut R,
    linear: u64,
    access: Access,
) -> Result<Translation, WalkError> {
    let t = translate(paging, reader, linear)?;
    check(paging, &t, linear, access)?;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    /// Sparse guest memory of 8-byte entries; every other GPA is unreadable.
    #[derive(Default)]
    struct Tables {
        entries: BTreeMap<u64, u64>,
        reads: usize,
    }

    impl TableReader for Tables {
        fn read_entry(&mut self, gpa: u64) -> Result<u64, MemoryError> {
            self.reads += 1;
            self.entries
                .get(&gpa)
                .copied()
                .ok_or(MemoryError::OutOfRange { gpa, len: 8 })
        }
    }

    const P: u64 = pte::P;
    const RW: u64 = pte::RW;
    const US: u64 = pte::US;
    const PS: u64 = pte::PS;
    const XD: u64 = pte::XD;

    const PML4: u64 = 0x1000;
    const PDPT: u64 = 0x2000;
    const PD: u64 = 0x3000;
    const PT: u64 = 0x4000;

    fn paging() -> Paging {
        Paging {
            cr0: CR0_PG | CR0_WP | 1,
            cr3: PML4,
            cr4: CR4_PAE,
            efer: EFER_LMA | EFER_NXE | (1 << 8),
            phys_bits: 46,
        }
    }

    fn idx(linear: u64, level: u32) -> u64 {
        (linear >> (12 + 9 * (level - 1))) & 0x1FF
    }

    /// Maps `linear` down to `leaf_level` with `flags` on every entry.
    fn map(t: &mut Tables, linear: u64, leaf_level: u32, frame: u64, flags: u64) {
        let tables = [PML4, PDPT, PD, PT];
        for level in (leaf_level..=4).rev() {
            let table = tables[4 - level as usize];
            let value = if level == leaf_level {
                frame | flags | if level > 1 { PS } else { 0 }
            } else {
                tables[5 - level as usize] | flags
            };
            t.entries.insert(table + idx(linear, level) * 8, value);
        }
    }

    const KERNEL: u64 = 0xFFFF_FFFF_8100_0123;

    #[test]
    fn all_page_sizes() {
        for (level, frame, size) in [
            (1, 0x7_7000, 0x1000),
            (2, 0x60_0000, 0x20_0000),
            (3, 0x4000_0000, 0x4000_0000),
        ] {
            let mut t = Tables::default();
            map(&mut t, KERNEL, level, frame, P | RW);
            let tr = translate(&paging(), &mut t, KERNEL).unwrap();
            assert_eq!(tr.gpa, frame | (KERNEL & (size - 1)), "level {level}");
            assert_eq!(tr.page_size, size);
            assert!(tr.writable && !tr.user && !tr.no_execute);
            assert_eq!(t.reads, 5 - level as usize);
        }
        // U/S and R/W accumulate: one supervisor or read-only level decides.
        let mut t = Tables::default();
        map(&mut t, 0x40_0000, 1, 0x7_7000, P | RW | US);
        let tr = translate(&paging(), &mut t, 0x40_0000).unwrap();
        assert!(tr.user && tr.writable);
        *t.entries.get_mut(&(PD + idx(0x40_0000, 2) * 8)).unwrap() &= !RW;
        *t.entries.get_mut(&(PDPT + idx(0x40_0000, 3) * 8)).unwrap() &= !US;
        let tr = translate(&paging(), &mut t, 0x40_0000).unwrap();
        assert!(!tr.user && !tr.writable);
    }

    #[test]
    fn five_level_paging_and_paging_off() {
        let mut p = paging();
        p.cr4 |= CR4_LA57;
        let mut t = Tables::default();
        let la: u64 = 0xFF12_3456_7800_0ABC; // canonical for 57 bits
        t.entries
            .insert(PML4 + ((la >> 48) & 0x1FF) * 8, 0x5000 | P);
        // PML5E → "PML4" at 0x5000, then PDPT with a 1 GiB page.
        t.entries.insert(0x5000 + idx(la, 4) * 8, PDPT | P);
        t.entries
            .insert(PDPT + idx(la, 3) * 8, 0x8000_0000 | P | PS | RW);
        let tr = translate(&p, &mut t, la).unwrap();
        assert_eq!(tr.gpa, 0x8000_0000 | (la & 0x3FFF_FFFF));
        assert_eq!(tr.page_size, 1 << 30);
        assert_eq!(
            translate(&p, &mut t, 0x0100_0000_0000_0000),
            Err(WalkError::NonCanonical {
                linear: 0x0100_0000_0000_0000
            })
        );
        // PS in a PML5E is reserved.
        t.entries
            .insert(PML4 + ((la >> 48) & 0x1FF) * 8, 0x5000 | P | PS);
        assert!(matches!(
            translate(&p, &mut t, la),
            Err(WalkError::Reserved { level: 5, .. })
        ));

        let mut off = paging();
        off.cr0 &= !CR0_PG;
        let tr = translate(&off, &mut Tables::default(), 0x1234_5678).unwrap();
        assert_eq!(tr.gpa, 0x1234_5678);
        let mut legacy = paging();
        legacy.efer &= !EFER_LMA;
        assert_eq!(
            translate(&legacy, &mut Tables::default(), 0x1000),
            Err(WalkError::UnsupportedMode)
        );
    }

    #[test]
    fn non_present_at_every_level() {
        for missing in 1..=4u8 {
            let mut t = Tables::default();
            map(&mut t, KERNEL, 1, 0x7_7000, P | RW);
            let tables = [PML4, PDPT, PD, PT];
            let slot = tables[4 - missing as usize] + idx(KERNEL, missing as u32) * 8;
            // Present bit clear, everything else set: still not present.
            *t.entries.get_mut(&slot).unwrap() &= !P;
            assert_eq!(
                translate(&paging(), &mut t, KERNEL),
                Err(WalkError::NotPresent {
                    linear: KERNEL,
                    level: missing
                })
            );
        }
    }

    #[test]
    fn reserved_bits_are_refused() {
        let cases: [(u32, u64, u8); 5] = [
            // Address bit 47 ≥ MAXPHYADDR 46 in the PTE.
            (1, 1 << 47, 1),
            // PS in the PML4E.
            (4, PS, 4),
            // 2 MiB page with bit 13 set.
            (2, 1 << 13, 2),
            // 1 GiB page with bit 20 set.
            (3, 1 << 20, 3),
            // Address bit 50 in a 1 GiB PDPTE.
            (3, 1 << 50, 3),
        ];
        for (level, bit, want) in cases {
            let mut t = Tables::default();
            let leaf = if level == 4 { 1 } else { level };
            map(&mut t, KERNEL, leaf, 0, P | RW);
            let tables = [PML4, PDPT, PD, PT];
            let slot = tables[4 - level as usize] + idx(KERNEL, level) * 8;
            *t.entries.get_mut(&slot).unwrap() |= bit;
            let mut p = paging();
            p.phys_bits = 46;
            assert!(
                matches!(
                    translate(&p, &mut t, KERNEL),
                    Err(WalkError::Reserved { level: l, .. }) if l == want
                ),
                "level {level} bit {bit:#x}"
            );
        }
        // XD without EFER.NXE is reserved; with it, it is not.
        let mut t = Tables::default();
        map(&mut t, KERNEL, 1, 0x7_7000, P | RW | XD);
        let mut p = paging();
        assert!(translate(&p, &mut t, KERNEL).unwrap().no_execute);
        p.efer &= !EFER_NXE;
        assert!(matches!(
            translate(&p, &mut t, KERNEL),
            Err(WalkError::Reserved { level: 4, .. })
        ));
        assert_eq!(
            WalkError::Reserved {
                linear: 0,
                level: 1,
                entry: 0
            }
            .page_fault_code(
                &p,
                Access {
                    kind: AccessKind::Read,
                    user: false,
                    ac: false
                }
            ),
            Some(pf::P | pf::RSVD)
        );
    }

    #[test]
    fn hostile_tables_are_bounded() {
        // Every entry points back at the PML4 itself (a self-map), and the
        // walk still ends after four reads with a 4 KiB "page" = the PML4.
        let mut t = Tables::default();
        for i in 0..512 {
            t.entries.insert(PML4 + i * 8, PML4 | P | RW);
        }
        let tr = translate(&paging(), &mut t, KERNEL).unwrap();
        assert_eq!(tr.gpa, PML4 | (KERNEL & 0xFFF));
        assert_eq!(t.reads, 4);
        // A table outside readable memory: an error naming the level.
        let mut t = Tables::default();
        t.entries
            .insert(PML4 + idx(KERNEL, 4) * 8, 0xF_FFFF_F000 | P);
        assert!(matches!(
            translate(&paging(), &mut t, KERNEL),
            Err(WalkError::Table { level: 3, .. })
        ));
        // Non-canonical in 4-level mode.
        assert_eq!(
            translate(&paging(), &mut t, 0x0000_8000_0000_0000),
            Err(WalkError::NonCanonical {
                linear: 0x0000_8000_0000_0000
            })
        );
        // CR3 with PCID and flag bits: only the frame is used.
        let mut p = paging();
        p.cr3 = PML4 | 0xFFF | (1 << 63);
        let mut t = Tables::default();
        map(&mut t, KERNEL, 1, 0x7_7000, P);
        assert_eq!(translate(&p, &mut t, KERNEL).unwrap().gpa, 0x7_7123);
    }

    #[test]
    fn crossing_pages_translates_each() {
        let mut t = Tables::default();
        let first = 0xFFFF_FFFF_8100_0FF8;
        let second = first + 8;
        map(&mut t, first, 1, 0x7_7000, P);
        map(&mut t, second, 1, 0x9_9000, P);
        let a = translate(&paging(), &mut t, first).unwrap();
        let b = translate(&paging(), &mut t, second).unwrap();
        assert_eq!(a.to_page_end(), 8);
        assert_eq!((a.gpa, b.gpa), (0x7_7FF8, 0x9_9000));
    }

    #[test]
    fn access_rights() {
        let k = |kind| Access {
            kind,
            user: false,
            ac: false,
        };
        let u = |kind| Access {
            kind,
            user: true,
            ac: false,
        };
        let tr = |user, writable, no_execute| Translation {
            gpa: 0,
            page_size: 0x1000,
            user,
            writable,
            no_execute,
        };
        let mut p = paging();
        let ok = |p: &Paging, t, a| check(p, &t, 0, a).is_ok();
        // Read-only supervisor page: CR0.WP decides supervisor writes.
        assert!(!ok(&p, tr(false, false, false), k(AccessKind::Write)));
        p.cr0 &= !CR0_WP;
        assert!(ok(&p, tr(false, false, false), k(AccessKind::Write)));
        p.cr0 |= CR0_WP;
        // User accesses need U/S, writes R/W, fetches no XD.
        assert!(!ok(&p, tr(false, true, false), u(AccessKind::Read)));
        assert!(!ok(&p, tr(true, false, false), u(AccessKind::Write)));
        assert!(ok(&p, tr(true, true, false), u(AccessKind::Write)));
        assert!(!ok(&p, tr(true, true, true), u(AccessKind::Fetch)));
        assert!(!ok(&p, tr(false, false, true), k(AccessKind::Fetch)));
        // SMAP: supervisor data access to a user page unless RFLAGS.AC.
        p.cr4 |= CR4_SMAP | CR4_SMEP;
        assert!(!ok(&p, tr(true, true, false), k(AccessKind::Write)));
        let mut ac = k(AccessKind::Write);
        ac.ac = true;
        assert!(ok(&p, tr(true, true, false), ac));
        // SMEP: supervisor fetch from a user page.
        assert!(!ok(&p, tr(true, false, false), k(AccessKind::Fetch)));
        assert_eq!(
            WalkError::Protection { linear: 0 }.page_fault_code(&p, u(AccessKind::Write)),
            Some(pf::P | pf::W | pf::U)
        );
        assert_eq!(
            WalkError::NotPresent {
                linear: 0,
                level: 1
            }
            .page_fault_code(&p, k(AccessKind::Fetch)),
            Some(pf::ID)
        );
    }
}
