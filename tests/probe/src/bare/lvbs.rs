//! The LVBS boot sequence as a guest kernel runs it (heki-lvbs-abi.md §4):
//! turn on SMEP/SMAP and set the syscall MSRs, map a user page, LOCK_REGS,
//! PROTECT_MEMORY for the probe's own layout, LOAD_KDATA (the test module's
//! signing certificate), SIGNAL_END_OF_BOOT; then checks of what the
//! paravisor must refuse after the end of boot, and the module and text-patch
//! checks ([`module_checks`]).
//!
//! Page tables: the paravisor's identity map uses 2 MiB supervisor pages. The
//! probe replaces the 2 MiB page that holds its image with a 4 KiB table in
//! which its user page has U=1, and maps attacker aliases at
//! [`ALIAS_BASE`] (a second page directory under PDPT[1]).

use super::check;
use super::cpu::{self, Layout, Page};

/// HEKI function ids (heki-lvbs-abi.md §2.2).
pub const LOCK_REGS: u64 = 0x1_FFE2;
pub const SIGNAL_END_OF_BOOT: u64 = 0x1_FFE3;
pub const PROTECT_MEMORY: u64 = 0x1_FFE4;
pub const LOAD_KDATA: u64 = 0x1_FFE5;
/// Probe build only: the paravisor's own addresses (a1 = 0 vAPIC page,
/// 1 TDG.VP.ENTER buffer, 2 image start), so the attacks can aim at them.
pub const PROBE_INFO: u64 = 0x1_FFFE;

/// `PROTECT_MEMORY` attribute bits (§3.2).
pub const MEM_READ: u64 = 1;
pub const MEM_WRITE: u64 = 2;
pub const MEM_EXEC: u64 = 4;

/// Negative errnos in R8.
pub const EPERM: u64 = -1i64 as u64;
pub const EINVAL: u64 = -22i64 as u64;

pub const CR0_WP: u64 = 1 << 16;
pub const CR4_SMEP: u64 = 1 << 20;
pub const CR4_SMAP: u64 = 1 << 21;

pub const MSR_EFER: u32 = 0xC000_0080;
pub const MSR_STAR: u32 = 0xC000_0081;
pub const MSR_LSTAR: u32 = 0xC000_0082;
pub const MSR_CSTAR: u32 = 0xC000_0083;
pub const MSR_SFMASK: u32 = 0xC000_0084;
pub const MSR_SYSENTER_CS: u32 = 0x174;
pub const MSR_SYSENTER_ESP: u32 = 0x175;
pub const MSR_SYSENTER_EIP: u32 = 0x176;
pub const MSR_APIC_BASE: u32 = 0x1B;
pub const EFER_NXE: u64 = 1 << 11;

/// Attacker-chosen linear addresses: a 2 MiB window under PDPT[1].
pub const ALIAS_BASE: u64 = 0x4000_0000;
/// TDX's shared bit (GPAW 48).
pub const SHARED_BIT: u64 = 1 << 47;

const PTE_P: u64 = 1;
const PTE_W: u64 = 2;
const PTE_U: u64 = 4;
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

static USER_PT: Page = Page::new();
static ALIAS_PD: Page = Page::new();
static ALIAS_PT: Page = Page::new();
static LIST: Page = Page::new();

/// The certificate LOAD_KDATA carries: the test module's signer.
static CERTS: &[u8] = heki_module::SIGNER_CERT;

/// What the boot set up, for the checks and attacks that follow.
#[derive(Clone, Copy, Debug)]
pub struct Boot {
    pub layout: Layout,
    /// CR4 at entry, before SMEP/SMAP (what a "restore" attack writes back).
    pub saved_cr4: u64,
    /// The syscall MSRs as set before LOCK_REGS.
    pub msrs: [(u32, u64); 7],
    /// A page of the L2 region outside the image (never protected).
    pub scratch: u64,
    /// The paravisor's vAPIC page, ENTER buffer and image start (PROBE_INFO).
    pub vapic: u64,
    pub enter_buffer: u64,
    pub l1_image: u64,
    /// PROTECT_MEMORY's list for the probe's layout.
    pub ranges: [(u64, u64, u64); 5],
}

