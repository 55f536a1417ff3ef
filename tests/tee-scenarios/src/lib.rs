//! The TEE client scenarios: one block of checks per trusted application,
//! each with its negative tests ([`tas`]), over any [`Transport`] — the
//! bare-metal `tests/tee-guest` (identity-mapped L2 memory, VMCALL) and the
//! Linux user-space client `tests/tee-linux` (`/dev/lvbs_tee`).
//!
//! Results go to the [`Sink`] the runner installs once ([`set_sink`]).

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod tas;

use core::fmt;

use lvbs_tee::client::{ClientError, ClientParam as P, Context, Operation, Session, Transport};
use lvbs_tee::{Origin, TeeError, Uuid};

/// Where checks and messages go.
pub struct Sink {
    /// Records one check (prints `check <name>: PASS|FAIL <detail>`); returns `ok`.
    pub check: fn(&str, bool, fmt::Arguments<'_>) -> bool,
    /// Prints one line.
    pub say: fn(fmt::Arguments<'_>),
}

static SINK: spin::Once<&'static Sink> = spin::Once::new();

/// Installs the sink, once, before any scenario runs.
pub fn set_sink(sink: &'static Sink) {
    SINK.call_once(|| sink);
}

/// Records a check (a no-op returning `ok` without a sink).
pub fn check(name: &str, ok: bool, detail: fmt::Arguments<'_>) -> bool {
    match SINK.get() {
        Some(s) => (s.check)(name, ok, detail),
        None => ok,
    }
}

/// Prints a line through the sink.
pub fn say(args: fmt::Arguments<'_>) {
    if let Some(s) = SINK.get() {
        (s.say)(args)
    }
}

/// `say!("...", args)`: a line through the sink.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say(format_args!($($arg)*))
    };
}

/// The client's memory: its scratch area (SMC page, message, bounce
/// buffers) and the buffers it registers as shared memory.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Start of the memory the client owns (the L2 region, or the window).
    pub base: u64,
    /// Scratch area.
    pub scratch: u64,
    /// Shared buffers (at least 64 KiB + 1 page for the oversize checks).
    pub shared: u64,
}

/// Lowercase hex of bytes.
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// An error as `CODE/ORIGIN`.
pub struct E(pub ClientError);

impl fmt::Display for E {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}/{:?}", self.0.code, self.0.origin)
    }
}

impl fmt::Debug for E {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `TEEC_InvokeCommand` with four parameters; the operation after success.
pub fn invoke<T: Transport>(
    ctx: &mut Context<T>,
    s: &Session,
    command: u32,
    params: [P; 4],
) -> Result<Operation, ClientError> {
    let mut o = Operation::new(params);
    ctx.invoke_command(s, command, &mut o).map(|()| o)
}

/// A check that `r` failed with `code` from `origin`.
pub fn check_err<T>(name: &str, r: Result<T, ClientError>, code: TeeError, origin: Origin) {
    match r {
        Err(e) => check(
            name,
            e.code == code && e.origin == origin,
            format_args!("{} (expected {code:?}/{origin:?})", E(e)),
        ),
        Ok(_) => check(
            name,
            false,
            format_args!("succeeded, expected {code:?}/{origin:?}"),
        ),
    };
}

/// A check that `r` succeeded; returns the value.
pub fn check_ok<T>(name: &str, r: Result<T, ClientError>, detail: &str) -> Option<T> {
    match r {
        Ok(v) => {
            check(name, true, format_args!("{detail}"));
            Some(v)
        }
        Err(e) => {
            check(name, false, format_args!("{}", E(e)));
            None
        }
    }
}

/// Opens a session with public login.
pub fn open<T: Transport>(ctx: &mut Context<T>, name: &str, ta: &Uuid) -> Option<Session> {
    check_ok(
        name,
        ctx.open_session(ta, &mut Operation::default()),
        "session opened",
    )
}

/// `P::None`.
pub fn none() -> P {
    P::None
}

/// Every TA block, in order: secure log, key manager, credential manager,
/// virtual HSM.
pub fn all_tas<T: Transport>(ctx: &mut Context<T>, layout: &Layout) {
    tas::secure_log(ctx, layout);
    tas::key_manager(ctx, layout);
    tas::credential_manager(ctx);
    tas::virtual_hsm(ctx);
}
