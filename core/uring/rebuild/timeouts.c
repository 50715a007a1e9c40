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
#include <stdlib.h>
#include <string.h>

static void timeout_sqe(struct io_uring_sqe *s, const aiotk_uring_tmo *q, uint64_t ts_at)
{
	memset(s, 0, sizeof(*s));
	s->opcode = IORING_OP_TIMEOUT;
	s->fd = -1;
	s->addr = ts_at;
	s->len = 1;
	s->off = q->off;
	s->timeout_flags = q->flags;
	s->user_data = q->user_data;
}

/* A TIMEOUT the kernel refused at once posts its error as a CQE: any new
 * CQE of one of them with a negative result other than its expiry
 * (-ETIME: one whose time had run out at the dump fires at once) fails
 * the rebuild. */
static int refused(uring_new *n, uint32_t from, const aiotk_uring_tmo *tmos, size_t nt,
		   aiotk_err *err)
{
	uint32_t tail, mask = n->p.cq_entries - 1;
	int rc = aiotk_peek(n->t, n->cq_ring + n->p.cq_off.tail, &tail, sizeof(tail), err);
	for (uint32_t i = from; !rc && i != tail; i++) {
		struct io_uring_cqe c;
		rc = aiotk_peek(n->t, n->cq_ring + n->p.cq_off.cqes + (i & mask) * sizeof(c), &c,
				sizeof(c), err);
		for (size_t k = 0; !rc && k < nt && c.res < 0 && c.res != -ETIME; k++)
			if (tmos[k].user_data == c.user_data)
				rc = aiotk_fail(err, AIOTK_ESYS, -c.res,
						"TIMEOUT user_data 0x%llx submitted again: %s",
						(unsigned long long)c.user_data, strerror(-c.res));
	}
	return rc;
}

int uring_submit_timeouts(uring_new *n, uint32_t sq_entries, uint32_t head,
			  const aiotk_uring_tmo *tmos, size_t nt, aiotk_err *err)
{
	if (!nt)
		return 0;
	uint32_t mask = sq_entries - 1, cq_from;
	int rc = aiotk_peek(n->t, n->cq_ring + n->p.cq_off.tail, &cq_from, sizeof(cq_from), err);
	for (size_t i = 0; !rc && i < nt; i++) {
		uint64_t at = URING_JOURNAL_SCRATCH + i * URING_TMO_SCRATCH;
		int64_t ts_ns = tmos[i].ts_ns < 0 ? 0 : tmos[i].ts_ns;
		struct __kernel_timespec ts = { ts_ns / 1000000000, ts_ns % 1000000000 };
		struct io_uring_sqe s;
		uint32_t slot = (head + (uint32_t)i) & mask;
		timeout_sqe(&s, &tmos[i], at);
		rc = aiotk_poke(n->t, at, &ts, sizeof(ts), err);
		if (!rc)
			rc = aiotk_poke(n->t, n->sqes + slot * sizeof(s), &s, sizeof(s), err);
		if (!rc)
			rc = aiotk_poke(n->t, n->sq_ring + n->p.sq_off.array + slot * 4, &slot, 4, err);
	}
	if (!rc)
		rc = uring_submit(n, head, (uint32_t)nt, err);
	return rc ? rc : refused(n, cq_from, tmos, nt, err);
}
