//! [`TdLayout`]: the initial contents of the TD's private memory — BootInfo,
//! the paravisor and the L2 image at the contract's GPAs — and the pages that
//! are added (accepted and measured into MRTD) before the TD starts.

use alloc::vec::Vec;

use crate::elf::{load_plan, ElfError, LoadPlan};
use crate::layout::{self, page_align_up, PAGE_SIZE};
use crate::BootInfo;

/// A part of the TD image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ImageKind {
    /// The paravisor ELF (L1).
    Paravisor,
    /// The ELF of L2 VM #1 (the probe, the attest guest, later a kernel loader).
    L2Guest,
    /// The initrd of L2 VM #1.
    Initrd,
    /// The command line of L2 VM #1.
    Cmdline,
}

/// Why an image cannot be laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// An ELF is unusable.
    Elf(ImageKind, ElfError),
    /// The initrd or command line is larger than its window.
    TooLarge(ImageKind),
}

/// What a page of the initial TD holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagePart {
    /// The BootInfo parameter area (host-filled: ADD only).
    BootInfo,
    /// The paravisor image (measured).
    Paravisor,
    /// The L2 kernel image (ADD only; the paravisor measures it into RTMR1).
    Kernel,
    /// The L2 command line (ADD only; RTMR1).
    Cmdline,
    /// The initrd (ADD only; RTMR1).
    Initrd,
    /// The TDX reset page with the jump to the paravisor entry (measured).
    ResetVector,
}

/// One page of the initial TD, in the order the loader writes (and a host
/// adds, and MRTD covers) them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadPage {
    /// Page GPA.
    pub gpa: u64,
    /// What it holds.
    pub part: PagePart,
    /// Whether TDH.MR.EXTEND covers its contents (else TDH.MEM.PAGE.ADD only).
    pub measured: bool,
}

/// The TD's initial private memory.
#[derive(Clone, Debug)]
pub struct TdLayout<'a> {
    /// The paravisor's segments; `entry` is L1's 32-bit entry point.
    pub paravisor: LoadPlan<'a>,
    /// The L2 guest's segments; `entry` is its 64-bit entry point.
    pub l2: LoadPlan<'a>,
    /// The L2 command line, if any (at `l2_base + L2_CMDLINE_OFFSET`).
    pub cmdline: Option<&'a [u8]>,
    /// The initrd, if any (at `l2_base + L2_INITRD_OFFSET`).
    pub initrd: Option<&'a [u8]>,
    /// The BootInfo page contents.
    pub boot_info: BootInfo,
}

impl<'a> TdLayout<'a> {
    /// Lays out a paravisor ELF and an L2 ELF, each in its window of the contract.
    pub fn from_elfs(paravisor: &'a [u8], l2: &'a [u8]) -> Result<Self, LayoutError> {
        Self::from_parts(paravisor, l2, None, None)
    }

    /// Lays out the paravisor, the L2 kernel ELF, and an optional initrd and
    /// command line (empty ones count as absent).
    pub fn from_parts(
        paravisor: &'a [u8],
        l2: &'a [u8],
        initrd: Option<&'a [u8]>,
        cmdline: Option<&'a [u8]>,
    ) -> Result<Self, LayoutError> {
        if crate::linux::is_vmlinux(l2) {
            return Self::linux(paravisor, l2, initrd, cmdline);
        }
        let paravisor = load_plan(
            paravisor,
            layout::PARAVISOR_BASE..layout::PARAVISOR_BASE + layout::PARAVISOR_MAX_BYTES,
        )
        .map_err(|e| LayoutError::Elf(ImageKind::Paravisor, e))?;
        let l2 = load_plan(
            l2,
            layout::L2_BASE..layout::L2_BASE + layout::L2_IMAGE_MAX_BYTES,
        )
        .map_err(|e| LayoutError::Elf(ImageKind::L2Guest, e))?;
        let initrd = initrd.filter(|i| !i.is_empty());
        let cmdline = cmdline.filter(|c| !c.is_empty());
        if initrd.is_some_and(|i| i.len() as u64 > layout::L2_INITRD_MAX_BYTES) {
            return Err(LayoutError::TooLarge(ImageKind::Initrd));
        }
        if cmdline.is_some_and(|c| c.len() as u64 > layout::L2_CMDLINE_MAX_BYTES) {
            return Err(LayoutError::TooLarge(ImageKind::Cmdline));
        }
        let mut boot_info = BootInfo::for_l2_image(l2.entry, l2.end());
        if let Some(c) = cmdline {
            boot_info.cmdline_gpa = layout::L2_BASE + layout::L2_CMDLINE_OFFSET;
            boot_info.cmdline_size = c.len() as u64;
        }
        if let Some(i) = initrd {
            boot_info.initrd_gpa = layout::L2_BASE + layout::L2_INITRD_OFFSET;
            boot_info.initrd_size = i.len() as u64;
        }
        Ok(TdLayout {
            paravisor,
            l2,
            cmdline,
            initrd,
            boot_info,
        })
    }

