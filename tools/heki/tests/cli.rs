//! End-to-end tests of the `heki` binary with keys and certificates made by
//! `openssl` (skipped, with a note, when `openssl` is not installed).
//!
//! Set `HEKI_SIGN_FILE` to Linux's `scripts/sign-file` (e.g. from Debian's
//! `linux-kbuild-6.1` package) to also check that `heki sign-module` output is
//! byte-identical to `sign-file`'s.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "heki-cli-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self, f: &str) -> PathBuf {
        self.0.join(f)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn have_openssl() -> bool {
    let ok = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("openssl not found: skipping");
    }
    ok
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    eprintln!(
        "{:?}: {}\n{}{}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn heki(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_heki"));
    for a in args {
        c.arg(a);
    }
    run(&mut c)
}

/// A key and self-signed certificate; `bits` RSA.
fn keypair(dir: &TempDir, name: &str, subject: &str, bits: u32) -> (PathBuf, PathBuf) {
    let key = dir.path(&format!("{name}.key.pem"));
    let cert = dir.path(&format!("{name}.crt.pem"));
    let out = run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            &format!("rsa:{bits}"),
            "-nodes",
            "-days",
            "3650",
        ])
        .arg("-subj")
        .arg(subject)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert));
    assert!(out.status.success());
    (key, cert)
}

