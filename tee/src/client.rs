//! A client library shaped like the GlobalPlatform TEE Client API.
//!
//! | GlobalPlatform | here |
//! |---|---|
//! | `TEEC_InitializeContext` | [`Context::initialize`] (checks the API UID and revision, exchanges capabilities) |
//! | `TEEC_OpenSession` | [`Context::open_session`], [`Context::open_session_as`] |
//! | `TEEC_InvokeCommand` | [`Context::invoke_command`] |
//! | `TEEC_CloseSession` | [`Context::close_session`] |
//! | `TEEC_RequestCancellation` | [`Context::request_cancellation`] |
//! | `TEEC_RegisterSharedMemory` | [`Context::register_shared_memory`] (page list, NONCONTIG) |
//! | `TEEC_ReleaseSharedMemory` | [`Context::release_shared_memory`] |
//! | `TEEC_FinalizeContext` | [`Context::finalize`] |
//! | `TEEC_Operation` / `TEEC_Parameter` | [`Operation`] / [`ClientParam`] |
//!
//! The client owns a *scratch area* of guest memory (at least three pages,
//! page aligned): the SMC-argument page, the `optee_msg_arg`, and a bounce
//! area for temporary memory references and page lists. It reaches the TEE
//! through a [`Transport`]: the probe guest implements it with identity-mapped
//! memory and a VMCALL; [`Loopback`] connects it straight to a [`Tee`] for
//! tests.

use alloc::vec::Vec;

use crate::dispatch::Tee;
use crate::error::{Origin, TeeError, TEEC_SUCCESS};
use crate::mem::{GuestMemory, VecMemory, PAGE_SIZE};
use crate::msg::{
    arg_size, cmd, login, smc, Direction, MsgArg, MsgHeader, MsgParam, SmcArgs, MAX_PARAMS,
    OPTEE_MESSAGE_FUNC_ID, SMC_ARGS_SIZE, TA_PARAMS,
};
use crate::platform::Platform;
use crate::uuid::Uuid;

/// How the client reaches the TEE.
pub trait Transport {
    /// The guest memory the client writes its pages into.
    fn memory(&mut self) -> &mut dyn GuestMemory;
    /// Issues the LVBS call and returns R8.
    fn vtl_call(&mut self, a0: u64, a1: u64, a2: u64, a3: u64) -> i64;
}

/// A transport that calls a [`Tee`] directly, over a [`VecMemory`].
pub struct Loopback<P: Platform> {
    /// The TEE.
    pub tee: Tee<P>,
    /// The guest memory.
    pub mem: VecMemory,
}

impl<P: Platform> Transport for Loopback<P> {
    fn memory(&mut self) -> &mut dyn GuestMemory {
        &mut self.mem
    }
    fn vtl_call(&mut self, a0: u64, a1: u64, a2: u64, a3: u64) -> i64 {
        self.tee.vtl_call(&mut self.mem, a0, a1, a2, a3)
    }
}

/// A failed client call: the GlobalPlatform code and where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientError {
    /// The code.
    pub code: TeeError,
    /// The origin.
    pub origin: Origin,
}

impl ClientError {
    fn api(code: TeeError) -> ClientError {
        ClientError {
            code,
            origin: Origin::Api,
        }
    }
    fn comms() -> ClientError {
        ClientError {
            code: TeeError::Communication,
            origin: Origin::Comms,
        }
    }
}

/// An open session.
#[derive(Debug, PartialEq, Eq)]
pub struct Session {
    id: u32,
}

impl Session {
    /// The TEE's session id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// A handle for an arbitrary id (tests of wrong or stale sessions).
    pub fn from_raw(id: u32) -> Session {
        Session { id }
    }
}

/// A registered shared-memory region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedMemory {
    cookie: u64,
    gpa: u64,
    size: u64,
}

