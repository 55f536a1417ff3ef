//! The L1-visible L2 MSR bitmap as 512 qwords (§2.7).
//!
//! `index = region_base + ((msr & 0x1FFF) >> 6)`, `bit = msr & 0x3F`, with region
//! bases 0x000 (read, low MSRs), 0x080 (read, high), 0x100 (write, low),
//! 0x180 (write, high). A set bit intercepts; the module starts every bit set.

use alloc::boxed::Box;

use crate::setup::{MsrPassthrough, SetupError};

/// Number of qwords in the bitmap page.
pub const QWORDS: usize = 512;

/// Read or write half of the bitmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrDirection {
    /// RDMSR.
    Read,
    /// WRMSR.
    Write,
}

/// Qword index and bit of `msr` in the `dir` half, or `None` if the MSR lies
/// outside both ranges (such MSRs always exit, §2.7).
pub fn position(msr: u32, dir: MsrDirection) -> Option<(u16, u32)> {
    let high = match msr {
        0..=0x1FFF => false,
        0xC000_0000..=0xC000_1FFF => true,
        _ => return None,
    };
    let base: u16 = match (dir, high) {
        (MsrDirection::Read, false) => 0x000,
        (MsrDirection::Read, true) => 0x080,
        (MsrDirection::Write, false) => 0x100,
        (MsrDirection::Write, true) => 0x180,
    };
    Some((base + ((msr & 0x1FFF) >> 6) as u16, msr & 0x3F))
}

/// A full bitmap in L1 memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsrBitmap {
    qwords: Box<[u64; QWORDS]>,
}

impl Default for MsrBitmap {
    fn default() -> Self {
        Self::intercept_all()
    }
}

impl MsrBitmap {
    /// Every MSR intercepted: the module's reset state (§2.7).
    pub fn intercept_all() -> Self {
        MsrBitmap {
            qwords: Box::new([u64::MAX; QWORDS]),
        }
    }

    /// The reset state with the pass-through bits of `list` cleared.
    pub fn with_passthrough(list: &[MsrPassthrough]) -> Result<Self, SetupError> {
        let mut b = Self::intercept_all();
        for p in list {
            for (dir, pass) in [(MsrDirection::Read, p.read), (MsrDirection::Write, p.write)] {
                if pass {
                    b.set_intercept(p.msr, dir, false)
                        .ok_or(SetupError::MsrNotInBitmap(p.msr))?;
                }
            }
        }
        Ok(b)
    }

    /// Sets or clears the intercept bit; `None` if the MSR is outside the bitmap.
    pub fn set_intercept(&mut self, msr: u32, dir: MsrDirection, intercept: bool) -> Option<()> {
        let (index, bit) = position(msr, dir)?;
        let q = &mut self.qwords[index as usize];
        if intercept {
            *q |= 1 << bit;
        } else {
            *q &= !(1 << bit);
        }
        Some(())
    }

    /// Whether `msr` exits to L1 in direction `dir` (outside the bitmap: always).
    pub fn intercepts(&self, msr: u32, dir: MsrDirection) -> bool {
        match position(msr, dir) {
            Some((index, bit)) => self.qwords[index as usize] & (1 << bit) != 0,
            None => true,
        }
    }

    /// Qword `index`.
    pub fn qword(&self, index: u16) -> u64 {
        self.qwords.get(index as usize).copied().unwrap_or(u64::MAX)
    }

    /// The qwords that differ from the all-ones reset state, as (index, value).
    pub fn changed_qwords(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.qwords
            .iter()
            .enumerate()
            .filter(|(_, q)| **q != u64::MAX)
            .map(|(i, q)| (i as u16, *q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_positions() {
        // §2.7 examples: LSTAR read qword 0x82 bit 2, write 0x182 bit 2; x2APIC EOI write 0x120 bit 11.
        assert_eq!(position(0xC000_0082, MsrDirection::Read), Some((0x82, 2)));
        assert_eq!(position(0xC000_0082, MsrDirection::Write), Some((0x182, 2)));
        assert_eq!(position(0x80B, MsrDirection::Write), Some((0x120, 11)));
        assert_eq!(position(0x4000_0000, MsrDirection::Read), None);
        assert_eq!(position(0xC000_2000, MsrDirection::Read), None);
    }

    #[test]
    fn passthrough_clears_only_requested_bits() {
        let b = MsrBitmap::with_passthrough(&[
            MsrPassthrough {
                msr: 0xC000_0082,
                read: true,
                write: false,
            },
            MsrPassthrough {
                msr: 0x10,
                read: true,
                write: true,
            },
        ])
        .unwrap();
        assert!(!b.intercepts(0xC000_0082, MsrDirection::Read));
        assert!(b.intercepts(0xC000_0082, MsrDirection::Write));
        assert!(!b.intercepts(0x10, MsrDirection::Write));
        assert!(b.intercepts(0x11, MsrDirection::Read));
        let changed: alloc::vec::Vec<_> = b.changed_qwords().collect();
        assert_eq!(
            changed,
            [
                (0x000, !(1u64 << 0x10)),
                (0x082, !(1u64 << 2)),
                (0x100, !(1u64 << 0x10)),
            ]
        );
        assert_eq!(
            MsrBitmap::with_passthrough(&[MsrPassthrough {
                msr: 0x4000_0000,
                read: true,
                write: false
            }]),
            Err(SetupError::MsrNotInBitmap(0x4000_0000))
        );
    }
}
