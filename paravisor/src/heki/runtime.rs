//! The HEKI runtime calls (heki-lvbs-abi.md §5.5–§5.7, §5.9): authenticated
//! modules (`VALIDATE_MODULE`, `FREE_MODULE_INIT`, `UNLOAD_MODULE`), text
//! patching (`PATCH_TEXT`) and secondary keys (`COPY_SECONDARY_KEY`), plus the
//! trust material `LOAD_KDATA` feeds them (keyring, blocklist, the core
//! kernel's patch sites).
//!
//! # `VALIDATE_MODULE`: freeze, copy once, check, commit or roll back
//!
//! 1. The `heki_page` chain, the signed module file and the module's patch
//!    info are copied once into L1 memory (bounded: chain length, range count,
//!    [`HekiConfig::max_module_bytes`](super::HekiConfig::max_module_bytes)
//!    for the file and each checked region, twice that for the checked
//!    regions together).
//! 2. Every section range must be whole pages of L2 memory outside the
//!    paravisor's ranges, no page may appear twice, and every page must be
//!    *ordinary kernel data* ([`PageState::KernelData`]) that no validated
//!    module owns: kernel text, rodata, sealed, user or paravisor pages and
//!    another module's frames are refused (`-EINVAL`, litebox PR #1011's
//!    `ProtectedFrameOverlap`), so a validated request can never be used to
//!    loosen memory the guest did not own as plain data.
//! 3. **Freeze**: the frames whose bytes are checked (text, rodata, init
//!    text, init rodata) become read-only for L2 in one [`Ept`](ept::Ept) batch
//!    *before* any section byte is read (§5.12: another vCPU could otherwise
//!    rewrite validated bytes between the check and the protection).
//! 4. The frozen sections are copied once; the signature is verified against
//!    the keyring (built-in plus secondary keys) and the blocklist; the copies
//!    are compared with the signed ELF except at relocation and loader
//!    patch-site windows ([`heki_tdx::elf`]); the module's jump-label sites are
//!    checked to lie in its text frames.
//! 5. **Record**: with measurements attached
//!    ([`HekiService::measurements`](super::HekiService::measurements)), an
//!    RTMR2 event (`lvbs-tdx:admit:module`, SHA-384 of the signed module
//!    file) is extended first; if that fails the module is refused (`-EIO`).
//!    **Commit**: one [`Ept::transition_batch`](ept::Ept::transition_batch) with [`Authority::Validated`]
//!    sets text and init text R+Xs, rodata and init rodata R, data, init data
//!    and ro-after-init R+W; the patch sites are registered and a fresh token
//!    (monotonic, never reused) is returned in R8.
//! 6. Any failure after the freeze moves the frozen frames back to kernel data
//!    (their state before the call) and returns the errno. If even that
//!    fails, the frames stay read-only: more restrictive, never less.
//!
//! # `FREE_MODULE_INIT` and `UNLOAD_MODULE` (§5.6)
//!
//! Freeing init moves init text, init data and init rodata to R+W (no
//! execute) and ro-after-init to R, drops the init patch sites and releases
//! the init frames; a second free of the same token is `-EINVAL`. Unloading
//! moves every remaining section to R+W, drops the module's patch sites,
//! releases its frames and forgets the token: a second unload (and any unknown
//! token) is `-EINVAL`.
//!
//! # `PATCH_TEXT` (§5.9)
//!
//! The 24-byte request is copied once (from one or two pages). Every byte it
//! would change must lie in a page that is kernel text now
//! ([`PageState::KernelText`]: never sealed, never data), else `-EACCES`.
//! Then the [`PatchRegistry`] state machine decides: only registered
//! jump-label sites, only between their registered `JMP` and the NOP of the
//! same length, only in `text_poke_bp` order (INT3, tail, first byte).
//! Unregistered bytes are `-ENOENT` (the LVBS guest treats that as "not
//! handled"), an illegal step `-EACCES`. With measurements attached, each
//! accepted step is first extended into RTMR2 (`lvbs-tdx:admit:text-patch`,
//! SHA-384 over GPA u64 LE, length u32 LE and bytes of every write; `-EIO` if
//! that fails). The paravisor writes the accepted bytes into the page itself;
//! L2 cannot, the page is not writable for it.
//!
//! # `COPY_SECONDARY_KEY` (§5.7)
//!
//! The payload (ranges with attribute 0) is one DER X.509 certificate, copied
//! once; it joins the keyring only if a key already in the keyring signed it
//! and neither is on the blocklist ([`Keyring::add_secondary`]). At most
//! [`HekiConfig::max_secondary_keys`](super::HekiConfig::max_secondary_keys) are added.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

