//! The TEE client scenarios, in the order they run:
//!
//! 1. transport: context initialisation (API UID, revision, capabilities),
//!    an unknown TA, a malformed message, an unknown command, argument pages
//!    and memory references the paravisor must refuse (its own memory, the
//!    read-only test page, an impossible PFN);
//! 2. one block per TA ([`tas`]): secure log, key manager, credential
//!    manager, virtual HSM — each with its negative tests (wrong session,
//!    oversize buffer, and the TA's own: tampered log chain, tampered sealed
//!    blob, lockout, login);
//! 3. isolation ([`isolation`]): the test image's isolation test TA attacks
//!    the paravisor, its own code and another TA from ring 3; each attack
//!    must end only that instance, and the other TAs keep their state;
//! 4. the benchmark: the probe echo (a bare L2 → L1 → L2 VMCALL) and a
//!    no-op INVOKE_COMMAND (vHSM GET_INFO), each N times between two writes
//!    to the emulator's statistics-mark port.
//!
//! The key manager seals a key and prints it as `tee: sealed-key <hex>`.
//! `cargo xtask tee` patches that blob into a copy of this ELF (a different
//! L2 image, so a different RTMR1 and sealing measurement) and boots it: the
//! guest then only runs the cross-measurement checks
//! ([`tas::other_measurement`]).
//!
//! Memory (offsets in the L2 region): image from 0 (below the RO test page
//! at 0x1F_0000), heap at [`HEAP_OFFSET`], the client's scratch area at
//! [`SCRATCH_OFFSET`], shared buffers at [`SHARED_OFFSET`].

mod isolation;
mod transport;

use guest_rt::checks::{check, finish};
use guest_rt::{cpu, fault, say};
use lvbs_tee::client::{ClientParam as P, Context, Operation};
use lvbs_tee::msg::{cmd, smc, Direction, MsgArg, MsgHeader, MsgParam, OPTEE_MESSAGE_FUNC_ID};
use lvbs_tee::ta::vhsm;
use lvbs_tee::{Origin, TeeError, Uuid};

use transport::{Vmcall, Window};

guest_rt::entry!(main);

/// The RO test page (contract): R|Xu, sealed by the HEKI service.
const RO_TEST_PAGE_OFFSET: u64 = 0x1F_0000;
/// Heap: 4 MiB.
const HEAP_OFFSET: u64 = 0x40_0000;
const HEAP_SIZE: u64 = 0x40_0000;
/// The client's scratch area: SMC page, message, bounce buffers, page lists.
const SCRATCH_OFFSET: u64 = 0x80_0000;
const SCRATCH_LEN: u64 = 16 * 4096;
/// Shared-memory buffers (registered with the TEE).
const SHARED_OFFSET: u64 = 0x90_0000;
const SHARED_LEN: u64 = 0x8_0000;
/// The paravisor image (contract): never reachable through the TEE.
const PARAVISOR_GPA: u64 = 0x20_0000;
/// The probe echo (contract).
const ECHO_ID: u64 = 0x1_FFFF;
const ECHO_XOR: u64 = 0x5A5A_5A5A;
/// Round trips per benchmark.
const BENCH_N: u32 = 200;
/// Round trips per benchmark while the emulator counts L1's instructions.
const COUNTED_N: u32 = 20;

const EFAULT: i64 = -14;
const EINVAL: i64 = -22;

extern "C" {
    static __tee_guest_image_end: u8;
}

type Ctx = Context<Vmcall>;

pub use lvbs_tee_scenarios::{check_err, check_ok, invoke, none, open, tas, Hex, Layout, E};

/// The scenarios' results go to the guest runtime's console and counters.
static SINK: lvbs_tee_scenarios::Sink = lvbs_tee_scenarios::Sink {
    check,
    say: |a| say!("{a}"),
};

