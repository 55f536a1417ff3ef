//! TDCALL completion status (§1.2): the 64-bit RAX a leaf returns.
#![forbid(unsafe_code)]

use core::fmt;

/// The raw 64-bit completion status of a TDCALL (§1.2).
///
/// Bits 31:0 carry "details L2" (an operand id, or the L2 exit reason for
/// TDG.VP.ENTER), bits 39:32 "details L1", bits 47:40 the class, and bits 63:60
/// the error/non-recoverable/fatal/host-recoverability flags.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TdxStatus(pub u64);

impl TdxStatus {
    /// TDX_SUCCESS with no details.
    pub const SUCCESS: TdxStatus = TdxStatus(0);

    /// Builds a status from a code (upper 32 bits) and details (lower 32 bits).
    pub const fn new(code: StatusCode, details: u32) -> Self {
        TdxStatus(((code.0 as u64) << 32) | details as u64)
    }

    /// The status code: the upper 32 bits, which is what code comparisons use (§1.2).
    pub const fn code(self) -> StatusCode {
        StatusCode((self.0 >> 32) as u32)
    }

    /// Bits 31:0: operand id, level, or L2 exit reason depending on the code.
    pub const fn details_l2(self) -> u32 {
        self.0 as u32
    }

    /// Bits 39:32.
    pub const fn details_l1(self) -> u8 {
        (self.0 >> 32) as u8
    }

    /// Bits 47:40.
    pub const fn class(self) -> u8 {
        (self.0 >> 40) as u8
    }

    /// Bit 63: the leaf failed.
    pub const fn is_error(self) -> bool {
        self.0 >> 63 != 0
    }

    /// Bit 62: the failure is not recoverable.
    pub const fn is_non_recoverable(self) -> bool {
        (self.0 >> 62) & 1 != 0
    }

    /// Bit 61: the TD is dead.
    pub const fn is_fatal(self) -> bool {
        (self.0 >> 61) & 1 != 0
    }

    /// An error that the caller may retry (`status >> 62 == 2`, §1.2), e.g. OPERAND_BUSY.
    pub const fn is_recoverable_error(self) -> bool {
        self.0 >> 62 == 2
    }

    /// `Ok(self)` when bit 63 is clear, else the decoded error.
    pub const fn into_result(self) -> Result<TdxStatus, TdxError> {
        if self.is_error() {
            Err(TdxError(self))
        } else {
            Ok(self)
        }
    }
}

impl fmt::Debug for TdxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x} ({})", self.0, self.code())
    }
}

/// A status code: the upper 32 bits of the completion status (§1.2 table).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusCode(pub u32);

macro_rules! status_codes {
    ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
        impl StatusCode {
            $($(#[$doc])* pub const $name: StatusCode = StatusCode($value);)*

            /// The module's name for this code, if it is one listed in §1.2.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(concat!("TDX_", stringify!($name))),)*
                    _ => None,
                }
            }
        }
    };
}

