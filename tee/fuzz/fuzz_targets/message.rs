//! The `optee_msg_arg` parser and parameter decoder on raw bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lvbs_tee::msg::{MsgArg, MsgParam};

fuzz_target!(|data: &[u8]| {
    if let Ok(arg) = MsgArg::parse(data) {
        for p in &arg.params {
            if let Ok((param, meta)) = MsgParam::decode(p) {
                // Encoding a decoded parameter gives back its type and flags.
                let again = param.encode(meta);
                assert_eq!(again.attr & 0x3FF, p.attr & 0x3FF);
            }
        }
        assert_eq!(MsgArg::parse(&arg.to_bytes()).as_ref(), Ok(&arg));
    }
});