impl SharedMemory {
    /// The cookie (`shm_ref`).
    pub fn cookie(&self) -> u64 {
        self.cookie
    }
    /// First byte.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// One operation parameter (`TEEC_Parameter`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientParam {
    /// `TEEC_NONE`.
    None,
    /// `TEEC_VALUE_*`.
    Value {
        /// Direction.
        dir: Direction,
        /// `a`.
        a: u32,
        /// `b`.
        b: u32,
    },
    /// `TEEC_MEMREF_TEMP_*`: bytes bounced through the scratch area.
    Temp {
        /// Direction.
        dir: Direction,
        /// Input bytes; after the call, the output bytes.
        buffer: Vec<u8>,
        /// Buffer size sent; after the call, the size the TA returned (or
        /// needs, after `SHORT_BUFFER`).
        size: usize,
    },
    /// `TEEC_MEMREF_PARTIAL_*` / `TEEC_MEMREF_WHOLE` over registered memory.
    Registered {
        /// Direction.
        dir: Direction,
        /// The region.
        shm: SharedMemory,
        /// Offset in the region.
        offset: u64,
        /// Size sent; after the call, the size returned.
        size: u64,
    },
}

impl ClientParam {
    /// `TEEC_VALUE_INPUT`.
    pub fn value_in(a: u32, b: u32) -> ClientParam {
        ClientParam::Value {
            dir: Direction::Input,
            a,
            b,
        }
    }
    /// `TEEC_VALUE_OUTPUT`.
    pub fn value_out() -> ClientParam {
        ClientParam::Value {
            dir: Direction::Output,
            a: 0,
            b: 0,
        }
    }
    /// `TEEC_VALUE_INOUT`.
    pub fn value_inout(a: u32, b: u32) -> ClientParam {
        ClientParam::Value {
            dir: Direction::InOut,
            a,
            b,
        }
    }
    /// `TEEC_MEMREF_TEMP_INPUT`.
    pub fn temp_in(data: &[u8]) -> ClientParam {
        ClientParam::Temp {
            dir: Direction::Input,
            buffer: data.to_vec(),
            size: data.len(),
        }
    }
    /// `TEEC_MEMREF_TEMP_OUTPUT` with room for `capacity` bytes.
    pub fn temp_out(capacity: usize) -> ClientParam {
        ClientParam::Temp {
            dir: Direction::Output,
            buffer: Vec::new(),
            size: capacity,
        }
    }
    /// `TEEC_MEMREF_TEMP_INOUT`: `data` in, room for `capacity` bytes out.
    pub fn temp_inout(data: &[u8], capacity: usize) -> ClientParam {
        ClientParam::Temp {
            dir: Direction::InOut,
            buffer: data.to_vec(),
            size: capacity.max(data.len()),
        }
    }
    /// `TEEC_MEMREF_PARTIAL_*`.
    pub fn partial(shm: &SharedMemory, dir: Direction, offset: u64, size: u64) -> ClientParam {
        ClientParam::Registered {
            dir,
            shm: *shm,
            offset,
            size,
        }
    }
    /// `TEEC_MEMREF_WHOLE`.
    pub fn whole(shm: &SharedMemory, dir: Direction) -> ClientParam {
        ClientParam::partial(shm, dir, 0, shm.size)
    }

    /// The value pair (after the call for outputs).
    pub fn value(&self) -> Option<(u32, u32)> {
        match self {
            ClientParam::Value { a, b, .. } => Some((*a, *b)),
            _ => None,
        }
    }

    /// The bytes of a temporary memref (after the call for outputs).
    pub fn output(&self) -> &[u8] {
        match self {
            ClientParam::Temp { buffer, .. } => buffer,
            _ => &[],
        }
    }

    /// The size field (after the call: returned or required size).
    pub fn size(&self) -> Option<u64> {
        match self {
            ClientParam::Temp { size, .. } => Some(*size as u64),
            ClientParam::Registered { size, .. } => Some(*size),
            _ => None,
        }
    }
}

/// An operation (`TEEC_Operation`): four parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The parameters.
    pub params: [ClientParam; 4],
}

impl Default for Operation {
    fn default() -> Operation {
        Operation::new([
            ClientParam::None,
            ClientParam::None,
            ClientParam::None,
            ClientParam::None,
        ])
    }
}

impl Operation {
    /// From four parameters.
    pub fn new(params: [ClientParam; 4]) -> Operation {
        Operation { params }
    }
}

const ARG_AREA: u64 = 256;

