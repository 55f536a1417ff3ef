//! The loader end to end on synthetic ELFs: IGVM build, the `no_std` reader
//! the emulator uses against the `igvm`-crate measurement, the reset page,
//! tampering, and the verifier on reports the TDX-module model MACs.

use lvbs_loader::layout::{L2_BASE, PARAVISOR_BASE, RESET_PAGE_GPA};
use lvbs_loader::{BootInfo, IgvmTd};
use lvbs_loader_cli::{
    build, build_with, measure, model_report_key, tamper_kernel_gpa, verify, Evidence, Inputs,
};
use paravisor::measure::{replay, AdmissionKind, Event, EventLog};
use tdx_model::measure::{build_report, MrtdBuilder, ReportInputs};

/// A static x86-64 ELF with one PT_LOAD of `code` at `paddr` (memsz = code + bss).
fn elf(paddr: u64, code: &[u8], bss: u64) -> Vec<u8> {
    let mut f = vec![0u8; 0x1000];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2;
    f[5] = 1;
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes());
    f[18..20].copy_from_slice(&62u16.to_le_bytes());
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&paddr.to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes());
    f[52..54].copy_from_slice(&64u16.to_le_bytes());
    f[54..56].copy_from_slice(&56u16.to_le_bytes());
    f[56..58].copy_from_slice(&1u16.to_le_bytes());
    let p = &mut f[64..120];
    p[0..4].copy_from_slice(&1u32.to_le_bytes());
    p[4..8].copy_from_slice(&5u32.to_le_bytes());
    p[8..16].copy_from_slice(&0x1000u64.to_le_bytes());
    p[16..24].copy_from_slice(&paddr.to_le_bytes());
    p[24..32].copy_from_slice(&paddr.to_le_bytes());
    p[32..40].copy_from_slice(&(code.len() as u64).to_le_bytes());
    p[40..48].copy_from_slice(&(code.len() as u64 + bss).to_le_bytes());
    f.extend_from_slice(code);
    f
}

fn paravisor() -> Vec<u8> {
    elf(PARAVISOR_BASE, &[0xF4; 0x1800], 0x3000)
}

fn kernel(fill: u8) -> Vec<u8> {
    elf(L2_BASE, &vec![fill; 0x2345], 0x1000)
}

/// MRTD as the emulator computes it: the `no_std` reader, file order.
fn emulator_mrtd(file: &[u8]) -> [u8; 48] {
    let td = IgvmTd::parse(file).expect("the emulator's reader accepts it");
    let mut m = MrtdBuilder::new();
    td.for_each_page(1, |gpa, page, measured| {
        if measured {
            m.add_measured_page(gpa, page);
        } else {
            m.page_add(gpa);
        }
    });
    m.finish()
}

#[test]
fn emulator_reader_and_loader_agree_on_two_images() {
    let pv = paravisor();
    let (k1, k2) = (kernel(0x90), kernel(0xCC));
    let a = build(&Inputs {
        paravisor: &pv,
        kernel: &k1,
        initrd: None,
        cmdline: None,
    })
    .unwrap();
    let initrd = vec![0x5A; 0x3456];
    let b = build(&Inputs {
        paravisor: &pv,
        kernel: &k2,
        initrd: Some(&initrd),
        cmdline: Some(b"console=ttyS0 lvbs=attest"),
    })
    .unwrap();
    let (ma, mb) = (measure(&a).unwrap(), measure(&b).unwrap());
    assert_eq!(emulator_mrtd(&a), ma.mrtd);
    assert_eq!(emulator_mrtd(&b), mb.mrtd);
    // A third, independent computation: the igvm crate's own TDX MRTD.
    for (file, m) in [(&a, &ma), (&b, &mb)] {
        let f = igvm::IgvmFile::new_from_binary(file, Some(igvm::IsolationType::Tdx)).unwrap();
        let theirs = igvm::measurement::generate_tdx_measurement(
            f.directives(),
            lvbs_loader_cli::TDX_COMPAT_MASK,
        )
        .unwrap();
        assert_eq!(theirs, m.mrtd);
    }
    // The kernel bytes are RTMR1's business, the extra pages change MRTD.
    assert_ne!(ma.mrtd, mb.mrtd);
    assert_ne!(ma.rtmr[1], mb.rtmr[1]);
    assert_eq!(mb.boot_info.cmdline_size, 25);
    assert_eq!(mb.boot_info.initrd_size, 0x3456);
    // Paravisor pages and the reset page are measured; BootInfo, kernel,
    // command line and initrd pages are not.
    assert_eq!(mb.measured_pages, 5 + 1);
    assert_eq!(mb.pages, 1 + 5 + 4 + 1 + 4 + 1);
    // The reset page jumps to the paravisor entry.
    let td = IgvmTd::parse(&b).unwrap();
    assert_eq!(td.entry(), Some(PARAVISOR_BASE));
    let mut bootinfo = None;
    td.for_each_page(3, |gpa, page, _| {
        if gpa == BootInfo::GPA {
            bootinfo = Some(BootInfo::from_bytes(page).unwrap());
        }
    });
    assert_eq!(
        bootinfo.unwrap().num_vcpus,
        3,
        "the host inserts its vCPU count"
    );
    assert!(td.ops().len() > 10);
    let _ = RESET_PAGE_GPA;
}

