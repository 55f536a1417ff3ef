//! L1's own memory: the image bounds from the linker script, accepting `.bss`,
//! the vAPIC page and TDG.VP.ENTER buffer, and the [`L1Memory`] the paravisor
//! core uses to reach memory by GPA through the identity map.

use core::cell::UnsafeCell;

use paravisor::pinning::SharedMsrs;
use paravisor::{L1Memory, MemoryError};
use paravisor_boot::boot::L1Pages;
use paravisor_boot::bootinfo::{L1Image, PAGE_SIZE};
use paravisor_boot::memory::{accept_range, AcceptStats, MemError};
use tdcall::hw::HwTdcall;
use tdcall::{Registers, Tdcall};

extern "C" {
    static __image_start: u8;
    static __image_end: u8;
    static __bss_start: u8;
    static __bss_end: u8;
}

const fn page_up(x: u64) -> u64 {
    (x + PAGE_SIZE - 1) & !(PAGE_SIZE - 1)
}

/// The whole image: text, data (page tables, stack), `.bss` (heap, buffers).
pub fn image() -> L1Image {
    L1Image {
        start: (&raw const __image_start) as u64,
        end: page_up((&raw const __image_end) as u64),
    }
}

/// `.bss`, page aligned.
pub fn bss() -> (u64, u64) {
    (
        ((&raw const __bss_start) as u64) & !(PAGE_SIZE - 1),
        page_up((&raw const __bss_end) as u64),
    )
}

/// Accepts the `.bss` pages (the file-less part of the image; a loader may
/// have added them or left them pending) and zeroes `.bss`. Runs before
/// anything in `.bss` (logger, heap, allocator, buffers) is used.
pub fn accept_and_zero_bss() -> Result<AcceptStats, MemError> {
    let (start, end) = bss();
    let stats = accept_range(&mut HwTdcall, start, end)?;
    let first = (&raw const __bss_start) as u64;
    let len = (&raw const __bss_end) as u64 - first;
    // SAFETY: `[__bss_start, __bss_end)` is this image's `.bss`, identity mapped
    // and now accepted. Nothing has used it yet (this runs on the `.data` stack
    // before the logger, heap and statics in `.bss` are touched), so no Rust
    // reference into it exists while it is zeroed.
    unsafe {
        core::ptr::write_bytes(
            core::ptr::with_exposed_provenance_mut::<u8>(first as usize),
            0,
            len as usize,
        )
    };
    Ok(stats)
}

#[repr(C, align(4096))]
struct Page(UnsafeCell<[u8; 4096]>);

#[repr(C, align(256))]
struct EnterBuffer(UnsafeCell<[u8; 256]>);

// SAFETY: none is accessed through Rust references: their GPAs go to the TDX
// module (TDG.VP.WR of the vAPIC address, TDG.VP.ENTER's buffer, the
// measurement page's RTMR-extend and TDREPORT buffers), and L1 reads and
// writes the buffers only through `TdPlatform` by GPA on this one vCPU.
unsafe impl Sync for Page {}
// SAFETY: as above.
unsafe impl Sync for EnterBuffer {}

static VAPIC_PAGE: Page = Page(UnsafeCell::new([0; 4096]));
static ENTER_BUFFER: EnterBuffer = EnterBuffer(UnsafeCell::new([0; 256]));
static MEASURE_PAGE: Page = Page(UnsafeCell::new([0; 4096]));

/// The vAPIC page and guest-state buffer: private, in `.bss`, never aliased to L2.
pub fn l1_pages() -> L1Pages {
    L1Pages {
        vapic_gpa: VAPIC_PAGE.0.get().expose_provenance() as u64,
        guest_state_gpa: ENTER_BUFFER.0.get().expose_provenance() as u64,
        measure_gpa: MEASURE_PAGE.0.get().expose_provenance() as u64,
    }
}

/// The real platform: the TDCALL instruction plus identity-mapped memory,
/// limited to the ranges L1 knows are accepted private memory.
pub struct TdPlatform {
    ranges: [(u64, u64); 4],
}

impl TdPlatform {
    /// Memory access limited to the TDG.VP.ENTER buffer and the BootInfo page.
    pub fn new(pages: &L1Pages, boot_info: u64) -> Self {
        TdPlatform {
            ranges: [
                (pages.guest_state_gpa, pages.guest_state_gpa + 256),
                (boot_info, boot_info + PAGE_SIZE),
                (pages.measure_gpa, pages.measure_gpa + PAGE_SIZE),
                (0, 0),
            ],
        }
    }

    /// Also allows `[start, end)` (the L2 region, once validated).
    pub fn allow(&mut self, start: u64, end: u64) {
        self.ranges[3] = (start, end);
    }

    fn check(&self, gpa: u64, len: usize) -> Result<(), MemoryError> {
        let end = gpa.checked_add(len as u64);
        match end {
            Some(end) if self.ranges.iter().any(|&(s, e)| gpa >= s && end <= e) => Ok(()),
            _ => Err(MemoryError::OutOfRange { gpa, len }),
        }
    }
}

/// The MSRs TDX shares between L1 and L2 (tdx-abi.md §2.10) that
/// [`SharedMsrs`] reads: STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE. Reading
/// any other MSR from L1 could #VE in a TD, so it is refused.
const SHARED_MSRS: [u32; 5] = [
    0xC000_0081,
    0xC000_0082,
    0xC000_0083,
    0xC000_0084,
    0xC000_0102,
];

impl SharedMsrs for TdPlatform {
    fn read_shared_msr(&mut self, msr: u32) -> Option<u64> {
        if !SHARED_MSRS.contains(&msr) {
            return None;
        }
        let (lo, hi): (u32, u32);
        // SAFETY: RDMSR of one of the shared syscall MSRs, which a TD's L1 reads
        // natively (after an L2 exit they hold L2's values, §2.10); it writes
        // EDX:EAX only and touches no memory.
        unsafe {
            core::arch::asm!(
                "rdmsr",
                in("ecx") msr,
                out("eax") lo,
                out("edx") hi,
                options(nomem, nostack, preserves_flags),
            );
        }
        Some(((hi as u64) << 32) | lo as u64)
    }
}

impl Tdcall for TdPlatform {
    fn tdcall(&mut self, regs: &mut Registers) {
        HwTdcall.tdcall(regs)
    }
}

impl L1Memory for TdPlatform {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        self.check(gpa, buf.len())?;
        for (i, b) in buf.iter_mut().enumerate() {
            let p = core::ptr::with_exposed_provenance::<u8>(gpa as usize + i);
            // SAFETY: `check` limited the range to accepted private memory that
            // the identity map covers (the ENTER buffer in `.bss`, the BootInfo
            // page or the accepted L2 region). Volatile, since the TDX module and L2 write it.
            *b = unsafe { p.read_volatile() };
        }
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        self.check(gpa, data.len())?;
        for (i, b) in data.iter().enumerate() {
            let p = core::ptr::with_exposed_provenance_mut::<u8>(gpa as usize + i);
            // SAFETY: as in `read`; no Rust reference covers these bytes (they are
            // the ENTER buffer, the BootInfo page or L2 memory, all reached by GPA only).
            unsafe { p.write_volatile(*b) };
        }
        Ok(())
    }
}