/// A client context (`TEEC_Context`).
pub struct Context<T: Transport> {
    transport: T,
    scratch: u64,
    scratch_len: u64,
    caps: u64,
    next_cookie: u64,
}

impl<T: Transport> Context<T> {
    /// Opens a context over `transport`, using the guest memory
    /// `[scratch, scratch + scratch_len)` (page aligned, at least three
    /// pages). Checks that the TEE speaks the OP-TEE message API 2.x and
    /// exchanges capabilities.
    pub fn initialize(
        transport: T,
        scratch: u64,
        scratch_len: u64,
    ) -> Result<Context<T>, ClientError> {
        if !scratch.is_multiple_of(PAGE_SIZE)
            || !scratch_len.is_multiple_of(PAGE_SIZE)
            || scratch_len < 3 * PAGE_SIZE
            || scratch.checked_add(scratch_len).is_none()
        {
            return Err(ClientError::api(TeeError::BadParameters));
        }
        let mut ctx = Context {
            transport,
            scratch,
            scratch_len,
            caps: 0,
            next_cookie: 1,
        };
        let uid = ctx.smc([smc::FAST_CALLS_UID, 0, 0, 0, 0, 0, 0, 0, 0])?;
        let words = [uid[0], uid[1], uid[2], uid[3]];
        if words != smc::API_UID.map(u64::from) {
            return Err(ClientError::comms());
        }
        let rev = ctx.smc([smc::FAST_CALLS_REVISION, 0, 0, 0, 0, 0, 0, 0, 0])?;
        if rev[0] != smc::API_REVISION.0 {
            return Err(ClientError::comms());
        }
        let caps = ctx.smc([smc::FAST_EXCHANGE_CAPABILITIES, 0, 0, 0, 0, 0, 0, 0, 0])?;
        if caps[0] != smc::RETURN_OK {
            return Err(ClientError::comms());
        }
        ctx.caps = caps[1];
        Ok(ctx)
    }

    /// The TEE's capability bits.
    pub fn capabilities(&self) -> u64 {
        self.caps
    }

    /// The transport.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Ends the context and returns the transport.
    pub fn finalize(self) -> T {
        self.transport
    }

    /// One SMC function through the argument page.
    pub fn smc(&mut self, args: [u64; 9]) -> Result<[u64; 9], ClientError> {
        let page = self.scratch;
        let mem = self.transport.memory();
        mem.write(page, &SmcArgs(args).to_bytes())
            .map_err(|_| ClientError::api(TeeError::BadParameters))?;
        if self
            .transport
            .vtl_call(OPTEE_MESSAGE_FUNC_ID, page / PAGE_SIZE, 0, 0)
            != 0
        {
            return Err(ClientError::comms());
        }
        let mut out = [0u8; SMC_ARGS_SIZE];
        self.transport
            .memory()
            .read(page, &mut out)
            .map_err(|_| ClientError::comms())?;
        Ok(SmcArgs::from_bytes(&out).0)
    }

    fn arg_gpa(&self) -> u64 {
        self.scratch + PAGE_SIZE
    }

    /// Sends a message as is and returns the SMC status and the reply
    /// (for tests of malformed messages).
    pub fn call_raw(&mut self, arg: &MsgArg) -> Result<(u64, MsgArg), ClientError> {
        let bytes = arg.to_bytes();
        if bytes.len() as u64 > ARG_AREA {
            return Err(ClientError::api(TeeError::BadParameters));
        }
        let gpa = self.arg_gpa();
        self.transport
            .memory()
            .write(gpa, &bytes)
            .map_err(|_| ClientError::api(TeeError::BadParameters))?;
        let r = self.smc([
            smc::STD_CALL_WITH_ARG,
            gpa >> 32,
            gpa & 0xFFFF_FFFF,
            0,
            0,
            0,
            0,
            0,
            0,
        ])?;
        let mut back = alloc::vec![0u8; bytes.len()];
        self.transport
            .memory()
            .read(gpa, &mut back)
            .map_err(|_| ClientError::comms())?;
        // The TEE may shrink num_params only by not touching it; re-read the
        // header to size the reply.
        let mut hb = [0u8; 32];
        hb.copy_from_slice(back.get(..32).ok_or(ClientError::comms())?);
        let h = MsgHeader::from_bytes(&hb);
        let reply = match arg_size(h.num_params as usize) {
            Some(n) if n == back.len() => MsgArg::parse(&back).map_err(|_| ClientError::comms())?,
            _ => MsgArg {
                header: h,
                params: Vec::new(),
            },
        };
        Ok((r[0], reply))
    }

