//! Measured boot: RTMR extension through TDG.MR.RTMR.EXTEND (§5.5), a
//! TCG2-style event log in the CCEL format, TDREPORTs for L2 (§5.6), and the
//! API the HEKI service calls for every code admission.
//!
//! # Which RTMR holds what
//!
//! Following the TDVF/CCEL convention (firmware configuration in RTMR0, the OS
//! loader and kernel in RTMR1, OS/application measurements in RTMR2, RTMR3
//! spare; `tdx-abi.md` §5.5, §7 — a convention, not enforced by hardware):
//!
//! | RTMR | CC MR index | holds | events |
//! |---|---|---|---|
//! | 0 | 1 | paravisor configuration and policy | BootInfo bytes, policy text, separator |
//! | 1 | 2 | the L2 boot payload | kernel image, initrd, command line, separator |
//! | 2 | 3 | code admitted at runtime | one event per validated module, accepted text patch, kexec image |
//! | 3 | 4 | spare (never extended) | — |
//!
//! MRTD (CC MR index 0) covers the paravisor image and the TD layout; the L2
//! payload pages are added unmeasured by the loader, so RTMR1 is what binds
//! the kernel, the initrd and the command line.
//!
//! # Event log
//!
//! [`EventLog::encode`] writes the TCG PC Client "crypto agile" format that
//! the ACPI CCEL table points to on TDX guests: a `TCG_PCClientPCREvent` header
//! (EV_NO_ACTION, "Spec ID Event03", one algorithm: SHA-384) followed by one
//! `TCG_PCR_EVENT2` per extend with the CC MR index (RTMR *i* = *i* + 1) in
//! the PCR-index field, one SHA-384 digest, and the event data. Event data is
//! `tag NUL payload` (see [`Event`]); for self-describing events the digest is
//! SHA-384 of the payload, which [`Event::self_describing_ok`] checks.
//!
//! Replaying the log ([`replay`]) must give the RTMRs of a TDREPORT taken after
//! it: RTMR = SHA-384(RTMR ‖ digest), starting from zero.
//!
//! # L2 interface (outside the LVBS id range 0x1FFE0..=0x1FFFF)
//!
//! * [`ATTEST_REPORT_ID`] (`0x5444_0001`): RSI = GPA of 64 bytes of
//!   REPORTDATA (the verifier's nonce), RDX = GPA of the output buffer, R8 =
//!   its size. The paravisor calls TDG.MR.REPORT and writes the 1024-byte
//!   TDREPORT, a u32 log length and the encoded event log (see
//!   [`ATTEST_HEADER_BYTES`]). R8 = bytes written, or `-EINVAL` (a GPA outside
//!   L2 memory), `-ENOSPC` (buffer too small), `-EIO` (a TDCALL failed).
//! * [`EVENT_LOG_ID`] (`0x5444_0002`): RSI = GPA of the output buffer, RDX =
//!   its size: the encoded event log alone. R8 = its length or `-errno`.

use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;

use sha2::{Digest, Sha384};
use tdcall::leaves::{MrReport, MrRtmrExtend};
use tdcall::{Tdcall, TdxError};

use crate::handlers::{HypercallArgs, HypercallContext, HypercallHandler};
use crate::heki::HekiConfig;
use crate::memory::{L1Memory, MemoryError};

/// A SHA-384 digest: what one RTMR extend takes.
pub type Digest48 = [u8; 48];

/// Number of RTMRs.
pub const NUM_RTMRS: usize = 4;
/// RTMR0: the paravisor's configuration and policy.
pub const RTMR_CONFIG: u8 = 0;
/// RTMR1: the L2 kernel, initrd and command line.
pub const RTMR_BOOT: u8 = 1;
/// RTMR2: code the paravisor admitted into the kernel at runtime.
pub const RTMR_ADMISSIONS: u8 = 2;
/// RTMR3: spare.
pub const RTMR_SPARE: u8 = 3;

/// VMCALL id of "TDREPORT + event log" (outside the LVBS range).
pub const ATTEST_REPORT_ID: u64 = 0x5444_0001;
/// VMCALL id of "event log only".
pub const EVENT_LOG_ID: u64 = 0x5444_0002;
/// Size of a TDREPORT_STRUCT.
pub const TDREPORT_BYTES: usize = 1024;
/// Bytes before the log in the [`ATTEST_REPORT_ID`] output: the report and a
/// little-endian u32 with the log length.
pub const ATTEST_HEADER_BYTES: usize = TDREPORT_BYTES + 4;
/// Offsets in a TDREPORT_STRUCT (§5.6).
pub mod report {
    /// REPORTDATA (64 bytes).
    pub const REPORTDATA: usize = 128;
    /// MAC (32 bytes).
    pub const MAC: usize = 224;
    /// MRTD (48 bytes).
    pub const MRTD: usize = 528;
    /// RTMR0; RTMR *i* is at `RTMR0 + 48 * i`.
    pub const RTMR0: usize = 720;
}