/// The `heki_page` list at [`LIST`] holding `ranges` (`(pa, epa, attributes)`,
/// VA = PA); returns its address.
pub fn put_list(ranges: &[(u64, u64, u64)]) -> u64 {
    let base = LIST.addr();
    cpu::poke(base, 0);
    cpu::poke(base + 8, 0);
    cpu::poke(base + 16, ranges.len() as u64);
    for (i, &(pa, epa, attr)) in ranges.iter().enumerate() {
        let o = base + 24 + 32 * i as u64;
        for (k, v) in [pa, pa, epa, attr].into_iter().enumerate() {
            cpu::poke(o + 8 * k as u64, v);
        }
    }
    base
}

/// The page-table entry that maps `va` at `level` (4 = PML4 … 2 = PD), by
/// walking from CR3; `None` if a level above is not a table.
fn entry(va: u64, level: u32) -> Option<u64> {
    let mut table = cpu::read_cr3() & ADDR_MASK;
    for l in (level..=4).rev() {
        let e = table + 8 * ((va >> (12 + 9 * (l - 1))) & 511);
        if l == level {
            return Some(e);
        }
        let v = cpu::peek(e);
        if v & PTE_P == 0 || v & 0x80 != 0 {
            return None;
        }
        table = v & ADDR_MASK;
    }
    None
}

/// Maps the 2 MiB page holding `user` with 4 KiB pages, `user` itself with
/// U=1 (U also set in the PML4 and PDPT entries above it, which leaves every
/// other page supervisor-only).
fn map_user_page(user: u64) -> bool {
    let (Some(pml4e), Some(pdpte), Some(pde)) = (entry(user, 4), entry(user, 3), entry(user, 2))
    else {
        return false;
    };
    let region = user & !0x1F_FFFF;
    let pt = USER_PT.addr();
    for j in 0..512u64 {
        let page = region + j * 0x1000;
        let u = if page == user { PTE_U } else { 0 };
        cpu::poke(pt + 8 * j, page | PTE_P | PTE_W | u);
    }
    cpu::poke(pde, pt | PTE_P | PTE_W | PTE_U);
    cpu::poke(pdpte, cpu::peek(pdpte) | PTE_U);
    cpu::poke(pml4e, cpu::peek(pml4e) | PTE_U);
    cpu::invlpg(user);
    true
}

/// Maps the supervisor page `ALIAS_BASE + index * 4 KiB` to `gpa` (which may
/// carry the shared bit) and returns that address.
pub fn map_alias(index: u64, gpa: u64) -> u64 {
    let va = ALIAS_BASE + index * 0x1000;
    if let Some(pdpte) = entry(va, 3) {
        cpu::poke(pdpte, ALIAS_PD.addr() | PTE_P | PTE_W);
    }
    cpu::poke(ALIAS_PD.addr(), ALIAS_PT.addr() | PTE_P | PTE_W);
    cpu::poke(ALIAS_PT.addr() + 8 * index, gpa | PTE_P | PTE_W);
    cpu::invlpg(va);
    va
}

/// The syscall/sysenter MSRs a kernel sets at boot: entry points in its text.
fn kernel_msrs(layout: &Layout, stack: u64) -> [(u32, u64); 7] {
    let entry = layout.text.0;
    [
        (MSR_STAR, 0x0023_0010_0000_0000),
        (MSR_LSTAR, entry + 0x40),
        (MSR_CSTAR, entry + 0x80),
        (MSR_SFMASK, 0x4_7700),
        (MSR_SYSENTER_CS, 0x08),
        (MSR_SYSENTER_ESP, stack),
        (MSR_SYSENTER_EIP, entry + 0xC0),
    ]
}

fn status(r8: u64) -> i64 {
    r8 as i64
}

