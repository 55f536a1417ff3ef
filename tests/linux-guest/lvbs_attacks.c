// SPDX-License-Identifier: GPL-2.0
/*
 * lvbs_attacks: the LVBS KUnit attack list and LKDTM's memory-permission
 * tests, replayed from inside Linux against the lvbs-tdx paravisor
 * (docs/linux.md, "Attacks from inside Linux").
 *
 * The attacker has kernel privileges: it bypasses the guest kernel's own
 * defences (CR pinning in native_write_cr0/cr4, read-only and NX page-table
 * entries) with raw instructions, fresh writable aliases (vmap) and edited
 * page-table entries, so only the paravisor's pins and EPT permissions
 * stand in its way.
 *
 * Each attack runs in its own kthread, so a fault kills only that thread:
 *  - register attacks execute the instruction under an exception-table fixup:
 *    the paravisor must answer with #GP and leave the register unchanged;
 *  - memory attacks must fault (EPT violation -> #GP from the paravisor, or
 *    SMEP/SMAP, which the paravisor keeps pinned): the thread dies in an oops
 *    and never reaches the line that reports the attack as allowed;
 *  - HEKI misuse after the end of boot must be refused with -EPERM.
 * Every attack prints "lvbs-attack: <NAME>: BLOCKED|ALLOWED|ERROR (...)" and a
 * summary line "lvbs-attacks: N blocked, M allowed, E errors" ends the run.
 *
 * Load it after lvbs_heki and before SIGNAL_END_OF_BOOT (it asks lvbs_heki to
 * protect its text), then write 1 to /sys/module/lvbs_attacks/parameters/run.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/kthread.h>
#include <linux/completion.h>
#include <linux/delay.h>
#include <linux/mm.h>
#include <linux/mman.h>
#include <linux/sched/mm.h>
#include <linux/sched/task.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/uaccess.h>
#include <linux/highmem.h>
#include <asm/asm.h>
#include <asm/desc.h>
#include <asm/msr.h>
#include <asm/processor-flags.h>
#include <asm/pgtable.h>
#include <asm/tlbflush.h>
#include <asm/io.h>
#include <asm/trapnr.h>
#include "lvbs_heki.h"

static unsigned long idt_table_addr, rodata_target, ro_after_init_target, text_target;
static unsigned long rodata_start, rodata_end;
module_param_named(idt_table, idt_table_addr, ulong, 0400);
module_param(rodata_target, ulong, 0400);
module_param(ro_after_init_target, ulong, 0400);
module_param(text_target, ulong, 0400);
module_param(rodata_start, ulong, 0400);
module_param(rodata_end, ulong, 0400);
MODULE_PARM_DESC(idt_table, "idt_table from /proc/kallsyms");
MODULE_PARM_DESC(rodata_target, "a const object in the kernel's .rodata");
MODULE_PARM_DESC(ro_after_init_target, "an object in the kernel's ro_after_init data");
MODULE_PARM_DESC(text_target, "a kernel function the attack may overwrite");

/* endbr64; ret: a function that returns at once (endbr64 is a NOP without CET). */
static const u8 ret_code[] = { 0xf3, 0x0f, 0x1e, 0xfa, 0xc3 };
/* Module .rodata (protected R by lvbs_heki_protect_module). */
static const u8 rodata_code[16] __aligned(16) = { 0xf3, 0x0f, 0x1e, 0xfa, 0xc3 };
static const unsigned long const_data = 0xAA55AA55;
/* Module .data: never protected, so kernel data (no supervisor execute) after the end of boot. */
static u8 data_area[64] __aligned(64);

static int blocked, allowed, errors;

enum verdict { V_PENDING, V_BLOCKED, V_ALLOWED, V_ERROR };

struct attack {
	const char *name;
	/* What stops it: "#GP", "EPT", "SMEP", "SMAP", "-EPERM". */
	const char *expect;
	/* Runs in the kthread; fills `why` and returns the verdict if it returns. */
	enum verdict (*fn)(struct attack *a);
	struct mm_struct *mm;
	char why[128];
	enum verdict verdict;
	struct completion done;
};

/* ---- register attacks (exception-table fixups) ---- */

/*
 * Executes `insn` under an exception-table fixup of type FAULT: evaluates to
 * the vector of the exception it raised (13 = #GP), or -1 if it completed.
 */
