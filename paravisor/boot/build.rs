//! Links the bare-metal binary with `linker.ld` (only for `target_os = "none"`;
//! the host build is a stub). Passed here rather than through `RUSTFLAGS`, which
//! would override `.cargo/config.toml`'s target rustflags.
//!
//! For the bare-metal build it also builds the TA runtime (`tee/runtime`,
//! package `lvbs-ta-runtime`, release) for `x86_64-unknown-none` with a
//! nested cargo and hands its path to the code as `LVBS_TA_RUNTIME_ELF`
//! (embedded with `include_bytes!`, docs/tee.md). The nested build has its
//! own target directory, `<target dir>/lvbs-ta-runtime` (beside the outer
//! build's, never inside a directory the outer cargo has locked), shared by
//! every profile and feature set of this crate. With the `test-ta` feature it
//! enables the runtime's `attack-ta` feature (the isolation test TA) and
//! uses a separate output path, so the production image never contains it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LVBS_TEE_SEALING_SECRET");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
        // A fixed-address ET_EXEC: the loader places PT_LOAD segments at p_paddr
        // and nothing applies relocations.
        println!("cargo:rustc-link-arg-bins=--no-pie");
        build_ta_runtime(Path::new(&dir));
    }
}

/// The directory for the nested build: `<target dir>/lvbs-ta-runtime`, where
/// `OUT_DIR` is `<target dir>/<triple>/<profile>/build/<pkg>-<hash>/out`.
fn nested_target_dir(out_dir: &Path) -> PathBuf {
    let mut up = out_dir.ancestors();
    match (up.nth(2), up.nth(2)) {
        (Some(build), Some(target))
            if build.file_name().is_some_and(|n| n == "build") && target.is_dir() =>
        {
            target.join("lvbs-ta-runtime")
        }
        _ => out_dir.join("lvbs-ta-runtime"),
    }
}

fn build_ta_runtime(manifest_dir: &Path) {
    let workspace = manifest_dir
        .ancestors()
        .nth(2)
        .expect("paravisor/boot is two levels below the workspace root");
    for watched in ["tee/src", "tee/Cargo.toml", "tee/runtime", "Cargo.lock"] {
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join(watched).display()
        );
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = nested_target_dir(&out_dir);
    let test_ta = std::env::var_os("CARGO_FEATURE_TEST_TA").is_some();
    let target_dir = if test_ta {
        target_dir.join("test-ta")
    } else {
        target_dir
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--release",
            "--target",
            "x86_64-unknown-none",
            "-p",
            "lvbs-ta-runtime",
            "--target-dir",
        ])
        .arg(&target_dir);
    if test_ta {
        cmd.args(["--features", "attack-ta"]);
    }
    // A plain build: not under clippy (xtask lints the runtime itself), and
    // with the workspace's own target rustflags (.cargo/config.toml).
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    // Only the loadable segments matter in the embedded copy.
    cmd.env("CARGO_PROFILE_RELEASE_STRIP", "symbols");
    let status = cmd
        .status()
        .expect("could not start cargo for the TA runtime");
    assert!(
        status.success(),
        "building lvbs-ta-runtime failed: {status}"
    );
    let elf = target_dir
        .join("x86_64-unknown-none")
        .join("release")
        .join("ta-runtime");
    assert!(elf.is_file(), "{} was not built", elf.display());
    println!("cargo:rustc-env=LVBS_TA_RUNTIME_ELF={}", elf.display());
}