/// The boot sequence; every step is a check.
pub fn boot(scratch: u64, stack: u64) -> Boot {
    let layout = cpu::layout();
    say!(
        "LVBS boot: text {:#x}..{:#x}, rodata {:#x}..{:#x}, user page {:#x}, exec-data page {:#x}, data {:#x}..{:#x}",
        layout.text.0,
        layout.text.1,
        layout.rodata.0,
        layout.rodata.1,
        layout.user_page,
        layout.xdata_page,
        layout.data.0,
        layout.data.1
    );
    let saved_cr4 = cpu::read_cr4();
    let leaf7 = cpu::cpuid(7, 0)[1];
    let mut want = 0;
    if leaf7 & (1 << 7) != 0 {
        want |= CR4_SMEP;
    }
    if leaf7 & (1 << 20) != 0 {
        want |= CR4_SMAP;
    }
    let fault = cpu::write_cr(4, saved_cr4 | want);
    let cr4 = cpu::read_cr4();
    check(
        "cr4_smep_smap_on",
        fault.is_none() && want == CR4_SMEP | CR4_SMAP && cr4 & want == want,
        format_args!("CR4 {saved_cr4:#x} -> {cr4:#x} (CPUID.7 EBX {leaf7:#x}), fault {fault:?}"),
    );

    let msrs = kernel_msrs(&layout, stack);
    let mut ok = true;
    for (msr, value) in msrs {
        let fault = cpu::wrmsr(msr, value);
        let back = cpu::rdmsr(msr);
        if fault.is_some() || back != Ok(value) {
            ok = false;
            say!("MSR {msr:#x} <- {value:#x}: fault {fault:?}, read back {back:?}");
        }
    }
    check(
        "syscall_msrs_set",
        ok,
        format_args!(
            "STAR, LSTAR, CSTAR, SFMASK, SYSENTER_CS/ESP/EIP written natively and read back"
        ),
    );
    let efer = cpu::rdmsr(MSR_EFER);
    check(
        "efer_nxe_on",
        matches!(efer, Ok(v) if v & EFER_NXE != 0),
        format_args!("EFER {efer:?}"),
    );
    // A TD's GPAW is 48 (shared bit 47): MAXPHYADDR must let a page-table
    // entry name a shared GPA (QEMU TCG's default of 40 does not).
    let phys = cpu::cpuid(0x8000_0008, 0)[0] & 0xFF;
    check(
        "cpuid_phys_bits_cover_shared_bit",
        phys >= 48,
        format_args!("MAXPHYADDR {phys}, shared bit 47"),
    );
    check(
        "user_page_mapped",
        map_user_page(layout.user_page),
        format_args!("{:#x} with U=1 in a 4 KiB table", layout.user_page),
    );

    let (native, _) = cpu::store_tables();
    let r = cpu::vmcall3(LOCK_REGS, 0, 0);
    check("heki_lock_regs", r == 0, format_args!("R8 {}", status(r)));
    descriptor_table_checks(native);

    let info = |k| cpu::vmcall3(PROBE_INFO, k, 0);
    let (vapic, enter_buffer, l1_image) = (info(0), info(1), info(2));
    say!(
        "paravisor pages (probe info): vAPIC {vapic:#x}, ENTER buffer {enter_buffer:#x}, image {l1_image:#x}"
    );

    let list = put_list(&[(vapic, vapic + 0x1000, MEM_READ)]);
    let r = cpu::vmcall3(PROTECT_MEMORY, list, 1);
    check(
        "heki_protect_paravisor_memory_refused",
        r == EINVAL,
        format_args!("vAPIC page {vapic:#x}: R8 {}", status(r)),
    );
    let list = put_list(&[(scratch, scratch + 0x1000, MEM_READ | MEM_WRITE | MEM_EXEC)]);
    let r = cpu::vmcall3(PROTECT_MEMORY, list, 1);
    check(
        "heki_protect_wx_refused",
        r == EINVAL,
        format_args!("R|W|X {scratch:#x}: R8 {}", status(r)),
    );

    let ranges = [
        (layout.text.0, layout.text.1, MEM_READ | MEM_EXEC),
        (layout.rodata.0, layout.rodata.1, MEM_READ),
        (layout.user_page, layout.user_page + 0x1000, MEM_READ),
        (
            layout.xdata_page,
            layout.xdata_page + 0x1000,
            MEM_READ | MEM_WRITE,
        ),
        (layout.data.0, layout.data.1, MEM_READ | MEM_WRITE),
    ];
    let list = put_list(&ranges);
    let r = cpu::vmcall3(PROTECT_MEMORY, list, ranges.len() as u64);
    check(
        "heki_protect_memory",
        r == 0,
        format_args!("{} ranges: R8 {}", ranges.len(), status(r)),
    );

    let certs = CERTS.as_ptr() as u64;
    let list = put_list(&[(certs, certs + CERTS.len() as u64, 0)]);
    let r = cpu::vmcall3(LOAD_KDATA, list, 1);
    check(
        "heki_load_kdata",
        r == 0,
        format_args!("{} certificate bytes: R8 {}", CERTS.len(), status(r)),
    );

    let r = cpu::vmcall3(SIGNAL_END_OF_BOOT, 0, 0);
    check("heki_end_of_boot", r == 0, format_args!("R8 {}", status(r)));
    Boot {
        layout,
        saved_cr4: saved_cr4 & !(CR4_SMEP | CR4_SMAP),
        msrs,
        scratch,
        vapic,
        enter_buffer,
        l1_image,
        ranges,
    }
}

