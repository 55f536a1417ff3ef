//! Everything that only exists on bare metal. `unsafe` is confined to
//! [`entry`] (the 32-bit entry), [`idt`] (IDT fill and LIDT), [`heap`]
//! (allocator init), [`phys`] (raw memory by GPA, `.bss` zeroing, RDMSR
//! of the shared syscall MSRs), [`rng`] (RDRAND/RDSEED for the TEE),
//! [`linux`] (RDTSC, XSETBV), [`user`] (the ring-3 entry and trap path,
//! CR0.TS) and [`sandbox`] (TA instance memory, page tables, CR3).

mod console;
mod entry;
mod heap;
mod idt;
mod linux;
mod panic;
mod phys;
mod rng;
mod sandbox;
mod user;

use core::fmt::Write;

use console::{MessageBuf, RawConsole};
use paravisor_boot::boot::{self, BootError};
use paravisor_boot::bootinfo::BOOT_INFO_GPA;
use tdcall::hw::HwTdcall;

/// After [`entry`] and the IDT: accept `.bss`, bring up heap and logging, boot
/// and run L2, and end the run.
fn main(gpaw: u64) -> ! {
    let bss = match phys::accept_and_zero_bss() {
        Ok(stats) => stats,
        Err(e) => {
            let _ = writeln!(RawConsole, "paravisor: FATAL: accepting .bss: {e}");
            console::fatal(console::FATAL_BOOT, b"accepting .bss failed");
        }
    };
    let heap = heap::init();
    console::init_logger();

    let hardening = user::harden_cr4();
    let image = phys::image();
    let (bss_start, bss_end) = phys::bss();
    let pages = phys::l1_pages();
    log::info!(
        "lvbs-tdx paravisor {} on bare metal, GPAW {gpaw} at reset",
        env!("CARGO_PKG_VERSION")
    );
    log::info!(
        "image {:#x}..{:#x} ({} KiB): .bss {:#x}..{:#x} accepted ({} x 2M + {} x 4K new, {} x 4K already), \
         heap {} KiB at {heap:#x}, stack {} KiB at {:#x}, vAPIC {:#x}, ENTER buffer {:#x}",
        image.start,
        image.end,
        (image.end - image.start) >> 10,
        bss_start,
        bss_end,
        bss.accepted_2m,
        bss.accepted_4k,
        bss.already_4k,
        heap::HEAP_SIZE >> 10,
        entry::STACK_SIZE >> 10,
        entry::stack_bottom(),
        pages.vapic_gpa,
        pages.guest_state_gpa
    );

    log::info!(
        "L1 CR4: SMEP {}, UMIP {} (TA code never runs at CPL 0; TAs cannot read descriptor-table registers)",
        if hardening.smep { "on" } else { "not available" },
        if hardening.umip { "on" } else { "not available" }
    );
    let mut platform = phys::TdPlatform::new(&pages, BOOT_INFO_GPA);
    // BootInfo flag LINUX: boot an unmodified kernel instead (docs/linux.md).
    linux::maybe_boot(&mut platform, &image, pages);
    let booted = boot::identify(&mut platform, &image, pages).and_then(|(info, layout)| {
        platform.allow(layout.base, layout.end());
        boot::prepare_l2(&mut platform, info, layout, &image, pages)
    });
    let mut booted = match booted {
        Ok(b) => b,
        Err(BootError::NotBsp(index)) => {
            log::info!("vCPU {index} is an AP: parking");
            console::park();
        }
        Err(e) => {
            log::error!("boot failed: {e}");
            let mut msg = MessageBuf::new();
            let _ = write!(msg, "boot: {e}");
            console::fatal(console::FATAL_BOOT, msg.as_bytes());
        }
    };

    let entropy = rng::CpuEntropy::detect();
    let (rdrand, rdseed) = entropy.available();
    log::info!("CPU entropy: RDRAND {rdrand}, RDSEED {rdseed}");
    let secret = rng::deployer_secret();
    let mut make_apps = sandbox::isolated_apps;
    if let Err(e) = boot::start_tee_isolated(
        &mut platform,
        &mut booted,
        alloc::boxed::Box::new(entropy),
        &secret,
        &mut make_apps,
    ) {
        log::error!("TEE not started ({e}): call 0x1FFF0 answers -EOPNOTSUPP");
    }

    log::info!(
        "stack used so far: {} of {} KiB",
        entry::stack_used() >> 10,
        entry::STACK_SIZE >> 10
    );
    let (stop, calls) = boot::run(&mut platform, &mut booted);
    log::info!(
        "stack used: {} of {} KiB",
        entry::stack_used() >> 10,
        entry::STACK_SIZE >> 10
    );
    log::warn!(
        "L2 ended without the debug-exit port ({stop}; {} echo call(s), {} unknown): writing {:#x} to port {:#x}",
        calls.echoes,
        calls.unknown,
        boot::EXIT_LOOP_STOPPED,
        boot::DEBUG_EXIT_PORT
    );
    if let Err(e) = boot::debug_exit(&mut HwTdcall, boot::EXIT_LOOP_STOPPED) {
        log::error!("debug-exit TDG.VP.VMCALL failed: {e}");
    }
    log::error!("the host ignored the debug-exit port; parking");
    console::park()
}
