//! The `BootInfo` page the emulator (or, on real TDX, the IGVM parameter area)
//! places at GPA `0x1000` ([`lvbs_loader::BootInfo`], docs/emulator-contract.md),
//! and the L2 layout derived from it.
//!
//! The page is host-provided input: every field is checked before use, and a
//! layout is produced only when the L2 region is disjoint from L1's image, lies
//! inside the TD's memory and inside the 1 GiB both L1 and L2 identity-map.

use core::fmt;

pub use lvbs_loader::BootInfo;
use lvbs_loader::{layout, BootInfoError as DecodeError};

/// GPA of the `BootInfo` page.
pub const BOOT_INFO_GPA: u64 = BootInfo::GPA;
/// Bytes of the encoded structure.
pub const BOOT_INFO_SIZE: usize = BootInfo::SIZE;
/// 4 KiB.
pub const PAGE_SIZE: u64 = layout::PAGE_SIZE;
/// 2 MiB.
pub const LARGE_PAGE_SIZE: u64 = 0x20_0000;
/// Both L1's and L2's identity maps cover the first 1 GiB (one page directory).
pub const IDENTITY_MAP_LIMIT: u64 = 0x4000_0000;
/// Offset of the "RO test page" inside the L2 region (R|Xu only, no W, no Xs).
pub const RO_TEST_PAGE_OFFSET: u64 = layout::L2_RO_TEST_PAGE_OFFSET;
/// The last 64 KiB of the L2 region hold L2's page tables, GDT and TSS; the
/// L2 stack starts right below them.
pub const L2_TAIL_SIZE: u64 = layout::L2_PAGE_TABLE_BYTES;

/// A `BootInfo` field failed validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootInfoError {
    /// What is wrong.
    pub what: &'static str,
    /// The offending value.
    pub value: u64,
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad BootInfo: {} ({:#x})", self.what, self.value)
    }
}

fn check(ok: bool, what: &'static str, value: u64) -> Result<(), BootInfoError> {
    if ok {
        Ok(())
    } else {
        Err(BootInfoError { what, value })
    }
}

/// The GPA range of L1's own image (text, data, bss, heap and stack), page aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L1Image {
    /// First byte.
    pub start: u64,
    /// One past the last byte, page aligned.
    pub end: u64,
}

impl L1Image {
    /// Whether `[start, end)` overlaps the image.
    pub const fn overlaps(&self, start: u64, end: u64) -> bool {
        start < self.end && self.start < end
    }
}

/// Where everything of L2 VM #1 lives, derived from a validated [`BootInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2Layout {
    /// First GPA of the region (2 MiB aligned).
    pub base: u64,
    /// Size (a 2 MiB multiple).
    pub size: u64,
    /// Entry RIP.
    pub entry: u64,
    /// End of the loaded image.
    pub image_end: u64,
    /// The RO test page (`base + 0x1F_0000`).
    pub ro_page: u64,
    /// Start of the last 64 KiB: L2 PML4.
    pub pml4: u64,
    /// L2 PDPT.
    pub pdpt: u64,
    /// L2 page directory (512 × 2 MiB = the first 1 GiB).
    pub pd: u64,
    /// L2 GDT (null, code 0x08, data 0x10, TSS 0x18).
    pub gdt: u64,
    /// L2 TSS (104 bytes).
    pub tss: u64,
    /// Initial RSP: the top of the region minus 64 KiB.
    pub stack_top: u64,
    /// The L2 command line `(gpa, size)`, if any (BootInfo version 2).
    pub cmdline: Option<(u64, u64)>,
    /// The initrd `(gpa, size)`, if any.
    pub initrd: Option<(u64, u64)>,
}

impl L2Layout {
    /// One past the last byte of the region.
    pub const fn end(&self) -> u64 {
        self.base + self.size
    }

    /// Byte size of the L2 GDT (five 8-byte slots: the TSS descriptor takes two).
    pub const GDT_BYTES: u64 = 40;
    /// Byte size of a 64-bit TSS.
    pub const TSS_BYTES: u64 = 0x68;
}