    /// Sends a message and turns a non-success reply into an error.
    fn call(&mut self, arg: &MsgArg) -> Result<MsgArg, (ClientError, Option<MsgArg>)> {
        let (status, reply) = self.call_raw(arg).map_err(|e| (e, None))?;
        if status != smc::RETURN_OK {
            return Err((ClientError::comms(), None));
        }
        if reply.header.ret != TEEC_SUCCESS {
            let e = ClientError {
                code: TeeError::from_code(reply.header.ret).unwrap_or(TeeError::Generic),
                origin: Origin::from_u32(reply.header.ret_origin),
            };
            return Err((e, Some(reply)));
        }
        Ok(reply)
    }

    /// Lays the operation out: message parameters plus the temp buffers'
    /// GPAs.
    fn marshal(&mut self, op: &Operation) -> Result<(Vec<MsgParam>, [u64; 4]), ClientError> {
        let mut next = self.arg_gpa() + ARG_AREA;
        let end = self.scratch + self.scratch_len;
        let mut gpas = [0u64; 4];
        let mut out = Vec::with_capacity(TA_PARAMS);
        for (p, gpa_slot) in op.params.iter().zip(gpas.iter_mut()) {
            out.push(match p {
                ClientParam::None => MsgParam::None,
                ClientParam::Value { dir, a, b } => MsgParam::Value {
                    dir: *dir,
                    a: u64::from(*a),
                    b: u64::from(*b),
                    c: 0,
                },
                ClientParam::Temp { dir, buffer, size } => {
                    let size = *size as u64;
                    if dir.is_input() && (buffer.len() as u64) > size {
                        return Err(ClientError::api(TeeError::BadParameters));
                    }
                    let buf_ptr = if size == 0 {
                        0
                    } else {
                        let gpa = next;
                        next = size
                            .checked_next_multiple_of(8)
                            .and_then(|n| next.checked_add(n))
                            .filter(|n| *n <= end)
                            .ok_or(ClientError::api(TeeError::OutOfMemory))?;
                        if dir.is_input() {
                            self.transport
                                .memory()
                                .write(gpa, buffer)
                                .map_err(|_| ClientError::api(TeeError::BadParameters))?;
                        }
                        gpa
                    };
                    *gpa_slot = buf_ptr;
                    MsgParam::Tmem {
                        dir: *dir,
                        buf_ptr,
                        size,
                        shm_ref: 0,
                        noncontig: false,
                    }
                }
                ClientParam::Registered {
                    dir,
                    shm,
                    offset,
                    size,
                } => MsgParam::Rmem {
                    dir: *dir,
                    offs: *offset,
                    size: *size,
                    shm_ref: shm.cookie,
                },
            });
        }
        Ok((out, gpas))
    }

    /// Copies results back into the operation: sizes after success or
    /// `SHORT_BUFFER`, values and temp bytes after success.
    fn unmarshal(
        &mut self,
        op: &mut Operation,
        reply: &MsgArg,
        first: usize,
        gpas: [u64; 4],
        ok: bool,
    ) {
        let short = reply.header.ret == TeeError::ShortBuffer.code();
        if !ok && !short {
            return;
        }
        for (i, p) in op.params.iter_mut().enumerate() {
            let Some(raw) = reply.params.get(first + i) else {
                continue;
            };
            match p {
                ClientParam::Value { dir, a, b } if ok && dir.is_output() => {
                    *a = raw.a as u32;
                    *b = raw.b as u32;
                }
                ClientParam::Temp { dir, buffer, size } if dir.is_output() => {
                    let returned = usize::try_from(raw.b).unwrap_or(usize::MAX);
                    if ok && returned <= *size {
                        let mut data = alloc::vec![0u8; returned];
                        let gpa = gpas.get(i).copied().unwrap_or(0);
                        if returned == 0 || self.transport.memory().read(gpa, &mut data).is_ok() {
                            *buffer = data;
                        }
                    }
                    *size = returned;
                }
                ClientParam::Registered { dir, size, .. } if dir.is_output() => *size = raw.b,
                _ => {}
            }
        }
    }

