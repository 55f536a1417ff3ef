//! End to end: the GlobalPlatform-shaped client against the dispatcher and
//! the four TAs, through argument pages in an in-memory guest.

mod common;

use common::*;
use lvbs_tee::client::{ClientParam as P, Session};
use lvbs_tee::msg::{smc, Direction};
use lvbs_tee::ta::{credential, key_manager as km, secure_log as log, vhsm};
use lvbs_tee::{Limits, TeeError};

#[test]
fn initialize_reports_capabilities() {
    let ctx = context(1);
    assert_eq!(
        ctx.capabilities(),
        smc::SEC_CAP_DYNAMIC_SHM | smc::SEC_CAP_MEMREF_NULL
    );
}

#[test]
fn secure_log_end_to_end() {
    let mut ctx = context(2);
    let s = open(&mut ctx, &log::UUID);
    for (i, rec) in [
        &b"boot: kernel measured"[..],
        b"heki: end of boot",
        b"login: root",
    ]
    .iter()
    .enumerate()
    {
        let o = invoke(
            &mut ctx,
            &s,
            log::cmd::APPEND,
            [P::temp_in(rec), P::value_out(), none(), none()],
        )
        .unwrap();
        assert_eq!(o.params[1].value(), Some((i as u32, 0)));
    }
    let o = invoke(
        &mut ctx,
        &s,
        log::cmd::HEAD,
        [P::value_out(), P::temp_out(64), none(), none()],
    )
    .unwrap();
    assert_eq!(o.params[0].value(), Some((3, 0)));
    let head = o.params[1].output().to_vec();
    let (genesis, head_hash): ([u8; 32], [u8; 32]) = (
        head[..32].try_into().unwrap(),
        head[32..].try_into().unwrap(),
    );
    assert_eq!(genesis, log::genesis(&MEASUREMENT));

    // Export into registered shared memory (RMEM output) and verify outside.
    let shm = ctx
        .register_shared_memory(SHARED + 0x123, 3 * 4096)
        .unwrap();
    let o = invoke(
        &mut ctx,
        &s,
        log::cmd::EXPORT,
        [
            P::value_in(0, 10),
            P::whole(&shm, Direction::Output),
            none(),
            none(),
        ],
    )
    .unwrap();
    let n = o.params[1].size().unwrap();
    let bytes = ctx.read_shared(&shm, 0, n as usize).unwrap();
    let v = log::verify_export(&bytes, 0, &genesis, Some(&head_hash)).unwrap();
    assert_eq!(v.records[2], b"login: root");
    // A guest that edits its copy is caught.
    let mut forged = bytes.clone();
    forged[log::ENTRY_HEADER] = b'B';
    assert!(log::verify_export(&forged, 0, &genesis, Some(&head_hash)).is_err());
    let o = invoke(
        &mut ctx,
        &s,
        log::cmd::VERIFY,
        [P::value_out(), none(), none(), none()],
    )
    .unwrap();
    assert_eq!(o.params[0].value(), Some((3, 0)));

    // Short buffer: the required size comes back; MEMREF_NULL size query too.
    let mut o = op([P::value_in(0, 10), P::temp_out(10), none(), none()]);
    assert_eq!(
        ctx.invoke_command(&s, log::cmd::EXPORT, &mut o),
        Err(ta_err(TeeError::ShortBuffer))
    );
    assert_eq!(o.params[1].size(), Some(n));
    let mut o = op([P::value_in(0, 10), P::temp_out(0), none(), none()]);
    assert_eq!(
        ctx.invoke_command(&s, log::cmd::EXPORT, &mut o),
        Err(ta_err(TeeError::ShortBuffer))
    );
    assert_eq!(o.params[1].size(), Some(n));

    // Oversize record (TA cap) and oversize buffer (core cap).
    let big = vec![0u8; log::MAX_RECORD + 1];
    assert_eq!(
        invoke(
            &mut ctx,
            &s,
            log::cmd::APPEND,
            [P::temp_in(&big), P::value_out(), none(), none()]
        )
        .unwrap_err(),
        ta_err(TeeError::ExcessData)
    );
    let huge = vec![0u8; Limits::default().max_memref_size + 1];
    let shm2 = ctx
        .register_shared_memory(SHARED + 0x8000, huge.len() as u64)
        .unwrap();
    assert_eq!(
        invoke(
            &mut ctx,
            &s,
            log::cmd::APPEND,
            [
                P::whole(&shm2, Direction::Input),
                P::value_out(),
                none(),
                none()
            ]
        )
        .unwrap_err(),
        tee_err(TeeError::ExcessData)
    );
    ctx.release_shared_memory(shm).unwrap();
    ctx.release_shared_memory(shm2).unwrap();

    // Wrong session: closed, and never opened.
    let id = s.id();
    ctx.close_session(s).unwrap();
    assert_eq!(
        invoke(
            &mut ctx,
            &Session::from_raw(id),
            log::cmd::VERIFY,
            [P::value_out(), none(), none(), none()]
        )
        .unwrap_err(),
        tee_err(TeeError::ItemNotFound)
    );
    // A log reopened later still holds (and verifies) everything.
    let s = open(&mut ctx, &log::UUID);
    let o = invoke(
        &mut ctx,
        &s,
        log::cmd::VERIFY,
        [P::value_out(), none(), none(), none()],
    )
    .unwrap();
    assert_eq!(o.params[0].value(), Some((3, 0)));
}

