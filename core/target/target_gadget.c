/* Finding the instruction sequences injection runs through in a target's
 * own code (arch.h says why): executable mappings are read, never written. */
#define _GNU_SOURCE
#include "target/target.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>

#define CHUNK 65536u
#define LONGEST 16u

/* Up to two lists searched in one pass over the executable mappings
 * (attach needs both: one read of the maps and of each chunk instead of
 * two; the two passes took 0.3-0.6 ms of a restore's attach here). Each
 * list's answer is what a pass of its own finds: the first chunk holding
 * one of its sequences, the earliest in the list among those. */
#define LISTS 2

struct find {
	int pid;
	size_t n, left;
	const aiotk_gadget *list[LISTS];
	uint64_t addr[LISTS];
};

static int read_at(int pid, uint64_t addr, uint8_t *buf, size_t len)
{
	struct iovec l = { buf, len }, r = { (void *)(uintptr_t)addr, len };
	ssize_t n = process_vm_readv(pid, &l, 1, &r, 1, 0);
	return n < 0 ? -errno : (int)n;
}

static void scan_chunk(struct find *f, const uint8_t *buf, size_t len, uint64_t base)
{
	for (size_t i = 0; i < f->n; i++) {
		if (f->addr[i])
			continue;
		for (const aiotk_gadget *g = f->list[i]; g->bytes; g++) {
			const uint8_t *hit = memmem(buf, len, g->bytes, g->len);
			if (hit) {
				f->addr[i] = base + (uint64_t)(hit - buf) + g->entry;
				f->left--;
				break;
			}
		}
	}
}

static int scan(const aiotk_vma *v, void *ctx)
{
	static __thread uint8_t buf[CHUNK + LONGEST];
	struct find *f = ctx;
	if (v->perms[2] != 'x' || !strcmp(v->path, "[vsyscall]"))
		return 0;
	/* Chunks overlap by LONGEST bytes so no sequence is cut in two. */
	for (uint64_t a = v->start; a < v->end; a += CHUNK) {
		size_t want = v->end - a < CHUNK + LONGEST ? v->end - a : CHUNK + LONGEST;
		int n = read_at(f->pid, a, buf, want);
		if (n > 0)
			scan_chunk(f, buf, (size_t)n, a);
		if (!f->left)
			return 1;
	}
	return 0;
}

static int missing(int pid, const aiotk_gadget *list, aiotk_err *err)
{
	if (list == aiotk_arch_gadget_unmap_exit)
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, ENOEXEC,
				  "process %d: no munmap-then-exit sequence in its code (glibc's or musl's), so no thread of aiotk's can leave nothing behind in it", pid);
	return aiotk_fail(err, AIOTK_EINVAL, ENOEXEC,
			  "process %d: no %s instruction sequence in its code, so aiotk cannot run system calls in it without writing code (statically linked without one?)",
			  pid, list == aiotk_arch_gadget_syscall ? "system call + return" : "rt_sigreturn");
}

int aiotk_find_gadgets(int pid, const aiotk_gadget *const *lists, uint64_t *addrs, size_t n,
		       aiotk_err *err)
{
	struct find f = { .pid = pid, .n = n, .left = n };
	if (n > LISTS)
		return aiotk_fail(err, AIOTK_EINVAL, EINVAL, "at most %d gadget lists at once", LISTS);
	memcpy(f.list, lists, n * sizeof(*lists));
	int rc = aiotk_maps_each(pid, scan, &f, err);
	if (rc < 0)
		return rc;
	for (size_t i = 0; i < n; i++)
		addrs[i] = f.addr[i];
	for (size_t i = 0; i < n; i++)
		if (!f.addr[i])
			return missing(pid, lists[i], err);
	return 0;
}

int aiotk_find_gadget(int pid, const aiotk_gadget *list, uint64_t *addr,
		      aiotk_err *err)
{
	return aiotk_find_gadgets(pid, &list, addr, 1, err);
}
