//! The HEKI boot calls (`paravisor::heki`): LOCK_REGS, PROTECT_MEMORY,
//! LOAD_KDATA and SIGNAL_END_OF_BOOT, their errors and their ordering rules,
//! with the paravisor core against the TDX-module model.
//!
//! Guest memory is `[GUEST_START, GUEST_END)`, aliased R|W|Xs|Xu the way the
//! bare-metal paravisor aliases the L2 region at boot; everything below it is
//! the paravisor's, and the MMIO page inside it is paravisor-private too.
//!
//! The runtime calls (modules, secondary keys, text patching) are in
//! [`modules`].

mod modules;

use crate::harness::*;
use ept::{Authority, Ept, GpaRange, PageState, Policy};
use heki_tdx::abi::{Errno, HekiCall, KdataType, MemAttr};
use paravisor::heki::{HekiConfig, HekiService};
use paravisor::pinning::{MSR_LSTAR, MSR_STAR};
use paravisor::{HypercallArgs, HypercallContext, HypercallHandler, MsrPassthrough, Vcpu, ENOSYS};
use proptest::prelude::*;
use tdcall::attr::{AttrWrFlags, GpaAttr, GpaMapping, L2Attr, PageLevel};
use tdcall::leaf::Leaf;
use tdcall::leaves::MemPageAttrWr;
use tdcall::vmx::reason;
use tdcall::L2Vm;
use tdx_model::engine::{AccessKind, L2Action};

pub const GUEST_START: u64 = 0x40_0000;
pub const GUEST_END: u64 = 0x80_0000;
/// The first `heki_page` and a second one for chains.
pub const LIST: u64 = DATA;
pub const LIST2: u64 = DATA + 0x1000;
/// Blobs for LOAD_KDATA.
pub const BLOB: u64 = DATA + 0x2000;
/// The real test certificate for LOAD_KDATA.
pub const CERT: u64 = DATA + 0x3000;
/// The trusted certificate of the test module (tests/data/heki-module).
pub const SIGNER_CERT: &[u8] = include_bytes!("../../data/heki-module/signer.crt.der");
pub const TEXT: u64 = 0x70_0000;
pub const RODATA: u64 = 0x71_0000;
pub const KDATA: u64 = 0x72_0000;
pub const USER: u64 = 0x73_0000;
pub const SEALED: u64 = 0x74_0000;
/// A page nobody protects.
pub const LOOSE: u64 = 0x75_0000;
pub const SHARED_BIT: u64 = 1 << 47;
const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;
const KERNEL_LSTAR: u64 = 0xFFFF_FFFF_8100_0000;

pub const FULL: L2Attr = L2Attr::VALID
    .union(L2Attr::R)
    .union(L2Attr::W)
    .union(L2Attr::XS)
    .union(L2Attr::XU);
const R: u64 = MemAttr::READ.bits();
const W: u64 = MemAttr::WRITE.bits();
const X: u64 = MemAttr::EXEC.bits();
const IMM: u64 = MemAttr::IMMUTABLE.bits();

/// `(pa, epa, attributes)` of a list's ranges.
type Ranges = Vec<(u64, u64, u64)>;

fn status(e: Errno) -> i64 {
    e.status()
}

/// The service as the bare-metal paravisor configures it, over the scenario
/// layout.
pub fn service() -> HekiService {
    let config = HekiConfig::new(
        L2Vm::Vm1,
        (GUEST_START, GUEST_END),
        vec![(0, GUEST_START), (MMIO_PRIVATE, MMIO_PRIVATE + 0x1000)],
    );
    service_with(config)
}

pub fn service_with(config: HekiConfig) -> HekiService {
    let mut ept = Ept::new(L2Vm::Vm1, Policy::LVBS);
    for &(s, e) in &config.private {
        // No alias exists for these pages: recording them changes nothing in the module.
        let mut none = NoTdcall;
        ept.transition(
            &mut none,
            GpaRange::new(s, e).unwrap(),
            PageState::ParavisorPrivate,
            Authority::Paravisor,
        )
        .unwrap();
    }
    HekiService::new(config, ept)
}

/// A TDCALL sink for Ept changes that plan no call.
struct NoTdcall;

