//! `ta-runtime`: the trusted applications of `lvbs-tee` as an L1 ring-3
//! program for `x86_64-unknown-none` (docs/tee.md, "Isolation of the trusted
//! applications"). The paravisor embeds this ELF and starts one *instance*
//! of it per TA, each in its own address space with its own data, heap,
//! stack and message area; an instance serves the one TA named in its first
//! request ([`lvbs_tee::sandbox::Instance`]). On any other target it is a
//! stub that says so and exits with status 2.
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
        "ta-runtime: this program runs in L1 ring 3 under the lvbs-tdx paravisor, \
         which embeds it (build paravisor-boot with `--target x86_64-unknown-none`)"
    );
    std::process::ExitCode::from(2)
}
