//! The Linux boot mode (BootInfo flag [`BootInfo::FLAG_LINUX`], docs/linux.md):
//! an unmodified x86-64 `vmlinux` as L2 VM #1, entered through the Linux
//! 64-bit boot protocol.
//!
//! L1 (generic over the platform, so `cargo test` runs it on the model):
//! 1. checks BootInfo: the kernel, command line and initrd inside the L2
//!    region `[l2_base, td_memory)`, clear of the paravisor;
//! 2. accepts L2's memory: the low 1 MiB except page 0x1000 (BootInfo) and
//!    the L2 region;
//! 3. writes the boot area (reserved in the e820 map): `boot_params` with the
//!    e820 map, the initrd, the ACPI RSDP and a NUL-terminated copy of the
//!    command line; ACPI tables (a MADT with the one x2APIC); a
//!    GDT with the protocol's `__BOOT_CS` 0x10 / `__BOOT_DS` 0x18 and a TSS;
//!    identity page tables over the first 1 GiB (2 MiB pages);
//! 4. aliases L2's memory to VM #1 with R|W|Xs|Xu (MBEC on; HEKI narrows it
//!    later);
//! 5. sets the VM up in 64-bit mode at the kernel's ELF entry (`startup_64`)
//!    with RSI = `boot_params`, interrupts off;
//! 6. measures the BootInfo and policy (RTMR0) and the kernel, initrd and
//!    command line (RTMR1) before L2 first runs, as the probe boot does
//!    (`crate::measured`, docs/attestation.md);
//! 7. runs it with [`LinuxHandlers`] around the HEKI service
//!    ([`LinuxService`]: register pins, page states, modules, text patches;
//!    then the TEE on 0x1FFF0 and the attestation calls) and the virtual
//!    x2APIC ([`Vcpu::run_with_interrupts`]).

use alloc::vec::Vec;
use core::fmt;

use paravisor::apic::VirtualApic;
use paravisor::handlers::{AllowCrWrites, EnosysHypercalls, MsrTable};
use paravisor::heki::{HekiConfig, HekiService};
use paravisor::linux::{self, E820Entry, LinuxCpuid, LinuxHandlers, E820_RAM, E820_RESERVED};
use paravisor::measure::{AttestHypercalls, BootRegions, SharedMeasurements};
use paravisor::pinning::{
    MSR_CSTAR, MSR_EFER, MSR_LSTAR, MSR_SFMASK, MSR_STAR, MSR_SYSENTER_CS, MSR_SYSENTER_EIP,
    MSR_SYSENTER_ESP,
};
use paravisor::setup::{
    DescriptorTable, InitialState, L2VmConfig, MsrPassthrough, Segment, AR_TSS_BUSY,
};
use paravisor::tee::{TeeConfig, TeeService};
use paravisor::{
    setup_l2_vm, Clock, Interrupts, L1Memory, MemoryError, Platform, StopReason, Vcpu,
};
use tdcall::attr::PageLevel;
use tdcall::field::td;
use tdcall::leaves::{TdInfo, VmRd, VpInfo};
use tdcall::{L2Vm, TdxError};

use crate::boot::{BootError, L1Pages, TeeRng};
use crate::bootinfo::{
    self, BootInfo, BootInfoError, L1Image, BOOT_INFO_GPA, BOOT_INFO_SIZE, IDENTITY_MAP_LIMIT,
    LARGE_PAGE_SIZE, PAGE_SIZE,
};
use crate::measured;
use crate::memory::{self, MemError, L2_FULL};

