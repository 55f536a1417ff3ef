// SPDX-License-Identifier: GPL-2.0
/*
 * lvbs_heki: the guest side of LVBS for an unmodified Linux 6.1 kernel under
 * the lvbs-tdx paravisor (docs/linux.md, "HEKI client").
 *
 * At load it performs the LVBS boot sequence (heki-lvbs-abi.md §4) for the
 * running kernel:
 *   1. LOCK_REGS on every online CPU;
 *   2. PROTECT_MEMORY: kernel text R+X, .rodata (with ro_after_init) R,
 *      .data and .bss R+W, this module's text R+X and rodata R; the section
 *      bounds come from /proc/kallsyms through module parameters (kallsyms
 *      lookups are not exported to modules);
 *   3. LOAD_KDATA with the kernel's module-signing certificates (a file: the
 *      kernel's system_certificate_list is __initconst and already freed when
 *      a module can run, so the initramfs carries a copy extracted from the
 *      kernel image);
 *   4. VALIDATE_MODULE of a real signed module the init script loaded before
 *      (`test_module`, file `test_module_path`): first a tampered copy of its
 *      file (must be refused), then the file itself (must be accepted), each
 *      with the module's loaded core regions; then FREE_MODULE_INIT.
 * SIGNAL_END_OF_BOOT comes later, when user space writes 1 to
 * /sys/module/lvbs_heki/parameters/end_of_boot: modules loaded before it
 * (the attack module) ask lvbs_heki_protect_module() to protect their text,
 * like the kernel's own text, while that is still allowed.
 *
 * Every step prints one "lvbs_heki: <step>: ..." line; the harness
 * (cargo xtask attacks --linux) checks them.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/mm.h>
#include <linux/gfp.h>
#include <linux/vmalloc.h>
#include <linux/slab.h>
#include <linux/smp.h>
#include <linux/cpu.h>
#include <linux/rculist.h>
#include <linux/kernel_read_file.h>
#include <linux/string.h>
#include <linux/utsname.h>
#include <linux/miscdevice.h>
#include <linux/uaccess.h>
#include <linux/mutex.h>
#include <asm/page.h>
#include <asm/io.h>
#include "lvbs_heki.h"

static unsigned long text_start, text_end, rodata_start, rodata_end;
static unsigned long data_start, data_end, bss_start, bss_end;
static unsigned long modules_list;
static char *certs;
static char *test_module;
static char *test_module_path;
module_param(text_start, ulong, 0400);
module_param(text_end, ulong, 0400);
module_param(rodata_start, ulong, 0400);
module_param(rodata_end, ulong, 0400);
module_param(data_start, ulong, 0400);
module_param(data_end, ulong, 0400);
module_param(bss_start, ulong, 0400);
module_param(bss_end, ulong, 0400);
module_param(modules_list, ulong, 0400);
module_param(certs, charp, 0400);
module_param(test_module, charp, 0400);
module_param(test_module_path, charp, 0400);
MODULE_PARM_DESC(text_start, "_text from /proc/kallsyms");
MODULE_PARM_DESC(modules_list, "the kernel's `modules` list head from /proc/kallsyms");
MODULE_PARM_DESC(certs, "file with the kernel's module-signing certificates (DER, concatenated)");

/* struct heki_range / struct heki_page (heki-lvbs-abi.md §3.1). */
struct heki_range {
	u64 va;
	u64 pa;
	u64 epa;
	u64 attributes;
};

#define HEKI_RANGES_PER_PAGE 127

struct heki_page {
	u64 next;
	u64 next_pa;
	u64 nranges;
	struct heki_range ranges[HEKI_RANGES_PER_PAGE];
	u64 pad;
};
static_assert(sizeof(struct heki_page) == PAGE_SIZE);

/* A heki_page chain under construction. */
struct heki_list {
	struct heki_page *first;
	struct heki_page *last;
	u64 total;
	int error;
};

