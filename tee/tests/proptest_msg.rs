//! Random argument pages and messages never panic the TEE, and never break
//! the secure log's chain.

mod common;

use common::*;
use lvbs_tee::fuzz::{handle_call, handle_calls, DATA_GPA};
use lvbs_tee::msg::{attr, cmd, errno, Direction, MsgHeader, MsgParam, RawParam, SmcArgs};
use lvbs_tee::ta::{credential, secure_log as log};
use lvbs_tee::{Limits, Tee};
use proptest::prelude::*;

fn tee(seed: u64) -> Tee<Plat> {
    Tee::with_builtin_apps(platform(seed, MEASUREMENT), Limits::default())
}

/// The SMC page of a CALL_WITH_ARG at `DATA_GPA`.
fn call_with_arg() -> Vec<u8> {
    SmcArgs([0x3200_0004, 0, DATA_GPA, 0, 0, 0, 0, 0, 0])
        .to_bytes()
        .to_vec()
}

/// An OPEN_SESSION of `ta` as fuzz input.
fn open_msg(ta: &lvbs_tee::Uuid) -> Vec<u8> {
    let (a, b) = ta.to_optee_msg();
    let meta = |a, b| {
        MsgParam::Value {
            dir: Direction::Input,
            a,
            b,
            c: 0,
        }
        .encode(true)
    };
    let mut v = call_with_arg();
    let h = MsgHeader {
        cmd: cmd::OPEN_SESSION,
        num_params: 2,
        ..MsgHeader::default()
    };
    v.extend_from_slice(&h.to_bytes());
    v.extend_from_slice(&meta(a, b).to_bytes());
    v.extend_from_slice(&meta(0, 0).to_bytes());
    v
}

fn any_attr() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0u64..16),
        (0u64..16).prop_map(|t| t | attr::META),
        (0u64..16).prop_map(|t| t | attr::NONCONTIG),
        any::<u64>(),
    ]
}

/// Mostly small addresses inside the fuzz memory, sometimes anything.
fn any_word() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..0x7000, any::<u64>(), Just(0u64), Just(DATA_GPA)]
}

fn any_param() -> impl Strategy<Value = RawParam> {
    (any_attr(), any_word(), 0u64..0x3000, any_word()).prop_map(|(attr, a, b, c)| RawParam {
        attr,
        a,
        b,
        c,
    })
}

fn any_message() -> impl Strategy<Value = Vec<u8>> {
    (
        0u32..9,
        0u32..12,
        0u32..4,
        0u32..9,
        prop::collection::vec(any_param(), 0..7),
        prop::collection::vec(any::<u8>(), 0..256),
    )
        .prop_map(|(c, func, session, num_params, params, tail)| {
            let h = MsgHeader {
                cmd: c,
                func,
                session,
                num_params,
                ..MsgHeader::default()
            };
            let mut v = call_with_arg();
            v.extend_from_slice(&h.to_bytes());
            for p in &params {
                v.extend_from_slice(&p.to_bytes());
            }
            v.extend_from_slice(&tail);
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_pages_never_panic(raw in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut t = tee(1);
        let r = handle_call(&mut t, &raw);
        prop_assert!(r == 0 || r == errno::EFAULT || r == errno::EINVAL);
    }

    #[test]
    fn random_smc_functions_never_panic(a in prop::array::uniform9(any_word()), f in prop_oneof![0u64..0x20, Just(0xFF01), Just(0xFF03), any::<u64>()]) {
        let mut t = tee(2);
        let mut args = a;
        args[0] = f;
        let raw = SmcArgs(args).to_bytes();
        prop_assert_eq!(handle_call(&mut t, &raw), 0);
    }

    #[test]
    fn random_messages_never_panic(msgs in prop::collection::vec(any_message(), 1..6)) {
        let mut t = tee(3);
        // Open sessions first so that session ids 1..3 exist.
        handle_call(&mut t, &open_msg(&log::UUID));
        handle_call(&mut t, &open_msg(&credential::UUID));
        prop_assert_eq!(t.session_count(), 2);
        for m in &msgs {
            prop_assert_eq!(handle_call(&mut t, m), 0);
        }
        prop_assert!(t.session_count() <= Limits::default().max_sessions);
    }

    #[test]
    fn random_call_sequences_never_panic(raw in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut t = tee(4);
        handle_calls(&mut t, &raw);
    }
}

/// After any sequence of random invokes on the secure log, its chain still
/// verifies: nothing a guest sends rewrites past entries.
#[test]
fn random_invokes_keep_the_log_chain_valid() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &prop::collection::vec(
                (
                    0u32..8,
                    any_param(),
                    any_param(),
                    prop::collection::vec(any::<u8>(), 0..64),
                ),
                1..8,
            ),
            |calls| {
                let mut ctx = context(5);
                let s = open(&mut ctx, &log::UUID);
                invoke(
                    &mut ctx,
                    &s,
                    log::cmd::APPEND,
                    [
                        lvbs_tee::client::ClientParam::temp_in(b"first"),
                        lvbs_tee::client::ClientParam::value_out(),
                        none(),
                        none(),
                    ],
                )
                .unwrap();
                for (func, p0, p1, data) in calls {
                    // Data the random memrefs may point at.
                    let t = ctx.transport_mut();
                    let _ = lvbs_tee::GuestMemory::write(&mut t.mem, SHARED, &data);
                    let _ = ctx.call_raw(&lvbs_tee::msg::MsgArg {
                        header: MsgHeader {
                            cmd: cmd::INVOKE_COMMAND,
                            func,
                            session: s.id(),
                            ..MsgHeader::default()
                        },
                        params: vec![p0, p1],
                    });
                }
                let o = invoke(
                    &mut ctx,
                    &s,
                    log::cmd::VERIFY,
                    [
                        lvbs_tee::client::ClientParam::value_out(),
                        none(),
                        none(),
                        none(),
                    ],
                )
                .unwrap();
                prop_assert!(o.params[0].value().unwrap().0 >= 1);
                let o = invoke(
                    &mut ctx,
                    &s,
                    log::cmd::READ,
                    [
                        lvbs_tee::client::ClientParam::value_in(0, 0),
                        lvbs_tee::client::ClientParam::temp_out(200),
                        none(),
                        none(),
                    ],
                )
                .unwrap();
                prop_assert_eq!(&o.params[1].output()[log::ENTRY_HEADER..], b"first");
                Ok(())
            },
        )
        .unwrap();
}
