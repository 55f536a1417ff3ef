//! The boot sequence against the TDX-module model with a scripted L2, laid out
//! the way the emulator lays out a TD (docs/emulator-contract.md).

use paravisor::{L1Memory, MemoryError, StopReason};
use tdcall::enter::gpr;
use tdcall::leaf::Leaf;
use tdcall::{L2Attr, L2Vm, Registers, Tdcall};
use tdx_model::engine::{AccessKind, L2Action, ScriptedEngine};
use tdx_model::host::ScriptedHost;
use tdx_model::{TdConfig, TdxModel};

use crate::boot::{self, BootError, L1Pages};
use crate::bootinfo::{self, BootInfo, L1Image, BOOT_INFO_GPA};
use crate::l2::{PROBE_ECHO_ID, PROBE_ECHO_XOR};
use crate::memory::{L2_FULL, L2_RO_TEST};
use ept::{PageState, SealedKind};
use heki_tdx::abi::HekiCall;

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
        self.0
            .write_memory(gpa, data)
            .map_err(|_| MemoryError::Inaccessible {
                gpa,
                len: data.len(),
            })
    }
}

impl paravisor::pinning::SharedMsrs for Td {
    fn read_shared_msr(&mut self, msr: u32) -> Option<u64> {
        self.0.shared_msr(0, msr)
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
const L2_BASE: u64 = 0x0100_0000;
const IMAGE_END: u64 = 0x0100_5000;
const MARKER: &[u8] = b"probe image bytes";

fn bootinfo() -> BootInfo {
    BootInfo {
        num_vcpus: 1,
        td_memory_bytes: 64 * MIB,
        l2_base: L2_BASE,
        l2_size: 32 * MIB,
        l2_entry: L2_BASE,
        l2_image_end: IMAGE_END,
        ..BootInfo::for_l2_image(L2_BASE, IMAGE_END)
    }
}

/// A TD as the emulator builds it: everything up to the end of the L2 image
/// added (accepted), the rest pending; the BootInfo page and an image marker.
fn make_td(map_2m: bool, info: &BootInfo, script: &[L2Action]) -> Td {
    let mut c = TdConfig::new(64 * MIB);
    c.accepted_bytes = IMAGE_END;
    c.map_2m = map_2m;
    let mut engine = ScriptedEngine::new(L2_BASE);
    engine.extend(script.iter().copied());
    let mut td = Td(TdxModel::new(c, ScriptedHost::default(), engine));
    td.0.write_memory(BOOT_INFO_GPA, &info.to_bytes()).unwrap();
    td.0.write_memory(L2_BASE + 0x1000, MARKER).unwrap();
    td
}

fn probe_script(ro_page: u64) -> Vec<L2Action> {
    use L2Action::*;
    let write = |gpa| Access {
        kind: AccessKind::Write,
        gpa,
        gla: gpa,
        cpl: 0,
        size: 1,
        value: 0xA5,
    };
    vec![
        SetGpr {
            gpr: 7,
            value: PROBE_ECHO_ID,
        },
        SetGpr {
            gpr: 6,
            value: 0x1234_5678_9ABC_DEF0,
        },
        Vmcall,
        SetGpr { gpr: 9, value: 0 },
        write(ro_page),
        write(L2_BASE + 0x1E_0000),
        SetGpr { gpr: 0, value: 0 },
        Cpuid,
        SetGpr { gpr: 0, value: 3 },
        Out {
            port: 0xF4,
            size: 1,
        },
        Hlt,
    ]
}

#[test]
fn boots_and_runs_a_scripted_probe() {
    let info = bootinfo();
    let layout = bootinfo::validate(&info, &L1).unwrap();
    let mut td = make_td(true, &info, &probe_script(layout.ro_page));
    let mut booted = boot::boot(&mut td, &L1, PAGES).expect("boot");
    assert_eq!(booted.layout, layout);
    assert_eq!((booted.tally.passed, booted.tally.failed), (6, 0));
    assert_eq!(booted.vcpu.state.rip, L2_BASE);
    assert_eq!(
        booted.vcpu.state.gprs[gpr::RSP],
        L2_BASE + 32 * MIB - 0x1_0000
    );
    assert_eq!(booted.vcpu.state.gprs[gpr::RDI], L2_BASE);
    assert_eq!(booted.vcpu.state.gprs[gpr::RSI], 32 * MIB);

    // Memory: the image survived, aliases are as the contract says, L1 is not aliased.
    let mut buf = [0u8; 17];
    td.0.read_memory(L2_BASE + 0x1000, &mut buf).unwrap();
    assert_eq!(&buf, MARKER);
    let m = &td.0;
    assert_eq!(m.page_attr(layout.ro_page, L2Vm::Vm1), L2_RO_TEST);
    for gpa in [
        L2_BASE,
        L2_BASE + 0x1000,
        layout.ro_page + 0x1000,
        layout.pml4,
        L2_BASE + 31 * MIB,
    ] {
        assert_eq!(m.page_attr(gpa, L2Vm::Vm1), L2_FULL, "{gpa:#x}");
    }
    for gpa in [
        BOOT_INFO_GPA,
        PAGES.vapic_gpa,
        PAGES.guest_state_gpa,
        L2_BASE - 0x1000,
        L2_BASE + 32 * MIB,
    ] {
        assert_eq!(m.page_attr(gpa, L2Vm::Vm1), L2Attr::empty(), "{gpa:#x}");
    }
    assert_eq!(
        m.stats().invept[1],
        2,
        "one INVEPT flag on the last aliasing ATTR.WR, one on sealing the RO test page"
    );
    // The HEKI service knows the paravisor's pages and the sealed RO test page.
    let ept = &booted.heki.ept;
    for gpa in [
        BOOT_INFO_GPA,
        PAGES.vapic_gpa,
        PAGES.guest_state_gpa,
        L1.start,
    ] {
        assert_eq!(ept.state(gpa), PageState::ParavisorPrivate, "{gpa:#x}");
    }
    assert_eq!(
        ept.state(layout.ro_page),
        PageState::Sealed(SealedKind::ReadOnly)
    );
    assert_eq!(
        ept.state(L2_BASE),
        PageState::Unmapped,
        "boot alias, untracked"
    );
    assert_eq!(
        booted.heki.config().guest_memory,
        (L2_BASE, L2_BASE + 32 * MIB)
    );
    let mut q = [0u8; 8];
    td.0.read_memory(layout.pml4, &mut q).unwrap();
    assert_eq!(u64::from_le_bytes(q), layout.pdpt | 3);
    td.0.read_memory(layout.pd + 8 * 511, &mut q).unwrap();
    assert_eq!(u64::from_le_bytes(q), (511 << 21) | 0x83);

    let (stop, calls) = boot::run(&mut td, &mut booted);
    assert_eq!(stop, StopReason::Halted);
    assert_eq!((calls.echoes, calls.unknown), (1, 0));
    assert_eq!(
        booted.vcpu.state.gprs[gpr::R8],
        0x1234_5678_9ABC_DEF0 ^ PROBE_ECHO_XOR
    );
    let events = td.0.engine.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].vector, events[0].error_code), (13, Some(0)));
    assert_eq!(td.0.host.exit_code, Some(3));
    assert_eq!(booted.vcpu.stats.injected, 1);
}

