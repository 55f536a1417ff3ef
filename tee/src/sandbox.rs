//! Trusted applications in their own address space: the message format
//! between the TEE core and an isolated TA instance, the core-side proxy
//! ([`IsolatedApp`]) and the TA-side loop ([`Instance`]).
//!
//! On bare metal (`paravisor-boot`) each TA runs as its own *instance* of the
//! TA runtime (`tee/runtime`) in L1 ring 3 with its own page tables, heap and
//! stack. The core never calls TA code there: [`IsolatedApp`] implements
//! [`TrustedApp`] by writing the request — the private copies of the
//! parameters, the client identity, the session id and the command — into
//! the instance's *message area*, switching to the instance
//! ([`Sandbox::run`]) and reading the reply back. The instance is untrusted:
//! every field of the reply is checked ([`IsolatedApp`] docs), and a reply
//! that breaks the format kills the instance just like a CPU fault does.
//!
//! The TA side is [`Instance::handle`]: decode a request, run the TA with a
//! [`TaEnv`] built from the measurement and the per-TA root key the core
//! passed at start-up ([`Op::Init`]), encode the reply. The same TA code
//! thus runs in-process (host tests, model scenarios: [`crate::Tee`] calls
//! it directly) and isolated (bare metal: through this module).
//! [`LoopbackSandbox`] runs an [`Instance`] in-process behind the same
//! interface, so the host tests exercise the whole message path.
//!
//! # Message area
//!
//! [`MSG_SIZE`] bytes: a [`HEADER_SIZE`] header, then one [`SLOT_DATA`]
//! region per parameter slot. All integers are little-endian.
//!
//! | offset | request (core → TA) | reply (TA → core) |
//! |---|---|---|
//! | 0 | magic [`REQUEST_MAGIC`] | magic [`REPLY_MAGIC`] |
//! | 4 | op ([`Op`]) | status: a GlobalPlatform code, 0 = success |
//! | 8 | session id | origin of the status: 0 = the TA, 1 = the runtime (origin TEE) |
//! | 12 | command | — |
//! | 16 | client login | — |
//! | 20 | client UUID (16) | — |
//! | 36 | TA UUID (16, `Init`) | — |
//! | 52 | measurement (48, `Init`) | — |
//! | 100 | per-TA root key (32, `Init`) | — |
//! | 132 | auxiliary word (8, `Init`; test builds only) | — |
//! | 160 + 32·i | slot i: type, a, b, capacity, length, 0 | slot i: type (must be unchanged), a, b, length, required size |
//!
//! Slot types are [`ParamType`] codes (GlobalPlatform `TEE_PARAM_TYPE_*`:
//! 0 none, 1–3 value in/out/inout, 5–7 memref in/out/inout). Memref bytes
//! (input, and output on success) are at `HEADER_SIZE + i·SLOT_DATA`.
// Indexing here is into the fixed-size header array, or into the message
// area after its length was checked against `MSG_SIZE` (`handle_inner`).
#![allow(clippy::indexing_slicing)]

use alloc::boxed::Box;
use alloc::collections::BTreeSet;
use alloc::vec;
use alloc::vec::Vec;

use rand_core::TryCryptoRng;
use zeroize::Zeroizing;

use crate::dispatch::{ClientIdentity, TaEnv, TrustedApp};
use crate::error::{Origin, TeeError, TEEC_SUCCESS};
use crate::msg::Direction;
use crate::params::{Memref, ParamType, Params, TaParam};
use crate::platform::{DynRng, Measurement, RngError};
use crate::uuid::Uuid;

/// Bytes of the header at the start of the message area (one page).
pub const HEADER_SIZE: usize = 4096;
/// Bytes of one slot's memref region: the core's default memref cap
/// ([`crate::Limits::max_memref_size`], 64 KiB).
pub const SLOT_DATA: usize = 64 * 1024;
/// Bytes of the whole message area.
pub const MSG_SIZE: usize = HEADER_SIZE + 4 * SLOT_DATA;
/// "LVTQ": a request.
pub const REQUEST_MAGIC: u32 = u32::from_le_bytes(*b"LVTQ");
/// "LVTR": a reply.
pub const REPLY_MAGIC: u32 = u32::from_le_bytes(*b"LVTR");

const OFF_MAGIC: usize = 0;
const OFF_OP: usize = 4;
const OFF_STATUS: usize = 4;
const OFF_SESSION: usize = 8;
const OFF_ORIGIN: usize = 8;
const OFF_CMD: usize = 12;
const OFF_LOGIN: usize = 16;
const OFF_CLIENT: usize = 20;
const OFF_TA: usize = 36;
const OFF_MEASUREMENT: usize = 52;
const OFF_ROOT: usize = 100;
const OFF_AUX: usize = 132;
const OFF_SLOTS: usize = 160;
const SLOT_SIZE: usize = 32;
/// Bytes of the header that carry data (the rest of the page is unused).
const HEADER_USED: usize = OFF_SLOTS + 4 * SLOT_SIZE;

/// Reply origin: the TA.
const ORIGIN_TA: u32 = 0;
/// Reply origin: the runtime around the TA (reported with origin TEE).
const ORIGIN_RUNTIME: u32 = 1;

/// A request's operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Op {
    /// Become the TA with the given UUID (first request of an instance).
    Init = 1,
    /// `TrustedApp::open_session`.
    OpenSession = 2,
    /// `TrustedApp::invoke`.
    Invoke = 3,
    /// `TrustedApp::close_session`.
    CloseSession = 4,
}

impl Op {
    fn from_u32(v: u32) -> Option<Op> {
        match v {
            1 => Some(Op::Init),
            2 => Some(Op::OpenSession),
            3 => Some(Op::Invoke),
            4 => Some(Op::CloseSession),
            _ => None,
        }
    }
}

fn type_code(t: ParamType) -> u32 {
    match t {
        ParamType::None => 0,
        ParamType::ValueInput => 1,
        ParamType::ValueOutput => 2,
        ParamType::ValueInout => 3,
        ParamType::MemrefInput => 5,
        ParamType::MemrefOutput => 6,
        ParamType::MemrefInout => 7,
    }
}

fn type_from_code(c: u32) -> Option<ParamType> {
    Some(match c {
        0 => ParamType::None,
        1 => ParamType::ValueInput,
        2 => ParamType::ValueOutput,
        3 => ParamType::ValueInout,
        5 => ParamType::MemrefInput,
        6 => ParamType::MemrefOutput,
        7 => ParamType::MemrefInout,
        _ => return None,
    })
}