/// TCG event types used here (TCG PC Client Platform Firmware Profile).
pub mod event_type {
    /// EV_NO_ACTION: the Spec ID header event (never extended).
    pub const NO_ACTION: u32 = 0x3;
    /// EV_SEPARATOR: end of a boot phase in an RTMR.
    pub const SEPARATOR: u32 = 0x4;
    /// EV_EVENT_TAG: a runtime code admission.
    pub const EVENT_TAG: u32 = 0x6;
    /// EV_PLATFORM_CONFIG_FLAGS: paravisor configuration and policy.
    pub const PLATFORM_CONFIG_FLAGS: u32 = 0xA;
    /// EV_IPL: kernel, initrd, command line.
    pub const IPL: u32 = 0xD;
}

/// TPM_ALG_SHA384.
pub const TPM_ALG_SHA384: u16 = 0x000C;
/// Event tags (the part of the event data before the NUL).
pub mod tag {
    /// The BootInfo bytes L1 booted with (payload: the bytes).
    pub const BOOTINFO: &[u8] = b"lvbs-tdx:bootinfo";
    /// The paravisor policy (payload: its text).
    pub const POLICY: &[u8] = b"lvbs-tdx:policy";
    /// The L2 kernel image (payload: GPA and size, u64 LE each).
    pub const KERNEL: &[u8] = b"lvbs-tdx:kernel";
    /// The initrd (payload: GPA and size).
    pub const INITRD: &[u8] = b"lvbs-tdx:initrd";
    /// The L2 command line (payload: the bytes).
    pub const CMDLINE: &[u8] = b"lvbs-tdx:cmdline";
}

/// Most events one log holds (boot events plus admissions).
pub const MAX_EVENTS: usize = 4096;
/// Most bytes of event data per event (a 4 KiB command line plus its tag fits).
pub const MAX_EVENT_DATA: usize = 8192;
/// Longest command line [`boot_events_in_memory`] measures.
pub const MAX_CMDLINE_BYTES: u64 = 4096;

/// SHA-384 of `data`.
pub fn sha384(data: &[u8]) -> Digest48 {
    Sha384::digest(data).into()
}

/// `RTMR = SHA-384(RTMR ‖ digest)` (§5.5).
pub fn extend_digest(rtmr: &mut Digest48, digest: &Digest48) {
    let mut h = Sha384::new();
    h.update(&rtmr[..]);
    h.update(digest);
    *rtmr = h.finalize().into();
}

/// What kind of code the paravisor admitted (RTMR2 events).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdmissionKind {
    /// A kernel module whose signature and ELF the HEKI service validated.
    Module,
    /// A text patch (PATCH_TEXT) the HEKI service accepted.
    TextPatch,
    /// A kexec image the HEKI service validated.
    Kexec,
}

impl AdmissionKind {
    /// The event tag of this kind.
    pub const fn tag(self) -> &'static [u8] {
        match self {
            AdmissionKind::Module => b"lvbs-tdx:admit:module",
            AdmissionKind::TextPatch => b"lvbs-tdx:admit:text-patch",
            AdmissionKind::Kexec => b"lvbs-tdx:admit:kexec",
        }
    }

    /// The kind with event tag `tag`.
    pub fn from_tag(tag: &[u8]) -> Option<Self> {
        [Self::Module, Self::TextPatch, Self::Kexec]
            .into_iter()
            .find(|k| k.tag() == tag)
    }
}

/// One measurement: which RTMR, the TCG event type, the digest extended and
/// the event data (`tag NUL payload`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// RTMR index 0..=3.
    pub rtmr: u8,
    /// TCG event type ([`event_type`]).
    pub event_type: u32,
    /// The value extended into the RTMR.
    pub digest: Digest48,
    /// Event data.
    pub data: Vec<u8>,
}

fn tagged(tag: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(tag.len() + 1 + payload.len());
    d.extend_from_slice(tag);
    d.push(0);
    d.extend_from_slice(payload);
    d
}

fn gpa_size(gpa: u64, size: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&gpa.to_le_bytes());
    b[8..].copy_from_slice(&size.to_le_bytes());
    b
}

impl Event {
    /// RTMR0: the BootInfo bytes L1 booted with (they are a parameter area the
    /// host may fill, so MRTD does not cover their contents).
    pub fn bootinfo(bytes: &[u8]) -> Self {
        Event {
            rtmr: RTMR_CONFIG,
            event_type: event_type::PLATFORM_CONFIG_FLAGS,
            digest: sha384(bytes),
            data: tagged(tag::BOOTINFO, bytes),
        }
    }

