//! The HEKI service (heki-lvbs-abi.md §2.2, §4, §5; design.md §4): the boot
//! calls `LOCK_REGS`, `PROTECT_MEMORY`, `LOAD_KDATA` and `SIGNAL_END_OF_BOOT`,
//! and the runtime calls `VALIDATE_MODULE`, `FREE_MODULE_INIT`,
//! `UNLOAD_MODULE`, `COPY_SECONDARY_KEY` and `PATCH_TEXT` ([`runtime`]).
//!
//! [`HekiService`] owns everything the calls change, so one struct serves the
//! calls *and* enforces their effect: it implements [`HypercallHandler`] and
//! [`ExitHandlers`] (its `hypercalls()` is itself), holding
//!
//! * the register pins — a [`PinnedCr`] and a [`PinnedMsrs`] that
//!   `LOCK_REGS` locks after [`lock_registers`] succeeded on this vCPU;
//! * the L2 VM's page states — an [`Ept`] with [`ept::Policy::LVBS`] (readable
//!   pages are also user-executable, only kernel text is supervisor-executable);
//! * the kernel data blobs of `LOAD_KDATA` ([`KdataStore`]) and what is built
//!   from them ([`HekiRuntime`]): the keyring of system certificates (plus
//!   secondary keys), the blocklist (type-2 hashes plus the TBS hashes of the
//!   revocation certificates), the jump-label patch sites, the validated
//!   modules and their tokens;
//! * the next hypercall handler, which gets every id this service does not
//!   serve (the probe echo, the TEE id, `KEXEC_VALIDATE`, ...).
//!
//! # The seven calls of the LVBS design
//!
//! The LVBS talk names seven guest functions (heki-lvbs-abi.md §1); each is
//! one or more ABI calls here. The tests are model scenarios
//! (`tests/scenarios/src/heki.rs` and `heki/modules.rs`) and the probe's
//! checks in the emulator (`tests/probe/src/bare/lvbs.rs`,
//! `probe: check heki_…`).
//!
//! | LVBS guest function | ABI call(s) (RDI) | arguments | R8 | tests |
//! |---|---|---|---|---|
//! | `heki_late_init()` | `LOCK_REGS` 0x1FFE2 (each vCPU), `PROTECT_MEMORY` 0x1FFE4, `LOAD_KDATA` 0x1FFE5, `SIGNAL_END_OF_BOOT` 0x1FFE3, in this order | list GPA, range count | 0 / -errno | scenarios `lock_regs_*`, `protect_memory_*`, `load_kdata_*`, `end_of_boot_*`, `modules::late_init_*`; probe `heki_lock_regs`, `heki_protect_memory`, `heki_load_kdata`, `heki_end_of_boot`, `heki_*_after_end_of_boot` |
//! | `heki_store_blacklist_raw_hashes(hash)` | no call of its own: the guest buffers the hashes and sends them as `LOAD_KDATA` type 2 (133-byte `tbs:`/`bin:` slots, §3.7) | — | — | `modules::blocklisted_module_and_revoked_signer_are_refused`, `load_kdata_refuses_bad_blobs` |
//! | `heki_validate_module(mod, info, flags)` | `VALIDATE_MODULE` 0x1FFE6 | list GPA, range count, flags (ignored) | token ≥ 0 / -errno | `modules::validate_module_*`, `modules::tampered_*`, `modules::hostile_*`, `modules::modules_need_certificates_*`; probe `heki_module_validate`, `heki_module_tampered_*`, `heki_module_text_executes` |
//! | `heki_free_module_init(mod)` | `FREE_MODULE_INIT` 0x1FFE7 | token | 0 / -errno | `modules::free_init_and_unload_*`; probe `heki_module_free_init` |
//! | `heki_unload_module(mod)` | `UNLOAD_MODULE` 0x1FFE8 | token | 0 / -errno | `modules::free_init_and_unload_*`; probe `heki_module_unload`, `heki_module_unload_twice` |
//! | `heki_copy_secondary_key(data, size)` | `COPY_SECONDARY_KEY` 0x1FFE9 | list GPA (attribute 0, one DER certificate), range count | 0 / -errno | `modules::secondary_keys_*` |
//! | `heki_text_poke(addr, opcode, len)` | `PATCH_TEXT` 0x1FFEB, once per `text_poke_bp` step | request GPA, next page GPA or 0 | 0 / -ENOENT / -EACCES / -errno | `modules::patch_text_*`; probe `heki_patch_registered`, `heki_patch_unregistered` |
//!
//! Status codes follow litebox (§2.3): `-EPERM` boot-only call after the end
//! of boot, `-EACCES` no certificates yet / patch not allowed, `-EINVAL`
//! malformed input, unknown token, section mismatch or a frame that is not
//! ordinary kernel data, `-EFAULT` memory outside L2, `-ERANGE` a cap,
//! `-ENODATA` unsigned module, `-EKEYREJECTED` bad or revoked signature,
//! `-ENOKEY` unknown signer, `-ENOPKG` unsupported algorithm, `-ELIBBAD`
//! malformed signature, `-ENOENT` unregistered patch site.
//!
//! Every argument comes from a guest that may be hostile after boot: the
//! `heki_page` chain is copied once through the bounded parser of
//! [`heki_tdx::pages`] (page count, range count, cycles, alignment), every
//! range must lie inside the configured L2 memory and outside the paravisor's
//! own ranges, the total work of one call is capped by the size of L2 memory,
//! and one `PROTECT_MEMORY` call is one [`Ept::transition_batch`]: either every
//! range is applied or none. Failures are statuses (negative errno in R8), never
//! panics.
//!
//! Ordering: the boot-only calls (`LOCK_REGS`, `PROTECT_MEMORY`, `LOAD_KDATA`)
//! return `-EPERM` after `SIGNAL_END_OF_BOOT`, which is idempotent. `LOCK_REGS`
//! is accepted once per vCPU (`-EINVAL` the second time) and `LOAD_KDATA`
//! once (the certificates are write-once). Before the end of boot the guest
//! kernel is trusted, so the calls may come in any order. The runtime calls
//! are accepted in both phases; module validation and secondary keys need
//! the certificates of `LOAD_KDATA` (`-EACCES` before).
//!
//! Memory the guest never protected keeps the boot alias the paravisor gave
//! it (R|W|Xs|Xu); the [`Ept`] does not track it (it counts as unmapped there,
//! which only makes a rollback stricter). With
//! [`HekiConfig::nx_unprotected_at_end_of_boot`] the end of boot moves all of
//! it to kernel data (R|W|Xu, no Xs), so that afterwards only kernel text is
//! supervisor-executable (design.md §4).
//!
//! One service serves one L1 vCPU and its L2 vCPU. With several vCPUs the
//! [`Ept`], the phase, the kernel data and the runtime state must be shared
//! between the per-vCPU services, and the module freeze needs a TLB
//! shootdown of the other L2 vCPUs before the copy (not done yet: the
//! emulator runs one vCPU, and L2 does not run while its vCPU is in a call).

