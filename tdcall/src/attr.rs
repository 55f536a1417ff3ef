//! Per-L2-VM private-page attributes for TDG.MEM.PAGE.ATTR.RD/WR (§3.2–§3.4).
#![forbid(unsafe_code)]

use crate::L2Vm;

bitflags::bitflags! {
    /// The 16-bit attribute of one VM's slot in GPA_ATTR (§3.2).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct L2Attr: u16 {
        /// Read (EPT bit 0).
        const R = 1 << 0;
        /// Write; requires R (EPT bit 1).
        const W = 1 << 1;
        /// Execute; supervisor-mode execute when MBEC is on (EPT bit 2).
        const XS = 1 << 2;
        /// User-mode execute, only meaningful with MBEC (EPT bit 10).
        const XU = 1 << 3;
        /// Verify guest paging (EPT bit 57).
        const VGP = 1 << 4;
        /// Paging-write access; requires R (EPT bit 58).
        const PWA = 1 << 5;
        /// Supervisor shadow stack (EPT bit 60).
        const SSS = 1 << 6;
        /// Suppress #VE; must be 0 on write in 1.5.01 (EPT bit 63).
        const SVE = 1 << 7;
        /// On write: this slot is meaningful. On read: an alias exists.
        const VALID = 1 << 15;
    }
}

impl L2Attr {
    /// Writable attribute bits, GUEST_L2_GPA_ATTR_MASK of 1.5.01 (§3.2).
    pub const GUEST_WRITABLE_MASK: u16 = 0x807F;
    /// Reserved bits 14:8 (§3.2).
    pub const RESERVED: u16 = 0x7F00;
    /// The bits that make an alias present (§3.2).
    pub const PRESENT: L2Attr = L2Attr::R
        .union(L2Attr::W)
        .union(L2Attr::XS)
        .union(L2Attr::XU);

    /// True if any of R, W, Xs, Xu is set.
    pub const fn is_present(self) -> bool {
        self.intersects(Self::PRESENT)
    }

    /// The legality rule the module applies to a resulting attribute (§3.2):
    /// VALID=0 ⇒ everything 0; reserved bits 0; W ⇒ R; PWA ⇒ R; SVE = 0.
    pub const fn is_legal(self) -> bool {
        let bits = self.bits();
        if bits & L2Attr::VALID.bits() == 0 {
            return bits == 0;
        }
        if bits & Self::RESERVED != 0 || self.contains(L2Attr::SVE) {
            return false;
        }
        let readable = self.contains(L2Attr::R);
        readable || !(self.contains(L2Attr::W) || self.contains(L2Attr::PWA))
    }
}

/// Page mapping level in RCX bits 2:0 of PAGE.ACCEPT and PAGE.ATTR.RD/WR (§1.4, §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum PageLevel {
    /// 4 KiB.
    Size4K = 0,
    /// 2 MiB.
    Size2M = 1,
    /// 1 GiB (rejected by PAGE.ACCEPT in 1.5.01).
    Size1G = 2,
}

impl PageLevel {
    /// Size in bytes.
    pub const fn bytes(self) -> u64 {
        match self {
            PageLevel::Size4K => 0x1000,
            PageLevel::Size2M => 0x20_0000,
            PageLevel::Size1G => 0x4000_0000,
        }
    }

    /// Decodes a level number.
    pub const fn from_bits(bits: u64) -> Option<PageLevel> {
        match bits {
            0 => Some(PageLevel::Size4K),
            1 => Some(PageLevel::Size2M),
            2 => Some(PageLevel::Size1G),
            _ => None,
        }
    }
}

/// The "GPA mapping" operand in RCX (§3.3, §3.4): level in bits 2:0, GPA page
/// number in bits 51:12, and on output bit 62 = PENDING.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GpaMapping(pub u64);

impl GpaMapping {
    /// GPA bits 51:12.
    pub const GPA_MASK: u64 = 0x000F_FFFF_FFFF_F000;
    /// Output bit 62: the page is not yet accepted (§3.3).
    pub const PENDING: u64 = 1 << 62;

    /// Encodes a mapping input. `gpa` should be aligned to `level`; the module checks it.
    pub const fn new(gpa: u64, level: PageLevel) -> Self {
        GpaMapping((gpa & Self::GPA_MASK) | level as u64)
    }

    /// The GPA (bits 51:12).
    pub const fn gpa(self) -> u64 {
        self.0 & Self::GPA_MASK
    }

    /// The level field, if it is a defined level.
    pub const fn level(self) -> Option<PageLevel> {
        PageLevel::from_bits(self.0 & 7)
    }

    /// Output PENDING bit.
    pub const fn is_pending(self) -> bool {
        self.0 & Self::PENDING != 0
    }

    /// Bits that must be 0 on input: 11:3 and 63:52 (§3.4).
    pub const fn reserved_bits(self) -> u64 {
        self.0 & !(Self::GPA_MASK | 7)
    }
}

/// GPA_ATTR: four 16-bit slots, VM *n* at bits `16n+15:16n` (§3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct GpaAttr(pub u64);

