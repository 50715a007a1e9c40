/* One io_uring instance made again inside a process, all or nothing:
 * its saved ranges held, the instance set up (at an fd no step names),
 * each mapping placed at its saved address (place.c), the counters driven
 * (counters.c), the saved ring memory written back with the counters
 * moved, its POLLs, TIMEOUTs (timeouts.c), ACCEPTs and RECVs (sockets.c)
 * armed, with a rebase liburing's copies moved
 * (copies.c), and last the fd moved to its saved number. Each step is
 * journalled in the target before it is made (journal.c): whatever fails,
 * or wherever aiotk is killed, what was made is taken away, by this
 * rebuild or by the next aiotk. docs/KERNEL-FACTS.md, "io_uring:
 * rebuilding an instance" and "io_uring: a rebuild killed half-way". */
#define _GNU_SOURCE
#include "uring/rebuild/rebuild.h"
#include "base/base.h"
#include "target/target.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#define OFF_SQ_RING 0ull
#define OFF_CQ_RING 0x8000000ull
#define OFF_SQES 0x10000000ull

/* Setup flags a rebuild makes as they were: the rest are refused by name
 * (uring.lua names them). */
#define REBUILT_FLAGS (IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP | IORING_SETUP_SUBMIT_ALL | \
		       IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG | \
		       IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN)

static const aiotk_uring_map *map_at(const aiotk_uring *u, uint64_t offset)
{
	for (size_t i = 0; i < u->nmaps; i++)
		if (u->maps[i].offset == offset)
			return &u->maps[i];
	return NULL;
}

static int refuse(const aiotk_uring *u, const char *why, aiotk_err *err)
{
	return aiotk_fail(err, AIOTK_EUNSUPPORTED, 0, "io_uring fd %d: %s", u->fd, why);
}

/* What u has registered that a rebuild does not make again, or NULL:
 * rebuilt without it, the program would lose it silently. */
static const char *unrebuilt_resource(const aiotk_uring *u, char *why, size_t len)
{
	const char *bufs = uring_bufrings_unrebuilt(u, why, len);
	if (bufs)
		return bufs;
	if (u->nringfds && !(u->have & AIOTK_URING_HAVE_RINGFDS))
		return "a thread registered its ring fd (IORING_REGISTER_RING_FDS), and the image "
		       "does not say which";
	if (u->personalities)
		return "personalities are registered (IORING_REGISTER_PERSONALITY): the "
		       "credentials they hold are not rebuilt";
	if (u->restricted)
		return "restrictions are registered (IORING_REGISTER_RESTRICTIONS): they "
		       "are not rebuilt";
	return NULL;
}

uint32_t aiotk_uring_rebuilt_flags(void)
{
	return REBUILT_FLAGS;
}

int aiotk_uring_rebuildable(const aiotk_uring *u, aiotk_err *err)
{
	if (u->flags & IORING_SETUP_SQPOLL)
		return refuse(u, "SQPOLL (its kernel poller thread) is not rebuilt", err);
	if (u->flags & ~REBUILT_FLAGS)
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, 0,
				  "io_uring fd %d: setup flags 0x%x are not rebuilt yet (only 0x%x)",
				  u->fd, u->flags & ~REBUILT_FLAGS, REBUILT_FLAGS);
	if (!u->sq_entries || (u->sq_entries & (u->sq_entries - 1)) || !u->cq_entries ||
	    (u->cq_entries & (u->cq_entries - 1)))
		return refuse(u, "its ring sizes are not powers of two", err);
	if (u->nmaps > 8)
		return refuse(u, "more mappings than an instance has", err);
	for (size_t i = 0; i < u->nmaps; i++) {
		if (!u->maps[i].data)
			return refuse(u, "its ring memory is not in the image", err);
		if (u->maps[i].offset != OFF_SQ_RING && u->maps[i].offset != OFF_CQ_RING &&
		    u->maps[i].offset != OFF_SQES && !uring_bufring_mapping(u, u->maps[i].offset))
			return refuse(u, "it has a mapping that is none of its rings' (an unknown mmap "
				      "offset)", err);
	}
	if (!map_at(u, OFF_SQ_RING) || !map_at(u, OFF_SQES))
		return refuse(u, "its SQ ring or SQE array is not mapped (a rebuild puts both back)", err);
	if ((u->flags & IORING_SETUP_SINGLE_ISSUER) &&
	    (!(u->have & AIOTK_URING_HAVE_ISSUER) || u->submitter_tid <= 0))
		return refuse(u, "SINGLE_ISSUER with no owner thread in the image (one is enabled "
			      "from its owner)", err);
	char buf[256];
	const char *why = unrebuilt_resource(u, buf, sizeof(buf));
	if (why)
		return refuse(u, why, err);
	if (u->has_eventfd && u->eventfd_fd < 0)
		return refuse(u, "an eventfd is registered, and no fd of the process was that "
			      "eventfd at the dump", err);
	if (u->cached_sq_head != u->sq_head || u->cached_cq_tail != u->cq_tail)
		return refuse(u, "the kernel's counters were not those it had published (CQEs in "
			      "overflow or work pending at the dump)", err);
	return 0;
}

