//! The HEKI runtime calls against the TDX-module model: `VALIDATE_MODULE`,
//! `FREE_MODULE_INIT`, `UNLOAD_MODULE`, `COPY_SECONDARY_KEY` and
//! `PATCH_TEXT`, after a `heki_late_init` boot (LOCK_REGS, PROTECT_MEMORY,
//! LOAD_KDATA with the test certificate and the kernel's patch info,
//! SIGNAL_END_OF_BOOT).
//!
//! The module is `tests/data/heki-module/test_module.ko` (test-only key,
//! see its `gen.sh`). The test "loader" lays its sections out as Linux does
//! (`heki_tdx::elf` layout), one page per region at [`MODULE`], overwrites
//! every relocation and patch-site window (as relocation would), and passes
//! the regions, the signed file and the patch info in one `heki_page` list.

use super::*;
use heki_tdx::abi::ModMemType;
use heki_tdx::elf::{CheckConfig, LayoutConfig, ModuleElf};
use heki_tdx::modsig::{split_appended_signature, DigestAlg};
use heki_tdx::patch::{HekiPatch, INT3, NOP5};
use paravisor::heki::CHECKED_SECTIONS;

const KO: &[u8] = include_bytes!("../../../data/heki-module/test_module.ko");
const UNSIGNED: &[u8] = include_bytes!("../../../data/heki-module/test_module.o");
const KO_SECONDARY: &[u8] = include_bytes!("../../../data/heki-module/test_module_secondary.ko");
const SECONDARY_CERT: &[u8] = include_bytes!("../../../data/heki-module/secondary.crt.der");
const ROGUE_CERT: &[u8] = include_bytes!("../../../data/heki-module/rogue.crt.der");

/// Region `k` of the module lives at `MODULE + k * 4 KiB`.
const MODULE: u64 = 0x78_0000;
/// The signed file, the patch info, patch requests and key payloads.
const ELF_AT: u64 = 0x7A_0000;
const PATCH_AT: u64 = 0x7B_0000;
const REQ: u64 = 0x7C_0000;
const KEY_AT: u64 = 0x7D_0000;
/// Offsets in the test module's text (test_module.S).
const ADD_OFF: u64 = 0;
const SITE_OFF: u64 = 16;
/// A kernel jump-label site inside the protected kernel text [`TEXT`].
const KSITE: u64 = TEXT + 0x100;
const JMP5: [u8; 5] = [0xE9, 0x20, 0x00, 0x00, 0x00];

fn region(kind: ModMemType) -> u64 {
    MODULE + kind as u64 * 0x1000
}

fn text() -> u64 {
    region(ModMemType::Text)
}

/// `heki_patch_info` (jump label) holding a JMP5 at each of `sites`.
fn patch_info(sites: &[u64]) -> Vec<u8> {
    let mut b = vec![0u8; 48];
    b[32..40].copy_from_slice(&(sites.len() as u64).to_le_bytes());
    b[40..48].copy_from_slice(&(sites.len() as u64).to_le_bytes());
    for s in sites {
        b.extend_from_slice(&jmp_patch(*s, &JMP5).to_bytes());
    }
    b
}

fn jmp_patch(pa: u64, code: &[u8]) -> HekiPatch {
    let mut c = [0u8; 5];
    c[..code.len()].copy_from_slice(code);
    HekiPatch {
        pa: [pa, 0],
        size: code.len() as u8,
        code: c,
    }
}

/// Lays `ko` out in guest memory like the guest loader; returns the
/// `VALIDATE_MODULE` ranges: the regions, the file, and the patch info if
/// `sites` is not empty.
fn load(td: &mut Td, ko: &[u8], sites: &[u64]) -> Ranges {
    let content = split_appended_signature(ko).map_or(ko, |p| p.content);
    let elf = ModuleElf::parse(content).unwrap();
    let cfg = CheckConfig::default();
    let mut ranges = Vec::new();
    for r in elf.layout(&LayoutConfig::default()).unwrap() {
        if r.size == 0 {
            continue;
        }
        assert!(r.size <= 0x1000, "the test module has one page per region");
        let mut page = vec![0u8; 0x1000];
        for p in &r.placements {
            let d = elf.section_data(p.section);
            page[p.offset as usize..p.offset as usize + d.len()].copy_from_slice(d);
        }
        if CHECKED_SECTIONS.contains(&r.kind) {
            for w in elf.patchable_ranges(r.kind, &cfg).unwrap() {
                for (i, b) in page[w.start as usize..w.end as usize]
                    .iter_mut()
                    .enumerate()
                {
                    *b = 0xA5 ^ i as u8;
                }
            }
        }
        let base = region(r.kind);
        td.0.write_memory(base, &page).unwrap();
        ranges.push((base, base + 0x1000, r.kind as u64));
    }
    td.0.write_memory(ELF_AT, ko).unwrap();
    ranges.push((ELF_AT, ELF_AT + ko.len() as u64, ModMemType::Elf as u64));
    if !sites.is_empty() {
        let info = patch_info(sites);
        td.0.write_memory(PATCH_AT, &info).unwrap();
        ranges.push((
            PATCH_AT,
            PATCH_AT + info.len() as u64,
            ModMemType::Patch as u64,
        ));
    }
    ranges
}

