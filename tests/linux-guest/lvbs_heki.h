/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The LVBS/HEKI call ABI of lvbs-tdx as seen from a Linux L2 guest
 * (shared/reference/heki-lvbs-abi.md §2.2, §3.1): VMCALL with RDI = function
 * id, RSI/RDX/R8 = arguments, the result (a negative errno or a token) in R8.
 */
#ifndef LVBS_HEKI_H
#define LVBS_HEKI_H

#include <linux/types.h>
#include <linux/module.h>

#define HEKI_LOCK_REGS 0x1FFE2
#define HEKI_SIGNAL_END_OF_BOOT 0x1FFE3
#define HEKI_PROTECT_MEMORY 0x1FFE4
#define HEKI_LOAD_KDATA 0x1FFE5
#define HEKI_VALIDATE_MODULE 0x1FFE6
#define HEKI_FREE_MODULE_INIT 0x1FFE7
#define HEKI_UNLOAD_MODULE 0x1FFE8
#define LVBS_OPTEE_MESSAGE 0x1FFF0

/* PROTECT_MEMORY attributes (§3.2). */
#define HEKI_ATTR_READ (1ULL << 0)
#define HEKI_ATTR_WRITE (1ULL << 1)
#define HEKI_ATTR_EXEC (1ULL << 2)

/* LOAD_KDATA types (§3.2). */
#define HEKI_KDATA_MODULE_CERTS 0

/* VALIDATE_MODULE section types: enum mod_mem_type plus MOD_ELF (§3.2). */
#define HEKI_MOD_TEXT 0
#define HEKI_MOD_DATA 1
#define HEKI_MOD_RODATA 2
#define HEKI_MOD_RO_AFTER_INIT 3
#define HEKI_MOD_ELF 7

/* One call to the paravisor. Interrupts stay as they are. */
static inline long lvbs_vmcall(u64 id, u64 a1, u64 a2, u64 a3)
{
	register u64 r8 asm("r8") = a3;

	asm volatile("vmcall"
		     : "+r"(r8)
		     : "D"(id), "S"(a1), "d"(a2)
		     : "memory");
	return (long)r8;
}

/* Exported by lvbs_heki.ko. */
int lvbs_heki_protect_module(struct module *mod);
bool lvbs_heki_boot_ended(void);
long lvbs_heki_protect_range(unsigned long va, u64 pa, u64 epa, u64 attr);

#endif