fn direction(t: ParamType) -> Direction {
    match t {
        ParamType::ValueInput | ParamType::MemrefInput | ParamType::None => Direction::Input,
        ParamType::ValueOutput | ParamType::MemrefOutput => Direction::Output,
        ParamType::ValueInout | ParamType::MemrefInout => Direction::InOut,
    }
}

fn is_memref(t: ParamType) -> bool {
    matches!(
        t,
        ParamType::MemrefInput | ParamType::MemrefOutput | ParamType::MemrefInout
    )
}

/// The fixed part of the message area as a byte array.
struct Header([u8; HEADER_USED]);

impl Header {
    fn new() -> Header {
        Header([0; HEADER_USED])
    }
    fn u32(&self, at: usize) -> u32 {
        let mut b = [0; 4];
        b.copy_from_slice(&self.0[at..at + 4]);
        u32::from_le_bytes(b)
    }
    fn set_u32(&mut self, at: usize, v: u32) {
        self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn bytes<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut b = [0; N];
        b.copy_from_slice(&self.0[at..at + N]);
        b
    }
    fn set_bytes(&mut self, at: usize, v: &[u8]) {
        self.0[at..at + v.len()].copy_from_slice(v);
    }
    fn slot(&self, i: usize, field: usize) -> u32 {
        self.u32(OFF_SLOTS + SLOT_SIZE * i + 4 * field)
    }
    fn set_slot(&mut self, i: usize, field: usize, v: u32) {
        self.set_u32(OFF_SLOTS + SLOT_SIZE * i + 4 * field, v);
    }
}

/// Slot fields (u32 index inside a slot).
const F_TYPE: usize = 0;
const F_A: usize = 1;
const F_B: usize = 2;
const F_CAP: usize = 3;
const F_LEN: usize = 4;
/// Reply: required size after SHORT_BUFFER (shares the capacity's place).
const F_REQUIRED: usize = 3;

fn slot_offset(i: usize) -> usize {
    HEADER_SIZE + i * SLOT_DATA
}

/// Why an isolated instance stopped without a valid reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Death {
    /// A CPU exception, a panic, a forbidden system call or a broken reply:
    /// the instance is gone.
    Fault,
    /// The instance's heap ran out while the TA ran: this call fails with
    /// `OUT_OF_MEMORY`, and the instance is gone (the TA was stopped in the
    /// middle of an operation, so its state cannot be trusted any more).
    OutOfMemory,
}

/// What an isolated instance may ask the core for while it runs.
pub trait SandboxServices {
    /// Random bytes from the platform RNG.
    fn random(&mut self, dst: &mut [u8]) -> Result<(), TeeError>;
}

/// One isolated TA instance as the core sees it: a message area and a way
/// to run the instance until it replies.
pub trait Sandbox {
    /// Copies `data` into the message area at `offset`; `false` if it does
    /// not fit.
    fn write_message(&mut self, offset: usize, data: &[u8]) -> bool;
    /// Copies `buf.len()` bytes of the message area at `offset` out; `false`
    /// if the range does not fit.
    fn read_message(&self, offset: usize, buf: &mut [u8]) -> bool;
    /// Runs the instance until it replies (`Ok`; the reply is in the message
    /// area) or dies. `services` answers its system calls.
    fn run(&mut self, services: &mut dyn SandboxServices) -> Result<(), Death>;
    /// Puts the instance back into its initial state (fresh data, heap,
    /// stack and message area, entry registers); `false` if this sandbox
    /// cannot. Used only for [`IsolatedApp::restartable`] TAs.
    fn reset(&mut self) -> bool {
        false
    }
}

struct EnvServices<'a, 'b>(&'a mut TaEnv<'b>);

impl SandboxServices for EnvServices<'_, '_> {
    fn random(&mut self, dst: &mut [u8]) -> Result<(), TeeError> {
        self.0.random(dst)
    }
}

/// Counters of one isolated TA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SandboxStats {
    /// Requests sent (including the start-up request).
    pub requests: u64,
    /// Replies refused because they broke the format.
    pub bad_replies: u64,
    /// Restarts of a dead restartable instance.
    pub restarts: u64,
}

/// The core-side proxy of an isolated TA: a [`TrustedApp`] whose calls go
/// through the message area of a [`Sandbox`].
///
/// The reply is checked before anything is used: magic, origin (0 or 1, and
/// the runtime may only report `OUT_OF_MEMORY`), every slot type equal to
/// the type sent, output lengths within the slot's capacity and region. A
/// reply that fails any check kills the instance. Once dead (a fault, a
/// panic, a bad reply, heap exhaustion while the TA ran), every call answers
/// [`TeeError::TargetDead`] with origin TEE without running anything.
pub struct IsolatedApp<S: Sandbox> {
    sandbox: S,
    uuid: Uuid,
    name: &'static str,
    dead: bool,
    last_origin: Origin,
    /// Sessions opened on the running instance.
    sessions: BTreeSet<u32>,
    /// Re-create a dead instance at the next OPEN_SESSION (with the Init
    /// request kept here).
    restart: Option<Header>,
    /// Counters.
    pub stats: SandboxStats,
}

impl<S: Sandbox> core::fmt::Debug for IsolatedApp<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IsolatedApp")
            .field("uuid", &self.uuid)
            .field("name", &self.name)
            .field("dead", &self.dead)
            .finish_non_exhaustive()
    }
}

impl<S: Sandbox> IsolatedApp<S> {
    /// Starts `sandbox` as the TA `uuid`: sends [`Op::Init`] with the
    /// measurement, the TA's own root key (derived by the core for this UUID
    /// only, [`crate::platform::ta_root_key`]) and `aux` (0 except for test
    /// fixtures). If the instance does not accept, the proxy is dead from
    /// the start.
    pub fn start(
        sandbox: S,
        uuid: Uuid,
        name: &'static str,
        measurement: &Measurement,
        ta_root: &[u8; 32],
        aux: u64,
        services: &mut dyn SandboxServices,
    ) -> Self {
        let mut app = IsolatedApp {
            sandbox,
            uuid,
            name,
            dead: false,
            last_origin: Origin::TrustedApp,
            sessions: BTreeSet::new(),
            restart: None,
            stats: SandboxStats::default(),
        };
        let mut h = Header::new();
        h.set_u32(OFF_MAGIC, REQUEST_MAGIC);
        h.set_u32(OFF_OP, Op::Init as u32);
        h.set_bytes(OFF_TA, uuid.as_bytes());
        h.set_bytes(OFF_MEASUREMENT, measurement);
        h.set_bytes(OFF_ROOT, ta_root);
        h.0[OFF_AUX..OFF_AUX + 8].copy_from_slice(&aux.to_le_bytes());
        app.init(&h, services);
        // The key is in the instance's memory now; wipe the local copy.
        h.0[OFF_ROOT..OFF_ROOT + 32].fill(0);
        app
    }