/// `heki_late_init`: LOCK_REGS, PROTECT_MEMORY (kernel text [`TEXT`] R|X,
/// [`KDATA`] R|W, [`SEALED`] sealed read-only), LOAD_KDATA (the certificate
/// and the kernel's patch info with one site at [`KSITE`]),
/// SIGNAL_END_OF_BOOT.
fn late_init_actions() -> Vec<L2Action> {
    let mut a = call(HekiCall::LockRegs, 0, 0);
    a.extend(call(HekiCall::ProtectMemory, LIST, 3));
    a.extend(call(HekiCall::LoadKdata, LIST2, 2));
    a.extend(call(HekiCall::SignalEndOfBoot, 0, 0));
    a
}

fn late_init(td: &mut Td, vcpu: &mut Vcpu, h: &mut HekiService) {
    late_init_with(td, vcpu, h, &patch_info(&[KSITE]));
    assert_eq!(h.runtime().patches().len(), 1);
}

/// [`late_init`] with `info` as the kernel's patch info.
fn late_init_with(td: &mut Td, vcpu: &mut Vcpu, h: &mut HekiService, info: &[u8]) {
    put_list(
        td,
        LIST,
        &[
            (TEXT, TEXT + 0x2000, R | X),
            (KDATA, KDATA + 0x1000, R | W),
            (SEALED, SEALED + 0x1000, R | IMM),
        ],
    );
    td.0.write_memory(KSITE, &NOP5).unwrap();
    td.0.write_memory(CERT, SIGNER_CERT).unwrap();
    td.0.write_memory(BLOB, info).unwrap();
    put_list(
        td,
        LIST2,
        &[
            (
                CERT,
                CERT + SIGNER_CERT.len() as u64,
                KdataType::SystemCerts as u64,
            ),
            (BLOB, BLOB + info.len() as u64, KdataType::PatchInfo as u64),
        ],
    );
    for name in ["LOCK_REGS", "PROTECT_MEMORY", "LOAD_KDATA", "END_OF_BOOT"] {
        assert_eq!(next_status(td, vcpu, h), 0, "{name}");
    }
    assert_eq!(h.runtime().keyring().len(), 1);
}

/// A booted TD whose script is `late_init_actions()` then `actions`.
fn booted(actions: &[L2Action]) -> (Td, Vcpu, HekiService, Vec<u64>) {
    let mut all = late_init_actions();
    let skip = all.len();
    all.extend_from_slice(actions);
    let (mut td, mut vcpu, rips) = setup(&all);
    let mut h = service();
    late_init(&mut td, &mut vcpu, &mut h);
    (td, vcpu, h, rips[skip..].to_vec())
}

fn validate(ranges: usize) -> Vec<L2Action> {
    call(HekiCall::ValidateModule, LIST, ranges as u64)
}

/// L2 attribute with VALID.
fn va(a: L2Attr) -> L2Attr {
    L2Attr::VALID | a
}

const RX: L2Attr = L2Attr::R.union(L2Attr::XS).union(L2Attr::XU);
const RO: L2Attr = L2Attr::R.union(L2Attr::XU);
const RWD: L2Attr = L2Attr::R.union(L2Attr::W).union(L2Attr::XU);

/// Every module region page is ordinary kernel data again.
fn assert_all_data(td: &Td, h: &HekiService, what: &str) {
    for k in ModMemType::SECTIONS {
        assert_eq!(attr(td, region(k)), va(RWD), "{what}: {k:?}");
        assert_eq!(h.ept.state(region(k)), PageState::KernelData, "{what}");
        assert_eq!(h.runtime().owner_of(region(k)), None, "{what}");
    }
}

#[test]
fn late_init_loads_keys_and_kernel_patch_sites() {
    let (_, _, h, _) = booted(&[]);
    let rt = h.runtime();
    assert_eq!(
        rt.keyring().keys()[0].subject,
        "CN=lvbs-tdx HEKI test signer"
    );
    assert!(rt.patches().site(KSITE).is_some());
    assert!(h.boot_ended());
    assert_eq!(h.kdata().certificates, 1);
}

