//! Key manager TA: generates or imports keys that never leave it, uses them
//! to sign, verify, encrypt and decrypt, and seals them to the measurement.
//!
//! Key types: RSA-2048 (PKCS#1 v1.5/SHA-256 signatures, OAEP-SHA-256
//! encryption), ECDSA P-256 and P-384, and AES-256-GCM (encryption output
//! is `nonce (12) || ciphertext || tag (16)`, with optional associated data
//! in slot 3).
//!
//! Keys are addressed by a handle and owned by the client identity (login
//! method and client UUID) that created them; another identity gets
//! `ITEM_NOT_FOUND`. Only public keys can be read out. A key leaves the TA
//! only as a sealed blob: AES-256-GCM under a key derived from the platform
//! sealing root, this TA's UUID and the current measurement
//! ([`TaEnv::sealing_key`]), so a different image (or platform) cannot unseal
//! it (`MAC_INVALID`). Blob layout: `"LVSL" | version 1 | kind | 0 | 0 |
//! nonce (12) | ciphertext || tag`, the 8-byte header being associated data.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use super::keys::{AsymKey, KeyKind};
use crate::dispatch::{ClientIdentity, TaEnv, TrustedApp};
use crate::error::TeeError;
use crate::params::{ParamType as T, Params, TaParam};
use crate::uuid::Uuid;

/// UUID of the key manager TA.
pub const UUID: Uuid = Uuid::from_fields(
    0x5b06_0122,
    0x85a5,
    0x49b1,
    [0xad, 0x86, 0xb3, 0x45, 0x7f, 0x62, 0x99, 0x5d],
);

/// Command ids and their parameters (`-` is NONE).
pub mod cmd {
    /// `[ValueInput (key_type, 0), ValueOutput (handle, 0), -, -]`.
    pub const GENERATE: u32 = 0;
    /// `[ValueInput (key_type, 0), MemrefInput secret, ValueOutput (handle, 0), -]`:
    /// RSA as PKCS#1 DER `RSAPrivateKey`, EC as the big-endian scalar, AES as 32 raw bytes.
    pub const IMPORT: u32 = 1;
    /// `[ValueInput (handle, 0), MemrefOutput public key, -, -]`: PKCS#1 DER
    /// `RSAPublicKey` or uncompressed SEC1 point; `NOT_SUPPORTED` for AES.
    pub const GET_PUBLIC: u32 = 2;
    /// `[ValueInput (handle, 0), MemrefInput message, MemrefOutput signature, -]`.
    pub const SIGN: u32 = 3;
    /// `[ValueInput (handle, 0), MemrefInput message, MemrefInput signature, -]`:
    /// `SIGNATURE_INVALID` if it does not verify.
    pub const VERIFY: u32 = 4;
    /// `[ValueInput (handle, 0), MemrefInput plaintext, MemrefOutput ciphertext,
    /// MemrefInput aad | -]` (AAD for AES only).
    pub const ENCRYPT: u32 = 5;
    /// `[ValueInput (handle, 0), MemrefInput ciphertext, MemrefOutput plaintext,
    /// MemrefInput aad | -]`: any failure is `SECURITY`.
    pub const DECRYPT: u32 = 6;
    /// `[ValueInput (handle, 0), MemrefOutput blob, -, -]`.
    pub const SEAL_KEY: u32 = 7;
    /// `[MemrefInput blob, ValueOutput (handle, 0), -, -]`: `MAC_INVALID` if
    /// the blob was tampered with or sealed under another measurement.
    pub const UNSEAL_KEY: u32 = 8;
    /// `[ValueInput (handle, 0), -, -, -]`.
    pub const DELETE: u32 = 9;
    /// `[MemrefInput data, MemrefOutput blob, -, -]`.
    pub const SEAL_DATA: u32 = 10;
    /// `[MemrefInput blob, MemrefOutput data, -, -]`.
    pub const UNSEAL_DATA: u32 = 11;
}

