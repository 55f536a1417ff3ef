//! The TEE behind the HEKI service (`paravisor::tee`): the GlobalPlatform-
//! shaped client of `lvbs_tee` drives the four trusted applications through
//! real VMCALL exits of the scripted L2, with its SMC-argument pages,
//! messages and buffers in L2 memory, against the TDX-module model.
//!
//! Layout: the HEKI scenarios' guest memory `[GUEST_START, GUEST_END)`
//! (aliased R|W|Xs|Xu), everything below it and the MMIO page paravisor
//! memory. The client's scratch area and a shared-memory buffer sit in guest
//! memory.

use crate::harness::*;
use crate::heki::{alias_guest_memory, heki_config, service, GUEST_END, GUEST_START};
use heki_tdx::abi::HekiCall;
use lvbs_tee::client::{ClientError, ClientParam as P, Context, Operation, Session, Transport};
use lvbs_tee::msg::{cmd, smc, Direction, MsgArg, MsgHeader, MsgParam};
use lvbs_tee::ta::{credential, key_manager as km, secure_log as slog, vhsm};
use lvbs_tee::{GuestMemory, MemError, Origin, TeeError, Uuid};
use paravisor::heki::HekiService;
use paravisor::measure::{Event, MeasureBuffers, MeasuredBoot};
use paravisor::tee::{
    measurement, report_fields, TeeConfig, TeeService, EOPNOTSUPP, OPTEE_CALL_ID,
};
use paravisor::{HypercallArgs, HypercallContext, HypercallHandler, Vcpu, ENOSYS};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use tdcall::attr::{AttrWrFlags, GpaAttr, GpaMapping, L2Attr, PageLevel};
use tdcall::leaf::Leaf;
use tdcall::leaves::MemPageAttrWr;
use tdcall::vmx::reason;
use tdcall::L2Vm;
use tdx_model::engine::L2Action;
use tdx_model::TdConfig;

/// The client's scratch area (SMC page, message, bounce buffers, page lists).
const SCRATCH: u64 = 0x68_0000;
const SCRATCH_LEN: u64 = 16 * 4096;
/// A buffer for registered shared memory.
const SHARED: u64 = 0x6C_0000;
/// A page the scenarios make read-only for L2 (as a HEKI-sealed page is).
const RO_PAGE: u64 = 0x6F_0000;
/// A paravisor page (below guest memory) that nothing else uses.
const PRIVATE_PAGE: u64 = 0x5000;
/// The paravisor's TDREPORT/RTMR buffers.
const MEASURE_PAGE: u64 = 0x6000;
/// The probe echo, as the boot crate serves it after the TEE.
const ECHO_ID: u64 = 0x1_FFFF;
const ECHO_XOR: u64 = 0x5A5A_5A5A;

/// Answers the probe echo; `-ENOSYS` for anything else.
#[derive(Debug, Default)]
struct Echo {
    calls: u64,
}

impl HypercallHandler for Echo {
    fn handle(&mut self, _: &mut HypercallContext<'_>, args: &HypercallArgs) -> u64 {
        self.calls += 1;
        if args.id == ECHO_ID {
            args.a1 ^ ECHO_XOR
        } else {
            ENOSYS
        }
    }
}

type Service = HekiService<TeeService<ChaCha20Rng, Echo>>;

/// A TD whose L2 issues the VMCALLs the client asks for, one TDG.VP.ENTER
/// per call, with HEKI → TEE → echo as the hypercall chain.
struct Rig {
    td: Td,
    vcpu: Vcpu,
    svc: Service,
}

/// What a TD booted: its MRTD and the L2 kernel the paravisor measured into
/// RTMR1.
#[derive(Clone, Copy)]
struct Image {
    mrtd: [u8; 48],
    kernel: &'static [u8],
}

const IMAGE: Image = Image {
    mrtd: [0xA5; 48],
    kernel: b"kernel",
};