#[test]
fn validate_module_sets_section_permissions_and_returns_a_token() {
    // After validation: write module text, fetch it at CPL 0, fetch module
    // data at CPL 0, write module data, write module rodata.
    let more = [
        access(AccessKind::Write, text(), 0),
        access(AccessKind::Fetch, text(), 0),
        access(AccessKind::Fetch, region(ModMemType::Data), 0),
        access(AccessKind::Write, region(ModMemType::Data), 0),
        access(AccessKind::Write, region(ModMemType::Rodata), 0),
    ];
    let (mut td, mut vcpu, mut h, _, rips) = with_module(&more);
    let writes = attr_writes(&td);
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0, "token 0");
    assert!(attr_writes(&td) > writes);
    assert!(vcpu.invalidation_pending());
    use ModMemType::*;
    for (k, want) in [
        (Text, RX),
        (Rodata, RO),
        (Data, RWD),
        (RoAfterInit, RWD),
        (InitText, RX),
        (InitData, RWD),
        (InitRodata, RO),
    ] {
        assert_eq!(attr(&td, region(k)), va(want), "{k:?}");
        assert_eq!(h.runtime().owner_of(region(k)), Some(0), "{k:?}");
    }
    let m = &h.runtime().modules()[&0];
    assert_eq!(m.signer, "CN=lvbs-tdx HEKI test signer");
    assert_eq!((m.sections.len(), m.patch_sites), (7, 1));
    assert_eq!(h.runtime().next_token(), 1);
    assert_eq!(h.stats.modules_validated, 1);
    assert!(h.runtime().patches().site(text() + SITE_OFF).is_some());
    assert_eq!(
        run(&mut td, &mut vcpu, &mut h),
        paravisor::StopReason::Halted
    );
    // Text and rodata writes fault, the data fetch faults; the text fetch
    // and the data write run.
    let n = rips.len();
    assert_eq!(
        td.events(),
        [
            gp0_at(rips[n - 6]),
            gp0_at(rips[n - 4]),
            gp0_at(rips[n - 2])
        ]
    );
}

/// A booted TD with the module laid out and `VALIDATE_MODULE` (then `more`)
/// scripted; returns the module's ranges too.
fn with_module(more: &[L2Action]) -> (Td, Vcpu, HekiService, Ranges, Vec<u64>) {
    let ranges = module_ranges();
    let mut actions = validate(ranges.len());
    actions.extend_from_slice(more);
    let (mut td, vcpu, h, rips) = booted(&actions);
    load(&mut td, KO, &[text() + SITE_OFF]);
    put_list(&mut td, LIST, &ranges);
    (td, vcpu, h, ranges, rips)
}

/// The `VALIDATE_MODULE` ranges of the test module with its patch site.
fn module_ranges() -> Ranges {
    let (mut td, _, _) = setup(&[]);
    load(&mut td, KO, &[text() + SITE_OFF])
}

#[test]
fn free_init_and_unload_tear_the_permissions_down_tokens_are_never_reused() {
    let mut more = call(HekiCall::FreeModuleInit, 0, 0);
    more.extend(call(HekiCall::FreeModuleInit, 0, 0));
    more.extend(call(HekiCall::FreeModuleInit, 7, 0));
    more.extend(call(HekiCall::UnloadModule, 0, 0));
    more.extend(call(HekiCall::UnloadModule, 0, 0));
    more.extend(call(HekiCall::FreeModuleInit, 0, 0));
    more.extend(call(HekiCall::UnloadModule, u64::MAX, 0));
    let ranges = module_ranges();
    more.extend(validate(ranges.len()));
    more.extend(call(HekiCall::UnloadModule, 1, 0));
    let (mut td, mut vcpu, mut h, ranges, _) = with_module(&more);
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0);
    assert_eq!(h.runtime().patches().len(), 2);

    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0, "free init");
    use ModMemType::*;
    for (k, want) in [
        (Text, RX),
        (Rodata, RO),
        (Data, RWD),
        (RoAfterInit, RO),
        (InitText, RWD),
        (InitData, RWD),
        (InitRodata, RWD),
    ] {
        assert_eq!(attr(&td, region(k)), va(want), "{k:?} after free init");
    }
    assert_eq!(h.runtime().owner_of(region(InitText)), None);
    assert_eq!(h.runtime().owner_of(region(Text)), Some(0));
    assert!(h.runtime().modules()[&0].init_freed);
    let e = |e: Errno| status(e);
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        e(Errno::EINVAL),
        "second free"
    );
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        e(Errno::EINVAL),
        "unknown token"
    );
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0, "unload");
    assert_all_data(&td, &h, "after unload");
    assert!(h.runtime().modules().is_empty());
    assert_eq!(h.runtime().patches().len(), 1, "the kernel site stays");
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        e(Errno::EINVAL),
        "second unload"
    );
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        e(Errno::EINVAL),
        "free after unload"
    );
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        e(Errno::EINVAL),
        "token -1"
    );
    // The same frames validate again, under a new token.
    put_list(&mut td, LIST, &ranges);
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 1, "new token");
    assert_eq!(attr(&td, text()), va(RX));
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0, "unload 1");
    assert_all_data(&td, &h, "after the second unload");
    assert_eq!(h.stats.modules_validated, 2);
}

