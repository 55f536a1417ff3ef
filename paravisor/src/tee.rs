//! The TEE service: LVBS call `0x1FFF0` (OP-TEE messages, heki-lvbs-abi.md
//! §7) routed to [`lvbs_tee::Tee`] and its four trusted applications.
//!
//! [`TeeService`] is a [`HypercallHandler`] meant to sit behind the HEKI
//! service (`HekiService::with_next`): it serves id [`OPTEE_CALL_ID`] and
//! hands every other id to its own `next` handler, so the chain is
//! HEKI → TEE → the rest (probe echo, ...).
//!
//! # Guest memory
//!
//! The TEE reaches L2 memory only through [`L2Memory`], an
//! [`lvbs_tee::GuestMemory`] over the platform's [`L1Memory`] that admits a
//! range only if
//!
//! * it lies inside [`TeeConfig::guest_memory`] (the L2 region) and outside
//!   every [`TeeConfig::private`] range (the paravisor's image, heap, stack,
//!   vAPIC page, ENTER buffer, BootInfo page), and
//! * every page it touches has an L2 alias in the calling VM that allows the
//!   access — R to read, R|W to write — as TDG.MEM.PAGE.ATTR.RD reports it.
//!
//! The second rule stops a confused deputy: a guest kernel that sealed its
//! text read-only with HEKI cannot ask the TEE to write TA output over it,
//! since the TEE writes only where the guest itself could. The attribute of
//! each page is read once per call (the attributes cannot change during a
//! call on this vCPU; with several vCPUs a concurrent PROTECT_MEMORY would
//! need the same lock as the HEKI service).
//!
//! # Platform services
//!
//! * **Randomness**: [`HwRng`] over an [`Entropy`] source — on bare metal the
//!   boot crate's RDRAND/RDSEED wrapper (the only `unsafe` involved), in model
//!   scenarios any seeded [`TryCryptoRng`] can be used directly instead.
//! * **Measurement**: [`measurement`] — SHA-384 over MRTD, RTMR0 and RTMR1
//!   from a TDREPORT (TDG.MR.REPORT) taken when the TEE starts, after the
//!   measured boot and before L2 first runs. MRTD covers the paravisor image
//!   and the TD layout, RTMR0 the BootInfo and the paravisor's policy, RTMR1
//!   the L2 kernel, initrd and command line; none of them changes for the
//!   TD's life. RTMR2 (code admitted at run time) and RTMR3 are left out:
//!   RTMR2 grows with every admitted module, which would orphan data sealed
//!   before a module load.
//! * **Sealing root**: [`sealing_root`] — SHA-256 of a fixed label, the
//!   measurement and an optional deployer secret compiled into the paravisor
//!   image. TDX module 1.5.01 has no sealing-key leaf (TDG.MR.KEY.GET exists
//!   only on newer modules), so there is no TD-bound hardware secret to start
//!   from. Without the deployer secret the root is computable from public
//!   data by anyone, the L2 guest included: sealing then binds blobs to the
//!   measurement only against *this* TEE (a TEE with another measurement
//!   derives other keys and refuses them) and protects neither their
//!   confidentiality nor their integrity. With it, L2 (which cannot read
//!   paravisor memory) can no longer derive the keys, but whoever holds the
//!   image (the host that loads it) still can. See `docs/tee.md`.
#![forbid(unsafe_code)]

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;

use lvbs_tee::{GuestMemory, Limits, Measurement, MemError, StaticPlatform, Tee, TrustedApp};
use rand_core::{TryCryptoRng, TryRng};
use sha2::{Digest, Sha256, Sha384};
use tdcall::attr::L2Attr;
use tdcall::leaves::MemPageAttrRd;
use tdcall::L2Vm;

use crate::handlers::{EnosysHypercalls, HypercallArgs, HypercallContext, HypercallHandler};
use crate::heki::HekiConfig;
use crate::memory::Platform;

