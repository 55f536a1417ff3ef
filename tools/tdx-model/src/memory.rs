//! The TD's private memory: contents, acceptance state, the host's mapping
//! level, and each page's per-L2-VM attributes (§3.1, §5.3).
#![forbid(unsafe_code)]

use alloc::vec;
use alloc::vec::Vec;
use tdcall::attr::{L2Attr, PageLevel};
use tdcall::L2Vm;

/// 4 KiB.
pub const PAGE_SIZE: u64 = 0x1000;
/// 2 MiB.
pub const LARGE_PAGE_SIZE: u64 = 0x20_0000;

/// State of one 4 KiB private page in L1's Secure EPT (§5.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageState {
    /// Added with TDH.MEM.PAGE.AUG; L1 must accept it.
    Pending,
    /// Added before finalization (TDH.MEM.PAGE.ADD) or accepted.
    Accepted,
    /// Converted to shared with MapGPA: no private page here.
    Removed,
}

#[derive(Clone, Copy, Debug)]
struct Page {
    state: PageState,
    /// Attribute per L2 VM (index 0 = VM 1). VALID set = an alias exists.
    attr: [u16; 3],
}

/// Why a GPA could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpaFault {
    /// Shared bit set or bits above the GPA width (an operand error).
    NotPrivate,
    /// A private GPA the host never mapped: the module would TD-exit to the host.
    NotMapped,
    /// Mapped but not accepted.
    Pending,
}

/// Private memory of one TD.
#[derive(Clone, Debug)]
pub struct Memory {
    bytes: Vec<u8>,
    pages: Vec<Page>,
    /// Per 2 MiB region: the host mapped it with one 2 MiB leaf.
    large: Vec<bool>,
    gpaw: u8,
    generation: u64,
    state_generation: u64,
}

impl Memory {
    /// `size` bytes of private memory (rounded up to 2 MiB). The first
    /// `accepted` bytes are added before finalization (4 KiB leaves, accepted);
    /// the rest is AUG'd as pending 2 MiB leaves, or 4 KiB leaves if `!map_2m`.
    pub fn new(size: u64, accepted: u64, map_2m: bool, gpaw: u8) -> Self {
        let size = size.div_ceil(LARGE_PAGE_SIZE) * LARGE_PAGE_SIZE;
        let npages = (size / PAGE_SIZE) as usize;
        let pages = (0..npages)
            .map(|i| Page {
                state: if (i as u64) * PAGE_SIZE < accepted {
                    PageState::Accepted
                } else {
                    PageState::Pending
                },
                attr: [0; 3],
            })
            .collect();
        let large = (0..size / LARGE_PAGE_SIZE)
            .map(|r| map_2m && (r + 1) * LARGE_PAGE_SIZE <= size && r * LARGE_PAGE_SIZE >= accepted)
            .collect();
        Memory {
            bytes: vec![0; size as usize],
            pages,
            large,
            gpaw,
            generation: 0,
            state_generation: 0,
        }
    }

    /// Address of the first byte of the backing store. A bare-metal emulator that
    /// identity-maps its own memory maps GPA `g` of the TD to this address + `g`.
    pub fn backing_address(&self) -> usize {
        self.bytes.as_ptr() as usize
    }

    /// Counter bumped by every change to page states or attributes, so engines
    /// that mirror attributes in page tables (NPT) know when to rebuild.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Counter bumped only by page-state changes (accept, conversions), for
    /// mirrors of L1's view that do not depend on L2 attributes.
    pub fn state_generation(&self) -> u64 {
        self.state_generation
    }

    /// Bytes of private memory.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The shared bit, `1 << (GPAW − 1)` (§5.2).
    pub fn shared_bit(&self) -> u64 {
        1 << (self.gpaw - 1)
    }

    /// True if `gpa` is a valid private GPA: shared bit clear and no bits at or
    /// above GPAW (§5.2); says nothing about whether memory is there.
    pub fn is_private_gpa(&self, gpa: u64) -> bool {
        gpa >> (self.gpaw - 1) == 0
    }