#define TRY_INSN(insn, operand)                                          \
	({                                                               \
		int __vec;                                               \
		asm volatile("mov $-1, %%eax\n"                          \
			     "1: " insn "\n"                             \
			     "2:\n" _ASM_EXTABLE_FAULT(1b, 2b)            \
			     : "=&a"(__vec)                              \
			     : [v] operand                               \
			     : "memory");                                \
		__vec;                                                   \
	})

/* "#GP", "no fault" or "#<vector>" for the reports. */
static const char *vector_name(int vec, char *buf, size_t len)
{
	if (vec == X86_TRAP_GP)
		return "#GP";
	if (vec < 0)
		return "no fault";
	snprintf(buf, len, "exception %d", vec);
	return buf;
}

static enum verdict cr_attack(struct attack *a, bool cr4, unsigned long bit)
{
	unsigned long before, after, flags;
	char vb[24];
	int faulted;

	local_irq_save(flags);
	if (cr4) {
		before = __read_cr4();
		faulted = TRY_INSN("mov %[v], %%cr4", "r"(before & ~bit));
		after = __read_cr4();
		if (faulted < 0 || after != before)
			asm volatile("mov %0, %%cr4" ::"r"(before) : "memory");
	} else {
		before = read_cr0();
		faulted = TRY_INSN("mov %[v], %%cr0", "r"(before & ~bit));
		after = read_cr0();
		if (faulted < 0 || after != before)
			asm volatile("mov %0, %%cr0" ::"r"(before) : "memory");
	}
	local_irq_restore(flags);
	if (!(before & bit)) {
		snprintf(a->why, sizeof(a->why), "bit %#lx was not set before the attack", bit);
		return V_ERROR;
	}
	snprintf(a->why, sizeof(a->why), "%s, CR%d %#lx -> %#lx",
		 vector_name(faulted, vb, sizeof(vb)), cr4 ? 4 : 0, before, after);
	if (after != before)
		return V_ALLOWED;
	return faulted == X86_TRAP_GP ? V_BLOCKED : V_ERROR;
}

static enum verdict cr0_wp(struct attack *a) { return cr_attack(a, false, X86_CR0_WP); }
static enum verdict cr4_smep(struct attack *a) { return cr_attack(a, true, X86_CR4_SMEP); }
static enum verdict cr4_smap(struct attack *a) { return cr_attack(a, true, X86_CR4_SMAP); }

/* SIDT/SGDT under a fixup: before the paravisor emulated them they #GP'd. */
static int read_dt(bool idt, struct desc_ptr *dt)
{
	return idt ? TRY_INSN("sidt %[v]", "m"(*dt)) : TRY_INSN("sgdt %[v]", "m"(*dt));
}

static enum verdict dt_attack(struct attack *a, bool idt)
{
	struct desc_ptr before = {}, after = {}, evil;
	void *copy = (void *)get_zeroed_page(GFP_KERNEL);
	unsigned long flags;
	char vb[24];
	int faulted, unreadable;

	if (!copy) {
		snprintf(a->why, sizeof(a->why), "no memory");
		return V_ERROR;
	}
	local_irq_save(flags);
	unreadable = read_dt(idt, &before) >= 0;
	if (idt) {
		memcpy(copy, (void *)idt_table_addr, PAGE_SIZE);
		evil.address = (unsigned long)copy;
		evil.size = PAGE_SIZE - 1;
		faulted = TRY_INSN("lidt %[v]", "m"(evil));
	} else {
		memcpy(copy, get_cpu_gdt_rw(smp_processor_id()), GDT_SIZE);
		evil.address = (unsigned long)copy;
		evil.size = GDT_SIZE - 1;
		faulted = TRY_INSN("lgdt %[v]", "m"(evil));
	}
	unreadable |= read_dt(idt, &after) >= 0;
	if (faulted < 0) {
		/* The load happened: put the real table back before anything runs. */
		if (idt) {
			struct desc_ptr real = { .size = PAGE_SIZE - 1, .address = idt_table_addr };

			asm volatile("lidt %0" ::"m"(real));
		} else {
			load_fixmap_gdt(smp_processor_id());
		}
	}
	local_irq_restore(flags);
	free_page((unsigned long)copy);
	if (unreadable)
		snprintf(a->why, sizeof(a->why), "%s; S%cDT also faults, %s not readable",
			 vector_name(faulted, vb, sizeof(vb)), idt ? 'I' : 'G', idt ? "IDTR" : "GDTR");
	else
		snprintf(a->why, sizeof(a->why), "%s, %s base %#lx -> %#lx",
			 vector_name(faulted, vb, sizeof(vb)), idt ? "IDTR" : "GDTR", before.address,
			 after.address);
	if (faulted < 0 || (!unreadable && after.address != before.address))
		return V_ALLOWED;
	return faulted == X86_TRAP_GP ? V_BLOCKED : V_ERROR;
}

