//! The TEE core through the client and through raw messages: sessions, caps,
//! shared memory, and malformed or unsupported requests.

mod common;

use common::*;
use lvbs_tee::client::{ClientParam as P, Operation, Session, Transport};
use lvbs_tee::msg::{
    attr, cmd, errno, login, smc, Direction, MsgArg, MsgHeader, MsgParam, RawParam, SmcArgs,
    OPTEE_MESSAGE_FUNC_ID,
};
use lvbs_tee::ta::secure_log as log;
use lvbs_tee::{GuestMemory, Limits, Origin, TeeError, Uuid};

fn log_append(
    ctx: &mut Ctx,
    s: &Session,
    rec: &[u8],
) -> Result<Operation, lvbs_tee::client::ClientError> {
    invoke(
        ctx,
        s,
        log::cmd::APPEND,
        [P::temp_in(rec), P::value_out(), none(), none()],
    )
}

#[test]
fn session_lifecycle_and_caps() {
    let limits = Limits {
        max_sessions_per_ta: 2,
        max_sessions: 3,
        ..Limits::default()
    };
    let mut ctx = context_with(10, MEASUREMENT, limits);
    let a = open(&mut ctx, &log::UUID);
    let b = open(&mut ctx, &log::UUID);
    assert_ne!(a.id(), b.id());
    let mut o = Operation::default();
    assert_eq!(
        ctx.open_session(&log::UUID, &mut o),
        Err(tee_err(TeeError::Busy))
    );
    let c = open(&mut ctx, &lvbs_tee::ta::vhsm::UUID);
    assert_eq!(
        ctx.open_session(&lvbs_tee::ta::credential::UUID, &mut o),
        Err(tee_err(TeeError::OutOfMemory))
    );
    // Closing frees the slot; a closed session cannot be closed again.
    let a_id = a.id();
    ctx.close_session(a).unwrap();
    assert_eq!(
        ctx.close_session(Session::from_raw(a_id)),
        Err(tee_err(TeeError::ItemNotFound))
    );
    let d = open(&mut ctx, &log::UUID);
    assert_ne!(d.id(), a_id);
    assert_eq!(ctx.transport_mut().tee.session_count(), 3);
    for s in [b, c, d] {
        ctx.close_session(s).unwrap();
    }
    assert_eq!(ctx.transport_mut().tee.session_count(), 0);
}

#[test]
fn open_session_refusals() {
    let mut ctx = context(11);
    let mut o = Operation::default();
    // Unknown TA.
    assert_eq!(
        ctx.open_session(&Uuid::from_bytes([7; 16]), &mut o),
        Err(tee_err(TeeError::ItemNotFound))
    );
    // A guest may not claim to be a TA; unknown login methods are malformed.
    assert_eq!(
        ctx.open_session_as(&log::UUID, login::TRUSTED_APP, &Uuid::NIL, &mut o),
        Err(tee_err(TeeError::AccessDenied))
    );
    assert_eq!(
        ctx.open_session_as(&log::UUID, 3, &Uuid::NIL, &mut o),
        Err(comms_err(TeeError::BadParameters))
    );
    // The TA's own refusal (the log takes no open parameters).
    let mut o = Operation::new([P::value_in(1, 2), none(), none(), none()]);
    assert_eq!(
        ctx.open_session(&log::UUID, &mut o),
        Err(ta_err(TeeError::BadParameters))
    );
    // A kernel client is accepted.
    let s = ctx
        .open_session_as(
            &log::UUID,
            login::REE_KERNEL,
            &Uuid::from_bytes([1; 16]),
            &mut Operation::default(),
        )
        .unwrap();
    ctx.close_session(s).unwrap();
    assert_eq!(ctx.transport_mut().tee.session_count(), 0);
}