    /// Makes the TA restartable: a dead instance is re-created from scratch
    /// (fresh memory, the same Init request) at the next OPEN_SESSION; the
    /// sessions of the dead instance stay dead. For test fixtures whose
    /// state does not matter: a production TA would silently lose its state
    /// (keys, log), so it stays dead instead. The Init request, including
    /// the TA's root key, is kept in core memory for the restart.
    pub fn restartable(mut self, measurement: &Measurement, ta_root: &[u8; 32], aux: u64) -> Self {
        let mut h = Header::new();
        h.set_u32(OFF_MAGIC, REQUEST_MAGIC);
        h.set_u32(OFF_OP, Op::Init as u32);
        h.set_bytes(OFF_TA, self.uuid.as_bytes());
        h.set_bytes(OFF_MEASUREMENT, measurement);
        h.set_bytes(OFF_ROOT, ta_root);
        h.0[OFF_AUX..OFF_AUX + 8].copy_from_slice(&aux.to_le_bytes());
        self.restart = Some(h);
        self
    }

    fn init(&mut self, h: &Header, services: &mut dyn SandboxServices) {
        self.sessions.clear();
        if !self.sandbox.write_message(0, &h.0) {
            self.dead = true;
            return;
        }
        self.stats.requests += 1;
        self.dead = !matches!(
            self.round_trip(services),
            Ok(reply) if reply.u32(OFF_STATUS) == TEEC_SUCCESS
        );
    }

    /// Re-creates a dead restartable instance.
    fn revive(&mut self, services: &mut dyn SandboxServices) {
        let Some(h) = self.restart.take() else {
            return;
        };
        if self.sandbox.reset() {
            self.stats.restarts += 1;
            self.init(&h, services);
        }
        self.restart = Some(h);
    }

    /// Whether the instance is dead.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// The sandbox.
    pub fn sandbox(&self) -> &S {
        &self.sandbox
    }

    fn die(&mut self) -> TeeError {
        self.dead = true;
        self.last_origin = Origin::Tee;
        TeeError::TargetDead
    }

    /// Runs the instance and reads the reply header (magic checked).
    fn round_trip(&mut self, services: &mut dyn SandboxServices) -> Result<Header, Death> {
        self.sandbox.run(services)?;
        let mut h = Header::new();
        if !self.sandbox.read_message(0, &mut h.0) || h.u32(OFF_MAGIC) != REPLY_MAGIC {
            self.stats.bad_replies += 1;
            return Err(Death::Fault);
        }
        Ok(h)
    }

    /// One request: send, run, check, copy results into `params`.
    fn request(
        &mut self,
        env: &mut TaEnv<'_>,
        op: Op,
        session: u32,
        client: &ClientIdentity,
        cmd: u32,
        params: &mut Params,
    ) -> Result<(), TeeError> {
        self.last_origin = Origin::TrustedApp;
        if self.dead && op == Op::OpenSession {
            self.revive(&mut EnvServices(env));
        }
        if self.dead || (op != Op::OpenSession && !self.sessions.contains(&session)) {
            // A session of an instance that died (and maybe was restarted).
            self.last_origin = Origin::Tee;
            return Err(TeeError::TargetDead);
        }
        let mut h = Header::new();
        h.set_u32(OFF_MAGIC, REQUEST_MAGIC);
        h.set_u32(OFF_OP, op as u32);
        h.set_u32(OFF_SESSION, session);
        h.set_u32(OFF_CMD, cmd);
        h.set_u32(OFF_LOGIN, client.login);
        h.set_bytes(OFF_CLIENT, client.uuid.as_bytes());
        let mut sent = [ParamType::None; 4];
        for (i, p) in params.slots().iter().enumerate() {
            let t = p.param_type();
            sent[i] = t;
            h.set_slot(i, F_TYPE, type_code(t));
            match p {
                TaParam::None => {}
                TaParam::Value { a, b, .. } => {
                    h.set_slot(i, F_A, *a);
                    h.set_slot(i, F_B, *b);
                }
                TaParam::Memref(m) => {
                    let data = m.data();
                    if data.len() > SLOT_DATA {
                        return Err(TeeError::ExcessData);
                    }
                    let cap = m.capacity().min(SLOT_DATA);
                    h.set_slot(i, F_CAP, cap as u32);
                    h.set_slot(i, F_LEN, data.len() as u32);
                    if !self.sandbox.write_message(slot_offset(i), data) {
                        return Err(self.die());
                    }
                }
            }
        }
        if !self.sandbox.write_message(0, &h.0) {
            return Err(self.die());
        }
        self.stats.requests += 1;
        let reply = match self.round_trip(&mut EnvServices(env)) {
            Ok(r) => r,
            Err(Death::OutOfMemory) => {
                self.dead = true;
                self.last_origin = Origin::Tee;
                return Err(TeeError::OutOfMemory);
            }
            Err(Death::Fault) => return Err(self.die()),
        };
        match self.apply_reply(&reply, &sent, params) {
            Some(r) => {
                match (op, &r) {
                    (Op::OpenSession, Ok(())) => {
                        self.sessions.insert(session);
                    }
                    (Op::CloseSession, _) => {
                        self.sessions.remove(&session);
                    }
                    _ => {}
                }
                r
            }
            None => {
                self.stats.bad_replies += 1;
                Err(self.die())
            }
        }
    }

