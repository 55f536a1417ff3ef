//! Assembly: the PVH entry note, the 32-bit entry that builds the identity
//! map and enters long mode, the boot GDT/stack, the exception stubs and the
//! VMRUN wrapper. Everything here runs before or outside Rust's control; the
//! Rust side only calls `svm_run` (see [`crate::arch::svm_run`]).

#![allow(unsafe_code)]

core::arch::global_asm!(
    r#"
    .section .note.pvh, "a", @note
    .balign 4
    .long 4                     /* namesz */
    .long 4                     /* descsz */
    .long 18                    /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_start32

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    /* QEMU's PVH loader: 32-bit protected mode, paging off, EBX = start_info. */
    cli
    cld
    mov %ebx, %esi
    /* Zero .bss (page tables and the stack live there). */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb
    /* PML4[0] -> PDPT; PDPT[0..4] -> 4 PDs of 2 MiB identity pages (0-4 GiB). */
    mov $boot_pdpt, %eax
    or $0x3, %eax
    mov %eax, boot_pml4
    mov $boot_pd, %eax
    or $0x3, %eax
    mov $boot_pdpt, %edi
    mov %eax, 0(%edi)
    add $0x1000, %eax
    mov %eax, 8(%edi)
    add $0x1000, %eax
    mov %eax, 16(%edi)
    add $0x1000, %eax
    mov %eax, 24(%edi)
    mov $boot_pd, %edi
    xor %ecx, %ecx
1:
    mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax              /* P | W | PS */
    mov %eax, (%edi,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jne 1b
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax              /* PAE */
    mov %eax, %cr4
    mov $0xC0000080, %ecx       /* EFER: LME | NXE (NPT NX needs host NXE=1) */
    rdmsr
    or $0x900, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax        /* PG | WP | PE */
    mov %eax, %cr0
    lgdt boot_gdtr
    ljmp $0x08, $2f

    .code64
2:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    mov $boot_stack_top, %rsp
    mov %esi, %edi              /* start_info (zero-extended) */
    call emulator_main
3:
    cli
    hlt
    jmp 3b

    .section .rodata.boot, "a"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF    /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF    /* 0x10: data */
boot_gdt_end:
    .balign 8
boot_gdtr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .bss.boot, "aw", @nobits
    .balign 4096
    .global boot_pml4
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4096 * 4
boot_stack:
    .skip 0x40000
boot_stack_top:

    /* Exception stubs: push (error code or 0) and the vector, then call
       emulator_exception(frame) with frame = [vector, error, rip, cs, rflags, rsp, ss]. */
    .section .text, "ax"
    .macro ISR_NOERR n
isr_\n:
    push $0
    push $\n
    jmp isr_common
    .endm
    .macro ISR_ERR n
isr_\n:
    push $\n
    jmp isr_common
    .endm
    ISR_NOERR 0
    ISR_NOERR 1
    ISR_NOERR 2
    ISR_NOERR 3
    ISR_NOERR 4
    ISR_NOERR 5
    ISR_NOERR 6
    ISR_NOERR 7
    ISR_ERR 8
    ISR_NOERR 9
    ISR_ERR 10
    ISR_ERR 11
    ISR_ERR 12
    ISR_ERR 13
    ISR_ERR 14
    ISR_NOERR 15
    ISR_NOERR 16
    ISR_ERR 17
    ISR_NOERR 18
    ISR_NOERR 19
    ISR_NOERR 20
    ISR_ERR 21
    ISR_NOERR 22
    ISR_NOERR 23
    ISR_NOERR 24
    ISR_NOERR 25
    ISR_NOERR 26
    ISR_NOERR 27
    ISR_NOERR 28
    ISR_ERR 29
    ISR_ERR 30
    ISR_NOERR 31
isr_common:
    mov %rsp, %rdi
    and $-16, %rsp
    call emulator_exception
4:
    cli
    hlt
    jmp 4b

    .section .rodata, "a"
    .balign 8
    .global isr_table
isr_table:
    .quad isr_0, isr_1, isr_2, isr_3, isr_4, isr_5, isr_6, isr_7
    .quad isr_8, isr_9, isr_10, isr_11, isr_12, isr_13, isr_14, isr_15
    .quad isr_16, isr_17, isr_18, isr_19, isr_20, isr_21, isr_22, isr_23
    .quad isr_24, isr_25, isr_26, isr_27, isr_28, isr_29, isr_30, isr_31

    /* The host LAPIC timer (vector 0xEF, `lapic.rs`) bounds L2 slices at a
       TSC_DEADLINE: acknowledge it (EOI) and return. 0xFF is the spurious
       vector (no EOI). Neither touches a register but RAX. */
    .section .text, "ax"
    .global timer_isr
timer_isr:
    push %rax
    mov $0xFEE000B0, %rax
    movl $0, (%rax)
    pop %rax
    iretq
    .global spurious_isr
spurious_isr:
    iretq

    /* void svm_run_irq(u64 vmcb_pa, Gprs *g): svm_run with host RFLAGS.IF = 1
       and GIF = 0 up to VMRUN, so a physical interrupt that arrives while the
       guest runs is a #VMEXIT(INTR) (V_INTR_MASKING + INTR intercept,
       svm-tcg-probe §3.7); after the exit IF = 0 before GIF = 1, so the
       interrupt stays pending until the caller takes it. */
    .global svm_run_irq
svm_run_irq:
    clgi
    sti
    call svm_run
    cli
    stgi
    ret

    /* void svm_run(u64 vmcb_pa, Gprs *g)
       Gprs = rbx, rcx, rdx, rsi, rdi, rbp, r8..r15 (RAX/RSP/RIP/RFLAGS live in the VMCB).
       load guest GPRs; vmload guest; vmrun; vmsave guest; store guest GPRs.
       The host's own VMLOAD state (FS/GS/TR/LDTR hidden state, KERNEL_GS_BASE,
       STAR/LSTAR/CSTAR/SFMASK, SYSENTER_*) is not restored after #VMEXIT: the
       emulator uses none of it (no TLS, no SYSCALL, no privilege changes, IDT
       gates without IST), so it keeps whatever the last guest had. */
    .section .text, "ax"
    .global svm_run
svm_run:
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    push %rsi                   /* Gprs pointer */
    mov %rdi, %rax
    mov 0(%rsi), %rbx
    mov 8(%rsi), %rcx
    mov 16(%rsi), %rdx
    mov 32(%rsi), %rdi
    mov 40(%rsi), %rbp
    mov 48(%rsi), %r8
    mov 56(%rsi), %r9
    mov 64(%rsi), %r10
    mov 72(%rsi), %r11
    mov 80(%rsi), %r12
    mov 88(%rsi), %r13
    mov 96(%rsi), %r14
    mov 104(%rsi), %r15
    mov 24(%rsi), %rsi
    vmload %rax
    vmrun %rax
    vmsave %rax
    push %rsi                   /* guest RSI */
    mov 8(%rsp), %rsi           /* Gprs pointer */
    mov %rbx, 0(%rsi)
    mov %rcx, 8(%rsi)
    mov %rdx, 16(%rsi)
    mov %rdi, 32(%rsi)
    mov %rbp, 40(%rsi)
    mov %r8, 48(%rsi)
    mov %r9, 56(%rsi)
    mov %r10, 64(%rsi)
    mov %r11, 72(%rsi)
    mov %r12, 80(%rsi)
    mov %r13, 88(%rsi)
    mov %r14, 96(%rsi)
    mov %r15, 104(%rsi)
    pop %rax
    mov %rax, 24(%rsi)
    add $8, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    ret
"#,
    options(att_syntax)
);
