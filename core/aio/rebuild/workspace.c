/* What every ring rebuilt in one target shares, set up at the first ring
 * that needs it and put back once (aiotk_target_release, which detach and
 * free call): each injected system call is a ptrace round trip, so none is
 * spent per ring on set-up that the next ring would repeat.
 *
 *  - The journal page io_setup writes new context ids into (converge.c
 *    says why it exists): one shared page, reused by every io_setup. Its
 *    first 16 bytes are the journal proper; the rest holds the small
 *    arguments system calls read (/dev/null's path, PWRITE's byte).
 *  - A descriptor on /dev/null for the replay's requests.
 *  - The replay's iocbs and their pointer array, written once, as many as
 *    the largest batch asked for so far, of the last kind asked for. */
#define _GNU_SOURCE
#include "aio/rebuild/rebuild.h"
#include "aio/rebuild/iocb.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>


struct aiotk_workspace {
	cpu_set_t mask;       /* this process's affinity, while pinned */
	int pinned;           /* aiotk_target_pin on this process */
	uint64_t journal;     /* 0: not mapped */
	long fd;              /* -1: not open */
	uint64_t cbs;         /* iocbs, then cap pointers */
	size_t cbs_len;
	unsigned cap;         /* iocbs written */
	enum aiotk_req_kind kind;
};

static struct aiotk_workspace *ws_of(aiotk_target *t, aiotk_err *err)
{
	if (t->ws)
		return t->ws;
	struct aiotk_workspace *w = calloc(1, sizeof(*w));
	if (!w) {
		aiotk_fail(err, AIOTK_ENOMEM, ENOMEM, "out of memory for the workspace");
		return NULL;
	}
	w->fd = -1;
	t->ws = w;
	return w;
}

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

/* The journal page, at AIOTK_WS_JOURNAL_AT if it is free (base.h). */
static int map_journal(aiotk_target *t, uint64_t *at, aiotk_err *err)
{
	long r = aiotk_sys(t, SYS_mmap, (long)AIOTK_WS_JOURNAL_AT, AIOTK_JOURNAL_LEN,
			   PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
			   -1, 0);
	if (aiotk_sys_failed(r))
		return aiotk_scratch_map_shared(t, AIOTK_JOURNAL_LEN, at, err);
	*at = (uint64_t)r;
	return 0;
}

int aiotk_ws_journal(aiotk_target *t, uint64_t *journal, aiotk_err *err)
{
	static const char devnull[16] = "/dev/null";
	const uint64_t head[2] = { AIOTK_JOURNAL_MAGIC, 0 };
	struct aiotk_workspace *w = ws_of(t, err);
	if (!w)
		return AIOTK_ENOMEM;
	if (!w->journal) {
		uint64_t at;
		int rc = map_journal(t, &at, err);
		if (rc)
			return rc;
		if ((rc = aiotk_poke(t, at + AIOTK_WS_PATH, devnull, sizeof(devnull), err)) ||
		    (rc = aiotk_poke(t, at, head, sizeof(head), err))) {
			aiotk_scratch_unmap(t, at, AIOTK_JOURNAL_LEN);
			return rc;
		}
		w->journal = at;
	}
	*journal = w->journal;
	return 0;
}

static int open_null(aiotk_target *t, struct aiotk_workspace *w, aiotk_err *err)
{
	uint64_t j;
	int rc = aiotk_ws_journal(t, &j, err);
	if (rc || w->fd >= 0)
		return rc;
	long fd = aiotk_sys(t, SYS_openat, AT_FDCWD, (long)(j + AIOTK_WS_PATH),
			    O_WRONLY | O_CLOEXEC, 0, 0, 0);
	if (fd < 0)
		return aiotk_fail(err, AIOTK_ESYS, (int)-fd,
				  "cannot open /dev/null for replay requests: %s",
				  strerror((int)-fd));
	w->fd = fd;
	return 0;
}

static void fill(uint8_t *buf, unsigned n, const struct aiotk_workspace *w,
		 uint64_t base)
{
	struct iocb cb;
	aiotk_iocb_poll(&cb, (uint32_t)w->fd);
	if (w->kind != AIOTK_REQ_POLL) {
		cb.aio_lio_opcode = IOCB_CMD_PWRITE;
		cb.aio_buf = w->journal + AIOTK_WS_BYTE;
		cb.aio_nbytes = 1;
	}
	for (unsigned i = 0; i < n; i++) {
		uint64_t at = base + i * sizeof(cb);
		memcpy(buf + i * sizeof(cb), &cb, sizeof(cb));
		memcpy(buf + (size_t)n * sizeof(cb) + i * sizeof(at), &at, sizeof(at));
	}
}