/// What the paravisor must refuse or keep after the end of boot.
pub fn after_boot_checks(b: &Boot) {
    let r = cpu::vmcall3(LOCK_REGS, 0, 0);
    check(
        "heki_lock_regs_after_end_of_boot",
        r == EPERM,
        format_args!("R8 {}", status(r)),
    );
    let list = put_list(&b.ranges);
    let r = cpu::vmcall3(PROTECT_MEMORY, list, b.ranges.len() as u64);
    check(
        "heki_protect_memory_after_end_of_boot",
        r == EPERM,
        format_args!("R8 {}", status(r)),
    );
    let certs = CERTS.as_ptr() as u64;
    let list = put_list(&[(certs, certs + CERTS.len() as u64, 0)]);
    let r = cpu::vmcall3(LOAD_KDATA, list, 1);
    check(
        "heki_load_kdata_after_end_of_boot",
        r == EPERM,
        format_args!("R8 {}", status(r)),
    );
    let r = cpu::vmcall3(SIGNAL_END_OF_BOOT, 0, 0);
    check(
        "heki_end_of_boot_idempotent",
        r == 0,
        format_args!("R8 {}", status(r)),
    );

    let mut ok = true;
    for (msr, value) in b.msrs {
        let back = cpu::rdmsr(msr);
        if back != Ok(value) {
            ok = false;
            say!("MSR {msr:#x}: read {back:?}, pinned {value:#x}");
        }
    }
    check(
        "pinned_msrs_read_back",
        ok,
        format_args!("the 7 syscall MSRs still read their boot values"),
    );

    let data = b.layout.data.0;
    let before = cpu::read_u8(data + 0xF00);
    let fault = cpu::write_u8(data + 0xF00, before ^ 0xFF);
    let after = cpu::read_u8(data + 0xF00);
    cpu::write_u8(data + 0xF00, before);
    check(
        "kernel_data_writable",
        fault.is_none() && after == before ^ 0xFF,
        format_args!("{:#x}: fault {fault:?}", data + 0xF00),
    );

    // The user page through its own (U=1) mapping: SMEP stops a supervisor fetch.
    let user = b.layout.user_page;
    let fault = cpu::call_to(user);
    check(
        "user_page_supervisor_fetch_smep",
        matches!(fault, Some(f) if f.vector == 14 && f.error_code == 0x11 && f.rip == user),
        format_args!("{user:#x}: fault {fault:?} (want #PF 0x11)"),
    );
}

/// The signed test module, its certificate and its region images
/// (generated by build.rs from tests/data/heki-module).
mod heki_module {
    include!(concat!(env!("OUT_DIR"), "/heki_module.rs"));
}

/// HEKI runtime ids (heki-lvbs-abi.md §2.2).
pub const VALIDATE_MODULE: u64 = 0x1_FFE6;
pub const FREE_MODULE_INIT: u64 = 0x1_FFE7;
pub const UNLOAD_MODULE: u64 = 0x1_FFE8;
pub const PATCH_TEXT: u64 = 0x1_FFEB;
pub const ENOENT: u64 = -2i64 as u64;
pub const EKEYREJECTED: u64 = -129i64 as u64;

/// `mod_mem_type` of the regions the checks touch, and the ELF/patch types.
const MOD_TEXT: u64 = 0;
const MOD_INIT_TEXT: u64 = 4;
const MOD_ELF: u64 = 7;
const MOD_PATCH: u64 = 8;
/// test_module.S: `heki_test_add` at text + 0, the jump-label NOP at text + 16
/// (followed by `ret`).
const ADD_OFF: u64 = 0;
const SITE_OFF: u64 = 16;
/// The site's registered JMP: `jmp .+5` (to the `ret` after it).
const JMP5: [u8; 5] = [0xE9, 0, 0, 0, 0];
const INT3: u8 = 0xCC;

static PATCH_INFO: Page = Page::new();
static PATCH_REQ: Page = Page::new();