    /// RTMR0: the policy text ([`policy_text`]).
    pub fn policy(text: &[u8]) -> Self {
        Event {
            rtmr: RTMR_CONFIG,
            event_type: event_type::PLATFORM_CONFIG_FLAGS,
            digest: sha384(text),
            data: tagged(tag::POLICY, text),
        }
    }

    /// RTMR1: the L2 kernel image at `gpa` (digest of its bytes).
    pub fn kernel(gpa: u64, image: &[u8]) -> Self {
        Self::kernel_digest(gpa, image.len() as u64, sha384(image))
    }

    /// RTMR1: the kernel event for an image of `size` bytes with `digest`.
    pub fn kernel_digest(gpa: u64, size: u64, digest: Digest48) -> Self {
        Event {
            rtmr: RTMR_BOOT,
            event_type: event_type::IPL,
            digest,
            data: tagged(tag::KERNEL, &gpa_size(gpa, size)),
        }
    }

    /// RTMR1: the initrd at `gpa`.
    pub fn initrd(gpa: u64, initrd: &[u8]) -> Self {
        Self::initrd_digest(gpa, initrd.len() as u64, sha384(initrd))
    }

    /// RTMR1: the initrd event for `size` bytes with `digest`.
    pub fn initrd_digest(gpa: u64, size: u64, digest: Digest48) -> Self {
        Event {
            rtmr: RTMR_BOOT,
            event_type: event_type::IPL,
            digest,
            data: tagged(tag::INITRD, &gpa_size(gpa, size)),
        }
    }

    /// RTMR1: the command line bytes.
    pub fn cmdline(cmdline: &[u8]) -> Self {
        Event {
            rtmr: RTMR_BOOT,
            event_type: event_type::IPL,
            digest: sha384(cmdline),
            data: tagged(tag::CMDLINE, cmdline),
        }
    }

    /// The EV_SEPARATOR that closes the boot phase of `rtmr` (data: four zero bytes).
    pub fn separator(rtmr: u8) -> Self {
        Event {
            rtmr,
            event_type: event_type::SEPARATOR,
            digest: sha384(&[0; 4]),
            data: Vec::from([0u8; 4]),
        }
    }

    /// RTMR2: code of `kind` with `digest` was admitted.
    pub fn admission(kind: AdmissionKind, digest: &Digest48) -> Self {
        Event {
            rtmr: RTMR_ADMISSIONS,
            event_type: event_type::EVENT_TAG,
            digest: *digest,
            data: tagged(kind.tag(), &[]),
        }
    }

    /// The tag of the event data (before the first NUL), if it has one.
    pub fn tag(&self) -> Option<&[u8]> {
        let nul = self.data.iter().position(|b| *b == 0)?;
        Some(&self.data[..nul])
    }

    /// The payload after the tag's NUL (empty for untagged data).
    pub fn payload(&self) -> &[u8] {
        match self.data.iter().position(|b| *b == 0) {
            Some(nul) => &self.data[nul + 1..],
            None => &[],
        }
    }

    /// For events whose payload is the measured content (BootInfo, policy,
    /// command line, separator): whether the digest is SHA-384 of it. Other
    /// events (kernel, initrd, admissions) return `None`: their content is not
    /// in the log and must be compared with a reference digest.
    pub fn self_describing_ok(&self) -> Option<bool> {
        if self.event_type == event_type::SEPARATOR {
            return Some(self.digest == sha384(&self.data));
        }
        match self.tag()? {
            t if t == tag::BOOTINFO || t == tag::POLICY || t == tag::CMDLINE => {
                Some(self.digest == sha384(self.payload()))
            }
            _ => None,
        }
    }

    /// A short human-readable name: the tag, or "separator".
    pub fn name(&self) -> &str {
        if self.event_type == event_type::SEPARATOR {
            return "separator";
        }
        self.tag()
            .and_then(|t| core::str::from_utf8(t).ok())
            .unwrap_or("?")
    }
}

/// Replays events: the RTMR values they produce from all-zero RTMRs.
pub fn replay<'a>(events: impl IntoIterator<Item = &'a Event>) -> [Digest48; NUM_RTMRS] {
    let mut rtmr = [[0u8; 48]; NUM_RTMRS];
    for e in events {
        if let Some(r) = rtmr.get_mut(e.rtmr as usize) {
            extend_digest(r, &e.digest);
        }
    }
    rtmr
}