    /// Checks the reply and copies its outputs into `params`; `None` if the
    /// reply breaks the format.
    fn apply_reply(
        &mut self,
        h: &Header,
        sent: &[ParamType; 4],
        params: &mut Params,
    ) -> Option<Result<(), TeeError>> {
        let status = TeeError::from_code(h.u32(OFF_STATUS));
        match h.u32(OFF_ORIGIN) {
            ORIGIN_TA => {}
            ORIGIN_RUNTIME if status == Some(TeeError::OutOfMemory) => {
                self.last_origin = Origin::Tee;
                return Some(Err(TeeError::OutOfMemory));
            }
            _ => return None,
        }
        // Validate every slot before changing anything.
        let mut outputs: [Option<Vec<u8>>; 4] = [None, None, None, None];
        for (i, &t) in sent.iter().enumerate() {
            if type_from_code(h.slot(i, F_TYPE)) != Some(t) {
                return None;
            }
            if is_memref(t) && direction(t).is_output() && status.is_none() {
                let cap = params.capacity(i).ok()?.min(SLOT_DATA);
                let len = h.slot(i, F_LEN) as usize;
                if len > cap {
                    return None;
                }
                let mut data = vec![0u8; len];
                if !self.sandbox.read_message(slot_offset(i), &mut data) {
                    return None;
                }
                outputs[i] = Some(data);
            }
        }
        match status {
            None => {
                for (i, &t) in sent.iter().enumerate() {
                    if !direction(t).is_output() || t == ParamType::None {
                        continue;
                    }
                    if is_memref(t) {
                        let data = outputs[i].take().unwrap_or_default();
                        params.set_memref(i, &data).ok()?;
                    } else {
                        params.set_value(i, h.slot(i, F_A), h.slot(i, F_B)).ok()?;
                    }
                }
                Some(Ok(()))
            }
            Some(TeeError::ShortBuffer) => {
                for (i, &t) in sent.iter().enumerate() {
                    if is_memref(t) && direction(t).is_output() {
                        let need = h.slot(i, F_REQUIRED) as usize;
                        // Records `need` when it exceeds the capacity.
                        let _ = params.require(i, need);
                    }
                }
                Some(Err(TeeError::ShortBuffer))
            }
            Some(e) => Some(Err(e)),
        }
    }
}

impl<S: Sandbox> TrustedApp for IsolatedApp<S> {
    fn uuid(&self) -> Uuid {
        self.uuid
    }

    fn name(&self) -> &'static str {
        self.name
    }

    fn open_session(
        &mut self,
        env: &mut TaEnv<'_>,
        session: u32,
        client: &ClientIdentity,
        params: &mut Params,
    ) -> Result<(), TeeError> {
        self.request(env, Op::OpenSession, session, client, 0, params)
    }

    fn invoke(
        &mut self,
        env: &mut TaEnv<'_>,
        session: u32,
        client: &ClientIdentity,
        cmd: u32,
        params: &mut Params,
    ) -> Result<(), TeeError> {
        self.request(env, Op::Invoke, session, client, cmd, params)
    }

    fn close_session(&mut self, env: &mut TaEnv<'_>, session: u32) {
        let client = ClientIdentity {
            login: 0,
            uuid: Uuid::from_bytes([0; 16]),
        };
        let _ = self.request(
            env,
            Op::CloseSession,
            session,
            &client,
            0,
            &mut Params::default(),
        );
    }

    fn error_origin(&self) -> Origin {
        self.last_origin
    }
}

/// Makes the TA an instance serves, from its UUID and the auxiliary word of
/// [`Op::Init`].
pub type TaFactory<'a> = &'a dyn Fn(&Uuid, u64) -> Option<Box<dyn TrustedApp>>;

/// The TA side of an isolated instance: the one TA it serves, the
/// measurement and that TA's root key, all received with [`Op::Init`].
pub struct Instance {
    app: Option<Box<dyn TrustedApp>>,
    measurement: Measurement,
    ta_root: Zeroizing<[u8; 32]>,
}

impl Default for Instance {
    fn default() -> Self {
        Instance {
            app: None,
            measurement: [0; 48],
            ta_root: Zeroizing::new([0; 32]),
        }
    }
}

impl core::fmt::Debug for Instance {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Instance")
            .field("app", &self.app.as_ref().map(|a| a.name()))
            .finish_non_exhaustive()
    }
}

/// Extra heap the runtime wants free beyond a request's own bytes before it
/// runs the TA (headroom for the TA's work).
pub const HEAP_HEADROOM: usize = 16 * 1024;

impl Instance {
    /// Handles the request in `msg` (the message area, [`MSG_SIZE`] bytes)
    /// and writes the reply over it. `heap_free` is the heap the instance
    /// has left: a request whose copies would not fit (twice its memref
    /// bytes plus [`HEAP_HEADROOM`]) is answered `OUT_OF_MEMORY` from the
    /// runtime without running the TA. `make` creates the TA at
    /// [`Op::Init`]; an instance serves only that one TA afterwards.
    pub fn handle<R: TryCryptoRng>(
        &mut self,
        msg: &mut [u8],
        rng: &mut R,
        heap_free: usize,
        make: TaFactory<'_>,
    ) {
        let rng: &mut dyn DynRng = rng;
        let (status, origin) = self.handle_inner(msg, rng, heap_free, make);
        if let Some(h) = msg.get_mut(..HEADER_USED) {
            h[OFF_MAGIC..OFF_MAGIC + 4].copy_from_slice(&REPLY_MAGIC.to_le_bytes());
            h[OFF_STATUS..OFF_STATUS + 4].copy_from_slice(&status.to_le_bytes());
            h[OFF_ORIGIN..OFF_ORIGIN + 4].copy_from_slice(&origin.to_le_bytes());
        }
    }