#[test]
fn falls_back_to_4k_when_the_host_mapped_4k() {
    let info = bootinfo();
    let mut td = make_td(false, &info, &[L2Action::Hlt]);
    let booted = boot::boot(&mut td, &L1, PAGES).expect("boot");
    assert_eq!(booted.tally.failed, 0);
    assert_eq!(td.0.page_attr(L2_BASE + 20 * MIB, L2Vm::Vm1), L2_FULL);
    let accepts = td.0.stats().tdcalls[&(Leaf::MemPageAccept as u16)];
    // 16 failed 2 MiB tries + 8192 pages + the shared-GPA self-check.
    assert_eq!(accepts, 16 + 8192 + 1);
}

#[test]
fn retries_busy_and_rejects_bad_bootinfo() {
    let info = bootinfo();
    let mut td = make_td(true, &info, &[L2Action::Hlt]);
    td.0.inject_busy(Leaf::MemPageAccept, 3);
    td.0.inject_busy(Leaf::MemPageAttrWr, 3);
    assert!(boot::boot(&mut td, &L1, PAGES).is_ok());

    let mut bad = bootinfo();
    bad.l2_image_end = L2_BASE + 0x1F_1000;
    let mut td = make_td(true, &bad, &[L2Action::Hlt]);
    match boot::boot(&mut td, &L1, PAGES) {
        Err(BootError::BootInfo(e)) => assert!(e.what.contains("l2_image_end"), "{e}"),
        other => panic!("{other:?}"),
    }
    let mut td = make_td(true, &info, &[L2Action::Hlt]);
    let misplaced = L1Pages {
        vapic_gpa: L2_BASE,
        ..PAGES
    };
    assert_eq!(
        boot::boot(&mut td, &L1, misplaced).unwrap_err(),
        BootError::L1Pages(L2_BASE)
    );
}