/// The paravisor policy as the text measured into RTMR0: the knobs of the
/// HEKI service's configuration that decide what L2 may do. (The L2 layout is
/// measured through BootInfo.)
pub fn policy_text(config: &HekiConfig) -> Vec<u8> {
    use core::fmt::Write;
    let mut s = alloc::string::String::new();
    let l = &config.limits;
    let _ = write!(
        s,
        "lvbs-tdx policy v1\nept=lvbs mbec=1 pin_cr=lvbs pin_msr=lvbs\n\
         nx_unprotected_at_end_of_boot={}\nmax_pages={} max_ranges={} max_gpa={:#x} max_blob_bytes={}\n\
         max_kdata_bytes={}\n",
        config.nx_unprotected_at_end_of_boot as u8,
        l.max_pages,
        l.max_ranges,
        l.max_gpa,
        l.max_blob_bytes,
        config.max_kdata_bytes
    );
    s.into_bytes()
}

/// What the paravisor measures before L2 first runs, in order.
#[derive(Clone, Copy, Debug)]
pub struct BootPayload<'a> {
    /// The BootInfo bytes as L1 read them.
    pub bootinfo: &'a [u8],
    /// The policy text ([`policy_text`]).
    pub policy: &'a [u8],
    /// GPA of the kernel image.
    pub kernel_gpa: u64,
    /// The kernel image as loaded.
    pub kernel: &'a [u8],
    /// GPA and bytes of the initrd, if any.
    pub initrd: Option<(u64, &'a [u8])>,
    /// The command line, if any.
    pub cmdline: Option<&'a [u8]>,
}

/// The boot events of `payload`, in the order the paravisor extends them:
/// RTMR0 BootInfo, policy, separator; RTMR1 kernel, initrd, command line,
/// separator. A verifier computes its expected RTMRs with the same function.
pub fn boot_events(payload: &BootPayload<'_>) -> Vec<Event> {
    let mut v = Vec::from([
        Event::bootinfo(payload.bootinfo),
        Event::policy(payload.policy),
        Event::separator(RTMR_CONFIG),
        Event::kernel(payload.kernel_gpa, payload.kernel),
    ]);
    if let Some((gpa, initrd)) = payload.initrd {
        v.push(Event::initrd(gpa, initrd));
    }
    if let Some(c) = payload.cmdline {
        v.push(Event::cmdline(c));
    }
    v.push(Event::separator(RTMR_BOOT));
    v
}

/// SHA-384 of `len` bytes of memory at `gpa`, read in 4 KiB pieces (the L1
/// heap need not hold the whole image).
pub fn digest_memory<M: L1Memory + ?Sized>(
    m: &mut M,
    gpa: u64,
    len: u64,
) -> Result<Digest48, MemoryError> {
    let mut h = Sha384::new();
    let mut buf = [0u8; 4096];
    let mut at = gpa;
    let end = gpa
        .checked_add(len)
        .ok_or(MemoryError::OutOfRange { gpa, len: 0 })?;
    while at < end {
        let n = ((end - at) as usize).min(buf.len());
        m.read(at, &mut buf[..n])?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok(h.finalize().into())
}

/// Where the L2 boot payload lies in memory: `(gpa, size)` each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootRegions {
    /// The kernel image.
    pub kernel: (u64, u64),
    /// The initrd, if any.
    pub initrd: Option<(u64, u64)>,
    /// The command line, if any.
    pub cmdline: Option<(u64, u64)>,
}

/// [`boot_events`] with the kernel, initrd and command line read from memory
/// (the paravisor's way: the same events for the same bytes).
pub fn boot_events_in_memory<M: L1Memory + ?Sized>(
    m: &mut M,
    bootinfo: &[u8],
    policy: &[u8],
    regions: &BootRegions,
) -> Result<Vec<Event>, MemoryError> {
    let (kgpa, klen) = regions.kernel;
    let mut v = Vec::from([
        Event::bootinfo(bootinfo),
        Event::policy(policy),
        Event::separator(RTMR_CONFIG),
        Event::kernel_digest(kgpa, klen, digest_memory(m, kgpa, klen)?),
    ]);
    if let Some((gpa, len)) = regions.initrd {
        v.push(Event::initrd_digest(gpa, len, digest_memory(m, gpa, len)?));
    }
    if let Some((gpa, len)) = regions.cmdline {
        // Never measure a prefix of what L2 will read: too long is an error.
        if len > MAX_CMDLINE_BYTES {
            return Err(MemoryError::OutOfRange {
                gpa,
                len: len as usize,
            });
        }
        let mut c = alloc::vec![0u8; len as usize];
        m.read(gpa, &mut c)?;
        v.push(Event::cmdline(&c));
    }
    v.push(Event::separator(RTMR_BOOT));
    Ok(v)
}

