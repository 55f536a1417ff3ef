//! `cargo xtask attacks --linux`: Debian's cloud kernel under the paravisor
//! runs the LVBS boot sequence with the guest-side HEKI client, validates a
//! Debian-signed module (and refuses a tampered copy), then replays the LVBS
//! KUnit attacks and LKDTM's permission tests from inside Linux
//! (`tests/linux-guest`, docs/linux.md), and finally runs the TEE client
//! scenarios from Linux user space through `/dev/lvbs_tee`
//! (`tests/tee-linux`, docs/tee.md). It ends with `tee: N passed, 0 failed`
//! and `attacks: N blocked, 0 allowed`, or fails.

use crate::guest_modules::{self, GuestModules};
use crate::linux::{self, DebianKernel};
use crate::Failure;

/// Small Debian-signed modules without dependencies, the first one present
/// is loaded and validated: `(path under kernel/, module name)`.
const TEST_MODULES: [(&str, &str); 3] = [
    ("lib/crc7.ko", "crc7"),
    ("lib/crc-itu-t.ko", "crc_itu_t"),
    ("lib/libcrc32c.ko", "libcrc32c"),
];

/// Fewest attacks the run must report (issue 6).
pub const MIN_ATTACKS: usize = 20;

/// Kernel command line: the full boot log, so the modules' KERN_INFO lines
/// reach the console.
fn cmdline() -> String {
    linux::VERBOSE_CMDLINE.to_string()
}

/// The `/init` of the attack run. Symbol addresses come from /proc/kallsyms
/// (modules cannot look them up themselves).
fn init_script(test_module: &str) -> String {
    format!(
        r#"#!/bin/sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
ks() {{
    a=$(awk -v s="$1" '$3 == s {{ print "0x" $1; exit }}' /proc/kallsyms)
    [ -n "$a" ] || echo "lvbs-tdx: symbol $1 not in /proc/kallsyms" >&2
    echo "${{a:-0}}"
}}
echo "lvbs-tdx: loading the Debian-signed module {test_module}"
insmod /lvbs/{test_module}.ko || echo "lvbs-tdx: insmod {test_module} FAILED"
insmod /lvbs/lvbs_heki.ko \
    text_start=$(ks _text) text_end=$(ks _etext) \
    rodata_start=$(ks __start_rodata) rodata_end=$(ks __end_rodata) \
    data_start=$(ks _sdata) data_end=$(ks _edata) \
    bss_start=$(ks __bss_start) bss_end=$(ks __bss_stop) \
    modules_list=$(ks modules) certs=/lvbs/system_certs.der \
    test_module={test_module} test_module_path=/lvbs/{test_module}.ko \
    || echo "lvbs-tdx: insmod lvbs_heki FAILED"
insmod /lvbs/lvbs_attacks.ko \
    idt_table=$(ks idt_table) rodata_target=$(ks linux_banner) \
    ro_after_init_target=$(ks __start_ro_after_init) text_target=$(ks sys_ni_syscall) \
    rodata_start=$(ks __start_rodata) rodata_end=$(ks __end_rodata) \
    || echo "lvbs-tdx: insmod lvbs_attacks FAILED"
echo 1 > /sys/module/lvbs_heki/parameters/end_of_boot || echo "lvbs-tdx: end of boot FAILED"
# A child process writes the trigger: the user-memory attacks borrow its mm.
sh -c 'echo 1 > /sys/module/lvbs_attacks/parameters/run'
echo "lvbs-tdx: the TEE from user space"
/lvbs/lvbs-tee-client || echo "lvbs-tdx: lvbs-tee-client FAILED"
echo "{nonce_prompt}"
read -r nonce
/lvbs/lvbs-tee-client attest "$nonce" || echo "lvbs-tdx: attestation FAILED"
echo "{marker}: $(uname -r), attacks done, uptime $(cut -d' ' -f1 /proc/uptime) s"
cttyhack sh
echo "lvbs-tdx: the shell exited, powering off"
sleep 1
poweroff -f
"#,
        marker = linux::USERSPACE_MARKER,
        nonce_prompt = NONCE_PROMPT
    )
}

/// The line after which `/init` reads the verifier's nonce from the console.
const NONCE_PROMPT: &str = "lvbs-tdx: attestation nonce?";

/// Fewest checks the Linux TEE client must pass (every TA block).
pub const MIN_TEE_CHECKS: u32 = 40;

/// `(passed, failed)` of the TEE client's `tee: done, N passed, M failed`.
pub fn tee_summary(lines: &[String]) -> Option<(u32, u32)> {
    lines.iter().rev().find_map(|l| {
        let rest = l.split("tee: done, ").nth(1)?;
        let mut words = rest.split_whitespace();
        let passed = words.next()?.parse().ok()?;
        words.next()?; // "passed,"
        let failed = words.next()?.parse().ok()?;
        Some((passed, failed))
    })
}

