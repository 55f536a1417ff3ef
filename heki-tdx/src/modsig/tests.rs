//! Fixtures come from `tests/data/modsig/gen.sh` (OpenSSL `cms -sign`).

use super::*;
use alloc::vec;
use proptest::prelude::*;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!("../../tests/data/modsig/", $name)).as_slice()
    };
}

const A: &[u8] = fixture!("a.crt.der");
const B: &[u8] = fixture!("b.crt.der");
const C: &[u8] = fixture!("c.crt.der");
const D: &[u8] = fixture!("d.crt.der");
const E: &[u8] = fixture!("e.crt.der");
const OTHER: &[u8] = fixture!("other.crt.der");
const WEAK: &[u8] = fixture!("weak.crt.der");
const EC: &[u8] = fixture!("ec.crt.der");
const CONTENT: &[u8] = fixture!("content.bin");
const MOD_A: &[u8] = fixture!("a_sha256.ko");
const MOD_B_ATTRS: &[u8] = fixture!("b_sha384_attrs.ko");
const MOD_C_KEYID: &[u8] = fixture!("c_sha512_keyid.ko");
const MOD_A_CERTS: &[u8] = fixture!("a_with_certs.ko");
const MOD_A_SHA1: &[u8] = fixture!("a_sha1.ko");
const MOD_D: &[u8] = fixture!("d_sha256.ko");
const MOD_A_ATTACHED: &[u8] = fixture!("a_attached.ko");

fn ring(certs: &[&[u8]]) -> Keyring {
    let mut k = Keyring::new();
    for c in certs {
        k.add_builtin(c, &Blocklist::new()).unwrap();
    }
    k
}

fn none() -> Blocklist {
    Blocklist::new()
}

#[test]
fn trailer_round_trip() {
    let parts = split_appended_signature(MOD_A).unwrap();
    assert_eq!(parts.content, CONTENT);
    assert_eq!(parts.header.id_type, 2);
    assert_eq!(parts.header.sig_len as usize, parts.cms.len());
    let again = append_signature(parts.content, parts.cms).unwrap();
    assert_eq!(again, MOD_A);
    assert_eq!(
        ModuleSignature::from_bytes(&parts.header.to_bytes()),
        parts.header
    );
}

#[test]
fn trailer_errors() {
    assert_eq!(split_appended_signature(CONTENT), Err(SigError::NotSigned));
    assert_eq!(split_appended_signature(b""), Err(SigError::NotSigned));
    assert_eq!(
        split_appended_signature(MODULE_SIG_MAGIC),
        Err(SigError::Truncated)
    );
    let with = |hdr: ModuleSignature| {
        let mut f = vec![0u8; 100];
        f.extend_from_slice(&hdr.to_bytes());
        f.extend_from_slice(MODULE_SIG_MAGIC);
        split_appended_signature(&f).map(|p| p.cms.len())
    };
    assert_eq!(with(ModuleSignature::pkcs7(100)), Ok(100));
    assert_eq!(with(ModuleSignature::pkcs7(101)), Err(SigError::Truncated));
    assert_eq!(
        with(ModuleSignature::pkcs7(u32::MAX)),
        Err(SigError::Truncated)
    );
    assert_eq!(with(ModuleSignature::pkcs7(0)), Err(SigError::BadTrailer));
    let mut h = ModuleSignature::pkcs7(10);
    h.id_type = 1;
    assert_eq!(with(h), Err(SigError::NotPkcs7 { id_type: 1 }));
    for field in 0..6 {
        let mut h = ModuleSignature::pkcs7(10);
        match field {
            0 => h.algo = 1,
            1 => h.hash = 4,
            2 => h.signer_len = 3,
            3 => h.key_id_len = 8,
            4 => h.pad[1] = 1,
            _ => h.pad[2] = 0x80,
        }
        assert_eq!(with(h), Err(SigError::BadTrailer), "field {field}");
    }
}

