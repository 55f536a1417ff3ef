//! The client's transport: identity-mapped L2 memory and VMCALL 0x1FFF0,
//! plus the sealed-blob slot `cargo xtask tee` fills for the second run.

use core::cell::UnsafeCell;

use guest_rt::cpu;
use lvbs_tee::client::Transport;
use lvbs_tee::{GuestMemory, MemError};

/// Guest memory `[start, end)` the client may use (its scratch area and the
/// shared buffers), reached through the identity map (VA = GPA).
pub struct Window {
    start: u64,
    end: u64,
}

impl Window {
    /// The window `[start, end)`.
    pub fn new(start: u64, end: u64) -> Self {
        Window { start, end }
    }

    fn range(&self, gpa: u64, len: usize) -> Result<(), MemError> {
        let err = MemError {
            gpa,
            len: len as u64,
        };
        let end = gpa.checked_add(len as u64).ok_or(err)?;
        if gpa < self.start || end > self.end {
            return Err(err);
        }
        Ok(())
    }
}

impl GuestMemory for Window {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.range(gpa, buf.len())?;
        for (i, b) in buf.iter_mut().enumerate() {
            let p = core::ptr::with_exposed_provenance::<u8>(gpa as usize + i);
            // SAFETY: `range` limited the access to the window, which is
            // identity-mapped L2 memory no Rust object covers; volatile, since
            // the paravisor writes it during VMCALLs.
            *b = unsafe { p.read_volatile() };
        }
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        self.range(gpa, data.len())?;
        for (i, b) in data.iter().enumerate() {
            let p = core::ptr::with_exposed_provenance_mut::<u8>(gpa as usize + i);
            // SAFETY: as in `read`.
            unsafe { p.write_volatile(*b) };
        }
        Ok(())
    }

    fn check(&self, gpa: u64, len: u64) -> Result<(), MemError> {
        self.range(gpa, len as usize)
    }
}

/// VMCALL with the LVBS ABI over a [`Window`].
pub struct Vmcall {
    /// The client's memory.
    pub mem: Window,
    /// Calls issued.
    pub calls: u64,
}

impl Transport for Vmcall {
    fn memory(&mut self) -> &mut dyn GuestMemory {
        &mut self.mem
    }

    fn vtl_call(&mut self, a0: u64, a1: u64, a2: u64, a3: u64) -> i64 {
        self.calls += 1;
        cpu::vmcall(a0, a1, a2, a3) as i64
    }
}

/// Marks the slot `cargo xtask tee` patches in the ELF file: the magic, a
/// little-endian u32 length, 4 bytes of padding, then the data.
pub const SEALED_IN_MAGIC: [u8; 24] = *b"LVBS-TEE-SEALED-IN-v1\0\0\0";
/// Room for the blob.
pub const SEALED_IN_MAX: usize = 512;

#[repr(C)]
struct SealedIn {
    magic: [u8; 24],
    len: u32,
    pad: u32,
    data: [u8; SEALED_IN_MAX],
}

#[repr(C, align(16))]
struct SealedInCell(UnsafeCell<SealedIn>);

// SAFETY: only read (volatile, by `sealed_in`), never written at run time.
unsafe impl Sync for SealedInCell {}

/// In `.data` (the magic makes it non-zero), so the bytes are in the ELF file.
#[used]
#[link_section = ".data.tee_sealed_in"]
static SEALED_IN: SealedInCell = SealedInCell(UnsafeCell::new(SealedIn {
    magic: SEALED_IN_MAGIC,
    len: 0,
    pad: 0,
    data: [0; SEALED_IN_MAX],
}));

/// The blob `cargo xtask tee` put into this image for the second run
/// (sealed by the first run under another measurement), if any.
pub fn sealed_in() -> Option<alloc::vec::Vec<u8>> {
    let p = SEALED_IN.0.get();
    // SAFETY: the static is never written at run time; volatile reads keep
    // the compiler from folding the build-time zero length (the file may have
    // been patched after linking).
    let len = unsafe { (&raw const (*p).len).read_volatile() } as usize;
    if len == 0 || len > SEALED_IN_MAX {
        return None;
    }
    let mut out = alloc::vec![0u8; len];
    for (i, b) in out.iter_mut().enumerate() {
        // SAFETY: as above, `i < len <= SEALED_IN_MAX`.
        *b = unsafe { (&raw const (*p).data[i]).read_volatile() };
    }
    Some(out)
}
