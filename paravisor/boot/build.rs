//! Links the bare-metal binary with `linker.ld` (only for `target_os = "none"`;
//! the host build is a stub). Passed here rather than through `RUSTFLAGS`, which
//! would override `.cargo/config.toml`'s target rustflags.

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
    }
}
