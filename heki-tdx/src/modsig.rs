//! Linux module signatures: the appended PKCS#7/CMS trailer (heki-lvbs-abi.md
//! §3.5), a keyring of trusted RSA certificates, the raw-hash blocklist (§3.7),
//! and verification (§5.5 step 4).
//!
//! What is accepted, following Linux `mod_verify_sig` / `pkcs7_verify`:
//!
//! * `file = content | CMS | struct module_signature | "~Module signature appended~\n"`,
//!   with `id_type == 2` (PKCS#7) and `algo`, `hash`, `signer_len`, `key_id_len`,
//!   `__pad` all zero.
//! * The CMS blob is a DER `ContentInfo` of type signedData, detached
//!   (`eContent` absent) over `id-data`, with exactly one `SignerInfo`.
//! * Digest SHA-256, SHA-384 or SHA-512; signature RSA PKCS#1 v1.5
//!   (`rsaEncryption`, or `shaNNNWithRSAEncryption` naming the same digest).
//! * Without signed attributes (Linux's default) the signature is over the
//!   digest of the content. With signed attributes, `contentType` must be
//!   `id-data`, `messageDigest` must equal the content digest, and the
//!   signature is over the attributes exactly as they appear in the blob
//!   (with the `[0]` tag read as `SET`), never over a re-encoding.
//! * The signer is found in the [`Keyring`] by issuer and serial number or by
//!   subject key identifier; certificates inside the CMS blob are ignored.
//! * Keys are RSA, 2048 to 4096 bits. A key whose TBS hash is on the
//!   blocklist is unusable; a module whose content hash (any length present on
//!   the list: SHA-256/384/512) is on the blocklist is rejected.
//!
//! Nothing here panics on hostile input; every refusal is a [`SigError`] with
//! the errno the LVBS ABI uses for it.

use crate::abi::{Errno, ToErrno};
use alloc::collections::BTreeSet;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use core::fmt;
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use rsa::pkcs1v15::Pkcs1v15Sign;
use rsa::PublicKey as RsaPublicKey;
use sha2::{Digest, Sha256, Sha384, Sha512};
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::Certificate;

/// The marker at the very end of a signed module.
pub const MODULE_SIG_MAGIC: &[u8; 28] = b"~Module signature appended~\n";
/// `PKEY_ID_PKCS7`.
pub const PKEY_ID_PKCS7: u8 = 2;
/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits.
pub const MAX_RSA_BITS: usize = 4096;

const OID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const OID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const OID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const OID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_SHA256_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const OID_SHA384_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const OID_SHA512_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const OID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const OID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const OID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

/// A digest algorithm accepted for module and certificate signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DigestAlg {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl DigestAlg {
    /// All accepted digests.
    pub const ALL: [DigestAlg; 3] = [DigestAlg::Sha256, DigestAlg::Sha384, DigestAlg::Sha512];

    /// From a digest-algorithm OID.
    pub fn from_oid(oid: &ObjectIdentifier) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.oid() == *oid)
    }

    /// From an output length in bytes.
    pub fn from_len(len: usize) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.len() == len)
    }

    /// The digest OID.
    pub fn oid(self) -> ObjectIdentifier {
        match self {
            DigestAlg::Sha256 => OID_SHA256,
            DigestAlg::Sha384 => OID_SHA384,
            DigestAlg::Sha512 => OID_SHA512,
        }
    }

    /// The `shaNNNWithRSAEncryption` OID.
    pub fn rsa_oid(self) -> ObjectIdentifier {
        match self {
            DigestAlg::Sha256 => OID_SHA256_RSA,
            DigestAlg::Sha384 => OID_SHA384_RSA,
            DigestAlg::Sha512 => OID_SHA512_RSA,
        }
    }

    /// Output length in bytes.
    pub fn len(self) -> usize {
        match self {
            DigestAlg::Sha256 => 32,
            DigestAlg::Sha384 => 48,
            DigestAlg::Sha512 => 64,
        }
    }

    /// Never true; present for API symmetry with `len`.
    pub fn is_empty(self) -> bool {
        false
    }

    /// Lower-case name (`sha256`, ...), as Linux and OpenSSL spell it.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlg::Sha256 => "sha256",
            DigestAlg::Sha384 => "sha384",
            DigestAlg::Sha512 => "sha512",
        }
    }

    /// Hashes `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            DigestAlg::Sha256 => Sha256::digest(data).to_vec(),
            DigestAlg::Sha384 => Sha384::digest(data).to_vec(),
            DigestAlg::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// Verifies an RSASSA-PKCS1-v1_5 signature over the digest `hashed`.
    pub fn rsa_verify(self, key: &RsaPublicKey, hashed: &[u8], sig: &[u8]) -> bool {
        let scheme = match self {
            DigestAlg::Sha256 => Pkcs1v15Sign::new::<Sha256>(),
            DigestAlg::Sha384 => Pkcs1v15Sign::new::<Sha384>(),
            DigestAlg::Sha512 => Pkcs1v15Sign::new::<Sha512>(),
        };
        key.verify(scheme, hashed, sig).is_ok()
    }
}