/// Decodes the page's first [`BOOT_INFO_SIZE`] bytes (magic and version checked).
pub fn decode(bytes: &[u8]) -> Result<BootInfo, BootInfoError> {
    BootInfo::from_bytes(bytes).map_err(|e| match e {
        DecodeError::TooShort => BootInfoError {
            what: "page too short",
            value: bytes.len() as u64,
        },
        DecodeError::BadMagic => BootInfoError {
            what: "magic is not LVBSTDX1",
            value: bytes
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes),
        },
        DecodeError::BadVersion(v) => BootInfoError {
            what: "version",
            value: v as u64,
        },
    })
}

/// Checks every field of a decoded page against the contract and L1's own
/// image and returns the L2 layout.
pub fn validate(bi: &BootInfo, l1: &L1Image) -> Result<L2Layout, BootInfoError> {
    check(bi.flags == 0, "flags must be 0", bi.flags)?;
    check(bi.num_vcpus >= 1, "num_vcpus", bi.num_vcpus as u64)?;
    let mem = bi.td_memory_bytes;
    check(
        mem != 0 && mem.is_multiple_of(PAGE_SIZE) && mem <= IDENTITY_MAP_LIMIT,
        "td_memory_bytes (4 KiB multiple, at most 1 GiB)",
        mem,
    )?;
    check(
        l1.end <= mem && BOOT_INFO_GPA + PAGE_SIZE <= mem,
        "td_memory_bytes does not cover the paravisor image",
        mem,
    )?;
    let (base, size) = (bi.l2_base, bi.l2_size);
    check(
        base != 0 && base % LARGE_PAGE_SIZE == 0,
        "l2_base (2 MiB aligned)",
        base,
    )?;
    check(
        size % LARGE_PAGE_SIZE == 0 && size >= RO_TEST_PAGE_OFFSET + PAGE_SIZE + L2_TAIL_SIZE,
        "l2_size (2 MiB multiple holding the RO test page and the 64 KiB tail)",
        size,
    )?;
    let end = base.saturating_add(size);
    check(end <= mem, "L2 region ends beyond td_memory_bytes", end)?;
    check(
        !l1.overlaps(base, end),
        "L2 region overlaps the paravisor image",
        base,
    )?;
    check(
        !(base < BOOT_INFO_GPA + PAGE_SIZE && BOOT_INFO_GPA < end),
        "L2 region overlaps the BootInfo page",
        base,
    )?;
    let ro_page = base + RO_TEST_PAGE_OFFSET;
    check(
        bi.l2_image_end > base && bi.l2_image_end <= ro_page,
        "l2_image_end (inside the region, below the RO test page)",
        bi.l2_image_end,
    )?;
    check(
        bi.l2_entry >= base && bi.l2_entry < bi.l2_image_end,
        "l2_entry (inside the loaded image)",
        bi.l2_entry,
    )?;
    let tail = end - L2_TAIL_SIZE;
    // The command line and the initrd: inside the region, above the RO test
    // page, below the page tables, disjoint from each other.
    let blob =
        |gpa: u64, size: u64, what: &'static str| -> Result<Option<(u64, u64)>, BootInfoError> {
            if size == 0 {
                check(gpa == 0, what, gpa)?;
                return Ok(None);
            }
            let blob_end = gpa.saturating_add(size);
            check(gpa >= ro_page + PAGE_SIZE && blob_end <= tail, what, gpa)?;
            Ok(Some((gpa, size)))
        };
    let cmdline = blob(
        bi.cmdline_gpa,
        bi.cmdline_size,
        "cmdline (between the RO test page and the L2 page tables)",
    )?;
    let initrd = blob(
        bi.initrd_gpa,
        bi.initrd_size,
        "initrd (between the RO test page and the L2 page tables)",
    )?;
    check(
        bi.cmdline_size <= layout::L2_CMDLINE_MAX_BYTES,
        "cmdline_size (at most 4 KiB)",
        bi.cmdline_size,
    )?;
    if let (Some((c, cs)), Some((i, is))) = (cmdline, initrd) {
        check(c + cs <= i || i + is <= c, "cmdline overlaps the initrd", c)?;
    }
    Ok(L2Layout {
        base,
        size,
        entry: bi.l2_entry,
        image_end: bi.l2_image_end,
        ro_page,
        pml4: tail,
        pdpt: tail + PAGE_SIZE,
        pd: tail + 2 * PAGE_SIZE,
        gdt: tail + 3 * PAGE_SIZE,
        tss: tail + 3 * PAGE_SIZE + 0x100,
        stack_top: tail,
        cmdline,
        initrd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> BootInfo {
        BootInfo {
            num_vcpus: 1,
            td_memory_bytes: 64 << 20,
            l2_base: 0x0100_0000,
            l2_size: 32 << 20,
            l2_entry: 0x0100_0000,
            l2_image_end: 0x0100_5000,
            flags: 0,
            cmdline_gpa: 0x0120_0000,
            cmdline_size: 10,
            initrd_gpa: 0x0140_0000,
            initrd_size: 0x1234,
        }
    }

    const L1: L1Image = L1Image {
        start: 0x20_0000,
        end: 0x50_0000,
    };

    #[test]
    fn decode_and_layout() {
        let info = good();
        let bytes = info.to_bytes();
        assert_eq!(decode(&bytes), Ok(info));
        let l = validate(&info, &L1).unwrap();
        assert_eq!(l.ro_page, 0x011F_0000);
        assert_eq!(l.pml4, 0x02FF_0000);
        assert_eq!(l.stack_top, 0x02FF_0000);
        assert_eq!(l.gdt, 0x02FF_3000);
        assert_eq!(l.tss, 0x02FF_3100);
        assert_eq!(l.end(), 0x0300_0000);
        assert_eq!(l.cmdline, Some((0x0120_0000, 10)));
        assert_eq!(l.initrd, Some((0x0140_0000, 0x1234)));
    }

    #[test]
    fn rejects_bad_encodings() {
        let mut b = good().to_bytes();
        assert_eq!(decode(&b[..10]).unwrap_err().what, "page too short");
        b[8] = 1;
        assert_eq!(decode(&b).unwrap_err().value, 1);
        b[0] ^= 1;
        assert_eq!(decode(&b).unwrap_err().what, "magic is not LVBSTDX1");
    }

    #[test]
    fn rejects_bad_fields() {
        type Mutation = fn(&mut BootInfo);
        let cases: [(&str, Mutation); 16] = [
            ("cmdline below RO page", |i| i.cmdline_gpa = 0x0100_6000),
            ("cmdline in the tail", |i| i.cmdline_gpa = 0x02FF_0000),
            ("initrd wraps", |i| i.initrd_size = u64::MAX),
            ("initrd over cmdline", |i| i.initrd_gpa = 0x0120_0004),
            ("gpa without size", |i| i.initrd_size = 0),
            ("cmdline too long", |i| i.cmdline_size = 0x1001),
            ("flags", |i| i.flags = 1),
            ("vcpus", |i| i.num_vcpus = 0),
            ("memory", |i| i.td_memory_bytes = 2 << 30),
            ("base align", |i| i.l2_base += 0x1000),
            ("size", |i| i.l2_size = 0x20_0000),
            ("beyond memory", |i| i.l2_size = 64 << 20),
            ("overlap L1", |i| i.l2_base = 0x40_0000),
            ("image past RO page", |i| i.l2_image_end = 0x011F_1000),
            ("entry outside image", |i| i.l2_entry = 0x0100_5000),
            ("overflow", |i| i.l2_base = !0x1F_FFFF),
        ];
        for (name, mutate) in cases {
            let mut i = good();
            mutate(&mut i);
            assert!(validate(&i, &L1).is_err(), "{name} accepted");
        }
    }
}