    /// Checks `[gpa, gpa+len)` is private, mapped and (if `need_accepted`) accepted.
    pub fn check(&self, gpa: u64, len: u64, need_accepted: bool) -> Result<(), GpaFault> {
        if !self.is_private_gpa(gpa) {
            return Err(GpaFault::NotPrivate);
        }
        let end = gpa.checked_add(len).ok_or(GpaFault::NotMapped)?;
        if end > self.size() {
            return Err(GpaFault::NotMapped);
        }
        if len == 0 {
            return Ok(());
        }
        for p in gpa / PAGE_SIZE..=(end - 1) / PAGE_SIZE {
            match self.pages[p as usize].state {
                PageState::Accepted => {}
                PageState::Pending if !need_accepted => {}
                PageState::Pending => return Err(GpaFault::Pending),
                PageState::Removed => return Err(GpaFault::NotMapped),
            }
        }
        Ok(())
    }

    /// Reads bytes; the range must be private, mapped and accepted.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GpaFault> {
        self.check(gpa, buf.len() as u64, true)?;
        buf.copy_from_slice(&self.bytes[gpa as usize..gpa as usize + buf.len()]);
        Ok(())
    }

    /// Writes bytes; the range must be private, mapped and accepted.
    pub fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), GpaFault> {
        self.check(gpa, data.len() as u64, true)?;
        self.bytes[gpa as usize..gpa as usize + data.len()].copy_from_slice(data);
        Ok(())
    }

    /// State of the page holding `gpa`, if it is inside memory.
    pub fn state(&self, gpa: u64) -> Option<PageState> {
        self.pages.get((gpa / PAGE_SIZE) as usize).map(|p| p.state)
    }

    /// The host's mapping level at `gpa` (§3.3): 2 MiB or 4 KiB.
    pub fn mapping_level(&self, gpa: u64) -> PageLevel {
        if self
            .large
            .get((gpa / LARGE_PAGE_SIZE) as usize)
            .copied()
            .unwrap_or(false)
        {
            PageLevel::Size2M
        } else {
            PageLevel::Size4K
        }
    }

    /// Splits a 2 MiB leaf into 4 KiB leaves (the host's TDH.MEM.PAGE.DEMOTE).
    pub fn demote(&mut self, gpa: u64) {
        self.generation += 1;
        if let Some(l) = self.large.get_mut((gpa / LARGE_PAGE_SIZE) as usize) {
            *l = false;
        }
    }

    /// Accepts and zero-fills the pages of `[gpa, gpa+len)`.
    pub fn accept(&mut self, gpa: u64, len: u64) {
        self.generation += 1;
        self.state_generation += 1;
        for p in gpa / PAGE_SIZE..(gpa + len) / PAGE_SIZE {
            self.pages[p as usize].state = PageState::Accepted;
        }
        self.bytes[gpa as usize..(gpa + len) as usize].fill(0);
    }

    /// Sets the page state of `[gpa, gpa+len)` (MapGPA conversions). Removing a
    /// private page also removes its L2 aliases.
    pub fn set_state(&mut self, gpa: u64, len: u64, state: PageState) {
        self.generation += 1;
        self.state_generation += 1;
        let last = ((gpa + len) / PAGE_SIZE).min(self.pages.len() as u64);
        for p in gpa / PAGE_SIZE..last {
            let page = &mut self.pages[p as usize];
            page.state = state;
            if state == PageState::Removed {
                page.attr = [0; 3];
            }
        }
    }

    /// The attribute of `vm` at `gpa` (VALID set iff an alias exists).
    pub fn attr(&self, gpa: u64, vm: L2Vm) -> L2Attr {
        self.pages
            .get((gpa / PAGE_SIZE) as usize)
            .map(|p| L2Attr::from_bits_retain(p.attr[vm.index() as usize - 1]))
            .unwrap_or(L2Attr::empty())
    }

    /// Sets the attribute of `vm` on the 4 KiB page at `gpa`.
    pub fn set_attr(&mut self, gpa: u64, vm: L2Vm, attr: L2Attr) {
        self.generation += 1;
        if let Some(p) = self.pages.get_mut((gpa / PAGE_SIZE) as usize) {
            p.attr[vm.index() as usize - 1] = attr.bits();
        }
    }
}
