//! The console: COM1, one `OUT` per byte (each one an L2 I/O exit the
//! paravisor forwards to the host), with a per-guest line prefix.

use core::fmt::{self, Write};

use spin::Mutex;

use crate::{cpu, COM1};

static PREFIX: Mutex<&'static str> = Mutex::new("guest");

/// Sets the prefix of every line ([`crate::say!`], check lines).
pub fn set_prefix(prefix: &'static str) {
    *PREFIX.lock() = prefix;
}

/// The line prefix.
pub fn prefix() -> &'static str {
    *PREFIX.lock()
}

/// The raw console.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(|b| cpu::outb(COM1, b));
        Ok(())
    }
}

/// Prints `<prefix>: <args>\n`.
pub fn line(args: fmt::Arguments<'_>) {
    let _ = writeln!(Console, "{}: {args}", prefix());
}
