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
        flags: 0,
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
        1,
        "one INVEPT flag, on the last ATTR.WR"
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
    assert_eq!(td.0.host.exit_code, Some(0x7D));
}
