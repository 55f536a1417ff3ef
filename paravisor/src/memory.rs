//! The platform boundary: TDCALL plus access to L1's own private memory.
//!
//! The core never dereferences a pointer. Everything it reads or writes in L1
//! memory — the 256-byte TDG.VP.ENTER guest-state buffer (§2.2) and, for MMIO
//! emulation, L2 instruction bytes — goes through [`L1Memory`] by GPA. On bare
//! metal that is a mapping of L1's identity-mapped private memory; in host tests
//! it is the TDX-module model's memory.

use core::fmt;

use crate::pinning::SharedMsrs;

/// Why an [`L1Memory`] access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryError {
    /// The range is not backed by L1 memory.
    OutOfRange {
        /// First GPA of the access.
        gpa: u64,
        /// Length in bytes.
        len: usize,
    },
    /// The range exists but may not be accessed (e.g. not yet accepted, or shared).
    Inaccessible {
        /// First GPA of the access.
        gpa: u64,
        /// Length in bytes.
        len: usize,
    },
}

impl fmt::Display for MemoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryError::OutOfRange { gpa, len } => {
                write!(f, "GPA range {gpa:#x}+{len:#x} is not L1 memory")
            }
            MemoryError::Inaccessible { gpa, len } => {
                write!(f, "GPA range {gpa:#x}+{len:#x} is not accessible")
            }
        }
    }
}

/// Byte access to L1's private memory by guest-physical address.
pub trait L1Memory {
    /// Fills `buf` from `gpa..gpa + buf.len()`.
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError>;
    /// Writes `data` to `gpa..gpa + data.len()`.
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError>;
}

impl<T: L1Memory + ?Sized> L1Memory for &mut T {
    fn read(&mut self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        (**self).read(gpa, buf)
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        (**self).write(gpa, data)
    }
}

/// Everything the core needs from the machine: TDCALL ([`tdcall::Tdcall`]), L1
/// memory ([`L1Memory`]) and the MSRs TDX shares between L1 and L2
/// ([`SharedMsrs`], read by LOCK_REGS; a platform that cannot read them returns
/// `None` and LOCK_REGS fails). Implemented for every type that has all three,
/// and usable as `dyn Platform` (hooks receive `&mut dyn Platform`).
pub trait Platform: tdcall::Tdcall + L1Memory + SharedMsrs {}

impl<T: tdcall::Tdcall + L1Memory + SharedMsrs + ?Sized> Platform for T {}