static void heki_list_free(struct heki_list *l)
{
	struct heki_page *p = l->first;

	while (p) {
		struct heki_page *next = (struct heki_page *)p->next;

		free_page((unsigned long)p);
		p = next;
	}
	memset(l, 0, sizeof(*l));
}

/*
 * Appends [pa, epa) at `va`; with `merge`, a range that continues the last
 * one physically and virtually with the same attribute extends it.
 */
static void heki_add_range(struct heki_list *l, unsigned long va, u64 pa, u64 epa, u64 attr,
			   bool merge)
{
	struct heki_range *r;

	if (l->error)
		return;
	if (merge && l->last && l->last->nranges > 0) {
		r = &l->last->ranges[l->last->nranges - 1];
		/* Extend the previous range when physically contiguous. */
		if (r->attributes == attr && r->epa == pa && r->va + (r->epa - r->pa) == va) {
			r->epa = epa;
			return;
		}
	}
	if (!l->last || l->last->nranges == HEKI_RANGES_PER_PAGE) {
		struct heki_page *p = (struct heki_page *)get_zeroed_page(GFP_KERNEL);

		if (!p) {
			l->error = -ENOMEM;
			return;
		}
		if (l->last) {
			l->last->next = (u64)p;
			l->last->next_pa = virt_to_phys(p);
		} else {
			l->first = p;
		}
		l->last = p;
	}
	r = &l->last->ranges[l->last->nranges++];
	r->va = va;
	r->pa = pa;
	r->epa = epa;
	r->attributes = attr;
	l->total++;
}

static void heki_add(struct heki_list *l, unsigned long va, u64 pa, u64 epa, u64 attr)
{
	heki_add_range(l, va, pa, epa, attr, true);
}

/* The physical address behind a kernel virtual address (image, direct map or vmalloc). */
static u64 kva_to_pa(unsigned long va)
{
	if (is_vmalloc_addr((void *)va) || (va >= MODULES_VADDR && va < MODULES_END))
		return ((u64)vmalloc_to_pfn((void *)va) << PAGE_SHIFT) | offset_in_page(va);
	if (va >= __START_KERNEL_map)
		return __pa_symbol(va);
	return __pa(va);
}

/* Page-aligned range [start, end) page by page (vmalloc is not contiguous). */
static void heki_add_pages(struct heki_list *l, unsigned long start, unsigned long end, u64 attr)
{
	unsigned long va;

	for (va = start; va < end; va += PAGE_SIZE) {
		u64 pa = kva_to_pa(va);

		heki_add(l, va, pa, pa + PAGE_SIZE, attr);
	}
}

/* A blob cut at every page boundary (§3.1: data blobs never cross a page). */
static void heki_add_blob(struct heki_list *l, const void *buf, size_t len, u64 attr)
{
	unsigned long va = (unsigned long)buf, end = va + len;

	while (va < end) {
		unsigned long next = min(end, (va & PAGE_MASK) + PAGE_SIZE);
		u64 pa = kva_to_pa(va);

		heki_add_range(l, va, pa, pa + (next - va), attr, false);
		va = next;
	}
}

static long heki_send(u64 id, struct heki_list *l, u64 a3)
{
	if (l->error)
		return l->error;
	if (!l->first)
		return -EINVAL;
	return lvbs_vmcall(id, virt_to_phys(l->first), l->total, a3);
}

static bool boot_ended;

bool lvbs_heki_boot_ended(void)
{
	return boot_ended;
}
EXPORT_SYMBOL_GPL(lvbs_heki_boot_ended);

long lvbs_heki_protect_range(unsigned long va, u64 pa, u64 epa, u64 attr)
{
	struct heki_list l = {};
	long ret;

	heki_add(&l, va, pa, epa, attr);
	ret = heki_send(HEKI_PROTECT_MEMORY, &l, 0);
	heki_list_free(&l);
	return ret;
}
EXPORT_SYMBOL_GPL(lvbs_heki_protect_range);

