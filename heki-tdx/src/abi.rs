//! The LVBS/HEKI wire ABI: function ids, status codes and the attribute
//! namespaces carried in `heki_range::attributes` (heki-lvbs-abi.md §2–§3).
//!
//! Everything here is plain data. The guest passes a 64-bit function id in RDI
//! and up to three arguments in RSI, RDX and R8; the status goes back in R8 as
//! a signed 64-bit value: `>= 0` is success (a token for `VALIDATE_MODULE`),
//! `< 0` is a negated Linux errno.

use core::fmt;

/// The size of a guest page and of one `heki_page`.
pub const PAGE_SIZE: u64 = 4096;

/// True when `x` is a multiple of [`PAGE_SIZE`].
pub const fn page_aligned(x: u64) -> bool {
    x & (PAGE_SIZE - 1) == 0
}

/// A HEKI or TEE call, by its LVBS function id (heki-lvbs-abi.md §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum HekiCall {
    /// `ENABLE_APS_VTL`: a1 = PFN of the guest's `cpu_present_mask` page.
    EnableApsVtl = 0x1FFE0,
    /// `BOOT_APS`: a1 = PFN of `cpu_online_mask`, a2 = PFN of the boot-signal page.
    BootAps = 0x1FFE1,
    /// `LOCK_REGS`: pin CR0/CR4/MSRs on the calling vCPU (boot only).
    LockRegs = 0x1FFE2,
    /// `SIGNAL_END_OF_BOOT`: idempotent; afterwards boot-only calls are refused.
    SignalEndOfBoot = 0x1FFE3,
    /// `PROTECT_MEMORY`: a1 = GPA of the first `heki_page`, a2 = number of ranges (boot only).
    ProtectMemory = 0x1FFE4,
    /// `LOAD_KDATA`: a1 = GPA of the first `heki_page`, a2 = number of ranges (boot only).
    LoadKdata = 0x1FFE5,
    /// `VALIDATE_MODULE`: a1 = first `heki_page`, a2 = ranges, a3 = load flags; returns a token.
    ValidateModule = 0x1FFE6,
    /// `FREE_MODULE_INIT`: a1 = token.
    FreeModuleInit = 0x1FFE7,
    /// `UNLOAD_MODULE`: a1 = token.
    UnloadModule = 0x1FFE8,
    /// `COPY_SECONDARY_KEY`: a1 = first `heki_page`, a2 = ranges.
    CopySecondaryKey = 0x1FFE9,
    /// `KEXEC_VALIDATE`: a1 = first `heki_page` (0 = invalidate only), a2 = ranges, a3 = crash flag.
    KexecValidate = 0x1FFEA,
    /// `PATCH_TEXT`: a1 = GPA of the 24-byte `heki_patch`, a2 = GPA of the next page if it straddles.
    PatchText = 0x1FFEB,
    /// `ALLOCATE_RINGBUFFER_MEMORY`: a1 = GPA of the buffer, a2 = size.
    AllocateRingbufferMemory = 0x1FFEC,
    /// `SET_PLATFORM_ROOT_KEY` (arguments unverified, §11).
    SetPlatformRootKey = 0x1FFED,
    /// `GENERATE_IDENTITY_SIGNING_KEY` (arguments unverified, §11).
    GenerateIdentitySigningKey = 0x1FFEE,
    /// `OPTEE_MESSAGE`: a1 = PFN of the OP-TEE SMC-argument page.
    OpteeMessage = 0x1FFF0,
}

impl HekiCall {
    /// Every call, in id order.
    pub const ALL: [HekiCall; 16] = [
        HekiCall::EnableApsVtl,
        HekiCall::BootAps,
        HekiCall::LockRegs,
        HekiCall::SignalEndOfBoot,
        HekiCall::ProtectMemory,
        HekiCall::LoadKdata,
        HekiCall::ValidateModule,
        HekiCall::FreeModuleInit,
        HekiCall::UnloadModule,
        HekiCall::CopySecondaryKey,
        HekiCall::KexecValidate,
        HekiCall::PatchText,
        HekiCall::AllocateRingbufferMemory,
        HekiCall::SetPlatformRootKey,
        HekiCall::GenerateIdentitySigningKey,
        HekiCall::OpteeMessage,
    ];

