//! Guest memory access by guest-physical address.
//!
//! The TEE never maps guest memory into a trusted application. Every byte a
//! TA sees was copied from the guest through [`GuestMemory::read`] into a
//! private buffer, and every byte the guest sees was copied back with
//! [`GuestMemory::write`]. The paravisor implements this trait over the L2
//! RAM it may touch (and refuses its own private memory); tests use
//! [`VecMemory`].

use alloc::vec;
use alloc::vec::Vec;

/// Size of a guest page.
pub const PAGE_SIZE: u64 = 4096;

/// A guest memory access failed: the range is not guest RAM the TEE may
/// touch, or it wraps around the address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemError {
    /// First byte of the refused range.
    pub gpa: u64,
    /// Length of the refused range.
    pub len: u64,
}

/// Byte access to guest memory by GPA.
///
/// Implementations must treat every range as untrusted: refuse ranges that
/// wrap or leave guest RAM, and never expose memory that belongs to the
/// paravisor or another VM.
pub trait GuestMemory {
    /// Copies `buf.len()` bytes starting at `gpa` into `buf`.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError>;
    /// Copies `data` to guest memory starting at `gpa`.
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError>;
    /// Checks that `[gpa, gpa + len)` could be read and written, without
    /// touching it (output buffers are checked before a TA runs).
    fn check(&self, gpa: u64, len: u64) -> Result<(), MemError>;
}

/// A flat, heap-backed guest memory covering `[base, base + len)`.
#[derive(Clone, Debug)]
pub struct VecMemory {
    base: u64,
    bytes: Vec<u8>,
}

impl VecMemory {
    /// Zero-filled memory of `len` bytes at `base`.
    pub fn new(base: u64, len: usize) -> VecMemory {
        VecMemory {
            base,
            bytes: vec![0; len],
        }
    }

    /// The first GPA.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the memory is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The backing bytes (GPA `base` is index 0).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The backing bytes, mutable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    fn range(&self, gpa: u64, len: u64) -> Result<core::ops::Range<usize>, MemError> {
        let err = MemError { gpa, len };
        let off = gpa.checked_sub(self.base).ok_or(err)?;
        let end = off.checked_add(len).ok_or(err)?;
        if end > self.bytes.len() as u64 {
            return Err(err);
        }
        Ok(off as usize..end as usize)
    }
}

impl GuestMemory for VecMemory {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let r = self.range(gpa, buf.len() as u64)?;
        let src = self.bytes.get(r).ok_or(MemError {
            gpa,
            len: buf.len() as u64,
        })?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        let r = self.range(gpa, data.len() as u64)?;
        let dst = self.bytes.get_mut(r).ok_or(MemError {
            gpa,
            len: data.len() as u64,
        })?;
        dst.copy_from_slice(data);
        Ok(())
    }

    fn check(&self, gpa: u64, len: u64) -> Result<(), MemError> {
        self.range(gpa, len).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        let mut m = VecMemory::new(0x1000, 0x1000);
        assert!(m.write(0x1ffc, &[1, 2, 3, 4]).is_ok());
        assert!(m.write(0x1ffd, &[1, 2, 3, 4]).is_err());
        assert!(m.read(0xfff, &mut [0u8; 1]).is_err());
        assert!(m.check(u64::MAX, 2).is_err());
        let mut b = [0u8; 4];
        m.read(0x1ffc, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        assert!(m.check(0x1000, 0x1000).is_ok());
        assert!(m.check(0x1000, 0x1001).is_err());
    }
}
