//! `cargo xtask tee`: the TEE client scenarios in the emulator.
//!
//! 1. Builds `lvbs-tee-guest` and the paravisor's isolation test image
//!    (`paravisor-boot` with feature `test-ta`: a fifth, attacking TA
//!    instance; never a production image) for the bare-metal target and
//!    boots them (`xtask run --guest --paravisor`): every TA, the negative
//!    tests, the isolation checks and the round-trip benchmark. The guest
//!    prints the key it sealed (`tee: sealed-key <hex>`).
//! 2. Patches that blob into a copy of the guest ELF (the slot after
//!    [`SEALED_IN_MAGIC`]) and boots again. The copy is a different L2
//!    image, so RTMR1 (where the paravisor measures the L2 kernel) and with
//!    it the TEE's sealing measurement differ, and the guest checks that the
//!    blob does *not* unseal there while its own sealed keys still do.
//!
//! Counts the `tee: check …` lines of both runs, prints the benchmark
//! (`emu: mark: …` lines, per round trip) and `tee: N passed, M failed`,
//! and fails on any failed check, on a failed run, on fewer than
//! [`MIN_CHECKS`] checks or fewer than [`MIN_ISOLATION_CHECKS`] passed
//! isolation (`iso_…`) checks, when the second run's sealing measurement (the
//! paravisor's `TEE: … sealing measurement <hex>` line) equals the first's or
//! when the cross-measurement check did not pass.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run::{self, check_verdict, Report, RunArgs};
use crate::{cargo_bin, workspace_root, Failure, BARE_METAL_TARGET};

/// The guest package and binary.
const PACKAGE: &str = "lvbs-tee-guest";
const BINARY: &str = "tee-guest";
/// Marks the sealed-blob slot in the guest's `.data` (tests/tee-guest,
/// `transport.rs`): magic, u32 LE length, 4 bytes padding, data.
pub const SEALED_IN_MAGIC: &[u8; 24] = b"LVBS-TEE-SEALED-IN-v1\0\0\0";
/// Room for the blob in the slot.
pub const SEALED_IN_MAX: usize = 512;
/// Fewest checks the first run must report.
pub const MIN_CHECKS: u32 = 40;
/// Fewest passed isolation checks (`tee: check iso_…`) the first run must
/// report: 15 attacks plus the state checks around them.
pub const MIN_ISOLATION_CHECKS: usize = 20;
/// The paravisor package and the copy of its test image.
const PARAVISOR_PACKAGE: &str = "paravisor-boot";
const TEST_PARAVISOR: &str = "paravisor-tee-test";
/// The second run's check that the blob from the first does not unseal.
const CROSS_CHECK: &str = "km_unseal_other_measurement";

/// What one run printed.
#[derive(Debug, Default)]
struct TeeRun {
    passed: u32,
    failed: u32,
    checks: Vec<(String, bool)>,
    sealed: Option<Vec<u8>>,
    marks: Vec<String>,
    measurement: Option<String>,
}

impl TeeRun {
    fn line(&mut self, line: &str) {
        if let Some(rest) = line.strip_prefix("tee: ") {
            if let Some(v) = check_verdict(line) {
                if v {
                    self.passed += 1;
                } else {
                    self.failed += 1;
                }
                let name = rest
                    .strip_prefix("check ")
                    .and_then(|r| r.split_once(": "))
                    .map_or("", |(n, _)| n);
                self.checks.push((name.to_string(), v));
            } else if let Some(hex) = rest.strip_prefix("sealed-key ") {
                self.sealed = unhex(hex.trim());
            }
        } else if let Some(m) = line.strip_prefix("emu: mark: ") {
            self.marks.push(m.to_string());
        } else if let Some((_, m)) = line
            .strip_prefix("paravisor: TEE: ")
            .and_then(|l| l.split_once("sealing measurement "))
        {
            let hex: String = m.chars().take_while(char::is_ascii_hexdigit).collect();
            self.measurement = Some(hex);
        }
    }

