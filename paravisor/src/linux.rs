//! What L1 gives an unmodified Linux kernel running as L2 (docs/linux.md):
//! the x86 64-bit boot protocol's `boot_params` page with an e820 map, a
//! CPUID policy, an MSR table, a port policy, and the [`LinuxHandlers`] that
//! tie them to the exit handlers. The virtual x2APIC and its timer are in
//! [`crate::apic`] / [`crate::interrupts`].
//!
//! Choices, and how they differ from what a real TDX host gives a TD:
//! * CPUID reports what a TD's vCPU reports where Linux depends on it:
//!   vendor GenuineIntel, family 6 model 0x8F (Sapphire Rapids), x2APIC and
//!   TSC-deadline present, the TSC frequency in leaf 0x15 (25 MHz crystal ×
//!   the TD's TSC_FREQUENCY), an invariant TSC. Features whose MSRs L1 does
//!   not serve (MTRR, MCE/MCA, PDCM, architectural PMU, TSC_ADJUST, the
//!   speculation-control MSRs, XSAVES/IA32_XSS), monitor/mwait, VMX/SMX,
//!   LA57 and everything AMD-specific (SVM, SEV) are hidden. The rest comes
//!   from the host (under the emulator: QEMU's `-cpu max`).
//! * MSRs: APIC_BASE reads x2APIC-enabled (a TD's APIC is always x2APIC),
//!   MISC_ENABLE, FEATURE_CONTROL, the microcode revision and PLATFORM_INFO
//!   are emulated; everything else L2 reaches gets #GP(0).
//! * Ports: the serial ports COM1 (0x3F8) and the CMOS RTC (0x70/0x71) are
//!   forwarded to the host; every other port has no device (reads all
//!   ones). A TD has no 8259 PIC, PIT or i8042 of its own; the host's must
//!   not be programmed by a guest.

use alloc::vec::Vec;

use crate::handlers::{
    AllowCrWrites, CpuidPolicy, CpuidResult, CrPolicy, DefaultHandlers, EnosysHypercalls,
    ExitHandlers, Handlers, HypercallHandler, MsrPolicy, MsrTable, PortAccess, XsetbvOutcome,
    CPUID_HYPERVISOR_BASE,
};
use crate::memory::Platform;

/// 4 KiB.
const PAGE: usize = 4096;

/// An e820 memory-map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// First byte.
    pub addr: u64,
    /// Length.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// Usable RAM.
pub const E820_RAM: u32 = 1;
/// Reserved.
pub const E820_RESERVED: u32 = 2;
/// Entries the zero page holds.
pub const E820_MAX: usize = 128;

/// `boot_params` (the "zero page") offsets, Linux `asm/bootparam.h`.
pub mod bp {
    /// `acpi_rsdp_addr` (u64, boot protocol 2.14+).
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    /// `ext_ramdisk_image` (u32).
    pub const EXT_RAMDISK_IMAGE: usize = 0x0C0;
    /// `ext_ramdisk_size` (u32).
    pub const EXT_RAMDISK_SIZE: usize = 0x0C4;
    /// `ext_cmd_line_ptr` (u32).
    pub const EXT_CMD_LINE_PTR: usize = 0x0C8;
    /// `e820_entries` (u8).
    pub const E820_ENTRIES: usize = 0x1E8;
    /// `sentinel` (u8): must stay 0.
    pub const SENTINEL: usize = 0x1EF;
    /// `hdr.vid_mode` (u16).
    pub const VID_MODE: usize = 0x1FA;
    /// `hdr.boot_flag` (u16) = 0xAA55.
    pub const BOOT_FLAG: usize = 0x1FE;
    /// `hdr.header` (u32) = "HdrS".
    pub const HEADER: usize = 0x202;
    /// `hdr.version` (u16).
    pub const VERSION: usize = 0x206;
    /// `hdr.type_of_loader` (u8).
    pub const TYPE_OF_LOADER: usize = 0x210;
    /// `hdr.loadflags` (u8).
    pub const LOADFLAGS: usize = 0x211;
    /// `hdr.ramdisk_image` (u32).
    pub const RAMDISK_IMAGE: usize = 0x218;
    /// `hdr.ramdisk_size` (u32).
    pub const RAMDISK_SIZE: usize = 0x21C;
    /// `hdr.cmd_line_ptr` (u32).
    pub const CMD_LINE_PTR: usize = 0x228;
    /// `hdr.kernel_alignment` (u32).
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    /// `hdr.xloadflags` (u16).
    pub const XLOADFLAGS: usize = 0x236;
    /// `hdr.cmdline_size` (u32).
    pub const CMDLINE_SIZE: usize = 0x238;
    /// `e820_table` (128 × 20 bytes).
    pub const E820_TABLE: usize = 0x2D0;
}