pub mod runtime;

pub use runtime::{der_sequences, HekiRuntime, LoadedModule, CHECKED_SECTIONS, MAX_KEY_PAYLOAD};

use alloc::vec::Vec;
use core::fmt;

use ept::{Authority, Ept, EptError, GpaRange, PageState, PolicyError, SealedKind, PAGE};
use heki_tdx::abi::{return_value, Errno, HekiCall, KdataType, MemAttr, ToErrno};
use heki_tdx::modsig::Keyring;
use heki_tdx::pages::{self, GuestMemory, GuestMemoryError, Limits};
use tdcall::L2Vm;

use crate::handlers::{
    AllowCrWrites, CpuidPolicy, CrPolicy, DefaultCpuidPolicy, EnosysHypercalls, ExitHandlers,
    HypercallArgs, HypercallContext, HypercallHandler, MsrPolicy, MsrTable,
};
use crate::measure::{AdmissionKind, Digest48, SharedMeasurements};
use crate::memory::Platform;
use crate::pinning::{lock_registers, PinnedCr, PinnedMsrs, RegisterPins};

/// What the service may touch, and its bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HekiConfig {
    /// The L2 VM served.
    pub vm: L2Vm,
    /// L2 memory `[start, end)`: the only GPAs the guest may name (heki pages,
    /// blobs and protected ranges). L2 GPA = L1 GPA (the L2 alias of VM #1).
    pub guest_memory: (u64, u64),
    /// The paravisor's own ranges `[start, end)` (image, heap, stacks, vAPIC
    /// page, TDG.VP.ENTER buffer, BootInfo): a request touching them is
    /// refused even if it also lies inside `guest_memory`.
    pub private: Vec<(u64, u64)>,
    /// Bounds of one `heki_page` chain and of one blob.
    pub limits: Limits,
    /// Most bytes `LOAD_KDATA` may store in total.
    pub max_kdata_bytes: usize,
    /// At `SIGNAL_END_OF_BOOT`, make every page of `guest_memory` the guest did
    /// not protect kernel data (R|W|Xu): nothing but kernel text stays
    /// supervisor-executable.
    pub nx_unprotected_at_end_of_boot: bool,
    /// Most bytes of one signed module file, and of one of its checked
    /// sections (`VALIDATE_MODULE`).
    pub max_module_bytes: usize,
    /// Most modules validated and not unloaded at once.
    pub max_modules: usize,
    /// Most keys `COPY_SECONDARY_KEY` may add.
    pub max_secondary_keys: usize,
}

