#![allow(dead_code)]

use std::cell::Cell;

use lvbs_tee::client::{ClientError, ClientParam, Context, Loopback, Operation, Session};
use lvbs_tee::sandbox::{IsolatedApp, LoopbackSandbox, SandboxServices};
use lvbs_tee::{
    Limits, Measurement, Origin, StaticPlatform, Tee, TeeError, TrustedApp, Uuid, VecMemory,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub type Plat = StaticPlatform<ChaCha20Rng>;
pub type Ctx = Context<Loopback<Plat>>;

/// Guest memory: 256 KiB at 1 MiB. The client's scratch area is the first
/// 16 pages; [`SHARED`] is free for shared-memory buffers.
pub const MEM_BASE: u64 = 0x10_0000;
pub const MEM_LEN: usize = 0x4_0000;
pub const SCRATCH_LEN: u64 = 16 * 4096;
pub const SHARED: u64 = MEM_BASE + SCRATCH_LEN;

pub const MEASUREMENT: Measurement = [0xA5; 48];
pub const ROOT: [u8; 32] = [0x5A; 32];

pub fn platform(seed: u64, measurement: Measurement) -> Plat {
    StaticPlatform {
        rng: ChaCha20Rng::seed_from_u64(seed),
        measurement,
        sealing_root: ROOT,
    }
}

thread_local! {
    static ISOLATED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `scenario` with every [`context_with`] TEE built from isolated-TA
/// proxies ([`lvbs_tee::sandbox::IsolatedApp`]) over in-process
/// [`LoopbackSandbox`]es: the same TA code behind the message format the
/// bare-metal paravisor uses between the core and a ring-3 instance.
pub fn isolated(scenario: fn()) {
    ISOLATED.with(|c| c.set(true));
    scenario();
    ISOLATED.with(|c| c.set(false));
}

fn builtin_ta(uuid: &Uuid, _aux: u64) -> Option<Box<dyn TrustedApp>> {
    lvbs_tee::ta::builtin()
        .into_iter()
        .find(|a| a.uuid() == *uuid)
}

struct NoServices;

impl SandboxServices for NoServices {
    fn random(&mut self, _: &mut [u8]) -> Result<(), TeeError> {
        Err(TeeError::Generic)
    }
}

fn isolated_tee(platform: Plat, limits: Limits) -> Tee<Plat> {
    let measurement = platform.measurement;
    let root = platform.sealing_root;
    let mut tee = Tee::new(platform, limits);
    for app in lvbs_tee::ta::builtin() {
        let ta_root = lvbs_tee::platform::ta_root_key(&root, &app.uuid());
        let proxy = IsolatedApp::start(
            LoopbackSandbox::new(&builtin_ta),
            app.uuid(),
            app.name(),
            &measurement,
            &ta_root,
            0,
            &mut NoServices,
        );
        assert!(!proxy.is_dead(), "{} did not start", app.name());
        tee.register_app(Box::new(proxy)).expect("distinct UUIDs");
    }
    tee
}

pub fn context_with(seed: u64, measurement: Measurement, limits: Limits) -> Ctx {
    let tee = if ISOLATED.with(Cell::get) {
        isolated_tee(platform(seed, measurement), limits)
    } else {
        Tee::with_builtin_apps(platform(seed, measurement), limits)
    };
    let transport = Loopback {
        tee,
        mem: VecMemory::new(MEM_BASE, MEM_LEN),
    };
    Context::initialize(transport, MEM_BASE, SCRATCH_LEN).expect("initialize")
}

pub fn context(seed: u64) -> Ctx {
    context_with(seed, MEASUREMENT, Limits::default())
}

pub fn op(params: [ClientParam; 4]) -> Operation {
    Operation::new(params)
}

pub fn none() -> ClientParam {
    ClientParam::None
}

pub fn open(ctx: &mut Ctx, ta: &Uuid) -> Session {
    ctx.open_session(ta, &mut Operation::default())
        .expect("open session")
}

pub fn invoke(
    ctx: &mut Ctx,
    s: &Session,
    cmd: u32,
    params: [ClientParam; 4],
) -> Result<Operation, ClientError> {
    let mut o = op(params);
    ctx.invoke_command(s, cmd, &mut o).map(|()| o)
}

pub fn ta_err(code: TeeError) -> ClientError {
    ClientError {
        code,
        origin: Origin::TrustedApp,
    }
}

pub fn tee_err(code: TeeError) -> ClientError {
    ClientError {
        code,
        origin: Origin::Tee,
    }
}

pub fn comms_err(code: TeeError) -> ClientError {
    ClientError {
        code,
        origin: Origin::Comms,
    }
}
