//! `heki_page` chains: bounded copy-in from guest memory, then validation of
//! the copy (heki-lvbs-abi.md §3.1).
//!
//! The guest passes the GPA of the first `heki_page` and the total number of
//! ranges. Every page is read from guest memory exactly once into an owned
//! buffer and everything is decoded from that buffer, so a guest vCPU that
//! rewrites the page while the paravisor works cannot change what was
//! validated (no TOCTOU on the list itself). The chain is bounded: its length
//! in pages, the number of ranges, cycles through `next_pa`, and every address
//! are checked before anything is used.
//!
//! The data the ranges *describe* (a certificate blob, a module file, module
//! sections) is copied separately with [`copy_blob`] / [`copy_range`]. For
//! memory whose contents get validated and then protected (module sections)
//! the caller must first make the frames read-only for the guest, then copy,
//! validate, and commit or roll back (litebox PR #1011, §5.12).

use crate::abi::{page_aligned, Errno, KdataType, ModMemType, RangeAttr, ToErrno, PAGE_SIZE};
use alloc::collections::BTreeSet;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Byte size of one `heki_range`.
pub const RANGE_SIZE: usize = 32;
/// Byte size of the `heki_page` header (`next`, `next_pa`, `nranges`).
pub const PAGE_HEADER_SIZE: usize = 24;
/// Ranges per `heki_page`: (4096 - 24) / 32.
pub const RANGES_PER_PAGE: u64 = 127;

/// A failed guest-memory read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestMemoryError {
    /// First GPA of the access.
    pub gpa: u64,
    /// Length of the access.
    pub len: usize,
}

impl fmt::Display for GuestMemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "guest memory {:#x}+{:#x} cannot be read",
            self.gpa, self.len
        )
    }
}

/// Read access to the protected guest's memory by GPA.
///
/// The paravisor implements it over L2 memory. An implementation must refuse
/// (not clamp) any range that is not ordinary guest memory, in particular the
/// paravisor's own pages.
pub trait GuestMemory {
    /// Fills `buf` from `gpa..gpa + buf.len()`.
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemoryError>;
}

impl<T: GuestMemory + ?Sized> GuestMemory for &mut T {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        (**self).read(gpa, buf)
    }
}

/// Bounds applied to every chain and blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most `heki_page`s one call may chain.
    pub max_pages: usize,
    /// Most ranges one call may announce.
    pub max_ranges: u64,
    /// Exclusive upper bound of guest-physical addresses (e.g. `1 << 52`).
    pub max_gpa: u64,
    /// Most bytes one blob (certificates, module file, ...) may have.
    pub max_blob_bytes: usize,
}

impl Default for Limits {
    /// 1024 list pages (130 048 ranges, 4 MiB of copies), 52-bit GPAs and the
    /// 64 MiB blob cap litebox uses for module files.
    fn default() -> Self {
        Limits {
            max_pages: 1024,
            max_ranges: 1024 * RANGES_PER_PAGE,
            max_gpa: 1 << 52,
            max_blob_bytes: 64 << 20,
        }
    }
}

/// Why a range is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeError {
    /// `pa >= epa`: empty or inverted.
    Empty,
    /// `va`, `pa` or `epa` is not page aligned where the type requires it.
    Misaligned,
    /// `epa` beyond the guest-physical address space.
    BeyondGpaSpace,
    /// `va` is not canonical, or `va + (epa - pa)` overflows or leaves the canonical half.
    BadVa,
    /// The attribute word is not a value of the call's namespace.
    BadAttribute(u64),
}