impl tdcall::Tdcall for NoTdcall {
    fn tdcall(&mut self, _: &mut tdcall::Registers) {
        panic!("no TDCALL expected");
    }
}

/// Aliases guest memory (minus the MMIO page) R|W|Xs|Xu, as the paravisor's boot does.
pub fn alias_guest_memory(td: &mut Td) {
    for gpa in (GUEST_START..GUEST_END).step_by(0x1000) {
        if gpa == MMIO_PRIVATE {
            continue;
        }
        let req = MemPageAttrWr {
            mapping: GpaMapping::new(gpa, PageLevel::Size4K),
            attr: GpaAttr::for_vm(L2Vm::Vm1, FULL),
            flags: AttrWrFlags::for_vm(L2Vm::Vm1, L2Attr::PRESENT, false),
        };
        tdcall::call(td, &req).unwrap();
    }
}

/// The VM: SMEP/SMAP on, the syscall MSRs passed through (the kernel sets them
/// before LOCK_REGS).
pub fn heki_config() -> paravisor::L2VmConfig {
    let mut cfg = config();
    let mut state = cfg.initial.unwrap();
    state.cr4 |= CR4_SMEP | CR4_SMAP;
    cfg.initial = Some(state);
    for msr in [MSR_STAR, MSR_LSTAR] {
        cfg.msr_passthrough.push(MsrPassthrough {
            msr,
            read: true,
            write: true,
        });
    }
    cfg
}

/// VMCALL `id` with RSI/RDX = `a1`/`a2`.
pub fn call(id: HekiCall, a1: u64, a2: u64) -> Vec<L2Action> {
    raw_call(id.id() as u64, a1, a2)
}

fn raw_call(id: u64, a1: u64, a2: u64) -> Vec<L2Action> {
    vec![
        L2Action::SetGpr { gpr: 7, value: id },
        L2Action::SetGpr { gpr: 6, value: a1 },
        L2Action::SetGpr { gpr: 2, value: a2 },
        L2Action::SetGpr { gpr: 8, value: 0 },
        L2Action::Vmcall,
    ]
}

