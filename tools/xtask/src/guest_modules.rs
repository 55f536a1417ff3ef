//! The guest side of LVBS for Linux (`tests/linux-guest`): the HEKI client
//! `lvbs_heki.ko` and the attack module `lvbs_attacks.ko`, built out of tree
//! against Debian's headers for the exact kernel under test, and the
//! kernel's module-signing certificates the client hands to LOAD_KDATA.
//!
//! Headers are not installed: `linux-headers-<release>`, its
//! `linux-headers-<abi>-common` and `linux-kbuild-<abi>` are `apt-get
//! download`ed and unpacked into the cache (shared/reference/env-probe.md
//! §13); the one fix-up is the absolute `include` of the common Makefile.

use std::path::{Path, PathBuf};
use std::process::Command;

use der::Decode;

use crate::linux::{self, DebianKernel};
use crate::{workspace_root, Failure};

/// The two modules, built.
pub struct GuestModules {
    /// `lvbs_heki.ko`.
    pub heki: PathBuf,
    /// `lvbs_attacks.ko`.
    pub attacks: PathBuf,
}

/// Host tools the build needs, with the Debian package that has each.
const TOOLS: [(&str, &str); 4] = [
    ("make", "make"),
    ("gcc", "gcc"),
    ("strip", "binutils"),
    ("lz4", "lz4"),
];

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Installs the missing [`TOOLS`] (as root), or says what to install.
pub fn ensure_tools() -> Result<(), Failure> {
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(t, _)| !have(t))
        .map(|(_, p)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !crate::run::is_root() {
        return Err(Failure(format!(
            "missing host tools: apt-get install {}",
            missing.join(" ")
        )));
    }
    let install = || {
        linux::sh(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing),
            &format!("apt-get install {}", missing.join(" ")),
        )
        .map(|_| ())
    };
    linux::with_fresh_lists(install)
}

/// Fetches the headers of `k` and builds both modules; returns their paths.
pub fn build(k: &DebianKernel) -> Result<GuestModules, Failure> {
    ensure_tools()?;
    let dir = linux::cache_dir();
    let headers_pkg = format!("linux-headers-{}", k.release);
    linux::with_fresh_lists(|| {
        linux::fetch_deb(&dir, &headers_pkg)?;
        let common = linux::depends_on(&headers_pkg, "linux-headers-")?;
        linux::fetch_deb(&dir, &common)?;
        let kbuild = linux::depends_on(&headers_pkg, "linux-kbuild-")?;
        linux::fetch_deb(&dir, &kbuild)?;
        Ok(())
    })?;
    let root = dir.join("root");
    let headers = root.join("usr/src").join(&headers_pkg);
    fix_makefile(&headers, &root)?;

    let build = dir.join("guest-modules");
    let _ = std::fs::remove_dir_all(&build);
    std::fs::create_dir_all(&build).map_err(|e| Failure(format!("{}: {e}", build.display())))?;
    let src = workspace_root().join("tests/linux-guest");
    for name in ["Kbuild", "lvbs_heki.h", "lvbs_heki.c", "lvbs_attacks.c"] {
        std::fs::copy(src.join(name), build.join(name))
            .map_err(|e| Failure(format!("{}: {e}", src.join(name).display())))?;
    }
    eprintln!(
        "xtask: building tests/linux-guest against {} (out of tree)",
        headers.display()
    );
    linux::sh(
        Command::new("make")
            .arg("-C")
            .arg(&headers)
            .arg(format!("M={}", build.display()))
            .arg("CONFIG_DEBUG_INFO_BTF_MODULES=")
            .arg("modules"),
        "make modules (tests/linux-guest)",
    )?;
    let mut ko = Vec::new();
    for name in ["lvbs_heki.ko", "lvbs_attacks.ko"] {
        let path = build.join(name);
        // Debian builds with debug info; the initramfs does not need it.
        linux::sh(
            Command::new("strip").arg("--strip-debug").arg(&path),
            &format!("strip {name}"),
        )?;
        ko.push(path);
    }
    let attacks = ko.pop().expect("two modules");
    let heki = ko.pop().expect("two modules");
    Ok(GuestModules { heki, attacks })
}

/// Points the headers' `include /usr/src/...` at the unpacked tree.
fn fix_makefile(headers: &Path, root: &Path) -> Result<(), Failure> {
    let path = headers.join("Makefile");
    let text =
        std::fs::read_to_string(&path).map_err(|e| Failure(format!("{}: {e}", path.display())))?;
    let fixed: Vec<String> = text
        .lines()
        .map(|l| match l.strip_prefix("include /usr/src/") {
            Some(rest) => format!("include {}/usr/src/{rest}", root.display()),
            None => l.to_string(),
        })
        .collect();
    std::fs::write(&path, fixed.join("\n") + "\n")
        .map_err(|e| Failure(format!("{}: {e}", path.display())))
}