use ept::{Authority, GpaRange, PageState, PAGE};
use heki_tdx::abi::{Errno, KeyPayload, ModMemType, ToErrno};
use heki_tdx::elf::{CheckConfig, ModuleElf};
use heki_tdx::modsig::{self, Blocklist, DigestAlg, Keyring};
use heki_tdx::pages::{self, Limits, ModuleRequest, Range};
use heki_tdx::patch::{self, HekiPatch, Owner, PatchRegistry};

use super::{ept_errno, page_state, refuse, CallResult, HekiService, L2Memory, Refusal};
use crate::handlers::{HypercallArgs, HypercallContext, MsrPolicy};
use crate::measure::{self, AdmissionKind};

/// The section types whose loaded bytes are compared with the signed ELF and
/// which are therefore frozen before they are read. The data types are
/// written by the loader and the module, so they are not compared.
pub const CHECKED_SECTIONS: [ModMemType; 4] = [
    ModMemType::Text,
    ModMemType::Rodata,
    ModMemType::InitText,
    ModMemType::InitRodata,
];

/// Most bytes of one `COPY_SECONDARY_KEY` payload (one certificate).
pub const MAX_KEY_PAYLOAD: usize = 16 << 10;

/// A validated module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedModule {
    /// Its token.
    pub token: u64,
    /// Subject of the certificate that signed it.
    pub signer: String,
    /// Its section frames and their types (init sections are dropped when
    /// they are freed).
    pub sections: Vec<(GpaRange, ModMemType)>,
    /// Whether `FREE_MODULE_INIT` ran.
    pub init_freed: bool,
    /// Jump-label sites it registered.
    pub patch_sites: usize,
}

/// Keys, blocklist, patch sites and modules: what the runtime calls use.
#[derive(Clone, Debug, Default)]
pub struct HekiRuntime {
    pub(super) keyring: Keyring,
    pub(super) blocklist: Blocklist,
    pub(super) patches: PatchRegistry,
    pub(super) modules: BTreeMap<u64, LoadedModule>,
    /// Page -> token of the module that owns it.
    pub(super) owned: BTreeMap<u64, u64>,
    pub(super) next_token: u64,
    pub(super) secondary_keys: usize,
}

impl HekiRuntime {
    /// The trusted keys (built-in and secondary).
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The revoked hashes (kdata type 2 plus the revocation certificates).
    pub fn blocklist(&self) -> &Blocklist {
        &self.blocklist
    }

    /// The registered jump-label sites.
    pub fn patches(&self) -> &PatchRegistry {
        &self.patches
    }

    /// The validated modules by token.
    pub fn modules(&self) -> &BTreeMap<u64, LoadedModule> {
        &self.modules
    }

    /// The token the next validated module gets.
    pub fn next_token(&self) -> u64 {
        self.next_token
    }

    /// The token of the module owning the page at `gpa`.
    pub fn owner_of(&self, gpa: u64) -> Option<u64> {
        self.owned.get(&(gpa & !(PAGE - 1))).copied()
    }
}

/// The raw TBSCertificate of a DER certificate (the first element of its
/// outer SEQUENCE), or `None` if the header does not parse. Bounded by the input.
fn tbs_of(cert: &[u8]) -> Option<&[u8]> {
    let (_, body) = der_element(cert)?;
    let (tbs, _) = der_element(body)?;
    Some(tbs)
}