impl HekiConfig {
    /// A configuration for `vm` over `guest_memory` with the paravisor's
    /// `private` ranges: 16 list pages (2032 ranges) per call, blobs of at
    /// most 256 KiB and 512 KiB of kernel data in total, 52-bit GPAs,
    /// unprotected memory made non-executable for the kernel at the end of
    /// boot; module files of at most 256 KiB, 256 modules, 16 secondary
    /// keys. The bounds fit the bare-metal paravisor's 2 MiB heap next to a
    /// batch over 32 MiB of L2 memory (module validation holds the file, the
    /// checked sections and two region-sized work buffers at once); a Linux
    /// guest (whose `.rodata` alone is several MiB) needs a larger heap and
    /// larger bounds.
    pub fn new(vm: L2Vm, guest_memory: (u64, u64), private: Vec<(u64, u64)>) -> Self {
        HekiConfig {
            vm,
            guest_memory,
            private,
            limits: Limits {
                max_pages: 16,
                max_ranges: 16 * pages::RANGES_PER_PAGE,
                max_gpa: 1 << 52,
                max_blob_bytes: 256 << 10,
            },
            max_kdata_bytes: 512 << 10,
            nx_unprotected_at_end_of_boot: true,
            max_module_bytes: 256 << 10,
            max_modules: 256,
            max_secondary_keys: 16,
        }
    }

    /// [`HekiConfig::new`] for a Linux guest: module files (and blobs) up to
    /// [`LINUX_MAX_MODULE_BYTES`]. The bare-metal Linux boot uses it, and the
    /// loader's RTMR0 reference policy for a Linux image (its policy text
    /// differs from the probe's in `max_blob_bytes`).
    pub fn linux(vm: L2Vm, guest_memory: (u64, u64), private: Vec<(u64, u64)>) -> Self {
        let mut c = HekiConfig::new(vm, guest_memory, private);
        c.max_module_bytes = LINUX_MAX_MODULE_BYTES;
        c.limits.max_blob_bytes = LINUX_MAX_MODULE_BYTES;
        c
    }

    /// Whether `[start, end)` overlaps one of the paravisor's own ranges.
    pub fn overlaps_private(&self, start: u64, end: u64) -> bool {
        self.private.iter().any(|&(s, e)| start < e && s < end)
    }

    /// Whether `[start, end)` (non-empty) lies inside L2 memory.
    pub fn inside_guest_memory(&self, start: u64, end: u64) -> bool {
        let (s, e) = self.guest_memory;
        start < end && start >= s && end <= e
    }

    /// Pages of L2 memory: the most one call may change.
    pub fn guest_pages(&self) -> u64 {
        let (s, e) = self.guest_memory;
        e.saturating_sub(s) / PAGE
    }
}

/// Largest module file (with its signature) `VALIDATE_MODULE` takes from a
/// Linux guest, and the largest blob of one of its `heki_page` lists.
/// Module validation holds the file, its checked sections and two work
/// buffers at once, which the Linux boot's heap extension affords.
pub const LINUX_MAX_MODULE_BYTES: usize = 1 << 20;

/// The page state a `PROTECT_MEMORY` attribute asks for (§3.2, §5.3):
/// READ → rodata, READ|WRITE → kernel data, READ|EXEC → kernel text, and
/// IMMUTABLE seals the read-only and text states. Anything else is refused:
/// writable and executable together (W^X), write or execute without read,
/// and an immutable writable page.
pub fn page_state(attr: MemAttr) -> Option<PageState> {
    let base = attr.difference(MemAttr::IMMUTABLE);
    let immutable = attr.contains(MemAttr::IMMUTABLE);
    let rw = MemAttr::READ.union(MemAttr::WRITE);
    let rx = MemAttr::READ.union(MemAttr::EXEC);
    Some(match (base, immutable) {
        (b, false) if b == MemAttr::READ => PageState::Rodata,
        (b, false) if b == rw => PageState::KernelData,
        (b, false) if b == rx => PageState::KernelText,
        (b, true) if b == MemAttr::READ => PageState::Sealed(SealedKind::ReadOnly),
        (b, true) if b == rx => PageState::Sealed(SealedKind::Text),
        _ => return None,
    })
}

/// The errno of a refused or failed [`Ept`] change.
pub fn ept_errno(e: &EptError) -> Errno {
    match e {
        EptError::Policy(PolicyError::Sealed { .. }) => Errno::EPERM,
        EptError::Policy(PolicyError::LoosenAfterBoot { .. }) => Errno::EPERM,
        EptError::Policy(PolicyError::ParavisorPrivate { .. }) => Errno::EINVAL,
        EptError::Policy(PolicyError::TooLarge) => Errno::ERANGE,
        EptError::Apply(_) => Errno::EIO,
    }
}

/// The blobs of `LOAD_KDATA`, copied into L1 memory (§5.4). The certificates,
/// blocklist and patch info are also parsed into the service's keyring,
/// blocklist and patch registry ([`HekiRuntime`]); the rest is stored for
/// kexec and symbol work that does not exist yet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KdataStore {
    /// Concatenated DER certificates (type 0), checked to be DER SEQUENCEs.
    pub system_certs: Vec<u8>,
    /// Number of certificates of `system_certs` in the keyring.
    pub certificates: usize,
    /// Revocation certificates (type 1), possibly empty.
    pub revocation_certs: Vec<u8>,
    /// Blocklist hash slots (type 2), checked to parse.
    pub blocklist: Vec<u8>,
    /// `struct heki_kinfo` (type 3).
    pub kernel_info: Vec<u8>,
    /// The kernel's `.rodata` (type 4).
    pub kernel_data: Vec<u8>,
    /// Core-kernel patch info (type 5).
    pub patch_info: Vec<u8>,
    /// Kexec trampoline pages (type 6): `[pa, epa)` ranges.
    pub kexec_trampoline: Vec<(u64, u64)>,
    /// Successful `LOAD_KDATA` calls (0 or 1).
    pub loads: u32,
}