impl fmt::Display for DigestAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Linux `struct module_signature` (12 bytes, `sig_len` big-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleSignature {
    /// Public-key algorithm (0 for PKCS#7).
    pub algo: u8,
    /// Digest algorithm (0 for PKCS#7).
    pub hash: u8,
    /// Key identifier type: 2 = PKCS#7.
    pub id_type: u8,
    /// Signer name length (0 for PKCS#7).
    pub signer_len: u8,
    /// Key id length (0 for PKCS#7).
    pub key_id_len: u8,
    /// Padding, zero.
    pub pad: [u8; 3],
    /// Length of the CMS blob.
    pub sig_len: u32,
}

impl ModuleSignature {
    /// Byte size.
    pub const SIZE: usize = 12;

    /// The header `sign-file` writes for a PKCS#7 blob of `sig_len` bytes.
    pub fn pkcs7(sig_len: u32) -> Self {
        ModuleSignature {
            algo: 0,
            hash: 0,
            id_type: PKEY_ID_PKCS7,
            signer_len: 0,
            key_id_len: 0,
            pad: [0; 3],
            sig_len,
        }
    }

    /// Decodes 12 bytes.
    pub fn from_bytes(b: &[u8; 12]) -> Self {
        ModuleSignature {
            algo: b[0],
            hash: b[1],
            id_type: b[2],
            signer_len: b[3],
            key_id_len: b[4],
            pad: [b[5], b[6], b[7]],
            sig_len: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        }
    }

    /// Encodes 12 bytes.
    pub fn to_bytes(&self) -> [u8; 12] {
        let l = self.sig_len.to_be_bytes();
        [
            self.algo,
            self.hash,
            self.id_type,
            self.signer_len,
            self.key_id_len,
            self.pad[0],
            self.pad[1],
            self.pad[2],
            l[0],
            l[1],
            l[2],
            l[3],
        ]
    }
}

/// A signed module split into its parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendedSignature<'a> {
    /// The signed bytes: everything before the CMS blob.
    pub content: &'a [u8],
    /// The DER CMS `ContentInfo`.
    pub cms: &'a [u8],
    /// The trailer header.
    pub header: ModuleSignature,
}

/// Appends a PKCS#7 signature trailer to `content`, as `sign-file` does.
pub fn append_signature(content: &[u8], cms: &[u8]) -> Option<Vec<u8>> {
    let len = u32::try_from(cms.len()).ok()?;
    let mut out = Vec::with_capacity(content.len() + cms.len() + 40);
    out.extend_from_slice(content);
    out.extend_from_slice(cms);
    out.extend_from_slice(&ModuleSignature::pkcs7(len).to_bytes());
    out.extend_from_slice(MODULE_SIG_MAGIC);
    Some(out)
}

/// Splits `file` at its appended signature (Linux `mod_check_sig`).
pub fn split_appended_signature(file: &[u8]) -> Result<AppendedSignature<'_>, SigError> {
    let body = file
        .strip_suffix(MODULE_SIG_MAGIC.as_slice())
        .ok_or(SigError::NotSigned)?;
    let hdr_at = body
        .len()
        .checked_sub(ModuleSignature::SIZE)
        .ok_or(SigError::Truncated)?;
    let mut h = [0u8; 12];
    h.copy_from_slice(&body[hdr_at..]);
    let header = ModuleSignature::from_bytes(&h);
    if header.id_type != PKEY_ID_PKCS7 {
        return Err(SigError::NotPkcs7 {
            id_type: header.id_type,
        });
    }
    if header.algo != 0
        || header.hash != 0
        || header.signer_len != 0
        || header.key_id_len != 0
        || header.pad != [0; 3]
        || header.sig_len == 0
    {
        return Err(SigError::BadTrailer);
    }
    let cms_at = usize::try_from(header.sig_len)
        .ok()
        .and_then(|l| hdr_at.checked_sub(l))
        .ok_or(SigError::Truncated)?;
    Ok(AppendedSignature {
        content: &body[..cms_at],
        cms: &body[cms_at..hdr_at],
        header,
    })
}