/// Places the test module's regions at `base + kind * REGION_STRIDE` and
/// fills the `heki_page` list (regions, the signed file at `file`, the patch
/// info naming the site); returns the number of ranges.
fn place_module(base: u64, file: u64) -> u64 {
    let mut ranges = [(0u64, 0u64, 0u64); 9];
    let mut n = 0;
    for &(kind, image) in heki_module::REGIONS {
        let at = base + kind * heki_module::REGION_STRIDE;
        cpu::copy_to(at, image);
        ranges[n] = (at, at + image.len() as u64, kind);
        n += 1;
    }
    let ko = heki_module::MODULE_KO;
    ranges[n] = (file, file + ko.len() as u64, MOD_ELF);
    n += 1;
    // heki_patch_info: type 0 (jump label), patch_idx 1, max 1, then one
    // heki_patch {pa[0], pa[1] = 0, size 5, code}.
    let info = PATCH_INFO.addr();
    for o in (0..48).step_by(8) {
        cpu::poke(info + o, 0);
    }
    cpu::poke(info + 32, 1);
    cpu::poke(info + 40, 1);
    cpu::poke(
        info + 48,
        base + MOD_TEXT * heki_module::REGION_STRIDE + SITE_OFF,
    );
    cpu::poke(info + 56, 0);
    cpu::poke(info + 64, patch_tail(&JMP5));
    ranges[n] = (info, info + 72, MOD_PATCH);
    n += 1;
    put_list(&ranges[..n]);
    n as u64
}

/// Bytes 16..24 of a `heki_patch` holding `code`: size, code, padding.
fn patch_tail(code: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[0] = code.len() as u8;
    b[1..1 + code.len()].copy_from_slice(code);
    u64::from_le_bytes(b)
}

/// `PATCH_TEXT` writing `code` at `pa`; R8.
fn patch_text(pa: u64, code: &[u8]) -> u64 {
    let req = PATCH_REQ.addr();
    cpu::poke(req, pa);
    cpu::poke(req + 8, 0);
    cpu::poke(req + 16, patch_tail(code));
    cpu::vmcall3(PATCH_TEXT, req, 0)
}

fn bytes5(at: u64) -> [u8; 5] {
    core::array::from_fn(|i| cpu::read_u8(at + i as u64))
}

