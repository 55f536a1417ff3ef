//! The TEE transport and the OP-TEE message protocol (`heki-lvbs-abi.md` §3.9, §7).
//!
//! # Transport
//!
//! The guest issues the LVBS call [`OPTEE_MESSAGE_FUNC_ID`] (0x1FFF0) with
//! `a1` = PFN of a 4 KiB page whose first 72 bytes are nine little-endian
//! `u64` slots [`SmcArgs`] standing in for the SMCCC argument registers.
//! `args[0] & 0xFFFF` selects the OP-TEE SMC function ([`smc`]); for the
//! "call with argument" functions the GPA of an `optee_msg_arg` is
//! `(args[1] << 32) | args[2]`. The TEE rewrites the nine slots with the
//! reply; the call itself returns 0, or `-EFAULT`/`-EINVAL` when the page
//! cannot be handled.
//!
//! # Message
//!
//! [`MsgArg`] is the 32-byte `optee_msg_arg` header followed by
//! `num_params` 32-byte [`RawParam`]s. [`MsgArg::parse`] works on a private
//! copy (no double fetch), bounds `num_params` by [`MAX_PARAMS`], and
//! [`MsgParam::decode`] refuses unknown types and reserved attribute bits.

use alloc::vec::Vec;

use crate::error::TeeError;

/// LVBS function id of an OP-TEE message call.
pub const OPTEE_MESSAGE_FUNC_ID: u64 = 0x1FFF0;

/// Bytes of the SMC-argument page that carry the nine argument slots.
pub const SMC_ARGS_SIZE: usize = 72;

/// Linux errno values returned in R8.
pub mod errno {
    /// The argument page could not be read or written.
    pub const EFAULT: i64 = -14;
    /// Not an OP-TEE message call, or an impossible PFN.
    pub const EINVAL: i64 = -22;
}

/// OP-TEE SMC function numbers (low 16 bits of `args[0]`), return codes and
/// capability bits.
pub mod smc {
    /// `OPTEE_SMC_FUNCID_GET_OS_UUID`.
    pub const GET_OS_UUID: u32 = 0x0000;
    /// `OPTEE_SMC_FUNCID_GET_OS_REVISION`.
    pub const GET_OS_REVISION: u32 = 0x0001;
    /// `OPTEE_SMC_FUNCID_CALL_WITH_ARG`.
    pub const CALL_WITH_ARG: u32 = 0x0004;
    /// `OPTEE_SMC_FUNCID_EXCHANGE_CAPABILITIES`.
    pub const EXCHANGE_CAPABILITIES: u32 = 0x0009;
    /// `OPTEE_SMC_FUNCID_DISABLE_SHM_CACHE`.
    pub const DISABLE_SHM_CACHE: u32 = 0x000A;
    /// `OPTEE_SMC_FUNCID_CALL_WITH_RPC_ARG`.
    pub const CALL_WITH_RPC_ARG: u32 = 0x0012;
    /// `OPTEE_SMC_FUNCID_CALL_WITH_REGD_ARG`.
    pub const CALL_WITH_REGD_ARG: u32 = 0x0013;
    /// `OPTEE_SMC_FUNCID_CALLS_UID`.
    pub const CALLS_UID: u32 = 0xFF01;
    /// `OPTEE_SMC_FUNCID_CALLS_REVISION`.
    pub const CALLS_REVISION: u32 = 0xFF03;

    /// Full SMCCC id of the standard call with argument.
    pub const STD_CALL_WITH_ARG: u64 = 0x3200_0004;
    /// Full SMCCC id of the fast call exchanging capabilities.
    pub const FAST_EXCHANGE_CAPABILITIES: u64 = 0xB200_0009;
    /// Full SMCCC id of the fast call returning the API UID.
    pub const FAST_CALLS_UID: u64 = 0xB200_FF01;
    /// Full SMCCC id of the fast call returning the API revision.
    pub const FAST_CALLS_REVISION: u64 = 0xB200_FF03;