fn wrmsr(msr: u32, value: u64) -> Vec<L2Action> {
    vec![
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

fn access(kind: AccessKind, gpa: u64, cpl: u8) -> L2Action {
    L2Action::Access {
        kind,
        gpa,
        gla: gpa,
        cpl,
        size: 8,
        value: if kind == AccessKind::Read { 5 } else { 0xCC },
    }
}

/// One `heki_page` (§3.1): header and `(va, pa, epa, attributes)` ranges.
pub fn heki_page(next_pa: u64, nranges: u64, ranges: &[(u64, u64, u64)]) -> Vec<u8> {
    let mut p = vec![0u8; 4096];
    p[8..16].copy_from_slice(&next_pa.to_le_bytes());
    p[16..24].copy_from_slice(&nranges.to_le_bytes());
    for (i, (pa, epa, attr)) in ranges.iter().enumerate() {
        let o = 24 + 32 * i;
        let va = 0xFFFF_8880_0000_0000 | pa;
        for (k, v) in [va, *pa, *epa, *attr].into_iter().enumerate() {
            p[o + 8 * k..o + 8 * k + 8].copy_from_slice(&v.to_le_bytes());
        }
    }
    p
}

/// Writes a one-page list of `ranges` at `at`.
pub fn put_list(td: &mut Td, at: u64, ranges: &[(u64, u64, u64)]) {
    td.0.write_memory(at, &heki_page(0, ranges.len() as u64, ranges))
        .unwrap();
}

/// A TD with guest memory aliased and `actions` (then HLT) as the script.
fn setup(actions: &[L2Action]) -> (Td, Vcpu, Vec<u64>) {
    let mut all = actions.to_vec();
    all.push(L2Action::Hlt);
    let (engine, rips) = script(&all);
    let mut td = Td::new(engine);
    alias_guest_memory(&mut td);
    let vcpu = boot(&mut td, &heki_config());
    (td, vcpu, rips)
}

/// Runs until the next VMCALL was handled; its R8 status.
fn next_status<H: paravisor::ExitHandlers>(td: &mut Td, vcpu: &mut Vcpu, h: &mut H) -> i64 {
    for _ in 0..MAX_ENTRIES {
        let r = step(td, vcpu, h).expect("L2 keeps running");
        if r.exit.exit_reason().basic() == reason::VMCALL {
            return vcpu.state.gprs[8] as i64;
        }
    }
    panic!("no VMCALL")
}

fn attr(td: &Td, gpa: u64) -> L2Attr {
    td.0.page_attr(gpa, L2Vm::Vm1)
}

fn attr_writes(td: &Td) -> u64 {
    td.0.stats()
        .tdcalls
        .get(&(Leaf::MemPageAttrWr as u16))
        .copied()
        .unwrap_or(0)
}

#[test]
fn lock_regs_pins_the_calling_vcpu_once() {
    let cr4 = heki_config().initial.unwrap().cr4;
    let mut actions = wrmsr(MSR_LSTAR, KERNEL_LSTAR);
    actions.extend(call(HekiCall::LockRegs, 0, 0));
    actions.extend(wrmsr(MSR_LSTAR, 0x4141_0000));
    let lstar_rip = actions.len() - 1;
    actions.push(L2Action::SetGpr {
        gpr: 3,
        value: cr4 & !CR4_SMEP,
    });
    actions.push(L2Action::MovToCr { cr: 4, gpr: 3 });
    let cr4_rip = actions.len() - 1;
    actions.extend(call(HekiCall::LockRegs, 0, 0));
    let (mut td, mut vcpu, rips) = setup(&actions);
    let mut h = service();
    assert!(h.pins().is_none());
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0);
    let pins = *h.pins().expect("locked");
    assert_eq!(pins.cr4 & CR4_SMEP, CR4_SMEP);
    assert!(pins.msrs.contains(&(MSR_LSTAR, KERNEL_LSTAR)));
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        status(Errno::EINVAL),
        "once per vCPU"
    );
    assert_eq!(
        run(&mut td, &mut vcpu, &mut h),
        paravisor::StopReason::Halted
    );
    assert_eq!(
        td.events(),
        [gp0_at(rips[lstar_rip]), gp0_at(rips[cr4_rip])]
    );
    assert_eq!(td.0.shared_msr(0, MSR_LSTAR), Some(KERNEL_LSTAR));
    assert_eq!(
        td.vmcs(tdcall::field::vmcs::CR4_READ_SHADOW) & CR4_SMEP,
        CR4_SMEP
    );
    assert_eq!((h.stats.calls, h.stats.refused), (2, 1));
}

#[test]
fn protect_memory_applies_the_lvbs_states_in_one_batch() {
    let mut actions = call(HekiCall::ProtectMemory, LIST, 5);
    actions.extend([
        access(AccessKind::Write, TEXT + 0x10, 0),
        access(AccessKind::Write, RODATA, 0),
        access(AccessKind::Fetch, KDATA, 0),
        access(AccessKind::Fetch, USER, 0),
        access(AccessKind::Fetch, KDATA, 3),
        access(AccessKind::Write, KDATA, 0),
        access(AccessKind::Fetch, TEXT + 0x1000, 0),
        access(AccessKind::Fetch, LOOSE, 0),
    ]);
    let (mut td, mut vcpu, rips) = setup(&actions);
    put_list(
        &mut td,
        LIST,
        &[
            (TEXT, TEXT + 0x2000, R | X),
            (RODATA, RODATA + 0x1000, R),
            (KDATA, KDATA + 0x1000, R | W),
            (USER, USER + 0x1000, R),
            (SEALED, SEALED + 0x1000, R | X | IMM),
        ],
    );
    let mut h = service();
    let before = attr_writes(&td);
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0);
    assert!(vcpu.invalidation_pending(), "flush requested");
    // Six pages change, each in a 2 MiB block that stays mixed: six 4 KiB calls.
    assert_eq!(attr_writes(&td) - before, 6);
    assert_eq!((h.stats.ranges_protected, h.stats.pages_protected), (5, 6));
    let v = L2Attr::VALID;
    assert_eq!(attr(&td, TEXT), v | L2Attr::R | L2Attr::XS | L2Attr::XU);
    assert_eq!(attr(&td, TEXT + 0x1000), attr(&td, TEXT));
    assert_eq!(attr(&td, RODATA), v | L2Attr::R | L2Attr::XU);
    assert_eq!(attr(&td, KDATA), v | L2Attr::R | L2Attr::W | L2Attr::XU);
    assert_eq!(attr(&td, USER), v | L2Attr::R | L2Attr::XU);
    assert_eq!(attr(&td, SEALED), attr(&td, TEXT));
    assert_eq!(
        attr(&td, LOOSE),
        FULL,
        "unprotected pages keep the boot alias"
    );
    assert_eq!(
        h.ept.state(SEALED),
        PageState::Sealed(ept::SealedKind::Text)
    );
    assert_eq!(
        run(&mut td, &mut vcpu, &mut h),
        paravisor::StopReason::Halted
    );
    // Write text, write rodata, execute data and the user page at CPL 0.
    let first = rips.len() - 9;
    assert_eq!(
        td.events(),
        (first..first + 4)
            .map(|i| gp0_at(rips[i]))
            .collect::<Vec<_>>()
    );
}

