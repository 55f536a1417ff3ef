//! Measured boot against the model: RTMR extends (TDG.MR.RTMR.EXTEND), the
//! event log and its replay, code admissions into RTMR2, and the attestation
//! VMCALL that returns a TDREPORT (TDG.MR.REPORT) and the log through L2 memory.

use crate::harness::*;
use paravisor::measure::{
    self, boot_events, replay, report, AdmissionKind, AttestHypercalls, BootPayload, Event,
    EventLog, MeasureBuffers, MeasureError, MeasuredBoot, ATTEST_HEADER_BYTES, ATTEST_REPORT_ID,
    EINVAL, ENOSPC, EVENT_LOG_ID, RTMR_ADMISSIONS, TDREPORT_BYTES,
};
use paravisor::{EnosysHypercalls, Handlers, L1Memory, StopReason, ENOSYS};
use tdx_model::engine::L2Action;
use tdx_model::measure::verify_reportmac;

/// L1-private page for the TDCALL buffers.
const MEASURE_PAGE: u64 = 0x7_0000;
/// Where the scripted L2 keeps its nonce and output buffer.
const NONCE: u64 = DATA;
const OUT: u64 = DATA + 0x1000;
const OUT_LEN: u64 = 0x4000;

fn payload() -> BootPayload<'static> {
    BootPayload {
        bootinfo: b"LVBSTDX1 bootinfo",
        policy: b"lvbs-tdx policy v1\n",
        kernel_gpa: CODE,
        kernel: &[0xCC; 3000],
        initrd: Some((0x48_0000, b"initrd contents")),
        cmdline: Some(b"console=ttyS0 quiet"),
    }
}

fn measured(td: &mut Td) -> MeasuredBoot {
    let mut m = MeasuredBoot::new(MeasureBuffers::in_page(MEASURE_PAGE)).unwrap();
    m.extend_all(td, boot_events(&payload())).unwrap();
    m
}

fn model_rtmrs(td: &Td) -> [[u8; 48]; 4] {
    core::array::from_fn(|i| td.0.rtmr(i).unwrap())
}

#[test]
fn boot_events_extend_the_rtmrs_the_log_replays() {
    let (engine, _) = script(&[L2Action::Hlt]);
    let mut td = Td::new(engine);
    let m = measured(&mut td);
    assert_eq!(m.extends, 7);
    let rtmr = model_rtmrs(&td);
    assert_eq!(replay(m.log().events()), rtmr);
    assert_eq!(rtmr[2], [0; 48], "no admissions yet");
    assert_eq!(rtmr[3], [0; 48], "RTMR3 spare");
    // The encoded log parses back to the same events and replays the same way.
    let parsed = EventLog::parse(&m.log().encode()).unwrap();
    assert_eq!(parsed, *m.log());
    assert_eq!(replay(parsed.events()), rtmr);
    // RTMR1 = kernel, initrd, command line, separator, in that order.
    let names: Vec<_> = m
        .log()
        .events()
        .iter()
        .filter(|e| e.rtmr == 1)
        .map(|e| e.name().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "lvbs-tdx:kernel",
            "lvbs-tdx:initrd",
            "lvbs-tdx:cmdline",
            "separator"
        ]
    );
}

#[test]
fn events_from_memory_equal_events_from_bytes() {
    let (engine, _) = script(&[L2Action::Hlt]);
    let mut td = Td::new(engine);
    let p = payload();
    let (igpa, initrd) = p.initrd.unwrap();
    let cmd_gpa = 0x47_F000;
    td.0.write_memory(p.kernel_gpa, p.kernel).unwrap();
    td.0.write_memory(igpa, initrd).unwrap();
    td.0.write_memory(cmd_gpa, p.cmdline.unwrap()).unwrap();
    let regions = measure::BootRegions {
        kernel: (p.kernel_gpa, p.kernel.len() as u64),
        initrd: Some((igpa, initrd.len() as u64)),
        cmdline: Some((cmd_gpa, p.cmdline.unwrap().len() as u64)),
    };
    let from_memory =
        measure::boot_events_in_memory(&mut td, p.bootinfo, p.policy, &regions).unwrap();
    assert_eq!(from_memory, boot_events(&p));
    // A command line longer than 4 KiB is refused, never measured in part.
    let long = measure::BootRegions {
        cmdline: Some((cmd_gpa, 0x1001)),
        ..regions
    };
    assert!(measure::boot_events_in_memory(&mut td, p.bootinfo, p.policy, &long).is_err());
}

