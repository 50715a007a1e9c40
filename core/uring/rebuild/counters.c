/* The counters of a new instance moved where a rebuild wants them, and
 * its POLLs armed again.
 *
 * A new instance starts with every counter at 0 and no interface sets
 * them: the kernel's sq head moves by one per SQE it consumes, its cq tail
 * by one per CQE it posts. So NOPs: first those with a CQE (both
 * counters), reaped batch by batch, then those with
 * IOSQE_CQE_SKIP_SUCCESS (the sq head alone). Every SQE slot is written
 * once per kind and the batches only move the tail.
 * docs/KERNEL-FACTS.md, "io_uring: counters". */
#define _GNU_SOURCE
#include "uring/rebuild/rebuild.h"
#include "base/base.h"
#include "target/target.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

#define NOP_DATA 0x6b746f6961ull /* "aiotk": reaped at once, never seen */

static int put32(uring_new *n, uint64_t addr, uint32_t v, aiotk_err *err)
{
	return aiotk_poke(n->t, addr, &v, sizeof(v), err);
}

static int get32(uring_new *n, uint64_t addr, uint32_t *v, aiotk_err *err)
{
	return aiotk_peek(n->t, addr, v, sizeof(*v), err);
}

/* Every SQE slot a NOP with these flags, each sq_array entry its slot. */
static int fill_nops(uring_new *n, uint32_t entries, uint8_t flags, aiotk_err *err)
{
	struct io_uring_sqe *s = calloc(entries, sizeof(*s));
	uint32_t *a = calloc(entries, sizeof(*a));
	int rc = 0;
	if (!s || !a)
		rc = aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory for %u NOPs", entries);
	for (uint32_t i = 0; !rc && i < entries; i++) {
		s[i].opcode = IORING_OP_NOP, s[i].flags = flags, s[i].user_data = NOP_DATA;
		a[i] = i;
	}
	if (!rc)
		rc = aiotk_poke(n->t, n->sqes, s, entries * sizeof(*s), err);
	if (!rc)
		rc = aiotk_poke(n->t, n->sq_ring + n->p.sq_off.array, a, entries * sizeof(*a), err);
	free(s);
	free(a);
	return rc;
}

int uring_submit(uring_new *n, uint32_t at, uint32_t k, aiotk_err *err)
{
	int rc = put32(n, n->sq_ring + n->p.sq_off.tail, at + k, err);
	if (rc)
		return rc;
	long r = aiotk_sys_in(n->t, n->owner, SYS_io_uring_enter, n->fd, k, 0, 0, 0, 0);
	if (aiotk_sys_failed(r))
		return aiotk_fail(err, AIOTK_ESYS, (int)-r, "io_uring_enter of %u SQEs on the new instance: %s",
				  k, strerror((int)-r));
	if ((uint32_t)r != k)
		return aiotk_fail(err, AIOTK_ESTUCK, 0, "io_uring_enter took %ld of %u SQEs on the new instance",
				  r, k);
	return 0;
}

/* The CQEs up to `tail` reaped, once the kernel has posted them all. */
static int reap(uring_new *n, uint32_t tail, aiotk_err *err)
{
	uint32_t got;
	int rc = get32(n, n->cq_ring + n->p.cq_off.tail, &got, err);
	if (!rc && got != tail)
		rc = aiotk_fail(err, AIOTK_ESTUCK, 0, "the new instance's cq tail is %u after NOPs, not %u",
				got, tail);
	return rc ? rc : put32(n, n->cq_ring + n->p.cq_off.head, tail, err);
}

/* k NOPs (of the kind filled) from *done to `to`, reaped when `cqes`. */
static int run(uring_new *n, uint32_t entries, uint64_t *done, uint64_t to, int cqes,
	       uint64_t *nops, aiotk_err *err)
{
	int rc = 0;
	while (!rc && *done < to) {
		uint32_t k = to - *done > entries ? entries : (uint32_t)(to - *done);
		rc = uring_submit(n, (uint32_t)*done, k, err);
		if (!rc && cqes)
			rc = reap(n, (uint32_t)(*done + k), err);
		if (!rc)
			*done += k, *nops += k;
	}
	return rc;
}

int uring_drive(uring_new *n, uint32_t sq_entries, uint64_t from, uint64_t sq_head,
		uint64_t cq_tail, uint64_t *nops, aiotk_err *err)
{
	uint64_t done = from;
	*nops = 0;
	int rc = cq_tail > done ? fill_nops(n, sq_entries, 0, err) : 0;
	if (!rc)
		rc = run(n, sq_entries, &done, cq_tail, 1, nops, err);
	if (!rc && sq_head > done)
		rc = fill_nops(n, sq_entries, IOSQE_CQE_SKIP_SUCCESS, err);
	if (!rc)
		rc = run(n, sq_entries, &done, sq_head, 0, nops, err);
	return rc;
}

static int poll_sqe(uring_new *n, const void *ctx, size_t i, struct io_uring_sqe *s, aiotk_err *err)
{
	const aiotk_uring_poll *q = &((const aiotk_uring_rebuild_opts *)ctx)->polls[i];
	(void)n, (void)err;
	memset(s, 0, sizeof(*s));
	s->opcode = IORING_OP_POLL_ADD;
	s->fd = q->fd;
	s->flags = q->fixed_file ? IOSQE_FIXED_FILE : 0;
	s->poll32_events = q->events;
	s->len = (q->multishot ? IORING_POLL_ADD_MULTI : 0) | (q->level ? IORING_POLL_ADD_LEVEL : 0);
	s->user_data = q->user_data;
	return 0;
}

/* A POLL the kernel refused at once posts its error as a CQE. */
static int poll_refused(const void *ctx, const struct io_uring_cqe *c, aiotk_err *err)
{
	const aiotk_uring_rebuild_opts *o = ctx;
	for (size_t k = 0; c->res < 0 && k < o->npolls; k++)
		if (o->polls[k].user_data == c->user_data)
			return aiotk_fail(err, AIOTK_ESYS, -c->res, "POLL_ADD user_data 0x%llx on fd %d "
					  "submitted again: %s", (unsigned long long)c->user_data, o->polls[k].fd,
					  strerror(-c->res));
	return 0;
}

int uring_submit_polls(uring_new *n, uint32_t sq_entries, uint32_t head,
		       const aiotk_uring_rebuild_opts *o, aiotk_err *err)
{
	uring_resubmit r = { o->npolls, o, poll_sqe, poll_refused };
	return uring_resubmit_all(n, sq_entries, head, &r, err);
}
