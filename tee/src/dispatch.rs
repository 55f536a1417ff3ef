//! The TEE core: SMC functions, message commands, sessions, registered
//! shared memory, and the [`TrustedApp`] interface.
//!
//! [`Tee::vtl_call`] is the whole guest-facing surface. Everything the guest
//! supplies is copied once into private memory, checked there, and the
//! result is written back; no guest-controlled value can make the core
//! panic, and every refusal has a GlobalPlatform code and origin (see the
//! crate documentation for the table).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use zeroize::Zeroizing;

use crate::error::{Origin, TeeError, TEEC_SUCCESS};
use crate::mem::{GuestMemory, PAGE_SIZE};
use crate::msg::{
    arg_size, cmd, errno, login, smc, Direction, MsgArg, MsgHeader, MsgParam, RawParam, SmcArgs,
    HEADER_SIZE, OPTEE_MESSAGE_FUNC_ID, PARAM_SIZE, SMC_ARGS_SIZE, TA_PARAMS,
};
use crate::params::{Memref, Params, TaParam};
use crate::platform::{self, DynRng, Measurement, Platform, TaRng};
use crate::uuid::Uuid;

/// Caps of the TEE core. Each has its own error (crate docs, "Limits").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open sessions per TA ([`TeeError::Busy`]).
    pub max_sessions_per_ta: usize,
    /// Open sessions in total ([`TeeError::OutOfMemory`]).
    pub max_sessions: usize,
    /// Registered shared-memory regions ([`TeeError::OutOfMemory`]).
    pub max_shm_regions: usize,
    /// Pages in one registered region ([`TeeError::ExcessData`]).
    pub max_shm_region_pages: usize,
    /// Pages in all registered regions ([`TeeError::OutOfMemory`]).
    pub max_shm_pages: usize,
    /// Bytes of one memory-reference parameter ([`TeeError::ExcessData`] for
    /// input; output capacity is clamped to it).
    pub max_memref_size: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_sessions_per_ta: 8,
            max_sessions: 32,
            max_shm_regions: 32,
            max_shm_region_pages: 256,
            max_shm_pages: 2048,
            max_memref_size: 64 * 1024,
        }
    }
}

/// Who opened a session: the GlobalPlatform login method and client UUID
/// from the OPEN_SESSION META parameter. TAs may use it to scope objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    /// Login method ([`login`]).
    pub login: u32,
    /// Client UUID (nil for public login).
    pub uuid: Uuid,
}

/// What a TA may use from the platform, handed to it per call.
///
/// It holds no reference to the core, to guest memory, to other TAs or to
/// any paravisor or EPT state: those are simply not reachable from a TA.
pub struct TaEnv<'a> {
    rng: TaRng<'a>,
    measurement: Measurement,
    ta_root: &'a [u8; 32],
}

impl<'a> TaEnv<'a> {
    pub(crate) fn new(
        rng: &'a mut dyn DynRng,
        measurement: Measurement,
        ta_root: &'a [u8; 32],
    ) -> TaEnv<'a> {
        TaEnv {
            rng: TaRng(rng),
            measurement,
            ta_root,
        }
    }

    /// The platform RNG, usable with RustCrypto APIs.
    pub fn rng(&mut self) -> &mut TaRng<'a> {
        &mut self.rng
    }

    /// Fills `dst` with random bytes.
    pub fn random(&mut self, dst: &mut [u8]) -> Result<(), TeeError> {
        self.rng.0.fill(dst).map_err(TeeError::from)
    }

    /// The measurement of the running image.
    pub fn measurement(&self) -> &Measurement {
        &self.measurement
    }

    /// A 32-byte key private to this TA, bound to the current measurement and
    /// `label`. The same TA under the same measurement and platform root gets
    /// the same key after a restart; another TA or another image never does.
    pub fn sealing_key(&self, label: &[u8]) -> Zeroizing<[u8; 32]> {
        platform::sealing_key(self.ta_root, &self.measurement, label)
    }
}

