//! tdx-emulator: a bare-metal SVM hypervisor that plays the Intel TDX module
//! (through the `tdx-model` crate) and the host VMM for the lvbs-tdx paravisor.
//!
//! QEMU boots it with `-kernel` (PVH entry) and passes the TD image (a TDX
//! IGVM file written by `loader build`) as `-initrd`. It adds the file's pages
//! in file order as a host would (TDH.MEM.PAGE.ADD, TDH.MR.EXTEND for measured
//! pages), computes MRTD the same way, and runs the paravisor as an SVM guest
//! from the target of the reset page's jump; TDCALL arrives as #UD. L2 runs as
//! a second SVM guest through [`engine::SvmEngine`]. See `docs/emulator.md`.
//!
//! On a hosted target this program only says that it runs on bare metal.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![cfg_attr(not(target_os = "none"), allow(dead_code))]
#![deny(unsafe_code)]

extern crate alloc;

mod decode;
mod npt;
mod page;
mod vmcb;
mod walk;

#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod boot;
#[cfg(target_os = "none")]
mod engine;
#[cfg(target_os = "none")]
mod heap;
#[cfg(target_os = "none")]
mod host;
#[cfg(target_os = "none")]
mod hpet;
#[cfg(target_os = "none")]
mod idt;
#[cfg(target_os = "none")]
mod l1;
#[cfg(target_os = "none")]
mod lapic;
#[cfg(target_os = "none")]
mod phys;
#[cfg(target_os = "none")]
mod pvh;
#[cfg(target_os = "none")]
mod serial;
#[cfg(target_os = "none")]
mod stats;
#[cfg(target_os = "none")]
mod svm;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "tdx-emulator: this program runs on bare metal (x86_64-unknown-none under QEMU); \
         use `cargo xtask run`"
    );
    std::process::exit(2);
}

/// Debug-exit value for an internal emulator error (panic, exception, gap).
pub const EXIT_EMULATOR_BUG: u32 = 0x7D;

/// Prints the statistics and ends the run: QEMU exits with `(code << 1) | 1`.
#[cfg(target_os = "none")]
pub fn finish(code: u32) -> ! {
    stats::print();
    arch::port_out(lvbs_loader::layout::DEBUG_EXIT_PORT, 4, code);
    arch::halt_forever()
}

#[cfg(target_os = "none")]
mod bare {
    use crate::l1::{Iopm, L1};
    use crate::{emu_println, engine, heap, host, hpet, idt, lapic, pvh, serial, stats, svm, vmcb};
    use alloc::boxed::Box;
    use lvbs_loader::layout::{NUM_VCPUS, PAGE_SIZE, TD_MEMORY_BYTES};
    use lvbs_loader::{BootInfo, IgvmTd};
    use tdx_model::measure::MrtdBuilder;
    use tdx_model::{TdConfig, TdxModel};

    extern "C" {
        static __image_end: u8;
    }

    static LOGGER: serial::Logger = serial::Logger;

    const MIB: u64 = 1 << 20;
    /// The heap must hold the TD's 64 MiB, page metadata, NPTs and the image.
    const MIN_HEAP: u64 = 160 * MIB;

    fn fatal(msg: &str) -> ! {
        emu_println!("FATAL: {msg}");
        crate::finish(crate::EXIT_EMULATOR_BUG)
    }

    /// Usable RAM above the emulator image and below the TD image.
    fn heap_range(si: &pvh::StartInfo) -> Option<(u64, u64)> {
        let image_end = core::ptr::addr_of!(__image_end) as u64;
        let start = (image_end.max(4 * MIB) + 2 * MIB - 1) & !(2 * MIB - 1);
        let ram = si
            .memmap()
            .iter()
            .filter(|r| r.kind == 1)
            .find(|r| r.addr <= start && start < r.addr + r.size)?;
        let mut end = (ram.addr + ram.size).min(0x1_0000_0000);
        for m in si.modules() {
            if m.paddr >= start && m.paddr < end {
                end = m.paddr;
            }
            if m.paddr < start && m.paddr + m.size > start {
                return None;
            }
        }
        let end = end & !(PAGE_SIZE - 1);
        (end > start + MIN_HEAP).then_some((start, end))
    }

