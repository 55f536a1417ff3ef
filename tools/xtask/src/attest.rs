//! `cargo xtask attest [--tamper kernel|nonce]`: the attestation demo
//! (docs/attestation.md).
//!
//! 1. Builds the paravisor and the attest guest, and an IGVM image with a
//!    command line and an initrd (the reference image); `loader measure`
//!    gives the verifier its expected MRTD and RTMRs.
//! 2. Boots it (`--tamper kernel`: an image with one byte of the L2 kernel
//!    flipped) and sends a fresh 64-byte nonce over the serial console. The
//!    guest asks the paravisor for a TDREPORT with the nonce as REPORTDATA
//!    and prints the report and the event log.
//! 3. The verifier (`lvbs_loader_cli::verify`) checks the MAC with the
//!    emulator's model key, MRTD against the loader's, every RTMR by
//!    replaying the log and the boot events against the reference image, and
//!    the nonce (`--tamper nonce`: the verifier's challenge is a new nonce,
//!    so the report it gets is a replay of an old one).

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use lvbs_loader_cli::{
    build, build_with, hex, measure, model_report_key, tamper_kernel_gpa, verify, Evidence, Inputs,
    Verdict,
};

use crate::run::{boot_image, build_bare_metal, Report};
use crate::{workspace_root, Failure};

/// What to tamper with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Tamper {
    /// Flip one byte of the L2 kernel in the image that boots.
    Kernel,
    /// Verify the report against a newer nonce than the one the TD signed.
    Nonce,
}

/// Options of `cargo xtask attest`.
#[derive(Args, Debug, Clone)]
pub struct AttestArgs {
    /// Tamper with the kernel or replay an old report; the verifier must refuse.
    #[arg(long, value_enum)]
    pub tamper: Option<Tamper>,
    /// Seconds before QEMU is killed.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
}

/// The L2 command line of the attest image.
pub const CMDLINE: &str = "console=ttyS0 lvbs.attest=1";

/// The attest image's initrd: 12 KiB of recognisable bytes.
fn initrd() -> Vec<u8> {
    b"lvbs-tdx attest initrd\n"
        .iter()
        .copied()
        .cycle()
        .take(12 << 10)
        .collect()
}

pub fn fresh_nonce() -> Result<[u8; 64], Failure> {
    use std::io::Read;
    let mut n = [0u8; 64];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut n))
        .map_err(|e| Failure(format!("cannot read /dev/urandom for a nonce: {e}")))?;
    Ok(n)
}

fn out_dir() -> PathBuf {
    let root = workspace_root();
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { root.join(p) })
        .unwrap_or_else(|| root.join("target"))
        .join("lvbs-tdx")
}