#[test]
fn protect_memory_refuses_bad_requests_and_changes_nothing() {
    let cases: Vec<(&str, u64, u64, Ranges, Errno)> = vec![
        ("unaligned list", LIST + 8, 1, vec![], Errno::EINVAL),
        ("zero ranges", LIST, 0, vec![], Errno::EINVAL),
        ("list in paravisor memory", BUF, 1, vec![], Errno::EFAULT),
        (
            "list beyond memory",
            MEMORY + 0x1000,
            1,
            vec![],
            Errno::EFAULT,
        ),
        (
            "list through the shared alias",
            LIST | SHARED_BIT,
            1,
            vec![],
            Errno::EFAULT,
        ),
        (
            "fewer ranges than announced",
            LIST,
            2,
            vec![(TEXT, TEXT + 0x1000, R | X)],
            Errno::EINVAL,
        ),
        (
            "W and X",
            LIST,
            2,
            vec![
                (TEXT, TEXT + 0x1000, R | X),
                (KDATA, KDATA + 0x1000, R | W | X),
            ],
            Errno::EINVAL,
        ),
        (
            "write without read",
            LIST,
            1,
            vec![(KDATA, KDATA + 0x1000, W)],
            Errno::EINVAL,
        ),
        (
            "immutable and writable",
            LIST,
            1,
            vec![(KDATA, KDATA + 0x1000, R | W | IMM)],
            Errno::EINVAL,
        ),
        (
            "unknown attribute bit",
            LIST,
            1,
            vec![(KDATA, KDATA + 0x1000, R | 0x10)],
            Errno::EINVAL,
        ),
        (
            "misaligned range",
            LIST,
            1,
            vec![(KDATA + 8, KDATA + 0x1000, R)],
            Errno::EINVAL,
        ),
        (
            "range over paravisor memory",
            LIST,
            2,
            vec![
                (TEXT, TEXT + 0x1000, R),
                (GUEST_START - 0x1000, GUEST_START + 0x1000, R),
            ],
            Errno::EINVAL,
        ),
        (
            "range over the private MMIO page",
            LIST,
            1,
            vec![(MMIO_PRIVATE, MMIO_PRIVATE + 0x1000, R | W)],
            Errno::EINVAL,
        ),
        (
            "range beyond guest memory",
            LIST,
            1,
            vec![(GUEST_END, GUEST_END + 0x1000, R)],
            Errno::EFAULT,
        ),
        (
            "range through the shared alias",
            LIST,
            1,
            vec![(KDATA | SHARED_BIT, (KDATA | SHARED_BIT) + 0x1000, R)],
            Errno::EFAULT,
        ),
        (
            "more pages than guest memory",
            LIST,
            5,
            vec![(TEXT, GUEST_END, R); 5],
            Errno::ERANGE,
        ),
    ];
    let mut actions = Vec::new();
    for (_, a1, a2, _, _) in &cases {
        actions.extend(call(HekiCall::ProtectMemory, *a1, *a2));
    }
    let (mut td, mut vcpu, _) = setup(&actions);
    let mut h = service();
    let before = attr_writes(&td);
    for (name, _, _, ranges, errno) in &cases {
        put_list(&mut td, LIST, ranges);
        assert_eq!(
            next_status(&mut td, &mut vcpu, &mut h),
            status(*errno),
            "{name}"
        );
    }
    assert_eq!(attr_writes(&td), before, "nothing was applied");
    for gpa in [TEXT, KDATA, RODATA, LOOSE, GUEST_END - 0x1000] {
        assert_eq!(attr(&td, gpa), FULL, "{gpa:#x}");
    }
    assert_eq!(attr(&td, MMIO_PRIVATE), L2Attr::empty());
    assert_eq!(h.stats.refused, cases.len() as u64);
}