    fn passed_check(&self, name: &str) -> bool {
        self.checks.iter().any(|(n, ok)| n == name && *ok)
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

/// Writes `blob` into the sealed-blob slot of the ELF `elf`.
pub fn patch_sealed_blob(elf: &[u8], blob: &[u8]) -> Result<Vec<u8>, Failure> {
    if blob.is_empty() || blob.len() > SEALED_IN_MAX {
        return Err(Failure(format!(
            "sealed blob of {} bytes does not fit the {SEALED_IN_MAX}-byte slot",
            blob.len()
        )));
    }
    let hits: Vec<usize> = elf
        .windows(SEALED_IN_MAGIC.len())
        .enumerate()
        .filter(|(_, w)| w == SEALED_IN_MAGIC)
        .map(|(i, _)| i)
        .collect();
    let [at] = hits[..] else {
        return Err(Failure(format!(
            "the guest ELF holds the sealed-blob magic {} times, expected once",
            hits.len()
        )));
    };
    let len_at = at + SEALED_IN_MAGIC.len();
    let data_at = len_at + 8;
    if data_at + SEALED_IN_MAX > elf.len() {
        return Err(Failure(
            "the sealed-blob slot runs past the ELF file".into(),
        ));
    }
    let mut out = elf.to_vec();
    out[len_at..len_at + 4].copy_from_slice(&(blob.len() as u32).to_le_bytes());
    out[data_at..data_at + blob.len()].copy_from_slice(blob);
    Ok(out)
}

fn build_guest(root: &Path) -> Result<PathBuf, Failure> {
    let args = [
        "build",
        "--release",
        "--target",
        BARE_METAL_TARGET,
        "-p",
        PACKAGE,
    ];
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(cargo_bin())
        .args(args)
        .current_dir(root)
        .status()
        .map_err(|e| Failure(format!("could not start cargo: {e}")))?;
    if !status.success() {
        return Err(Failure(format!("building {PACKAGE} exited with {status}")));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join(BARE_METAL_TARGET).join("release").join(BINARY))
}

/// Builds the paravisor's isolation test image (`--features test-ta`) and
/// copies it beside the production binary, which a later default build
/// restores.
fn build_test_paravisor(root: &Path) -> Result<PathBuf, Failure> {
    let args = [
        "build",
        "--release",
        "--target",
        BARE_METAL_TARGET,
        "-p",
        PARAVISOR_PACKAGE,
        "--features",
        "test-ta",
    ];
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(cargo_bin())
        .args(args)
        .current_dir(root)
        .status()
        .map_err(|e| Failure(format!("could not start cargo: {e}")))?;
    if !status.success() {
        return Err(Failure(format!(
            "building the paravisor test image exited with {status}"
        )));
    }
    let dir = run::target_dir(root)
        .join(BARE_METAL_TARGET)
        .join("release");
    let copy = dir.join(TEST_PARAVISOR);
    std::fs::copy(dir.join("paravisor"), &copy)
        .map_err(|e| Failure(format!("cannot copy the paravisor test image: {e}")))?;
    Ok(copy)
}

fn boot(guest: &Path, paravisor: &Path, timeout: u64, out: &mut TeeRun) -> Result<(), Failure> {
    let args = RunArgs {
        probe: true,
        guest: Some(guest.to_path_buf()),
        timeout: Some(timeout),
        paravisor: Some(paravisor.to_path_buf()),
        cmdline: None,
        initrd: None,
        linux: false,
        kernel: None,
    };
    run::run_with(&args, true, &mut Report::default(), &mut |l| out.line(l))
}

/// `cargo xtask tee`.
pub fn tee(timeout: u64) -> Result<(), Failure> {
    let root = workspace_root();
    crate::check_target_installed()?;
    run::ensure_qemu()?;
    let guest = build_guest(&root)?;
    let paravisor = build_test_paravisor(&root)?;

    eprintln!("xtask: tee run 1/2: every TA, negative tests, benchmark");
    let mut first = TeeRun::default();
    let r1 = boot(&guest, &paravisor, timeout, &mut first);

    let mut second = TeeRun::default();
    let r2 = match (&r1, &first.sealed) {
        (Ok(()), Some(blob)) => {
            let elf = std::fs::read(&guest)
                .map_err(|e| Failure(format!("cannot read {}: {e}", guest.display())))?;
            let patched = patch_sealed_blob(&elf, blob)?;
            let path = guest.with_file_name("tee-guest-other-image");
            std::fs::write(&path, patched)
                .map_err(|e| Failure(format!("cannot write {}: {e}", path.display())))?;
            eprintln!(
                "xtask: tee run 2/2: {} (the first run's sealed key patched in: another L2 image, another measurement)",
                path.display()
            );
            boot(&path, &paravisor, timeout, &mut second)
        }
        (Ok(()), None) => Err(Failure(
            "the first run printed no `tee: sealed-key` line".into(),
        )),
        (Err(_), _) => Err(Failure("skipped: the first run failed".into())),
    };

    let (passed, failed) = (first.passed + second.passed, first.failed + second.failed);
    println!("tee: benchmark (per round trip, from the emulator's statistics marks):");
    for (what, m) in [
        "echo VMCALL (L2 -> L1 -> L2)",
        "no-op INVOKE_COMMAND (L2 -> L1 -> TA -> L2)",
        "echo VMCALL, L1 instructions counted",
        "no-op INVOKE_COMMAND, L1 instructions counted",
    ]
    .iter()
    .zip(&first.marks)
    {
        println!("tee:   {what}: {m}");
    }
    println!("tee: {passed} passed, {failed} failed");

    r1?;
    r2?;
    if failed > 0 {
        return Err(Failure(format!("{failed} TEE check(s) failed")));
    }
    if first.passed < MIN_CHECKS {
        return Err(Failure(format!(
            "only {} TEE checks in the first run, at least {MIN_CHECKS} expected",
            first.passed
        )));
    }
    let isolation = first
        .checks
        .iter()
        .filter(|(n, ok)| *ok && n.starts_with("iso_"))
        .count();
    if isolation < MIN_ISOLATION_CHECKS {
        return Err(Failure(format!(
            "only {isolation} isolation checks passed in the first run, at least {MIN_ISOLATION_CHECKS} expected"
        )));
    }
    if first.measurement.is_none() || first.measurement == second.measurement {
        return Err(Failure(
            "the second run must boot another image (another sealing measurement)".into(),
        ));
    }
    if !second.passed_check(CROSS_CHECK) {
        return Err(Failure(format!(
            "the second run did not pass `{CROSS_CHECK}`"
        )));
    }
    Ok(())
}

/// [`tee`] as a step of `cargo xtask test`: skipped (with a message) only
/// when QEMU is missing and cannot be installed outside CI.
pub fn tee_in_suite(timeout: u64) -> Result<(), Failure> {
    if let Err(Failure(why)) = run::ensure_qemu() {
        if std::env::var_os("CI").is_some() {
            return Err(Failure(format!("CI must run the TEE scenarios: {why}")));
        }
        eprintln!("xtask: SKIPPED the TEE scenarios: {why}");
        return Ok(());
    }
    tee(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tee_lines() {
        let mut r = TeeRun::default();
        for l in [
            "tee: check log_append: PASS sequence numbers [0, 1, 2]",
            "tee: check km_unseal_other_measurement: FAIL Ok(3)",
            "probe: check vmcall_echo: PASS",
            "tee: sealed-key 4c56534c0102",
            "emu: mark: 200 iterations, per iteration: 1.00 us",
            "paravisor: TEE: 4 trusted applications; sealing measurement abcd = SHA-384(…)",
            "tee: done, 1 passed, 1 failed",
        ] {
            r.line(l);
        }
        assert_eq!((r.passed, r.failed), (1, 1));
        assert!(r.passed_check("log_append"));
        assert!(!r.passed_check("km_unseal_other_measurement"));
        assert_eq!(r.sealed.as_deref(), Some(&b"LVSL\x01\x02"[..]));
        assert_eq!(r.marks.len(), 1);
        assert_eq!(r.measurement.as_deref(), Some("abcd"));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }

    #[test]
    fn patches_the_slot() {
        let mut elf = vec![0xEEu8; 64];
        elf.extend_from_slice(SEALED_IN_MAGIC);
        elf.extend_from_slice(&[0; 8 + SEALED_IN_MAX]);
        elf.extend_from_slice(&[0xEE; 16]);
        let Ok(out) = patch_sealed_blob(&elf, b"blob") else {
            panic!("the slot is found");
        };
        let at = 64 + SEALED_IN_MAGIC.len();
        assert_eq!(&out[at..at + 4], &4u32.to_le_bytes());
        assert_eq!(&out[at + 8..at + 12], b"blob");
        assert_eq!(out.len(), elf.len());
        assert!(patch_sealed_blob(&elf, &[1; SEALED_IN_MAX + 1]).is_err());
        assert!(patch_sealed_blob(&elf[..100], b"blob").is_err());
        let mut twice = elf.clone();
        twice.extend_from_slice(SEALED_IN_MAGIC);
        assert!(patch_sealed_blob(&twice, b"blob").is_err());
    }
}
