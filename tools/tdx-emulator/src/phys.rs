//! Raw host-physical memory: the boot-time structures QEMU leaves in RAM
//! (PVH start_info, memory map, module list, the TD image) and device MMIO.
//! The whole 0–4 GiB range is identity-mapped by `boot.rs`.

#![allow(unsafe_code)]

use alloc::vec::Vec;

/// Addresses this module accepts: the identity map, without the null pointer.
const MAPPED: core::ops::Range<u64> = 0x8..0x1_0000_0000;

fn check(pa: u64, len: u64) -> bool {
    pa >= MAPPED.start && pa.checked_add(len).is_some_and(|end| end <= MAPPED.end)
}

/// Fills `buf` from RAM at `pa` (boot data, as for [`copy_boot_data`]); no allocation.
pub fn read_boot_data(pa: u64, buf: &mut [u8]) -> bool {
    if !check(pa, buf.len() as u64) {
        return false;
    }
    // SAFETY: as for `copy_boot_data`; `buf` is an exclusive, valid buffer.
    unsafe { core::ptr::copy_nonoverlapping(pa as *const u8, buf.as_mut_ptr(), buf.len()) }
    true
}

/// Copies `len` bytes of RAM at `pa` that QEMU wrote before boot and that
/// nothing else uses (start_info, memmap, modlist, the initrd).
pub fn copy_boot_data(pa: u64, len: usize) -> Option<Vec<u8>> {
    if !check(pa, len as u64) {
        return None;
    }
    let mut v = Vec::with_capacity(len);
    // SAFETY: the range lies inside the identity map (checked) and holds data
    // QEMU placed there before the emulator started; the heap was placed so
    // that it does not overlap these ranges (see `main`), so nothing aliases
    // them mutably. `v` has capacity `len` and u8 has no validity invariant.
    unsafe {
        core::ptr::copy_nonoverlapping(pa as *const u8, v.as_mut_ptr(), len);
        v.set_len(len);
    }
    Some(v)
}

/// A volatile MMIO read of 1, 2, 4 or 8 bytes at a device address.
pub fn mmio_read(pa: u64, size: u8) -> Option<u64> {
    if !is_device(pa, size) {
        return None;
    }
    // SAFETY: `is_device` restricts `pa` to aligned addresses in the device
    // window above RAM (0xE000_0000..4 GiB), identity-mapped and never used
    // as memory by the emulator.
    unsafe {
        Some(match size {
            1 => core::ptr::read_volatile(pa as *const u8) as u64,
            2 => core::ptr::read_volatile(pa as *const u16) as u64,
            4 => core::ptr::read_volatile(pa as *const u32) as u64,
            _ => core::ptr::read_volatile(pa as *const u64),
        })
    }
}

/// A volatile MMIO write of 1, 2, 4 or 8 bytes at a device address.
pub fn mmio_write(pa: u64, size: u8, value: u64) -> bool {
    if !is_device(pa, size) {
        return false;
    }
    // SAFETY: as for `mmio_read`.
    unsafe {
        match size {
            1 => core::ptr::write_volatile(pa as *mut u8, value as u8),
            2 => core::ptr::write_volatile(pa as *mut u16, value as u16),
            4 => core::ptr::write_volatile(pa as *mut u32, value as u32),
            _ => core::ptr::write_volatile(pa as *mut u64, value),
        }
    }
    true
}

/// Device MMIO window of the q35 machine below 4 GiB (PCI holes, IOAPIC, HPET, LAPIC).
pub const DEVICE_WINDOW: core::ops::Range<u64> = 0xE000_0000..0x1_0000_0000;

fn is_device(pa: u64, size: u8) -> bool {
    matches!(size, 1 | 2 | 4 | 8)
        && pa.is_multiple_of(size as u64)
        && pa >= DEVICE_WINDOW.start
        && pa + size as u64 <= DEVICE_WINDOW.end
}