fn km_generate(ctx: &mut Ctx, s: &Session, kind: u32) -> u32 {
    let o = invoke(
        ctx,
        s,
        km::cmd::GENERATE,
        [P::value_in(kind, 0), P::value_out(), none(), none()],
    )
    .unwrap();
    o.params[1].value().unwrap().0
}

#[test]
fn key_manager_end_to_end() {
    let mut ctx = context(3);
    let s = open(&mut ctx, &km::UUID);
    let ec = km_generate(&mut ctx, &s, km::key_type::ECDSA_P256);
    let o = invoke(
        &mut ctx,
        &s,
        km::cmd::SIGN,
        [
            P::value_in(ec, 0),
            P::temp_in(b"attest me"),
            P::temp_out(64),
            none(),
        ],
    )
    .unwrap();
    let sig = o.params[2].output().to_vec();
    invoke(
        &mut ctx,
        &s,
        km::cmd::VERIFY,
        [
            P::value_in(ec, 0),
            P::temp_in(b"attest me"),
            P::temp_in(&sig),
            none(),
        ],
    )
    .unwrap();
    assert_eq!(
        invoke(
            &mut ctx,
            &s,
            km::cmd::VERIFY,
            [
                P::value_in(ec, 0),
                P::temp_in(b"attest mE"),
                P::temp_in(&sig),
                none()
            ]
        )
        .unwrap_err(),
        ta_err(TeeError::SignatureInvalid)
    );
    // AES-GCM with the plaintext in shared memory (RMEM in/out).
    let aes = km_generate(&mut ctx, &s, km::key_type::AES_256_GCM);
    let shm = ctx.register_shared_memory(SHARED, 4096).unwrap();
    ctx.write_shared(&shm, 0, b"volume key").unwrap();
    let o = invoke(
        &mut ctx,
        &s,
        km::cmd::ENCRYPT,
        [
            P::value_in(aes, 0),
            P::partial(&shm, Direction::Input, 0, 10),
            P::partial(&shm, Direction::Output, 1024, 1024),
            none(),
        ],
    )
    .unwrap();
    let ct_len = o.params[2].size().unwrap();
    assert_eq!(ct_len, 12 + 10 + 16);
    let o = invoke(
        &mut ctx,
        &s,
        km::cmd::DECRYPT,
        [
            P::value_in(aes, 0),
            P::partial(&shm, Direction::Input, 1024, ct_len),
            P::temp_out(64),
            none(),
        ],
    )
    .unwrap();
    assert_eq!(o.params[2].output(), b"volume key");
    // Partial reference outside the region.
    assert_eq!(
        invoke(
            &mut ctx,
            &s,
            km::cmd::DECRYPT,
            [
                P::value_in(aes, 0),
                P::partial(&shm, Direction::Input, 4000, 100),
                P::temp_out(64),
                none()
            ]
        )
        .unwrap_err(),
        tee_err(TeeError::BadParameters)
    );

    // Seal the signing key; a restart of the same image unseals it; another
    // image cannot.
    let o = invoke(
        &mut ctx,
        &s,
        km::cmd::SEAL_KEY,
        [P::value_in(ec, 0), P::temp_out(256), none(), none()],
    )
    .unwrap();
    let blob = o.params[1].output().to_vec();
    let mut same = context(4);
    let s2 = open(&mut same, &km::UUID);
    let o = invoke(
        &mut same,
        &s2,
        km::cmd::UNSEAL_KEY,
        [P::temp_in(&blob), P::value_out(), none(), none()],
    )
    .unwrap();
    let h = o.params[1].value().unwrap().0;
    let o = invoke(
        &mut same,
        &s2,
        km::cmd::SIGN,
        [P::value_in(h, 0), P::temp_in(b"m"), P::temp_out(64), none()],
    )
    .unwrap();
    let sig2 = o.params[2].output().to_vec();
    invoke(
        &mut ctx,
        &s,
        km::cmd::VERIFY,
        [
            P::value_in(ec, 0),
            P::temp_in(b"m"),
            P::temp_in(&sig2),
            none(),
        ],
    )
    .unwrap();
    let mut other_measurement = MEASUREMENT;
    other_measurement[0] ^= 0xFF;
    let mut other = context_with(5, other_measurement, Limits::default());
    let s3 = open(&mut other, &km::UUID);
    assert_eq!(
        invoke(
            &mut other,
            &s3,
            km::cmd::UNSEAL_KEY,
            [P::temp_in(&blob), P::value_out(), none(), none()]
        )
        .unwrap_err(),
        ta_err(TeeError::MacInvalid)
    );

    // Oversize buffer and wrong session.
    assert_eq!(
        invoke(
            &mut ctx,
            &s,
            km::cmd::ENCRYPT,
            [
                P::value_in(aes, 0),
                P::temp_in(&[0; km::MAX_DATA + 1]),
                P::temp_out(8192),
                none()
            ]
        )
        .unwrap_err(),
        ta_err(TeeError::ExcessData)
    );
    let id = s.id();
    ctx.close_session(s).unwrap();
    assert_eq!(
        invoke(
            &mut ctx,
            &Session::from_raw(id),
            km::cmd::SIGN,
            [
                P::value_in(ec, 0),
                P::temp_in(b"m"),
                P::temp_out(64),
                none()
            ]
        )
        .unwrap_err(),
        tee_err(TeeError::ItemNotFound)
    );
}