fn main(boot: guest_rt::Boot) -> ! {
    guest_rt::console::set_prefix("tee");
    lvbs_tee_scenarios::set_sink(&SINK);
    let base = boot.l2_base;
    // SAFETY: the heap range lies inside the L2 region, above the image
    // (checked below before anything allocates) and below the scratch area;
    // nothing else uses it.
    unsafe { guest_rt::heap::init(base + HEAP_OFFSET, HEAP_SIZE) };
    say!(
        "hello from L2: region {base:#x}+{:#x}, RSP {:#x}",
        boot.l2_size,
        boot.entry_rsp
    );
    let image_end = (&raw const __tee_guest_image_end) as u64;
    check(
        "image_below_ro_page",
        image_end <= base + RO_TEST_PAGE_OFFSET,
        format_args!("image ends at {image_end:#x}"),
    );
    let f = fault::ud2();
    check(
        "rt_fault_resume",
        matches!(f, Some(f) if f.vector == 6),
        format_args!("ud2: {f:?}"),
    );

    let layout = Layout {
        base,
        scratch: base + SCRATCH_OFFSET,
        shared: base + SHARED_OFFSET,
    };
    let transport = Vmcall {
        mem: Window::new(layout.scratch, layout.shared + SHARED_LEN),
        calls: 0,
    };
    let mut ctx = match Context::initialize(transport, layout.scratch, SCRATCH_LEN) {
        Ok(ctx) => {
            check(
                "tee_initialize",
                ctx.capabilities() == smc::SEC_CAP_DYNAMIC_SHM | smc::SEC_CAP_MEMREF_NULL,
                format_args!(
                    "API UID and revision 2.x, capabilities {:#x}",
                    ctx.capabilities()
                ),
            );
            ctx
        }
        Err(e) => {
            check("tee_initialize", false, format_args!("{}", E(e)));
            finish(0)
        }
    };

    if let Some(blob) = transport::sealed_in() {
        say!(
            "second run: a blob sealed by another image ({} bytes)",
            blob.len()
        );
        tas::other_measurement(&mut ctx, &blob);
        finish(0)
    }

    transport_checks(&mut ctx, &layout);
    tas::secure_log(&mut ctx, &layout);
    tas::key_manager(&mut ctx, &layout);
    tas::credential_manager(&mut ctx);
    tas::virtual_hsm(&mut ctx);
    shared_memory_checks(&mut ctx, &layout);
    isolation::isolation(&mut ctx);
    bench(&mut ctx);
    say!("{} VMCALLs issued", ctx.transport_mut().calls);
    finish(0)
}

fn tmem(dir: Direction, buf_ptr: u64, size: u64) -> MsgParam {
    MsgParam::Tmem {
        dir,
        buf_ptr,
        size,
        shm_ref: 0,
        noncontig: false,
    }
}

fn value_in(a: u64) -> MsgParam {
    MsgParam::Value {
        dir: Direction::Input,
        a,
        b: 0,
        c: 0,
    }
}

