//! Links the bare-metal TEE guest with `linker.ld` (only for `target_os = "none"`;
//! the host build is a stub). Passed here rather than through `RUSTFLAGS`, which
//! would override `.cargo/config.toml`'s target rustflags.

fn main() {
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
        println!("cargo:rustc-link-arg-bins=--no-pie");
    }
}
