//! [`TdLayout`]: the initial contents of the TD's private memory — BootInfo,
//! the paravisor and the L2 image at the contract's GPAs — and the pages that
//! are added (accepted and measured into MRTD) before the TD starts.

use alloc::vec::Vec;

use crate::elf::{load_plan, ElfError, LoadPlan};
use crate::image::{ImageError, ImageKind, TdImage};
use crate::layout::{self, page_align_up, PAGE_SIZE};
use crate::BootInfo;

/// Why an image cannot be laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The container is malformed.
    Image(ImageError),
    /// The container lacks an entry.
    Missing(ImageKind),
    /// An ELF is unusable.
    Elf(ImageKind, ElfError),
}

impl From<ImageError> for LayoutError {
    fn from(e: ImageError) -> Self {
        LayoutError::Image(e)
    }
}

/// The TD's initial private memory.
#[derive(Clone, Debug)]
pub struct TdLayout<'a> {
    /// The paravisor's segments; `entry` is L1's 32-bit entry point.
    pub paravisor: LoadPlan<'a>,
    /// The L2 guest's segments; `entry` is its 64-bit entry point.
    pub l2: LoadPlan<'a>,
    /// The BootInfo page contents.
    pub boot_info: BootInfo,
}

impl<'a> TdLayout<'a> {
    /// Lays out the two ELFs of a [`TdImage`].
    pub fn from_image(image: &TdImage<'a>) -> Result<Self, LayoutError> {
        let pv = image
            .get(ImageKind::Paravisor)
            .ok_or(LayoutError::Missing(ImageKind::Paravisor))?;
        let l2 = image
            .get(ImageKind::L2Guest)
            .ok_or(LayoutError::Missing(ImageKind::L2Guest))?;
        Self::from_elfs(pv, l2)
    }

    /// Lays out a paravisor ELF and an L2 ELF, each in its window of the contract.
    pub fn from_elfs(paravisor: &'a [u8], l2: &'a [u8]) -> Result<Self, LayoutError> {
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
        let boot_info = BootInfo::for_l2_image(l2.entry, l2.end());
        Ok(TdLayout {
            paravisor,
            l2,
            boot_info,
        })
    }

    /// Pages added before the TD starts, ascending: BootInfo, paravisor, L2 image.
    pub fn added_pages(&self) -> Vec<u64> {
        let mut pages = Vec::from([BootInfo::GPA]);
        pages.extend(self.paravisor.pages());
        pages.extend(self.l2.pages());
        pages
    }

    /// Bytes at the bottom of private memory that start accepted: up to the
    /// end of the highest added page.
    pub fn accepted_bytes(&self) -> u64 {
        page_align_up(self.l2.end().max(self.paravisor.end()))
    }

    /// The initial contents of the 4 KiB page at `gpa` (zero outside the image).
    pub fn fill_page(&self, gpa: u64, page: &mut [u8; PAGE_SIZE as usize]) {
        page.fill(0);
        if gpa == BootInfo::GPA {
            page[..BootInfo::SIZE].copy_from_slice(&self.boot_info.to_bytes());
            return;
        }
        let page_end = gpa.saturating_add(PAGE_SIZE);
        for s in self.paravisor.segments.iter().chain(&self.l2.segments) {
            let data_end = s.paddr + s.data.len() as u64;
            let from = s.paddr.max(gpa);
            let to = data_end.min(page_end);
            if from < to {
                let src = &s.data[(from - s.paddr) as usize..(to - s.paddr) as usize];
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
    use crate::image::TdImageBuilder;
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
        let img = TdImageBuilder::new()
            .add(ImageKind::Paravisor, &pv)
            .add(ImageKind::L2Guest, &l2)
            .build()
            .unwrap();
        let img = TdImage::parse(&img).unwrap();
        let td = TdLayout::from_image(&img).unwrap();
        assert_eq!(td.boot_info.l2_entry, 0x100_0040);
        assert_eq!(td.boot_info.l2_image_end, 0x100_1000);
        assert_eq!(
            td.added_pages(),
            vec![0x1000, 0x20_0000, 0x20_1000, 0x20_2000, 0x100_0000]
        );
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
        let img = TdImageBuilder::new()
            .add(ImageKind::Paravisor, &pv)
            .build()
            .unwrap();
        assert_eq!(
            TdLayout::from_image(&TdImage::parse(&img).unwrap()).unwrap_err(),
            LayoutError::Missing(ImageKind::L2Guest)
        );
    }
}
