//! L2 memory as the L2 guest sees it: linear addresses through L2's page
//! tables ([`crate::walk`]), guest-physical pages through L2's alias
//! permissions (TDG.MEM.PAGE.ATTR.RD, tdx-abi.md §3.2, §3.4).
//!
//! Instruction emulation reads and writes L2 memory on L2's behalf, so it must
//! not reach further than L2 itself could, or it becomes a confused deputy:
//!
//! * paging-structure reads need an L2 alias with R (the CPU's own walk needs
//!   EPT read access), so L2 cannot point the walk into paravisor memory;
//! * instruction bytes need an alias with Xs or Xu (L2 executed them);
//! * emulated stores need an alias with R|W *and* a guest translation that
//!   allows the write at L2's CPL ([`crate::walk::check`]: R/W with CR0.WP,
//!   U/S, SMAP with RFLAGS.AC), and all checks pass before the first byte is
//!   written.
//!
//! GPAs without a valid alias for the VM (paravisor pages, MMIO ranges, pending
//! or shared pages, GPAs outside the TD) are refused. Every GPA is first read
//! through [`L1Memory`](crate::L1Memory) (which only reaches accepted private
//! memory) and only then looked up with TDG.MEM.PAGE.ATTR.RD: that leaf does an
//! EPT-violation TD exit on a GPA the host never mapped (§3.3), so asking it
//! about a GPA L2's page tables made up would let L2 stop the whole TD. Each page's attribute is
//! read once per [`GuestMemory`] (one exit); L2 cannot change attributes while
//! this vCPU handles its exit.

use core::fmt;

use tdcall::attr::L2Attr;
use tdcall::field::vmcs;
use tdcall::leaves::MemPageAttrRd;
use tdcall::L2Vm;

use crate::field::{self, FieldAccessError};
use crate::insn::MAX_INSN_LEN;
use crate::memory::{MemoryError, Platform};
use crate::walk::{self, Access, AccessKind, Paging, TableReader, WalkError};

const PAGE: u64 = 0x1000;
/// Attribute cache size: a 5-level walk for the code, a second code page, and
/// the 4-level walks and pages of a 2-page store fit comfortably.
const CACHE: usize = 16;

/// Reads L2's paging controls from its VMCS (GUEST_CR0, GUEST_CR3,
/// GUEST_CR4, GUEST_IA32_EFER; §2.5 — the real values the CPU uses, not the
/// read shadows) with [`walk::MAX_PHYS_BITS`].
pub fn read_paging<P: Platform + ?Sized>(p: &mut P, vm: L2Vm) -> Result<Paging, FieldAccessError> {
    Ok(Paging {
        cr0: field::read_vmcs(p, vm, vmcs::GUEST_CR0)?,
        cr3: field::read_vmcs(p, vm, vmcs::GUEST_CR3)?,
        cr4: field::read_vmcs(p, vm, vmcs::GUEST_CR4)?,
        efer: field::read_vmcs(p, vm, vmcs::GUEST_IA32_EFER)?,
        phys_bits: walk::MAX_PHYS_BITS,
    })
}

/// Why an access through [`GuestMemory`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestAccessError {
    /// The linear address does not translate, or L2's page tables forbid the
    /// access.
    Walk(WalkError),
    /// The GPA page has no L2 alias that allows the access (`attr` is what
    /// TDG.MEM.PAGE.ATTR.RD reported, `None` if the read failed).
    Alias {
        /// The 4 KiB page.
        gpa: u64,
        /// Its attribute for this VM.
        attr: Option<L2Attr>,
    },
    /// L1's own access to the GPA failed.
    Memory(MemoryError),
}

impl fmt::Display for GuestAccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuestAccessError::Walk(e) => write!(f, "L2 page walk: {e}"),
            GuestAccessError::Alias { gpa, attr } => match attr {
                Some(a) => write!(
                    f,
                    "GPA page {gpa:#x}: L2 alias {:#x} does not allow the access",
                    a.bits()
                ),
                None => write!(f, "GPA page {gpa:#x}: TDG.MEM.PAGE.ATTR.RD failed"),
            },
            GuestAccessError::Memory(e) => write!(f, "{e}"),
        }
    }
}

impl From<WalkError> for GuestAccessError {
    fn from(e: WalkError) -> Self {
        GuestAccessError::Walk(e)
    }
}

/// L2 memory for one exit: the platform, the VM, and the page attributes read
/// so far.
pub struct GuestMemory<'p, P: Platform + ?Sized> {
    platform: &'p mut P,
    vm: L2Vm,
    attrs: [(u64, Option<L2Attr>); CACHE],
    cached: usize,
    attr_reads: u32,
}

impl<'p, P: Platform + ?Sized> GuestMemory<'p, P> {
    /// A view of `vm`'s memory.
    pub fn new(platform: &'p mut P, vm: L2Vm) -> Self {
        GuestMemory {
            platform,
            vm,
            attrs: [(0, None); CACHE],
            cached: 0,
            attr_reads: 0,
        }
    }

    /// TDG.MEM.PAGE.ATTR.RD calls made.
    pub fn attr_reads(&self) -> u32 {
        self.attr_reads
    }

