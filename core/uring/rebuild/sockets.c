/* The ACCEPTs and RECVs of a rebuilt instance submitted again, after its
 * TIMEOUTs, with their user_data and the arguments the kernel view read
 * of them (io_accept, io_sr_msg): the program's own pointers (an
 * ACCEPT's addr and addr_len, a RECV's buffer), which the kernel writes
 * through when each completes; or a RECV's provided-buffer group, whose
 * ring and head are rebuilt before (bufrings.c), so that it takes the
 * buffer the program's ring has next. Which ones is uring.rebuild's policy
 * (scripts/aiotk/uring.lua). docs/KERNEL-FACTS.md, "io_uring: ACCEPT and
 * RECV submitted again". */
#define _GNU_SOURCE
#include "uring/rebuild/rebuild.h"
#include "base/base.h"

#include <string.h>

static int sock_sqe(uring_new *n, const void *ctx, size_t i, struct io_uring_sqe *s,
		    aiotk_err *err)
{
	const aiotk_uring_sock *q = &((const aiotk_uring_rebuild_opts *)ctx)->socks[i];
	(void)n, (void)err;
	memset(s, 0, sizeof(*s));
	s->opcode = q->opcode;
	s->fd = q->fd;
	s->flags = (q->fixed_file ? IOSQE_FIXED_FILE : 0) | (q->buffer_select ? IOSQE_BUFFER_SELECT : 0);
	s->buf_group = q->buffer_select ? q->buf_group : 0;
	s->ioprio = q->ioprio;
	s->addr = q->addr;
	s->user_data = q->user_data;
	if (q->opcode == IORING_OP_ACCEPT) {
		s->addr2 = q->addr2;
		s->accept_flags = q->op_flags;
	} else {
		s->len = q->len;
		s->msg_flags = q->op_flags;
	}
	return 0;
}

/* One the kernel refused at once (its fd closed, a socket not listening)
 * posts its error with its user_data. */
static int sock_refused(const void *ctx, const struct io_uring_cqe *c, aiotk_err *err)
{
	const aiotk_uring_rebuild_opts *o = ctx;
	for (size_t k = 0; c->res < 0 && k < o->nsocks; k++)
		if (o->socks[k].user_data == c->user_data)
			return aiotk_fail(err, AIOTK_ESYS, -c->res, "%s user_data 0x%llx on fd %d submitted "
					  "again: %s", o->socks[k].opcode == IORING_OP_ACCEPT ? "ACCEPT" : "RECV",
					  (unsigned long long)c->user_data, o->socks[k].fd, strerror(-c->res));
	return 0;
}

int uring_submit_socks(uring_new *n, uint32_t sq_entries, uint32_t head,
		       const aiotk_uring_rebuild_opts *o, aiotk_err *err)
{
	uring_resubmit r = { o->nsocks, o, sock_sqe, sock_refused };
	return uring_resubmit_all(n, sq_entries, head, &r, err);
}
