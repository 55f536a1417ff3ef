//! The 32-bit entry: from the TD initial vCPU state to 64-bit Rust.
//!
//! Initial state (docs/emulator-contract.md, tdx-abi.md §5.1): 32-bit protected
//! mode, flat segments, paging off, EFER.LME already set, RBX = GPAW, RSI = vCPU
//! index, RSP undefined. All vCPUs start here at once; every vCPU but 0 parks
//! in a `pause` loop before touching memory (HLT would be an L1 bug in a TD).
//!
//! vCPU 0 loads CR3 with identity page tables (PAE, 2 MiB pages over the first
//! 1 GiB: all of the TD's private memory, no shared alias — L1 reaches devices
//! only through TDG.VP.VMCALL), sets CR4.PAE and CR0.PG (entering IA-32e mode,
//! since LME is preset), loads its GDT, far-jumps to 64-bit code, loads the
//! data segments and the stack and calls [`paravisor_entry`] with the GPAW.
//!
//! The page tables, GDT and 64 KiB stack live in `.data`: they are part of the
//! measured image the host adds, so they exist before L1 can accept anything.
//! The 2 MiB page that holds the page below the stack (`__stack_guard`, a hole
//! in the image) is mapped with 4 KiB pages and the guard left unmapped, so a
//! stack overflow is a #PF (taken on the IST stack, see `idt`) rather than
//! silent corruption. GDT slot 0x18 is the TSS, filled in by `idt`; 0x28 and
//! 0x30 are the ring-3 data and 64-bit code segments of the TA instances
//! (`user`: selectors 0x2B and 0x33).

core::arch::global_asm!(
    r#"
    .section .text.entry, "ax", @progbits
    .code32
    .globl pv_start32
pv_start32:
    testl %esi, %esi
    jnz .Lpv_park
    movl %ebx, %edi

    /* 4 KiB page table for the 2 MiB page holding the stack guard, guard unmapped. */
    movl $__stack_guard, %edx
    andl $0xFFE00000, %edx
    orl $0x3, %edx
    movl $pv_boot_pt, %ecx
    movl $512, %ebp
.Lpv_fill_pt:
    movl %edx, (%ecx)
    movl $0, 4(%ecx)
    addl $0x1000, %edx
    addl $8, %ecx
    decl %ebp
    jnz .Lpv_fill_pt
    movl $__stack_guard, %eax
    shrl $12, %eax
    andl $0x1FF, %eax
    movl $0, pv_boot_pt(,%eax,8)
    movl $__stack_guard, %eax
    shrl $21, %eax
    movl $pv_boot_pt, %edx
    orl $0x3, %edx
    movl %edx, pv_boot_pd(,%eax,8)
    movl $0, pv_boot_pd+4(,%eax,8)

    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl $pv_boot_pml4, %eax
    movl %eax, %cr3
    lgdt pv_gdt_ptr
    movl %cr0, %eax
    orl $0x80010000, %eax
    movl %eax, %cr0
    ljmp $0x08, $.Lpv_long_mode
.Lpv_park:
    pause
    jmp .Lpv_park

    .code64
.Lpv_long_mode:
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    leaq pv_boot_stack_top(%rip), %rsp
    movl %edi, %edi
    xorl %ebp, %ebp
    call paravisor_entry
.Lpv_hang:
    pause
    jmp .Lpv_hang

    .section .data.pv_stack, "aw", @progbits
    .balign 4096
    .globl pv_boot_stack_bottom
pv_boot_stack_bottom:
    .fill 0x10000, 1, 0
    .globl pv_boot_stack_top
pv_boot_stack_top:

    .section .data.pv_boot, "aw", @progbits
    .balign 4096
pv_boot_pml4:
    .quad pv_boot_pdpt + 0x3
    .fill 511, 8, 0
pv_boot_pdpt:
    .quad pv_boot_pd + 0x3
    .fill 511, 8, 0
pv_boot_pd:
    .set pv_pde, 0
    .rept 512
    .quad (pv_pde << 21) | 0x83
    .set pv_pde, pv_pde + 1
    .endr
pv_boot_pt:
    .fill 512, 8, 0
    .balign 16
    .globl pv_gdt
pv_gdt:
    .quad 0
    .quad 0x00AF9B000000FFFF
    .quad 0x00CF93000000FFFF
    .quad 0
    .quad 0
    .quad 0x00CFF3000000FFFF
    .quad 0x00AFFB000000FFFF
pv_gdt_end:
    .balign 8
pv_gdt_ptr:
    .word pv_gdt_end - pv_gdt - 1
    .quad pv_gdt
"#,
    options(att_syntax)
);

/// Bytes of the boot stack (the only stack; there are no APs and no IST).
pub const STACK_SIZE: u64 = 0x1_0000;

extern "C" {
    static pv_boot_stack_bottom: u8;
}

/// GPA of the lowest byte of the stack.
pub fn stack_bottom() -> u64 {
    (&raw const pv_boot_stack_bottom) as u64
}

/// Bytes of the stack that were ever written: the stack starts zeroed (it is
/// part of the image), so the lowest non-zero byte is the high-water mark.
pub fn stack_used() -> u64 {
    let bottom = stack_bottom();
    let untouched = (0..STACK_SIZE)
        .take_while(|i| {
            let p = core::ptr::with_exposed_provenance::<u8>((bottom + i) as usize);
            // SAFETY: `p` is inside the stack (`pv_boot_stack_bottom` + less
            // than `STACK_SIZE`), mapped and accepted; the bytes below the
            // current RSP are not live, reading them has no effect.
            unsafe { p.read_volatile() == 0 }
        })
        .count() as u64;
    STACK_SIZE - untouched
}

/// The 64-bit entry, on the boot stack, with `gpaw` = RBX at reset.
#[no_mangle]
extern "C" fn paravisor_entry(gpaw: u64) -> ! {
    super::idt::load();
    super::main(gpaw)
}
