//! Sequences of LVBS calls (SMC page + guest data) against a TEE with the
//! four built-in TAs; see `lvbs_tee::fuzz` for the input layout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lvbs_tee::{Limits, StaticPlatform, Tee};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let platform = StaticPlatform {
        rng: ChaCha20Rng::seed_from_u64(0),
        measurement: [0x11; 48],
        sealing_root: [0x22; 32],
    };
    let mut tee = Tee::with_builtin_apps(platform, Limits::default());
    lvbs_tee::fuzz::handle_calls(&mut tee, data);
});