/// Low RAM Linux gets (the real-mode trampoline must live below 1 MiB).
pub const LOW_RAM: (u64, u64) = (0x2000, 0x8_0000);
/// The boot area: `boot_params`, command line, GDT/TSS, page tables. Reserved
/// in the e820 map, like the rest up to 1 MiB (legacy VGA/BIOS holes).
pub const BOOT_AREA: (u64, u64) = (0x8_0000, 0x8_7000);
/// `boot_params` (the zero page).
pub const ZERO_PAGE: u64 = 0x8_0000;
/// The command line copy (NUL-terminated).
pub const CMDLINE: u64 = 0x8_1000;
/// Bytes of the command line Linux may read (the page minus the NUL).
pub const CMDLINE_MAX: u64 = PAGE_SIZE - 1;
/// GDT: null, null, `__BOOT_CS` 0x10, `__BOOT_DS` 0x18, TSS 0x20.
pub const GDT: u64 = 0x8_2000;
/// TSS (104 bytes).
pub const TSS: u64 = 0x8_2100;
/// PML4, PDPT and PD of the identity map.
pub const PML4: u64 = 0x8_3000;
const PDPT: u64 = 0x8_4000;
const PD: u64 = 0x8_5000;
/// ACPI tables (RSDP, XSDT, FADT, MADT, DSDT; `paravisor::linux::acpi_tables`).
pub const ACPI: u64 = 0x8_6000;
/// Selectors of the 64-bit boot protocol.
pub const BOOT_CS: u16 = 0x10;
/// Data selector.
pub const BOOT_DS: u16 = 0x18;
/// TSS selector.
pub const BOOT_TSS: u16 = 0x20;
/// TD memory at the top kept for L1: its heap grows into it (page-state
/// map, module validation, the TEE). Not in the e820 map, never aliased to
/// L2, and private to every HEKI/TEE call. The loader leaves the top 64 MiB
/// of a Linux TD free of images.
pub const L1_HEAP_EXTENSION: u64 = 16 << 20;
/// Cap on TDG.VP.ENTER calls of a Linux run.
pub const MAX_ENTRIES: u64 = 1 << 40;

/// A validated Linux BootInfo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinuxLayout {
    /// Private memory of the TD.
    pub td_memory: u64,
    /// `[start, end)` at the top of the TD that L1 keeps for its heap
    /// ([`L1_HEAP_EXTENSION`]).
    pub l1_heap: (u64, u64),
    /// First GPA of the L2 region (the kernel's load address).
    pub l2_base: u64,
    /// The kernel's 64-bit entry (`startup_64`).
    pub entry: u64,
    /// End of the loaded kernel image.
    pub image_end: u64,
    /// The command line as loaded `(gpa, size)`.
    pub cmdline: Option<(u64, u64)>,
    /// The initrd `(gpa, size)`.
    pub initrd: Option<(u64, u64)>,
}

fn check(ok: bool, what: &'static str, value: u64) -> Result<(), BootInfoError> {
    if ok {
        Ok(())
    } else {
        Err(BootInfoError { what, value })
    }
}

/// Whether the BootInfo page asks for the Linux boot mode.
pub fn requested<M: L1Memory + ?Sized>(mem: &mut M) -> bool {
    let mut raw = [0u8; BOOT_INFO_SIZE];
    mem.read(BOOT_INFO_GPA, &mut raw).is_ok()
        && bootinfo::decode(&raw).is_ok_and(|bi| bi.flags == BootInfo::FLAG_LINUX)
}

/// Checks a Linux BootInfo against L1's image and returns the layout.
pub fn validate(bi: &BootInfo, l1: &L1Image) -> Result<LinuxLayout, BootInfoError> {
    check(bi.flags == BootInfo::FLAG_LINUX, "flags", bi.flags)?;
    check(bi.num_vcpus >= 1, "num_vcpus", bi.num_vcpus as u64)?;
    let mem = bi.td_memory_bytes;
    check(
        mem.is_multiple_of(LARGE_PAGE_SIZE) && mem <= IDENTITY_MAP_LIMIT,
        "td_memory_bytes (2 MiB multiple, at most 1 GiB)",
        mem,
    )?;
    let base = bi.l2_base;
    check(
        base.is_multiple_of(LARGE_PAGE_SIZE) && base >= l1.end && base < mem,
        "l2_base (2 MiB aligned, above the paravisor, inside memory)",
        base,
    )?;
    check(
        mem >= base + 2 * L1_HEAP_EXTENSION,
        "td_memory_bytes (room for L2 and L1's heap extension)",
        mem,
    )?;
    let heap = mem - L1_HEAP_EXTENSION;
    check(
        bi.l2_size == mem - base,
        "l2_size (the region runs to the end of memory)",
        bi.l2_size,
    )?;
    check(
        bi.l2_image_end > base && bi.l2_image_end <= heap,
        "l2_image_end (below L1's heap extension)",
        bi.l2_image_end,
    )?;
    check(
        bi.l2_entry >= base && bi.l2_entry < bi.l2_image_end,
        "l2_entry (inside the kernel image)",
        bi.l2_entry,
    )?;
    check(
        l1.end <= base,
        "the paravisor overlaps the L2 region",
        l1.end,
    )?;
    let blob = |gpa: u64, size: u64, what: &'static str| {
        if size == 0 {
            return check(gpa == 0, what, gpa).map(|()| None);
        }
        let end = gpa.saturating_add(size);
        check(gpa >= bi.l2_image_end && end <= heap, what, gpa)?;
        Ok(Some((gpa, size)))
    };
    let cmdline = blob(
        bi.cmdline_gpa,
        bi.cmdline_size,
        "cmdline (after the kernel)",
    )?;
    let initrd = blob(bi.initrd_gpa, bi.initrd_size, "initrd (after the kernel)")?;
    if let (Some((c, cs)), Some((i, is))) = (cmdline, initrd) {
        check(c + cs <= i || i + is <= c, "cmdline overlaps the initrd", c)?;
    }
    Ok(LinuxLayout {
        td_memory: mem,
        l1_heap: (heap, mem),
        l2_base: base,
        entry: bi.l2_entry,
        image_end: bi.l2_image_end,
        cmdline,
        initrd,
    })
}