/// LVBS function id of an OP-TEE message call (heki-lvbs-abi.md §2.1, §7).
pub const OPTEE_CALL_ID: u64 = lvbs_tee::msg::OPTEE_MESSAGE_FUNC_ID;

/// `-EINVAL`: a call from an L2 VM this service does not serve.
pub const EINVAL: u64 = -22i64 as u64;
/// `-EOPNOTSUPP`: the TEE has not been started ([`TeeService::start`]).
pub const EOPNOTSUPP: u64 = -95i64 as u64;

const PAGE: u64 = 4096;

/// What the TEE may touch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TeeConfig {
    /// The L2 VM served.
    pub vm: L2Vm,
    /// L2 memory `[start, end)` (L2 GPA = L1 GPA).
    pub guest_memory: (u64, u64),
    /// The paravisor's own ranges `[start, end)`: never read or written for
    /// the guest, even inside `guest_memory`.
    pub private: Vec<(u64, u64)>,
    /// Caps of the TEE core.
    pub limits: Limits,
}

impl TeeConfig {
    /// A configuration for `vm` over `guest_memory` with the default caps.
    pub fn new(vm: L2Vm, guest_memory: (u64, u64), private: Vec<(u64, u64)>) -> Self {
        TeeConfig {
            vm,
            guest_memory,
            private,
            limits: Limits::default(),
        }
    }

    /// The same VM, guest memory and private ranges as the HEKI service.
    pub fn from_heki(heki: &HekiConfig) -> Self {
        TeeConfig::new(heki.vm, heki.guest_memory, heki.private.clone())
    }

    /// Whether `[gpa, gpa + len)` lies inside guest memory and outside every
    /// private range (a zero-length range: whether `gpa` does).
    pub fn admits(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len.max(1)) else {
            return false;
        };
        let (s, e) = self.guest_memory;
        gpa >= s && end <= e && !self.private.iter().any(|&(ps, pe)| gpa < pe && ps < end)
    }
}

/// L2 memory as the TEE sees it for one call; see the module documentation.
pub struct L2Memory<'a> {
    platform: RefCell<&'a mut dyn Platform>,
    config: &'a TeeConfig,
    /// Page attributes read during this call.
    attrs: RefCell<Vec<(u64, L2Attr)>>,
    /// TDG.MEM.PAGE.ATTR.RD calls made.
    attr_reads: RefCell<u64>,
}

impl<'a> L2Memory<'a> {
    /// A view of L2 memory for one call.
    pub fn new(platform: &'a mut dyn Platform, config: &'a TeeConfig) -> Self {
        L2Memory {
            platform: RefCell::new(platform),
            config,
            attrs: RefCell::new(Vec::new()),
            attr_reads: RefCell::new(0),
        }
    }

    /// TDG.MEM.PAGE.ATTR.RD calls made so far.
    pub fn attr_reads(&self) -> u64 {
        *self.attr_reads.borrow()
    }

    fn attr(&self, page: u64) -> Option<L2Attr> {
        if let Some(&(_, a)) = self.attrs.borrow().iter().find(|(p, _)| *p == page) {
            return Some(a);
        }
        let mut platform = self.platform.try_borrow_mut().ok()?;
        let r = tdcall::call(&mut **platform, &MemPageAttrRd { gpa: page }).ok()?;
        *self.attr_reads.borrow_mut() += 1;
        let a = r.attr.slot(self.config.vm);
        self.attrs.borrow_mut().push((page, a));
        Some(a)
    }

    /// Checks the range against the configuration and every page's alias.
    fn allowed(&self, gpa: u64, len: u64, write: bool) -> Result<(), MemError> {
        let err = MemError { gpa, len };
        if !self.config.admits(gpa, len) {
            return Err(err);
        }
        let need = if write {
            L2Attr::R.union(L2Attr::W)
        } else {
            L2Attr::R
        };
        let end = gpa + len.max(1);
        let mut page = gpa & !(PAGE - 1);
        while page < end {
            match self.attr(page) {
                Some(a) if a.contains(L2Attr::VALID) && a.contains(need) => {}
                _ => return Err(err),
            }
            page += PAGE;
        }
        Ok(())
    }
}