    /// `TEEC_OpenSession` with public login.
    pub fn open_session(&mut self, ta: &Uuid, op: &mut Operation) -> Result<Session, ClientError> {
        self.open_session_as(ta, login::PUBLIC, &Uuid::NIL, op)
    }

    /// `TEEC_OpenSession` with an explicit login method and client UUID.
    pub fn open_session_as(
        &mut self,
        ta: &Uuid,
        login_method: u32,
        client: &Uuid,
        op: &mut Operation,
    ) -> Result<Session, ClientError> {
        let (params, gpas) = self.marshal(op)?;
        let (ta_a, ta_b) = ta.to_optee_msg();
        let (cl_a, cl_b) = client.to_optee_msg();
        let mut raws = Vec::with_capacity(MAX_PARAMS);
        raws.push(
            MsgParam::Value {
                dir: Direction::Input,
                a: ta_a,
                b: ta_b,
                c: 0,
            }
            .encode(true),
        );
        raws.push(
            MsgParam::Value {
                dir: Direction::Input,
                a: cl_a,
                b: cl_b,
                c: u64::from(login_method),
            }
            .encode(true),
        );
        raws.extend(trim(&params).iter().map(|p| p.encode(false)));
        let arg = MsgArg {
            header: MsgHeader {
                cmd: cmd::OPEN_SESSION,
                ..MsgHeader::default()
            },
            params: raws,
        };
        match self.call(&arg) {
            Ok(reply) => {
                self.unmarshal(op, &reply, 2, gpas, true);
                Ok(Session {
                    id: reply.header.session,
                })
            }
            Err((e, reply)) => {
                if let Some(r) = reply {
                    self.unmarshal(op, &r, 2, gpas, false);
                }
                Err(e)
            }
        }
    }

    /// `TEEC_InvokeCommand`.
    pub fn invoke_command(
        &mut self,
        session: &Session,
        command: u32,
        op: &mut Operation,
    ) -> Result<(), ClientError> {
        let (params, gpas) = self.marshal(op)?;
        let arg = MsgArg {
            header: MsgHeader {
                cmd: cmd::INVOKE_COMMAND,
                func: command,
                session: session.id,
                ..MsgHeader::default()
            },
            params: trim(&params).iter().map(|p| p.encode(false)).collect(),
        };
        match self.call(&arg) {
            Ok(reply) => {
                self.unmarshal(op, &reply, 0, gpas, true);
                Ok(())
            }
            Err((e, reply)) => {
                if let Some(r) = reply {
                    self.unmarshal(op, &r, 0, gpas, false);
                }
                Err(e)
            }
        }
    }

    /// `TEEC_CloseSession`.
    pub fn close_session(&mut self, session: Session) -> Result<(), ClientError> {
        let arg = MsgArg {
            header: MsgHeader {
                cmd: cmd::CLOSE_SESSION,
                session: session.id,
                ..MsgHeader::default()
            },
            params: Vec::new(),
        };
        self.call(&arg).map(|_| ()).map_err(|(e, _)| e)
    }

    /// `TEEC_RequestCancellation`.
    pub fn request_cancellation(
        &mut self,
        session: &Session,
        cancel_id: u32,
    ) -> Result<(), ClientError> {
        let arg = MsgArg {
            header: MsgHeader {
                cmd: cmd::CANCEL,
                session: session.id,
                cancel_id,
                ..MsgHeader::default()
            },
            params: Vec::new(),
        };
        self.call(&arg).map(|_| ()).map_err(|(e, _)| e)
    }

