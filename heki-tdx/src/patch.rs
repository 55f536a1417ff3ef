//! `PATCH_TEXT` validation (heki-lvbs-abi.md §3.4, §5.9).
//!
//! After end of boot kernel text is not writable by the guest, so Linux's
//! `text_poke_bp` asks the paravisor to write each of its three steps:
//!
//! 1. an `INT3` (`0xCC`) over the first byte of the instruction,
//! 2. the new instruction's bytes 1..n,
//! 3. the new instruction's first byte.
//!
//! Only registered jump-label sites may be patched, and each only between its
//! registered `JMP` (`EB rel8` or `E9 rel32`) and the canonical NOP of the same
//! length (`66 90`, `0F 1F 44 00 00`). Each site runs a small state machine
//! so that the three steps happen in order and the instruction is whole
//! again after step 3: a tail may only be written while the first byte is
//! `INT3`, and the first byte may only be restored to the instruction whose
//! tail is in place. Everything else is refused with a [`PatchError`].
//!
//! A site's bytes are identified by their guest-physical addresses; a 5-byte
//! site may straddle a page, its second part then lives at `pa[1]`.

use crate::abi::{page_aligned, Errno, ToErrno, PAGE_SIZE};
use crate::pages::{GuestMemory, GuestMemoryError};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

/// `POKE_MAX_OPCODE_SIZE`.
pub const MAX_PATCH_LEN: usize = 5;
/// Byte size of a `heki_patch`.
pub const HEKI_PATCH_SIZE: usize = 24;
/// Byte size of a `heki_patch_info` header.
pub const PATCH_INFO_HEADER_SIZE: usize = 48;
/// `HEKI_PATCH_TYPE_JUMP_LABEL`.
pub const PATCH_TYPE_JUMP_LABEL: u32 = 0;
/// The `INT3` opcode.
pub const INT3: u8 = 0xcc;
/// The 2-byte NOP Linux uses for jump labels.
pub const NOP2: [u8; 2] = [0x66, 0x90];
/// The 5-byte NOP Linux uses for jump labels.
pub const NOP5: [u8; 5] = [0x0f, 0x1f, 0x44, 0x00, 0x00];

/// A `struct heki_patch`: up to five bytes at `pa[0]`, continuing at `pa[1]`
/// when they cross a page boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HekiPatch {
    /// GPA of the first byte, and of the next page if the bytes cross into it.
    pub pa: [u64; 2],
    /// Number of bytes, 1..=5.
    pub size: u8,
    /// The bytes (only `size` are meaningful).
    pub code: [u8; MAX_PATCH_LEN],
}

/// Why a patch request or patch registration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchError {
    /// A malformed `heki_patch` (size, addresses, page split).
    Malformed(&'static str),
    /// A `heki_patch_info` header is invalid (type, counts).
    BadInfo(&'static str),
    /// A registered site is not a 2- or 5-byte `JMP`.
    NotAJump,
    /// A site overlaps an already registered, different site.
    Overlap {
        /// GPA of the new site's first byte.
        gpa: u64,
    },
    /// A site lies outside the frames its owner may register.
    OutsideOwner {
        /// GPA of the site's first byte.
        gpa: u64,
    },
    /// No registered site matches the request (`-ENOENT`: the guest falls back).
    NotFound {
        /// GPA of the request's first byte.
        gpa: u64,
    },
    /// The request matches a site but not a legal next step (`-EACCES`).
    Rejected {
        /// GPA of the site's first byte.
        gpa: u64,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// The request could not be read from guest memory.
    Read(GuestMemoryError),
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchError::Malformed(w) => write!(f, "malformed heki_patch: {w}"),
            PatchError::BadInfo(w) => write!(f, "malformed heki_patch_info: {w}"),
            PatchError::NotAJump => f.write_str("registered patch is not a 2- or 5-byte JMP"),
            PatchError::Overlap { gpa } => write!(f, "patch site {gpa:#x} overlaps another site"),
            PatchError::OutsideOwner { gpa } => {
                write!(f, "patch site {gpa:#x} is outside its owner's text")
            }
            PatchError::NotFound { gpa } => write!(f, "no registered patch site at {gpa:#x}"),
            PatchError::Rejected { gpa, reason } => {
                write!(f, "patch of site {gpa:#x} rejected: {reason}")
            }
            PatchError::Read(e) => e.fmt(f),
        }
    }
}

