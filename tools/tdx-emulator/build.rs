//! Passes the linker script for the bare-metal build (never through RUSTFLAGS,
//! which would override `.cargo/config.toml`'s target rustflags).
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
        // A fixed-address ET_EXEC that QEMU's PVH loader places at p_paddr.
        println!("cargo:rustc-link-arg-bins=--no-pie");
    }
    println!("cargo:rerun-if-changed=linker.ld");
}
