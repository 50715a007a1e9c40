/* An io_uring mapping placed at its saved address.
 *
 * io_uring picks the address of its mappings itself: its
 * get_unmapped_area refuses any hint (EINVAL, MAP_FIXED included) and
 * mremap refuses its mappings (VM_DONTEXPAND). The kernel's top-down
 * choice takes the highest free gap that fits, at that gap's top; so
 * every gap above the destination that could take the mapping, and what
 * is free just above the destination, is filled with placeholders for the
 * one mmap(NULL), which then lands at the destination when it is free.
 * Where it lands is checked: elsewhere, it is unmapped and refused.
 * docs/KERNEL-FACTS.md, "io_uring: rebuilding an instance". */
#define _GNU_SOURCE
#include "uring/rebuild/rebuild.h"
#include "base/base.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#define MAX_FILLS URING_JOURNAL_FILLS

typedef struct fills {
	uint64_t addr[MAX_FILLS], len[MAX_FILLS];
	size_t n;
} fills;

/* The end of the highest mapping below the stack: the top-down search
 * starts under mmap_base, which lies between it and the stack. */
static uint64_t search_top(const aiotk_vma *v, size_t n)
{
	uint64_t stack = UINT64_MAX, top = 0;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(v[i].path, "[stack]"))
			stack = v[i].start;
	for (size_t i = 0; i < n; i++)
		if (v[i].end <= stack && v[i].end > top)
			top = v[i].end;
	return top;
}

static int add(fills *f, uint64_t from, uint64_t to, aiotk_err *err)
{
	if (f->n == MAX_FILLS)
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, 0,
				  "more than %d free gaps above an io_uring mapping's saved address; "
				  "its place cannot be steered", MAX_FILLS);
	f->addr[f->n] = from, f->len[f->n++] = to - from;
	return 0;
}

/* The gaps to fill above [dest, dest + len), which must be free. */
static int plan(const aiotk_vma *v, size_t n, uint64_t dest, uint64_t len, fills *f,
		aiotk_err *err)
{
	uint64_t top = search_top(v, n), prev = 0;
	f->n = 0;
	for (size_t i = 0; i <= n; i++) {
		uint64_t next = i < n ? v[i].start : top;
		if (i < n && v[i].start < dest + len && dest < v[i].end) {
			char d[320];
			aiotk_vma_describe(&v[i], d, sizeof(d));
			return aiotk_fail(err, AIOTK_EOCCUPIED, EEXIST,
					  "io_uring mapping 0x%llx-0x%llx: %s is mapped there",
					  (unsigned long long)dest, (unsigned long long)(dest + len), d);
		}
		uint64_t from = prev > dest + len ? prev : dest + len;
		if (next > top)
			next = top;
		/* Just above the destination always (the top of its own gap);
		 * higher up only what could take the mapping. */
		if (next > from && (from == dest + len || next - from >= len)) {
			int rc = add(f, from, next, err);
			if (rc)
				return rc;
		}
		if (i < n && v[i].end > prev)
			prev = v[i].end;
	}
	return 0;
}

static void unfill(aiotk_target *t, const fills *f, size_t upto)
{
	aiotk_err ignored;
	for (size_t i = 0; i < upto; i++)
		aiotk_unmap(t, f->addr[i], f->len[i], &ignored);
}

static int mapped_at(aiotk_target *t, int fd, uint64_t offset, uint64_t dest, uint64_t len,
		     aiotk_err *err)
{
	long r = aiotk_sys(t, SYS_mmap, 0, (long)len, PROT_READ | PROT_WRITE,
			   MAP_SHARED | MAP_POPULATE, fd, (long)offset);
	if (aiotk_sys_failed(r))
		return aiotk_fail(err, AIOTK_ESYS, (int)-r, "mmap of io_uring offset 0x%llx (%llu bytes): %s",
				  (unsigned long long)offset, (unsigned long long)len, strerror((int)-r));
	if ((uint64_t)r == dest)
		return 0;
	aiotk_sys(t, SYS_munmap, r, (long)len, 0, 0, 0, 0);
	return aiotk_fail(err, AIOTK_EOCCUPIED, 0,
			  "io_uring offset 0x%llx: the kernel placed it at 0x%llx, not at its saved 0x%llx "
			  "(a free gap above it that aiotk could not see); nothing was kept",
			  (unsigned long long)offset, (unsigned long long)r, (unsigned long long)dest);
}

int uring_place(uring_new *n, uint64_t offset, uint64_t dest, uint64_t len, aiotk_err *err)
{
	aiotk_target *t = n->t;
	aiotk_vma *v;
	size_t nv;
	int rc = aiotk_maps_list(t->pid, &v, &nv, err);
	if (rc)
		return rc;
	fills *f = malloc(sizeof(*f));
	if (!f) {
		free(v);
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory placing an io_uring mapping");
	}
	rc = plan(v, nv, dest, len, f, err);
	free(v);
	/* journalled first: a killed aiotk's fills are the next one's to remove */
	if (!rc)
		rc = uring_journal_ranges(n, 1, f->addr, f->len, f->n, err);
	size_t held = 0;
	while (!rc && held < f->n && !(rc = aiotk_reserve(t, f->addr[held], f->len[held], err)))
		held++;
	if (!rc)
		rc = mapped_at(t, n->fd, offset, dest, len, err);
	unfill(t, f, held);
	free(f);
	return rc;
}