/// Why a chain or blob was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PagesError {
    /// The first-page GPA is zero or not page aligned.
    BadFirstPage(u64),
    /// The call announced zero ranges.
    NoRanges,
    /// The call announced more ranges than [`Limits::max_ranges`].
    TooManyRanges {
        /// Announced.
        announced: u64,
        /// Allowed.
        max: u64,
    },
    /// The chain has more pages than [`Limits::max_pages`].
    ChainTooLong {
        /// Allowed.
        max_pages: usize,
    },
    /// `next_pa` leads back to a page already visited.
    Cycle {
        /// The page visited twice.
        gpa: u64,
    },
    /// `next_pa` is not page aligned or outside the GPA space.
    BadNextPage {
        /// The page holding the pointer.
        page: u64,
        /// The pointer.
        next_pa: u64,
    },
    /// A page's `nranges` is 0, above 127, or above what the call announced.
    BadRangeCount {
        /// The page.
        page: u64,
        /// Its `nranges`.
        nranges: u64,
        /// Ranges still expected when the page was read.
        remaining: u64,
    },
    /// The chain ended before the announced number of ranges.
    Truncated {
        /// Announced.
        announced: u64,
        /// Found.
        found: u64,
    },
    /// The announced ranges were consumed but the last page links further.
    TrailingPage {
        /// The page with the non-zero `next_pa`.
        page: u64,
    },
    /// A range failed validation.
    Range {
        /// Index of the range in the whole call.
        index: usize,
        /// What is wrong.
        error: RangeError,
    },
    /// A blob would exceed [`Limits::max_blob_bytes`].
    BlobTooLarge {
        /// Size in bytes (saturated).
        bytes: u64,
        /// Allowed.
        max: usize,
    },
    /// The ranges of one blob are not virtually contiguous and ascending.
    BlobNotContiguous {
        /// Index (within the blob) of the range that does not follow its predecessor.
        index: usize,
    },
    /// A range type may appear at most once per call but appeared again.
    DuplicateRange {
        /// Index of the range in the call.
        index: usize,
    },
    /// A required blob is missing.
    Missing(&'static str),
    /// Guest memory could not be read.
    Read(GuestMemoryError),
}

impl From<GuestMemoryError> for PagesError {
    fn from(e: GuestMemoryError) -> Self {
        PagesError::Read(e)
    }
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeError::Empty => f.write_str("pa >= epa"),
            RangeError::Misaligned => f.write_str("va/pa/epa not page aligned"),
            RangeError::BeyondGpaSpace => f.write_str("epa beyond the GPA space"),
            RangeError::BadVa => f.write_str("va not canonical or va range overflows"),
            RangeError::BadAttribute(a) => write!(f, "attribute {a:#x} is invalid for this call"),
        }
    }
}

impl fmt::Display for PagesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PagesError::BadFirstPage(g) => {
                write!(f, "first heki_page GPA {g:#x} is null or unaligned")
            }
            PagesError::NoRanges => f.write_str("zero ranges announced"),
            PagesError::TooManyRanges { announced, max } => {
                write!(f, "{announced} ranges announced, at most {max} allowed")
            }
            PagesError::ChainTooLong { max_pages } => {
                write!(f, "heki_page chain longer than {max_pages} pages")
            }
            PagesError::Cycle { gpa } => write!(f, "heki_page chain loops back to {gpa:#x}"),
            PagesError::BadNextPage { page, next_pa } => {
                write!(f, "heki_page {page:#x}: bad next_pa {next_pa:#x}")
            }
            PagesError::BadRangeCount {
                page,
                nranges,
                remaining,
            } => write!(
                f,
                "heki_page {page:#x}: nranges {nranges} invalid ({remaining} remaining, max 127)"
            ),
            PagesError::Truncated { announced, found } => {
                write!(f, "chain ends after {found} of {announced} ranges")
            }
            PagesError::TrailingPage { page } => {
                write!(
                    f,
                    "heki_page {page:#x} links further after the last announced range"
                )
            }
            PagesError::Range { index, error } => write!(f, "range {index}: {error}"),
            PagesError::BlobTooLarge { bytes, max } => {
                write!(f, "blob of {bytes} bytes exceeds {max}")
            }
            PagesError::BlobNotContiguous { index } => {
                write!(f, "blob range {index} does not continue its predecessor")
            }
            PagesError::DuplicateRange { index } => {
                write!(f, "range {index} repeats a unique type")
            }
            PagesError::Missing(what) => write!(f, "required {what} missing"),
            PagesError::Read(e) => e.fmt(f),
        }
    }
}

impl ToErrno for PagesError {
    fn errno(&self) -> Errno {
        match self {
            PagesError::Read(_) | PagesError::BlobNotContiguous { .. } => Errno::EFAULT,
            PagesError::TooManyRanges { .. }
            | PagesError::ChainTooLong { .. }
            | PagesError::BlobTooLarge { .. } => Errno::ERANGE,
            PagesError::Missing(_) => Errno::ENOENT,
            _ => Errno::EINVAL,
        }
    }
}

/// One validated `heki_range` with its decoded attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range<A> {
    /// Guest-kernel virtual address of the first byte.
    pub va: u64,
    /// Guest-physical start.
    pub pa: u64,
    /// Guest-physical end (exclusive), `> pa`.
    pub epa: u64,
    /// The decoded attribute.
    pub attr: A,
}

impl<A> Range<A> {
    /// Length in bytes (never zero).
    pub fn len(&self) -> u64 {
        self.epa - self.pa
    }

