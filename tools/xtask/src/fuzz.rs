//! `cargo xtask fuzz [--smoke] [--seconds N] [--target NAME]`: runs every
//! cargo-fuzz target of the workspace's fuzz projects ([`FUZZ_PROJECTS`]) for
//! a fixed time each and reports executions and crashes.
//!
//! cargo-fuzz is installed with `cargo +nightly install cargo-fuzz --locked`
//! when `cargo fuzz --version` fails (a fresh CI machine has only the
//! toolchains). Targets build with nightly into `target/fuzz` (not the main
//! build's directories). Each target runs with
//! `-max_total_time=N -rss_limit_mb=2048 -timeout=30`; its corpus grows in
//! `<project>/fuzz/corpus/<target>` (git-ignored), seeded from the committed
//! `<project>/fuzz/seeds/<target>` when that exists, and its whole output goes
//! to `target/fuzz/logs/<project>-<target>.log`. A crash leaves its input in
//! `<project>/fuzz/artifacts/<target>/`; the task prints that path and fails.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use clap::Args;

use crate::{workspace_root, Failure};

/// Crates with a cargo-fuzz project in `<crate>/fuzz`, relative to the root.
pub const FUZZ_PROJECTS: &[&str] = &["heki-tdx", "tee"];

/// Seconds per target with `--smoke`.
const SMOKE_SECONDS: u64 = 60;
/// Seconds per target without `--smoke` or `--seconds`.
const DEFAULT_SECONDS: u64 = 300;
/// libFuzzer's memory cap per target.
const RSS_LIMIT_MB: u64 = 2048;
/// Seconds one input may take before libFuzzer reports it as a hang (its
/// default, 1200, would stall a smoke run for 20 minutes).
const INPUT_TIMEOUT_SECONDS: u64 = 30;

/// Arguments of `cargo xtask fuzz`.
#[derive(Args)]
pub struct FuzzArgs {
    /// 60 seconds per target (the CI smoke run).
    #[arg(long, conflicts_with = "seconds")]
    smoke: bool,
    /// Seconds per target (default 300).
    #[arg(long)]
    seconds: Option<u64>,
    /// Run only this target: `NAME` or `PROJECT/NAME` (e.g. `pages`, `tee/message`).
    #[arg(long)]
    target: Option<String>,
}

/// One target to run.
struct Target {
    /// The crate directory name (`heki-tdx`).
    project: &'static str,
    /// The cargo-fuzz target name.
    name: String,
}

impl Target {
    fn label(&self) -> String {
        format!("{}/{}", self.project, self.name)
    }
}

/// How one target's run ended.
enum Outcome {
    /// Ran for the whole time.
    Clean { runs: u64 },
    /// libFuzzer found a crash (panic, sanitizer report, OOM, timeout).
    Crash {
        runs: u64,
        reproducer: Option<String>,
    },
    /// cargo fuzz failed without a crash input (build or setup error).
    Error(String),
}