/// Why a log could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogError {
    /// The log ends inside a record (byte offset).
    Truncated(usize),
    /// The first record is not the Spec ID Event03 header for SHA-384.
    BadHeader,
    /// A record with digest count ≠ 1, another algorithm, or an MR index
    /// outside 1..=4 (record number).
    BadRecord(usize),
    /// More than [`MAX_EVENTS`] events or an event larger than [`MAX_EVENT_DATA`].
    TooLarge,
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Truncated(o) => write!(f, "event log truncated at byte {o}"),
            LogError::BadHeader => f.write_str("event log header is not Spec ID Event03 (SHA-384)"),
            LogError::BadRecord(i) => write!(f, "event log record {i} is malformed"),
            LogError::TooLarge => f.write_str("event log too large"),
        }
    }
}

/// The Spec ID Event03 event data: one algorithm, SHA-384, 64-bit UINTN.
fn spec_id_event() -> Vec<u8> {
    let mut e = Vec::with_capacity(33);
    e.extend_from_slice(b"Spec ID Event03\0");
    e.extend_from_slice(&0u32.to_le_bytes()); // platformClass
    e.extend_from_slice(&[0, 2, 0, 2]); // specVersionMinor, Major, errata, uintnSize (UINT64)
    e.extend_from_slice(&1u32.to_le_bytes()); // numberOfAlgorithms
    e.extend_from_slice(&TPM_ALG_SHA384.to_le_bytes());
    e.extend_from_slice(&48u16.to_le_bytes());
    e.push(0); // vendorInfoSize
    e
}

/// The events of one TD, in extend order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventLog {
    events: Vec<Event>,
}

impl EventLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// The events.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Appends an event (no RTMR is touched: see [`MeasuredBoot::extend`]).
    pub fn push(&mut self, e: Event) -> Result<(), LogError> {
        if self.events.len() >= MAX_EVENTS || e.data.len() > MAX_EVENT_DATA {
            return Err(LogError::TooLarge);
        }
        self.events.push(e);
        Ok(())
    }

    /// Bytes of [`EventLog::encode`].
    pub fn encoded_len(&self) -> usize {
        32 + 33 + self.events.iter().map(|e| 66 + e.data.len()).sum::<usize>()
    }

    /// The CCEL / TCG2 crypto-agile encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        let spec = spec_id_event();
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&event_type::NO_ACTION.to_le_bytes());
        out.extend_from_slice(&[0u8; 20]);
        out.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        out.extend_from_slice(&spec);
        for e in &self.events {
            out.extend_from_slice(&(e.rtmr as u32 + 1).to_le_bytes());
            out.extend_from_slice(&e.event_type.to_le_bytes());
            out.extend_from_slice(&1u32.to_le_bytes());
            out.extend_from_slice(&TPM_ALG_SHA384.to_le_bytes());
            out.extend_from_slice(&e.digest);
            out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            out.extend_from_slice(&e.data);
        }
        out
    }

    /// Parses an encoded log (bounded; never panics). Trailing zero bytes (an
    /// unused tail of a CCEL area) end the log.
    pub fn parse(bytes: &[u8]) -> Result<Self, LogError> {
        let mut r = Reader { b: bytes, at: 0 };
        let (pcr, ty) = (r.u32()?, r.u32()?);
        r.take(20)?;
        let size = r.u32()? as usize;
        let spec = r.take(size)?;
        if pcr != 0 || ty != event_type::NO_ACTION || spec != spec_id_event().as_slice() {
            return Err(LogError::BadHeader);
        }
        let mut log = EventLog::new();
        let mut i = 0;
        while r.at < bytes.len() {
            if bytes[r.at..].iter().all(|b| *b == 0) {
                break;
            }
            let mr = r.u32()?;
            let event_type = r.u32()?;
            let count = r.u32()?;
            let alg = r.u16()?;
            if count != 1 || alg != TPM_ALG_SHA384 || !(1..=4).contains(&mr) {
                return Err(LogError::BadRecord(i));
            }
            let mut digest = [0u8; 48];
            digest.copy_from_slice(r.take(48)?);
            let size = r.u32()? as usize;
            if size > MAX_EVENT_DATA {
                return Err(LogError::TooLarge);
            }
            let data = r.take(size)?.to_vec();
            log.push(Event {
                rtmr: (mr - 1) as u8,
                event_type,
                digest,
                data,
            })?;
            i += 1;
        }
        Ok(log)
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LogError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or(LogError::Truncated(self.at))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, LogError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u16(&mut self) -> Result<u16, LogError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
}

