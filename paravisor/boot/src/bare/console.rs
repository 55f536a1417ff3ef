//! Console and fatal errors, both through TDG.VP.VMCALL (GHCI §1.5): L1 never
//! executes `out` itself, which in a TD would be a #VE.
//!
//! * [`RawConsole`] writes bytes to COM1 with Instruction.IO, one call per byte,
//!   touching no statics (the exception and panic paths use it directly).
//! * The `log` backend prefixes every line with `paravisor:` and serialises
//!   lines with a spin lock.
//! * [`fatal`] sends ReportFatalError with a 64-byte message and stops.

use core::fmt::{self, Write as _};

use log::{Level, LevelFilter, Log, Metadata, Record};
use tdcall::hw::HwTdcall;
use tdcall::leaves::VpVmcall;
use tdcall::vmcall::{AccessSize, TdVmcall};

/// COM1 data port.
pub const COM1: u16 = 0x3F8;
/// ReportFatalError code: a Rust panic.
pub const FATAL_PANIC: u32 = 0x1;
/// ReportFatalError code: a CPU exception in L1.
pub const FATAL_EXCEPTION: u32 = 0x2;
/// ReportFatalError code: boot failed.
pub const FATAL_BOOT: u32 = 0x3;

/// One byte to COM1.
pub fn put_byte(b: u8) {
    let _ = tdcall::call(
        &mut HwTdcall,
        &VpVmcall(TdVmcall::IoWrite {
            size: AccessSize::B1,
            port: COM1,
            value: b as u32,
        }),
    );
}

/// Unlocked console writer.
pub struct RawConsole;

impl fmt::Write for RawConsole {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(put_byte);
        Ok(())
    }
}

/// A 64-byte message for ReportFatalError; longer text is cut.
pub struct MessageBuf {
    bytes: [u8; 64],
    len: usize,
}

impl MessageBuf {
    /// Empty.
    pub const fn new() -> Self {
        MessageBuf {
            bytes: [0; 64],
            len: 0,
        }
    }

    /// The text written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl fmt::Write for MessageBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Spins forever (HLT is not for L1 in a TD).
pub fn park() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// TDG.VP.VMCALL ReportFatalError with `code` and the first 64 bytes of
/// `message`, then parks (the host ends the TD; the emulator exits with 0x7F).
pub fn fatal(code: u32, message: &[u8]) -> ! {
    let mut m = [0u8; 64];
    let n = message.len().min(64);
    m[..n].copy_from_slice(&message[..n]);
    let _ = tdcall::call(
        &mut HwTdcall,
        &VpVmcall(TdVmcall::ReportFatalError {
            code,
            extended: 0,
            data_gpa: None,
            message: m,
        }),
    );
    park()
}

struct Logger {
    lock: spin::Mutex<()>,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let _line = self.lock.lock();
        let mut c = RawConsole;
        let _ = match record.level() {
            Level::Info => writeln!(c, "paravisor: {}", record.args()),
            level => writeln!(c, "paravisor: {level}: {}", record.args()),
        };
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger {
    lock: spin::Mutex::new(()),
};

/// Installs the logger (after `.bss`, which holds its state, is accepted).
pub fn init_logger() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
}