    /// The attribute of the 4 KiB page of `gpa` for this VM; `None` if
    /// TDG.MEM.PAGE.ATTR.RD fails (not private memory, …).
    pub fn attr(&mut self, gpa: u64) -> Option<L2Attr> {
        let page = gpa & !(PAGE - 1);
        if let Some((_, a)) = self.attrs[..self.cached].iter().find(|(p, _)| *p == page) {
            return *a;
        }
        self.attr_reads += 1;
        let a = tdcall::call(&mut *self.platform, &MemPageAttrRd { gpa: page })
            .ok()
            .map(|r| r.attr.slot(self.vm));
        if self.cached < CACHE {
            self.attrs[self.cached] = (page, a);
            self.cached += 1;
        }
        a
    }

    /// Requires a valid alias of the page of `gpa` with `need`, or any bit of
    /// `any` when `any` is not empty.
    fn require(&mut self, gpa: u64, need: L2Attr, any: L2Attr) -> Result<(), GuestAccessError> {
        let attr = self.attr(gpa);
        match attr {
            Some(a)
                if a.contains(L2Attr::VALID)
                    && a.contains(need)
                    && (any.is_empty() || a.intersects(any)) =>
            {
                Ok(())
            }
            _ => Err(GuestAccessError::Alias {
                gpa: gpa & !(PAGE - 1),
                attr,
            }),
        }
    }

    /// Reads up to 15 instruction bytes at linear `rip` for a fetch from
    /// CPL 3 (`user`) or supervisor mode. The bytes may span two pages: each
    /// is translated and checked on its own, and if the second is not
    /// available the bytes up to the end of the first are returned (enough if
    /// the instruction ends there; the decoder reports a truncated one).
    /// Returns the buffer and the number of valid bytes (≥ 1).
    pub fn fetch_code(
        &mut self,
        paging: &Paging,
        rip: u64,
        user: bool,
    ) -> Result<([u8; MAX_INSN_LEN], usize), GuestAccessError> {
        let access = Access {
            kind: AccessKind::Fetch,
            user,
            ac: false,
        };
        let mut buf = [0u8; MAX_INSN_LEN];
        let first = (PAGE - (rip & (PAGE - 1))).min(MAX_INSN_LEN as u64) as usize;
        let exec = L2Attr::XS.union(L2Attr::XU);
        let t = walk::translate_checked(paging, self, rip, access)?;
        self.platform
            .read(t.gpa, &mut buf[..first])
            .map_err(GuestAccessError::Memory)?;
        self.require(t.gpa, L2Attr::empty(), exec)?;
        if first == MAX_INSN_LEN {
            return Ok((buf, first));
        }
        let next = rip.wrapping_add(first as u64);
        let rest = walk::translate_checked(paging, self, next, access)
            .map_err(GuestAccessError::Walk)
            .and_then(|t| {
                self.platform
                    .read(t.gpa, &mut buf[first..])
                    .map_err(GuestAccessError::Memory)?;
                self.require(t.gpa, L2Attr::empty(), exec)
            });
        match rest {
            Ok(()) => Ok((buf, MAX_INSN_LEN)),
            Err(e) => {
                log::debug!("instruction at {rip:#x}: second page unavailable ({e})");
                Ok((buf, first))
            }
        }
    }

    /// Writes `data` (at most two pages' worth: ≤ 4096 bytes) at linear `la`
    /// as an L2 store with `access` would: every page is translated, checked
    /// against L2's page tables and its alias (R|W) first, then written.
    pub fn write_linear(
        &mut self,
        paging: &Paging,
        la: u64,
        data: &[u8],
        access: Access,
    ) -> Result<(), GuestAccessError> {
        let mut chunks = [(0u64, 0usize, 0usize); 2];
        let mut count = 0;
        let mut done = 0usize;
        while done < data.len() {
            if count == chunks.len() {
                return Err(GuestAccessError::Memory(MemoryError::OutOfRange {
                    gpa: la,
                    len: data.len(),
                }));
            }
            let linear = la.wrapping_add(done as u64);
            let n = ((PAGE - (linear & (PAGE - 1))) as usize).min(data.len() - done);
            let t = walk::translate_checked(paging, self, linear, access)?;
            // Probe with a read first: L1 must be able to reach the GPA before
            // it asks for the page's attributes (see the module docs).
            let mut probe = [0u8; 16];
            for off in (0..n).step_by(probe.len()) {
                let m = probe.len().min(n - off);
                self.platform
                    .read(t.gpa + off as u64, &mut probe[..m])
                    .map_err(GuestAccessError::Memory)?;
            }
            self.require(t.gpa, L2Attr::R.union(L2Attr::W), L2Attr::empty())?;
            chunks[count] = (t.gpa, done, n);
            count += 1;
            done += n;
        }
        for &(gpa, from, n) in &chunks[..count] {
            self.platform
                .write(gpa, &data[from..from + n])
                .map_err(GuestAccessError::Memory)?;
        }
        Ok(())
    }
}

impl<P: Platform + ?Sized> TableReader for GuestMemory<'_, P> {
    fn read_entry(&mut self, gpa: u64) -> Result<u64, MemoryError> {
        let inaccessible = MemoryError::Inaccessible { gpa, len: 8 };
        if gpa & 7 != 0 {
            return Err(inaccessible);
        }
        let mut b = [0u8; 8];
        self.platform.read(gpa, &mut b)?;
        match self.attr(gpa) {
            Some(a) if a.contains(L2Attr::VALID | L2Attr::R) => Ok(u64::from_le_bytes(b)),
            _ => Err(inaccessible),
        }
    }
}