impl GuestMemory for L2Memory<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let err = MemError {
            gpa,
            len: buf.len() as u64,
        };
        if buf.is_empty() {
            return Ok(());
        }
        self.allowed(gpa, buf.len() as u64, false)?;
        let mut platform = self.platform.try_borrow_mut().map_err(|_| err)?;
        platform.read(gpa, buf).map_err(|_| err)
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        let err = MemError {
            gpa,
            len: data.len() as u64,
        };
        if data.is_empty() {
            return Ok(());
        }
        self.allowed(gpa, data.len() as u64, true)?;
        let mut platform = self.platform.try_borrow_mut().map_err(|_| err)?;
        platform.write(gpa, data).map_err(|_| err)
    }

    fn check(&self, gpa: u64, len: u64) -> Result<(), MemError> {
        if len == 0 {
            return Ok(());
        }
        self.allowed(gpa, len, true)
    }
}

/// Label of the measurement derivation.
pub const MEASUREMENT_LABEL: &[u8] = b"lvbs-tee/measurement/v1";
/// Offsets in a TDREPORT_STRUCT (§5.6).
const REPORT_MRTD: usize = 528;
const REPORT_RTMR0: usize = 720;
const REPORT_RTMR1: usize = 768;

/// The measurement sealed data is bound to:
/// `SHA-384(MEASUREMENT_LABEL || MRTD || RTMR0 || RTMR1)`.
pub fn measurement(mrtd: &[u8; 48], rtmr0: &[u8; 48], rtmr1: &[u8; 48]) -> Measurement {
    let mut h = Sha384::new();
    h.update(MEASUREMENT_LABEL);
    h.update(mrtd);
    h.update(rtmr0);
    h.update(rtmr1);
    h.finalize().into()
}

/// MRTD, RTMR0 and RTMR1 of a 1024-byte TDREPORT_STRUCT.
pub fn report_fields(report: &[u8; 1024]) -> [[u8; 48]; 3] {
    let mut out = [[0u8; 48]; 3];
    for (o, at) in out
        .iter_mut()
        .zip([REPORT_MRTD, REPORT_RTMR0, REPORT_RTMR1])
    {
        o.copy_from_slice(&report[at..at + 48]);
    }
    out
}

/// [`measurement`] of a TDREPORT.
pub fn measurement_from_report(report: &[u8; 1024]) -> Measurement {
    let [mrtd, rtmr0, rtmr1] = report_fields(report);
    measurement(&mrtd, &rtmr0, &rtmr1)
}

/// Label of the sealing-root derivation.
pub const SEALING_ROOT_LABEL: &[u8] = b"lvbs-tee/sealing-root/v1/no-hardware-key";

/// The sealing root: `SHA-256(SEALING_ROOT_LABEL || measurement || secret)`,
/// where `secret` is the deployer secret compiled into the image (empty if
/// none). A documented derivation with no hardware secret in it (see the
/// module documentation): TDX module 1.5.01 offers no TD-bound key.
pub fn sealing_root(measurement: &Measurement, secret: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(SEALING_ROOT_LABEL);
    h.update(measurement);
    h.update(secret);
    h.finalize().into()
}

/// A hardware entropy instruction pair. On bare metal the boot crate
/// implements it with RDRAND and RDSEED (the only `unsafe` of the TEE path);
/// `None` means the instruction reported no value (CF = 0) or is missing.
pub trait Entropy {
    /// One RDRAND result.
    fn rdrand64(&mut self) -> Option<u64>;
    /// One RDSEED result.
    fn rdseed64(&mut self) -> Option<u64>;
}