    /// `OPTEE_SMC_RETURN_OK`.
    pub const RETURN_OK: u64 = 0;
    /// `OPTEE_SMC_RETURN_ETHREAD_LIMIT`.
    pub const RETURN_ETHREAD_LIMIT: u64 = 1;
    /// `OPTEE_SMC_RETURN_EBUSY`.
    pub const RETURN_EBUSY: u64 = 2;
    /// `OPTEE_SMC_RETURN_EBADADDR`: the message argument cannot be read.
    pub const RETURN_EBADADDR: u64 = 4;
    /// `OPTEE_SMC_RETURN_EBADCMD`: unknown or unsupported message command.
    pub const RETURN_EBADCMD: u64 = 5;
    /// `OPTEE_SMC_RETURN_ENOMEM`.
    pub const RETURN_ENOMEM: u64 = 6;
    /// `OPTEE_SMC_RETURN_ENOTAVAIL`.
    pub const RETURN_ENOTAVAIL: u64 = 7;
    /// `OPTEE_SMC_RETURN_UNKNOWN_FUNCTION`.
    pub const RETURN_UNKNOWN_FUNCTION: u64 = 0xFFFF_FFFF;

    /// `OPTEE_SMC_SEC_CAP_HAVE_RESERVED_SHM`.
    pub const SEC_CAP_HAVE_RESERVED_SHM: u64 = 1 << 0;
    /// `OPTEE_SMC_SEC_CAP_UNREGISTERED_SHM`.
    pub const SEC_CAP_UNREGISTERED_SHM: u64 = 1 << 1;
    /// `OPTEE_SMC_SEC_CAP_DYNAMIC_SHM`: REGISTER_SHM with page lists.
    pub const SEC_CAP_DYNAMIC_SHM: u64 = 1 << 2;
    /// `OPTEE_SMC_SEC_CAP_MEMREF_NULL`: a TMEM with `buf_ptr == 0` is a null buffer.
    pub const SEC_CAP_MEMREF_NULL: u64 = 1 << 4;
    /// `OPTEE_SMC_SEC_CAP_RPC_ARG`.
    pub const SEC_CAP_RPC_ARG: u64 = 1 << 6;

    /// Words of the OP-TEE message API UID (`CALLS_UID` reply) that the
    /// Linux driver checks before it binds.
    pub const API_UID: [u32; 4] = [0x384F_B3E0, 0xE7F8_11E3, 0xAF63_0002, 0xA5D5_C51B];
    /// Words of the OP-TEE OS UUID (`GET_OS_UUID` reply).
    pub const OS_UUID: [u32; 4] = [0x4861_78E0, 0xE7F8_11E3, 0xBC5E_0002, 0xA5D5_C51B];
    /// Message API revision (major, minor) the driver requires.
    pub const API_REVISION: (u64, u64) = (2, 0);
}

/// `optee_msg_arg` commands.
pub mod cmd {
    /// Open a session to a TA.
    pub const OPEN_SESSION: u32 = 0;
    /// Invoke a TA command in a session.
    pub const INVOKE_COMMAND: u32 = 1;
    /// Close a session.
    pub const CLOSE_SESSION: u32 = 2;
    /// Cancel a pending request.
    pub const CANCEL: u32 = 3;
    /// Register dynamic shared memory.
    pub const REGISTER_SHM: u32 = 4;
    /// Unregister dynamic shared memory.
    pub const UNREGISTER_SHM: u32 = 5;
    /// Asynchronous-notification bottom half (not supported).
    pub const DO_BOTTOM_HALF: u32 = 6;
    /// Stop asynchronous notifications (not supported).
    pub const STOP_ASYNC_NOTIF: u32 = 7;
}

/// `optee_msg_param.attr` encoding.
pub mod attr {
    /// Mask of the type field.
    pub const TYPE_MASK: u64 = 0xFF;
    /// Parameter consumed by the TEE core, not passed to the TA.
    pub const META: u64 = 1 << 8;
    /// TMEM described by a page list.
    pub const NONCONTIG: u64 = 1 << 9;
    /// Cache attribute field (bits 16..18), accepted and ignored.
    pub const CACHE_MASK: u64 = 0x7 << 16;
    /// Every bit a valid attribute may have set.
    pub const KNOWN_BITS: u64 = TYPE_MASK | META | NONCONTIG | CACHE_MASK;