/// Verifies the evidence the guest printed against the image and `nonce`:
/// MRTD, RTMR0 (BootInfo and the Linux policy), RTMR1 (kernel, initrd,
/// command line), the event log's replay (RTMR2: the Debian module the
/// paravisor admitted) and the nonce in REPORTDATA.
fn attestation(image: &std::path::Path, lines: &[String], nonce: &[u8; 64]) -> Result<(), String> {
    let bytes = std::fs::read(image).map_err(|e| format!("{}: {e}", image.display()))?;
    let expected = lvbs_loader_cli::measure(&bytes).map_err(|e| format!("loader measure: {e}"))?;
    let evidence = lvbs_loader_cli::Evidence::from_console(&lines.join("\n"))
        .map_err(|e| format!("no attestation evidence from Linux: {e}"))?;
    let verdict = lvbs_loader_cli::verify(
        &expected,
        &evidence,
        nonce,
        &lvbs_loader_cli::model_report_key(),
    );
    crate::attest::print_verdict(&verdict, " (Linux evidence from /dev/lvbs_tee)");
    if verdict.accepted() {
        Ok(())
    } else {
        Err(format!(
            "the verifier refused the Linux evidence: {}",
            verdict.refused_fields().join(", ")
        ))
    }
}

/// Counts of one run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// `lvbs-attack: X: BLOCKED` lines.
    pub blocked: usize,
    /// `... ALLOWED` lines.
    pub allowed: usize,
    /// `... ERROR` lines.
    pub errors: usize,
    /// Blocked attacks whose expected stop is an EPT violation.
    pub blocked_by_ept: usize,
    /// The paravisor's `L2 EPT violation` log lines.
    pub ept_violations: usize,
}

/// Reads the attack lines and the paravisor's EPT-violation lines.
pub fn tally(lines: &[String]) -> Tally {
    let mut t = Tally::default();
    for l in lines {
        if l.contains("L2 EPT violation:") {
            t.ept_violations += 1;
        }
        let Some(rest) = l.split("lvbs-attack: ").nth(1) else {
            continue;
        };
        if rest.contains(": BLOCKED (") {
            t.blocked += 1;
            if rest.contains("expected EPT)") {
                t.blocked_by_ept += 1;
            }
        } else if rest.contains(": ALLOWED (") {
            t.allowed += 1;
        } else if rest.contains(": ERROR (") {
            t.errors += 1;
        }
    }
    t
}

/// Lines the HEKI client must have printed.
const REQUIRED: [&str; 5] = [
    "lvbs_heki: LOCK_REGS on CPU 0: OK",
    "lvbs_heki: LOAD_KDATA module certificates",
    ", tampered copy",
    "lvbs_heki: boot sequence: OK",
    "lvbs_heki: SIGNAL_END_OF_BOOT: OK",
];

/// [`attacks`] as the last step of `cargo xtask test`: it needs QEMU and
/// Debian's package mirror; outside CI a missing QEMU skips it with a message
/// (as the other emulator runs do).
pub fn attacks_in_suite(timeout: u64) -> Result<(), Failure> {
    if let Err(Failure(why)) = crate::run::ensure_qemu() {
        if std::env::var_os("CI").is_some() {
            return Err(Failure(format!("CI must run the Linux attacks: {why}")));
        }
        eprintln!("xtask: SKIPPED the Linux attacks: {why}");
        return Ok(());
    }
    attacks(timeout)
}

