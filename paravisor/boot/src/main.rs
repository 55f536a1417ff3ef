//! `paravisor`: the lvbs-tdx L1 VMM as a bare-metal binary for
//! `x86_64-unknown-none` (docs/emulator-contract.md). On any other target it is
//! a stub that says so and exits with status 2.
#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod bare;

#[cfg(not(target_os = "none"))]
fn main() -> std::process::ExitCode {
    eprintln!(
        "paravisor: this program runs on bare metal (build it with \
         `--target x86_64-unknown-none` and boot it with `cargo xtask run`)"
    );
    std::process::ExitCode::from(2)
}