/// The e820 map L2 Linux gets.
pub fn e820(l: &LinuxLayout) -> Vec<E820Entry> {
    let e = |addr: u64, end: u64, kind| E820Entry {
        addr,
        size: end - addr,
        kind,
    };
    Vec::from([
        e(0, LOW_RAM.0, E820_RESERVED),
        e(LOW_RAM.0, LOW_RAM.1, E820_RAM),
        e(LOW_RAM.1, 0x10_0000, E820_RESERVED),
        e(l.l2_base, l.l1_heap.0, E820_RAM),
        e(l.l1_heap.0, l.l1_heap.1, E820_RESERVED),
    ])
}

/// Why the Linux boot stopped before L2 ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinuxBootError {
    /// The common boot steps (identify, accept, alias, setup).
    Boot(BootError),
    /// TDG.VM.RD of TSC_FREQUENCY or XFAM failed.
    TscFrequency(TdxError),
    /// Writing the boot area failed.
    BootArea(MemoryError),
    /// The zero page could not be built.
    ZeroPage(linux::ZeroPageError),
    /// The HEKI service's page states could not be set up (the error, logged).
    Heki,
}

impl fmt::Display for LinuxBootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinuxBootError::Boot(e) => write!(f, "{e}"),
            LinuxBootError::TscFrequency(e) => write!(f, "TDG.VM.RD TSC_FREQUENCY/XFAM: {e}"),
            LinuxBootError::BootArea(e) => write!(f, "writing the boot area: {e}"),
            LinuxBootError::ZeroPage(e) => write!(f, "boot_params: {e:?}"),
            LinuxBootError::Heki => write!(f, "setting up the HEKI page states failed"),
        }
    }
}

impl From<BootError> for LinuxBootError {
    fn from(e: BootError) -> Self {
        LinuxBootError::Boot(e)
    }
}

/// TDG.VP.INFO (BSP only), NUM_L2_VMS and the validated Linux BootInfo.
pub fn identify<P: Platform>(p: &mut P, l1: &L1Image) -> Result<(TdInfo, LinuxLayout), BootError> {
    let info = tdcall::call(p, &VpInfo).map_err(BootError::VpInfo)?;
    if info.vcpu_index != 0 {
        return Err(BootError::NotBsp(info.vcpu_index));
    }
    let num_l2 = tdcall::call(
        p,
        &VmRd {
            field: td::NUM_L2_VMS,
            version: 0,
        },
    )
    .map_err(BootError::VmRd)?
    .value;
    if num_l2 == 0 {
        return Err(BootError::NoL2Vm);
    }
    let mut raw = [0u8; BOOT_INFO_SIZE];
    p.read(BOOT_INFO_GPA, &mut raw)
        .map_err(BootError::ReadBootInfo)?;
    let bi = bootinfo::decode(&raw).map_err(BootError::BootInfo)?;
    let layout = validate(&bi, l1).map_err(BootError::BootInfo)?;
    log::info!(
        "Linux boot: TD {} MiB, kernel {:#x}..{:#x} entry {:#x}, cmdline {:?}, initrd {:?}",
        layout.td_memory >> 20,
        layout.l2_base,
        layout.image_end,
        layout.entry,
        layout.cmdline,
        layout.initrd
    );
    Ok((info, layout))
}

/// The GPA window L1 must be able to write for the Linux boot: the boot area
/// up to the end of memory (it covers the L2 region; L1's image lies between).
pub fn l1_window(l: &LinuxLayout) -> (u64, u64) {
    (BOOT_AREA.0, l.td_memory)
}

fn put(page: &mut [u8; PAGE_SIZE as usize], index: usize, value: u64) {
    page[index * 8..index * 8 + 8].copy_from_slice(&value.to_le_bytes());
}

