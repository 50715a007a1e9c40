/* The TIMEOUTs of a rebuilt instance submitted again, after its POLLs,
 * with their user_data: the kernel copies each one's timespec when it
 * takes the SQE (io_uring/timeout.c, __io_timeout_prep), so the
 * timespecs sit in the journal's scratch memory only for the submission.
 * What time and count each is given is uring.rebuild_timeout's policy
 * (scripts/aiotk/uring.lua). docs/KERNEL-FACTS.md, "io_uring: TIMEOUTs
 * submitted again". */
#define _GNU_SOURCE
#include "uring/rebuild/rebuild.h"
#include "base/base.h"
#include "target/target.h"

#include <errno.h>
#include <string.h>

/* The i-th TIMEOUT's SQE, its timespec written at its place in the
 * scratch memory. */
static int timeout_sqe(uring_new *n, const void *ctx, size_t i, struct io_uring_sqe *s,
		       aiotk_err *err)
{
	const aiotk_uring_tmo *q = &((const aiotk_uring_rebuild_opts *)ctx)->timeouts[i];
	uint64_t at = URING_SCRATCH(n->j_at) + i * URING_TMO_SCRATCH;
	int64_t ts_ns = q->ts_ns < 0 ? 0 : q->ts_ns;
	struct __kernel_timespec ts = { ts_ns / 1000000000, ts_ns % 1000000000 };
	memset(s, 0, sizeof(*s));
	s->opcode = IORING_OP_TIMEOUT;
	s->fd = -1;
	s->addr = at;
	s->len = 1;
	s->off = q->off;
	s->timeout_flags = q->flags;
	s->user_data = q->user_data;
	return aiotk_poke(n->t, at, &ts, sizeof(ts), err);
}

/* A negative result for one of them other than its expiry (-ETIME: one
 * whose time had run out at the dump fires at once): refused. */
static int timeout_refused(const void *ctx, const struct io_uring_cqe *c, aiotk_err *err)
{
	const aiotk_uring_rebuild_opts *o = ctx;
	for (size_t k = 0; c->res < 0 && c->res != -ETIME && k < o->ntimeouts; k++)
		if (o->timeouts[k].user_data == c->user_data)
			return aiotk_fail(err, AIOTK_ESYS, -c->res, "TIMEOUT user_data 0x%llx submitted "
					  "again: %s", (unsigned long long)c->user_data, strerror(-c->res));
	return 0;
}

int uring_submit_timeouts(uring_new *n, uint32_t sq_entries, uint32_t head,
			  const aiotk_uring_rebuild_opts *o, aiotk_err *err)
{
	uring_resubmit r = { o->ntimeouts, o, timeout_sqe, timeout_refused };
	return uring_resubmit_all(n, sq_entries, head, &r, err);
}
