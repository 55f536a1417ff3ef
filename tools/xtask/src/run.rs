//! `cargo xtask run` and `cargo xtask emulator-test`: build the SVM-based TDX
//! emulator, the paravisor and the probe for the bare-metal target, write the
//! TD image as a TDX IGVM file (`lvbs_loader_cli::build`), compute its MRTD
//! with the loader (`lvbs_loader_cli::measure`), and boot it under QEMU TCG
//! with a timeout, streaming the console, counting `check … PASS/FAIL` lines
//! and comparing the emulator's MRTD with the loader's.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use lvbs_loader_cli::Inputs;

use crate::{cargo_bin, check_target_installed, workspace_root, Failure, BARE_METAL_TARGET};

/// The QEMU binary.
const QEMU: &str = "qemu-system-x86_64";
/// The install script (QEMU 10 from bookworm-backports, env-probe §6).
const INSTALL_SCRIPT: &str = ".ci/install-qemu";
/// Emulator line that starts the statistics block.
const STATS_START: &str = "emu: ==== statistics ====";

/// Options of `cargo xtask run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Boot the probe L2 guest (the bare-metal self-test with the attack
    /// suite) instead of Linux.
    #[arg(long)]
    pub probe: bool,
    /// L2 guest ELF, linked at 0x0100_0000 (implies `--probe`'s paravisor
    /// mode; default: the probe, `-p lvbs-probe`).
    #[arg(long)]
    pub guest: Option<PathBuf>,
    /// Seconds before QEMU is killed (default: 60 for the probe and bare-metal guests, 300 for Linux).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Paravisor ELF (default: `-p paravisor-boot`).
    #[arg(long)]
    pub paravisor: Option<PathBuf>,
    /// L2 command line placed in the image (measured into RTMR1 by the paravisor).
    #[arg(long)]
    pub cmdline: Option<String>,
    /// Initrd placed in the image (measured into RTMR1 by the paravisor).
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Boot Linux as L2 (the default without `--probe` or `--guest`):
    /// Debian's cloud kernel and a busybox initramfs unless `--kernel` /
    /// `--initrd` say otherwise (docs/linux.md).
    #[arg(long)]
    pub linux: bool,
    /// A Linux kernel for L2 (bzImage or vmlinux); implies `--linux`.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
}

impl RunArgs {
    /// Whether this run boots Linux: `--linux`, `--kernel`, or no bare-metal guest asked for.
    pub fn boots_linux(&self) -> bool {
        self.linux || self.kernel.is_some() || (!self.probe && self.guest.is_none())
    }

    /// Seconds before QEMU is killed.
    pub fn timeout(&self) -> u64 {
        self.timeout
            .unwrap_or(if self.boots_linux() { 300 } else { 60 })
    }

    /// The defaults: the probe and the paravisor built here, no command line or initrd.
    pub fn with_timeout(timeout: u64) -> Self {
        RunArgs {
            probe: true,
            guest: None,
            timeout: Some(timeout),
            paravisor: None,
            cmdline: None,
            initrd: None,
            linux: false,
            kernel: None,
        }
    }
}

/// `emulator-test`: the default run must report checks, all passing.
pub fn emulator_test(timeout: u64) -> Result<(), Failure> {
    let args = RunArgs::with_timeout(timeout);
    run(&args, true)
}

/// `emulator-test` with the attack requirements ([`attacks`]), then the
/// attestation demo ([`crate::attest::attest_suite`]), as the last
/// step of `cargo xtask test`: skipped (with a message) only when QEMU is
/// missing and cannot be installed outside CI.
pub fn emulator_test_in_suite(timeout: u64) -> Result<(), Failure> {
    if let Err(Failure(why)) = ensure_qemu() {
        if std::env::var_os("CI").is_some() {
            return Err(Failure(format!("CI must run the emulator test: {why}")));
        }
        eprintln!("xtask: SKIPPED the emulator test: {why}");
        return Ok(());
    }
    attacks(timeout)?;
    // Two more images (the attest guest with a command line and an initrd,
    // and its tampered twin): MRTD agreement, then the verifier.
    crate::attest::attest_suite(timeout)
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn qemu_version() -> Option<String> {
    let out = Command::new(QEMU).arg("--version").output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    })
}

