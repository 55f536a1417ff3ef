//! A bounded, `no_std` reader for the IGVM files `loader build` writes (the
//! `igvm_defs` structures; the host side writes them with the `igvm` crate).
//!
//! It accepts format version 1 with a TDX platform header and the directives
//! a TDX image needs: `PAGE_DATA` (4 KiB), `PARAMETER_AREA`,
//! `VP_COUNT_PARAMETER` and `PARAMETER_INSERT`. Other directives are refused
//! unless their type has the "ignorable" bit; initialization headers
//! (guest policy, version string, …) are skipped. Directives whose
//! compatibility mask does not include the TDX platform are skipped.
//!
//! [`IgvmTd::for_each_page`] walks the pages in **file order**, which is the
//! order a host issues TDH.MEM.PAGE.ADD / TDH.MR.EXTEND and so the MRTD order
//! (tdx-abi.md §5.4): a measured page is ADD + 16 EXTENDs, an unmeasured page
//! or a parameter-area page is ADD only. The emulator builds its TD and MRTD
//! with it; `loader measure` computes the same value with the `igvm` crate's
//! own parser.

use alloc::vec::Vec;

use igvm_defs::{
    IgvmPageDataFlags, IgvmPlatformType, IgvmVariableHeaderType, IGVM_FIXED_HEADER,
    IGVM_FORMAT_VERSION_1, IGVM_MAGIC_VALUE, IGVM_VHS_PAGE_DATA, IGVM_VHS_PARAMETER,
    IGVM_VHS_PARAMETER_AREA, IGVM_VHS_PARAMETER_INSERT, IGVM_VHS_SUPPORTED_PLATFORM,
    IGVM_VHT_OPTIONAL_BIT,
};
use zerocopy::FromBytes;

use crate::layout::{PAGE_SIZE, RESET_PAGE_GPA, RESET_VECTOR};

/// Most directives accepted.
pub const MAX_DIRECTIVES: usize = 1 << 20;
/// Most bytes of one parameter area.
pub const MAX_PARAMETER_AREA: u64 = 1 << 20;

const PAGE: usize = PAGE_SIZE as usize;

/// Why an IGVM file was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgvmError {
    /// Shorter than a header says.
    Truncated,
    /// Not "IGVM" or not format version 1.
    BadMagic,
    /// The total size or the header offsets are inconsistent.
    BadHeader,
    /// The CRC32 over the headers is wrong.
    BadChecksum,
    /// No TDX platform header.
    NoTdxPlatform,
    /// A variable header of this type is not supported and not ignorable.
    Unsupported(u32),
    /// A variable header has the wrong length for its type (type).
    BadLength(u32),
    /// A GPA that is not page aligned, or page data with a non-normal type or 2 MiB flag.
    BadPage(u64),
    /// A parameter area index declared twice, used before declaration or
    /// inserted twice; or an area too large or not page sized.
    BadParameterArea(u32),
    /// A parameter lies outside its area.
    BadParameter(u32),
    /// Too many directives.
    TooLarge,
}

/// One parameter area.
#[derive(Clone, Debug)]
struct Area<'a> {
    index: u32,
    bytes: u64,
    initial: Option<&'a [u8]>,
    vp_count_offsets: Vec<u32>,
    inserted: bool,
}

/// One step of building the TD, in file order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgvmOp<'a> {
    /// A 4 KiB page: `data` = `None` for a zero page.
    Page {
        /// Page GPA.
        gpa: u64,
        /// The contents (4 KiB) or `None` for zeros.
        data: Option<&'a [u8]>,
        /// Contents extended into MRTD (else ADD only).
        measured: bool,
    },
    /// A parameter area inserted at `gpa` (ADD only, contents host-provided).
    Parameter {
        /// First GPA.
        gpa: u64,
        /// Index into the file's parameter areas.
        area: usize,
    },
}

/// A parsed TDX IGVM file; page data borrows from the input.
#[derive(Clone, Debug)]
pub struct IgvmTd<'a> {
    /// Shared-GPA boundary of the TDX platform header.
    pub shared_gpa_boundary: u64,
    ops: Vec<IgvmOp<'a>>,
    areas: Vec<Area<'a>>,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// CRC32 (IEEE 802.3, reflected), as the IGVM fixed header uses.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn read<T: FromBytes>(body: &[u8], typ: u32) -> Result<T, IgvmError> {
    if body.len() != core::mem::size_of::<T>() {
        return Err(IgvmError::BadLength(typ));
    }
    T::read_from_bytes(body).map_err(|_| IgvmError::BadLength(typ))
}

