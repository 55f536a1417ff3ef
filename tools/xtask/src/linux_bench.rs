//! `cargo xtask boot-ratio`: time to the busybox shell under the paravisor
//! in the emulator against the same kernel, initramfs and command line under
//! plain QEMU TCG (no emulator, no paravisor), with and without `quiet`,
//! and the L2 exits of the paravisor run by reason (docs/linux.md, issue 6
//! budget: at most 3×).

use crate::linux::{self, SHELL_ANSWERED};
use crate::Failure;

/// VMX basic exit reasons the Linux boot produces (SDM Vol. 3 Appendix C;
/// 52 is the TD's TSC deadline, tdx-abi.md §2.7).
fn reason_name(reason: u32) -> &'static str {
    match reason {
        1 => "external interrupt",
        7 => "interrupt window",
        10 => "CPUID",
        12 => "HLT",
        18 => "VMCALL",
        28 => "CR access",
        30 => "I/O",
        31 => "RDMSR",
        32 => "WRMSR",
        46 => "GDTR/IDTR access",
        47 => "LDTR/TR access",
        48 => "EPT violation",
        52 => "TSC deadline",
        55 => "XSETBV",
        _ => "other",
    }
}

/// `(reason, count)` pairs of the paravisor's `L2 exits by reason:` line.
pub fn exits_by_reason(lines: &[String]) -> Vec<(u32, u64)> {
    lines
        .iter()
        .rev()
        .find_map(|l| l.split("L2 exits by reason: ").nth(1))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|p| {
                    let (r, n) = p.split_once(':')?;
                    Some((r.parse().ok()?, n.parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `cargo xtask boot-ratio --runs N`.
pub fn boot_ratio(runs: u32, timeout: u64) -> Result<(), Failure> {
    let runs = runs.max(1);
    let k = linux::debian_kernel()?;
    let vmlinux = linux::vmlinux(&k.image)?;
    let initrd = linux::busybox_initramfs(&[], &linux::init_script())?;
    let initrd_path = linux::cache_dir().join("initramfs.cpio");
    let mut summary = Vec::new();
    for (label, cmdline) in [
        ("verbose console", linux::VERBOSE_CMDLINE.to_string()),
        ("quiet (the default)", linux::DEFAULT_CMDLINE.to_string()),
    ] {
        let (image, mrtd) =
            linux::build_image(&vmlinux, &initrd, &cmdline, None, "linux-bench.igvm")?;
        let plain_args: Vec<String> = [
            "-machine",
            "q35",
            "-accel",
            "tcg",
            "-cpu",
            "max",
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
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "-kernel".to_string(),
            k.image.display().to_string(),
            "-initrd".to_string(),
            initrd_path.display().to_string(),
            "-append".to_string(),
            cmdline.clone(),
        ])
        .collect();
        let (mut para, mut plain) = (Vec::new(), Vec::new());
        let mut exits = Vec::new();
        for run in 1..=runs {
            eprintln!("xtask: boot-ratio ({label}) run {run}/{runs}: paravisor in the emulator");
            let c = linux::boot_echo(&image, &mrtd, timeout, false, false, true)?;
            para.push(
                c.mark(SHELL_ANSWERED)
                    .ok_or_else(|| Failure("no shell answer".into()))?,
            );
            exits = exits_by_reason(&c.lines);
            eprintln!("xtask: boot-ratio ({label}) run {run}/{runs}: plain QEMU TCG");
            let c = linux::console(&plain_args, timeout, false, false, &[])?;
            plain.push(
                c.mark(SHELL_ANSWERED)
                    .ok_or_else(|| Failure("plain QEMU: no shell answer".into()))?,
            );
        }
        let (p, q) = (median(para.clone()), median(plain.clone()));
        let total: u64 = exits.iter().map(|(_, n)| n).sum();
        let mut line = format!(
            "boot-ratio ({label}): shell after {p:.2} s under the paravisor vs {q:.2} s plain TCG = {:.2}x (median of {runs}; runs {para:.2?} vs {plain:.2?}); {total} L2 exits:",
            p / q
        );
        for (r, n) in &exits {
            line.push_str(&format!(" {} {n} ({r}),", reason_name(*r)));
        }
        summary.push(line.trim_end_matches(',').to_string());
    }
    for l in &summary {
        println!("{l}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_exit_line() {
        let lines = vec![
            "paravisor: L2 exits by reason: 7:337 10:1011 30:34388".to_string(),
            "other".to_string(),
        ];
        assert_eq!(
            exits_by_reason(&lines),
            vec![(7, 337), (10, 1011), (30, 34388)]
        );
        assert_eq!(reason_name(30), "I/O");
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }
}
