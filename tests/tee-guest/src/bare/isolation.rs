//! The isolation checks (docs/tee.md, "Isolation of the trusted
//! applications"): the test image's isolation test TA
//! ([`lvbs_tee::sandbox::attack_ta`]) tries, one attack per session, to read
//! paravisor memory and another TA's memory, write its own code, run its
//! heap, execute privileged instructions, divide by zero, panic, use the FPU
//! (shared with L2), make an unknown system call, overflow its stack, send a
//! malformed reply and exhaust its heap. Each attack must end that instance
//! (TARGET_DEAD, origin TEE; OUT_OF_MEMORY for the heap), the next call on
//! the same session must get TARGET_DEAD too, and the paravisor must go on
//! serving: a new session restarts the test TA (it is the only restartable
//! one), and the other TAs' state — a key-manager key, the secure log, an
//! enrolled credential — and sessions opened before the attacks survive.

use alloc::vec::Vec;

use guest_rt::checks::check;
use lvbs_tee::client::{ClientError, ClientParam as P, Session};
use lvbs_tee::sandbox::attack_ta::{self, cmd};
use lvbs_tee::ta::{credential, key_manager as km, secure_log as slog, vhsm};
use lvbs_tee::{Origin, TeeError};

use super::{check_err, invoke, none, open, Ctx, E, PARAVISOR_GPA};

/// The attacks that must end the instance with TARGET_DEAD.
const FATAL: [(&str, u32); 14] = [
    ("iso_read_paravisor", cmd::READ),
    ("iso_read_other_ta", cmd::READ_OTHER_TA),
    ("iso_write_own_code", cmd::WRITE_OWN_CODE),
    ("iso_execute_heap", cmd::EXECUTE_HEAP),
    ("iso_mov_cr3", cmd::MOV_CR3),
    ("iso_wrmsr", cmd::WRMSR),
    ("iso_divide_by_zero", cmd::DIVIDE_BY_ZERO),
    ("iso_panic", cmd::PANIC),
    ("iso_port_io", cmd::PORT_IO),
    ("iso_hlt", cmd::HLT),
    ("iso_x87", cmd::X87),
    ("iso_bad_syscall", cmd::BAD_SYSCALL),
    ("iso_stack_overflow", cmd::STACK_OVERFLOW),
    ("iso_sgdt_umip", cmd::SGDT),
];

fn ping(ctx: &mut Ctx, s: &Session) -> Result<Option<(u32, u32)>, ClientError> {
    invoke(ctx, s, cmd::PING, [P::value_out(), none(), none(), none()]).map(|o| o.params[0].value())
}

/// One attack in a fresh session: `expect` from the attack, TARGET_DEAD on
/// the same session afterwards.
fn attack(ctx: &mut Ctx, name: &str, command: u32, expect: TeeError) {
    let Some(s) = open(ctx, &alloc::format!("{name}_open"), &attack_ta::UUID) else {
        return;
    };
    let alive = ping(ctx, &s);
    let params = if command == cmd::READ {
        [
            P::value_in(PARAVISOR_GPA as u32, (PARAVISOR_GPA >> 32) as u32),
            P::value_out(),
            none(),
            none(),
        ]
    } else {
        [none(), P::value_out(), none(), none()]
    };
    let r = invoke(ctx, &s, command, params);
    let after = ping(ctx, &s);
    let ok = matches!(alive, Ok(Some((0x600D, _))))
        && matches!(&r, Err(e) if e.code == expect && e.origin == Origin::Tee)
        && matches!(&after, Err(e) if e.code == TeeError::TargetDead && e.origin == Origin::Tee);
    check(
        name,
        ok,
        format_args!(
            "alive before: {:?}; attack: {}; next call on the session: {}",
            alive.map_err(E),
            match &r {
                Ok(o) => alloc::format!("NOT STOPPED, returned {:?}", o.params[1].value()),
                Err(e) => alloc::format!("{}", E(*e)),
            },
            match &after {
                Ok(v) => alloc::format!("still alive {v:?}"),
                Err(e) => alloc::format!("{}", E(*e)),
            }
        ),
    );
    let _ = ctx.close_session(s);
}

fn km_sign(ctx: &mut Ctx, s: &Session, h: u32) -> Option<Vec<u8>> {
    invoke(
        ctx,
        s,
        km::cmd::SIGN,
        [
            P::value_in(h, 0),
            P::temp_in(b"isolation"),
            P::temp_out(128),
            none(),
        ],
    )
    .ok()
    .map(|o| o.params[2].output().to_vec())
}

fn log_count(ctx: &mut Ctx, s: &Session) -> Option<(u32, Vec<u8>)> {
    let o = invoke(
        ctx,
        s,
        slog::cmd::HEAD,
        [P::value_out(), P::temp_out(64), none(), none()],
    )
    .ok()?;
    Some((o.params[0].value()?.0, o.params[1].output().to_vec()))
}

fn cred_verify(ctx: &mut Ctx, s: &Session, secret: &[u8]) -> Result<(), ClientError> {
    invoke(
        ctx,
        s,
        credential::cmd::VERIFY,
        [P::temp_in(b"isolation"), P::temp_in(secret), none(), none()],
    )
    .map(|_| ())
}