/// Why a certificate was not added to the keyring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// The certificate list or certificate is not well-formed DER.
    Malformed(&'static str),
    /// The certificate does not decode as X.509.
    Der(der::Error),
    /// The key is not RSA (or has bad RSA parameters).
    NotRsa(String),
    /// The modulus is outside 2048..=4096 bits.
    KeySize {
        /// Modulus size in bits.
        bits: usize,
    },
    /// The RSA key is invalid (e.g. even modulus, bad exponent).
    BadKey,
    /// The certificate's TBS hash is on the blocklist.
    Blocklisted,
    /// A secondary key not signed by a key already in the ring.
    Untrusted,
    /// The certificate's own signature algorithm is not RSA with SHA-2.
    UnsupportedCertSignature(String),
    /// No usable key was found in a certificate list.
    NoUsableKey,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Malformed(w) => write!(f, "malformed certificate data: {w}"),
            KeyError::Der(e) => write!(f, "certificate does not decode: {e}"),
            KeyError::NotRsa(oid) => write!(f, "not an RSA key (algorithm {oid})"),
            KeyError::KeySize { bits } => write!(
                f,
                "RSA key of {bits} bits outside {MIN_RSA_BITS}..={MAX_RSA_BITS}"
            ),
            KeyError::BadKey => f.write_str("invalid RSA public key"),
            KeyError::Blocklisted => f.write_str("certificate is on the blocklist"),
            KeyError::Untrusted => {
                f.write_str("certificate is not signed by a key already in the keyring")
            }
            KeyError::UnsupportedCertSignature(oid) => {
                write!(f, "unsupported certificate signature algorithm {oid}")
            }
            KeyError::NoUsableKey => f.write_str("no usable certificate in the list"),
        }
    }
}

impl ToErrno for KeyError {
    fn errno(&self) -> Errno {
        match self {
            KeyError::Blocklisted | KeyError::Untrusted => Errno::EKEYREJECTED,
            KeyError::NotRsa(_) | KeyError::UnsupportedCertSignature(_) => Errno::ENOPKG,
            KeyError::Malformed(_) | KeyError::Der(_) => Errno::EINVAL,
            KeyError::KeySize { .. } | KeyError::BadKey | KeyError::NoUsableKey => Errno::ENOKEY,
        }
    }
}

/// Where a key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The system certificates sent with `LOAD_KDATA` (or configured at build time).
    Builtin,
    /// Added at run time with `COPY_SECONDARY_KEY`, signed by a trusted key.
    Secondary,
}

/// A trusted RSA certificate.
#[derive(Clone, Debug)]
pub struct TrustedKey {
    /// The certificate's subject, RFC 4514 style.
    pub subject: String,
    /// The certificate's serial number, hex.
    pub serial_hex: String,
    /// Where it came from.
    pub source: KeySource,
    /// Modulus size in bits.
    pub bits: usize,
    /// The public key.
    pub key: RsaPublicKey,
    /// DER of the issuer name, for IssuerAndSerialNumber matching.
    issuer_der: Vec<u8>,
    /// DER of the subject name, for certificate-chain matching.
    subject_der: Vec<u8>,
    serial: Vec<u8>,
    skid: Option<Vec<u8>>,
    /// Raw TBSCertificate bytes, for blocklist checks.
    tbs: Vec<u8>,
}

impl TrustedKey {
    /// The subject key identifier, if the certificate has one.
    pub fn subject_key_id(&self) -> Option<&[u8]> {
        self.skid.as_deref()
    }

    fn tbs_blocked(&self, blocklist: &Blocklist) -> bool {
        blocklist.is_tbs_blocked(&self.tbs)
    }

    fn matches(&self, sid: &SignerIdentifier) -> bool {
        match sid {
            SignerIdentifier::IssuerAndSerialNumber(isn) => {
                isn.serial_number.as_bytes() == self.serial.as_slice()
                    && isn.issuer.to_der().is_ok_and(|d| d == self.issuer_der)
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => {
                self.skid.as_deref() == Some(ski.0.as_bytes())
            }
        }
    }
}

/// The certificates module signatures are checked against.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: Vec<TrustedKey>,
}