static enum verdict idt_load(struct attack *a) { return dt_attack(a, true); }
static enum verdict gdt_load(struct attack *a) { return dt_attack(a, false); }

/* LLDT of a selector other than the current one: any LDTR load must be refused. */
static enum verdict ldt_load(struct attack *a)
{
	u16 before = 0xffff, after = 0xffff, sel;
	char vb[24];
	int faulted, unreadable;

	unreadable = TRY_INSN("sldt %[v]", "m"(before)) >= 0;
	/* A null selector with another RPL: legal, harmless, and visible to SLDT. */
	sel = before == 3 ? 0 : 3;
	faulted = TRY_INSN("lldt %[v]", "m"(sel));
	unreadable |= TRY_INSN("sldt %[v]", "m"(after)) >= 0;
	if (faulted < 0 || (!unreadable && after != before)) {
		u16 back = unreadable ? 0 : before;

		asm volatile("lldt %0" ::"m"(back));
	}
	if (!unreadable && before != after)
		snprintf(a->why, sizeof(a->why), "%s, LDTR %#x -> %#x",
			 vector_name(faulted, vb, sizeof(vb)), before, after);
	else
		snprintf(a->why, sizeof(a->why), "%s, LDTR %s", vector_name(faulted, vb, sizeof(vb)),
			 unreadable ? "not readable" : "unchanged");
	if (faulted < 0 || (!unreadable && before != after))
		return V_ALLOWED;
	return faulted == X86_TRAP_GP ? V_BLOCKED : V_ERROR;
}

/*
 * LTR of the current TSS after clearing its busy bit, with the GDT's
 * read-only fixmap made writable (LTR sets the busy bit): legal on bare
 * hardware, so only the paravisor's descriptor-table exiting can refuse it.
 */
static enum verdict tr_load(struct attack *a)
{
	int cpu = smp_processor_id();
	struct desc_struct *gdt = get_cpu_gdt_rw(cpu);
	unsigned long fixmap = (unsigned long)get_cpu_gdt_ro(cpu);
	tss_desc *tss = (tss_desc *)&gdt[GDT_ENTRY_TSS];
	u16 sel = GDT_ENTRY_TSS * 8;
	unsigned int level;
	pte_t *pte = lookup_address(fixmap, &level);
	pteval_t old;
	unsigned long flags;
	char vb[24];
	int faulted;

	if (!pte) {
		snprintf(a->why, sizeof(a->why), "no PTE for the GDT fixmap");
		return V_ERROR;
	}
	local_irq_save(flags);
	old = pte->pte;
	WRITE_ONCE(pte->pte, old | _PAGE_RW);
	asm volatile("invlpg (%0)" ::"r"(fixmap) : "memory");
	tss->type = DESC_TSS;
	faulted = TRY_INSN("ltr %[v]", "m"(sel));
	/* Busy again, as a successful LTR leaves it. */
	tss->type = DESC_TSS | 0x2;
	WRITE_ONCE(pte->pte, old);
	asm volatile("invlpg (%0)" ::"r"(fixmap) : "memory");
	local_irq_restore(flags);
	snprintf(a->why, sizeof(a->why), "%s%s", vector_name(faulted, vb, sizeof(vb)),
		 faulted < 0 ? ": TR reloaded" : "");
	if (faulted < 0)
		return V_ALLOWED;
	return faulted == X86_TRAP_GP ? V_BLOCKED : V_ERROR;
}

static enum verdict msr_attack(struct attack *a, u32 msr, u64 (*change)(u64))
{
	unsigned long flags;
	u64 before, after, evil;
	int err;