/// Rewrites the list for one refused case; returns `(ranges, expected errno)`.
type Case = (&'static str, fn(&mut Td, &mut Ranges), Errno);

fn flip_text_byte(td: &mut Td, _: &mut Ranges) {
    // Offset 1 of heki_test_add: not a relocation window.
    let mut b = [0u8];
    td.0.read_memory(text() + 1, &mut b).unwrap();
    td.0.write_memory(text() + 1, &[b[0] ^ 0x40]).unwrap();
}

fn flip_file_byte(td: &mut Td, _: &mut Ranges) {
    let mut b = [0u8];
    td.0.read_memory(ELF_AT + 0x50, &mut b).unwrap();
    td.0.write_memory(ELF_AT + 0x50, &[b[0] ^ 1]).unwrap();
}

fn unsigned_file(td: &mut Td, r: &mut Ranges) {
    td.0.write_memory(ELF_AT, UNSIGNED).unwrap();
    set_file_len(r, UNSIGNED.len());
}

fn secondary_signed(td: &mut Td, r: &mut Ranges) {
    td.0.write_memory(ELF_AT, KO_SECONDARY).unwrap();
    set_file_len(r, KO_SECONDARY.len());
}

fn set_file_len(r: &mut Ranges, len: usize) {
    for x in r.iter_mut() {
        if x.2 == ModMemType::Elf as u64 {
            x.1 = x.0 + len as u64;
        }
    }
}

fn text_over_kernel_text(_: &mut Td, r: &mut Ranges) {
    r[0] = (TEXT, TEXT + 0x1000, 0);
}

fn data_over_kernel_text(_: &mut Td, r: &mut Ranges) {
    let i = r
        .iter()
        .position(|x| x.2 == ModMemType::Data as u64)
        .unwrap();
    r[i] = (TEXT + 0x1000, TEXT + 0x2000, ModMemType::Data as u64);
}

fn data_over_sealed(_: &mut Td, r: &mut Ranges) {
    let i = r
        .iter()
        .position(|x| x.2 == ModMemType::Data as u64)
        .unwrap();
    r[i] = (SEALED_PAGE, SEALED_PAGE + 0x1000, ModMemType::Data as u64);
}

fn data_in_paravisor_memory(_: &mut Td, r: &mut Ranges) {
    let i = r
        .iter()
        .position(|x| x.2 == ModMemType::Data as u64)
        .unwrap();
    r[i] = (MMIO_PRIVATE, MMIO_PRIVATE + 0x1000, ModMemType::Data as u64);
}

fn data_outside_l2(_: &mut Td, r: &mut Ranges) {
    let i = r
        .iter()
        .position(|x| x.2 == ModMemType::Data as u64)
        .unwrap();
    r[i] = (GUEST_END, GUEST_END + 0x1000, ModMemType::Data as u64);
}

fn shared_frame(_: &mut Td, r: &mut Ranges) {
    let i = r
        .iter()
        .position(|x| x.2 == ModMemType::Data as u64)
        .unwrap();
    r[i] = (text(), text() + 0x1000, ModMemType::Data as u64);
}

fn text_region_too_large(_: &mut Td, r: &mut Ranges) {
    r[0].1 += 0x1000;
}

fn site_outside_text(td: &mut Td, _: &mut Ranges) {
    let info = patch_info(&[region(ModMemType::Data) + 8]);
    td.0.write_memory(PATCH_AT, &info).unwrap();
}

fn site_not_a_jump(td: &mut Td, _: &mut Ranges) {
    let mut info = patch_info(&[text() + SITE_OFF]);
    info[48 + 17] = 0x90;
    td.0.write_memory(PATCH_AT, &info).unwrap();
}

fn misaligned_section(_: &mut Td, r: &mut Ranges) {
    r[0].0 += 8;
}

/// The page [`late_init`] sealed read-only.
const SEALED_PAGE: u64 = SEALED;

#[test]
fn tampered_or_misplaced_modules_are_refused_and_frames_roll_back() {
    let cases: Vec<Case> = vec![
        (
            "a text byte changed after loading",
            flip_text_byte,
            Errno::EINVAL,
        ),
        (
            "a byte of the signed file flipped",
            flip_file_byte,
            Errno::EKEYREJECTED,
        ),
        ("unsigned module", unsigned_file, Errno::ENODATA),
        ("signed by an unknown key", secondary_signed, Errno::ENOKEY),
        (
            "text over kernel text",
            text_over_kernel_text,
            Errno::EINVAL,
        ),
        (
            "data over kernel text (W on text)",
            data_over_kernel_text,
            Errno::EINVAL,
        ),
        ("data over a sealed page", data_over_sealed, Errno::EINVAL),
        (
            "data over the paravisor's MMIO page",
            data_in_paravisor_memory,
            Errno::EINVAL,
        ),
        ("data outside L2 memory", data_outside_l2, Errno::EFAULT),
        ("data and text share a frame", shared_frame, Errno::EINVAL),
        (
            "text region larger than the layout",
            text_region_too_large,
            Errno::EINVAL,
        ),
        (
            "patch site outside the module text",
            site_outside_text,
            Errno::EINVAL,
        ),
        (
            "patch site that is not a JMP",
            site_not_a_jump,
            Errno::EINVAL,
        ),
        ("misaligned section", misaligned_section, Errno::EINVAL),
    ];
    let ranges = module_ranges();
    let mut actions = Vec::new();
    for _ in &cases {
        actions.extend(validate(ranges.len()));
    }
    // Afterwards the untouched module still validates (token 0: none was handed out).
    actions.extend(validate(ranges.len()));
    let (mut td, mut vcpu, mut h, _) = booted(&actions);
    for (name, tamper, errno) in &cases {
        let mut r = load(&mut td, KO, &[text() + SITE_OFF]);
        tamper(&mut td, &mut r);
        put_list(&mut td, LIST, &r);
        assert_eq!(
            next_status(&mut td, &mut vcpu, &mut h),
            status(*errno),
            "{name}"
        );
        assert_all_data(&td, &h, name);
        assert_eq!(attr(&td, TEXT), va(RX), "{name}: kernel text untouched");
        assert_eq!(h.runtime().next_token(), 0, "{name}");
        assert_eq!(
            h.runtime().patches().len(),
            1,
            "{name}: only the kernel site"
        );
    }
    load(&mut td, KO, &[text() + SITE_OFF]);
    put_list(&mut td, LIST, &ranges);
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0);
    assert_eq!(h.stats.modules_validated, 1);
}