/// Finds QEMU; as root, installs it with [`INSTALL_SCRIPT`] when missing.
pub fn ensure_qemu() -> Result<(), Failure> {
    if qemu_version().is_some() {
        return Ok(());
    }
    let root = workspace_root();
    let command = format!("bash {}", root.join(INSTALL_SCRIPT).display());
    if !is_root() {
        return Err(Failure(format!(
            "`{QEMU}` is not installed; install QEMU 10 as root with `sudo {command}`"
        )));
    }
    eprintln!("xtask: `{QEMU}` is missing; installing QEMU 10 with `{command}`");
    let status = Command::new("bash")
        .arg(root.join(INSTALL_SCRIPT))
        .current_dir(&root)
        .status()
        .map_err(|e| Failure(format!("could not run `{command}`: {e}")))?;
    if !status.success() || qemu_version().is_none() {
        return Err(Failure(format!(
            "`{command}` exited with {status} and `{QEMU}` is still missing"
        )));
    }
    Ok(())
}

/// QEMU's command line for booting `emulator` with `image` as its initrd:
/// q35 under TCG, one COM1 on stdio, the debug-exit device; callers append
/// extra devices.
pub(crate) fn qemu_base_args(emulator: &Path, image: &Path) -> Vec<String> {
    [
        "-machine",
        "q35",
        "-accel",
        "tcg",
        "-cpu",
        // TCG's default MAXPHYADDR is 40, below a TD's GPAW of 48: L1 and L2
        // could not even put the shared bit (47) in a page-table entry (a
        // reserved-bit #PF instead of what a TD gets).
        "max,phys-bits=48",
        "-m",
        "1G",
        "-nographic",
        "-no-reboot",
        "-nodefaults",
        "-serial",
        "stdio",
        "-monitor",
        "none",
        "-display",
        "none",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
        "-kernel",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        emulator.display().to_string(),
        "-initrd".to_string(),
        image.display().to_string(),
    ])
    .collect()
}

/// The cargo target directory (honours `CARGO_TARGET_DIR`).
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"))
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, Failure> {
    std::fs::read(path)
        .map_err(|e| Failure(format!("cannot read the {what} {}: {e}", path.display())))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A `check <name>: PASS…` or `check <name>: FAIL…` line: `Some(true/false)`.
pub fn check_verdict(line: &str) -> Option<bool> {
    let rest = &line[line.find("check ")? + 6..];
    let (name, verdict) = rest.split_once(": ")?;
    if name.is_empty() || name.contains(char::is_whitespace) {
        return None;
    }
    if verdict.starts_with("PASS") {
        Some(true)
    } else if verdict.starts_with("FAIL") {
        Some(false)
    } else {
        None
    }
}

/// What the QEMU exit status means (`isa-debug-exit`: `(v << 1) | 1`).
fn describe_status(code: i32) -> String {
    if code & 1 == 0 {
        return format!("QEMU exited with status {code} without a debug-exit write");
    }
    let v = code >> 1;
    let what = match v {
        0 => "success",
        0x7F => "ReportFatalError or a TD the model killed",
        0x7E => "an L1 bug caught by the emulator (HLT, port I/O, MSR, bad memory access in L1)",
        0x7D => "an internal emulator error",
        0x7C => "the paravisor's L2 loop stopped without L2 ending the run (see its log)",
        _ => "the TD's own failure value",
    };
    format!("debug-exit value {v:#x} ({what}), QEMU status {code}")
}

/// An `attack <name>: BLOCKED…` or `attack <name>: ALLOWED…` line (the
/// probe's attack suite): `Some(true)` when blocked, `Some(false)` when allowed.
pub fn attack_verdict(line: &str) -> Option<bool> {
    let rest = &line[line.find("attack ")? + 7..];
    let blocked = rest.find(": BLOCKED");
    let allowed = rest.find(": ALLOWED");
    match (blocked, allowed) {
        (Some(b), Some(a)) => Some(b < a),
        (Some(b), None) => (b > 0).then_some(true),
        (None, Some(a)) => (a > 0).then_some(false),
        (None, None) => None,
    }
}

/// Fewest attacks `cargo xtask attacks` accepts (enforcement issue §6).
pub const MIN_ATTACKS: u32 = 20;

/// What one run's console reported.
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    /// Checks that passed.
    pub passed: u32,
    /// Checks that failed.
    pub failed: u32,
    /// Attacks blocked.
    pub blocked: u32,
    /// Attacks allowed.
    pub allowed: u32,
}

