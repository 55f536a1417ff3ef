//! Linux as L2 VM #1 (docs/linux.md): the layout of a TD whose L2 image is
//! an uncompressed x86-64 `vmlinux`.
//!
//! The kernel is loaded at its `PT_LOAD` physical addresses (16 MiB for a
//! distribution kernel, `CONFIG_PHYSICAL_START`), which is also where the
//! L2 region starts; the command line follows the kernel in the next page,
//! the initrd starts at the next 2 MiB boundary after it. The TD has
//! [`LINUX_TD_MEMORY_BYTES`] of private memory and BootInfo carries
//! [`BootInfo::FLAG_LINUX`], which selects the paravisor's Linux boot: it
//! builds the `boot_params` page, the e820 map and the page tables itself
//! and enters the kernel's 64-bit entry (`startup_64`, the ELF entry point).

use crate::elf::{load_plan, LoadPlan};
use crate::layout::{self, page_align_up, PAGE_SIZE};
use crate::td::ImageKind;
use crate::td::{LayoutError, TdLayout};
use crate::BootInfo;

/// Private memory of a TD that boots Linux as L2.
pub const LINUX_TD_MEMORY_BYTES: u64 = 256 << 20;
/// First GPA of the Linux L2 region: a distribution kernel's load address.
pub const LINUX_L2_BASE: u64 = 0x100_0000;
/// 2 MiB.
const LARGE: u64 = 0x20_0000;
/// Bytes kept free at the top of the region for the kernel's own use.
const HEADROOM: u64 = 64 << 20;

/// Whether `elf` is a Linux `vmlinux`: an x86-64 executable whose loaded
/// segments are linked in the kernel half of the address space (the probe
/// and test guests are identity-mapped).
pub fn is_vmlinux(elf: &[u8]) -> bool {
    use object::elf::{FileHeader64, PT_LOAD};
    use object::read::elf::{FileHeader, ProgramHeader};
    use object::LittleEndian as E;
    let Ok(h) = FileHeader64::<E>::parse(elf) else {
        return false;
    };
    let Ok(phdrs) = h.program_headers(E, elf) else {
        return false;
    };
    phdrs
        .iter()
        .filter(|p| p.p_type(E) == PT_LOAD && p.p_memsz(E) != 0)
        .any(|p| p.p_vaddr(E) >= 0xFFFF_8000_0000_0000)
}