/// What [`Keyring::load_system_certs`] did with each certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Certificates added.
    pub added: usize,
    /// Certificates skipped, by position in the list, with the reason.
    pub skipped: Vec<(usize, KeyError)>,
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Keyring::default()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is loaded (module validation then fails with `-EACCES`).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys.
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// Adds one DER certificate as a built-in (trusted) key.
    pub fn add_builtin(&mut self, der: &[u8], blocklist: &Blocklist) -> Result<usize, KeyError> {
        let key = parse_key(der, KeySource::Builtin)?;
        if key.tbs_blocked(blocklist) {
            return Err(KeyError::Blocklisted);
        }
        Ok(self.insert(key))
    }

    /// Loads the kernel's concatenated DER certificate list (kdata type 0).
    /// Well-formed certificates that cannot be used (not RSA, key size, on
    /// the blocklist) are skipped and reported; malformed DER or a list
    /// without any usable key is an error. Zero padding after the last
    /// certificate is ignored.
    pub fn load_system_certs(
        &mut self,
        list: &[u8],
        blocklist: &Blocklist,
    ) -> Result<LoadReport, KeyError> {
        let mut report = LoadReport::default();
        let mut rest = list;
        let mut index = 0;
        while !rest.is_empty() {
            if rest.iter().all(|b| *b == 0) {
                break;
            }
            let (tlv, tail) = read_tlv(rest).ok_or(KeyError::Malformed("certificate list"))?;
            if tlv.tag != 0x30 {
                return Err(KeyError::Malformed(
                    "certificate list entry is not a SEQUENCE",
                ));
            }
            match self.add_builtin(tlv.raw, blocklist) {
                Ok(_) => report.added += 1,
                Err(e @ KeyError::Der(_)) | Err(e @ KeyError::Malformed(_)) => return Err(e),
                Err(e) => report.skipped.push((index, e)),
            }
            rest = tail;
            index += 1;
        }
        if report.added == 0 {
            return Err(KeyError::NoUsableKey);
        }
        Ok(report)
    }

    /// Adds a secondary key (`COPY_SECONDARY_KEY`): a DER certificate that must
    /// be signed (RSA PKCS#1 v1.5, SHA-2) by a key already in the ring, like
    /// Linux's `restrict_link_by_builtin_and_secondary_trusted`.
    pub fn add_secondary(&mut self, der: &[u8], blocklist: &Blocklist) -> Result<usize, KeyError> {
        let key = parse_key(der, KeySource::Secondary)?;
        if key.tbs_blocked(blocklist) {
            return Err(KeyError::Blocklisted);
        }
        let cert = Certificate::from_der(der).map_err(KeyError::Der)?;
        let sig_oid = cert.signature_algorithm().oid;
        let alg = [DigestAlg::Sha256, DigestAlg::Sha384, DigestAlg::Sha512]
            .into_iter()
            .find(|d| d.rsa_oid() == sig_oid)
            .ok_or_else(|| KeyError::UnsupportedCertSignature(sig_oid.to_string()))?;
        let sig = cert
            .signature()
            .as_bytes()
            .ok_or(KeyError::Malformed("certificate signature bit string"))?;
        let hashed = alg.digest(&key.tbs);
        let trusted = self.keys.iter().any(|k| {
            k.subject_der == key.issuer_der
                && !k.tbs_blocked(blocklist)
                && alg.rsa_verify(&k.key, &hashed, sig)
        });
        if !trusted {
            return Err(KeyError::Untrusted);
        }
        Ok(self.insert(key))
    }

    fn insert(&mut self, key: TrustedKey) -> usize {
        if let Some(i) = self.keys.iter().position(|k| k.tbs == key.tbs) {
            return i;
        }
        self.keys.push(key);
        self.keys.len() - 1
    }
}