/* The saved fd must be free: it is where the instance goes. */
static int fd_free(aiotk_target *t, const aiotk_uring *u, aiotk_err *err)
{
	long r = aiotk_sys(t, SYS_fcntl, u->fd, F_GETFD, 0, 0, 0, 0);
	if (r == -EBADF)
		return 0;
	return aiotk_fail(err, AIOTK_EOCCUPIED, EEXIST,
			  "io_uring fd %d: that descriptor is open in the process (%s); "
			  "an instance is rebuilt at its saved fd", u->fd,
			  aiotk_sys_failed(r) ? strerror((int)-r) : "in use");
}

/* Whether fd is a number the instance's steps name (its saved fd, a
 * POLL's or a registered file's): the new instance must not sit there
 * while it is built, or a POLL or registration would take it instead of
 * the program's file (that one closed since the dump). *above: one past
 * the highest named. */
static int named(const aiotk_uring *u, const aiotk_uring_rebuild_opts *o, int fd, int *above)
{
	int hit = fd == u->fd;
	*above = u->fd + 1;
	for (size_t i = 0; i < o->npolls; i++) {
		int p = o->polls[i].fixed_file ? -1 : o->polls[i].fd;
		hit |= p == fd, *above = p >= *above ? p + 1 : *above;
	}
	for (size_t i = 0; i < o->nsocks; i++) {
		int p = o->socks[i].fixed_file ? -1 : o->socks[i].fd;
		hit |= p == fd, *above = p >= *above ? p + 1 : *above;
	}
	for (size_t i = 0; i < u->nfiles; i++) {
		int f = u->files[i].fd;
		hit |= f == fd, *above = f >= *above ? f + 1 : *above;
	}
	return hit;
}

/* Until it is done, the instance sits at an fd of its own, one no step
 * names: the program sees it at its saved fd only once it is whole. */
static int aside(uring_new *n, const aiotk_uring *u, const aiotk_uring_rebuild_opts *o,
		 aiotk_err *err)
{
	int above;
	if (!named(u, o, n->fd, &above))
		return 0;
	long r = aiotk_sys(n->t, SYS_fcntl, n->fd, F_DUPFD_CLOEXEC, above, 0, 0, 0);
	if (aiotk_sys_failed(r))
		return aiotk_fail(err, AIOTK_ESYS, (int)-r, "io_uring fd %d: moving the new instance "
				  "from fd %d to one of its own: %s", u->fd, n->fd, strerror((int)-r));
	aiotk_sys(n->t, SYS_close, n->fd, 0, 0, 0, 0, 0);
	n->fd = (int)r;
	return 0;
}

