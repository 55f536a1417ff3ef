//! Secret verification without revealing the secret, and counter-based
//! throttling of failures. Shared by the credential manager and the HSM PIN.
//!
//! A stored secret is kept only as `HMAC-SHA256(k, salt || secret)` with a
//! random salt and a TA-private key `k`: comparing fixed-length tags with
//! [`subtle::ConstantTimeEq`] leaks neither the secret's bytes nor its length
//! through timing, and the tag is useless outside the TA.
//!
//! Throttling is deterministic and needs no clock: each consecutive failure
//! increments a counter; at the limit the secret is locked and every further
//! attempt fails with [`TeeError::BadState`] *without* being compared, so a
//! locked secret gives no oracle. A success resets the counter.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::dispatch::TaEnv;
use crate::error::TeeError;

/// A secret stored as a salted, keyed tag.
#[derive(Clone)]
pub(crate) struct SecretTag {
    salt: [u8; 16],
    tag: [u8; 32],
}

fn tag(key: &[u8; 32], salt: &[u8; 16], secret: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| {
        // HMAC accepts keys of any length; this arm is unreachable.
        <Hmac<Sha256> as KeyInit>::new(&Default::default())
    });
    mac.update(salt);
    mac.update(secret);
    mac.finalize().into_bytes().into()
}

impl SecretTag {
    /// Tags `secret` with a fresh salt.
    pub(crate) fn new(
        env: &mut TaEnv<'_>,
        key: &[u8; 32],
        secret: &[u8],
    ) -> Result<SecretTag, TeeError> {
        let mut salt = [0u8; 16];
        env.random(&mut salt)?;
        Ok(SecretTag {
            salt,
            tag: tag(key, &salt, secret),
        })
    }

    /// Constant-time comparison of `presented` with the stored secret.
    pub(crate) fn matches(&self, key: &[u8; 32], presented: &[u8]) -> bool {
        let t = tag(key, &self.salt, presented);
        bool::from(t.ct_eq(&self.tag))
    }
}

/// A failure counter with a lockout limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Throttle {
    failures: u32,
    limit: u32,
}

impl Throttle {
    /// A counter that locks after `limit` consecutive failures (at least 1).
    pub(crate) fn new(limit: u32) -> Throttle {
        Throttle {
            failures: 0,
            limit: limit.max(1),
        }
    }

    /// Whether the limit is reached.
    pub(crate) fn locked(&self) -> bool {
        self.failures >= self.limit
    }

    /// Attempts left before the lock.
    pub(crate) fn remaining(&self) -> u32 {
        self.limit.saturating_sub(self.failures)
    }

    /// Clears the counter.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// One attempt: [`TeeError::BadState`] if locked (nothing compared),
    /// [`TeeError::AccessDenied`] on a mismatch (counted), `Ok` on a match
    /// (counter reset).
    pub(crate) fn attempt(
        &mut self,
        stored: &SecretTag,
        key: &[u8; 32],
        presented: &[u8],
    ) -> Result<(), TeeError> {
        if self.locked() {
            return Err(TeeError::BadState);
        }
        if stored.matches(key, presented) {
            self.failures = 0;
            Ok(())
        } else {
            self.failures = self.failures.saturating_add(1);
            Err(TeeError::AccessDenied)
        }
    }
}