#[test]
fn protect_memory_follows_chains_and_detects_cycles() {
    let mut actions = call(HekiCall::ProtectMemory, LIST, 2);
    actions.extend(call(HekiCall::ProtectMemory, LIST, 3));
    let (mut td, mut vcpu, _) = setup(&actions);
    let mut h = service();
    // LIST -> LIST2, one range each.
    let p1 = heki_page(LIST2, 1, &[(TEXT, TEXT + 0x1000, R | X)]);
    let p2 = heki_page(0, 1, &[(RODATA, RODATA + 0x1000, R)]);
    td.0.write_memory(LIST, &p1).unwrap();
    td.0.write_memory(LIST2, &p2).unwrap();
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0);
    assert_eq!(h.ept.state(RODATA), PageState::Rodata);
    // LIST -> LIST2 -> LIST: a cycle.
    let p2 = heki_page(LIST, 1, &[(RODATA, RODATA + 0x1000, R)]);
    td.0.write_memory(LIST2, &p2).unwrap();
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        status(Errno::EINVAL)
    );
}

#[test]
fn sealed_pages_stay_sealed() {
    let mut actions = call(HekiCall::ProtectMemory, LIST, 1);
    actions.extend(call(HekiCall::ProtectMemory, LIST2, 1));
    actions.push(access(AccessKind::Write, SEALED, 0));
    let (mut td, mut vcpu, rips) = setup(&actions);
    put_list(&mut td, LIST, &[(SEALED, SEALED + 0x1000, R | IMM)]);
    put_list(&mut td, LIST2, &[(SEALED, SEALED + 0x1000, R | W)]);
    let mut h = service();
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0);
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        status(Errno::EPERM)
    );
    assert_eq!(attr(&td, SEALED), L2Attr::VALID | L2Attr::R | L2Attr::XU);
    run(&mut td, &mut vcpu, &mut h);
    assert_eq!(td.events(), [gp0_at(rips[rips.len() - 2])]);
}

/// The test certificate (at [`CERT`]), one 133-byte blocklist slot, a
/// 16-byte kinfo; also two DER SEQUENCEs that are no certificates at [`BLOB`].
fn kdata_blobs(td: &mut Td) -> Vec<(u64, u64, u64)> {
    let certs = [0x30, 0x03, 1, 2, 3, 0x30, 0x00];
    let mut slot = [0u8; 133];
    slot[..8].copy_from_slice(b"bin:aabb");
    td.0.write_memory(BLOB, &certs).unwrap();
    td.0.write_memory(CERT, SIGNER_CERT).unwrap();
    td.0.write_memory(BLOB + 0x100, &slot).unwrap();
    td.0.write_memory(BLOB + 0x300, &[7u8; 16]).unwrap();
    vec![
        (
            CERT,
            CERT + SIGNER_CERT.len() as u64,
            KdataType::SystemCerts as u64,
        ),
        (
            BLOB + 0x100,
            BLOB + 0x100 + 133,
            KdataType::BlocklistHashes as u64,
        ),
        (BLOB + 0x300, BLOB + 0x310, KdataType::KernelInfo as u64),
    ]
}