static int setup(uring_new *n, const aiotk_uring *u, const aiotk_uring_rebuild_opts *o,
		 aiotk_err *err)
{
	uint64_t scratch = URING_SCRATCH(n->j_at);
	memset(&n->p, 0, sizeof(n->p));
	/* A single issuer's owner is whoever enables it: set up disabled
	 * here, registered, then enabled by its owner thread (enable). */
	n->p.flags = u->flags | (u->flags & IORING_SETUP_SINGLE_ISSUER ? IORING_SETUP_R_DISABLED : 0);
	n->p.cq_entries = u->cq_entries;
	int rc = aiotk_poke(n->t, scratch, &n->p, sizeof(n->p), err);
	if (!rc)
		rc = uring_journal_setup_next(n, err);
	long fd = rc ? -1 : aiotk_sys(n->t, SYS_io_uring_setup, u->sq_entries, (long)scratch, 0, 0, 0, 0);
	if (!rc && aiotk_sys_failed(fd))
		rc = aiotk_fail(err, AIOTK_ESYS, (int)-fd, "io_uring fd %d: io_uring_setup(%u, flags 0x%x): %s",
				u->fd, u->sq_entries, u->flags, strerror((int)-fd));
	if (!rc)
		n->fd = (int)fd, rc = uring_journal_instance(n, err);
	if (!rc)
		rc = aiotk_peek(n->t, scratch, &n->p, sizeof(n->p), err);
	if (!rc && (n->p.sq_entries != u->sq_entries || n->p.cq_entries != u->cq_entries))
		rc = aiotk_fail(err, AIOTK_EIMPOSSIBLE, 0,
				"io_uring fd %d: this kernel made %u/%u entries, not the saved %u/%u",
				u->fd, n->p.sq_entries, n->p.cq_entries, u->sq_entries, u->cq_entries);
	return rc ? rc : aside(n, u, o, err);
}

/* The registered files (each slot the fd the process had for its file;
 * empty slots -1) and buffers (empty slots zero), through the journal's
 * scratch memory (scratch_len says how much). */
static int register_table(uring_new *n, const aiotk_uring *u, unsigned op, const void *table,
			  size_t len, unsigned nr, const char *what, aiotk_err *err)
{
	uint64_t scratch = URING_SCRATCH(n->j_at);
	int rc = aiotk_poke(n->t, scratch, table, len, err);
	/* Once enabled, a single issuer's registrations are its owner's. */
	long r = rc ? 0 : aiotk_sys_in(n->t, n->owner, SYS_io_uring_register, n->fd, op,
				       (long)scratch, nr, 0, 0);
	if (!rc && aiotk_sys_failed(r))
		rc = aiotk_fail(err, AIOTK_ESYS, (int)-r, "io_uring fd %d: registering its %s again: %s",
				u->fd, what, strerror((int)-r));
	return rc;
}

static int register_files(uring_new *n, const aiotk_uring *u, aiotk_err *err)
{
	if (!u->nr_files)
		return 0;
	if (u->nfiles > u->nr_files || !(u->have & AIOTK_URING_HAVE_FILES))
		return refuse(u, "its registered files were not all read", err);
	int *fds = malloc(u->nr_files * sizeof(*fds));
	if (!fds)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory for %u file slots", u->nr_files);
	memset(fds, 0xff, u->nr_files * sizeof(*fds));
	int rc = 0;
	for (size_t i = 0; !rc && i < u->nfiles; i++) {
		if (u->files[i].fd < 0 || u->files[i].slot >= u->nr_files)
			rc = aiotk_fail(err, AIOTK_EUNSUPPORTED, 0, "io_uring fd %d: registered file slot %u "
					"(%s) had no fd in the process to register again", u->fd,
					u->files[i].slot, u->files[i].path);
		else
			fds[u->files[i].slot] = u->files[i].fd;
	}
	if (!rc)
		rc = register_table(n, u, IORING_REGISTER_FILES, fds, u->nr_files * sizeof(*fds),
				    u->nr_files, "file slots", err);
	free(fds);
	return rc;
}

static int register_bufs(uring_new *n, const aiotk_uring *u, aiotk_err *err)
{
	if (!u->nr_bufs)
		return 0;
	if (u->nbufs > u->nr_bufs || !(u->have & AIOTK_URING_HAVE_BUFS))
		return refuse(u, "its registered buffers were not all read", err);
	struct iovec *iov = calloc(u->nr_bufs, sizeof(*iov));
	if (!iov)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory for %u buffer slots", u->nr_bufs);
	for (size_t i = 0; i < u->nbufs; i++)
		if (u->bufs[i].slot < u->nr_bufs)
			iov[u->bufs[i].slot] = (struct iovec){ (void *)(uintptr_t)u->bufs[i].ubuf,
							       (size_t)u->bufs[i].len };
	int rc = register_table(n, u, IORING_REGISTER_BUFFERS, iov, u->nr_bufs * sizeof(*iov),
				u->nr_bufs, "buffer slots", err);
	free(iov);
	return rc;
}

