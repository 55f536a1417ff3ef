//! Virtual HSM TA: a small PKCS#11-shaped token.
//!
//! * `INIT_TOKEN` sets the security-officer (SO) PIN (re-initialising
//!   requires the current SO PIN and destroys every object and the user PIN);
//! * `LOGIN`/`LOGOUT` are per session: logging in one session does not log in
//!   another, and closing a session logs it out;
//! * the SO sets or resets the user PIN (`INIT_PIN`);
//! * a logged-in user generates RSA-2048, ECDSA P-256 or P-384 key pairs,
//!   signs, and destroys objects; objects are addressed by handle;
//! * anyone with a session may verify, read public keys and draw random
//!   bytes from the platform RNG.
//!
//! PINs are stored as keyed tags and compared in constant time; five
//! consecutive wrong user PINs (or SO PINs) lock that PIN (`BAD_STATE`).
//! The SO unlocks the user PIN with `INIT_PIN`; a locked SO PIN is final.
//!
//! Signatures: `CKM_SHA256_RSA_PKCS` for RSA, `CKM_ECDSA` with SHA-256
//! (P-256) or SHA-384 (P-384) with raw `r || s` output.

use alloc::collections::BTreeMap;
use alloc::vec;

use zeroize::Zeroizing;

use super::keys::{AsymKey, KeyKind};
use super::throttle::{SecretTag, Throttle};
use crate::dispatch::{ClientIdentity, TaEnv, TrustedApp};
use crate::error::TeeError;
use crate::params::{ParamType as T, Params};
use crate::uuid::Uuid;

/// UUID of the virtual HSM TA.
pub const UUID: Uuid = Uuid::from_fields(
    0x1c3d_7e4c,
    0x91f4,
    0x47be,
    [0xb3, 0xab, 0xc7, 0x9b, 0x4a, 0xbc, 0xb8, 0xc6],
);

/// Command ids and their parameters (`-` is NONE).
pub mod cmd {
    /// `[MemrefInput so_pin, MemrefInput current_so_pin | -, -, -]`
    /// (`C_InitToken`; the current SO PIN is needed to re-initialise).
    pub const INIT_TOKEN: u32 = 0;
    /// `[ValueInput (user_type, 0), MemrefInput pin, -, -]` (`C_Login`).
    pub const LOGIN: u32 = 1;
    /// `[-, -, -, -]` (`C_Logout`).
    pub const LOGOUT: u32 = 2;
    /// `[MemrefInput user_pin, -, -, -]` (`C_InitPIN`, SO only).
    pub const INIT_PIN: u32 = 3;
    /// `[ValueInput (mechanism, 0), ValueOutput (handle, 0), -, -]`
    /// (`C_GenerateKeyPair`, user only).
    pub const GENERATE_KEY_PAIR: u32 = 4;
    /// `[ValueInput (handle, 0), MemrefInput data, MemrefOutput signature, -]`
    /// (`C_Sign`, user only).
    pub const SIGN: u32 = 5;
    /// `[ValueInput (handle, 0), MemrefInput data, MemrefInput signature, -]`
    /// (`C_Verify`): `SIGNATURE_INVALID` if it does not verify.
    pub const VERIFY: u32 = 6;
    /// `[ValueInput (handle, 0), MemrefOutput public key, -, -]`.
    pub const GET_PUBLIC_KEY: u32 = 7;
    /// `[ValueInput (length, 0), MemrefOutput bytes, -, -]` (`C_GenerateRandom`).
    pub const GENERATE_RANDOM: u32 = 8;
    /// `[ValueInput (handle, 0), -, -, -]` (`C_DestroyObject`, user only).
    pub const DESTROY_OBJECT: u32 = 9;
    /// `[ValueOutput (initialized, user_pin_set), ValueOutput (objects, login_state), -, -]`.
    pub const GET_INFO: u32 = 10;
}

/// PKCS#11 user types.
pub mod user_type {
    /// `CKU_SO`.
    pub const SO: u32 = 0;
    /// `CKU_USER`.
    pub const USER: u32 = 1;
}