/// The boot protocol version the zero page claims (2.15).
pub const BOOT_PROTOCOL_VERSION: u16 = 0x020F;
/// "Undefined" boot loader id.
pub const LOADER_TYPE_UNDEFINED: u8 = 0xFF;

/// Why a zero page could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroPageError {
    /// More e820 entries than the page holds.
    TooManyE820Entries,
}

fn put16(p: &mut [u8; PAGE], at: usize, v: u16) {
    p[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(p: &mut [u8; PAGE], at: usize, v: u32) {
    p[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Builds `boot_params` for the 64-bit boot protocol: the command line at
/// `cmdline_gpa` (NUL-terminated, `cmdline_max` bytes at most), the initrd
/// `(gpa, size)` and the memory map.
pub fn zero_page(
    cmdline_gpa: u64,
    cmdline_max: u32,
    initrd: Option<(u64, u64)>,
    e820: &[E820Entry],
) -> Result<[u8; PAGE], ZeroPageError> {
    zero_page_with_acpi(cmdline_gpa, cmdline_max, initrd, e820, None)
}

/// [`zero_page`] that also points Linux at an ACPI RSDP (`acpi_rsdp_addr`).
pub fn zero_page_with_acpi(
    cmdline_gpa: u64,
    cmdline_max: u32,
    initrd: Option<(u64, u64)>,
    e820: &[E820Entry],
    rsdp: Option<u64>,
) -> Result<[u8; PAGE], ZeroPageError> {
    if e820.len() > E820_MAX {
        return Err(ZeroPageError::TooManyE820Entries);
    }
    let mut p = [0u8; PAGE];
    put16(&mut p, bp::VID_MODE, 0xFFFF);
    put16(&mut p, bp::BOOT_FLAG, 0xAA55);
    p[bp::HEADER..bp::HEADER + 4].copy_from_slice(b"HdrS");
    put16(&mut p, bp::VERSION, BOOT_PROTOCOL_VERSION);
    p[bp::TYPE_OF_LOADER] = LOADER_TYPE_UNDEFINED;
    p[bp::LOADFLAGS] = 0x01; // LOADED_HIGH
    put32(&mut p, bp::KERNEL_ALIGNMENT, 0x20_0000);
    put16(&mut p, bp::XLOADFLAGS, 0x1); // XLF_KERNEL_64
    put32(&mut p, bp::CMDLINE_SIZE, cmdline_max);
    put32(&mut p, bp::CMD_LINE_PTR, cmdline_gpa as u32);
    put32(&mut p, bp::EXT_CMD_LINE_PTR, (cmdline_gpa >> 32) as u32);
    if let Some((gpa, size)) = initrd {
        put32(&mut p, bp::RAMDISK_IMAGE, gpa as u32);
        put32(&mut p, bp::EXT_RAMDISK_IMAGE, (gpa >> 32) as u32);
        put32(&mut p, bp::RAMDISK_SIZE, size as u32);
        put32(&mut p, bp::EXT_RAMDISK_SIZE, (size >> 32) as u32);
    }
    if let Some(rsdp) = rsdp {
        p[bp::ACPI_RSDP_ADDR..bp::ACPI_RSDP_ADDR + 8].copy_from_slice(&rsdp.to_le_bytes());
    }
    p[bp::E820_ENTRIES] = e820.len() as u8;
    for (i, e) in e820.iter().enumerate() {
        let at = bp::E820_TABLE + 20 * i;
        p[at..at + 8].copy_from_slice(&e.addr.to_le_bytes());
        p[at + 8..at + 16].copy_from_slice(&e.size.to_le_bytes());
        put32(&mut p, at + 16, e.kind);
    }
    Ok(p)
}

/// Offsets of the ACPI tables inside the page [`acpi_tables`] builds.
pub mod acpi {
    /// RSDP (36 bytes, revision 2).
    pub const RSDP: usize = 0x000;
    /// XSDT (FADT, MADT).
    pub const XSDT: usize = 0x040;
    /// FADT (revision 6, hardware-reduced ACPI).
    pub const FADT: usize = 0x080;
    /// MADT (one local APIC, no I/O APIC, no 8259).
    pub const MADT: usize = 0x200;
    /// DSDT: `\_SB.COM1`, a PNP0501 UART at 0x3F8 without an interrupt.
    pub const DSDT: usize = 0x280;
    /// FADT length (ACPI 6.x).
    pub const FADT_LEN: usize = 276;
}

/// AML: `Scope (\_SB) { Device (COM1) { Name (_HID, EisaId ("PNP0501"))
/// Name (_UID, Zero) Name (_CRS, ResourceTemplate () { IO (Decode16,
/// 0x3F8, 0x3F8, 8, 8) }) } }`.
pub const COM1_AML: [u8; 49] = [
    0x10, 0x30, b'\\', b'_', b'S', b'B', b'_', // Scope (\_SB), PkgLength 48
    0x5B, 0x82, 0x28, b'C', b'O', b'M', b'1', // Device (COM1), PkgLength 40
    0x08, b'_', b'H', b'I', b'D', 0x0C, 0x41, 0xD0, 0x05, 0x01, // _HID PNP0501
    0x08, b'_', b'U', b'I', b'D', 0x00, // _UID 0
    0x08, b'_', b'C', b'R', b'S', 0x11, 0x0D, 0x0A, 0x0A, // _CRS Buffer (10)
    0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x08, 0x08, // IO (Decode16, 0x3F8, 0x3F8, 8, 8)
    0x79, 0x00, // End tag
];

fn acpi_header(p: &mut [u8; PAGE], at: usize, sig: &[u8; 4], len: usize, revision: u8) {
    p[at..at + 4].copy_from_slice(sig);
    put32(p, at + 4, len as u32);
    p[at + 8] = revision;
    p[at + 10..at + 16].copy_from_slice(b"LVBSTD");
    p[at + 16..at + 24].copy_from_slice(b"LVBSTDX ");
    put32(p, at + 24, 1);
    p[at + 28..at + 32].copy_from_slice(b"LVBS");
    put32(p, at + 32, 1);
}

fn acpi_checksum(p: &mut [u8; PAGE], at: usize, len: usize, field: usize) {
    p[at + field] = 0;
    let sum = p[at..at + len].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    p[at + field] = sum.wrapping_neg();
}

/// The ACPI tables of a one-vCPU TD, in one page at `gpa` (offsets in
/// [`acpi`]): RSDP → XSDT → FADT (hardware-reduced: no PM timer, SCI, PM1
/// or reset registers; "VGA not present") → DSDT (empty) and MADT (the
/// x2APIC's ID 0 as one enabled local APIC; no I/O APIC; no PC-AT 8259s).
/// A TD's firmware (TDVF) gives Linux a MADT the same way; it is what lets
/// Linux, whose APIC is already in x2APIC mode, pick its x2APIC driver
/// before it first reads the APIC.
pub fn acpi_tables(gpa: u64) -> [u8; PAGE] {
    use acpi::*;
    let mut p = [0u8; PAGE];
    let addr = |off: usize| gpa + off as u64;
    // DSDT: the serial port as an ACPI PNP device with no interrupt, so
    // Linux's 8250 driver polls it (there is no interrupt controller to
    // route its IRQ 4: no I/O APIC, no 8259).
    acpi_header(&mut p, DSDT, b"DSDT", 36 + COM1_AML.len(), 2);
    p[DSDT + 36..DSDT + 36 + COM1_AML.len()].copy_from_slice(&COM1_AML);
    acpi_checksum(&mut p, DSDT, 36 + COM1_AML.len(), 9);
    // MADT.
    let madt_len = 44 + 8;
    acpi_header(&mut p, MADT, b"APIC", madt_len, 5);
    put32(&mut p, MADT + 36, 0xFEE0_0000);
    put32(&mut p, MADT + 40, 0); // no PCAT_COMPAT
    let e = MADT + 44;
    p[e] = 0; // processor local APIC
    p[e + 1] = 8;
    p[e + 2] = 0; // ACPI processor UID
    p[e + 3] = 0; // APIC ID
    put32(&mut p, e + 4, 1); // enabled
    acpi_checksum(&mut p, MADT, madt_len, 9);
    // FADT.
    acpi_header(&mut p, FADT, b"FACP", FADT_LEN, 6);
    put32(&mut p, FADT + 40, addr(DSDT) as u32);
    put16(&mut p, FADT + 109, 1 << 2); // IAPC_BOOT_ARCH: VGA not present
    put32(&mut p, FADT + 112, 1 << 20); // HW_REDUCED_ACPI
    p[FADT + 131] = 5; // FADT minor version (ACPI 6.5)
    p[FADT + 140..FADT + 148].copy_from_slice(&addr(DSDT).to_le_bytes());
    p[FADT + 268..FADT + 276].copy_from_slice(b"LVBSTDX\0");
    acpi_checksum(&mut p, FADT, FADT_LEN, 9);
    // XSDT.
    let xsdt_len = 36 + 16;
    acpi_header(&mut p, XSDT, b"XSDT", xsdt_len, 1);
    p[XSDT + 36..XSDT + 44].copy_from_slice(&addr(FADT).to_le_bytes());
    p[XSDT + 44..XSDT + 52].copy_from_slice(&addr(MADT).to_le_bytes());
    acpi_checksum(&mut p, XSDT, xsdt_len, 9);
    // RSDP 2.0: checksum over the first 20 bytes, extended over all 36.
    p[RSDP..RSDP + 8].copy_from_slice(b"RSD PTR ");
    p[RSDP + 9..RSDP + 15].copy_from_slice(b"LVBSTD");
    p[RSDP + 15] = 2;
    put32(&mut p, RSDP + 20, 36);
    p[RSDP + 24..RSDP + 32].copy_from_slice(&addr(XSDT).to_le_bytes());
    acpi_checksum(&mut p, RSDP, 20, 8);
    acpi_checksum(&mut p, RSDP, 36, 32);
    p
}

/// CPUID as L2 Linux sees it (module docs).
#[derive(Clone, Copy, Debug)]
pub struct LinuxCpuid {
    /// The TD's TSC frequency in units of 25 MHz (TDG.VM.RD TSC_FREQUENCY).
    pub tsc_frequency_25mhz: u32,
    /// The TD's XFAM (TDG.VM.RD XFAM): the XSAVE state components L2 may
    /// enable; CPUID leaf 0xD reports no others.
    pub xfam: u64,
}

/// Family 6, model 0x8F (Sapphire Rapids), stepping 8.
pub const CPUID_1_EAX: u32 = 0x0008_06F8;

impl CpuidPolicy for LinuxCpuid {
    fn local(&mut self, leaf: u32, _subleaf: u32) -> Option<CpuidResult> {
        let zero = CpuidResult::default();
        match leaf {
            // Thermal/power, architectural PMU: none.
            0x6 | 0xA => Some(zero),
            // TSC / crystal ratio: TSC = 25 MHz × EBX / EAX (§2.7 TSC_FREQUENCY).
            0x15 => Some(CpuidResult {
                eax: 1,
                ebx: self.tsc_frequency_25mhz,
                ecx: 25_000_000,
                edx: 0,
            }),
            // Base / maximum frequency in MHz (the TSC's), bus 100 MHz: spares
            // Linux a PIT calibration of the CPU clock (there is no PIT).
            0x16 => {
                let mhz = self.tsc_frequency_25mhz * 25;
                Some(CpuidResult {
                    eax: mhz,
                    ebx: mhz,
                    ecx: 100,
                    edx: 0,
                })
            }
            // The hypervisor range: no known signature, so Linux runs as on
            // bare metal (a TD's L2 with no paravirtual interface).
            CPUID_HYPERVISOR_BASE..=0x4000_00FF => Some(zero),
            // SVM and SEV/SNP feature leaves.
            0x8000_000A | 0x8000_001F..=0x8000_0021 => Some(zero),
            _ => None,
        }
    }

    fn adjust(&mut self, leaf: u32, subleaf: u32, r: &mut CpuidResult) {
        match leaf {
            0 => {
                r.eax = r.eax.max(0x16);
                // "GenuineIntel" in EBX, EDX, ECX.
                r.ebx = u32::from_le_bytes(*b"Genu");
                r.edx = u32::from_le_bytes(*b"ineI");
                r.ecx = u32::from_le_bytes(*b"ntel");
            }
            1 => {
                r.eax = CPUID_1_EAX;
                // One logical processor, initial APIC ID 0, CLFLUSH size kept.
                r.ebx = (r.ebx & 0xFFFF) | (1 << 16);
                // ECX: hide DTES64(2) MONITOR(3) DS-CPL(4) VMX(5) SMX(6) EST(7)
                // TM2(8) xTPR(14) PDCM(15); x2APIC(21), TSC-deadline(24) and
                // the hypervisor bit(31) on.
                r.ecx &= !((1 << 2)
                    | (1 << 3)
                    | (1 << 4)
                    | (1 << 5)
                    | (1 << 6)
                    | (1 << 7)
                    | (1 << 8)
                    | (1 << 14)
                    | (1 << 15));
                r.ecx |= (1 << 21) | (1 << 24) | (1 << 31);
                // EDX: hide MCE(7) MTRR(12) MCA(14) DS(21) ACPI(22) TM(29) PBE(31).
                r.edx &= !((1 << 7)
                    | (1 << 12)
                    | (1 << 14)
                    | (1 << 21)
                    | (1 << 22)
                    | (1 << 29)
                    | (1 << 31));
            }
            7 if subleaf == 0 => {
                // EBX: TSC_ADJUST(1). ECX: WAITPKG(5), LA57(16).
                r.ebx &= !(1 << 1);
                r.ecx &= !((1 << 5) | (1 << 16));
                // EDX: MD_CLEAR(10), TSX-force-abort(13), SERIALIZE kept;
                // IBRS/IBPB(26) STIBP(27) L1D_FLUSH(28) ARCH_CAPABILITIES(29)
                // CORE_CAPABILITIES(30) SSBD(31).
                r.edx &= !((1 << 10) | (1 << 13) | (0x3F << 26));
            }
            0xD if subleaf == 0 => {
                // Supported XCR0 bits: XFAM's user components only.
                r.eax &= self.xfam as u32;
                r.edx &= (self.xfam >> 32) as u32;
            }
            0xD if subleaf == 1 => {
                // XSAVES/XRSTORS (bit 3): IA32_XSS is not served.
                r.eax &= !(1 << 3);
                r.ecx = 0;
                r.edx = 0;
            }
            0xD if (2..64).contains(&subleaf) && self.xfam >> subleaf & 1 == 0 => {
                *r = CpuidResult::default();
            }
            0x8000_0001 => {
                // ECX: LAHF/SAHF(0), LZCNT(5), PREFETCHW(8) only.
                r.ecx &= (1 << 0) | (1 << 5) | (1 << 8);
                // EDX: SYSCALL(11), NX(20), 1 GiB pages(26), RDTSCP(27), LM(29).
                r.edx &= (1 << 11) | (1 << 20) | (1 << 26) | (1 << 27) | (1 << 29);
            }
            0x8000_0007 => {
                // Invariant TSC only.
                *r = CpuidResult {
                    edx: 1 << 8,
                    ..CpuidResult::default()
                };
            }
            0x8000_0008 => {
                // Address sizes only (no AMD feature bits in EBX).
                r.ebx = 0;
                r.ecx = 0;
            }
            _ => {}
        }
    }
}

/// IA32_MISC_ENABLE.
pub const MSR_IA32_MISC_ENABLE: u32 = 0x1A0;
/// IA32_BIOS_SIGN_ID (microcode revision).
pub const MSR_IA32_UCODE_REV: u32 = 0x8B;

/// The MSRs L1 emulates for Linux (module docs); everything else is #GP(0).
pub fn msr_table() -> MsrTable {
    let mut t = MsrTable::empty();
    t.emulate(crate::handlers::MSR_IA32_APIC_BASE, 0xFEE0_0D00, true)
        .emulate(crate::handlers::MSR_IA32_FEATURE_CONTROL, 1, false)
        // Fast strings; BTS and PEBS unavailable.
        .emulate(MSR_IA32_MISC_ENABLE, 0x1 | (1 << 11) | (1 << 12), true)
        .emulate(MSR_IA32_UCODE_REV, 0, true)
        .emulate(crate::handlers::MSR_PLATFORM_INFO, 0, false);
    t
}

/// Ports forwarded to the host: COM1 and the CMOS RTC.
pub fn port_forwarded(port: u16) -> bool {
    matches!(port, 0x3F8..=0x3FF | 0x70..=0x71)
}

/// Counters of the Linux handlers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinuxStats {
    /// Port accesses answered as "no device".
    pub absent_port_accesses: u64,
    /// Distinct ports answered as "no device" (first [`LinuxStats::MAX_PORTS`]).
    pub absent_ports_seen: usize,
}

impl LinuxStats {
    /// How many absent ports are remembered for the log.
    pub const MAX_PORTS: usize = 32;
}

/// The exit handlers a Linux L2 gets without the HEKI service: `-ENOSYS`
/// for every VMCALL, all CR writes allowed, the Linux MSR table and CPUID
/// policy.
pub type PlainLinuxHandlers = Handlers<EnosysHypercalls, AllowCrWrites, MsrTable, LinuxCpuid>;

/// The exit handlers of a Linux L2: the port policy, XSETBV and the COM1
/// shortcut here, and VMCALL, CR, MSR and CPUID from `inner` — the HEKI
/// service in the paravisor (whose base MSR and CPUID policies are
/// [`msr_table`] and [`LinuxCpuid`]), [`PlainLinuxHandlers`] in tests.
pub struct LinuxHandlers<H = PlainLinuxHandlers> {
    /// VMCALL, CR, MSR and CPUID handling.
    pub inner: H,
    /// The TD's XFAM: the XCR0 bits L2 may set.
    pub xfam: u64,
    /// Counters.
    pub stats: LinuxStats,
    /// Ports answered as absent (for the log).
    pub absent_ports: Vec<u16>,
    /// Executes XSETBV in L1 (XCR0 is shared with L2, §2.10); `None` refuses
    /// every XSETBV with #GP(0).
    pub xsetbv: Option<fn(u32, u64)>,
    /// XSETBVs served.
    pub xsetbvs: u64,
    /// The COM1 line-status shortcut.
    pub uart: UartShortcut,
}

/// COM1's line-status register.
pub const UART_LSR: u16 = 0x3FD;
/// LSR: transmitter holding register and transmitter empty.
pub const LSR_TX_IDLE: u32 = 0x60;

/// Halves the exits of console output: Linux writes a character as "read
/// LSR until THRE, write THR". An LSR read right after a THR write is
/// answered by L1 with THRE|TEMT (and no data ready): the host's UART (a
/// QEMU 16550 that drains at once) is ready again by then. Every other LSR read goes to the host, so received
/// bytes are seen at the first LSR read that does not follow a write; they
/// wait in the host's FIFO meanwhile. A real host UART that can be busy would
/// need the forwarded read every time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UartShortcut {
    after_thr_write: bool,
    /// LSR reads answered by L1.
    pub shortcuts: u64,
}

impl UartShortcut {
    /// The decision for one COM1 access.
    pub fn access(&mut self, port: u16, is_in: bool) -> PortAccess {
        let shortcut = port == UART_LSR && is_in && self.after_thr_write;
        self.after_thr_write = port == 0x3F8 && !is_in;
        if shortcut {
            self.shortcuts += 1;
            // The write that preceded this read was the last access; the
            // next LSR read (if no write comes between) is forwarded again.
            self.after_thr_write = false;
            PortAccess::Value(LSR_TX_IDLE)
        } else {
            PortAccess::Forward
        }
    }
}

impl LinuxHandlers<PlainLinuxHandlers> {
    /// The handlers for a TD whose TSC runs at `tsc_frequency_25mhz` × 25 MHz,
    /// without the HEKI service.
    pub fn new(tsc_frequency_25mhz: u32, xfam: u64) -> Self {
        let inner = DefaultHandlers::default()
            .with_msr_policy(msr_table())
            .with_cpuid_policy(LinuxCpuid {
                tsc_frequency_25mhz,
                xfam,
            });
        LinuxHandlers::with_inner(inner, xfam)
    }
}

impl<H> LinuxHandlers<H> {
    /// The Linux port, XSETBV and UART handling around `inner`.
    pub fn with_inner(inner: H, xfam: u64) -> Self {
        LinuxHandlers {
            inner,
            xfam,
            stats: LinuxStats::default(),
            absent_ports: Vec::new(),
            xsetbv: None,
            xsetbvs: 0,
            uart: UartShortcut::default(),
        }
    }
}

impl<H: ExitHandlers> ExitHandlers for LinuxHandlers<H> {
    fn hypercalls(&mut self) -> &mut dyn HypercallHandler {
        self.inner.hypercalls()
    }
    fn cr_policy(&mut self) -> &mut dyn CrPolicy {
        self.inner.cr_policy()
    }
    fn msr_policy(&mut self) -> &mut dyn MsrPolicy {
        self.inner.msr_policy()
    }
    fn cpuid_policy(&mut self) -> &mut dyn CpuidPolicy {
        self.inner.cpuid_policy()
    }
    fn pending_interrupt(&mut self, platform: &mut dyn Platform) {
        self.inner.pending_interrupt(platform)
    }
    fn port_access(&mut self, port: u16, is_in: bool) -> PortAccess {
        if port_forwarded(port) {
            return self.uart.access(port, is_in);
        }
        self.stats.absent_port_accesses += 1;
        if !self.absent_ports.contains(&port) && self.absent_ports.len() < LinuxStats::MAX_PORTS {
            self.absent_ports.push(port);
            self.stats.absent_ports_seen = self.absent_ports.len();
        }
        PortAccess::Absent
    }
    fn xsetbv(&mut self, xcr: u32, value: u64) -> XsetbvOutcome {
        let Some(native) = self.xsetbv else {
            return XsetbvOutcome::Fault;
        };
        if xcr != 0 || !crate::handlers::xcr0_valid(value, self.xfam) {
            return XsetbvOutcome::Fault;
        }
        native(xcr, value);
        self.xsetbvs += 1;
        XsetbvOutcome::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u32_at(p: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(p[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn zero_page_layout() {
        let e820 = [
            E820Entry {
                addr: 0x2000,
                size: 0x7_E000,
                kind: E820_RAM,
            },
            E820Entry {
                addr: 0x100_0000,
                size: 0xF00_0000,
                kind: E820_RAM,
            },
        ];
        let p = zero_page(0x8_1000, 4095, Some((0x400_0000, 0x12345)), &e820).unwrap();
        assert_eq!(&p[0x1FE..0x200], &[0x55, 0xAA]);
        assert_eq!(&p[0x202..0x206], b"HdrS");
        assert_eq!(u16::from_le_bytes([p[0x206], p[0x207]]), 0x020F);
        assert_eq!(p[0x210], 0xFF);
        assert_eq!(u32_at(&p, 0x228), 0x8_1000);
        assert_eq!(u32_at(&p, 0x218), 0x400_0000);
        assert_eq!(u32_at(&p, 0x21C), 0x12345);
        assert_eq!(u32_at(&p, 0x0C0), 0);
        assert_eq!(p[0x1E8], 2);
        assert_eq!(p[0x1EF], 0, "sentinel");
        assert_eq!(
            u64::from_le_bytes(p[0x2D0 + 20..0x2D0 + 28].try_into().unwrap()),
            0x100_0000
        );
        assert_eq!(u32_at(&p, 0x2D0 + 20 + 16), E820_RAM);
        let too_many = [e820[0]; 129];
        assert_eq!(
            zero_page(0, 0, None, &too_many),
            Err(ZeroPageError::TooManyE820Entries)
        );
    }

    #[test]
    fn acpi_tables_checksum_and_link() {
        let base = 0x8_6000;
        let p = acpi_tables(base);
        let sum =
            |at: usize, len: usize| p[at..at + len].iter().fold(0u8, |a, b| a.wrapping_add(*b));
        assert_eq!(&p[..8], b"RSD PTR ");
        assert_eq!(sum(acpi::RSDP, 20), 0);
        assert_eq!(sum(acpi::RSDP, 36), 0);
        let xsdt = u64::from_le_bytes(p[24..32].try_into().unwrap());
        assert_eq!(xsdt, base + acpi::XSDT as u64);
        for (at, sig) in [
            (acpi::XSDT, b"XSDT"),
            (acpi::FADT, b"FACP"),
            (acpi::MADT, b"APIC"),
            (acpi::DSDT, b"DSDT"),
        ] {
            assert_eq!(&p[at..at + 4], sig);
            let len = u32_at(&p, at + 4) as usize;
            assert_eq!(sum(at, len), 0, "{sig:?} checksum");
        }
        assert_eq!(u32_at(&p, acpi::FADT + 4) as usize, acpi::FADT_LEN);
        assert_eq!(u32_at(&p, acpi::FADT + 112), 1 << 20, "hardware-reduced");
        assert_eq!(
            u64::from_le_bytes(p[acpi::FADT + 140..acpi::FADT + 148].try_into().unwrap()),
            base + acpi::DSDT as u64
        );
        // One enabled local APIC with ID 0.
        assert_eq!(&p[acpi::MADT + 44..acpi::MADT + 48], &[0, 8, 0, 0]);
        let zp = zero_page_with_acpi(0, 0, None, &[], Some(base)).unwrap();
        assert_eq!(u64::from_le_bytes(zp[0x70..0x78].try_into().unwrap()), base);
    }

    #[test]
    fn cpuid_policy() {
        let mut c = LinuxCpuid {
            tsc_frequency_25mhz: 104,
            xfam: 0x7,
        };
        let r = c.local(0x15, 0).unwrap();
        assert_eq!((r.eax, r.ebx, r.ecx), (1, 104, 25_000_000));
        assert_eq!(c.local(0x4000_0000, 0), Some(CpuidResult::default()));
        assert_eq!(c.local(1, 0), None);
        let mut r = CpuidResult {
            eax: 0xD,
            ebx: u32::from_le_bytes(*b"Auth"),
            ecx: 0,
            edx: 0,
        };
        c.adjust(0, 0, &mut r);
        assert_eq!(r.eax, 0x16);
        let mut v = [0u8; 12];
        v[..4].copy_from_slice(&r.ebx.to_le_bytes());
        v[4..8].copy_from_slice(&r.edx.to_le_bytes());
        v[8..].copy_from_slice(&r.ecx.to_le_bytes());
        assert_eq!(&v, b"GenuineIntel");
        let mut r = CpuidResult {
            eax: 0,
            ebx: 0x0F00_0800,
            ecx: u32::MAX,
            edx: u32::MAX,
        };
        c.adjust(1, 0, &mut r);
        assert_eq!(r.eax, CPUID_1_EAX);
        assert_eq!(r.ebx, 0x0001_0800);
        assert_ne!(r.ecx & (1 << 21), 0, "x2APIC");
        assert_ne!(r.ecx & (1 << 24), 0, "TSC deadline");
        assert_eq!(r.ecx & (1 << 5), 0, "no VMX");
        assert_eq!(r.edx & (1 << 12), 0, "no MTRR");
        let mut r = CpuidResult {
            eax: 0,
            ebx: 0,
            ecx: u32::MAX,
            edx: u32::MAX,
        };
        c.adjust(0x8000_0001, 0, &mut r);
        assert_eq!(r.ecx & (1 << 2), 0, "no SVM");
        assert_ne!(r.edx & (1 << 29), 0, "long mode");
    }

    #[test]
    fn msrs_and_ports() {
        let mut h = LinuxHandlers::new(100, 0x3);
        assert_eq!(
            h.msr_policy().read(0x1B),
            crate::handlers::MsrRead::Value(0xFEE0_0D00)
        );
        assert_eq!(
            h.msr_policy().read(0x1A0),
            crate::handlers::MsrRead::Value(0x1801)
        );
        assert_eq!(h.msr_policy().read(0xFE), crate::handlers::MsrRead::Deny);
        assert_eq!(h.port_access(0x3FD, true), PortAccess::Forward);
        assert_eq!(h.port_access(0x71, true), PortAccess::Forward);
        assert_eq!(h.port_access(0x21, true), PortAccess::Absent);
        assert_eq!(h.port_access(0x21, false), PortAccess::Absent);
        assert_eq!(h.port_access(0x43, false), PortAccess::Absent);
        // LSR after a THR write: answered; the next LSR read is forwarded.
        assert_eq!(h.port_access(0x3F8, false), PortAccess::Forward);
        assert_eq!(h.port_access(0x3FD, true), PortAccess::Value(0x60));
        assert_eq!(h.port_access(0x3FD, true), PortAccess::Forward);
        assert_eq!(h.port_access(0x3F8, false), PortAccess::Forward);
        assert_eq!(h.port_access(0x3F9, true), PortAccess::Forward);
        assert_eq!(h.port_access(0x3FD, true), PortAccess::Forward);
        assert_eq!(h.uart.shortcuts, 1);
        assert_eq!(h.stats.absent_port_accesses, 3);
        assert_eq!(h.absent_ports, [0x21, 0x43]);
        // XSETBV: refused without a native path, checked against XFAM with one.
        assert_eq!(h.xsetbv(0, 0x3), XsetbvOutcome::Fault);
        h.xsetbv = Some(|_, _| {});
        assert_eq!(h.xsetbv(0, 0x3), XsetbvOutcome::Done);
        assert_eq!(h.xsetbv(0, 0x7), XsetbvOutcome::Fault, "AVX outside XFAM");
        assert_eq!(h.xsetbv(1, 0x3), XsetbvOutcome::Fault, "XCR1");
        assert_eq!(h.xsetbvs, 1);
    }

    #[test]
    fn xcr0_rules() {
        use crate::handlers::xcr0_valid;
        let all = 0x6_02FF;
        assert!(xcr0_valid(0x3, all));
        assert!(xcr0_valid(0x7, all));
        assert!(xcr0_valid(0xE7, all));
        assert!(!xcr0_valid(0x2, all), "x87 missing");
        assert!(!xcr0_valid(0x5, all), "AVX without SSE");
        assert!(!xcr0_valid(0x27, all), "partial AVX-512");
        assert!(!xcr0_valid(0xE3, all), "AVX-512 without AVX");
        assert!(!xcr0_valid(0x8 | 0x3, all), "BNDREGS without BNDCSR");
        assert!(!xcr0_valid(0x7, 0x3), "outside the allowed set");
        assert!(!xcr0_valid(0x2_0003, all), "half of AMX");
    }
}