#[test]
fn shared_memory_registry() {
    let limits = Limits {
        max_shm_regions: 2,
        max_shm_region_pages: 4,
        ..Limits::default()
    };
    let mut ctx = context_with(12, MEASUREMENT, limits);
    let a = ctx.register_shared_memory(SHARED, 4 * 4096).unwrap();
    // Five pages (unaligned start) exceed the per-region cap.
    assert_eq!(
        ctx.register_shared_memory(SHARED + 1, 4 * 4096),
        Err(tee_err(TeeError::ExcessData))
    );
    // Memory outside the guest.
    assert_eq!(
        ctx.register_shared_memory(0x4000_0000, 4096),
        Err(comms_err(TeeError::BadParameters))
    );
    let b = ctx.register_shared_memory(SHARED + 0x8000, 100).unwrap();
    assert_eq!(
        ctx.register_shared_memory(SHARED + 0x9000, 100),
        Err(tee_err(TeeError::OutOfMemory))
    );
    ctx.release_shared_memory(a).unwrap();
    assert_eq!(
        ctx.release_shared_memory(a),
        Err(tee_err(TeeError::ItemNotFound))
    );
    // Use after release.
    let s = open(&mut ctx, &log::UUID);
    assert_eq!(
        invoke(
            &mut ctx,
            &s,
            log::cmd::APPEND,
            [
                P::whole(&a, Direction::Input),
                P::value_out(),
                none(),
                none()
            ]
        )
        .unwrap_err(),
        tee_err(TeeError::BadParameters)
    );
    ctx.write_shared(&b, 0, b"from shm").unwrap();
    invoke(
        &mut ctx,
        &s,
        log::cmd::APPEND,
        [
            P::partial(&b, Direction::Input, 0, 8),
            P::value_out(),
            none(),
            none(),
        ],
    )
    .unwrap();
    ctx.release_shared_memory(b).unwrap();
    assert_eq!(ctx.transport_mut().tee.shm_count(), 0);
}

#[test]
fn cancel_is_a_harmless_no_op() {
    let mut ctx = context(13);
    let s = open(&mut ctx, &log::UUID);
    ctx.request_cancellation(&s, 5).unwrap();
    log_append(&mut ctx, &s, b"still works").unwrap();
    assert_eq!(
        ctx.request_cancellation(&Session::from_raw(999), 1),
        Err(tee_err(TeeError::ItemNotFound))
    );
}

fn raw(ctx: &mut Ctx, header: MsgHeader, params: Vec<RawParam>) -> (u64, MsgArg) {
    ctx.call_raw(&MsgArg { header, params }).unwrap()
}

fn hdr(cmd: u32, session: u32) -> MsgHeader {
    MsgHeader {
        cmd,
        session,
        ..MsgHeader::default()
    }
}

