//! Entry points for fuzzers and property tests.
//!
//! [`handle_call`] maps raw bytes into a small guest memory and makes one
//! LVBS call, so that every byte a fuzzer produces reaches the transport and
//! message parsers:
//!
//! | raw bytes | guest memory |
//! |---|---|
//! | `0..72` | the SMC-argument page at [`SMC_PAGE_GPA`] (PFN 1) |
//! | `72..` (at most [`DATA_LEN`]) | [`DATA_GPA`] onwards: messages, params, page lists |
//!
//! Guest memory is `[0, MEM_LEN)`; everything else faults. A message at
//! [`DATA_GPA`] is reached with `args = [4, 0, DATA_GPA, ...]`.
//! [`handle_calls`] runs several calls against the same TEE, so a fuzzer can
//! open a session and then use it.

use crate::dispatch::Tee;
use crate::mem::{GuestMemory, VecMemory};
use crate::msg::{OPTEE_MESSAGE_FUNC_ID, SMC_ARGS_SIZE};
use crate::platform::Platform;

/// GPA of the SMC-argument page.
pub const SMC_PAGE_GPA: u64 = 0x1000;
/// GPA where the bytes after the first 72 go.
pub const DATA_GPA: u64 = 0x2000;
/// Most bytes placed at [`DATA_GPA`].
pub const DATA_LEN: usize = 0x4000;
/// Size of the fuzz guest memory.
pub const MEM_LEN: usize = 0x6000;

/// One LVBS call with `raw` laid out as documented above; returns R8.
pub fn handle_call<P: Platform>(tee: &mut Tee<P>, raw: &[u8]) -> i64 {
    let mut mem = VecMemory::new(0, MEM_LEN);
    let (page, data) = raw.split_at(raw.len().min(SMC_ARGS_SIZE));
    let data = data.get(..data.len().min(DATA_LEN)).unwrap_or(&[]);
    // Both ranges lie inside the memory by construction.
    let _ = mem.write(SMC_PAGE_GPA, page);
    let _ = mem.write(DATA_GPA, data);
    tee.vtl_call(&mut mem, OPTEE_MESSAGE_FUNC_ID, SMC_PAGE_GPA >> 12, 0, 0)
}

/// Several calls against one TEE: `raw` is a sequence of records, each a
/// little-endian `u16` length followed by that many bytes for [`handle_call`].
/// Returns the number of calls made.
pub fn handle_calls<P: Platform>(tee: &mut Tee<P>, raw: &[u8]) -> usize {
    let mut rest = raw;
    let mut n = 0;
    while let Some((len, tail)) = rest.split_first_chunk::<2>() {
        let len = usize::from(u16::from_le_bytes(*len)).min(tail.len());
        let (one, tail) = tail.split_at(len);
        handle_call(tee, one);
        n += 1;
        rest = tail;
    }
    n
}