    /// Decodes RDI. The whole 64-bit register must hold the id: stray upper
    /// bits make the call unknown (`-EINVAL`), they are not masked away.
    pub fn from_id(a0: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|c| u64::from(*c as u32) == a0)
    }

    /// The function id.
    pub const fn id(self) -> u32 {
        self as u32
    }

    /// The LVBS name of the call.
    pub const fn name(self) -> &'static str {
        match self {
            HekiCall::EnableApsVtl => "ENABLE_APS_VTL",
            HekiCall::BootAps => "BOOT_APS",
            HekiCall::LockRegs => "LOCK_REGS",
            HekiCall::SignalEndOfBoot => "SIGNAL_END_OF_BOOT",
            HekiCall::ProtectMemory => "PROTECT_MEMORY",
            HekiCall::LoadKdata => "LOAD_KDATA",
            HekiCall::ValidateModule => "VALIDATE_MODULE",
            HekiCall::FreeModuleInit => "FREE_MODULE_INIT",
            HekiCall::UnloadModule => "UNLOAD_MODULE",
            HekiCall::CopySecondaryKey => "COPY_SECONDARY_KEY",
            HekiCall::KexecValidate => "KEXEC_VALIDATE",
            HekiCall::PatchText => "PATCH_TEXT",
            HekiCall::AllocateRingbufferMemory => "ALLOCATE_RINGBUFFER_MEMORY",
            HekiCall::SetPlatformRootKey => "SET_PLATFORM_ROOT_KEY",
            HekiCall::GenerateIdentitySigningKey => "GENERATE_IDENTITY_SIGNING_KEY",
            HekiCall::OpteeMessage => "OPTEE_MESSAGE",
        }
    }

    /// Calls refused with `-EPERM` after `SIGNAL_END_OF_BOOT` (§4).
    pub const fn boot_only(self) -> bool {
        matches!(
            self,
            HekiCall::LockRegs | HekiCall::ProtectMemory | HekiCall::LoadKdata
        )
    }
}

impl fmt::Display for HekiCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#x})", self.name(), self.id())
    }
}

/// The Linux errno values the LVBS secure side returns (§2.3), x86-64 numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
pub enum Errno {
    /// Call not allowed in this phase (boot-only call after end of boot).
    EPERM = 1,
    /// Missing prerequisite data; `PATCH_TEXT` target not registered.
    ENOENT = 2,
    /// Platform failure.
    EIO = 5,
    /// Suspicious text patch; certificates missing.
    EACCES = 13,
    /// Bad guest address or failed copy.
    EFAULT = 14,
    /// Malformed request.
    EINVAL = 22,
    /// Size or count out of range, integer overflow.
    ERANGE = 34,
    /// Module carries no signature.
    ENODATA = 61,
    /// Unsupported digest or signature algorithm.
    ENOPKG = 65,
    /// Malformed signature blob.
    ELIBBAD = 80,
    /// Operation not supported.
    EOPNOTSUPP = 95,
    /// No usable key / invalid certificate.
    ENOKEY = 126,
    /// A signature that does not verify, or a revoked key or hash.
    EKEYREJECTED = 129,
}

impl Errno {
    /// Every errno, in numeric order.
    pub const ALL: [Errno; 13] = [
        Errno::EPERM,
        Errno::ENOENT,
        Errno::EIO,
        Errno::EACCES,
        Errno::EFAULT,
        Errno::EINVAL,
        Errno::ERANGE,
        Errno::ENODATA,
        Errno::ENOPKG,
        Errno::ELIBBAD,
        Errno::EOPNOTSUPP,
        Errno::ENOKEY,
        Errno::EKEYREJECTED,
    ];

    /// The positive errno number.
    pub const fn number(self) -> i32 {
        self as i32
    }

    /// The value returned to the guest: the negated errno.
    pub const fn status(self) -> i64 {
        -(self as i64)
    }

    /// Decodes a negative status.
    pub fn from_status(status: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.status() == status)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-{:?} ({})", self, self.status())
    }
}

/// Errors that the guest sees as an errno.
pub trait ToErrno {
    /// The errno reported to the guest for this error.
    fn errno(&self) -> Errno;
}

/// The R8 value for a call result: the success value (0 or a token, which must
/// fit in `i64`'s positive range) or the negated errno.
pub fn return_value(result: Result<u64, Errno>) -> u64 {
    match result {
        Ok(v) if v <= i64::MAX as u64 => v,
        Ok(_) => Errno::ERANGE.status() as u64,
        Err(e) => e.status() as u64,
    }
}

bitflags::bitflags! {
    /// `PROTECT_MEMORY` attributes (§3.2): what the guest asks for a range.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct MemAttr: u64 {
        /// Readable (and, with the LVBS MBEC convention, user-executable).
        const READ = 1 << 0;
        /// Writable.
        const WRITE = 1 << 1;
        /// Supervisor-executable.
        const EXEC = 1 << 2;
        /// Never to change again (ignored by litebox; kept for policy).
        const IMMUTABLE = 1 << 3;
    }
}

