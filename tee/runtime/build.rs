//! Links the bare-metal TA runtime with `linker.ld` (only for
//! `target_os = "none"`; the host build is a stub), as a fixed-address
//! ET_EXEC: the paravisor maps its segments at their addresses in each TA's
//! address space and applies no relocations.

fn main() {
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
        println!("cargo:rustc-link-arg-bins=--no-pie");
    }
}