/// A trusted application.
///
/// Each TA is a single instance owning all of its state; the core calls it
/// with a private copy of the parameters and a [`TaEnv`]. Errors are
/// reported with origin `TRUSTED_APP`.
pub trait TrustedApp {
    /// The TA's UUID.
    fn uuid(&self) -> Uuid;
    /// A short name for logs.
    fn name(&self) -> &'static str;
    /// A new session `session` from `client`. On error the session is not
    /// created.
    fn open_session(
        &mut self,
        env: &mut TaEnv<'_>,
        session: u32,
        client: &ClientIdentity,
        params: &mut Params,
    ) -> Result<(), TeeError>;
    /// Command `cmd` in `session`.
    fn invoke(
        &mut self,
        env: &mut TaEnv<'_>,
        session: u32,
        client: &ClientIdentity,
        cmd: u32,
        params: &mut Params,
    ) -> Result<(), TeeError>;
    /// The session ends; drop its state.
    fn close_session(&mut self, env: &mut TaEnv<'_>, session: u32);
    /// The origin of the error the last call returned: the TA itself
    /// (the default), or the TEE when the TA could not run at all — an
    /// isolated TA that died ([`TeeError::TargetDead`]) or whose runtime ran
    /// out of memory ([`crate::sandbox::IsolatedApp`]).
    fn error_origin(&self) -> Origin {
        Origin::TrustedApp
    }
}

/// A refusal with its origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fail {
    code: TeeError,
    origin: Origin,
}

fn comms(code: TeeError) -> Fail {
    Fail {
        code,
        origin: Origin::Comms,
    }
}

fn tee(code: TeeError) -> Fail {
    Fail {
        code,
        origin: Origin::Tee,
    }
}

/// A list of guest ranges `(gpa, len)` a buffer occupies, in order.
type Extents = Vec<(u64, u64)>;

/// A registered shared-memory region: its pages, the offset of the buffer
/// in the first page, and the buffer size.
#[derive(Clone, Debug)]
struct ShmRegion {
    pages: Vec<u64>,
    offset: u64,
    size: u64,
}

impl ShmRegion {
    /// The extents of `[offs, offs + size)` of the region.
    fn extents(&self, offs: u64, size: u64) -> Option<Extents> {
        let end = offs.checked_add(size)?;
        if end > self.size {
            return None;
        }
        let mut out = Vec::new();
        let mut pos = self.offset.checked_add(offs)?;
        let mut left = size;
        while left > 0 {
            let page = *self.pages.get(usize::try_from(pos / PAGE_SIZE).ok()?)?;
            let in_page = pos % PAGE_SIZE;
            let chunk = (PAGE_SIZE - in_page).min(left);
            out.push((page.checked_add(in_page)?, chunk));
            pos = pos.checked_add(chunk)?;
            left -= chunk;
        }
        Some(out)
    }
}

fn read_extents(mem: &dyn GuestMemory, ext: &Extents) -> Result<Vec<u8>, TeeError> {
    let total: u64 = ext.iter().map(|e| e.1).sum();
    let mut out = vec![0u8; usize::try_from(total).map_err(|_| TeeError::ExcessData)?];
    let mut pos = 0usize;
    for &(gpa, len) in ext {
        let len = len as usize;
        let dst = out.get_mut(pos..pos + len).ok_or(TeeError::BadParameters)?;
        mem.read(gpa, dst).map_err(|_| TeeError::BadParameters)?;
        pos += len;
    }
    Ok(out)
}

fn write_extents(mem: &mut dyn GuestMemory, ext: &Extents, data: &[u8]) -> Result<(), TeeError> {
    let mut rest = data;
    for &(gpa, len) in ext {
        if rest.is_empty() {
            break;
        }
        let n = (len as usize).min(rest.len());
        let (now, later) = rest.split_at(n);
        mem.write(gpa, now).map_err(|_| TeeError::Communication)?;
        rest = later;
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err(TeeError::Communication)
    }
}

fn check_extents(mem: &dyn GuestMemory, ext: &Extents) -> Result<(), TeeError> {
    for &(gpa, len) in ext {
        mem.check(gpa, len).map_err(|_| TeeError::BadParameters)?;
    }
    Ok(())
}