    /// Always false: validated ranges are never empty.
    pub fn is_empty(&self) -> bool {
        false
    }
}

fn le64(b: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(w)
}

/// Canonical for 57-bit (LA57) virtual addresses, which includes 48-bit ones.
fn canonical(va: u64) -> bool {
    let top = (va as i64) >> 56;
    top == 0 || top == -1
}

fn check_range<A: RangeAttr>(raw: &[u8], limits: &Limits) -> Result<Range<A>, RangeError> {
    let (va, pa, epa, attributes) = (le64(raw, 0), le64(raw, 8), le64(raw, 16), le64(raw, 24));
    let attr = A::decode(attributes).ok_or(RangeError::BadAttribute(attributes))?;
    if pa >= epa {
        return Err(RangeError::Empty);
    }
    if attr.page_granular() && !(page_aligned(va) && page_aligned(pa) && page_aligned(epa)) {
        return Err(RangeError::Misaligned);
    }
    if epa > limits.max_gpa {
        return Err(RangeError::BeyondGpaSpace);
    }
    let last = va.checked_add(epa - pa - 1).ok_or(RangeError::BadVa)?;
    if !canonical(va) || !canonical(last) || (va as i64 >> 63) != (last as i64 >> 63) {
        return Err(RangeError::BadVa);
    }
    Ok(Range { va, pa, epa, attr })
}

/// Reads and validates a `heki_page` chain of `total` ranges starting at
/// `first`, decoding attributes in namespace `A`.
///
/// Each page is copied once; the chain must hold exactly `total` ranges (a
/// page may not announce more than remain, and the last page must end the
/// chain with `next_pa == 0`).
pub fn read_ranges<A: RangeAttr, M: GuestMemory + ?Sized>(
    mem: &mut M,
    first: u64,
    total: u64,
    limits: &Limits,
) -> Result<Vec<Range<A>>, PagesError> {
    if first == 0 || !page_aligned(first) || first >= limits.max_gpa {
        return Err(PagesError::BadFirstPage(first));
    }
    if total == 0 {
        return Err(PagesError::NoRanges);
    }
    if total > limits.max_ranges {
        return Err(PagesError::TooManyRanges {
            announced: total,
            max: limits.max_ranges,
        });
    }
    let mut ranges: Vec<Range<A>> = Vec::with_capacity(total.min(4 * RANGES_PER_PAGE) as usize);
    let mut visited = BTreeSet::new();
    let mut page = vec![0u8; PAGE_SIZE as usize];
    let mut gpa = first;
    loop {
        if visited.len() >= limits.max_pages {
            return Err(PagesError::ChainTooLong {
                max_pages: limits.max_pages,
            });
        }
        if !visited.insert(gpa) {
            return Err(PagesError::Cycle { gpa });
        }
        // The single copy of this page; nothing below looks at guest memory.
        mem.read(gpa, &mut page)?;
        let next_pa = le64(&page, 8);
        let nranges = le64(&page, 16);
        let remaining = total - ranges.len() as u64;
        if nranges == 0 || nranges > RANGES_PER_PAGE || nranges > remaining {
            return Err(PagesError::BadRangeCount {
                page: gpa,
                nranges,
                remaining,
            });
        }
        for i in 0..nranges as usize {
            let off = PAGE_HEADER_SIZE + i * RANGE_SIZE;
            let index = ranges.len();
            let range = check_range::<A>(&page[off..off + RANGE_SIZE], limits)
                .map_err(|error| PagesError::Range { index, error })?;
            ranges.push(range);
        }
        if ranges.len() as u64 == total {
            if next_pa != 0 {
                return Err(PagesError::TrailingPage { page: gpa });
            }
            return Ok(ranges);
        }
        if next_pa == 0 {
            return Err(PagesError::Truncated {
                announced: total,
                found: ranges.len() as u64,
            });
        }
        if !page_aligned(next_pa) || next_pa >= limits.max_gpa {
            return Err(PagesError::BadNextPage { page: gpa, next_pa });
        }
        gpa = next_pa;
    }
}

/// Copies `[range.pa, range.epa)` from guest memory into a new buffer.
pub fn copy_range<A, M: GuestMemory + ?Sized>(
    mem: &mut M,
    range: &Range<A>,
    limits: &Limits,
) -> Result<Vec<u8>, PagesError> {
    copy_blob(mem, core::slice::from_ref(range), limits)
}

