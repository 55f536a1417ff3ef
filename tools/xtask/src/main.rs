//! Developer task runner for the workspace, invoked as `cargo xtask <command>`.
//!
//! - `cargo xtask test`: formatting, clippy, host tests, then a bare-metal
//!   build of every `no_std` crate.
//! - `cargo xtask run`: placeholder for the bare-metal emulator.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::{Parser, Subcommand};

/// The bare-metal target every `no_std` crate must build for.
const BARE_METAL_TARGET: &str = "x86_64-unknown-none";

/// Packages that are `no_std` and are built for [`BARE_METAL_TARGET`].
const NO_STD_CRATES: &[&str] = &["tdcall", "tdx-model", "paravisor", "ept"];

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
    /// Run fmt check, clippy, host tests and the bare-metal build.
    Test,
    /// Boot the paravisor and demo guest in the emulator (not built yet).
    Run {
        /// Arguments reserved for the future emulator; ignored for now.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
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
        Task::Run { args: _ } => {
            eprintln!(
                "xtask: the SVM-based TDX emulator (which boots the paravisor and the demo \
                 guest under QEMU) is not built yet; it is tracked in the emulator issue.\n\
                 xtask: the scripted-engine scenarios run with `cargo xtask test`."
            );
            ExitCode::from(2)
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
    let steps: [Vec<&str>; 4] = [
        vec!["fmt", "--all", "--", "--check"],
        vec![
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        vec!["test", "--workspace"],
        build,
    ];

    for (i, args) in steps.iter().enumerate() {
        let label = format!("[{}/{}] cargo {}", i + 1, steps.len(), args.join(" "));
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
    Ok(())
}

/// Fails with install instructions unless [`BARE_METAL_TARGET`] is installed.
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
        Ok(())
    } else {
        Err(Failure(format!(
            "target {BARE_METAL_TARGET} is not installed; {hint}"
        )))
    }
}