#[test]
fn modules_need_certificates_and_respect_the_file_cap() {
    let ranges = module_ranges();
    let mut actions = validate(ranges.len());
    actions.extend(call(HekiCall::CopySecondaryKey, LIST2, 1));
    let (mut td, mut vcpu, _) = setup(&actions);
    load(&mut td, KO, &[]);
    put_list(&mut td, LIST, &ranges[..ranges.len() - 1]);
    td.0.write_memory(KEY_AT, SECONDARY_CERT).unwrap();
    put_list(
        &mut td,
        LIST2,
        &[(KEY_AT, KEY_AT + SECONDARY_CERT.len() as u64, 0)],
    );
    let mut h = service();
    // Announced one range more than the list holds: still -EACCES first.
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        status(Errno::EACCES),
        "no LOAD_KDATA yet"
    );
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        status(Errno::EACCES),
        "no keyring for a secondary key"
    );

    let mut config = HekiConfig::new(
        L2Vm::Vm1,
        (GUEST_START, GUEST_END),
        vec![(0, GUEST_START), (MMIO_PRIVATE, MMIO_PRIVATE + 0x1000)],
    );
    config.max_module_bytes = 1024;
    let mut all = late_init_actions();
    all.extend(validate(ranges.len()));
    let (mut td, mut vcpu, _) = setup(&all);
    let mut h = service_with(config);
    late_init(&mut td, &mut vcpu, &mut h);
    let r = load(&mut td, KO, &[text() + SITE_OFF]);
    put_list(&mut td, LIST, &r);
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        status(Errno::ERANGE),
        "module file over the cap"
    );
    assert_all_data(&td, &h, "file cap");

    // Checked regions over twice the cap (the file itself fits).
    let mut config = HekiConfig::new(
        L2Vm::Vm1,
        (GUEST_START, GUEST_END),
        vec![(0, GUEST_START), (MMIO_PRIVATE, MMIO_PRIVATE + 0x1000)],
    );
    config.max_module_bytes = 0x1000;
    let mut all = late_init_actions();
    all.extend(validate(ranges.len()));
    let (mut td, mut vcpu, _) = setup(&all);
    let mut h = service_with(config);
    late_init(&mut td, &mut vcpu, &mut h);
    let r = load(&mut td, KO, &[text() + SITE_OFF]);
    put_list(&mut td, LIST, &r);
    let writes = attr_writes(&td);
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        status(Errno::ERANGE),
        "four checked pages over 2 x 4 KiB"
    );
    assert_eq!(attr_writes(&td), writes, "refused before the freeze");
    assert_all_data(&td, &h, "region cap");
}

