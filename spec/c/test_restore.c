/* Convergence and in-process restore with rollback, against the real
 * kernel: budget exhaustion (fs.aio-max-nr lowered for the test and put
 * back, also on a crash) and an occupied destination. */
#define _GNU_SOURCE
#include "aiotk.h"
#include "check.h"

#include <libaio.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static aiotk_target self;
static uint64_t saved_max;

static void put_limit_back(void)
{
	if (saved_max)
		aiotk_set_aio_max_nr(saved_max, NULL);
}

static void on_signal(int sig)
{
	put_limit_back();
	signal(sig, SIG_DFL);
	raise(sig);
}

static size_t ring_count(void)
{
	aiotk_vma v[64];
	size_t n = 0;
	aiotk_maps_rings(0, v, 64, &n, NULL);
	return n;
}

/* A saved ring from a live one, then the live one destroyed. */
static int saved_ring(uint32_t n, int complete, int reap, aiotk_ring *out)
{
	io_context_t ctx = 0;
	aiotk_err err;
	if (io_setup((int)n, &ctx))
		return -1;
	for (int i = 0; i < complete; i++) {
		struct iocb cb, *p = &cb;
		io_prep_pwrite(&cb, STDOUT_FILENO, "", 0, 0);
		cb.data = (void *)(uintptr_t)(0xabc000 + i);
		io_submit(ctx, 1, &p);
	}
	struct io_event ev[512];
	struct timespec zero = { 0, 0 };
	if (reap)
		io_getevents(ctx, reap, reap, ev, &zero);
	int rc = aiotk_snapshot(&self, (uint64_t)(uintptr_t)ctx, 0, out, &err);
	io_destroy(ctx);
	return rc;
}

static void converge_one_call(void)
{
	aiotk_host h;
	aiotk_err err;
	aiotk_converge_result res;
	aiotk_host_probe(&h, &err);
	int rc = aiotk_converge(&self, &h.geom, 12288, &res, &err);
	CHECK_OK(rc, err);
	CHECK(res.calls == 1 && res.n == 127 && res.nr == 383, "calls %u n %u nr %u",
	      res.calls, res.n, res.nr);
	aiotk_io_destroy(&self, res.ctx, &err);
}

/* A wrong model (64 CPUs: two pages "impossible") makes the first guess
 * miss: the kernel search finds the real smallest n and leaves only the
 * answer behind. */
static void converge_wrong_model(void)
{
	aiotk_geom_host wrong = { 64, 4096, AIOTK_FORMULA_CURRENT };
	aiotk_err err;
	aiotk_converge_result res;
	size_t before = ring_count();
	int rc = aiotk_converge(&self, &wrong, 8192, &res, &err);
	CHECK_OK(rc, err);
	CHECK(res.n == 63 && res.nr == 255 && res.calls > 1, "n %u nr %u calls %u", res.n,
	      res.nr, res.calls);
	CHECK(ring_count() == before + 1, "contexts left: %zu (before %zu)", ring_count(), before);
	aiotk_io_destroy(&self, res.ctx, &err);
	/* A model that undershoots the kernel (legacy: no doubling) guesses an
	 * n too big for a 3-page ring (254 makes 4 pages here): search down. */
	aiotk_geom_host big = { 2, 4096, AIOTK_FORMULA_LEGACY };
	rc = aiotk_converge(&self, &big, 4096 * 3, &res, &err);
	CHECK(rc == 0 && res.nr == 383, "legacy model, 3 pages: rc %d nr %u (%s)", rc, res.nr, err.msg);
	if (!rc)
		aiotk_io_destroy(&self, res.ctx, &err);
	CHECK(ring_count() == before, "contexts left: %zu", ring_count());
}