	local_irq_save(flags);
	rdmsrl(msr, before);
	evil = change(before);
	err = wrmsrl_safe(msr, evil);
	rdmsrl(msr, after);
	if (after != before)
		wrmsrl(msr, before);
	local_irq_restore(flags);
	snprintf(a->why, sizeof(a->why), "%s, MSR %#x %#llx -> %#llx (tried %#llx)",
		 err ? "#GP" : "no fault", msr, before, after, evil);
	/* wrmsrl_safe() reports any fault; only #GP reaches a WRMSR, so err means #GP. */
	return err && after == before ? V_BLOCKED : V_ALLOWED;
}

/* Valid values a real CPU would accept, so only the pin can refuse them. */
static u64 efer_no_nx(u64 v) { return v & ~EFER_NX; }
static u64 plus_16(u64 v) { return v + 16; }
static u64 flip_bit32(u64 v) { return v ^ (1ULL << 32); }
static u64 flip_ac(u64 v) { return v ^ X86_EFLAGS_AC; }
static u64 apic_no_x2(u64 v) { return v & ~(1ULL << 10); }
static u64 flip_8(u64 v) { return v ^ 8; }
static u64 plus_page(u64 v) { return v + PAGE_SIZE; }

#define MSR_ATTACK(fnname, msr, change) \
	static enum verdict fnname(struct attack *a) { return msr_attack(a, msr, change); }
MSR_ATTACK(msr_efer, MSR_EFER, efer_no_nx)
MSR_ATTACK(msr_star, MSR_STAR, flip_bit32)
MSR_ATTACK(msr_lstar, MSR_LSTAR, plus_16)
MSR_ATTACK(msr_cstar, MSR_CSTAR, plus_16)
MSR_ATTACK(msr_sfmask, MSR_SYSCALL_MASK, flip_ac)
MSR_ATTACK(msr_apic_base, MSR_IA32_APICBASE, apic_no_x2)
MSR_ATTACK(msr_sysenter_cs, MSR_IA32_SYSENTER_CS, flip_8)
MSR_ATTACK(msr_sysenter_esp, MSR_IA32_SYSENTER_ESP, plus_page)
MSR_ATTACK(msr_sysenter_eip, MSR_IA32_SYSENTER_EIP, plus_16)

/* ---- memory attacks: the thread must die before it reports ---- */

/* The page-table entry of `addr` gains RW or loses NX, like an attacker's. */
static bool pte_set(unsigned long addr, bool writable, bool exec)
{
	unsigned int level;
	pte_t *pte = lookup_address(addr, &level);

	if (!pte || !pte_present(*pte))
		return false;
	if (writable)
		WRITE_ONCE(pte->pte, pte->pte | _PAGE_RW);
	if (exec)
		WRITE_ONCE(pte->pte, pte->pte & ~_PAGE_NX);
	asm volatile("invlpg (%0)" ::"r"(addr) : "memory");
	return true;
}

static struct page *page_of(unsigned long addr)
{
	if (is_vmalloc_addr((void *)addr) || (addr >= MODULES_VADDR && addr < MODULES_END))
		return vmalloc_to_page((void *)addr);
	if (addr >= __START_KERNEL_map)
		return pfn_to_page(__pa_symbol(addr) >> PAGE_SHIFT);
	return virt_to_page((void *)addr);
}

/* Writes through a fresh writable alias (vmap) of the page behind `addr`. */
static enum verdict write_via_alias(struct attack *a, unsigned long addr)
{
	struct page *page = page_of(addr);
	u8 *alias, old;

	if (!addr || !page) {
		snprintf(a->why, sizeof(a->why), "no target");
		return V_ERROR;
	}
	alias = vmap(&page, 1, VM_MAP, PAGE_KERNEL);
	if (!alias) {
		snprintf(a->why, sizeof(a->why), "vmap failed");
		return V_ERROR;
	}
	old = READ_ONCE(*(u8 *)addr);
	WRITE_ONCE(alias[offset_in_page(addr)], old ^ 0xff); /* must fault here */
	/* Still running: the write went through. Undo it. */
	WRITE_ONCE(alias[offset_in_page(addr)], old);
	vunmap(alias);
	snprintf(a->why, sizeof(a->why), "wrote byte %#lx through a vmap alias", addr);
	return V_ALLOWED;
}

static enum verdict write_ro(struct attack *a) { return write_via_alias(a, rodata_target); }
static enum verdict write_ro_after_init(struct attack *a)
{
	return write_via_alias(a, ro_after_init_target);
}
static enum verdict write_kern(struct attack *a) { return write_via_alias(a, text_target); }