#[test]
fn verifies_linux_default_format() {
    let v = verify_module(MOD_A, &ring(&[B, A]), &none()).unwrap();
    assert_eq!(v.signer, "CN=heki test signer A");
    assert_eq!(v.digest, DigestAlg::Sha256);
    assert_eq!(v.key_index, 1);
    assert_eq!(v.content_len, CONTENT.len());
    assert!(!v.signed_attributes);
}

#[test]
fn verifies_signed_attributes_sha384() {
    let v = verify_module(MOD_B_ATTRS, &ring(&[B]), &none()).unwrap();
    assert!(v.signed_attributes);
    assert_eq!(v.digest, DigestAlg::Sha384);
}

#[test]
fn verifies_subject_key_identifier_sha512_4096() {
    let k = ring(&[C]);
    assert_eq!(k.keys()[0].bits, 4096);
    assert!(k.keys()[0].subject_key_id().is_some());
    let v = verify_module(MOD_C_KEYID, &k, &none()).unwrap();
    assert_eq!(v.digest, DigestAlg::Sha512);
}

#[test]
fn embedded_certificates_are_not_trusted() {
    // Verifies with A in the ring; the embedded copy of A is ignored...
    assert!(verify_module(MOD_A_CERTS, &ring(&[A]), &none()).is_ok());
    // ... and does not make the signature acceptable without it.
    assert!(matches!(
        verify_module(MOD_A_CERTS, &ring(&[B]), &none()),
        Err(SigError::UnknownSigner(_))
    ));
}

#[test]
fn flipped_bytes_are_refused() {
    let k = ring(&[A, B]);
    for at in [0, 1, CONTENT.len() / 2, CONTENT.len() - 1] {
        let mut m = MOD_A.to_vec();
        m[at] ^= 1;
        let e = verify_module(&m, &k, &none()).unwrap_err();
        assert!(matches!(e, SigError::BadSignature { .. }), "{e}");
        assert_eq!(e.errno(), Errno::EKEYREJECTED);
    }
    // With signed attributes a content change breaks messageDigest.
    let mut m = MOD_B_ATTRS.to_vec();
    m[10] ^= 0x40;
    assert_eq!(
        verify_module(&m, &k, &none()),
        Err(SigError::MessageDigestMismatch)
    );
    // A flipped bit in the RSA signature itself.
    let parts = split_appended_signature(MOD_A).unwrap();
    let mut m = MOD_A.to_vec();
    let sig_end = parts.content.len() + parts.cms.len();
    m[sig_end - 5] ^= 0x10;
    assert!(matches!(
        verify_module(&m, &k, &none()),
        Err(SigError::BadSignature { .. })
    ));
}

#[test]
fn wrong_key_is_refused() {
    // Same subject, different key and serial: no match by issuer+serial.
    let e = verify_module(MOD_A, &ring(&[OTHER]), &none()).unwrap_err();
    assert!(matches!(e, SigError::UnknownSigner(_)), "{e}");
    assert_eq!(e.errno(), Errno::ENOKEY);
    assert!(e.to_string().contains("heki test signer A"), "{e}");
    assert_eq!(
        verify_module(MOD_A, &Keyring::new(), &none()),
        Err(SigError::NoKeys)
    );
}

#[test]
fn unsupported_and_malformed() {
    let k = ring(&[A]);
    let e = verify_module(MOD_A_SHA1, &k, &none()).unwrap_err();
    assert_eq!(e, SigError::UnsupportedDigest("1.3.14.3.2.26".into()));
    assert_eq!(e.errno(), Errno::ENOPKG);
    assert_eq!(
        verify_module(MOD_A_ATTACHED, &k, &none()),
        Err(SigError::NotDetached)
    );
    assert_eq!(
        verify_module(CONTENT, &k, &none()).unwrap_err().errno(),
        Errno::ENODATA
    );
    // Garbage in place of the CMS blob.
    let garbage = append_signature(CONTENT, &[0x30, 0x03, 0x02, 0x01, 0x01]).unwrap();
    let e = verify_module(&garbage, &k, &none()).unwrap_err();
    assert_eq!(e.errno(), Errno::ELIBBAD, "{e}");
}