#[test]
fn credential_manager_end_to_end() {
    let mut ctx = context(6);
    let s = open(&mut ctx, &credential::UUID);
    invoke(
        &mut ctx,
        &s,
        credential::cmd::ENROLL,
        [
            P::temp_in(b"root"),
            P::temp_in(b"hunter2"),
            P::value_in(2, 0),
            none(),
        ],
    )
    .unwrap();
    let verify = |ctx: &mut Ctx, s: &Session, secret: &[u8]| {
        invoke(
            ctx,
            s,
            credential::cmd::VERIFY,
            [P::temp_in(b"root"), P::temp_in(secret), none(), none()],
        )
        .map(|_| ())
    };
    verify(&mut ctx, &s, b"hunter2").unwrap();
    assert_eq!(
        verify(&mut ctx, &s, b"hunter3"),
        Err(ta_err(TeeError::AccessDenied))
    );
    assert_eq!(
        verify(&mut ctx, &s, b"hunter4"),
        Err(ta_err(TeeError::AccessDenied))
    );
    assert_eq!(
        verify(&mut ctx, &s, b"hunter2"),
        Err(ta_err(TeeError::BadState))
    );
    let o = invoke(
        &mut ctx,
        &s,
        credential::cmd::STATUS,
        [P::temp_in(b"root"), P::value_out(), none(), none()],
    )
    .unwrap();
    assert_eq!(o.params[1].value(), Some((0, 1)));
    // Lockout survives closing and reopening sessions.
    let id = s.id();
    ctx.close_session(s).unwrap();
    assert_eq!(
        invoke(
            &mut ctx,
            &Session::from_raw(id),
            credential::cmd::VERIFY,
            [P::temp_in(b"root"), P::temp_in(b"hunter2"), none(), none()]
        )
        .unwrap_err(),
        tee_err(TeeError::ItemNotFound)
    );
    let s = open(&mut ctx, &credential::UUID);
    assert_eq!(
        verify(&mut ctx, &s, b"hunter2"),
        Err(ta_err(TeeError::BadState))
    );
    // Oversize secret.
    assert_eq!(
        verify(&mut ctx, &s, &[b'x'; credential::MAX_SECRET + 1]),
        Err(ta_err(TeeError::ExcessData))
    );
}