/// Key types (value `a` of GENERATE and IMPORT).
pub mod key_type {
    /// RSA-2048.
    pub const RSA_2048: u32 = 1;
    /// ECDSA P-256.
    pub const ECDSA_P256: u32 = 2;
    /// AES-256-GCM.
    pub const AES_256_GCM: u32 = 3;
    /// ECDSA P-384.
    pub const ECDSA_P384: u32 = 4;
}

/// Most keys held at once.
pub const MAX_KEYS: usize = 16;
/// Approximate key memory budget in bytes.
pub const MEMORY_BUDGET: usize = 16 * 1024;
/// Largest plaintext for ENCRYPT, SEAL_DATA.
pub const MAX_DATA: usize = 4096;

const MAGIC: &[u8; 4] = b"LVSL";
const VERSION: u8 = 1;
const KIND_DATA: u8 = 0x80;
const BLOB_HEADER: usize = 8;
const NONCE: usize = 12;
const TAG: usize = 16;

enum KmKey {
    Asym(AsymKey),
    Aes(Zeroizing<[u8; 32]>),
}

impl KmKey {
    fn type_id(&self) -> u8 {
        match self {
            KmKey::Asym(k) => match k.kind() {
                KeyKind::Rsa2048 => key_type::RSA_2048 as u8,
                KeyKind::EcdsaP256 => key_type::ECDSA_P256 as u8,
                KeyKind::EcdsaP384 => key_type::ECDSA_P384 as u8,
            },
            KmKey::Aes(_) => key_type::AES_256_GCM as u8,
        }
    }

    fn footprint(&self) -> usize {
        match self {
            KmKey::Asym(k) => k.footprint(),
            KmKey::Aes(_) => 64,
        }
    }

    fn import(kind: u32, secret: &[u8]) -> Result<KmKey, TeeError> {
        Ok(match kind {
            key_type::RSA_2048 => KmKey::Asym(AsymKey::import(KeyKind::Rsa2048, secret)?),
            key_type::ECDSA_P256 => KmKey::Asym(AsymKey::import(KeyKind::EcdsaP256, secret)?),
            key_type::ECDSA_P384 => KmKey::Asym(AsymKey::import(KeyKind::EcdsaP384, secret)?),
            key_type::AES_256_GCM => {
                let k: [u8; 32] = secret.try_into().map_err(|_| TeeError::BadFormat)?;
                KmKey::Aes(Zeroizing::new(k))
            }
            _ => return Err(TeeError::NotSupported),
        })
    }

    fn secret(&self) -> Result<Zeroizing<Vec<u8>>, TeeError> {
        match self {
            KmKey::Asym(k) => k.secret_bytes(),
            KmKey::Aes(k) => Ok(Zeroizing::new(k.to_vec())),
        }
    }
}

struct Entry {
    owner: ClientIdentity,
    key: KmKey,
}

/// The key manager TA.
pub struct KeyManager {
    keys: BTreeMap<u32, Entry>,
    next_handle: u32,
    used: usize,
}

impl Default for KeyManager {
    fn default() -> KeyManager {
        KeyManager {
            keys: BTreeMap::new(),
            next_handle: 1,
            used: 0,
        }
    }
}

