/* Moving a ring to its saved address.
 *
 * The kernel's rules for moving an AIO ring mapping, measured on this
 * kernel (spec/c/test_remap.c asserts each one, docs/KERNEL-FACTS.md):
 *  - mremap(MREMAP_FIXED|MREMAP_MAYMOVE) of the whole ring moves it and the
 *    context id becomes the new address; the old id gives EINVAL.
 *  - Source and destination ranges that overlap give EINVAL, whatever lies
 *    in between. This is the EINVAL of ordinary layouts: io_setup places the
 *    new ring in the highest hole that fits, which is often the hole the
 *    destroyed ring left, a page or a few off its old place.
 *  - MREMAP_FIXED silently unmaps whatever is at the destination, so the
 *    range is checked first (unless the caller owns a placeholder there).
 *  - A parking spot the kernel picks (mmap with no hint) may itself overlap
 *    the destination, for the same top-down reason; so a ring is parked in
 *    a reservation three times its length, in a third that cannot overlap.
 * The caller's *ctx always says where the context lives, also on failure,
 * so that a rollback destroys the right one. */
#define _GNU_SOURCE
#include "aio/rebuild/rebuild.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>

static int overlaps(uint64_t a, uint64_t b, uint64_t len)
{
	return a < b + len && b < a + len;
}

static int occupied(const aiotk_vma *v, const char *what, uint64_t addr,
		    uint64_t len, const char *advice, aiotk_err *err)
{
	char d[320];
	aiotk_vma_describe(v, d, sizeof(d));
	return aiotk_fail(err, AIOTK_EOCCUPIED, EEXIST,
			  "%s 0x%llx-0x%llx: %s is mapped there%s", what,
			  (unsigned long long)addr, (unsigned long long)(addr + len),
			  d, advice);
}

static int check_free(aiotk_target *t, uint64_t ctx, uint64_t len,
		      uint64_t dest, int flags, aiotk_err *err)
{
	aiotk_vma v;
	/* Onto a placeholder the caller made, there is nothing to look at. */
	if (flags & AIOTK_REMAP_PLACEHOLDER)
		return 0;
	int rc = aiotk_maps_overlap(t->pid, dest, len, ctx, &v, err);
	if (rc == 1 && aiotk_ws_vacate(t, dest, len))
		rc = aiotk_maps_overlap(t->pid, dest, len, ctx, &v, err);
	if (rc <= 0)
		return rc;
	return occupied(&v, "cannot move ring to", dest, len,
			"; free that range or restore into another process", err);
}

static int move(aiotk_target *t, uint64_t *ctx, uint64_t len, uint64_t to,
		aiotk_err *err)
{
	long r = aiotk_sys(t, SYS_mremap, (long)*ctx, (long)len, (long)len,
			   MREMAP_FIXED | MREMAP_MAYMOVE, (long)to, 0);
	if (aiotk_sys_failed(r))
		return aiotk_fail(err, AIOTK_ESYS, (int)-r,
				  "mremap of ring 0x%llx to 0x%llx failed: %s",
				  (unsigned long long)*ctx, (unsigned long long)to,
				  strerror((int)-r));
	*ctx = to;
	return 0;
}

static void unmap(aiotk_target *t, uint64_t addr, uint64_t len)
{
	if (len)
		aiotk_sys(t, SYS_munmap, (long)addr, (long)len, 0, 0, 0, 0);
}