impl Rig {
    /// A TD that booted `image`: RTMR1 extended with the kernel's boot event;
    /// when `start`, the TEE is started from a TDREPORT (TDG.MR.REPORT) with
    /// a ChaCha20 RNG seeded with `seed`.
    fn new(image: Image, seed: u64, start: bool) -> Rig {
        let mut c = TdConfig::new(MEMORY);
        c.accepted_bytes = ACCEPTED;
        c.mrtd = image.mrtd;
        let mut td = Td::with_config(c, tdx_model::engine::ScriptedEngine::new(CODE));
        alias_guest_memory(&mut td);
        let vcpu = boot(&mut td, &heki_config());
        let heki = service();
        let tee = TeeService::new(TeeConfig::from_heki(heki.config()), Echo::default());
        let mut svc = heki.with_next(tee);
        if start {
            let mut mb = MeasuredBoot::new(MeasureBuffers::in_page(MEASURE_PAGE)).unwrap();
            mb.extend(&mut td, Event::kernel(CODE, image.kernel))
                .unwrap();
            let report = mb.report(&mut td, &[0; 64]).unwrap();
            let got = svc
                .next
                .start(&report, ChaCha20Rng::seed_from_u64(seed), &[]);
            let [mrtd, rtmr0, rtmr1] = report_fields(&report);
            assert_eq!(mrtd, image.mrtd);
            assert_eq!(rtmr0, [0; 48]);
            assert_ne!(rtmr1, [0; 48]);
            assert_eq!(got, measurement(&mrtd, &rtmr0, &rtmr1));
        }
        Rig { td, vcpu, svc }
    }

    fn started(seed: u64) -> Rig {
        Rig::new(IMAGE, seed, true)
    }

    /// Makes `page` read-only (R|Xs|Xu, no W) for VM 1.
    fn make_read_only(&mut self, page: u64) {
        let attr = L2Attr::VALID
            .union(L2Attr::R)
            .union(L2Attr::XS)
            .union(L2Attr::XU);
        let req = MemPageAttrWr {
            mapping: GpaMapping::new(page, PageLevel::Size4K),
            attr: GpaAttr::for_vm(L2Vm::Vm1, attr),
            flags: AttrWrFlags::for_vm(L2Vm::Vm1, L2Attr::PRESENT, true),
        };
        tdcall::call(&mut self.td, &req).unwrap();
    }

    fn vmcall_exits(&self) -> u64 {
        self.vcpu.stats.count(reason::VMCALL)
    }

    fn tdcalls(&self, leaf: Leaf) -> u64 {
        self.td
            .0
            .stats()
            .tdcalls
            .get(&(leaf as u16))
            .copied()
            .unwrap_or(0)
    }
}

impl GuestMemory for Rig {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let len = buf.len() as u64;
        self.td
            .0
            .read_memory(gpa, buf)
            .map_err(|_| MemError { gpa, len })
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        let len = data.len() as u64;
        self.td
            .0
            .write_memory(gpa, data)
            .map_err(|_| MemError { gpa, len })
    }
    fn check(&self, _: u64, _: u64) -> Result<(), MemError> {
        Ok(())
    }
}

impl Transport for Rig {
    fn memory(&mut self) -> &mut dyn GuestMemory {
        self
    }

    /// Appends `mov rdi/rsi/rdx/r8; vmcall` to the script and runs one entry.
    fn vtl_call(&mut self, a0: u64, a1: u64, a2: u64, a3: u64) -> i64 {
        let before = self.vmcall_exits();
        self.td.0.engine.extend([
            L2Action::SetGpr { gpr: 7, value: a0 },
            L2Action::SetGpr { gpr: 6, value: a1 },
            L2Action::SetGpr { gpr: 2, value: a2 },
            L2Action::SetGpr { gpr: 8, value: a3 },
            L2Action::Vmcall,
        ]);
        step(&mut self.td, &mut self.vcpu, &mut self.svc).expect("the VMCALL is handled");
        assert_eq!(self.vmcall_exits(), before + 1, "one VMCALL exit per call");
        self.vcpu.state.gprs[8] as i64
    }
}

type Ctx = Context<Rig>;

fn context(rig: Rig) -> Ctx {
    Context::initialize(rig, SCRATCH, SCRATCH_LEN).expect("initialize over VMCALL")
}

