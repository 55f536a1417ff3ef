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
    let regions = BootRegions {
        kernel: (layout.base, layout.image_end - layout.base),
        initrd: layout.initrd,
        cmdline: layout.cmdline,
    };
    measure_regions(p, &regions, config, m)
}

/// Extends the BootInfo page and `config`'s policy (RTMR0) and the L2
/// payload `regions` (RTMR1) into the RTMRs, logging every event; returns
/// how many events were logged. The probe and the Linux boot share it.
pub fn measure_regions<P: Platform>(
    p: &mut P,
    regions: &BootRegions,
    config: &HekiConfig,
    m: &SharedMeasurements,
) -> Result<usize, MeasureError> {
    let mut bootinfo = [0u8; BOOT_INFO_SIZE];
    p.read(BOOT_INFO_GPA, &mut bootinfo)
        .map_err(MeasureError::Memory)?;
    let policy = measure::policy_text(config);
    let events = measure::boot_events_in_memory(p, &bootinfo, &policy, regions)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootinfo::{validate, BootInfo, L1Image};
    use paravisor::measure::{boot_events, replay, BootPayload};
    use paravisor::{L1Memory, MemoryError};
    use tdcall::{L2Vm, Registers, Tdcall};
    use tdx_model::engine::ScriptedEngine;
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
        fn read_shared_msr(&mut self, _: u32) -> Option<u64> {
            None
        }
    }

    const L1: L1Image = L1Image {
        start: 0x20_0000,
        end: 0x50_0000,
    };
    const BASE: u64 = 0x100_0000;

    #[test]
    fn measures_what_the_loader_expects() {
        let mut c = TdConfig::new(64 << 20);
        c.accepted_bytes = 0x200_0000;
        let mut td = Td(TdxModel::new(
            c,
            ScriptedHost::default(),
            ScriptedEngine::new(BASE),
        ));
        let mut info = BootInfo::for_l2_image(BASE, BASE + 0x3000);
        info.cmdline_gpa = BASE + 0x20_0000;
        info.cmdline_size = 11;
        info.initrd_gpa = BASE + 0x80_0000;
        info.initrd_size = 0x1234;
        let kernel: Vec<u8> = (0..0x3000u32).map(|i| i as u8).collect();
        let initrd = vec![0x5A; 0x1234];
        td.0.write_memory(BOOT_INFO_GPA, &info.to_bytes()).unwrap();
        td.0.write_memory(BASE, &kernel).unwrap();
        td.0.write_memory(info.cmdline_gpa, b"console=hvc").unwrap();
        td.0.write_memory(info.initrd_gpa, &initrd).unwrap();
        let layout = validate(&info, &L1).unwrap();
        let config = HekiConfig::new(L2Vm::Vm1, (BASE, layout.end()), Vec::new());
        let m = measurements(0x40_2000).unwrap();
        assert_eq!(measure_boot(&mut td, &layout, &config, &m).unwrap(), 7);

        // The events are the ones a verifier computes from the image bytes.
        let policy = measure::policy_text(&config);
        let expected = boot_events(&BootPayload {
            bootinfo: &info.to_bytes(),
            policy: &policy,
            kernel_gpa: BASE,
            kernel: &kernel,
            initrd: Some((info.initrd_gpa, &initrd)),
            cmdline: Some(b"console=hvc"),
        });
        assert_eq!(m.borrow().log().events(), expected.as_slice());
        // And the model's RTMRs are their replay.
        let rtmr: [[u8; 48]; 4] = core::array::from_fn(|i| td.0.rtmr(i).unwrap());
        assert_eq!(rtmr, replay(&expected));
        // Misaligned buffers are refused.
        assert_eq!(
            measurements(0x40_2040).unwrap_err(),
            MeasureError::Misaligned
        );
    }
}