/* Adds a module's core text (R+X) and read-only data (R) to `l`. */
static void heki_add_module(struct heki_list *l, struct module *mod)
{
	unsigned long base = (unsigned long)mod->core_layout.base;

	heki_add_pages(l, base, base + mod->core_layout.text_size,
		       HEKI_ATTR_READ | HEKI_ATTR_EXEC);
	heki_add_pages(l, base + mod->core_layout.text_size, base + mod->core_layout.ro_size,
		       HEKI_ATTR_READ);
}

int lvbs_heki_protect_module(struct module *mod)
{
	struct heki_list l = {};
	long ret;

	heki_add_module(&l, mod);
	ret = heki_send(HEKI_PROTECT_MEMORY, &l, 0);
	heki_list_free(&l);
	pr_info("lvbs_heki: PROTECT_MEMORY %s text+rodata (%u KiB): %s (%ld)\n", mod->name,
		mod->core_layout.ro_size >> 10, ret == 0 ? "OK" : "FAILED", ret);
	return ret == 0 ? 0 : -EPERM;
}
EXPORT_SYMBOL_GPL(lvbs_heki_protect_module);

static void lock_regs_on_cpu(void *info)
{
	atomic_t *failures = info;
	long ret = lvbs_vmcall(HEKI_LOCK_REGS, 0, 0, 0);

	if (ret) {
		pr_err("lvbs_heki: LOCK_REGS on CPU %d: FAILED (%ld)\n", smp_processor_id(), ret);
		atomic_inc(failures);
	} else {
		pr_info("lvbs_heki: LOCK_REGS on CPU %d: OK\n", smp_processor_id());
	}
}

static int lock_regs(void)
{
	atomic_t failures = ATOMIC_INIT(0);
	int cpu;

	cpus_read_lock();
	for_each_online_cpu(cpu)
		smp_call_function_single(cpu, lock_regs_on_cpu, &failures, 1);
	cpus_read_unlock();
	return atomic_read(&failures) ? -EIO : 0;
}

static int protect_kernel(void)
{
	struct heki_list l = {};
	unsigned long ts = text_start & PAGE_MASK, te = PAGE_ALIGN(text_end);
	unsigned long rs = max(PAGE_ALIGN(rodata_start), te), re = PAGE_ALIGN(rodata_end);
	unsigned long ds = PAGE_ALIGN(data_start), de = data_end & PAGE_MASK;
	unsigned long bs = PAGE_ALIGN(bss_start), be = bss_end & PAGE_MASK;
	long ret;

	if (!(ts && te > ts && re > rs && de > ds && be > bs && rs >= te && ds >= re)) {
		pr_err("lvbs_heki: PROTECT_MEMORY: kernel section bounds missing or out of order\n");
		return -EINVAL;
	}
	heki_add(&l, ts, __pa_symbol(ts), __pa_symbol(te), HEKI_ATTR_READ | HEKI_ATTR_EXEC);
	heki_add(&l, rs, __pa_symbol(rs), __pa_symbol(re), HEKI_ATTR_READ);
	heki_add(&l, ds, __pa_symbol(ds), __pa_symbol(de), HEKI_ATTR_READ | HEKI_ATTR_WRITE);
	heki_add(&l, bs, __pa_symbol(bs), __pa_symbol(be), HEKI_ATTR_READ | HEKI_ATTR_WRITE);
	heki_add_module(&l, THIS_MODULE);
	ret = heki_send(HEKI_PROTECT_MEMORY, &l, 0);
	pr_info("lvbs_heki: PROTECT_MEMORY kernel text %lu KiB R+X, rodata %lu KiB R, data+bss %lu KiB R+W, lvbs_heki text+rodata, %llu range(s): %s (%ld)\n",
		(te - ts) >> 10, (re - rs) >> 10, ((de - ds) + (be - bs)) >> 10, l.total,
		ret == 0 ? "OK" : "FAILED", ret);
	heki_list_free(&l);
	return ret ? -EIO : 0;
}