/// Writes the boot area: zero page, command line, GDT/TSS, page tables.
pub fn write_boot_area<M: L1Memory + ?Sized>(
    mem: &mut M,
    l: &LinuxLayout,
) -> Result<(), LinuxBootError> {
    let w = |mem: &mut M, gpa: u64, page: &[u8; PAGE_SIZE as usize]| {
        mem.write(gpa, page).map_err(LinuxBootError::BootArea)
    };
    let mut page = [0u8; PAGE_SIZE as usize];
    // Command line: copied (and truncated) so it is NUL-terminated.
    if let Some((gpa, size)) = l.cmdline {
        let n = size.min(CMDLINE_MAX) as usize;
        mem.read(gpa, &mut page[..n])
            .map_err(LinuxBootError::BootArea)?;
    }
    w(mem, CMDLINE, &page)?;
    let zp = linux::zero_page_with_acpi(
        CMDLINE,
        CMDLINE_MAX as u32,
        l.initrd,
        &e820(l),
        Some(ACPI + linux::acpi::RSDP as u64),
    )
    .map_err(LinuxBootError::ZeroPage)?;
    w(mem, ACPI, &linux::acpi_tables(ACPI))?;
    w(mem, ZERO_PAGE, &zp)?;
    // GDT + TSS.
    page.fill(0);
    let [tss_lo, tss_hi] = crate::l2::tss_descriptor(TSS);
    for (i, d) in [
        0,
        0,
        crate::l2::GDT_CODE64,
        crate::l2::GDT_DATA,
        tss_lo,
        tss_hi,
    ]
    .into_iter()
    .enumerate()
    {
        put(&mut page, i, d);
    }
    let tss_off = (TSS - GDT) as usize;
    page[tss_off + 0x66..tss_off + 0x68].copy_from_slice(&0x68u16.to_le_bytes());
    w(mem, GDT, &page)?;
    // Identity map of the first 1 GiB: PML4 → PDPT → PD of 2 MiB pages.
    page.fill(0);
    put(&mut page, 0, PDPT | 0x3);
    w(mem, PML4, &page)?;
    page.fill(0);
    put(&mut page, 0, PD | 0x3);
    w(mem, PDPT, &page)?;
    for i in 0..512 {
        put(&mut page, i, ((i as u64) << 21) | 0x83);
    }
    w(mem, PD, &page)
}

/// The ranges L2 gets, as `(start, end)`: low RAM and the boot area below
/// 1 MiB (without page 0x1000, BootInfo, which stays L1's), and the region.
pub fn l2_ranges(l: &LinuxLayout) -> [(u64, u64); 3] {
    [
        (0, BOOT_INFO_GPA),
        (BOOT_INFO_GPA + PAGE_SIZE, 0x10_0000),
        (l.l2_base, l.l1_heap.0),
    ]
}

/// Accepts and aliases L2's memory to `vm` (R|W|Xs|Xu).
pub fn map_l2<P: Platform>(p: &mut P, vm: L2Vm, l: &LinuxLayout) -> Result<(u64, u64), MemError> {
    let (mut n2m, mut n4k) = (0, 0);
    for (start, end) in l2_ranges(l) {
        memory::accept_range(p, start, end)?;
        let mut gpa = start;
        while gpa < end {
            if gpa.is_multiple_of(LARGE_PAGE_SIZE)
                && end - gpa >= LARGE_PAGE_SIZE
                && memory::attr_write(p, vm, gpa, PageLevel::Size2M, L2_FULL, false).is_ok()
            {
                n2m += 1;
                gpa += LARGE_PAGE_SIZE;
                continue;
            }
            memory::attr_write(p, vm, gpa, PageLevel::Size4K, L2_FULL, false)?;
            n4k += 1;
            gpa += PAGE_SIZE;
        }
    }
    Ok((n2m, n4k))
}

/// MSRs Linux reads and writes without an exit: the syscall/sysenter MSRs,
/// EFER, FS/GS base, KERNEL_GS_BASE, TSC_AUX and PAT (all held per VM or per
/// vCPU by the module, §2.10; their writes are not pinned until HEKI's
/// LOCK_REGS).
pub const PASSTHROUGH_MSRS: [u32; 13] = [
    MSR_EFER,
    MSR_STAR,
    MSR_LSTAR,
    MSR_CSTAR,
    MSR_SFMASK,
    MSR_SYSENTER_CS,
    MSR_SYSENTER_ESP,
    MSR_SYSENTER_EIP,
    0xC000_0100, // FS_BASE
    0xC000_0101, // GS_BASE
    0xC000_0102, // KERNEL_GS_BASE
    0xC000_0103, // TSC_AUX
    0x277,       // PAT
];

