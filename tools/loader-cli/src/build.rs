//! `loader build`: a TDX IGVM file from the paravisor ELF, the L2 kernel ELF,
//! an optional initrd and command line.

use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmPlatformHeader, IgvmRevision};
use igvm_defs::{
    IgvmPageDataFlags, IgvmPageDataType, IgvmPlatformType, IGVM_TDX_PLATFORM_VERSION,
    IGVM_VHS_PARAMETER, IGVM_VHS_PARAMETER_INSERT, IGVM_VHS_SUPPORTED_PLATFORM,
};
use lvbs_loader::layout::{PAGE_SIZE, SHARED_BIT};
use lvbs_loader::{BootInfo, PagePart, TdLayout};

use crate::Error;

/// The compatibility mask of the TDX platform header.
pub const TDX_COMPAT_MASK: u32 = 1;
/// Index of the BootInfo parameter area.
const BOOTINFO_AREA: u32 = 0;

/// What goes into the image.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    /// The paravisor ELF (L1).
    pub paravisor: &'a [u8],
    /// The L2 kernel ELF (today the probe or the attest guest).
    pub kernel: &'a [u8],
    /// The initrd, if any.
    pub initrd: Option<&'a [u8]>,
    /// The command line, if any.
    pub cmdline: Option<&'a [u8]>,
}

impl<'a> Inputs<'a> {
    /// The TD layout of these inputs.
    pub fn layout(&self) -> Result<TdLayout<'a>, Error> {
        TdLayout::from_parts(self.paravisor, self.kernel, self.initrd, self.cmdline)
            .map_err(|e| Error(format!("cannot lay out the TD: {e:?}")))
    }
}

/// The IGVM file of `inputs`.
pub fn build(inputs: &Inputs<'_>) -> Result<Vec<u8>, Error> {
    build_with(inputs, None)
}

/// A GPA inside the L2 kernel image whose byte nothing reads: the zero
/// padding after the first segment's file bytes in its last page (or, if the
/// segment ends on a page boundary, the kernel image's last byte).
pub fn tamper_kernel_gpa(layout: &TdLayout<'_>) -> u64 {
    let first = &layout.l2.segments[0];
    let data_end = first.paddr + first.data.len() as u64;
    let page_end = (data_end + PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
    if data_end < page_end && page_end <= first.end() {
        page_end - 1
    } else {
        layout.boot_info.l2_image_end - 1
    }
}

/// [`build`], optionally with the byte at `flip_gpa` inverted (the
/// `--tamper kernel` image; the GPA must be in a kernel page).
pub fn build_with(inputs: &Inputs<'_>, flip_gpa: Option<u64>) -> Result<Vec<u8>, Error> {
    let layout = inputs.layout()?;
    let mut flipped = false;
    let mut directives = Vec::new();
    let mut page = [0u8; PAGE_SIZE as usize];
    for p in layout.pages() {
        if p.part == PagePart::BootInfo {
            directives.push(IgvmDirectiveHeader::ParameterArea {
                number_of_bytes: PAGE_SIZE,
                parameter_area_index: BOOTINFO_AREA,
                initial_data: layout.boot_info.to_bytes().to_vec(),
            });
            directives.push(IgvmDirectiveHeader::VpCount(IGVM_VHS_PARAMETER {
                parameter_area_index: BOOTINFO_AREA,
                byte_offset: BootInfo::OFF_NUM_VCPUS as u32,
            }));
            directives.push(IgvmDirectiveHeader::ParameterInsert(
                IGVM_VHS_PARAMETER_INSERT {
                    gpa: p.gpa,
                    compatibility_mask: TDX_COMPAT_MASK,
                    parameter_area_index: BOOTINFO_AREA,
                },
            ));
            continue;
        }
        layout.fill_page(p.gpa, &mut page);
        if let Some(gpa) = flip_gpa {
            if p.part == PagePart::Kernel && (p.gpa..p.gpa + PAGE_SIZE).contains(&gpa) {
                page[(gpa - p.gpa) as usize] ^= 0xFF;
                flipped = true;
            }
        }
        let data = if page.iter().all(|b| *b == 0) {
            Vec::new()
        } else {
            page.to_vec()
        };
        directives.push(IgvmDirectiveHeader::PageData {
            gpa: p.gpa,
            compatibility_mask: TDX_COMPAT_MASK,
            flags: IgvmPageDataFlags::new().with_unmeasured(!p.measured),
            data_type: IgvmPageDataType::NORMAL,
            data,
        });
    }
    if let Some(gpa) = flip_gpa {
        if !flipped {
            return Err(Error(format!("{gpa:#x} is not in an L2 kernel page")));
        }
    }
    let platform = IgvmPlatformHeader::SupportedPlatform(IGVM_VHS_SUPPORTED_PLATFORM {
        compatibility_mask: TDX_COMPAT_MASK,
        highest_vtl: 0,
        platform_type: IgvmPlatformType::TDX,
        platform_version: IGVM_TDX_PLATFORM_VERSION,
        shared_gpa_boundary: SHARED_BIT,
    });
    let file = IgvmFile::new(IgvmRevision::V1, vec![platform], vec![], directives)
        .map_err(|e| Error(format!("igvm: {e}")))?;
    let mut out = Vec::new();
    file.serialize(&mut out)
        .map_err(|e| Error(format!("igvm serialize: {e}")))?;
    Ok(out)
}