/// The attribute namespace of a call's ranges: how the raw `attributes` word
/// decodes and whether the range must be whole pages.
pub trait RangeAttr: Copy + fmt::Debug + PartialEq + Sized {
    /// The namespace's name, for error messages.
    const NAME: &'static str;
    /// Decodes the raw word; `None` if it is not a value of this namespace.
    fn decode(raw: u64) -> Option<Self>;
    /// True when `va`, `pa` and `epa` must be page aligned for this value.
    fn page_granular(&self) -> bool;
}

impl RangeAttr for MemAttr {
    const NAME: &'static str = "memory attribute";
    /// Like the C secure kernel: 0 and any bit outside 0..3 are invalid.
    fn decode(raw: u64) -> Option<Self> {
        MemAttr::from_bits(raw).filter(|a| !a.is_empty())
    }
    fn page_granular(&self) -> bool {
        true
    }
}

/// `LOAD_KDATA` range types (§3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u64)]
pub enum KdataType {
    /// Concatenated DER X.509 certificates (the built-in `system_certificate_list`).
    SystemCerts = 0,
    /// DER certificates from `CONFIG_SYSTEM_REVOCATION_KEYS`.
    RevocationCerts = 1,
    /// 133-byte `"tbs:<hex>"` / `"bin:<hex>"` slots (§3.7).
    BlocklistHashes = 2,
    /// `struct heki_kinfo`.
    KernelInfo = 3,
    /// The kernel's `.rodata`.
    KernelData = 4,
    /// `heki_patch_info` records for the core kernel (§3.4).
    PatchInfo = 5,
    /// Kexec trampoline pages (whole pages).
    KexecTrampoline = 6,
}

impl RangeAttr for KdataType {
    const NAME: &'static str = "kernel data type";
    fn decode(raw: u64) -> Option<Self> {
        Some(match raw {
            0 => KdataType::SystemCerts,
            1 => KdataType::RevocationCerts,
            2 => KdataType::BlocklistHashes,
            3 => KdataType::KernelInfo,
            4 => KdataType::KernelData,
            5 => KdataType::PatchInfo,
            6 => KdataType::KexecTrampoline,
            _ => return None,
        })
    }
    fn page_granular(&self) -> bool {
        matches!(self, KdataType::KexecTrampoline)
    }
}

/// `VALIDATE_MODULE` range types: Linux `enum mod_mem_type` plus the ELF file
/// and the module's patch info (§3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u64)]
pub enum ModMemType {
    /// `MOD_TEXT`: R+X after validation.
    Text = 0,
    /// `MOD_DATA`: R+W.
    Data = 1,
    /// `MOD_RODATA`: R.
    Rodata = 2,
    /// `MOD_RO_AFTER_INIT`: R+W, R after `FREE_MODULE_INIT`.
    RoAfterInit = 3,
    /// `MOD_INIT_TEXT`: R+X, R+W after `FREE_MODULE_INIT`.
    InitText = 4,
    /// `MOD_INIT_DATA`: R+W.
    InitData = 5,
    /// `MOD_INIT_RODATA`: R, R+W after `FREE_MODULE_INIT`.
    InitRodata = 6,
    /// `MOD_ELF`: the signed module file as read by the loader (not protected).
    Elf = 7,
    /// The module's `heki_patch_info` records (not protected).
    Patch = 8,
}

impl ModMemType {
    /// The seven section types, in `enum mod_mem_type` order.
    pub const SECTIONS: [ModMemType; 7] = [
        ModMemType::Text,
        ModMemType::Data,
        ModMemType::Rodata,
        ModMemType::RoAfterInit,
        ModMemType::InitText,
        ModMemType::InitData,
        ModMemType::InitRodata,
    ];

    /// True for the seven `mod_mem_type` section types.
    pub const fn is_section(self) -> bool {
        !matches!(self, ModMemType::Elf | ModMemType::Patch)
    }

    /// True for init types, which `FREE_MODULE_INIT` releases.
    pub const fn is_init(self) -> bool {
        matches!(
            self,
            ModMemType::InitText | ModMemType::InitData | ModMemType::InitRodata
        )
    }

    /// The permission the section gets once the module is validated (§3.2).
    pub const fn validated_attr(self) -> MemAttr {
        match self {
            ModMemType::Text | ModMemType::InitText => MemAttr::READ.union(MemAttr::EXEC),
            ModMemType::Data | ModMemType::RoAfterInit | ModMemType::InitData => {
                MemAttr::READ.union(MemAttr::WRITE)
            }
            ModMemType::Rodata | ModMemType::InitRodata => MemAttr::READ,
            ModMemType::Elf | ModMemType::Patch => MemAttr::empty(),
        }
    }
}

