//! One block of checks per trusted application, each with its negative
//! tests, and the cross-measurement checks of the second run.

use alloc::vec::Vec;

use lvbs_tee::client::{ClientParam as P, Context, Session, Transport};
use lvbs_tee::msg::{login, Direction};
use lvbs_tee::ta::{credential, key_manager as km, secure_log as slog, vhsm};
use lvbs_tee::{Limits, Origin, TeeError, Uuid};

use crate::{check, check_err, check_ok, invoke, none, open, say, Hex, Layout, E};

/// A session that no longer (or never) exists.
fn wrong_session<T: Transport>(
    ctx: &mut Context<T>,
    name: &str,
    closed: u32,
    command: u32,
    params: [P; 4],
) {
    check_err(
        name,
        invoke(ctx, &Session::from_raw(closed), command, params),
        TeeError::ItemNotFound,
        Origin::Tee,
    );
}

/// An input memref one byte above the core's cap (64 KiB), through
/// registered shared memory (the scratch area's bounce buffer is smaller).
fn oversize_buffer<T: Transport>(
    ctx: &mut Context<T>,
    layout: &Layout,
    name: &str,
    s: &Session,
    command: u32,
    slot: usize,
) {
    let len = Limits::default().max_memref_size as u64 + 1;
    let Ok(shm) = ctx.register_shared_memory(layout.shared, len) else {
        check(name, false, format_args!("registering {len} bytes failed"));
        return;
    };
    let mut params = [P::value_in(1, 0), none(), none(), none()];
    params[slot] = P::whole(&shm, Direction::Input);
    check_err(
        name,
        invoke(ctx, s, command, params),
        TeeError::ExcessData,
        Origin::Tee,
    );
    let _ = ctx.release_shared_memory(shm);
}

