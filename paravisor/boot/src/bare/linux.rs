//! The bare-metal side of the Linux boot mode (`paravisor_boot::linux`): the
//! TSC as L1's clock, and the run that ends with the debug-exit port.

use core::fmt::Write;

use paravisor::{Clock, StopReason};
use paravisor_boot::boot::{self, BootError, L1Pages};
use paravisor_boot::bootinfo::L1Image;
use paravisor_boot::linux;
use tdcall::hw::HwTdcall;

use super::console::{self, MessageBuf};
use super::phys::TdPlatform;

impl Clock for TdPlatform {
    /// RDTSC: the TD's virtual TSC, native in a TD.
    fn tsc(&mut self) -> u64 {
        // SAFETY: RDTSC only reads the time-stamp counter; it touches no memory.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
}

/// XSETBV in L1 for L2 (XCR0 is shared, tdx-abi.md §2.10): sets CR4.OSXSAVE
/// first if L1 never did. The caller checked the value against XFAM.
fn native_xsetbv(xcr: u32, value: u64) {
    const CR4_OSXSAVE: u64 = 1 << 18;
    let cr4: u64;
    // SAFETY: reading CR4 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack)) };
    if cr4 & CR4_OSXSAVE == 0 {
        // SAFETY: OSXSAVE only enables XGETBV/XSETBV/XSAVE*; L1 code uses no
        // extended state (soft-float target).
        unsafe {
            core::arch::asm!("mov cr4, {}", in(reg) cr4 | CR4_OSXSAVE, options(nomem, nostack))
        };
    }
    // SAFETY: `xcr` is 0 and `value` a legal XCR0 within XFAM
    // (`paravisor::handlers::xcr0_valid`); it changes which state XSAVE
    // covers, which L1 does not use.
    unsafe {
        core::arch::asm!("xsetbv", in("ecx") xcr, in("eax") value as u32, in("edx") (value >> 32) as u32,
            options(nomem, nostack))
    };
}

/// Boots and runs Linux if BootInfo asks for it; returns otherwise.
pub fn maybe_boot(platform: &mut TdPlatform, image: &L1Image, pages: L1Pages) {
    if !linux::requested(platform) {
        return;
    }
    let booted = linux::identify(platform, image).and_then(|(info, layout)| {
        let (start, end) = linux::l1_window(&layout);
        platform.allow(start, end);
        let (heap_start, heap_end) = layout.l1_heap;
        paravisor_boot::memory::accept_range(platform, heap_start, heap_end)
            .map_err(BootError::Accept)?;
        // SAFETY: the range is accepted, identity-mapped (L1's map covers the
        // first 1 GiB), never aliased to L2 (outside `l2_ranges`, private to
        // HEKI and the TEE) and outside the image: only the heap uses it.
        unsafe { super::heap::extend(heap_start, heap_end) };
        log::info!(
            "L1 heap extended by {} MiB at {heap_start:#x}..{heap_end:#x}",
            (heap_end - heap_start) >> 20
        );
        linux::prepare(platform, info, layout, pages).map_err(|e| match e {
            linux::LinuxBootError::Boot(b) => b,
            other => {
                log::error!("Linux boot failed: {other}");
                console::fatal(console::FATAL_BOOT, b"Linux boot failed")
            }
        })
    });
    let mut booted = match booted {
        Ok(b) => b,
        Err(BootError::NotBsp(index)) => {
            log::info!("vCPU {index} is an AP: parking");
            console::park();
        }
        Err(e) => {
            log::error!("Linux boot failed: {e}");
            let mut msg = MessageBuf::new();
            let _ = write!(msg, "linux boot: {e}");
            console::fatal(console::FATAL_BOOT, msg.as_bytes());
        }
    };
    booted.handlers.xsetbv = Some(native_xsetbv);
    let entropy = super::rng::CpuEntropy::detect();
    let secret = super::rng::deployer_secret();
    let mut make_apps = super::sandbox::isolated_apps;
    if let Err(e) = boot::start_tee_service(
        platform,
        &booted.measurements,
        &mut booted.handlers.inner.next,
        alloc::boxed::Box::new(entropy),
        &secret,
        "isolated, ring 3",
        |tee, report, rng| tee.start_with_apps(report, rng, &secret, &mut make_apps),
    ) {
        log::error!("TEE not started ({e}): call 0x1FFF0 answers -EOPNOTSUPP");
    }
    let stop = linux::run(platform, &mut booted);
    let (total, used) = super::heap::usage();
    log::info!(
        "L1 heap: {} KiB of {} KiB allocated at the end",
        used >> 10,
        total >> 10
    );
    // HLT with interrupts off is how Linux powers off without ACPI sleep
    // registers ("reboot: Power down"): nothing can wake it, the run is over.
    let value = if stop == StopReason::Halted {
        0
    } else {
        boot::EXIT_LOOP_STOPPED
    };
    log::warn!(
        "Linux L2 stopped ({stop}): writing {value:#x} to port {:#x}",
        boot::DEBUG_EXIT_PORT
    );
    if let Err(e) = boot::debug_exit(&mut HwTdcall, value) {
        log::error!("debug-exit TDG.VP.VMCALL failed: {e}");
    }
    console::park()
}