    /// `OPTEE_MSG_ATTR_TYPE_NONE`.
    pub const NONE: u64 = 0;
    /// `OPTEE_MSG_ATTR_TYPE_VALUE_INPUT`.
    pub const VALUE_INPUT: u64 = 1;
    /// `OPTEE_MSG_ATTR_TYPE_VALUE_OUTPUT`.
    pub const VALUE_OUTPUT: u64 = 2;
    /// `OPTEE_MSG_ATTR_TYPE_VALUE_INOUT`.
    pub const VALUE_INOUT: u64 = 3;
    /// `OPTEE_MSG_ATTR_TYPE_RMEM_INPUT`.
    pub const RMEM_INPUT: u64 = 5;
    /// `OPTEE_MSG_ATTR_TYPE_RMEM_OUTPUT`.
    pub const RMEM_OUTPUT: u64 = 6;
    /// `OPTEE_MSG_ATTR_TYPE_RMEM_INOUT`.
    pub const RMEM_INOUT: u64 = 7;
    /// `OPTEE_MSG_ATTR_TYPE_TMEM_INPUT`.
    pub const TMEM_INPUT: u64 = 9;
    /// `OPTEE_MSG_ATTR_TYPE_TMEM_OUTPUT`.
    pub const TMEM_OUTPUT: u64 = 10;
    /// `OPTEE_MSG_ATTR_TYPE_TMEM_INOUT`.
    pub const TMEM_INOUT: u64 = 11;
}

/// GlobalPlatform login methods (`OPEN_SESSION` META parameter 1, value `c`).
pub mod login {
    /// `TEE_LOGIN_PUBLIC`.
    pub const PUBLIC: u32 = 0;
    /// `TEE_LOGIN_USER`.
    pub const USER: u32 = 1;
    /// `TEE_LOGIN_GROUP`.
    pub const GROUP: u32 = 2;
    /// `TEE_LOGIN_APPLICATION`.
    pub const APPLICATION: u32 = 4;
    /// `TEE_LOGIN_APPLICATION_USER`.
    pub const APPLICATION_USER: u32 = 5;
    /// `TEE_LOGIN_APPLICATION_GROUP`.
    pub const APPLICATION_GROUP: u32 = 6;
    /// `TEE_LOGIN_REE_KERNEL`: a client inside the guest kernel.
    pub const REE_KERNEL: u32 = 0x8000_0000;
    /// `TEE_LOGIN_TRUSTED_APP`: only a TA may claim this; refused from the guest.
    pub const TRUSTED_APP: u32 = 0xF000_0000;
}

/// Size of the `optee_msg_arg` header.
pub const HEADER_SIZE: usize = 32;
/// Size of one `optee_msg_param`.
pub const PARAM_SIZE: usize = 32;
/// Most parameters a message may carry: four client parameters plus the two
/// OPEN_SESSION META parameters (the Linux driver's maximum).
pub const MAX_PARAMS: usize = 6;
/// Most parameters a TA sees (GlobalPlatform `TEEC_Operation`).
pub const TA_PARAMS: usize = 4;

/// `OPTEE_MSG_GET_ARG_SIZE(n)`; `None` above [`MAX_PARAMS`].
pub fn arg_size(num_params: usize) -> Option<usize> {
    if num_params > MAX_PARAMS {
        return None;
    }
    Some(HEADER_SIZE + PARAM_SIZE * num_params)
}

fn le64(bytes: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    if let Some(s) = bytes.get(off..off + 8) {
        b.copy_from_slice(s);
    }
    u64::from_le_bytes(b)
}

