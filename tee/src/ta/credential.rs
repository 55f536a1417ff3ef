//! Credential manager TA: stores secrets (PINs, passwords, recovery
//! secrets) and checks presented values without ever revealing them.
//!
//! A credential is kept only as a salted keyed tag and compared in constant
//! time ([`super::throttle`]). Consecutive failures are counted; at the limit
//! (default 5, chosen at enrollment between 1 and 10) the credential locks
//! and every later attempt gets `BAD_STATE` without a comparison. An
//! optional unlock secret (a PUK), itself limited to 3 consecutive
//! failures, can reset a locked credential to a new secret. There is no
//! clock: the lockout is purely counter-based and therefore deterministic.
//!
//! Credentials are named, and the namespace is per client identity.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use zeroize::Zeroizing;

use super::throttle::{SecretTag, Throttle};
use crate::dispatch::{ClientIdentity, TaEnv, TrustedApp};
use crate::error::TeeError;
use crate::params::{ParamType as T, Params, TaParam};
use crate::uuid::Uuid;

/// UUID of the credential manager TA.
pub const UUID: Uuid = Uuid::from_fields(
    0xdaf7_22e6,
    0x6e4b,
    0x424c,
    [0xa6, 0x58, 0x6b, 0x79, 0xda, 0x5f, 0x21, 0xe7],
);

/// Command ids and their parameters (`-` is NONE).
pub mod cmd {
    /// `[MemrefInput name, MemrefInput secret, ValueInput (max_failures, 0),
    /// MemrefInput unlock_secret | -]`; `max_failures` 0 means the default.
    pub const ENROLL: u32 = 0;
    /// `[MemrefInput name, MemrefInput presented, -, -]`: `ACCESS_DENIED` on a
    /// mismatch, `BAD_STATE` when locked.
    pub const VERIFY: u32 = 1;
    /// `[MemrefInput name, ValueOutput (remaining, locked), -, -]`.
    pub const STATUS: u32 = 2;
    /// `[MemrefInput name, MemrefInput old, MemrefInput new, -]`.
    pub const CHANGE: u32 = 3;
    /// `[MemrefInput name, MemrefInput unlock_secret, MemrefInput new, -]`.
    pub const UNLOCK: u32 = 4;
    /// `[MemrefInput name, MemrefInput secret, -, -]`.
    pub const DELETE: u32 = 5;
}

/// Most credentials.
pub const MAX_CREDENTIALS: usize = 32;
/// Longest name.
pub const MAX_NAME: usize = 64;
/// Longest secret.
pub const MAX_SECRET: usize = 256;
/// Default failure limit.
pub const DEFAULT_LIMIT: u32 = 5;
/// Highest failure limit.
pub const MAX_LIMIT: u32 = 10;
/// Failure limit of the unlock secret.
pub const UNLOCK_LIMIT: u32 = 3;

struct Credential {
    secret: SecretTag,
    throttle: Throttle,
    unlock: Option<(SecretTag, Throttle)>,
}

type Key = (u32, Uuid, Vec<u8>);

/// The credential manager TA.
#[derive(Default)]
pub struct CredentialManager {
    creds: BTreeMap<Key, Credential>,
}

fn name(p: &Params) -> Result<Vec<u8>, TeeError> {
    let n = p.memref(0)?;
    if n.is_empty() {
        return Err(TeeError::BadParameters);
    }
    if n.len() > MAX_NAME {
        return Err(TeeError::ExcessData);
    }
    Ok(n.to_vec())
}

fn secret(p: &Params, i: usize) -> Result<&[u8], TeeError> {
    let s = p.memref(i)?;
    if s.len() > MAX_SECRET {
        return Err(TeeError::ExcessData);
    }
    Ok(s)
}

fn tag_key(env: &TaEnv<'_>) -> Zeroizing<[u8; 32]> {
    env.sealing_key(b"credential-manager/tag")
}

