//! `/dev/lvbs_tee`: the window, the transport, and the run.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};

use lvbs_tee::client::{Context, Transport};
use lvbs_tee::msg::OPTEE_MESSAGE_FUNC_ID;
use lvbs_tee::{GuestMemory, MemError};
use lvbs_tee_scenarios::{Hex, Layout, Sink, E};

/// The device the module registers.
const DEVICE: &str = "/dev/lvbs_tee";
/// `_IOR('L', 1, struct lvbs_tee_info)` (16 bytes): the window's GPA and size.
const IOC_INFO: libc::c_ulong = (2 << 30) | (16 << 16) | ((b'L' as libc::c_ulong) << 8) | 1;
/// `_IOWR('L', 2, struct lvbs_tee_call)` (16 bytes): one OP-TEE call.
const IOC_CALL: libc::c_ulong = (3 << 30) | (16 << 16) | ((b'L' as libc::c_ulong) << 8) | 2;
/// `_IOWR('L', 3, struct lvbs_attest)` (32 bytes): TDREPORT and event log.
const IOC_ATTEST: libc::c_ulong = (3 << 30) | (32 << 16) | ((b'L' as libc::c_ulong) << 8) | 3;
/// The TDREPORT's size (TDX 1.5 TDREPORT_STRUCT).
const TDREPORT_BYTES: usize = 1024;
/// The scratch area at the window's start (SMC page, message, bounce buffers).
const SCRATCH_LEN: u64 = 16 * 4096;
/// 4 KiB.
const PAGE: u64 = 4096;

#[repr(C)]
#[derive(Default)]
struct Info {
    window_gpa: u64,
    window_size: u64,
}

#[repr(C)]
struct Attest {
    reportdata_offset: u64,
    out_offset: u64,
    out_size: u64,
    ret: i64,
}

#[repr(C)]
struct Call {
    smc_page_offset: u64,
    ret: i64,
}

/// The device's window, mapped into this process.
pub struct Window {
    file: File,
    base: *mut u8,
    gpa: u64,
    size: u64,
}

impl Window {
    fn open() -> Result<Window, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(DEVICE)
            .map_err(|e| format!("{DEVICE}: {e} (is lvbs_heki.ko loaded?)"))?;
        let mut info = Info::default();
        // SAFETY: IOC_INFO writes one `struct lvbs_tee_info` (16 bytes, the
        // layout of `Info`) to the pointer.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), IOC_INFO, &mut info as *mut Info) };
        if r != 0 {
            return Err(format!(
                "LVBS_TEE_IOC_INFO: {}",
                std::io::Error::last_os_error()
            ));
        }
        if info.window_size < SCRATCH_LEN + 17 * PAGE || info.window_gpa % PAGE != 0 {
            return Err(format!(
                "window {:#x}+{:#x} too small or misaligned",
                info.window_gpa, info.window_size
            ));
        }
        // SAFETY: maps the device's window (the module's `mmap` handler
        // remaps its pages); the mapping lives as long as `Window`, which
        // unmaps it in `drop`.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                info.window_size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!(
                "mmap {DEVICE}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(Window {
            file,
            base: base.cast(),
            gpa: info.window_gpa,
            size: info.window_size,
        })
    }

    /// The window offset of `[gpa, gpa + len)`, if it lies inside.
    fn offset(&self, gpa: u64, len: usize) -> Result<usize, MemError> {
        let err = MemError {
            gpa,
            len: len as u64,
        };
        let off = gpa.checked_sub(self.gpa).ok_or(err)?;
        let end = off.checked_add(len as u64).ok_or(err)?;
        if end > self.size {
            return Err(err);
        }
        Ok(off as usize)
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: `base`/`size` are the mapping `open` made; nothing uses it after.
        unsafe { libc::munmap(self.base.cast(), self.size as usize) };
    }
}

impl GuestMemory for Window {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let off = self.offset(gpa, buf.len())?;
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: `offset` kept the access inside the mapping; volatile,
            // since the paravisor writes the window during a call.
            *b = unsafe { self.base.add(off + i).read_volatile() };
        }
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        let off = self.offset(gpa, data.len())?;
        for (i, b) in data.iter().enumerate() {
            // SAFETY: as in `read`.
            unsafe { self.base.add(off + i).write_volatile(*b) };
        }
        Ok(())
    }

    fn check(&self, gpa: u64, len: u64) -> Result<(), MemError> {
        self.offset(gpa, len as usize).map(|_| ())
    }
}

/// OP-TEE calls through the device.
pub struct Device {
    window: Window,
    /// Calls issued.
    pub calls: u64,
}

impl Transport for Device {
    fn memory(&mut self) -> &mut dyn GuestMemory {
        &mut self.window
    }

