//! The TD guest-physical layout (`docs/emulator-contract.md`, GPAW 48).

/// 4 KiB.
pub const PAGE_SIZE: u64 = 0x1000;
/// GPA width of the TD.
pub const GPAW: u8 = 48;
/// The shared bit, `1 << (GPAW - 1)`.
pub const SHARED_BIT: u64 = 1 << (GPAW - 1);
/// Private memory of the TD.
pub const TD_MEMORY_BYTES: u64 = 64 << 20;
/// vCPUs of the TD.
pub const NUM_VCPUS: u32 = 1;
/// GPA of the [`BootInfo`](crate::BootInfo) page.
pub const BOOT_INFO_GPA: u64 = 0x1000;
/// Lowest GPA of the paravisor's `PT_LOAD` segments.
pub const PARAVISOR_BASE: u64 = 0x20_0000;
/// Maximum span of the paravisor image: everything below [`L2_BASE`]
/// (its `.bss` holds the 8 MiB L1 heap and the TA instances' memory,
/// docs/tee.md).
pub const PARAVISOR_MAX_BYTES: u64 = L2_BASE - PARAVISOR_BASE;
/// Base of L2 VM #1's region (the probe is linked here).
pub const L2_BASE: u64 = 0x100_0000;
/// Size of L2 VM #1's region.
pub const L2_SIZE: u64 = 32 << 20;
/// Offset in the L2 region of the page the paravisor aliases read-only.
pub const L2_RO_TEST_PAGE_OFFSET: u64 = 0x1F_0000;
/// Bytes at the top of the L2 region that hold L2's page tables.
pub const L2_PAGE_TABLE_BYTES: u64 = 64 << 10;
/// Maximum span of the L2 image: it must end below the RO test page.
pub const L2_IMAGE_MAX_BYTES: u64 = L2_RO_TEST_PAGE_OFFSET;
/// Offset in the L2 region of the command-line page(s) (above the RO test page).
pub const L2_CMDLINE_OFFSET: u64 = 0x20_0000;
/// Maximum bytes of the L2 command line.
pub const L2_CMDLINE_MAX_BYTES: u64 = 0x1000;
/// Offset in the L2 region of the initrd.
pub const L2_INITRD_OFFSET: u64 = 0x80_0000;
/// Maximum bytes of the initrd: up to the L2 page tables at the region's top.
pub const L2_INITRD_MAX_BYTES: u64 = L2_SIZE - L2_PAGE_TABLE_BYTES - L2_INITRD_OFFSET;
/// GPA of the TDX reset page: L1 starts at `0xFFFF_FFF0` (tdx-abi.md §5.1,
/// §5.8); the loader puts a `jmp rel32` to the paravisor's 32-bit entry there.
pub const RESET_PAGE_GPA: u64 = 0xFFFF_F000;
/// GPA of the first instruction of a TD vCPU.
pub const RESET_VECTOR: u64 = 0xFFFF_FFF0;
/// COM1 data port.
pub const COM1: u16 = 0x3F8;
/// QEMU `isa-debug-exit` port: a write of `v` ends QEMU with status `(v << 1) | 1`.
pub const DEBUG_EXIT_PORT: u16 = 0xF4;
/// Debug-exit value for a ReportFatalError.
pub const EXIT_FATAL: u32 = 0x7F;
/// Debug-exit value for an L1 bug the emulator caught (HLT, port I/O, … in L1).
pub const EXIT_L1_BUG: u32 = 0x7E;
/// VMCALL function id of the probe echo (`RSI ^ 0x5A5A_5A5A` in R8).
pub const PROBE_ECHO_ID: u64 = 0x1_FFFF;

/// Rounds `x` up to a multiple of [`PAGE_SIZE`] (saturating).
pub const fn page_align_up(x: u64) -> u64 {
    match x.checked_add(PAGE_SIZE - 1) {
        Some(v) => v & !(PAGE_SIZE - 1),
        None => !(PAGE_SIZE - 1),
    }
}