impl<'a> TdLayout<'a> {
    /// Lays out a paravisor ELF, a Linux `vmlinux`, and an optional initrd
    /// and command line (see the module docs).
    pub fn linux(
        paravisor: &'a [u8],
        vmlinux: &'a [u8],
        initrd: Option<&'a [u8]>,
        cmdline: Option<&'a [u8]>,
    ) -> Result<Self, LayoutError> {
        let mem = LINUX_TD_MEMORY_BYTES;
        let paravisor = load_plan(
            paravisor,
            layout::PARAVISOR_BASE..layout::PARAVISOR_BASE + layout::PARAVISOR_MAX_BYTES,
        )
        .map_err(|e| LayoutError::Elf(ImageKind::Paravisor, e))?;
        let l2: LoadPlan<'a> = load_plan(vmlinux, LINUX_L2_BASE..mem - HEADROOM)
            .map_err(|e| LayoutError::Elf(ImageKind::L2Guest, e))?;
        let initrd = initrd.filter(|i| !i.is_empty());
        let cmdline = cmdline.filter(|c| !c.is_empty());
        if cmdline.is_some_and(|c| c.len() as u64 > layout::L2_CMDLINE_MAX_BYTES) {
            return Err(LayoutError::TooLarge(ImageKind::Cmdline));
        }
        let image_end = page_align_up(l2.end());
        let cmdline_gpa = image_end;
        let initrd_gpa = (cmdline_gpa + PAGE_SIZE).next_multiple_of(LARGE);
        if initrd.is_some_and(|i| initrd_gpa + i.len() as u64 > mem - HEADROOM) {
            return Err(LayoutError::TooLarge(ImageKind::Initrd));
        }
        let mut boot_info = BootInfo::for_l2_image(l2.entry, image_end);
        boot_info.td_memory_bytes = mem;
        boot_info.l2_base = LINUX_L2_BASE;
        boot_info.l2_size = mem - LINUX_L2_BASE;
        boot_info.flags = BootInfo::FLAG_LINUX;
        if let Some(c) = cmdline {
            boot_info.cmdline_gpa = cmdline_gpa;
            boot_info.cmdline_size = c.len() as u64;
        }
        if let Some(i) = initrd {
            boot_info.initrd_gpa = initrd_gpa;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::tests::{make_elf, LOAD};
    use alloc::vec::Vec;

    /// A two-segment "vmlinux": text at 16 MiB linked at 0xffffffff81000000.
    fn vmlinux() -> Vec<u8> {
        let mut e = make_elf(
            0x100_0000,
            &[
                (LOAD, 0x1000, 0x100_0000, 0x2000, 0x2000),
                (LOAD, 0x3000, 0x120_0000, 0x100, 0x5000),
            ],
            0x4000,
        );
        // make_elf links vaddr = paddr; move the first segment to the kernel half.
        let phoff = u64::from_le_bytes(e[0x20..0x28].try_into().unwrap()) as usize;
        e[phoff + 0x10..phoff + 0x18].copy_from_slice(&0xFFFF_FFFF_8100_0000u64.to_le_bytes());
        e
    }

    #[test]
    fn detects_vmlinux() {
        assert!(is_vmlinux(&vmlinux()));
        let probe = make_elf(
            0x100_0000,
            &[(LOAD, 0x100, 0x100_0000, 0x80, 0x1000)],
            0x400,
        );
        assert!(!is_vmlinux(&probe));
        assert!(!is_vmlinux(b"not an elf"));
    }

    #[test]
    fn linux_layout() {
        let pv = make_elf(0x20_0000, &[(LOAD, 0x100, 0x20_0000, 0x80, 0x1000)], 0x200);
        let k = vmlinux();
        let td = TdLayout::linux(&pv, &k, Some(&[1u8; 5000]), Some(b"console=ttyS0")).unwrap();
        let bi = td.boot_info;
        assert_eq!(bi.flags, BootInfo::FLAG_LINUX);
        assert_eq!(bi.td_memory_bytes, LINUX_TD_MEMORY_BYTES);
        assert_eq!(
            (bi.l2_base, bi.l2_size),
            (0x100_0000, (256 << 20) - 0x100_0000)
        );
        assert_eq!(bi.l2_entry, 0x100_0000);
        assert_eq!(bi.l2_image_end, 0x120_5000);
        assert_eq!((bi.cmdline_gpa, bi.cmdline_size), (0x120_5000, 13));
        assert_eq!((bi.initrd_gpa, bi.initrd_size), (0x140_0000, 5000));
        let mut page = [0u8; 4096];
        td.fill_page(0x120_5000, &mut page);
        assert_eq!(&page[..13], b"console=ttyS0");
        td.fill_page(0x140_1000, &mut page);
        assert_eq!(page[0], 1);
        assert_eq!(page[5000 - 4096], 0);
        // Every kernel page from 16 MiB to the image end is in the TD, and
        // the accepted prefix covers the initrd.
        assert_eq!(td.accepted_bytes(), 0x140_2000);
        // The generic entry point picks this layout for a vmlinux.
        let via_parts = TdLayout::from_parts(&pv, &k, None, None).unwrap();
        assert_eq!(via_parts.boot_info.flags, BootInfo::FLAG_LINUX);
    }

    #[test]
    fn rejects_oversized_parts() {
        let pv = make_elf(0x20_0000, &[(LOAD, 0x100, 0x20_0000, 0x80, 0x1000)], 0x200);
        let k = vmlinux();
        let big = alloc::vec![0u8; (200 << 20) as usize];
        assert_eq!(
            TdLayout::linux(&pv, &k, Some(&big), None).unwrap_err(),
            LayoutError::TooLarge(ImageKind::Initrd)
        );
        let long = alloc::vec![b'a'; 5000];
        assert_eq!(
            TdLayout::linux(&pv, &k, None, Some(&long)).unwrap_err(),
            LayoutError::TooLarge(ImageKind::Cmdline)
        );
    }
}
