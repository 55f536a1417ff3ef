//! Asymmetric keys shared by the key manager and the virtual HSM: RSA-2048
//! (PKCS#1 v1.5 signatures with SHA-256, OAEP-SHA-256 encryption, blinded
//! private operations) and ECDSA P-256/SHA-256 and P-384/SHA-384
//! (deterministic RFC 6979 signatures, raw `r || s` encoding).
//!
//! Each TA owns its own key store; this module only holds the algorithms.

use alloc::boxed::Box;
use alloc::vec::Vec;

use p256::ecdsa::signature::{Signer, Verifier};
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, Pkcs1v15Sign};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::dispatch::TaEnv;
use crate::error::TeeError;

/// RSA modulus size this crate generates and accepts.
pub const RSA_BITS: usize = 2048;

/// Asymmetric key types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// RSA-2048.
    Rsa2048,
    /// ECDSA over NIST P-256 with SHA-256.
    EcdsaP256,
    /// ECDSA over NIST P-384 with SHA-384.
    EcdsaP384,
}

/// An asymmetric private key.
pub(crate) enum AsymKey {
    Rsa(Box<rsa::PrivateKey>),
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

fn ec_scalar_from_rng<T, F>(env: &mut TaEnv<'_>, len: usize, parse: F) -> Result<T, TeeError>
where
    F: Fn(&[u8]) -> Option<T>,
{
    let mut buf = Zeroizing::new([0u8; 48]);
    let buf = buf.get_mut(..len).ok_or(TeeError::Generic)?;
    // A random string is a valid scalar except with probability ~2^-128;
    // retry a few times, then give up rather than loop.
    for _ in 0..8 {
        env.random(buf)?;
        if let Some(k) = parse(buf) {
            return Ok(k);
        }
    }
    Err(TeeError::Generic)
}

impl AsymKey {
    /// A new random key.
    pub(crate) fn generate(kind: KeyKind, env: &mut TaEnv<'_>) -> Result<AsymKey, TeeError> {
        Ok(match kind {
            KeyKind::Rsa2048 => AsymKey::Rsa(Box::new(
                rsa::PrivateKey::new(env.rng(), RSA_BITS).map_err(|_| TeeError::Generic)?,
            )),
            KeyKind::EcdsaP256 => AsymKey::P256(ec_scalar_from_rng(env, 32, |b| {
                p256::ecdsa::SigningKey::from_slice(b).ok()
            })?),
            KeyKind::EcdsaP384 => AsymKey::P384(ec_scalar_from_rng(env, 48, |b| {
                p384::ecdsa::SigningKey::from_slice(b).ok()
            })?),
        })
    }

    /// Imports secret key material: a PKCS#1 DER `RSAPrivateKey` of a
    /// 2048-bit key, or a big-endian EC scalar.
    pub(crate) fn import(kind: KeyKind, secret: &[u8]) -> Result<AsymKey, TeeError> {
        Ok(match kind {
            KeyKind::Rsa2048 => {
                let k = rsa::PrivateKey::from_pkcs1_der(secret).map_err(|_| TeeError::BadFormat)?;
                if k.size() * 8 != RSA_BITS {
                    return Err(TeeError::NotSupported);
                }
                AsymKey::Rsa(Box::new(k))
            }
            KeyKind::EcdsaP256 => {
                if secret.len() != 32 {
                    return Err(TeeError::BadFormat);
                }
                AsymKey::P256(
                    p256::ecdsa::SigningKey::from_slice(secret).map_err(|_| TeeError::BadFormat)?,
                )
            }
            KeyKind::EcdsaP384 => {
                if secret.len() != 48 {
                    return Err(TeeError::BadFormat);
                }
                AsymKey::P384(
                    p384::ecdsa::SigningKey::from_slice(secret).map_err(|_| TeeError::BadFormat)?,
                )
            }
        })
    }

    /// The key type.
    pub(crate) fn kind(&self) -> KeyKind {
        match self {
            AsymKey::Rsa(_) => KeyKind::Rsa2048,
            AsymKey::P256(_) => KeyKind::EcdsaP256,
            AsymKey::P384(_) => KeyKind::EcdsaP384,
        }
    }

    /// The secret encoding accepted by [`AsymKey::import`] (for sealing only;
    /// it never leaves a TA unencrypted).
    pub(crate) fn secret_bytes(&self) -> Result<Zeroizing<Vec<u8>>, TeeError> {
        Ok(match self {
            AsymKey::Rsa(k) => {
                let doc = k.to_pkcs1_der().map_err(|_| TeeError::Generic)?;
                Zeroizing::new(doc.as_bytes().to_vec())
            }
            AsymKey::P256(k) => Zeroizing::new(k.to_bytes().to_vec()),
            AsymKey::P384(k) => Zeroizing::new(k.to_bytes().to_vec()),
        })
    }

    /// The public key: PKCS#1 DER `RSAPublicKey`, or an uncompressed SEC1 point.
    pub(crate) fn public_bytes(&self) -> Result<Vec<u8>, TeeError> {
        Ok(match self {
            AsymKey::Rsa(k) => k
                .to_public_key()
                .to_pkcs1_der()
                .map_err(|_| TeeError::Generic)?
                .as_bytes()
                .to_vec(),
            AsymKey::P256(k) => k.verifying_key().to_sec1_point(false).as_bytes().to_vec(),
            AsymKey::P384(k) => k.verifying_key().to_sec1_point(false).as_bytes().to_vec(),
        })
    }

    /// Length of a signature.
    pub(crate) fn signature_len(&self) -> usize {
        match self {
            AsymKey::Rsa(k) => k.size(),
            AsymKey::P256(_) => 64,
            AsymKey::P384(_) => 96,
        }
    }

    /// Signs `msg` (hashed inside).
    pub(crate) fn sign(&self, env: &mut TaEnv<'_>, msg: &[u8]) -> Result<Vec<u8>, TeeError> {
        match self {
            AsymKey::Rsa(k) => {
                let digest = Sha256::digest(msg);
                k.sign_with_rng(env.rng(), Pkcs1v15Sign::new::<Sha256>(), &digest)
                    .map_err(|_| TeeError::Generic)
            }
            AsymKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k.try_sign(msg).map_err(|_| TeeError::Generic)?;
                Ok(sig.to_bytes().to_vec())
            }
            AsymKey::P384(k) => {
                let sig: p384::ecdsa::Signature = k.try_sign(msg).map_err(|_| TeeError::Generic)?;
                Ok(sig.to_bytes().to_vec())
            }
        }
    }

    /// Verifies a signature made by [`AsymKey::sign`];
    /// [`TeeError::SignatureInvalid`] if it does not verify.
    pub(crate) fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), TeeError> {
        let ok = match self {
            AsymKey::Rsa(k) => {
                let digest = Sha256::digest(msg);
                k.as_public_key()
                    .verify(Pkcs1v15Sign::new::<Sha256>(), &digest, sig)
                    .is_ok()
            }
            AsymKey::P256(k) => p256::ecdsa::Signature::from_slice(sig)
                .is_ok_and(|s| k.verifying_key().verify(msg, &s).is_ok()),
            AsymKey::P384(k) => p384::ecdsa::Signature::from_slice(sig)
                .is_ok_and(|s| k.verifying_key().verify(msg, &s).is_ok()),
        };
        if ok {
            Ok(())
        } else {
            Err(TeeError::SignatureInvalid)
        }
    }