/// Every isolation check.
pub fn isolation(ctx: &mut Ctx) {
    // The other TAs' state before the attacks, in sessions that stay open.
    let km_s = open(ctx, "iso_km_open", &km::UUID);
    let log_s = open(ctx, "iso_log_open", &slog::UUID);
    let cred_s = open(ctx, "iso_cred_open", &credential::UUID);
    let (Some(km_s), Some(log_s), Some(cred_s)) = (km_s, log_s, cred_s) else {
        return;
    };
    let key = invoke(
        ctx,
        &km_s,
        km::cmd::GENERATE,
        [
            P::value_in(km::key_type::ECDSA_P256, 0),
            P::value_out(),
            none(),
            none(),
        ],
    )
    .ok()
    .and_then(|o| o.params[1].value())
    .map_or(0, |v| v.0);
    let sig_before = km_sign(ctx, &km_s, key);
    let _ = invoke(
        ctx,
        &log_s,
        slog::cmd::APPEND,
        [
            P::temp_in(b"before the attacks"),
            P::value_out(),
            none(),
            none(),
        ],
    );
    let head_before = log_count(ctx, &log_s);
    let enrolled = invoke(
        ctx,
        &cred_s,
        credential::cmd::ENROLL,
        [
            P::temp_in(b"isolation"),
            P::temp_in(b"s3cret"),
            P::value_in(3, 0),
            none(),
        ],
    );
    check(
        "iso_state_before",
        sig_before.is_some() && head_before.is_some() && enrolled.is_ok(),
        format_args!(
            "key {key}, log head {:?}, credential enrolled {:?}",
            head_before.as_ref().map(|h| h.0),
            enrolled.map(|_| ()).map_err(E)
        ),
    );

    // The test TA is there and got a victim address.
    let Some(s) = open(ctx, "iso_test_ta_open", &attack_ta::UUID) else {
        return;
    };
    let p = ping(ctx, &s);
    check(
        "iso_test_ta_ping",
        matches!(p, Ok(Some((0x600D, 1)))),
        format_args!("{:?}", p.map_err(E)),
    );
    let _ = ctx.close_session(s);

    for (name, command) in FATAL {
        attack(ctx, name, command, TeeError::TargetDead);
    }
    attack(ctx, "iso_bad_reply", cmd::BAD_REPLY, TeeError::TargetDead);
    attack(
        ctx,
        "iso_exhaust_heap",
        cmd::EXHAUST_HEAP,
        TeeError::OutOfMemory,
    );

    // The paravisor and the other TAs keep working, with their state.
    if let Some(s) = open(ctx, "iso_test_ta_restarted", &attack_ta::UUID) {
        let p = ping(ctx, &s);
        check(
            "iso_test_ta_ping_after",
            matches!(p, Ok(Some((0x600D, 1)))),
            format_args!("a fresh instance: {:?}", p.map_err(E)),
        );
        let _ = ctx.close_session(s);
    }
    let sig_after = km_sign(ctx, &km_s, key);
    let verified = match &sig_after {
        Some(sig) => invoke(
            ctx,
            &km_s,
            km::cmd::VERIFY,
            [
                P::value_in(key, 0),
                P::temp_in(b"isolation"),
                P::temp_in(sig),
                none(),
            ],
        )
        .map(|_| ()),
        None => Err(ClientError {
            code: TeeError::Generic,
            origin: Origin::Api,
        }),
    };
    check(
        "iso_key_manager_state_survived",
        verified.is_ok(),
        format_args!(
            "key {key} generated before the attacks still signs and verifies in the same session: {:?}",
            verified.map_err(E)
        ),
    );
    let head_after = log_count(ctx, &log_s);
    check(
        "iso_secure_log_state_survived",
        head_after.is_some() && head_after == head_before,
        format_args!(
            "head before {:?}, after {:?}",
            head_before.as_ref().map(|h| h.0),
            head_after.as_ref().map(|h| h.0)
        ),
    );
    let v = cred_verify(ctx, &cred_s, b"s3cret");
    check(
        "iso_credential_state_survived",
        v.is_ok(),
        format_args!(
            "credential enrolled before the attacks verifies: {:?}",
            v.map_err(E)
        ),
    );
    check_err(
        "iso_credential_still_checks",
        cred_verify(ctx, &cred_s, b"wrong"),
        TeeError::AccessDenied,
        Origin::TrustedApp,
    );
    if let Some(s) = open(ctx, "iso_vhsm_open_after", &vhsm::UUID) {
        let r = invoke(
            ctx,
            &s,
            vhsm::cmd::GET_INFO,
            [P::value_out(), P::value_out(), none(), none()],
        );
        check(
            "iso_vhsm_works_after",
            r.is_ok(),
            format_args!("{:?}", r.map(|_| ()).map_err(E)),
        );
        let _ = ctx.close_session(s);
    }
    for s in [km_s, log_s, cred_s] {
        let _ = ctx.close_session(s);
    }
}
