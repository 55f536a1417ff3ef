//! Load plans of static x86-64 ELF executables: the `PT_LOAD` segments at their
//! physical addresses (`p_paddr`), checked against a GPA window.

use alloc::vec::Vec;
use core::ops::Range;
use object::elf::{FileHeader64, EM_X86_64, ET_EXEC, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};
use object::LittleEndian;

use crate::layout::{page_align_up, PAGE_SIZE};

/// Maximum number of `PT_LOAD` segments accepted.
pub const MAX_SEGMENTS: usize = 16;

/// One `PT_LOAD` segment: `data` goes at `paddr`, the rest of `memsz` is zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment<'a> {
    /// Physical (guest-physical) load address.
    pub paddr: u64,
    /// The file bytes (`p_filesz` of them).
    pub data: &'a [u8],
    /// Size in memory (≥ `data.len()`).
    pub memsz: u64,
    /// `p_flags`: `PF_X` 1, `PF_W` 2, `PF_R` 4 (ELF gABI).
    pub flags: u32,
}

impl Segment<'_> {
    /// End (exclusive) in memory.
    pub fn end(&self) -> u64 {
        self.paddr + self.memsz
    }
}

/// The checked segments of an ELF file and its entry point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPlan<'a> {
    /// `e_entry`.
    pub entry: u64,
    /// Non-empty `PT_LOAD` segments, sorted by `paddr`, non-overlapping.
    pub segments: Vec<Segment<'a>>,
}

impl LoadPlan<'_> {
    /// Lowest loaded address (0 if nothing is loaded).
    pub fn start(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.paddr)
    }

    /// End (exclusive) of the highest segment (0 if nothing is loaded).
    pub fn end(&self) -> u64 {
        self.segments.iter().map(Segment::end).max().unwrap_or(0)
    }

    /// GPAs of the 4 KiB pages the segments touch, ascending, each once.
    pub fn pages(&self) -> Vec<u64> {
        let mut pages: Vec<u64> = Vec::new();
        for s in &self.segments {
            let mut p = s.paddr & !(PAGE_SIZE - 1);
            while p < page_align_up(s.end()) {
                if pages.last() != Some(&p) {
                    pages.push(p);
                }
                p += PAGE_SIZE;
            }
        }
        pages.sort_unstable();
        pages.dedup();
        pages
    }
}

/// Why an ELF file was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Not a parseable ELF64 little-endian file.
    Malformed,
    /// Not an x86-64 executable (`ET_EXEC`, `EM_X86_64`).
    NotX86_64Executable,
    /// Program headers unreadable.
    BadProgramHeaders,
    /// No loadable bytes.
    NoSegments,
    /// More than [`MAX_SEGMENTS`] `PT_LOAD` segments.
    TooManySegments,
    /// A segment's file bytes lie outside the file.
    SegmentData(usize),
    /// `p_filesz > p_memsz`.
    FileLargerThanMemory(usize),
    /// A segment (index) lies outside the allowed window.
    OutOfWindow(usize),
    /// Two segments (indices after sorting) overlap.
    Overlap(usize, usize),
    /// The entry point is not inside a loaded segment.
    EntryOutsideImage(u64),
}