/// Secure log: append, head, export, verify the chain outside the TEE,
/// detect a tampered and a truncated copy, TA-side verify, short buffer,
/// oversize record and buffer, wrong session.
pub fn secure_log<T: Transport>(ctx: &mut Context<T>, layout: &Layout) {
    let Some(s) = open(ctx, "log_open", &slog::UUID) else {
        return;
    };
    let records: [&[u8]; 3] = [
        b"tee-guest: boot",
        b"tee-guest: login root",
        b"tee-guest: done",
    ];
    let mut seqs = Vec::new();
    for rec in records {
        if let Ok(o) = invoke(
            ctx,
            &s,
            slog::cmd::APPEND,
            [P::temp_in(rec), P::value_out(), none(), none()],
        ) {
            seqs.push(o.params[1].value().map_or(u32::MAX, |v| v.0));
        }
    }
    check(
        "log_append",
        seqs == [0, 1, 2],
        format_args!("sequence numbers {seqs:?}"),
    );
    let head = invoke(
        ctx,
        &s,
        slog::cmd::HEAD,
        [P::value_out(), P::temp_out(64), none(), none()],
    );
    let Some(head) = check_ok("log_head", head, "count and genesis/head hashes") else {
        return;
    };
    let hb = head.params[1].output();
    let mut genesis = [0u8; 32];
    let mut head_hash = [0u8; 32];
    if hb.len() == 64 {
        genesis.copy_from_slice(&hb[..32]);
        head_hash.copy_from_slice(&hb[32..]);
    }
    let o = invoke(
        ctx,
        &s,
        slog::cmd::EXPORT,
        [P::value_in(0, 16), P::temp_out(4096), none(), none()],
    );
    let Some(o) = check_ok("log_export", o, "entries 0..") else {
        return;
    };
    let bytes = o.params[1].output().to_vec();
    let v = slog::verify_export(&bytes, 0, &genesis, Some(&head_hash));
    check(
        "log_chain_verifies",
        matches!(&v, Ok(v) if v.records.len() == 3 && v.records[1] == records[1]),
        format_args!("{} bytes, head {}", bytes.len(), Hex(&head_hash[..8])),
    );
    let mut tampered = bytes.clone();
    if let Some(b) = tampered.get_mut(slog::ENTRY_HEADER) {
        *b ^= 0x20;
    }
    let t = slog::verify_export(&tampered, 0, &genesis, Some(&head_hash));
    check(
        "log_tampered_chain_detected",
        t.is_err(),
        format_args!("one record byte flipped: {t:?}", t = t.map(|_| ())),
    );
    let first_len = slog::ENTRY_HEADER + records[0].len();
    let dropped: Vec<u8> = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < first_len || *i >= first_len + slog::ENTRY_HEADER + records[1].len())
        .map(|(_, b)| *b)
        .collect();
    let d = slog::verify_export(&dropped, 0, &genesis, Some(&head_hash));
    check(
        "log_removed_entry_detected",
        d.is_err(),
        format_args!("entry 1 cut out: {d:?}", d = d.map(|_| ())),
    );
    let o = invoke(
        ctx,
        &s,
        slog::cmd::VERIFY,
        [P::value_out(), none(), none(), none()],
    );
    check(
        "log_ta_verify",
        matches!(&o, Ok(o) if o.params[0].value() == Some((3, 0))),
        format_args!("{:?}", o.map(|o| o.params[0].value()).map_err(E)),
    );
    let mut op =
        lvbs_tee::client::Operation::new([P::value_in(0, 16), P::temp_out(8), none(), none()]);
    let r = ctx.invoke_command(&s, slog::cmd::EXPORT, &mut op);
    check(
        "log_short_buffer",
        matches!(r, Err(e) if e.code == TeeError::ShortBuffer)
            && op.params[1].size() == Some(bytes.len() as u64),
        format_args!("8-byte buffer: required size {:?}", op.params[1].size()),
    );
    check_err(
        "log_oversize_record",
        invoke(
            ctx,
            &s,
            slog::cmd::APPEND,
            [
                P::temp_in(&[b'x'; slog::MAX_RECORD + 1]),
                P::value_out(),
                none(),
                none(),
            ],
        ),
        TeeError::ExcessData,
        Origin::TrustedApp,
    );
    oversize_buffer(ctx, layout, "log_oversize_buffer", &s, slog::cmd::APPEND, 0);
    let id = s.id();
    let _ = ctx.close_session(s);
    wrong_session(
        ctx,
        "log_wrong_session",
        id,
        slog::cmd::VERIFY,
        [P::value_out(), none(), none(), none()],
    );
    // A new session sees the same append-only log.
    if let Some(s) = open(ctx, "log_reopen", &slog::UUID) {
        let o = invoke(
            ctx,
            &s,
            slog::cmd::VERIFY,
            [P::value_out(), none(), none(), none()],
        );
        check(
            "log_survives_sessions",
            matches!(&o, Ok(o) if o.params[0].value() == Some((3, 0))),
            format_args!("{:?}", o.map(|o| o.params[0].value()).map_err(E)),
        );
        let _ = ctx.close_session(s);
    }
}

fn km_generate<T: Transport>(ctx: &mut Context<T>, s: &Session, kind: u32) -> Option<u32> {
    invoke(
        ctx,
        s,
        km::cmd::GENERATE,
        [P::value_in(kind, 0), P::value_out(), none(), none()],
    )
    .ok()
    .and_then(|o| o.params[1].value())
    .map(|v| v.0)
}

fn km_sign<T: Transport>(ctx: &mut Context<T>, s: &Session, h: u32, msg: &[u8]) -> Option<Vec<u8>> {
    invoke(
        ctx,
        s,
        km::cmd::SIGN,
        [P::value_in(h, 0), P::temp_in(msg), P::temp_out(128), none()],
    )
    .ok()
    .map(|o| o.params[2].output().to_vec())
}

fn km_verify<T: Transport>(
    ctx: &mut Context<T>,
    s: &Session,
    h: u32,
    msg: &[u8],
    sig: &[u8],
) -> Result<(), lvbs_tee::client::ClientError> {
    invoke(
        ctx,
        s,
        km::cmd::VERIFY,
        [P::value_in(h, 0), P::temp_in(msg), P::temp_in(sig), none()],
    )
    .map(|_| ())
}

fn km_seal<T: Transport>(ctx: &mut Context<T>, s: &Session, h: u32) -> Option<Vec<u8>> {
    invoke(
        ctx,
        s,
        km::cmd::SEAL_KEY,
        [P::value_in(h, 0), P::temp_out(256), none(), none()],
    )
    .ok()
    .map(|o| o.params[1].output().to_vec())
}