    /// Every page of the initial TD in load order: BootInfo (parameter area),
    /// the paravisor, the L2 kernel from `l2_base` to the end of its image,
    /// the command line, the initrd, and the reset page.
    pub fn pages(&self) -> Vec<LoadPage> {
        let page = |gpa, part, measured| LoadPage {
            gpa,
            part,
            measured,
        };
        let span =
            |start: u64, len: u64| (start..page_align_up(start + len)).step_by(PAGE_SIZE as usize);
        let mut v = Vec::from([page(BootInfo::GPA, PagePart::BootInfo, false)]);
        v.extend(
            self.paravisor
                .pages()
                .into_iter()
                .map(|g| page(g, PagePart::Paravisor, true)),
        );
        let bi = &self.boot_info;
        v.extend(
            span(bi.l2_base, bi.l2_image_end - bi.l2_base)
                .map(|g| page(g, PagePart::Kernel, false)),
        );
        v.extend(span(bi.cmdline_gpa, bi.cmdline_size).map(|g| page(g, PagePart::Cmdline, false)));
        v.extend(span(bi.initrd_gpa, bi.initrd_size).map(|g| page(g, PagePart::Initrd, false)));
        v.push(page(layout::RESET_PAGE_GPA, PagePart::ResetVector, true));
        v
    }

    /// GPAs of [`TdLayout::pages`].
    pub fn added_pages(&self) -> Vec<u64> {
        self.pages().iter().map(|p| p.gpa).collect()
    }

    /// Bytes at the bottom of private memory that start accepted: up to the
    /// end of the highest added page inside TD memory.
    pub fn accepted_bytes(&self) -> u64 {
        self.pages()
            .iter()
            .filter(|p| p.gpa < self.boot_info.td_memory_bytes)
            .map(|p| p.gpa + PAGE_SIZE)
            .max()
            .unwrap_or(0)
    }

    /// The L2 kernel image as loaded: `[l2_base, l2_image_end)`, what the
    /// paravisor measures into RTMR1.
    pub fn kernel_image(&self) -> Vec<u8> {
        let bi = &self.boot_info;
        let mut out = Vec::new();
        let mut page = [0u8; PAGE_SIZE as usize];
        let mut gpa = bi.l2_base;
        while gpa < bi.l2_image_end {
            self.fill_page(gpa, &mut page);
            let n = (bi.l2_image_end - gpa).min(PAGE_SIZE) as usize;
            out.extend_from_slice(&page[..n]);
            gpa += PAGE_SIZE;
        }
        out
    }

