//! The lvbs-tdx host loader and verifier (issue 8, `docs/attestation.md`).
//!
//! * [`build`] writes a TDX IGVM file with the `igvm` crate: the BootInfo
//!   parameter area (with the host's vCPU count inserted), the paravisor
//!   pages (measured), the L2 kernel, command line and initrd pages (added
//!   unmeasured: the paravisor measures them into RTMR1), and the TDX reset
//!   page that jumps to the paravisor's 32-bit entry (measured).
//! * [`measure()`] reads an IGVM file with the `igvm` crate's parser and
//!   computes MRTD in file order (tdx-abi.md §5.4) and the RTMR values the
//!   paravisor's boot events must produce (§5.5, `paravisor::measure`).
//! * [`verify`] checks a TDREPORT and event log against those values: the
//!   MAC (with the emulator's model key), MRTD, each RTMR by replaying the
//!   log, the boot events against the image, and the nonce in REPORTDATA.

mod build;
mod evidence;
mod measure;
mod verify;

pub use build::{build, build_with, tamper_kernel_gpa, Inputs, TDX_COMPAT_MASK};
pub use evidence::{Evidence, EVIDENCE_LOG_PREFIX, EVIDENCE_REPORT_PREFIX};
pub use measure::{measure, Measurement};
pub use verify::{verify, Check, Verdict};

use std::fmt;

/// A loader or verifier error with its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Bytes of a hex string (whitespace ignored).
pub fn unhex(s: &str) -> Result<Vec<u8>, Error> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !s.len().is_multiple_of(2) {
        return Err(Error(format!("odd-length hex string ({} digits)", s.len())));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16)
                .map_err(|_| Error(format!("bad hex digits {:?}", &s[i..i + 2])))
        })
        .collect()
}

/// The MAC key of the emulator's TDX-module model (stands in for the CPU's key).
pub fn model_report_key() -> [u8; 32] {
    tdx_model::TdConfig::new(0).report_key
}