impl<E: Entropy + ?Sized> Entropy for alloc::boxed::Box<E> {
    fn rdrand64(&mut self) -> Option<u64> {
        (**self).rdrand64()
    }
    fn rdseed64(&mut self) -> Option<u64> {
        (**self).rdseed64()
    }
}

/// The entropy source failed (or failed its start-up check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntropyError;

impl fmt::Display for EntropyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("hardware entropy source failed")
    }
}

impl core::error::Error for EntropyError {}

/// RDRAND retries per 64-bit word (Intel's DRNG guide recommends 10).
pub const RDRAND_RETRIES: u32 = 10;
/// RDSEED attempts per word once RDRAND gave up.
pub const RDSEED_RETRIES: u32 = 128;

/// A cryptographic RNG straight from the CPU: every word is an RDRAND
/// result (the CPU's NIST SP 800-90A DRBG, reseeded by its entropy source),
/// falling back to RDSEED when RDRAND fails [`RDRAND_RETRIES`] times in a
/// row. Nothing is buffered, so no RNG state lives in paravisor memory.
#[derive(Debug)]
pub struct HwRng<E> {
    source: E,
    /// Words that needed RDSEED.
    pub rdseed_words: u64,
    /// Words neither instruction delivered (each failed a TEE request).
    pub failures: u64,
}

impl<E: Entropy> HwRng<E> {
    /// Wraps `source` after a start-up check: two consecutive words must
    /// differ (catches a missing instruction and the stuck-at-all-ones
    /// failure some CPUs showed after resume).
    pub fn new(source: E) -> Result<Self, EntropyError> {
        let mut rng = HwRng {
            source,
            rdseed_words: 0,
            failures: 0,
        };
        let a = rng.word()?;
        let b = rng.word()?;
        if a == b {
            return Err(EntropyError);
        }
        Ok(rng)
    }

    fn word(&mut self) -> Result<u64, EntropyError> {
        for _ in 0..RDRAND_RETRIES {
            if let Some(v) = self.source.rdrand64() {
                return Ok(v);
            }
        }
        for _ in 0..RDSEED_RETRIES {
            if let Some(v) = self.source.rdseed64() {
                self.rdseed_words += 1;
                return Ok(v);
            }
            core::hint::spin_loop();
        }
        self.failures += 1;
        Err(EntropyError)
    }
}