#[test]
fn blocklisted_module_and_revoked_signer_are_refused() {
    // bin:<sha256 of the signed content> in LOAD_KDATA type 2.
    let content = split_appended_signature(KO).unwrap().content;
    let mut slot = [0u8; 133];
    slot[..4].copy_from_slice(b"bin:");
    for (i, b) in DigestAlg::Sha256.digest(content).iter().enumerate() {
        let hex = format!("{b:02x}");
        slot[4 + 2 * i..6 + 2 * i].copy_from_slice(hex.as_bytes());
    }
    let ranges = module_ranges();
    let mut actions = call(HekiCall::LoadKdata, LIST2, 2);
    actions.extend(call(HekiCall::SignalEndOfBoot, 0, 0));
    actions.extend(validate(ranges.len()));
    let (mut td, mut vcpu, _) = setup(&actions);
    td.0.write_memory(CERT, SIGNER_CERT).unwrap();
    td.0.write_memory(BLOB, &slot).unwrap();
    let cert = (
        CERT,
        CERT + SIGNER_CERT.len() as u64,
        KdataType::SystemCerts as u64,
    );
    put_list(
        &mut td,
        LIST2,
        &[cert, (BLOB, BLOB + 133, KdataType::BlocklistHashes as u64)],
    );
    let mut h = service();
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0);
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0);
    load(&mut td, KO, &[text() + SITE_OFF]);
    put_list(&mut td, LIST, &ranges);
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        status(Errno::EKEYREJECTED),
        "module hash on the blocklist"
    );
    assert_all_data(&td, &h, "blocklisted module");

    // The signer's certificate as a revocation certificate: no usable key.
    let actions = call(HekiCall::LoadKdata, LIST2, 2);
    let (mut td, mut vcpu, _) = setup(&actions);
    td.0.write_memory(CERT, SIGNER_CERT).unwrap();
    td.0.write_memory(BLOB, SIGNER_CERT).unwrap();
    put_list(
        &mut td,
        LIST2,
        &[
            cert,
            (
                BLOB,
                BLOB + SIGNER_CERT.len() as u64,
                KdataType::RevocationCerts as u64,
            ),
        ],
    );
    let mut h = service();
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        status(Errno::ENOKEY),
        "revoked signer"
    );
    assert!(h.runtime().keyring().is_empty());
    assert_eq!(h.kdata().loads, 0);
}

#[test]
fn secondary_keys_must_be_signed_by_a_trusted_key() {
    let ranges = module_ranges();
    let key = |a1| call(HekiCall::CopySecondaryKey, a1, 1);
    let mut actions = validate(ranges.len());
    actions.extend(key(LIST2)); // rogue
    actions.extend(key(LIST2)); // wrong attribute
    actions.extend(key(LIST2)); // not DER
    actions.extend(key(LIST2)); // secondary
    actions.extend(validate(ranges.len()));
    let (mut td, mut vcpu, mut h, _) = booted(&actions);
    load(&mut td, KO_SECONDARY, &[text() + SITE_OFF]);
    put_list(&mut td, LIST, &ranges);
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        status(Errno::ENOKEY),
        "secondary key not trusted yet"
    );
    let payload = |td: &mut Td, der: &[u8], attr: u64| {
        td.0.write_memory(KEY_AT, der).unwrap();
        put_list(td, LIST2, &[(KEY_AT, KEY_AT + der.len() as u64, attr)]);
    };
    payload(&mut td, ROGUE_CERT, 0);
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        status(Errno::EKEYREJECTED),
        "self-signed, claims the signer's name"
    );
    payload(&mut td, SECONDARY_CERT, 1);
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        status(Errno::EINVAL),
        "attribute must be 0"
    );
    payload(&mut td, &[0x30, 0x03, 1, 2, 3], 0);
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        status(Errno::EINVAL),
        "not a certificate"
    );
    payload(&mut td, SECONDARY_CERT, 0);
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0);
    assert_eq!(h.runtime().keyring().len(), 2);
    load(&mut td, KO_SECONDARY, &[text() + SITE_OFF]);
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0, "token 0");
    assert_eq!(
        h.runtime().modules()[&0].signer,
        "CN=lvbs-tdx HEKI test secondary"
    );
}

/// `PATCH_TEXT` of `code` at `pa` (request at [`REQ`]).
fn poke(td: &mut Td, pa: u64, code: &[u8]) {
    td.0.write_memory(REQ, &jmp_patch(pa, code).to_bytes())
        .unwrap();
}

fn read(td: &Td, gpa: u64, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    td.0.read_memory(gpa, &mut b).unwrap();
    b
}

