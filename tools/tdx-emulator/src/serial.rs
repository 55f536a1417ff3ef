//! COM1 console for the emulator's own log (prefix `emu:`) and for the bytes
//! guests write to COM1 through TDG.VP.VMCALL.

use crate::arch::{port_in, port_out};
use core::fmt;

const COM1: u16 = 0x3F8;

/// Programs COM1 for 115200 8N1 (QEMU ignores the rate; the FIFO matters).
pub fn init() {
    port_out(COM1 + 1, 1, 0x00);
    port_out(COM1 + 3, 1, 0x80);
    port_out(COM1, 1, 0x01);
    port_out(COM1 + 1, 1, 0x00);
    port_out(COM1 + 3, 1, 0x03);
    port_out(COM1 + 2, 1, 0xC7);
    port_out(COM1 + 4, 1, 0x03);
}

/// Writes one byte, waiting for the transmitter.
pub fn put(b: u8) {
    for _ in 0..100_000 {
        if port_in(COM1 + 5, 1) & 0x20 != 0 {
            break;
        }
    }
    port_out(COM1, 1, b as u32);
}

/// `core::fmt` sink for COM1.
pub struct Com1;

impl fmt::Write for Com1 {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                put(b'\r');
            }
            put(b);
        }
        Ok(())
    }
}

/// Prints a line prefixed `emu: `.
#[macro_export]
macro_rules! emu_println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = write!($crate::serial::Com1, "emu: ");
        let _ = writeln!($crate::serial::Com1, $($arg)*);
    }};
}

/// A `log` backend that prints through COM1 with the `emu:` prefix.
pub struct Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            emu_println!("[{}] {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}