/// Key-pair mechanisms.
pub mod mechanism {
    /// RSA-2048, PKCS#1 v1.5 with SHA-256.
    pub const RSA_2048: u32 = 1;
    /// ECDSA P-256 with SHA-256.
    pub const EC_P256: u32 = 2;
    /// ECDSA P-384 with SHA-384.
    pub const EC_P384: u32 = 3;
}

/// Most objects on the token.
pub const MAX_OBJECTS: usize = 16;
/// Shortest PIN.
pub const MIN_PIN: usize = 4;
/// Longest PIN.
pub const MAX_PIN: usize = 64;
/// Consecutive wrong PINs before a lock.
pub const PIN_LIMIT: u32 = 5;
/// Most random bytes per call.
pub const MAX_RANDOM: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LoginState {
    Public,
    User,
    So,
}

/// The virtual HSM TA.
pub struct VirtualHsm {
    so_pin: Option<(SecretTag, Throttle)>,
    user_pin: Option<(SecretTag, Throttle)>,
    sessions: BTreeMap<u32, LoginState>,
    objects: BTreeMap<u32, AsymKey>,
    next_handle: u32,
}

impl Default for VirtualHsm {
    fn default() -> VirtualHsm {
        VirtualHsm {
            so_pin: None,
            user_pin: None,
            sessions: BTreeMap::new(),
            objects: BTreeMap::new(),
            next_handle: 1,
        }
    }
}

fn pin(p: &Params, i: usize) -> Result<&[u8], TeeError> {
    let pin = p.memref(i)?;
    if pin.len() > MAX_PIN {
        return Err(TeeError::ExcessData);
    }
    if pin.len() < MIN_PIN {
        return Err(TeeError::BadParameters);
    }
    Ok(pin)
}

fn pin_key(env: &TaEnv<'_>) -> Zeroizing<[u8; 32]> {
    env.sealing_key(b"vhsm/pin")
}

impl VirtualHsm {
    fn state(&self, session: u32) -> LoginState {
        self.sessions
            .get(&session)
            .copied()
            .unwrap_or(LoginState::Public)
    }

    fn require_user(&self, session: u32) -> Result<(), TeeError> {
        if self.state(session) == LoginState::User {
            Ok(())
        } else {
            Err(TeeError::AccessDenied)
        }
    }

    fn object(&self, handle: u32) -> Result<&AsymKey, TeeError> {
        self.objects.get(&handle).ok_or(TeeError::ItemNotFound)
    }
}

impl TrustedApp for VirtualHsm {
    fn uuid(&self) -> Uuid {
        UUID
    }

