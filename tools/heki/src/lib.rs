//! The library half of the `heki` host tool: key and certificate loading, and
//! producing Linux's module signature format.
//!
//! The signature matches what `scripts/sign-file` writes with OpenSSL's CMS
//! API (`CMS_NOCERTS | CMS_BINARY | CMS_NOATTR | CMS_DETACHED`): a DER
//! `ContentInfo`/`SignedData` without certificates or signed attributes,
//! detached over the module bytes, one `SignerInfo` identified by issuer and
//! serial number (or, with `key_id`, by subject key identifier like
//! `sign-file -k`), RSA PKCS#1 v1.5, followed by `struct module_signature`
//! and the `~Module signature appended~` marker. Verification is
//! `heki_tdx::modsig`, the same code the paravisor runs.

use cms::cert::IssuerAndSerialNumber;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{ObjectIdentifier, OctetString, SetOfVec};
use der::{Any, Decode, Encode};
use heki_tdx::modsig::{
    append_signature, split_appended_signature, verify_module, Blocklist, DigestAlg, Keyring,
    LoadReport, SigError, Verified,
};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::PrivateKey;
use sha2::{Sha256, Sha384, Sha512};
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::Certificate;

const OID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const OID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// A tool error: a message for the user.
pub type Result<T> = std::result::Result<T, String>;

/// The PEM blocks of `text` with label `label`, decoded.
fn pem_blocks(text: &[u8], label: &str) -> Result<Vec<Vec<u8>>> {
    let text = std::str::from_utf8(text).map_err(|_| "PEM file is not UTF-8".to_string())?;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(&begin) {
        let stop = rest[at..]
            .find(&end)
            .ok_or_else(|| format!("unterminated PEM block {label}"))?
            + at
            + end.len();
        let (got, der) = der::pem::decode_vec(&rest.as_bytes()[at..stop])
            .map_err(|e| format!("bad PEM block {label}: {e}"))?;
        debug_assert_eq!(got, label);
        out.push(der);
        rest = &rest[stop..];
    }
    Ok(out)
}

fn is_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// Certificates from a PEM file (every `CERTIFICATE` block) or a DER file
/// (one certificate or a concatenated list), as DER.
pub fn load_certs(bytes: &[u8]) -> Result<Vec<u8>> {
    if is_pem(bytes) {
        let blocks = pem_blocks(bytes, "CERTIFICATE")?;
        if blocks.is_empty() {
            return Err("no CERTIFICATE block in the PEM file".into());
        }
        Ok(blocks.concat())
    } else {
        Ok(bytes.to_vec())
    }
}

/// An RSA private key from PEM (`PRIVATE KEY` or `RSA PRIVATE KEY`, e.g. a
/// kernel `signing_key.pem`) or DER (PKCS#8 or PKCS#1).
pub fn load_private_key(bytes: &[u8]) -> Result<PrivateKey> {
    if is_pem(bytes) {
        if let Some(der) = pem_blocks(bytes, "PRIVATE KEY")?.first() {
            return PrivateKey::from_pkcs8_der(der).map_err(|e| format!("PKCS#8 key: {e}"));
        }
        if let Some(der) = pem_blocks(bytes, "RSA PRIVATE KEY")?.first() {
            return PrivateKey::from_pkcs1_der(der).map_err(|e| format!("PKCS#1 key: {e}"));
        }
        if !pem_blocks(bytes, "ENCRYPTED PRIVATE KEY")?.is_empty() {
            return Err("encrypted private keys are not supported".into());
        }
        return Err("no RSA private key in the PEM file".into());
    }
    PrivateKey::from_pkcs8_der(bytes)
        .or_else(|_| PrivateKey::from_pkcs1_der(bytes))
        .map_err(|_| "not an RSA private key (PKCS#8 or PKCS#1 DER)".to_string())
}

/// Parses a digest name.
pub fn parse_digest(name: &str) -> Result<DigestAlg> {
    DigestAlg::ALL
        .into_iter()
        .find(|d| d.name() == name)
        .ok_or_else(|| format!("unsupported hash {name} (sha256, sha384 or sha512)"))
}

