/* The words a stopped process stored itself: the 8-byte words of its
 * readable, writable, private mappings, and of those only the pages
 * /proc/PID/pagemap shows as its own (present or swapped, not a file's
 * page): a private file mapping's unwritten pages hold the file, not
 * anything the program stored, and untouched anonymous pages are zero.
 * Shared mappings are left out: a word there is other processes' too.
 * Both scans of a process's memory (refs.c: copies of a ring's id;
 * uring/rebuild/copies.c: liburing's structs) read it this way.
 *
 * Memory is read by process_vm_readv in runs of up to 1 MiB. */
#define _GNU_SOURCE
#include "target/target.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RUN_PAGES 256u /* 1 MiB a read */
#define PM_PRESENT (1ull << 63)
#define PM_SWAP (1ull << 62)
#define PM_FILE (1ull << 61)

struct walk {
	aiotk_target *t;
	aiotk_words_fn fn;
	void *ctx;
	const aiotk_vma *vma;       /* the mapping being read */
	int pagemap;                /* its descriptor, -1: read every page */
	aiotk_words_seen *seen;
	uint64_t buf[RUN_PAGES * AIOTK_PAGE / 8];
};

/* pages from at, read whole when they can be, else page by page (what
 * cannot be read is counted, not fatal: it holds nothing aiotk can see). */
static int read_run(struct walk *w, uint64_t at, size_t pages)
{
	size_t len = pages * AIOTK_PAGE;
	if (!aiotk_vm_rw(w->t->pid, at, w->buf, len, 0)) {
		w->seen->scanned += len;
		return w->fn(w->vma, at, w->buf, len / 8, w->ctx);
	}
	for (size_t p = 0; p < pages; p++) {
		uint64_t a = at + p * AIOTK_PAGE;
		if (aiotk_vm_rw(w->t->pid, a, w->buf, AIOTK_PAGE, 0)) {
			w->seen->unread += AIOTK_PAGE;
			continue;
		}
		w->seen->scanned += AIOTK_PAGE;
		int rc = w->fn(w->vma, a, w->buf, AIOTK_PAGE / 8, w->ctx);
		if (rc)
			return rc;
	}
	return 0;
}

static int own_page(uint64_t e) { return (e & (PM_PRESENT | PM_SWAP)) && !(e & PM_FILE); }

/* One window of up to RUN_PAGES pages: its runs of the process's own pages. */
static int read_window(struct walk *w, uint64_t at, size_t pages)
{
	uint64_t pm[RUN_PAGES];
	off_t off = (off_t)(at / AIOTK_PAGE * 8);
	if (w->seen->limit && w->seen->scanned >= w->seen->limit) {
		w->seen->skipped += pages * AIOTK_PAGE;
		return 0;
	}
	if (w->pagemap < 0 || pread(w->pagemap, pm, pages * 8, off) != (ssize_t)(pages * 8))
		return read_run(w, at, pages);
	for (size_t p = 0; p < pages;) {
		size_t q = p;
		while (q < pages && own_page(pm[q]))
			q++;
		if (q > p) {
			int rc = read_run(w, at + p * AIOTK_PAGE, q - p);
			if (rc)
				return rc;
		}
		for (p = q; p < pages && !own_page(pm[p]); p++)
			;
	}
	return 0;
}

/* Memory a program stores values in: readable, writable and private; not
 * the kernel's pages ([vvar], [vsyscall]), and no ring or aiotk mapping
 * (those are shared). */
static int stored_in(const aiotk_vma *v)
{
	return v->perms[0] == 'r' && v->perms[1] == 'w' && v->perms[3] == 'p' &&
	       strncmp(v->path, "[vvar", 5) && strcmp(v->path, "[vsyscall]") &&
	       !aiotk_vma_is_ring(v);
}

static int walk_vma(const aiotk_vma *v, void *ctx)
{
	struct walk *w = ctx;
	if (!stored_in(v))
		return 0;
	w->vma = v;
	for (uint64_t at = v->start; at < v->end; at += RUN_PAGES * AIOTK_PAGE) {
		uint64_t left = (v->end - at) / AIOTK_PAGE;
		int rc = read_window(w, at, left < RUN_PAGES ? (size_t)left : RUN_PAGES);
		if (rc)
			return rc;
	}
	return 0;
}

static int open_pagemap(int pid)
{
	char path[64];
	snprintf(path, sizeof(path), pid ? "/proc/%d/pagemap" : "/proc/self/pagemap", pid);
	return open(path, O_RDONLY | O_CLOEXEC);
}

int aiotk_own_words(aiotk_target *t, aiotk_words_fn fn, void *ctx, aiotk_words_seen *seen,
		    aiotk_err *err)
{
	struct walk *w = calloc(1, sizeof(*w));
	if (!w)
		return aiotk_fail(err, AIOTK_ENOMEM, ENOMEM, "out of memory for a memory scan");
	w->t = t, w->fn = fn, w->ctx = ctx, w->seen = seen;
	w->pagemap = open_pagemap(t->pid);
	int rc = aiotk_maps_each(t->pid, walk_vma, w, err);
	if (w->pagemap >= 0)
		close(w->pagemap);
	free(w);
	return rc;
}
