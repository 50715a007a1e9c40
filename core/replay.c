/* Moving a fresh context's private tail to a saved value by completing
 * requests that finish inside io_submit, while holding ring->head where the
 * saved ring has it. See docs/KERNEL-FACTS.md, "Budget and request slots". */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

#ifndef IOCB_CMD_POLL
#define IOCB_CMD_POLL 5
#endif
#define DEFAULT_BATCH 1024u
#define MASK_BYTES 1024u /* affinity masks up to 8192 CPUs */
#define HEAD_OFF offsetof(aiotk_ring_header, head)

/* Scratch layout in the target: iocbs, their pointers, a path, a byte to
 * write, and two affinity masks (saved and pinned). */
struct layout {
	uint64_t base, iocbs, ptrs, path, byte, mask_old, mask_new, cpu;
	size_t len;
};

struct replay {
	aiotk_target *t;
	uint64_t ctx;
	uint32_t nr, head, tail;
	unsigned batch;
	int no_nudge;
	enum aiotk_req_kind kind;
	struct layout l;
	long fd;
	long mask_len;    /* >0: affinity saved and must be put back */
	aiotk_replay_stats *st;
};

static void plan_layout(struct layout *l, unsigned batch)
{
	l->iocbs = 0;
	l->ptrs = l->iocbs + (uint64_t)batch * sizeof(struct iocb);
	l->path = l->ptrs + (uint64_t)batch * sizeof(uint64_t);
	l->byte = l->path + 16;
	l->cpu = l->byte + 16;
	l->mask_old = l->cpu + 16;
	l->mask_new = l->mask_old + MASK_BYTES;
	l->len = (l->mask_new + MASK_BYTES + 4095) / 4096 * 4096;
}

static int write_iocbs(struct replay *r, aiotk_err *err)
{
	struct iocb cb;
	size_t cbs_len = r->batch * sizeof(cb), len = cbs_len + r->batch * 8;
	uint8_t *buf = malloc(len);
	if (!buf)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory for iocbs");
	memset(&cb, 0, sizeof(cb));
	cb.aio_fildes = (uint32_t)r->fd;
	if (r->kind == AIOTK_REQ_POLL) {
		cb.aio_lio_opcode = IOCB_CMD_POLL;
		cb.aio_buf = POLLOUT;
	} else {
		cb.aio_lio_opcode = IOCB_CMD_PWRITE;
		cb.aio_buf = r->l.base + r->l.byte;
		cb.aio_nbytes = 1;
	}
	for (unsigned i = 0; i < r->batch; i++) {
		uint64_t at = r->l.base + r->l.iocbs + i * sizeof(cb);
		memcpy(buf + i * sizeof(cb), &cb, sizeof(cb));
		memcpy(buf + cbs_len + i * 8, &at, 8);
	}
	/* iocbs and pointers are contiguous in the layout: one write. */
	int rc = aiotk_poke(r->t, r->l.base + r->l.iocbs, buf, len, err);
	free(buf);
	return rc;
}

/* Stay on one CPU: free slots cached per CPU would otherwise be stranded. */
static int pin(struct replay *r, aiotk_err *err)
{
	uint32_t cpu;
	uint8_t mask[MASK_BYTES] = { 0 };
	long n = aiotk_sys(r->t, SYS_sched_getaffinity, 0, MASK_BYTES,
			   (long)(r->l.base + r->l.mask_old), 0, 0, 0);
	long c = aiotk_sys(r->t, SYS_getcpu, (long)(r->l.base + r->l.cpu), 0,
			   0, 0, 0, 0);
	int rc = n < 0 || c < 0 ? aiotk_fail(err, AIOTK_ESYS, (int)-(n < 0 ? n : c),
					 "cannot read the CPU affinity to pin the replay")
				: aiotk_peek(r->t, r->l.base + r->l.cpu, &cpu,
					     sizeof(cpu), err);
	if (rc)
		return rc;
	if (cpu >= MASK_BYTES * 8)
		return aiotk_fail(err, AIOTK_EINVAL, 0, "CPU %u is beyond the pin mask", cpu);
	mask[cpu / 8] = (uint8_t)(1u << (cpu % 8));
	if ((rc = aiotk_poke(r->t, r->l.base + r->l.mask_new, mask, sizeof(mask), err)))
		return rc;
	long s = aiotk_sys(r->t, SYS_sched_setaffinity, 0, MASK_BYTES,
			   (long)(r->l.base + r->l.mask_new), 0, 0, 0);
	if (s < 0)
		return aiotk_fail(err, AIOTK_ESYS, (int)-s,
				  "cannot pin the replay to CPU %u: %s", cpu,
				  strerror((int)-s));
	r->mask_len = n;
	return 0;
}

