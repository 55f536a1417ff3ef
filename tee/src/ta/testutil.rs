//! Drives a TA directly, without the message layer (unit tests).

use alloc::vec::Vec;

use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

use crate::dispatch::{ClientIdentity, TaEnv, TrustedApp};
use crate::error::TeeError;
use crate::msg::{login, Direction};
use crate::params::{Memref, Params, TaParam};
use crate::platform::Measurement;
use crate::uuid::Uuid;

pub(crate) fn env_parts() -> (Measurement, [u8; 32]) {
    ([0x11; 48], [0x22; 32])
}

pub(crate) struct Harness {
    pub rng: ChaCha20Rng,
    pub measurement: Measurement,
    pub ta_root: [u8; 32],
    pub client: ClientIdentity,
}

impl Harness {
    pub fn new(seed: u64) -> Harness {
        let (measurement, ta_root) = env_parts();
        Harness {
            rng: ChaCha20Rng::seed_from_u64(seed),
            measurement,
            ta_root,
            client: ClientIdentity {
                login: login::PUBLIC,
                uuid: Uuid::NIL,
            },
        }
    }

    pub fn with_measurement(seed: u64, measurement: Measurement) -> Harness {
        Harness {
            measurement,
            ..Harness::new(seed)
        }
    }

    pub fn open(&mut self, app: &mut dyn TrustedApp, session: u32) -> Result<(), TeeError> {
        let mut env = TaEnv::new(&mut self.rng, self.measurement, &self.ta_root);
        app.open_session(&mut env, session, &self.client, &mut Params::default())
    }

    pub fn close(&mut self, app: &mut dyn TrustedApp, session: u32) {
        let mut env = TaEnv::new(&mut self.rng, self.measurement, &self.ta_root);
        app.close_session(&mut env, session)
    }

    pub fn invoke_in(
        &mut self,
        app: &mut dyn TrustedApp,
        session: u32,
        cmd: u32,
        p: &mut Params,
    ) -> Result<(), TeeError> {
        let mut env = TaEnv::new(&mut self.rng, self.measurement, &self.ta_root);
        app.invoke(&mut env, session, &self.client, cmd, p)
    }

    pub fn invoke(
        &mut self,
        app: &mut dyn TrustedApp,
        cmd: u32,
        p: &mut Params,
    ) -> Result<(), TeeError> {
        self.invoke_in(app, 1, cmd, p)
    }
}

pub(crate) fn mem_in(b: &[u8]) -> TaParam {
    TaParam::Memref(Memref::new(Direction::Input, b.to_vec(), b.len()))
}

pub(crate) fn mem_out(cap: usize) -> TaParam {
    TaParam::Memref(Memref::new(Direction::Output, Vec::new(), cap))
}

pub(crate) fn val_in(a: u32, b: u32) -> TaParam {
    TaParam::Value {
        dir: Direction::Input,
        a,
        b,
    }
}

pub(crate) fn val_out() -> TaParam {
    TaParam::Value {
        dir: Direction::Output,
        a: 0,
        b: 0,
    }
}

pub(crate) fn none() -> TaParam {
    TaParam::None
}

/// Shorthand for four slots.
pub(crate) fn params(a: TaParam, b: TaParam, c: TaParam, d: TaParam) -> Params {
    Params::new([a, b, c, d])
}

pub(crate) trait ParamsExt {
    fn value_out(&self, i: usize) -> (u32, u32);
    fn memref_out(&self, i: usize) -> &[u8];
}

impl ParamsExt for Params {
    fn value_out(&self, i: usize) -> (u32, u32) {
        match self.get(i) {
            Some(TaParam::Value { a, b, .. }) => (*a, *b),
            _ => panic!("slot {i} is not a value"),
        }
    }
    fn memref_out(&self, i: usize) -> &[u8] {
        match self.get(i) {
            Some(TaParam::Memref(m)) => m.data(),
            _ => panic!("slot {i} is not a memref"),
        }
    }
}