fn le32(bytes: &[u8], off: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = bytes.get(off..off + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}

/// The nine SMC argument slots of the argument page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmcArgs(pub [u64; 9]);

impl SmcArgs {
    /// Decodes the first 72 bytes of the page.
    pub fn from_bytes(bytes: &[u8; SMC_ARGS_SIZE]) -> SmcArgs {
        let mut a = [0u64; 9];
        for (i, slot) in a.iter_mut().enumerate() {
            *slot = le64(bytes, i * 8);
        }
        SmcArgs(a)
    }

    /// Encodes the nine slots.
    pub fn to_bytes(&self) -> [u8; SMC_ARGS_SIZE] {
        let mut out = [0u8; SMC_ARGS_SIZE];
        for (chunk, v) in out.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// The OP-TEE function number: `args[0] & 0xFFFF`, so that both full
    /// SMCCC ids and bare numbers work.
    pub fn function(&self) -> u32 {
        (self.0[0] & 0xFFFF) as u32
    }
}

/// The `optee_msg_arg` header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MsgHeader {
    /// Command ([`cmd`]).
    pub cmd: u32,
    /// TA command id for INVOKE_COMMAND.
    pub func: u32,
    /// Session id (output of OPEN_SESSION, input otherwise).
    pub session: u32,
    /// Cancellation id.
    pub cancel_id: u32,
    /// Padding, echoed.
    pub pad: u32,
    /// Result code.
    pub ret: u32,
    /// Result origin.
    pub ret_origin: u32,
    /// Number of parameters that follow.
    pub num_params: u32,
}

impl MsgHeader {
    /// Decodes 32 bytes.
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> MsgHeader {
        MsgHeader {
            cmd: le32(b, 0),
            func: le32(b, 4),
            session: le32(b, 8),
            cancel_id: le32(b, 12),
            pad: le32(b, 16),
            ret: le32(b, 20),
            ret_origin: le32(b, 24),
            num_params: le32(b, 28),
        }
    }

    /// Encodes 32 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut out = [0u8; HEADER_SIZE];
        let fields = [
            self.cmd,
            self.func,
            self.session,
            self.cancel_id,
            self.pad,
            self.ret,
            self.ret_origin,
            self.num_params,
        ];
        for (chunk, v) in out.chunks_exact_mut(4).zip(fields) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }
}

/// One `optee_msg_param` as it is on the wire: `attr` and three words
/// (`value.{a,b,c}`, `tmem.{buf_ptr,size,shm_ref}` or `rmem.{offs,size,shm_ref}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawParam {
    /// Attribute word.
    pub attr: u64,
    /// First union word.
    pub a: u64,
    /// Second union word.
    pub b: u64,
    /// Third union word.
    pub c: u64,
}

impl RawParam {
    /// Decodes 32 bytes.
    pub fn from_bytes(b: &[u8]) -> RawParam {
        RawParam {
            attr: le64(b, 0),
            a: le64(b, 8),
            b: le64(b, 16),
            c: le64(b, 24),
        }
    }

    /// Encodes 32 bytes.
    pub fn to_bytes(&self) -> [u8; PARAM_SIZE] {
        let mut out = [0u8; PARAM_SIZE];
        for (chunk, v) in out
            .chunks_exact_mut(8)
            .zip([self.attr, self.a, self.b, self.c])
        {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Whether the META bit is set.
    pub fn is_meta(&self) -> bool {
        self.attr & attr::META != 0
    }
}

/// Data direction of a parameter, seen from the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to TA.
    Input,
    /// TA to client.
    Output,
    /// Both ways.
    InOut,
}

impl Direction {
    /// Whether data flows to the TA.
    pub fn is_input(self) -> bool {
        matches!(self, Direction::Input | Direction::InOut)
    }

    /// Whether data flows back to the client.
    pub fn is_output(self) -> bool {
        matches!(self, Direction::Output | Direction::InOut)
    }

    fn from_type_offset(t: u64) -> Direction {
        match t {
            0 => Direction::Input,
            1 => Direction::Output,
            _ => Direction::InOut,
        }
    }

    fn type_offset(self) -> u64 {
        match self {
            Direction::Input => 0,
            Direction::Output => 1,
            Direction::InOut => 2,
        }
    }
}

/// A decoded parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgParam {
    /// `OPTEE_MSG_ATTR_TYPE_NONE`.
    None,
    /// A value parameter.
    Value {
        /// Direction.
        dir: Direction,
        /// `value.a`.
        a: u64,
        /// `value.b`.
        b: u64,
        /// `value.c`.
        c: u64,
    },
    /// A temporary memory reference by guest-physical address.
    Tmem {
        /// Direction.
        dir: Direction,
        /// GPA of the buffer, or (with `noncontig`) GPA of the first page-list
        /// page plus the buffer's offset in its first page. 0 is a null buffer.
        buf_ptr: u64,
        /// Size in bytes.
        size: u64,
        /// Cookie of the driver's shared-memory object.
        shm_ref: u64,
        /// The buffer is described by a page list.
        noncontig: bool,
    },
    /// A reference into registered shared memory.
    Rmem {
        /// Direction.
        dir: Direction,
        /// Offset into the registered region.
        offs: u64,
        /// Size in bytes.
        size: u64,
        /// Cookie of the registered region.
        shm_ref: u64,
    },
}