    fn handle_inner(
        &mut self,
        msg: &mut [u8],
        rng: &mut dyn DynRng,
        heap_free: usize,
        make: TaFactory<'_>,
    ) -> (u32, u32) {
        let fail = |e: TeeError| (e.code(), ORIGIN_TA);
        let mut h = Header::new();
        match msg.get(..HEADER_USED) {
            Some(src) if msg.len() >= MSG_SIZE => h.0.copy_from_slice(src),
            _ => return fail(TeeError::BadFormat),
        }
        if h.u32(OFF_MAGIC) != REQUEST_MAGIC {
            return fail(TeeError::BadFormat);
        }
        let Some(op) = Op::from_u32(h.u32(OFF_OP)) else {
            return fail(TeeError::BadFormat);
        };
        if op == Op::Init {
            if self.app.is_some() {
                return fail(TeeError::BadState);
            }
            let uuid = Uuid::from_bytes(h.bytes::<16>(OFF_TA));
            let aux = u64::from_le_bytes(h.bytes::<8>(OFF_AUX));
            let Some(app) = make(&uuid, aux) else {
                return fail(TeeError::ItemNotFound);
            };
            self.app = Some(app);
            self.measurement = h.bytes::<48>(OFF_MEASUREMENT);
            self.ta_root = Zeroizing::new(h.bytes::<32>(OFF_ROOT));
            // The root key stays only in the instance's private memory.
            msg[OFF_ROOT..OFF_ROOT + 32].fill(0);
            return (TEEC_SUCCESS, ORIGIN_TA);
        }
        let Some(app) = self.app.as_mut() else {
            return fail(TeeError::BadState);
        };
        // Decode the slots; refuse before allocating if the copies could not fit.
        let mut need = HEAP_HEADROOM;
        let mut types = [ParamType::None; 4];
        for (i, t) in types.iter_mut().enumerate() {
            let Some(pt) = type_from_code(h.slot(i, F_TYPE)) else {
                return fail(TeeError::BadParameters);
            };
            *t = pt;
            if is_memref(pt) {
                let cap = h.slot(i, F_CAP) as usize;
                let len = h.slot(i, F_LEN) as usize;
                if len > SLOT_DATA || cap > SLOT_DATA {
                    return fail(TeeError::BadParameters);
                }
                need = need.saturating_add(2 * len.max(cap));
            }
        }
        if need > heap_free {
            return (TeeError::OutOfMemory.code(), ORIGIN_RUNTIME);
        }
        let mut slots = [TaParam::None, TaParam::None, TaParam::None, TaParam::None];
        for (i, (slot, &t)) in slots.iter_mut().zip(&types).enumerate() {
            let dir = direction(t);
            *slot = match t {
                ParamType::None => TaParam::None,
                _ if !is_memref(t) => TaParam::Value {
                    dir,
                    a: h.slot(i, F_A),
                    b: h.slot(i, F_B),
                },
                _ => {
                    let len = if dir.is_input() {
                        h.slot(i, F_LEN) as usize
                    } else {
                        0
                    };
                    let at = slot_offset(i);
                    let data = msg
                        .get(at..at + len)
                        .map(<[u8]>::to_vec)
                        .unwrap_or_default();
                    TaParam::Memref(Memref::new(dir, data, h.slot(i, F_CAP) as usize))
                }
            };
        }
        let mut params = Params::new(slots);
        let client = ClientIdentity {
            login: h.u32(OFF_LOGIN),
            uuid: Uuid::from_bytes(h.bytes::<16>(OFF_CLIENT)),
        };
        let session = h.u32(OFF_SESSION);
        let mut env = TaEnv::new(rng, self.measurement, &self.ta_root);
        let res = match op {
            Op::OpenSession => app.open_session(&mut env, session, &client, &mut params),
            Op::Invoke => app.invoke(&mut env, session, &client, h.u32(OFF_CMD), &mut params),
            Op::CloseSession => {
                app.close_session(&mut env, session);
                Ok(())
            }
            Op::Init => Err(TeeError::BadState),
        };
        // Encode the outputs over the request's slots.
        for (i, p) in params.slots().iter().enumerate() {
            let base = OFF_SLOTS + SLOT_SIZE * i;
            let mut put = |field: usize, v: u32| {
                msg[base + 4 * field..base + 4 * field + 4].copy_from_slice(&v.to_le_bytes());
            };
            put(F_TYPE, type_code(p.param_type()));
            match p {
                TaParam::None => {}
                TaParam::Value { a, b, .. } => {
                    put(F_A, *a);
                    put(F_B, *b);
                }
                TaParam::Memref(m) => {
                    let data = m.data();
                    let out = m.dir().is_output() && data.len() <= SLOT_DATA;
                    put(F_LEN, if out { data.len() as u32 } else { 0 });
                    put(
                        F_REQUIRED,
                        u32::try_from(m.required().max(data.len())).unwrap_or(u32::MAX),
                    );
                    if out && res.is_ok() {
                        let at = slot_offset(i);
                        msg[at..at + data.len()].copy_from_slice(data);
                    }
                }
            }
        }
        match res {
            Ok(()) => (TEEC_SUCCESS, ORIGIN_TA),
            Err(e) => (e.code(), ORIGIN_TA),
        }
    }
}

/// An [`Instance`] behind the [`Sandbox`] interface in the same address
/// space: **no isolation**. For host tests of the message path (the proxy,
/// the encoding, the checks) with the real TAs.
pub struct LoopbackSandbox<'a> {
    instance: Instance,
    msg: Vec<u8>,
    make: TaFactory<'a>,
    /// Heap the instance reports free (tests shrink it to force `OUT_OF_MEMORY`).
    pub heap_free: usize,
}

impl<'a> LoopbackSandbox<'a> {
    /// A fresh instance that creates its TA with `make`.
    pub fn new(make: TaFactory<'a>) -> Self {
        LoopbackSandbox {
            instance: Instance::default(),
            msg: vec![0; MSG_SIZE],
            make,
            heap_free: usize::MAX,
        }
    }
}

struct ServiceRng<'a>(&'a mut dyn SandboxServices);