#[test]
fn a_changed_kernel_byte_changes_rtmr1_only() {
    let (engine, _) = script(&[L2Action::Hlt]);
    let mut td = Td::new(engine);
    let good = measured(&mut td);
    let mut kernel = payload().kernel.to_vec();
    kernel[1234] ^= 1;
    let tampered = BootPayload {
        kernel: &kernel,
        ..payload()
    };
    let a = replay(good.log().events());
    let b = replay(&boot_events(&tampered));
    assert_eq!(a[0], b[0]);
    assert_ne!(a[1], b[1]);
}

#[test]
fn admissions_go_to_rtmr2_in_order() {
    let (engine, _) = script(&[L2Action::Hlt]);
    let mut td = Td::new(engine);
    let mut m = measured(&mut td);
    let before = model_rtmrs(&td);
    m.record_admission(&mut td, AdmissionKind::Module, &[1; 48])
        .unwrap();
    // The HEKI service holds the platform as `&mut dyn Platform`.
    let p: &mut dyn paravisor::Platform = &mut td;
    m.record_admission(p, AdmissionKind::TextPatch, &[2; 48])
        .unwrap();
    let after = model_rtmrs(&td);
    assert_eq!(after[0..2], before[0..2]);
    let mut expect = [0u8; 48];
    measure::extend_digest(&mut expect, &[1; 48]);
    measure::extend_digest(&mut expect, &[2; 48]);
    assert_eq!(after[RTMR_ADMISSIONS as usize], expect);
    let last = m.log().events().last().unwrap();
    assert_eq!(last.name(), "lvbs-tdx:admit:text-patch");
    assert_eq!(replay(m.log().events()), after);
}

#[test]
fn a_failed_extend_is_not_logged() {
    let (engine, _) = script(&[L2Action::Hlt]);
    let mut td = Td::new(engine);
    // Buffers in pending (unaccepted) memory: the write fails, nothing logged.
    let mut m = MeasuredBoot::new(MeasureBuffers::in_page(PENDING)).unwrap();
    let e = m.extend(&mut td, Event::cmdline(b"x")).unwrap_err();
    assert!(matches!(e, MeasureError::Memory(_)), "{e:?}");
    assert!(m.log().events().is_empty());
    // An RTMR index the module rejects.
    let mut m = MeasuredBoot::new(MeasureBuffers::in_page(MEASURE_PAGE)).unwrap();
    let mut ev = Event::cmdline(b"x");
    ev.rtmr = 4;
    assert_eq!(m.extend(&mut td, ev), Err(MeasureError::BadIndex(4)));
    assert_eq!(model_rtmrs(&td), [[0; 48]; 4]);
}

fn attest_script(id: u64, a1: u64, a2: u64, a3: u64) -> Vec<L2Action> {
    vec![
        L2Action::SetGpr { gpr: 7, value: id },
        L2Action::SetGpr { gpr: 6, value: a1 },
        L2Action::SetGpr { gpr: 2, value: a2 },
        L2Action::SetGpr { gpr: 8, value: a3 },
        L2Action::Vmcall,
        L2Action::Hlt,
    ]
}

type Attest = Handlers<AttestHypercalls<EnosysHypercalls>>;

fn attest_handlers(td: &mut Td) -> Attest {
    let m = measured(td).shared();
    Handlers::<EnosysHypercalls>::default().with_hypercalls(AttestHypercalls::new(
        m,
        (CODE, CODE + 0x40_0000),
        vec![(MMIO_PRIVATE, MMIO_PRIVATE + 0x1000)],
        EnosysHypercalls,
    ))
}

