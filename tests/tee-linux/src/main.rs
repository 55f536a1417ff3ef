//! `lvbs-tee-client`: the TEE client scenarios from Linux user space
//! (docs/tee.md, "Linux client").
//!
//! It opens `/dev/lvbs_tee` (created by the guest HEKI client module
//! `tests/linux-guest/lvbs_heki.ko`), maps the device's physically contiguous
//! window, asks for its guest-physical base, and runs every trusted
//! application's block of checks ([`lvbs_tee_scenarios::all_tas`]) with the
//! GlobalPlatform-shaped client over it: the client lays out the
//! SMC-argument page, the `optee_msg_arg` and its buffers in the window with
//! guest-physical addresses, and each OP-TEE call is one `ioctl` that makes
//! the module issue VMCALL `0x1FFF0` with the page's PFN.
//!
//! Output: `tee: check <name>: PASS|FAIL <detail>` per check and
//! `tee: done, N passed, M failed`; the exit status is 0 only with no
//! failure.
//!
//! `lvbs-tee-client attest <128 hex digits>` instead asks the paravisor for
//! a TDREPORT over that nonce and the event log (through the same device)
//! and prints them as the attestation evidence lines `attest: report <hex>`
//! and `attest: log <hex>` (docs/attestation.md), for a verifier to check.

#[cfg(target_os = "linux")]
mod device;

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("attest") => device::attest(args.get(2).map(String::as_str).unwrap_or("")),
        _ => device::run(),
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("lvbs-tee-client runs inside a Linux L2 guest only");
    std::process::exit(2);
}