fn parse_key(der: &[u8], source: KeySource) -> Result<TrustedKey, KeyError> {
    let cert = Certificate::from_der(der).map_err(KeyError::Der)?;
    let (whole, rest) = read_tlv(der).ok_or(KeyError::Malformed("certificate"))?;
    if !rest.is_empty() {
        return Err(KeyError::Malformed("bytes after the certificate"));
    }
    let (tbs, _) = read_tlv(whole.value).ok_or(KeyError::Malformed("TBSCertificate"))?;
    let t = cert.tbs_certificate();
    let spki = t.subject_public_key_info();
    if spki.algorithm.oid != OID_RSA_ENCRYPTION {
        return Err(KeyError::NotRsa(spki.algorithm.oid.to_string()));
    }
    if !params_null_or_absent(&spki.algorithm) {
        return Err(KeyError::NotRsa(
            "rsaEncryption with parameters".to_string(),
        ));
    }
    let pk_der = spki
        .subject_public_key
        .as_bytes()
        .ok_or(KeyError::Malformed("public key bit string"))?;
    let pk = rsa::pkcs1::RsaPublicKeyRef::from_der(pk_der).map_err(|_| KeyError::BadKey)?;
    let modulus = pk.modulus.as_bytes();
    let bits = match modulus.iter().position(|b| *b != 0) {
        Some(i) => (modulus.len() - i) * 8 - modulus[i].leading_zeros() as usize,
        None => 0,
    };
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(KeyError::KeySize { bits });
    }
    let key = RsaPublicKey::try_from(pk).map_err(|_| KeyError::BadKey)?;
    let skid = match t.get_extension::<SubjectKeyIdentifier>() {
        Ok(Some((_, ski))) => Some(ski.0.as_bytes().to_vec()),
        Ok(None) => None,
        Err(e) => return Err(KeyError::Der(e)),
    };
    let serial = t.serial_number().as_bytes().to_vec();
    Ok(TrustedKey {
        subject: t.subject().to_string(),
        serial_hex: hex(&serial),
        source,
        bits,
        key,
        issuer_der: t.issuer().to_der().map_err(KeyError::Der)?,
        subject_der: t.subject().to_der().map_err(KeyError::Der)?,
        serial,
        skid,
        tbs: tbs.raw.to_vec(),
    })
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = fmt::Write::write_fmt(&mut s, format_args!("{x:02x}"));
    }
    s
}

fn params_null_or_absent(alg: &AlgorithmIdentifierOwned) -> bool {
    match &alg.parameters {
        None => true,
        Some(p) => p.is_null(),
    }
}

/// Why a blocklist could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlocklistError {
    /// The blob is not a whole number of 133-byte slots.
    BadLength(usize),
    /// A slot has no NUL terminator.
    Unterminated {
        /// Slot index.
        slot: usize,
    },
    /// A slot is not `tbs:<hex>` or `bin:<hex>` with an even number (2..=128) of hex digits.
    BadEntry {
        /// Slot index.
        slot: usize,
    },
}

impl fmt::Display for BlocklistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlocklistError::BadLength(l) => {
                write!(
                    f,
                    "blocklist of {l} bytes is not a multiple of {BLOCKLIST_SLOT}"
                )
            }
            BlocklistError::Unterminated { slot } => write!(f, "blocklist slot {slot} has no NUL"),
            BlocklistError::BadEntry { slot } => {
                write!(f, "blocklist slot {slot} is not tbs:<hex> or bin:<hex>")
            }
        }
    }
}

impl ToErrno for BlocklistError {
    fn errno(&self) -> Errno {
        Errno::EINVAL
    }
}

/// Size of one blocklist slot: 4-byte prefix, up to 128 hex digits, NUL.
pub const BLOCKLIST_SLOT: usize = 133;

/// Revoked raw hashes (§3.7): `tbs:` hashes of certificates and `bin:` hashes
/// of signed content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blocklist {
    tbs: BTreeSet<Vec<u8>>,
    bin: BTreeSet<Vec<u8>>,
}

impl Blocklist {
    /// An empty blocklist.
    pub fn new() -> Self {
        Blocklist::default()
    }

    /// Parses kdata type 2: consecutive 133-byte NUL-terminated slots.
    /// All-zero slots are skipped.
    pub fn parse_slots(blob: &[u8]) -> Result<Self, BlocklistError> {
        if !blob.len().is_multiple_of(BLOCKLIST_SLOT) {
            return Err(BlocklistError::BadLength(blob.len()));
        }
        let mut list = Blocklist::new();
        for (slot, s) in blob.chunks_exact(BLOCKLIST_SLOT).enumerate() {
            if s.iter().all(|b| *b == 0) {
                continue;
            }
            let end = s
                .iter()
                .position(|b| *b == 0)
                .ok_or(BlocklistError::Unterminated { slot })?;
            list.add_entry(&s[..end])
                .map_err(|_| BlocklistError::BadEntry { slot })?;
        }
        Ok(list)
    }