#[test]
fn a_flipped_kernel_byte_keeps_mrtd_and_changes_rtmr1() {
    let pv = paravisor();
    let k = kernel(0x90);
    let inputs = Inputs {
        paravisor: &pv,
        kernel: &k,
        initrd: None,
        cmdline: Some(b"x"),
    };
    let layout = inputs.layout().unwrap();
    let gpa = tamper_kernel_gpa(&layout);
    assert_eq!(
        gpa,
        L2_BASE + 0x2FFF,
        "padding after the segment's file bytes"
    );
    let good = measure(&build(&inputs).unwrap()).unwrap();
    let bad = measure(&build_with(&inputs, Some(gpa)).unwrap()).unwrap();
    assert_eq!(good.mrtd, bad.mrtd);
    assert_eq!(good.rtmr[0], bad.rtmr[0]);
    assert_ne!(good.rtmr[1], bad.rtmr[1]);
    assert!(build_with(&inputs, Some(0x20_0000)).is_err());
}

#[test]
fn corrupted_files_are_refused_by_the_emulator_reader() {
    let pv = paravisor();
    let k = kernel(1);
    let f = build(&Inputs {
        paravisor: &pv,
        kernel: &k,
        initrd: None,
        cmdline: None,
    })
    .unwrap();
    for i in [0usize, 8, 24, 40, 60] {
        let mut b = f.clone();
        b[i] ^= 0x40;
        assert!(IgvmTd::parse(&b).is_err(), "byte {i}");
    }
    for n in (0..f.len()).step_by(97) {
        let _ = IgvmTd::parse(&f[..n]);
    }
}

/// A report as the model's TDG.MR.REPORT would build it for a TD that
/// booted `events`.
fn evidence(mrtd: &[u8; 48], events: &[Event], nonce: &[u8; 64]) -> Evidence {
    let mut log = EventLog::new();
    for e in events {
        log.push(e.clone()).unwrap();
    }
    let rtmr = replay(events);
    let z = [0u8; 48];
    let report = build_report(
        &ReportInputs {
            attributes: 1 << 28,
            xfam: 3,
            mrtd,
            mrconfigid: &z,
            mrowner: &z,
            mrownerconfig: &z,
            rtmr: &rtmr,
            reportdata: nonce,
        },
        &model_report_key(),
    );
    Evidence {
        report,
        log: log.encode(),
    }
}

#[test]
fn the_verifier_names_the_field_that_differs() {
    let pv = paravisor();
    let k = kernel(0x90);
    let inputs = Inputs {
        paravisor: &pv,
        kernel: &k,
        initrd: Some(b"initrd"),
        cmdline: Some(b"quiet"),
    };
    let m = measure(&build(&inputs).unwrap()).unwrap();
    let nonce = [0x42u8; 64];
    let key = model_report_key();
    let mut events = m.boot_events.clone();
    events.push(Event::admission(AdmissionKind::Module, &[9; 48]));
    let good = evidence(&m.mrtd, &events, &nonce);
    let v = verify(&m, &good, &nonce, &key);
    assert!(v.accepted(), "{:#?}", v.checks);
    // Console round trip.
    assert_eq!(Evidence::from_console(&good.to_console()).unwrap(), good);

    // A replayed report: another nonce.
    let v = verify(&m, &good, &[0x43; 64], &key);
    assert_eq!(v.refused_fields(), ["nonce"]);

    // A TD that booted a tampered kernel: its log and RTMR1 differ.
    let bad_m =
        measure(&build_with(&inputs, Some(tamper_kernel_gpa(&inputs.layout().unwrap()))).unwrap())
            .unwrap();
    let bad = evidence(&bad_m.mrtd, &bad_m.boot_events, &nonce);
    let v = verify(&m, &bad, &nonce, &key);
    assert_eq!(v.refused_fields(), ["RTMR1"]);
    assert!(v
        .checks
        .iter()
        .any(|c| !c.ok && c.detail.contains("lvbs-tdx:kernel")));

    // A log that does not replay to the report.
    let mut lying = good.clone();
    lying.log = evidence(&m.mrtd, &m.boot_events, &nonce).log;
    let v = verify(&m, &lying, &nonce, &key);
    assert_eq!(v.refused_fields(), ["RTMR2"]);

    // A forged MRTD: the MAC no longer covers it.
    let mut forged = good.clone();
    forged.report[528] ^= 1;
    let v = verify(&m, &forged, &nonce, &key);
    assert_eq!(v.refused_fields(), ["TEE_INFO_HASH", "MRTD"]);
    let mut forged = good.clone();
    forged.report[130] ^= 1;
    assert_eq!(
        verify(&m, &forged, &nonce, &key).refused_fields(),
        ["MAC", "nonce"]
    );
    // Another paravisor image.
    let other = evidence(&[7; 48], &events, &nonce);
    assert_eq!(verify(&m, &other, &nonce, &key).refused_fields(), ["MRTD"]);
    // Garbage log.
    let mut g = good.clone();
    g.log.truncate(40);
    assert_eq!(verify(&m, &g, &nonce, &key).refused_fields(), ["event log"]);
}