fn open(ctx: &mut Ctx, ta: &Uuid) -> Session {
    ctx.open_session(ta, &mut Operation::default())
        .expect("open session")
}

fn invoke(
    ctx: &mut Ctx,
    s: &Session,
    command: u32,
    params: [P; 4],
) -> Result<Operation, ClientError> {
    let mut o = Operation::new(params);
    ctx.invoke_command(s, command, &mut o).map(|()| o)
}

fn none() -> P {
    P::None
}

fn err(code: TeeError, origin: Origin) -> ClientError {
    ClientError { code, origin }
}

/// `rdi = id, rsi = a1` through the rig, as a raw LVBS call.
fn raw(rig: &mut Rig, id: u64, a1: u64) -> i64 {
    rig.vtl_call(id, a1, 0, 0)
}

#[test]
fn the_chain_keeps_heki_and_the_echo() {
    let mut rig = Rig::started(1);
    assert_eq!(raw(&mut rig, ECHO_ID, 0x1234) as u64, 0x1234 ^ ECHO_XOR);
    assert_eq!(raw(&mut rig, 0x7777, 0) as u64, ENOSYS);
    // A HEKI call is still HEKI's: SIGNAL_END_OF_BOOT succeeds, and then the
    // boot-only calls are refused while the TEE keeps working.
    assert_eq!(raw(&mut rig, HekiCall::SignalEndOfBoot.id() as u64, 0), 0);
    assert!(rig.svc.boot_ended());
    assert_eq!(rig.svc.next.next.calls, 2, "echo and the unknown id");
    let mut ctx = context(rig);
    let s = open(&mut ctx, &vhsm::UUID);
    let o = invoke(
        &mut ctx,
        &s,
        vhsm::cmd::GENERATE_RANDOM,
        [P::value_in(32, 0), P::temp_out(32), none(), none()],
    )
    .unwrap();
    assert_eq!(o.params[1].output().len(), 32);
    let rig = ctx.finalize();
    assert_eq!(rig.svc.next.stats.errors, 0);
    assert!(rig.svc.next.stats.calls >= 5);
}

#[test]
fn before_start_the_call_is_not_supported() {
    let mut rig = Rig::new(IMAGE, 1, false);
    assert_eq!(
        raw(&mut rig, OPTEE_CALL_ID, SCRATCH >> 12) as u64,
        EOPNOTSUPP
    );
    assert_eq!(raw(&mut rig, ECHO_ID, 1) as u64, 1 ^ ECHO_XOR);
}