    /// Adds one `tbs:<hex>` or `bin:<hex>` entry.
    pub fn add_entry(&mut self, entry: &[u8]) -> Result<(), BlocklistError> {
        let bad = BlocklistError::BadEntry { slot: 0 };
        let (set, digits) = if let Some(d) = entry.strip_prefix(b"tbs:") {
            (&mut self.tbs, d)
        } else if let Some(d) = entry.strip_prefix(b"bin:") {
            (&mut self.bin, d)
        } else {
            return Err(bad);
        };
        if digits.is_empty() || digits.len() % 2 != 0 || digits.len() > 128 {
            return Err(bad);
        }
        let nibble = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        let mut hash = Vec::with_capacity(digits.len() / 2);
        for pair in digits.chunks_exact(2) {
            hash.push(nibble(pair[0]).ok_or(bad)? << 4 | nibble(pair[1]).ok_or(bad)?);
        }
        set.insert(hash);
        Ok(())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.tbs.len() + self.bin.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True if some SHA-2 hash of `data` (for each length on the list) is a `bin:` entry.
    pub fn is_binary_blocked(&self, data: &[u8]) -> bool {
        blocked(&self.bin, data, None)
    }

    fn is_binary_blocked_with(&self, data: &[u8], known: (DigestAlg, &[u8])) -> bool {
        blocked(&self.bin, data, Some(known))
    }

    /// True if some SHA-2 hash of the TBSCertificate bytes is a `tbs:` entry.
    pub fn is_tbs_blocked(&self, tbs: &[u8]) -> bool {
        blocked(&self.tbs, tbs, None)
    }
}

fn blocked(set: &BTreeSet<Vec<u8>>, data: &[u8], known: Option<(DigestAlg, &[u8])>) -> bool {
    let lens: BTreeSet<usize> = set.iter().map(Vec::len).collect();
    lens.into_iter()
        .filter_map(DigestAlg::from_len)
        .any(|alg| match known {
            Some((k, d)) if k == alg => set.contains(d),
            _ => set.contains(&alg.digest(data)),
        })
}

/// Why a module signature was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigError {
    /// No `~Module signature appended~` marker.
    NotSigned,
    /// The trailer or signature length does not fit in the file.
    Truncated,
    /// `id_type` is not PKCS#7.
    NotPkcs7 {
        /// The id type found.
        id_type: u8,
    },
    /// Non-zero reserved trailer fields or a zero signature length.
    BadTrailer,
    /// The CMS blob is not valid DER of the expected structure.
    Malformed(&'static str),
    /// The CMS blob does not decode.
    Der(der::Error),
    /// `ContentInfo` is not signedData.
    NotSignedData(String),
    /// The signature is not detached (it embeds content).
    NotDetached,
    /// The signed content type is not `id-data`.
    NotData(String),
    /// Not exactly one `SignerInfo`.
    SignerCount(usize),
    /// Digest algorithm other than SHA-256/384/512.
    UnsupportedDigest(String),
    /// Signature algorithm other than RSA PKCS#1 v1.5 (or not matching the digest).
    UnsupportedSignature(String),
    /// Algorithm parameters other than NULL/absent.
    BadParameters,
    /// Signed attributes lack (or repeat) a required attribute.
    BadSignedAttributes(&'static str),
    /// The `messageDigest` attribute does not match the content.
    MessageDigestMismatch,
    /// No certificates are loaded.
    NoKeys,
    /// No key in the keyring matches the signer identifier.
    UnknownSigner(String),
    /// The signature does not verify with the signer's key.
    BadSignature {
        /// The signer's subject.
        signer: String,
    },
    /// The signer's certificate is on the blocklist.
    KeyBlocklisted {
        /// The signer's subject.
        signer: String,
    },
    /// The content's hash is on the blocklist.
    ContentBlocklisted,
}

impl fmt::Display for SigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigError::NotSigned => f.write_str("no appended module signature"),
            SigError::Truncated => f.write_str("signature trailer does not fit in the file"),
            SigError::NotPkcs7 { id_type } => {
                write!(f, "signature id_type {id_type} is not PKCS#7 (2)")
            }
            SigError::BadTrailer => {
                f.write_str("module_signature has non-zero reserved fields or sig_len 0")
            }
            SigError::Malformed(w) => write!(f, "malformed CMS: {w}"),
            SigError::Der(e) => write!(f, "CMS does not decode: {e}"),
            SigError::NotSignedData(oid) => write!(f, "CMS content type {oid} is not signedData"),
            SigError::NotDetached => f.write_str("CMS signature is not detached"),
            SigError::NotData(oid) => write!(f, "signed content type {oid} is not id-data"),
            SigError::SignerCount(n) => write!(f, "{n} signers (exactly one required)"),
            SigError::UnsupportedDigest(oid) => write!(f, "unsupported digest algorithm {oid}"),
            SigError::UnsupportedSignature(oid) => {
                write!(f, "unsupported signature algorithm {oid}")
            }
            SigError::BadParameters => f.write_str("unexpected algorithm parameters"),
            SigError::BadSignedAttributes(w) => write!(f, "signed attributes: {w}"),
            SigError::MessageDigestMismatch => {
                f.write_str("messageDigest attribute does not match the module")
            }
            SigError::NoKeys => f.write_str("no certificates loaded"),
            SigError::UnknownSigner(s) => write!(f, "no trusted certificate for signer {s}"),
            SigError::BadSignature { signer } => {
                write!(f, "signature does not verify with the key of {signer}")
            }
            SigError::KeyBlocklisted { signer } => {
                write!(f, "signer certificate {signer} is on the blocklist")
            }
            SigError::ContentBlocklisted => f.write_str("module hash is on the blocklist"),
        }
    }
}