impl CredentialManager {
    fn get(&mut self, client: &ClientIdentity, name: Vec<u8>) -> Result<&mut Credential, TeeError> {
        self.creds
            .get_mut(&(client.login, client.uuid, name))
            .ok_or(TeeError::ItemNotFound)
    }
}

impl TrustedApp for CredentialManager {
    fn uuid(&self) -> Uuid {
        UUID
    }

    fn name(&self) -> &'static str {
        "credential-manager"
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
        let key = tag_key(env);
        match command {
            cmd::ENROLL => {
                let t = p.types();
                if t[..3] != [T::MemrefInput, T::MemrefInput, T::ValueInput]
                    || !matches!(t[3], T::None | T::MemrefInput)
                {
                    return Err(TeeError::BadParameters);
                }
                let n = name(p)?;
                let s = secret(p, 1)?;
                if s.is_empty() {
                    return Err(TeeError::BadParameters);
                }
                let (limit, _) = p.value(2)?;
                let limit = match limit {
                    0 => DEFAULT_LIMIT,
                    1..=MAX_LIMIT => limit,
                    _ => return Err(TeeError::BadParameters),
                };
                let k = (client.login, client.uuid, n);
                if self.creds.contains_key(&k) {
                    return Err(TeeError::AccessConflict);
                }
                if self.creds.len() >= MAX_CREDENTIALS {
                    return Err(TeeError::OutOfMemory);
                }
                let unlock = match p.get(3) {
                    Some(TaParam::Memref(_)) => {
                        let u = secret(p, 3)?;
                        if u.is_empty() {
                            return Err(TeeError::BadParameters);
                        }
                        Some((SecretTag::new(env, &key, u)?, Throttle::new(UNLOCK_LIMIT)))
                    }
                    _ => None,
                };
                let secret = SecretTag::new(env, &key, s)?;
                self.creds.insert(
                    k,
                    Credential {
                        secret,
                        throttle: Throttle::new(limit),
                        unlock,
                    },
                );
                Ok(())
            }
            cmd::VERIFY => {
                p.expect([T::MemrefInput, T::MemrefInput, T::None, T::None])?;
                let n = name(p)?;
                let presented = secret(p, 1)?;
                let c = self.get(client, n)?;
                c.throttle.attempt(&c.secret, &key, presented)
            }
            cmd::STATUS => {
                p.expect([T::MemrefInput, T::ValueOutput, T::None, T::None])?;
                let n = name(p)?;
                let c = self.get(client, n)?;
                let (remaining, locked) = (c.throttle.remaining(), c.throttle.locked());
                p.set_value(1, remaining, u32::from(locked))
            }
            cmd::CHANGE => {
                p.expect([T::MemrefInput, T::MemrefInput, T::MemrefInput, T::None])?;
                let n = name(p)?;
                let old = secret(p, 1)?;
                let new = secret(p, 2)?;
                if new.is_empty() {
                    return Err(TeeError::BadParameters);
                }
                let tag = SecretTag::new(env, &key, new)?;
                let c = self.get(client, n)?;
                c.throttle.attempt(&c.secret, &key, old)?;
                c.secret = tag;
                Ok(())
            }
            cmd::UNLOCK => {
                p.expect([T::MemrefInput, T::MemrefInput, T::MemrefInput, T::None])?;
                let n = name(p)?;
                let puk = secret(p, 1)?;
                let new = secret(p, 2)?;
                if new.is_empty() {
                    return Err(TeeError::BadParameters);
                }
                let tag = SecretTag::new(env, &key, new)?;
                let c = self.get(client, n)?;
                let Some((u, ut)) = c.unlock.as_mut() else {
                    return Err(TeeError::AccessDenied);
                };
                ut.attempt(u, &key, puk)?;
                c.secret = tag;
                c.throttle.reset();
                Ok(())
            }
            cmd::DELETE => {
                p.expect([T::MemrefInput, T::MemrefInput, T::None, T::None])?;
                let n = name(p)?;
                let s = secret(p, 1)?;
                let c = self.get(client, n.clone())?;
                c.throttle.attempt(&c.secret, &key, s)?;
                self.creds.remove(&(client.login, client.uuid, n));
                Ok(())
            }
            _ => Err(TeeError::NotSupported),
        }
    }

    fn close_session(&mut self, _env: &mut TaEnv<'_>, _session: u32) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ta::testutil::{mem_in, none, params, val_in, val_out, Harness, ParamsExt};

    fn enroll(
        h: &mut Harness,
        cm: &mut CredentialManager,
        n: &[u8],
        s: &[u8],
        limit: u32,
        puk: Option<&[u8]>,
    ) -> Result<(), TeeError> {
        let mut p = params(
            mem_in(n),
            mem_in(s),
            val_in(limit, 0),
            puk.map_or(none(), mem_in),
        );
        h.invoke(cm, cmd::ENROLL, &mut p)
    }

    fn verify(
        h: &mut Harness,
        cm: &mut CredentialManager,
        n: &[u8],
        s: &[u8],
    ) -> Result<(), TeeError> {
        let mut p = params(mem_in(n), mem_in(s), none(), none());
        h.invoke(cm, cmd::VERIFY, &mut p)
    }

    fn status(h: &mut Harness, cm: &mut CredentialManager, n: &[u8]) -> (u32, u32) {
        let mut p = params(mem_in(n), val_out(), none(), none());
        h.invoke(cm, cmd::STATUS, &mut p).unwrap();
        p.value_out(1)
    }

    fn three(
        h: &mut Harness,
        cm: &mut CredentialManager,
        c: u32,
        n: &[u8],
        a: &[u8],
        b: &[u8],
    ) -> Result<(), TeeError> {
        let mut p = params(mem_in(n), mem_in(a), mem_in(b), none());
        h.invoke(cm, c, &mut p)
    }

    #[test]
    fn verify_and_throttle() {
        let mut h = Harness::new(20);
        let mut cm = CredentialManager::default();
        enroll(
            &mut h,
            &mut cm,
            b"disk",
            b"correct horse",
            3,
            Some(b"puk-123"),
        )
        .unwrap();
        verify(&mut h, &mut cm, b"disk", b"correct horse").unwrap();
        assert_eq!(
            verify(&mut h, &mut cm, b"disk", b"correct hors"),
            Err(TeeError::AccessDenied)
        );
        assert_eq!(
            verify(&mut h, &mut cm, b"disk", b""),
            Err(TeeError::AccessDenied)
        );
        assert_eq!(status(&mut h, &mut cm, b"disk"), (1, 0));
        // A success resets the counter.
        verify(&mut h, &mut cm, b"disk", b"correct horse").unwrap();
        assert_eq!(status(&mut h, &mut cm, b"disk"), (3, 0));
        for _ in 0..3 {
            assert_eq!(
                verify(&mut h, &mut cm, b"disk", b"guess"),
                Err(TeeError::AccessDenied)
            );
        }
        assert_eq!(status(&mut h, &mut cm, b"disk"), (0, 1));
        // Locked: even the right secret is refused, without comparison.
        assert_eq!(
            verify(&mut h, &mut cm, b"disk", b"correct horse"),
            Err(TeeError::BadState)
        );
        assert_eq!(
            three(
                &mut h,
                &mut cm,
                cmd::CHANGE,
                b"disk",
                b"correct horse",
                b"new"
            ),
            Err(TeeError::BadState)
        );
        let mut p = params(mem_in(b"disk"), mem_in(b"correct horse"), none(), none());
        assert_eq!(
            h.invoke(&mut cm, cmd::DELETE, &mut p),
            Err(TeeError::BadState)
        );
        // Unlock with the PUK sets a new secret; the PUK has its own limit.
        assert_eq!(
            three(&mut h, &mut cm, cmd::UNLOCK, b"disk", b"bad", b"n"),
            Err(TeeError::AccessDenied)
        );
        three(
            &mut h,
            &mut cm,
            cmd::UNLOCK,
            b"disk",
            b"puk-123",
            b"battery staple",
        )
        .unwrap();
        assert_eq!(
            verify(&mut h, &mut cm, b"disk", b"correct horse"),
            Err(TeeError::AccessDenied)
        );
        verify(&mut h, &mut cm, b"disk", b"battery staple").unwrap();
        for _ in 0..UNLOCK_LIMIT {
            assert_eq!(
                three(&mut h, &mut cm, cmd::UNLOCK, b"disk", b"x", b"n"),
                Err(TeeError::AccessDenied)
            );
        }
        assert_eq!(
            three(&mut h, &mut cm, cmd::UNLOCK, b"disk", b"puk-123", b"n"),
            Err(TeeError::BadState)
        );
    }

    #[test]
    fn change_delete_and_limits() {
        let mut h = Harness::new(21);
        let mut cm = CredentialManager::default();
        enroll(&mut h, &mut cm, b"a", b"one", 0, None).unwrap();
        assert_eq!(status(&mut h, &mut cm, b"a"), (DEFAULT_LIMIT, 0));
        assert_eq!(
            enroll(&mut h, &mut cm, b"a", b"two", 0, None),
            Err(TeeError::AccessConflict)
        );
        assert_eq!(
            three(&mut h, &mut cm, cmd::CHANGE, b"a", b"bad", b"two"),
            Err(TeeError::AccessDenied)
        );
        three(&mut h, &mut cm, cmd::CHANGE, b"a", b"one", b"two").unwrap();
        verify(&mut h, &mut cm, b"a", b"two").unwrap();
        // No PUK enrolled: UNLOCK is refused.
        assert_eq!(
            three(&mut h, &mut cm, cmd::UNLOCK, b"a", b"x", b"y"),
            Err(TeeError::AccessDenied)
        );
        let mut p = params(mem_in(b"a"), mem_in(b"two"), none(), none());
        h.invoke(&mut cm, cmd::DELETE, &mut p).unwrap();
        assert_eq!(
            verify(&mut h, &mut cm, b"a", b"two"),
            Err(TeeError::ItemNotFound)
        );
        // Oversize and empty inputs, bad limit, wrong types, unknown command.
        assert_eq!(
            enroll(&mut h, &mut cm, &[b'n'; MAX_NAME + 1], b"s", 0, None),
            Err(TeeError::ExcessData)
        );
        assert_eq!(
            enroll(&mut h, &mut cm, b"n", &[0; MAX_SECRET + 1], 0, None),
            Err(TeeError::ExcessData)
        );
        assert_eq!(
            enroll(&mut h, &mut cm, b"", b"s", 0, None),
            Err(TeeError::BadParameters)
        );
        assert_eq!(
            enroll(&mut h, &mut cm, b"n", b"", 0, None),
            Err(TeeError::BadParameters)
        );
        assert_eq!(
            enroll(&mut h, &mut cm, b"n", b"s", MAX_LIMIT + 1, None),
            Err(TeeError::BadParameters)
        );
        assert_eq!(
            verify(&mut h, &mut cm, b"n", &[0; MAX_SECRET + 1]),
            Err(TeeError::ExcessData)
        );
        let mut p = params(mem_in(b"n"), val_in(0, 0), none(), none());
        assert_eq!(
            h.invoke(&mut cm, cmd::VERIFY, &mut p),
            Err(TeeError::BadParameters)
        );
        assert_eq!(h.invoke(&mut cm, 77, &mut p), Err(TeeError::NotSupported));
        // Capacity.
        for i in 0..MAX_CREDENTIALS {
            enroll(&mut h, &mut cm, &i.to_le_bytes(), b"s", 0, None).unwrap();
        }
        assert_eq!(
            enroll(&mut h, &mut cm, b"more", b"s", 0, None),
            Err(TeeError::OutOfMemory)
        );
        // Another client identity has its own namespace.
        h.client.uuid = Uuid::from_bytes([9; 16]);
        assert_eq!(
            verify(&mut h, &mut cm, &0usize.to_le_bytes(), b"s"),
            Err(TeeError::ItemNotFound)
        );
    }
}