/// Reads the page list of a NONCONTIG TMEM: `buf_ptr` is the GPA of the first
/// list page plus the buffer's offset in its first page; each list page holds
/// 511 page GPAs and the GPA of the next list page.
fn read_page_list(
    mem: &dyn GuestMemory,
    buf_ptr: u64,
    size: u64,
    max_pages: usize,
) -> Result<ShmRegion, TeeError> {
    const ENTRIES: usize = (PAGE_SIZE as usize / 8) - 1;
    let offset = buf_ptr % PAGE_SIZE;
    let mut list = buf_ptr - offset;
    let span = offset.checked_add(size).ok_or(TeeError::BadParameters)?;
    let npages = span.div_ceil(PAGE_SIZE);
    if npages > max_pages as u64 {
        return Err(TeeError::ExcessData);
    }
    let npages = npages as usize;
    let mut pages = Vec::with_capacity(npages);
    let mut buf = [0u8; PAGE_SIZE as usize];
    while pages.len() < npages {
        if list == 0 {
            return Err(TeeError::BadParameters);
        }
        mem.read(list, &mut buf)
            .map_err(|_| TeeError::BadParameters)?;
        let mut words = buf.chunks_exact(8).map(|c| {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            u64::from_le_bytes(w)
        });
        for _ in 0..ENTRIES {
            if pages.len() == npages {
                break;
            }
            let page = words.next().ok_or(TeeError::BadParameters)?;
            if !page.is_multiple_of(PAGE_SIZE) {
                return Err(TeeError::BadParameters);
            }
            pages.push(page);
        }
        list = buf
            .get(ENTRIES * 8..)
            .and_then(|s| s.try_into().ok())
            .map_or(0, u64::from_le_bytes);
        if !list.is_multiple_of(PAGE_SIZE) {
            return Err(TeeError::BadParameters);
        }
    }
    Ok(ShmRegion {
        pages,
        offset,
        size,
    })
}

/// How a TA parameter maps back to the message.
#[derive(Clone, Debug)]
enum Binding {
    None,
    Value,
    Mem { extents: Extents },
}

struct AppSlot {
    app: Box<dyn TrustedApp>,
    uuid: Uuid,
    ta_root: Zeroizing<[u8; 32]>,
    sessions: usize,
}

#[derive(Clone, Copy, Debug)]
struct Session {
    app: usize,
    client: ClientIdentity,
}

/// Where the message argument lives.
#[derive(Clone, Copy, Debug)]
enum ArgLocation {
    Gpa(u64),
    Shm { cookie: u64, offs: u64 },
}

/// Why [`Tee::register_app`] refused a TA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// A TA with this UUID is already registered.
    DuplicateUuid(Uuid),
}

/// Counters for tests and the benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// VTL calls handled.
    pub vtl_calls: u64,
    /// Messages dispatched.
    pub messages: u64,
    /// Messages refused before reaching a TA or the shm registry.
    pub refused: u64,
}

/// The TEE core.
pub struct Tee<P: Platform> {
    platform: P,
    limits: Limits,
    apps: Vec<AppSlot>,
    sessions: BTreeMap<u32, Session>,
    next_session: u32,
    shm: BTreeMap<u64, ShmRegion>,
    shm_pages: usize,
    stats: Stats,
}

impl<P: Platform> Tee<P> {
    /// A TEE with no TAs.
    pub fn new(platform: P, limits: Limits) -> Tee<P> {
        Tee {
            platform,
            limits,
            apps: Vec::new(),
            sessions: BTreeMap::new(),
            next_session: 1,
            shm: BTreeMap::new(),
            shm_pages: 0,
            stats: Stats::default(),
        }
    }

    /// A TEE with the four built-in TAs ([`crate::ta`]).
    pub fn with_builtin_apps(platform: P, limits: Limits) -> Tee<P> {
        let mut t = Tee::new(platform, limits);
        for app in crate::ta::builtin() {
            // The built-in UUIDs are distinct.
            let _ = t.register_app(app);
        }
        t
    }