/// L1-private buffers the TDCALLs need: 64-byte aligned for the extend value
/// and REPORTDATA, 1024-byte aligned for the report (§1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeasureBuffers {
    /// 48 bytes (64-byte aligned) for TDG.MR.RTMR.EXTEND.
    pub extend_gpa: u64,
    /// 64 bytes (64-byte aligned) of REPORTDATA.
    pub reportdata_gpa: u64,
    /// 1024 bytes (1024-byte aligned) for the TDREPORT.
    pub report_gpa: u64,
}

impl MeasureBuffers {
    /// The layout inside one 4 KiB-aligned private page: report at 0,
    /// REPORTDATA at 1024, extend value at 1088.
    pub const fn in_page(page_gpa: u64) -> Self {
        MeasureBuffers {
            report_gpa: page_gpa,
            reportdata_gpa: page_gpa + 1024,
            extend_gpa: page_gpa + 1088,
        }
    }

    fn aligned(&self) -> bool {
        self.extend_gpa.is_multiple_of(64)
            && self.reportdata_gpa.is_multiple_of(64)
            && self.report_gpa.is_multiple_of(1024)
    }
}

/// Why a measurement or report failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeasureError {
    /// A buffer is misaligned.
    Misaligned,
    /// L1 memory access failed.
    Memory(MemoryError),
    /// The TDCALL failed.
    Tdcall(TdxError),
    /// The log is full.
    Log(LogError),
    /// RTMR index above 3.
    BadIndex(u8),
}

impl fmt::Display for MeasureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MeasureError::Misaligned => f.write_str("measurement buffers misaligned"),
            MeasureError::Memory(e) => write!(f, "measurement buffer: {e}"),
            MeasureError::Tdcall(e) => write!(f, "TDCALL: {e}"),
            MeasureError::Log(e) => write!(f, "{e}"),
            MeasureError::BadIndex(i) => write!(f, "RTMR index {i}"),
        }
    }
}

/// The TD's measurements: extends RTMRs and keeps the log of every extend.
#[derive(Debug)]
pub struct MeasuredBoot {
    buffers: MeasureBuffers,
    log: EventLog,
    /// TDG.MR.RTMR.EXTEND calls made.
    pub extends: u64,
    /// TDG.MR.REPORT calls made.
    pub reports: u64,
}

/// A [`MeasuredBoot`] shared by the attestation handler and the HEKI service
/// (one vCPU: no locking needed).
pub type SharedMeasurements = Rc<RefCell<MeasuredBoot>>;

impl MeasuredBoot {
    /// A log using `buffers` (L1-private, aligned).
    pub fn new(buffers: MeasureBuffers) -> Result<Self, MeasureError> {
        if !buffers.aligned() {
            return Err(MeasureError::Misaligned);
        }
        Ok(MeasuredBoot {
            buffers,
            log: EventLog::new(),
            extends: 0,
            reports: 0,
        })
    }

    /// Wraps `self` for sharing.
    pub fn shared(self) -> SharedMeasurements {
        Rc::new(RefCell::new(self))
    }

    /// The log so far.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// Extends `event.rtmr` with `event.digest` (TDG.MR.RTMR.EXTEND) and logs
    /// the event. The event is logged only if the extend succeeded.
    pub fn extend<P: Tdcall + L1Memory + ?Sized>(
        &mut self,
        p: &mut P,
        event: Event,
    ) -> Result<(), MeasureError> {
        if event.rtmr as usize >= NUM_RTMRS {
            return Err(MeasureError::BadIndex(event.rtmr));
        }
        if self.log.events.len() >= MAX_EVENTS || event.data.len() > MAX_EVENT_DATA {
            return Err(MeasureError::Log(LogError::TooLarge));
        }
        p.write(self.buffers.extend_gpa, &event.digest)
            .map_err(MeasureError::Memory)?;
        tdcall::call(
            p,
            &MrRtmrExtend {
                data_gpa: self.buffers.extend_gpa,
                index: event.rtmr as u64,
            },
        )
        .map_err(MeasureError::Tdcall)?;
        self.extends += 1;
        self.log.push(event).map_err(MeasureError::Log)
    }

    /// Extends every event of `events` in order.
    pub fn extend_all<P: Tdcall + L1Memory + ?Sized>(
        &mut self,
        p: &mut P,
        events: impl IntoIterator<Item = Event>,
    ) -> Result<(), MeasureError> {
        events.into_iter().try_for_each(|e| self.extend(p, e))
    }

    /// Records one code admission in RTMR2: the HEKI service calls this for
    /// every validated module, accepted text patch and validated kexec image,
    /// *before* the code becomes executable. If it fails the admission must
    /// be refused.
    pub fn record_admission<P: Tdcall + L1Memory + ?Sized>(
        &mut self,
        p: &mut P,
        kind: AdmissionKind,
        digest: &Digest48,
    ) -> Result<(), MeasureError> {
        self.extend(p, Event::admission(kind, digest))
    }

