//! The entry point and the panic handler.
//!
//! The paravisor enters L2 in 64-bit mode at the ELF entry with RDI = L2
//! base, RSI = L2 size and RSP at the top of the region minus 64 KiB
//! (contract). `guest_rt_start` passes RSP as the third argument, aligns the
//! stack and calls [`guest_rt_main`], which loads the runtime's descriptor
//! tables and calls the guest's main (named with [`crate::entry!`]).

use core::panic::PanicInfo;

use crate::{checks, fault};

core::arch::global_asm!(
    r#"
    .section .text.entry, "ax", @progbits
    .globl guest_rt_start
guest_rt_start:
    cli
    movq %rsp, %rdx
    andq $-16, %rsp
    xorl %ebp, %ebp
    call guest_rt_main
.Lguest_rt_hang:
    cli
    hlt
    jmp .Lguest_rt_hang
"#,
    options(att_syntax)
);

/// The contract's entry registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Boot {
    /// RDI: first GPA of the L2 region.
    pub l2_base: u64,
    /// RSI: size of the L2 region.
    pub l2_size: u64,
    /// RSP at entry: the region's top minus 64 KiB (page tables above).
    pub entry_rsp: u64,
}

extern "Rust" {
    fn guest_rt_user_main(boot: Boot) -> !;
}

#[no_mangle]
extern "C" fn guest_rt_main(l2_base: u64, l2_size: u64, entry_rsp: u64) -> ! {
    fault::load_tables();
    let boot = Boot {
        l2_base,
        l2_size,
        entry_rsp,
    };
    // SAFETY: `guest_rt_user_main` is defined by the guest binary through
    // `guest_rt::entry!` with exactly this signature.
    unsafe { guest_rt_user_main(boot) }
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    checks::check("no_panic", false, format_args!("{info}"));
    checks::finish(0)
}