/// Concatenates the bytes of `ranges`, which must describe one virtually
/// contiguous object in ascending order (the C secure kernel's rule; a gap
/// means the guest lied about the object). The total size is checked against
/// [`Limits::max_blob_bytes`] before anything is read.
pub fn copy_blob<A, M: GuestMemory + ?Sized>(
    mem: &mut M,
    ranges: &[Range<A>],
    limits: &Limits,
) -> Result<Vec<u8>, PagesError> {
    let mut total: u64 = 0;
    for (i, r) in ranges.iter().enumerate() {
        if i > 0 {
            let prev = &ranges[i - 1];
            if prev.va.checked_add(prev.len()) != Some(r.va) {
                return Err(PagesError::BlobNotContiguous { index: i });
            }
        }
        total = total.saturating_add(r.len());
    }
    if total > limits.max_blob_bytes as u64 {
        return Err(PagesError::BlobTooLarge {
            bytes: total,
            max: limits.max_blob_bytes,
        });
    }
    let mut out = vec![0u8; total as usize];
    let mut off = 0usize;
    for r in ranges {
        let len = r.len() as usize;
        mem.read(r.pa, &mut out[off..off + len])?;
        off += len;
    }
    Ok(out)
}

/// The ranges of `ranges` whose attribute is `attr`, in arrival order.
pub fn select<A: RangeAttr>(ranges: &[Range<A>], attr: A) -> Vec<Range<A>> {
    ranges.iter().filter(|r| r.attr == attr).copied().collect()
}

/// The blobs of a `LOAD_KDATA` call, copied out of guest memory (§5.4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kdata {
    /// Concatenated DER certificates (type 0).
    pub system_certs: Vec<u8>,
    /// Revocation certificates (type 1), possibly empty.
    pub revocation_certs: Vec<u8>,
    /// Blocklist hash slots (type 2), possibly empty.
    pub blocklist: Vec<u8>,
    /// `struct heki_kinfo` (type 3).
    pub kernel_info: Vec<u8>,
    /// The kernel's `.rodata` (type 4).
    pub kernel_data: Vec<u8>,
    /// Core-kernel patch info (type 5), possibly empty.
    pub patch_info: Vec<u8>,
    /// Kexec trampoline pages (type 6), to be protected read-only.
    pub kexec_trampoline: Vec<Range<KdataType>>,
}

/// Reads a whole `LOAD_KDATA` call: the chain, then each blob type. System
/// certificates are required (the modules and kexec paths depend on them); the
/// kernel info and `.rodata` are copied if present.
pub fn read_kdata<M: GuestMemory + ?Sized>(
    mem: &mut M,
    first: u64,
    total: u64,
    limits: &Limits,
) -> Result<Kdata, PagesError> {
    let ranges = read_ranges::<KdataType, M>(mem, first, total, limits)?;
    let mut blob = |t: KdataType| copy_blob(mem, &select(&ranges, t), limits);
    let kdata = Kdata {
        system_certs: blob(KdataType::SystemCerts)?,
        revocation_certs: blob(KdataType::RevocationCerts)?,
        blocklist: blob(KdataType::BlocklistHashes)?,
        kernel_info: blob(KdataType::KernelInfo)?,
        kernel_data: blob(KdataType::KernelData)?,
        patch_info: blob(KdataType::PatchInfo)?,
        kexec_trampoline: select(&ranges, KdataType::KexecTrampoline),
    };
    if kdata.system_certs.is_empty() {
        return Err(PagesError::Missing("system certificates"));
    }
    Ok(kdata)
}

/// A decoded `VALIDATE_MODULE` call (§5.5): the module file and patch info
/// are copied; the section ranges are only described, because their contents
/// must be copied after the frames have been frozen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleRequest {
    /// The signed module file as the guest's loader read it.
    pub elf: Vec<u8>,
    /// The module's `heki_patch_info` records, possibly empty.
    pub patch_info: Vec<u8>,
    /// The section ranges (types 0..=6), in arrival order.
    pub sections: Vec<Range<ModMemType>>,
}

impl ModuleRequest {
    /// Reads the chain and copies the ELF file and patch info.
    pub fn read<M: GuestMemory + ?Sized>(
        mem: &mut M,
        first: u64,
        total: u64,
        limits: &Limits,
    ) -> Result<Self, PagesError> {
        let ranges = read_ranges::<ModMemType, M>(mem, first, total, limits)?;
        let elf = copy_blob(mem, &select(&ranges, ModMemType::Elf), limits)?;
        if elf.is_empty() {
            return Err(PagesError::Missing("module ELF"));
        }
        let patch_info = copy_blob(mem, &select(&ranges, ModMemType::Patch), limits)?;
        let sections = ranges.into_iter().filter(|r| r.attr.is_section()).collect();
        Ok(ModuleRequest {
            elf,
            patch_info,
            sections,
        })
    }

