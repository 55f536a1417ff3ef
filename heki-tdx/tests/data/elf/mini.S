/*
 * A miniature x86-64 kernel module for heki-tdx's ELF tests: every kind of
 * direct relocation the checker accepts and one site of each loader fixup
 * table. Built by gen.sh into mini.o; the object is committed.
 */
	.text
	.globl	f
	.type	f, @function
f:
	endbr64				/* .ibt_endbr_seal site */
fentry_site:
	call	__fentry__		/* __mcount_loc site, PLT32 */
lock_site:
	lock incl counter(%rip)		/* .smp_locks site, PC32 */
	call	ext_func		/* PLT32 */
	movq	$ext_var, %rax		/* R_X86_64_32S */
	movl	$ext_var, %ecx		/* R_X86_64_32 */
retpoline_site:
	call	__x86_indirect_thunk_rax /* .retpoline_sites site */
alt_site:
	.byte	0x0f, 0x1f, 0x44, 0x00, 0x00	/* patched by an alternative */
alt_end:
	nop
return_site:
	jmp	__x86_return_thunk	/* .return_sites site */
	.size	f, . - f

	.section .altinstr_replacement, "ax"
repl:
	call	ext_func
repl_end:

	.section .altinstructions, "a"
	.long	alt_site - .
	.long	repl - .
	.long	0x00000123		/* ft_flags: 14-byte entries (Linux >= 6.3) */
	.byte	alt_end - alt_site
	.byte	repl_end - repl

	.section .text.unlikely, "ax"
	.p2align 3
cold:
	movabsq	$ext_var, %rdx		/* R_X86_64_64 */
	ret

	.section .init.text, "ax"
	.globl	init_module
init_module:
	call	f			/* PLT32 to a local function */
	leaq	init_table(%rip), %rax	/* PC32 into .init.rodata */
	ret

	.section .init.rodata, "a"
	.p2align 3
init_table:
	.quad	f			/* R_X86_64_64 */
	.quad	0x1122334455667788

	.section .rodata, "a"
	.p2align 4
msg:	.asciz	"heki"

	.section .data, "aw"
	.p2align 2
counter: .long 0

	.section .modinfo, "a"
	.asciz	"license=GPL"

	.section __mcount_loc, "a"
	.quad	fentry_site

	.section .smp_locks, "a"
	.long	lock_site - .

	.section .retpoline_sites, "a"
	.long	retpoline_site - .

	.section .return_sites, "a"
	.long	return_site - .

	.section .ibt_endbr_seal, "a"
	.long	f - .

	.section .note.GNU-stack, "", @progbits