#[test]
fn every_ta_through_vmcall_exits() {
    let mut ctx = context(Rig::started(2));
    assert_eq!(
        ctx.capabilities(),
        smc::SEC_CAP_DYNAMIC_SHM | smc::SEC_CAP_MEMREF_NULL
    );

    // Secure log: append, export into registered shared memory, verify the
    // chain outside, and catch a tampered copy.
    let log = open(&mut ctx, &slog::UUID);
    for rec in [&b"boot"[..], b"heki: end of boot", b"tee: up"] {
        invoke(
            &mut ctx,
            &log,
            slog::cmd::APPEND,
            [P::temp_in(rec), P::value_out(), none(), none()],
        )
        .unwrap();
    }
    let o = invoke(
        &mut ctx,
        &log,
        slog::cmd::HEAD,
        [P::value_out(), P::temp_out(64), none(), none()],
    )
    .unwrap();
    let head = o.params[1].output().to_vec();
    let m = *ctx.transport_mut().svc.next.measurement().unwrap();
    assert_eq!(
        head[..32],
        slog::genesis(&m),
        "the chain starts at the measurement"
    );
    let shm = ctx.register_shared_memory(SHARED + 0x10, 8192).unwrap();
    let o = invoke(
        &mut ctx,
        &log,
        slog::cmd::EXPORT,
        [
            P::value_in(0, 10),
            P::whole(&shm, Direction::Output),
            none(),
            none(),
        ],
    )
    .unwrap();
    let n = o.params[1].size().unwrap() as usize;
    let bytes = ctx.read_shared(&shm, 0, n).unwrap();
    let genesis: [u8; 32] = head[..32].try_into().unwrap();
    let head_hash: [u8; 32] = head[32..].try_into().unwrap();
    let v = slog::verify_export(&bytes, 0, &genesis, Some(&head_hash)).unwrap();
    assert_eq!(v.records[1], b"heki: end of boot");
    let mut forged = bytes.clone();
    forged[slog::ENTRY_HEADER] ^= 1;
    assert!(slog::verify_export(&forged, 0, &genesis, Some(&head_hash)).is_err());
    ctx.release_shared_memory(shm).unwrap();

    // Key manager: sign and verify; a wrong message does not verify.
    let kms = open(&mut ctx, &km::UUID);
    let o = invoke(
        &mut ctx,
        &kms,
        km::cmd::GENERATE,
        [
            P::value_in(km::key_type::ECDSA_P256, 0),
            P::value_out(),
            none(),
            none(),
        ],
    )
    .unwrap();
    let h = o.params[1].value().unwrap().0;
    let o = invoke(
        &mut ctx,
        &kms,
        km::cmd::SIGN,
        [P::value_in(h, 0), P::temp_in(b"m"), P::temp_out(64), none()],
    )
    .unwrap();
    let sig = o.params[2].output().to_vec();
    invoke(
        &mut ctx,
        &kms,
        km::cmd::VERIFY,
        [
            P::value_in(h, 0),
            P::temp_in(b"m"),
            P::temp_in(&sig),
            none(),
        ],
    )
    .unwrap();
    assert_eq!(
        invoke(
            &mut ctx,
            &kms,
            km::cmd::VERIFY,
            [
                P::value_in(h, 0),
                P::temp_in(b"M"),
                P::temp_in(&sig),
                none()
            ]
        )
        .unwrap_err(),
        err(TeeError::SignatureInvalid, Origin::TrustedApp)
    );

    // Credential manager: lockout after the limit.
    let cm = open(&mut ctx, &credential::UUID);
    invoke(
        &mut ctx,
        &cm,
        credential::cmd::ENROLL,
        [
            P::temp_in(b"root"),
            P::temp_in(b"pw"),
            P::value_in(1, 0),
            none(),
        ],
    )
    .unwrap();
    let verify = |ctx: &mut Ctx, secret: &[u8]| {
        invoke(
            ctx,
            &cm,
            credential::cmd::VERIFY,
            [P::temp_in(b"root"), P::temp_in(secret), none(), none()],
        )
        .map(|_| ())
    };
    verify(&mut ctx, b"pw").unwrap();
    assert_eq!(
        verify(&mut ctx, b"no"),
        Err(err(TeeError::AccessDenied, Origin::TrustedApp))
    );
    assert_eq!(
        verify(&mut ctx, b"pw"),
        Err(err(TeeError::BadState, Origin::TrustedApp))
    );

    // Virtual HSM: the no-op command and random bytes.
    let hsm = open(&mut ctx, &vhsm::UUID);
    invoke(
        &mut ctx,
        &hsm,
        vhsm::cmd::GET_INFO,
        [P::value_out(), P::value_out(), none(), none()],
    )
    .unwrap();

    // Wrong session and oversize buffer.
    assert_eq!(
        invoke(
            &mut ctx,
            &Session::from_raw(0xDEAD),
            vhsm::cmd::GET_INFO,
            [P::value_out(), P::value_out(), none(), none()]
        )
        .unwrap_err(),
        err(TeeError::ItemNotFound, Origin::Tee)
    );
    assert_eq!(
        invoke(
            &mut ctx,
            &log,
            slog::cmd::APPEND,
            [
                P::temp_in(&[0; slog::MAX_RECORD + 1]),
                P::value_out(),
                none(),
                none()
            ]
        )
        .unwrap_err(),
        err(TeeError::ExcessData, Origin::TrustedApp)
    );
    for s in [log, kms, cm, hsm] {
        ctx.close_session(s).unwrap();
    }
    let rig = ctx.finalize();
    assert_eq!(rig.svc.next.tee().unwrap().session_count(), 0);
    assert_eq!(rig.svc.next.stats.errors, 0, "every call returned R8 = 0");
    assert_eq!(rig.vmcall_exits(), rig.svc.next.stats.calls);
}

