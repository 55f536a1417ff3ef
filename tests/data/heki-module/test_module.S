/*
 * The test-only kernel module of the paravisor's HEKI module tests (model
 * scenarios in tests/scenarios/src/heki_modules.rs and the probe's post-boot
 * checks). A relocatable x86-64 object shaped like a Linux module: text with
 * a relocation, a jump-label site, rodata, data, ro-after-init data and the
 * three init regions. Offsets in .text are fixed so the tests need no symbol
 * lookup: heki_test_add at 0, the jump-label site at 16, a relocated load at
 * 32. gen.sh assembles it into test_module.o and signs it (test_module.ko).
 */
	.text
	.globl	heki_test_add
	.type	heki_test_add, @function
heki_test_add:				/* text + 0: int (int a, int b) -> a + b + 7 */
	leal	7(%rdi,%rsi), %eax
	ret
	.size	heki_test_add, . - heki_test_add

	.p2align 4, 0xcc
	.globl	heki_test_site
heki_test_site:				/* text + 16: a 5-byte jump-label NOP */
	.byte	0x0f, 0x1f, 0x44, 0x00, 0x00
	ret

	.p2align 4, 0xcc
	.globl	heki_test_name
heki_test_name:				/* text + 32: R_X86_64_32S into .rodata */
	movq	$name, %rax
	ret

	.section .rodata, "a"
name:
	.asciz	"heki paravisor test module"

	.data
	.globl	heki_test_counter
heki_test_counter:
	.quad	1

	.section .data..ro_after_init, "aw"
	.quad	7

	.section .init.text, "ax"
	.globl	init_module
init_module:
	leaq	init_table(%rip), %rax	/* PC32 into .init.rodata */
	movl	(%rax), %eax
	ret

	.section .init.rodata, "a"
init_table:
	.long	1, 2, 3, 4

	.section .init.data, "aw"
	.quad	3

	.section .note.GNU-stack, "", @progbits