/* n iocbs of w->kind and their pointers, in a mapping of their own. */
static int write_cbs(aiotk_target *t, struct aiotk_workspace *w, unsigned n,
		     aiotk_err *err)
{
	size_t len = (size_t)n * AIOTK_REQ_ROOM;
	size_t map_len = aiotk_page_round(len);
	if (map_len > w->cbs_len) {
		uint64_t at;
		int rc = aiotk_scratch_map(t, map_len, &at, err);
		if (rc)
			return rc;
		aiotk_scratch_unmap(t, w->cbs, w->cbs_len);
		w->cbs = at;
		w->cbs_len = map_len;
	}
	uint8_t *buf = malloc(len);
	if (!buf)
		return aiotk_fail(err, AIOTK_ENOMEM, ENOMEM, "out of memory for iocbs");
	fill(buf, n, w, w->cbs);
	int rc = aiotk_poke(t, w->cbs, buf, len, err);
	free(buf);
	w->cap = rc ? 0 : n;
	return rc;
}

int aiotk_ws_requests(aiotk_target *t, enum aiotk_req_kind kind, unsigned n,
		      uint64_t *ptrs, aiotk_err *err)
{
	struct aiotk_workspace *w = ws_of(t, err);
	int rc = w ? open_null(t, w, err) : AIOTK_ENOMEM;
	if (rc)
		return rc;
	if (kind != w->kind || n > w->cap) {
		w->kind = kind;
		if ((rc = write_cbs(t, w, n > w->cap ? n : w->cap, err)))
			return rc;
	}
	*ptrs = w->cbs + (uint64_t)w->cap * sizeof(struct iocb);
	return 0;
}

static int within(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
	return alen && blen && a < b + blen && b < a + alen;
}

int aiotk_ws_vacate(aiotk_target *t, uint64_t addr, uint64_t len)
{
	struct aiotk_workspace *w = t->ws;
	if (!w || !(within(w->journal, w->journal ? AIOTK_JOURNAL_LEN : 0, addr, len) ||
		    within(w->cbs, w->cbs_len, addr, len)))
		return 0;
	aiotk_target_release(t, NULL);
	return 1;
}

int aiotk_target_pin(aiotk_target *t, aiotk_err *err)
{
	struct aiotk_workspace *w;
	cpu_set_t one;
	if (!aiotk_target_is_self(t) || aiotk_target_pinned(t))
		return 0; /* a process target is pinned while stopped */
	if (!(w = ws_of(t, err)))
		return AIOTK_ENOMEM;
	int cpu = sched_getcpu();
	if (cpu < 0 || sched_getaffinity(0, sizeof(w->mask), &w->mask))
		return aiotk_fail(err, AIOTK_ESYS, errno, "cannot read this thread's CPU affinity: %s",
				  strerror(errno));
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	if (sched_setaffinity(0, sizeof(one), &one))
		return aiotk_fail(err, AIOTK_ESYS, errno, "cannot pin this thread to CPU %d: %s",
				  cpu, strerror(errno));
	w->pinned = 1;
	return 0;
}

int aiotk_ws_pinned(const aiotk_target *t)
{
	return t->ws && t->ws->pinned;
}

uint64_t aiotk_ws_own_journal(const aiotk_target *t)
{
	return t->ws ? t->ws->journal : 0;
}

int aiotk_target_release(aiotk_target *t, aiotk_err *err)
{
	struct aiotk_workspace *w = t->ws;
	long rc = 0;
	if (!w)
		return 0;
	t->ws = NULL;
	if (w->pinned)
		sched_setaffinity(0, sizeof(w->mask), &w->mask);
	/* A target that can no longer run system calls (gone, or a process
	 * that exited) keeps nothing to put back. */
	if (aiotk_target_ready(t, NULL) == 0) {
		if (w->fd >= 0)
			rc = aiotk_sys(t, SYS_close, w->fd, 0, 0, 0, 0, 0);
		aiotk_scratch_unmap(t, w->cbs, w->cbs_len);
		aiotk_scratch_unmap(t, w->journal, AIOTK_JOURNAL_LEN);
	}
	free(w);
	if (rc < 0)
		return aiotk_fail(err, AIOTK_ESYS, (int)-rc,
				  "cannot close aiotk's /dev/null descriptor in process %d: %s",
				  t->pid, strerror((int)-rc));
	return 0;
}