    fn vtl_call(&mut self, a0: u64, a1: u64, _a2: u64, _a3: u64) -> i64 {
        const EINVAL: i64 = -22;
        if a0 != OPTEE_MESSAGE_FUNC_ID {
            return EINVAL;
        }
        let Some(offset) = a1
            .checked_mul(PAGE)
            .and_then(|gpa| gpa.checked_sub(self.window.gpa))
        else {
            return EINVAL;
        };
        self.calls += 1;
        let mut call = Call {
            smc_page_offset: offset,
            ret: 0,
        };
        // SAFETY: IOC_CALL reads and writes one `struct lvbs_tee_call` (16
        // bytes, the layout of `Call`) at the pointer.
        let r = unsafe {
            libc::ioctl(
                self.window.file.as_raw_fd(),
                IOC_CALL,
                &mut call as *mut Call,
            )
        };
        if r != 0 {
            return -(std::io::Error::last_os_error().raw_os_error().unwrap_or(5) as i64);
        }
        call.ret
    }
}

static PASSED: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);

fn check(name: &str, ok: bool, detail: fmt::Arguments<'_>) -> bool {
    let counter = if ok { &PASSED } else { &FAILED };
    counter.fetch_add(1, Ordering::SeqCst);
    println!(
        "tee: check {name}: {} {detail}",
        if ok { "PASS" } else { "FAIL" }
    );
    ok
}

static SINK: Sink = Sink {
    check,
    say: |a| println!("tee: {a}"),
};

/// Runs every TA block; the exit status says whether all passed.
pub fn run() -> ExitCode {
    lvbs_tee_scenarios::set_sink(&SINK);
    let window = match Window::open() {
        Ok(w) => w,
        Err(e) => {
            println!("tee: check linux_device: FAIL {e}");
            println!("tee: done, 0 passed, 1 failed");
            return ExitCode::FAILURE;
        }
    };
    let layout = Layout {
        base: window.gpa,
        scratch: window.gpa,
        shared: window.gpa + SCRATCH_LEN,
    };
    println!(
        "tee: Linux client over {DEVICE}: window GPA {:#x}, {} KiB",
        window.gpa,
        window.size >> 10
    );
    let transport = Device { window, calls: 0 };
    let mut ctx = match Context::initialize(transport, layout.scratch, SCRATCH_LEN) {
        Ok(ctx) => {
            check(
                "linux_initialize",
                true,
                format_args!("capabilities {:#x}", ctx.capabilities()),
            );
            ctx
        }
        Err(e) => {
            check("linux_initialize", false, format_args!("{}", E(e)));
            println!(
                "tee: done, {} passed, 1 failed",
                PASSED.load(Ordering::SeqCst)
            );
            return ExitCode::FAILURE;
        }
    };
    lvbs_tee_scenarios::all_tas(&mut ctx, &layout);
    let (passed, failed) = (PASSED.load(Ordering::SeqCst), FAILED.load(Ordering::SeqCst));
    println!(
        "tee: {} OP-TEE calls through {DEVICE}",
        ctx.transport_mut().calls
    );
    println!("tee: done, {passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `attest <nonce>`: prints the evidence lines, or why there are none.
pub fn attest(nonce_hex: &str) -> ExitCode {
    let fail = |why: String| {
        println!("attest: FAILED {why}");
        ExitCode::FAILURE
    };
    let Some(nonce) = unhex(nonce_hex.trim()).filter(|n| n.len() == 64) else {
        return fail("the nonce must be 64 bytes (128 hex digits)".into());
    };
    let mut window = match Window::open() {
        Ok(w) => w,
        Err(e) => return fail(e),
    };
    let (nonce_gpa, out_gpa) = (window.gpa, window.gpa + PAGE);
    let out_size = window.size - PAGE;
    if let Err(e) = window.write(nonce_gpa, &nonce) {
        return fail(format!("{e:?}"));
    }
    let mut a = Attest {
        reportdata_offset: 0,
        out_offset: PAGE,
        out_size,
        ret: 0,
    };
    // SAFETY: IOC_ATTEST reads and writes one `struct lvbs_attest` (32 bytes,
    // the layout of `Attest`) at the pointer.
    let r = unsafe { libc::ioctl(window.file.as_raw_fd(), IOC_ATTEST, &mut a as *mut Attest) };
    if r != 0 {
        return fail(format!(
            "LVBS_TEE_IOC_ATTEST: {}",
            std::io::Error::last_os_error()
        ));
    }
    if a.ret < (TDREPORT_BYTES + 4) as i64 {
        return fail(format!("the paravisor answered {}", a.ret));
    }
    let mut out = vec![0u8; a.ret as usize];
    if let Err(e) = window.read(out_gpa, &mut out) {
        return fail(format!("{e:?}"));
    }
    let len = u32::from_le_bytes([
        out[TDREPORT_BYTES],
        out[TDREPORT_BYTES + 1],
        out[TDREPORT_BYTES + 2],
        out[TDREPORT_BYTES + 3],
    ]) as usize;
    let Some(log) = out.get(TDREPORT_BYTES + 4..TDREPORT_BYTES + 4 + len) else {
        return fail(format!(
            "log length {len} beyond the {} bytes written",
            a.ret
        ));
    };
    println!("attest: report {}", Hex(&out[..TDREPORT_BYTES]));
    println!("attest: log {}", Hex(log));
    ExitCode::SUCCESS
}