impl KdataStore {
    /// Bytes stored.
    pub fn bytes(&self) -> usize {
        self.system_certs.len()
            + self.revocation_certs.len()
            + self.blocklist.len()
            + self.kernel_info.len()
            + self.kernel_data.len()
            + self.patch_info.len()
    }
}

/// Walks a list of concatenated DER SEQUENCEs (a certificate list), allowing
/// zero padding after the last one; returns how many there are, `None` if the
/// list is empty or malformed. Bounded by the list length.
pub fn count_der_sequences(mut rest: &[u8]) -> Option<usize> {
    let mut n = 0;
    while !rest.is_empty() {
        if rest.iter().all(|b| *b == 0) && n > 0 {
            break;
        }
        let (&tag, tail) = rest.split_first()?;
        if tag != 0x30 {
            return None;
        }
        let (&first, tail) = tail.split_first()?;
        let (len, tail) = match first {
            0..=0x7F => (first as usize, tail),
            0x81..=0x84 => {
                let k = (first & 0x7F) as usize;
                let bytes = tail.get(..k)?;
                let len = bytes.iter().fold(0usize, |a, b| (a << 8) | *b as usize);
                (len, &tail[k..])
            }
            _ => return None,
        };
        rest = tail.get(len..)?;
        n += 1;
    }
    (n > 0).then_some(n)
}

/// [`pages::read_kdata`] with a cap on the total: the list is copied once,
/// the sizes of all blobs are added up before any blob is copied, so a list
/// that names more than [`HekiConfig::max_kdata_bytes`] allocates nothing.
fn read_kdata<M: GuestMemory + ?Sized>(
    mem: &mut M,
    first: u64,
    total: u64,
    config: &HekiConfig,
) -> Result<pages::Kdata, pages::PagesError> {
    let limits = &config.limits;
    let ranges = pages::read_ranges::<KdataType, M>(mem, first, total, limits)?;
    let bytes = ranges
        .iter()
        .filter(|r| r.attr != KdataType::KexecTrampoline)
        .fold(0u64, |sum, r| sum.saturating_add(r.len()));
    if bytes > config.max_kdata_bytes as u64 {
        return Err(pages::PagesError::BlobTooLarge {
            bytes,
            max: config.max_kdata_bytes,
        });
    }
    let mut blob = |t| pages::copy_blob(mem, &pages::select(&ranges, t), limits);
    let kdata = pages::Kdata {
        system_certs: blob(KdataType::SystemCerts)?,
        revocation_certs: blob(KdataType::RevocationCerts)?,
        blocklist: blob(KdataType::BlocklistHashes)?,
        kernel_info: blob(KdataType::KernelInfo)?,
        kernel_data: blob(KdataType::KernelData)?,
        patch_info: blob(KdataType::PatchInfo)?,
        kexec_trampoline: pages::select(&ranges, KdataType::KexecTrampoline),
    };
    if kdata.system_certs.is_empty() {
        return Err(pages::PagesError::Missing("system certificates"));
    }
    Ok(kdata)
}

/// Counters of the service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HekiStats {
    /// Calls served by this service (all four ids).
    pub calls: u64,
    /// Of those, calls answered with an error.
    pub refused: u64,
    /// Ranges applied by successful `PROTECT_MEMORY` calls.
    pub ranges_protected: u64,
    /// Pages changed by successful `PROTECT_MEMORY` calls.
    pub pages_protected: u64,
    /// TDG.MEM.PAGE.ATTR.WR calls made by this service.
    pub attr_writes: u64,
    /// Pages moved to kernel data at the end of boot.
    pub pages_made_nx: u64,
    /// Modules validated (tokens handed out).
    pub modules_validated: u64,
    /// `PATCH_TEXT` steps carried out.
    pub patches_applied: u64,
    /// Code admissions extended into RTMR2.
    pub admissions_recorded: u64,
}

/// L2 memory as [`heki_tdx::pages`] reads it: only GPAs inside
/// [`HekiConfig::guest_memory`], outside the paravisor's ranges and not
/// paravisor-private in the [`Ept`].
struct L2Memory<'a> {
    platform: &'a mut dyn Platform,
    config: &'a HekiConfig,
    ept: &'a Ept,
}

impl GuestMemory for L2Memory<'_> {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        let err = GuestMemoryError {
            gpa,
            len: buf.len(),
        };
        if buf.is_empty() {
            return Ok(());
        }
        let end = gpa.checked_add(buf.len() as u64).ok_or(err)?;
        if !self.config.inside_guest_memory(gpa, end) || self.config.overlaps_private(gpa, end) {
            return Err(err);
        }
        let mut page = gpa & !(PAGE - 1);
        while page < end {
            if self.ept.state(page) == PageState::ParavisorPrivate {
                return Err(err);
            }
            page += PAGE;
        }
        self.platform.read(gpa, buf).map_err(|_| err)
    }
}

