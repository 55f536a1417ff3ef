//! `loader`: build TDX IGVM images, print their expected measurements, and
//! verify attestation evidence (`docs/attestation.md`).
//!
//! ```text
//! loader build --paravisor <elf> --kernel <elf> [--initrd <file>] [--cmdline <text>] -o <image.igvm>
//! loader measure <image.igvm>
//! loader verify --image <image.igvm> --evidence <console.txt> --nonce <128 hex digits>
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lvbs_loader_cli::{build, hex, measure, model_report_key, unhex, verify, Evidence, Inputs};

#[derive(Parser)]
#[command(
    name = "loader",
    about = "lvbs-tdx IGVM loader and attestation verifier"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a TDX IGVM image.
    Build {
        /// The paravisor ELF.
        #[arg(long)]
        paravisor: PathBuf,
        /// The L2 kernel ELF (linked at 0x0100_0000).
        #[arg(long)]
        kernel: PathBuf,
        /// An initrd.
        #[arg(long)]
        initrd: Option<PathBuf>,
        /// The L2 command line.
        #[arg(long)]
        cmdline: Option<String>,
        /// Output file.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Print MRTD and the expected RTMRs of an image without running it.
    Measure {
        /// The IGVM image.
        image: PathBuf,
    },
    /// Verify a TDREPORT and event log (console lines) against an image and a nonce.
    Verify {
        /// The IGVM image the TD should have booted.
        #[arg(long)]
        image: PathBuf,
        /// A console transcript with `attest: report` and `attest: log` lines.
        #[arg(long)]
        evidence: PathBuf,
        /// The 64-byte nonce the verifier sent, as hex.
        #[arg(long)]
        nonce: String,
    },
}

fn read(p: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
}

fn run(cli: Cli) -> Result<bool, String> {
    match cli.command {
        Command::Build {
            paravisor,
            kernel,
            initrd,
            cmdline,
            output,
        } => {
            let pv = read(&paravisor)?;
            let k = read(&kernel)?;
            let i = initrd.as_ref().map(read).transpose()?;
            let image = build(&Inputs {
                paravisor: &pv,
                kernel: &k,
                initrd: i.as_deref(),
                cmdline: cmdline.as_deref().map(str::as_bytes),
            })
            .map_err(|e| e.to_string())?;
            std::fs::write(&output, &image)
                .map_err(|e| format!("cannot write {}: {e}", output.display()))?;
            let m = measure(&image).map_err(|e| e.to_string())?;
            println!("wrote {} ({} bytes)", output.display(), image.len());
            println!("MRTD  {}", hex(&m.mrtd));
            Ok(true)
        }
        Command::Measure { image } => {
            let m = measure(&read(&image)?).map_err(|e| e.to_string())?;
            println!(
                "pages {} ({} measured, the rest added unmeasured)",
                m.pages, m.measured_pages
            );
            println!("MRTD  {}", hex(&m.mrtd));
            for (i, r) in m.rtmr.iter().enumerate() {
                println!("RTMR{i} {}", hex(r));
            }
            println!("boot events:");
            for e in &m.boot_events {
                println!("  RTMR{} {:<20} {}", e.rtmr, e.name(), hex(&e.digest));
            }
            Ok(true)
        }
        Command::Verify {
            image,
            evidence,
            nonce,
        } => {
            let m = measure(&read(&image)?).map_err(|e| e.to_string())?;
            let text = String::from_utf8_lossy(&read(&evidence)?).into_owned();
            let ev = Evidence::from_console(&text).map_err(|e| e.to_string())?;
            let nonce: [u8; 64] = unhex(&nonce)
                .map_err(|e| e.to_string())?
                .try_into()
                .map_err(|_| "the nonce must be 64 bytes (128 hex digits)".to_string())?;
            let verdict = verify(&m, &ev, &nonce, &model_report_key());
            for c in &verdict.checks {
                println!(
                    "verifier: {} {}: {}",
                    if c.ok { "ok     " } else { "REFUSED" },
                    c.field,
                    c.detail
                );
            }
            if verdict.accepted() {
                println!("verifier: ACCEPTED");
            } else {
                println!(
                    "verifier: REFUSED ({})",
                    verdict.refused_fields().join(", ")
                );
            }
            Ok(verdict.accepted())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("loader: {e}");
            ExitCode::from(2)
        }
    }
}