static void budget_rollback(void)
{
	aiotk_ring r;
	aiotk_err err;
	aiotk_restore_result res;
	uint64_t nr0, max0;
	CHECK(saved_ring(4096, 100, 50, &r) == 0, "saved ring");
	aiotk_aio_nr(&nr0, &max0, &err);
	saved_max = max0;
	CHECK(aiotk_set_aio_max_nr(nr0 + 1000, &err) == 0, "lower limit: %s", err.msg);
	size_t before = ring_count();
	int rc = aiotk_restore_ring(&self, &r, NULL, &res, &err);
	CHECK(rc == AIOTK_EBUDGET, "rc %d: %s", rc, err.msg);
	CHECK(strstr(err.msg, "fs.aio-max-nr") && strstr(err.msg, "4095") &&
	      strstr(err.msg, "aio-nr is"), "message names the budget: %s", err.msg);
	uint64_t nr1;
	aiotk_aio_nr(&nr1, NULL, &err);
	CHECK(nr1 == nr0 && ring_count() == before, "aio-nr %llu -> %llu, rings %zu -> %zu",
	      (unsigned long long)nr0, (unsigned long long)nr1, before, ring_count());
	put_limit_back();
	uint64_t max1;
	aiotk_aio_nr(NULL, &max1, &err);
	CHECK(max1 == max0, "limit restored: %llu", (unsigned long long)max1);
	saved_max = 0;
	aiotk_ring_free(&r);
}

static void occupied_rollback(void)
{
	aiotk_ring r;
	aiotk_err err;
	aiotk_restore_result res;
	CHECK(saved_ring(64, 30, 10, &r) == 0, "saved ring");
	uint64_t *p = mmap((void *)(uintptr_t)r.addr, 4096, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	CHECK(p != MAP_FAILED, "placeholder");
	if (p == MAP_FAILED)
		return;
	*p = 0x5eed;
	size_t before = ring_count();
	uint64_t nr0, nr1;
	aiotk_aio_nr(&nr0, NULL, &err);
	int rc = aiotk_restore_ring(&self, &r, NULL, &res, &err);
	CHECK(rc == AIOTK_EOCCUPIED, "rc %d: %s", rc, err.msg);
	CHECK(strstr(err.msg, "is mapped there") != NULL, "names occupant: %s", err.msg);
	CHECK(*p == 0x5eed, "occupant contents changed");
	aiotk_aio_nr(&nr1, NULL, &err);
	CHECK(ring_count() == before && nr1 == nr0, "a context was left behind");
	/* The caller says it owns the placeholder: the ring replaces it. */
	aiotk_restore_opts o;
	memset(&o, 0, sizeof(o));
	o.remap_flags = AIOTK_REMAP_PLACEHOLDER;
	rc = aiotk_restore_ring(&self, &r, &o, &res, &err);
	CHECK_OK(rc, err);
	aiotk_ring now;
	rc = aiotk_snapshot(&self, r.addr, 0, &now, &err);
	CHECK(rc == 0 && now.head == r.head && now.tail == r.tail && now.nevents == r.nevents &&
	      now.events[0].data == r.events[0].data, "restored over placeholder");
	if (!rc)
		aiotk_ring_free(&now);
	aiotk_io_destroy(&self, r.addr, &err);
	aiotk_ring_free(&r);
}

static void bad_saved_state(void)
{
	aiotk_ring r;
	aiotk_err err;
	aiotk_restore_result res;
	CHECK(saved_ring(1, 5, 0, &r) == 0, "saved ring");
	size_t before = ring_count();
	r.head = r.nr;
	CHECK(aiotk_restore_ring(&self, &r, NULL, &res, &err) == AIOTK_EINVAL, "head >= nr");
	r.head = 0;
	r.ring_len = 4096 + 100;
	CHECK(aiotk_restore_ring(&self, &r, NULL, &res, &err) == AIOTK_EINVAL, "unaligned");
	CHECK(ring_count() == before, "contexts left behind");
	aiotk_ring_free(&r);
	/* Snapshot of something that is not a ring: an error, no crash. */
	uint64_t junk[512] = { 0 };
	CHECK(aiotk_snapshot(&self, (uint64_t)(uintptr_t)junk, 0, &r, &err) == AIOTK_ENOTRING,
	      "junk: %s", err.msg);
	CHECK(aiotk_snapshot(&self, 4096, 0, &r, &err) == AIOTK_ESYS, "unmapped: %s", err.msg);
}

int main(void)
{
	aiotk_target_self(&self);
	atexit(put_limit_back);
	signal(SIGSEGV, on_signal);
	signal(SIGABRT, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	converge_one_call();
	converge_wrong_model();
	budget_rollback();
	occupied_rollback();
	bad_saved_state();
	aiotk_target_free(&self); /* its workspace */
	return check_report();
}