    /// TDG.MR.REPORT with `reportdata`: the 1024-byte TDREPORT_STRUCT.
    pub fn report<P: Tdcall + L1Memory + ?Sized>(
        &mut self,
        p: &mut P,
        reportdata: &[u8; 64],
    ) -> Result<[u8; TDREPORT_BYTES], MeasureError> {
        p.write(self.buffers.reportdata_gpa, reportdata)
            .map_err(MeasureError::Memory)?;
        tdcall::call(
            p,
            &MrReport {
                report_gpa: self.buffers.report_gpa,
                reportdata_gpa: self.buffers.reportdata_gpa,
                subtype: 0,
            },
        )
        .map_err(MeasureError::Tdcall)?;
        self.reports += 1;
        let mut r = [0u8; TDREPORT_BYTES];
        p.read(self.buffers.report_gpa, &mut r)
            .map_err(MeasureError::Memory)?;
        Ok(r)
    }
}

/// `-EIO`.
pub const EIO: u64 = -5i64 as u64;
/// `-EINVAL`.
pub const EINVAL: u64 = -22i64 as u64;
/// `-ENOSPC`.
pub const ENOSPC: u64 = -28i64 as u64;

/// Serves [`ATTEST_REPORT_ID`] and [`EVENT_LOG_ID`] for L2 and passes every
/// other id to `next`. Every GPA L2 names must lie inside `guest_memory`
/// (the L2 region, L2 GPA = L1 GPA) and outside `private`.
#[derive(Debug)]
pub struct AttestHypercalls<Next> {
    /// The measurements.
    pub measurements: SharedMeasurements,
    /// L2 memory `[start, end)`.
    pub guest_memory: (u64, u64),
    /// L1 ranges `[start, end)` L2 may never name.
    pub private: Vec<(u64, u64)>,
    /// The handler for every other id.
    pub next: Next,
    /// Reports served.
    pub reports: u64,
    /// Calls refused with an error.
    pub refused: u64,
}

impl<Next> AttestHypercalls<Next> {
    /// A handler over `guest_memory` in front of `next`.
    pub fn new(
        measurements: SharedMeasurements,
        guest_memory: (u64, u64),
        private: Vec<(u64, u64)>,
        next: Next,
    ) -> Self {
        AttestHypercalls {
            measurements,
            guest_memory,
            private,
            next,
            reports: 0,
            refused: 0,
        }
    }

    fn guest_range_ok(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else {
            return false;
        };
        let (s, e) = self.guest_memory;
        gpa >= s && end <= e && !self.private.iter().any(|&(ps, pe)| gpa < pe && ps < end)
    }

    fn attest(&mut self, cx: &mut HypercallContext<'_>, a: &HypercallArgs) -> Result<u64, u64> {
        let (nonce_gpa, out_gpa, out_len) = (a.a1, a.a2, a.a3);
        if !self.guest_range_ok(nonce_gpa, 64) || !self.guest_range_ok(out_gpa, out_len) {
            return Err(EINVAL);
        }
        let mut m = self.measurements.borrow_mut();
        let log = m.log.encode();
        let total = ATTEST_HEADER_BYTES + log.len();
        if (out_len as usize) < total {
            return Err(ENOSPC);
        }
        let mut reportdata = [0u8; 64];
        cx.platform
            .read(nonce_gpa, &mut reportdata)
            .map_err(|_| EINVAL)?;
        let report = m.report(cx.platform, &reportdata).map_err(|_| EIO)?;
        let w = &mut *cx.platform;
        w.write(out_gpa, &report).map_err(|_| EINVAL)?;
        w.write(
            out_gpa + TDREPORT_BYTES as u64,
            &(log.len() as u32).to_le_bytes(),
        )
        .map_err(|_| EINVAL)?;
        w.write(out_gpa + ATTEST_HEADER_BYTES as u64, &log)
            .map_err(|_| EINVAL)?;
        Ok(total as u64)
    }

    fn event_log(&mut self, cx: &mut HypercallContext<'_>, a: &HypercallArgs) -> Result<u64, u64> {
        let (out_gpa, out_len) = (a.a1, a.a2);
        if !self.guest_range_ok(out_gpa, out_len) {
            return Err(EINVAL);
        }
        let log = self.measurements.borrow().log.encode();
        if (out_len as usize) < log.len() {
            return Err(ENOSPC);
        }
        cx.platform.write(out_gpa, &log).map_err(|_| EINVAL)?;
        Ok(log.len() as u64)
    }
}