/// Seals a P-256 key in a TD that booted `image`; returns the blob and the
/// public key.
fn seal_in(image: Image) -> (Vec<u8>, Vec<u8>) {
    let mut ctx = context(Rig::new(image, 3, true));
    let s = open(&mut ctx, &km::UUID);
    let o = invoke(
        &mut ctx,
        &s,
        km::cmd::GENERATE,
        [
            P::value_in(km::key_type::ECDSA_P256, 0),
            P::value_out(),
            none(),
            none(),
        ],
    )
    .unwrap();
    let h = o.params[1].value().unwrap().0;
    let o = invoke(
        &mut ctx,
        &s,
        km::cmd::GET_PUBLIC,
        [P::value_in(h, 0), P::temp_out(128), none(), none()],
    )
    .unwrap();
    let public = o.params[1].output().to_vec();
    let o = invoke(
        &mut ctx,
        &s,
        km::cmd::SEAL_KEY,
        [P::value_in(h, 0), P::temp_out(256), none(), none()],
    )
    .unwrap();
    (o.params[1].output().to_vec(), public)
}

fn unseal_in(image: Image, blob: &[u8]) -> Result<Vec<u8>, ClientError> {
    let mut ctx = context(Rig::new(image, 4, true));
    let s = open(&mut ctx, &km::UUID);
    let o = invoke(
        &mut ctx,
        &s,
        km::cmd::UNSEAL_KEY,
        [P::temp_in(blob), P::value_out(), none(), none()],
    )?;
    let h = o.params[1].value().unwrap().0;
    let o = invoke(
        &mut ctx,
        &s,
        km::cmd::GET_PUBLIC,
        [P::value_in(h, 0), P::temp_out(128), none(), none()],
    )?;
    Ok(o.params[1].output().to_vec())
}

#[test]
fn sealed_keys_follow_the_measurement() {
    let (blob, public) = seal_in(IMAGE);
    // The same image (a restart: new TD, new RNG seed) unseals the same key.
    assert_eq!(unseal_in(IMAGE, &blob).unwrap(), public);
    // Another paravisor (MRTD) or another L2 kernel (RTMR1) does not.
    let mut other_mrtd = IMAGE;
    other_mrtd.mrtd[47] ^= 1;
    let other_kernel = Image {
        kernel: b"kernel, patched",
        ..IMAGE
    };
    for other in [other_mrtd, other_kernel] {
        assert_eq!(
            unseal_in(other, &blob).unwrap_err(),
            err(TeeError::MacInvalid, Origin::TrustedApp)
        );
    }
}

/// Sends `arg` with the SMC page and message in the scratch area.
fn call_raw(ctx: &mut Ctx, arg: &MsgArg) -> (u64, MsgArg) {
    ctx.call_raw(arg).expect("transport works")
}

fn invoke_arg(session: u32, func: u32, params: &[MsgParam]) -> MsgArg {
    MsgArg {
        header: MsgHeader {
            cmd: cmd::INVOKE_COMMAND,
            func,
            session,
            ..MsgHeader::default()
        },
        params: params.iter().map(|p| p.encode(false)).collect(),
    }
}