/* Park a ring that overlaps its destination somewhere that does not. */
static int step_aside(aiotk_target *t, uint64_t *ctx, uint64_t len,
		      uint64_t dest, aiotk_err *err)
{
	if (!overlaps(*ctx, dest, len))
		return 0;
	long r = aiotk_sys(t, SYS_mmap, 0, (long)(3 * len), PROT_NONE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (aiotk_sys_failed(r))
		return aiotk_fail(err, AIOTK_ESYS, (int)-r,
				  "cannot reserve %llu bytes to move ring 0x%llx aside: %s",
				  (unsigned long long)(3 * len), (unsigned long long)*ctx,
				  strerror((int)-r));
	/* dest is len long: if it touches the first third, it ends before
	 * the last one. */
	uint64_t res = (uint64_t)r, spot = overlaps(res, dest, len) ? res + 2 * len : res;
	int rc = move(t, ctx, len, spot, err);
	unmap(t, res, spot - res);
	unmap(t, spot + len, res + 3 * len - (spot + len));
	if (rc)
		unmap(t, spot, len);
	return rc;
}

/* The moved ring must answer as a context and still have its nr. */
static int check_moved(aiotk_target *t, uint64_t dest, uint32_t nr_before,
		       aiotk_err *err)
{
	uint32_t nr;
	long r = aiotk_sys(t, SYS_io_getevents, (long)dest, 0, 0, 0, 0, 0);
	if (r < 0)
		return aiotk_fail(err, AIOTK_ESYS, (int)-r,
				  "ring moved to 0x%llx does not answer io_getevents: %s",
				  (unsigned long long)dest, strerror((int)-r));
	int rc = aiotk_peek(t, dest + offsetof(aiotk_ring_header, nr), &nr,
			    sizeof(nr), err);
	if (!rc && nr != nr_before)
		rc = aiotk_fail(err, AIOTK_ESYS, 0,
				"ring moved to 0x%llx has nr %u, was %u",
				(unsigned long long)dest, nr, nr_before);
	return rc;
}

int aiotk_remap(aiotk_target *t, uint64_t *ctx, uint64_t len, uint64_t dest,
		int flags, aiotk_err *err)
{
	uint32_t nr;
	if (dest == *ctx)
		return 0;
	if (!dest || dest % AIOTK_PAGE || !len || len % AIOTK_PAGE)
		return aiotk_fail(err, AIOTK_EINVAL, 0,
				  "cannot move ring 0x%llx: destination 0x%llx or length %llu is not page aligned",
				  (unsigned long long)*ctx, (unsigned long long)dest,
				  (unsigned long long)len);
	int rc = check_free(t, *ctx, len, dest, flags, err);
	if (!rc)
		rc = aiotk_peek(t, *ctx + offsetof(aiotk_ring_header, nr), &nr,
				sizeof(nr), err);
	if (!rc)
		rc = step_aside(t, ctx, len, dest, err);
	if (!rc)
		rc = move(t, ctx, len, dest, err);
	return rc ? rc : check_moved(t, dest, nr, err);
}

int aiotk_claim_result(aiotk_target *t, uint64_t addr, uint64_t len, long r,
		       aiotk_err *err)
{
	if (aiotk_sys_failed(r)) {
		aiotk_vma v;
		if ((int)-r == EEXIST && aiotk_maps_overlap(t->pid, addr, len, 0, &v, NULL) == 1)
			return occupied(&v, "cannot claim", addr, len, "", err);
		return aiotk_fail(err, AIOTK_ESYS, (int)-r, "cannot reserve 0x%llx-0x%llx: %s",
				  (unsigned long long)addr, (unsigned long long)(addr + len),
				  strerror((int)-r));
	}
	if ((uint64_t)r != addr) { /* kernels before 4.17 take the flag as a hint */
		unmap(t, (uint64_t)r, len);
		return aiotk_fail(err, AIOTK_EOCCUPIED, EEXIST, "0x%llx-0x%llx is not free",
				  (unsigned long long)addr, (unsigned long long)(addr + len));
	}
	return 0;
}

int aiotk_reserve(aiotk_target *t, uint64_t addr, uint64_t len, aiotk_err *err)
{
	/* Shared anonymous and PROT_NONE: "---s /dev/zero (deleted)" in the
	 * maps, a shape programs do not make, so that one left by a killed
	 * aiotk is recognisable (AIOTK_SHARED_ANON_PATH). */
	aiotk_ws_vacate(t, addr, len);
	long r = aiotk_sys(t, SYS_mmap, (long)addr, (long)len, AIOTK_PLACEHOLDER_PROT,
			   AIOTK_PLACEHOLDER_FLAGS, -1, 0);
	return aiotk_claim_result(t, addr, len, r, err);
}

int aiotk_unmap(aiotk_target *t, uint64_t addr, uint64_t len, aiotk_err *err)
{
	long r = aiotk_sys(t, SYS_munmap, (long)addr, (long)len, 0, 0, 0, 0);
	if (aiotk_sys_failed(r))
		return aiotk_fail(err, AIOTK_ESYS, (int)-r, "munmap 0x%llx-0x%llx: %s",
				  (unsigned long long)addr, (unsigned long long)(addr + len),
				  strerror((int)-r));
	return 0;
}

int aiotk_park(aiotk_target *t, uint64_t *ctx, uint64_t len, aiotk_err *err)
{
	int rc = aiotk_ring_mark(t, *ctx, err);
	if (rc)
		return rc;
	long r = aiotk_sys(t, SYS_mmap, 0, (long)len, PROT_NONE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (aiotk_sys_failed(r))
		return aiotk_fail(err, AIOTK_ESYS, (int)-r, "cannot reserve %llu bytes to park ring 0x%llx: %s",
				  (unsigned long long)len, (unsigned long long)*ctx, strerror((int)-r));
	rc = move(t, ctx, len, (uint64_t)r, err);
	if (rc) {
		unmap(t, (uint64_t)r, len);
		aiotk_ring_unmark(t, *ctx, AIOTK_RING_COMPAT, NULL);
	}
	return rc;
}

int aiotk_park_at(aiotk_target *t, uint64_t *ctx, uint64_t len, uint64_t at, aiotk_err *err)
{
	int rc = aiotk_ring_mark(t, *ctx, err);
	return rc ? rc : move(t, ctx, len, at, err);
}

int aiotk_unpark(aiotk_target *t, uint64_t *ctx, uint64_t len, uint64_t home,
		 aiotk_err *err)
{
	int rc = aiotk_remap(t, ctx, len, home, 0, err);
	return rc ? rc : aiotk_ring_unmark(t, *ctx, AIOTK_RING_COMPAT, err);
}