/// `attacks`: the `emulator-test` run, which must also report at least
/// [`MIN_ATTACKS`] attacks, all blocked. Prints `attacks: N blocked, M allowed`.
pub fn attacks(timeout: u64) -> Result<(), Failure> {
    let args = RunArgs::with_timeout(timeout);
    let mut report = Report::default();
    let result = run_counting(&args, true, &mut report);
    if report.allowed > 0 {
        return Err(Failure(format!(
            "{} attack(s) ALLOWED (see the `attack … ALLOWED` lines)",
            report.allowed
        )));
    }
    result?;
    let total = report.blocked + report.allowed;
    if total < MIN_ATTACKS {
        return Err(Failure(format!(
            "only {total} attack(s) ran, at least {MIN_ATTACKS} expected"
        )));
    }
    Ok(())
}

/// Builds, packs and boots; `require_checks` demands at least one check line.
pub fn run(args: &RunArgs, require_checks: bool) -> Result<(), Failure> {
    run_counting(args, require_checks, &mut Report::default())
}

/// [`run`], leaving the console's counts in `report` (also when it fails).
pub fn run_counting(
    args: &RunArgs,
    require_checks: bool,
    report: &mut Report,
) -> Result<(), Failure> {
    run_with(args, require_checks, report, &mut |_| {})
}

/// [`run_counting`] that also hands every console line to `on_line`.
pub fn run_with(
    args: &RunArgs,
    require_checks: bool,
    report: &mut Report,
    on_line: &mut dyn FnMut(&str),
) -> Result<(), Failure> {
    if args.boots_linux() {
        return crate::linux::run(args, report);
    }
    let root = workspace_root();
    let mut packages = vec![];
    if args.paravisor.is_none() {
        packages.push("paravisor-boot");
    }
    if args.guest.is_none() {
        packages.push("lvbs-probe");
    }
    let bin_dir = build_bare_metal(&packages)?;
    let paravisor_path = args
        .paravisor
        .clone()
        .unwrap_or_else(|| bin_dir.join("paravisor"));
    let guest_path = args.guest.clone().unwrap_or_else(|| bin_dir.join("probe"));
    let paravisor = read(&paravisor_path, "paravisor ELF")?;
    let guest = read(&guest_path, "L2 guest ELF")?;
    let initrd = args
        .initrd
        .as_ref()
        .map(|p| read(p, "initrd"))
        .transpose()?;
    let inputs = Inputs {
        paravisor: &paravisor,
        kernel: &guest,
        initrd: initrd.as_deref(),
        cmdline: args.cmdline.as_deref().map(str::as_bytes),
    };
    let image = lvbs_loader_cli::build(&inputs)
        .map_err(|e| Failure(format!("cannot build the IGVM image: {e}")))?;
    let image_path = target_dir(&root).join("lvbs-tdx").join("td.igvm");
    eprintln!(
        "xtask: paravisor {}, L2 guest {}",
        paravisor_path.display(),
        guest_path.display(),
    );
    let out = boot_image(&image, &image_path, args.timeout(), None, report, on_line)?;
    eprintln!(
        "xtask: {} console lines, MRTD {}",
        out.lines.len(),
        out.mrtd
    );
    if require_checks && out.report.passed == 0 {
        return Err(Failure("the run reported no checks".into()));
    }
    Ok(())
}

/// Builds `tdx-emulator` and `packages` for the bare-metal target (release)
/// and returns the directory of the binaries.
pub fn build_bare_metal(packages: &[&str]) -> Result<PathBuf, Failure> {
    let root = workspace_root();
    check_target_installed()?;
    let mut build = vec![
        "build",
        "--release",
        "--target",
        BARE_METAL_TARGET,
        "-p",
        "tdx-emulator",
    ];
    for p in packages {
        build.extend(["-p", p]);
    }
    eprintln!("xtask: cargo {}", build.join(" "));
    let status = Command::new(cargo_bin())
        .args(&build)
        .current_dir(&root)
        .status()
        .map_err(|e| Failure(format!("could not start cargo: {e}")))?;
    if !status.success() {
        return Err(Failure(format!(
            "the bare-metal build exited with {status}"
        )));
    }
    Ok(target_dir(&root).join(BARE_METAL_TARGET).join("release"))
}

