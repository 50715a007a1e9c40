/* Creating a context whose ring has exactly a saved length. */
#include "aio/rebuild/rebuild.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

static int budget_error(uint32_t n, aiotk_err *err)
{
	uint64_t nr = 0, max = 0;
	char who[32], msg[300];
	aiotk_aio_nr(&nr, &max, NULL);
	snprintf(who, sizeof(who), "io_setup(%u)", n);
	aiotk_budget_short(msg, sizeof(msg), who, n, nr, max);
	return aiotk_fail(err, AIOTK_EBUDGET, EAGAIN, "%s or free AIO contexts", msg);
}

/* io_setup(n) in the target. With `mark`, the context is aiotk's to
 * finish: the kernel writes its id into the journal page (a shared page
 * starting with AIOTK_JOURNAL_MAGIC, the workspace's), the ring is marked
 * AIOTK_RING_BUILDING, and only then the journal's slot is cleared.
 * Whenever aiotk dies in between, the journal or the mark tells a later
 * restore which context to destroy (aiotk_remove_journals, and
 * restore_process). */
static int io_setup_in(aiotk_target *t, uint32_t n, uint64_t *ctx, int mark,
		       aiotk_err *err)
{
	uint64_t journal;
	const uint64_t none = 0;
	int rc = aiotk_ws_journal(t, &journal, err);
	if (rc)
		return rc;
	long r = aiotk_sys(t, SYS_io_setup, n, (long)(journal + AIOTK_WS_SLOT), 0, 0, 0, 0);
	if (r == -EAGAIN)
		return budget_error(n, err);
	if (r < 0)
		return aiotk_fail(err, r == -EINVAL ? AIOTK_EINVAL : AIOTK_ESYS,
				  (int)-r, "io_setup(%u) failed: %s", n,
				  strerror((int)-r));
	rc = aiotk_peek(t, journal + AIOTK_WS_SLOT, ctx, sizeof(*ctx), err);
	if (!rc && mark)
		rc = aiotk_ring_mark(t, *ctx, err);
	if (!rc)
		rc = aiotk_poke(t, journal + AIOTK_WS_SLOT, &none, sizeof(none), err);
	return rc;
}

/* The mark's field of ctx's ring written in t, as h has it. */
static int put_compat(aiotk_target *t, uint64_t ctx, const aiotk_ring_header *h,
		      aiotk_err *err)
{
	return aiotk_poke(t, ctx + offsetof(aiotk_ring_header, compat_features),
			  &h->compat_features, sizeof(h->compat_features), err);
}

int aiotk_ring_mark(aiotk_target *t, uint64_t ctx, aiotk_err *err)
{
	aiotk_ring_header h;
	aiotk_header_mark(&h);
	return put_compat(t, ctx, &h, err);
}

int aiotk_ring_unmark(aiotk_target *t, uint64_t ctx, uint32_t compat, aiotk_err *err)
{
	aiotk_ring_header h;
	aiotk_header_unmark(&h, compat);
	return put_compat(t, ctx, &h, err);
}

int aiotk_io_setup(aiotk_target *t, uint32_t n, uint64_t *ctx, aiotk_err *err)
{
	return io_setup_in(t, n, ctx, 0, err);
}

int aiotk_remove_journals(aiotk_target *t, unsigned *removed, aiotk_err *err)
{
	aiotk_vma *v;
	size_t n;
	uint64_t own = aiotk_ws_own_journal(t);
	*removed = 0;
	int rc = aiotk_maps_list(t->pid, &v, &n, err);
	if (rc)
		return rc;
	*removed += aiotk_remove_destroyer(t, v, n);
	for (size_t i = 0; i < n; i++) {
		uint64_t head[2];
		/* at AIOTK_WS_JOURNAL_AT, one is aiotk's before its magic is written */
		if (!aiotk_vma_is_journal(&v[i]) || v[i].start == own ||
		    aiotk_peek(t, v[i].start, head, sizeof(head), NULL) ||
		    (head[0] != AIOTK_JOURNAL_MAGIC && v[i].start != AIOTK_WS_JOURNAL_AT))
			continue;
		if (head[0] != AIOTK_JOURNAL_MAGIC)
			head[1] = 0;
		if (head[1])
			aiotk_io_destroy(t, head[1], NULL); /* gone already: fine */
		aiotk_scratch_unmap(t, v[i].start, AIOTK_JOURNAL_LEN);
		(*removed)++;
	}
	free(v);
	return 0;
}

int aiotk_io_destroy(aiotk_target *t, uint64_t ctx, aiotk_err *err)
{
	long r = aiotk_sys(t, SYS_io_destroy, (long)ctx, 0, 0, 0, 0, 0);
	if (r < 0)
		return aiotk_fail(err, AIOTK_ESYS, (int)-r,
				  "io_destroy(0x%llx) failed: %s",
				  (unsigned long long)ctx, strerror((int)-r));
	return 0;
}