#[test]
fn paravisor_memory_and_read_only_pages_are_refused() {
    let mut rig = Rig::started(5);
    rig.make_read_only(RO_PAGE);
    // The argument page in paravisor memory or outside guest memory:
    // -EFAULT, nothing read or written.
    let pattern = [0x3Cu8; 4096];
    rig.td.0.write_memory(PRIVATE_PAGE, &pattern).unwrap();
    assert_eq!(raw(&mut rig, OPTEE_CALL_ID, PRIVATE_PAGE >> 12), -14);
    assert_eq!(raw(&mut rig, OPTEE_CALL_ID, GUEST_END >> 12), -14);
    assert_eq!(raw(&mut rig, OPTEE_CALL_ID, (GUEST_START >> 12) - 1), -14);
    let mut after = [0u8; 4096];
    rig.td.0.read_memory(PRIVATE_PAGE, &mut after).unwrap();
    assert!(after == pattern, "the private page is untouched");
    // A read-only argument page: the reply cannot be written.
    rig.td.0.write_memory(RO_PAGE, &[0; 72]).unwrap();
    assert_eq!(raw(&mut rig, OPTEE_CALL_ID, RO_PAGE >> 12), -14);
    assert_eq!(raw(&mut rig, OPTEE_CALL_ID, u64::MAX), -22);

    let mut ctx = context(rig);
    let s = open(&mut ctx, &vhsm::UUID);
    let secret = [0x77u8; 64];
    ctx.transport_mut()
        .td
        .0
        .write_memory(VAPIC, &secret)
        .unwrap();
    let tmem = |dir, buf_ptr, size| MsgParam::Tmem {
        dir,
        buf_ptr,
        size,
        shm_ref: 0,
        noncontig: false,
    };
    // Output into the vAPIC page, into the read-only page, and across the
    // end of guest memory; input from the vAPIC page: BAD_PARAMETERS (COMMS).
    for (dir, ptr) in [
        (Direction::Output, VAPIC),
        (Direction::Output, RO_PAGE),
        (Direction::Output, GUEST_END - 16),
        (Direction::Input, VAPIC),
    ] {
        let arg = invoke_arg(
            s.id(),
            vhsm::cmd::GENERATE_RANDOM,
            &[
                MsgParam::Value {
                    dir: Direction::Input,
                    a: 32,
                    b: 0,
                    c: 0,
                },
                tmem(dir, ptr, 32),
            ],
        );
        let (status, reply) = call_raw(&mut ctx, &arg);
        assert_eq!(status, smc::RETURN_OK);
        assert_eq!(
            (reply.header.ret, reply.header.ret_origin),
            (TeeError::BadParameters.code(), Origin::Comms as u32),
            "{dir:?} at {ptr:#x}"
        );
    }
    let rig = ctx.transport_mut();
    let mut back = [0u8; 64];
    rig.td.0.read_memory(VAPIC, &mut back).unwrap();
    assert!(back == secret, "the vAPIC page is untouched");
    rig.td.0.read_memory(RO_PAGE, &mut back).unwrap();
    assert!(back == [0; 64], "the read-only page is untouched");

    // Registering shared memory over paravisor memory is refused too.
    let e = ctx.register_shared_memory(VAPIC, 4096).unwrap_err();
    assert_eq!(e, err(TeeError::BadParameters, Origin::Comms));
}

#[test]
fn a_noop_invoke_is_one_exit() {
    let mut ctx = context(Rig::started(6));
    let s = open(&mut ctx, &vhsm::UUID);
    let noop = |ctx: &mut Ctx| {
        invoke(
            ctx,
            &s,
            vhsm::cmd::GET_INFO,
            [P::value_out(), P::value_out(), none(), none()],
        )
        .unwrap();
    };
    noop(&mut ctx);
    let rig = ctx.transport_mut();
    let (exits, enters, attr_reads, vmcalls) = (
        rig.vmcall_exits(),
        rig.tdcalls(Leaf::VpEnter),
        rig.tdcalls(Leaf::MemPageAttrRd),
        rig.tdcalls(Leaf::VpVmcall),
    );
    const N: u64 = 10;
    for _ in 0..N {
        noop(&mut ctx);
    }
    let rig = ctx.transport_mut();
    assert_eq!(rig.vmcall_exits() - exits, N, "one L2 exit per round trip");
    assert_eq!(rig.tdcalls(Leaf::VpEnter) - enters, N, "one TDG.VP.ENTER");
    assert_eq!(rig.tdcalls(Leaf::VpVmcall) - vmcalls, 0, "no host call");
    // The SMC page and the message share the scratch area's first two
    // pages: two attribute reads per call.
    assert_eq!(rig.tdcalls(Leaf::MemPageAttrRd) - attr_reads, 2 * N);
}