#[test]
fn debug_exit_reaches_the_host() {
    let mut td = make_td(true, &bootinfo(), &[]);
    boot::debug_exit(&mut td, boot::EXIT_LOOP_STOPPED).unwrap();
    assert_eq!(td.0.host.exit_code, Some(0x7C));
}

/// VMCALL `id` with RSI/RDX = `a1`/`a2`.
fn heki_call(id: HekiCall, a1: u64, a2: u64) -> [L2Action; 4] {
    [
        L2Action::SetGpr {
            gpr: 7,
            value: id.id() as u64,
        },
        L2Action::SetGpr { gpr: 6, value: a1 },
        L2Action::SetGpr { gpr: 2, value: a2 },
        L2Action::Vmcall,
    ]
}

/// A one-page `heki_page` list of `(pa, epa, attributes)`.
fn heki_list(ranges: &[(u64, u64, u64)]) -> Vec<u8> {
    let mut p = vec![0u8; 4096];
    p[16..24].copy_from_slice(&(ranges.len() as u64).to_le_bytes());
    for (i, (pa, epa, attr)) in ranges.iter().enumerate() {
        let o = 24 + 32 * i;
        for (k, v) in [*pa, *pa, *epa, *attr].into_iter().enumerate() {
            p[o + 8 * k..o + 8 * k + 8].copy_from_slice(&v.to_le_bytes());
        }
    }
    p
}

#[test]
fn serves_the_heki_boot_calls() {
    use heki_tdx::abi::{Errno, MemAttr};
    let info = bootinfo();
    let text = L2_BASE + 0x2000;
    let list = L2_BASE + 0x1E_0000;
    let bad_list = list + 0x1000;
    let loose = L2_BASE + 0x10_0000;
    let (r, rx) = (MemAttr::READ.bits(), (MemAttr::READ | MemAttr::EXEC).bits());
    let mut script = Vec::new();
    script.extend(heki_call(HekiCall::LockRegs, 0, 0));
    script.extend(heki_call(HekiCall::ProtectMemory, list, 1));
    script.extend(heki_call(HekiCall::ProtectMemory, bad_list, 1));
    script.extend(heki_call(HekiCall::SignalEndOfBoot, 0, 0));
    script.extend(heki_call(HekiCall::ProtectMemory, list, 1));
    let fetch = |gpa| L2Action::Access {
        kind: AccessKind::Fetch,
        gpa,
        gla: gpa,
        cpl: 0,
        size: 1,
        value: 0,
    };
    script.extend([fetch(text), fetch(loose), L2Action::Hlt]);
    let mut td = make_td(true, &info, &script);
    let mut booted = boot::boot(&mut td, &L1, PAGES).expect("boot");
    // Written after boot accepted the region (the guest builds its lists).
    td.0.write_memory(list, &heki_list(&[(text, text + 0x1000, rx)]))
        .unwrap();
    td.0.write_memory(
        bad_list,
        &heki_list(&[(PAGES.vapic_gpa, PAGES.vapic_gpa + 0x1000, r)]),
    )
    .unwrap();
    let mut statuses = Vec::new();
    let stop = loop {
        let step = booted.vcpu.enter(&mut td).and_then(|res| {
            booted
                .vcpu
                .handle(&mut td, &mut booted.heki, &res)
                .map(|()| res)
        });
        match step {
            Ok(res) if res.exit.exit_reason().basic() == 18 => {
                statuses.push(booted.vcpu.state.gprs[gpr::R8] as i64)
            }
            Ok(_) => {}
            Err(stop) => break stop,
        }
    };
    assert_eq!(stop, StopReason::Halted);
    let (einval, eperm) = (Errno::EINVAL.status(), Errno::EPERM.status());
    assert_eq!(statuses, [0, 0, einval, 0, eperm]);
    assert!(booted.heki.pins().is_some());
    let m = &td.0;
    assert_eq!(
        m.page_attr(text, L2Vm::Vm1),
        L2Attr::VALID | L2Attr::R | L2Attr::XS | L2Attr::XU
    );
    assert_eq!(m.page_attr(PAGES.vapic_gpa, L2Vm::Vm1), L2Attr::empty());
    assert_eq!(
        m.page_attr(loose, L2Vm::Vm1),
        L2Attr::VALID | L2Attr::R | L2Attr::W | L2Attr::XU,
        "unprotected memory lost Xs at the end of boot"
    );
    assert_eq!(m.page_attr(booted.layout.ro_page, L2Vm::Vm1), L2_RO_TEST);
    // Only the fetch from unprotected memory was refused.
    let events = td.0.engine.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].vector, events[0].error_code), (13, Some(0)));
}