impl ToErrno for SigError {
    fn errno(&self) -> Errno {
        match self {
            SigError::NotSigned => Errno::ENODATA,
            SigError::NotPkcs7 { .. }
            | SigError::UnsupportedDigest(_)
            | SigError::UnsupportedSignature(_) => Errno::ENOPKG,
            SigError::NoKeys => Errno::EACCES,
            SigError::UnknownSigner(_) => Errno::ENOKEY,
            SigError::BadSignature { .. }
            | SigError::KeyBlocklisted { .. }
            | SigError::ContentBlocklisted
            | SigError::MessageDigestMismatch
            | SigError::NotData(_) => Errno::EKEYREJECTED,
            _ => Errno::ELIBBAD,
        }
    }
}

/// A module whose signature verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Length of the signed content (the module ELF) at the start of the file.
    pub content_len: usize,
    /// Index of the signer's key in the keyring.
    pub key_index: usize,
    /// The signer's certificate subject.
    pub signer: String,
    /// The digest algorithm.
    pub digest: DigestAlg,
    /// Whether the signature carried signed attributes.
    pub signed_attributes: bool,
}

/// Verifies a signed module file against `keyring` and `blocklist`.
pub fn verify_module(
    file: &[u8],
    keyring: &Keyring,
    blocklist: &Blocklist,
) -> Result<Verified, SigError> {
    let parts = split_appended_signature(file)?;
    verify_detached(parts.content, parts.cms, keyring, blocklist)
}

/// Verifies a detached CMS signature `cms` over `content`.
pub fn verify_detached(
    content: &[u8],
    cms_der: &[u8],
    keyring: &Keyring,
    blocklist: &Blocklist,
) -> Result<Verified, SigError> {
    let ci = ContentInfo::from_der(cms_der).map_err(SigError::Der)?;
    if ci.content_type != OID_SIGNED_DATA {
        return Err(SigError::NotSignedData(ci.content_type.to_string()));
    }
    let sd: SignedData = ci.content.decode_as().map_err(SigError::Der)?;
    if sd.encap_content_info.econtent_type != OID_DATA {
        return Err(SigError::NotData(
            sd.encap_content_info.econtent_type.to_string(),
        ));
    }
    if sd.encap_content_info.econtent.is_some() {
        return Err(SigError::NotDetached);
    }
    let signers = sd.signer_infos.0.len();
    let si: &SignerInfo = match sd.signer_infos.0.get(0) {
        Some(si) if signers == 1 => si,
        _ => return Err(SigError::SignerCount(signers)),
    };
    let digest = DigestAlg::from_oid(&si.digest_alg.oid)
        .ok_or_else(|| SigError::UnsupportedDigest(si.digest_alg.oid.to_string()))?;
    let sig_oid = si.signature_algorithm.oid;
    if sig_oid != OID_RSA_ENCRYPTION && sig_oid != digest.rsa_oid() {
        return Err(SigError::UnsupportedSignature(sig_oid.to_string()));
    }
    if !params_null_or_absent(&si.digest_alg) || !params_null_or_absent(&si.signature_algorithm) {
        return Err(SigError::BadParameters);
    }

    if keyring.is_empty() {
        return Err(SigError::NoKeys);
    }
    // Every key the signer identifier names (a secondary certificate may
    // share issuer and serial with another); revoked ones are unusable.
    let named: Vec<(usize, &TrustedKey)> = keyring
        .keys
        .iter()
        .enumerate()
        .filter(|(_, k)| k.matches(&si.sid))
        .collect();
    let first = named
        .first()
        .ok_or_else(|| SigError::UnknownSigner(describe_sid(&si.sid)))?
        .1;
    let usable: Vec<(usize, &TrustedKey)> = named
        .iter()
        .copied()
        .filter(|(_, k)| !k.tbs_blocked(blocklist))
        .collect();
    if usable.is_empty() {
        return Err(SigError::KeyBlocklisted {
            signer: first.subject.clone(),
        });
    }

    let content_digest = digest.digest(content);
    if blocklist.is_binary_blocked_with(content, (digest, &content_digest)) {
        return Err(SigError::ContentBlocklisted);
    }

    let signed = match &si.signed_attrs {
        None => content_digest,
        Some(attrs) => {
            let mut message_digest = None;
            let mut content_type = None;
            for a in attrs.iter() {
                let slot = if a.oid == OID_MESSAGE_DIGEST {
                    &mut message_digest
                } else if a.oid == OID_CONTENT_TYPE {
                    &mut content_type
                } else {
                    continue;
                };
                if slot.is_some() || a.values.len() != 1 {
                    return Err(SigError::BadSignedAttributes("repeated attribute"));
                }
                *slot = a.values.get(0);
            }
            let ct: ObjectIdentifier = content_type
                .ok_or(SigError::BadSignedAttributes("no contentType"))?
                .decode_as()
                .map_err(SigError::Der)?;
            if ct != OID_DATA {
                return Err(SigError::NotData(ct.to_string()));
            }
            let md: OctetString = message_digest
                .ok_or(SigError::BadSignedAttributes("no messageDigest"))?
                .decode_as()
                .map_err(SigError::Der)?;
            if md.as_bytes() != content_digest.as_slice() {
                return Err(SigError::MessageDigestMismatch);
            }
            let raw = raw_signed_attrs(cms_der)?;
            let mut h: Vec<u8> = Vec::with_capacity(raw.len());
            h.push(0x31); // [0] IMPLICIT SET OF -> SET OF
            h.extend_from_slice(&raw[1..]);
            digest.digest(&h)
        }
    };
    let (key_index, key) = usable
        .iter()
        .find(|(_, k)| digest.rsa_verify(&k.key, &signed, si.signature.as_bytes()))
        .ok_or_else(|| SigError::BadSignature {
            signer: usable[0].1.subject.clone(),
        })?;
    Ok(Verified {
        content_len: content.len(),
        key_index: *key_index,
        signer: key.subject.clone(),
        digest,
        signed_attributes: si.signed_attrs.is_some(),
    })
}