#[test]
fn truncated_cms_never_panics() {
    let parts = split_appended_signature(MOD_B_ATTRS).unwrap();
    let k = ring(&[B]);
    for cut in 0..parts.cms.len() {
        let f = append_signature(parts.content, &parts.cms[..cut]);
        if let Some(f) = f {
            assert!(verify_module(&f, &k, &none()).is_err(), "cut {cut}");
        }
    }
}

#[test]
fn blocklists() {
    let k = ring(&[A]);
    let mut bl = Blocklist::new();
    let digest = DigestAlg::Sha256.digest(CONTENT);
    bl.add_entry(alloc::format!("bin:{}", hex(&digest)).as_bytes())
        .unwrap();
    assert_eq!(
        verify_module(MOD_A, &k, &bl),
        Err(SigError::ContentBlocklisted)
    );
    // A SHA-512 entry for the same content blocks it too.
    let mut bl = Blocklist::new();
    let digest = DigestAlg::Sha512.digest(CONTENT);
    bl.add_entry(alloc::format!("bin:{}", hex(&digest).to_uppercase()).as_bytes())
        .unwrap();
    assert_eq!(
        verify_module(MOD_A, &k, &bl),
        Err(SigError::ContentBlocklisted)
    );
    // Revoking A's TBS hash: the key cannot be added, nor used if present.
    let tbs = k.keys()[0].tbs.clone();
    let mut bl = Blocklist::new();
    bl.add_entry(alloc::format!("tbs:{}", hex(&DigestAlg::Sha256.digest(&tbs))).as_bytes())
        .unwrap();
    assert_eq!(
        Keyring::new().add_builtin(A, &bl),
        Err(KeyError::Blocklisted)
    );
    assert!(matches!(
        verify_module(MOD_A, &k, &bl),
        Err(SigError::KeyBlocklisted { .. })
    ));
    // An unrelated entry changes nothing.
    let mut bl = Blocklist::new();
    bl.add_entry(b"bin:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
        .unwrap();
    assert!(verify_module(MOD_A, &k, &bl).is_ok());
}

#[test]
fn blocklist_slots() {
    let mut blob = vec![0u8; BLOCKLIST_SLOT * 3];
    let e1 = b"tbs:0011";
    let e2 = alloc::format!("bin:{}", "ab".repeat(64));
    blob[..e1.len()].copy_from_slice(e1);
    blob[2 * BLOCKLIST_SLOT..2 * BLOCKLIST_SLOT + e2.len()].copy_from_slice(e2.as_bytes());
    let bl = Blocklist::parse_slots(&blob).unwrap();
    assert_eq!(bl.len(), 2);
    assert_eq!(
        Blocklist::parse_slots(&blob[1..]),
        Err(BlocklistError::BadLength(BLOCKLIST_SLOT * 3 - 1))
    );
    let mut full = vec![b'a'; BLOCKLIST_SLOT];
    full[..4].copy_from_slice(b"bin:");
    assert_eq!(
        Blocklist::parse_slots(&full),
        Err(BlocklistError::Unterminated { slot: 0 })
    );
    for bad in [&b"tbs:"[..], b"xyz:00", b"bin:0", b"bin:zz", b"bin:00 "] {
        let mut s = vec![0u8; BLOCKLIST_SLOT];
        s[..bad.len()].copy_from_slice(bad);
        assert_eq!(
            Blocklist::parse_slots(&s),
            Err(BlocklistError::BadEntry { slot: 0 }),
            "{bad:?}"
        );
    }
    // 130 hex digits is one byte too long.
    let mut bl = Blocklist::new();
    assert!(bl
        .add_entry(alloc::format!("bin:{}", "00".repeat(65)).as_bytes())
        .is_err());
}

#[test]
fn keyring_loading() {
    let mut list = Vec::new();
    for c in [A, WEAK, EC, B] {
        list.extend_from_slice(c);
    }
    list.extend_from_slice(&[0; 7]);
    let mut k = Keyring::new();
    let r = k.load_system_certs(&list, &none()).unwrap();
    assert_eq!(r.added, 2);
    assert_eq!(r.skipped.len(), 2);
    assert_eq!(r.skipped[0], (1, KeyError::KeySize { bits: 1024 }));
    assert!(matches!(r.skipped[1], (2, KeyError::NotRsa(_))));
    assert_eq!(k.len(), 2);
    // Loading the same list again does not duplicate keys.
    k.load_system_certs(&list, &none()).unwrap();
    assert_eq!(k.len(), 2);
    // Nothing usable.
    let mut only_bad = WEAK.to_vec();
    only_bad.extend_from_slice(EC);
    assert_eq!(
        Keyring::new().load_system_certs(&only_bad, &none()),
        Err(KeyError::NoUsableKey)
    );
    // Truncated list / trailing garbage.
    assert!(matches!(
        Keyring::new().load_system_certs(&A[..A.len() - 1], &none()),
        Err(KeyError::Malformed(_))
    ));
    let mut junk = A.to_vec();
    junk.push(0x02);
    assert!(matches!(
        Keyring::new().load_system_certs(&junk, &none()),
        Err(KeyError::Malformed(_))
    ));
    assert!(matches!(
        Keyring::new().add_builtin(&[0x30, 0x00], &none()),
        Err(KeyError::Der(_))
    ));
}

#[test]
fn secondary_keys_need_a_trusted_signer() {
    let mut k = ring(&[B]);
    assert_eq!(k.add_secondary(D, &none()), Err(KeyError::Untrusted));
    // E has A's subject as issuer but is self-signed with another key.
    k.add_builtin(A, &none()).unwrap();
    assert_eq!(k.add_secondary(E, &none()), Err(KeyError::Untrusted));
    let i = k.add_secondary(D, &none()).unwrap();
    assert_eq!(k.keys()[i].source, KeySource::Secondary);
    let v = verify_module(MOD_D, &k, &none()).unwrap();
    assert_eq!(v.signer, "CN=heki test secondary D");
    assert!(matches!(
        verify_module(MOD_D, &ring(&[A, B]), &none()),
        Err(SigError::UnknownSigner(_))
    ));
}

#[test]
fn tlv_reader_bounds() {
    assert!(read_tlv(&[]).is_none());
    assert!(read_tlv(&[0x30]).is_none());
    assert!(read_tlv(&[0x30, 0x80]).is_none()); // indefinite
    assert!(read_tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
    assert!(read_tlv(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
    assert!(read_tlv(&[0x1f, 0x01, 0x00]).is_none());
    let (t, rest) = read_tlv(&[0x04, 0x81, 0x01, 0xaa, 0xbb]).unwrap();
    assert_eq!((t.tag, t.value, rest), (0x04, &[0xaa][..], &[0xbb][..]));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random corruption of a signed module never panics, and whatever still
    /// verifies (a flip in an unsigned CMS field) has the original content.
    #[test]
    fn corrupted_modules(at in 0..MOD_B_ATTRS.len(), xor in 1u8..=255) {
        let k = ring(&[B]);
        let mut m = MOD_B_ATTRS.to_vec();
        m[at] ^= xor;
        if let Ok(v) = verify_module(&m, &k, &none()) {
            prop_assert_eq!(&m[..v.content_len], CONTENT);
        }
    }

    #[test]
    fn arbitrary_trailers(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut f = body.clone();
        f.extend_from_slice(MODULE_SIG_MAGIC);
        let _ = verify_module(&f, &ring(&[A]), &none());
        let _ = Blocklist::parse_slots(&body);
        let _ = Keyring::new().load_system_certs(&body, &none());
    }
}

#[test]
fn bench_fixtures_verify() {
    let content: Vec<u8> = (0..1u32 << 20)
        .map(|i| ((i * 131 + 7) % 251) as u8)
        .collect();
    let k = ring(&[fixture!("bench.crt.der")]);
    for sig in [
        fixture!("bench_1m_sha256.p7s"),
        fixture!("bench_1m_sha512.p7s"),
    ] {
        let f = append_signature(&content, sig).unwrap();
        assert!(verify_module(&f, &k, &none()).is_ok());
    }
}