impl ToErrno for PatchError {
    fn errno(&self) -> Errno {
        match self {
            PatchError::NotFound { .. } => Errno::ENOENT,
            PatchError::Rejected { .. } => Errno::EACCES,
            PatchError::Read(_) => Errno::EFAULT,
            _ => Errno::EINVAL,
        }
    }
}

impl HekiPatch {
    /// Decodes and validates 24 bytes (litebox's rules): `pa[0]` non-zero,
    /// `size` 1..=5, `pa[1]` zero or page aligned and different from `pa[0]`,
    /// and `pa[1]` non-zero exactly when the bytes do not fit in `pa[0]`'s page.
    pub fn parse(b: &[u8; HEKI_PATCH_SIZE]) -> Result<Self, PatchError> {
        let word = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(w)
        };
        let mut code = [0u8; MAX_PATCH_LEN];
        code.copy_from_slice(&b[17..22]);
        let p = HekiPatch {
            pa: [word(0), word(8)],
            size: b[16],
            code,
        };
        p.validate()?;
        Ok(p)
    }

    /// Encodes 24 bytes.
    pub fn to_bytes(&self) -> [u8; HEKI_PATCH_SIZE] {
        let mut b = [0u8; HEKI_PATCH_SIZE];
        b[0..8].copy_from_slice(&self.pa[0].to_le_bytes());
        b[8..16].copy_from_slice(&self.pa[1].to_le_bytes());
        b[16] = self.size;
        b[17..22].copy_from_slice(&self.code);
        b
    }

    fn validate(&self) -> Result<(), PatchError> {
        let [pa0, pa1] = self.pa;
        if pa0 == 0 {
            return Err(PatchError::Malformed("pa[0] is zero"));
        }
        if self.size == 0 || usize::from(self.size) > MAX_PATCH_LEN {
            return Err(PatchError::Malformed("size not in 1..=5"));
        }
        if pa1 != 0 && (!page_aligned(pa1) || pa1 == pa0 & !(PAGE_SIZE - 1)) {
            return Err(PatchError::Malformed("pa[1] not a different, aligned page"));
        }
        let first = self.bytes_in_first_page();
        if (first < usize::from(self.size)) != (pa1 != 0) {
            return Err(PatchError::Malformed("pa[1] does not match the page split"));
        }
        Ok(())
    }

    fn bytes_in_first_page(&self) -> usize {
        let room = PAGE_SIZE - (self.pa[0] & (PAGE_SIZE - 1));
        usize::from(self.size).min(room as usize)
    }

    /// The GPA of each of the `size` bytes.
    pub fn byte_gpas(&self) -> Vec<u64> {
        let first = self.bytes_in_first_page();
        (0..usize::from(self.size))
            .map(|i| {
                if i < first {
                    self.pa[0] + i as u64
                } else {
                    self.pa[1] + (i - first) as u64
                }
            })
            .collect()
    }

    /// The meaningful bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.code[..usize::from(self.size)]
    }

    /// The writes that carry out this patch: `(gpa, bytes)`, one or two.
    pub fn writes(&self) -> Vec<(u64, Vec<u8>)> {
        let first = self.bytes_in_first_page();
        let mut w = alloc::vec![(self.pa[0], self.bytes()[..first].to_vec())];
        if first < usize::from(self.size) {
            w.push((self.pa[1], self.bytes()[first..].to_vec()));
        }
        w
    }
}