/// The DER X.509 certificates built into `vmlinux` (its
/// `system_certificate_list`), concatenated: the LOAD_KDATA type-0 format.
/// Every `SEQUENCE { SEQUENCE { [0] INTEGER 2 ...` that parses as a
/// certificate counts, once.
pub fn kernel_certificates(vmlinux: &[u8]) -> Vec<Vec<u8>> {
    const TBS_V3: [u8; 5] = [0xA0, 0x03, 0x02, 0x01, 0x02];
    let mut certs: Vec<Vec<u8>> = Vec::new();
    let mut at = 0;
    while at + 13 <= vmlinux.len() {
        let w = &vmlinux[at..];
        if w[0] == 0x30 && w[1] == 0x82 && w[4] == 0x30 && w[5] == 0x82 && w[8..13] == TBS_V3 {
            let len = 4 + usize::from(u16::from_be_bytes([w[2], w[3]]));
            if let Some(der) = w.get(..len) {
                if x509_cert::Certificate::from_der(der).is_ok() && !certs.iter().any(|c| c == der)
                {
                    certs.push(der.to_vec());
                    at += len;
                    continue;
                }
            }
        }
        at += 1;
    }
    certs
}

/// Builds the Linux user-space TEE client (`tests/tee-linux`) as a static
/// x86-64 Linux executable (glibc, `crt-static`) in its own target
/// directory, so that its flags do not disturb the workspace's builds;
/// returns the binary's path.
pub fn build_tee_client() -> Result<PathBuf, Failure> {
    let target_dir = linux::cache_dir().join("tee-linux-target");
    eprintln!("xtask: building tests/tee-linux (static, x86_64-unknown-linux-gnu)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    linux::sh(
        Command::new(cargo)
            .args([
                "build",
                "--release",
                "-p",
                "lvbs-tee-linux",
                "--target",
                "x86_64-unknown-linux-gnu",
            ])
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .current_dir(workspace_root()),
        "cargo build -p lvbs-tee-linux",
    )?;
    Ok(target_dir.join("x86_64-unknown-linux-gnu/release/lvbs-tee-client"))
}

/// `cargo xtask debian-modules <dir>`: the inputs of heki-tdx's real-module
/// test and of the `sign-file` comparison (`.ci/run`): Debian's cloud kernel
/// package unpacked into `dir/root` (its 1000+ signed `.ko`), the kernel's
/// built-in certificates in `dir/system_certs.der` (the LOAD_KDATA type-0
/// format, [`kernel_certificates`]) and the matching `linux-kbuild` package
/// (with `scripts/sign-file`) unpacked into `dir/kbuild`. The packages come
/// from the same cache and the same stale-list handling as the Linux runs.
pub fn debian_modules(dir: &Path) -> Result<(), Failure> {
    ensure_tools()?;
    let cache = linux::cache_dir();
    let (k, kbuild_deb) = linux::with_fresh_lists(|| {
        let k = linux::debian_kernel()?;
        let headers = format!("linux-headers-{}", k.release);
        let kbuild = linux::depends_on(&headers, "linux-kbuild-")?;
        let deb = linux::fetch_deb(&cache, &kbuild)?;
        Ok((k, deb))
    })?;
    let image_deb = linux::fetch_deb(&cache, &k.package)?;
    std::fs::create_dir_all(dir).map_err(|e| Failure(format!("{}: {e}", dir.display())))?;
    for (deb, to) in [
        (&image_deb, dir.join("root")),
        (&kbuild_deb, dir.join("kbuild")),
    ] {
        let _ = std::fs::remove_dir_all(&to);
        linux::sh(
            Command::new("dpkg-deb").arg("-x").arg(deb).arg(&to),
            &format!("dpkg-deb -x {}", deb.display()),
        )?;
    }
    let certs = kernel_certificates(&linux::vmlinux(&k.image)?);
    if certs.is_empty() {
        return Err(Failure(format!(
            "no X.509 certificate in {}",
            k.image.display()
        )));
    }
    let out = dir.join("system_certs.der");
    std::fs::write(&out, certs.concat()).map_err(|e| Failure(format!("{}: {e}", out.display())))?;
    eprintln!(
        "xtask: {} unpacked into {}, {} certificate(s) in {}, {} in {}",
        k.package,
        dir.join("root").display(),
        certs.len(),
        out.display(),
        kbuild_deb.display(),
        dir.join("kbuild").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_certificate_once_between_noise() {
        let cert = std::fs::read(workspace_root().join("tests/data/heki-module/signer.crt.der"))
            .expect("test certificate");
        let other = std::fs::read(workspace_root().join("tests/data/heki-module/rogue.crt.der"))
            .expect("test certificate");
        let mut image = vec![0x30u8; 100];
        image.extend_from_slice(&cert);
        image.extend_from_slice(&[0x82, 0x30, 0x82]);
        image.extend_from_slice(&other);
        image.extend_from_slice(&cert);
        image.extend_from_slice(&[0u8; 64]);
        assert_eq!(kernel_certificates(&image), vec![cert, other]);
    }

    #[test]
    fn finds_no_certificate_in_noise() {
        let mut noise = vec![0u8; 4096];
        noise[100..113].copy_from_slice(&[
            0x30, 0x82, 0x01, 0x00, 0x30, 0x82, 0x00, 0xF0, 0xA0, 0x03, 0x02, 0x01, 0x02,
        ]);
        assert!(
            kernel_certificates(&noise).is_empty(),
            "a header alone is no certificate"
        );
    }
}