/// The VM configuration: 64-bit boot-protocol state at `startup_64`.
pub fn l2_config(l: &LinuxLayout, pages: L1Pages) -> L2VmConfig {
    let mut init = InitialState::long_mode(
        PML4,
        DescriptorTable {
            base: GDT,
            limit: 6 * 8 - 1,
        },
        DescriptorTable { base: 0, limit: 0 },
        l.entry,
        ZERO_PAGE,
    );
    init.cs = Segment::code64(BOOT_CS);
    for s in [
        &mut init.ss,
        &mut init.ds,
        &mut init.es,
        &mut init.fs,
        &mut init.gs,
    ] {
        *s = Segment::data(BOOT_DS);
    }
    init.tr = Segment {
        selector: BOOT_TSS,
        base: TSS,
        limit: 0x67,
        access_rights: AR_TSS_BUSY,
    };
    let mut config = L2VmConfig::new(L2Vm::Vm1, pages.vapic_gpa, pages.guest_state_gpa);
    config.mbec = true;
    config.initial = Some(init);
    config.msr_passthrough = PASSTHROUGH_MSRS
        .iter()
        .map(|&msr| MsrPassthrough {
            msr,
            read: true,
            write: true,
        })
        .collect();
    config
}

/// A Linux L2 ready to run.
pub struct LinuxBooted {
    /// TDG.VP.INFO.
    pub info: TdInfo,
    /// The layout.
    pub layout: LinuxLayout,
    /// The vCPU (RIP = `startup_64`, RSI = `boot_params`).
    pub vcpu: Vcpu,
    /// The virtual x2APIC and the interrupt state.
    pub irq: Interrupts,
    /// The exit handlers: Linux's port and XSETBV handling around the HEKI
    /// service.
    pub handlers: LinuxHandlers<LinuxService>,
    /// The RTMR event log (boot events, then admitted modules and patches).
    pub measurements: SharedMeasurements,
}

/// The services a Linux L2 reaches with VMCALL, in order: HEKI (0x1FFE0..,
/// with the Linux MSR table and CPUID policy as its base policies), the TEE
/// (0x1FFF0), the attestation calls (0x5444_0001/2), then `-ENOSYS`.
pub type LinuxService = HekiService<
    TeeService<TeeRng, AttestHypercalls<EnosysHypercalls>>,
    AllowCrWrites,
    MsrTable,
    LinuxCpuid,
>;

pub use paravisor::heki::LINUX_MAX_MODULE_BYTES;

/// The paravisor's ranges inside the Linux TD's GPA space: the BootInfo page,
/// everything between 1 MiB and the L2 region (L1's image, heap, stacks,
/// vAPIC page and ENTER buffer live there; none of it is L2's), and L1's
/// heap extension at the top.
pub fn private_ranges(l: &LinuxLayout) -> Vec<(u64, u64)> {
    alloc::vec![
        (BOOT_INFO_GPA, BOOT_INFO_GPA + PAGE_SIZE),
        (0x10_0000, l.l2_base),
        l.l1_heap,
    ]
}

/// The HEKI configuration of a Linux L2: every GPA below L1's heap extension
/// is L2's except [`private_ranges`]; modules up to
/// [`LINUX_MAX_MODULE_BYTES`]; the rest as [`HekiConfig::new`] (unprotected
/// memory loses supervisor execute at the end of boot).
pub fn heki_config(l: &LinuxLayout) -> HekiConfig {
    HekiConfig::linux(L2Vm::Vm1, (0, l.l1_heap.0), private_ranges(l))
}

/// The HEKI service of a Linux L2 with the TEE and the attestation calls
/// behind it.
pub fn linux_service<P: Platform>(
    p: &mut P,
    l: &LinuxLayout,
    cpuid: LinuxCpuid,
    measurements: &SharedMeasurements,
) -> Result<LinuxService, ept::EptError> {
    let config = heki_config(l);
    let ept = crate::boot::private_ept(p, L2Vm::Vm1, &config.private)?;
    let attest = AttestHypercalls::new(
        measurements.clone(),
        config.guest_memory,
        config.private.clone(),
        EnosysHypercalls,
    );
    let tee = TeeService::new(TeeConfig::from_heki(&config), attest);
    let mut heki = HekiService::new(config, ept)
        .with_msr_policy(linux::msr_table())
        .with_cpuid_policy(cpuid)
        .with_next(tee);
    heki.measurements = Some(measurements.clone());
    Ok(heki)
}