static int set_up(struct replay *r, aiotk_err *err)
{
	static const char devnull[16] = "/dev/null";
	plan_layout(&r->l, r->batch);
	int rc = aiotk_scratch_map(r->t, r->l.len, &r->l.base, err);
	if (!rc)
		rc = aiotk_poke(r->t, r->l.base + r->l.path, devnull,
				sizeof(devnull), err);
	if (rc)
		return rc;
	r->fd = aiotk_sys(r->t, SYS_openat, AT_FDCWD,
			  (long)(r->l.base + r->l.path), O_WRONLY | O_CLOEXEC,
			  0, 0, 0);
	if (r->fd < 0)
		return aiotk_fail(err, AIOTK_ESYS, (int)-r->fd,
				  "cannot open /dev/null for replay requests: %s",
				  strerror((int)-r->fd));
	return write_iocbs(r, err);
}

static void tear_down(struct replay *r)
{
	if (r->mask_len > 0)
		aiotk_sys(r->t, SYS_sched_setaffinity, 0, r->mask_len,
			  (long)(r->l.base + r->l.mask_old), 0, 0, 0);
	if (r->fd >= 0)
		aiotk_sys(r->t, SYS_close, r->fd, 0, 0, 0, 0, 0);
	aiotk_scratch_unmap(r->t, r->l.base, r->l.len);
}

static int write_head(struct replay *r, uint32_t head, aiotk_err *err)
{
	return aiotk_poke(r->t, r->ctx + HEAD_OFF, &head, sizeof(head), err);
}

static long submit(struct replay *r, uint64_t count)
{
	r->st->submits++;
	return aiotk_sys(r->t, SYS_io_submit, (long)r->ctx, (long)count,
			 (long)(r->l.base + r->l.ptrs), 0, 0, 0);
}

/* The kernel counts the ring full although the saved ring held more: slots
 * are stranded in the global pool (fewer than one per-CPU batch). Show it
 * the `left` requests still to come as consumed, submit them all, then put
 * head back; `left` is then at most the stranded count. */
static int nudge(struct replay *r, uint64_t done, uint64_t left, aiotk_err *err)
{
	uint64_t in_ring = done >= r->head ? done - r->head : 0;
	if (r->no_nudge)
		return aiotk_fail(err, AIOTK_ESTUCK, EAGAIN,
				  "replay stuck at %llu of %u events: ring 0x%llx holds more than this host's kernel lets be outstanding, and nudging is off (policy overfull: fail)",
				  (unsigned long long)in_ring,
				  aiotk_ring_live(r->nr, r->head, r->tail),
				  (unsigned long long)r->ctx);
	if (done < r->head || left > in_ring)
		return aiotk_fail(err, AIOTK_ESTUCK, EAGAIN,
				  "replay stuck at %llu of %u events: the kernel refuses more requests",
				  (unsigned long long)in_ring, aiotk_ring_live(r->nr, r->head, r->tail));
	r->st->nudges++;
	int rc = write_head(r, (uint32_t)((r->head + left) % r->nr), err);
	long got = 1;
	uint64_t sent = 0;
	while (!rc && sent < left && got > 0) {
		got = submit(r, left - sent < r->batch ? left - sent : r->batch);
		sent += got > 0 ? (uint64_t)got : 0;
	}
	int back = write_head(r, r->head, err);
	if (rc || back)
		return rc ? rc : back;
	if (sent < left)
		return aiotk_fail(err, AIOTK_ESTUCK, (int)(got < 0 ? -got : EAGAIN),
				  "replay stuck: ring 0x%llx would hold %u of %u slots, more than this host's kernel lets be outstanding (slots stranded per CPU); the ring came from a host with another CPU count",
				  (unsigned long long)r->ctx,
				  aiotk_ring_live(r->nr, r->head, r->tail), r->nr);
	return 0;
}

/* POLL needs 4.18+; older kernels say EINVAL on the first submit. */
static int fall_back(struct replay *r, aiotk_err *err)
{
	r->kind = AIOTK_REQ_PWRITE;
	return write_iocbs(r, err);
}