/// An unsigned "module": a real ELF object so the file looks like a .ko.
fn module(dir: &TempDir) -> PathBuf {
    let p = dir.path("in.ko");
    let mut data = include_bytes!("../../../heki-tdx/tests/data/elf/mini.o").to_vec();
    data.extend((0..50_000u32).map(|i| (i * 7 % 253) as u8));
    std::fs::write(&p, data).unwrap();
    p
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn openssl_verifies(dir: &TempDir, signed: &Path, cert: &Path) -> bool {
    let (content, sig) = (dir.path("content.bin"), dir.path("sig.p7s"));
    let o = heki(&[
        &"extract-signature",
        &signed,
        &"--content",
        &content,
        &"--signature",
        &sig,
    ]);
    assert!(o.status.success());
    run(Command::new("openssl")
        .args([
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-noverify",
            "-nointern",
        ])
        .arg("-in")
        .arg(&sig)
        .arg("-content")
        .arg(&content)
        .arg("-certfile")
        .arg(cert)
        .args(["-out", "/dev/null"]))
    .status
    .success()
}

#[test]
fn sign_verify_and_refuse() {
    if !have_openssl() {
        return;
    }
    let dir = TempDir::new("basic");
    let (key, cert) = keypair(&dir, "a", "/CN=heki cli signer", 2048);
    let (_, other) = keypair(&dir, "b", "/CN=heki cli signer", 2048);
    let input = module(&dir);
    let out = dir.path("out.ko");
    let o = heki(&[
        &"sign-module",
        &"--key",
        &key,
        &"--cert",
        &cert,
        &input,
        &"-o",
        &out,
    ]);
    assert!(o.status.success());
    let signed = std::fs::read(&out).unwrap();
    assert!(signed.ends_with(b"~Module signature appended~\n"));

    // heki accepts it and names the signer.
    let o = heki(&[&"verify-module", &"--cert", &cert, &out]);
    assert!(o.status.success());
    assert!(stdout(&o).starts_with("OK"), "{}", stdout(&o));
    assert!(stdout(&o).contains("CN=heki cli signer"));
    assert!(stdout(&o).contains("sha256"));

    // OpenSSL accepts the extracted detached signature.
    assert!(openssl_verifies(&dir, &out, &cert));

    // A flipped byte is refused, by heki and by OpenSSL.
    let mut bad = signed.clone();
    bad[1000] ^= 0x01;
    let badp = dir.path("bad.ko");
    std::fs::write(&badp, &bad).unwrap();
    let o = heki(&[&"verify-module", &"--cert", &cert, &badp]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("does not verify"), "{}", stderr(&o));
    assert!(stderr(&o).contains("EKEYREJECTED"));
    assert!(!openssl_verifies(&dir, &badp, &cert));

    // Another certificate (same subject, other key and serial) is refused.
    let o = heki(&[&"verify-module", &"--cert", &other, &out]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no trusted certificate"),
        "{}",
        stderr(&o)
    );

    // The unsigned input is refused with ENODATA.
    let o = heki(&[&"verify-module", &"--cert", &cert, &input]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("ENODATA"), "{}", stderr(&o));

    // Signing an already signed module is refused.
    let o = heki(&[
        &"sign-module",
        &"--key",
        &key,
        &"--cert",
        &cert,
        &out,
        &"-o",
        &dir.path("x.ko"),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already"));

    // A key that does not belong to the certificate is refused.
    let (k2, _) = keypair(&dir, "c", "/CN=c", 2048);
    let o = heki(&[
        &"sign-module",
        &"--key",
        &k2,
        &"--cert",
        &cert,
        &input,
        &"-o",
        &dir.path("y.ko"),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("does not belong"), "{}", stderr(&o));
}

#[test]
fn formats_and_options() {
    if !have_openssl() {
        return;
    }
    let dir = TempDir::new("formats");
    let (key, cert) = keypair(&dir, "a", "/CN=heki formats", 3072);
    let input = module(&dir);
    // DER certificate, SHA-384.
    let der = dir.path("a.crt.der");
    assert!(run(Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert)
        .arg("-out")
        .arg(&der))
    .status
    .success());
    let out = dir.path("384.ko");
    let o = heki(&[
        &"sign-module",
        &"--key",
        &key,
        &"--cert",
        &der,
        &"--hash",
        &"sha384",
        &input,
        &"-o",
        &out,
    ]);
    assert!(o.status.success());
    let o = heki(&[&"verify-module", &"--cert", &der, &out]);
    assert!(stdout(&o).contains("sha384"));
    assert!(openssl_verifies(&dir, &out, &cert));

    // A signing_key.pem holding key and certificate, no --cert; SHA-512; key id.
    let combined = dir.path("signing_key.pem");
    let mut both = std::fs::read(&key).unwrap();
    both.extend(std::fs::read(&cert).unwrap());
    std::fs::write(&combined, both).unwrap();
    let out = dir.path("512.ko");
    let o = heki(&[
        &"sign-module",
        &"--key",
        &combined,
        &"--hash",
        &"sha512",
        &"--keyid",
        &input,
        &"-o",
        &out,
    ]);
    assert!(o.status.success());
    let o = heki(&[&"verify-module", &"--cert", &cert, &out]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("sha512"));
    assert!(openssl_verifies(&dir, &out, &cert));

    // Several certificates in one PEM file; the right one is found.
    let (_, c2) = keypair(&dir, "z", "/CN=unrelated", 2048);
    let bundle = dir.path("bundle.pem");
    let mut b = std::fs::read(&c2).unwrap();
    b.extend(std::fs::read(&cert).unwrap());
    std::fs::write(&bundle, b).unwrap();
    assert!(heki(&[&"verify-module", &"--cert", &bundle, &out])
        .status
        .success());

    // A blocklisted module hash is refused.
    let content = dir.path("content.bin");
    heki(&[&"extract-signature", &out, &"--content", &content]);
    let digest = run(Command::new("openssl")
        .args(["dgst", "-sha256", "-r"])
        .arg(&content));
    let hex = stdout(&digest)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let bl = dir.path("blocklist.txt");
    std::fs::write(&bl, format!("# revoked\nbin:{hex}\n")).unwrap();
    let o = heki(&[
        &"verify-module",
        &"--cert",
        &cert,
        &"--blocklist",
        &bl,
        &out,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("blocklist"), "{}", stderr(&o));

    // Unsupported hash and weak keys are refused with a reason.
    let o = heki(&[
        &"sign-module",
        &"--key",
        &key,
        &"--cert",
        &cert,
        &"--hash",
        &"sha1",
        &input,
        &"-o",
        &dir.path("s1.ko"),
    ]);
    assert!(stderr(&o).contains("unsupported hash"));
    let (wk, wc) = keypair(&dir, "weak", "/CN=weak", 1024);
    let o = heki(&[
        &"sign-module",
        &"--key",
        &wk,
        &"--cert",
        &wc,
        &input,
        &"-o",
        &dir.path("w.ko"),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("1024 bits"), "{}", stderr(&o));
}

#[test]
fn openssl_signed_modules_verify() {
    if !have_openssl() {
        return;
    }
    // OpenSSL with signed attributes (not Linux's default) is accepted too.
    let dir = TempDir::new("attrs");
    let (key, cert) = keypair(&dir, "a", "/CN=heki attrs", 2048);
    let input = module(&dir);
    let sig = dir.path("sig.p7s");
    assert!(run(Command::new("openssl")
        .args(["cms", "-sign", "-binary", "-nocerts", "-outform", "DER", "-md", "sha256"])
        .arg("-in")
        .arg(&input)
        .arg("-signer")
        .arg(&cert)
        .arg("-inkey")
        .arg(&key)
        .arg("-out")
        .arg(&sig))
    .status
    .success());
    let sig = std::fs::read(&sig).unwrap();
    let signed = heki_tdx::modsig::append_signature(&std::fs::read(&input).unwrap(), &sig).unwrap();
    let out = dir.path("attrs.ko");
    std::fs::write(&out, signed).unwrap();
    let o = heki(&[&"verify-module", &"--cert", &cert, &out]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("with signed attributes"));
}

#[test]
fn identical_to_linux_sign_file() {
    let Some(sign_file) = std::env::var_os("HEKI_SIGN_FILE") else {
        eprintln!("HEKI_SIGN_FILE not set: skipping the sign-file comparison");
        return;
    };
    if !have_openssl() {
        return;
    }
    let dir = TempDir::new("signfile");
    let (key, cert) = keypair(&dir, "a", "/CN=heki sign-file", 4096);
    let input = module(&dir);
    for (hash, keyid) in [("sha256", false), ("sha512", false), ("sha384", true)] {
        let theirs = dir.path(&format!("sf-{hash}.ko"));
        std::fs::copy(&input, &theirs).unwrap();
        let mut c = Command::new(&sign_file);
        if keyid {
            c.arg("-k");
        }
        assert!(run(c.arg(hash).arg(&key).arg(&cert).arg(&theirs))
            .status
            .success());
        let ours = dir.path(&format!("heki-{hash}.ko"));
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"sign-module",
            &"--key",
            &key,
            &"--cert",
            &cert,
            &"--hash",
            &hash,
        ];
        if keyid {
            args.push(&"--keyid");
        }
        args.extend([&input as &dyn AsRef<std::ffi::OsStr>, &"-o", &ours]);
        assert!(heki(&args).status.success());
        assert_eq!(
            std::fs::read(&theirs).unwrap(),
            std::fs::read(&ours).unwrap(),
            "{hash} keyid={keyid}"
        );
    }
}