/// Steps 2–5 of the module docs.
pub fn prepare<P: Platform>(
    p: &mut P,
    info: TdInfo,
    layout: LinuxLayout,
    pages: L1Pages,
) -> Result<LinuxBooted, LinuxBootError> {
    let vm = L2Vm::Vm1;
    let tsc_25mhz = tdcall::call(
        p,
        &VmRd {
            field: td::TSC_FREQUENCY,
            version: 0,
        },
    )
    .map_err(LinuxBootError::TscFrequency)?
    .value as u32;
    let xfam = tdcall::call(
        p,
        &VmRd {
            field: td::XFAM,
            version: 0,
        },
    )
    .map_err(LinuxBootError::TscFrequency)?
    .value;
    let (n2m, n4k) =
        map_l2(p, vm, &layout).map_err(|e| LinuxBootError::Boot(BootError::Alias(e)))?;
    write_boot_area(p, &layout)?;
    log::info!(
        "Linux boot: L2 memory aliased ({n2m} x 2M + {n4k} x 4K ATTR.WR), boot_params at {ZERO_PAGE:#x}, TSC {} MHz, XFAM {xfam:#x}",
        tsc_25mhz * 25
    );
    let config = l2_config(&layout, pages);
    let mut vcpu =
        setup_l2_vm(p, &config).map_err(|e| LinuxBootError::Boot(BootError::Setup(e)))?;
    vcpu.state.gprs[tdcall::enter::gpr::RSI] = ZERO_PAGE;
    let irq = Interrupts::new(VirtualApic::new(0, tsc_25mhz.max(1) as u64));
    let measurements = measured::measurements(pages.measure_gpa)
        .map_err(|e| LinuxBootError::Boot(BootError::Measure(e)))?;
    let cpuid = LinuxCpuid {
        tsc_frequency_25mhz: tsc_25mhz,
        xfam,
    };
    let heki = linux_service(p, &layout, cpuid, &measurements).map_err(|e| {
        log::error!("HEKI page states: {e:?}");
        LinuxBootError::Heki
    })?;
    let regions = BootRegions {
        kernel: (layout.l2_base, layout.image_end - layout.l2_base),
        initrd: layout.initrd,
        cmdline: layout.cmdline,
    };
    let n = measured::measure_regions(p, &regions, heki.config(), &measurements)
        .map_err(|e| LinuxBootError::Boot(BootError::Measure(e)))?;
    log::info!(
        "measured boot: {n} events in RTMR0/RTMR1; HEKI on VMCALL 0x1FFE0.., TEE 0x1FFF0, attestation 0x5444_0001"
    );
    Ok(LinuxBooted {
        info,
        layout,
        vcpu,
        irq,
        handlers: LinuxHandlers::with_inner(heki, xfam),
        measurements,
    })
}

/// Runs Linux until the loop stops, then logs what happened.
pub fn run<P: Platform + Clock>(p: &mut P, b: &mut LinuxBooted) -> StopReason {
    log::info!(
        "entering Linux at {:#x} (RSI {ZERO_PAGE:#x}, CR3 {PML4:#x})",
        b.layout.entry
    );
    let stop = b
        .vcpu
        .run_with_interrupts(p, &mut b.handlers, &mut b.irq, MAX_ENTRIES);
    log::info!("Linux L2 stopped: {stop}");
    crate::boot::log_stats(&b.vcpu);
    let i = &b.irq.stats;
    let a = &b.irq.apic.stats;
    log::info!(
        "interrupts: {} injected, {} window requests, {} TSC_DEADLINE writes, {} APIC MSR exits ({} refused), {} halts ({} M TSC ticks halted), timer fired {}, {} EOIs, {} self-IPIs",
        i.injected,
        i.window_requests,
        i.deadline_writes,
        i.apic_msr_exits,
        i.apic_faults,
        i.halts,
        i.halted_ticks / 1_000_000,
        a.timer_fired,
        a.eois,
        a.self_ipis
    );
    log::info!(
        "ports with no device: {} accesses, ports {:x?}",
        b.handlers.stats.absent_port_accesses,
        b.handlers.absent_ports
    );
    let heki = &b.handlers.inner;
    let h = &heki.stats;
    log::info!(
        "HEKI: {} call(s), {} refused, {} range(s) / {} page(s) protected, {} made non-executable, {} module(s) validated, {} ATTR.WR, registers {}locked, boot {}",
        h.calls,
        h.refused,
        h.ranges_protected,
        h.pages_protected,
        h.pages_made_nx,
        h.modules_validated,
        h.attr_writes,
        if heki.pins().is_some() { "" } else { "not " },
        if heki.boot_ended() { "ended" } else { "not ended" }
    );
    let t = &heki.next.stats;
    log::info!(
        "TEE: {} call(s), {} with an error status",
        t.calls,
        t.errors
    );
    stop
}