    /// The ranges of one section type, in arrival order.
    pub fn ranges(&self, ty: ModMemType) -> Vec<Range<ModMemType>> {
        select(&self.sections, ty)
    }

    /// Copies the loaded bytes of section type `ty` (empty if the module has
    /// none). Call only after the frames are read-only for the guest.
    pub fn copy_section<M: GuestMemory + ?Sized>(
        &self,
        mem: &mut M,
        ty: ModMemType,
        limits: &Limits,
    ) -> Result<Vec<u8>, PagesError> {
        copy_blob(mem, &self.ranges(ty), limits)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::abi::{KeyPayload, MemAttr};
    use alloc::collections::BTreeMap;
    use proptest::prelude::*;

    /// Sparse guest memory for tests: pages that exist, everything else faults.
    #[derive(Default)]
    pub(crate) struct TestMemory {
        pub pages: BTreeMap<u64, Vec<u8>>,
        pub reads: usize,
    }

    impl TestMemory {
        pub fn write(&mut self, gpa: u64, data: &[u8]) {
            for (i, b) in data.iter().enumerate() {
                let a = gpa + i as u64;
                let page = self
                    .pages
                    .entry(a & !(PAGE_SIZE - 1))
                    .or_insert_with(|| vec![0; PAGE_SIZE as usize]);
                page[(a & (PAGE_SIZE - 1)) as usize] = *b;
            }
        }
    }

    impl GuestMemory for TestMemory {
        fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
            self.reads += 1;
            let err = GuestMemoryError {
                gpa,
                len: buf.len(),
            };
            for (i, b) in buf.iter_mut().enumerate() {
                let a = gpa.checked_add(i as u64).ok_or(err)?;
                let page = self.pages.get(&(a & !(PAGE_SIZE - 1))).ok_or(err)?;
                *b = page[(a & (PAGE_SIZE - 1)) as usize];
            }
            Ok(())
        }
    }

    pub(crate) fn raw_range(va: u64, pa: u64, epa: u64, attr: u64) -> [u8; 32] {
        let mut r = [0u8; 32];
        r[0..8].copy_from_slice(&va.to_le_bytes());
        r[8..16].copy_from_slice(&pa.to_le_bytes());
        r[16..24].copy_from_slice(&epa.to_le_bytes());
        r[24..32].copy_from_slice(&attr.to_le_bytes());
        r
    }

    /// Writes a chain holding `ranges` at the given page GPAs (127 per page).
    pub(crate) fn write_chain(mem: &mut TestMemory, pages: &[u64], ranges: &[[u8; 32]]) {
        let chunks: Vec<&[[u8; 32]]> = ranges.chunks(RANGES_PER_PAGE as usize).collect();
        assert_eq!(chunks.len(), pages.len());
        for (i, chunk) in chunks.iter().enumerate() {
            let mut page = vec![0u8; PAGE_SIZE as usize];
            let next = pages.get(i + 1).copied().unwrap_or(0);
            page[0..8].copy_from_slice(&0xffff_8880_dead_0000u64.to_le_bytes());
            page[8..16].copy_from_slice(&next.to_le_bytes());
            page[16..24].copy_from_slice(&(chunk.len() as u64).to_le_bytes());
            for (j, r) in chunk.iter().enumerate() {
                let off = PAGE_HEADER_SIZE + j * RANGE_SIZE;
                page[off..off + RANGE_SIZE].copy_from_slice(r);
            }
            mem.write(pages[i], &page);
        }
    }

    const KVA: u64 = 0xffff_ffff_8100_0000;
    const RW: u64 = 3;

    fn pm_ranges(n: usize) -> Vec<[u8; 32]> {
        (0..n as u64)
            .map(|i| {
                raw_range(
                    KVA + i * 0x1000,
                    0x100_0000 + i * 0x1000,
                    0x100_1000 + i * 0x1000,
                    RW,
                )
            })
            .collect()
    }

    #[test]
    fn reads_a_multi_page_chain() {
        let mut mem = TestMemory::default();
        let ranges = pm_ranges(300);
        write_chain(&mut mem, &[0x5000, 0x9000, 0x2000], &ranges);
        let got = read_ranges::<MemAttr, _>(&mut mem, 0x5000, 300, &Limits::default()).unwrap();
        assert_eq!(got.len(), 300);
        assert_eq!(got[299].pa, 0x100_0000 + 299 * 0x1000);
        assert_eq!(got[0].attr, MemAttr::READ | MemAttr::WRITE);
        assert_eq!(mem.reads, 3, "each page is read exactly once");
    }