fn km_unseal<T: Transport>(
    ctx: &mut Context<T>,
    s: &Session,
    blob: &[u8],
) -> Result<u32, lvbs_tee::client::ClientError> {
    invoke(
        ctx,
        s,
        km::cmd::UNSEAL_KEY,
        [P::temp_in(blob), P::value_out(), none(), none()],
    )
    .map(|o| o.params[1].value().map_or(0, |v| v.0))
}

/// Key manager: ECDSA P-256 and AES-256-GCM keys that never leave the TA,
/// sign/verify, encrypt/decrypt through shared memory, per-client key
/// isolation, sealing (same image unseals, tampered blob refused), oversize
/// buffer, wrong session. Prints the sealed blob for the second run.
pub fn key_manager<T: Transport>(ctx: &mut Context<T>, layout: &Layout) {
    let Some(s) = open(ctx, "km_open", &km::UUID) else {
        return;
    };
    let ec = km_generate(ctx, &s, km::key_type::ECDSA_P256);
    check(
        "km_generate_p256",
        ec.is_some(),
        format_args!("handle {ec:?}"),
    );
    let ec = ec.unwrap_or(0);
    let o = invoke(
        ctx,
        &s,
        km::cmd::GET_PUBLIC,
        [P::value_in(ec, 0), P::temp_out(128), none(), none()],
    );
    let public = o.map(|o| o.params[1].output().to_vec()).unwrap_or_default();
    check(
        "km_public_key",
        public.len() == 65 && public[0] == 4,
        format_args!("{} bytes, uncompressed SEC1", public.len()),
    );
    let sig = km_sign(ctx, &s, ec, b"attest me").unwrap_or_default();
    check(
        "km_sign",
        sig.len() == 64,
        format_args!("{} bytes (r || s)", sig.len()),
    );
    let v = km_verify(ctx, &s, ec, b"attest me", &sig);
    check("km_verify", v.is_ok(), format_args!("{:?}", v.map_err(E)));
    check_err(
        "km_verify_wrong_message",
        km_verify(ctx, &s, ec, b"attest mE", &sig),
        TeeError::SignatureInvalid,
        Origin::TrustedApp,
    );

    // AES-256-GCM with plaintext and ciphertext in registered memory.
    let aes = km_generate(ctx, &s, km::key_type::AES_256_GCM).unwrap_or(0);
    if let Ok(shm) = ctx.register_shared_memory(layout.shared, 4096) {
        let _ = ctx.write_shared(&shm, 0, b"volume key");
        let e = invoke(
            ctx,
            &s,
            km::cmd::ENCRYPT,
            [
                P::value_in(aes, 0),
                P::partial(&shm, Direction::Input, 0, 10),
                P::partial(&shm, Direction::Output, 1024, 1024),
                none(),
            ],
        );
        let ct_len = e
            .as_ref()
            .ok()
            .and_then(|o| o.params[2].size())
            .unwrap_or(0);
        let d = invoke(
            ctx,
            &s,
            km::cmd::DECRYPT,
            [
                P::value_in(aes, 0),
                P::partial(&shm, Direction::Input, 1024, ct_len),
                P::temp_out(64),
                none(),
            ],
        );
        check(
            "km_encrypt_decrypt",
            ct_len == 12 + 10 + 16 && matches!(&d, Ok(o) if o.params[2].output() == b"volume key"),
            format_args!(
                "ciphertext {ct_len} bytes, round trip {:?}",
                d.map(|_| ()).map_err(E)
            ),
        );
        let _ = ctx.release_shared_memory(shm);
    } else {
        check(
            "km_encrypt_decrypt",
            false,
            format_args!("no shared memory"),
        );
    }

    // Keys belong to the client identity that created them.
    let other = Uuid::from_fields(0x1234_5678, 9, 10, [11; 8]);
    match ctx.open_session_as(&km::UUID, login::USER, &other, &mut Default::default()) {
        Ok(s2) => {
            check_err(
                "km_key_isolated_per_client",
                invoke(
                    ctx,
                    &s2,
                    km::cmd::SIGN,
                    [
                        P::value_in(ec, 0),
                        P::temp_in(b"x"),
                        P::temp_out(128),
                        none(),
                    ],
                ),
                TeeError::ItemNotFound,
                Origin::TrustedApp,
            );
            let _ = ctx.close_session(s2);
        }
        Err(e) => {
            check(
                "km_key_isolated_per_client",
                false,
                format_args!("{}", E(e)),
            );
        }
    }

    // Sealing: the same image unseals; a tampered blob is refused.
    let blob = km_seal(ctx, &s, ec).unwrap_or_default();
    check(
        "km_seal_key",
        blob.len() > 8 && blob.starts_with(b"LVSL"),
        format_args!("{} bytes", blob.len()),
    );
    say!("sealed-key {}", Hex(&blob));
    let h = km_unseal(ctx, &s, &blob);
    let ok = match h {
        Ok(h) => km_sign(ctx, &s, h, b"m")
            .map(|sig| km_verify(ctx, &s, ec, b"m", &sig).is_ok())
            .unwrap_or(false),
        Err(_) => false,
    };
    check(
        "km_unseal_same_measurement",
        ok,
        format_args!(
            "unsealed handle {:?} signs for the original public key",
            h.map_err(E)
        ),
    );
    let mut tampered = blob.clone();
    if let Some(b) = tampered.last_mut() {
        *b ^= 1;
    }
    check_err(
        "km_unseal_tampered_blob",
        km_unseal(ctx, &s, &tampered),
        TeeError::MacInvalid,
        Origin::TrustedApp,
    );
    check_err(
        "km_oversize_data",
        invoke(
            ctx,
            &s,
            km::cmd::ENCRYPT,
            [
                P::value_in(aes, 0),
                P::temp_in(&[0; km::MAX_DATA + 1]),
                P::temp_out(8192),
                none(),
            ],
        ),
        TeeError::ExcessData,
        Origin::TrustedApp,
    );
    oversize_buffer(ctx, layout, "km_oversize_buffer", &s, km::cmd::SIGN, 1);
    let id = s.id();
    let _ = ctx.close_session(s);
    wrong_session(
        ctx,
        "km_wrong_session",
        id,
        km::cmd::SIGN,
        [
            P::value_in(ec, 0),
            P::temp_in(b"m"),
            P::temp_out(128),
            none(),
        ],
    );
}