static int read_file(const char *path, void **buf, size_t *size, enum kernel_read_file_id id)
{
	ssize_t n;

	*buf = NULL;
	n = kernel_read_file_from_path(path, 0, buf, 64 << 20, size, id);
	if (n < 0) {
		pr_err("lvbs_heki: cannot read %s: %zd\n", path, n);
		return n;
	}
	*size = n;
	return 0;
}

static int load_certs(void)
{
	struct heki_list l = {};
	void *buf;
	size_t size;
	long ret;
	int err = read_file(certs, &buf, &size, READING_X509_CERTIFICATE);

	if (err)
		return err;
	heki_add_blob(&l, buf, size, HEKI_KDATA_MODULE_CERTS);
	ret = heki_send(HEKI_LOAD_KDATA, &l, 0);
	pr_info("lvbs_heki: LOAD_KDATA module certificates (%zu bytes from %s): %s (%ld)\n", size,
		certs, ret == 0 ? "OK" : "FAILED", ret);
	heki_list_free(&l);
	vfree(buf);
	return ret ? -EIO : 0;
}

static struct module *find_loaded_module(const char *name)
{
	struct list_head *head = (struct list_head *)modules_list;
	struct module *mod, *found = NULL;

	if (!head)
		return NULL;
	rcu_read_lock();
	list_for_each_entry_rcu(mod, head, list) {
		if (mod->state == MODULE_STATE_LIVE && !strcmp(mod->name, name)) {
			found = mod;
			break;
		}
	}
	rcu_read_unlock();
	return found;
}

/* VALIDATE_MODULE with `file` as MOD_ELF and `mod`'s core regions. */
static long validate(struct module *mod, const void *file, size_t size)
{
	struct heki_list l = {};
	unsigned long base = (unsigned long)mod->core_layout.base;
	const struct module_layout *c = &mod->core_layout;
	long ret;

	heki_add_pages(&l, base, base + c->text_size, HEKI_MOD_TEXT);
	heki_add_pages(&l, base + c->text_size, base + c->ro_size, HEKI_MOD_RODATA);
	heki_add_pages(&l, base + c->ro_size, base + c->ro_after_init_size, HEKI_MOD_RO_AFTER_INIT);
	heki_add_pages(&l, base + c->ro_after_init_size, base + PAGE_ALIGN(c->size), HEKI_MOD_DATA);
	heki_add_blob(&l, file, size, HEKI_MOD_ELF);
	ret = heki_send(HEKI_VALIDATE_MODULE, &l, 0);
	heki_list_free(&l);
	return ret;
}

static int validate_test_module(void)
{
	struct module *mod = find_loaded_module(test_module);
	void *file, *tampered;
	size_t size;
	long bad, token, freed;
	int err;

	if (!mod) {
		pr_err("lvbs_heki: VALIDATE_MODULE: module %s is not loaded\n", test_module);
		return -ENOENT;
	}
	err = read_file(test_module_path, &file, &size, READING_MODULE);
	if (err)
		return err;
	tampered = vmalloc(size);
	if (!tampered) {
		vfree(file);
		return -ENOMEM;
	}
	/* One flipped byte in the middle of the signed content. */
	memcpy(tampered, file, size);
	((u8 *)tampered)[size / 4] ^= 0x01;
	bad = validate(mod, tampered, size);
	pr_info("lvbs_heki: VALIDATE_MODULE %s, tampered copy (%zu bytes): %s (%ld)\n", mod->name,
		size, bad < 0 ? "refused" : "ACCEPTED", bad);
	token = validate(mod, file, size);
	pr_info("lvbs_heki: VALIDATE_MODULE %s, signed file (%zu bytes): %s (%ld)\n", mod->name,
		size, token >= 0 ? "accepted, token" : "REFUSED", token);
	freed = token >= 0 ? lvbs_vmcall(HEKI_FREE_MODULE_INIT, token, 0, 0) : -EINVAL;
	pr_info("lvbs_heki: FREE_MODULE_INIT %s: %s (%ld)\n", mod->name,
		freed == 0 ? "OK" : "FAILED", freed);
	vfree(tampered);
	vfree(file);
	return (bad < 0 && token >= 0 && freed == 0) ? 0 : -EIO;
}

