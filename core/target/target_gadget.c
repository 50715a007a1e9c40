/* Finding the instruction sequences injection runs through in a target's
 * own code (arch.h says why): executable mappings are read, never written. */
#define _GNU_SOURCE
#include "target/target.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>

#define CHUNK 65536u
#define LONGEST 16u

struct find {
	int pid;
	const aiotk_gadget *list;
	uint64_t addr;
};

static int read_at(int pid, uint64_t addr, uint8_t *buf, size_t len)
{
	struct iovec l = { buf, len }, r = { (void *)(uintptr_t)addr, len };
	ssize_t n = process_vm_readv(pid, &l, 1, &r, 1, 0);
	return n < 0 ? -errno : (int)n;
}

static int scan_chunk(struct find *f, const uint8_t *buf, size_t len,
		      uint64_t base)
{
	for (const aiotk_gadget *g = f->list; g->bytes; g++) {
		const uint8_t *hit = memmem(buf, len, g->bytes, g->len);
		if (hit) {
			f->addr = base + (uint64_t)(hit - buf) + g->entry;
			return 1;
		}
	}
	return 0;
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
		if (n > 0 && scan_chunk(f, buf, (size_t)n, a))
			return 1;
	}
	return 0;
}

int aiotk_find_gadget(int pid, const aiotk_gadget *list, uint64_t *addr,
		      aiotk_err *err)
{
	struct find f = { pid, list, 0 };
	int rc = aiotk_maps_each(pid, scan, &f, err);
	if (rc < 0)
		return rc;
	if (!f.addr && list == aiotk_arch_gadget_unmap_exit)
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, ENOEXEC,
				  "process %d: no munmap-then-exit sequence in its code (glibc's or musl's), so no thread of aiotk's can leave nothing behind in it", pid);
	if (!f.addr)
		return aiotk_fail(err, AIOTK_EINVAL, ENOEXEC,
				  "process %d: no %s instruction sequence in its code, so aiotk cannot run system calls in it without writing code (statically linked without one?)",
				  pid, list == aiotk_arch_gadget_syscall ? "system call + return" : "rt_sigreturn");
	*addr = f.addr;
	return 0;
}
