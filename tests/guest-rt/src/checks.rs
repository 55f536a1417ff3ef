//! Check lines and the end of the run: `<prefix>: check <name>: PASS|FAIL
//! <detail>` (what `cargo xtask run` counts), then `<prefix>: done, N
//! passed, M failed` and M (at most [`MAX_EXIT_VALUE`]) to the debug-exit port.

use core::fmt;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::{cpu, say, DEBUG_EXIT_PORT, MAX_EXIT_VALUE};

static PASSED: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);

/// Prints one check line and counts it; returns `ok`.
pub fn check(name: &str, ok: bool, detail: fmt::Arguments<'_>) -> bool {
    if ok {
        PASSED.fetch_add(1, Ordering::SeqCst);
        say!("check {name}: PASS {detail}");
    } else {
        FAILED.fetch_add(1, Ordering::SeqCst);
        say!("check {name}: FAIL {detail}");
    }
    ok
}

/// Checks so far: (passed, failed).
pub fn counts() -> (u32, u32) {
    (PASSED.load(Ordering::SeqCst), FAILED.load(Ordering::SeqCst))
}

/// Prints the summary and ends the run with the failure count plus `extra`
/// (e.g. allowed attacks) as the debug-exit value.
pub fn finish(extra: u32) -> ! {
    let (passed, failed) = counts();
    say!("done, {passed} passed, {failed} failed");
    let value = failed.saturating_add(extra).min(MAX_EXIT_VALUE);
    cpu::outb(DEBUG_EXIT_PORT, value as u8);
    cpu::halt()
}