fn der_err(what: &str) -> impl Fn(der::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The DER `ContentInfo` for a detached RSA signature `signature` (over the
/// digest of the module) by the holder of `cert`.
pub fn build_cms(
    cert_der: &[u8],
    digest: DigestAlg,
    signature: &[u8],
    key_id: bool,
) -> Result<Vec<u8>> {
    let cert = Certificate::from_der(cert_der).map_err(der_err("certificate"))?;
    let tbs = cert.tbs_certificate();
    let (version, sid) = if key_id {
        let ski = match tbs.get_extension::<SubjectKeyIdentifier>() {
            Ok(Some((_, ski))) => ski,
            _ => {
                return Err("certificate has no subject key identifier (needed by --keyid)".into())
            }
        };
        (CmsVersion::V3, SignerIdentifier::SubjectKeyIdentifier(ski))
    } else {
        (
            CmsVersion::V1,
            SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: tbs.issuer().clone(),
                serial_number: tbs.serial_number().clone(),
            }),
        )
    };
    let digest_alg = AlgorithmIdentifierOwned {
        oid: digest.oid(),
        parameters: None,
    };
    let signer = SignerInfo {
        version,
        sid,
        digest_alg: digest_alg.clone(),
        signed_attrs: None,
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: OID_RSA_ENCRYPTION,
            parameters: Some(Any::null()),
        },
        signature: OctetString::new(signature).map_err(der_err("signature"))?,
        unsigned_attrs: None,
    };
    let signed = SignedData {
        version,
        digest_algorithms: SetOfVec::try_from(vec![digest_alg]).map_err(der_err("digests"))?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: OID_DATA,
            econtent: None,
        },
        certificates: None,
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![signer]).map_err(der_err("signers"))?),
    };
    let ci = ContentInfo {
        content_type: OID_SIGNED_DATA,
        content: Any::encode_from(&signed).map_err(der_err("SignedData"))?,
    };
    ci.to_der().map_err(der_err("ContentInfo"))
}

/// Options for [`sign_module`].
#[derive(Clone, Copy, Debug)]
pub struct SignOptions {
    /// Digest algorithm (`sign-file` default: SHA-256 here).
    pub digest: DigestAlg,
    /// Identify the signer by subject key identifier (`sign-file -k`).
    pub key_id: bool,
}

impl Default for SignOptions {
    fn default() -> Self {
        SignOptions {
            digest: DigestAlg::Sha256,
            key_id: false,
        }
    }
}

/// Signs `module` (an unsigned `.ko`) and returns the signed file. The
/// result is verified with `cert_der` before it is returned, which also
/// catches a key that does not belong to the certificate.
pub fn sign_module(
    module: &[u8],
    key: &PrivateKey,
    cert_der: &[u8],
    opts: SignOptions,
) -> Result<Vec<u8>> {
    if split_appended_signature(module).is_ok()
        || module.ends_with(heki_tdx::modsig::MODULE_SIG_MAGIC)
    {
        return Err("input already carries a module signature".into());
    }
    let hash = opts.digest.digest(module);
    let signature = match opts.digest {
        DigestAlg::Sha256 => key.pkcs1v15_sign_prehash::<Sha256>(&hash),
        DigestAlg::Sha384 => key.pkcs1v15_sign_prehash::<Sha384>(&hash),
        DigestAlg::Sha512 => key.pkcs1v15_sign_prehash::<Sha512>(&hash),
    }
    .map_err(|e| format!("RSA signing failed: {e}"))?;
    let cms = build_cms(cert_der, opts.digest, &signature, opts.key_id)?;
    let signed = append_signature(module, &cms).ok_or("signature too large")?;
    let mut ring = Keyring::new();
    ring.add_builtin(cert_der, &Blocklist::new())
        .map_err(|e| format!("certificate cannot verify module signatures: {e}"))?;
    match verify_module(&signed, &ring, &Blocklist::new()) {
        Ok(_) => Ok(signed),
        Err(SigError::BadSignature { .. }) => {
            Err("the private key does not belong to the certificate".into())
        }
        Err(e) => Err(format!("self-check failed: {e}")),
    }
}

