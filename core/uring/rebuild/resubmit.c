/* Requests in flight submitted again into a rebuilt instance after its
 * NOPs, with their user_data, through the target's injected
 * io_uring_enter: the steps POLL_ADDs (counters.c), TIMEOUTs (timeouts.c)
 * and ACCEPTs and RECVs (sockets.c) share. A request the kernel refuses at once posts its error
 * as a CQE, which fails the rebuild (undone as every failure is). */
#define _GNU_SOURCE
#include "uring/rebuild/rebuild.h"
#include "base/base.h"
#include "target/target.h"

/* SQE s at the slot of the kernel's sq head `at`, the sq_array entry
 * with it. */
static int put_sqe(uring_new *n, uint32_t sq_entries, uint32_t at, const struct io_uring_sqe *s,
		   aiotk_err *err)
{
	uint32_t slot = at & (sq_entries - 1);
	int rc = aiotk_poke(n->t, n->sqes + slot * sizeof(*s), s, sizeof(*s), err);
	return rc ? rc : aiotk_poke(n->t, n->sq_ring + n->p.sq_off.array + slot * 4, &slot, 4, err);
}

/* Each CQE posted from `from` on, given to r->refused. */
static int check_cqes(uring_new *n, uint32_t from, const uring_resubmit *r, aiotk_err *err)
{
	uint32_t tail, mask = n->p.cq_entries - 1;
	int rc = aiotk_peek(n->t, n->cq_ring + n->p.cq_off.tail, &tail, sizeof(tail), err);
	for (uint32_t i = from; !rc && i != tail; i++) {
		struct io_uring_cqe c;
		rc = aiotk_peek(n->t, n->cq_ring + n->p.cq_off.cqes + (i & mask) * sizeof(c), &c,
				sizeof(c), err);
		if (!rc)
			rc = r->refused(r->ctx, &c, err);
	}
	return rc;
}

int uring_resubmit_all(uring_new *n, uint32_t sq_entries, uint32_t head, const uring_resubmit *r,
		       aiotk_err *err)
{
	if (!r->count)
		return 0;
	uint32_t from;
	int rc = aiotk_peek(n->t, n->cq_ring + n->p.cq_off.tail, &from, sizeof(from), err);
	for (size_t i = 0; !rc && i < r->count; i++) {
		struct io_uring_sqe s;
		rc = r->sqe(n, r->ctx, i, &s, err);
		if (!rc)
			rc = put_sqe(n, sq_entries, head + (uint32_t)i, &s, err);
	}
	if (!rc)
		rc = uring_submit(n, head, (uint32_t)r->count, err);
	return rc ? rc : check_cqes(n, from, r, err);
}