/* The eventfd, from the fd the process had for it, as it was (_ASYNC:
 * signalled only by completions from io-wq). After the replay's NOPs,
 * which must not signal the program's eventfd, and before the POLLs. */
static int register_eventfd(uring_new *n, const aiotk_uring *u, aiotk_err *err)
{
	if (!u->has_eventfd)
		return 0;
	int fd = u->eventfd_fd;
	return register_table(n, u, u->eventfd_async ? IORING_REGISTER_EVENTFD_ASYNC :
			      IORING_REGISTER_EVENTFD, &fd, sizeof(fd), 1, "eventfd", err);
}

/* A SINGLE_ISSUER instance enabled by its saved owner thread, which
 * becomes its owner: the only thread that may submit to it (the NOPs
 * and POLLs go through it too: n->owner). */
static int enable(uring_new *n, const aiotk_uring *u, aiotk_err *err)
{
	if (!(u->flags & IORING_SETUP_SINGLE_ISSUER))
		return 0;
	long r = aiotk_sys_in(n->t, u->submitter_tid, SYS_io_uring_register, n->fd,
			      IORING_REGISTER_ENABLE_RINGS, 0, 0, 0, 0);
	if (r == -ESRCH || r == -EOPNOTSUPP)
		return aiotk_fail(err, r == -ESRCH ? AIOTK_EIMPOSSIBLE : AIOTK_EUNSUPPORTED, (int)-r,
				  "io_uring fd %d: SINGLE_ISSUER: its owner thread %d %s", u->fd,
				  u->submitter_tid, r == -ESRCH ? "is not a thread of the process any more "
				  "(only the owner may submit)" : "cannot be made to enable it in this target");
	if (aiotk_sys_failed(r))
		return aiotk_fail(err, AIOTK_ESYS, (int)-r, "io_uring fd %d: enabling it in its owner "
				  "thread %d: %s", u->fd, u->submitter_tid, strerror((int)-r));
	n->owner = u->submitter_tid;
	return 0;
}

/* Each mapping at its saved address, highest first (each one's
 * placeholders fill only what is above it). */
static int place_all(uring_new *n, const aiotk_uring *u, aiotk_err *err)
{
	int placed[8] = { 0 };
	for (size_t k = 0; k < u->nmaps; k++) {
		size_t hi = 0;
		for (size_t i = 1; i < u->nmaps; i++)
			if (!placed[i] && (placed[hi] || u->maps[i].start > u->maps[hi].start))
				hi = i;
		const aiotk_uring_map *mp = &u->maps[hi];
		int rc = aiotk_unmap(n->t, mp->start, mp->end - mp->start, err);
		if (!rc)
			rc = uring_place(n, mp->offset, mp->start, mp->end - mp->start, err);
		if (rc)
			return rc;
		placed[hi] = 1;
	}
	n->sq_ring = map_at(u, OFF_SQ_RING)->start;
	n->sqes = map_at(u, OFF_SQES)->start;
	n->cq_ring = map_at(u, OFF_CQ_RING) ? map_at(u, OFF_CQ_RING)->start : n->sq_ring;
	return 0;
}

/* MADV_DONTFORK back on the mappings that had it (MariaDB's and Samba's
 * rings: io_uring_ring_dontfork), so that a fork leaves them out again. */
static int dontfork(uring_new *n, const aiotk_uring *u, aiotk_err *err)
{
	for (size_t i = 0; i < u->nmaps; i++) {
		const aiotk_uring_map *mp = &u->maps[i];
		long r = mp->dontfork ? aiotk_sys(n->t, SYS_madvise, (long)mp->start,
						  (long)(mp->end - mp->start), MADV_DONTFORK, 0, 0, 0) : 0;
		if (aiotk_sys_failed(r))
			return aiotk_fail(err, AIOTK_ESYS, (int)-r, "io_uring fd %d: MADV_DONTFORK on "
					  "0x%llx: %s", u->fd, (unsigned long long)mp->start, strerror((int)-r));
	}
	return 0;
}