/* One real io_setup(n): the ring length the kernel actually made. */
static int probe(aiotk_target *t, uint32_t n, unsigned page_size,
		 uint64_t *ctx, uint32_t *nr, uint64_t *len, aiotk_err *err)
{
	int rc = io_setup_in(t, n, ctx, 1, err);
	if (!rc)
		rc = aiotk_peek(t, *ctx + offsetof(aiotk_ring_header, nr), nr, sizeof(*nr), err);
	if (rc)
		return rc;
	*len = aiotk_geom_len_for_nr(*nr, page_size);
	return 0;
}

struct search {
	aiotk_target *t;
	uint64_t target_len;
	unsigned page_size;
	aiotk_converge_result best; /* smallest exact n so far; ctx 0: none */
	unsigned calls;
};

/* Probe n; keep the context only if it is the smallest exact one so far.
 * Returns <0 error, else sign of (len(n) - target) as -1/0/+1 in *cmp. */
static int try_n(struct search *s, uint32_t n, int *cmp, aiotk_err *err)
{
	uint64_t ctx, len;
	uint32_t nr;
	int rc = probe(s->t, n, s->page_size, &ctx, &nr, &len, err);
	s->calls++;
	if (rc)
		return rc;
	*cmp = len < s->target_len ? -1 : len > s->target_len;
	if (*cmp == 0 && (!s->best.ctx || n < s->best.n)) {
		if (s->best.ctx)
			aiotk_io_destroy(s->t, s->best.ctx, NULL);
		s->best = (aiotk_converge_result){ ctx, n, nr, 0 };
		return 0;
	}
	return aiotk_io_destroy(s->t, ctx, err);
}

/* The kernel disagreed with the model: binary search for the smallest n
 * with len(n) >= target using real io_setup calls (len is monotone in n). */
static int search_kernel(struct search *s, uint32_t lo, uint32_t hi,
			 aiotk_err *err)
{
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		int cmp, rc = try_n(s, mid, &cmp, err);
		if (rc)
			return rc;
		if (cmp >= 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	if (s->best.ctx && s->best.n == lo)
		return 0;
	int cmp, rc = try_n(s, lo, &cmp, err);
	if (rc)
		return rc;
	if (cmp != 0)
		return aiotk_fail(err, AIOTK_EIMPOSSIBLE, 0,
				  "this kernel makes no %llu-byte ring: io_setup(%u) is the first to reach it and overshoots (%u io_setup calls tried)",
				  (unsigned long long)s->target_len, lo, s->calls);
	return 0;
}

/* Too small: double n until the ring is long enough, so probes stay near
 * the answer (and inside the aio-max-nr budget), then bisect. */
static int gallop_up(struct search *s, uint32_t n, aiotk_err *err)
{
	uint32_t lo = n + 1, hi = n;
	int cmp = -1;
	while (cmp < 0) {
		if (hi == AIOTK_MAX_N)
			return aiotk_fail(err, AIOTK_EIMPOSSIBLE, 0,
					  "this kernel makes no %llu-byte ring: even io_setup(%u) is smaller",
					  (unsigned long long)s->target_len, AIOTK_MAX_N);
		lo = hi + 1;
		hi = hi > AIOTK_MAX_N / 2 ? AIOTK_MAX_N : hi * 2;
		int rc = try_n(s, hi, &cmp, err);
		if (rc)
			return rc;
	}
	return search_kernel(s, lo, hi, err);
}

static void drop_best(struct search *s)
{
	if (s->best.ctx)
		aiotk_io_destroy(s->t, s->best.ctx, NULL);
	s->best.ctx = 0;
}

int aiotk_converge(aiotk_target *t, const aiotk_geom_host *model,
		   uint64_t ring_len, aiotk_converge_result *res,
		   aiotk_err *err)
{
	return aiotk_converge_n(t, model, ring_len, 0, res, err);
}

int aiotk_converge_n(aiotk_target *t, const aiotk_geom_host *model,
		     uint64_t ring_len, uint32_t want_n,
		     aiotk_converge_result *res, aiotk_err *err)
{
	struct search s = { .t = t, .target_len = ring_len,
			    .page_size = model->page_size };
	uint32_t n = 1;
	int cmp, rc;
	if (want_n) {
		rc = try_n(&s, want_n, &cmp, err);
		if (rc)
			return rc;
		if (s.best.ctx) {
			*res = s.best;
			res->calls = s.calls;
			return 0;
		}
	}
	rc = aiotk_geom_min_n(model, ring_len, &n, err);
	if (rc == AIOTK_EINVAL)
		return rc;
	/* An impossible verdict from the model is checked against the kernel. */
	uint32_t guess = rc ? 1 : n;
	rc = try_n(&s, guess, &cmp, err);
	/* An exact first answer is final: the model gave the smallest n. */
	if (!rc && cmp > 0)
		rc = search_kernel(&s, 1, guess, err);
	else if (!rc && cmp < 0)
		rc = gallop_up(&s, guess, err);
	if (rc) {
		drop_best(&s);
		return rc;
	}
	*res = s.best;
	res->calls = s.calls;
	return 0;
}
