//! The boot sequence after long mode, generic over the platform so it runs
//! against the TDX-module model in `cargo test` exactly as on bare metal
//! (tdx-abi.md §5.8).

use core::fmt;

use alloc::boxed::Box;
use alloc::vec;

use ept::{Authority, Ept, GpaRange, PageState, Policy, SealedKind};
use paravisor::heki::{HekiConfig, HekiService};
use paravisor::measure::{AttestHypercalls, MeasureError, SharedMeasurements};
use paravisor::tee::{Entropy, EntropyError, HwRng, MakeApps, TeeConfig, TeeService};
use paravisor::{setup_l2_vm, MemoryError, Platform, SetupError, StopReason, Vcpu};
use tdcall::field::td;
use tdcall::leaves::{TdInfo, VmRd, VpInfo, VpVmcall};
use tdcall::vmcall::{AccessSize, TdVmcall};
use tdcall::{L2Vm, Tdcall, TdxError};

use crate::bootinfo::{self, BootInfoError, L1Image, L2Layout, BOOT_INFO_GPA, BOOT_INFO_SIZE};
use crate::checks::{self, Tally};
use crate::l2::{self, ProbeHypercalls};
use crate::measured;
use crate::memory::{self, MemError};

/// QEMU `isa-debug-exit`: a write of `v` ends the run with status `(v << 1) | 1`.
pub const DEBUG_EXIT_PORT: u16 = 0xF4;
/// The value L1 writes when the L2 loop stopped without L2 ending the run
/// (0x7D is the emulator's own internal-error code, docs/emulator.md).
pub const EXIT_LOOP_STOPPED: u8 = 0x7C;
/// Cap on TDG.VP.ENTER calls of one run.
pub const MAX_ENTRIES: u64 = 10_000_000;

/// L1 pages the L2 VM needs, inside L1's image and never aliased to L2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L1Pages {
    /// 4 KiB aligned virtual-APIC page of L2 VM #1 on this vCPU (§2.2).
    pub vapic_gpa: u64,
    /// 256-byte aligned TDG.VP.ENTER guest-state buffer (§2.2).
    pub guest_state_gpa: u64,
    /// 4 KiB aligned page for the TDG.MR.RTMR.EXTEND and TDG.MR.REPORT
    /// buffers (`paravisor::measure::MeasureBuffers::in_page`).
    pub measure_gpa: u64,
}

/// Why boot stopped before L2 ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootError {
    /// TDG.VP.INFO failed.
    VpInfo(TdxError),
    /// This is not vCPU 0.
    NotBsp(u32),
    /// TDG.VM.RD NUM_L2_VMS failed.
    VmRd(TdxError),
    /// The TD has no L2 VM.
    NoL2Vm,
    /// The vAPIC page or guest-state buffer is outside L1's image or misaligned.
    L1Pages(u64),
    /// The BootInfo page could not be read.
    ReadBootInfo(MemoryError),
    /// The BootInfo page is invalid.
    BootInfo(BootInfoError),
    /// Accepting the L2 region failed.
    Accept(MemError),
    /// Writing L2's page tables failed.
    Tables(MemoryError),
    /// Aliasing the L2 region failed.
    Alias(MemError),
    /// `setup_l2_vm` failed.
    Setup(SetupError),
    /// Recording the paravisor's pages in the HEKI page states was refused.
    HekiPolicy(ept::PolicyError),
    /// Sealing the RO test page for the HEKI service failed (TDG.MEM.PAGE.ATTR.WR).
    HekiApply(TdxError),
    /// Measuring the boot payload into the RTMRs failed.
    Measure(MeasureError),
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::VpInfo(e) => write!(f, "TDG.VP.INFO: {e}"),
            BootError::NotBsp(i) => write!(f, "vCPU {i} is not the BSP"),
            BootError::VmRd(e) => write!(f, "TDG.VM.RD NUM_L2_VMS: {e}"),
            BootError::NoL2Vm => f.write_str("the TD has no L2 VM (NUM_L2_VMS = 0)"),
            BootError::L1Pages(gpa) => write!(f, "L1 page {gpa:#x} misplaced"),
            BootError::ReadBootInfo(e) => write!(f, "reading BootInfo: {e}"),
            BootError::BootInfo(e) => write!(f, "{e}"),
            BootError::Accept(e) => write!(f, "accepting L2: {e}"),
            BootError::Tables(e) => write!(f, "L2 page tables: {e}"),
            BootError::Alias(e) => write!(f, "aliasing L2: {e}"),
            BootError::Setup(e) => write!(f, "{e}"),
            BootError::HekiPolicy(e) => write!(f, "HEKI page states: {e:?}"),
            BootError::HekiApply(e) => write!(f, "HEKI page states: ATTR.WR: {e}"),
            BootError::Measure(e) => write!(f, "measured boot: {e}"),
        }
    }
}