/// Reads a `PATCH_TEXT` request: 24 bytes at `a1`, continuing at the page `a2`
/// if they straddle a page boundary (then `a2` must be given and aligned;
/// otherwise it must be 0). The bytes are copied once, then validated.
pub fn read_request<M: GuestMemory + ?Sized>(
    mem: &mut M,
    a1: u64,
    a2: u64,
) -> Result<HekiPatch, PatchError> {
    let mut b = [0u8; HEKI_PATCH_SIZE];
    let room = (PAGE_SIZE - (a1 & (PAGE_SIZE - 1))) as usize;
    if a1 == 0 {
        return Err(PatchError::Malformed("request GPA is zero"));
    }
    if room >= HEKI_PATCH_SIZE {
        if a2 != 0 {
            return Err(PatchError::Malformed(
                "second page given for a request that fits",
            ));
        }
        mem.read(a1, &mut b).map_err(PatchError::Read)?;
    } else {
        if a2 == 0 || !page_aligned(a2) {
            return Err(PatchError::Malformed(
                "straddling request without an aligned next page",
            ));
        }
        mem.read(a1, &mut b[..room]).map_err(PatchError::Read)?;
        mem.read(a2, &mut b[room..]).map_err(PatchError::Read)?;
    }
    HekiPatch::parse(&b)
}

/// Parses concatenated `heki_patch_info` records (kdata type 5 / module
/// type 8): a 48-byte header (`type`, `patch_idx`, `max_patch_count`)
/// followed by `patch_idx` patches. Only jump labels are accepted. Parsing
/// stops at trailing zero bytes (page-rounded blobs); anything else that is
/// not a valid record is an error.
pub fn parse_patch_info(blob: &[u8]) -> Result<Vec<HekiPatch>, PatchError> {
    let mut out = Vec::new();
    let mut rest = blob;
    while !rest.is_empty() {
        if rest.iter().all(|b| *b == 0) {
            break;
        }
        if rest.len() < PATCH_INFO_HEADER_SIZE {
            return Err(PatchError::BadInfo("truncated header"));
        }
        let word = |o: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&rest[o..o + 8]);
            u64::from_le_bytes(w)
        };
        let ty = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let (count, max) = (word(32), word(40));
        if ty != PATCH_TYPE_JUMP_LABEL {
            return Err(PatchError::BadInfo("type is not jump label"));
        }
        if count == 0 || count > max {
            return Err(PatchError::BadInfo("patch_idx not in 1..=max_patch_count"));
        }
        let body = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(HEKI_PATCH_SIZE))
            .and_then(|b| b.checked_add(PATCH_INFO_HEADER_SIZE))
            .filter(|end| *end <= rest.len())
            .ok_or(PatchError::BadInfo("patches run past the blob"))?;
        for chunk in rest[PATCH_INFO_HEADER_SIZE..body].chunks_exact(HEKI_PATCH_SIZE) {
            let mut b = [0u8; HEKI_PATCH_SIZE];
            b.copy_from_slice(chunk);
            out.push(HekiPatch::parse(&b)?);
        }
        rest = &rest[body..];
    }
    Ok(out)
}

/// Who registered a site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    /// The core kernel (`LOAD_KDATA` type 5).
    Kernel,
    /// A validated module, by token; `init` sites go away at `FREE_MODULE_INIT`.
    Module {
        /// The module's token.
        token: u64,
        /// The site is in the module's init text.
        init: bool,
    },
}

/// The two legal contents of a site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The registered `JMP`.
    Jump,
    /// The NOP of the same length.
    Nop,
}

/// Where a site is in the `text_poke_bp` protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SiteState {
    /// A whole instruction (`None` if the content was not known at registration).
    Stable(Option<Variant>),
    /// Step 1 done: `INT3` on the first byte; `tail` is set once step 2 wrote one.
    Int3 {
        /// The instruction before step 1.
        prev: Option<Variant>,
        /// The tail written by step 2.
        tail: Option<Variant>,
    },
}

/// A registered jump-label site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// GPA of each byte.
    pub gpas: Vec<u64>,
    /// The registered `JMP`.
    pub jump: Vec<u8>,
    /// Who registered it.
    pub owner: Owner,
    /// Protocol state.
    pub state: SiteState,
}

impl Site {
    fn variant(&self, v: Variant) -> &[u8] {
        match (v, self.jump.len()) {
            (Variant::Jump, _) => &self.jump,
            (Variant::Nop, 2) => &NOP2,
            (Variant::Nop, _) => &NOP5,
        }
    }

    /// Which variant `bytes` (the whole instruction) is, if any.
    pub fn classify(&self, bytes: &[u8]) -> Option<Variant> {
        [Variant::Jump, Variant::Nop]
            .into_iter()
            .find(|v| self.variant(*v) == bytes)
    }
}