status_codes! {
    /// §1.2: the leaf completed.
    SUCCESS = 0x0000_0000;
    /// §1.2.
    NON_RECOVERABLE_VCPU = 0x4000_0001;
    /// §1.2.
    NON_RECOVERABLE_TD = 0x6000_0002;
    /// §1.2.
    INTERRUPTED_RESUMABLE = 0x8000_0003;
    /// §1.2.
    INTERRUPTED_RESTARTABLE = 0x8000_0004;
    /// §1.2: e.g. #MC in the TD.
    NON_RECOVERABLE_TD_NON_ACCESSIBLE = 0x6000_0005;
    /// §1.2: details = operand id.
    OPERAND_INVALID = 0xC000_0100;
    /// §1.2: details = operand id.
    OPERAND_ADDR_RANGE_ERROR = 0xC000_0101;
    /// §1.2: retry; details = operand id (146 SEPT tree, 147 SEPT entry, 168 RTMR).
    OPERAND_BUSY = 0x8000_0200;
    /// §1.2.
    PREVIOUS_TLB_EPOCH_BUSY = 0x8000_0201;
    /// §1.2: converted to OPERAND_BUSY before it reaches the guest.
    OPERAND_BUSY_HOST_PRIORITY = 0x8000_0204;
    /// §1.2.
    HOST_PRIORITY_BUSY_TIMEOUT = 0x9000_0205;
    /// §1.2.
    TD_FATAL = 0xE000_0604;
    /// §1.2.
    VCPU_STATE_INCORRECT = 0xC000_0700;
    /// §1.2: TDG.VP.VEINFO.GET with no #VE pending.
    NO_VALID_VE_INFO = 0xC000_0704;
    /// §1.2.
    TD_VMCS_FIELD_NOT_INITIALIZED = 0xC000_0730;
    /// §1.2.
    EPT_WALK_FAILED = 0xC000_0B00;
    /// §1.2.
    EPT_ENTRY_FREE = 0xC000_0B01;
    /// §1.2.
    EPT_ENTRY_NOT_PRESENT = 0xC000_0B03;
    /// §1.2: not an error; details = mapping level.
    PAGE_ALREADY_ACCEPTED = 0x0000_0B0A;
    /// §1.2: details = actual level; retry at 4 KiB.
    PAGE_SIZE_MISMATCH = 0xC000_0B0B;
    /// §1.2.
    GPA_RANGE_BLOCKED = 0xC000_0B0C;
    /// §1.2.
    EPT_ENTRY_STATE_INCORRECT = 0xC000_0B0D;
    /// §1.2: details bits 31:16 VM index, 15:0 level.
    L2_SEPT_WALK_FAILED = 0xC000_0B0F;
    /// §1.2.
    L2_SEPT_ENTRY_NOT_FREE = 0xC000_0B10;
    /// §1.2, §3.4: illegal resulting GPA_ATTR.
    PAGE_ATTR_INVALID = 0xC000_0B11;
    /// §1.2.
    L2_SEPT_PAGE_NOT_PROVIDED = 0xC000_0B12;
    /// §1.2, §2.4: bad field id, or VM index above NUM_L2_VMS.
    METADATA_FIELD_ID_INCORRECT = 0xC000_0C00;
    /// §1.2, §2.4: writable bits ∩ request mask = 0.
    METADATA_FIELD_NOT_WRITABLE = 0xC000_0C01;
    /// §1.2.
    METADATA_FIELD_NOT_READABLE = 0xC000_0C02;
    /// §1.2, §2.4: a non-writable bit changed, or the value fails a check.
    METADATA_FIELD_VALUE_NOT_VALID = 0xC000_0C03;
    /// §1.2: enumeration started with a null field id; not an error.
    METADATA_FIRST_FIELD_ID_IN_CONTEXT = 0x0000_0C0B;
    /// TDG.SYS.RDALL: the list page is full; call again from the returned field id.
    METADATA_LIST_OVERFLOW = 0xC000_0C04;
    /// A write mask that is not valid for the field.
    METADATA_WR_MASK_NOT_VALID = 0xC000_0C0A;
    /// TDG.MR.VERIFYREPORT: the report's CPUSVN is not valid.
    INVALID_CPUSVN = 0xC000_1000;
    /// §1.2.
    INVALID_REPORTMACSTRUCT = 0xC000_1001;
    /// TDG.SERVTD.RD/WR: the target TD UUID does not match the binding.
    TARGET_UUID_MISMATCH = 0xC000_0D07;
    /// §1.2, §2.3: L2 exited to the host, which resumed L1.
    L2_EXIT_HOST_ROUTED_ASYNC = 0x0000_1100;
    /// §1.2, §2.3: L2's TDG.VP.VMCALL went to the host, which resumed L1.
    L2_EXIT_HOST_ROUTED_TDVMCALL = 0x0000_1101;
    /// §1.2, §2.3: L2 exited because L1 has a deliverable posted interrupt.
    L2_EXIT_PENDING_INTERRUPT = 0x0000_1102;
    /// §1.2, §2.2: TDG.VP.ENTER did not enter L2 (L1 has a deliverable interrupt).
    PENDING_INTERRUPT = 0x0000_1120;
    /// §1.2: debug TDs only.
    TD_EXIT_BEFORE_L2_ENTRY = 0x0000_1140;
    /// §1.2: debug TDs only.
    TD_EXIT_ON_L2_VM_EXIT = 0x0000_1141;
    /// §1.2: debug TDs only.
    TD_EXIT_ON_L2_TO_L1 = 0x0000_1142;
    /// §1.2: TDG.VP.INVGLA with a non-canonical address.
    GLA_NOT_CANONICAL = 0xC000_1160;
}

impl fmt::Debug for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "TDX status {:#010x}", self.0),
        }
    }
}

/// An operand id in the low 32 bits of an operand error (§1.2).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OperandId(pub u32);