static noinline void do_overwritten(void)
{
	pr_info("lvbs-attack: do_overwritten ran\n");
}

static enum verdict write_kern_module(struct attack *a)
{
	return write_via_alias(a, (unsigned long)do_overwritten);
}

/* LVBS "write to const": the PTE made writable, then a plain store. */
static enum verdict write_const(struct attack *a)
{
	unsigned long addr = (unsigned long)&const_data;

	if (!pte_set(addr, true, false)) {
		snprintf(a->why, sizeof(a->why), "no PTE");
		return V_ERROR;
	}
	WRITE_ONCE(*(unsigned long *)addr, 0x1234); /* must fault here */
	WRITE_ONCE(*(unsigned long *)addr, 0xAA55AA55);
	snprintf(a->why, sizeof(a->why), "const_data overwritten");
	return V_ALLOWED;
}

/* Calls `addr` after clearing NX in its PTE: must fault before returning. */
static enum verdict exec_at(struct attack *a, unsigned long addr)
{
	void (*fn)(void) = (void (*)(void))addr;

	if (!pte_set(addr, false, true)) {
		snprintf(a->why, sizeof(a->why), "no PTE for %#lx", addr);
		return V_ERROR;
	}
	fn(); /* must fault here */
	snprintf(a->why, sizeof(a->why), "code at %#lx ran", addr);
	return V_ALLOWED;
}

static enum verdict exec_data(struct attack *a)
{
	memcpy(data_area, ret_code, sizeof(ret_code));
	return exec_at(a, (unsigned long)data_area);
}

static enum verdict exec_stack(struct attack *a)
{
	u8 stack_code[64] __aligned(64);

	memcpy(stack_code, ret_code, sizeof(ret_code));
	return exec_at(a, (unsigned long)stack_code);
}

static enum verdict exec_kmalloc(struct attack *a)
{
	u8 *buf = kmalloc(64, GFP_KERNEL);

	if (!buf)
		return V_ERROR;
	memcpy(buf, ret_code, sizeof(ret_code));
	return exec_at(a, (unsigned long)buf); /* leaked if the thread dies */
}

static enum verdict exec_vmalloc(struct attack *a)
{
	u8 *buf = vmalloc(PAGE_SIZE);

	if (!buf)
		return V_ERROR;
	memcpy(buf, ret_code, sizeof(ret_code));
	return exec_at(a, (unsigned long)buf);
}

static enum verdict exec_module_rodata(struct attack *a)
{
	return exec_at(a, (unsigned long)rodata_code);
}

/* LKDTM EXEC_RODATA against the kernel's own .rodata: a `ret` byte found there. */
static enum verdict exec_kernel_rodata(struct attack *a)
{
	unsigned long p;

	for (p = rodata_start; p && p < rodata_end; p++)
		if (*(u8 *)p == 0xc3)
			return exec_at(a, p);
	snprintf(a->why, sizeof(a->why), "no 0xc3 byte in .rodata");
	return V_ERROR;
}

/* ---- user memory from the kernel (SMEP/SMAP, pinned in CR4) ---- */

static enum verdict exec_userspace(struct attack *a)
{
	unsigned long uaddr;

	if (!a->mm)
		return V_ERROR;
	kthread_use_mm(a->mm);
	uaddr = vm_mmap(NULL, 0, PAGE_SIZE, PROT_READ | PROT_WRITE | PROT_EXEC,
			MAP_ANONYMOUS | MAP_PRIVATE, 0);
	if (IS_ERR_VALUE(uaddr) || copy_to_user((void __user *)uaddr, ret_code, sizeof(ret_code))) {
		kthread_unuse_mm(a->mm);
		snprintf(a->why, sizeof(a->why), "cannot map user memory");
		return V_ERROR;
	}
	((void (*)(void))uaddr)(); /* must fault here (SMEP) */
	kthread_unuse_mm(a->mm);
	snprintf(a->why, sizeof(a->why), "user page %#lx executed in kernel mode", uaddr);
	return V_ALLOWED;
}

static enum verdict access_userspace(struct attack *a)
{
	unsigned long uaddr, value;

