//! CMS SignedData verification and certificate parsing against a fixed
//! keyring built from the test certificates in `heki-tdx/tests/data/modsig`
//! (A: RSA-2048, B: RSA-3072, C: RSA-4096 with a subject key id, D: a
//! secondary key signed by A) and a small blocklist.
//!
//! Every input is tried as a whole signed module (`verify_module`), as a
//! detached CMS blob over the fixtures' `content.bin` (`verify_detached`, so
//! `messageDigest` of the signed-attribute fixtures matches and the RSA step
//! is reached), and as certificate data (`add_secondary`,
//! `load_system_certs`).
#![no_main]

use heki_tdx::abi::ToErrno;
use heki_tdx::modsig::{verify_detached, verify_module, Blocklist, DigestAlg, Keyring, SigError};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("../../tests/data/modsig/", $name)).as_slice()
    };
}

const CONTENT: &[u8] = fixture!("content.bin");

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn setup() -> &'static (Keyring, Blocklist) {
    static STATE: OnceLock<(Keyring, Blocklist)> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut bl = Blocklist::new();
        // Entries of two lengths, neither matching a fixture, so that both
        // blocklist lookups hash with more than one digest.
        let bin = DigestAlg::Sha256.digest(b"not a module");
        let tbs = DigestAlg::Sha384.digest(b"not a certificate");
        bl.add_entry(format!("bin:{}", hex(&bin)).as_bytes())
            .unwrap();
        bl.add_entry(format!("tbs:{}", hex(&tbs)).as_bytes())
            .unwrap();
        let mut ring = Keyring::new();
        for c in [
            fixture!("a.crt.der"),
            fixture!("b.crt.der"),
            fixture!("c.crt.der"),
        ] {
            ring.add_builtin(c, &bl).unwrap();
        }
        ring.add_secondary(fixture!("d.crt.der"), &bl).unwrap();
        (ring, bl)
    })
}

fn check(r: Result<heki_tdx::modsig::Verified, SigError>, ring: &Keyring, content_len: usize) {
    match r {
        Ok(v) => {
            assert!(v.key_index < ring.len());
            assert_eq!(v.content_len, content_len);
            assert_eq!(v.signer, ring.keys()[v.key_index].subject);
        }
        Err(e) => {
            let _ = e.errno();
            let _ = e.to_string();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (ring, bl) = setup();

    let r = verify_module(data, ring, bl);
    let content_len = heki_tdx::modsig::split_appended_signature(data)
        .map(|p| p.content.len())
        .unwrap_or(0);
    check(r, ring, content_len);

    check(
        verify_detached(CONTENT, data, ring, bl),
        ring,
        CONTENT.len(),
    );

    let mut more = ring.clone();
    match more.add_secondary(data, bl) {
        Ok(i) => assert!(i < more.len()),
        Err(e) => {
            let _ = (e.errno(), e.to_string());
            assert_eq!(more.len(), ring.len(), "a refused key was added");
        }
    }
    let mut fresh = Keyring::new();
    match fresh.load_system_certs(data, bl) {
        Ok(report) => assert!(report.added > 0 && fresh.len() <= report.added),
        Err(e) => {
            let _ = (e.errno(), e.to_string());
        }
    }
});
