/* Relocation in a CRIU dump (core/formats/criu_relocate.c) with memory
 * running out: each allocation the rewrite of a real dump (the nr1
 * fixture: its pagemap, pages, core and pstree images) makes fails in
 * turn, and every failure is reported as out of memory (AIOTK_ENOMEM),
 * never as a bad image or a missing thread, until a run needs none to
 * fail and matches the run with memory. This executable's malloc, calloc
 * and realloc replace the C library's for the core it links (glibc's
 * __libc_ entry points do the work), which is why the test is not built
 * with the sanitizers (they replace them too). */
#include "aiotk.h"
#include "check.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

static long fail_at = -1, allocs;

static int fails(void) { return fail_at >= 0 && ++allocs == fail_at; }

void *malloc(size_t n) { return fails() ? NULL : __libc_malloc(n); }
void *calloc(size_t a, size_t b) { return fails() ? NULL : __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { return fails() ? NULL : __libc_realloc(p, n); }

/* dir/name whole, or NULL. */
static uint8_t *slurp(const char *dir, const char *name, size_t *len)
{
	char path[4096];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	uint8_t *b = fd >= 0 && !fstat(fd, &st) ? malloc((size_t)st.st_size + 1) : NULL;
	*len = b ? (size_t)st.st_size : 0;
	if (b && read(fd, b, *len) != (ssize_t)*len) {
		free(b);
		b = NULL;
	}
	if (fd >= 0)
		close(fd);
	return b;
}

struct dump { uint8_t *pm, *pages, *mm, *core, *pstree; size_t pm_len, pages_len, mm_len, core_len, pstree_len; };

/* One relocation of the fixture's ring (pages, registers, threads); its
 * result's sizes in out[0..2], freed. */
static int relocate(const struct dump *d, size_t out[3], aiotk_err *err)
{
	aiotk_criu_vma *v = NULL;
	size_t nv = 0;
	int rc = aiotk_criu_vmas(d->mm, d->mm_len, "mm-2289.img", &v, &nv, err);
	uint64_t ring = 0, len = 0;
	for (size_t i = 0; !rc && i < nv; i++)
		if (v[i].ring)
			ring = v[i].start, len = v[i].end - v[i].start;
	aiotk_move m = { ring, len, 0x10000000 };
	uint32_t nr = (uint32_t)((8192 - 32) / 32);
	uint8_t *pmo = NULL, *pgo = NULL, *co = NULL;
	aiotk_criu_refs refs = { 0 };
	int *tids = NULL;
	size_t ntids = 0;
	if (!rc)
		rc = aiotk_criu_relocate_pages(d->pm, d->pm_len, d->pages, d->pages_len, "pagemap-2289.img", v, nv,
					       &m, &nr, 1, 4096, &pmo, &out[0], &pgo, &out[1], &refs, err);
	if (!rc)
		rc = aiotk_criu_relocate_regs(d->core, d->core_len, "core-2289.img", &m, 1, &co, &out[2], &refs, err);
	if (!rc)
		rc = aiotk_criu_threads(d->pstree, d->pstree_len, "pstree.img", 2289, &tids, &ntids, err);
	free(v);
	free(pmo);
	free(pgo);
	free(co);
	free(tids);
	aiotk_criu_refs_free(&refs);
	return rc;
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "../shared/fixtures/criu/nr1";
	struct dump d;
	d.pm = slurp(dir, "pagemap-2289.img", &d.pm_len);
	d.pages = slurp(dir, "pages-1.img", &d.pages_len);
	d.mm = slurp(dir, "mm-2289.img", &d.mm_len);
	d.core = slurp(dir, "core-2289.img", &d.core_len);
	d.pstree = slurp(dir, "pstree.img", &d.pstree_len);
	if (!d.pm || !d.pages || !d.mm || !d.core || !d.pstree) {
		fprintf(stderr, "cannot read the nr1 fixture in %s\n", dir);
		return 2;
	}
	aiotk_err err;
	size_t want[3], got[3];
	CHECK_OK(relocate(&d, want, &err), err);
	long k;
	for (k = 1; k < 100000; k++) {
		allocs = 0;
		fail_at = k;
		int rc = relocate(&d, got, &err);
		fail_at = -1;
		if (!rc && allocs < k)
			break;
		CHECK(rc == AIOTK_ENOMEM && strstr(err.msg, "out of memory"),
		      "allocation %ld failing: rc %d (%s): %s", k, rc, aiotk_code_name(rc), err.msg);
	}
	CHECK(k > 10 && k < 100000, "%ld allocations", k - 1);
	CHECK(!memcmp(want, got, sizeof(want)), "the run without a failure matches the first");
	printf("%ld allocations, each failed in turn\n", k - 1);
	return check_report();
}