fn aes_encrypt(
    env: &mut TaEnv<'_>,
    key: &[u8; 32],
    pt: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, TeeError> {
    let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| TeeError::Generic)?;
    let mut nonce = [0u8; NONCE];
    env.random(&mut nonce)?;
    let ct = cipher
        .encrypt(&Nonce::from(nonce), Payload { msg: pt, aad })
        .map_err(|_| TeeError::Generic)?;
    let mut out = Vec::with_capacity(NONCE + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

fn aes_decrypt(key: &[u8; 32], blob: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if blob.len() < NONCE + TAG {
        return None;
    }
    let (nonce, ct) = blob.split_at(NONCE);
    let nonce: [u8; NONCE] = nonce.try_into().ok()?;
    let cipher = Aes256Gcm::new_from_slice(key).ok()?;
    cipher
        .decrypt(&Nonce::from(nonce), Payload { msg: ct, aad })
        .ok()
        .map(Zeroizing::new)
}

fn seal(env: &mut TaEnv<'_>, kind: u8, secret: &[u8]) -> Result<Vec<u8>, TeeError> {
    let key = env.sealing_key(b"key-manager/seal");
    let header = [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], VERSION, kind, 0, 0];
    let body = aes_encrypt(env, &key, secret, &header)?;
    let mut out = Vec::with_capacity(BLOB_HEADER + body.len());
    out.extend_from_slice(&header);
    out.extend_from_slice(&body);
    Ok(out)
}

fn unseal(env: &TaEnv<'_>, blob: &[u8]) -> Result<(u8, Zeroizing<Vec<u8>>), TeeError> {
    let (header, body) = blob
        .split_at_checked(BLOB_HEADER)
        .ok_or(TeeError::BadFormat)?;
    if header.get(..4) != Some(&MAGIC[..]) || header.get(4) != Some(&VERSION) {
        return Err(TeeError::BadFormat);
    }
    let kind = header.get(5).copied().ok_or(TeeError::BadFormat)?;
    let key = env.sealing_key(b"key-manager/seal");
    let secret = aes_decrypt(&key, body, header).ok_or(TeeError::MacInvalid)?;
    Ok((kind, secret))
}

fn sealed_len(secret_len: usize) -> usize {
    BLOB_HEADER + NONCE + secret_len + TAG
}

fn aad_param(p: &Params) -> Result<&[u8], TeeError> {
    match p.get(3) {
        Some(TaParam::None) => Ok(&[]),
        _ => p.memref(3),
    }
}

impl KeyManager {
    fn key(&self, owner: &ClientIdentity, handle: u32) -> Result<&KmKey, TeeError> {
        match self.keys.get(&handle) {
            Some(e) if e.owner == *owner => Ok(&e.key),
            _ => Err(TeeError::ItemNotFound),
        }
    }

    fn insert(&mut self, owner: &ClientIdentity, key: KmKey) -> Result<u32, TeeError> {
        if self.keys.len() >= MAX_KEYS || self.used + key.footprint() > MEMORY_BUDGET {
            return Err(TeeError::OutOfMemory);
        }
        let mut handle = self.next_handle;
        while handle == 0 || self.keys.contains_key(&handle) {
            handle = handle.wrapping_add(1);
        }
        self.next_handle = handle.wrapping_add(1);
        self.used += key.footprint();
        self.keys.insert(handle, Entry { owner: *owner, key });
        Ok(handle)
    }

    fn check_room(&self, footprint: usize) -> Result<(), TeeError> {
        if self.keys.len() >= MAX_KEYS || self.used + footprint > MEMORY_BUDGET {
            Err(TeeError::OutOfMemory)
        } else {
            Ok(())
        }
    }
}

impl TrustedApp for KeyManager {
    fn uuid(&self) -> Uuid {
        UUID
    }

    fn name(&self) -> &'static str {
        "key-manager"
    }

    fn open_session(
        &mut self,
        _env: &mut TaEnv<'_>,
        _session: u32,
        _client: &ClientIdentity,
        params: &mut Params,
    ) -> Result<(), TeeError> {
        params.expect([T::None; 4])
    }

    fn invoke(
        &mut self,
        env: &mut TaEnv<'_>,
        _session: u32,
        client: &ClientIdentity,
        command: u32,
        p: &mut Params,
    ) -> Result<(), TeeError> {
        match command {
            cmd::GENERATE => {
                p.expect([T::ValueInput, T::ValueOutput, T::None, T::None])?;
                let (kind, _) = p.value(0)?;
                let key = match kind {
                    key_type::RSA_2048 => KmKey::Asym(AsymKey::generate(KeyKind::Rsa2048, env)?),
                    key_type::ECDSA_P256 => {
                        KmKey::Asym(AsymKey::generate(KeyKind::EcdsaP256, env)?)
                    }
                    key_type::ECDSA_P384 => {
                        KmKey::Asym(AsymKey::generate(KeyKind::EcdsaP384, env)?)
                    }
                    key_type::AES_256_GCM => {
                        let mut k = Zeroizing::new([0u8; 32]);
                        env.random(k.as_mut())?;
                        KmKey::Aes(k)
                    }
                    _ => return Err(TeeError::NotSupported),
                };
                let h = self.insert(client, key)?;
                p.set_value(1, h, 0)
            }
            cmd::IMPORT => {
                p.expect([T::ValueInput, T::MemrefInput, T::ValueOutput, T::None])?;
                let (kind, _) = p.value(0)?;
                let key = KmKey::import(kind, p.memref(1)?)?;
                let h = self.insert(client, key)?;
                p.set_value(2, h, 0)
            }
            cmd::GET_PUBLIC => {
                p.expect([T::ValueInput, T::MemrefOutput, T::None, T::None])?;
                let (h, _) = p.value(0)?;
                match self.key(client, h)? {
                    KmKey::Asym(k) => {
                        let pk = k.public_bytes()?;
                        p.set_memref(1, &pk)
                    }
                    KmKey::Aes(_) => Err(TeeError::NotSupported),
                }
            }
            cmd::SIGN => {
                p.expect([T::ValueInput, T::MemrefInput, T::MemrefOutput, T::None])?;
                let (h, _) = p.value(0)?;
                let KmKey::Asym(k) = self.key(client, h)? else {
                    return Err(TeeError::NotSupported);
                };
                p.require(2, k.signature_len())?;
                let sig = k.sign(env, p.memref(1)?)?;
                p.set_memref(2, &sig)
            }
            cmd::VERIFY => {
                p.expect([T::ValueInput, T::MemrefInput, T::MemrefInput, T::None])?;
                let (h, _) = p.value(0)?;
                let KmKey::Asym(k) = self.key(client, h)? else {
                    return Err(TeeError::NotSupported);
                };
                k.verify(p.memref(1)?, p.memref(2)?)
            }
            cmd::ENCRYPT | cmd::DECRYPT => {
                let types = p.types();
                if types[..3] != [T::ValueInput, T::MemrefInput, T::MemrefOutput]
                    || !matches!(types[3], T::None | T::MemrefInput)
                {
                    return Err(TeeError::BadParameters);
                }
                let (h, _) = p.value(0)?;
                let input = p.memref(1)?;
                let aad = aad_param(p)?;
                let key = self.key(client, h)?;
                let out: Zeroizing<Vec<u8>> = if command == cmd::ENCRYPT {
                    if input.len() > MAX_DATA {
                        return Err(TeeError::ExcessData);
                    }
                    Zeroizing::new(match key {
                        KmKey::Aes(k) => aes_encrypt(env, k, input, aad)?,
                        KmKey::Asym(k) if aad.is_empty() => k.encrypt(env, input)?,
                        KmKey::Asym(_) => return Err(TeeError::BadParameters),
                    })
                } else {
                    match key {
                        KmKey::Aes(k) => aes_decrypt(k, input, aad).ok_or(TeeError::Security)?,
                        KmKey::Asym(k) if aad.is_empty() => k.decrypt(env, input)?,
                        KmKey::Asym(_) => return Err(TeeError::BadParameters),
                    }
                };
                p.set_memref(2, &out)
            }
            cmd::SEAL_KEY => {
                p.expect([T::ValueInput, T::MemrefOutput, T::None, T::None])?;
                let (h, _) = p.value(0)?;
                let key = self.key(client, h)?;
                let secret = key.secret()?;
                p.require(1, sealed_len(secret.len()))?;
                let blob = seal(env, key.type_id(), &secret)?;
                p.set_memref(1, &blob)
            }
            cmd::UNSEAL_KEY => {
                p.expect([T::MemrefInput, T::ValueOutput, T::None, T::None])?;
                let (kind, secret) = unseal(env, p.memref(0)?)?;
                if kind == KIND_DATA {
                    return Err(TeeError::BadFormat);
                }
                let key = KmKey::import(u32::from(kind), &secret)?;
                self.check_room(key.footprint())?;
                let h = self.insert(client, key)?;
                p.set_value(1, h, 0)
            }
            cmd::DELETE => {
                p.expect([T::ValueInput, T::None, T::None, T::None])?;
                let (h, _) = p.value(0)?;
                self.key(client, h)?;
                if let Some(e) = self.keys.remove(&h) {
                    self.used = self.used.saturating_sub(e.key.footprint());
                }
                Ok(())
            }
            cmd::SEAL_DATA => {
                p.expect([T::MemrefInput, T::MemrefOutput, T::None, T::None])?;
                let data = p.memref(0)?;
                if data.len() > MAX_DATA {
                    return Err(TeeError::ExcessData);
                }
                p.require(1, sealed_len(data.len()))?;
                let blob = seal(env, KIND_DATA, p.memref(0)?)?;
                p.set_memref(1, &blob)
            }
            cmd::UNSEAL_DATA => {
                p.expect([T::MemrefInput, T::MemrefOutput, T::None, T::None])?;
                let (kind, data) = unseal(env, p.memref(0)?)?;
                if kind != KIND_DATA {
                    return Err(TeeError::BadFormat);
                }
                p.set_memref(1, &data)
            }
            _ => Err(TeeError::NotSupported),
        }
    }

    fn close_session(&mut self, _env: &mut TaEnv<'_>, _session: u32) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::login;
    use crate::ta::testutil::{mem_in, mem_out, none, params, val_in, val_out, Harness, ParamsExt};

    fn generate(h: &mut Harness, km: &mut KeyManager, kind: u32) -> Result<u32, TeeError> {
        let mut p = params(val_in(kind, 0), val_out(), none(), none());
        h.invoke(km, cmd::GENERATE, &mut p)?;
        Ok(p.value_out(1).0)
    }

    fn sign(
        h: &mut Harness,
        km: &mut KeyManager,
        key: u32,
        msg: &[u8],
    ) -> Result<Vec<u8>, TeeError> {
        let mut p = params(val_in(key, 0), mem_in(msg), mem_out(512), none());
        h.invoke(km, cmd::SIGN, &mut p)?;
        Ok(p.memref_out(2).to_vec())
    }

    fn verify(
        h: &mut Harness,
        km: &mut KeyManager,
        key: u32,
        msg: &[u8],
        sig: &[u8],
    ) -> Result<(), TeeError> {
        let mut p = params(val_in(key, 0), mem_in(msg), mem_in(sig), none());
        h.invoke(km, cmd::VERIFY, &mut p)
    }

    fn crypt(
        h: &mut Harness,
        km: &mut KeyManager,
        c: u32,
        key: u32,
        data: &[u8],
        aad: Option<&[u8]>,
    ) -> Result<Vec<u8>, TeeError> {
        let aad = aad.map_or(none(), mem_in);
        let mut p = params(val_in(key, 0), mem_in(data), mem_out(8192), aad);
        h.invoke(km, c, &mut p)?;
        Ok(p.memref_out(2).to_vec())
    }

    fn seal_key(h: &mut Harness, km: &mut KeyManager, key: u32) -> Result<Vec<u8>, TeeError> {
        let mut p = params(val_in(key, 0), mem_out(4096), none(), none());
        h.invoke(km, cmd::SEAL_KEY, &mut p)?;
        Ok(p.memref_out(1).to_vec())
    }

    fn unseal_key(h: &mut Harness, km: &mut KeyManager, blob: &[u8]) -> Result<u32, TeeError> {
        let mut p = params(mem_in(blob), val_out(), none(), none());
        h.invoke(km, cmd::UNSEAL_KEY, &mut p)?;
        Ok(p.value_out(1).0)
    }

    #[test]
    fn ecdsa_and_aes_round_trips() {
        let mut h = Harness::new(10);
        let mut km = KeyManager::default();
        let ec = generate(&mut h, &mut km, key_type::ECDSA_P256).unwrap();
        let sig = sign(&mut h, &mut km, ec, b"hello").unwrap();
        assert_eq!(sig.len(), 64);
        verify(&mut h, &mut km, ec, b"hello", &sig).unwrap();
        assert_eq!(
            verify(&mut h, &mut km, ec, b"hellO", &sig),
            Err(TeeError::SignatureInvalid)
        );
        assert_eq!(
            verify(&mut h, &mut km, ec, b"hello", &sig[..10]),
            Err(TeeError::SignatureInvalid)
        );
        // The public key verifies outside the TA too.
        let mut p = params(val_in(ec, 0), mem_out(100), none(), none());
        h.invoke(&mut km, cmd::GET_PUBLIC, &mut p).unwrap();
        let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(p.memref_out(1)).unwrap();
        let s = p256::ecdsa::Signature::from_slice(&sig).unwrap();
        use p256::ecdsa::signature::Verifier;
        vk.verify(b"hello", &s).unwrap();

        let aes = generate(&mut h, &mut km, key_type::AES_256_GCM).unwrap();
        let ct = crypt(&mut h, &mut km, cmd::ENCRYPT, aes, b"secret", Some(b"ctx")).unwrap();
        assert_eq!(ct.len(), 12 + 6 + 16);
        assert_eq!(
            crypt(&mut h, &mut km, cmd::DECRYPT, aes, &ct, Some(b"ctx")).unwrap(),
            b"secret"
        );
        assert_eq!(
            crypt(&mut h, &mut km, cmd::DECRYPT, aes, &ct, Some(b"other")),
            Err(TeeError::Security)
        );
        let mut bad = ct.clone();
        bad[14] ^= 1;
        assert_eq!(
            crypt(&mut h, &mut km, cmd::DECRYPT, aes, &bad, Some(b"ctx")),
            Err(TeeError::Security)
        );
        assert_eq!(
            crypt(&mut h, &mut km, cmd::DECRYPT, aes, &ct[..5], None),
            Err(TeeError::Security)
        );
        // Secret keys are never readable; AES cannot sign.
        let mut p = params(val_in(aes, 0), mem_out(100), none(), none());
        assert_eq!(
            h.invoke(&mut km, cmd::GET_PUBLIC, &mut p),
            Err(TeeError::NotSupported)
        );
        assert_eq!(
            sign(&mut h, &mut km, aes, b"x"),
            Err(TeeError::NotSupported)
        );
        // ECDSA keys cannot encrypt.
        assert_eq!(
            crypt(&mut h, &mut km, cmd::ENCRYPT, ec, b"x", None),
            Err(TeeError::NotSupported)
        );
    }

    #[test]
    fn rsa_sign_encrypt_and_import() {
        let mut h = Harness::new(11);
        let mut km = KeyManager::default();
        let rsa = generate(&mut h, &mut km, key_type::RSA_2048).unwrap();
        let sig = sign(&mut h, &mut km, rsa, b"msg").unwrap();
        assert_eq!(sig.len(), 256);
        verify(&mut h, &mut km, rsa, b"msg", &sig).unwrap();
        assert_eq!(
            verify(&mut h, &mut km, rsa, b"msh", &sig),
            Err(TeeError::SignatureInvalid)
        );
        let ct = crypt(&mut h, &mut km, cmd::ENCRYPT, rsa, b"wrapped key", None).unwrap();
        assert_eq!(
            crypt(&mut h, &mut km, cmd::DECRYPT, rsa, &ct, None).unwrap(),
            b"wrapped key"
        );
        let mut bad = ct.clone();
        bad[0] ^= 0x40;
        assert_eq!(
            crypt(&mut h, &mut km, cmd::DECRYPT, rsa, &bad, None),
            Err(TeeError::Security)
        );
        assert_eq!(
            crypt(&mut h, &mut km, cmd::ENCRYPT, rsa, &[0; 200], None),
            Err(TeeError::ExcessData)
        );
        // Short signature buffer: reported before signing.
        let mut p = params(val_in(rsa, 0), mem_in(b"m"), mem_out(255), none());
        assert_eq!(
            h.invoke(&mut km, cmd::SIGN, &mut p),
            Err(TeeError::ShortBuffer)
        );
        // Import through seal: an imported copy signs verifiably for the original.
        let blob = seal_key(&mut h, &mut km, rsa).unwrap();
        let copy = unseal_key(&mut h, &mut km, &blob).unwrap();
        let sig2 = sign(&mut h, &mut km, copy, b"msg").unwrap();
        verify(&mut h, &mut km, rsa, b"msg", &sig2).unwrap();
        // Malformed import material.
        let mut p = params(
            val_in(key_type::RSA_2048, 0),
            mem_in(&[0x30, 0x03, 1, 2, 3]),
            val_out(),
            none(),
        );
        assert_eq!(
            h.invoke(&mut km, cmd::IMPORT, &mut p),
            Err(TeeError::BadFormat)
        );
        let mut p = params(
            val_in(key_type::ECDSA_P256, 0),
            mem_in(&[0; 32]),
            val_out(),
            none(),
        );
        assert_eq!(
            h.invoke(&mut km, cmd::IMPORT, &mut p),
            Err(TeeError::BadFormat)
        );
        let mut p = params(
            val_in(key_type::AES_256_GCM, 0),
            mem_in(&[0; 31]),
            val_out(),
            none(),
        );
        assert_eq!(
            h.invoke(&mut km, cmd::IMPORT, &mut p),
            Err(TeeError::BadFormat)
        );
        let mut p = params(val_in(77, 0), mem_in(&[0; 32]), val_out(), none());
        assert_eq!(
            h.invoke(&mut km, cmd::IMPORT, &mut p),
            Err(TeeError::NotSupported)
        );
    }

    #[test]
    fn sealing_is_bound_to_the_measurement() {
        let mut h = Harness::new(12);
        let mut km = KeyManager::default();
        let ec = generate(&mut h, &mut km, key_type::ECDSA_P384).unwrap();
        let blob = seal_key(&mut h, &mut km, ec).unwrap();
        let mut p = params(mem_in(b"disk key"), mem_out(200), none(), none());
        h.invoke(&mut km, cmd::SEAL_DATA, &mut p).unwrap();
        let data_blob = p.memref_out(1).to_vec();
        // Same image, fresh TA instance (a restart): unseals.
        let mut km2 = KeyManager::default();
        let k2 = unseal_key(&mut h, &mut km2, &blob).unwrap();
        let sig = sign(&mut h, &mut km2, k2, b"m").unwrap();
        verify(&mut h, &mut km, ec, b"m", &sig).unwrap();
        let mut p = params(mem_in(&data_blob), mem_out(200), none(), none());
        h.invoke(&mut km2, cmd::UNSEAL_DATA, &mut p).unwrap();
        assert_eq!(p.memref_out(1), b"disk key");
        // Another measurement: both blobs fail authentication.
        let mut other = [0x11; 48];
        other[47] ^= 1;
        let mut h2 = Harness::with_measurement(13, other);
        let mut km3 = KeyManager::default();
        assert_eq!(
            unseal_key(&mut h2, &mut km3, &blob),
            Err(TeeError::MacInvalid)
        );
        let mut p = params(mem_in(&data_blob), mem_out(200), none(), none());
        assert_eq!(
            h2.invoke(&mut km3, cmd::UNSEAL_DATA, &mut p),
            Err(TeeError::MacInvalid)
        );
        // Another platform root: also fails.
        let mut h3 = Harness::new(14);
        h3.ta_root = [0x33; 32];
        assert_eq!(
            unseal_key(&mut h3, &mut km3, &blob),
            Err(TeeError::MacInvalid)
        );
        // Tampering, truncation, wrong magic, kind confusion.
        let mut t = blob.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert_eq!(unseal_key(&mut h, &mut km, &t), Err(TeeError::MacInvalid));
        let mut t = blob.clone();
        t[5] = key_type::ECDSA_P256 as u8;
        assert_eq!(unseal_key(&mut h, &mut km, &t), Err(TeeError::MacInvalid));
        assert_eq!(
            unseal_key(&mut h, &mut km, &blob[..7]),
            Err(TeeError::BadFormat)
        );
        assert_eq!(
            unseal_key(&mut h, &mut km, &blob[..20]),
            Err(TeeError::MacInvalid)
        );
        let mut t = blob.clone();
        t[0] = b'X';
        assert_eq!(unseal_key(&mut h, &mut km, &t), Err(TeeError::BadFormat));
        assert_eq!(
            unseal_key(&mut h, &mut km, &data_blob),
            Err(TeeError::BadFormat)
        );
    }

    #[test]
    fn ownership_caps_and_delete() {
        let mut h = Harness::new(15);
        let mut km = KeyManager::default();
        let k = generate(&mut h, &mut km, key_type::AES_256_GCM).unwrap();
        // Another client identity does not see the key.
        let owner = h.client;
        h.client.login = login::REE_KERNEL;
        assert_eq!(
            crypt(&mut h, &mut km, cmd::ENCRYPT, k, b"x", None),
            Err(TeeError::ItemNotFound)
        );
        let mut p = params(val_in(k, 0), none(), none(), none());
        assert_eq!(
            h.invoke(&mut km, cmd::DELETE, &mut p),
            Err(TeeError::ItemNotFound)
        );
        h.client = owner;
        assert_eq!(
            crypt(&mut h, &mut km, cmd::ENCRYPT, 999, b"x", None),
            Err(TeeError::ItemNotFound)
        );
        assert_eq!(generate(&mut h, &mut km, 0), Err(TeeError::NotSupported));
        // Oversize input.
        assert_eq!(
            crypt(&mut h, &mut km, cmd::ENCRYPT, k, &[0; MAX_DATA + 1], None),
            Err(TeeError::ExcessData)
        );
        // Key count cap.
        for _ in 1..MAX_KEYS {
            generate(&mut h, &mut km, key_type::AES_256_GCM).unwrap();
        }
        assert_eq!(
            generate(&mut h, &mut km, key_type::AES_256_GCM),
            Err(TeeError::OutOfMemory)
        );
        let mut p = params(val_in(k, 0), none(), none(), none());
        h.invoke(&mut km, cmd::DELETE, &mut p).unwrap();
        assert_eq!(
            crypt(&mut h, &mut km, cmd::ENCRYPT, k, b"x", None),
            Err(TeeError::ItemNotFound)
        );
        let k2 = generate(&mut h, &mut km, key_type::AES_256_GCM).unwrap();
        assert_ne!(k2, k);
        // Wrong parameter types.
        let mut p = params(val_in(k2, 0), mem_in(b"x"), val_out(), none());
        assert_eq!(
            h.invoke(&mut km, cmd::ENCRYPT, &mut p),
            Err(TeeError::BadParameters)
        );
        let mut p = params(none(), none(), none(), none());
        assert_eq!(h.invoke(&mut km, 1234, &mut p), Err(TeeError::NotSupported));
    }
}