#[test]
fn patch_text_accepts_only_registered_sites_in_protocol_order() {
    let p = || call(HekiCall::PatchText, REQ, 0);
    let site = text() + SITE_OFF;
    let mut more = Vec::new();
    for _ in 0..14 {
        more.extend(p());
    }
    more.extend(call(HekiCall::UnloadModule, 0, 0));
    more.extend(p());
    let (mut td, mut vcpu, mut h, _, _) = with_module(&more);
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0, "validated");
    let steps: Vec<(&str, u64, Vec<u8>, i64)> = vec![
        (
            "unregistered bytes in module text",
            text() + ADD_OFF,
            vec![INT3],
            status(Errno::ENOENT),
        ),
        (
            "tail without INT3",
            site + 1,
            JMP5[1..].to_vec(),
            status(Errno::EACCES),
        ),
        (
            "first byte without INT3",
            site,
            vec![0xE9],
            status(Errno::EACCES),
        ),
        ("step 1: INT3", site, vec![INT3], 0),
        (
            "step 2 with foreign bytes",
            site + 1,
            vec![1, 2, 3, 4],
            status(Errno::EACCES),
        ),
        ("step 2: JMP tail", site + 1, JMP5[1..].to_vec(), 0),
        ("step 3: first byte", site, vec![0xE9], 0),
        ("JMP -> NOP step 1", site, vec![INT3], 0),
        ("JMP -> NOP step 2", site + 1, NOP5[1..].to_vec(), 0),
        ("JMP -> NOP step 3", site, vec![NOP5[0]], 0),
        ("kernel site step 1", KSITE, vec![INT3], 0),
        ("kernel site step 2", KSITE + 1, JMP5[1..].to_vec(), 0),
        ("kernel site step 3", KSITE, vec![0xE9], 0),
        (
            "bytes in module data",
            region(ModMemType::Data),
            vec![INT3],
            status(Errno::EACCES),
        ),
    ];
    for (name, pa, code, want) in &steps {
        poke(&mut td, *pa, code);
        assert_eq!(next_status(&mut td, &mut vcpu, &mut h), *want, "{name}");
        if name.starts_with("step 1") {
            assert_eq!(read(&td, site, 1), [INT3]);
        }
        if *name == "step 3: first byte" {
            assert_eq!(read(&td, site, 5), JMP5, "the paravisor wrote the JMP");
        }
    }
    assert_eq!(read(&td, site, 5), NOP5);
    assert_eq!(read(&td, KSITE, 5), JMP5);
    assert_eq!(attr(&td, text()), va(RX), "text never became writable");
    assert_eq!(h.stats.patches_applied, 9);
    // After unload the site is gone and the page is data.
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0);
    poke(&mut td, site, &[INT3]);
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        status(Errno::EACCES)
    );
    assert_eq!(h.runtime().patches().len(), 1);
}

#[test]
fn kernel_sites_inside_module_text_are_not_patched() {
    // LOAD_KDATA registers a kernel site where the module's text will be.
    let ranges = module_ranges();
    let mut actions = late_init_actions();
    actions.extend(validate(ranges.len()));
    actions.extend(call(HekiCall::PatchText, REQ, 0));
    let (mut td, mut vcpu, _) = setup(&actions);
    let mut h = service();
    let rogue = text() + ADD_OFF;
    let info = patch_info(&[KSITE, rogue]);
    late_init_with(&mut td, &mut vcpu, &mut h, &info);
    assert_eq!(h.runtime().patches().len(), 2);
    load(&mut td, KO, &[text() + SITE_OFF]);
    put_list(&mut td, LIST, &ranges);
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0);
    poke(&mut td, rogue, &[INT3]);
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        status(Errno::EACCES),
        "kernel site in module text"
    );
    assert_eq!(read(&td, rogue, 1), [KO_TEXT_FIRST_BYTE]);
}

/// The first byte of `heki_test_add` (`lea`).
const KO_TEXT_FIRST_BYTE: u8 = 0x8D;