    #[test]
    fn rejects_bad_first_page_and_counts() {
        let mut mem = TestMemory::default();
        write_chain(&mut mem, &[0x5000], &pm_ranges(3));
        let l = Limits::default();
        let r = |mem: &mut TestMemory, g, n| read_ranges::<MemAttr, _>(mem, g, n, &l);
        assert_eq!(r(&mut mem, 0, 3), Err(PagesError::BadFirstPage(0)));
        assert_eq!(
            r(&mut mem, 0x5008, 3),
            Err(PagesError::BadFirstPage(0x5008))
        );
        assert_eq!(r(&mut mem, 0x5000, 0), Err(PagesError::NoRanges));
        assert!(matches!(
            r(&mut mem, 0x5000, u64::MAX),
            Err(PagesError::TooManyRanges { .. })
        ));
        // Announced 2, page says 3.
        assert!(matches!(
            r(&mut mem, 0x5000, 2),
            Err(PagesError::BadRangeCount {
                nranges: 3,
                remaining: 2,
                ..
            })
        ));
        // Announced 4, chain has 3.
        assert_eq!(
            r(&mut mem, 0x5000, 4),
            Err(PagesError::Truncated {
                announced: 4,
                found: 3
            })
        );
        // Unmapped first page.
        assert!(matches!(r(&mut mem, 0x7000, 3), Err(PagesError::Read(_))));
    }

    #[test]
    fn rejects_nranges_out_of_bounds() {
        let mut mem = TestMemory::default();
        write_chain(&mut mem, &[0x5000], &pm_ranges(1));
        for bad in [0u64, 128, u64::MAX] {
            mem.write(0x5010, &bad.to_le_bytes());
            assert!(matches!(
                read_ranges::<MemAttr, _>(&mut mem, 0x5000, 200, &Limits::default()),
                Err(PagesError::BadRangeCount { .. })
            ));
        }
    }

    #[test]
    fn detects_cycles_and_long_chains() {
        let mut mem = TestMemory::default();
        let ranges = pm_ranges(127 * 3);
        write_chain(&mut mem, &[0x1000, 0x2000, 0x3000], &ranges);
        // Make page 3 point back to page 2.
        mem.write(0x3008, &0x2000u64.to_le_bytes());
        mem.write(0x3010, &127u64.to_le_bytes());
        assert_eq!(
            read_ranges::<MemAttr, _>(&mut mem, 0x1000, 127 * 10, &Limits::default()),
            Err(PagesError::Cycle { gpa: 0x2000 })
        );
        // Self-loop.
        mem.write(0x1008, &0x1000u64.to_le_bytes());
        assert_eq!(
            read_ranges::<MemAttr, _>(&mut mem, 0x1000, 127 * 10, &Limits::default()),
            Err(PagesError::Cycle { gpa: 0x1000 })
        );
        // Chain length cap.
        mem.write(0x1008, &0x2000u64.to_le_bytes());
        mem.write(0x3008, &0u64.to_le_bytes());
        let l = Limits {
            max_pages: 2,
            ..Limits::default()
        };
        assert_eq!(
            read_ranges::<MemAttr, _>(&mut mem, 0x1000, 127 * 3, &l),
            Err(PagesError::ChainTooLong { max_pages: 2 })
        );
    }

    #[test]
    fn rejects_bad_next_and_trailing_pages() {
        let mut mem = TestMemory::default();
        write_chain(&mut mem, &[0x1000, 0x2000], &pm_ranges(130));
        mem.write(0x1008, &0x2008u64.to_le_bytes());
        assert_eq!(
            read_ranges::<MemAttr, _>(&mut mem, 0x1000, 130, &Limits::default()),
            Err(PagesError::BadNextPage {
                page: 0x1000,
                next_pa: 0x2008
            })
        );
        mem.write(0x1008, &(1u64 << 60).to_le_bytes());
        assert!(matches!(
            read_ranges::<MemAttr, _>(&mut mem, 0x1000, 130, &Limits::default()),
            Err(PagesError::BadNextPage { .. })
        ));
        mem.write(0x1008, &0x2000u64.to_le_bytes());
        mem.write(0x2008, &0x9000u64.to_le_bytes());
        assert_eq!(
            read_ranges::<MemAttr, _>(&mut mem, 0x1000, 130, &Limits::default()),
            Err(PagesError::TrailingPage { page: 0x2000 })
        );
    }