/* The requests submitted again: the polls, the timeouts, then the
 * ACCEPTs and RECVs. */
static size_t resubmitted(const aiotk_uring_rebuild_opts *o)
{
	return o->npolls + o->ntimeouts + o->nsocks;
}

/* Where the new counters go: the saved ones (exact), or the least ones
 * congruent to them modulo the ring sizes (rebase), the cq tail at least
 * the reads moving buffer ring heads (each an SQE and a CQE: bufrings.c).
 * The requests submitted again are the last SQEs. */
static int targets(const aiotk_uring *u, const aiotk_uring_rebuild_opts *o, uint64_t *sq_head,
		   uint64_t *cq_tail, aiotk_err *err)
{
	uint64_t np = resubmitted(o), reads = uring_bufring_heads(u);
	if (o->exact) {
		if ((uint64_t)u->sq_head < (uint64_t)u->cq_tail + np)
			return refuse(u, "its cq tail is past its sq head (CQEs without SQEs, as multishot "
				      "requests post): NOPs cannot replay that; rebase it", err);
		if (u->cq_tail < reads)
			return refuse(u, "its cq tail is below the buffers its rings' heads moved past "
				      "(each moved back by a read with a CQE); rebase it", err);
		*sq_head = u->sq_head, *cq_tail = u->cq_tail;
		return 0;
	}
	*cq_tail = u->cq_tail & (u->cq_entries - 1);
	if (*cq_tail < reads)
		*cq_tail += (reads - *cq_tail + u->cq_entries - 1) & ~(uint64_t)(u->cq_entries - 1);
	*sq_head = *cq_tail + ((u->sq_head - *cq_tail - np) & (u->sq_entries - 1)) + np;
	return 0;
}

static int put32(aiotk_target *t, uint64_t addr, uint32_t v, aiotk_err *err)
{
	return aiotk_poke(t, addr, &v, sizeof(v), err);
}

/* The saved ring memory written back, its counters those of the new
 * instance (the kernel's sq head before the polls), its sq flags the new
 * instance's own (the kernel's to set). */
static int memory(uring_new *n, const aiotk_uring *u, uint32_t sq_head, uint32_t cq_tail,
		  const aiotk_uring_rebuilt *r, aiotk_err *err)
{
	uint32_t flags;
	int rc = aiotk_peek(n->t, n->sq_ring + n->p.sq_off.flags, &flags, sizeof(flags), err);
	for (size_t i = 0; !rc && i < u->nmaps; i++)
		rc = aiotk_poke(n->t, u->maps[i].start, u->maps[i].data,
				u->maps[i].end - u->maps[i].start, err);
	if (!rc)
		rc = put32(n->t, n->sq_ring + n->p.sq_off.flags, flags, err);
	if (!rc)
		rc = put32(n->t, n->sq_ring + n->p.sq_off.head, sq_head, err);
	if (!rc)
		rc = put32(n->t, n->sq_ring + n->p.sq_off.tail, sq_head, err);
	if (!rc)
		rc = put32(n->t, n->cq_ring + n->p.cq_off.head, u->cq_head - r->cq_shift, err);
	if (!rc)
		rc = put32(n->t, n->cq_ring + n->p.cq_off.tail, cq_tail, err);
	return rc;
}

/* After the polls: the SQE slots and sq_array entries they used as they
 * were saved (an SQE prepared there is the program's), and the sq tail
 * the program had published, moved. */
static int after_polls(uring_new *n, const aiotk_uring *u, uint32_t head, size_t np,
		       const aiotk_uring_rebuilt *r, aiotk_err *err)
{
	const aiotk_uring_map *sq = map_at(u, OFF_SQ_RING), *sqes = map_at(u, OFF_SQES);
	int rc = 0;
	for (size_t i = 0; !rc && i < np; i++) {
		uint32_t slot = (head + (uint32_t)i) & (u->sq_entries - 1);
		uint64_t a = n->p.sq_off.array + slot * 4ull, s = slot * sizeof(struct io_uring_sqe);
		rc = aiotk_poke(n->t, n->sqes + s, sqes->data + s, sizeof(struct io_uring_sqe), err);
		if (!rc)
			rc = aiotk_poke(n->t, n->sq_ring + a, sq->data + a, 4, err);
	}
	return rc ? rc : put32(n->t, n->sq_ring + n->p.sq_off.tail, u->sq_tail - r->sq_shift, err);
}

