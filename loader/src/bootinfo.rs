//! The BootInfo page (`docs/emulator-contract.md`): little endian, `repr(C)`
//! layout, at GPA [`BootInfo::GPA`].

use crate::layout;

/// What the emulator (or, on real TDX, the IGVM parameter area) tells L1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootInfo {
    /// vCPUs of the TD.
    pub num_vcpus: u32,
    /// Private memory in bytes.
    pub td_memory_bytes: u64,
    /// Base GPA of L2 VM #1's region.
    pub l2_base: u64,
    /// Size of L2 VM #1's region.
    pub l2_size: u64,
    /// 64-bit entry point of the L2 guest.
    pub l2_entry: u64,
    /// End (exclusive) of the loaded L2 image.
    pub l2_image_end: u64,
    /// Flags (0).
    pub flags: u64,
    /// GPA of the L2 command line (0 if none; version 2).
    pub cmdline_gpa: u64,
    /// Bytes of the command line (0 if none).
    pub cmdline_size: u64,
    /// GPA of the initrd (0 if none; version 2).
    pub initrd_gpa: u64,
    /// Bytes of the initrd (0 if none).
    pub initrd_size: u64,
}

/// Why BootInfo bytes were rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// Fewer than [`BootInfo::SIZE`] bytes.
    TooShort,
    /// The magic is not "LVBSTDX1".
    BadMagic,
    /// A version this crate does not know.
    BadVersion(u32),
}

impl BootInfo {
    /// GPA of the page.
    pub const GPA: u64 = layout::BOOT_INFO_GPA;
    /// "LVBSTDX1" as a little-endian u64.
    pub const MAGIC: u64 = 0x3158_4454_5342_564C;
    /// Layout version (2 added the command line and the initrd).
    pub const VERSION: u32 = 2;
    /// Encoded size in bytes.
    pub const SIZE: usize = 96;
    /// Offset of `magic`.
    pub const OFF_MAGIC: usize = 0;
    /// Offset of `version`.
    pub const OFF_VERSION: usize = 8;
    /// Offset of `num_vcpus`.
    pub const OFF_NUM_VCPUS: usize = 12;
    /// Offset of `td_memory_bytes`.
    pub const OFF_TD_MEMORY_BYTES: usize = 16;
    /// Offset of `l2_base`.
    pub const OFF_L2_BASE: usize = 24;
    /// Offset of `l2_size`.
    pub const OFF_L2_SIZE: usize = 32;
    /// Offset of `l2_entry`.
    pub const OFF_L2_ENTRY: usize = 40;
    /// Offset of `l2_image_end`.
    pub const OFF_L2_IMAGE_END: usize = 48;
    /// Offset of `flags`.
    pub const OFF_FLAGS: usize = 56;
    /// Offset of `cmdline_gpa`.
    pub const OFF_CMDLINE_GPA: usize = 64;
    /// Offset of `cmdline_size`.
    pub const OFF_CMDLINE_SIZE: usize = 72;
    /// Offset of `initrd_gpa`.
    pub const OFF_INITRD_GPA: usize = 80;
    /// Offset of `initrd_size`.
    pub const OFF_INITRD_SIZE: usize = 88;

    /// `flags` bit 0: the L2 image is a Linux `vmlinux`; the paravisor boots
    /// it with the 64-bit boot protocol (`crate::linux`, docs/linux.md).
    pub const FLAG_LINUX: u64 = 1 << 0;

    /// The contract's values for an L2 image with `entry` that ends at `image_end`.
    pub const fn for_l2_image(l2_entry: u64, l2_image_end: u64) -> Self {
        BootInfo {
            num_vcpus: layout::NUM_VCPUS,
            td_memory_bytes: layout::TD_MEMORY_BYTES,
            l2_base: layout::L2_BASE,
            l2_size: layout::L2_SIZE,
            l2_entry,
            l2_image_end,
            flags: 0,
            cmdline_gpa: 0,
            cmdline_size: 0,
            initrd_gpa: 0,
            initrd_size: 0,
        }
    }

