/* The kernel's ring sizing (fs/aio.c ioctx_alloc + aio_setup_ring) as a
 * pure function, so that hosts this machine cannot be are still answerable. */
#include "aiotk.h"

/* io_setup doubles n and the result must stay under 0x10000000/32 events. */
#define KERNEL_MAX_EVENTS (0x10000000u / AIOTK_EVENT_LEN)

static int check_host(const aiotk_geom_host *h, aiotk_err *err)
{
	if (h->cpus == 0 || h->cpus > 65536)
		return aiotk_fail(err, AIOTK_EINVAL, 0,
				  "host model: %u possible CPUs is not a valid count (1..65536)",
				  h->cpus);
	if (h->page_size < 4096 || (h->page_size & (h->page_size - 1)))
		return aiotk_fail(err, AIOTK_EINVAL, 0,
				  "host model: page size %u is not a power of two >= 4096",
				  h->page_size);
	return 0;
}

uint64_t aiotk_geom_len_for_nr(uint32_t nr, unsigned page_size)
{
	uint64_t bytes = AIOTK_HEADER_LEN + (uint64_t)AIOTK_EVENT_LEN * nr;
	return (bytes + page_size - 1) / page_size * page_size;
}

uint32_t aiotk_geom_nr_for_len(uint64_t ring_len)
{
	if (ring_len < AIOTK_HEADER_LEN)
		return 0;
	return (uint32_t)((ring_len - AIOTK_HEADER_LEN) / AIOTK_EVENT_LEN);
}

/* Events requested from aio_setup_ring, before page rounding. */
static uint64_t requested_events(const aiotk_geom_host *h, uint32_t n)
{
	uint64_t e = n;
	if (h->formula == AIOTK_FORMULA_CURRENT) {
		uint64_t min = 4ull * h->cpus;
		e = 2 * (e > min ? e : min);
	}
	return e + 2;
}

int aiotk_geom_ring(const aiotk_geom_host *h, uint32_t n, aiotk_geom *out,
		    aiotk_err *err)
{
	int rc = check_host(h, err);
	if (rc)
		return rc;
	if (n == 0 || n > AIOTK_MAX_N)
		return aiotk_fail(err, AIOTK_EINVAL, 0,
				  "io_setup(%u) is refused by the kernel (n must be 1..%u)",
				  n, AIOTK_MAX_N);
	uint64_t e = requested_events(h, n);
	uint64_t bytes = AIOTK_HEADER_LEN + AIOTK_EVENT_LEN * e;
	out->pages = (bytes + h->page_size - 1) / h->page_size;
	out->ring_len = out->pages * h->page_size;
	out->nr = aiotk_geom_nr_for_len(out->ring_len);
	return 0;
}

uint32_t aiotk_geom_req_batch(const aiotk_geom_host *h, uint32_t nr)
{
	uint32_t b = (nr - 1) / (4u * h->cpus);
	return b ? b : 1;
}

uint32_t aiotk_geom_capacity(const aiotk_geom_host *h, uint32_t nr)
{
	uint32_t b = aiotk_geom_req_batch(h, nr);
	return (nr - 1) - (nr - 1) % b;
}

/* Ring length grows monotonically with n: binary search over 1..MAX_N. */
int aiotk_geom_fit_n(const aiotk_geom_host *h, uint64_t ring_len, uint32_t *n,
		     aiotk_err *err)
{
	aiotk_geom g;
	int rc = check_host(h, err);
	if (rc)
		return rc;
	aiotk_geom_ring(h, AIOTK_MAX_N, &g, NULL);
	if (g.ring_len < ring_len)
		return aiotk_fail(err, AIOTK_EIMPOSSIBLE, 0,
				  "a %llu-byte ring is larger than io_setup(%u), the kernel's limit, can make (%llu bytes)",
				  (unsigned long long)ring_len, AIOTK_MAX_N,
				  (unsigned long long)g.ring_len);
	uint32_t lo = 1, hi = AIOTK_MAX_N;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		aiotk_geom_ring(h, mid, &g, NULL);
		if (g.ring_len >= ring_len)
			hi = mid;
		else
			lo = mid + 1;
	}
	*n = lo;
	return 0;
}

/* The smallest n that fits, if it fits exactly. */
int aiotk_geom_min_n(const aiotk_geom_host *h, uint64_t ring_len, uint32_t *n,
		     aiotk_err *err)
{
	aiotk_geom g;
	uint32_t fit;
	int rc = check_host(h, err);
	if (rc)
		return rc;
	if (ring_len == 0 || ring_len % h->page_size)
		return aiotk_fail(err, AIOTK_EINVAL, 0,
				  "ring length %llu is not a positive multiple of the page size %u",
				  (unsigned long long)ring_len, h->page_size);
	aiotk_geom_ring(h, 1, &g, NULL);
	if (g.ring_len > ring_len)
		return aiotk_fail(err, AIOTK_EIMPOSSIBLE, 0,
				  "a %llu-byte ring is smaller than the minimum ring on that host (%llu bytes for io_setup(1) with %u possible CPUs, %u-byte pages, %s formula)",
				  (unsigned long long)ring_len,
				  (unsigned long long)g.ring_len, h->cpus,
				  h->page_size, aiotk_formula_name(h->formula));
	if ((rc = aiotk_geom_fit_n(h, ring_len, &fit, err)))
		return rc;
	aiotk_geom_ring(h, fit, &g, NULL);
	if (g.ring_len != ring_len)
		return aiotk_fail(err, AIOTK_EIMPOSSIBLE, 0,
				  "no io_setup(n) makes a %llu-byte ring on that host: n=%u gives %llu bytes, n=%u gives less",
				  (unsigned long long)ring_len, fit,
				  (unsigned long long)g.ring_len, fit - 1);
	*n = fit;
	return 0;
}

const char *aiotk_formula_name(enum aiotk_formula f)
{
	return f == AIOTK_FORMULA_LEGACY ? "legacy" : "current";
}