/// A `cargo` command (`cargo +nightly` when `nightly`) in `dir`, with the
/// outer (stable) cargo's toolchain selection removed from the environment.
fn cargo_cmd(dir: &Path, nightly: bool) -> Command {
    let mut cmd = Command::new("cargo");
    if nightly {
        cmd.arg("+nightly");
    }
    cmd.current_dir(dir);
    for var in [
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// [`cargo_cmd`] with nightly.
fn nightly_cargo(dir: &Path) -> Command {
    cargo_cmd(dir, true)
}

/// True when `cargo fuzz --version` runs.
fn cargo_fuzz_available(root: &Path) -> bool {
    nightly_cargo(root)
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs cargo-fuzz unless `cargo fuzz` already works.
fn ensure_cargo_fuzz(root: &Path) -> Result<(), Failure> {
    if cargo_fuzz_available(root) {
        return Ok(());
    }
    eprintln!("xtask: cargo-fuzz is missing; running `cargo +nightly install cargo-fuzz --locked`");
    let install = |nightly: bool| {
        cargo_cmd(root, nightly)
            .args(["install", "cargo-fuzz", "--locked"])
            .status()
    };
    if !install(true).is_ok_and(|s| s.success()) {
        eprintln!(
            "xtask: retrying with the default toolchain: `cargo install cargo-fuzz --locked`"
        );
        let status = install(false)
            .map_err(|e| Failure(format!("could not run `cargo install cargo-fuzz`: {e}")))?;
        if !status.success() {
            return Err(Failure(format!(
                "`cargo install cargo-fuzz --locked` exited with {status}"
            )));
        }
    }
    if cargo_fuzz_available(root) {
        Ok(())
    } else {
        Err(Failure(
            "cargo-fuzz was installed but `cargo +nightly fuzz --version` still fails \
             (is ~/.cargo/bin on PATH, and is the nightly toolchain installed?)"
                .to_string(),
        ))
    }
}

/// `cargo fuzz list` of one project.
fn list_targets(root: &Path, project: &'static str) -> Result<Vec<Target>, Failure> {
    let out = nightly_cargo(&root.join(project))
        .args(["fuzz", "list"])
        .output()
        .map_err(|e| Failure(format!("{project}: could not run `cargo fuzz list`: {e}")))?;
    if !out.status.success() {
        return Err(Failure(format!(
            "{project}: `cargo +nightly fuzz list` exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|name| Target {
            project,
            name: name.to_string(),
        })
        .collect())
}

/// The number after `Done ` in libFuzzer's final line, else the largest
/// `#N` status-line count seen.
fn runs_from_log(log: &str) -> u64 {
    let done = log.lines().rev().find_map(|l| {
        l.strip_prefix("Done ")?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    });
    done.unwrap_or_else(|| {
        log.lines()
            .filter_map(|l| {
                l.strip_prefix('#')?
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .unwrap_or(0)
    })
}

/// The path libFuzzer wrote the crashing input to, if it says so.
fn reproducer_from_log(log: &str) -> Option<String> {
    log.lines().find_map(|l| {
        let (_, path) = l.split_once("Test unit written to ")?;
        Some(path.trim().to_string())
    })
}

/// The panic message or sanitizer summary, for the report.
fn crash_summary(log: &str) -> Vec<String> {
    let lines: Vec<&str> = log.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("panicked at") {
            out.push(l.trim().to_string());
            if let Some(next) = lines.get(i + 1) {
                out.push(next.trim().to_string());
            }
            break;
        }
        if l.starts_with("SUMMARY:") || l.contains("ERROR: libFuzzer:") {
            out.push(l.trim().to_string());
        }
    }
    out.truncate(4);
    out
}

/// Builds (if needed) and runs one target for `seconds`.
fn run_target(root: &Path, t: &Target, seconds: u64, target_dir: &Path) -> Outcome {
    let project_dir = root.join(t.project);
    let fuzz_dir = project_dir.join("fuzz");
    let corpus = fuzz_dir.join("corpus").join(&t.name);
    let seeds = fuzz_dir.join("seeds").join(&t.name);
    let log_dir = target_dir.join("logs");
    let log_path = log_dir.join(format!("{}-{}.log", t.project, t.name));
    if let Err(e) = std::fs::create_dir_all(&corpus).and(std::fs::create_dir_all(&log_dir)) {
        return Outcome::Error(format!("cannot create {}: {e}", corpus.display()));
    }
    let log = match File::create(&log_path) {
        Ok(f) => f,
        Err(e) => return Outcome::Error(format!("cannot create {}: {e}", log_path.display())),
    };
    let log2 = match log.try_clone() {
        Ok(f) => f,
        Err(e) => return Outcome::Error(format!("cannot clone log handle: {e}")),
    };
    let mut cmd = nightly_cargo(&project_dir);
    cmd.args(["fuzz", "run", &t.name])
        .arg(&corpus)
        .args(seeds.is_dir().then_some(&seeds))
        .arg("--target-dir")
        .arg(target_dir)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    let status = match cmd.status() {
        Ok(s) => s,
        Err(e) => return Outcome::Error(format!("could not run `cargo fuzz run`: {e}")),
    };
    let text = std::fs::read(&log_path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let runs = runs_from_log(&text);
    if status.success() {
        return Outcome::Clean { runs };
    }
    let reproducer = reproducer_from_log(&text);
    let fuzzer_ran = text.contains("INFO: Seed:") || text.contains("INITED");
    if reproducer.is_some() || fuzzer_ran {
        for l in crash_summary(&text) {
            eprintln!("xtask:     {l}");
        }
        Outcome::Crash { runs, reproducer }
    } else {
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        for l in tail.into_iter().rev() {
            eprintln!("xtask:     {l}");
        }
        Outcome::Error(format!(
            "`cargo +nightly fuzz run {}` exited with {status} before fuzzing (log: {})",
            t.name,
            log_path.display()
        ))
    }
}

/// `cargo xtask fuzz`.
pub fn fuzz(args: &FuzzArgs) -> Result<(), Failure> {
    let root = workspace_root();
    let seconds = match (args.smoke, args.seconds) {
        (true, _) => SMOKE_SECONDS,
        (false, Some(s)) => s,
        (false, None) => DEFAULT_SECONDS,
    };
    if seconds == 0 {
        return Err(Failure("--seconds must be at least 1".to_string()));
    }
    ensure_cargo_fuzz(&root)?;
    let target_dir = root.join("target").join("fuzz");

    let mut targets = Vec::new();
    for project in FUZZ_PROJECTS {
        targets.extend(list_targets(&root, project)?);
    }
    if let Some(want) = &args.target {
        let all: Vec<String> = targets.iter().map(Target::label).collect();
        targets.retain(|t| &t.name == want || &t.label() == want);
        if targets.is_empty() {
            return Err(Failure(format!(
                "no fuzz target `{want}`; known: {}",
                all.join(", ")
            )));
        }
    }

    // Build first, so that build time does not eat into the fuzzing time and
    // a build error is reported as such.
    for project in FUZZ_PROJECTS {
        let names: Vec<&str> = targets
            .iter()
            .filter(|t| t.project == *project)
            .map(|t| t.name.as_str())
            .collect();
        if names.is_empty() {
            continue;
        }
        eprintln!(
            "xtask: building the fuzz targets of {project} (nightly, {})",
            target_dir.display()
        );
        let mut cmd = nightly_cargo(&root.join(project));
        cmd.args(["fuzz", "build"]);
        if names.len() == 1 {
            cmd.arg(names[0]);
        }
        let status = cmd
            .arg("--target-dir")
            .arg(&target_dir)
            .status()
            .map_err(|e| Failure(format!("{project}: could not run `cargo fuzz build`: {e}")))?;
        if !status.success() {
            return Err(Failure(format!(
                "{project}: `cargo +nightly fuzz build` exited with {status}"
            )));
        }
    }

    let (mut crashes, mut errors) = (0usize, 0usize);
    for t in &targets {
        eprintln!("xtask: fuzzing {} for {seconds} s", t.label());
        let start = Instant::now();
        let outcome = run_target(&root, t, seconds, &target_dir);
        let took = start.elapsed().as_secs();
        match outcome {
            Outcome::Clean { runs } => {
                println!(
                    "fuzz: {:<30} {runs:>10} runs in {took:>4} s, no crash",
                    t.label()
                );
            }
            Outcome::Crash { runs, reproducer } => {
                crashes += 1;
                let at = reproducer
                    .as_deref()
                    .unwrap_or("(no input written; see the log)");
                println!(
                    "fuzz: {:<30} CRASH after {runs} runs; reproducer: {at}",
                    t.label()
                );
                if let Some(path) = &reproducer {
                    println!(
                        "fuzz:     reproduce: (cd {} && cargo +nightly fuzz run {} {path})",
                        t.project, t.name
                    );
                }
                println!(
                    "fuzz:     log: {}",
                    target_dir
                        .join("logs")
                        .join(format!("{}-{}.log", t.project, t.name))
                        .display()
                );
            }
            Outcome::Error(msg) => {
                errors += 1;
                println!("fuzz: {:<30} ERROR: {msg}", t.label());
            }
        }
    }
    let errors_note = if errors > 0 {
        format!(", {errors} errors")
    } else {
        String::new()
    };
    println!(
        "fuzz: {} targets, {crashes} crashes{errors_note}",
        targets.len()
    );
    if crashes > 0 || errors > 0 {
        return Err(Failure(format!(
            "{crashes} of {} fuzz targets crashed{errors_note}",
            targets.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libfuzzer_output() {
        let log = "INFO: Seed: 1\n#2\tINITED cov: 9 ft: 9 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #65536\tpulse  cov: 9 ft: 9 corp: 1/1b\nDone 276631 runs in 61 second(s)\n";
        assert_eq!(runs_from_log(log), 276631);
        assert_eq!(reproducer_from_log(log), None);
        let crash = "#2\tINITED cov: 9\n#1234\tNEW    cov: 10\n#1300\tREDUCE cov: 10\n\
                     thread '<unnamed>' panicked at fuzz_targets/x.rs:3:5:\nboom\n\
                     ==1== ERROR: libFuzzer: deadly signal\n\
                     artifact_prefix='/w/fuzz/artifacts/x/'; Test unit written to /w/fuzz/artifacts/x/crash-ab\n";
        assert_eq!(runs_from_log(crash), 1300);
        assert_eq!(
            reproducer_from_log(crash).as_deref(),
            Some("/w/fuzz/artifacts/x/crash-ab")
        );
        assert_eq!(
            crash_summary(crash),
            [
                "thread '<unnamed>' panicked at fuzz_targets/x.rs:3:5:",
                "boom"
            ]
        );
    }
}
