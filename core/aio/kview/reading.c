/* A dump's reading of a stopped process in one call: the kernel's view of
 * its contexts, then the rings that view names. When it is settled (no
 * request in flight, every ring's tail the kernel's) it is all a dump
 * needs the process stopped for, and the policy, the image and the report
 * are made once the process runs again (scripts/aiotk/process.lua);
 * otherwise the dump reads again with the policy deciding while stopped,
 * and that path says what went wrong. */
#define _GNU_SOURCE
#include "aio/aio.h"
#include "target/target.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void aiotk_reading_free(aiotk_reading *r)
{
	for (size_t i = 0; r->rings && i < r->n; i++)
		aiotk_ring_free(&r->rings[i]);
	free(r->rings);
	aiotk_kview_free(&r->kv);
	memset(r, 0, sizeof(*r));
}

static int by_addr(const void *a, const void *b)
{
	const aiotk_kctx *x = a, *y = b;
	return x->user_id < y->user_id ? -1 : x->user_id > y->user_id;
}

/* Every ring has its context's nr (else it is not a ring aiotk can read)
 * and tail (else a completion landed between the two reads). */
static int agree(const aiotk_reading *r)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->rings[i].nr != r->kv.ctx[i].nr_events || r->rings[i].tail != r->kv.ctx[i].tail)
			return 0;
	return 1;
}

static int read_once(aiotk_target *t, aiotk_kviewer *v, int flags, aiotk_reading *r,
		     aiotk_err *err)
{
	int rc = aiotk_kview_read(v, t->pid, &r->kv, err);
	if (rc)
		return rc;
	r->n = r->kv.n;
	if (!r->n)
		return 0;
	qsort(r->kv.ctx, r->n, sizeof(*r->kv.ctx), by_addr);
	uint64_t *addr = calloc(2 * r->n, sizeof(*addr));
	r->rings = calloc(r->n, sizeof(*r->rings));
	if (!addr || !r->rings) {
		free(addr);
		return aiotk_fail(err, AIOTK_ENOMEM, ENOMEM, "out of memory");
	}
	unsigned page = (unsigned)sysconf(_SC_PAGESIZE);
	for (size_t i = 0; i < r->n; i++) {
		addr[i] = r->kv.ctx[i].user_id;
		addr[r->n + i] = aiotk_geom_len_for_nr(r->kv.ctx[i].nr_events, page);
	}
	rc = aiotk_snapshot_many(t, addr, addr + r->n, r->n, flags, r->rings, err);
	free(addr);
	if (rc) {
		free(r->rings); /* aiotk_snapshot_many freed what it had read */
		r->rings = NULL;
	}
	return rc;
}

/* The kernel's n and tail noted on each ring, as a dump records them. */
static void note(aiotk_reading *r)
{
	for (size_t i = 0; i < r->n; i++) {
		r->rings[i].n = r->kv.ctx[i].max_reqs;
		r->rings[i].kernel_tail = r->kv.ctx[i].tail;
		r->rings[i].has_kernel_tail = 1;
	}
}

static int none_in_flight(const aiotk_kview *kv)
{
	for (size_t i = 0; i < kv->n; i++)
		if (kv->ctx[i].in_flight != 0)
			return 0;
	return 1;
}

int aiotk_read_stopped(aiotk_target *t, aiotk_kviewer *v, int flags, aiotk_reading *out,
		       aiotk_err *err)
{
	memset(out, 0, sizeof(*out));
	int rc = read_once(t, v, flags, out, err);
	if (rc) {
		aiotk_reading_free(out);
		return rc;
	}
	out->settled = agree(out) && none_in_flight(&out->kv);
	if (out->settled)
		note(out);
	return 0;
}
