//! The appended module-signature trailer (`split_appended_signature`) and
//! the `LOAD_KDATA` blocklist slots (`Blocklist::parse_slots`) on raw bytes.
#![no_main]

use heki_tdx::modsig::{
    append_signature, split_appended_signature, Blocklist, ModuleSignature, MODULE_SIG_MAGIC,
    PKEY_ID_PKCS7,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(parts) = split_appended_signature(data) {
        // The parts tile the file exactly and re-appending gives it back.
        assert_eq!(parts.header.id_type, PKEY_ID_PKCS7);
        assert_eq!(parts.header.sig_len as usize, parts.cms.len());
        assert!(!parts.cms.is_empty());
        assert_eq!(
            parts.content.len() + parts.cms.len() + ModuleSignature::SIZE + MODULE_SIG_MAGIC.len(),
            data.len()
        );
        assert_eq!(
            append_signature(parts.content, parts.cms).as_deref(),
            Some(data)
        );
        assert_eq!(
            ModuleSignature::from_bytes(&parts.header.to_bytes()),
            parts.header
        );
    }
    if let Ok(list) = Blocklist::parse_slots(data) {
        // Every entry holds a hash; an empty list blocks nothing.
        if list.is_empty() {
            assert!(!list.is_binary_blocked(data));
            assert!(!list.is_tbs_blocked(data));
        }
    } else {
        // Each entry on its own, as a single slot would be.
        for slot in data.split(|b| *b == 0) {
            let _ = Blocklist::new().add_entry(slot);
        }
    }
});