/// `cargo xtask attacks --linux`.
pub fn attacks(timeout: u64) -> Result<(), Failure> {
    // The kernel and its headers must come from the same package lists: if
    // stale lists name a kernel whose headers the mirror dropped, update
    // and resolve both again.
    let (k, GuestModules { heki, attacks }): (DebianKernel, GuestModules) =
        linux::with_fresh_lists(|| {
            let k = linux::debian_kernel()?;
            let modules = guest_modules::build(&k)?;
            Ok((k, modules))
        })?;
    let tee_client = guest_modules::build_tee_client()?;
    let vmlinux = linux::vmlinux(&k.image)?;
    let certs = guest_modules::kernel_certificates(&vmlinux);
    if certs.is_empty() {
        return Err(Failure(format!(
            "no X.509 certificate in {}",
            k.image.display()
        )));
    }
    let modules = linux::cache_dir()
        .join("root/lib/modules")
        .join(&k.release)
        .join("kernel");
    let (test_path, test_name) = TEST_MODULES
        .iter()
        .map(|(p, n)| (modules.join(p), *n))
        .find(|(p, _)| p.exists())
        .ok_or_else(|| Failure(format!("none of {TEST_MODULES:?} in {}", modules.display())))?;
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| Failure(format!("{}: {e}", p.display())))
    };
    let (heki_ko, attacks_ko, test_ko) = (read(&heki)?, read(&attacks)?, read(&test_path)?);
    let tee_bin = read(&tee_client)?;
    let certs_der = certs.concat();
    eprintln!(
        "xtask: {} ({}): {} built-in certificate(s), test module {test_name} ({} bytes, Debian-signed)",
        k.package,
        k.release,
        certs.len(),
        test_ko.len()
    );
    let test_file = format!("lvbs/{test_name}.ko");
    let initrd = linux::busybox_initramfs(
        &[
            ("lvbs/lvbs_heki.ko", 0o644, &heki_ko),
            ("lvbs/lvbs_attacks.ko", 0o644, &attacks_ko),
            ("lvbs/system_certs.der", 0o644, &certs_der),
            (&test_file, 0o644, &test_ko),
            ("lvbs/lvbs-tee-client", 0o755, &tee_bin),
        ],
        &init_script(test_name),
    )?;
    let (image, mrtd) =
        linux::build_image(&vmlinux, &initrd, &cmdline(), None, "linux-attacks.igvm")?;
    let nonce = crate::attest::fresh_nonce()?;
    let lines = linux::boot_answering(
        &image,
        &mrtd,
        timeout,
        false,
        true,
        true,
        &[(NONCE_PROMPT, lvbs_loader_cli::hex(&nonce))],
    )?
    .lines;

    let mut problems: Vec<String> = REQUIRED
        .iter()
        .filter(|r| !lines.iter().any(|l| l.contains(*r)))
        .map(|r| format!("no `{r}` line"))
        .collect();
    let said = |needle: &str| lines.iter().any(|l| l.contains(needle));
    if !said(&format!("VALIDATE_MODULE {test_name}, tampered copy")) || !said("tampered copy") {
        problems.push("the tampered module was not submitted".into());
    } else if lines
        .iter()
        .any(|l| l.contains(", tampered copy") && l.contains("ACCEPTED"))
    {
        problems.push("the tampered module was ACCEPTED".into());
    }
    if !lines
        .iter()
        .any(|l| l.contains(", signed file") && l.contains("accepted, token"))
    {
        problems.push(format!("the Debian-signed {test_name} was not accepted"));
    }
    match attestation(&image, &lines, &nonce) {
        Ok(()) => {}
        Err(why) => problems.push(why),
    }
    let tee = tee_summary(&lines);
    match tee {
        Some((passed, 0)) if passed >= MIN_TEE_CHECKS => {}
        Some((passed, failed)) => problems.push(format!(
            "the Linux TEE client: {passed} passed, {failed} failed (at least {MIN_TEE_CHECKS} must pass)"
        )),
        None => problems.push("the Linux TEE client printed no summary".into()),
    }
    let t = tally(&lines);
    let total = t.blocked + t.allowed + t.errors;
    eprintln!(
        "xtask: {} attack line(s): {} blocked ({} by an EPT violation; the paravisor logged {} EPT violation(s)), {} allowed, {} error(s)",
        total, t.blocked, t.blocked_by_ept, t.ept_violations, t.allowed, t.errors
    );
    if t.ept_violations < t.blocked_by_ept {
        problems.push(format!(
            "{} attacks died expecting an EPT violation, but the paravisor logged only {}",
            t.blocked_by_ept, t.ept_violations
        ));
    }
    if total < MIN_ATTACKS {
        problems.push(format!("only {total} attacks ran (at least {MIN_ATTACKS})"));
    }
    if t.errors > 0 {
        problems.push(format!("{} attack(s) could not run", t.errors));
    }
    if let Some((passed, failed)) = tee {
        println!("tee: {passed} passed, {failed} failed (Linux user space)");
    }
    println!("attacks: {} blocked, {} allowed", t.blocked, t.allowed);
    if t.allowed > 0 {
        problems.push(format!("{} attack(s) ALLOWED", t.allowed));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure(problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tee_summary() {
        let lines = vec![
            "tee: check km_sign: PASS".to_string(),
            "tee: done, 64 passed, 1 failed".to_string(),
        ];
        assert_eq!(tee_summary(&lines), Some((64, 1)));
        assert_eq!(tee_summary(&lines[..1]), None);
    }

    #[test]
    fn tallies_attack_and_violation_lines() {
        let lines: Vec<String> = [
            "[    9.1] lvbs-attack: CR0.WP: BLOCKED (#GP, CR0 0x80050033 -> 0x80050033; expected #GP)",
            "[    9.2] lvbs-attack: EXEC_DATA: starting (expect EPT)",
            "paravisor: WARN: L2 EPT violation: fetch GPA 0x2000 GLA 0x0 (valid false) CPL 0 RIP 0x0, page allows rw--u: #GP(0)",
            "[    9.3] lvbs-attack: EXEC_DATA: BLOCKED (the attacking thread faulted and was killed; expected EPT)",
            "[    9.4] lvbs-attack: MSR_STAR: ALLOWED (no fault)",
            "[    9.5] lvbs-attack: LTR: ERROR (no memory)",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            tally(&lines),
            Tally {
                blocked: 2,
                allowed: 1,
                errors: 1,
                blocked_by_ept: 1,
                ept_violations: 1
            }
        );
    }
}
