/* The kernel's rules for moving AIO rings (measured here, relied on by
 * core/aio/rebuild/remap.c), and aiotk_remap against each layout they make hard: a new
 * ring overlapping its own destination by every page offset, for ring
 * sizes from 1 to 1025 pages. */
#define _GNU_SOURCE
#include "aiotk.h"
#include "check.h"

#include <errno.h>
#include <libaio.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PAGE 4096ul

static aiotk_target self;

static uint64_t ring_len(io_context_t ctx)
{
	const aiotk_ring_header *h = (const void *)ctx;
	return aiotk_geom_len_for_nr(h->nr, PAGE);
}

static long getevents0(uint64_t ctx)
{
	struct timespec zero = { 0, 0 };
	return syscall(SYS_io_getevents, ctx, 0, 0, NULL, &zero) < 0 ? -errno : 0;
}

/* Rule: mremap refuses a destination overlapping the source (EINVAL);
 * a disjoint move works and the old id is gone. */
static void kernel_rules(void)
{
	io_context_t ctx = 0;
	CHECK(io_setup(256, &ctx) == 0, "io_setup");
	uint64_t len = ring_len(ctx), a = (uint64_t)(uintptr_t)ctx;
	void *r = mremap(ctx, len, len, MREMAP_FIXED | MREMAP_MAYMOVE, (void *)(a + PAGE));
	CHECK(r == MAP_FAILED && errno == EINVAL, "overlapping move: %p errno %d", r, errno);
	void *spot = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	r = mremap(ctx, len, len, MREMAP_FIXED | MREMAP_MAYMOVE, spot);
	CHECK(r == spot, "move onto a placeholder: %p", r);
	CHECK(getevents0(a) == -EINVAL, "old id still answers");
	CHECK(getevents0((uint64_t)(uintptr_t)spot) == 0, "new id does not answer");
	io_destroy((io_context_t)spot);
}

/* The building mark (aiotk.h): a parked ring carries it and still
 * answers (the kernel never reads compat_features), and is unmarked to
 * the kernel's own value when it goes home. */
static void parked_is_marked(void)
{
	io_context_t ctx = 0;
	aiotk_err err;
	CHECK(io_setup(64, &ctx) == 0, "io_setup");
	uint64_t home = (uint64_t)(uintptr_t)ctx, at = home, len = ring_len(ctx);
	const aiotk_ring_header *h = (const void *)ctx;
	CHECK(!aiotk_header_marked(h) && h->compat_features == AIOTK_RING_COMPAT, "fresh: %#x",
	      h->compat_features);
	CHECK_OK(aiotk_park(&self, &at, len, &err), err);
	h = (const void *)(uintptr_t)at;
	CHECK(at != home && aiotk_header_marked(h) && getevents0(at) == 0, "parked at 0x%llx: %#x",
	      (unsigned long long)at, h->compat_features);
	CHECK_OK(aiotk_unpark(&self, &at, len, home, &err), err);
	h = (const void *)(uintptr_t)at;
	CHECK(at == home && h->compat_features == AIOTK_RING_COMPAT, "home: %#x", h->compat_features);
	io_destroy((io_context_t)(uintptr_t)at);
}

/* A ring with `len` free bytes on each side: moved into the middle of a
 * reservation whose outer thirds are then released. */
static uint64_t centred_ring(uint32_t n, uint64_t *len)
{
	io_context_t ctx = 0;
	if (io_setup((int)n, &ctx))
		return 0;
	*len = ring_len(ctx);
	char *res = mmap(NULL, 3 * *len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	void *mid = mremap(ctx, *len, *len, MREMAP_FIXED | MREMAP_MAYMOVE, res + *len);
	munmap(res, *len);
	munmap(res + 2 * *len, *len);
	return mid == MAP_FAILED ? 0 : (uint64_t)(uintptr_t)mid;
}

static void overlap_every_offset(uint32_t n)
{
	uint64_t len = 0, ctx = centred_ring(n, &len);
	CHECK(ctx != 0, "n=%u: no centred ring", n);
	if (!ctx)
		return;
	long pages = (long)(len / PAGE), step = pages > 16 ? pages / 8 : 1;
	aiotk_err err;
	for (long off = -(pages - 1); off <= pages - 1; off += step) {
		if (!off)
			continue;
		uint64_t home = ctx, dest = ctx + (uint64_t)(off * (long)PAGE);
		int rc = aiotk_remap(&self, &ctx, len, dest, 0, &err);
		CHECK(rc == 0 && ctx == dest, "n=%u offset %ld pages: %s", n, off, err.msg);
		if (rc)
			break;
		rc = aiotk_remap(&self, &ctx, len, home, 0, &err);
		CHECK(rc == 0 && ctx == home, "n=%u back from %ld: %s", n, off, err.msg);
		if (rc)
			break;
	}
	CHECK(getevents0(ctx) == 0, "n=%u: ring no longer answers at 0x%llx", n,
	      (unsigned long long)ctx);
	io_destroy((io_context_t)(uintptr_t)ctx);
}

int main(void)
{
	aiotk_target_self(&self);
	kernel_rules();
	parked_is_marked();
	/* 1, 2, 5, 65, 257 and 1025 pages on 2 possible CPUs. */
	const uint32_t ns[] = { 1, 64, 256, 4096, 16384, 65535 };
	for (size_t i = 0; i < sizeof(ns) / sizeof(ns[0]); i++)
		overlap_every_offset(ns[i]);
	aiotk_target_free(&self); /* its workspace */
	return check_report();
}