/// A booted L2 VM, ready to run.
#[derive(Debug)]
pub struct Booted {
    /// TDG.VP.INFO.
    pub info: TdInfo,
    /// The L2 region.
    pub layout: L2Layout,
    /// The L2 vCPU with its initial registers.
    pub vcpu: Vcpu,
    /// Self-check counts.
    pub tally: Tally,
    /// The HEKI service and the exit policies it owns.
    pub heki: Service,
    /// The RTMR event log (shared with the attestation calls; the HEKI
    /// service records code admissions in it).
    pub measurements: SharedMeasurements,
}

fn inside(l1: &L1Image, gpa: u64, len: u64, align: u64) -> bool {
    gpa.is_multiple_of(align) && gpa >= l1.start && gpa.saturating_add(len) <= l1.end
}

/// Everything between long mode and the first TDG.VP.ENTER: [`identify`] then
/// [`prepare_l2`]. (The bare-metal binary calls the two itself, to widen its
/// memory window to the L2 region in between.)
pub fn boot<P: Platform>(p: &mut P, l1: &L1Image, pages: L1Pages) -> Result<Booted, BootError> {
    let (info, layout) = identify(p, l1, pages)?;
    prepare_l2(p, info, layout, l1, pages)
}

/// TDG.VP.INFO (BSP only), TDG.VM.RD NUM_L2_VMS, and the validated BootInfo page.
pub fn identify<P: Platform>(
    p: &mut P,
    l1: &L1Image,
    pages: L1Pages,
) -> Result<(TdInfo, L2Layout), BootError> {
    let info = tdcall::call(p, &VpInfo).map_err(BootError::VpInfo)?;
    log::info!(
        "TD: GPAW {}, shared bit {:#x}, vCPUs {} (max {}), this vCPU {}, attributes {:#x}",
        info.gpaw,
        info.shared_bit(),
        info.num_vcpus,
        info.max_vcpus,
        info.vcpu_index,
        info.attributes
    );
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
    log::info!("TD: {num_l2} L2 VM(s)");
    if num_l2 == 0 {
        return Err(BootError::NoL2Vm);
    }
    if !inside(l1, pages.vapic_gpa, 0x1000, 0x1000) {
        return Err(BootError::L1Pages(pages.vapic_gpa));
    }
    if !inside(l1, pages.guest_state_gpa, 256, 256) {
        return Err(BootError::L1Pages(pages.guest_state_gpa));
    }
    if !inside(l1, pages.measure_gpa, 0x1000, 0x1000) {
        return Err(BootError::L1Pages(pages.measure_gpa));
    }

    let mut raw = [0u8; BOOT_INFO_SIZE];
    p.read(BOOT_INFO_GPA, &mut raw)
        .map_err(BootError::ReadBootInfo)?;
    let bi = bootinfo::decode(&raw).map_err(BootError::BootInfo)?;
    log::info!(
        "BootInfo: {} vCPU(s), {} MiB, L2 {:#x}+{:#x} entry {:#x} image end {:#x}",
        bi.num_vcpus,
        bi.td_memory_bytes >> 20,
        bi.l2_base,
        bi.l2_size,
        bi.l2_entry,
        bi.l2_image_end
    );
    let layout = bootinfo::validate(&bi, l1).map_err(BootError::BootInfo)?;
    Ok((info, layout))
}