    /// RSA-OAEP-SHA-256 encryption.
    pub(crate) fn encrypt(&self, env: &mut TaEnv<'_>, pt: &[u8]) -> Result<Vec<u8>, TeeError> {
        match self {
            AsymKey::Rsa(k) => {
                // OAEP-SHA-256 carries at most k - 66 bytes.
                if pt.len() + 2 * 32 + 2 > k.size() {
                    return Err(TeeError::ExcessData);
                }
                k.as_public_key()
                    .encrypt(env.rng(), Oaep::<Sha256>::new(), pt)
                    .map_err(|_| TeeError::Generic)
            }
            _ => Err(TeeError::NotSupported),
        }
    }

    /// RSA-OAEP-SHA-256 decryption with blinding; any failure is the uniform
    /// [`TeeError::Security`].
    pub(crate) fn decrypt(
        &self,
        env: &mut TaEnv<'_>,
        ct: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, TeeError> {
        match self {
            AsymKey::Rsa(k) => k
                .decrypt_blinded(env.rng(), Oaep::<Sha256>::new(), ct)
                .map(Zeroizing::new)
                .map_err(|_| TeeError::Security),
            _ => Err(TeeError::NotSupported),
        }
    }

    /// Rough heap footprint, for the per-TA memory budget.
    pub(crate) fn footprint(&self) -> usize {
        match self {
            AsymKey::Rsa(_) => 2048,
            AsymKey::P256(_) => 256,
            AsymKey::P384(_) => 384,
        }
    }
}