    /// The initial contents of the 4 KiB page at `gpa` (zero outside the image).
    pub fn fill_page(&self, gpa: u64, page: &mut [u8; PAGE_SIZE as usize]) {
        page.fill(0);
        if gpa == BootInfo::GPA {
            page[..BootInfo::SIZE].copy_from_slice(&self.boot_info.to_bytes());
            return;
        }
        if gpa == layout::RESET_PAGE_GPA {
            *page = crate::igvm::reset_page(self.paravisor.entry as u32);
            return;
        }
        let page_end = gpa.saturating_add(PAGE_SIZE);
        let bi = &self.boot_info;
        let blobs = [
            (bi.cmdline_gpa, self.cmdline.unwrap_or(&[])),
            (bi.initrd_gpa, self.initrd.unwrap_or(&[])),
        ];
        let segments = self
            .paravisor
            .segments
            .iter()
            .chain(&self.l2.segments)
            .map(|s| (s.paddr, s.data))
            .chain(blobs);
        for (paddr, data) in segments {
            let data_end = paddr + data.len() as u64;
            let from = paddr.max(gpa);
            let to = data_end.min(page_end);
            if from < to {
                let src = &data[(from - paddr) as usize..(to - paddr) as usize];
                page[(from - gpa) as usize..(to - gpa) as usize].copy_from_slice(src);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::tests::make_elf;
    use crate::elf::tests::LOAD;
    use alloc::vec;

    #[test]
    fn layout_of_an_image() {
        let pv = make_elf(
            0x20_0000,
            &[(LOAD, 0x100, 0x20_0000, 0x1800, 0x3000)],
            0x2000,
        );
        let l2 = make_elf(
            0x100_0040,
            &[(LOAD, 0x100, 0x100_0000, 0x80, 0x1000)],
            0x400,
        );
        let td = TdLayout::from_elfs(&pv, &l2).unwrap();
        assert_eq!(td.boot_info.l2_entry, 0x100_0040);
        assert_eq!(td.boot_info.l2_image_end, 0x100_1000);
        assert_eq!(
            td.added_pages(),
            vec![
                0x1000,
                0x20_0000,
                0x20_1000,
                0x20_2000,
                0x100_0000,
                0xFFFF_F000
            ]
        );
        let measured: Vec<bool> = td.pages().iter().map(|p| p.measured).collect();
        assert_eq!(measured, [false, true, true, true, false, true]);
        assert_eq!(td.accepted_bytes(), 0x100_1000);
        let mut page = [0u8; 4096];
        td.fill_page(0x20_1000, &mut page);
        assert_eq!(&page[..0x800], &pv[0x1100..0x1900]);
        assert!(page[0x800..].iter().all(|b| *b == 0));
        td.fill_page(0x1000, &mut page);
        assert_eq!(BootInfo::from_bytes(&page), Ok(td.boot_info));
        td.fill_page(0x50_0000, &mut page);
        assert!(page.iter().all(|b| *b == 0));
    }

    #[test]
    fn rejects_images_outside_their_windows() {
        let pv = make_elf(0x20_0000, &[(LOAD, 0x100, 0x20_0000, 1, 1)], 0x200);
        let l2_low = make_elf(0x20_0000, &[(LOAD, 0x100, 0x20_0000, 1, 1)], 0x200);
        assert_eq!(
            TdLayout::from_elfs(&pv, &l2_low).unwrap_err(),
            LayoutError::Elf(ImageKind::L2Guest, ElfError::OutOfWindow(0))
        );
        // The L2 image may not reach the read-only test page.
        let l2_big = make_elf(
            0x100_0000,
            &[(LOAD, 0x100, 0x100_0000, 1, 0x1F_0001)],
            0x200,
        );
        assert!(TdLayout::from_elfs(&pv, &l2_big).is_err());
        let cmdline = [b'x'; 0x1001];
        assert_eq!(
            TdLayout::from_parts(&pv, &pv_l2(), None, Some(&cmdline)).unwrap_err(),
            LayoutError::TooLarge(ImageKind::Cmdline)
        );
    }

    fn pv_l2() -> Vec<u8> {
        make_elf(0x100_0000, &[(LOAD, 0x100, 0x100_0000, 0x10, 0x10)], 0x200)
    }

    #[test]
    fn command_line_and_initrd_pages() {
        let pv = make_elf(0x20_0000, &[(LOAD, 0x100, 0x20_0000, 0x10, 0x10)], 0x200);
        let l2 = pv_l2();
        let initrd = [7u8; 0x1800];
        let td = TdLayout::from_parts(&pv, &l2, Some(&initrd), Some(b"quiet")).unwrap();
        let bi = td.boot_info;
        assert_eq!((bi.cmdline_gpa, bi.cmdline_size), (0x120_0000, 5));
        assert_eq!((bi.initrd_gpa, bi.initrd_size), (0x180_0000, 0x1800));
        let parts: Vec<(u64, PagePart)> = td.pages().iter().map(|p| (p.gpa, p.part)).collect();
        assert_eq!(
            parts,
            [
                (0x1000, PagePart::BootInfo),
                (0x20_0000, PagePart::Paravisor),
                (0x100_0000, PagePart::Kernel),
                (0x120_0000, PagePart::Cmdline),
                (0x180_0000, PagePart::Initrd),
                (0x180_1000, PagePart::Initrd),
                (0xFFFF_F000, PagePart::ResetVector),
            ]
        );
        let mut page = [0u8; 4096];
        td.fill_page(0x120_0000, &mut page);
        assert_eq!(&page[..6], b"quiet\0");
        td.fill_page(0x180_1000, &mut page);
        assert!(page[..0x800].iter().all(|b| *b == 7) && page[0x800..].iter().all(|b| *b == 0));
        td.fill_page(0xFFFF_F000, &mut page);
        assert_eq!(crate::igvm::decode_reset_jump(&page), Some(0x20_0000));
        assert_eq!(td.kernel_image().len(), 0x10);
        // Empty parts count as absent.
        let td = TdLayout::from_parts(&pv, &l2, Some(&[]), Some(b"")).unwrap();
        assert_eq!(td.boot_info, BootInfo::for_l2_image(0x100_0000, 0x100_0010));
    }
}