    /// `TEEC_RegisterSharedMemory` for the guest buffer `[gpa, gpa + size)`,
    /// described to the TEE by a page list built in the scratch area.
    pub fn register_shared_memory(
        &mut self,
        gpa: u64,
        size: u64,
    ) -> Result<SharedMemory, ClientError> {
        if self.caps & smc::SEC_CAP_DYNAMIC_SHM == 0 {
            return Err(ClientError::api(TeeError::NotSupported));
        }
        if size == 0 {
            return Err(ClientError::api(TeeError::BadParameters));
        }
        if gpa.checked_add(size).is_none() {
            return Err(ClientError::api(TeeError::BadParameters));
        }
        const ENTRIES: u64 = PAGE_SIZE / 8 - 1;
        let offset = gpa % PAGE_SIZE;
        let first = gpa - offset;
        let npages = offset
            .checked_add(size)
            .ok_or(ClientError::api(TeeError::BadParameters))?
            .div_ceil(PAGE_SIZE);
        let nlists = npages.div_ceil(ENTRIES);
        // Page lists go in whole pages after the message page.
        let list_base = self.arg_gpa() + PAGE_SIZE;
        if list_base + nlists * PAGE_SIZE > self.scratch + self.scratch_len {
            return Err(ClientError::api(TeeError::OutOfMemory));
        }
        for l in 0..nlists {
            let mut page = [0u8; PAGE_SIZE as usize];
            for (e, slot) in page.chunks_exact_mut(8).take(ENTRIES as usize).enumerate() {
                let idx = l * ENTRIES + e as u64;
                if idx < npages {
                    slot.copy_from_slice(&(first + idx * PAGE_SIZE).to_le_bytes());
                }
            }
            let next = if l + 1 < nlists {
                list_base + (l + 1) * PAGE_SIZE
            } else {
                0
            };
            if let Some(tail) = page.get_mut((ENTRIES * 8) as usize..) {
                tail.copy_from_slice(&next.to_le_bytes());
            }
            self.transport
                .memory()
                .write(list_base + l * PAGE_SIZE, &page)
                .map_err(|_| ClientError::api(TeeError::BadParameters))?;
        }
        let cookie = self.next_cookie;
        self.next_cookie += 1;
        let arg = MsgArg {
            header: MsgHeader {
                cmd: cmd::REGISTER_SHM,
                ..MsgHeader::default()
            },
            params: alloc::vec![MsgParam::Tmem {
                dir: Direction::Output,
                buf_ptr: list_base + offset,
                size,
                shm_ref: cookie,
                noncontig: true,
            }
            .encode(false)],
        };
        self.call(&arg).map_err(|(e, _)| e)?;
        Ok(SharedMemory { cookie, gpa, size })
    }

    /// `TEEC_ReleaseSharedMemory`.
    pub fn release_shared_memory(&mut self, shm: SharedMemory) -> Result<(), ClientError> {
        let arg = MsgArg {
            header: MsgHeader {
                cmd: cmd::UNREGISTER_SHM,
                ..MsgHeader::default()
            },
            params: alloc::vec![MsgParam::Rmem {
                dir: Direction::Input,
                offs: 0,
                size: 0,
                shm_ref: shm.cookie,
            }
            .encode(false)],
        };
        self.call(&arg).map(|_| ()).map_err(|(e, _)| e)
    }

    /// Writes into shared memory (the client's own buffer).
    pub fn write_shared(
        &mut self,
        shm: &SharedMemory,
        offset: u64,
        data: &[u8],
    ) -> Result<(), ClientError> {
        if offset.saturating_add(data.len() as u64) > shm.size {
            return Err(ClientError::api(TeeError::BadParameters));
        }
        self.transport
            .memory()
            .write(shm.gpa + offset, data)
            .map_err(|_| ClientError::api(TeeError::BadParameters))
    }

    /// Reads from shared memory.
    pub fn read_shared(
        &mut self,
        shm: &SharedMemory,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, ClientError> {
        if offset.saturating_add(len as u64) > shm.size {
            return Err(ClientError::api(TeeError::BadParameters));
        }
        let mut out = alloc::vec![0u8; len];
        self.transport
            .memory()
            .read(shm.gpa + offset, &mut out)
            .map_err(|_| ClientError::api(TeeError::BadParameters))?;
        Ok(out)
    }
}

/// Drops trailing NONE parameters (the Linux driver sends all four; both work).
fn trim(params: &[MsgParam]) -> &[MsgParam] {
    let n = params
        .iter()
        .rposition(|p| *p != MsgParam::None)
        .map_or(0, |i| i + 1);
    params.get(..n).unwrap_or(&[])
}
