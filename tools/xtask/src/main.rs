//! Developer task runner for the workspace, invoked as `cargo xtask <command>`.
//!
//! - `cargo xtask test`: formatting, clippy (host and bare-metal target), host
//!   tests, a bare-metal build of every `no_std` crate, then the emulator run
//!   (`emulator-test`).
//! - `cargo xtask run`: Debian's cloud kernel as L2 under the paravisor in
//!   the emulator, to a busybox shell (see [`linux`]); `--kernel`,
//!   `--initrd`, `--cmdline` choose another payload; `--probe` (or
//!   `--guest <elf>`) boots the bare-metal probe instead (see [`run`]).
//! - `cargo xtask attacks --linux`: the guest HEKI client and the attack
//!   module from inside Linux (see [`linux_attacks`]; `test` runs this last).
//! - `cargo xtask boot-ratio`: time to the Linux shell against plain QEMU TCG
//!   and the exits by reason (see [`linux_bench`]).
//! - `cargo xtask debian-modules <dir>`: Debian's signed modules, the kernel's
//!   certificates and `sign-file` for heki-tdx's real-module test (see
//!   [`guest_modules::debian_modules`]; `.ci/run` uses it).
//! - `cargo xtask emulator-test`: `run` with the default images, which must
//!   report at least one check and no failures.
//! - `cargo xtask attacks`: `emulator-test` that also counts the probe's
//!   `attack … BLOCKED/ALLOWED` lines, prints `attacks: N blocked, M allowed`
//!   and fails on any ALLOWED or fewer than 20 attacks (`test` runs this).
//! - `cargo xtask tee`: the TEE client guest as L2, twice (the second image
//!   carries the first run's sealed key), counting `tee: check` lines (see
//!   [`tee`]; `test` runs this after `attacks`).
//! - `cargo xtask fuzz [--smoke] [--seconds N] [--target NAME]`: every
//!   cargo-fuzz target for N seconds (`--smoke`: 60), installing cargo-fuzz
//!   if needed (see [`fuzz`]; not part of `test`).
//! - `cargo xtask attest [--tamper kernel|nonce]`: the attestation demo (see
//!   [`attest`]; `test` runs all three modes and expects the tampered ones
//!   refused on RTMR1 and on the nonce).

mod attest;
mod fuzz;
mod guest_modules;
mod linux;
mod linux_attacks;
mod linux_bench;
mod run;
mod tee;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::{Parser, Subcommand};

/// The bare-metal target every `no_std` crate must build for.
const BARE_METAL_TARGET: &str = "x86_64-unknown-none";

/// Packages that are `no_std` and are built for [`BARE_METAL_TARGET`].
const NO_STD_CRATES: &[&str] = &[
    "tdcall",
    "tdx-model",
    "paravisor",
    "ept",
    "lvbs-loader",
    "heki-tdx",
    "lvbs-tee",
    "lvbs-tee-scenarios",
];

/// Bare-metal programs: clippy runs on them for [`BARE_METAL_TARGET`] too
/// (on the host they compile to a stub `main`).
const BARE_METAL_BINS: &[&str] = &[
    "tdx-emulator",
    "paravisor-boot",
    "lvbs-probe",
    "lvbs-guest-rt",
    "lvbs-tee-guest",
    "lvbs-attest-guest",
    "lvbs-ta-runtime",
];

/// Features the bare-metal clippy run enables, so that test-image-only code
/// (the isolation test TA and the paravisor's `test-ta` path) is linted too.
const BARE_METAL_CLIPPY_FEATURES: &str = "lvbs-ta-runtime/attack-ta,paravisor-boot/test-ta";

/// Command-line interface of `cargo xtask`.
#[derive(Parser)]
#[command(name = "xtask", about = "Workspace task runner")]
struct Cli {
    /// The task to run.
    #[command(subcommand)]
    command: Task,
}