#[test]
fn load_kdata_stores_the_blobs_once() {
    let mut actions = call(HekiCall::LoadKdata, LIST, 3);
    actions.extend(call(HekiCall::LoadKdata, LIST, 3));
    let (mut td, mut vcpu, _) = setup(&actions);
    let ranges = kdata_blobs(&mut td);
    put_list(&mut td, LIST, &ranges);
    let mut h = service();
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0);
    let k = h.kdata();
    assert_eq!((k.loads, k.certificates), (1, 1));
    assert_eq!(k.system_certs, SIGNER_CERT);
    assert_eq!(k.blocklist.len(), 133);
    assert_eq!(k.kernel_info, [7u8; 16]);
    assert_eq!(k.bytes(), SIGNER_CERT.len() + 133 + 16);
    assert_eq!(h.runtime().keyring().len(), 1);
    assert_eq!(h.runtime().blocklist().len(), 1);
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        status(Errno::EINVAL),
        "write-once"
    );
    assert_eq!(h.kdata().loads, 1);
}

#[test]
fn load_kdata_refuses_bad_blobs() {
    let mut config = HekiConfig::new(
        L2Vm::Vm1,
        (GUEST_START, GUEST_END),
        vec![(0, GUEST_START), (MMIO_PRIVATE, MMIO_PRIVATE + 0x1000)],
    );
    config.limits.max_blob_bytes = 0x200;
    config.max_kdata_bytes = 0x300;
    let cert = KdataType::SystemCerts as u64;
    let cases: Vec<(&str, Ranges, Errno)> = vec![
        (
            "no certificates",
            vec![(BLOB + 0x300, BLOB + 0x310, KdataType::KernelInfo as u64)],
            Errno::ENOENT,
        ),
        (
            "certificates are not DER",
            vec![(BLOB + 0x300, BLOB + 0x310, cert)],
            Errno::EINVAL,
        ),
        (
            "DER SEQUENCEs that are no certificates",
            vec![(BLOB, BLOB + 7, cert)],
            Errno::EINVAL,
        ),
        (
            "blocklist of a bad length",
            vec![
                (BLOB, BLOB + 7, cert),
                (
                    BLOB + 0x100,
                    BLOB + 0x100 + 100,
                    KdataType::BlocklistHashes as u64,
                ),
            ],
            Errno::EINVAL,
        ),
        (
            "blob in paravisor memory",
            vec![(BUF, BUF + 7, cert)],
            Errno::EFAULT,
        ),
        (
            "blob larger than the cap",
            vec![(BLOB, BLOB + 0x201, cert)],
            Errno::ERANGE,
        ),
        ("unknown type", vec![(BLOB, BLOB + 7, 9)], Errno::EINVAL),
        (
            "more kernel data in total than the cap",
            vec![
                (BLOB, BLOB + 7, cert),
                (BLOB + 0x400, BLOB + 0x600, KdataType::KernelData as u64),
                (BLOB + 0x600, BLOB + 0x800, KdataType::PatchInfo as u64),
            ],
            Errno::ERANGE,
        ),
    ];
    let mut actions = Vec::new();
    for (_, ranges, _) in &cases {
        actions.extend(call(HekiCall::LoadKdata, LIST, ranges.len() as u64));
    }
    let (mut td, mut vcpu, _) = setup(&actions);
    kdata_blobs(&mut td);
    let mut h = service_with(config);
    for (name, ranges, errno) in &cases {
        put_list(&mut td, LIST, ranges);
        assert_eq!(
            next_status(&mut td, &mut vcpu, &mut h),
            status(*errno),
            "{name}"
        );
    }
    assert_eq!(h.kdata().loads, 0);
}

/// Serves the probe echo id, like the bare-metal paravisor's next handler.
#[derive(Default)]
struct Echo(u64);

impl HypercallHandler for Echo {
    fn handle(&mut self, _: &mut HypercallContext<'_>, a: &HypercallArgs) -> u64 {
        if a.id == 0x1_FFFF {
            self.0 += 1;
            a.a1 ^ 0x5A5A_5A5A
        } else {
            ENOSYS
        }
    }
}