impl rand_core::TryRng for ServiceRng<'_> {
    type Error = RngError;
    fn try_next_u32(&mut self) -> Result<u32, RngError> {
        let mut b = [0; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, RngError> {
        let mut b = [0; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), RngError> {
        self.0.random(dst).map_err(|_| RngError)
    }
}

impl TryCryptoRng for ServiceRng<'_> {}

impl Sandbox for LoopbackSandbox<'_> {
    fn write_message(&mut self, offset: usize, data: &[u8]) -> bool {
        match self.msg.get_mut(offset..offset.saturating_add(data.len())) {
            Some(dst) => {
                dst.copy_from_slice(data);
                true
            }
            None => false,
        }
    }

    fn read_message(&self, offset: usize, buf: &mut [u8]) -> bool {
        match self.msg.get(offset..offset.saturating_add(buf.len())) {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }

    fn run(&mut self, services: &mut dyn SandboxServices) -> Result<(), Death> {
        let mut rng = ServiceRng(services);
        self.instance
            .handle(&mut self.msg, &mut rng, self.heap_free, self.make);
        Ok(())
    }

    fn reset(&mut self) -> bool {
        self.instance = Instance::default();
        self.msg.fill(0);
        true
    }
}

/// The system calls of an isolated instance: `int 0x80` (the only gate a
/// ring-3 instance may use) with the number in RAX. Anything else an
/// instance does that reaches the kernel — any other vector, any other
/// number — kills it.
pub mod syscall {
    /// The software-interrupt vector (DPL 3 gate in the paravisor's IDT).
    pub const VECTOR: u8 = 0x80;
    /// The reply is in the message area; the instance continues after the
    /// `int` with the next request (RAX = 0).
    pub const REPLY: u64 = 0;
    /// 32 random bytes from the platform RNG: RAX = 0 and RDI, RSI, RDX, R8
    /// = four random words, or RAX = 1 if the RNG failed.
    pub const RANDOM: u64 = 1;
    /// The instance gives up: RDI = [`EXIT_PANIC`] or
    /// [`EXIT_OUT_OF_MEMORY`], RSI = length of a message at the start of the
    /// message area (logged by the kernel, at most [`EXIT_MESSAGE_MAX`]
    /// bytes). Never returns.
    pub const EXIT: u64 = 2;
    /// [`EXIT`] code: the TA panicked.
    pub const EXIT_PANIC: u64 = 1;
    /// [`EXIT`] code: the heap ran out while the TA ran.
    pub const EXIT_OUT_OF_MEMORY: u64 = 2;
    /// Longest exit message the kernel logs.
    pub const EXIT_MESSAGE_MAX: usize = 200;
}

/// The isolation test TA: only its UUID and command numbers. The TA itself
/// is compiled into the TA runtime only with its `attack-ta` feature, which
/// only the emulator's test image (`paravisor-boot` feature `test-ta`)
/// enables; production images do not contain it. Every command except
/// [`attack_ta::cmd::PING`] and [`attack_ta::cmd::EXHAUST_HEAP`] must kill the instance.
pub mod attack_ta {
    use crate::uuid::Uuid;

    /// UUID of the isolation test TA.
    pub const UUID: Uuid = Uuid::from_fields(
        0x7e57_1501,
        0xa77a,
        0x4c6b,
        [0x9a, 0x1d, 0x00, 0x7e, 0x57, 0x00, 0x00, 0x01],
    );

    /// Commands. Each takes its parameters as documented; the attacks
    /// return only if the isolation failed.
    pub mod cmd {
        /// Value out: (0x600D, 1 if the instance got a target address).
        pub const PING: u32 = 0;
        /// Value in: address (a = low, b = high half); reads 8 bytes there
        /// (value out in slot 1 if it ever returns).
        pub const READ: u32 = 1;
        /// Reads the victim address the test image passed at start-up (a
        /// page of another TA instance, by its L1 address).
        pub const READ_OTHER_TA: u32 = 2;
        /// Writes to the instance's own code.
        pub const WRITE_OWN_CODE: u32 = 3;
        /// Jumps into its own heap (data is never executable).
        pub const EXECUTE_HEAP: u32 = 4;
        /// `mov cr3, rax`.
        pub const MOV_CR3: u32 = 5;
        /// `wrmsr` of IA32_LSTAR.
        pub const WRMSR: u32 = 6;
        /// Divides by zero.
        pub const DIVIDE_BY_ZERO: u32 = 7;
        /// Panics.
        pub const PANIC: u32 = 8;
        /// `out 0xF4, al` (the emulator's debug-exit port).
        pub const PORT_IO: u32 = 9;
        /// `hlt`.
        pub const HLT: u32 = 10;
        /// Allocates until the heap is exhausted.
        pub const EXHAUST_HEAP: u32 = 11;
        /// An x87 instruction (the FPU state is shared with L2).
        pub const X87: u32 = 12;
        /// A system call the kernel does not know.
        pub const BAD_SYSCALL: u32 = 13;
        /// Unbounded recursion into the stack guard page.
        pub const STACK_OVERFLOW: u32 = 14;
        /// A hand-made reply that breaks the message format.
        pub const BAD_REPLY: u32 = 15;
        /// `sgdt`: reads where the paravisor's GDT is (CR4.UMIP: #GP).
        pub const SGDT: u32 = 16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::login;
    use crate::ta;
    use crate::ta::vhsm;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    struct Seq(u8);
    impl SandboxServices for Seq {
        fn random(&mut self, dst: &mut [u8]) -> Result<(), TeeError> {
            for b in dst {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
            Ok(())
        }
    }

    fn builtin(uuid: &Uuid, _aux: u64) -> Option<Box<dyn TrustedApp>> {
        ta::builtin().into_iter().find(|a| a.uuid() == *uuid)
    }

    fn env_parts() -> (ChaCha20Rng, [u8; 32]) {
        (ChaCha20Rng::seed_from_u64(7), [9; 32])
    }

    fn client() -> ClientIdentity {
        ClientIdentity {
            login: login::PUBLIC,
            uuid: Uuid::from_bytes([0; 16]),
        }
    }

    #[test]
    fn isolated_vhsm_answers_like_the_in_process_one() {
        let make: TaFactory<'_> = &builtin;
        let mut app = IsolatedApp::start(
            LoopbackSandbox::new(make),
            vhsm::UUID,
            "vhsm",
            &[1; 48],
            &[2; 32],
            0,
            &mut Seq(0),
        );
        assert!(!app.is_dead());
        let (mut rng, root) = env_parts();
        let mut env = TaEnv::new(&mut rng, [1; 48], &root);
        let mut p = Params::default();
        app.open_session(&mut env, 1, &client(), &mut p).unwrap();
        // GENERATE_RANDOM: value in (count), memref out.
        let mut p = Params::new([
            TaParam::Value {
                dir: Direction::Input,
                a: 16,
                b: 0,
            },
            TaParam::Memref(Memref::new(Direction::Output, Vec::new(), 16)),
            TaParam::None,
            TaParam::None,
        ]);
        app.invoke(&mut env, 1, &client(), vhsm::cmd::GENERATE_RANDOM, &mut p)
            .unwrap();
        match p.get(1) {
            Some(TaParam::Memref(m)) => assert_eq!(m.data().len(), 16),
            other => panic!("{other:?}"),
        }
        // A short output buffer reports the size.
        let mut p = Params::new([
            TaParam::Value {
                dir: Direction::Input,
                a: 32,
                b: 0,
            },
            TaParam::Memref(Memref::new(Direction::Output, Vec::new(), 8)),
            TaParam::None,
            TaParam::None,
        ]);
        assert_eq!(
            app.invoke(&mut env, 1, &client(), vhsm::cmd::GENERATE_RANDOM, &mut p),
            Err(TeeError::ShortBuffer)
        );
        match p.get(1) {
            Some(TaParam::Memref(m)) => assert_eq!(m.required(), 32),
            other => panic!("{other:?}"),
        }
        assert_eq!(app.error_origin(), Origin::TrustedApp);
        app.close_session(&mut env, 1);
        assert!(!app.is_dead());
    }

    /// A sandbox whose replies are whatever the test writes.
    struct Evil {
        msg: Vec<u8>,
        tamper: fn(&mut [u8]),
        death: Option<Death>,
    }

    impl Sandbox for Evil {
        fn write_message(&mut self, offset: usize, data: &[u8]) -> bool {
            match self.msg.get_mut(offset..offset + data.len()) {
                Some(d) => {
                    d.copy_from_slice(data);
                    true
                }
                None => false,
            }
        }
        fn read_message(&self, offset: usize, buf: &mut [u8]) -> bool {
            match self.msg.get(offset..offset + buf.len()) {
                Some(s) => {
                    buf.copy_from_slice(s);
                    true
                }
                None => false,
            }
        }
        fn run(&mut self, _: &mut dyn SandboxServices) -> Result<(), Death> {
            if let Some(d) = self.death {
                return Err(d);
            }
            self.msg[0..4].copy_from_slice(&REPLY_MAGIC.to_le_bytes());
            self.msg[4..12].fill(0);
            (self.tamper)(&mut self.msg);
            Ok(())
        }
    }

    /// An instance with session 1 open whose next replies `tamper` edits.
    fn evil(tamper: fn(&mut [u8])) -> IsolatedApp<Evil> {
        let mut app = IsolatedApp::start(
            Evil {
                msg: vec![0; MSG_SIZE],
                tamper: |_| {},
                death: None,
            },
            vhsm::UUID,
            "evil",
            &[0; 48],
            &[0; 32],
            0,
            &mut Seq(0),
        );
        let (mut rng, root) = env_parts();
        let mut env = TaEnv::new(&mut rng, [0; 48], &root);
        assert_eq!(
            app.open_session(&mut env, 1, &client(), &mut Params::default()),
            Ok(())
        );
        app.sandbox.tamper = tamper;
        app
    }

    fn out_params() -> Params {
        Params::new([
            TaParam::Value {
                dir: Direction::Output,
                a: 0,
                b: 0,
            },
            TaParam::Memref(Memref::new(Direction::Output, Vec::new(), 8)),
            TaParam::Memref(Memref::new(Direction::Input, vec![1, 2, 3], 3)),
            TaParam::None,
        ])
    }

    #[test]
    fn garbage_replies_kill_the_instance() {
        type Tamper = fn(&mut [u8]);
        let cases: [(&str, Tamper); 8] = [
            ("bad magic", |m| m[0] = 0),
            ("bad origin", |m| m[8] = 7),
            ("runtime claims another error", |m| {
                m[4..8].copy_from_slice(&TeeError::AccessDenied.code().to_le_bytes());
                m[8] = 1;
            }),
            ("type changed", |m| {
                let at = OFF_SLOTS;
                m[at..at + 4].copy_from_slice(&6u32.to_le_bytes());
            }),
            ("unknown type", |m| {
                let at = OFF_SLOTS + 3 * SLOT_SIZE;
                m[at..at + 4].copy_from_slice(&4u32.to_le_bytes());
            }),
            ("output longer than the capacity", |m| {
                let at = OFF_SLOTS + SLOT_SIZE + 16;
                m[at..at + 4].copy_from_slice(&9u32.to_le_bytes());
            }),
            ("output longer than the slot", |m| {
                let at = OFF_SLOTS + SLOT_SIZE + 16;
                m[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            }),
            ("everything 0xFF", |m| m[4..HEADER_USED].fill(0xFF)),
        ];
        for (what, tamper) in cases {
            let mut app = evil(tamper);
            assert!(!app.is_dead(), "{what}: init");
            let (mut rng, root) = env_parts();
            let mut env = TaEnv::new(&mut rng, [0; 48], &root);
            let mut p = out_params();
            let before = p.clone();
            let r = app.invoke(&mut env, 1, &client(), 0, &mut p);
            assert_eq!(r, Err(TeeError::TargetDead), "{what}");
            assert_eq!(app.error_origin(), Origin::Tee, "{what}");
            assert_eq!(p, before, "{what}: parameters unchanged");
            assert!(app.is_dead(), "{what}");
            // And it stays dead.
            let r = app.invoke(&mut env, 1, &client(), 0, &mut out_params());
            assert_eq!(r, Err(TeeError::TargetDead), "{what}");
        }
    }

    #[test]
    fn a_well_formed_reply_is_applied() {
        let mut app = evil(|m| {
            let s = |i: usize, f: usize| OFF_SLOTS + SLOT_SIZE * i + 4 * f;
            m[s(0, 1)..s(0, 1) + 4].copy_from_slice(&5u32.to_le_bytes());
            m[s(1, 4)..s(1, 4) + 4].copy_from_slice(&4u32.to_le_bytes());
            m[slot_offset(1)..slot_offset(1) + 4].copy_from_slice(b"abcd");
        });
        let (mut rng, root) = env_parts();
        let mut env = TaEnv::new(&mut rng, [0; 48], &root);
        let mut p = out_params();
        assert_eq!(app.invoke(&mut env, 1, &client(), 0, &mut p), Ok(()));
        assert_eq!(
            p.get(0),
            Some(&TaParam::Value {
                dir: Direction::Output,
                a: 5,
                b: 0
            })
        );
        match p.get(1) {
            Some(TaParam::Memref(m)) => assert_eq!(m.data(), b"abcd"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deaths_and_runtime_out_of_memory() {
        let (mut rng, root) = env_parts();
        let mut env = TaEnv::new(&mut rng, [0; 48], &root);
        // The runtime's own OUT_OF_MEMORY: origin TEE, instance alive.
        let mut app = evil(|m| {
            m[4..8].copy_from_slice(&TeeError::OutOfMemory.code().to_le_bytes());
            m[8] = 1;
        });
        let r = app.invoke(&mut env, 1, &client(), 0, &mut out_params());
        assert_eq!(r, Err(TeeError::OutOfMemory));
        assert_eq!(app.error_origin(), Origin::Tee);
        assert!(!app.is_dead());
        // Heap exhausted while the TA ran: OUT_OF_MEMORY once, then dead.
        app.sandbox.death = Some(Death::OutOfMemory);
        let r = app.invoke(&mut env, 1, &client(), 0, &mut out_params());
        assert_eq!(
            (r, app.error_origin()),
            (Err(TeeError::OutOfMemory), Origin::Tee)
        );
        app.sandbox.death = None;
        let r = app.invoke(&mut env, 1, &client(), 0, &mut out_params());
        assert_eq!(
            (r, app.error_origin()),
            (Err(TeeError::TargetDead), Origin::Tee)
        );
        // A fault at start-up: dead from the start.
        let app = IsolatedApp::start(
            Evil {
                msg: vec![0; MSG_SIZE],
                tamper: |_| {},
                death: Some(Death::Fault),
            },
            vhsm::UUID,
            "evil",
            &[0; 48],
            &[0; 32],
            0,
            &mut Seq(0),
        );
        assert!(app.is_dead());
    }

    #[test]
    fn sessions_of_a_dead_instance_stay_dead_after_a_restart() {
        let (mut rng, root) = env_parts();
        let mut env = TaEnv::new(&mut rng, [0; 48], &root);
        let mut app = evil(|_| {});
        app.sandbox.death = Some(Death::Fault);
        let r = app.invoke(&mut env, 1, &client(), 0, &mut out_params());
        assert_eq!(r, Err(TeeError::TargetDead));
        app.sandbox.death = None;
        // Not restartable: a new session is refused too.
        let r = app.open_session(&mut env, 2, &client(), &mut Params::default());
        assert_eq!(
            (r, app.error_origin()),
            (Err(TeeError::TargetDead), Origin::Tee)
        );
        // Restartable, but `Evil` cannot reset: still dead.
        let mut app = app.restartable(&[0; 48], &[0; 32], 0);
        let r = app.open_session(&mut env, 2, &client(), &mut Params::default());
        assert_eq!(r, Err(TeeError::TargetDead));
        // A loopback instance can: the new session works, the old one is dead.
        let make: TaFactory<'_> = &builtin;
        let mut app = IsolatedApp::start(
            LoopbackSandbox::new(make),
            vhsm::UUID,
            "vhsm",
            &[1; 48],
            &[2; 32],
            0,
            &mut Seq(0),
        )
        .restartable(&[1; 48], &[2; 32], 0);
        app.open_session(&mut env, 1, &client(), &mut Params::default())
            .unwrap();
        app.dead = true;
        app.open_session(&mut env, 2, &client(), &mut Params::default())
            .unwrap();
        assert_eq!(app.stats.restarts, 1);
        let info = || {
            Params::new([
                TaParam::Value {
                    dir: Direction::Output,
                    a: 0,
                    b: 0,
                },
                TaParam::Value {
                    dir: Direction::Output,
                    a: 0,
                    b: 0,
                },
                TaParam::None,
                TaParam::None,
            ])
        };
        assert_eq!(
            app.invoke(&mut env, 1, &client(), vhsm::cmd::GET_INFO, &mut info()),
            Err(TeeError::TargetDead)
        );
        assert_eq!(
            app.invoke(&mut env, 2, &client(), vhsm::cmd::GET_INFO, &mut info()),
            Ok(())
        );
    }

    #[test]
    fn the_instance_refuses_what_would_not_fit_its_heap() {
        let make: TaFactory<'_> = &builtin;
        let mut sb = LoopbackSandbox::new(make);
        sb.heap_free = 1024;
        let mut app =
            IsolatedApp::start(sb, vhsm::UUID, "vhsm", &[1; 48], &[2; 32], 0, &mut Seq(0));
        let (mut rng, root) = env_parts();
        let mut env = TaEnv::new(&mut rng, [1; 48], &root);
        let r = app.open_session(&mut env, 1, &client(), &mut Params::default());
        assert_eq!(
            (r, app.error_origin()),
            (Err(TeeError::OutOfMemory), Origin::Tee)
        );
        assert!(!app.is_dead());
    }

    #[test]
    fn an_instance_serves_one_ta_and_checks_requests() {
        let make: TaFactory<'_> = &builtin;
        let mut inst = Instance::default();
        let mut msg = vec![0u8; MSG_SIZE];
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        // Not initialised: BAD_STATE.
        msg[0..4].copy_from_slice(&REQUEST_MAGIC.to_le_bytes());
        msg[4..8].copy_from_slice(&(Op::Invoke as u32).to_le_bytes());
        inst.handle(&mut msg, &mut rng, usize::MAX, make);
        assert_eq!(&msg[0..4], &REPLY_MAGIC.to_le_bytes());
        assert_eq!(&msg[4..8], &TeeError::BadState.code().to_le_bytes());
        // Unknown TA.
        msg.fill(0);
        msg[0..4].copy_from_slice(&REQUEST_MAGIC.to_le_bytes());
        msg[4..8].copy_from_slice(&(Op::Init as u32).to_le_bytes());
        inst.handle(&mut msg, &mut rng, usize::MAX, make);
        assert_eq!(&msg[4..8], &TeeError::ItemNotFound.code().to_le_bytes());
        // A real one, then a second Init is refused, the root key is wiped.
        msg.fill(0);
        msg[0..4].copy_from_slice(&REQUEST_MAGIC.to_le_bytes());
        msg[4..8].copy_from_slice(&(Op::Init as u32).to_le_bytes());
        msg[OFF_TA..OFF_TA + 16].copy_from_slice(vhsm::UUID.as_bytes());
        msg[OFF_ROOT..OFF_ROOT + 32].fill(0xAA);
        inst.handle(&mut msg, &mut rng, usize::MAX, make);
        assert_eq!(&msg[4..8], &0u32.to_le_bytes());
        assert!(msg[OFF_ROOT..OFF_ROOT + 32].iter().all(|b| *b == 0));
        msg[0..4].copy_from_slice(&REQUEST_MAGIC.to_le_bytes());
        msg[4..8].copy_from_slice(&(Op::Init as u32).to_le_bytes());
        inst.handle(&mut msg, &mut rng, usize::MAX, make);
        assert_eq!(&msg[4..8], &TeeError::BadState.code().to_le_bytes());
        // Garbage: bad magic, bad op, bad type, oversize length, short area.
        for tamper in [
            (|m: &mut [u8]| m[0] = 1) as fn(&mut [u8]),
            |m| m[4] = 9,
            |m| m[OFF_SLOTS] = 4,
            |m| m[OFF_SLOTS + 16..OFF_SLOTS + 20].copy_from_slice(&u32::MAX.to_le_bytes()),
        ] {
            msg.fill(0);
            msg[0..4].copy_from_slice(&REQUEST_MAGIC.to_le_bytes());
            msg[4..8].copy_from_slice(&(Op::Invoke as u32).to_le_bytes());
            msg[OFF_SLOTS] = 5;
            tamper(&mut msg);
            inst.handle(&mut msg, &mut rng, usize::MAX, make);
            assert_eq!(&msg[0..4], &REPLY_MAGIC.to_le_bytes());
            assert_ne!(&msg[4..8], &0u32.to_le_bytes());
        }
        let mut short = vec![0u8; 100];
        inst.handle(&mut short, &mut rng, usize::MAX, make);
    }
}