	if (!a->mm)
		return V_ERROR;
	kthread_use_mm(a->mm);
	uaddr = vm_mmap(NULL, 0, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, 0);
	if (IS_ERR_VALUE(uaddr) || put_user(0x5a5aUL, (unsigned long __user *)uaddr)) {
		kthread_unuse_mm(a->mm);
		snprintf(a->why, sizeof(a->why), "cannot map user memory");
		return V_ERROR;
	}
	value = READ_ONCE(*(unsigned long *)uaddr); /* must fault here (SMAP) */
	kthread_unuse_mm(a->mm);
	snprintf(a->why, sizeof(a->why), "read %#lx from user memory without STAC", value);
	return V_ALLOWED;
}

/* ---- HEKI misuse by a compromised kernel after the end of boot ---- */

static enum verdict heki_unprotect_text(struct attack *a)
{
	unsigned long t = text_target & PAGE_MASK;
	long ret = lvbs_heki_protect_range(t, __pa_symbol(t), __pa_symbol(t) + PAGE_SIZE,
					   HEKI_ATTR_READ | HEKI_ATTR_WRITE);

	snprintf(a->why, sizeof(a->why), "PROTECT_MEMORY text R+W -> %ld", ret);
	return ret == -EPERM ? V_BLOCKED : V_ALLOWED;
}

static enum verdict heki_relock(struct attack *a)
{
	long ret = lvbs_vmcall(HEKI_LOCK_REGS, 0, 0, 0);

	snprintf(a->why, sizeof(a->why), "LOCK_REGS again -> %ld", ret);
	return ret == -EPERM ? V_BLOCKED : V_ALLOWED;
}

static enum verdict heki_load_cert(struct attack *a)
{
	/* A list with one range over a zeroed page: any content must be refused now. */
	u64 *page = (u64 *)get_zeroed_page(GFP_KERNEL);
	u8 *blob = (u8 *)get_zeroed_page(GFP_KERNEL);
	long ret = -ENOMEM;

	if (page && blob) {
		blob[0] = 0x30; /* looks like a DER SEQUENCE */
		page[2] = 1;	/* nranges */
		page[3] = (u64)blob;
		page[4] = virt_to_phys(blob);
		page[5] = virt_to_phys(blob) + 64;
		page[6] = HEKI_KDATA_MODULE_CERTS;
		ret = lvbs_vmcall(HEKI_LOAD_KDATA, virt_to_phys(page), 1, 0);
	}
	free_page((unsigned long)page);
	free_page((unsigned long)blob);
	snprintf(a->why, sizeof(a->why), "LOAD_KDATA new certificate -> %ld", ret);
	return ret == -EPERM ? V_BLOCKED : V_ALLOWED;
}

static struct attack attacks[] = {
	{ "CR0.WP", "#GP", cr0_wp },
	{ "CR4.SMEP", "#GP", cr4_smep },
	{ "CR4.SMAP", "#GP", cr4_smap },
	{ "LIDT", "#GP", idt_load },
	{ "LGDT", "#GP", gdt_load },
	{ "LLDT", "#GP", ldt_load },
	{ "LTR", "#GP", tr_load },
	{ "MSR_EFER", "#GP", msr_efer },
	{ "MSR_STAR", "#GP", msr_star },
	{ "MSR_LSTAR", "#GP", msr_lstar },
	{ "MSR_CSTAR", "#GP", msr_cstar },
	{ "MSR_SFMASK", "#GP", msr_sfmask },
	{ "MSR_APIC_BASE", "#GP", msr_apic_base },
	{ "MSR_SYSENTER_CS", "#GP", msr_sysenter_cs },
	{ "MSR_SYSENTER_ESP", "#GP", msr_sysenter_esp },
	{ "MSR_SYSENTER_EIP", "#GP", msr_sysenter_eip },
	{ "HEKI_UNPROTECT_TEXT", "-EPERM", heki_unprotect_text },
	{ "HEKI_LOCK_REGS_AGAIN", "-EPERM", heki_relock },
	{ "HEKI_LOAD_CERT", "-EPERM", heki_load_cert },
	{ "WRITE_CONST", "EPT", write_const },
	{ "EXEC_MODULE_RODATA", "EPT", exec_module_rodata },
	{ "WRITE_RO", "EPT", write_ro },
	{ "WRITE_RO_AFTER_INIT", "EPT", write_ro_after_init },
	{ "WRITE_KERN", "EPT", write_kern },
	{ "WRITE_KERN_MODULE", "EPT", write_kern_module },
	{ "EXEC_DATA", "EPT", exec_data },
	{ "EXEC_STACK", "EPT", exec_stack },
	{ "EXEC_KMALLOC", "EPT", exec_kmalloc },
	{ "EXEC_VMALLOC", "EPT", exec_vmalloc },
	{ "EXEC_RODATA", "EPT", exec_kernel_rodata },
	{ "EXEC_USERSPACE", "SMEP", exec_userspace },
	{ "ACCESS_USERSPACE", "SMAP", access_userspace },
};