fn describe_sid(sid: &SignerIdentifier) -> String {
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(isn) => alloc::format!(
            "issuer {} serial {}",
            isn.issuer,
            hex(isn.serial_number.as_bytes())
        ),
        SignerIdentifier::SubjectKeyIdentifier(ski) => {
            alloc::format!("subject key id {}", hex(ski.0.as_bytes()))
        }
    }
}

/// One DER TLV.
struct Tlv<'a> {
    tag: u8,
    /// The contents.
    value: &'a [u8],
    /// Tag, length and contents.
    raw: &'a [u8],
}

/// Reads one definite-length DER TLV with a single-byte tag.
fn read_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let tag = *input.first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let first = *input.get(1)?;
    let (len, hdr) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None; // indefinite or absurd length
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*input.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    if end > input.len() {
        return None;
    }
    Some((
        Tlv {
            tag,
            value: &input[hdr..end],
            raw: &input[..end],
        },
        &input[end..],
    ))
}

/// The raw `[0] IMPLICIT SignedAttributes` TLV of the (single) SignerInfo.
fn raw_signed_attrs(cms_der: &[u8]) -> Result<&[u8], SigError> {
    let bad = SigError::Malformed("cannot locate signed attributes");
    let (ci, _) = read_tlv(cms_der).ok_or(bad.clone())?;
    let (_oid, rest) = read_tlv(ci.value).ok_or(bad.clone())?;
    let (explicit, _) = read_tlv(rest).ok_or(bad.clone())?;
    let (sd, _) = read_tlv(explicit.value).ok_or(bad.clone())?;
    // version, digestAlgorithms, encapContentInfo, [0] certs?, [1] crls?, signerInfos
    let mut rest = sd.value;
    let signer_infos = loop {
        let (tlv, tail) = read_tlv(rest).ok_or(bad.clone())?;
        if tail.is_empty() {
            break tlv;
        }
        rest = tail;
    };
    let (si, _) = read_tlv(signer_infos.value).ok_or(bad.clone())?;
    // version, sid, digestAlgorithm, [0] signedAttrs
    let (_, rest) = read_tlv(si.value).ok_or(bad.clone())?;
    let (_, rest) = read_tlv(rest).ok_or(bad.clone())?;
    let (_, rest) = read_tlv(rest).ok_or(bad.clone())?;
    let (attrs, _) = read_tlv(rest).ok_or(bad.clone())?;
    if attrs.tag != 0xa0 {
        return Err(bad);
    }
    Ok(attrs.raw)
}

#[cfg(test)]
mod tests;