/// The transport and the core's refusals.
fn transport_checks(ctx: &mut Ctx, layout: &Layout) {
    let unknown = Uuid::from_fields(0x0bad_0bad, 1, 2, [3; 8]);
    check_err(
        "tee_unknown_ta",
        ctx.open_session(&unknown, &mut Operation::default()),
        TeeError::ItemNotFound,
        Origin::Tee,
    );

    // Seven parameters (more than OP-TEE's six): BAD_PARAMETERS from COMMS.
    let bad = MsgArg {
        header: MsgHeader {
            cmd: cmd::INVOKE_COMMAND,
            ..MsgHeader::default()
        },
        params: (0..7).map(|_| MsgParam::None.encode(false)).collect(),
    };
    match ctx.call_raw(&bad) {
        Ok((status, reply)) => check(
            "tee_malformed_message",
            status == smc::RETURN_OK
                && reply.header.ret == TeeError::BadParameters.code()
                && reply.header.ret_origin == Origin::Comms as u32,
            format_args!(
                "7 parameters: status {status:#x}, ret {:#x} origin {}",
                reply.header.ret, reply.header.ret_origin
            ),
        ),
        Err(e) => check("tee_malformed_message", false, format_args!("{}", E(e))),
    };
    let unknown_cmd = MsgArg {
        header: MsgHeader {
            cmd: 0x77,
            ..MsgHeader::default()
        },
        params: alloc::vec::Vec::new(),
    };
    match ctx.call_raw(&unknown_cmd) {
        Ok((status, reply)) => check(
            "tee_unknown_command",
            status == smc::RETURN_EBADCMD && reply.header.ret == TeeError::NotImplemented.code(),
            format_args!(
                "command 0x77: status {status:#x}, ret {:#x}",
                reply.header.ret
            ),
        ),
        Err(e) => check("tee_unknown_command", false, format_args!("{}", E(e))),
    };
    let r = ctx.smc([0xFFFF_0ABC, 0, 0, 0, 0, 0, 0, 0, 0]);
    check(
        "tee_unknown_smc_function",
        matches!(r, Ok(a) if a[0] == smc::RETURN_UNKNOWN_FUNCTION),
        format_args!("{:?}", r.map(|a| a[0])),
    );

    // The argument page must be L2 memory the guest may write.
    let pv = cpu::vmcall(OPTEE_MESSAGE_FUNC_ID, PARAVISOR_GPA >> 12, 0, 0) as i64;
    check(
        "tee_arg_page_in_paravisor_refused",
        pv == EFAULT,
        format_args!("PFN {:#x}: R8 {pv}", PARAVISOR_GPA >> 12),
    );
    let ro = layout.base + RO_TEST_PAGE_OFFSET;
    let r = cpu::vmcall(OPTEE_MESSAGE_FUNC_ID, ro >> 12, 0, 0) as i64;
    check(
        "tee_arg_page_read_only_refused",
        r == EFAULT,
        format_args!("RO test page PFN {:#x}: R8 {r}", ro >> 12),
    );
    let r = cpu::vmcall(OPTEE_MESSAGE_FUNC_ID, u64::MAX, 0, 0) as i64;
    check(
        "tee_arg_page_impossible_pfn",
        r == EINVAL,
        format_args!("PFN {:#x}: R8 {r}", u64::MAX),
    );

    // Memory references into paravisor memory or the RO test page.
    let Some(s) = open(ctx, "tee_open_vhsm", &vhsm::UUID) else {
        return;
    };
    let before = fault::read_u64(ro);
    for (name, dir, ptr) in [
        (
            "tee_output_into_paravisor_refused",
            Direction::Output,
            PARAVISOR_GPA,
        ),
        (
            "tee_input_from_paravisor_refused",
            Direction::Input,
            PARAVISOR_GPA,
        ),
        ("tee_output_into_ro_page_refused", Direction::Output, ro),
    ] {
        let arg = MsgArg {
            header: MsgHeader {
                cmd: cmd::INVOKE_COMMAND,
                func: vhsm::cmd::GENERATE_RANDOM,
                session: s.id(),
                ..MsgHeader::default()
            },
            params: alloc::vec![value_in(32).encode(false), tmem(dir, ptr, 32).encode(false)],
        };
        match ctx.call_raw(&arg) {
            Ok((status, reply)) => check(
                name,
                status == smc::RETURN_OK
                    && reply.header.ret == TeeError::BadParameters.code()
                    && reply.header.ret_origin == Origin::Comms as u32,
                format_args!(
                    "{dir:?} memref at {ptr:#x}: ret {:#x} origin {}",
                    reply.header.ret, reply.header.ret_origin
                ),
            ),
            Err(e) => check(name, false, format_args!("{}", E(e))),
        };
    }
    let after = fault::read_u64(ro);
    check(
        "tee_ro_page_unchanged",
        before.is_ok() && before == after,
        format_args!("{before:?} -> {after:?}"),
    );
    check_err(
        "tee_register_paravisor_memory_refused",
        ctx.register_shared_memory(PARAVISOR_GPA, 4096),
        TeeError::BadParameters,
        Origin::Comms,
    );
    let _ = ctx.close_session(s);
}