static int run(struct replay *r, uint64_t total, int auto_kind, aiotk_err *err)
{
	uint64_t done = 0;
	uint32_t head_now = 0;
	while (done < total) {
		uint32_t want_head = done < r->head ? (uint32_t)done : r->head;
		int rc = want_head != head_now ? write_head(r, want_head, err) : 0;
		if (rc)
			return rc;
		head_now = want_head;
		uint64_t left = total - done;
		long got = submit(r, left < r->batch ? left : r->batch);
		if (got == -EINVAL && auto_kind && done == 0 &&
		    r->kind == AIOTK_REQ_POLL) {
			if ((rc = fall_back(r, err)))
				return rc;
			continue;
		}
		if (got == -EAGAIN || got == 0) {
			if ((rc = nudge(r, done, left, err)))
				return rc;
			got = (long)left;
		}
		if (got < 0)
			return aiotk_fail(err, AIOTK_ESYS, (int)-got,
					   "io_submit on ring 0x%llx failed after %llu completions: %s",
					   (unsigned long long)r->ctx,
					   (unsigned long long)done, strerror((int)-got));
		done += (uint64_t)got;
	}
	r->st->completions = done;
	/* The last batch may have carried done past head: settle it. */
	return head_now != r->head ? write_head(r, r->head, err) : 0;
}

static int check_result(struct replay *r, aiotk_err *err)
{
	uint32_t ht[2];
	int rc = aiotk_peek(r->t, r->ctx + HEAD_OFF, ht, sizeof(ht), err);
	if (!rc && (ht[0] != r->head || ht[1] != r->tail))
		rc = aiotk_fail(err, AIOTK_ESTUCK, 0,
				"replay ended at head %u tail %u, wanted %u/%u",
				ht[0], ht[1], r->head, r->tail);
	return rc;
}

int aiotk_replay(aiotk_target *t, uint64_t ctx, uint32_t nr, uint32_t head,
		 uint32_t tail, const aiotk_replay_opts *o,
		 aiotk_replay_stats *st, aiotk_err *err)
{
	aiotk_replay_opts def = { 0 };
	aiotk_replay_stats ignore;
	o = o ? o : &def;
	st = st ? st : &ignore;
	memset(st, 0, sizeof(*st));
	if (nr < 2 || head >= nr || tail >= nr)
		return aiotk_fail(err, AIOTK_EINVAL, 0,
				  "replay: head %u / tail %u out of range for nr %u",
				  head, tail, nr);
	struct replay r = {
		.t = t, .ctx = ctx, .nr = nr, .head = head, .tail = tail,
		.batch = o->batch ? o->batch : DEFAULT_BATCH,
		.no_nudge = o->no_nudge,
		.kind = o->kind == AIOTK_REQ_PWRITE ? AIOTK_REQ_PWRITE : AIOTK_REQ_POLL,
		.fd = -1, .st = st,
	};
	if (r.batch > DEFAULT_BATCH * 4)
		r.batch = DEFAULT_BATCH * 4;
	/* Behind head means a full turn first: the kernel must have seen
	 * every slot before tail, or it counts slots free that are not. */
	uint64_t total = tail >= head ? tail : (uint64_t)nr + tail;
	int rc = 0;
	if (total) {
		rc = set_up(&r, err);
		if (!rc && !o->no_pin)
			rc = pin(&r, err);
		if (!rc)
			rc = run(&r, total, o->kind == AIOTK_REQ_AUTO, err);
		tear_down(&r);
	}
	st->kind = r.kind;
	return rc ? rc : check_result(&r, err);
}

int aiotk_events_write(aiotk_target *t, uint64_t ctx, const aiotk_ring *saved,
		       aiotk_err *err)
{
	uint64_t base = ctx + AIOTK_HEADER_LEN;
	if (saved->area)
		return aiotk_poke(t, base, saved->area,
				  (size_t)saved->nr * AIOTK_EVENT_LEN, err);
	uint32_t first = saved->tail >= saved->head ? saved->nevents
						    : saved->nr - saved->head;
	int rc = first ? aiotk_poke(t, base + (uint64_t)saved->head * AIOTK_EVENT_LEN,
				    saved->events, first * sizeof(aiotk_event), err) : 0;
	if (!rc && saved->nevents > first)
		rc = aiotk_poke(t, base, saved->events + first,
				(saved->nevents - first) * sizeof(aiotk_event), err);
	return rc;
}