    fn name(&self) -> &'static str {
        "virtual-hsm"
    }

    fn open_session(
        &mut self,
        _env: &mut TaEnv<'_>,
        session: u32,
        _client: &ClientIdentity,
        params: &mut Params,
    ) -> Result<(), TeeError> {
        params.expect([T::None; 4])?;
        self.sessions.insert(session, LoginState::Public);
        Ok(())
    }

    fn invoke(
        &mut self,
        env: &mut TaEnv<'_>,
        session: u32,
        _client: &ClientIdentity,
        command: u32,
        p: &mut Params,
    ) -> Result<(), TeeError> {
        match command {
            cmd::INIT_TOKEN => {
                let t = p.types();
                if t[0] != T::MemrefInput
                    || !matches!(t[1], T::None | T::MemrefInput)
                    || t[2..] != [T::None, T::None]
                {
                    return Err(TeeError::BadParameters);
                }
                let key = pin_key(env);
                let new = pin(p, 0)?;
                if let Some((tag, th)) = self.so_pin.as_mut() {
                    let current = if t[1] == T::MemrefInput {
                        p.memref(1)?
                    } else {
                        &[]
                    };
                    th.attempt(tag, &key, current)?;
                }
                let tag = SecretTag::new(env, &key, new)?;
                self.so_pin = Some((tag, Throttle::new(PIN_LIMIT)));
                self.user_pin = None;
                self.objects.clear();
                for s in self.sessions.values_mut() {
                    *s = LoginState::Public;
                }
                Ok(())
            }
            cmd::LOGIN => {
                p.expect([T::ValueInput, T::MemrefInput, T::None, T::None])?;
                let (who, _) = p.value(0)?;
                if self.state(session) != LoginState::Public {
                    return Err(TeeError::BadState);
                }
                let presented = p.memref(1)?;
                if presented.len() > MAX_PIN {
                    return Err(TeeError::ExcessData);
                }
                let key = pin_key(env);
                let (slot, state) = match who {
                    user_type::SO => (self.so_pin.as_mut(), LoginState::So),
                    user_type::USER => (self.user_pin.as_mut(), LoginState::User),
                    _ => return Err(TeeError::BadParameters),
                };
                let (tag, th) = slot.ok_or(TeeError::BadState)?;
                th.attempt(tag, &key, presented)?;
                self.sessions.insert(session, state);
                Ok(())
            }
            cmd::LOGOUT => {
                p.expect([T::None; 4])?;
                self.sessions.insert(session, LoginState::Public);
                Ok(())
            }
            cmd::INIT_PIN => {
                p.expect([T::MemrefInput, T::None, T::None, T::None])?;
                if self.state(session) != LoginState::So {
                    return Err(TeeError::AccessDenied);
                }
                let key = pin_key(env);
                let tag = SecretTag::new(env, &key, pin(p, 0)?)?;
                self.user_pin = Some((tag, Throttle::new(PIN_LIMIT)));
                Ok(())
            }
            cmd::GENERATE_KEY_PAIR => {
                p.expect([T::ValueInput, T::ValueOutput, T::None, T::None])?;
                self.require_user(session)?;
                let (mech, _) = p.value(0)?;
                let kind = match mech {
                    mechanism::RSA_2048 => KeyKind::Rsa2048,
                    mechanism::EC_P256 => KeyKind::EcdsaP256,
                    mechanism::EC_P384 => KeyKind::EcdsaP384,
                    _ => return Err(TeeError::NotSupported),
                };
                if self.objects.len() >= MAX_OBJECTS {
                    return Err(TeeError::OutOfMemory);
                }
                let key = AsymKey::generate(kind, env)?;
                let mut h = self.next_handle;
                while h == 0 || self.objects.contains_key(&h) {
                    h = h.wrapping_add(1);
                }
                self.next_handle = h.wrapping_add(1);
                self.objects.insert(h, key);
                p.set_value(1, h, 0)
            }
            cmd::SIGN => {
                p.expect([T::ValueInput, T::MemrefInput, T::MemrefOutput, T::None])?;
                self.require_user(session)?;
                let (h, _) = p.value(0)?;
                let key = self.object(h)?;
                p.require(2, key.signature_len())?;
                let sig = key.sign(env, p.memref(1)?)?;
                p.set_memref(2, &sig)
            }
            cmd::VERIFY => {
                p.expect([T::ValueInput, T::MemrefInput, T::MemrefInput, T::None])?;
                let (h, _) = p.value(0)?;
                self.object(h)?.verify(p.memref(1)?, p.memref(2)?)
            }
            cmd::GET_PUBLIC_KEY => {
                p.expect([T::ValueInput, T::MemrefOutput, T::None, T::None])?;
                let (h, _) = p.value(0)?;
                let pk = self.object(h)?.public_bytes()?;
                p.set_memref(1, &pk)
            }
            cmd::GENERATE_RANDOM => {
                p.expect([T::ValueInput, T::MemrefOutput, T::None, T::None])?;
                let (len, _) = p.value(0)?;
                let len = len as usize;
                if len > MAX_RANDOM {
                    return Err(TeeError::ExcessData);
                }
                p.require(1, len)?;
                let mut buf = vec![0u8; len];
                env.random(&mut buf)?;
                p.set_memref(1, &buf)
            }
            cmd::DESTROY_OBJECT => {
                p.expect([T::ValueInput, T::None, T::None, T::None])?;
                self.require_user(session)?;
                let (h, _) = p.value(0)?;
                self.objects.remove(&h).ok_or(TeeError::ItemNotFound)?;
                Ok(())
            }
            cmd::GET_INFO => {
                p.expect([T::ValueOutput, T::ValueOutput, T::None, T::None])?;
                let state = match self.state(session) {
                    LoginState::Public => 0,
                    LoginState::User => 1,
                    LoginState::So => 2,
                };
                p.set_value(
                    0,
                    u32::from(self.so_pin.is_some()),
                    u32::from(self.user_pin.is_some()),
                )?;
                p.set_value(1, self.objects.len() as u32, state)
            }
            _ => Err(TeeError::NotSupported),
        }
    }

    fn close_session(&mut self, _env: &mut TaEnv<'_>, session: u32) {
        self.sessions.remove(&session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ta::testutil::{mem_in, mem_out, none, params, val_in, val_out, Harness, ParamsExt};
    use alloc::vec::Vec;

    fn call(
        h: &mut Harness,
        t: &mut VirtualHsm,
        s: u32,
        c: u32,
        mut p: Params,
    ) -> Result<Params, TeeError> {
        h.invoke_in(t, s, c, &mut p).map(|()| p)
    }

    fn login(
        h: &mut Harness,
        t: &mut VirtualHsm,
        s: u32,
        who: u32,
        pin: &[u8],
    ) -> Result<(), TeeError> {
        call(
            h,
            t,
            s,
            cmd::LOGIN,
            params(val_in(who, 0), mem_in(pin), none(), none()),
        )
        .map(|_| ())
    }

    fn setup(h: &mut Harness, t: &mut VirtualHsm) {
        h.open(t, 1).unwrap();
        call(
            h,
            t,
            1,
            cmd::INIT_TOKEN,
            params(mem_in(b"so-pin-1"), none(), none(), none()),
        )
        .unwrap();
        login(h, t, 1, user_type::SO, b"so-pin-1").unwrap();
        call(
            h,
            t,
            1,
            cmd::INIT_PIN,
            params(mem_in(b"1234"), none(), none(), none()),
        )
        .unwrap();
        call(h, t, 1, cmd::LOGOUT, params(none(), none(), none(), none())).unwrap();
        login(h, t, 1, user_type::USER, b"1234").unwrap();
    }

    fn generate(h: &mut Harness, t: &mut VirtualHsm, s: u32, mech: u32) -> Result<u32, TeeError> {
        call(
            h,
            t,
            s,
            cmd::GENERATE_KEY_PAIR,
            params(val_in(mech, 0), val_out(), none(), none()),
        )
        .map(|p| p.value_out(1).0)
    }

    fn sign(
        h: &mut Harness,
        t: &mut VirtualHsm,
        s: u32,
        k: u32,
        d: &[u8],
    ) -> Result<Vec<u8>, TeeError> {
        call(
            h,
            t,
            s,
            cmd::SIGN,
            params(val_in(k, 0), mem_in(d), mem_out(512), none()),
        )
        .map(|p| p.memref_out(2).to_vec())
    }

    fn verify(
        h: &mut Harness,
        t: &mut VirtualHsm,
        s: u32,
        k: u32,
        d: &[u8],
        sig: &[u8],
    ) -> Result<(), TeeError> {
        call(
            h,
            t,
            s,
            cmd::VERIFY,
            params(val_in(k, 0), mem_in(d), mem_in(sig), none()),
        )
        .map(|_| ())
    }

    #[test]
    fn keys_sign_verify_by_handle() {
        let mut h = Harness::new(30);
        let mut t = VirtualHsm::default();
        setup(&mut h, &mut t);
        let p256 = generate(&mut h, &mut t, 1, mechanism::EC_P256).unwrap();
        let p384 = generate(&mut h, &mut t, 1, mechanism::EC_P384).unwrap();
        let rsa = generate(&mut h, &mut t, 1, mechanism::RSA_2048).unwrap();
        for (k, len) in [(p256, 64), (p384, 96), (rsa, 256)] {
            let sig = sign(&mut h, &mut t, 1, k, b"data").unwrap();
            assert_eq!(sig.len(), len);
            verify(&mut h, &mut t, 1, k, b"data", &sig).unwrap();
            assert_eq!(
                verify(&mut h, &mut t, 1, k, b"dat4", &sig),
                Err(TeeError::SignatureInvalid)
            );
        }
        // Signatures do not verify under another handle.
        let sig = sign(&mut h, &mut t, 1, p384, b"data").unwrap();
        assert_eq!(
            verify(&mut h, &mut t, 1, p256, b"data", &sig),
            Err(TeeError::SignatureInvalid)
        );
        // The P-384 public key verifies outside.
        let p = call(
            &mut h,
            &mut t,
            1,
            cmd::GET_PUBLIC_KEY,
            params(val_in(p384, 0), mem_out(200), none(), none()),
        )
        .unwrap();
        let vk = p384::ecdsa::VerifyingKey::from_sec1_bytes(p.memref_out(1)).unwrap();
        use p384::ecdsa::signature::Verifier;
        vk.verify(b"data", &p384::ecdsa::Signature::from_slice(&sig).unwrap())
            .unwrap();
        let p = call(
            &mut h,
            &mut t,
            1,
            cmd::GET_INFO,
            params(val_out(), val_out(), none(), none()),
        )
        .unwrap();
        assert_eq!((p.value_out(0), p.value_out(1)), ((1, 1), (3, 1)));
        call(
            &mut h,
            &mut t,
            1,
            cmd::DESTROY_OBJECT,
            params(val_in(p256, 0), none(), none(), none()),
        )
        .unwrap();
        assert_eq!(
            sign(&mut h, &mut t, 1, p256, b"d"),
            Err(TeeError::ItemNotFound)
        );
        assert_eq!(generate(&mut h, &mut t, 1, 9), Err(TeeError::NotSupported));
        // Random: deterministic under the seeded RNG, bounded, short buffer.
        let p = call(
            &mut h,
            &mut t,
            1,
            cmd::GENERATE_RANDOM,
            params(val_in(32, 0), mem_out(32), none(), none()),
        )
        .unwrap();
        assert_eq!(p.memref_out(1).len(), 32);
        assert_eq!(
            call(
                &mut h,
                &mut t,
                1,
                cmd::GENERATE_RANDOM,
                params(val_in(64, 0), mem_out(32), none(), none())
            ),
            Err(TeeError::ShortBuffer)
        );
        assert_eq!(
            call(
                &mut h,
                &mut t,
                1,
                cmd::GENERATE_RANDOM,
                params(
                    val_in(MAX_RANDOM as u32 + 1, 0),
                    mem_out(8192),
                    none(),
                    none()
                )
            ),
            Err(TeeError::ExcessData)
        );
    }

    #[test]
    fn login_is_per_session_and_throttled() {
        let mut h = Harness::new(31);
        let mut t = VirtualHsm::default();
        setup(&mut h, &mut t);
        let k = generate(&mut h, &mut t, 1, mechanism::EC_P256).unwrap();
        // Session 2 is not logged in: private operations are refused, public ones work.
        h.open(&mut t, 2).unwrap();
        assert_eq!(
            sign(&mut h, &mut t, 2, k, b"x"),
            Err(TeeError::AccessDenied)
        );
        assert_eq!(
            generate(&mut h, &mut t, 2, mechanism::EC_P256),
            Err(TeeError::AccessDenied)
        );
        assert_eq!(
            call(
                &mut h,
                &mut t,
                2,
                cmd::DESTROY_OBJECT,
                params(val_in(k, 0), none(), none(), none())
            )
            .map(|_| ()),
            Err(TeeError::AccessDenied)
        );
        let sig = sign(&mut h, &mut t, 1, k, b"x").unwrap();
        verify(&mut h, &mut t, 2, k, b"x", &sig).unwrap();
        // The user cannot set PINs; double login is refused.
        assert_eq!(
            call(
                &mut h,
                &mut t,
                1,
                cmd::INIT_PIN,
                params(mem_in(b"5678"), none(), none(), none())
            )
            .map(|_| ()),
            Err(TeeError::AccessDenied)
        );
        assert_eq!(
            login(&mut h, &mut t, 1, user_type::USER, b"1234"),
            Err(TeeError::BadState)
        );
        // Closing session 1 logs it out; a new session with the same id is public.
        h.close(&mut t, 1);
        h.open(&mut t, 1).unwrap();
        assert_eq!(
            sign(&mut h, &mut t, 1, k, b"x"),
            Err(TeeError::AccessDenied)
        );
        // Wrong PINs lock the user PIN; the right one is then refused too.
        for _ in 0..PIN_LIMIT {
            assert_eq!(
                login(&mut h, &mut t, 2, user_type::USER, b"0000"),
                Err(TeeError::AccessDenied)
            );
        }
        assert_eq!(
            login(&mut h, &mut t, 2, user_type::USER, b"1234"),
            Err(TeeError::BadState)
        );
        // The SO resets the user PIN.
        login(&mut h, &mut t, 2, user_type::SO, b"so-pin-1").unwrap();
        call(
            &mut h,
            &mut t,
            2,
            cmd::INIT_PIN,
            params(mem_in(b"9999"), none(), none(), none()),
        )
        .unwrap();
        login(&mut h, &mut t, 1, user_type::USER, b"9999").unwrap();
        sign(&mut h, &mut t, 1, k, b"x").unwrap();
        // Bad PIN shapes and user types.
        assert_eq!(
            login(&mut h, &mut t, 3, 7, b"1234"),
            Err(TeeError::BadParameters)
        );
        assert_eq!(
            login(&mut h, &mut t, 3, user_type::USER, &[b'1'; MAX_PIN + 1]),
            Err(TeeError::ExcessData)
        );
        assert_eq!(
            call(
                &mut h,
                &mut t,
                2,
                cmd::INIT_PIN,
                params(mem_in(b"12"), none(), none(), none())
            )
            .map(|_| ()),
            Err(TeeError::BadParameters)
        );
        // Re-initialising needs the SO PIN and wipes the objects.
        assert_eq!(
            call(
                &mut h,
                &mut t,
                3,
                cmd::INIT_TOKEN,
                params(mem_in(b"new-so"), mem_in(b"wrong!"), none(), none())
            )
            .map(|_| ()),
            Err(TeeError::AccessDenied)
        );
        call(
            &mut h,
            &mut t,
            3,
            cmd::INIT_TOKEN,
            params(mem_in(b"new-so"), mem_in(b"so-pin-1"), none(), none()),
        )
        .unwrap();
        assert_eq!(
            verify(&mut h, &mut t, 3, k, b"x", &sig),
            Err(TeeError::ItemNotFound)
        );
        assert_eq!(
            login(&mut h, &mut t, 3, user_type::USER, b"9999"),
            Err(TeeError::BadState)
        );
    }

    #[test]
    fn uninitialised_token_and_caps() {
        let mut h = Harness::new(32);
        let mut t = VirtualHsm::default();
        h.open(&mut t, 1).unwrap();
        assert_eq!(
            login(&mut h, &mut t, 1, user_type::SO, b"1234"),
            Err(TeeError::BadState)
        );
        assert_eq!(
            call(
                &mut h,
                &mut t,
                1,
                99,
                params(none(), none(), none(), none())
            )
            .map(|_| ()),
            Err(TeeError::NotSupported)
        );
        setup(&mut h, &mut t);
        for _ in 0..MAX_OBJECTS {
            generate(&mut h, &mut t, 1, mechanism::EC_P256).unwrap();
        }
        assert_eq!(
            generate(&mut h, &mut t, 1, mechanism::EC_P256),
            Err(TeeError::OutOfMemory)
        );
    }
}