/* The new fd moved to the saved number: io_uring's fds are O_CLOEXEC. */
static int move_fd(uring_new *n, const aiotk_uring *u, aiotk_err *err)
{
	if (n->fd == u->fd)
		return 0;
	long r = aiotk_sys(n->t, SYS_dup3, n->fd, u->fd, O_CLOEXEC, 0, 0, 0);
	if (aiotk_sys_failed(r))
		return aiotk_fail(err, AIOTK_ESYS, (int)-r, "io_uring fd %d: dup3 from %d: %s", u->fd,
				  n->fd, strerror((int)-r));
	aiotk_sys(n->t, SYS_close, n->fd, 0, 0, 0, 0, 0);
	n->fd = u->fd;
	return 0;
}

/* Each saved range held, so that nothing this rebuild maps lands there
 * (journalled first, as every placeholder is). */
static int hold(uring_new *n, const aiotk_uring *u, aiotk_err *err)
{
	uint64_t addr[8], len[8];
	for (size_t i = 0; i < u->nmaps; i++)
		addr[i] = u->maps[i].start, len[i] = u->maps[i].end - u->maps[i].start;
	int rc = uring_journal_ranges(n, 0, addr, len, u->nmaps, err);
	for (size_t i = 0; !rc && i < u->nmaps; i++)
		rc = aiotk_reserve(n->t, addr[i], len[i], err);
	return rc;
}

/* The journal's scratch memory: setup's parameters, a registration's
 * table or the timeouts' timespecs, whichever is largest. */
static size_t scratch_len(const aiotk_uring *u, const aiotk_uring_rebuild_opts *o)
{
	size_t len = sizeof(struct io_uring_params);
	if (o->ntimeouts * URING_TMO_SCRATCH > len)
		len = o->ntimeouts * URING_TMO_SCRATCH;
	if (u->nr_files * sizeof(int) > len)
		len = u->nr_files * sizeof(int);
	if (u->nr_bufs * sizeof(struct iovec) > len)
		len = u->nr_bufs * sizeof(struct iovec);
	return len;
}

/* The steps, each journalled first; the last, the journal's removal, is
 * the commit. The program's own state changes last: liburing's copies,
 * then the fd at its saved number. */
static int build(uring_new *n, const aiotk_uring *u, const aiotk_uring_rebuild_opts *o,
		 aiotk_uring_rebuilt *r, aiotk_err *err)
{
	uint64_t t0 = aiotk_now_ns(), sq_head = 0, cq_tail = 0;
	int rc = targets(u, o, &sq_head, &cq_tail, err);
	if (!rc)
		rc = fd_free(n->t, u, err);
	if (!rc)
		rc = uring_journal_open(n, scratch_len(u, o), err);
	if (!rc)
		rc = hold(n, u, err);
	if (!rc)
		rc = setup(n, u, o, err);
	if (!rc)
		rc = register_files(n, u, err);
	if (!rc)
		rc = register_bufs(n, u, err);
	if (!rc)
		rc = uring_register_ringfds(n, u, err);
	if (!rc)
		rc = enable(n, u, err);
	if (!rc)
		rc = uring_register_bufrings(n, u, err);
	uint64_t t1 = aiotk_now_ns();
	if (!rc)
		rc = place_all(n, u, err);
	if (!rc)
		rc = dontfork(n, u, err);
	uint64_t t2 = aiotk_now_ns();
	if (rc)
		return rc;
	r->sq_shift = u->sq_head - (uint32_t)sq_head;
	r->cq_shift = u->cq_tail - (uint32_t)cq_tail;
	uint32_t before = (uint32_t)(sq_head - resubmitted(o));
	uint64_t reads = 0;
	rc = uring_move_bufring_heads(n, u, &reads, err);
	if (!rc)
		rc = uring_drive(n, u->sq_entries, reads, sq_head - resubmitted(o), cq_tail, &r->nops, err);
	if (!rc)
		rc = register_eventfd(n, u, err);
	uint64_t t3 = aiotk_now_ns();
	if (!rc)
		rc = memory(n, u, before, (uint32_t)cq_tail, r, err);
	if (!rc)
		rc = uring_submit_polls(n, u->sq_entries, before, o, err);
	if (!rc)
		rc = uring_submit_timeouts(n, u->sq_entries, before + (uint32_t)o->npolls, o, err);
	if (!rc)
		rc = uring_submit_socks(n, u->sq_entries,
					before + (uint32_t)(o->npolls + o->ntimeouts), o, err);
	if (!rc)
		rc = after_polls(n, u, before, resubmitted(o), r, err);
	uint64_t t4 = aiotk_now_ns();
	if (!rc && r->sq_shift)
		rc = uring_move_copies(n, r->sq_shift, r, err);
	uint64_t t5 = aiotk_now_ns();
	if (!rc)
		rc = move_fd(n, u, err);
	if (!rc && !o->keep_journal)
		rc = uring_journal_commit(n, err);
	if (!rc)
		r->journal_at = n->j_at, r->journal_len = n->j_len;
	r->ns_setup = t1 - t0, r->ns_place = t2 - t1, r->ns_counters = t3 - t2;
	r->ns_memory = t4 - t3 + (aiotk_now_ns() - t5), r->ns_copies = t5 - t4;
	r->fd = n->fd;
	return rc;
}