impl<'a> IgvmTd<'a> {
    /// Parses and checks `file`.
    pub fn parse(file: &'a [u8]) -> Result<Self, IgvmError> {
        let fixed_len = core::mem::size_of::<IGVM_FIXED_HEADER>();
        let (fixed, _) =
            IGVM_FIXED_HEADER::read_from_prefix(file).map_err(|_| IgvmError::Truncated)?;
        if fixed.magic != IGVM_MAGIC_VALUE || fixed.format_version != IGVM_FORMAT_VERSION_1 {
            return Err(IgvmError::BadMagic);
        }
        let vh_start = fixed.variable_header_offset as usize;
        let vh_end = vh_start
            .checked_add(fixed.variable_header_size as usize)
            .ok_or(IgvmError::BadHeader)?;
        if fixed.total_file_size as usize != file.len()
            || vh_start < fixed_len
            || vh_end > file.len()
        {
            return Err(IgvmError::BadHeader);
        }
        // CRC32 over the fixed header (checksum field as zero) and the variable headers.
        let mut covered = Vec::with_capacity(fixed_len + vh_end - vh_start);
        covered.extend_from_slice(&file[..fixed_len]);
        covered[20..24].fill(0);
        covered.extend_from_slice(&file[vh_start..vh_end]);
        if crc32(&covered) != fixed.checksum {
            return Err(IgvmError::BadChecksum);
        }

        let page_data = |offset: u32| -> Result<Option<&'a [u8]>, IgvmError> {
            if offset == 0 {
                return Ok(None);
            }
            let o = offset as usize;
            file.get(o..o + PAGE).map(Some).ok_or(IgvmError::Truncated)
        };

        let mut td = IgvmTd {
            shared_gpa_boundary: 0,
            ops: Vec::new(),
            areas: Vec::new(),
        };
        let mut tdx_mask: Option<u32> = None;
        let mut at = vh_start;
        while at < vh_end {
            let head = file.get(at..at + 8).ok_or(IgvmError::Truncated)?;
            let raw_type = le32(head, 0);
            let len = le32(head, 4) as usize;
            let body_end = (at + 8).checked_add(len).ok_or(IgvmError::Truncated)?;
            if body_end > vh_end {
                return Err(IgvmError::Truncated);
            }
            let body = &file[at + 8..body_end];
            at = (body_end + 7) & !7;
            let typ = raw_type & !IGVM_VHT_OPTIONAL_BIT;
            if td.ops.len() >= MAX_DIRECTIVES {
                return Err(IgvmError::TooLarge);
            }
            let applies = |mask: u32| tdx_mask.is_some_and(|m| mask & m != 0);
            match IgvmVariableHeaderType(typ) {
                IgvmVariableHeaderType::IGVM_VHT_SUPPORTED_PLATFORM => {
                    let p: IGVM_VHS_SUPPORTED_PLATFORM = read(body, typ)?;
                    if p.platform_type == IgvmPlatformType::TDX {
                        tdx_mask = Some(p.compatibility_mask);
                        td.shared_gpa_boundary = p.shared_gpa_boundary;
                    }
                }
                IgvmVariableHeaderType::IGVM_VHT_PAGE_DATA => {
                    let p: IGVM_VHS_PAGE_DATA = read(body, typ)?;
                    if !applies(p.compatibility_mask) {
                        continue;
                    }
                    let flags: IgvmPageDataFlags = p.flags;
                    if !p.gpa.is_multiple_of(PAGE_SIZE) || flags.is_2mb_page() || flags.shared() {
                        return Err(IgvmError::BadPage(p.gpa));
                    }
                    if p.data_type != igvm_defs::IgvmPageDataType::NORMAL {
                        return Err(IgvmError::BadPage(p.gpa));
                    }
                    td.ops.push(IgvmOp::Page {
                        gpa: p.gpa,
                        data: page_data(p.file_offset)?,
                        measured: !flags.unmeasured(),
                    });
                }
                IgvmVariableHeaderType::IGVM_VHT_PARAMETER_AREA => {
                    let p: IGVM_VHS_PARAMETER_AREA = read(body, typ)?;
                    let idx = p.parameter_area_index;
                    if td.areas.iter().any(|a| a.index == idx)
                        || p.number_of_bytes == 0
                        || !p.number_of_bytes.is_multiple_of(PAGE_SIZE)
                        || p.number_of_bytes > MAX_PARAMETER_AREA
                    {
                        return Err(IgvmError::BadParameterArea(idx));
                    }
                    let initial = match p.file_offset {
                        0 => None,
                        o => Some(
                            file.get(o as usize..o as usize + p.number_of_bytes as usize)
                                .ok_or(IgvmError::Truncated)?,
                        ),
                    };
                    td.areas.push(Area {
                        index: idx,
                        bytes: p.number_of_bytes,
                        initial,
                        vp_count_offsets: Vec::new(),
                        inserted: false,
                    });
                }
                IgvmVariableHeaderType::IGVM_VHT_VP_COUNT_PARAMETER => {
                    let p: IGVM_VHS_PARAMETER = read(body, typ)?;
                    let area = td
                        .areas
                        .iter_mut()
                        .find(|a| a.index == p.parameter_area_index && !a.inserted)
                        .ok_or(IgvmError::BadParameterArea(p.parameter_area_index))?;
                    if p.byte_offset as u64 + 4 > area.bytes {
                        return Err(IgvmError::BadParameter(p.parameter_area_index));
                    }
                    area.vp_count_offsets.push(p.byte_offset);
                }
                IgvmVariableHeaderType::IGVM_VHT_PARAMETER_INSERT => {
                    let p: IGVM_VHS_PARAMETER_INSERT = read(body, typ)?;
                    if !applies(p.compatibility_mask) {
                        continue;
                    }
                    if !p.gpa.is_multiple_of(PAGE_SIZE) {
                        return Err(IgvmError::BadPage(p.gpa));
                    }
                    let i = td
                        .areas
                        .iter()
                        .position(|a| a.index == p.parameter_area_index && !a.inserted)
                        .ok_or(IgvmError::BadParameterArea(p.parameter_area_index))?;
                    td.areas[i].inserted = true;
                    td.ops.push(IgvmOp::Parameter {
                        gpa: p.gpa,
                        area: i,
                    });
                }
                // Initialization headers (0x101..=0x1FF) are platform policy
                // this loader does not act on.
                IgvmVariableHeaderType(t) if (0x101..=0x1FF).contains(&t) => {}
                _ if raw_type & IGVM_VHT_OPTIONAL_BIT != 0 => {}
                _ => return Err(IgvmError::Unsupported(raw_type)),
            }
        }
        if tdx_mask.is_none() {
            return Err(IgvmError::NoTdxPlatform);
        }
        Ok(td)
    }

    /// The directives that build the TD, in file order.
    pub fn ops(&self) -> &[IgvmOp<'a>] {
        &self.ops
    }

    /// Calls `f(gpa, page, measured)` for every page in file order; parameter
    /// areas get their initial data and `num_vcpus` at each VP-count offset.
    pub fn for_each_page(&self, num_vcpus: u32, mut f: impl FnMut(u64, &[u8; PAGE], bool)) {
        let mut page = [0u8; PAGE];
        for op in &self.ops {
            match *op {
                IgvmOp::Page {
                    gpa,
                    data,
                    measured,
                } => {
                    match data {
                        Some(d) => page.copy_from_slice(d),
                        None => page.fill(0),
                    }
                    f(gpa, &page, measured);
                }
                IgvmOp::Parameter { gpa, area } => {
                    let a = &self.areas[area];
                    let mut bytes = Vec::from(a.initial.unwrap_or(&[]));
                    bytes.resize(a.bytes as usize, 0);
                    for &o in &a.vp_count_offsets {
                        bytes[o as usize..o as usize + 4].copy_from_slice(&num_vcpus.to_le_bytes());
                    }
                    for (i, chunk) in bytes.chunks_exact(PAGE).enumerate() {
                        page.copy_from_slice(chunk);
                        f(gpa + (i * PAGE) as u64, &page, false);
                    }
                }
            }
        }
    }

    /// The 32-bit entry point a TDX vCPU reaches from the reset vector: the
    /// target of the `jmp rel32` (E9) at `0xFFFF_FFF0` in the reset page.
    pub fn entry(&self) -> Option<u64> {
        let mut entry = None;
        self.for_each_page(1, |gpa, page, _| {
            if gpa == RESET_PAGE_GPA {
                entry = decode_reset_jump(page);
            }
        });
        entry
    }
}

