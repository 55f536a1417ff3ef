//! `probe`: a tiny 64-bit L2 test guest for the lvbs-tdx paravisor
//! (docs/emulator-contract.md). It prints `probe: check <name>: PASS|FAIL`
//! lines through port 0x3F8 and ends by writing its failure count to port
//! 0xF4. On any other target than `x86_64-unknown-none` it is a stub that says
//! so and exits with status 2.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(target_os = "none")]
mod bare;

#[cfg(not(target_os = "none"))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "probe: this program runs on bare metal, as L2 under the lvbs-tdx paravisor \
         (build it with `--target x86_64-unknown-none` and run it with `cargo xtask run`)"
    );
    std::process::ExitCode::from(2)
}