static int end_of_boot_set(const char *val, const struct kernel_param *kp)
{
	long ret;

	if (!sysfs_streq(val, "1"))
		return -EINVAL;
	ret = lvbs_vmcall(HEKI_SIGNAL_END_OF_BOOT, 0, 0, 0);
	pr_info("lvbs_heki: SIGNAL_END_OF_BOOT: %s (%ld)\n", ret == 0 ? "OK" : "FAILED", ret);
	if (ret)
		return -EIO;
	boot_ended = true;
	return 0;
}

static int end_of_boot_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%d\n", boot_ended);
}

static const struct kernel_param_ops end_of_boot_ops = {
	.set = end_of_boot_set,
	.get = end_of_boot_get,
};
module_param_cb(end_of_boot, &end_of_boot_ops, NULL, 0600);
MODULE_PARM_DESC(end_of_boot, "write 1: SIGNAL_END_OF_BOOT");

/*
 * /dev/lvbs_tee: the OP-TEE transport for user space (docs/tee.md, "Linux
 * client"). The device owns one physically contiguous window of
 * LVBS_TEE_WINDOW bytes; a client maps it (mmap), asks for its guest-physical
 * base (LVBS_TEE_IOC_INFO), lays out the SMC-argument page, the
 * optee_msg_arg and its buffers in it with guest-physical addresses, and
 * issues LVBS_OPTEE_MESSAGE with LVBS_TEE_IOC_CALL. The call only ever names
 * a page of the window, so user space cannot point the paravisor at other
 * kernel memory; the paravisor checks every buffer the message names
 * against L2's page permissions anyway. LVBS_TEE_IOC_ATTEST asks the
 * paravisor for a TDREPORT over a nonce in the window and the event log
 * (VMCALL 0x5444_0001). Root only (mode 0600); one user at a time.
 */
#define LVBS_TEE_WINDOW_ORDER 6
#define LVBS_TEE_WINDOW (PAGE_SIZE << LVBS_TEE_WINDOW_ORDER)

struct lvbs_tee_info {
	__u64 window_gpa;
	__u64 window_size;
};

struct lvbs_tee_call {
	__u64 smc_page_offset; /* in: offset of the SMC-argument page in the window */
	__s64 ret;	       /* out: R8 (0, or a negative errno) */
};

struct lvbs_attest {
	__u64 reportdata_offset; /* in: 64 bytes of REPORTDATA (the verifier's nonce) */
	__u64 out_offset;	 /* in: where the TDREPORT, log length and log go */
	__u64 out_size;		 /* in: their room */
	__s64 ret;		 /* out: bytes written, or a negative errno */
};

#define LVBS_TEE_IOC_INFO _IOR('L', 1, struct lvbs_tee_info)
#define LVBS_TEE_IOC_CALL _IOWR('L', 2, struct lvbs_tee_call)
#define LVBS_TEE_IOC_ATTEST _IOWR('L', 3, struct lvbs_attest)
/* The paravisor's attestation call (docs/attestation.md). */
#define LVBS_ATTEST_REPORT 0x54440001

static struct page *tee_window;
static DEFINE_MUTEX(tee_lock);
static bool tee_busy;

static int tee_open(struct inode *inode, struct file *f)
{
	int ret = 0;

	mutex_lock(&tee_lock);
	if (tee_busy)
		ret = -EBUSY;
	else
		tee_busy = true;
	mutex_unlock(&tee_lock);
	return ret;
}

static int tee_release(struct inode *inode, struct file *f)
{
	mutex_lock(&tee_lock);
	tee_busy = false;
	mutex_unlock(&tee_lock);
	return 0;
}