    #[test]
    fn validates_each_range() {
        let l = Limits::default();
        let one = |raw: [u8; 32]| {
            let mut mem = TestMemory::default();
            write_chain(&mut mem, &[0x4000], &[raw]);
            read_ranges::<MemAttr, _>(&mut mem, 0x4000, 1, &l)
        };
        let err = |e| Err(PagesError::Range { index: 0, error: e });
        assert_eq!(
            one(raw_range(KVA, 0x2000, 0x2000, RW)),
            err(RangeError::Empty)
        );
        assert_eq!(
            one(raw_range(KVA, 0x3000, 0x2000, RW)),
            err(RangeError::Empty)
        );
        assert_eq!(
            one(raw_range(KVA + 8, 0x2000, 0x3000, RW)),
            err(RangeError::Misaligned)
        );
        assert_eq!(
            one(raw_range(KVA, 0x2000, 0x3008, RW)),
            err(RangeError::Misaligned)
        );
        assert_eq!(
            one(raw_range(KVA, 0x2000, 0x3000, 0)),
            err(RangeError::BadAttribute(0))
        );
        assert_eq!(
            one(raw_range(KVA, 0x2000, 0x3000, 16)),
            err(RangeError::BadAttribute(16))
        );
        assert_eq!(
            one(raw_range(KVA, 0x2000, 1 << 53, RW)),
            err(RangeError::BeyondGpaSpace)
        );
        assert_eq!(
            one(raw_range(0x0100_0000_0000_0000, 0x2000, 0x3000, RW)),
            err(RangeError::BadVa)
        );
        // va + len wraps around.
        assert_eq!(
            one(raw_range(0xffff_ffff_ffff_f000, 0x2000, 0x4000, RW)),
            err(RangeError::BadVa)
        );
        // Crosses from the lower canonical half to the upper one.
        assert_eq!(
            one(raw_range(0x00ff_ffff_ffff_f000, 0x2000, 0x4000, RW)),
            err(RangeError::BadVa)
        );
        assert!(one(raw_range(KVA, 0x2000, 0x3000, RW)).is_ok());
    }

    #[test]
    fn byte_granular_types_allow_unaligned() {
        let mut mem = TestMemory::default();
        write_chain(
            &mut mem,
            &[0x4000],
            &[raw_range(KVA + 3, 0x2003, 0x2010, 0)],
        );
        let r = read_ranges::<KeyPayload, _>(&mut mem, 0x4000, 1, &Limits::default()).unwrap();
        assert_eq!(r[0].len(), 13);
        // ... but not for section types.
        write_chain(
            &mut mem,
            &[0x4000],
            &[raw_range(KVA + 3, 0x2003, 0x2010, 0)],
        );
        assert!(read_ranges::<ModMemType, _>(&mut mem, 0x4000, 1, &Limits::default()).is_err());
    }

