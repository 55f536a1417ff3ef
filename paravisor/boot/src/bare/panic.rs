//! Panics: print the full message, then ReportFatalError with its first 64 bytes.

use core::fmt::Write;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use super::console::{self, MessageBuf, RawConsole};

/// Set by the first panic, so a panic while reporting one goes straight to
/// ReportFatalError. In `.data`: a panic may come before `.bss` is accepted.
#[link_section = ".data.pv_panicking"]
static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    if PANICKING.swap(true, Ordering::Relaxed) {
        console::fatal(console::FATAL_PANIC, b"panic while panicking");
    }
    let _ = writeln!(RawConsole, "paravisor: PANIC: {info}");
    let mut msg = MessageBuf::new();
    let _ = write!(msg, "{}", info.message());
    console::fatal(console::FATAL_PANIC, msg.as_bytes())
}
