//! The PVH `hvm_start_info` QEMU passes in EBX: module list and memory map.
//! Parsed before the heap exists, into fixed-size arrays.

use crate::phys::read_boot_data;

const MAGIC: u32 = 0x336E_C578;
const MAX_MODULES: usize = 4;
const MAX_RANGES: usize = 32;

/// A module (QEMU's `-initrd`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Module {
    pub paddr: u64,
    pub size: u64,
}

/// A memory-map entry (type 1 = RAM).
#[derive(Clone, Copy, Debug, Default)]
pub struct MemRange {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// What the emulator needs from start_info.
#[derive(Clone, Debug, Default)]
pub struct StartInfo {
    modules: [Module; MAX_MODULES],
    nr_modules: usize,
    ranges: [MemRange; MAX_RANGES],
    nr_ranges: usize,
}

impl StartInfo {
    pub fn modules(&self) -> &[Module] {
        &self.modules[..self.nr_modules]
    }
    pub fn memmap(&self) -> &[MemRange] {
        &self.ranges[..self.nr_ranges]
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u32_at(b, off) as u64 | (u32_at(b, off + 4) as u64) << 32
}

/// Reads start_info at `pa`.
pub fn parse(pa: u64) -> Result<StartInfo, &'static str> {
    let mut si = [0u8; 56];
    if !read_boot_data(pa, &mut si) {
        return Err("start_info outside RAM");
    }
    if u32_at(&si, 0) != MAGIC {
        return Err("bad start_info magic");
    }
    let mut out = StartInfo::default();
    let version = u32_at(&si, 4);
    out.nr_modules = (u32_at(&si, 12) as usize).min(MAX_MODULES);
    let modlist = u64_at(&si, 16);
    for i in 0..out.nr_modules {
        let mut m = [0u8; 32];
        if !read_boot_data(modlist + 32 * i as u64, &mut m) {
            return Err("modlist outside RAM");
        }
        out.modules[i] = Module {
            paddr: u64_at(&m, 0),
            size: u64_at(&m, 8),
        };
    }
    if version >= 1 {
        out.nr_ranges = (u32_at(&si, 48) as usize).min(MAX_RANGES);
        let table = u64_at(&si, 40);
        for i in 0..out.nr_ranges {
            let mut e = [0u8; 24];
            if !read_boot_data(table + 24 * i as u64, &mut e) {
                return Err("memmap outside RAM");
            }
            out.ranges[i] = MemRange {
                addr: u64_at(&e, 0),
                size: u64_at(&e, 8),
                kind: u32_at(&e, 16),
            };
        }
    }
    Ok(out)
}
