//! The built-in trusted applications.
//!
//! | TA | UUID | module |
//! |---|---|---|
//! | secure log | `60635c66-3824-415c-af20-f674c0a2f803` | [`secure_log`] |
//! | key manager | `5b060122-85a5-49b1-ad86-b3457f62995d` | [`key_manager`] |
//! | credential manager | `daf722e6-6e4b-424c-a658-6b79da5f21e7` | [`credential`] |
//! | virtual HSM | `1c3d7e4c-91f4-47be-b3ab-c79b4abcb8c6` | [`vhsm`] |
//!
//! Each module documents its commands with their parameter types, its caps
//! and its error codes. Every TA checks the exact parameter types of each
//! command first (`BAD_PARAMETERS` otherwise) and answers unknown commands
//! with `NOT_SUPPORTED`.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use crate::dispatch::TrustedApp;
use crate::uuid::Uuid;

pub mod credential;
pub mod key_manager;
pub mod keys;
pub mod secure_log;
mod throttle;
pub mod vhsm;

#[cfg(test)]
pub(crate) mod testutil;

pub use credential::CredentialManager;
pub use key_manager::KeyManager;
pub use secure_log::SecureLog;
pub use vhsm::VirtualHsm;

/// UUID and name of the four built-in TAs, in [`builtin`]'s order (what the
/// paravisor needs to start isolated instances without linking the TAs).
pub const BUILTIN: [(Uuid, &str); 4] = [
    (secure_log::UUID, "secure-log"),
    (key_manager::UUID, "key-manager"),
    (credential::UUID, "credential-manager"),
    (vhsm::UUID, "virtual-hsm"),
];

/// Fresh instances of the four built-in TAs.
pub fn builtin() -> Vec<Box<dyn TrustedApp>> {
    vec![
        Box::new(SecureLog::default()),
        Box::new(KeyManager::default()),
        Box::new(CredentialManager::default()),
        Box::new(VirtualHsm::default()),
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn builtin_table_matches_the_tas() {
        let apps = super::builtin();
        assert_eq!(apps.len(), super::BUILTIN.len());
        for (app, (uuid, name)) in apps.iter().zip(super::BUILTIN) {
            assert_eq!((app.uuid(), app.name()), (uuid, name));
        }
    }
}