impl MsgParam {
    /// Decodes a parameter. Unknown types, reserved attribute bits and
    /// NONCONTIG on anything but TMEM are [`TeeError::BadParameters`]. The
    /// META bit is reported separately and checked by the command handler.
    pub fn decode(raw: &RawParam) -> Result<(MsgParam, bool), TeeError> {
        if raw.attr & !attr::KNOWN_BITS != 0 {
            return Err(TeeError::BadParameters);
        }
        let meta = raw.is_meta();
        let noncontig = raw.attr & attr::NONCONTIG != 0;
        let t = raw.attr & attr::TYPE_MASK;
        let p = match t {
            attr::NONE => MsgParam::None,
            attr::VALUE_INPUT..=attr::VALUE_INOUT => MsgParam::Value {
                dir: Direction::from_type_offset(t - attr::VALUE_INPUT),
                a: raw.a,
                b: raw.b,
                c: raw.c,
            },
            attr::RMEM_INPUT..=attr::RMEM_INOUT => MsgParam::Rmem {
                dir: Direction::from_type_offset(t - attr::RMEM_INPUT),
                offs: raw.a,
                size: raw.b,
                shm_ref: raw.c,
            },
            attr::TMEM_INPUT..=attr::TMEM_INOUT => MsgParam::Tmem {
                dir: Direction::from_type_offset(t - attr::TMEM_INPUT),
                buf_ptr: raw.a,
                size: raw.b,
                shm_ref: raw.c,
                noncontig,
            },
            _ => return Err(TeeError::BadParameters),
        };
        if noncontig && !matches!(p, MsgParam::Tmem { .. }) {
            return Err(TeeError::BadParameters);
        }
        Ok((p, meta))
    }

    /// Encodes a parameter (with the META bit if `meta`).
    pub fn encode(&self, meta: bool) -> RawParam {
        let m = if meta { attr::META } else { 0 };
        match *self {
            MsgParam::None => RawParam {
                attr: attr::NONE | m,
                ..RawParam::default()
            },
            MsgParam::Value { dir, a, b, c } => RawParam {
                attr: (attr::VALUE_INPUT + dir.type_offset()) | m,
                a,
                b,
                c,
            },
            MsgParam::Rmem {
                dir,
                offs,
                size,
                shm_ref,
            } => RawParam {
                attr: (attr::RMEM_INPUT + dir.type_offset()) | m,
                a: offs,
                b: size,
                c: shm_ref,
            },
            MsgParam::Tmem {
                dir,
                buf_ptr,
                size,
                shm_ref,
                noncontig,
            } => RawParam {
                attr: (attr::TMEM_INPUT + dir.type_offset())
                    | m
                    | if noncontig { attr::NONCONTIG } else { 0 },
                a: buf_ptr,
                b: size,
                c: shm_ref,
            },
        }
    }
}

/// Why an `optee_msg_arg` could not be parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer bytes than the header.
    Truncated,
    /// `num_params` above [`MAX_PARAMS`].
    TooManyParams(u32),
    /// The byte count does not match `num_params`.
    LengthMismatch,
}

/// A parsed `optee_msg_arg`: the header and its parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MsgArg {
    /// The header. `num_params` always equals `params.len()` after parsing.
    pub header: MsgHeader,
    /// The parameters.
    pub params: Vec<RawParam>,
}