/// Splits one DER SEQUENCE off `b`: `(whole element, its contents)`.
fn der_element(b: &[u8]) -> Option<(&[u8], &[u8])> {
    if *b.first()? != 0x30 {
        return None;
    }
    let first = *b.get(1)?;
    let (len, hdr) = match first {
        0..=0x7F => (first as usize, 2),
        0x81..=0x84 => {
            let k = (first & 0x7F) as usize;
            let bytes = b.get(2..2 + k)?;
            (
                bytes.iter().fold(0usize, |a, x| (a << 8) | *x as usize),
                2 + k,
            )
        }
        _ => return None,
    };
    let end = hdr.checked_add(len)?;
    Some((b.get(..end)?, b.get(hdr..end)?))
}

/// Each DER SEQUENCE of a concatenated list (zero padding after the last one
/// allowed); `None` if malformed.
pub fn der_sequences(mut rest: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        if rest.iter().all(|b| *b == 0) && !out.is_empty() {
            break;
        }
        let (whole, _) = der_element(rest)?;
        rest = &rest[whole.len()..];
        out.push(whole);
    }
    Some(out)
}

/// The blocklist of `LOAD_KDATA`: the type-2 slots plus, for each revocation
/// certificate (type 1), its TBS SHA-256 as a `tbs:` entry (what Linux's
/// revocation keyring does: a revoked certificate can sign nothing).
pub(super) fn build_blocklist(slots: &[u8], revocation_certs: &[u8]) -> Result<Blocklist, Refusal> {
    let mut list = Blocklist::parse_slots(slots).map_err(|e| {
        log::warn!("LOAD_KDATA: {e}");
        Refusal(e.errno(), "bad blocklist")
    })?;
    if revocation_certs.is_empty() {
        return Ok(list);
    }
    let certs = der_sequences(revocation_certs).ok_or(Refusal(
        Errno::EINVAL,
        "revocation certificates are not DER SEQUENCEs",
    ))?;
    for cert in certs {
        let tbs = tbs_of(cert).ok_or(Refusal(
            Errno::EINVAL,
            "revocation certificate without a TBSCertificate",
        ))?;
        let mut entry = Vec::with_capacity(4 + 64);
        entry.extend_from_slice(b"tbs:");
        for b in DigestAlg::Sha256.digest(tbs) {
            entry.push(b"0123456789abcdef"[usize::from(b >> 4)]);
            entry.push(b"0123456789abcdef"[usize::from(b & 15)]);
        }
        list.add_entry(&entry)
            .map_err(|e| Refusal(e.errno(), "revocation hash"))?;
    }
    Ok(list)
}

/// The byte at `gpa` in `copy`, the concatenation of `ranges` (VA-contiguous,
/// in arrival order).
fn byte_at<A>(ranges: &[Range<A>], copy: &[u8], gpa: u64) -> Option<u8> {
    let mut off = 0u64;
    for r in ranges {
        if (r.pa..r.epa).contains(&gpa) {
            return copy.get(usize::try_from(off + (gpa - r.pa)).ok()?).copied();
        }
        off += r.len();
    }
    None
}

/// What a successful check of the frozen module produced.
struct Checked {
    signer: String,
    patches: PatchRegistry,
    sites: usize,
}