/// Registered shared memory: register, use, release, use after release.
fn shared_memory_checks(ctx: &mut Ctx, layout: &Layout) {
    let Some(s) = open(ctx, "shm_open_vhsm", &vhsm::UUID) else {
        return;
    };
    let Some(shm) = check_ok(
        "shm_register",
        ctx.register_shared_memory(layout.shared + 0x4_0123, 3 * 4096),
        "3 pages at an unaligned start",
    ) else {
        return;
    };
    let r = invoke(
        ctx,
        &s,
        vhsm::cmd::GENERATE_RANDOM,
        [
            P::value_in(64, 0),
            P::partial(&shm, Direction::Output, 4000, 64),
            none(),
            none(),
        ],
    );
    let got = ctx.read_shared(&shm, 4000, 64).unwrap_or_default();
    check(
        "shm_output_across_pages",
        r.is_ok() && got.iter().any(|b| *b != 0),
        format_args!("64 random bytes at offset 4000: {}", Hex(&got)),
    );
    check_ok("shm_release", ctx.release_shared_memory(shm), "released");
    check_err(
        "shm_use_after_release",
        invoke(
            ctx,
            &s,
            vhsm::cmd::GENERATE_RANDOM,
            [
                P::value_in(8, 0),
                P::partial(&shm, Direction::Output, 0, 8),
                none(),
                none(),
            ],
        ),
        TeeError::BadParameters,
        Origin::Tee,
    );
    check_err(
        "shm_double_release",
        ctx.release_shared_memory(shm),
        TeeError::ItemNotFound,
        Origin::Tee,
    );
    let _ = ctx.close_session(s);
}

/// The round-trip benchmark: the probe echo (one VMCALL, L2 → L1 → L2) and
/// the no-op INVOKE_COMMAND (vHSM GET_INFO: two value outputs), each
/// [`BENCH_N`] times between statistics marks. The emulator prints the
/// exits, TDCALLs and time per round trip (`emu: mark: …`).
/// Runs `op(i)` for `i` in `0..n` between two statistics marks, the first
/// of value `start` (0, or [`guest_rt::MARK_COUNT_L1`] to have the emulator
/// count L1's instructions too); returns whether every run succeeded and the
/// TSC ticks per run.
fn marked(start: u32, n: u32, mut op: impl FnMut(u64) -> bool) -> (bool, u64) {
    cpu::outl(guest_rt::STATS_MARK_PORT, start);
    let t0 = cpu::rdtsc();
    let mut ok = true;
    for i in 0..u64::from(n) {
        ok &= op(i);
    }
    let t1 = cpu::rdtsc();
    cpu::outl(guest_rt::STATS_MARK_PORT, n);
    (ok, (t1 - t0) / u64::from(n))
}

fn bench(ctx: &mut Ctx) {
    let echo = |i: u64| cpu::vmcall(ECHO_ID, i, 0, 0) == i ^ ECHO_XOR;
    let (echo_ok, ticks) = marked(0, BENCH_N, echo);
    check(
        "bench_echo_vmcall",
        echo_ok,
        format_args!("{BENCH_N} echo VMCALLs, {ticks} TSC ticks each"),
    );

    let Some(s) = open(ctx, "bench_open_vhsm", &vhsm::UUID) else {
        return;
    };
    let noop = |ctx: &mut Ctx| {
        invoke(
            ctx,
            &s,
            vhsm::cmd::GET_INFO,
            [P::value_out(), P::value_out(), none(), none()],
        )
        .is_ok()
    };
    let warm = noop(ctx);
    let (ok, ticks) = marked(0, BENCH_N, |_| noop(ctx));
    check(
        "bench_noop_invoke",
        warm && ok,
        format_args!(
            "{BENCH_N} INVOKE_COMMAND round trips (vHSM GET_INFO), {ticks} TSC ticks each"
        ),
    );
    // The same two round trips again, few of them, with the emulator
    // counting the paravisor's instructions (single-stepping L1).
    let (echo_ok, _) = marked(guest_rt::MARK_COUNT_L1, COUNTED_N, echo);
    check(
        "bench_echo_vmcall_counted",
        echo_ok,
        format_args!("{COUNTED_N} echo VMCALLs with L1 instructions counted"),
    );
    let (ok, _) = marked(guest_rt::MARK_COUNT_L1, COUNTED_N, |_| noop(ctx));
    check(
        "bench_noop_invoke_counted",
        ok,
        format_args!("{COUNTED_N} INVOKE_COMMAND round trips with L1 instructions counted"),
    );
    let _ = ctx.close_session(s);
}