/// The reset page's last 16 bytes: `jmp rel32` to `entry` (32-bit
/// wrap-around), then `ud2` padding.
pub fn reset_page(entry: u32) -> [u8; PAGE] {
    let mut page = [0u8; PAGE];
    let at = (RESET_VECTOR - RESET_PAGE_GPA) as usize;
    let next = (RESET_VECTOR as u32).wrapping_add(5);
    page[at] = 0xE9;
    page[at + 1..at + 5].copy_from_slice(&entry.wrapping_sub(next).to_le_bytes());
    for pad in page[at + 5..].chunks_mut(2) {
        pad.copy_from_slice(&[0x0F, 0x0B][..pad.len()]);
    }
    page
}

/// The target of the reset page's `jmp rel32`, if that is what it holds.
pub fn decode_reset_jump(page: &[u8; PAGE]) -> Option<u64> {
    let at = (RESET_VECTOR - RESET_PAGE_GPA) as usize;
    if page[at] != 0xE9 {
        return None;
    }
    let rel = le32(page, at + 1);
    Some((RESET_VECTOR as u32).wrapping_add(5).wrapping_add(rel) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn reset_jump_round_trip() {
        let p = reset_page(0x20_0000);
        assert_eq!(&p[0xFF0..0xFF5], &[0xE9, 0x0B, 0x00, 0x20, 0x00]);
        assert_eq!(decode_reset_jump(&p), Some(0x20_0000));
        assert_eq!(decode_reset_jump(&[0; PAGE]), None);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(IgvmTd::parse(&[]).unwrap_err(), IgvmError::Truncated);
        assert_eq!(IgvmTd::parse(&[0; 64]).unwrap_err(), IgvmError::BadMagic);
    }
}
