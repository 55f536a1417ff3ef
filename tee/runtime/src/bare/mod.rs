//! The runtime of one TA instance in L1 ring 3.
//!
//! The paravisor enters [`ta_start`] once per instance with RSP at the top
//! of the instance's stack and RDI/RSI = message area, RDX/RCX = heap (VA
//! and size). The runtime hands the heap to its own allocator, then loops:
//! handle the request in the message area ([`Instance::handle`]) and
//! [`syscall::REPLY`]; the paravisor resumes it with the next request. A
//! panic ends the instance with [`syscall::EXIT`] (code [`EXIT_OUT_OF_MEMORY`]
//! when an allocation failed first, else [`EXIT_PANIC`]); the paravisor then
//! answers TARGET_DEAD for it.
//!
//! `unsafe` is confined to this module (the entry, the system-call
//! instructions, the message-area slice and the allocator) and, with the
//! `attack-ta` feature, to [`attack`].

#[cfg(feature = "attack-ta")]
mod attack;

use alloc::boxed::Box;
use core::alloc::{GlobalAlloc, Layout};
use core::fmt::Write;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use buddy_system_allocator::LockedHeap;
use lvbs_tee::platform::RngError;
use lvbs_tee::sandbox::syscall::{self, EXIT_OUT_OF_MEMORY, EXIT_PANIC};
use lvbs_tee::sandbox::Instance;
use lvbs_tee::{TrustedApp, Uuid};
use rand_core::{TryCryptoRng, TryRng};

core::arch::global_asm!(
    r#"
    .section .text.ta_start, "ax", @progbits
    .globl ta_start
ta_start:
    andq $-16, %rsp
    xorl %ebp, %ebp
    call ta_main
    ud2
"#,
    options(att_syntax)
);

/// The global allocator: a buddy allocator over the instance's fixed heap
/// that records the first failed allocation, so that the panic that follows
/// it is reported as [`EXIT_OUT_OF_MEMORY`].
struct Allocator(LockedHeap<32>);

static OUT_OF_MEMORY: AtomicBool = AtomicBool::new(false);

