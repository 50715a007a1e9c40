/* Registered ring fds made again: each thread that had registered the
 * instance (IORING_REGISTER_RING_FDS) gets it back at the same offset,
 * registered from inside that thread (the table is the thread's
 * io_uring_task's). liburing's io_uring_register_ring_fd keeps the offset
 * as ring->enter_ring_fd and passes it to every io_uring_enter: it must be
 * the same. Each slot is seen free first, then journalled, then taken: a
 * rollback (journal.c) drops every journalled slot, which only the rebuild
 * can have filled, since the process stays stopped until the commit.
 * docs/KERNEL-FACTS.md, "io_uring: registered ring fds rebuilt". */
#define _GNU_SOURCE
#include "uring/rebuild/rebuild.h"
#include "base/base.h"
#include "target/target.h"

#include <errno.h>
#include <string.h>
#include <sys/syscall.h>

#define RING_FD_SLOTS 16 /* IO_RINGFD_REG_MAX */
#ifndef IORING_REGISTER_USE_REGISTERED_RING
#define IORING_REGISTER_USE_REGISTERED_RING (1u << 31) /* Linux 6.3 */
#endif

/* Whether thread tid's slot `index` is free: io_uring_enter through it
 * says EBADF (empty slot) or EINVAL (the thread has no io_uring table). */
static int slot_free(uring_new *n, const aiotk_uring *u, int tid, uint32_t index, aiotk_err *err)
{
	long r = aiotk_sys_in(n->t, tid, SYS_io_uring_enter, index, 0, 0, IORING_ENTER_REGISTERED_RING,
			      0, 0);
	if (r == -EBADF || r == -EINVAL)
		return 0;
	if (r == -ESRCH)
		return aiotk_fail(err, AIOTK_EIMPOSSIBLE, ESRCH, "io_uring fd %d: thread %d, which had it "
				  "registered as ring fd %u, is not a thread of the process any more",
				  u->fd, tid, index);
	if (r == -EOPNOTSUPP)
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, EOPNOTSUPP, "io_uring fd %d: thread %d had it "
				  "registered as ring fd %u, and cannot be made to register it again in this "
				  "target", u->fd, tid, index);
	if (aiotk_sys_failed(r))
		return aiotk_fail(err, AIOTK_ESYS, (int)-r, "io_uring fd %d: looking at thread %d's ring "
				  "fd %u: %s", u->fd, tid, index, strerror((int)-r));
	return aiotk_fail(err, AIOTK_EOCCUPIED, EBUSY, "io_uring fd %d: thread %d has another ring "
			  "registered at ring fd %u, where this one was; nothing was changed", u->fd, tid,
			  index);
}

static int register_one(uring_new *n, const aiotk_uring *u, const aiotk_uring_ringfd *f,
			aiotk_err *err)
{
	struct io_uring_rsrc_update up = { .offset = f->index, .data = (uint64_t)n->fd };
	int rc = aiotk_poke(n->t, URING_SCRATCH(n->j_at), &up, sizeof(up), err);
	long r = rc ? 0 : aiotk_sys_in(n->t, f->tid, SYS_io_uring_register, n->fd,
				       IORING_REGISTER_RING_FDS, (long)URING_SCRATCH(n->j_at), 1, 0, 0);
	if (!rc && r != 1)
		rc = aiotk_fail(err, AIOTK_ESYS, aiotk_sys_failed(r) ? (int)-r : EIO,
				"io_uring fd %d: registering it as ring fd %u in thread %d: %s", u->fd,
				f->index, f->tid, aiotk_sys_failed(r) ? strerror((int)-r) : "not registered");
	if (!rc)
		rc = aiotk_peek(n->t, URING_SCRATCH(n->j_at), &up, sizeof(up), err);
	if (!rc && up.offset != f->index)
		rc = aiotk_fail(err, AIOTK_EIMPOSSIBLE, 0, "io_uring fd %d: the kernel registered it at "
				"ring fd %u in thread %d, not %u", u->fd, up.offset, f->tid, f->index);
	return rc;
}

int uring_register_ringfds(uring_new *n, const aiotk_uring *u, aiotk_err *err)
{
	if (u->nringfds > URING_JOURNAL_RINGFDS)
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, 0, "io_uring fd %d: %zu registered ring fds, "
				  "more than the %d a rebuild journals", u->fd, u->nringfds,
				  URING_JOURNAL_RINGFDS);
	int rc = 0;
	for (size_t i = 0; !rc && i < u->nringfds; i++) {
		const aiotk_uring_ringfd *f = &u->ringfds[i];
		if (f->index >= RING_FD_SLOTS)
			return aiotk_fail(err, AIOTK_EINVAL, 0, "io_uring fd %d: ring fd %u is past the "
					  "kernel's %d slots", u->fd, f->index, RING_FD_SLOTS);
		rc = slot_free(n, u, f->tid, f->index, err);
		if (!rc)
			rc = uring_journal_ringfd(n, f->tid, f->index, err);
		if (!rc)
			rc = register_one(n, u, f, err);
	}
	return rc;
}

/* Each journalled slot dropped, from its thread, through the slot itself
 * (IORING_REGISTER_USE_REGISTERED_RING: the instance's fds may be closed
 * already). A slot left empty (killed before it was taken: EBADF) stays
 * so, and a thread gone (ESRCH) took its slots with it; any other
 * failure goes into m. */
void uring_drop_ringfds(aiotk_target *t, const uring_journal *j, uint64_t j_at, uring_missed *m)
{
	for (uint32_t i = 0; i < j->nringfds && i < URING_JOURNAL_RINGFDS; i++) {
		struct io_uring_rsrc_update up = { .offset = j->ringfds[i].index, .data = 0 };
		aiotk_err e;
		if (aiotk_poke(t, URING_SCRATCH(j_at), &up, sizeof(up), &e)) {
			uring_miss(m, e.errno_ ? e.errno_ : EIO, "a rebuilt registered ring fd, not dropped, at index",
				   j->ringfds[i].index);
			continue;
		}
		long r = aiotk_sys_in(t, j->ringfds[i].tid, SYS_io_uring_register, j->ringfds[i].index,
				      IORING_UNREGISTER_RING_FDS | IORING_REGISTER_USE_REGISTERED_RING,
				      (long)URING_SCRATCH(j_at), 1, 0, 0);
		if (r != -EBADF && r != -ESRCH)
			uring_sys_missed(m, r, "a rebuilt registered ring fd, not dropped, at index",
					 j->ringfds[i].index);
	}
}