static int tee_mmap(struct file *f, struct vm_area_struct *vma)
{
	unsigned long len = vma->vm_end - vma->vm_start;

	if (vma->vm_pgoff || len > LVBS_TEE_WINDOW)
		return -EINVAL;
	return remap_pfn_range(vma, vma->vm_start, page_to_pfn(tee_window), len,
			       vma->vm_page_prot);
}

static long tee_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
	void __user *uarg = (void __user *)arg;
	u64 base = page_to_phys(tee_window);

	switch (cmd) {
	case LVBS_TEE_IOC_INFO: {
		struct lvbs_tee_info info = { .window_gpa = base, .window_size = LVBS_TEE_WINDOW };

		return copy_to_user(uarg, &info, sizeof(info)) ? -EFAULT : 0;
	}
	case LVBS_TEE_IOC_CALL: {
		struct lvbs_tee_call call;

		if (copy_from_user(&call, uarg, sizeof(call)))
			return -EFAULT;
		if (call.smc_page_offset >= LVBS_TEE_WINDOW || offset_in_page(call.smc_page_offset))
			return -EINVAL;
		call.ret = lvbs_vmcall(LVBS_OPTEE_MESSAGE, (base + call.smc_page_offset) >> PAGE_SHIFT,
				       0, 0);
		return copy_to_user(uarg, &call, sizeof(call)) ? -EFAULT : 0;
	}
	case LVBS_TEE_IOC_ATTEST: {
		struct lvbs_attest a;

		if (copy_from_user(&a, uarg, sizeof(a)))
			return -EFAULT;
		if (a.reportdata_offset > LVBS_TEE_WINDOW - 64 || a.out_offset >= LVBS_TEE_WINDOW ||
		    a.out_size > LVBS_TEE_WINDOW - a.out_offset)
			return -EINVAL;
		a.ret = lvbs_vmcall(LVBS_ATTEST_REPORT, base + a.reportdata_offset,
				    base + a.out_offset, a.out_size);
		return copy_to_user(uarg, &a, sizeof(a)) ? -EFAULT : 0;
	}
	default:
		return -ENOTTY;
	}
}

static const struct file_operations tee_fops = {
	.owner = THIS_MODULE,
	.open = tee_open,
	.release = tee_release,
	.mmap = tee_mmap,
	.unlocked_ioctl = tee_ioctl,
};

static struct miscdevice tee_device = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "lvbs_tee",
	.fops = &tee_fops,
	.mode = 0600,
};

static void tee_device_init(void)
{
	int err;

	tee_window = alloc_pages(GFP_KERNEL | __GFP_ZERO, LVBS_TEE_WINDOW_ORDER);
	if (!tee_window) {
		pr_err("lvbs_heki: /dev/lvbs_tee: no memory for the window\n");
		return;
	}
	err = misc_register(&tee_device);
	if (err) {
		__free_pages(tee_window, LVBS_TEE_WINDOW_ORDER);
		tee_window = NULL;
		pr_err("lvbs_heki: /dev/lvbs_tee: misc_register: %d\n", err);
		return;
	}
	pr_info("lvbs_heki: /dev/lvbs_tee: %lu KiB window at GPA %#llx\n", LVBS_TEE_WINDOW >> 10,
		(u64)page_to_phys(tee_window));
}

static int __init lvbs_heki_init(void)
{
	int failed = 0;

	pr_info("lvbs_heki: LVBS boot sequence for %s\n", init_utsname()->release);
	if (lock_regs())
		failed++;
	if (protect_kernel())
		failed++;
	if (certs && load_certs())
		failed++;
	if (test_module && test_module_path && validate_test_module())
		failed++;
	pr_info("lvbs_heki: boot sequence: %s (%d step(s) failed)\n", failed ? "FAILED" : "OK",
		failed);
	tee_device_init();
	/* Stay loaded either way: the registers are pinned and the pages protected. */
	return 0;
}
module_init(lvbs_heki_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("LVBS guest client for the lvbs-tdx paravisor");