/// The second run (another L2 image, so another RTMR1 and sealing
/// measurement): the blob the first run sealed must not unseal; sealing and
/// unsealing in this image still works.
pub fn other_measurement<T: Transport>(ctx: &mut Context<T>, blob: &[u8]) {
    let Some(s) = open(ctx, "km_open", &km::UUID) else {
        return;
    };
    check(
        "km_blob_is_a_sealed_key",
        blob.starts_with(b"LVSL"),
        format_args!("{} bytes", blob.len()),
    );
    check_err(
        "km_unseal_other_measurement",
        km_unseal(ctx, &s, blob),
        TeeError::MacInvalid,
        Origin::TrustedApp,
    );
    let ec = km_generate(ctx, &s, km::key_type::ECDSA_P256).unwrap_or(0);
    let own = km_seal(ctx, &s, ec).unwrap_or_default();
    let h = km_unseal(ctx, &s, &own);
    check(
        "km_unseal_this_measurement",
        h.is_ok(),
        format_args!("a blob sealed here: {:?}", h.map_err(E)),
    );
    let _ = ctx.close_session(s);
}

/// Credential manager: enroll, verify, wrong secrets counted, lockout that
/// survives sessions, status, oversize secret and buffer, wrong session.
pub fn credential_manager<T: Transport>(ctx: &mut Context<T>) {
    let Some(s) = open(ctx, "cred_open", &credential::UUID) else {
        return;
    };
    let verify = |ctx: &mut Context<T>, s: &Session, secret: &[u8]| {
        invoke(
            ctx,
            s,
            credential::cmd::VERIFY,
            [P::temp_in(b"root"), P::temp_in(secret), none(), none()],
        )
        .map(|_| ())
    };
    let e = invoke(
        ctx,
        &s,
        credential::cmd::ENROLL,
        [
            P::temp_in(b"root"),
            P::temp_in(b"hunter2"),
            P::value_in(3, 0),
            none(),
        ],
    );
    check_ok("cred_enroll", e, "limit 3 failures");
    let v = verify(ctx, &s, b"hunter2");
    check("cred_verify", v.is_ok(), format_args!("{:?}", v.map_err(E)));
    check_err(
        "cred_verify_wrong",
        verify(ctx, &s, b"hunter3"),
        TeeError::AccessDenied,
        Origin::TrustedApp,
    );
    let st = invoke(
        ctx,
        &s,
        credential::cmd::STATUS,
        [P::temp_in(b"root"), P::value_out(), none(), none()],
    );
    check(
        "cred_status_counts_failures",
        matches!(&st, Ok(o) if o.params[1].value() == Some((2, 0))),
        format_args!(
            "(remaining, locked) {:?}",
            st.map(|o| o.params[1].value()).map_err(E)
        ),
    );
    let _ = verify(ctx, &s, b"hunter4");
    let _ = verify(ctx, &s, b"hunter5");
    check_err(
        "cred_lockout",
        verify(ctx, &s, b"hunter2"),
        TeeError::BadState,
        Origin::TrustedApp,
    );
    let id = s.id();
    let _ = ctx.close_session(s);
    wrong_session(
        ctx,
        "cred_wrong_session",
        id,
        credential::cmd::VERIFY,
        [P::temp_in(b"root"), P::temp_in(b"hunter2"), none(), none()],
    );
    let Some(s) = open(ctx, "cred_reopen", &credential::UUID) else {
        return;
    };
    check_err(
        "cred_lockout_survives_sessions",
        verify(ctx, &s, b"hunter2"),
        TeeError::BadState,
        Origin::TrustedApp,
    );
    check_err(
        "cred_oversize_secret",
        verify(ctx, &s, &[b'x'; credential::MAX_SECRET + 1]),
        TeeError::ExcessData,
        Origin::TrustedApp,
    );
    let _ = ctx.close_session(s);
}