impl<E: Entropy> TryRng for HwRng<E> {
    type Error = EntropyError;
    fn try_next_u32(&mut self) -> Result<u32, EntropyError> {
        self.word().map(|w| w as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, EntropyError> {
        self.word()
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), EntropyError> {
        for chunk in dst.chunks_mut(8) {
            let w = self.word()?.to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
        Ok(())
    }
}

impl<E: Entropy> TryCryptoRng for HwRng<E> {}

/// Counters of the service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TeeStats {
    /// 0x1FFF0 calls.
    pub calls: u64,
    /// Of those, answered with a negative R8 (the OP-TEE status of the
    /// others is in the argument page).
    pub errors: u64,
    /// TDG.MEM.PAGE.ATTR.RD calls made to check guest buffers.
    pub attr_reads: u64,
}

/// Makes the TEE's trusted applications from the measurement and the
/// sealing root ([`TeeService::start_with_apps`]).
pub type MakeApps<'a> = &'a mut dyn FnMut(&Measurement, &[u8; 32]) -> Vec<Box<dyn TrustedApp>>;

/// The TEE's platform: the RNG, the measurement and the sealing root.
pub type TeePlatform<R> = StaticPlatform<R>;

/// The TEE behind LVBS call 0x1FFF0; see the module documentation. `Next`
/// serves every other id.
pub struct TeeService<R: TryCryptoRng, Next = EnosysHypercalls> {
    config: TeeConfig,
    tee: Option<Tee<TeePlatform<R>>>,
    measurement: Option<Measurement>,
    /// The handler of every id this service does not serve.
    pub next: Next,
    /// Counters.
    pub stats: TeeStats,
}

impl<R: TryCryptoRng, Next: fmt::Debug> fmt::Debug for TeeService<R, Next> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TeeService")
            .field("config", &self.config)
            .field("started", &self.tee.is_some())
            .field("next", &self.next)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<R: TryCryptoRng, Next> TeeService<R, Next> {
    /// A service that answers 0x1FFF0 with `-EOPNOTSUPP` until [`Self::start`]
    /// and passes every other id to `next`.
    pub fn new(config: TeeConfig, next: Next) -> Self {
        TeeService {
            config,
            tee: None,
            measurement: None,
            next,
            stats: TeeStats::default(),
        }
    }

    /// Creates the TEE with the four built-in TAs and `rng`, bound to the
    /// [`measurement_from_report`] of `report` (a TDREPORT taken after the
    /// measured boot) with the sealing root derived from it and the deployer
    /// `secret` (empty: none). Returns the measurement.
    pub fn start(&mut self, report: &[u8; 1024], rng: R, secret: &[u8]) -> Measurement {
        let m = measurement_from_report(report);
        self.start_with(m, sealing_root(&m, secret), rng);
        m
    }

    /// Creates the TEE with an explicit measurement and sealing root.
    pub fn start_with(&mut self, measurement: Measurement, sealing_root: [u8; 32], rng: R) {
        let platform = StaticPlatform {
            rng,
            measurement,
            sealing_root,
        };
        self.tee = Some(Tee::with_builtin_apps(platform, self.config.limits));
        self.measurement = Some(measurement);
    }

    /// [`Self::start`] with the TAs `make_apps` returns instead of the
    /// in-process built-ins: it gets the measurement and the sealing root
    /// (from which it derives each TA's own root key,
    /// `lvbs_tee::platform::ta_root_key`) — on bare metal, one isolated
    /// ring-3 instance per TA behind an `lvbs_tee::sandbox::IsolatedApp`.
    /// A TA whose UUID repeats an earlier one is dropped with a warning.
    pub fn start_with_apps(
        &mut self,
        report: &[u8; 1024],
        rng: R,
        secret: &[u8],
        make_apps: MakeApps<'_>,
    ) -> Measurement {
        let m = measurement_from_report(report);
        let root = sealing_root(&m, secret);
        let apps = make_apps(&m, &root);
        let platform = StaticPlatform {
            rng,
            measurement: m,
            sealing_root: root,
        };
        let mut tee = Tee::new(platform, self.config.limits);
        for app in apps {
            let name = app.name();
            if tee.register_app(app).is_err() {
                log::warn!("TEE: TA {name} has a duplicate UUID: not registered");
            }
        }
        self.tee = Some(tee);
        self.measurement = Some(m);
        m
    }

    /// The measurement sealed data is bound to, once started.
    pub fn measurement(&self) -> Option<&Measurement> {
        self.measurement.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &TeeConfig {
        &self.config
    }

    /// The TEE core, once started.
    pub fn tee(&self) -> Option<&Tee<TeePlatform<R>>> {
        self.tee.as_ref()
    }

    /// The TEE core, once started.
    pub fn tee_mut(&mut self) -> Option<&mut Tee<TeePlatform<R>>> {
        self.tee.as_mut()
    }

    fn call(&mut self, cx: &mut HypercallContext<'_>, args: &HypercallArgs) -> u64 {
        if cx.vm != self.config.vm {
            log::warn!("TEE: call from L2 VM {} refused", cx.vm.index());
            return EINVAL;
        }
        let Some(tee) = self.tee.as_mut() else {
            return EOPNOTSUPP;
        };
        let mut mem = L2Memory::new(&mut *cx.platform, &self.config);
        let r = tee.vtl_call(&mut mem, args.id, args.a1, args.a2, args.a3);
        self.stats.attr_reads += mem.attr_reads();
        if r < 0 {
            log::warn!("TEE: call with PFN {:#x}: R8 {r}", args.a1);
        }
        r as u64
    }
}

impl<R: TryCryptoRng, Next: HypercallHandler> HypercallHandler for TeeService<R, Next> {
    fn handle(&mut self, cx: &mut HypercallContext<'_>, args: &HypercallArgs) -> u64 {
        if args.id != OPTEE_CALL_ID {
            return self.next.handle(cx, args);
        }
        self.stats.calls += 1;
        let r = self.call(cx, args);
        if (r as i64) < 0 {
            self.stats.errors += 1;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(u64, u32);

    impl Entropy for Fixed {
        fn rdrand64(&mut self) -> Option<u64> {
            if self.1 > 0 {
                self.1 -= 1;
                return None;
            }
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1);
            Some(self.0)
        }
        fn rdseed64(&mut self) -> Option<u64> {
            Some(7)
        }
    }

    struct Stuck;

    impl Entropy for Stuck {
        fn rdrand64(&mut self) -> Option<u64> {
            Some(u64::MAX)
        }
        fn rdseed64(&mut self) -> Option<u64> {
            Some(u64::MAX)
        }
    }

    struct Dead;

    impl Entropy for Dead {
        fn rdrand64(&mut self) -> Option<u64> {
            None
        }
        fn rdseed64(&mut self) -> Option<u64> {
            None
        }
    }

    #[test]
    fn hw_rng_fills_and_checks() {
        let mut rng = HwRng::new(Fixed(1, 0)).unwrap();
        let mut buf = [0u8; 13];
        rng.try_fill_bytes(&mut buf).unwrap();
        assert_ne!(buf, [0; 13]);
        assert!(HwRng::new(Stuck).is_err());
        assert!(HwRng::new(Dead).is_err());
        // RDRAND failing RDRAND_RETRIES times falls back to RDSEED once.
        let mut rng = HwRng::new(Fixed(1, 0)).unwrap();
        rng.source.1 = RDRAND_RETRIES;
        assert_eq!(rng.try_next_u64(), Ok(7));
        assert_eq!(rng.rdseed_words, 1);
    }

    #[test]
    fn config_admits() {
        let c = TeeConfig::new(
            L2Vm::Vm1,
            (0x100_0000, 0x300_0000),
            alloc::vec![(0x200_0000, 0x200_1000)],
        );
        assert!(c.admits(0x100_0000, 0x1000));
        assert!(c.admits(0x2FF_F000, 0x1000));
        assert!(!c.admits(0x2FF_F000, 0x1001));
        assert!(!c.admits(0xFF_FFFF, 2));
        assert!(!c.admits(0x1FF_FFFF, 2));
        assert!(c.admits(0x1FF_FFFF, 1));
        assert!(!c.admits(u64::MAX, 2));
        assert!(!c.admits(0x200_0800, 0));
    }

    #[test]
    fn measurement_and_root() {
        let mut report = [0u8; 1024];
        let m0 = measurement_from_report(&report);
        assert_eq!(m0, measurement(&[0; 48], &[0; 48], &[0; 48]));
        for at in [REPORT_MRTD, REPORT_RTMR0 + 47, REPORT_RTMR1 + 1] {
            report[at] ^= 1;
            assert_ne!(measurement_from_report(&report), m0, "byte {at}");
            report[at] ^= 1;
        }
        // RTMR2, RTMR3 and the MAC do not count.
        for at in [816, 864, 224] {
            report[at] ^= 1;
            assert_eq!(measurement_from_report(&report), m0, "byte {at}");
        }
        let a = sealing_root(&[0; 48], &[]);
        let mut m = [0; 48];
        m[47] = 1;
        assert_ne!(a, sealing_root(&m, &[]));
        assert_ne!(a, sealing_root(&[0; 48], b"deployer secret"));
        assert_eq!(a, sealing_root(&[0; 48], &[]));
    }
}