#[test]
fn patch_text_requests_are_bounded() {
    let mut more = call(HekiCall::PatchText, 0, 0);
    more.extend(call(HekiCall::PatchText, REQ + 0xFF0, 0));
    more.extend(call(HekiCall::PatchText, REQ, REQ + 0x1000));
    more.extend(call(HekiCall::PatchText, BUF, 0));
    more.extend(call(HekiCall::PatchText, REQ, 0));
    let (mut td, mut vcpu, mut h, _, _) = with_module(&more);
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0);
    poke(&mut td, text() + SITE_OFF, &[INT3]);
    for (name, errno) in [
        ("null request", Errno::EINVAL),
        ("straddling request without its second page", Errno::EINVAL),
        ("second page for a request that fits", Errno::EINVAL),
        ("request in paravisor memory", Errno::EFAULT),
    ] {
        assert_eq!(
            next_status(&mut td, &mut vcpu, &mut h),
            status(errno),
            "{name}"
        );
    }
    let mut bad = jmp_patch(text() + SITE_OFF, &[INT3]).to_bytes();
    bad[16] = 6;
    td.0.write_memory(REQ, &bad).unwrap();
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        status(Errno::EINVAL),
        "size 6"
    );
    assert_eq!(h.stats.patches_applied, 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Hostile module requests: ranges of any type over the module area,
    /// kernel text, the paravisor's pages, with a corrupted byte somewhere.
    /// The call returns a token or a documented errno, no page ends writable
    /// and supervisor-executable, kernel text keeps its state, and a refused
    /// call leaves every module frame ordinary kernel data.
    #[test]
    fn hostile_module_requests(
        picks in proptest::collection::vec((0u64..12, 0u64..9, 1u64..3), 0..6),
        corrupt in proptest::option::of((0u64..0x1000, 0u64..7, any::<u8>())),
        drop_first in any::<bool>(),
    ) {
        let base = module_ranges();
        let mut ranges: Ranges = if drop_first { base[1..].to_vec() } else { base.clone() };
        for (page, ty, len) in &picks {
            let pa = match page {
                0..=6 => region(ModMemType::SECTIONS[*page as usize]),
                7 => TEXT,
                8 => MMIO_PRIVATE,
                9 => GUEST_END - 0x1000,
                10 => KDATA,
                _ => GUEST_START - 0x1000,
            };
            ranges.push((pa, pa + len * 0x1000, *ty));
        }
        ranges.truncate(127);
        let (mut td, mut vcpu, mut h, _) = booted(&validate(ranges.len()));
        load(&mut td, KO, &[text() + SITE_OFF]);
        if let Some((off, k, x)) = corrupt {
            let gpa = region(ModMemType::SECTIONS[k as usize]) + off;
            let b = read(&td, gpa, 1)[0];
            td.0.write_memory(gpa, &[b ^ x]).unwrap();
        }
        put_list(&mut td, LIST, &ranges);
        let s = next_status(&mut td, &mut vcpu, &mut h);
        let allowed = [
            0,
            status(Errno::EINVAL),
            status(Errno::EFAULT),
            status(Errno::ERANGE),
            status(Errno::EKEYREJECTED),
            status(Errno::ELIBBAD),
            status(Errno::ENODATA),
            status(Errno::ENOENT),
            status(Errno::ENOKEY),
            status(Errno::ENOPKG),
        ];
        prop_assert!(allowed.contains(&s), "status {}", s);
        for gpa in (GUEST_START..GUEST_END).step_by(0x1000) {
            let a = attr(&td, gpa);
            let tracked = h.ept.state(gpa) != PageState::Unmapped;
            prop_assert!(!(tracked && a.contains(L2Attr::W) && a.contains(L2Attr::XS)), "{:#x}", gpa);
        }
        prop_assert_eq!(attr(&td, TEXT), va(RX));
        prop_assert_eq!(attr(&td, MMIO_PRIVATE), L2Attr::empty());
        if s < 0 {
            prop_assert_eq!(h.runtime().next_token(), 0);
            for k in ModMemType::SECTIONS {
                prop_assert_eq!(attr(&td, region(k)), va(RWD));
            }
        } else {
            prop_assert_eq!(s, 0);
            prop_assert_eq!(attr(&td, text()), va(RX));
        }
    }
}

#[test]
fn admissions_are_extended_into_rtmr2_before_the_code_runs() {
    use paravisor::measure::{
        replay, sha384, AdmissionKind, Event, MeasureBuffers, MeasuredBoot, RTMR_ADMISSIONS,
    };
    // An L1-private page below the guest memory for the TDCALL buffers.
    const MEASURE_PAGE: u64 = 0x7_0000;
    let site = text() + SITE_OFF;
    let more = call(HekiCall::PatchText, REQ, 0);
    let (mut td, mut vcpu, mut h, _, _) = with_module(&more);
    let m = MeasuredBoot::new(MeasureBuffers::in_page(MEASURE_PAGE))
        .unwrap()
        .shared();
    h.measurements = Some(m.clone());
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0, "validated");
    poke(&mut td, site, &[INT3]);
    assert_eq!(next_status(&mut td, &mut vcpu, &mut h), 0, "patch step 1");
    // Module digest = SHA-384 of the signed file; patch digest over
    // (GPA, length, bytes) of each write.
    let mut record = site.to_le_bytes().to_vec();
    record.extend_from_slice(&1u32.to_le_bytes());
    record.push(INT3);
    let expected = [
        Event::admission(AdmissionKind::Module, &sha384(KO)),
        Event::admission(AdmissionKind::TextPatch, &sha384(&record)),
    ];
    assert_eq!(m.borrow().log().events(), expected);
    assert_eq!(h.stats.admissions_recorded, 2);
    let rtmr2 = td.0.rtmr(RTMR_ADMISSIONS as usize).unwrap();
    assert_eq!(rtmr2, replay(&expected)[RTMR_ADMISSIONS as usize]);

    // A failed extend refuses the admission and rolls the frames back: the
    // TDCALL buffers lie in memory that is not L1's.
    let (mut td, mut vcpu, mut h, _, _) = with_module(&[]);
    let bad = MeasuredBoot::new(MeasureBuffers::in_page(0x7FFF_F000))
        .unwrap()
        .shared();
    h.measurements = Some(bad.clone());
    assert_eq!(
        next_status(&mut td, &mut vcpu, &mut h),
        status(Errno::EIO),
        "unrecorded module refused"
    );
    assert_eq!(td.0.rtmr(RTMR_ADMISSIONS as usize).unwrap(), [0; 48]);
    assert!(bad.borrow().log().events().is_empty());
    assert_eq!(
        h.runtime().next_token(),
        0,
        "no token for the refused module"
    );
    assert_all_data(&td, &h, "unrecorded module");
}
