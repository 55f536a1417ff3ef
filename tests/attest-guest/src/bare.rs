//! The attest guest on bare metal (see the crate docs).

use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::panic::PanicInfo;

/// COM1 data port (the console).
const COM1: u16 = 0x3F8;
/// COM2 data port and line-status register: the verifier's channel.
const COM2: u16 = 0x2F8;
const COM2_LSR: u16 = 0x2FD;
/// QEMU `isa-debug-exit`.
const DEBUG_EXIT: u16 = 0xF4;
/// The paravisor's attestation calls (paravisor::measure).
const ATTEST_REPORT_ID: u64 = 0x5444_0001;
const EVENT_LOG_ID: u64 = 0x5444_0002;
/// Report + u32 length before the log.
const TDREPORT_BYTES: usize = 1024;
const HEADER_BYTES: usize = TDREPORT_BYTES + 4;
/// Output buffer size.
const OUT_BYTES: usize = 0x4000;
/// Line-status polls per received byte before giving up (~seconds under TCG).
const POLLS_PER_BYTE: u32 = 100_000;

core::arch::global_asm!(
    r#"
    .section .text.entry, "ax", @progbits
    .globl attest_start
attest_start:
    cli
    andq $-16, %rsp
    xorl %ebp, %ebp
    call attest_main
.Lattest_hang:
    cli
    hlt
    jmp .Lattest_hang
"#,
    options(att_syntax)
);

/// Buffers the paravisor reads (nonce) and writes (report, log), by GPA
/// (identity mapped: GPA = address).
#[repr(C, align(4096))]
struct Buffers {
    out: UnsafeCell<[u8; OUT_BYTES]>,
    log: UnsafeCell<[u8; OUT_BYTES]>,
    nonce: UnsafeCell<[u8; 64]>,
}

// SAFETY: one vCPU, no interrupts; the buffers are only touched by this
// program between VMCALLs and by L1 during them.
unsafe impl Sync for Buffers {}

static BUFFERS: Buffers = Buffers {
    out: UnsafeCell::new([0; OUT_BYTES]),
    log: UnsafeCell::new([0; OUT_BYTES]),
    nonce: UnsafeCell::new([0; 64]),
};

fn outb(port: u16, value: u8) {
    // SAFETY: port I/O exits to L1, which forwards it to the host; no memory is touched.
    unsafe { core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nostack)) }
}

fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: as for `outb`.
    unsafe { core::arch::asm!("in al, dx", in("dx") port, out("al") v, options(nostack)) }
    v
}

/// VMCALL with RDI = id, RSI/RDX/R8 = a1..a3; returns R8.
fn vmcall(id: u64, a1: u64, a2: u64, a3: u64) -> u64 {
    let r8: u64;
    // SAFETY: VMCALL exits to L1, which may write the buffers the arguments
    // name (they belong to this program and are not referenced while the
    // call runs), writes R8 and advances RIP.
    unsafe {
        core::arch::asm!(
            "vmcall",
            in("rdi") id,
            in("rsi") a1,
            inout("rdx") a2 => _,
            inout("r8") a3 => r8,
            options(nostack),
        );
    }
    r8
}

struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(|b| outb(COM1, b));
        Ok(())
    }
}

macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(Console, "attest: {}", format_args!($($arg)*));
    }};
}

fn check(failed: &mut u8, name: &str, ok: bool, detail: fmt::Arguments<'_>) {
    if ok {
        say!("check {name}: PASS {detail}");
    } else {
        *failed += 1;
        say!("check {name}: FAIL {detail}");
    }
}

fn finish(failed: u8) -> ! {
    say!("done, {failed} failed");
    outb(DEBUG_EXIT, failed);
    loop {
        // SAFETY: HLT exits to L1; nothing to resume.
        unsafe { core::arch::asm!("hlt", options(nomem, nostack)) }
    }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    say!("check no_panic: FAIL {info}");
    finish(1)
}

