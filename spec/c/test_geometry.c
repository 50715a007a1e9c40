/* Geometry model against the real kernel (this host), and against other
 * hosts as a model only (simulated: other CPU counts, page sizes, the
 * legacy formula). */
#include "aiotk.h"
#include "check.h"

#include <string.h>

static aiotk_target self;

static void model_matches_kernel(const aiotk_geom_host *h, uint32_t n)
{
	aiotk_geom g;
	aiotk_err err;
	uint64_t ctx;
	uint32_t nr;
	int rc = aiotk_geom_ring(h, n, &g, &err);
	CHECK_OK(rc, err);
	rc = aiotk_io_setup(&self, n, &ctx, &err);
	CHECK_OK(rc, err);
	if (rc)
		return;
	aiotk_peek(&self, ctx + 4, &nr, 4, &err);
	CHECK(nr == g.nr, "io_setup(%u): kernel nr %u, model %u", n, nr, g.nr);
	aiotk_io_destroy(&self, ctx, &err);
}

static void sweep_real_kernel(const aiotk_geom_host *h)
{
	static const uint32_t big[] = { 255, 256, 257, 1000, 4095, 4096, 4097,
					10000, 32767, 65534, 65535, 65536 };
	for (uint32_t n = 1; n <= 40; n++)
		model_matches_kernel(h, n);
	for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++)
		model_matches_kernel(h, big[i]);
}

static void measured_values(const aiotk_geom_host *h)
{
	static const struct { uint32_t n, nr; } m[] = {
		{ 1, 127 }, { 16, 127 }, { 64, 255 }, { 128, 383 }, { 4096, 8319 },
		{ 65534, 131071 }, { 65535, 131199 }, { 65536, 131199 },
	};
	for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		aiotk_geom g;
		aiotk_geom_ring(h, m[i].n, &g, NULL);
		CHECK(g.nr == m[i].nr, "n %u: nr %u, facts say %u", m[i].n, g.nr, m[i].nr);
	}
}

/* min_n is the smallest n: n gives the length and n-1 does not. */
static void inverse_is_smallest(const aiotk_geom_host *h)
{
	for (uint32_t n = 1; n < 70000; n += 97) {
		aiotk_geom g, below;
		uint32_t m;
		aiotk_err err;
		aiotk_geom_ring(h, n, &g, NULL);
		int rc = aiotk_geom_min_n(h, g.ring_len, &m, &err);
		CHECK_OK(rc, err);
		aiotk_geom_ring(h, m, &below, NULL);
		CHECK(m <= n && below.ring_len == g.ring_len, "n %u -> min %u", n, m);
		if (m > 1) {
			aiotk_geom_ring(h, m - 1, &below, NULL);
			CHECK(below.ring_len < g.ring_len, "n %u: min %u not smallest", n, m);
		}
	}
}

static void simulated_other_hosts(void)
{
	aiotk_err err;
	uint32_t n;
	/* 16+ CPUs: io_setup(1) asks for 2*64+2 events, more than one page. */
	aiotk_geom_host many = { 16, 4096, AIOTK_FORMULA_CURRENT };
	int rc = aiotk_geom_min_n(&many, 4096, &n, &err);
	CHECK(rc == AIOTK_EIMPOSSIBLE, "16 CPUs, one page: rc %d", rc);
	CHECK(strstr(err.msg, "minimum ring") != NULL, "reason: %s", err.msg);
	aiotk_geom_host huge = { 4096, 4096, AIOTK_FORMULA_CURRENT };
	aiotk_geom g;
	aiotk_geom_ring(&huge, 1, &g, NULL);
	/* 2 * 16384 + 2 events: 1048672 bytes -> 257 pages */
	CHECK(g.nr == 32895 && g.ring_len == 257 * 4096, "4096 CPUs: nr %u len %llu", g.nr,
	      (unsigned long long)g.ring_len);
	/* 64 KiB pages: one page holds 2047 events. */
	aiotk_geom_host big_pages = { 2, 65536, AIOTK_FORMULA_CURRENT };
	aiotk_geom_ring(&big_pages, 1, &g, NULL);
	CHECK(g.nr == 2047, "64K pages: nr %u", g.nr);
	rc = aiotk_geom_min_n(&big_pages, 65536 * 2, &n, &err);
	CHECK(rc == 0 && n == 1023, "64K pages, 2 pages: rc %d n %u", rc, n);
	/* Legacy (3.10): e = n + 2, no CPU minimum. */
	aiotk_geom_host legacy = { 64, 4096, AIOTK_FORMULA_LEGACY };
	aiotk_geom_ring(&legacy, 125, &g, NULL);
	CHECK(g.nr == 127, "legacy 125: nr %u", g.nr);
	aiotk_geom_ring(&legacy, 126, &g, NULL);
	CHECK(g.nr == 255, "legacy 126: nr %u", g.nr);
	rc = aiotk_geom_min_n(&legacy, 8192, &n, &err);
	CHECK(rc == 0 && n == 126, "legacy two pages: rc %d n %u", rc, n);
	/* 1 CPU: n=1 still one page. */
	aiotk_geom_host one = { 1, 4096, AIOTK_FORMULA_CURRENT };
	rc = aiotk_geom_min_n(&one, 4096, &n, &err);
	CHECK(rc == 0 && n == 1, "1 CPU: rc %d n %u", rc, n);
}

static void bad_input(const aiotk_geom_host *h)
{
	aiotk_err err;
	aiotk_geom g;
	uint32_t n;
	CHECK(aiotk_geom_ring(h, 0, &g, &err) == AIOTK_EINVAL, "n=0");
	CHECK(aiotk_geom_ring(h, AIOTK_MAX_N + 1, &g, &err) == AIOTK_EINVAL, "n too big");
	CHECK(aiotk_geom_min_n(h, 4097, &n, &err) == AIOTK_EINVAL, "unaligned length");
	CHECK(aiotk_geom_min_n(h, 1ull << 40, &n, &err) == AIOTK_EIMPOSSIBLE, "huge: %s", err.msg);
	aiotk_geom_host zero = { 0, 4096, AIOTK_FORMULA_CURRENT };
	CHECK(aiotk_geom_ring(&zero, 1, &g, &err) == AIOTK_EINVAL, "0 CPUs");
	aiotk_geom_host odd = { 2, 5000, AIOTK_FORMULA_CURRENT };
	CHECK(aiotk_geom_ring(&odd, 1, &g, &err) == AIOTK_EINVAL, "page 5000");
	/* A length between two ring sizes is impossible (legacy steps by 1). */
	aiotk_geom_host legacy = { 2, 4096, AIOTK_FORMULA_LEGACY };
	CHECK(aiotk_geom_min_n(&legacy, 4096, &n, &err) == 0 && n == 1, "legacy 1 page");
}

int main(void)
{
	aiotk_host host;
	aiotk_err err;
	aiotk_target_self(&self);
	int rc = aiotk_host_probe(&host, &err);
	CHECK_OK(rc, err);
	sweep_real_kernel(&host.geom);
	/* The facts' measured figures, as a model of their 2-CPU host. */
	aiotk_geom_host facts_host = { 2, 4096, AIOTK_FORMULA_CURRENT };
	measured_values(&facts_host);
	inverse_is_smallest(&host.geom);
	simulated_other_hosts();
	bad_input(&host.geom);
	aiotk_target_free(&self); /* its workspace */
	return check_report();
}