#[test]
fn virtual_hsm_end_to_end() {
    let mut ctx = context(7);
    let admin = open(&mut ctx, &vhsm::UUID);
    let c = |ctx: &mut Ctx, s: &Session, cmd, p| invoke(ctx, s, cmd, p);
    c(
        &mut ctx,
        &admin,
        vhsm::cmd::INIT_TOKEN,
        [P::temp_in(b"so-secret"), none(), none(), none()],
    )
    .unwrap();
    c(
        &mut ctx,
        &admin,
        vhsm::cmd::LOGIN,
        [
            P::value_in(vhsm::user_type::SO, 0),
            P::temp_in(b"so-secret"),
            none(),
            none(),
        ],
    )
    .unwrap();
    c(
        &mut ctx,
        &admin,
        vhsm::cmd::INIT_PIN,
        [P::temp_in(b"2468"), none(), none(), none()],
    )
    .unwrap();
    let user = open(&mut ctx, &vhsm::UUID);
    c(
        &mut ctx,
        &user,
        vhsm::cmd::LOGIN,
        [
            P::value_in(vhsm::user_type::USER, 0),
            P::temp_in(b"2468"),
            none(),
            none(),
        ],
    )
    .unwrap();
    let mut handles = Vec::new();
    for mech in [
        vhsm::mechanism::EC_P256,
        vhsm::mechanism::EC_P384,
        vhsm::mechanism::RSA_2048,
    ] {
        let o = c(
            &mut ctx,
            &user,
            vhsm::cmd::GENERATE_KEY_PAIR,
            [P::value_in(mech, 0), P::value_out(), none(), none()],
        )
        .unwrap();
        handles.push(o.params[1].value().unwrap().0);
    }
    let public = open(&mut ctx, &vhsm::UUID);
    for h in &handles {
        let o = c(
            &mut ctx,
            &user,
            vhsm::cmd::SIGN,
            [
                P::value_in(*h, 0),
                P::temp_in(b"tbs"),
                P::temp_out(512),
                none(),
            ],
        )
        .unwrap();
        let sig = o.params[2].output().to_vec();
        // Verification is public; signing is not.
        c(
            &mut ctx,
            &public,
            vhsm::cmd::VERIFY,
            [
                P::value_in(*h, 0),
                P::temp_in(b"tbs"),
                P::temp_in(&sig),
                none(),
            ],
        )
        .unwrap();
        assert_eq!(
            c(
                &mut ctx,
                &public,
                vhsm::cmd::SIGN,
                [
                    P::value_in(*h, 0),
                    P::temp_in(b"tbs"),
                    P::temp_out(512),
                    none()
                ]
            )
            .unwrap_err(),
            ta_err(TeeError::AccessDenied)
        );
    }
    let o = c(
        &mut ctx,
        &public,
        vhsm::cmd::GENERATE_RANDOM,
        [P::value_in(48, 0), P::temp_out(48), none(), none()],
    )
    .unwrap();
    assert_eq!(o.params[1].output().len(), 48);
    assert_eq!(
        c(
            &mut ctx,
            &public,
            vhsm::cmd::GENERATE_RANDOM,
            [
                P::value_in(vhsm::MAX_RANDOM as u32 + 1, 0),
                P::temp_out(8192),
                none(),
                none()
            ]
        )
        .unwrap_err(),
        ta_err(TeeError::ExcessData)
    );
    // Wrong session: the user's session closed means logged out and gone.
    let id = user.id();
    ctx.close_session(user).unwrap();
    assert_eq!(
        c(
            &mut ctx,
            &Session::from_raw(id),
            vhsm::cmd::SIGN,
            [
                P::value_in(handles[0], 0),
                P::temp_in(b"x"),
                P::temp_out(64),
                none()
            ]
        )
        .unwrap_err(),
        tee_err(TeeError::ItemNotFound)
    );
    let again = open(&mut ctx, &vhsm::UUID);
    assert_eq!(
        c(
            &mut ctx,
            &again,
            vhsm::cmd::SIGN,
            [
                P::value_in(handles[0], 0),
                P::temp_in(b"x"),
                P::temp_out(64),
                none()
            ]
        )
        .unwrap_err(),
        ta_err(TeeError::AccessDenied)
    );
}

// The same scenarios through isolated-TA proxies and the sandbox message
// format (lvbs_tee::sandbox), with the TA instances in-process.

#[test]
fn secure_log_end_to_end_isolated() {
    isolated(secure_log_end_to_end);
}

#[test]
fn key_manager_end_to_end_isolated() {
    isolated(key_manager_end_to_end);
}

#[test]
fn credential_manager_end_to_end_isolated() {
    isolated(credential_manager_end_to_end);
}

#[test]
fn virtual_hsm_end_to_end_isolated() {
    isolated(virtual_hsm_end_to_end);
}