#[cfg(test)]
mod tests {
    use super::*;
    use tdcall::{L2Attr, Registers, Tdcall};
    use tdx_model::engine::{L2Action, ScriptedEngine};
    use tdx_model::host::ScriptedHost;
    use tdx_model::{TdConfig, TdxModel};

    struct Td(TdxModel<ScriptedHost, ScriptedEngine>);

    impl Tdcall for Td {
        fn tdcall(&mut self, regs: &mut Registers) {
            self.0.tdcall(regs)
        }
    }

    impl L1Memory for Td {
        fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
            let len = buf.len();
            self.0
                .read_memory(gpa, buf)
                .map_err(|_| MemoryError::Inaccessible { gpa, len })
        }
        fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
            let len = data.len();
            self.0
                .write_memory(gpa, data)
                .map_err(|_| MemoryError::Inaccessible { gpa, len })
        }
    }

    impl paravisor::pinning::SharedMsrs for Td {
        fn read_shared_msr(&mut self, msr: u32) -> Option<u64> {
            self.0.shared_msr(0, msr)
        }
    }

    impl Clock for Td {
        fn tsc(&mut self) -> u64 {
            self.0.tsc()
        }
        fn wait_until(&mut self, deadline: u64) {
            let now = self.0.engine.peek_tsc();
            self.0.engine.advance_tsc(deadline.saturating_sub(now));
        }
    }

    const MIB: u64 = 1 << 20;
    const L1: L1Image = L1Image {
        start: 0x20_0000,
        end: 0x50_0000,
    };
    const PAGES: L1Pages = L1Pages {
        vapic_gpa: 0x40_0000,
        guest_state_gpa: 0x40_1000,
        measure_gpa: 0x40_2000,
    };
    const BASE: u64 = 0x100_0000;
    const CMDLINE_AT: u64 = 0x100_2000;
    const INITRD_AT: u64 = 0x120_0000;
    const CMDLINE_TEXT: &[u8] = b"console=ttyS0";

    fn bootinfo() -> BootInfo {
        BootInfo {
            td_memory_bytes: 64 * MIB,
            l2_base: BASE,
            l2_size: 48 * MIB,
            flags: BootInfo::FLAG_LINUX,
            cmdline_gpa: CMDLINE_AT,
            cmdline_size: CMDLINE_TEXT.len() as u64,
            initrd_gpa: INITRD_AT,
            initrd_size: 0x3000,
            ..BootInfo::for_l2_image(BASE, BASE + 0x2000)
        }
    }

    fn td(script: &[L2Action]) -> Td {
        let mut c = TdConfig::new(64 * MIB);
        c.accepted_bytes = INITRD_AT + 0x3000;
        c.tsc_frequency = 100;
        let mut e = ScriptedEngine::new(BASE);
        e.extend(script.iter().copied());
        let mut t = Td(TdxModel::new(c, ScriptedHost::default(), e));
        let mut page = [0u8; 4096];
        page[..BootInfo::SIZE].copy_from_slice(&bootinfo().to_bytes());
        t.0.write_memory(BOOT_INFO_GPA, &page).unwrap();
        t.0.write_memory(CMDLINE_AT, CMDLINE_TEXT).unwrap();
        t
    }

    fn wrmsr(msr: u32, value: u64) -> [L2Action; 4] {
        [
            L2Action::SetGpr {
                gpr: 1,
                value: msr as u64,
            },
            L2Action::SetGpr {
                gpr: 0,
                value: value & 0xFFFF_FFFF,
            },
            L2Action::SetGpr {
                gpr: 2,
                value: value >> 32,
            },
            L2Action::Wrmsr,
        ]
    }

    #[test]
    fn validates_the_linux_bootinfo() {
        let l = validate(&bootinfo(), &L1).unwrap();
        assert_eq!(l.td_memory, 64 * MIB);
        assert_eq!(l.cmdline, Some((CMDLINE_AT, 13)));
        assert_eq!(l.initrd, Some((INITRD_AT, 0x3000)));
        type Mutation = fn(&mut BootInfo);
        let bad: [(&str, Mutation); 7] = [
            ("no flag", |b| b.flags = 0),
            ("region short", |b| b.l2_size -= 2 * MIB),
            ("base below L1 end", |b| b.l2_base = 0x40_0000),
            ("entry outside", |b| b.l2_entry = b.l2_image_end),
            ("initrd in the kernel", |b| b.initrd_gpa = BASE),
            ("initrd past memory", |b| b.initrd_size = 64 * MIB),
            ("cmdline overlaps initrd", |b| {
                b.cmdline_gpa = INITRD_AT + 0x1000
            }),
        ];
        for (what, m) in bad {
            let mut b = bootinfo();
            m(&mut b);
            assert!(validate(&b, &L1).is_err(), "{what} accepted");
        }
    }

    #[test]
    fn boots_linux_state_and_serves_cpuid_apic_and_halt() {
        // The "kernel": CPUID leaf 0, the x2APIC timer armed 50 000 ticks
        // ahead, STI, HLT (waits for the timer, which is injected), EOI,
        // CLI; HLT (powered off).
        let mut script = vec![L2Action::SetGpr { gpr: 0, value: 0 }, L2Action::Cpuid];
        script.extend(wrmsr(0x80F, 0x1FF));
        script.extend(wrmsr(0x832, (2 << 17) | 0xEC));
        script.extend(wrmsr(0x6E0, 50_000));
        script.extend([L2Action::Sti, L2Action::Hlt]);
        script.extend(wrmsr(0x80B, 0));
        script.extend([L2Action::Cli, L2Action::Hlt]);
        let mut t = td(&script);
        assert!(requested(&mut t));
        let (info, layout) = identify(&mut t, &L1).unwrap();
        let mut b = prepare(&mut t, info, layout, PAGES).unwrap();
        // Registers of the 64-bit boot protocol.
        assert_eq!(b.vcpu.state.rip, BASE);
        assert_eq!(b.vcpu.state.gprs[tdcall::enter::gpr::RSI], ZERO_PAGE);
        // The zero page: command line copy, initrd, e820, RSDP.
        let mut zp = [0u8; 4096];
        t.read(ZERO_PAGE, &mut zp).unwrap();
        assert_eq!(&zp[0x202..0x206], b"HdrS");
        assert_eq!(
            u32::from_le_bytes(zp[0x228..0x22C].try_into().unwrap()),
            CMDLINE as u32
        );
        assert_eq!(
            u32::from_le_bytes(zp[0x218..0x21C].try_into().unwrap()),
            INITRD_AT as u32
        );
        assert_eq!(
            zp[0x1E8], 5,
            "e820 entries (the last one reserves L1's heap extension)"
        );
        assert_eq!(u64::from_le_bytes(zp[0x70..0x78].try_into().unwrap()), ACPI);
        let mut cl = [0u8; 16];
        t.read(CMDLINE, &mut cl).unwrap();
        assert_eq!(&cl[..13], CMDLINE_TEXT);
        assert_eq!(cl[13], 0, "NUL-terminated");
        // L2's memory is aliased; BootInfo and the paravisor are not.
        let full = L2Attr::VALID | L2Attr::R | L2Attr::W | L2Attr::XS | L2Attr::XU;
        let heap = 64 * MIB - L1_HEAP_EXTENSION;
        for gpa in [0, 0x2000, ZERO_PAGE, BASE, INITRD_AT, heap - 0x1000] {
            assert_eq!(t.0.page_attr(gpa, L2Vm::Vm1), full, "{gpa:#x}");
        }
        assert!(
            !t.0.page_attr(heap, L2Vm::Vm1).contains(L2Attr::VALID),
            "L1's heap extension has no L2 alias"
        );
        for gpa in [BOOT_INFO_GPA, L1.start, PAGES.vapic_gpa] {
            assert!(
                !t.0.page_attr(gpa, L2Vm::Vm1).contains(L2Attr::VALID),
                "{gpa:#x}"
            );
        }
        // Run it.
        assert_eq!(run(&mut t, &mut b), StopReason::Halted);
        // CPUID leaf 0 said GenuineIntel (RBX = "Genu"; RCX/RDX were reused).
        let rbx = b.vcpu.state.gprs[tdcall::enter::gpr::RBX] as u32;
        assert_eq!(&rbx.to_le_bytes(), b"Genu");
        assert_eq!(b.irq.stats.injected, 1);
        assert_eq!(b.irq.stats.halts, 1);
        assert_eq!(b.irq.apic.stats.eois, 1);
        let ev = t.0.engine.events();
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].vector, 0xEC);
        assert!(t.0.engine.peek_tsc() >= 50_000);
    }
}