    #[test]
    fn copy_once_then_validate_is_toctou_free() {
        // A memory that changes the page after the first read: the parser
        // must never see the second version.
        struct Flipping {
            inner: TestMemory,
            flipped: bool,
        }
        impl GuestMemory for Flipping {
            fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
                self.inner.read(gpa, buf)?;
                if !self.flipped {
                    self.flipped = true;
                    // Make the range invalid for any later read.
                    self.inner.write(0x4000 + 24 + 24, &99u64.to_le_bytes());
                }
                Ok(())
            }
        }
        let mut mem = Flipping {
            inner: TestMemory::default(),
            flipped: false,
        };
        write_chain(
            &mut mem.inner,
            &[0x4000],
            &[raw_range(KVA, 0x2000, 0x3000, RW)],
        );
        let r = read_ranges::<MemAttr, _>(&mut mem, 0x4000, 1, &Limits::default()).unwrap();
        assert_eq!(r[0].attr, MemAttr::READ | MemAttr::WRITE);
    }

    #[test]
    fn blobs() {
        let mut mem = TestMemory::default();
        mem.write(0x10ff0, b"0123456789abcdef");
        mem.write(0x20000, b"ghij");
        let ranges = [
            Range {
                va: KVA + 0xff0,
                pa: 0x10ff0,
                epa: 0x11000,
                attr: KeyPayload,
            },
            Range {
                va: KVA + 0x1000,
                pa: 0x20000,
                epa: 0x20004,
                attr: KeyPayload,
            },
        ];
        let l = Limits::default();
        assert_eq!(
            copy_blob(&mut mem, &ranges, &l).unwrap(),
            b"0123456789abcdefghij"
        );
        let gap = [
            ranges[0],
            Range {
                va: KVA + 0x1001,
                ..ranges[1]
            },
        ];
        assert_eq!(
            copy_blob(&mut mem, &gap, &l),
            Err(PagesError::BlobNotContiguous { index: 1 })
        );
        let small = Limits {
            max_blob_bytes: 19,
            ..l
        };
        assert!(matches!(
            copy_blob(&mut mem, &ranges, &small),
            Err(PagesError::BlobTooLarge { bytes: 20, .. })
        ));
        let unmapped = [Range {
            va: KVA,
            pa: 0x30000,
            epa: 0x30001,
            attr: KeyPayload,
        }];
        assert!(matches!(
            copy_blob(&mut mem, &unmapped, &l),
            Err(PagesError::Read(_))
        ));
        assert_eq!(copy_blob::<KeyPayload, _>(&mut mem, &[], &l).unwrap(), b"");
    }

    #[test]
    fn kdata_and_module_requests() {
        let mut mem = TestMemory::default();
        mem.write(0x20000, b"CERTS");
        mem.write(0x21000, b"KINFO");
        mem.write(0x30000, b"\x7fELF....");
        let ranges = [
            raw_range(KVA, 0x20000, 0x20005, 0),
            raw_range(KVA + 0x1000, 0x21000, 0x21005, 3),
            raw_range(KVA + 0x2000, 0x22000, 0x23000, 6),
        ];
        write_chain(&mut mem, &[0x4000], &ranges);
        let kd = read_kdata(&mut mem, 0x4000, 3, &Limits::default()).unwrap();
        assert_eq!(kd.system_certs, b"CERTS");
        assert_eq!(kd.kernel_info, b"KINFO");
        assert_eq!(kd.kexec_trampoline.len(), 1);
        assert!(kd.blocklist.is_empty());
        write_chain(&mut mem, &[0x4000], &ranges[1..]);
        assert_eq!(
            read_kdata(&mut mem, 0x4000, 2, &Limits::default()),
            Err(PagesError::Missing("system certificates"))
        );

        let ranges = [
            raw_range(KVA, 0x30000, 0x30008, 7),
            raw_range(0xffff_ffff_c000_0000, 0x40000, 0x42000, 0),
            raw_range(0xffff_ffff_c000_4000, 0x50000, 0x51000, 2),
        ];
        write_chain(&mut mem, &[0x4000], &ranges);
        mem.write(0x40000, &[0xcc; 0x2000]);
        let req = ModuleRequest::read(&mut mem, 0x4000, 3, &Limits::default()).unwrap();
        assert_eq!(req.elf, b"\x7fELF....");
        assert!(req.patch_info.is_empty());
        assert_eq!(req.sections.len(), 2);
        let text = req
            .copy_section(&mut mem, ModMemType::Text, &Limits::default())
            .unwrap();
        assert_eq!(text.len(), 0x2000);
        assert!(req
            .copy_section(&mut mem, ModMemType::InitText, &Limits::default())
            .unwrap()
            .is_empty());
    }

    proptest! {
        /// Arbitrary page contents never panic the parser, and anything it
        /// accepts satisfies the documented invariants.
        #[test]
        fn arbitrary_pages_never_panic(
            pages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 4096), 1..4),
            links in proptest::collection::vec(0u64..6, 4),
            total in 0u64..600,
        ) {
            let mut mem = TestMemory::default();
            for (i, p) in pages.iter().enumerate() {
                let mut p = p.clone();
                // Steer next_pa into the populated area half of the time.
                if links[i] < 4 {
                    p[8..16].copy_from_slice(&((links[i] + 1) * 0x1000).to_le_bytes());
                }
                if links[i] % 2 == 0 {
                    let n = (u64::from(p[16]) % 130).to_le_bytes();
                    p[16..24].copy_from_slice(&n);
                }
                mem.write((i as u64 + 1) * 0x1000, &p);
            }
            let l = Limits::default();
            if let Ok(r) = read_ranges::<MemAttr, _>(&mut mem, 0x1000, total, &l) {
                prop_assert_eq!(r.len() as u64, total);
                for x in r {
                    prop_assert!(x.pa < x.epa && x.epa <= l.max_gpa);
                    prop_assert!(page_aligned(x.va) && page_aligned(x.pa) && page_aligned(x.epa));
                }
            }
        }
    }
}