/// A keyring from certificate files (each PEM or DER, possibly several
/// certificates), plus what was skipped.
pub fn keyring_from(files: &[Vec<u8>]) -> Result<(Keyring, LoadReport)> {
    let mut list = Vec::new();
    for f in files {
        list.extend(load_certs(f)?);
    }
    let mut ring = Keyring::new();
    let report = ring
        .load_system_certs(&list, &Blocklist::new())
        .map_err(|e| format!("certificates: {e}"))?;
    Ok((ring, report))
}

/// A blocklist from a text file of `bin:<hex>` / `tbs:<hex>` lines (`#` comments).
pub fn blocklist_from(text: &str) -> Result<Blocklist> {
    let mut bl = Blocklist::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        bl.add_entry(line.as_bytes())
            .map_err(|_| format!("blocklist line {}: not tbs:<hex> or bin:<hex>", n + 1))?;
    }
    Ok(bl)
}

/// Verifies `file` against `ring` and `blocklist`.
pub fn verify(
    file: &[u8],
    ring: &Keyring,
    blocklist: &Blocklist,
) -> std::result::Result<Verified, SigError> {
    verify_module(file, ring, blocklist)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A_DER: &[u8] = include_bytes!("../../../heki-tdx/tests/data/modsig/a.crt.der");
    const MOD_A: &[u8] = include_bytes!("../../../heki-tdx/tests/data/modsig/a_sha256.ko");

    fn pem(label: &str, der: &[u8]) -> Vec<u8> {
        der::pem::encode_string(label, der::pem::LineEnding::LF, der)
            .unwrap()
            .into_bytes()
    }

    #[test]
    fn certificates_from_pem_and_der() {
        assert_eq!(load_certs(A_DER).unwrap(), A_DER);
        let mut two = pem("CERTIFICATE", A_DER);
        two.extend(b"junk between blocks\n");
        two.extend(pem("CERTIFICATE", A_DER));
        assert_eq!(load_certs(&two).unwrap(), [A_DER, A_DER].concat());
        assert!(load_certs(&pem("PRIVATE KEY", &[1, 2, 3])).is_err());
        let mut cut = pem("CERTIFICATE", A_DER);
        cut.truncate(cut.len() - 10);
        assert!(load_certs(&cut).is_err());
        let (ring, report) = keyring_from(&[two]).unwrap();
        assert_eq!((ring.len(), report.added), (1, 2));
        assert!(verify(MOD_A, &ring, &Blocklist::new()).is_ok());
    }

    #[test]
    fn keys_and_options() {
        assert!(load_private_key(b"not a key").is_err());
        let e = load_private_key(&pem("ENCRYPTED PRIVATE KEY", &[1])).unwrap_err();
        assert!(e.contains("encrypted"), "{e}");
        assert!(load_private_key(&pem("CERTIFICATE", A_DER)).is_err());
        assert_eq!(parse_digest("sha384").unwrap(), DigestAlg::Sha384);
        assert!(parse_digest("md5").is_err());
        assert!(blocklist_from("# c\n\nbin:00ff\ntbs:AA\n").unwrap().len() == 2);
        assert!(blocklist_from("bin:0g\n").unwrap_err().contains("line 1"));
    }

    #[test]
    fn cms_is_what_the_verifier_parses() {
        // Re-wrap fixture A's signature value in our own CMS: it must verify.
        let parts = split_appended_signature(MOD_A).unwrap();
        let ci = ContentInfo::from_der(parts.cms).unwrap();
        let sd: SignedData = ci.content.decode_as().unwrap();
        let sig = sd
            .signer_infos
            .0
            .get(0)
            .unwrap()
            .signature
            .as_bytes()
            .to_vec();
        let cms = build_cms(A_DER, DigestAlg::Sha256, &sig, false).unwrap();
        assert_eq!(
            cms, parts.cms,
            "byte-identical to OpenSSL's -noattr -nocerts output"
        );
        assert!(build_cms(A_DER, DigestAlg::Sha256, &sig, true).is_ok());
        assert!(build_cms(&A_DER[1..], DigestAlg::Sha256, &sig, false).is_err());
    }
}
