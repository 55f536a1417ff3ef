//! Measured boot of L2 VM #1 (`paravisor::measure`, docs/attestation.md):
//! before L2 first runs, the paravisor extends RTMR0 with the BootInfo bytes
//! and its policy, RTMR1 with the L2 kernel image, the initrd and the command
//! line (each closed by a separator), and logs every extend. The attestation
//! calls (`0x5444_0001`, `0x5444_0002`) then hand L2 a TDREPORT and the log.

use alloc::vec::Vec;

use paravisor::heki::HekiConfig;
use paravisor::measure::{
    self, AttestHypercalls, BootRegions, MeasureBuffers, MeasureError, MeasuredBoot,
    SharedMeasurements,
};
use paravisor::Platform;

use crate::bootinfo::{L2Layout, BOOT_INFO_GPA, BOOT_INFO_SIZE};

/// An empty measurement log using the 4 KiB L1-private page at `page_gpa`
/// for the TDCALL buffers.
pub fn measurements(page_gpa: u64) -> Result<SharedMeasurements, MeasureError> {
    Ok(MeasuredBoot::new(MeasureBuffers::in_page(page_gpa))?.shared())
}

/// The attestation handler for L2 VM #1 in front of `next`: L2 may name GPAs
/// of its own region only, never the paravisor's `private` ranges.
pub fn attest_service<N>(
    m: &SharedMeasurements,
    layout: &L2Layout,
    private: Vec<(u64, u64)>,
    next: N,
) -> AttestHypercalls<N> {
    AttestHypercalls::new(m.clone(), (layout.base, layout.end()), private, next)
}

/// Extends the boot events of `layout` (kernel `[base, image_end)`, initrd,
/// command line) and of the BootInfo page and `config`'s policy into the
/// RTMRs; returns how many events were logged.
pub fn measure_boot<P: Platform>(
    p: &mut P,
    layout: &L2Layout,
    config: &HekiConfig,
    m: &SharedMeasurements,
) -> Result<usize, MeasureError> {
    let mut bootinfo = [0u8; BOOT_INFO_SIZE];
    p.read(BOOT_INFO_GPA, &mut bootinfo)
        .map_err(MeasureError::Memory)?;
    let regions = BootRegions {
        kernel: (layout.base, layout.image_end - layout.base),
        initrd: layout.initrd,
        cmdline: layout.cmdline,
    };
    let policy = measure::policy_text(config);
    let events = measure::boot_events_in_memory(p, &bootinfo, &policy, &regions)
        .map_err(MeasureError::Memory)?;
    let n = events.len();
    let mut m = m.borrow_mut();
    for e in events {
        log::info!(
            "measured RTMR{} {} {:02x}{:02x}{:02x}{:02x}…",
            e.rtmr,
            e.name(),
            e.digest[0],
            e.digest[1],
            e.digest[2],
            e.digest[3]
        );
        m.extend(p, e)?;
    }
    Ok(n)
}