/// The tasks `cargo xtask` knows.
#[derive(Subcommand)]
enum Task {
    /// Run fmt check, clippy, host tests, the bare-metal build, the emulator test and the attestation demo.
    Test,
    /// Boot the paravisor and an L2 guest in the SVM-based TDX emulator under QEMU.
    Run(run::RunArgs),
    /// `run` with the default paravisor and probe; fails unless checks ran and all passed.
    EmulatorTest {
        /// Seconds before QEMU is killed.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// `emulator-test` plus the attack suite: fails on any ALLOWED attack or fewer than 20.
    Attacks {
        /// Seconds before QEMU is killed (default: 60 for the probe, 900 with `--linux`).
        #[arg(long)]
        timeout: Option<u64>,
        /// Debian's cloud kernel with the guest HEKI client and the attack
        /// module from inside Linux (tests/linux-guest) instead of the probe.
        #[arg(long)]
        linux: bool,
    },
    /// Debian's cloud kernel modules, their certificates and sign-file in DIR
    /// (the inputs of heki-tdx's `debian_modules` test; `.ci/run` uses it).
    DebianModules {
        /// Output directory.
        dir: PathBuf,
    },
    /// Time to the Linux shell under the paravisor vs plain QEMU TCG, and the L2 exits by reason.
    BootRatio {
        /// Runs of each configuration (the median counts).
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Seconds before QEMU is killed (per run).
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// The TEE client scenarios in the emulator: prints `tee: N passed, M failed`.
    Tee {
        /// Seconds before QEMU is killed (per run).
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Run the cargo-fuzz targets (heki-tdx, tee) for N seconds each; fails on any crash.
    Fuzz(fuzz::FuzzArgs),
    /// Attestation demo: boot the attest guest, get a TDREPORT for a fresh
    /// nonce with the event log, verify it (`--tamper kernel|nonce`: must be refused).
    Attest(attest::AttestArgs),
}

/// A failed step, carrying the message to print before exiting non-zero.
struct Failure(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Task::Test => match test() {
            Ok(()) => {
                eprintln!("xtask: all steps passed");
                ExitCode::SUCCESS
            }
            Err(Failure(msg)) => {
                eprintln!("xtask: FAILED: {msg}");
                ExitCode::FAILURE
            }
        },
        Task::Run(args) => report(run::run(&args, false)),
        Task::EmulatorTest { timeout } => report(run::emulator_test(timeout)),
        Task::Attacks {
            timeout,
            linux: true,
        } => report(linux_attacks::attacks(timeout.unwrap_or(900))),
        Task::Attacks { timeout, .. } => report(run::attacks(timeout.unwrap_or(60))),
        Task::Tee { timeout } => report(tee::tee(timeout)),
        Task::BootRatio { runs, timeout } => report(linux_bench::boot_ratio(runs, timeout)),
        Task::DebianModules { dir } => report(guest_modules::debian_modules(&dir)),
        Task::Fuzz(args) => report(fuzz::fuzz(&args)),
        Task::Attest(args) => report(attest::attest(&args)),
    }
}

fn report(r: Result<(), Failure>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg)) => {
            eprintln!("xtask: FAILED: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: two levels above this crate's manifest directory.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .nth(2)
        .unwrap_or(manifest_dir)
        .to_path_buf()
}

/// The cargo binary to invoke: `$CARGO` if set, else `cargo` from `PATH`.
fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Runs every check in order, stopping at the first failure.
fn test() -> Result<(), Failure> {
    let root = workspace_root();
    let cargo = cargo_bin();
    check_target_installed()?;

    let mut build = vec!["build", "--target", BARE_METAL_TARGET];
    for krate in NO_STD_CRATES {
        build.extend(["-p", krate]);
    }
    let mut bare_clippy = vec!["clippy", "--target", BARE_METAL_TARGET];
    for krate in NO_STD_CRATES.iter().chain(BARE_METAL_BINS) {
        bare_clippy.extend(["-p", krate]);
    }
    bare_clippy.extend(["--features", BARE_METAL_CLIPPY_FEATURES]);
    bare_clippy.extend(["--", "-D", "warnings"]);
    let steps: [Vec<&str>; 5] = [
        vec!["fmt", "--all", "--", "--check"],
        vec![
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        bare_clippy,
        vec!["test", "--workspace"],
        build,
    ];
    let total = steps.len() + 1;

    for (i, args) in steps.iter().enumerate() {
        let label = format!("[{}/{total}] cargo {}", i + 1, args.join(" "));
        eprintln!("xtask: {label}");
        let start = Instant::now();
        let status = Command::new(&cargo)
            .args(args)
            .current_dir(&root)
            .status()
            .map_err(|e| Failure(format!("{label}: could not start `{cargo}`: {e}")))?;
        eprintln!("xtask: {label} took {:.1}s", start.elapsed().as_secs_f64());
        if !status.success() {
            return Err(Failure(format!("{label} exited with {status}")));
        }
    }
    let label = format!("[{total}/{total}] xtask emulator-test + attacks + tee + attacks --linux");
    eprintln!("xtask: {label}");
    let start = Instant::now();
    let result = run::emulator_test_in_suite(60)
        .and_then(|()| tee::tee_in_suite(120))
        .and_then(|()| linux_attacks::attacks_in_suite(900));
    eprintln!("xtask: {label} took {:.1}s", start.elapsed().as_secs_f64());
    result
}

/// Makes sure [`BARE_METAL_TARGET`] is installed, adding it with rustup when it
/// is missing; fails with install instructions if that is not possible.
fn check_target_installed() -> Result<(), Failure> {
    let hint = format!("install it with `rustup target add {BARE_METAL_TARGET}`");
    let output = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(workspace_root())
        .output()
        .map_err(|e| {
            Failure(format!(
                "could not run `rustup target list --installed` ({e}); {hint}"
            ))
        })?;
    if !output.status.success() {
        return Err(Failure(format!(
            "`rustup target list --installed` exited with {}; {hint}",
            output.status
        )));
    }
    let installed = String::from_utf8_lossy(&output.stdout);
    if installed.lines().any(|l| l.trim() == BARE_METAL_TARGET) {
        return Ok(());
    }
    // A fresh machine lacks it and rustup's auto-install is off here: add it.
    eprintln!("xtask: target {BARE_METAL_TARGET} is missing; running `rustup target add {BARE_METAL_TARGET}`");
    let status = Command::new("rustup")
        .args(["target", "add", BARE_METAL_TARGET])
        .current_dir(workspace_root())
        .status()
        .map_err(|e| Failure(format!("could not run rustup ({e}); {hint}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure(format!(
            "target {BARE_METAL_TARGET} is not installed and `rustup target add` exited with {status}; {hint}"
        )))
    }
}
