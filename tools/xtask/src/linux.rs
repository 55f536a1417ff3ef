//! `cargo xtask run --linux` / `--kernel <bzImage|vmlinux>`: an unmodified
//! Linux kernel as L2 under the paravisor in the emulator (docs/linux.md).
//!
//! * The kernel: `--kernel` takes a `vmlinux` ELF or a bzImage; from a
//!   bzImage the compressed payload (`payload_offset`/`payload_length` of
//!   the setup header) is decompressed with the matching host tool (`gzip`,
//!   `xz`, `lz4`, `zstd`, `bzip2`, `lzop`) into the ELF the paravisor loads.
//!   Without `--kernel`, Debian's cloud kernel (`linux-image-cloud-amd64`,
//!   the package it depends on) is fetched with `apt-get download` into
//!   `target/lvbs-tdx/linux/`.
//! * The initrd: `--initrd`, or a busybox initramfs built here (newc cpio,
//!   uncompressed) from Debian's `busybox-static`, whose `/init` mounts
//!   proc/sys/devtmpfs, prints a marker line, runs a shell on the console
//!   and powers off when it exits (in the same session as PID 1: a session
//!   leader's exit would hang the tty up and drop output the polled UART
//!   has not sent yet).
//! * The command line: `--cmdline`, or [`DEFAULT_CMDLINE`].
//!
//! The image is the same IGVM TD as every run (`lvbs_loader_cli::build`);
//! the loader sees the `vmlinux` and lays out a Linux TD (BootInfo flag
//! LINUX). This command is not part of `cargo xtask test`.

use std::path::{Path, PathBuf};
use std::process::Command;

use lvbs_loader_cli::Inputs;

use crate::run::{self, Report, RunArgs};
use crate::{workspace_root, Failure};

/// The kernel command line with the full boot log: serial console and early
/// printk on COM1; no IO-APIC and no PCI (the TD has neither,
/// docs/linux.md); the TSC is the clock; a panic resets by triple fault,
/// which ends the run. Every console byte costs two L2 exits (LSR poll, THR
/// write), so this boot takes about 3.8x plain TCG (`cargo xtask
/// boot-ratio`).
pub const VERBOSE_CMDLINE: &str = "console=ttyS0 earlyprintk=serial,ttyS0,115200 noapic pci=off tsc=reliable no_timer_check panic=-1 reboot=t";

/// The kernel command line of `cargo xtask run` without `--cmdline`:
/// [`VERBOSE_CMDLINE`] with `quiet` (warnings and errors still print), which
/// keeps the boot within the 3x budget (about 2.4x plain TCG).
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 earlyprintk=serial,ttyS0,115200 noapic pci=off tsc=reliable no_timer_check panic=-1 reboot=t quiet";

/// The marker `/init` of the built-in initramfs prints once userspace runs.
pub const USERSPACE_MARKER: &str = "lvbs-tdx: Linux userspace is up";

pub fn cache_dir() -> PathBuf {
    crate::run::target_dir(&workspace_root())
        .join("lvbs-tdx")
        .join("linux")
}

