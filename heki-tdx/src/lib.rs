//! LVBS/HEKI policy for lvbs-tdx, platform independent.
//!
//! Section numbers (`§n.m`) refer to `shared/reference/heki-lvbs-abi.md`.
//!
//! * [`abi`]: function ids, errno status codes, attribute namespaces.
//! * [`pages`]: `heki_page` chains copied once from guest memory, then validated.
//! * [`modsig`]: appended module signatures (PKCS#7/CMS, RSA, SHA-2), keyring, blocklist.
//! * [`elf`]: loaded module sections compared with the signed ELF, except at
//!   relocation and loader patch sites.
//! * [`patch`]: `PATCH_TEXT` validation with a per-site state machine.
//!
//! The crate never touches memory permissions itself; it decides, and the
//! paravisor applies the decision through the `ept` crate.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod abi;
pub mod elf;
pub mod modsig;
pub mod pages;
pub mod patch;

pub use abi::{Errno, HekiCall, ToErrno};
