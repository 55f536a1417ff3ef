//! `tee-guest`: a 64-bit L2 guest that exercises the paravisor's TEE through
//! the GlobalPlatform-shaped client of `lvbs_tee` over VMCALL 0x1FFF0
//! (docs/tee.md). It prints `tee: check <name>: PASS|FAIL` lines through
//! port 0x3F8 and ends by writing its failure count to port 0xF4, like the
//! probe. On any other target than `x86_64-unknown-none` it is a stub that
//! says so and exits with status 2.
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
        "tee-guest: this program runs on bare metal, as L2 under the lvbs-tdx paravisor \
         (build it with `--target x86_64-unknown-none` and run it with `cargo xtask tee`)"
    );
    std::process::ExitCode::from(2)
}