impl MsgArg {
    /// Parses exactly `arg_size(num_params)` bytes.
    pub fn parse(bytes: &[u8]) -> Result<MsgArg, ParseError> {
        let hdr: &[u8; HEADER_SIZE] = bytes
            .get(..HEADER_SIZE)
            .and_then(|h| h.try_into().ok())
            .ok_or(ParseError::Truncated)?;
        let header = MsgHeader::from_bytes(hdr);
        let n = header.num_params;
        let size = arg_size(n as usize).ok_or(ParseError::TooManyParams(n))?;
        if bytes.len() != size {
            return Err(ParseError::LengthMismatch);
        }
        let params = bytes
            .get(HEADER_SIZE..)
            .unwrap_or(&[])
            .chunks_exact(PARAM_SIZE)
            .map(RawParam::from_bytes)
            .collect();
        Ok(MsgArg { header, params })
    }

    /// Serialises header and parameters (`num_params` is taken from `params`).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut h = self.header;
        h.num_params = self.params.len() as u32;
        let mut out = Vec::with_capacity(HEADER_SIZE + PARAM_SIZE * self.params.len());
        out.extend_from_slice(&h.to_bytes());
        for p in &self.params {
            out.extend_from_slice(&p.to_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn smc_args_round_trip() {
        let a = SmcArgs([0x3200_0004, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(SmcArgs::from_bytes(&a.to_bytes()), a);
        assert_eq!(a.function(), smc::CALL_WITH_ARG);
    }

    #[test]
    fn arg_round_trip_and_bounds() {
        let arg = MsgArg {
            header: MsgHeader {
                cmd: cmd::INVOKE_COMMAND,
                func: 7,
                session: 3,
                num_params: 2,
                ..Default::default()
            },
            params: vec![
                MsgParam::Value {
                    dir: Direction::Input,
                    a: 1,
                    b: 2,
                    c: 3,
                }
                .encode(false),
                MsgParam::Tmem {
                    dir: Direction::InOut,
                    buf_ptr: 0x1000,
                    size: 5,
                    shm_ref: 9,
                    noncontig: true,
                }
                .encode(false),
            ],
        };
        let bytes = arg.to_bytes();
        assert_eq!(bytes.len(), 96);
        assert_eq!(MsgArg::parse(&bytes).unwrap(), arg);
        assert_eq!(MsgArg::parse(&bytes[..95]), Err(ParseError::LengthMismatch));
        assert_eq!(MsgArg::parse(&bytes[..31]), Err(ParseError::Truncated));
        let mut big = bytes.clone();
        big[28] = 7;
        assert_eq!(MsgArg::parse(&big), Err(ParseError::TooManyParams(7)));
        big[28..32].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            MsgArg::parse(&big),
            Err(ParseError::TooManyParams(u32::MAX))
        );
    }

    #[test]
    fn param_decode_rejects_bad_attrs() {
        let raw = |attr| RawParam {
            attr,
            ..Default::default()
        };
        for t in [4u64, 8, 12, 13, 14, 15, 0x80, 0xFF] {
            assert_eq!(MsgParam::decode(&raw(t)), Err(TeeError::BadParameters));
        }
        // Reserved bits.
        assert!(MsgParam::decode(&raw(attr::VALUE_INPUT | 1 << 10)).is_err());
        assert!(MsgParam::decode(&raw(attr::VALUE_INPUT | 1 << 40)).is_err());
        // NONCONTIG only on TMEM.
        assert!(MsgParam::decode(&raw(attr::RMEM_INPUT | attr::NONCONTIG)).is_err());
        assert!(MsgParam::decode(&raw(attr::TMEM_INPUT | attr::NONCONTIG)).is_ok());
        // Cache bits are accepted.
        assert!(MsgParam::decode(&raw(attr::TMEM_OUTPUT | attr::CACHE_MASK)).is_ok());
        let (p, meta) = MsgParam::decode(&raw(attr::VALUE_INPUT | attr::META)).unwrap();
        assert!(meta);
        assert!(matches!(
            p,
            MsgParam::Value {
                dir: Direction::Input,
                ..
            }
        ));
        for t in [1u64, 2, 3, 5, 6, 7, 9, 10, 11] {
            let (p, m) = MsgParam::decode(&raw(t)).unwrap();
            assert_eq!(p.encode(m).attr, t);
        }
    }
}