macro_rules! operand_ids {
    ($($name:ident = $value:expr;)*) => {
        impl OperandId {
            $(#[doc = concat!("Operand id ", stringify!($value), " (§1.2).")]
            pub const $name: OperandId = OperandId($value);)*

            /// The module's name for this operand, if listed in §1.2.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

operand_ids! {
    RAX = 0; RCX = 1; RDX = 2; RBX = 3; RBP = 5; RSI = 6; RDI = 7;
    R8 = 8; R9 = 9; R10 = 10; R11 = 11; R12 = 12; R13 = 13; R14 = 14; R15 = 15;
    ATTRIBUTES = 64; XFAM = 65; NUM_L2_VMS = 71; SEPT_TREE = 146; SEPT_ENTRY = 147;
    RTMR = 168; TD_EPOCH = 169; L2_VAPIC_GPA = 170;
}

impl fmt::Debug for OperandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "operand {}", self.0),
        }
    }
}

/// A TDCALL that failed (status bit 63 set, §1.2).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TdxError(pub TdxStatus);

impl TdxError {
    /// Builds the error a module returns for `code` with operand `operand`.
    pub const fn operand(code: StatusCode, operand: OperandId) -> Self {
        TdxError(TdxStatus::new(code, operand.0))
    }

    /// The status code.
    pub const fn code(self) -> StatusCode {
        self.0.code()
    }

    /// The operand named in the details, for the operand-error codes.
    pub fn operand_id(self) -> Option<OperandId> {
        match self.code() {
            StatusCode::OPERAND_INVALID
            | StatusCode::OPERAND_ADDR_RANGE_ERROR
            | StatusCode::OPERAND_BUSY
            | StatusCode::OPERAND_BUSY_HOST_PRIORITY => Some(OperandId(self.0.details_l2())),
            _ => None,
        }
    }

    /// OPERAND_BUSY (or its host-priority variant): the caller should retry.
    pub fn is_busy(self) -> bool {
        matches!(
            self.code(),
            StatusCode::OPERAND_BUSY | StatusCode::OPERAND_BUSY_HOST_PRIORITY
        )
    }

    /// The raw status.
    pub const fn status(self) -> TdxStatus {
        self.0
    }
}

impl fmt::Debug for TdxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for TdxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.operand_id() {
            Some(op) => write!(f, "{}({:?}) [{:#018x}]", self.code(), op, self.0 .0),
            None => write!(f, "{} [{:#018x}]", self.code(), self.0 .0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operand_invalid_rcx_encoding() {
        let e = TdxError::operand(StatusCode::OPERAND_INVALID, OperandId::RCX);
        assert_eq!(e.status().0, 0xC000_0100_0000_0001);
        assert_eq!(e.operand_id(), Some(OperandId::RCX));
        assert!(e.status().is_error());
        assert!(!e.is_busy());
    }

    #[test]
    fn busy_is_recoverable_and_distinct() {
        let s = TdxStatus(0x8000_0200_0000_0093);
        let e = s.into_result().unwrap_err();
        assert!(e.is_busy());
        assert!(s.is_recoverable_error());
        assert_eq!(e.operand_id(), Some(OperandId::SEPT_ENTRY));
        assert_ne!(e.code(), StatusCode::OPERAND_INVALID);
    }

    #[test]
    fn l2_exit_classes_are_not_errors() {
        for (raw, code) in [
            (0x0000_1100_0000_0030, StatusCode::L2_EXIT_HOST_ROUTED_ASYNC),
            (
                0x0000_1101_0000_004D,
                StatusCode::L2_EXIT_HOST_ROUTED_TDVMCALL,
            ),
            (0x0000_1102_0000_0001, StatusCode::L2_EXIT_PENDING_INTERRUPT),
            (0x0000_1120_0000_0000, StatusCode::PENDING_INTERRUPT),
        ] {
            let s = TdxStatus(raw);
            assert!(!s.is_error());
            assert_eq!(s.code(), code);
        }
        assert_eq!(TdxStatus(0x0000_1100_0000_0030).details_l2(), 48);
    }

    #[test]
    fn fields_of_status() {
        let s = TdxStatus(0xC000_0B0F_0001_0002);
        assert_eq!(s.code(), StatusCode::L2_SEPT_WALK_FAILED);
        assert_eq!(s.class(), 0x0B);
        assert_eq!(s.details_l1(), 0x0F);
        assert!(s.is_non_recoverable());
        assert!(!s.is_fatal());
        assert!(TdxStatus(0xE000_0604_0000_0000).is_fatal());
        assert_eq!(
            StatusCode::PAGE_ATTR_INVALID.name(),
            Some("TDX_PAGE_ATTR_INVALID")
        );
    }
}