pub fn sh(cmd: &mut Command, what: &str) -> Result<Vec<u8>, Failure> {
    let out = cmd
        .output()
        .map_err(|e| Failure(format!("{what}: cannot run: {e}")))?;
    if !out.status.success() {
        return Err(Failure(format!(
            "{what}: {} ({})",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// `apt-get download`s `package` into `dir` (once) and unpacks it into
/// `dir/root`; returns the .deb path.
pub fn fetch_deb(dir: &Path, package: &str) -> Result<PathBuf, Failure> {
    std::fs::create_dir_all(dir).map_err(|e| Failure(format!("{}: {e}", dir.display())))?;
    let existing = |dir: &Path| {
        std::fs::read_dir(dir).ok().and_then(|rd| {
            rd.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
            })
        })
    };
    if let Some(deb) = existing(dir) {
        return Ok(deb);
    }
    eprintln!("xtask: apt-get download {package} into {}", dir.display());
    sh(
        Command::new("apt-get")
            .arg("download")
            .arg(package)
            .current_dir(dir),
        &format!("apt-get download {package}"),
    )?;
    let deb =
        existing(dir).ok_or_else(|| Failure(format!("no .deb for {package} after download")))?;
    sh(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(dir.join("root")),
        &format!("dpkg-deb -x {}", deb.display()),
    )?;
    Ok(deb)
}

/// The versioned package `meta` (e.g. `linux-image-cloud-amd64`) depends on
/// whose name starts with `prefix`.
pub fn depends_on(meta: &str, prefix: &str) -> Result<String, Failure> {
    let out = sh(
        Command::new("apt-cache").args(["depends", meta]),
        &format!("apt-cache depends {meta}"),
    )?;
    String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(str::trim)
        .find(|p| p.starts_with(prefix))
        .map(str::to_string)
        .ok_or_else(|| Failure(format!("{meta} names no {prefix}* package")))
}

/// Debian's cloud kernel: the package, its release (`uname -r`) and the bzImage.
pub struct DebianKernel {
    /// `linux-image-<release>`.
    pub package: String,
    /// `6.1.0-NN-cloud-amd64`.
    pub release: String,
    /// The bzImage in the unpacked package.
    pub image: PathBuf,
}

/// Whether this process already ran `apt-get update`.
static APT_UPDATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `apt-get update`, at most once per process and only as root: stale
/// package lists can name a kernel (or headers) the mirror no longer serves.
fn apt_update() -> Result<(), Failure> {
    use std::sync::atomic::Ordering;
    if APT_UPDATED.load(Ordering::SeqCst) {
        return Ok(());
    }
    if !crate::run::is_root() {
        return Err(Failure(
            "the package lists are stale; run `apt-get update` as root".into(),
        ));
    }
    eprintln!("xtask: apt-get update (stale package lists)");
    sh(
        Command::new("apt-get").args(["update", "-qq"]),
        "apt-get update",
    )?;
    APT_UPDATED.store(true, Ordering::SeqCst);
    Ok(())
}

/// Runs `fetch` with the current package lists, then once more after
/// `apt-get update` if it failed — unless the lists had already been
/// updated before the first attempt (then a retry cannot help). A nested
/// call may run the update itself; the outer call still retries after it.
pub fn with_fresh_lists<T>(fetch: impl Fn() -> Result<T, Failure>) -> Result<T, Failure> {
    let fresh_already = APT_UPDATED.load(std::sync::atomic::Ordering::SeqCst);
    fetch().or_else(|first| {
        if fresh_already {
            return Err(first);
        }
        eprintln!("xtask: {}", first.0);
        apt_update()?;
        fetch()
    })
}

/// Debian's cloud kernel (the bzImage in the package `linux-image-cloud-amd64`
/// depends on), fetched into the cache.
pub fn debian_kernel() -> Result<DebianKernel, Failure> {
    with_fresh_lists(|| {
        let dir = cache_dir();
        let package = depends_on("linux-image-cloud-amd64", "linux-image-")?;
        fetch_deb(&dir, &package)?;
        let release = package.trim_start_matches("linux-image-").to_string();
        let image = dir
            .join("root")
            .join("boot")
            .join(format!("vmlinuz-{release}"));
        if !image.exists() {
            return Err(Failure(format!(
                "{} is missing from {package}",
                image.display()
            )));
        }
        Ok(DebianKernel {
            package,
            release,
            image,
        })
    })
}

/// The decompressor command for a payload starting with `magic`.
fn decompressor(magic: &[u8]) -> Option<&'static [&'static str]> {
    Some(match magic {
        [0x1F, 0x8B, ..] => &["gzip", "-dc"],
        [0xFD, b'7', b'z', b'X', b'Z', 0, ..] => &["xz", "-dc"],
        [0x02, 0x21, 0x4C, 0x18, ..] => &["lz4", "-dc"],
        [0x28, 0xB5, 0x2F, 0xFD, ..] => &["zstd", "-dc"],
        [b'B', b'Z', b'h', ..] => &["bzip2", "-dc"],
        [0x89, b'L', b'Z', b'O', ..] => &["lzop", "-dc"],
        [0x5D, 0, 0, ..] => &["xz", "--format=lzma", "-dc"],
        _ => return None,
    })
}

/// Where a bzImage's compressed kernel lies: `(offset, length)` in the file.
pub fn bzimage_payload(image: &[u8]) -> Option<(usize, usize)> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let u32_at = |at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(image.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let version = u16::from_le_bytes(image.get(0x206..0x208)?.try_into().ok()?);
    if version < 0x0208 {
        return None; // no payload fields before protocol 2.08
    }
    let setup_sects = match *image.get(0x1F1)? {
        0 => 4,
        n => n as usize,
    };
    let start = (setup_sects + 1) * 512 + u32_at(0x248)?;
    let len = u32_at(0x24C)?;
    (start.checked_add(len)? <= image.len()).then_some((start, len))
}

/// The `vmlinux` ELF of `kernel` (an ELF as is, or a bzImage's payload
/// decompressed into the cache).
pub fn vmlinux(kernel: &Path) -> Result<Vec<u8>, Failure> {
    let bytes = std::fs::read(kernel)
        .map_err(|e| Failure(format!("cannot read the kernel {}: {e}", kernel.display())))?;
    if bytes.starts_with(b"\x7fELF") {
        return Ok(bytes);
    }
    let (start, len) = bzimage_payload(&bytes).ok_or_else(|| {
        Failure(format!(
            "{} is neither an ELF vmlinux nor a bzImage (protocol ≥ 2.08)",
            kernel.display()
        ))
    })?;
    let payload = &bytes[start..start + len];
    let cmd = decompressor(payload).ok_or_else(|| {
        Failure(format!(
            "unknown compression {:02x?}",
            &payload[..payload.len().min(6)]
        ))
    })?;
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Failure(format!("{}: {e}", dir.display())))?;
    let name = kernel
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("kernel");
    let payload_path = dir.join(format!("{name}.payload"));
    std::fs::write(&payload_path, payload)
        .map_err(|e| Failure(format!("{}: {e}", payload_path.display())))?;
    // Decompressors may complain about the bytes after the stream (the
    // bzImage appends the decompressed size); the output is what counts.
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .arg(&payload_path)
        .output()
        .map_err(|e| Failure(format!("cannot run {}: {e}", cmd[0])))?;
    let _ = std::fs::remove_file(&payload_path);
    if !out.stdout.starts_with(b"\x7fELF") {
        return Err(Failure(format!(
            "{} of the bzImage payload gave no ELF ({}; {})",
            cmd.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    eprintln!(
        "xtask: {} → vmlinux ({} MiB, {})",
        kernel.display(),
        out.stdout.len() >> 20,
        cmd.join(" ")
    );
    Ok(out.stdout)
}

/// A newc cpio archive writer (the initramfs format Linux unpacks).
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn header(&mut self, name: &str, mode: u32, size: usize) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            size as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// A directory.
    pub fn dir(&mut self, name: &str) {
        self.header(name, 0o040755, 0);
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.header(name, 0o100000 | mode, data.len());
        self.out.extend_from_slice(data);
        self.pad();
    }

    /// A symbolic link.
    pub fn symlink(&mut self, name: &str, target: &str) {
        self.header(name, 0o120777, target.len());
        self.out.extend_from_slice(target.as_bytes());
        self.pad();
    }

    /// The archive with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.header("TRAILER!!!", 0, 0);
        while !self.out.len().is_multiple_of(512) {
            self.out.push(0);
        }
        self.out
    }
}

/// The `/init` of the built-in initramfs.
pub fn init_script() -> String {
    format!(
        "#!/bin/sh\n\
         /bin/busybox --install -s /bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sysfs /sys\n\
         mount -t devtmpfs devtmpfs /dev\n\
         echo \"{USERSPACE_MARKER}: $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime) s\"\n\
         echo \"clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource), $(grep LOC /proc/interrupts)\"\n\
         cttyhack sh\n\
         echo \"lvbs-tdx: the shell exited, powering off\"\n\
         sleep 1\n\
         poweroff -f\n"
    )
}

/// The busybox initramfs (uncompressed newc cpio) with `/init` = `init`
/// and `extra` files `(path, mode, bytes)`.
pub fn busybox_initramfs(extra: &[(&str, u32, &[u8])], init: &str) -> Result<Vec<u8>, Failure> {
    let dir = cache_dir();
    fetch_deb(&dir, "busybox-static")?;
    let busybox_path = dir.join("root").join("bin").join("busybox");
    let busybox = std::fs::read(&busybox_path)
        .map_err(|e| Failure(format!("{}: {e}", busybox_path.display())))?;
    let mut c = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "tmp", "root"] {
        c.dir(d);
    }
    c.file("bin/busybox", 0o755, &busybox);
    c.symlink("bin/sh", "busybox");
    c.file("init", 0o755, init.as_bytes());
    let mut dirs: Vec<&str> = Vec::new();
    for (path, mode, data) in extra {
        if let Some((d, _)) = path.rsplit_once('/') {
            if !dirs.contains(&d) {
                c.dir(d);
                dirs.push(d);
            }
        }
        c.file(path, *mode, data);
    }
    let archive = c.finish();
    // Kept for comparisons (e.g. the same kernel and initramfs under plain QEMU).
    if extra.is_empty() {
        let _ = std::fs::write(dir.join("initramfs.cpio"), &archive);
    }
    Ok(archive)
}

/// Commands the scripted run types into the shell once userspace is up: one
/// computed answer (the shell really ran), then `exit`, after which `/init`
/// powers off and the run ends.
pub const SCRIPTED_INPUT: &str = "echo shell-says-$((6*7))\nuname -a\nexit\n";
/// The line the scripted input's first command prints.
pub const SHELL_ANSWER: &str = "shell-says-42";

/// `run` for a Linux L2 (see the module docs).
pub fn run(args: &RunArgs, report: &mut Report) -> Result<(), Failure> {
    let _ = report;
    let kernel = match &args.kernel {
        Some(k) => k.clone(),
        None => debian_kernel()?.image,
    };
    let vmlinux = vmlinux(&kernel)?;
    let initrd = match &args.initrd {
        Some(p) => std::fs::read(p).map_err(|e| Failure(format!("{}: {e}", p.display())))?,
        None => busybox_initramfs(&[], &init_script())?,
    };
    let cmdline = args
        .cmdline
        .clone()
        .unwrap_or_else(|| DEFAULT_CMDLINE.to_string());
    eprintln!("xtask: Linux L2: kernel {}", kernel.display());
    let (image, mrtd) = build_image(
        &vmlinux,
        &initrd,
        &cmdline,
        args.paravisor.as_deref(),
        "linux.igvm",
    )?;
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin());
    // A foreign initramfs runs its own /init: the run succeeds when Linux
    // powers the TD off; only the built-in one must answer the shell.
    let expect_shell = !interactive && args.initrd.is_none();
    boot_echo(
        &image,
        &mrtd,
        args.timeout(),
        interactive,
        true,
        expect_shell,
    )
    .map(|_| ())
}

/// Builds the paravisor (unless `paravisor` is given) and the IGVM TD of
/// `vmlinux`, `initrd` and `cmdline` into the cache as `name`; returns its
/// path and the loader's MRTD (hex).
pub fn build_image(
    vmlinux: &[u8],
    initrd: &[u8],
    cmdline: &str,
    paravisor: Option<&Path>,
    name: &str,
) -> Result<(PathBuf, String), Failure> {
    let packages: &[&str] = if paravisor.is_none() {
        &["paravisor-boot"]
    } else {
        &[]
    };
    let bin_dir = run::build_bare_metal(packages)?;
    let paravisor_path = paravisor
        .map(Path::to_path_buf)
        .unwrap_or_else(|| bin_dir.join("paravisor"));
    let paravisor = std::fs::read(&paravisor_path)
        .map_err(|e| Failure(format!("{}: {e}", paravisor_path.display())))?;
    let inputs = Inputs {
        paravisor: &paravisor,
        kernel: vmlinux,
        initrd: Some(initrd),
        cmdline: Some(cmdline.as_bytes()),
    };
    let image = lvbs_loader_cli::build(&inputs)
        .map_err(|e| Failure(format!("cannot build the IGVM image: {e}")))?;
    let measurement = lvbs_loader_cli::measure(&image)
        .map_err(|e| Failure(format!("the loader cannot measure the image: {e}")))?;
    let mrtd: String = measurement
        .mrtd
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    eprintln!(
        "xtask: Linux L2: {} MiB vmlinux, initrd {} KiB, command line {cmdline:?}",
        vmlinux.len() >> 20,
        initrd.len() >> 10
    );
    eprintln!(
        "xtask: IGVM {} KiB, {} pages ({} measured), TD {} MiB, loader MRTD {mrtd}",
        image.len() >> 10,
        measurement.pages,
        measurement.measured_pages,
        measurement.boot_info.td_memory_bytes >> 20
    );
    let image_path = cache_dir().join(name);
    std::fs::write(&image_path, &image)
        .map_err(|e| Failure(format!("{}: {e}", image_path.display())))?;
    Ok((image_path, mrtd))
}

/// What one console session saw.
pub struct Console {
    /// Every line, in order.
    pub lines: Vec<String>,
    /// Seconds from QEMU's start to each milestone (first occurrence).
    pub marks: Vec<(&'static str, f64)>,
    /// QEMU's exit status.
    pub status: std::process::ExitStatus,
}

impl Console {
    /// Seconds to milestone `name`, if it was seen.
    pub fn mark(&self, name: &str) -> Option<f64> {
        self.marks.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }
}

/// The milestone of the scripted shell's answer.
pub const SHELL_ANSWERED: &str = "shell answered";

/// Runs QEMU with `args` until it exits (or `timeout` s pass: an error).
/// Its serial console goes to stdout (unless `echo` is false); stdin goes to
/// the guest when `interactive`, else [`SCRIPTED_INPUT`] is typed once the
/// userspace marker appears. Milestones: L1 enters Linux, the first kernel
/// line, `/init`, the marker, the shell's answer.
pub fn console(
    args: &[String],
    timeout: u64,
    interactive: bool,
    echo: bool,
    responses: &[(&str, String)],
) -> Result<Console, Failure> {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(args)
        .stdin(if interactive {
            Stdio::inherit()
        } else {
            Stdio::piped()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Failure(format!("could not start qemu-system-x86_64: {e}")))?;
    let mut stdin = child.stdin.take();
    let mut answered = vec![false; responses.len()];
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
    let mut marks: Vec<(&'static str, f64)> = Vec::new();
    let mark = |name: &'static str, marks: &mut Vec<(&'static str, f64)>| {
        if !marks.iter().any(|(n, _)| *n == name) {
            marks.push((name, start.elapsed().as_secs_f64()));
        }
    };
    let mut timed_out = false;
    let mut lines = Vec::new();
    let out = std::io::stdout();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if line.starts_with("paravisor: entering Linux") {
                    mark("L1 enters Linux", &mut marks);
                }
                if line.contains("] Linux version") {
                    mark("first kernel console line", &mut marks);
                }
                if line.contains("Run /init as init process") {
                    mark("kernel runs /init", &mut marks);
                }
                for ((trigger, answer), done) in responses.iter().zip(answered.iter_mut()) {
                    if !*done && line.contains(trigger) {
                        *done = true;
                        if let Some(s) = stdin.as_mut() {
                            let _ = s.write_all(format!("{answer}\n").as_bytes());
                            let _ = s.flush();
                        }
                    }
                }
                if line.contains(USERSPACE_MARKER) {
                    mark("userspace marker", &mut marks);
                    if let Some(mut s) = stdin.take() {
                        let _ = s.write_all(SCRIPTED_INPUT.as_bytes());
                        let _ = s.flush();
                        // Keep the pipe open: EOF on QEMU's stdin is harmless,
                        // but the guest should not see a hang-up first.
                        std::mem::forget(s);
                    }
                }
                if line.contains(SHELL_ANSWER) && !line.contains("echo") {
                    mark(SHELL_ANSWERED, &mut marks);
                }
                if echo {
                    let mut o = out.lock();
                    let _ = writeln!(o, "{line}");
                    let _ = o.flush();
                }
                lines.push(line);
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
    let status = child
        .wait()
        .map_err(|e| Failure(format!("waiting for QEMU: {e}")))?;
    let _ = reader.join();
    for (name, t) in &marks {
        eprintln!("xtask: {name} after {t:.1} s");
    }
    eprintln!("xtask: QEMU ran {:.1} s", start.elapsed().as_secs_f64());
    if timed_out {
        return Err(Failure(format!(
            "timeout: QEMU still ran after {timeout} s (raise it with --timeout)"
        )));
    }
    Ok(Console {
        lines,
        marks,
        status,
    })
}

/// The emulator binary `run::build_bare_metal` built.
fn emulator_path() -> PathBuf {
    cache_dir()
        .parent()
        .and_then(Path::parent)
        .map(|t| {
            t.join("x86_64-unknown-none")
                .join("release")
                .join("tdx-emulator")
        })
        .unwrap_or_else(|| workspace_root().join("target/x86_64-unknown-none/release/tdx-emulator"))
}

/// Boots the image in the emulator under QEMU (see [`console`]) and checks
/// the run: the emulator's MRTD equals the loader's `mrtd`, the TD ended
/// with debug-exit 0, and, if `expect_shell`, the scripted shell answered.
/// The console is printed if `echo`.
pub fn boot_echo(
    image: &Path,
    mrtd: &str,
    timeout: u64,
    interactive: bool,
    echo: bool,
    expect_shell: bool,
) -> Result<Console, Failure> {
    boot_answering(image, mrtd, timeout, interactive, echo, expect_shell, &[])
}

/// [`boot_echo`] that also types `answer` when a console line contains
/// `trigger` (each once), for a scripted guest that asks for input.
pub fn boot_answering(
    image: &Path,
    mrtd: &str,
    timeout: u64,
    interactive: bool,
    echo: bool,
    expect_shell: bool,
    responses: &[(&str, String)],
) -> Result<Console, Failure> {
    let qemu_args = crate::run::qemu_base_args(&emulator_path(), image);
    eprintln!(
        "xtask: qemu-system-x86_64 {} (timeout {timeout} s, {})",
        qemu_args.join(" "),
        if interactive {
            "interactive: the terminal is the serial console, Ctrl-A X quits"
        } else {
            "scripted input"
        }
    );
    let run = console(&qemu_args, timeout, interactive, echo, responses)?;
    let emu_mrtd = run
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("emu: MRTD ").map(|m| m.trim().to_string()));
    match &emu_mrtd {
        Some(m) if m != mrtd => {
            return Err(Failure(format!(
                "MRTD mismatch: emulator {m}, loader {mrtd}"
            )))
        }
        None => return Err(Failure("the emulator printed no MRTD".into())),
        Some(_) => {}
    }
    if run.status.code() != Some(1) {
        return Err(Failure(format!(
            "QEMU exited with {} (debug-exit value {:#x}; 0x7c: the paravisor's L2 loop stopped)",
            run.status,
            run.status.code().unwrap_or(0) >> 1
        )));
    }
    if expect_shell && run.mark(SHELL_ANSWERED).is_none() {
        return Err(Failure(
            "the shell never answered the scripted command".into(),
        ));
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bzimage_payload_fields() {
        let mut img = vec![0u8; 0x3000];
        img[0x1F1] = 3;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x020Fu16.to_le_bytes());
        img[0x248..0x24C].copy_from_slice(&0x100u32.to_le_bytes());
        img[0x24C..0x250].copy_from_slice(&0x40u32.to_le_bytes());
        assert_eq!(bzimage_payload(&img), Some((4 * 512 + 0x100, 0x40)));
        img[0x24C..0x250].copy_from_slice(&0x3000u32.to_le_bytes());
        assert_eq!(bzimage_payload(&img), None, "past the end");
        img[0x202] = b'X';
        assert_eq!(bzimage_payload(&img), None);
        assert_eq!(
            decompressor(&[0x02, 0x21, 0x4C, 0x18]),
            Some(&["lz4", "-dc"][..])
        );
        assert_eq!(decompressor(b"\x7fELF"), None);
    }

    #[test]
    fn cpio_newc() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("init", 0o755, b"#!/bin/sh\n");
        c.symlink("bin/sh", "busybox");
        let a = c.finish();
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 512, 0);
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("init\0"));
        assert!(text.contains("TRAILER!!!"));
        // The file header: mode 0o100755 and size 10.
        let at = text.find("init\0").unwrap();
        let hdr = &text[at - 110..at];
        assert_eq!(&hdr[14..22], "000081ED");
        assert_eq!(&hdr[54..62], "0000000A");
        assert!(init_script().starts_with("#!/bin/sh\n"));
        assert!(init_script().contains("\ncttyhack sh\n"));
    }
}
