//! `heki`: sign and verify Linux kernel modules in the format the LVBS
//! paravisor checks (see the library docs).
//!
//! ```text
//! heki sign-module --key signing_key.pem [--cert cert.pem|.der] [--hash sha256] [--keyid] in.ko -o out.ko
//! heki verify-module --cert cert.pem [--cert ...] [--blocklist list.txt] file.ko
//! heki extract-signature file.ko [--content content.bin] [--signature sig.p7s]
//! ```
//!
//! `verify-module` prints `OK` and the signer, or `FAILED` and the precise
//! reason with the errno the paravisor would return; it exits 1 on failure.

use clap::{Parser, Subcommand};
use heki_cli::{blocklist_from, keyring_from, load_certs, load_private_key, parse_digest};
use heki_cli::{sign_module, verify, SignOptions};
use heki_tdx::abi::ToErrno;
use heki_tdx::modsig::{split_appended_signature, Blocklist};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "heki",
    about = "Linux module signatures for the lvbs-tdx paravisor"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Append a PKCS#7 signature like scripts/sign-file (no signed attributes, detached).
    SignModule {
        /// RSA private key, PEM or DER (a kernel signing_key.pem with the
        /// certificate in it also works).
        #[arg(long)]
        key: PathBuf,
        /// Signer certificate, PEM or DER; defaults to the certificate in the key file.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Digest: sha256, sha384 or sha512.
        #[arg(long, default_value = "sha256")]
        hash: String,
        /// Identify the signer by subject key identifier (sign-file -k).
        #[arg(long)]
        keyid: bool,
        /// Unsigned module.
        input: PathBuf,
        /// Where to write the signed module.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Verify a signed module against trusted certificates.
    VerifyModule {
        /// Trusted certificate file(s), PEM or DER (several certificates per file allowed).
        #[arg(long, required = true)]
        cert: Vec<PathBuf>,
        /// Revoked hashes, one `bin:<hex>` or `tbs:<hex>` per line.
        #[arg(long)]
        blocklist: Option<PathBuf>,
        /// Signed module.
        file: PathBuf,
    },
    /// Split a signed module into its content and its DER CMS signature.
    ExtractSignature {
        /// Signed module.
        file: PathBuf,
        /// Where to write the signed content.
        #[arg(long)]
        content: Option<PathBuf>,
        /// Where to write the DER CMS signature.
        #[arg(long)]
        signature: Option<PathBuf>,
    },
}

fn read(path: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn write(path: &PathBuf, data: &[u8]) -> Result<(), String> {
    std::fs::write(path, data).map_err(|e| format!("{}: {e}", path.display()))
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::SignModule {
            key,
            cert,
            hash,
            keyid,
            input,
            output,
        } => {
            let key_file = read(&key)?;
            let private = load_private_key(&key_file)?;
            let cert = load_certs(&match &cert {
                Some(c) => read(c)?,
                None => key_file,
            })?;
            let opts = SignOptions {
                digest: parse_digest(&hash)?,
                key_id: keyid,
            };
            let signed = sign_module(&read(&input)?, &private, &cert, opts)?;
            write(&output, &signed)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::VerifyModule {
            cert,
            blocklist,
            file,
        } => {
            let certs = cert.iter().map(read).collect::<Result<Vec<_>, _>>()?;
            let (ring, report) = keyring_from(&certs)?;
            for (i, why) in &report.skipped {
                eprintln!("warning: certificate {i} not usable: {why}");
            }
            let blocklist = match &blocklist {
                Some(p) => blocklist_from(
                    &String::from_utf8(read(p)?).map_err(|_| "blocklist is not UTF-8")?,
                )?,
                None => Blocklist::new(),
            };
            match verify(&read(&file)?, &ring, &blocklist) {
                Ok(v) => {
                    println!(
                        "OK: {}: signed by {} ({}, {} signed attributes, {} bytes)",
                        file.display(),
                        v.signer,
                        v.digest,
                        if v.signed_attributes { "with" } else { "no" },
                        v.content_len
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("FAILED: {}: {e} ({})", file.display(), e.errno());
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::ExtractSignature {
            file,
            content,
            signature,
        } => {
            let data = read(&file)?;
            let parts = split_appended_signature(&data).map_err(|e| e.to_string())?;
            if let Some(p) = &content {
                write(p, parts.content)?;
            }
            if let Some(p) = &signature {
                write(p, parts.cms)?;
            }
            println!(
                "content {} bytes, signature {} bytes",
                parts.content.len(),
                parts.cms.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("heki: {e}");
            ExitCode::FAILURE
        }
    }
}