impl GpaAttr {
    /// A GPA_ATTR with only `vm`'s slot set.
    pub const fn for_vm(vm: L2Vm, attr: L2Attr) -> Self {
        GpaAttr((attr.bits() as u64) << (16 * vm.index() as u64))
    }

    /// Raw 16-bit slot `index` (0 = L1).
    pub const fn slot_bits(self, index: u8) -> u16 {
        (self.0 >> (16 * (index as u64 & 3))) as u16
    }

    /// The attribute of `vm` (unknown bits retained).
    pub const fn slot(self, vm: L2Vm) -> L2Attr {
        L2Attr::from_bits_retain(self.slot_bits(vm.index()))
    }

    /// Returns a copy with `vm`'s slot replaced.
    pub const fn with_slot(self, vm: L2Vm, attr: L2Attr) -> Self {
        let shift = 16 * vm.index() as u64;
        GpaAttr((self.0 & !(0xFFFF << shift)) | ((attr.bits() as u64) << shift))
    }
}

/// ATTR_FLAGS in R8 of PAGE.ATTR.WR (§3.4): per VM a 15-bit mask of the
/// attribute bits to change plus bit 15 = INVEPT after the update.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct AttrWrFlags(pub u64);

impl AttrWrFlags {
    /// Bit 15 of a slot: flush that VM's EPT caches after the update (§3.4).
    pub const INVEPT: u16 = 1 << 15;

    /// Flags changing `mask` of `vm`, with or without the flush.
    pub const fn for_vm(vm: L2Vm, mask: L2Attr, invept: bool) -> Self {
        let slot = (mask.bits() & 0x7FFF) | if invept { Self::INVEPT } else { 0 };
        AttrWrFlags((slot as u64) << (16 * vm.index() as u64))
    }

    /// Raw 16-bit slot `index` (0 = L1).
    pub const fn slot_bits(self, index: u8) -> u16 {
        (self.0 >> (16 * (index as u64 & 3))) as u16
    }

    /// The change mask of `vm` (bits 14:0).
    pub const fn mask(self, vm: L2Vm) -> L2Attr {
        L2Attr::from_bits_retain(self.slot_bits(vm.index()) & 0x7FFF)
    }

    /// Whether `vm`'s INVEPT bit is set.
    pub const fn invept(self, vm: L2Vm) -> bool {
        self.slot_bits(vm.index()) & Self::INVEPT != 0
    }

    /// Combines the slots of two flag words.
    pub const fn union(self, other: AttrWrFlags) -> Self {
        AttrWrFlags(self.0 | other.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_example_full_rwx_vm1() {
        // §3.4 example: VM1, 4 KiB page, full RWX both modes, flush.
        let attr = GpaAttr::for_vm(
            L2Vm::Vm1,
            L2Attr::R | L2Attr::W | L2Attr::XS | L2Attr::XU | L2Attr::VALID,
        );
        assert_eq!(attr.0, 0x800F << 16);
        let flags = AttrWrFlags::for_vm(L2Vm::Vm1, L2Attr::PRESENT, true);
        assert_eq!(flags.0, (0x000F | 0x8000) << 16);
        assert!(flags.invept(L2Vm::Vm1));
        assert!(!flags.invept(L2Vm::Vm2));
        assert_eq!(
            GpaMapping::new(0x1234_5000, PageLevel::Size4K).0,
            0x1234_5000
        );
        assert_eq!(GpaMapping::new(0x20_0000, PageLevel::Size2M).0, 0x20_0001);
    }

    #[test]
    fn legality() {
        assert!(L2Attr::empty().is_legal());
        assert!(!L2Attr::R.is_legal(), "VALID=0 with bits set");
        assert!((L2Attr::VALID | L2Attr::R | L2Attr::W).is_legal());
        assert!(!(L2Attr::VALID | L2Attr::W).is_legal(), "W without R");
        assert!(!(L2Attr::VALID | L2Attr::PWA).is_legal(), "PWA without R");
        assert!(!(L2Attr::VALID | L2Attr::R | L2Attr::SVE).is_legal());
        assert!(!L2Attr::from_bits_retain(0x8101).is_legal(), "reserved bit");
        assert!(L2Attr::VALID.is_legal(), "VALID alone removes the alias");
        assert!(!L2Attr::VALID.is_present());
        assert_eq!(L2Attr::all().bits() & !L2Attr::RESERVED, 0x80FF);
    }

    #[test]
    fn slots() {
        let a = GpaAttr::for_vm(L2Vm::Vm2, L2Attr::VALID | L2Attr::R)
            .with_slot(L2Vm::Vm3, L2Attr::VALID | L2Attr::XS | L2Attr::R);
        assert_eq!(a.0, 0x8005_8001_0000_0000);
        assert_eq!(a.slot(L2Vm::Vm1), L2Attr::empty());
        assert_eq!(a.slot(L2Vm::Vm2), L2Attr::VALID | L2Attr::R);
        let m = GpaMapping(0x4000_0000_0020_0001);
        assert!(m.is_pending());
        assert_eq!(m.gpa(), 0x20_0000);
        assert_eq!(m.level(), Some(PageLevel::Size2M));
        assert_eq!(
            GpaMapping(0x10_0000_0000_1008).reserved_bits(),
            0x10_0000_0000_0008
        );
    }
}