int aiotk_uring_rebuild(aiotk_target *t, const aiotk_uring *saved,
			const aiotk_uring_rebuild_opts *o, aiotk_uring_rebuilt *out,
			aiotk_err *err)
{
	memset(out, 0, sizeof(*out));
	out->fd = -1;
	int rc = aiotk_uring_rebuildable(saved, err);
	if (rc)
		return rc;
	if (o->slot >= AIOTK_URING_JOURNAL_SLOTS)
		return aiotk_fail(err, AIOTK_EINVAL, 0, "journal slot %u: there are %u", o->slot,
				  AIOTK_URING_JOURNAL_SLOTS);
	uring_new n = { .t = t, .fd = -1,
			.j_at = AIOTK_URING_JOURNAL_AT + o->slot * AIOTK_URING_JOURNAL_STRIDE };
	rc = build(&n, saved, o, out, err);
	if (rc)
		rc = uring_journal_rollback(&n, rc, err);
	return rc;
}

/* Journalled as a rebuild is (its instance, the ring fds it registered
 * in the threads, liburing's copies as they are now), then rolled back as
 * a failed one is: a killed aiotk leaves the next one to finish it. An
 * instance whose journal was kept is rolled back by that journal. */
int aiotk_uring_unbuild(aiotk_target *t, const aiotk_uring *saved,
			const aiotk_uring_rebuilt *r, aiotk_err *err)
{
	uring_new n = { .t = t, .fd = r->fd, .j_at = AIOTK_URING_JOURNAL_AT };
	if (r->journal_len) {
		n.j_at = r->journal_at;
		int rc = aiotk_peek(t, n.j_at, &n.j, sizeof(n.j), err);
		if (!rc)
			n.j_len = r->journal_len;
		return uring_journal_rollback(&n, rc, err);
	}
	uint32_t moved[AIOTK_URING_MAX_COPIES][2];
	int rc = 0;
	for (unsigned i = 0; !rc && i < r->ncopies; i++)
		rc = aiotk_peek(t, r->copies[i] + URING_SQE_HEAD_OFF, moved[i], sizeof(moved[i]), err);
	if (!rc)
		rc = uring_journal_open(&n, 0, err);
	if (!rc)
		rc = uring_journal_instance(&n, err);
	for (size_t i = 0; !rc && i < saved->nringfds; i++)
		rc = uring_journal_ringfd(&n, saved->ringfds[i].tid, saved->ringfds[i].index, err);
	if (!rc)
		rc = uring_journal_copies(&n, r->copies, (const uint32_t (*)[2])moved, r->ncopies,
					  r->sq_shift, err);
	return uring_journal_rollback(&n, rc, err);
}