/// One byte from COM2, or `None` after [`POLLS_PER_BYTE`] empty polls.
fn read_serial() -> Option<u8> {
    for _ in 0..POLLS_PER_BYTE {
        if inb(COM2_LSR) & 1 != 0 {
            return Some(inb(COM2));
        }
    }
    None
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The verifier's nonce: 128 hex digits (other bytes before them skipped).
fn read_nonce() -> Result<[u8; 64], &'static str> {
    let mut nonce = [0u8; 64];
    let mut digits = 0;
    while digits < 128 {
        let c = read_serial().ok_or("no nonce on the serial console")?;
        match hex_digit(c) {
            Some(d) => {
                nonce[digits / 2] |= d << (4 * (1 - digits % 2));
                digits += 1;
            }
            None if digits == 0 => {}
            None => return Err("the nonce is not 128 hex digits"),
        }
    }
    Ok(nonce)
}

fn print_hex(label: &str, bytes: &[u8]) {
    let _ = write!(Console, "attest: {label} ");
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        outb(COM1, HEX[(b >> 4) as usize]);
        outb(COM1, HEX[(b & 15) as usize]);
    }
    outb(COM1, b'\n');
}

/// Called by `attest_start`.
#[no_mangle]
extern "C" fn attest_main() -> ! {
    let mut failed = 0u8;
    say!("hello from L2: waiting for the verifier's nonce on COM2");
    let nonce = match read_nonce() {
        Ok(n) => n,
        Err(why) => {
            check(&mut failed, "nonce_received", false, format_args!("{why}"));
            finish(failed)
        }
    };
    check(
        &mut failed,
        "nonce_received",
        true,
        format_args!(
            "{:02x}{:02x}{:02x}{:02x}…",
            nonce[0], nonce[1], nonce[2], nonce[3]
        ),
    );
    let nonce_gpa = BUFFERS.nonce.get() as u64;
    let out_gpa = BUFFERS.out.get() as u64;
    let log_gpa = BUFFERS.log.get() as u64;
    // SAFETY: no VMCALL is running; nothing else references the buffer.
    unsafe { *BUFFERS.nonce.get() = nonce };

    let n = vmcall(ATTEST_REPORT_ID, nonce_gpa, out_gpa, OUT_BYTES as u64);
    let ok = (n as i64) >= HEADER_BYTES as i64 && n as usize <= OUT_BYTES;
    check(
        &mut failed,
        "attest_report_call",
        ok,
        format_args!("R8 {}", n as i64),
    );
    if !ok {
        finish(failed)
    }
    // SAFETY: the call has returned; L1 no longer writes the buffer.
    let out: &[u8; OUT_BYTES] = unsafe { &*BUFFERS.out.get() };
    let log_len = u32::from_le_bytes([out[1024], out[1025], out[1026], out[1027]]) as usize;
    let report = &out[..TDREPORT_BYTES];
    let log = &out[HEADER_BYTES..HEADER_BYTES + log_len.min(OUT_BYTES - HEADER_BYTES)];
    check(
        &mut failed,
        "report_carries_nonce",
        report[128..192] == nonce,
        format_args!("REPORTDATA = nonce, report type {:#x}", report[0]),
    );

    let m = vmcall(EVENT_LOG_ID, log_gpa, OUT_BYTES as u64, 0);
    // SAFETY: as above.
    let log2: &[u8; OUT_BYTES] = unsafe { &*BUFFERS.log.get() };
    check(
        &mut failed,
        "event_log_call",
        m as usize == log_len && log2[..log_len] == *log,
        format_args!("{} bytes, same as with the report", m as i64),
    );
    print_hex("report", report);
    print_hex("log", log);
    // An id nobody serves still answers -ENOSYS.
    let r = vmcall(0x5444_00FF, 0, 0, 0);
    check(
        &mut failed,
        "unknown_id_enosys",
        r as i64 == -38,
        format_args!("R8 {}", r as i64),
    );
    finish(failed)
}