/// The registered sites and their state.
#[derive(Clone, Debug, Default)]
pub struct PatchRegistry {
    /// Sites by the GPA of their first byte.
    sites: BTreeMap<u64, Site>,
    /// Every byte GPA of every site -> (site key, byte index).
    bytes: BTreeMap<u64, (u64, usize)>,
}

impl PatchRegistry {
    /// No sites.
    pub fn new() -> Self {
        PatchRegistry::default()
    }

    /// Number of sites.
    pub fn len(&self) -> usize {
        self.sites.len()
    }

    /// True when no site is registered.
    pub fn is_empty(&self) -> bool {
        self.sites.is_empty()
    }

    /// The site whose first byte is at `gpa`.
    pub fn site(&self, gpa: u64) -> Option<&Site> {
        self.sites.get(&gpa)
    }

    /// The owner of the site one of whose bytes is at `gpa`.
    pub fn owner_at(&self, gpa: u64) -> Option<Owner> {
        let (key, _) = self.bytes.get(&gpa)?;
        self.sites.get(key).map(|s| s.owner)
    }

    /// Registers `patch` (a 2- or 5-byte `JMP`) for `owner`. `allowed` must
    /// accept every byte GPA (e.g. "inside the module's validated text
    /// frames"); `current` is the instruction now at the site, if known.
    /// Registering the same site again with the same bytes is a no-op.
    pub fn register(
        &mut self,
        patch: &HekiPatch,
        owner: Owner,
        allowed: impl Fn(u64) -> bool,
        current: Option<&[u8]>,
    ) -> Result<(), PatchError> {
        let jump = patch.bytes();
        let ok = matches!((jump.len(), jump[0]), (2, 0xeb) | (5, 0xe9));
        if !ok {
            return Err(PatchError::NotAJump);
        }
        let gpas = patch.byte_gpas();
        let key = gpas[0];
        if !gpas.iter().all(|g| allowed(*g)) {
            return Err(PatchError::OutsideOwner { gpa: key });
        }
        if let Some(s) = self.sites.get(&key) {
            if s.gpas == gpas && s.jump == jump && s.owner == owner {
                return Ok(());
            }
            return Err(PatchError::Overlap { gpa: key });
        }
        if gpas.iter().any(|g| self.bytes.contains_key(g)) {
            return Err(PatchError::Overlap { gpa: key });
        }
        let mut site = Site {
            gpas: gpas.clone(),
            jump: jump.to_vec(),
            owner,
            state: SiteState::Stable(None),
        };
        site.state = SiteState::Stable(current.and_then(|c| site.classify(c)));
        for (i, g) in gpas.iter().enumerate() {
            self.bytes.insert(*g, (key, i));
        }
        self.sites.insert(key, site);
        Ok(())
    }

    /// Registers every patch of a `heki_patch_info` blob, all or nothing.
    pub fn register_all(
        &mut self,
        patches: &[HekiPatch],
        owner: Owner,
        allowed: impl Fn(u64) -> bool,
    ) -> Result<usize, PatchError> {
        let mut trial = self.clone();
        for p in patches {
            trial.register(p, owner, &allowed, None)?;
        }
        let added = trial.len() - self.len();
        *self = trial;
        Ok(added)
    }

