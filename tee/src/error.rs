//! GlobalPlatform result codes and return origins.
//!
//! The numeric values are the ones of the GlobalPlatform TEE Client API
//! (`TEEC_ERROR_*`, `TEEC_ORIGIN_*`) and TEE Internal Core API
//! (`TEE_ERROR_*`), which share one code space.

use core::fmt;

/// A GlobalPlatform result code other than success.
///
/// `Unknown` keeps any code this crate does not name, so that a reply can be
/// decoded without loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TeeError {
    /// `TEE_ERROR_CORRUPT_OBJECT` (0xF0100001): stored data failed its
    /// integrity check (a tampered secure-log chain).
    CorruptObject,
    /// `TEEC_ERROR_GENERIC` (0xFFFF0000).
    Generic,
    /// `TEEC_ERROR_ACCESS_DENIED` (0xFFFF0001): wrong PIN or secret, not logged in,
    /// not the owner, forbidden login method.
    AccessDenied,
    /// `TEEC_ERROR_CANCEL` (0xFFFF0002).
    Cancel,
    /// `TEEC_ERROR_ACCESS_CONFLICT` (0xFFFF0003): the name or cookie is already in use.
    AccessConflict,
    /// `TEEC_ERROR_EXCESS_DATA` (0xFFFF0004): a buffer is larger than a cap allows.
    ExcessData,
    /// `TEEC_ERROR_BAD_FORMAT` (0xFFFF0005): malformed input data (key material, blobs).
    BadFormat,
    /// `TEEC_ERROR_BAD_PARAMETERS` (0xFFFF0006): malformed message or parameter types.
    BadParameters,
    /// `TEEC_ERROR_BAD_STATE` (0xFFFF0007): the operation is not allowed in the current
    /// state (a locked-out credential or PIN, an already initialised token).
    BadState,
    /// `TEEC_ERROR_ITEM_NOT_FOUND` (0xFFFF0008): unknown TA, session, key, cookie, entry.
    ItemNotFound,
    /// `TEEC_ERROR_NOT_IMPLEMENTED` (0xFFFF0009): unknown message command.
    NotImplemented,
    /// `TEEC_ERROR_NOT_SUPPORTED` (0xFFFF000A): unknown TA command or algorithm.
    NotSupported,
    /// `TEEC_ERROR_NO_DATA` (0xFFFF000B).
    NoData,
    /// `TEEC_ERROR_OUT_OF_MEMORY` (0xFFFF000C): a memory cap (keys, credentials,
    /// shared-memory registrations, total sessions) is reached.
    OutOfMemory,
    /// `TEEC_ERROR_BUSY` (0xFFFF000D): the per-TA session cap is reached.
    Busy,
    /// `TEEC_ERROR_COMMUNICATION` (0xFFFF000E): the transport failed.
    Communication,
    /// `TEEC_ERROR_SECURITY` (0xFFFF000F): a decryption failed (uniform error, no
    /// padding oracle).
    Security,
    /// `TEEC_ERROR_SHORT_BUFFER` (0xFFFF0010): an output buffer is too small; its
    /// size field holds the required size.
    ShortBuffer,
    /// `TEE_ERROR_EXTERNAL_CANCEL` (0xFFFF0011).
    ExternalCancel,
    /// `TEE_ERROR_OVERFLOW` (0xFFFF300F).
    Overflow,
    /// `TEE_ERROR_TARGET_DEAD` (0xFFFF3024).
    TargetDead,
    /// `TEE_ERROR_STORAGE_NO_SPACE` (0xFFFF3041): the secure log is full.
    StorageNoSpace,
    /// `TEE_ERROR_MAC_INVALID` (0xFFFF3071): a sealed blob failed authentication
    /// (tampered, or sealed under another measurement or platform key).
    MacInvalid,
    /// `TEE_ERROR_SIGNATURE_INVALID` (0xFFFF3072).
    SignatureInvalid,
    /// Any other non-zero code.
    Unknown(u32),
}

/// `TEEC_SUCCESS`.
pub const TEEC_SUCCESS: u32 = 0;

const CODES: &[(TeeError, u32)] = &[
    (TeeError::CorruptObject, 0xF010_0001),
    (TeeError::Generic, 0xFFFF_0000),
    (TeeError::AccessDenied, 0xFFFF_0001),
    (TeeError::Cancel, 0xFFFF_0002),
    (TeeError::AccessConflict, 0xFFFF_0003),
    (TeeError::ExcessData, 0xFFFF_0004),
    (TeeError::BadFormat, 0xFFFF_0005),
    (TeeError::BadParameters, 0xFFFF_0006),
    (TeeError::BadState, 0xFFFF_0007),
    (TeeError::ItemNotFound, 0xFFFF_0008),
    (TeeError::NotImplemented, 0xFFFF_0009),
    (TeeError::NotSupported, 0xFFFF_000A),
    (TeeError::NoData, 0xFFFF_000B),
    (TeeError::OutOfMemory, 0xFFFF_000C),
    (TeeError::Busy, 0xFFFF_000D),
    (TeeError::Communication, 0xFFFF_000E),
    (TeeError::Security, 0xFFFF_000F),
    (TeeError::ShortBuffer, 0xFFFF_0010),
    (TeeError::ExternalCancel, 0xFFFF_0011),
    (TeeError::Overflow, 0xFFFF_300F),
    (TeeError::TargetDead, 0xFFFF_3024),
    (TeeError::StorageNoSpace, 0xFFFF_3041),
    (TeeError::MacInvalid, 0xFFFF_3071),
    (TeeError::SignatureInvalid, 0xFFFF_3072),
];

impl TeeError {
    /// The 32-bit GlobalPlatform code.
    pub fn code(self) -> u32 {
        if let TeeError::Unknown(c) = self {
            return c;
        }
        CODES
            .iter()
            .find(|(e, _)| *e == self)
            .map_or(0xFFFF_0000, |(_, c)| *c)
    }

    /// Decodes a code; `None` for [`TEEC_SUCCESS`].
    pub fn from_code(code: u32) -> Option<TeeError> {
        if code == TEEC_SUCCESS {
            return None;
        }
        Some(
            CODES
                .iter()
                .find(|(_, c)| *c == code)
                .map_or(TeeError::Unknown(code), |(e, _)| *e),
        )
    }
}

impl fmt::Display for TeeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} (0x{:08x})", self, self.code())
    }
}

/// Where a result came from (`TEEC_ORIGIN_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Origin {
    /// 1: the client library itself (argument checks before anything is sent).
    Api = 1,
    /// 2: the transport or the message layer (malformed message, bad parameter
    /// encoding, unreadable memory).
    Comms = 2,
    /// 3: the TEE core (unknown TA or session, caps, shared memory).
    Tee = 3,
    /// 4: the trusted application.
    TrustedApp = 4,
}

impl Origin {
    /// Decodes the wire value; unknown values map to [`Origin::Comms`].
    pub fn from_u32(v: u32) -> Origin {
        match v {
            1 => Origin::Api,
            3 => Origin::Tee,
            4 => Origin::TrustedApp,
            _ => Origin::Comms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for (e, c) in CODES {
            assert_eq!(e.code(), *c);
            assert_eq!(TeeError::from_code(*c), Some(*e));
        }
        assert_eq!(TeeError::from_code(0), None);
        assert_eq!(TeeError::from_code(0x1234), Some(TeeError::Unknown(0x1234)));
        assert_eq!(TeeError::Unknown(0x1234).code(), 0x1234);
        assert_eq!(Origin::from_u32(4), Origin::TrustedApp);
    }
}