/// A deterministic stand-in for RDRAND/RDSEED.
struct CountingEntropy(u64);

impl paravisor::tee::Entropy for CountingEntropy {
    fn rdrand64(&mut self) -> Option<u64> {
        self.0 = self.0.wrapping_mul(0x5851_F42D_4C95_7F2D).wrapping_add(1);
        Some(self.0)
    }
    fn rdseed64(&mut self) -> Option<u64> {
        None
    }
}

#[test]
fn serves_the_tee_between_heki_and_the_echo() {
    use lvbs_tee::msg::{smc, SmcArgs, SMC_ARGS_SIZE};
    let info = bootinfo();
    let page = L2_BASE + 0x1E_0000;
    let call = |id: u64, a1: u64| {
        [
            L2Action::SetGpr { gpr: 7, value: id },
            L2Action::SetGpr { gpr: 6, value: a1 },
            L2Action::Vmcall,
        ]
    };
    let mut script = Vec::new();
    script.extend(call(paravisor::tee::OPTEE_CALL_ID, page >> 12));
    script.extend(call(PROBE_ECHO_ID, 7));
    script.extend(call(paravisor::tee::OPTEE_CALL_ID, L1.start >> 12));
    script.push(L2Action::Hlt);
    let mrtd = [0x42; 48];
    let mut c = TdConfig::new(64 * MIB);
    c.accepted_bytes = IMAGE_END;
    c.mrtd = mrtd;
    let mut engine = ScriptedEngine::new(L2_BASE);
    engine.extend(script.iter().copied());
    let mut td = Td(TdxModel::new(c, ScriptedHost::default(), engine));
    td.0.write_memory(BOOT_INFO_GPA, &info.to_bytes()).unwrap();
    let mut booted = boot::boot(&mut td, &L1, PAGES).expect("boot");
    let mut args = [0u64; 9];
    args[0] = smc::FAST_CALLS_UID;
    td.0.write_memory(page, &SmcArgs(args).to_bytes()).unwrap();
    let got = boot::start_tee(&mut td, &mut booted, Box::new(CountingEntropy(1)), &[]).unwrap();
    // The measurement binds MRTD and the boot measurements (RTMR0, RTMR1).
    let report = booted
        .measurements
        .borrow_mut()
        .report(&mut td, &[0; 64])
        .unwrap();
    let [r_mrtd, rtmr0, rtmr1] = paravisor::tee::report_fields(&report);
    assert_eq!(r_mrtd, mrtd);
    assert_ne!(rtmr0, [0; 48], "BootInfo and policy measured");
    assert_ne!(rtmr1, [0; 48], "the L2 image measured");
    assert_eq!(got, paravisor::tee::measurement(&mrtd, &rtmr0, &rtmr1));

    let mut r8 = Vec::new();
    let stop = loop {
        match booted.vcpu.enter(&mut td).and_then(|res| {
            booted
                .vcpu
                .handle(&mut td, &mut booted.heki, &res)
                .map(|_| res)
        }) {
            Ok(res) if res.exit.exit_reason().basic() == 18 => {
                r8.push(booted.vcpu.state.gprs[gpr::R8])
            }
            Ok(_) => {}
            Err(stop) => break stop,
        }
    };
    assert_eq!(stop, StopReason::Halted);
    assert_eq!(r8, [0, 7 ^ PROBE_ECHO_XOR, -14i64 as u64]);
    let mut reply = [0u8; SMC_ARGS_SIZE];
    td.0.read_memory(page, &mut reply).unwrap();
    let words = SmcArgs::from_bytes(&reply).0;
    assert_eq!(words[..4], smc::API_UID.map(u64::from), "OP-TEE API UID");
    assert_eq!(booted.heki.next.stats.calls, 2);
    assert_eq!(booted.heki.next.next.next.echoes, 1);
}