    /// Adds a TA.
    pub fn register_app(&mut self, app: Box<dyn TrustedApp>) -> Result<(), RegisterError> {
        let uuid = app.uuid();
        if self.apps.iter().any(|s| s.uuid == uuid) {
            return Err(RegisterError::DuplicateUuid(uuid));
        }
        let root = self.platform.sealing_root();
        let ta_root = platform::ta_root_key(&root, &uuid);
        self.apps.push(AppSlot {
            app,
            uuid,
            ta_root,
            sessions: 0,
        });
        Ok(())
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Registered TAs.
    pub fn app_count(&self) -> usize {
        self.apps.len()
    }

    /// Open sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Registered shared-memory regions.
    pub fn shm_count(&self) -> usize {
        self.shm.len()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The platform.
    pub fn platform_mut(&mut self) -> &mut P {
        &mut self.platform
    }

    /// The LVBS call: `a0` must be [`OPTEE_MESSAGE_FUNC_ID`], `a1` is the PFN of
    /// the SMC-argument page. Returns the value for R8: 0 when the page was
    /// handled (the OP-TEE status is in the page), [`errno::EINVAL`] for
    /// another function id or an impossible PFN, [`errno::EFAULT`] when the page
    /// cannot be read or written.
    pub fn vtl_call(
        &mut self,
        mem: &mut dyn GuestMemory,
        a0: u64,
        a1: u64,
        _a2: u64,
        _a3: u64,
    ) -> i64 {
        self.stats.vtl_calls = self.stats.vtl_calls.wrapping_add(1);
        if a0 != OPTEE_MESSAGE_FUNC_ID {
            return errno::EINVAL;
        }
        let Some(gpa) = a1.checked_mul(PAGE_SIZE) else {
            return errno::EINVAL;
        };
        let mut page = [0u8; SMC_ARGS_SIZE];
        if mem.read(gpa, &mut page).is_err() {
            return errno::EFAULT;
        }
        let reply = self.smc_call(mem, SmcArgs::from_bytes(&page));
        if mem.write(gpa, &reply.to_bytes()).is_err() {
            return errno::EFAULT;
        }
        0
    }

    /// One OP-TEE SMC function; returns the nine reply slots.
    pub fn smc_call(&mut self, mem: &mut dyn GuestMemory, args: SmcArgs) -> SmcArgs {
        let a = args.0;
        let mut r = [0u64; 9];
        match args.function() {
            smc::GET_OS_UUID => {
                for (slot, w) in r.iter_mut().zip(smc::OS_UUID) {
                    *slot = w.into();
                }
            }
            smc::CALLS_UID => {
                for (slot, w) in r.iter_mut().zip(smc::API_UID) {
                    *slot = w.into();
                }
            }
            smc::GET_OS_REVISION | smc::CALLS_REVISION => {
                r[0] = smc::API_REVISION.0;
                r[1] = smc::API_REVISION.1;
            }
            smc::EXCHANGE_CAPABILITIES => {
                r[0] = smc::RETURN_OK;
                r[1] = smc::SEC_CAP_DYNAMIC_SHM | smc::SEC_CAP_MEMREF_NULL;
            }
            smc::DISABLE_SHM_CACHE => r[0] = smc::RETURN_ENOTAVAIL,
            smc::CALL_WITH_ARG | smc::CALL_WITH_RPC_ARG => {
                // No RPC is ever issued, so the RPC argument is ignored.
                r[0] = if a[1] > u64::from(u32::MAX) || a[2] > u64::from(u32::MAX) {
                    smc::RETURN_EBADADDR
                } else {
                    self.call_with_arg(mem, ArgLocation::Gpa((a[1] << 32) | a[2]))
                };
            }
            smc::CALL_WITH_REGD_ARG => {
                let cookie = ((a[1] & 0xFFFF_FFFF) << 32) | (a[2] & 0xFFFF_FFFF);
                r[0] = self.call_with_arg(mem, ArgLocation::Shm { cookie, offs: a[3] });
            }
            _ => r[0] = smc::RETURN_UNKNOWN_FUNCTION,
        }
        SmcArgs(r)
    }

    fn arg_extents(&self, loc: ArgLocation, len: u64) -> Option<Extents> {
        match loc {
            ArgLocation::Gpa(gpa) => {
                if !gpa.is_multiple_of(8) {
                    return None;
                }
                gpa.checked_add(len)?;
                Some(vec![(gpa, len)])
            }
            ArgLocation::Shm { cookie, offs } => {
                if !offs.is_multiple_of(8) {
                    return None;
                }
                self.shm.get(&cookie)?.extents(offs, len)
            }
        }
    }

    /// Handles one `optee_msg_arg`; returns the SMC status.
    fn call_with_arg(&mut self, mem: &mut dyn GuestMemory, loc: ArgLocation) -> u64 {
        self.stats.messages = self.stats.messages.wrapping_add(1);
        // Header, read once.
        let Some(hext) = self.arg_extents(loc, HEADER_SIZE as u64) else {
            return smc::RETURN_EBADADDR;
        };
        let Ok(hbytes) = read_extents(mem, &hext) else {
            return smc::RETURN_EBADADDR;
        };
        let mut hb = [0u8; HEADER_SIZE];
        hb.copy_from_slice(hbytes.get(..HEADER_SIZE).unwrap_or(&[0; HEADER_SIZE]));
        let header = MsgHeader::from_bytes(&hb);
        let Some(size) = arg_size(header.num_params as usize) else {
            // Too many parameters: answer in the header only.
            self.stats.refused = self.stats.refused.wrapping_add(1);
            let mut h = header;
            h.ret = TeeError::BadParameters.code();
            h.ret_origin = Origin::Comms as u32;
            return match write_extents(mem, &hext, &h.to_bytes()) {
                Ok(()) => smc::RETURN_OK,
                Err(_) => smc::RETURN_EBADADDR,
            };
        };
        // The whole argument's location is fixed now, before the command can
        // change the shm registry; parameters are read once from it.
        let Some(ext) = self.arg_extents(loc, size as u64) else {
            return smc::RETURN_EBADADDR;
        };
        let Ok(bytes) = read_extents(mem, &ext) else {
            return smc::RETURN_EBADADDR;
        };
        let params = bytes
            .get(HEADER_SIZE..)
            .unwrap_or(&[])
            .chunks_exact(PARAM_SIZE)
            .map(RawParam::from_bytes)
            .collect();
        let mut arg = MsgArg { header, params };
        let status = self.dispatch(mem, &mut arg);
        match write_extents(mem, &ext, &arg.to_bytes()) {
            Ok(()) => status,
            Err(_) => smc::RETURN_EBADADDR,
        }
    }

    /// Runs a parsed message; sets `ret`/`ret_origin` (and outputs) in `arg`.
    /// Returns the SMC status.
    fn dispatch(&mut self, mem: &mut dyn GuestMemory, arg: &mut MsgArg) -> u64 {
        let result = match arg.header.cmd {
            cmd::OPEN_SESSION => self.open_session(mem, arg),
            cmd::INVOKE_COMMAND => self.invoke(mem, arg),
            cmd::CLOSE_SESSION => self.close_session(arg),
            cmd::CANCEL => self.cancel(arg),
            cmd::REGISTER_SHM => self.register_shm(mem, arg),
            cmd::UNREGISTER_SHM => self.unregister_shm(arg),
            _ => {
                // Including DO_BOTTOM_HALF / STOP_ASYNC_NOTIF: asynchronous
                // notification is not offered in the capabilities.
                self.stats.refused = self.stats.refused.wrapping_add(1);
                arg.header.ret = TeeError::NotImplemented.code();
                arg.header.ret_origin = Origin::Comms as u32;
                return smc::RETURN_EBADCMD;
            }
        };
        match result {
            Ok(origin) => {
                arg.header.ret = TEEC_SUCCESS;
                arg.header.ret_origin = origin as u32;
            }
            Err(f) => {
                if f.origin != Origin::TrustedApp {
                    self.stats.refused = self.stats.refused.wrapping_add(1);
                }
                arg.header.ret = f.code.code();
                arg.header.ret_origin = f.origin as u32;
            }
        }
        smc::RETURN_OK
    }

    fn decode(raw: &RawParam) -> Result<(MsgParam, bool), Fail> {
        MsgParam::decode(raw).map_err(comms)
    }

    fn open_session(
        &mut self,
        mem: &mut dyn GuestMemory,
        arg: &mut MsgArg,
    ) -> Result<Origin, Fail> {
        // Two META value inputs: TA UUID, then client UUID + login.
        let meta = |raw: Option<&RawParam>| -> Result<(u64, u64, u64), Fail> {
            match raw.map(Self::decode).transpose()? {
                Some((
                    MsgParam::Value {
                        dir: Direction::Input,
                        a,
                        b,
                        c,
                    },
                    true,
                )) => Ok((a, b, c)),
                _ => Err(comms(TeeError::BadParameters)),
            }
        };
        let (ta_a, ta_b, _) = meta(arg.params.first())?;
        let (cl_a, cl_b, cl_login) = meta(arg.params.get(1))?;
        let login = u32::try_from(cl_login).map_err(|_| comms(TeeError::BadParameters))?;
        match login {
            login::PUBLIC
            | login::USER
            | login::GROUP
            | login::APPLICATION
            | login::APPLICATION_USER
            | login::APPLICATION_GROUP
            | login::REE_KERNEL => {}
            login::TRUSTED_APP => return Err(tee(TeeError::AccessDenied)),
            _ => return Err(comms(TeeError::BadParameters)),
        }
        let client = ClientIdentity {
            login,
            uuid: Uuid::from_optee_msg(cl_a, cl_b),
        };
        let uuid = Uuid::from_optee_msg(ta_a, ta_b);
        let app = self
            .apps
            .iter()
            .position(|s| s.uuid == uuid)
            .ok_or(tee(TeeError::ItemNotFound))?;
        let slot_sessions = self.apps.get(app).map_or(0, |s| s.sessions);
        if slot_sessions >= self.limits.max_sessions_per_ta {
            return Err(tee(TeeError::Busy));
        }
        if self.sessions.len() >= self.limits.max_sessions {
            return Err(tee(TeeError::OutOfMemory));
        }
        let (mut params, bindings) = self.copy_in(mem, arg.params.get(2..).unwrap_or(&[]))?;
        let id = self.alloc_session_id();
        let res = self.run_app(app, |ta, env| {
            ta.open_session(env, id, &client, &mut params)
        });
        let out = Self::copy_out(
            mem,
            &params,
            &bindings,
            arg.params.get_mut(2..).unwrap_or(&mut []),
            res,
        );
        match out {
            Ok(()) => {
                self.sessions.insert(id, Session { app, client });
                if let Some(s) = self.apps.get_mut(app) {
                    s.sessions += 1;
                }
                arg.header.session = id;
                Ok(Origin::TrustedApp)
            }
            Err(f) => {
                if res.is_ok() {
                    // The TA accepted but the reply cannot be delivered.
                    self.run_app(app, |ta, env| {
                        ta.close_session(env, id);
                        Ok(())
                    })
                    .ok();
                }
                Err(f)
            }
        }
    }

    fn invoke(&mut self, mem: &mut dyn GuestMemory, arg: &mut MsgArg) -> Result<Origin, Fail> {
        let sid = arg.header.session;
        let session = *self.sessions.get(&sid).ok_or(tee(TeeError::ItemNotFound))?;
        let (mut params, bindings) = self.copy_in(mem, &arg.params)?;
        let func = arg.header.func;
        let res = self.run_app(session.app, |ta, env| {
            ta.invoke(env, sid, &session.client, func, &mut params)
        });
        Self::copy_out(mem, &params, &bindings, &mut arg.params, res)?;
        Ok(Origin::TrustedApp)
    }

    fn close_session(&mut self, arg: &mut MsgArg) -> Result<Origin, Fail> {
        if !arg.params.is_empty() {
            return Err(comms(TeeError::BadParameters));
        }
        let sid = arg.header.session;
        let session = self
            .sessions
            .remove(&sid)
            .ok_or(tee(TeeError::ItemNotFound))?;
        let _ = self.run_app(session.app, |ta, env| {
            ta.close_session(env, sid);
            Ok(())
        });
        if let Some(s) = self.apps.get_mut(session.app) {
            s.sessions = s.sessions.saturating_sub(1);
        }
        Ok(Origin::Tee)
    }

    /// Requests run to completion before the guest regains control, so there
    /// is never anything in flight to cancel: CANCEL of a known session (or of
    /// a not yet opened one, session 0) succeeds and has no effect.
    fn cancel(&mut self, arg: &mut MsgArg) -> Result<Origin, Fail> {
        if !arg.params.is_empty() {
            return Err(comms(TeeError::BadParameters));
        }
        let sid = arg.header.session;
        if sid != 0 && !self.sessions.contains_key(&sid) {
            return Err(tee(TeeError::ItemNotFound));
        }
        Ok(Origin::Tee)
    }

    fn register_shm(
        &mut self,
        mem: &mut dyn GuestMemory,
        arg: &mut MsgArg,
    ) -> Result<Origin, Fail> {
        let [raw] = arg.params.as_slice() else {
            return Err(comms(TeeError::BadParameters));
        };
        let (
            MsgParam::Tmem {
                buf_ptr,
                size,
                shm_ref,
                noncontig,
                ..
            },
            false,
        ) = Self::decode(raw)?
        else {
            return Err(comms(TeeError::BadParameters));
        };
        if size == 0 || buf_ptr == 0 {
            return Err(comms(TeeError::BadParameters));
        }
        if self.shm.contains_key(&shm_ref) {
            return Err(tee(TeeError::AccessConflict));
        }
        if self.shm.len() >= self.limits.max_shm_regions {
            return Err(tee(TeeError::OutOfMemory));
        }
        let max_pages = self.limits.max_shm_region_pages;
        let region = if noncontig {
            read_page_list(mem, buf_ptr, size, max_pages).map_err(tee)?
        } else {
            let offset = buf_ptr % PAGE_SIZE;
            let first = buf_ptr - offset;
            let span = offset
                .checked_add(size)
                .ok_or(comms(TeeError::BadParameters))?;
            let n = span.div_ceil(PAGE_SIZE);
            if n > max_pages as u64 {
                return Err(tee(TeeError::ExcessData));
            }
            let mut pages = Vec::with_capacity(n as usize);
            for i in 0..n {
                pages.push(
                    first
                        .checked_add(i * PAGE_SIZE)
                        .ok_or(comms(TeeError::BadParameters))?,
                );
            }
            ShmRegion {
                pages,
                offset,
                size,
            }
        };
        if self.shm_pages + region.pages.len() > self.limits.max_shm_pages {
            return Err(tee(TeeError::OutOfMemory));
        }
        let ext = region
            .extents(0, size)
            .ok_or(comms(TeeError::BadParameters))?;
        check_extents(mem, &ext).map_err(comms)?;
        self.shm_pages += region.pages.len();
        self.shm.insert(shm_ref, region);
        Ok(Origin::Tee)
    }

    fn unregister_shm(&mut self, arg: &mut MsgArg) -> Result<Origin, Fail> {
        let [raw] = arg.params.as_slice() else {
            return Err(comms(TeeError::BadParameters));
        };
        let (MsgParam::Rmem { shm_ref, .. }, false) = Self::decode(raw)? else {
            return Err(comms(TeeError::BadParameters));
        };
        let region = self
            .shm
            .remove(&shm_ref)
            .ok_or(tee(TeeError::ItemNotFound))?;
        self.shm_pages = self.shm_pages.saturating_sub(region.pages.len());
        Ok(Origin::Tee)
    }

    fn alloc_session_id(&mut self) -> u32 {
        loop {
            let id = self.next_session;
            self.next_session = self.next_session.wrapping_add(1).max(1);
            if !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    /// Runs `f` on the TA `app`; on error also returns the error's origin
    /// ([`TrustedApp::error_origin`]).
    fn run_app<F>(&mut self, app: usize, f: F) -> Result<(), Fail>
    where
        F: FnOnce(&mut dyn TrustedApp, &mut TaEnv<'_>) -> Result<(), TeeError>,
    {
        let measurement = self.platform.measurement();
        let Some(slot) = self.apps.get_mut(app) else {
            return Err(tee(TeeError::TargetDead));
        };
        let rng: &mut dyn DynRng = self.platform.rng();
        let mut env = TaEnv::new(rng, measurement, &slot.ta_root);
        f(slot.app.as_mut(), &mut env).map_err(|code| Fail {
            code,
            origin: slot.app.error_origin(),
        })
    }

    /// Copies the client parameters into private TA parameters.
    fn copy_in(
        &self,
        mem: &dyn GuestMemory,
        raws: &[RawParam],
    ) -> Result<(Params, Vec<Binding>), Fail> {
        if raws.len() > TA_PARAMS {
            return Err(comms(TeeError::BadParameters));
        }
        let mut slots = [TaParam::None, TaParam::None, TaParam::None, TaParam::None];
        let mut bindings = Vec::with_capacity(raws.len());
        let max = self.limits.max_memref_size as u64;
        for (slot, raw) in slots.iter_mut().zip(raws) {
            let (p, meta) = Self::decode(raw)?;
            if meta {
                return Err(comms(TeeError::BadParameters));
            }
            let (dir, ext, cap) = match p {
                MsgParam::None => {
                    bindings.push(Binding::None);
                    continue;
                }
                MsgParam::Value { dir, a, b, .. } => {
                    // GlobalPlatform values are 32-bit.
                    *slot = TaParam::Value {
                        dir,
                        a: a as u32,
                        b: b as u32,
                    };
                    bindings.push(Binding::Value);
                    continue;
                }
                MsgParam::Tmem {
                    dir,
                    buf_ptr,
                    size,
                    noncontig,
                    ..
                } => {
                    if dir.is_input() && size > max {
                        return Err(tee(TeeError::ExcessData));
                    }
                    let len = size.min(max);
                    if buf_ptr == 0 {
                        // MEMREF_NULL: a null buffer has nothing to read, and
                        // as output it only reports the required size.
                        if noncontig || (dir.is_input() && size != 0) {
                            return Err(comms(TeeError::BadParameters));
                        }
                        (dir, Vec::new(), 0)
                    } else if noncontig {
                        let pages = (max / PAGE_SIZE + 1) as usize;
                        let region = read_page_list(mem, buf_ptr, len, pages).map_err(comms)?;
                        let ext = region
                            .extents(0, len)
                            .ok_or(comms(TeeError::BadParameters))?;
                        (dir, ext, len)
                    } else {
                        buf_ptr
                            .checked_add(len)
                            .ok_or(comms(TeeError::BadParameters))?;
                        (dir, vec![(buf_ptr, len)], len)
                    }
                }
                MsgParam::Rmem {
                    dir,
                    offs,
                    size,
                    shm_ref,
                } => {
                    if dir.is_input() && size > max {
                        return Err(tee(TeeError::ExcessData));
                    }
                    let len = size.min(max);
                    let region = self.shm.get(&shm_ref).ok_or(tee(TeeError::BadParameters))?;
                    let ext = region
                        .extents(offs, size)
                        .ok_or(tee(TeeError::BadParameters))?;
                    let ext = truncate_extents(ext, len);
                    (dir, ext, len)
                }
            };
            let data = if dir.is_input() {
                read_extents(mem, &ext).map_err(comms)?
            } else {
                check_extents(mem, &ext).map_err(comms)?;
                Vec::new()
            };
            *slot = TaParam::Memref(Memref::new(dir, data, cap as usize));
            bindings.push(Binding::Mem { extents: ext });
        }
        Ok((Params::new(slots), bindings))
    }

    /// Copies TA outputs back into the message and guest memory. On success
    /// every output is written; on [`TeeError::ShortBuffer`] only the required
    /// sizes; on any other error nothing.
    fn copy_out(
        mem: &mut dyn GuestMemory,
        params: &Params,
        bindings: &[Binding],
        raws: &mut [RawParam],
        res: Result<(), Fail>,
    ) -> Result<(), Fail> {
        let ta_fail = |code| Fail {
            code,
            origin: Origin::TrustedApp,
        };
        let short = match res {
            Ok(()) => params.slots().iter().any(|p| match p {
                TaParam::Memref(m) => m.dir().is_output() && m.data().len() > m.capacity(),
                _ => false,
            }),
            Err(Fail {
                code: TeeError::ShortBuffer,
                origin: Origin::TrustedApp,
            }) => true,
            Err(f) => return Err(f),
        };
        let slots = params.slots().iter().zip(bindings).zip(raws.iter_mut());
        if short {
            for ((p, _), raw) in slots {
                if let TaParam::Memref(m) = p {
                    if m.dir().is_output() {
                        let need = m.required().max(m.data().len());
                        if need > m.capacity() {
                            raw.b = need as u64;
                        }
                    }
                }
            }
            return Err(ta_fail(TeeError::ShortBuffer));
        }
        for ((p, binding), raw) in slots {
            match (p, binding) {
                (TaParam::Value { dir, a, b }, Binding::Value) if dir.is_output() => {
                    raw.a = u64::from(*a);
                    raw.b = u64::from(*b);
                    raw.c = 0;
                }
                (TaParam::Memref(m), Binding::Mem { extents }) if m.dir().is_output() => {
                    write_extents(mem, extents, m.data()).map_err(comms)?;
                    raw.b = m.data().len() as u64;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn truncate_extents(ext: Extents, mut len: u64) -> Extents {
    let mut out = Vec::with_capacity(ext.len());
    for (gpa, l) in ext {
        if len == 0 {
            break;
        }
        let n = l.min(len);
        out.push((gpa, n));
        len -= n;
    }
    out
}