/// The HEKI boot calls plus the register pins and the page states they set;
/// see the module documentation. `Next` serves every other hypercall id.
#[derive(Debug)]
pub struct HekiService<
    Next = EnosysHypercalls,
    Cr = AllowCrWrites,
    Ms = MsrTable,
    Cp = DefaultCpuidPolicy,
> {
    config: HekiConfig,
    /// The L2 VM's page states.
    pub ept: Ept,
    /// The CR0/CR4 policy, locked by `LOCK_REGS`.
    pub cr: PinnedCr<Cr>,
    /// The MSR policy, locked by `LOCK_REGS`.
    pub msr: PinnedMsrs<Ms>,
    /// The CPUID policy.
    pub cpuid: Cp,
    /// The handler of every id this service does not serve.
    pub next: Next,
    pins: Option<RegisterPins>,
    ended: bool,
    kdata: KdataStore,
    rt: HekiRuntime,
    /// Counters.
    pub stats: HekiStats,
    /// How often [`ExitHandlers::pending_interrupt`] ran.
    pub pending_interrupts: u64,
    /// The RTMR event log: with it, every code admission (validated module,
    /// accepted text patch) is extended into RTMR2 before the code becomes
    /// executable, and a failed extend refuses the admission
    /// (`crate::measure`, docs/attestation.md). `None`: nothing is recorded.
    pub measurements: Option<SharedMeasurements>,
}

impl HekiService {
    /// A service with the default CR, MSR and CPUID policies and `-ENOSYS` for
    /// other ids. `ept` must track `config.vm` with the LVBS policy; the
    /// paravisor registers its own pages in it (as
    /// [`PageState::ParavisorPrivate`]) before handing it over.
    pub fn new(config: HekiConfig, ept: Ept) -> Self {
        HekiService {
            config,
            ept,
            cr: PinnedCr::new(AllowCrWrites),
            msr: PinnedMsrs::new(MsrTable::default()),
            cpuid: DefaultCpuidPolicy,
            next: EnosysHypercalls,
            pins: None,
            ended: false,
            kdata: KdataStore::default(),
            rt: HekiRuntime::default(),
            stats: HekiStats::default(),
            pending_interrupts: 0,
            measurements: None,
        }
    }
}

impl<Next, Cr, Ms, Cp> HekiService<Next, Cr, Ms, Cp> {
    /// Replaces the handler of the ids this service does not serve.
    pub fn with_next<T>(self, next: T) -> HekiService<T, Cr, Ms, Cp> {
        self.map_parts(|_, msr, cpuid| (next, msr, cpuid))
    }

    /// Replaces the base MSR policy (it serves every MSR that is not pinned).
    pub fn with_msr_policy<T>(self, msr: T) -> HekiService<Next, Cr, T, Cp> {
        self.map_parts(|next, _, cpuid| (next, PinnedMsrs::new(msr), cpuid))
    }

    /// Replaces the CPUID policy.
    pub fn with_cpuid_policy<T>(self, cpuid: T) -> HekiService<Next, Cr, Ms, T> {
        self.map_parts(|next, msr, _| (next, msr, cpuid))
    }

