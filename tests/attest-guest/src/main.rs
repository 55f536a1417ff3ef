//! `attest-guest`: a tiny 64-bit L2 guest for `cargo xtask attest`
//! (docs/attestation.md). It
//!
//! 1. reads the verifier's nonce — 128 hex digits and a newline — from the
//!    second serial port (COM2, a host pipe: an untrusted channel, as a real
//!    verifier's challenge arriving over the network would be);
//! 2. asks the paravisor for a TDREPORT with the nonce as REPORTDATA through
//!    VMCALL `0x5444_0001` (RSI = nonce GPA, RDX = output GPA, R8 = output
//!    size), which writes the report, a u32 log length and the CCEL event log
//!    into its buffer;
//! 3. reads the event log alone through VMCALL `0x5444_0002` and checks it is
//!    the same;
//! 4. prints `attest: report <hex>` and `attest: log <hex>` and ends the run
//!    with its failure count on port 0xF4.
//!
//! On any other target than `x86_64-unknown-none` it is a stub that says so
//! and exits with status 2.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(target_os = "none")]
mod bare;

#[cfg(not(target_os = "none"))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "attest-guest: this program runs on bare metal, as L2 under the lvbs-tdx paravisor \
         (run it with `cargo xtask attest`)"
    );
    std::process::ExitCode::from(2)
}