/// Accepts the L2 region, writes L2's tables, aliases the region to VM #1,
/// runs the self-checks, sets the VM up and creates its HEKI service.
pub fn prepare_l2<P: Platform>(
    p: &mut P,
    info: TdInfo,
    layout: L2Layout,
    l1: &L1Image,
    pages: L1Pages,
) -> Result<Booted, BootError> {
    let vm = L2Vm::Vm1;
    let acc = memory::accept_range(p, layout.base, layout.end()).map_err(BootError::Accept)?;
    log::info!(
        "accepted L2 region {:#x}..{:#x}: {} x 2M, {} x 4K new, {} x 4K already accepted ({} 2M fallbacks)",
        layout.base,
        layout.end(),
        acc.accepted_2m,
        acc.accepted_4k,
        acc.already_4k,
        acc.fallbacks
    );
    l2::write_l2_tables(p, &layout).map_err(BootError::Tables)?;
    let alias = memory::alias_l2_region(p, vm, &layout).map_err(BootError::Alias)?;
    log::info!(
        "aliased L2 region to VM {}: {} x 2M + {} x 4K ATTR.WR, RO test page {:#x} R|Xu",
        vm.index(),
        alias.writes_2m,
        alias.writes_4k,
        layout.ro_page
    );

    let mut tally = Tally::default();
    checks::before_setup(
        p,
        vm,
        pages.guest_state_gpa,
        info.shared_bit(),
        layout.ro_page,
        &mut tally,
    );
    checks::after_alias(p, vm, &layout, pages.vapic_gpa, &mut tally);
    log::info!(
        "self-checks: {} passed, {} failed",
        tally.passed,
        tally.failed
    );

    let config = l2::l2_config(&layout, pages.vapic_gpa, pages.guest_state_gpa);
    let mut vcpu = setup_l2_vm(p, &config).map_err(BootError::Setup)?;
    for (reg, value) in l2::initial_gprs(&layout) {
        vcpu.state.gprs[reg] = value;
    }
    let measurements = measured::measurements(pages.measure_gpa).map_err(BootError::Measure)?;
    let mut heki = heki_service(p, &layout, l1, pages, &measurements).map_err(|e| match e {
        ept::EptError::Policy(e) => BootError::HekiPolicy(e),
        ept::EptError::Apply(e) => BootError::HekiApply(e.error),
    })?;
    let n = measured::measure_boot(p, &layout, heki.config(), &measurements)
        .map_err(BootError::Measure)?;
    // Validated modules and accepted text patches go to RTMR2.
    heki.measurements = Some(measurements.clone());
    log::info!("measured boot: {n} events in RTMR0/RTMR1, attestation on VMCALL 0x5444_0001");
    Ok(Booted {
        info,
        layout,
        vcpu,
        tally,
        heki,
        measurements,
    })
}

/// The HEKI service of the probe build (`paravisor::heki`), serving the boot
/// calls, then the TEE (`paravisor::tee`, call 0x1FFF0), then the attestation
/// calls (`paravisor::measure`), then the probe echo.
pub type Service = HekiService<TeeService<TeeRng, AttestHypercalls<ProbeHypercalls>>>;

/// The TEE's RNG: RDRAND/RDSEED through the [`Entropy`] the binary supplies.
pub type TeeRng = HwRng<Box<dyn Entropy>>;

/// Why the TEE did not start (0x1FFF0 then answers `-EOPNOTSUPP`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TeeStartError {
    /// The entropy source failed its start-up check.
    Entropy(EntropyError),
    /// TDG.MR.REPORT failed.
    Report(MeasureError),
}

impl fmt::Display for TeeStartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TeeStartError::Entropy(e) => write!(f, "{e}"),
            TeeStartError::Report(e) => write!(f, "TDG.MR.REPORT: {e}"),
        }
    }
}

/// REPORTDATA of the TDREPORT the TEE takes its measurement from.
pub const TEE_REPORTDATA: [u8; 64] =
    *b"lvbs-tee: sealing measurement (MRTD, RTMR0, RTMR1) at TEE start.";