/// The post-boot module and patch checks (heki-lvbs-abi.md §5.5–§5.9), in
/// free L2 memory at `area` (4 MiB, unprotected: kernel data after the end
/// of boot): validate the signed test module, refuse a tampered copy (a text
/// byte changed after loading; a flipped byte in the signed file), run its
/// text, apply a registered jump-label patch with the three-step INT3
/// protocol, refuse an unregistered one, free its init sections, unload it,
/// refuse the second unload.
pub fn module_checks(area: u64) {
    let good = area;
    let bad = area + 0x10_0000;
    let file_copy = area + 0x20_0000;
    let text = good + MOD_TEXT * heki_module::REGION_STRIDE;
    let ko = heki_module::MODULE_KO;
    say!(
        "HEKI module checks: test module {} bytes, {} region(s) at {good:#x}",
        ko.len(),
        heki_module::REGIONS.len()
    );

    // A tampered copy first: one text byte (not a relocation site) changed.
    let n = place_module(bad, ko.as_ptr() as u64);
    let bad_text = bad + MOD_TEXT * heki_module::REGION_STRIDE;
    cpu::write_u8(bad_text + 1, cpu::read_u8(bad_text + 1) ^ 0x40);
    let r = cpu::vmcall3(VALIDATE_MODULE, put_list_addr(), n);
    let fault = cpu::write_u8(bad_text + 1, 0x37);
    check(
        "heki_module_tampered_text_refused",
        r == EINVAL && fault.is_none(),
        format_args!(
            "R8 {}, text frame writable again after the refusal: fault {fault:?}",
            status(r)
        ),
    );
    // The signed file with one flipped byte (in a writable copy).
    cpu::copy_to(file_copy, ko);
    cpu::write_u8(file_copy + 0x50, cpu::read_u8(file_copy + 0x50) ^ 1);
    let n = place_module(bad, file_copy);
    let r = cpu::vmcall3(VALIDATE_MODULE, put_list_addr(), n);
    check(
        "heki_module_tampered_file_refused",
        r == EKEYREJECTED,
        format_args!("R8 {} (want -EKEYREJECTED)", status(r)),
    );

    let n = place_module(good, ko.as_ptr() as u64);
    let token = cpu::vmcall3(VALIDATE_MODULE, put_list_addr(), n);
    check(
        "heki_module_validate",
        (token as i64) >= 0,
        format_args!("{n} ranges: R8 {}", status(token)),
    );
    if (token as i64) < 0 {
        return;
    }
    let sum = cpu::call2(text + ADD_OFF, 2, 3);
    check(
        "heki_module_text_executes",
        matches!(sum, Ok(v) if v as u32 == 12),
        format_args!(
            "heki_test_add(2, 3) at {:#x} = {sum:?} (want 12)",
            text + ADD_OFF
        ),
    );
    let before = cpu::read_u8(text);
    let fault = cpu::write_u8(text, 0xCC);
    check(
        "heki_module_text_write_gp",
        matches!(fault, Some(f) if f.vector == 13 && f.error_code == 0)
            && cpu::read_u8(text) == before,
        format_args!("{text:#x}: fault {fault:?}"),
    );

    // Registered site: NOP5 -> JMP5 in three steps, written by the paravisor.
    let site = text + SITE_OFF;
    let steps = [
        patch_text(site, &[INT3]),
        patch_text(site + 1, &JMP5[1..]),
        patch_text(site, &JMP5[..1]),
    ];
    let now = bytes5(site);
    let fault = cpu::call_to(site);
    check(
        "heki_patch_registered",
        steps == [0, 0, 0] && now == JMP5 && fault.is_none(),
        format_args!(
            "INT3/tail/first byte R8 {:?}, site now {now:02x?}, runs: fault {fault:?}",
            steps.map(|s| s as i64)
        ),
    );
    let before = cpu::read_u8(text + ADD_OFF);
    let r = patch_text(text + ADD_OFF, &[INT3]);
    check(
        "heki_patch_unregistered",
        r == ENOENT && cpu::read_u8(text + ADD_OFF) == before,
        format_args!(
            "INT3 at {:#x}: R8 {} (want -ENOENT)",
            text + ADD_OFF,
            status(r)
        ),
    );

    let init_text = good + MOD_INIT_TEXT * heki_module::REGION_STRIDE;
    let r = cpu::vmcall3(FREE_MODULE_INIT, token, 0);
    let fault = cpu::write_u8(init_text, 0xCC);
    let exec = cpu::call_to(init_text);
    check(
        "heki_module_free_init",
        r == 0 && fault.is_none() && matches!(exec, Some(f) if f.vector == 13),
        format_args!(
            "R8 {}; init text now writable (fault {fault:?}) and not executable ({exec:?})",
            status(r)
        ),
    );
    let r = cpu::vmcall3(UNLOAD_MODULE, token, 0);
    let fault = cpu::write_u8(text, 0xC3);
    check(
        "heki_module_unload",
        r == 0 && fault.is_none(),
        format_args!("R8 {}; text writable again: fault {fault:?}", status(r)),
    );
    let r = cpu::vmcall3(UNLOAD_MODULE, token, 0);
    check(
        "heki_module_unload_twice",
        r == EINVAL,
        format_args!("token {token}: R8 {}", status(r)),
    );
}

/// The address [`put_list`] writes to.
fn put_list_addr() -> u64 {
    LIST.addr()
}

/// After LOCK_REGS, descriptor-table exiting traps SGDT/SIDT/SLDT/STR too: the
/// paravisor emulates them through the probe's page tables (identity map,
/// paging on) and must return what the CPU returned natively before the lock;
/// LIDT stays refused. `native` was read before LOCK_REGS.
fn descriptor_table_checks(native: cpu::StoredTables) {
    let (gdt, idt) = cpu::own_tables();
    let (emulated, crossing) = cpu::store_tables();
    check(
        "sgdt_sidt_after_lock_regs",
        emulated.gdt == gdt && emulated.idt == idt && native.gdt == gdt && native.idt == idt,
        format_args!(
            "GDTR {:x?} IDTR {:x?} (native before the lock {:x?} {:x?})",
            emulated.gdt, emulated.idt, native.gdt, native.idt
        ),
    );
    check(
        "sgdt_across_page_boundary_after_lock_regs",
        crossing == gdt,
        format_args!("{crossing:x?}"),
    );
    check(
        "sldt_str_after_lock_regs",
        emulated.ldt == native.ldt && emulated.tr == native.tr && native.tr >> 16 == 0,
        format_args!(
            "LDTR {:#x} TR {:#x} (native {:#x} {:#x}; upper bits zero-extended)",
            emulated.ldt, emulated.tr, native.ldt, native.tr
        ),
    );
    let fault = cpu::load_table(true, idt.1, idt.0);
    check(
        "lidt_after_lock_regs_refused",
        matches!(fault, Some(f) if f.vector == 13 && f.error_code == 0),
        format_args!("lidt of the live IDT: {fault:?}"),
    );
}