/// Reads the `PT_LOAD` segments of `elf` and checks them: each lies inside
/// `window` (which also caps the total size), none overlap, file sizes do not
/// exceed memory sizes, and the entry point is inside a segment.
pub fn load_plan<'a>(elf: &'a [u8], window: Range<u64>) -> Result<LoadPlan<'a>, ElfError> {
    let e = LittleEndian;
    let header = FileHeader64::<LittleEndian>::parse(elf).map_err(|_| ElfError::Malformed)?;
    if !header.is_little_endian() || !header.is_class_64() {
        return Err(ElfError::Malformed);
    }
    if header.e_type(e) != ET_EXEC || header.e_machine(e) != EM_X86_64 {
        return Err(ElfError::NotX86_64Executable);
    }
    let phdrs = header
        .program_headers(e, elf)
        .map_err(|_| ElfError::BadProgramHeaders)?;
    let mut segments = Vec::new();
    for ph in phdrs.iter().filter(|ph| ph.p_type(e) == PT_LOAD) {
        if ph.p_memsz(e) == 0 {
            continue;
        }
        if segments.len() == MAX_SEGMENTS {
            return Err(ElfError::TooManySegments);
        }
        let i = segments.len();
        let data = ph.data(e, elf).map_err(|_| ElfError::SegmentData(i))?;
        let memsz = ph.p_memsz(e);
        if data.len() as u64 > memsz {
            return Err(ElfError::FileLargerThanMemory(i));
        }
        let paddr = ph.p_paddr(e);
        let end = paddr.checked_add(memsz).ok_or(ElfError::OutOfWindow(i))?;
        if paddr < window.start || end > window.end {
            return Err(ElfError::OutOfWindow(i));
        }
        let flags = ph.p_flags(e).0;
        segments.push(Segment {
            paddr,
            data,
            memsz,
            flags,
        });
    }
    if segments.is_empty() {
        return Err(ElfError::NoSegments);
    }
    segments.sort_by_key(|s| s.paddr);
    for i in 1..segments.len() {
        if segments[i].paddr < segments[i - 1].end() {
            return Err(ElfError::Overlap(i - 1, i));
        }
    }
    let entry = header.e_entry(e);
    if !segments.iter().any(|s| (s.paddr..s.end()).contains(&entry)) {
        return Err(ElfError::EntryOutsideImage(entry));
    }
    Ok(LoadPlan { entry, segments })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec;

    /// `PT_LOAD`.
    pub(crate) const LOAD: u32 = 1;

    /// (p_type, offset, paddr, filesz, memsz)
    pub(crate) type Ph = (u32, u64, u64, u64, u64);

    /// A minimal ELF64 x86-64 executable with the given program headers; the
    /// file is `file_len` bytes, with byte `i` = `i as u8` after the headers.
    pub(crate) fn make_elf(entry: u64, phs: &[Ph], file_len: usize) -> Vec<u8> {
        let mut f = vec![0u8; file_len.max(64 + 56 * phs.len())];
        for (i, b) in f.iter_mut().enumerate().skip(64 + 56 * phs.len()) {
            *b = i as u8;
        }
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // 64-bit
        f[5] = 1; // little endian
        f[6] = 1; // version
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&entry.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[56..58].copy_from_slice(&(phs.len() as u16).to_le_bytes());
        for (i, &(ty, off, paddr, filesz, memsz)) in phs.iter().enumerate() {
            let p = &mut f[64 + 56 * i..64 + 56 * (i + 1)];
            p[0..4].copy_from_slice(&ty.to_le_bytes());
            p[4..8].copy_from_slice(&7u32.to_le_bytes());
            p[8..16].copy_from_slice(&off.to_le_bytes());
            p[16..24].copy_from_slice(&paddr.to_le_bytes()); // vaddr = paddr
            p[24..32].copy_from_slice(&paddr.to_le_bytes());
            p[32..40].copy_from_slice(&filesz.to_le_bytes());
            p[40..48].copy_from_slice(&memsz.to_le_bytes());
            p[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
        }
        f
    }

    const W: Range<u64> = 0x20_0000..0x80_0000;

    #[test]
    fn plans_sorted_segments() {
        let elf = make_elf(
            0x20_0010,
            &[
                (LOAD, 0x1000, 0x20_2000, 0x100, 0x3000),
                (4, 0, 0, 0, 0), // PT_NOTE ignored
                (LOAD, 0x200, 0x20_0000, 0x80, 0x80),
            ],
            0x2000,
        );
        let plan = load_plan(&elf, W).unwrap();
        assert_eq!(plan.entry, 0x20_0010);
        assert_eq!(plan.segments.len(), 2);
        assert_eq!(plan.segments[0].paddr, 0x20_0000);
        assert_eq!(plan.segments[0].data, &elf[0x200..0x280]);
        assert_eq!(plan.segments[1].memsz, 0x3000);
        assert_eq!(plan.start(), 0x20_0000);
        assert_eq!(plan.end(), 0x20_5000);
        assert_eq!(
            plan.pages(),
            vec![0x20_0000, 0x20_2000, 0x20_3000, 0x20_4000]
        );
    }

    #[test]
    fn rejects_bad_plans() {
        let one = |ph: Ph, entry| load_plan(&make_elf(entry, &[ph], 0x2000), W).map(|p| p.entry);
        assert_eq!(
            one((LOAD, 0x100, 0x10_0000, 0x10, 0x10), 0x10_0000),
            Err(ElfError::OutOfWindow(0))
        );
        assert_eq!(
            one((LOAD, 0x100, 0x7F_FFF0, 0x10, 0x20), 0x7F_FFF0),
            Err(ElfError::OutOfWindow(0))
        );
        assert_eq!(
            one((LOAD, 0x100, u64::MAX - 4, 0x10, 0x10), 0),
            Err(ElfError::OutOfWindow(0))
        );
        assert_eq!(
            one((LOAD, 0x100, 0x20_0000, 0x20, 0x10), 0x20_0000),
            Err(ElfError::FileLargerThanMemory(0))
        );
        assert_eq!(
            one((LOAD, 0x1FF0, 0x20_0000, 0x20, 0x20), 0x20_0000),
            Err(ElfError::SegmentData(0))
        );
        assert_eq!(
            one((LOAD, u64::MAX, 0x20_0000, 0x20, 0x20), 0x20_0000),
            Err(ElfError::SegmentData(0))
        );
        assert_eq!(
            one((LOAD, 0x100, 0x20_0000, 0x10, 0x10), 0x30_0000),
            Err(ElfError::EntryOutsideImage(0x30_0000))
        );
        assert_eq!(one((4, 0, 0, 0, 0), 0), Err(ElfError::NoSegments));
        let overlap = make_elf(
            0x20_0000,
            &[
                (LOAD, 0x100, 0x20_0000, 0x10, 0x2000),
                (LOAD, 0x100, 0x20_1000, 0x10, 0x10),
            ],
            0x1000,
        );
        assert_eq!(load_plan(&overlap, W), Err(ElfError::Overlap(0, 1)));
        let many: Vec<Ph> = (0..17)
            .map(|i| (LOAD, 0x1000, 0x20_0000 + i * 0x1000, 0x10, 0x10))
            .collect();
        assert_eq!(
            load_plan(&make_elf(0x20_0000, &many, 0x2000), W),
            Err(ElfError::TooManySegments)
        );
        let mut not_x86 = make_elf(0x20_0000, &[(LOAD, 0x100, 0x20_0000, 1, 1)], 0x1000);
        not_x86[18] = 3;
        assert_eq!(load_plan(&not_x86, W), Err(ElfError::NotX86_64Executable));
        assert_eq!(load_plan(b"\x7fELF", W), Err(ElfError::Malformed));
        assert_eq!(load_plan(&[], W), Err(ElfError::Malformed));
    }

    #[test]
    fn no_panic_on_corruption() {
        let good = make_elf(
            0x20_0010,
            &[
                (LOAD, 0x1000, 0x20_2000, 0x100, 0x3000),
                (LOAD, 0x200, 0x20_0000, 0x80, 0x80),
            ],
            0x1100,
        );
        for n in 0..good.len().min(300) {
            let _ = load_plan(&good[..n], W);
        }
        for i in 0..(64 + 2 * 56) {
            for v in [0u8, 0xFF, 0x80, 0x7F] {
                let mut b = good.clone();
                b[i] = v;
                let _ = load_plan(&b, W);
            }
        }
    }
}