#[test]
fn end_of_boot_locks_the_boot_calls_and_removes_kernel_execute() {
    let mut actions = call(HekiCall::ProtectMemory, LIST, 1);
    actions.extend(call(HekiCall::SignalEndOfBoot, 0, 0));
    actions.extend(call(HekiCall::SignalEndOfBoot, 0, 0));
    actions.extend(call(HekiCall::LockRegs, 0, 0));
    actions.extend(call(HekiCall::ProtectMemory, LIST2, 1));
    actions.extend(call(HekiCall::LoadKdata, LIST, 3));
    actions.extend(call(HekiCall::KexecValidate, LIST, 1));
    actions.extend(raw_call(0x1_FFFF, 0x1234, 0));
    actions.extend([
        access(AccessKind::Fetch, LOOSE, 0),
        access(AccessKind::Fetch, TEXT, 0),
        access(AccessKind::Fetch, LOOSE, 3),
        access(AccessKind::Write, LOOSE, 0),
    ]);
    let (mut td, mut vcpu, rips) = setup(&actions);
    put_list(&mut td, LIST, &[(TEXT, TEXT + 0x1000, R | X)]);
    put_list(&mut td, LIST2, &[(KDATA, KDATA + 0x1000, R)]);
    let mut h = service().with_next(Echo::default());
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0);
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0);
    assert!(h.boot_ended());
    assert_eq!(h.ept.phase(), ept::Phase::Locked);
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0, "idempotent");
    for name in ["LOCK_REGS", "PROTECT_MEMORY", "LOAD_KDATA"] {
        assert_eq!(
            next_status(&mut td, &mut vcpu, &mut h),
            status(Errno::EPERM),
            "{name} after end of boot"
        );
    }
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        ENOSYS as i64,
        "other ids go to the next handler"
    );
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        0x1234 ^ 0x5A5A_5A5A
    );
    assert_eq!(h.next.0, 1);
    assert_eq!(
        h.ept.state(KDATA),
        PageState::KernelData,
        "not re-protected"
    );
    // Unprotected memory lost Xs; text kept it; private pages stay unaliased.
    let v = L2Attr::VALID;
    assert_eq!(attr(&td, LOOSE), v | L2Attr::R | L2Attr::W | L2Attr::XU);
    assert_eq!(attr(&td, TEXT), v | L2Attr::R | L2Attr::XS | L2Attr::XU);
    assert_eq!(attr(&td, MMIO_PRIVATE), L2Attr::empty());
    assert_eq!(h.stats.pages_made_nx, 1024 - 2);
    run(&mut td, &mut vcpu, &mut h);
    assert_eq!(td.events(), [gp0_at(rips[rips.len() - 5])]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Hostile lists: whatever the guest sends, the call returns 0 or one of
    /// the documented errnos, no page ends writable and supervisor-executable,
    /// and paravisor pages never get an alias.
    #[test]
    fn hostile_protect_memory_lists(
        ranges in proptest::collection::vec(
            (0u64..0x90u64, 1u64..0x40u64, 0u64..0x20u64, any::<bool>()),
            1..8,
        ),
        announced_extra in 0u64..2,
    ) {
        let list: Vec<(u64, u64, u64)> = ranges
            .iter()
            .map(|&(page, len, attr, unaligned)| {
                let pa = 0x3F_0000 + page * 0x8000 + if unaligned { 0x10 } else { 0 };
                (pa, pa + len * 0x1000, attr)
            })
            .collect();
        let actions = call(HekiCall::ProtectMemory, LIST, list.len() as u64 + announced_extra);
        let (mut td, mut vcpu, _) = setup(&actions);
        put_list(&mut td, LIST, &list);
        let mut h = service();
        let s = next_status(&mut td, &mut vcpu, &mut h);
        let allowed = [0, status(Errno::EINVAL), status(Errno::EFAULT), status(Errno::ERANGE)];
        prop_assert!(allowed.contains(&s), "status {}", s);
        for gpa in (0x30_0000..0x90_0000u64).step_by(0x1000) {
            let a = attr(&td, gpa);
            // Pages the service tracks are never W and Xs (untracked ones keep the boot alias).
            let tracked = h.ept.state(gpa) != PageState::Unmapped;
            prop_assert!(
                !(tracked && a.contains(L2Attr::W) && a.contains(L2Attr::XS)),
                "{:#x}: {:?}",
                gpa,
                a
            );
            if gpa < GUEST_START || gpa == MMIO_PRIVATE || gpa >= GUEST_END {
                prop_assert_eq!(a, L2Attr::empty(), "{:#x}", gpa);
            }
        }
        if s != 0 {
            prop_assert_eq!(h.stats.attr_writes, 0);
        }
    }
}