    /// The service with its next handler, MSR policy and CPUID policy
    /// replaced by `f`; everything else kept.
    fn map_parts<N, M, C>(
        self,
        f: impl FnOnce(Next, PinnedMsrs<Ms>, Cp) -> (N, PinnedMsrs<M>, C),
    ) -> HekiService<N, Cr, M, C> {
        let (next, msr, cpuid) = f(self.next, self.msr, self.cpuid);
        HekiService {
            config: self.config,
            ept: self.ept,
            cr: self.cr,
            msr,
            cpuid,
            next,
            pins: self.pins,
            ended: self.ended,
            kdata: self.kdata,
            rt: self.rt,
            stats: self.stats,
            pending_interrupts: self.pending_interrupts,
            measurements: self.measurements,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HekiConfig {
        &self.config
    }

    /// Records one code admission in RTMR2 (if measurements are attached);
    /// a failure refuses the admission with `-EIO`.
    fn admit(
        &mut self,
        cx: &mut HypercallContext<'_>,
        kind: AdmissionKind,
        digest: &Digest48,
    ) -> Result<(), Refusal> {
        let Some(m) = &self.measurements else {
            return Ok(());
        };
        m.borrow_mut()
            .record_admission(&mut *cx.platform, kind, digest)
            .map_err(|e| {
                log::warn!("recording the {kind:?} admission in RTMR2: {e}");
                Refusal(Errno::EIO, "recording the admission in RTMR2 failed")
            })?;
        self.stats.admissions_recorded += 1;
        Ok(())
    }

    /// The values `LOCK_REGS` pinned, once it ran.
    pub fn pins(&self) -> Option<&RegisterPins> {
        self.pins.as_ref()
    }

    /// Whether `SIGNAL_END_OF_BOOT` ran.
    pub fn boot_ended(&self) -> bool {
        self.ended
    }

    /// The stored kernel data.
    pub fn kdata(&self) -> &KdataStore {
        &self.kdata
    }

    /// Keys, blocklist, patch sites and validated modules.
    pub fn runtime(&self) -> &HekiRuntime {
        &self.rt
    }
}

/// Why a call failed, for the log.
#[derive(Debug)]
struct Refusal(Errno, &'static str);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0, self.1)
    }
}

type CallResult = Result<u64, Refusal>;

fn refuse<T>(errno: Errno, why: &'static str) -> Result<T, Refusal> {
    Err(Refusal(errno, why))
}

impl<Next, Cr, Ms, Cp> HekiService<Next, Cr, Ms, Cp>
where
    Ms: MsrPolicy,
{
    fn boot_only(&self, call: HekiCall) -> Result<(), Refusal> {
        if call.boot_only() && self.ended {
            return refuse(Errno::EPERM, "boot-only call after SIGNAL_END_OF_BOOT");
        }
        Ok(())
    }

    fn lock_regs(&mut self, cx: &mut HypercallContext<'_>) -> CallResult {
        if self.pins.is_some() {
            return refuse(Errno::EINVAL, "registers of this vCPU are locked already");
        }
        let pins = lock_registers(&mut *cx.platform, cx.vm, &mut self.msr.base).map_err(|e| {
            log::error!("LOCK_REGS: {e:?}");
            Refusal(Errno::EIO, "capturing or pinning the registers failed")
        })?;
        self.cr.lock(&pins);
        self.msr.lock(&pins);
        for (msr, value) in pins.msrs {
            log::info!("LOCK_REGS: MSR {msr:#x} frozen at {value:#x}");
        }
        self.pins = Some(pins);
        Ok(0)
    }

    fn protect_memory(&mut self, cx: &mut HypercallContext<'_>, a: &HypercallArgs) -> CallResult {
        let ranges = {
            let mut mem = L2Memory {
                platform: &mut *cx.platform,
                config: &self.config,
                ept: &self.ept,
            };
            pages::read_ranges::<MemAttr, _>(&mut mem, a.a1, a.a2, &self.config.limits).map_err(
                |e| {
                    log::warn!("PROTECT_MEMORY: {e}");
                    Refusal(e.errno(), "bad heki_page chain")
                },
            )?
        };
        let budget = self.config.guest_pages();
        let mut pages_total: u64 = 0;
        let mut requests = Vec::with_capacity(ranges.len());
        for (i, r) in ranges.iter().enumerate() {
            if self.config.overlaps_private(r.pa, r.epa) {
                log::warn!(
                    "PROTECT_MEMORY: range {i} {:#x}..{:#x} overlaps paravisor memory",
                    r.pa,
                    r.epa
                );
                return refuse(Errno::EINVAL, "range overlaps paravisor memory");
            }
            if !self.config.inside_guest_memory(r.pa, r.epa) {
                log::warn!(
                    "PROTECT_MEMORY: range {i} {:#x}..{:#x} is not L2 memory",
                    r.pa,
                    r.epa
                );
                return refuse(Errno::EFAULT, "range outside L2 memory");
            }
            let Some(state) = page_state(r.attr) else {
                log::warn!(
                    "PROTECT_MEMORY: range {i} {:#x}..{:#x} attributes {:?}",
                    r.pa,
                    r.epa,
                    r.attr
                );
                return refuse(Errno::EINVAL, "attribute combination not allowed");
            };
            let Some(range) = GpaRange::new(r.pa, r.epa) else {
                return refuse(Errno::EINVAL, "range not page aligned");
            };
            pages_total = pages_total.saturating_add(range.len_pages());
            if pages_total > budget {
                return refuse(Errno::ERANGE, "ranges cover more pages than L2 memory");
            }
            requests.push((range, state));
        }
        let report = self
            .ept
            .transition_batch(&mut *cx.platform, &requests, Authority::Guest)
            .map_err(|e| {
                log::warn!("PROTECT_MEMORY: {e:?}");
                Refusal(ept_errno(&e), "page-state change refused or failed")
            })?;
        if report.calls > 0 {
            cx.invalidate_translations();
        }
        self.stats.attr_writes += u64::from(report.calls);
        self.stats.ranges_protected += requests.len() as u64;
        self.stats.pages_protected += pages_total;
        log::info!(
            "PROTECT_MEMORY: {} range(s), {pages_total} page(s), {} ATTR.WR ({} x 2M, {} busy retries)",
            requests.len(),
            report.calls,
            report.calls_2m,
            report.busy_retries
        );
        Ok(0)
    }

    fn load_kdata(&mut self, cx: &mut HypercallContext<'_>, a: &HypercallArgs) -> CallResult {
        if self.kdata.loads > 0 {
            return refuse(Errno::EINVAL, "kernel data (certificates) are write-once");
        }
        let k = {
            let mut mem = L2Memory {
                platform: &mut *cx.platform,
                config: &self.config,
                ept: &self.ept,
            };
            read_kdata(&mut mem, a.a1, a.a2, &self.config).map_err(|e| {
                log::warn!("LOAD_KDATA: {e}");
                Refusal(e.errno(), "bad kernel data")
            })?
        };
        if count_der_sequences(&k.system_certs).is_none() {
            return refuse(Errno::EINVAL, "system certificates are not DER SEQUENCEs");
        }
        let blocklist = runtime::build_blocklist(&k.blocklist, &k.revocation_certs)?;
        let mut keyring = Keyring::new();
        let report = keyring
            .load_system_certs(&k.system_certs, &blocklist)
            .map_err(|e| {
                log::warn!("LOAD_KDATA: certificates: {e}");
                Refusal(e.errno(), "no usable system certificate")
            })?;
        for (i, why) in &report.skipped {
            log::warn!("LOAD_KDATA: certificate {i} skipped: {why}");
        }
        let certificates = report.added;
        let patches = self.kernel_patch_sites(cx, &k.patch_info)?;
        let mut trampoline = Vec::with_capacity(k.kexec_trampoline.len());
        for r in &k.kexec_trampoline {
            if !self.config.inside_guest_memory(r.pa, r.epa)
                || self.config.overlaps_private(r.pa, r.epa)
            {
                return refuse(Errno::EFAULT, "kexec trampoline outside L2 memory");
            }
            trampoline.push((r.pa, r.epa));
        }
        let store = KdataStore {
            system_certs: k.system_certs,
            certificates,
            revocation_certs: k.revocation_certs,
            blocklist: k.blocklist,
            kernel_info: k.kernel_info,
            kernel_data: k.kernel_data,
            patch_info: k.patch_info,
            kexec_trampoline: trampoline,
            loads: 1,
        };
        if store.bytes() > self.config.max_kdata_bytes {
            return refuse(Errno::ERANGE, "kernel data too large");
        }
        log::info!(
            "LOAD_KDATA: {certificates} certificate(s) ({} bytes), revocation {} bytes, blocklist {} bytes, kinfo {} bytes, rodata {} bytes, patch info {} bytes, {} trampoline range(s)",
            store.system_certs.len(),
            store.revocation_certs.len(),
            store.blocklist.len(),
            store.kernel_info.len(),
            store.kernel_data.len(),
            store.patch_info.len(),
            store.kexec_trampoline.len()
        );
        log::info!(
            "LOAD_KDATA: keyring {} key(s), blocklist {} hash(es), {} kernel patch site(s)",
            keyring.len(),
            blocklist.len(),
            patches.len()
        );
        self.kdata = store;
        self.rt.keyring = keyring;
        self.rt.blocklist = blocklist;
        self.rt.patches = patches;
        Ok(0)
    }

    fn end_of_boot(&mut self, cx: &mut HypercallContext<'_>) -> CallResult {
        if self.ended {
            return Ok(0);
        }
        if self.pins.is_none() {
            log::warn!("SIGNAL_END_OF_BOOT before LOCK_REGS: registers stay unpinned");
        }
        let mut result = Ok(0);
        if self.config.nx_unprotected_at_end_of_boot {
            let (start, end) = self.config.guest_memory;
            let mut unprotected: Vec<(GpaRange, PageState)> = Vec::new();
            let mut page = start & !(PAGE - 1);
            while page < end {
                if self.ept.state(page) == PageState::Unmapped
                    && !self.config.overlaps_private(page, page + PAGE)
                {
                    match unprotected.last_mut() {
                        Some((r, _)) if r.end == page => r.end = page + PAGE,
                        _ => {
                            if let Some(r) = GpaRange::new(page, page + PAGE) {
                                unprotected.push((r, PageState::KernelData));
                            }
                        }
                    }
                }
                page += PAGE;
            }
            let pages: u64 = unprotected.iter().map(|(r, _)| r.len_pages()).sum();
            match self
                .ept
                .transition_batch(&mut *cx.platform, &unprotected, Authority::Paravisor)
            {
                Ok(report) => {
                    if report.calls > 0 {
                        cx.invalidate_translations();
                    }
                    self.stats.attr_writes += u64::from(report.calls);
                    self.stats.pages_made_nx += pages;
                    log::info!(
                        "SIGNAL_END_OF_BOOT: {pages} unprotected page(s) in {} range(s) made kernel data (no Xs): {} ATTR.WR ({} x 2M)",
                        unprotected.len(),
                        report.calls,
                        report.calls_2m
                    );
                }
                Err(e) => {
                    log::error!("SIGNAL_END_OF_BOOT: removing Xs from unprotected memory: {e:?}");
                    cx.invalidate_translations();
                    result = refuse(Errno::EIO, "removing Xs from unprotected memory failed");
                }
            }
        }
        // The phase ends even if the sweep failed: fail closed.
        self.ept.end_boot();
        self.ended = true;
        log::info!("SIGNAL_END_OF_BOOT: boot-only calls are refused from now on");
        result
    }
}

impl<Next, Cr, Ms, Cp> HypercallHandler for HekiService<Next, Cr, Ms, Cp>
where
    Next: HypercallHandler,
    Ms: MsrPolicy,
{
    fn handle(&mut self, cx: &mut HypercallContext<'_>, args: &HypercallArgs) -> u64 {
        let call = match HekiCall::from_id(args.id) {
            Some(
                c @ (HekiCall::LockRegs
                | HekiCall::ProtectMemory
                | HekiCall::LoadKdata
                | HekiCall::SignalEndOfBoot
                | HekiCall::ValidateModule
                | HekiCall::FreeModuleInit
                | HekiCall::UnloadModule
                | HekiCall::CopySecondaryKey
                | HekiCall::PatchText),
            ) => c,
            _ => return self.next.handle(cx, args),
        };
        self.stats.calls += 1;
        let result = if cx.vm != self.config.vm {
            refuse(
                Errno::EINVAL,
                "call from an L2 VM this service does not serve",
            )
        } else {
            self.boot_only(call).and_then(|()| match call {
                HekiCall::LockRegs => self.lock_regs(cx),
                HekiCall::ProtectMemory => self.protect_memory(cx, args),
                HekiCall::LoadKdata => self.load_kdata(cx, args),
                HekiCall::ValidateModule => self.validate_module(cx, args),
                HekiCall::FreeModuleInit => self.free_module_init(cx, args),
                HekiCall::UnloadModule => self.unload_module(cx, args),
                HekiCall::CopySecondaryKey => self.copy_secondary_key(cx, args),
                HekiCall::PatchText => self.patch_text(cx, args),
                _ => self.end_of_boot(cx),
            })
        };
        match result {
            Ok(v) => {
                log::info!("HEKI {}: OK", call.name());
                return_value(Ok(v))
            }
            Err(r) => {
                self.stats.refused += 1;
                log::warn!("HEKI {} ({:#x}, {:#x}): {r}", call.name(), args.a1, args.a2);
                return_value(Err(r.0))
            }
        }
    }
}

impl<Next, Cr, Ms, Cp> ExitHandlers for HekiService<Next, Cr, Ms, Cp>
where
    Next: HypercallHandler,
    Cr: CrPolicy,
    Ms: MsrPolicy,
    Cp: CpuidPolicy,
{
    fn hypercalls(&mut self) -> &mut dyn HypercallHandler {
        self
    }
    fn cr_policy(&mut self) -> &mut dyn CrPolicy {
        &mut self.cr
    }
    fn msr_policy(&mut self) -> &mut dyn MsrPolicy {
        &mut self.msr
    }
    fn cpuid_policy(&mut self) -> &mut dyn CpuidPolicy {
        &mut self.cpuid
    }
    fn pending_interrupt(&mut self, _platform: &mut dyn Platform) {
        self.pending_interrupts += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_map_to_states() {
        let r = MemAttr::READ;
        let w = MemAttr::WRITE;
        let x = MemAttr::EXEC;
        let i = MemAttr::IMMUTABLE;
        assert_eq!(page_state(r), Some(PageState::Rodata));
        assert_eq!(page_state(r | w), Some(PageState::KernelData));
        assert_eq!(page_state(r | x), Some(PageState::KernelText));
        assert_eq!(
            page_state(r | i),
            Some(PageState::Sealed(SealedKind::ReadOnly))
        );
        assert_eq!(
            page_state(r | x | i),
            Some(PageState::Sealed(SealedKind::Text))
        );
        for bad in [
            r | w | x,
            w,
            x,
            w | x,
            i,
            r | w | i,
            x | i,
            MemAttr::empty(),
        ] {
            assert_eq!(page_state(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn der_lists() {
        assert_eq!(count_der_sequences(&[0x30, 0x00]), Some(1));
        assert_eq!(
            count_der_sequences(&[0x30, 0x01, 0xAA, 0x30, 0x00]),
            Some(2)
        );
        assert_eq!(
            count_der_sequences(&[0x30, 0x81, 0x01, 0xAA, 0, 0, 0]),
            Some(1)
        );
        assert_eq!(
            count_der_sequences(&[0x30, 0x82, 0x00, 0x02, 1, 2]),
            Some(1)
        );
        assert_eq!(count_der_sequences(&[]), None);
        assert_eq!(count_der_sequences(&[0, 0]), None);
        assert_eq!(count_der_sequences(&[0x31, 0x00]), None);
        assert_eq!(count_der_sequences(&[0x30, 0x05, 1]), None);
        assert_eq!(count_der_sequences(&[0x30, 0x85, 0, 0, 0, 0, 0]), None);
        assert_eq!(
            count_der_sequences(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]),
            None
        );
    }

    #[test]
    fn config_bounds() {
        let c = HekiConfig::new(
            L2Vm::Vm1,
            (0x100_0000, 0x300_0000),
            alloc::vec![(0x20_0000, 0x60_0000)],
        );
        assert!(c.inside_guest_memory(0x100_0000, 0x100_1000));
        assert!(!c.inside_guest_memory(0x0FF_F000, 0x100_1000));
        assert!(!c.inside_guest_memory(0x2FF_F000, 0x300_1000));
        assert!(!c.inside_guest_memory(0x100_1000, 0x100_1000));
        assert!(c.overlaps_private(0x5F_F000, 0x60_1000));
        assert!(!c.overlaps_private(0x60_0000, 0x60_1000));
        assert_eq!(c.guest_pages(), 0x2000);
    }
}