#[test]
fn malformed_messages_get_errors() {
    let mut ctx = context(14);
    let s = open(&mut ctx, &log::UUID);
    let bad = |attr| RawParam {
        attr,
        ..RawParam::default()
    };
    let expect = |(status, reply): (u64, MsgArg), code: TeeError, origin: Origin| {
        assert_eq!(status, smc::RETURN_OK);
        assert_eq!(reply.header.ret, code.code());
        assert_eq!(reply.header.ret_origin, origin as u32);
    };
    // Unknown type, reserved bits, META outside OPEN_SESSION, NONCONTIG on a value.
    for a in [
        4u64,
        8,
        15,
        attr::VALUE_INPUT | 1 << 12,
        attr::VALUE_INPUT | attr::META,
        attr::VALUE_INPUT | attr::NONCONTIG,
    ] {
        let r = raw(
            &mut ctx,
            MsgHeader {
                func: log::cmd::VERIFY,
                ..hdr(cmd::INVOKE_COMMAND, s.id())
            },
            vec![bad(a)],
        );
        expect(r, TeeError::BadParameters, Origin::Comms);
    }
    // Five TA parameters.
    let r = raw(
        &mut ctx,
        hdr(cmd::INVOKE_COMMAND, s.id()),
        vec![RawParam::default(); 5],
    );
    expect(r, TeeError::BadParameters, Origin::Comms);
    // OPEN_SESSION without META parameters.
    let r = raw(
        &mut ctx,
        hdr(cmd::OPEN_SESSION, 0),
        vec![bad(attr::VALUE_INPUT), bad(attr::VALUE_INPUT)],
    );
    expect(r, TeeError::BadParameters, Origin::Comms);
    let r = raw(&mut ctx, hdr(cmd::OPEN_SESSION, 0), vec![]);
    expect(r, TeeError::BadParameters, Origin::Comms);
    // CLOSE/CANCEL with parameters; REGISTER with a value; UNREGISTER with a TMEM.
    let r = raw(&mut ctx, hdr(cmd::CLOSE_SESSION, s.id()), vec![bad(0)]);
    expect(r, TeeError::BadParameters, Origin::Comms);
    let r = raw(&mut ctx, hdr(cmd::CANCEL, s.id()), vec![bad(0)]);
    expect(r, TeeError::BadParameters, Origin::Comms);
    let r = raw(
        &mut ctx,
        hdr(cmd::REGISTER_SHM, 0),
        vec![bad(attr::VALUE_INPUT)],
    );
    expect(r, TeeError::BadParameters, Origin::Comms);
    let r = raw(
        &mut ctx,
        hdr(cmd::UNREGISTER_SHM, 0),
        vec![bad(attr::TMEM_INPUT)],
    );
    expect(r, TeeError::BadParameters, Origin::Comms);
    // Unknown commands, including the asynchronous-notification ones.
    for c in [cmd::DO_BOTTOM_HALF, cmd::STOP_ASYNC_NOTIF, 8, u32::MAX] {
        let (status, reply) = raw(&mut ctx, hdr(c, 0), vec![]);
        assert_eq!(status, smc::RETURN_EBADCMD);
        assert_eq!(reply.header.ret, TeeError::NotImplemented.code());
    }
    // TMEM pointing outside guest memory, input and output.
    let tmem = |dir, buf_ptr| {
        MsgParam::Tmem {
            dir,
            buf_ptr,
            size: 16,
            shm_ref: 0,
            noncontig: false,
        }
        .encode(false)
    };
    let out = MsgParam::Value {
        dir: Direction::Output,
        a: 0,
        b: 0,
        c: 0,
    }
    .encode(false);
    let r = raw(
        &mut ctx,
        MsgHeader {
            func: log::cmd::APPEND,
            ..hdr(cmd::INVOKE_COMMAND, s.id())
        },
        vec![tmem(Direction::Input, 0x10), out],
    );
    expect(r, TeeError::BadParameters, Origin::Comms);
    let r = raw(
        &mut ctx,
        MsgHeader {
            func: log::cmd::APPEND,
            ..hdr(cmd::INVOKE_COMMAND, s.id())
        },
        vec![tmem(Direction::Input, u64::MAX - 4), out],
    );
    expect(r, TeeError::BadParameters, Origin::Comms);
    // A non-null input TMEM at address 0 with a size is refused (MEMREF_NULL is output-only).
    let r = raw(
        &mut ctx,
        MsgHeader {
            func: log::cmd::APPEND,
            ..hdr(cmd::INVOKE_COMMAND, s.id())
        },
        vec![tmem(Direction::Input, 0), out],
    );
    expect(r, TeeError::BadParameters, Origin::Comms);
    // None of this disturbed the session.
    log_append(&mut ctx, &s, b"ok").unwrap();
    let stats = ctx.transport_mut().tee.stats();
    assert!(stats.refused >= 16, "{stats:?}");
}

fn smc_page(ctx: &mut Ctx, args: [u64; 9]) -> (i64, [u64; 9]) {
    let t = ctx.transport_mut();
    t.mem.write(MEM_BASE, &SmcArgs(args).to_bytes()).unwrap();
    let r = t.vtl_call(OPTEE_MESSAGE_FUNC_ID, MEM_BASE >> 12, 0, 0);
    let mut b = [0u8; 72];
    t.mem.read(MEM_BASE, &mut b).unwrap();
    (r, SmcArgs::from_bytes(&b).0)
}