/// Virtual HSM: token and PIN set-up, per-session login, wrong PIN, RSA-2048
/// and ECDSA P-256/P-384 key pairs by handle, sign (user only) and verify
/// (public), random, oversize request and buffer, wrong session, logout on
/// close.
pub fn virtual_hsm<T: Transport>(ctx: &mut Context<T>) {
    let Some(admin) = open(ctx, "hsm_open", &vhsm::UUID) else {
        return;
    };
    let c = |ctx: &mut Context<T>, s: &Session, command, p| invoke(ctx, s, command, p);
    check_ok(
        "hsm_init_token",
        c(
            ctx,
            &admin,
            vhsm::cmd::INIT_TOKEN,
            [P::temp_in(b"so-secret"), none(), none(), none()],
        ),
        "SO PIN set",
    );
    check_ok(
        "hsm_so_login",
        c(
            ctx,
            &admin,
            vhsm::cmd::LOGIN,
            [
                P::value_in(vhsm::user_type::SO, 0),
                P::temp_in(b"so-secret"),
                none(),
                none(),
            ],
        ),
        "SO logged in",
    );
    check_ok(
        "hsm_init_pin",
        c(
            ctx,
            &admin,
            vhsm::cmd::INIT_PIN,
            [P::temp_in(b"2468"), none(), none(), none()],
        ),
        "user PIN set",
    );
    let Some(user) = open(ctx, "hsm_open_user", &vhsm::UUID) else {
        return;
    };
    check_err(
        "hsm_wrong_pin",
        c(
            ctx,
            &user,
            vhsm::cmd::LOGIN,
            [
                P::value_in(vhsm::user_type::USER, 0),
                P::temp_in(b"1357"),
                none(),
                none(),
            ],
        ),
        TeeError::AccessDenied,
        Origin::TrustedApp,
    );
    check_ok(
        "hsm_user_login",
        c(
            ctx,
            &user,
            vhsm::cmd::LOGIN,
            [
                P::value_in(vhsm::user_type::USER, 0),
                P::temp_in(b"2468"),
                none(),
                none(),
            ],
        ),
        "user logged in (this session only)",
    );
    let Some(public) = open(ctx, "hsm_open_public", &vhsm::UUID) else {
        return;
    };
    let mut handles = Vec::new();
    for (name, mech) in [
        ("hsm_keys_p256", vhsm::mechanism::EC_P256),
        ("hsm_keys_p384", vhsm::mechanism::EC_P384),
        ("hsm_keys_rsa2048", vhsm::mechanism::RSA_2048),
    ] {
        let o = c(
            ctx,
            &user,
            vhsm::cmd::GENERATE_KEY_PAIR,
            [P::value_in(mech, 0), P::value_out(), none(), none()],
        );
        let h = o
            .as_ref()
            .ok()
            .and_then(|o| o.params[1].value())
            .map(|v| v.0);
        check(
            name,
            h.is_some(),
            format_args!("handle {h:?} {:?}", o.map(|_| ()).map_err(E)),
        );
        handles.push((name, h.unwrap_or(0)));
    }
    for (name, h) in &handles {
        let s = c(
            ctx,
            &user,
            vhsm::cmd::SIGN,
            [
                P::value_in(*h, 0),
                P::temp_in(b"tbs"),
                P::temp_out(512),
                none(),
            ],
        );
        let sig = s
            .as_ref()
            .map(|o| o.params[2].output().to_vec())
            .unwrap_or_default();
        let v = c(
            ctx,
            &public,
            vhsm::cmd::VERIFY,
            [
                P::value_in(*h, 0),
                P::temp_in(b"tbs"),
                P::temp_in(&sig),
                none(),
            ],
        );
        let bad = c(
            ctx,
            &public,
            vhsm::cmd::VERIFY,
            [
                P::value_in(*h, 0),
                P::temp_in(b"tbS"),
                P::temp_in(&sig),
                none(),
            ],
        );
        check(
            &alloc::format!("{}_sign_verify", name),
            s.is_ok() && v.is_ok() && matches!(bad, Err(e) if e.code == TeeError::SignatureInvalid),
            format_args!(
                "{}-byte signature; verified in a public session; altered data refused",
                sig.len()
            ),
        );
    }
    check_err(
        "hsm_public_session_cannot_sign",
        c(
            ctx,
            &public,
            vhsm::cmd::SIGN,
            [
                P::value_in(handles[0].1, 0),
                P::temp_in(b"tbs"),
                P::temp_out(512),
                none(),
            ],
        ),
        TeeError::AccessDenied,
        Origin::TrustedApp,
    );
    let r = c(
        ctx,
        &public,
        vhsm::cmd::GENERATE_RANDOM,
        [P::value_in(48, 0), P::temp_out(48), none(), none()],
    );
    let bytes = r
        .as_ref()
        .map(|o| o.params[1].output().to_vec())
        .unwrap_or_default();
    check(
        "hsm_random",
        bytes.len() == 48 && bytes.iter().any(|b| *b != 0),
        format_args!("{}", Hex(&bytes)),
    );
    check_err(
        "hsm_oversize_random",
        c(
            ctx,
            &public,
            vhsm::cmd::GENERATE_RANDOM,
            [
                P::value_in(vhsm::MAX_RANDOM as u32 + 1, 0),
                P::temp_out(8192),
                none(),
                none(),
            ],
        ),
        TeeError::ExcessData,
        Origin::TrustedApp,
    );
    check_err(
        "hsm_oversize_pin",
        c(
            ctx,
            &public,
            vhsm::cmd::LOGIN,
            [
                P::value_in(vhsm::user_type::USER, 0),
                P::temp_in(&[b'1'; vhsm::MAX_PIN + 1]),
                none(),
                none(),
            ],
        ),
        TeeError::ExcessData,
        Origin::TrustedApp,
    );
    let id = user.id();
    let _ = ctx.close_session(user);
    wrong_session(
        ctx,
        "hsm_wrong_session",
        id,
        vhsm::cmd::SIGN,
        [
            P::value_in(handles[0].1, 0),
            P::temp_in(b"x"),
            P::temp_out(512),
            none(),
        ],
    );
    let Some(again) = open(ctx, "hsm_reopen", &vhsm::UUID) else {
        return;
    };
    check_err(
        "hsm_logged_out_on_close",
        c(
            ctx,
            &again,
            vhsm::cmd::SIGN,
            [
                P::value_in(handles[0].1, 0),
                P::temp_in(b"x"),
                P::temp_out(512),
                none(),
            ],
        ),
        TeeError::AccessDenied,
        Origin::TrustedApp,
    );
    for s in [again, public, admin] {
        let _ = ctx.close_session(s);
    }
}