static int attack_thread(void *arg)
{
	struct attack *a = arg;

	a->verdict = a->fn(a);
	complete(&a->done);
	return 0;
}

/* Runs one attack in its own kthread; a thread that dies is a blocked attack. */
static void run_one(struct attack *a)
{
	struct task_struct *t;
	bool finished = false;
	int waited;

	init_completion(&a->done);
	a->verdict = V_PENDING;
	a->why[0] = 0;
	pr_info("lvbs-attack: %s: starting (expect %s)\n", a->name, a->expect);
	t = kthread_create(attack_thread, a, "lvbs-%s", a->name);
	if (IS_ERR(t)) {
		a->verdict = V_ERROR;
		snprintf(a->why, sizeof(a->why), "kthread_create failed");
	} else {
		get_task_struct(t);
		wake_up_process(t);
		/* Up to 60 s: an oops prints a few KiB through the polled UART. */
		for (waited = 0; waited < 600; waited++) {
			if (wait_for_completion_timeout(&a->done, HZ / 10)) {
				finished = true;
				break;
			}
			if (READ_ONCE(t->flags) & PF_EXITING)
				break;
		}
		if (!finished) {
			if (READ_ONCE(t->flags) & PF_EXITING) {
				a->verdict = V_BLOCKED;
				snprintf(a->why, sizeof(a->why), "the attacking thread faulted and was killed");
			} else {
				a->verdict = V_ERROR;
				snprintf(a->why, sizeof(a->why), "the attacking thread hangs");
			}
		}
		put_task_struct(t);
	}
	switch (a->verdict) {
	case V_BLOCKED:
		blocked++;
		pr_info("lvbs-attack: %s: BLOCKED (%s; expected %s)\n", a->name, a->why, a->expect);
		break;
	case V_ALLOWED:
		allowed++;
		pr_err("lvbs-attack: %s: ALLOWED (%s)\n", a->name, a->why);
		break;
	default:
		errors++;
		pr_err("lvbs-attack: %s: ERROR (%s)\n", a->name, a->why);
	}
}

static int run_set(const char *val, const struct kernel_param *kp)
{
	struct mm_struct *mm = current->mm;
	size_t i;

	if (!sysfs_streq(val, "1"))
		return -EINVAL;
	if (!lvbs_heki_boot_ended())
		pr_warn("lvbs-attacks: the end of boot was not signalled\n");
	blocked = allowed = errors = 0;
	for (i = 0; i < ARRAY_SIZE(attacks); i++) {
		/* A user mm for the user-memory attacks: the writer's, with one user reference each. */
		attacks[i].mm = NULL;
		if (mm && attacks[i].fn == exec_userspace)
			attacks[i].mm = mm;
		if (mm && attacks[i].fn == access_userspace)
			attacks[i].mm = mm;
		if (attacks[i].mm)
			mmget(attacks[i].mm);
		run_one(&attacks[i]);
		/* A dead thread's exit dropped the reference (exit_mm); a live one must. */
		if (attacks[i].mm && attacks[i].verdict != V_BLOCKED)
			mmput(attacks[i].mm);
	}
	pr_info("lvbs-attacks: %d blocked, %d allowed, %d errors (%zu attacks)\n", blocked, allowed,
		errors, ARRAY_SIZE(attacks));
	return 0;
}

static const struct kernel_param_ops run_ops = { .set = run_set };
module_param_cb(run, &run_ops, NULL, 0200);
MODULE_PARM_DESC(run, "write 1: run every attack");

static int __init lvbs_attacks_init(void)
{
	if (lvbs_heki_boot_ended()) {
		pr_err("lvbs-attacks: loaded after the end of boot: its text cannot be protected\n");
		return -EPERM;
	}
	return lvbs_heki_protect_module(THIS_MODULE);
}
module_init(lvbs_attacks_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("LVBS attack replay for the lvbs-tdx paravisor");