#[test]
fn attest_returns_a_report_and_the_log_through_l2_memory() {
    let (engine, _) = script(&attest_script(ATTEST_REPORT_ID, NONCE, OUT, OUT_LEN));
    let mut td = Td::new(engine);
    let nonce: [u8; 64] = core::array::from_fn(|i| i as u8 ^ 0xA5);
    td.0.write_memory(NONCE, &nonce).unwrap();
    let mut h = attest_handlers(&mut td);
    let mut vcpu = boot(&mut td, &config());
    assert_eq!(run(&mut td, &mut vcpu, &mut h), StopReason::Halted);
    let written = vcpu.state.gprs[8];
    let log = h.hypercalls.measurements.borrow().log().encode();
    assert_eq!(written as usize, ATTEST_HEADER_BYTES + log.len());
    let mut out = vec![0u8; written as usize];
    td.read(OUT, &mut out).unwrap();
    let rep = &out[..TDREPORT_BYTES];
    // MAC under the model's key, the nonce in REPORTDATA, RTMRs = replay of the log.
    let key = td.0.config().report_key;
    assert!(verify_reportmac(rep[..256].try_into().unwrap(), &key));
    assert_eq!(&rep[report::REPORTDATA..report::REPORTDATA + 64], &nonce);
    let len = u32::from_le_bytes(out[TDREPORT_BYTES..ATTEST_HEADER_BYTES].try_into().unwrap());
    let parsed = EventLog::parse(&out[ATTEST_HEADER_BYTES..][..len as usize]).unwrap();
    let rtmr = replay(parsed.events());
    for (i, r) in rtmr.iter().enumerate() {
        let at = report::RTMR0 + 48 * i;
        assert_eq!(&rep[at..at + 48], r, "RTMR{i}");
    }
    assert_eq!(h.hypercalls.reports, 1);
}

#[test]
fn event_log_call_returns_the_log() {
    let (engine, _) = script(&attest_script(EVENT_LOG_ID, OUT, OUT_LEN, 0));
    let mut td = Td::new(engine);
    let mut h = attest_handlers(&mut td);
    let mut vcpu = boot(&mut td, &config());
    let log = h.hypercalls.measurements.borrow().log().encode();
    assert_eq!(run(&mut td, &mut vcpu, &mut h), StopReason::Halted);
    assert_eq!(vcpu.state.gprs[8], log.len() as u64);
    let mut got = vec![0u8; log.len()];
    td.read(OUT, &mut got).unwrap();
    assert_eq!(got, log);
}

#[test]
fn other_ids_reach_the_next_handler() {
    let (engine, _) = script(&attest_script(0x1FFE2, 0, 0, 0));
    let mut td = Td::new(engine);
    let mut h = attest_handlers(&mut td);
    let mut vcpu = boot(&mut td, &config());
    assert_eq!(run(&mut td, &mut vcpu, &mut h), StopReason::Halted);
    assert_eq!(vcpu.state.gprs[8], ENOSYS);
    assert_eq!(h.hypercalls.refused, 0);
}

#[test]
fn attest_refuses_hostile_arguments() {
    let cases: [(u64, u64, u64, u64); 6] = [
        // Output outside L2 memory (the BootInfo-like low page).
        (NONCE, 0x1000, OUT_LEN, EINVAL),
        // Nonce in an L1-private range.
        (MMIO_PRIVATE, OUT, OUT_LEN, EINVAL),
        // Output overlapping the private range.
        (NONCE, MMIO_PRIVATE - 0x100, 0x200, EINVAL),
        // Length wraps around.
        (NONCE, OUT, u64::MAX, EINVAL),
        // Too small for report + log.
        (NONCE, OUT, ATTEST_HEADER_BYTES as u64, ENOSPC),
        // Nonce crossing the end of L2 memory.
        (CODE + 0x40_0000 - 32, OUT, OUT_LEN, EINVAL),
    ];
    for (nonce, out, len, want) in cases {
        let (engine, _) = script(&attest_script(ATTEST_REPORT_ID, nonce, out, len));
        let mut td = Td::new(engine);
        let mut h = attest_handlers(&mut td);
        let mut vcpu = boot(&mut td, &config());
        assert_eq!(run(&mut td, &mut vcpu, &mut h), StopReason::Halted);
        assert_eq!(vcpu.state.gprs[8], want, "{nonce:#x} {out:#x} {len:#x}");
        assert_eq!(h.hypercalls.refused, 1);
        assert_eq!(h.hypercalls.measurements.borrow().reports, 0);
    }
}
