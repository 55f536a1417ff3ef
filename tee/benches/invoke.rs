//! Host-side cost of one near no-op INVOKE_COMMAND round trip through the
//! whole stack: client marshalling, SMC page, `optee_msg_arg` parse, session
//! lookup, TA dispatch (virtual HSM GET_INFO: two value outputs, no memory
//! references), reply serialisation and client unmarshalling. The emulator
//! benchmark (exits and paravisor instructions per round trip) comes with the
//! paravisor wiring; this one bounds the pure-logic share.
//!
//! `cargo bench -p lvbs-tee`.

use criterion::{criterion_group, criterion_main, Criterion};
use lvbs_tee::client::{ClientParam, Context, Loopback, Operation};
use lvbs_tee::ta::vhsm;
use lvbs_tee::{Limits, StaticPlatform, Tee, VecMemory};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let platform = StaticPlatform {
        rng: ChaCha20Rng::seed_from_u64(1),
        measurement: [0; 48],
        sealing_root: [0; 32],
    };
    let t = Loopback {
        tee: Tee::with_builtin_apps(platform, Limits::default()),
        mem: VecMemory::new(0x10_0000, 0x1_0000),
    };
    let mut ctx = Context::initialize(t, 0x10_0000, 0x1_0000).expect("initialize");
    let s = ctx
        .open_session(&vhsm::UUID, &mut Operation::default())
        .expect("open");
    c.bench_function("invoke_noop_round_trip", |b| {
        b.iter(|| {
            let mut op = Operation::new([
                ClientParam::value_out(),
                ClientParam::value_out(),
                ClientParam::None,
                ClientParam::None,
            ]);
            ctx.invoke_command(&s, vhsm::cmd::GET_INFO, &mut op)
                .expect("invoke");
            black_box(op);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