/// Boots the attest image once (tampered as asked) and returns the verdict.
pub fn attest_once(tamper: Option<Tamper>, timeout: u64) -> Result<Verdict, Failure> {
    let bin_dir = build_bare_metal(&["paravisor-boot", "lvbs-attest-guest"])?;
    let read = |name: &str| {
        std::fs::read(bin_dir.join(name)).map_err(|e| Failure(format!("cannot read {name}: {e}")))
    };
    let paravisor = read("paravisor")?;
    let guest = read("attest-guest")?;
    let initrd = initrd();
    let inputs = Inputs {
        paravisor: &paravisor,
        kernel: &guest,
        initrd: Some(&initrd),
        cmdline: Some(CMDLINE.as_bytes()),
    };
    let dir = out_dir();
    let reference = build(&inputs).map_err(|e| Failure(format!("loader build: {e}")))?;
    let expected = measure(&reference).map_err(|e| Failure(format!("loader measure: {e}")))?;
    let reference_path = dir.join("attest.igvm");
    std::fs::create_dir_all(&dir).map_err(|e| Failure(format!("{}: {e}", dir.display())))?;
    std::fs::write(&reference_path, &reference)
        .map_err(|e| Failure(format!("{}: {e}", reference_path.display())))?;
    eprintln!("xtask: reference image {}", reference_path.display());
    eprintln!("xtask: expected MRTD  {}", hex(&expected.mrtd));
    for (i, r) in expected.rtmr.iter().enumerate() {
        eprintln!("xtask: expected RTMR{i} {}", hex(r));
    }

    let (boot, boot_path) = match tamper {
        Some(Tamper::Kernel) => {
            let layout = inputs
                .layout()
                .map_err(|e| Failure(format!("layout: {e}")))?;
            let gpa = tamper_kernel_gpa(&layout);
            eprintln!("xtask: --tamper kernel: flipping the L2 kernel byte at GPA {gpa:#x}");
            let img = build_with(&inputs, Some(gpa)).map_err(|e| Failure(format!("{e}")))?;
            (img, dir.join("attest-tampered.igvm"))
        }
        _ => (reference.clone(), dir.join("attest-boot.igvm")),
    };
    let nonce = fresh_nonce()?;
    eprintln!("xtask: verifier nonce {}", hex(&nonce));
    let serial = format!("{}\n", hex(&nonce));
    let mut report = Report::default();
    let out = boot_image(
        &boot,
        &boot_path,
        timeout,
        Some(serial.as_bytes()),
        &mut report,
        &mut |_| {},
    )?;
    let console = out.lines.join("\n");
    let evidence = Evidence::from_console(&console)
        .map_err(|e| Failure(format!("no evidence on the console: {e}")))?;
    let evidence_path = dir.join("attest-evidence.txt");
    std::fs::write(&evidence_path, evidence.to_console())
        .map_err(|e| Failure(format!("{}: {e}", evidence_path.display())))?;
    let challenge = match tamper {
        Some(Tamper::Nonce) => {
            let newer = fresh_nonce()?;
            eprintln!(
                "xtask: --tamper nonce: the verifier now challenges with {} and gets the report for the old nonce",
                hex(&newer)
            );
            newer
        }
        _ => nonce,
    };
    eprintln!(
        "xtask: MRTD: loader {} / emulator {} / report {}",
        hex(&expected.mrtd),
        out.mrtd,
        hex(&evidence.report[528..576])
    );
    eprintln!(
        "xtask: verify by hand: loader verify --image {} --evidence {} --nonce {}",
        reference_path.display(),
        evidence_path.display(),
        hex(&challenge)
    );
    let verdict = verify(&expected, &evidence, &challenge, &model_report_key());
    print_verdict(&verdict, "");
    Ok(verdict)
}

/// Prints every check of `verdict`, then `verifier: ACCEPTED` (followed by
/// `what`) or the refused fields.
pub fn print_verdict(verdict: &Verdict, what: &str) {
    for c in &verdict.checks {
        println!(
            "verifier: {} {}: {}",
            if c.ok { "ok     " } else { "REFUSED" },
            c.field,
            c.detail
        );
    }
    if verdict.accepted() {
        println!("verifier: ACCEPTED{what}");
    } else {
        println!(
            "verifier: REFUSED ({})",
            verdict.refused_fields().join(", ")
        );
    }
}

/// `cargo xtask attest`: fails when the verifier refuses (so a tamper mode fails).
pub fn attest(args: &AttestArgs) -> Result<(), Failure> {
    let v = attest_once(args.tamper, args.timeout)?;
    if v.accepted() {
        Ok(())
    } else {
        Err(Failure(format!(
            "the verifier refused the evidence: {}",
            v.refused_fields().join(", ")
        )))
    }
}

/// The attestation step of `cargo xtask test`: the honest run is accepted,
/// `--tamper kernel` is refused on RTMR1 (MRTD still agrees: the kernel is
/// measured by the paravisor, not by the loader), `--tamper nonce` on the
/// nonce alone.
pub fn attest_suite(timeout: u64) -> Result<(), Failure> {
    let ok = attest_once(None, timeout)?;
    if !ok.accepted() {
        return Err(Failure(format!(
            "attest: the verifier refused an honest TD: {}",
            ok.refused_fields().join(", ")
        )));
    }
    let k = attest_once(Some(Tamper::Kernel), timeout)?;
    let fields = k.refused_fields();
    if fields != ["RTMR1"] {
        return Err(Failure(format!(
            "attest --tamper kernel: expected a refusal on RTMR1 alone, got [{}]",
            fields.join(", ")
        )));
    }
    let n = attest_once(Some(Tamper::Nonce), timeout)?;
    let fields = n.refused_fields();
    if fields != ["nonce"] {
        return Err(Failure(format!(
            "attest --tamper nonce: expected a refusal on the nonce alone, got [{}]",
            fields.join(", ")
        )));
    }
    eprintln!("xtask: attest: honest TD accepted; tampered kernel refused (RTMR1); replayed report refused (nonce)");
    Ok(())
}