/// Starts the TEE behind the HEKI service with the in-process built-in TAs
/// (model tests; the bare-metal binary uses [`start_tee_isolated`]), after
/// the measured boot and before L2 runs: RNG from `entropy`, measurement
/// from a TDREPORT (`paravisor::tee::measurement`: MRTD, RTMR0, RTMR1),
/// sealing root derived from it and the deployer `secret` (empty: none).
/// Returns the measurement.
pub fn start_tee<P: Platform>(
    p: &mut P,
    booted: &mut Booted,
    entropy: Box<dyn Entropy>,
    secret: &[u8],
) -> Result<[u8; 48], TeeStartError> {
    start_tee_service(
        p,
        &booted.measurements,
        &mut booted.heki.next,
        entropy,
        secret,
        "in-process",
        |tee, report, rng| tee.start(report, rng, secret),
    )
}

/// [`start_tee`] with the TAs `apps` makes (the bare-metal binary: one
/// isolated ring-3 instance per TA). The in-process TAs are not referenced,
/// so they are not linked into a binary that only calls this.
pub fn start_tee_isolated<P: Platform>(
    p: &mut P,
    booted: &mut Booted,
    entropy: Box<dyn Entropy>,
    secret: &[u8],
    apps: MakeApps<'_>,
) -> Result<[u8; 48], TeeStartError> {
    start_tee_service(
        p,
        &booted.measurements,
        &mut booted.heki.next,
        entropy,
        secret,
        "isolated, ring 3",
        |tee, report, rng| tee.start_with_apps(report, rng, secret, apps),
    )
}

/// Starts `tee` with `start` (in-process or isolated TAs) and a TDREPORT
/// taken through `measurements`; the probe and the Linux boot share it.
/// `how` names the TA model in the log.
pub fn start_tee_service<P: Platform, N>(
    p: &mut P,
    measurements: &SharedMeasurements,
    tee: &mut TeeService<TeeRng, N>,
    entropy: Box<dyn Entropy>,
    secret: &[u8],
    how: &str,
    start: impl FnOnce(&mut TeeService<TeeRng, N>, &[u8; 1024], TeeRng) -> [u8; 48],
) -> Result<[u8; 48], TeeStartError> {
    let rng = HwRng::new(entropy).map_err(TeeStartError::Entropy)?;
    let report = measurements
        .borrow_mut()
        .report(p, &TEE_REPORTDATA)
        .map_err(TeeStartError::Report)?;
    let m = start(tee, &report, rng);
    let hex = |b: &[u8]| {
        b.iter().fold(alloc::string::String::new(), |s, x| {
            s + &alloc::format!("{x:02x}")
        })
    };
    let [mrtd, rtmr0, rtmr1] = paravisor::tee::report_fields(&report);
    let tas = tee.tee().map_or(0, |t| t.app_count());
    log::info!(
        "TEE: {tas} trusted applications ({}) on call 0x1FFF0; sealing measurement {} = SHA-384(MRTD {}…, RTMR0 {}…, RTMR1 {}…), {}",
        how,
        hex(&m),
        hex(&mrtd[..8]),
        hex(&rtmr0[..8]),
        hex(&rtmr1[..8]),
        if secret.is_empty() {
            "no deployer secret (sealing keys are computable from public data)"
        } else {
            "with the deployer secret"
        }
    );
    Ok(m)
}

/// The page states of `vm` with the paravisor's `private` ranges recorded as
/// [`PageState::ParavisorPrivate`] (the probe and the Linux boot). The ranges
/// have no L2 alias, so recording them costs no TDCALL.
pub fn private_ept<P: Platform>(
    p: &mut P,
    vm: L2Vm,
    private: &[(u64, u64)],
) -> Result<Ept, ept::EptError> {
    let mut ept = Ept::new(vm, Policy::LVBS);
    for &(start, end) in private {
        if let Some(range) = GpaRange::new(start, end) {
            ept.transition(p, range, PageState::ParavisorPrivate, Authority::Paravisor)?;
        }
    }
    Ok(ept)
}