    /// Drops every site whose owner satisfies `pred` (module unload, init free).
    pub fn remove_where(&mut self, pred: impl Fn(Owner) -> bool) -> usize {
        let gone: Vec<u64> = self
            .sites
            .iter()
            .filter(|(_, s)| pred(s.owner))
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            if let Some(s) = self.sites.remove(k) {
                for g in s.gpas {
                    self.bytes.remove(&g);
                }
            }
        }
        gone.len()
    }

    /// Validates one `PATCH_TEXT` step and advances the site's state. On
    /// success the caller performs [`HekiPatch::writes`] in guest memory.
    pub fn apply(&mut self, req: &HekiPatch) -> Result<(), PatchError> {
        let gpas = req.byte_gpas();
        let (key, index) = *self
            .bytes
            .get(&gpas[0])
            .ok_or(PatchError::NotFound { gpa: gpas[0] })?;
        let site = self
            .sites
            .get_mut(&key)
            .ok_or(PatchError::NotFound { gpa: gpas[0] })?;
        let reject = |reason| PatchError::Rejected { gpa: key, reason };
        let len = site.jump.len();
        if gpas.len() > len - index || site.gpas[index..index + gpas.len()] != gpas[..] {
            return Err(reject("bytes do not line up with the site"));
        }
        let bytes = req.bytes();
        let next = match (index, bytes.len(), site.state) {
            // Step 1: INT3 over the first byte (repeatable).
            (0, 1, SiteState::Stable(prev)) if bytes[0] == INT3 => {
                SiteState::Int3 { prev, tail: None }
            }
            (0, 1, s @ SiteState::Int3 { .. }) if bytes[0] == INT3 => s,
            // Step 2: the whole tail of one variant, only under INT3.
            (1, n, SiteState::Int3 { prev, .. }) if n == len - 1 => {
                let v = [Variant::Jump, Variant::Nop]
                    .into_iter()
                    .find(|v| &site.variant(*v)[1..] == bytes)
                    .ok_or(reject("tail is neither the registered JMP nor the NOP"))?;
                SiteState::Int3 {
                    prev,
                    tail: Some(v),
                }
            }
            (1, _, SiteState::Stable(_)) => return Err(reject("tail written without INT3")),
            // Step 3: the first byte of the instruction whose tail is in place.
            (0, 1, SiteState::Int3 { prev, tail }) => {
                let whole = tail.or(prev).ok_or(reject("unknown tail under INT3"))?;
                if bytes[0] != site.variant(whole)[0] {
                    return Err(reject("first byte does not match the tail in place"));
                }
                SiteState::Stable(Some(whole))
            }
            (0, 1, SiteState::Stable(_)) => return Err(reject("first byte written without INT3")),
            _ => return Err(reject("not a text_poke_bp step")),
        };
        site.state = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::tests::TestMemory;
    use alloc::vec;
    use proptest::prelude::*;

    fn patch(pa0: u64, pa1: u64, code: &[u8]) -> HekiPatch {
        let mut c = [0u8; 5];
        c[..code.len()].copy_from_slice(code);
        HekiPatch {
            pa: [pa0, pa1],
            size: code.len() as u8,
            code: c,
        }
    }

    const JMP5: [u8; 5] = [0xe9, 0x10, 0x20, 0x00, 0x00];
    const JMP2: [u8; 2] = [0xeb, 0x7f];

    fn registry() -> PatchRegistry {
        let mut r = PatchRegistry::new();
        r.register(
            &patch(0x1000, 0, &JMP5),
            Owner::Kernel,
            |_| true,
            Some(&NOP5),
        )
        .unwrap();
        r.register(
            &patch(0x1100, 0, &JMP2),
            Owner::Kernel,
            |_| true,
            Some(&JMP2),
        )
        .unwrap();
        // Straddling: 2 bytes at the end of page 0x2000, 3 at page 0x7000.
        r.register(&patch(0x2ffe, 0x7000, &JMP5), Owner::Kernel, |_| true, None)
            .unwrap();
        r
    }

    fn step(r: &mut PatchRegistry, pa0: u64, pa1: u64, code: &[u8]) -> Result<(), PatchError> {
        let p = patch(pa0, pa1, code);
        p.validate()?;
        r.apply(&p)
    }

    #[test]
    fn owners_by_byte() {
        let r = registry();
        assert_eq!(r.owner_at(0x1000), Some(Owner::Kernel));
        assert_eq!(r.owner_at(0x1004), Some(Owner::Kernel));
        assert_eq!(r.owner_at(0x7002), Some(Owner::Kernel));
        assert_eq!(r.owner_at(0x1005), None);
    }

    #[test]
    fn nop_to_jump_and_back() {
        let mut r = registry();
        step(&mut r, 0x1000, 0, &[INT3]).unwrap();
        step(&mut r, 0x1001, 0, &JMP5[1..]).unwrap();
        step(&mut r, 0x1000, 0, &JMP5[..1]).unwrap();
        assert_eq!(
            r.site(0x1000).unwrap().state,
            SiteState::Stable(Some(Variant::Jump))
        );
        step(&mut r, 0x1000, 0, &[INT3]).unwrap();
        step(&mut r, 0x1001, 0, &NOP5[1..]).unwrap();
        step(&mut r, 0x1000, 0, &NOP5[..1]).unwrap();
        assert_eq!(
            r.site(0x1000).unwrap().state,
            SiteState::Stable(Some(Variant::Nop))
        );
        // Two-byte site.
        step(&mut r, 0x1100, 0, &[INT3]).unwrap();
        step(&mut r, 0x1101, 0, &NOP2[1..]).unwrap();
        step(&mut r, 0x1100, 0, &NOP2[..1]).unwrap();
        assert_eq!(
            r.site(0x1100).unwrap().state,
            SiteState::Stable(Some(Variant::Nop))
        );
    }

    #[test]
    fn straddling_site() {
        let mut r = registry();
        step(&mut r, 0x2ffe, 0, &[INT3]).unwrap();
        // Tail: byte 1 at 0x2fff, bytes 2..5 at 0x7000.
        step(&mut r, 0x2fff, 0x7000, &JMP5[1..]).unwrap();
        step(&mut r, 0x2ffe, 0, &JMP5[..1]).unwrap();
        // Wrong continuation page.
        step(&mut r, 0x2ffe, 0, &[INT3]).unwrap();
        assert!(matches!(
            step(&mut r, 0x2fff, 0x8000, &NOP5[1..]),
            Err(PatchError::Rejected { .. })
        ));
        let w = patch(0x2fff, 0x7000, &NOP5[1..]).writes();
        assert_eq!(w, [(0x2fff, vec![0x1f]), (0x7000, vec![0x44, 0, 0])]);
    }

    #[test]
    fn protocol_violations() {
        let mut r = registry();
        let rejected = |e: Result<(), PatchError>| {
            assert!(matches!(e, Err(PatchError::Rejected { .. })), "{e:?}");
            assert_eq!(e.unwrap_err().errno(), Errno::EACCES);
        };
        // Tail or first byte without INT3.
        rejected(step(&mut r, 0x1001, 0, &JMP5[1..]));
        rejected(step(&mut r, 0x1000, 0, &JMP5[..1]));
        step(&mut r, 0x1000, 0, &[INT3]).unwrap();
        // Arbitrary tail, partial tail, whole instruction in one go.
        rejected(step(&mut r, 0x1001, 0, &[0x90, 0x90, 0x90, 0x90]));
        rejected(step(&mut r, 0x1001, 0, &JMP5[1..3]));
        rejected(step(&mut r, 0x1000, 0, &JMP5));
        rejected(step(&mut r, 0x1002, 0, &JMP5[2..]));
        // First byte of the JMP over the NOP tail still in place (mixed instruction).
        rejected(step(&mut r, 0x1000, 0, &JMP5[..1]));
        // Restoring the original NOP is fine.
        step(&mut r, 0x1000, 0, &NOP5[..1]).unwrap();
        // Unknown initial content: step 3 needs step 2 first.
        step(&mut r, 0x2ffe, 0, &[INT3]).unwrap();
        rejected(step(&mut r, 0x2ffe, 0, &JMP5[..1]));
        // Anything not at a site.
        let e = step(&mut r, 0x5000, 0, &[INT3]);
        assert_eq!(e, Err(PatchError::NotFound { gpa: 0x5000 }));
        assert_eq!(e.unwrap_err().errno(), Errno::ENOENT);
        // INT3 in the middle of a site.
        rejected(step(&mut r, 0x1003, 0, &[INT3]));
        // A tail that overruns the site.
        step(&mut r, 0x1100, 0, &[INT3]).unwrap();
        rejected(step(&mut r, 0x1101, 0, &[0x90, 0x90]));
    }

    #[test]
    fn registration_rules() {
        let mut r = registry();
        let nope = |_: u64| false;
        assert_eq!(
            r.register(
                &patch(0x3000, 0, &[0x90, 0x90]),
                Owner::Kernel,
                |_| true,
                None
            ),
            Err(PatchError::NotAJump)
        );
        assert_eq!(
            r.register(
                &patch(0x3000, 0, &[0xe9, 0, 0]),
                Owner::Kernel,
                |_| true,
                None
            ),
            Err(PatchError::NotAJump)
        );
        assert_eq!(
            r.register(&patch(0x3000, 0, &JMP5), Owner::Kernel, nope, None),
            Err(PatchError::OutsideOwner { gpa: 0x3000 })
        );
        assert_eq!(
            r.register(&patch(0x1003, 0, &JMP5), Owner::Kernel, |_| true, None),
            Err(PatchError::Overlap { gpa: 0x1003 })
        );
        assert_eq!(
            r.register(&patch(0x1000, 0, &JMP2), Owner::Kernel, |_| true, None),
            Err(PatchError::Overlap { gpa: 0x1000 })
        );
        // Same registration again is a no-op.
        r.register(&patch(0x1000, 0, &JMP5), Owner::Kernel, |_| true, None)
            .unwrap();
        assert_eq!(r.len(), 3);
        // Modules: all or nothing, removal by owner.
        let m = Owner::Module {
            token: 4,
            init: false,
        };
        let mi = Owner::Module {
            token: 4,
            init: true,
        };
        let ps = [patch(0x9000, 0, &JMP5), patch(0x9010, 0, &JMP2)];
        assert_eq!(r.register_all(&ps, m, |g| g >= 0x9000), Ok(2));
        r.register(&patch(0xa000, 0, &JMP5), mi, |_| true, None)
            .unwrap();
        let bad = [patch(0xb000, 0, &JMP5), patch(0xb010, 0, &[0x90, 0x90])];
        assert_eq!(r.register_all(&bad, m, |_| true), Err(PatchError::NotAJump));
        assert!(r.site(0xb000).is_none(), "nothing registered on failure");
        assert_eq!(r.remove_where(|o| o == mi), 1);
        assert_eq!(
            r.remove_where(|o| matches!(o, Owner::Module { token: 4, .. })),
            2
        );
        assert_eq!(r.len(), 3);
        assert!(matches!(
            step(&mut r, 0x9000, 0, &[INT3]),
            Err(PatchError::NotFound { .. })
        ));
    }

    #[test]
    fn request_validation() {
        let ok = |p: HekiPatch| HekiPatch::parse(&p.to_bytes());
        assert!(ok(patch(0x1000, 0, &[INT3])).is_ok());
        assert!(ok(patch(0x1ffd, 0, &JMP5[..3])).is_ok());
        for bad in [
            patch(0, 0, &[INT3]),
            patch(0x1000, 0, &[]),
            patch(0x1ffe, 0, &JMP5),      // crosses without pa[1]
            patch(0x1000, 0x3000, &JMP5), // pa[1] without crossing
            patch(0x1ffe, 0x3008, &JMP5), // unaligned pa[1]
            patch(0x1ffe, 0x1000, &JMP5), // pa[1] is pa[0]'s page
        ] {
            assert!(matches!(ok(bad), Err(PatchError::Malformed(_))), "{bad:?}");
        }
        let mut b = patch(0x1000, 0, &[INT3]).to_bytes();
        b[16] = 6;
        assert!(HekiPatch::parse(&b).is_err());
    }

    #[test]
    fn reading_requests() {
        let mut mem = TestMemory::default();
        let req = patch(0x1000, 0, &[INT3]).to_bytes();
        mem.write(0x5100, &req);
        assert_eq!(read_request(&mut mem, 0x5100, 0).unwrap().pa[0], 0x1000);
        assert!(read_request(&mut mem, 0x5100, 0x6000).is_err());
        assert!(read_request(&mut mem, 0, 0).is_err());
        // Straddling request: 10 bytes at the end of 0x5000, 14 at 0x9000.
        mem.write(0x5ff6, &req[..10]);
        mem.write(0x9000, &req[10..]);
        assert_eq!(read_request(&mut mem, 0x5ff6, 0x9000).unwrap().size, 1);
        assert!(read_request(&mut mem, 0x5ff6, 0).is_err());
        assert!(read_request(&mut mem, 0x5ff6, 0x9008).is_err());
        assert!(matches!(
            read_request(&mut mem, 0x5ff6, 0xa000),
            Err(PatchError::Read(_))
        ));
    }

    fn info(patches: &[HekiPatch], max: u64, ty: u32) -> Vec<u8> {
        let mut b = vec![0u8; PATCH_INFO_HEADER_SIZE];
        b[0..4].copy_from_slice(&ty.to_le_bytes());
        b[24..32].copy_from_slice(&0xffff_ffff_c000_0000u64.to_le_bytes());
        b[32..40].copy_from_slice(&(patches.len() as u64).to_le_bytes());
        b[40..48].copy_from_slice(&max.to_le_bytes());
        for p in patches {
            b.extend_from_slice(&p.to_bytes());
        }
        b
    }

    #[test]
    fn patch_info_blobs() {
        let a = [patch(0x1000, 0, &JMP5), patch(0x1100, 0, &JMP2)];
        let mut blob = info(&a, 4, 0);
        blob.extend(info(&a[..1], 1, 0));
        blob.extend([0u8; 100]);
        assert_eq!(parse_patch_info(&blob).unwrap().len(), 3);
        assert_eq!(parse_patch_info(&[]).unwrap().len(), 0);
        assert!(parse_patch_info(&info(&a, 4, 1)).is_err());
        assert!(parse_patch_info(&info(&a, 1, 0)).is_err());
        assert!(parse_patch_info(&info(&[], 1, 0)).is_err());
        let full = info(&a, 4, 0);
        for cut in 1..full.len() {
            match parse_patch_info(&full[..cut]) {
                // A prefix of only zero bytes is trailing padding.
                Ok(v) => assert!(v.is_empty() && full[..cut].iter().all(|b| *b == 0)),
                Err(_) => assert!(cut > 24, "cut {cut}"),
            }
        }
        let mut huge = info(&a, u64::MAX, 0);
        huge[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_patch_info(&huge).is_err());
    }

    proptest! {
        /// Whatever sequence of requests arrives, a site that is Stable holds
        /// exactly one of its two legal instructions (tracked in a shadow copy
        /// of guest memory), and nothing outside sites is ever written.
        #[test]
        fn sites_stay_whole(
            reqs in proptest::collection::vec(
                (0usize..3, 0usize..2, 0usize..4), 0..60)
        ) {
            let mut r = registry();
            let mut shadow: BTreeMap<u64, u8> = BTreeMap::new();
            let sites = [0x1000u64, 0x1100, 0x2ffe];
            for (i, s) in sites.iter().enumerate() {
                let site = r.site(*s).unwrap();
                let init: &[u8] = if i == 1 { &JMP2 } else if i == 0 { &NOP5 } else { &JMP5 };
                for (g, b) in site.gpas.iter().zip(init) {
                    shadow.insert(*g, *b);
                }
            }
            for (si, pos, what) in reqs {
                let key = sites[si];
                let site = r.site(key).unwrap().clone();
                let var = if what % 2 == 0 { site.jump.clone() } else { site.variant(Variant::Nop).to_vec() };
                let (idx, bytes): (usize, Vec<u8>) = match (pos, what) {
                    (0, 0..=1) => (0, vec![INT3]),
                    (0, _) => (0, var[..1].to_vec()),
                    (_, _) => (1, var[1..].to_vec()),
                };
                let gpas = &site.gpas[idx..idx + bytes.len()];
                let pa0 = gpas[0];
                let pa1 = gpas.iter().copied().find(|g| g & !0xfff != pa0 & !0xfff).map(|g| g & !0xfff).unwrap_or(0);
                let p = patch(pa0, pa1, &bytes);
                if p.validate().is_ok() && r.apply(&p).is_ok() {
                    for (g, b) in p.byte_gpas().iter().zip(p.bytes()) {
                        prop_assert!(shadow.contains_key(g));
                        shadow.insert(*g, *b);
                    }
                }
                for k in sites {
                    let s = r.site(k).unwrap();
                    if let SiteState::Stable(Some(v)) = s.state {
                        let now: Vec<u8> = s.gpas.iter().map(|g| shadow[g]).collect();
                        prop_assert_eq!(&now[..], s.variant(v));
                    }
                }
            }
        }
    }
}