impl<Next, Cr, Ms, Cp> HekiService<Next, Cr, Ms, Cp>
where
    Ms: MsrPolicy,
{
    /// Whether module frames may come from `page`: memory the guest did not
    /// protect — kernel data after the end of boot, or still the boot alias
    /// ([`PageState::Unmapped`] in the [`Ept`]) before it, as for a module
    /// loaded while the kernel is still trusted — and no other module's.
    /// The caller has already refused paravisor ranges and GPAs outside L2.
    fn ordinary(&self, page: u64) -> bool {
        matches!(
            self.ept.state(page),
            PageState::KernelData | PageState::Unmapped
        ) && !self.rt.owned.contains_key(&page)
    }

    /// One Ept batch; flushes L2 translations if anything changed.
    fn apply(
        &mut self,
        cx: &mut HypercallContext<'_>,
        requests: &[(GpaRange, PageState)],
        authority: Authority,
    ) -> Result<(), ept::EptError> {
        if requests.is_empty() {
            return Ok(());
        }
        let r = self
            .ept
            .transition_batch(&mut *cx.platform, requests, authority);
        // Even a failed batch may have changed (and rolled back) attributes.
        cx.invalidate_translations();
        let report = r?;
        self.stats.attr_writes += u64::from(report.calls);
        Ok(())
    }

    pub(super) fn validate_module(
        &mut self,
        cx: &mut HypercallContext<'_>,
        a: &HypercallArgs,
    ) -> CallResult {
        if self.rt.keyring.is_empty() {
            return refuse(Errno::EACCES, "no certificates loaded (LOAD_KDATA)");
        }
        if self.rt.modules.len() >= self.config.max_modules {
            return refuse(Errno::ERANGE, "too many validated modules");
        }
        let token = self.rt.next_token;
        if token > i64::MAX as u64 {
            return refuse(Errno::ERANGE, "module tokens exhausted");
        }
        let limits = Limits {
            max_blob_bytes: self.config.max_module_bytes,
            ..self.config.limits
        };
        let req = {
            let mut mem = L2Memory {
                platform: &mut *cx.platform,
                config: &self.config,
                ept: &self.ept,
            };
            ModuleRequest::read(&mut mem, a.a1, a.a2, &limits).map_err(|e| {
                log::warn!("VALIDATE_MODULE: {e}");
                Refusal(e.errno(), "bad module request")
            })?
        };

        // Section frames: whole pages of ordinary kernel data, each once.
        let budget = self.config.guest_pages();
        let mut pages_total: u64 = 0;
        let mut checked_bytes: u64 = 0;
        let mut seen = BTreeSet::new();
        let mut sections: Vec<(GpaRange, ModMemType)> = Vec::with_capacity(req.sections.len());
        for (i, r) in req.sections.iter().enumerate() {
            if self.config.overlaps_private(r.pa, r.epa) {
                return refuse(Errno::EINVAL, "section overlaps paravisor memory");
            }
            if !self.config.inside_guest_memory(r.pa, r.epa) {
                return refuse(Errno::EFAULT, "section outside L2 memory");
            }
            let Some(range) = GpaRange::new(r.pa, r.epa) else {
                return refuse(Errno::EINVAL, "section not page aligned");
            };
            pages_total = pages_total.saturating_add(range.len_pages());
            if pages_total > budget {
                return refuse(Errno::ERANGE, "sections cover more pages than L2 memory");
            }
            if CHECKED_SECTIONS.contains(&r.attr) {
                // What the check holds at once: the copies plus two work
                // buffers of the largest region, next to the file.
                checked_bytes = checked_bytes.saturating_add(r.len());
                if checked_bytes > 2 * self.config.max_module_bytes as u64 {
                    return refuse(Errno::ERANGE, "checked sections larger than the cap");
                }
            }
            for page in range.pages() {
                if !seen.insert(page) {
                    return refuse(Errno::EINVAL, "two sections share a frame");
                }
                if !self.ordinary(page) {
                    log::warn!(
                        "VALIDATE_MODULE: section {i} ({:?}) frame {page:#x} is {:?}{}",
                        r.attr,
                        self.ept.state(page),
                        match self.rt.owned.get(&page) {
                            Some(t) => alloc::format!(", owned by module {t}"),
                            None => String::new(),
                        }
                    );
                    return refuse(
                        Errno::EINVAL,
                        "section frame is protected, private or another module's",
                    );
                }
            }
            sections.push((range, r.attr));
        }

        // Freeze the frames whose bytes are checked, before reading them.
        let frozen: Vec<(GpaRange, PageState)> = sections
            .iter()
            .filter(|(_, t)| CHECKED_SECTIONS.contains(t))
            .map(|(r, _)| (*r, PageState::Rodata))
            .collect();
        self.apply(cx, &frozen, Authority::Paravisor).map_err(|e| {
            log::warn!("VALIDATE_MODULE: freezing the module frames: {e:?}");
            Refusal(ept_errno(&e), "freezing the module frames failed")
        })?;

        let checked = self
            .check_frozen_module(cx, &req, &limits, token)
            .and_then(|c| {
                // RTMR2 learns of the module before its text can run.
                self.admit(cx, AdmissionKind::Module, &measure::sha384(&req.elf))?;
                let commit: Vec<(GpaRange, PageState)> = sections
                    .iter()
                    .map(|(r, t)| {
                        (
                            *r,
                            page_state(t.validated_attr()).unwrap_or(PageState::Rodata),
                        )
                    })
                    .collect();
                self.apply(cx, &commit, Authority::Validated)
                    .map_err(|e| {
                        log::warn!("VALIDATE_MODULE: setting section permissions: {e:?}");
                        Refusal(ept_errno(&e), "setting the section permissions failed")
                    })
                    .map(|()| c)
            });
        let checked = match checked {
            Ok(c) => c,
            Err(r) => {
                let back: Vec<(GpaRange, PageState)> = frozen
                    .iter()
                    .map(|(range, _)| (*range, PageState::KernelData))
                    .collect();
                if let Err(e) = self.apply(cx, &back, Authority::Validated) {
                    log::error!(
                        "VALIDATE_MODULE: rollback failed, frames stay read-only or unmapped: {e:?}"
                    );
                }
                return Err(r);
            }
        };

        for (range, _) in &sections {
            for page in range.pages() {
                self.rt.owned.insert(page, token);
            }
        }
        self.rt.patches = checked.patches;
        self.rt.next_token = token + 1;
        self.stats.modules_validated += 1;
        log::info!(
            "VALIDATE_MODULE: token {token}, signed by {}, {} section range(s), {pages_total} page(s), {} patch site(s)",
            checked.signer,
            sections.len(),
            checked.sites
        );
        self.rt.modules.insert(
            token,
            LoadedModule {
                token,
                signer: checked.signer,
                sections,
                init_freed: false,
                patch_sites: checked.sites,
            },
        );
        Ok(token)
    }

    /// Steps 4 of the module documentation, on frozen frames: copy, verify,
    /// compare, and prepare the patch registry. Changes nothing in `self`.
    fn check_frozen_module(
        &mut self,
        cx: &mut HypercallContext<'_>,
        req: &ModuleRequest,
        limits: &Limits,
        token: u64,
    ) -> Result<Checked, Refusal> {
        let copies: Vec<(ModMemType, Vec<Range<ModMemType>>, Vec<u8>)> = {
            let mut mem = L2Memory {
                platform: &mut *cx.platform,
                config: &self.config,
                ept: &self.ept,
            };
            let mut out = Vec::with_capacity(CHECKED_SECTIONS.len());
            for kind in CHECKED_SECTIONS {
                // A region the guest does not name is neither checked nor
                // granted anything. Linux 6.1-6.3 keep no separate init
                // regions once `do_init_module` has freed them, so a module
                // validated after its init ran names only its core regions.
                if req.ranges(kind).is_empty() {
                    continue;
                }
                let bytes = req.copy_section(&mut mem, kind, limits).map_err(|e| {
                    log::warn!("VALIDATE_MODULE: copying {kind:?}: {e}");
                    Refusal(e.errno(), "copying a section failed")
                })?;
                out.push((kind, req.ranges(kind), bytes));
            }
            out
        };

        let verified = modsig::verify_module(&req.elf, &self.rt.keyring, &self.rt.blocklist)
            .map_err(|e| {
                log::warn!("VALIDATE_MODULE: signature: {e}");
                Refusal(e.errno(), "module signature refused")
            })?;
        let content = req
            .elf
            .get(..verified.content_len)
            .ok_or(Refusal(Errno::ELIBBAD, "signed content length"))?;
        let elf = ModuleElf::parse(content).map_err(|e| {
            log::warn!("VALIDATE_MODULE: ELF: {e}");
            Refusal(e.errno(), "module ELF malformed")
        })?;
        let cfg = CheckConfig::default();
        for (kind, _, bytes) in &copies {
            elf.check_region(*kind, bytes, &cfg).map_err(|e| {
                log::warn!("VALIDATE_MODULE: {e}");
                Refusal(e.errno(), "loaded section differs from the signed module")
            })?;
        }

        // Jump-label sites: only inside this module's text frames.
        let sites = patch::parse_patch_info(&req.patch_info).map_err(|e| {
            log::warn!("VALIDATE_MODULE: patch info: {e}");
            Refusal(e.errno(), "bad module patch info")
        })?;
        let text_of = |kind: ModMemType| -> &[Range<ModMemType>] {
            copies
                .iter()
                .find(|(k, _, _)| *k == kind)
                .map(|(_, r, _)| r.as_slice())
                .unwrap_or(&[])
        };
        let in_ranges = |ranges: &[Range<ModMemType>], g: u64| {
            ranges.iter().any(|r| (r.pa..r.epa).contains(&g))
        };
        let mut registry = self.rt.patches.clone();
        for p in &sites {
            let gpas = p.byte_gpas();
            let init = in_ranges(text_of(ModMemType::InitText), gpas[0]);
            let kind = if init {
                ModMemType::InitText
            } else {
                ModMemType::Text
            };
            let current: Option<Vec<u8>> =
                copies
                    .iter()
                    .find(|(k, _, _)| *k == kind)
                    .and_then(|(_, ranges, bytes)| {
                        gpas.iter().map(|g| byte_at(ranges, bytes, *g)).collect()
                    });
            registry
                .register(
                    p,
                    Owner::Module { token, init },
                    |g| in_ranges(text_of(kind), g),
                    current.as_deref(),
                )
                .map_err(|e| {
                    log::warn!("VALIDATE_MODULE: patch site: {e}");
                    Refusal(e.errno(), "module patch site refused")
                })?;
        }
        Ok(Checked {
            signer: verified.signer,
            patches: registry,
            sites: sites.len(),
        })
    }

    fn module_token(&self, a: &HypercallArgs) -> Result<u64, Refusal> {
        if self.rt.modules.contains_key(&a.a1) {
            Ok(a.a1)
        } else {
            refuse(Errno::EINVAL, "unknown module token")
        }
    }

    pub(super) fn free_module_init(
        &mut self,
        cx: &mut HypercallContext<'_>,
        a: &HypercallArgs,
    ) -> CallResult {
        let token = self.module_token(a)?;
        let Some(m) = self.rt.modules.get(&token) else {
            return refuse(Errno::EINVAL, "unknown module token");
        };
        if m.init_freed {
            return refuse(Errno::EINVAL, "module init already freed");
        }
        let requests: Vec<(GpaRange, PageState)> = m
            .sections
            .iter()
            .filter_map(|(r, t)| match t {
                t if t.is_init() => Some((*r, PageState::KernelData)),
                ModMemType::RoAfterInit => Some((*r, PageState::Rodata)),
                _ => None,
            })
            .collect();
        self.apply(cx, &requests, Authority::Validated)
            .map_err(|e| {
                log::warn!("FREE_MODULE_INIT: {e:?}");
                Refusal(ept_errno(&e), "releasing the init sections failed")
            })?;
        let removed = self
            .rt
            .patches
            .remove_where(|o| o == Owner::Module { token, init: true });
        let mut released = 0u64;
        if let Some(m) = self.rt.modules.get_mut(&token) {
            for (r, _) in m.sections.iter().filter(|(_, t)| t.is_init()) {
                for page in r.pages() {
                    self.rt.owned.remove(&page);
                    released += 1;
                }
            }
            m.sections.retain(|(_, t)| !t.is_init());
            m.init_freed = true;
        }
        log::info!(
            "FREE_MODULE_INIT: token {token}: {released} init page(s) released, {removed} init patch site(s) dropped"
        );
        Ok(0)
    }

    pub(super) fn unload_module(
        &mut self,
        cx: &mut HypercallContext<'_>,
        a: &HypercallArgs,
    ) -> CallResult {
        let token = self.module_token(a)?;
        let Some(m) = self.rt.modules.get(&token) else {
            return refuse(Errno::EINVAL, "unknown module token");
        };
        let requests: Vec<(GpaRange, PageState)> = m
            .sections
            .iter()
            .map(|(r, _)| (*r, PageState::KernelData))
            .collect();
        // On failure the module stays registered (the guest may retry); the
        // Ept left no page more permissive than before.
        self.apply(cx, &requests, Authority::Validated)
            .map_err(|e| {
                log::warn!("UNLOAD_MODULE: {e:?}");
                Refusal(ept_errno(&e), "releasing the module frames failed")
            })?;
        let removed = self
            .rt
            .patches
            .remove_where(|o| matches!(o, Owner::Module { token: t, .. } if t == token));
        self.rt.owned.retain(|_, t| *t != token);
        self.rt.modules.remove(&token);
        log::info!("UNLOAD_MODULE: token {token} forgotten, {removed} patch site(s) dropped");
        Ok(0)
    }

    pub(super) fn patch_text(
        &mut self,
        cx: &mut HypercallContext<'_>,
        a: &HypercallArgs,
    ) -> CallResult {
        let req: HekiPatch = {
            let mut mem = L2Memory {
                platform: &mut *cx.platform,
                config: &self.config,
                ept: &self.ept,
            };
            patch::read_request(&mut mem, a.a1, a.a2).map_err(|e| {
                log::warn!("PATCH_TEXT: {e}");
                Refusal(e.errno(), "bad heki_patch request")
            })?
        };
        for g in req.byte_gpas() {
            let text = self.config.inside_guest_memory(g, g + 1)
                && !self.config.overlaps_private(g, g + 1)
                && self.ept.state(g) == PageState::KernelText;
            if !text {
                log::warn!(
                    "PATCH_TEXT: byte {g:#x} is in a {:?} page, not kernel text",
                    self.ept.state(g)
                );
                return refuse(Errno::EACCES, "patch target is not (unsealed) kernel text");
            }
            // A site may only be patched in memory of its owner: kernel
            // sites outside module frames, a module's sites in its own.
            let page_owner = self.rt.owner_of(g);
            let consistent = match self.rt.patches.owner_at(g) {
                None => true,
                Some(Owner::Kernel) => page_owner.is_none(),
                Some(Owner::Module { token, .. }) => page_owner == Some(token),
            };
            if !consistent {
                log::warn!(
                    "PATCH_TEXT: site byte {g:#x} lies in memory of {page_owner:?}, not of its owner"
                );
                return refuse(Errno::EACCES, "patch site outside its owner's memory");
            }
        }
        self.rt.patches.apply(&req).map_err(|e| {
            log::warn!("PATCH_TEXT: {e}");
            Refusal(
                e.errno(),
                if e.errno() == Errno::ENOENT {
                    "no registered patch site there"
                } else {
                    "not a legal step for the registered site"
                },
            )
        })?;
        // RTMR2 learns of the bytes before they are written:
        // SHA-384 over (GPA u64 LE, length u32 LE, bytes) of each write.
        let mut record = Vec::new();
        for (gpa, bytes) in req.writes() {
            record.extend_from_slice(&gpa.to_le_bytes());
            record.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            record.extend_from_slice(&bytes);
        }
        self.admit(cx, AdmissionKind::TextPatch, &measure::sha384(&record))?;
        for (gpa, bytes) in req.writes() {
            if let Err(e) = cx.platform.write(gpa, &bytes) {
                log::error!("PATCH_TEXT: writing {gpa:#x}: {e}");
                return refuse(Errno::EIO, "writing the patch failed");
            }
        }
        self.stats.patches_applied += 1;
        Ok(0)
    }

    pub(super) fn copy_secondary_key(
        &mut self,
        cx: &mut HypercallContext<'_>,
        a: &HypercallArgs,
    ) -> CallResult {
        if self.rt.keyring.is_empty() {
            return refuse(Errno::EACCES, "no certificates loaded (LOAD_KDATA)");
        }
        if self.rt.secondary_keys >= self.config.max_secondary_keys {
            return refuse(Errno::ERANGE, "too many secondary keys");
        }
        let limits = Limits {
            max_blob_bytes: MAX_KEY_PAYLOAD,
            ..self.config.limits
        };
        let der = {
            let mut mem = L2Memory {
                platform: &mut *cx.platform,
                config: &self.config,
                ept: &self.ept,
            };
            pages::read_ranges::<KeyPayload, _>(&mut mem, a.a1, a.a2, &limits)
                .and_then(|ranges| pages::copy_blob(&mut mem, &ranges, &limits))
                .map_err(|e| {
                    log::warn!("COPY_SECONDARY_KEY: {e}");
                    Refusal(e.errno(), "bad key payload")
                })?
        };
        let before = self.rt.keyring.len();
        let index = self
            .rt
            .keyring
            .add_secondary(&der, &self.rt.blocklist)
            .map_err(|e| {
                log::warn!("COPY_SECONDARY_KEY: {e}");
                Refusal(e.errno(), "secondary key refused")
            })?;
        if self.rt.keyring.len() > before {
            self.rt.secondary_keys += 1;
        }
        if let Some(k) = self.rt.keyring.keys().get(index) {
            log::info!(
                "COPY_SECONDARY_KEY: {} ({} bits) trusted as key {index}",
                k.subject,
                k.bits
            );
        }
        Ok(0)
    }

    /// Registers the core kernel's jump-label sites (kdata type 5) into a
    /// fresh registry: every byte must be L2 memory outside the paravisor's
    /// ranges and not sealed or private (whether it is kernel text is checked
    /// at each `PATCH_TEXT`, since `PROTECT_MEMORY` may come later).
    pub(super) fn kernel_patch_sites(
        &mut self,
        cx: &mut HypercallContext<'_>,
        blob: &[u8],
    ) -> Result<PatchRegistry, Refusal> {
        let sites = patch::parse_patch_info(blob).map_err(|e| {
            log::warn!("LOAD_KDATA: patch info: {e}");
            Refusal(e.errno(), "bad patch info")
        })?;
        let mut registry = PatchRegistry::new();
        for p in &sites {
            let current: Option<Vec<u8>> = {
                let mut mem = L2Memory {
                    platform: &mut *cx.platform,
                    config: &self.config,
                    ept: &self.ept,
                };
                p.byte_gpas()
                    .iter()
                    .map(|g| {
                        let mut b = [0u8];
                        pages::GuestMemory::read(&mut mem, *g, &mut b)
                            .ok()
                            .map(|()| b[0])
                    })
                    .collect()
            };
            let allowed = |g: u64| {
                self.config.inside_guest_memory(g, g + 1)
                    && !self.config.overlaps_private(g, g + 1)
                    && !matches!(
                        self.ept.state(g),
                        PageState::Sealed(_) | PageState::ParavisorPrivate
                    )
            };
            registry
                .register(p, Owner::Kernel, allowed, current.as_deref())
                .map_err(|e| {
                    log::warn!("LOAD_KDATA: patch site: {e}");
                    Refusal(e.errno(), "patch site refused")
                })?;
        }
        Ok(registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_helpers() {
        let cert = [0x30, 0x06, 0x30, 0x02, 0xAA, 0xBB, 0x05, 0x00];
        assert_eq!(tbs_of(&cert), Some(&[0x30, 0x02, 0xAA, 0xBB][..]));
        assert_eq!(tbs_of(&[0x30, 0x02, 0x31, 0x00]), None);
        assert_eq!(tbs_of(&[0x30, 0x85, 0, 0, 0, 0, 0]), None);
        assert_eq!(
            der_sequences(&[0x30, 0x00, 0x30, 0x01, 7, 0, 0]).map(|v| v.len()),
            Some(2)
        );
        assert_eq!(der_sequences(&[0x30, 0x05, 1]), None);
        assert_eq!(der_sequences(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]), None);
    }

    #[test]
    fn revocation_certs_become_tbs_entries() {
        let cert = [0x30, 0x06, 0x30, 0x02, 0xAA, 0xBB, 0x05, 0x00];
        let list = build_blocklist(&[], &cert).unwrap();
        assert_eq!(list.len(), 1);
        assert!(list.is_tbs_blocked(&[0x30, 0x02, 0xAA, 0xBB]));
        assert!(!list.is_tbs_blocked(&[0x30, 0x00]));
        assert!(build_blocklist(&[], &[0x31, 0x00]).is_err());
        assert!(build_blocklist(&[1; 10], &[]).is_err());
    }

    #[test]
    fn bytes_of_a_split_copy() {
        let r = |pa: u64, epa: u64| Range {
            va: 0,
            pa,
            epa,
            attr: ModMemType::Text,
        };
        let ranges = [r(0x5000, 0x6000), r(0x2000, 0x3000)];
        let mut copy = alloc::vec![0u8; 0x2000];
        copy[0x1005] = 9;
        assert_eq!(byte_at(&ranges, &copy, 0x2005), Some(9));
        assert_eq!(byte_at(&ranges, &copy, 0x5005), Some(0));
        assert_eq!(byte_at(&ranges, &copy, 0x7000), None);
    }
}