impl RangeAttr for ModMemType {
    const NAME: &'static str = "module section type";
    fn decode(raw: u64) -> Option<Self> {
        Some(match raw {
            0 => ModMemType::Text,
            1 => ModMemType::Data,
            2 => ModMemType::Rodata,
            3 => ModMemType::RoAfterInit,
            4 => ModMemType::InitText,
            5 => ModMemType::InitData,
            6 => ModMemType::InitRodata,
            7 => ModMemType::Elf,
            8 => ModMemType::Patch,
            _ => return None,
        })
    }
    fn page_granular(&self) -> bool {
        self.is_section()
    }
}

/// `KEXEC_VALIDATE` range types (§3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u64)]
pub enum KexecType {
    /// The guest's `struct kimage`.
    Image = 0,
    /// The new kernel file (a PE bzImage).
    KernelBlob = 1,
    /// Segment, control and arch pages (whole pages).
    Pages = 2,
}

impl RangeAttr for KexecType {
    const NAME: &'static str = "kexec type";
    fn decode(raw: u64) -> Option<Self> {
        Some(match raw {
            0 => KexecType::Image,
            1 => KexecType::KernelBlob,
            2 => KexecType::Pages,
            _ => return None,
        })
    }
    fn page_granular(&self) -> bool {
        matches!(self, KexecType::Pages)
    }
}

/// `COPY_SECONDARY_KEY` ranges: the key payload, attribute 0 (§5.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyPayload;

impl RangeAttr for KeyPayload {
    const NAME: &'static str = "key payload tag";
    fn decode(raw: u64) -> Option<Self> {
        (raw == 0).then_some(KeyPayload)
    }
    fn page_granular(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_round_trip() {
        for (i, c) in HekiCall::ALL.iter().enumerate() {
            assert_eq!(HekiCall::from_id(u64::from(c.id())), Some(*c));
            if i < 15 {
                assert_eq!(c.id(), 0x1FFE0 + i as u32, "{c}");
            }
        }
        assert_eq!(HekiCall::OpteeMessage.id(), 0x1FFF0);
        assert_eq!(HekiCall::from_id(0x1FFEF), None);
        assert_eq!(HekiCall::from_id(0x1FFDF), None);
        // Upper bits are not masked away.
        assert_eq!(HekiCall::from_id(0x1_0001_FFE2), None);
        assert_eq!(HekiCall::from_id(0x1FFE2), Some(HekiCall::LockRegs));
        assert!(HekiCall::LoadKdata.boot_only());
        assert!(!HekiCall::ValidateModule.boot_only());
        assert_eq!(
            alloc::format!("{}", HekiCall::PatchText),
            "PATCH_TEXT (0x1ffeb)"
        );
    }

    #[test]
    fn errno_status() {
        assert_eq!(Errno::EINVAL.status(), -22);
        assert_eq!(Errno::EKEYREJECTED.status(), -129);
        for e in Errno::ALL {
            assert_eq!(Errno::from_status(e.status()), Some(e));
        }
        assert_eq!(Errno::from_status(0), None);
        assert_eq!(return_value(Ok(7)), 7);
        assert_eq!(return_value(Err(Errno::EPERM)) as i64, -1);
        assert_eq!(return_value(Ok(u64::MAX)) as i64, -34);
    }

    #[test]
    fn attributes_decode() {
        assert_eq!(MemAttr::decode(0), None);
        assert_eq!(MemAttr::decode(0x10), None);
        assert_eq!(MemAttr::decode(5), Some(MemAttr::READ | MemAttr::EXEC));
        assert_eq!(KdataType::decode(6), Some(KdataType::KexecTrampoline));
        assert_eq!(KdataType::decode(7), None);
        assert!(KdataType::KexecTrampoline.page_granular());
        assert!(!KdataType::SystemCerts.page_granular());
        assert_eq!(ModMemType::decode(8), Some(ModMemType::Patch));
        assert_eq!(ModMemType::decode(u64::MAX), None);
        assert!(ModMemType::Text.page_granular());
        assert!(!ModMemType::Elf.page_granular());
        assert_eq!(
            ModMemType::InitText.validated_attr(),
            MemAttr::READ | MemAttr::EXEC
        );
        assert_eq!(KexecType::decode(3), None);
        assert_eq!(KeyPayload::decode(1), None);
        assert_eq!(KeyPayload::decode(0), Some(KeyPayload));
    }
}