// SAFETY: every method forwards to `LockedHeap`, a correct allocator; the
// only addition is a flag set when it returns null.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on unchanged.
        let p = unsafe { self.0.alloc(layout) };
        if p.is_null() {
            OUT_OF_MEMORY.store(true, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on unchanged.
        unsafe { self.0.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Allocator = Allocator(LockedHeap::empty());

/// Bytes of heap not allocated.
fn heap_free() -> usize {
    let h = ALLOCATOR.0.lock();
    h.stats_total_bytes().saturating_sub(h.stats_alloc_actual())
}

/// The message area (VA, size), from the entry registers.
static MSG: AtomicU64 = AtomicU64::new(0);
static MSG_LEN: AtomicU64 = AtomicU64::new(0);

/// Runs `f` on the message area. The slice lives only for the call: the
/// paravisor rewrites the area between two requests.
fn with_message<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    let (base, len) = (MSG.load(Ordering::Relaxed), MSG_LEN.load(Ordering::Relaxed));
    // SAFETY: the paravisor maps `[base, base + len)` user R+W for this
    // instance only (docs/tee.md); nothing in the instance holds another
    // reference to it (this is the only place a slice is made, and `f`
    // cannot keep it), and the paravisor writes it only while the instance
    // is stopped in a system call, which the asm blocks declare as memory
    // clobbers.
    let area = unsafe { core::slice::from_raw_parts_mut(base as *mut u8, len as usize) };
    f(area)
}

/// [`syscall::REPLY`]: returns with the next request in the message area.
fn reply() {
    // SAFETY: `int 0x80` enters the paravisor, which stores the reply and
    // resumes here with every register but RAX as it was; memory (the
    // message area) changes in between, hence no `nomem`.
    unsafe {
        core::arch::asm!("int 0x80", inout("rax") syscall::REPLY => _);
    }
}

/// [`syscall::RANDOM`]: 32 random bytes, or `None` if the platform RNG failed.
fn random_words() -> Option<[u64; 4]> {
    let (status, w0, w1, w2, w3): (u64, u64, u64, u64, u64);
    // SAFETY: the paravisor answers in RAX, RDI, RSI, RDX and R8 (declared
    // as outputs) and touches no instance memory.
    unsafe {
        core::arch::asm!(
            "int 0x80",
            inout("rax") syscall::RANDOM => status,
            lateout("rdi") w0,
            lateout("rsi") w1,
            lateout("rdx") w2,
            lateout("r8") w3,
            options(nostack),
        );
    }
    (status == 0).then_some([w0, w1, w2, w3])
}

/// [`syscall::EXIT`] with `code` and a message of `len` bytes at the start
/// of the message area.
fn exit(code: u64, len: usize) -> ! {
    // SAFETY: the paravisor never resumes an instance after EXIT.
    unsafe {
        core::arch::asm!(
            "int 0x80",
            in("rax") syscall::EXIT,
            in("rdi") code,
            in("rsi") len as u64,
            options(noreturn),
        );
    }
}

/// The platform RNG through [`syscall::RANDOM`].
struct SyscallRng;

impl TryRng for SyscallRng {
    type Error = RngError;
    fn try_next_u32(&mut self) -> Result<u32, RngError> {
        random_words().map(|w| w[0] as u32).ok_or(RngError)
    }
    fn try_next_u64(&mut self) -> Result<u64, RngError> {
        random_words().map(|w| w[0]).ok_or(RngError)
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), RngError> {
        for chunk in dst.chunks_mut(32) {
            let w = random_words().ok_or(RngError)?;
            let mut bytes = [0u8; 32];
            for (b, w) in bytes.chunks_exact_mut(8).zip(w) {
                b.copy_from_slice(&w.to_le_bytes());
            }
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

impl TryCryptoRng for SyscallRng {}

/// The TA an instance serves, by UUID.
fn make_ta(uuid: &Uuid, aux: u64) -> Option<Box<dyn TrustedApp>> {
    #[cfg(feature = "attack-ta")]
    if *uuid == lvbs_tee::sandbox::attack_ta::UUID {
        return Some(Box::new(attack::AttackTa::new(aux)));
    }
    let _ = aux;
    lvbs_tee::ta::builtin()
        .into_iter()
        .find(|ta| ta.uuid() == *uuid)
}

/// The Rust entry (from [`ta_start`]): message area, heap; never returns.
#[no_mangle]
extern "C" fn ta_main(msg: u64, msg_len: u64, heap: u64, heap_len: u64) -> ! {
    MSG.store(msg, Ordering::Relaxed);
    MSG_LEN.store(msg_len, Ordering::Relaxed);
    // SAFETY: the paravisor maps `[heap, heap + heap_len)` user R+W for this
    // instance only and nothing else in the instance uses it; this runs
    // once, before any allocation.
    unsafe { ALLOCATOR.0.lock().init(heap as usize, heap_len as usize) };
    let mut instance = Instance::default();
    let make = |uuid: &Uuid, aux: u64| make_ta(uuid, aux);
    loop {
        let free = heap_free();
        with_message(|area| instance.handle(area, &mut SyscallRng, free, &make));
        reply();
    }
}

/// Formats into a fixed buffer, dropping what does not fit.
struct Truncating {
    buf: [u8; syscall::EXIT_MESSAGE_MAX],
    len: usize,
}

impl Write for Truncating {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
        }
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let code = if OUT_OF_MEMORY.load(Ordering::Relaxed) {
        EXIT_OUT_OF_MEMORY
    } else {
        EXIT_PANIC
    };
    let mut m = Truncating {
        buf: [0; syscall::EXIT_MESSAGE_MAX],
        len: 0,
    };
    let _ = write!(m, "{}", info.message());
    if let Some(l) = info.location() {
        let _ = write!(m, " at {}:{}", l.file(), l.line());
    }
    let len = with_message(|area| {
        let n = m.len.min(area.len());
        if let (Some(dst), Some(src)) = (area.get_mut(..n), m.buf.get(..n)) {
            dst.copy_from_slice(src);
        }
        n
    });
    exit(code, len)
}