#[test]
fn transport_level_errors() {
    let mut ctx = context(15);
    let t = ctx.transport_mut();
    // Another function id; a PFN that overflows; a page outside the guest.
    assert_eq!(t.vtl_call(0x1FFE0, MEM_BASE >> 12, 0, 0), errno::EINVAL);
    assert_eq!(
        t.vtl_call(OPTEE_MESSAGE_FUNC_ID, u64::MAX, 0, 0),
        errno::EINVAL
    );
    assert_eq!(t.vtl_call(OPTEE_MESSAGE_FUNC_ID, 0x10, 0, 0), errno::EFAULT);
    // The page's last 72 bytes must fit: a page at the very end of memory works.
    let last = (MEM_BASE + MEM_LEN as u64 - 4096) >> 12;
    assert_eq!(t.vtl_call(OPTEE_MESSAGE_FUNC_ID, last, 0, 0), 0);
    // Unknown SMC function; the OS UUID; revisions; SHM cache.
    assert_eq!(
        smc_page(&mut ctx, [0x1234, 0, 0, 0, 0, 0, 0, 0, 0]).1[0],
        smc::RETURN_UNKNOWN_FUNCTION
    );
    let (_, r) = smc_page(&mut ctx, [0xB200_0000, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(r[..4], smc::OS_UUID.map(u64::from));
    assert_eq!(
        smc_page(&mut ctx, [0xB200_0001, 0, 0, 0, 0, 0, 0, 0, 0]).1[0],
        2
    );
    assert_eq!(
        smc_page(&mut ctx, [0xB200_000A, 0, 0, 0, 0, 0, 0, 0, 0]).1[0],
        smc::RETURN_ENOTAVAIL
    );
    // CALL_WITH_ARG: halves that do not fit 32 bits, a misaligned or absent arg.
    let arg = MEM_BASE + 4096;
    for (a1, a2) in [(1 << 32, 0), (0, 1 << 32), (0, arg + 4), (0, 0x40_0000)] {
        assert_eq!(
            smc_page(&mut ctx, [smc::STD_CALL_WITH_ARG, a1, a2, 0, 0, 0, 0, 0, 0]).1[0],
            smc::RETURN_EBADADDR
        );
    }
    // num_params above the maximum: answered in the header.
    let h = MsgHeader {
        cmd: cmd::INVOKE_COMMAND,
        num_params: 7,
        ..MsgHeader::default()
    };
    ctx.transport_mut().mem.write(arg, &h.to_bytes()).unwrap();
    let (rv, r) = smc_page(&mut ctx, [smc::STD_CALL_WITH_ARG, 0, arg, 0, 0, 0, 0, 0, 0]);
    assert_eq!((rv, r[0]), (0, smc::RETURN_OK));
    let mut hb = [0u8; 32];
    ctx.transport_mut().mem.read(arg, &mut hb).unwrap();
    let back = MsgHeader::from_bytes(&hb);
    assert_eq!(
        (back.ret, back.ret_origin),
        (TeeError::BadParameters.code(), Origin::Comms as u32)
    );
    // A message that would run past the end of guest memory.
    let end = MEM_BASE + MEM_LEN as u64 - 64;
    let h = MsgHeader {
        cmd: cmd::INVOKE_COMMAND,
        num_params: 2,
        ..MsgHeader::default()
    };
    ctx.transport_mut().mem.write(end, &h.to_bytes()).unwrap();
    assert_eq!(
        smc_page(&mut ctx, [smc::STD_CALL_WITH_ARG, 0, end, 0, 0, 0, 0, 0, 0]).1[0],
        smc::RETURN_EBADADDR
    );
}

#[test]
fn call_with_registered_arg() {
    let mut ctx = context(16);
    let s = open(&mut ctx, &log::UUID);
    // Put an INVOKE message in registered shared memory, straddling a page.
    let shm = ctx.register_shared_memory(SHARED, 2 * 4096).unwrap();
    let rec_gpa = SHARED + 0x1800;
    ctx.write_shared(&shm, 0x1800, b"via regd arg").unwrap();
    let msg = MsgArg {
        header: MsgHeader {
            cmd: cmd::INVOKE_COMMAND,
            func: log::cmd::APPEND,
            session: s.id(),
            ..MsgHeader::default()
        },
        params: vec![
            MsgParam::Tmem {
                dir: Direction::Input,
                buf_ptr: rec_gpa,
                size: 12,
                shm_ref: 0,
                noncontig: false,
            }
            .encode(false),
            MsgParam::Value {
                dir: Direction::Output,
                a: 0,
                b: 0,
                c: 0,
            }
            .encode(false),
        ],
    };
    let off = 4096 - 40;
    ctx.write_shared(&shm, off, &msg.to_bytes()).unwrap();
    let cookie = shm.cookie();
    let (rv, r) = smc_page(
        &mut ctx,
        [
            0x3200_0013,
            cookie >> 32,
            cookie & 0xFFFF_FFFF,
            off,
            0,
            0,
            0,
            0,
            0,
        ],
    );
    assert_eq!((rv, r[0]), (0, smc::RETURN_OK));
    let back = MsgArg::parse(&ctx.read_shared(&shm, off, msg.to_bytes().len()).unwrap()).unwrap();
    assert_eq!(back.header.ret, 0);
    assert_eq!(back.params[1].a, 0, "first record has seq 0");
    // Unknown cookie and misaligned offset.
    assert_eq!(
        smc_page(&mut ctx, [0x3200_0013, 0, 999, 0, 0, 0, 0, 0, 0]).1[0],
        smc::RETURN_EBADADDR
    );
    assert_eq!(
        smc_page(
            &mut ctx,
            [
                0x3200_0013,
                cookie >> 32,
                cookie & 0xFFFF_FFFF,
                off + 1,
                0,
                0,
                0,
                0,
                0
            ]
        )
        .1[0],
        smc::RETURN_EBADADDR
    );
    // An arg past the end of the region.
    assert_eq!(
        smc_page(
            &mut ctx,
            [
                0x3200_0013,
                cookie >> 32,
                cookie & 0xFFFF_FFFF,
                2 * 4096 - 8,
                0,
                0,
                0,
                0,
                0
            ]
        )
        .1[0],
        smc::RETURN_EBADADDR
    );
}

#[test]
fn client_argument_checks() {
    let t = lvbs_tee::client::Loopback {
        tee: lvbs_tee::Tee::with_builtin_apps(platform(17, MEASUREMENT), Limits::default()),
        mem: lvbs_tee::VecMemory::new(MEM_BASE, MEM_LEN),
    };
    // Scratch area too small or misaligned.
    assert!(lvbs_tee::client::Context::initialize(t, MEM_BASE + 1, SCRATCH_LEN).is_err());
    let mut ctx = context(18);
    let s = open(&mut ctx, &log::UUID);
    // Temp buffers larger than the scratch area.
    let err = invoke(
        &mut ctx,
        &s,
        log::cmd::APPEND,
        [
            P::temp_in(&vec![0; 0x20000]),
            P::value_out(),
            none(),
            none(),
        ],
    )
    .unwrap_err();
    assert_eq!((err.code, err.origin), (TeeError::OutOfMemory, Origin::Api));
    let err = invoke(
        &mut ctx,
        &s,
        log::cmd::EXPORT,
        [P::value_in(0, 1), P::temp_out(usize::MAX), none(), none()],
    )
    .unwrap_err();
    assert_eq!((err.code, err.origin), (TeeError::OutOfMemory, Origin::Api));
    // Shared memory that wraps the address space.
    let err = ctx
        .register_shared_memory(u64::MAX - 100, 8192)
        .unwrap_err();
    assert_eq!(
        (err.code, err.origin),
        (TeeError::BadParameters, Origin::Api)
    );
}

/// A TA that returns the sealing key it is given for a fixed label.
struct KeyProbe(Uuid);

impl lvbs_tee::TrustedApp for KeyProbe {
    fn uuid(&self) -> Uuid {
        self.0
    }
    fn name(&self) -> &'static str {
        "key-probe"
    }
    fn open_session(
        &mut self,
        _env: &mut lvbs_tee::TaEnv<'_>,
        _session: u32,
        _client: &lvbs_tee::ClientIdentity,
        _params: &mut lvbs_tee::Params,
    ) -> Result<(), TeeError> {
        Ok(())
    }
    fn invoke(
        &mut self,
        env: &mut lvbs_tee::TaEnv<'_>,
        _session: u32,
        _client: &lvbs_tee::ClientIdentity,
        _cmd: u32,
        p: &mut lvbs_tee::Params,
    ) -> Result<(), TeeError> {
        let k = env.sealing_key(b"same label");
        p.set_memref(0, &k[..])
    }
    fn close_session(&mut self, _env: &mut lvbs_tee::TaEnv<'_>, _session: u32) {}
}

fn probe_keys(measurement: lvbs_tee::Measurement) -> Vec<Vec<u8>> {
    let ids = [Uuid::from_bytes([1; 16]), Uuid::from_bytes([2; 16])];
    let mut tee = lvbs_tee::Tee::new(platform(19, measurement), Limits::default());
    for id in ids {
        tee.register_app(Box::new(KeyProbe(id))).unwrap();
    }
    assert!(
        tee.register_app(Box::new(KeyProbe(ids[0]))).is_err(),
        "duplicate UUID"
    );
    let t = lvbs_tee::client::Loopback {
        tee,
        mem: lvbs_tee::VecMemory::new(MEM_BASE, MEM_LEN),
    };
    let mut ctx = lvbs_tee::client::Context::initialize(t, MEM_BASE, SCRATCH_LEN).unwrap();
    ids.iter()
        .map(|id| {
            let s = ctx.open_session(id, &mut Operation::default()).unwrap();
            let o = invoke(&mut ctx, &s, 0, [P::temp_out(32), none(), none(), none()]).unwrap();
            o.params[0].output().to_vec()
        })
        .collect()
}

#[test]
fn ta_keys_are_private_to_each_ta_and_image() {
    let a = probe_keys(MEASUREMENT);
    assert_eq!(a[0].len(), 32);
    // Same label, different TA: different keys.
    assert_ne!(a[0], a[1]);
    // Same TA, same image, new instance: same key; another image: different.
    assert_eq!(probe_keys(MEASUREMENT), a);
    let mut other = MEASUREMENT;
    other[10] ^= 1;
    let b = probe_keys(other);
    assert_ne!(b[0], a[0]);
    assert_ne!(b[1], a[1]);
}

#[test]
fn noncontiguous_temporary_memref() {
    let mut ctx = context(20);
    let s = open(&mut ctx, &log::UUID);
    // A 300-byte record that starts 100 bytes before the end of one page and
    // continues at the start of a lower page; the page list sits elsewhere.
    let (p0, p1, list) = (SHARED + 0x3000, SHARED + 0x1000, SHARED + 0x5000);
    let rec: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    let mut page = vec![0u8; 4096];
    page[..8].copy_from_slice(&p0.to_le_bytes());
    page[8..16].copy_from_slice(&p1.to_le_bytes());
    {
        let m = &mut ctx.transport_mut().mem;
        m.write(list, &page).unwrap();
        m.write(p0 + 4096 - 100, &rec[..100]).unwrap();
        m.write(p1, &rec[100..]).unwrap();
    }
    let msg = MsgArg {
        header: MsgHeader {
            func: log::cmd::APPEND,
            ..hdr(cmd::INVOKE_COMMAND, s.id())
        },
        params: vec![
            MsgParam::Tmem {
                dir: Direction::Input,
                buf_ptr: list + 4096 - 100,
                size: 300,
                shm_ref: 0,
                noncontig: true,
            }
            .encode(false),
            MsgParam::Value {
                dir: Direction::Output,
                a: 0,
                b: 0,
                c: 0,
            }
            .encode(false),
        ],
    };
    let (status, reply) = ctx.call_raw(&msg).unwrap();
    assert_eq!((status, reply.header.ret), (smc::RETURN_OK, 0));
    let o = invoke(
        &mut ctx,
        &s,
        log::cmd::READ,
        [P::value_in(0, 0), P::temp_out(1024), none(), none()],
    )
    .unwrap();
    assert_eq!(&o.params[1].output()[log::ENTRY_HEADER..], &rec[..]);
    // A page list entry that is not page aligned is refused.
    page[8..16].copy_from_slice(&(p1 + 8).to_le_bytes());
    ctx.transport_mut().mem.write(list, &page).unwrap();
    let (_, reply) = ctx.call_raw(&msg).unwrap();
    assert_eq!(reply.header.ret, TeeError::BadParameters.code());
    // A buffer larger than the memref cap is refused before its list is walked.
    let mut two = msg.clone();
    two.params[0] = MsgParam::Tmem {
        dir: Direction::Input,
        buf_ptr: list + 4096 - 100,
        size: 600 * 4096,
        shm_ref: 0,
        noncontig: true,
    }
    .encode(false);
    let (_, reply) = ctx.call_raw(&two).unwrap();
    assert_eq!(reply.header.ret, TeeError::ExcessData.code());
}