/// What one boot printed.
#[derive(Clone, Debug, Default)]
pub struct BootOutput {
    /// Every console line before the statistics.
    pub lines: Vec<String>,
    /// The check and attack counts.
    pub report: Report,
    /// MRTD as the emulator and the loader computed it (equal).
    pub mrtd: String,
}

/// Writes the IGVM `image` to `image_path`, computes its MRTD with the
/// loader, boots it in the emulator under QEMU (with `com2_input`, if given,
/// waiting on a second serial port, COM2 at 0x2F8, fed from a FIFO), and fails on a FAIL line, a timeout, a QEMU
/// status other than success, or an emulator MRTD that differs from the
/// loader's. Every console line goes to `on_line` as it arrives; the counts
/// are left in `report` also when it fails.
pub fn boot_image(
    image: &[u8],
    image_path: &Path,
    timeout: u64,
    com2_input: Option<&[u8]>,
    report: &mut Report,
    on_line: &mut dyn FnMut(&str),
) -> Result<BootOutput, Failure> {
    let root = workspace_root();
    ensure_qemu()?;
    let qemu = qemu_version().unwrap_or_default();
    let emulator = target_dir(&root)
        .join(BARE_METAL_TARGET)
        .join("release")
        .join("tdx-emulator");
    let measurement = lvbs_loader_cli::measure(image)
        .map_err(|e| Failure(format!("the loader cannot measure the image: {e}")))?;
    let mrtd = hex(&measurement.mrtd);
    if let Some(dir) = image_path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(image_path, image)
        .map_err(|e| Failure(format!("cannot write {}: {e}", image_path.display())))?;
    let emu_size = std::fs::metadata(&emulator).map(|m| m.len()).unwrap_or(0);
    let bi = &measurement.boot_info;
    eprintln!(
        "xtask: emulator {} ({} KiB), IGVM image {} ({} KiB, {} pages, {} measured), L2 entry {:#x}, command line {} bytes, initrd {} bytes",
        emulator.display(),
        emu_size / 1024,
        image_path.display(),
        image.len() / 1024,
        measurement.pages,
        measurement.measured_pages,
        bi.l2_entry,
        bi.cmdline_size,
        bi.initrd_size,
    );
    eprintln!("xtask: loader MRTD {mrtd}");

    // COM2: a FIFO the guest reads (QEMU's `pipe:` backend opens it
    // read-write, so neither side blocks on open).
    let fifo = image_path.with_extension("com2");
    let mut com2 = Vec::new();
    if com2_input.is_some() {
        let _ = std::fs::remove_file(&fifo);
        let ok = Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Err(Failure(format!("mkfifo {} failed", fifo.display())));
        }
        com2 = vec!["-serial".to_string(), format!("pipe:{}", fifo.display())];
    }
    let qemu_args: Vec<String> = qemu_base_args(&emulator, image_path)
        .into_iter()
        .chain(com2)
        .collect();
    eprintln!(
        "xtask: {qemu}: {QEMU} {} (timeout {timeout} s)",
        qemu_args.join(" "),
    );
    let start = Instant::now();
    let mut child = Command::new(QEMU)
        .args(&qemu_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Failure(format!("could not start {QEMU}: {e}")))?;
    // The input stays in the FIFO until the guest reads COM2; keep it open
    // until QEMU ends.
    let mut com2_pipe = None;
    if let Some(data) = com2_input {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&fifo)
            .map_err(|e| Failure(format!("opening {}: {e}", fifo.display())))?;
        f.write_all(data)
            .map_err(|e| Failure(format!("writing {}: {e}", fifo.display())))?;
        com2_pipe = Some(f);
    }
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).replace(['\r', '\n'], "");
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });

    let deadline = start + Duration::from_secs(timeout);
    let (mut passed, mut failed) = (0u32, 0u32);
    let mut stats: Vec<String> = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    let mut in_stats = false;
    let mut emu_mrtd: Option<String> = None;
    let mut timed_out = false;
    let stdout_lock = std::io::stdout();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                on_line(&line);
                match check_verdict(&line) {
                    Some(true) => passed += 1,
                    Some(false) => failed += 1,
                    None => {}
                }
                match attack_verdict(&line) {
                    Some(true) => report.blocked += 1,
                    Some(false) => report.allowed += 1,
                    None => {}
                }
                if let Some(m) = line.strip_prefix("emu: MRTD ") {
                    emu_mrtd = Some(m.trim().to_string());
                }
                if line == STATS_START {
                    in_stats = true;
                }
                if in_stats {
                    stats.push(line);
                } else {
                    let mut o = stdout_lock.lock();
                    // Evidence lines are long: show their start only.
                    if line.len() > 200 {
                        let _ = writeln!(o, "{}… ({} chars)", &line[..120], line.len());
                    } else {
                        let _ = writeln!(o, "{line}");
                    }
                    let _ = o.flush();
                    lines.push(line);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
        }
    }
    if timed_out {
        let _ = child.kill();
    }
    drop(com2_pipe);
    if com2_input.is_some() {
        let _ = std::fs::remove_file(&fifo);
    }
    let status = child
        .wait()
        .map_err(|e| Failure(format!("waiting for QEMU: {e}")))?;
    let _ = reader.join();
    let secs = start.elapsed().as_secs_f64();

    println!("lvbs-tdx: {passed} checks passed, {failed} failed");
    (report.passed, report.failed) = (passed, failed);
    if report.blocked + report.allowed > 0 {
        println!(
            "attacks: {} blocked, {} allowed",
            report.blocked, report.allowed
        );
    }
    for line in &stats {
        println!("{line}");
    }
    eprintln!("xtask: QEMU ran {secs:.1} s");
    if timed_out {
        return Err(Failure(format!(
            "timeout: QEMU was still running after {timeout} s and was killed (raise it with --timeout)"
        )));
    }
    let Some(code) = status.code() else {
        return Err(Failure(format!("QEMU was terminated: {status}")));
    };
    if code != 1 {
        return Err(Failure(describe_status(code)));
    }
    match emu_mrtd {
        Some(m) if m != mrtd => {
            return Err(Failure(format!(
                "MRTD mismatch: the emulator measured {m}, the loader computes {mrtd}"
            )))
        }
        None => return Err(Failure("the emulator printed no MRTD".into())),
        Some(_) => eprintln!("xtask: MRTD agrees: emulator = loader = {mrtd}"),
    }
    if failed > 0 {
        return Err(Failure(format!("{failed} check(s) failed")));
    }
    Ok(BootOutput {
        lines,
        report: *report,
        mrtd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_lines() {
        assert_eq!(
            check_verdict("probe: check vmcall_echo: PASS R8 0x1"),
            Some(true)
        );
        assert_eq!(
            check_verdict("paravisor: check vp_wr_readonly_field: FAIL got 0x0"),
            Some(false)
        );
        assert_eq!(check_verdict("probe: check ro_page: FAILED"), Some(false));
        assert_eq!(check_verdict("probe: done, 13 passed, 0 failed"), None);
        assert_eq!(check_verdict("emu: check the log: PASS"), None);
        assert_eq!(check_verdict("probe: check x: maybe"), None);
        assert_eq!(check_verdict("no check here"), None);
    }

    #[test]
    fn attack_lines() {
        assert_eq!(
            attack_verdict("probe: attack clear CR0.WP: BLOCKED (fault …)"),
            Some(true)
        );
        assert_eq!(
            attack_verdict("probe: attack write LSTAR: ALLOWED (wrmsr: BLOCKED? no)"),
            Some(false)
        );
        assert_eq!(
            attack_verdict("probe: attack restore a saved CR4 with mov cr4: BLOCKED"),
            Some(true)
        );
        assert_eq!(attack_verdict("probe: attack : BLOCKED"), None);
        assert_eq!(attack_verdict("attacks: 24 blocked, 0 allowed"), None);
        assert_eq!(
            attack_verdict("probe: done, 30 passed, 0 failed; 26 attacks blocked, 0 allowed"),
            None
        );
        assert_eq!(attack_verdict("paravisor: WARN: attack of something"), None);
    }

    #[test]
    fn exit_statuses() {
        assert!(describe_status(1).contains("success"));
        assert!(describe_status(0xFF).contains("0x7f"));
        assert!(describe_status((0x7C << 1) | 1).contains("L2 loop stopped"));
        assert!(describe_status((0x7D << 1) | 1).contains("internal emulator error"));
        assert!(describe_status(0).contains("without a debug-exit"));
    }
}