impl<Next: HypercallHandler> HypercallHandler for AttestHypercalls<Next> {
    fn handle(&mut self, cx: &mut HypercallContext<'_>, args: &HypercallArgs) -> u64 {
        let r = match args.id {
            ATTEST_REPORT_ID => self.attest(cx, args),
            EVENT_LOG_ID => self.event_log(cx, args),
            _ => return self.next.handle(cx, args),
        };
        match r {
            Ok(n) => {
                if args.id == ATTEST_REPORT_ID {
                    self.reports += 1;
                }
                n
            }
            Err(e) => {
                self.refused += 1;
                e
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn sample_log() -> EventLog {
        let mut log = EventLog::new();
        let payload = BootPayload {
            bootinfo: b"bootinfo bytes",
            policy: b"policy",
            kernel_gpa: 0x100_0000,
            kernel: &[0x90; 100],
            initrd: Some((0x140_0000, b"initrd")),
            cmdline: Some(b"console=ttyS0"),
        };
        for e in boot_events(&payload) {
            log.push(e).unwrap();
        }
        log.push(Event::admission(AdmissionKind::Module, &[7; 48]))
            .unwrap();
        log
    }

    #[test]
    fn encode_parse_round_trip() {
        let log = sample_log();
        let bytes = log.encode();
        assert_eq!(bytes.len(), log.encoded_len());
        assert_eq!(&bytes[32..48], b"Spec ID Event03\0");
        assert_eq!(EventLog::parse(&bytes).unwrap(), log);
        // A zero tail (unused CCEL area) is allowed.
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0; 100]);
        assert_eq!(EventLog::parse(&padded).unwrap(), log);
    }

    #[test]
    fn first_event_record_layout() {
        let bytes = sample_log().encode();
        let e = &bytes[65..];
        assert_eq!(u32::from_le_bytes(e[0..4].try_into().unwrap()), 1); // RTMR0 = MR 1
        assert_eq!(u32::from_le_bytes(e[4..8].try_into().unwrap()), 0xA);
        assert_eq!(u32::from_le_bytes(e[8..12].try_into().unwrap()), 1);
        assert_eq!(u16::from_le_bytes(e[12..14].try_into().unwrap()), 0xC);
        assert_eq!(&e[14..62], &sha384(b"bootinfo bytes"));
    }

    #[test]
    fn replay_follows_the_definition() {
        let log = sample_log();
        let r = replay(log.events());
        let mut r1 = [0u8; 48];
        for e in log.events().iter().filter(|e| e.rtmr == 1) {
            let mut h = Sha384::new();
            h.update(r1);
            h.update(e.digest);
            r1 = h.finalize().into();
        }
        assert_eq!(r[1], r1);
        assert_ne!(r[0], [0; 48]);
        assert_ne!(r[2], [0; 48]);
        assert_eq!(r[3], [0; 48]);
    }

    #[test]
    fn self_describing_events() {
        for e in sample_log().events() {
            match e.name() {
                "lvbs-tdx:kernel" | "lvbs-tdx:initrd" | "lvbs-tdx:admit:module" => {
                    assert_eq!(e.self_describing_ok(), None)
                }
                _ => assert_eq!(e.self_describing_ok(), Some(true), "{}", e.name()),
            }
        }
        let mut e = Event::cmdline(b"quiet");
        e.data.push(b'x');
        assert_eq!(e.self_describing_ok(), Some(false));
        assert_eq!(
            AdmissionKind::from_tag(b"lvbs-tdx:admit:text-patch"),
            Some(AdmissionKind::TextPatch)
        );
    }

    #[test]
    fn parse_rejects_malformed_logs_without_panicking() {
        let good = sample_log().encode();
        for n in 0..good.len() {
            let _ = EventLog::parse(&good[..n]);
        }
        assert!(matches!(
            EventLog::parse(&good[..70]),
            Err(LogError::Truncated(_))
        ));
        let mut b = good.clone();
        b[32] = b'X';
        assert_eq!(EventLog::parse(&b), Err(LogError::BadHeader));
        let mut b = good.clone();
        b[65] = 9; // MR index 9
        assert_eq!(EventLog::parse(&b), Err(LogError::BadRecord(0)));
        let mut b = good.clone();
        b[65 + 62..65 + 66].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(EventLog::parse(&b), Err(LogError::TooLarge));
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0xFF;
            let _ = EventLog::parse(&b);
        }
        let _ = EventLog::parse(&vec![0xFF; 4096]);
    }

    #[test]
    fn buffers_must_be_aligned() {
        assert!(MeasuredBoot::new(MeasureBuffers::in_page(0x5000)).is_ok());
        let mut b = MeasureBuffers::in_page(0x5000);
        b.report_gpa += 64;
        assert_eq!(MeasuredBoot::new(b).unwrap_err(), MeasureError::Misaligned);
    }
}