    /// The encoded page prefix (magic and version included).
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[Self::OFF_MAGIC..][..8].copy_from_slice(&Self::MAGIC.to_le_bytes());
        b[Self::OFF_VERSION..][..4].copy_from_slice(&Self::VERSION.to_le_bytes());
        b[Self::OFF_NUM_VCPUS..][..4].copy_from_slice(&self.num_vcpus.to_le_bytes());
        for (off, v) in [
            (Self::OFF_TD_MEMORY_BYTES, self.td_memory_bytes),
            (Self::OFF_L2_BASE, self.l2_base),
            (Self::OFF_L2_SIZE, self.l2_size),
            (Self::OFF_L2_ENTRY, self.l2_entry),
            (Self::OFF_L2_IMAGE_END, self.l2_image_end),
            (Self::OFF_FLAGS, self.flags),
            (Self::OFF_CMDLINE_GPA, self.cmdline_gpa),
            (Self::OFF_CMDLINE_SIZE, self.cmdline_size),
            (Self::OFF_INITRD_GPA, self.initrd_gpa),
            (Self::OFF_INITRD_SIZE, self.initrd_size),
        ] {
            b[off..][..8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Decodes the page prefix; checks magic and version.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BootInfoError> {
        let b = bytes.get(..Self::SIZE).ok_or(BootInfoError::TooShort)?;
        let u64_at = |off: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[off..off + 8]);
            u64::from_le_bytes(v)
        };
        let u32_at = |off: usize| {
            let mut v = [0u8; 4];
            v.copy_from_slice(&b[off..off + 4]);
            u32::from_le_bytes(v)
        };
        if u64_at(Self::OFF_MAGIC) != Self::MAGIC {
            return Err(BootInfoError::BadMagic);
        }
        let version = u32_at(Self::OFF_VERSION);
        if version != Self::VERSION {
            return Err(BootInfoError::BadVersion(version));
        }
        Ok(BootInfo {
            num_vcpus: u32_at(Self::OFF_NUM_VCPUS),
            td_memory_bytes: u64_at(Self::OFF_TD_MEMORY_BYTES),
            l2_base: u64_at(Self::OFF_L2_BASE),
            l2_size: u64_at(Self::OFF_L2_SIZE),
            l2_entry: u64_at(Self::OFF_L2_ENTRY),
            l2_image_end: u64_at(Self::OFF_L2_IMAGE_END),
            flags: u64_at(Self::OFF_FLAGS),
            cmdline_gpa: u64_at(Self::OFF_CMDLINE_GPA),
            cmdline_size: u64_at(Self::OFF_CMDLINE_SIZE),
            initrd_gpa: u64_at(Self::OFF_INITRD_GPA),
            initrd_size: u64_at(Self::OFF_INITRD_SIZE),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_spells_lvbstdx1() {
        assert_eq!(&BootInfo::MAGIC.to_le_bytes(), b"LVBSTDX1");
    }

    #[test]
    fn round_trip_and_offsets() {
        let bi = BootInfo::for_l2_image(0x100_1234, 0x100_8000);
        let b = bi.to_bytes();
        assert_eq!(&b[..8], b"LVBSTDX1");
        assert_eq!(b[8], 2);
        assert_eq!(b[12], 1);
        assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), 64 << 20);
        assert_eq!(
            u64::from_le_bytes(b[24..32].try_into().unwrap()),
            0x100_0000
        );
        assert_eq!(u64::from_le_bytes(b[32..40].try_into().unwrap()), 32 << 20);
        assert_eq!(
            u64::from_le_bytes(b[40..48].try_into().unwrap()),
            0x100_1234
        );
        assert_eq!(
            u64::from_le_bytes(b[48..56].try_into().unwrap()),
            0x100_8000
        );
        assert_eq!(BootInfo::from_bytes(&b), Ok(bi));
    }

    #[test]
    fn rejects_bad_input() {
        let mut b = BootInfo::for_l2_image(0, 0).to_bytes();
        assert_eq!(BootInfo::from_bytes(&b[..95]), Err(BootInfoError::TooShort));
        b[8] = 1;
        assert_eq!(BootInfo::from_bytes(&b), Err(BootInfoError::BadVersion(1)));
        b[0] = 0;
        assert_eq!(BootInfo::from_bytes(&b), Err(BootInfoError::BadMagic));
    }
}