    // `boot.rs` calls this by name after entering long mode.
    #[allow(unsafe_code)]
    #[no_mangle]
    extern "C" fn emulator_main(start_info: u64) -> ! {
        serial::init();
        hpet::init();
        emu_println!("tdx-emulator: SVM-based TDX module emulator (lvbs-tdx)");
        let si = pvh::parse(start_info).unwrap_or_else(|e| fatal(e));
        let Some((heap_start, heap_end)) = heap_range(&si) else {
            fatal("no usable RAM for the heap (run QEMU with -m 1G)")
        };
        heap::init(heap_start, heap_end);
        let _ = log::set_logger(&LOGGER);
        log::set_max_level(log::LevelFilter::Warn);
        idt::init();
        lapic::init();
        emu_println!(
            "heap {:#x}..{:#x} ({} MiB)",
            heap_start,
            heap_end,
            (heap_end - heap_start) / MIB
        );
        let Some(module) = si.modules().first() else {
            fatal("no TD image: pass it with -initrd")
        };
        let Some(image) = crate::phys::copy_boot_data(module.paddr, module.size as usize) else {
            fatal("the TD image lies outside RAM")
        };
        let td = IgvmTd::parse(&image).unwrap_or_else(|e| {
            emu_println!("bad IGVM image: {e:?}");
            fatal("bad TD image")
        });
        let Some(entry) = td.entry() else {
            fatal("the IGVM image has no TDX reset page with a jmp at 0xFFFFFFF0")
        };
        svm::init().unwrap_or_else(|e| fatal(e));

        // The host gives the TD the private memory its BootInfo asks for (a
        // Linux L2 needs more than the probe's 64 MiB), within the heap.
        let mut td_memory = TD_MEMORY_BYTES;
        td.for_each_page(NUM_VCPUS, |gpa, page, _| {
            if let (BootInfo::GPA, Ok(bi)) = (gpa, BootInfo::from_bytes(&page[..])) {
                td_memory = bi
                    .td_memory_bytes
                    .next_multiple_of(2 * MIB)
                    .max(TD_MEMORY_BYTES);
            }
        });
        if td_memory + MIN_HEAP > heap_end - heap_start {
            fatal("the TD asks for more private memory than the heap holds (raise QEMU's -m)")
        }

        // MRTD over the pages in file order, as a host adds them: measured
        // pages are ADD + 16 EXTENDs, unmeasured and parameter pages ADD only.
        let mut mrtd = MrtdBuilder::new();
        let (mut pages, mut measured, mut accepted_bytes) = (0usize, 0usize, 0u64);
        td.for_each_page(NUM_VCPUS, |gpa, page, is_measured| {
            if is_measured {
                mrtd.add_measured_page(gpa, page);
                measured += 1;
            } else {
                mrtd.page_add(gpa);
            }
            pages += 1;
            if gpa + PAGE_SIZE <= td_memory {
                accepted_bytes = accepted_bytes.max(gpa + PAGE_SIZE);
            }
        });
        let mrtd = mrtd.finish();

        let mut config = TdConfig::new(td_memory);
        config.num_vcpus = NUM_VCPUS;
        config.num_l2_vms = 1;
        config.gpaw = 48;
        config.mbec_supported = true;
        config.accepted_bytes = accepted_bytes;
        config.mrtd = mrtd;
        // TD_PARAMS.TSC_FREQUENCY (units of 25 MHz): the host TSC's rate, which
        // L1 and L2 read natively (TSC offset 0, no TSC scaling under TCG).
        let tsc_hz = hpet::tsc_hz();
        if tsc_hz != 0 {
            config.tsc_frequency =
                ((tsc_hz + 12_500_000) / 25_000_000).clamp(1, u16::MAX as u64) as u16;
        }
        emu_println!(
            "TSC {} MHz (TD TSC_FREQUENCY {} x 25 MHz), LAPIC timer {} MHz",
            tsc_hz / 1_000_000,
            config.tsc_frequency,
            lapic::counts_per_second() / 1_000_000
        );

        let l1_vmcb: &'static vmcb::Vmcb = Box::leak(Box::new(vmcb::Vmcb::new()));
        let iopm: &'static Iopm = Box::leak(Iopm::ones());
        let engine = engine::SvmEngine::new(l1_vmcb, iopm);
        let mut model = TdxModel::new(config, host::QemuHost::default(), engine);
        // Pages outside private memory (the reset page at 0xFFFF_F000) are
        // measured but not mapped: L1 starts at the jump's target instead.
        let mut write_failed = false;
        td.for_each_page(NUM_VCPUS, |gpa, page, _| {
            if gpa + PAGE_SIZE <= td_memory && model.write_memory(gpa, &page[..]).is_err() {
                write_failed = true;
            }
        });
        if write_failed {
            fatal("cannot write an initial TD page");
        }
        let mut bi = Box::new([0u8; PAGE_SIZE as usize]);
        let bi = model
            .read_memory(BootInfo::GPA, &mut bi[..])
            .ok()
            .and_then(|()| BootInfo::from_bytes(&bi[..]).ok());
        stats::with(|s| {
            s.mrtd = mrtd;
            s.start_ns = hpet::now_ns();
        });
        emu_println!(
            "TD: {} MiB private memory at host {:#x}, IGVM {} KiB: {} pages added ({} measured, {} KiB accepted), paravisor entry {:#x} (reset-page jmp), L2 entry {:#x}, L2 image end {:#x}, heap used {} KiB",
            td_memory / MIB,
            model.memory().backing_address(),
            image.len() / 1024,
            pages,
            measured,
            accepted_bytes / 1024,
            entry,
            bi.map_or(0, |b| b.l2_entry),
            bi.map_or(0, |b| b.l2_image_end),
            heap::used() / 1024
        );
        let l1 = L1::new(l1_vmcb, iopm, entry);
        drop(td);
        drop(image);
        l1.run(&mut model)
    }

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        emu_println!("PANIC: {info}");
        crate::finish(crate::EXIT_EMULATOR_BUG)
    }
}