/// The HEKI service for L2 VM #1: guest memory is the L2 region; the
/// paravisor's image (text, data, stack, heap, vAPIC page, ENTER buffer) and
/// the BootInfo page are [`PageState::ParavisorPrivate`] in its [`Ept`] and
/// refused to every call; the RO test page is sealed read-only (R|Xu, as the
/// contract aliases it). The private pages have no alias, so recording them
/// costs no TDCALL; sealing the RO test page rewrites its attribute once.
pub fn heki_service<P: Platform>(
    p: &mut P,
    layout: &L2Layout,
    l1: &L1Image,
    pages: L1Pages,
    measurements: &SharedMeasurements,
) -> Result<Service, ept::EptError> {
    let vm = L2Vm::Vm1;
    let private = vec![
        (l1.start, l1.end),
        (BOOT_INFO_GPA, BOOT_INFO_GPA + bootinfo::PAGE_SIZE),
    ];
    let mut ept = private_ept(p, vm, &private)?;
    if let Some(ro) = GpaRange::new(layout.ro_page, layout.ro_page + bootinfo::PAGE_SIZE) {
        ept.transition(
            p,
            ro,
            PageState::Sealed(SealedKind::ReadOnly),
            Authority::Paravisor,
        )?;
    }
    let attest_private = private.clone();
    let config = HekiConfig::new(vm, (layout.base, layout.end()), private);
    let probe = ProbeHypercalls::new([pages.vapic_gpa, pages.guest_state_gpa, l1.start]);
    let probe = measured::attest_service(measurements, layout, attest_private, probe);
    let tee = TeeService::new(TeeConfig::from_heki(&config), probe);
    Ok(HekiService::new(config, ept).with_next(tee))
}

/// Runs L2 with the HEKI service (register pins, page states, boot calls) and
/// the probe echo until the loop stops.
pub fn run<P: Platform>(p: &mut P, booted: &mut Booted) -> (StopReason, ProbeHypercalls) {
    let l = &booted.layout;
    log::info!(
        "entering L2 at {:#x} (RSP {:#x}, RDI {:#x}, RSI {:#x}, CR3 {:#x})",
        l.entry,
        l.stack_top,
        l.base,
        l.size,
        l.pml4
    );
    let handlers = &mut booted.heki;
    let stop = booted.vcpu.run(p, handlers, MAX_ENTRIES);
    log::info!("L2 loop stopped: {stop}");
    log_stats(&booted.vcpu);
    let h = &handlers.stats;
    log::info!(
        "HEKI: {} call(s), {} refused, {} range(s) / {} page(s) protected, {} made non-executable, {} ATTR.WR, registers {}locked, boot {}",
        h.calls,
        h.refused,
        h.ranges_protected,
        h.pages_protected,
        h.pages_made_nx,
        h.attr_writes,
        if handlers.pins().is_some() { "" } else { "not " },
        if handlers.boot_ended() { "ended" } else { "not ended" }
    );
    let t = &handlers.next.stats;
    log::info!(
        "TEE: {} call(s), {} with an error status, {} ATTR.RD buffer checks",
        t.calls,
        t.errors,
        t.attr_reads
    );
    let a = &handlers.next.next;
    log::info!(
        "attestation: {} report(s), {} refused call(s), {} RTMR extend(s)",
        a.reports,
        a.refused,
        a.measurements.borrow().extends
    );
    (stop, handlers.next.next.next)
}

/// Logs the exit counters of `vcpu`.
pub fn log_stats(vcpu: &Vcpu) {
    let s = &vcpu.stats;
    log::info!(
        "L2 stats: {} entries, {} exits, {} injected, host-routed {}/{}, pending-interrupt {}",
        s.entries,
        s.total_exits(),
        s.injected,
        s.host_routed_async,
        s.host_routed_tdvmcall,
        s.pending_interrupt
    );
    let mut line = alloc::string::String::new();
    for (reason, n) in s.by_reason.iter().enumerate().filter(|(_, n)| **n != 0) {
        line += &alloc::format!(" {reason}:{n}");
    }
    log::info!("L2 exits by reason:{line}");
}

/// Writes `value` to the debug-exit port through TDG.VP.VMCALL Instruction.IO.
/// Under the emulator this ends the run; it returns only if the host ignores it.
pub fn debug_exit<T: Tdcall + ?Sized>(t: &mut T, value: u8) -> Result<(), TdxError> {
    tdcall::call(
        t,
        &VpVmcall(TdVmcall::IoWrite {
            size: AccessSize::B1,
            port: DEBUG_EXIT_PORT,
            value: value as u32,
        }),
    )
    .map(|_| ())
}
