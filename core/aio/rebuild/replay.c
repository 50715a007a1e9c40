/* Moving a fresh context's private tail to a saved value by completing
 * requests that finish inside io_submit, while holding ring->head where the
 * saved ring has it. See docs/KERNEL-FACTS.md, "Budget and request slots". */
#define _GNU_SOURCE
#include "aio/rebuild/rebuild.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

#define DEFAULT_BATCH 1024u
#define HEAD_OFF offsetof(aiotk_ring_header, head)

struct replay {
	aiotk_target *t;
	uint64_t ctx;
	uint32_t nr, head, tail;
	unsigned batch;
	int no_nudge;
	enum aiotk_req_kind kind;
	uint64_t ptrs;    /* the workspace's iocb pointers */
	uint64_t args;    /* the journal page: pin()'s arguments go there */
	/* This process's own ring, checked to be one: head is stored into it
	 * directly (process_vm_writev into a ring page slows the io_submit
	 * after it by tens of microseconds). */
	volatile aiotk_ring_header *direct;
	long mask_len;    /* >0: affinity saved and must be put back */
	aiotk_replay_stats *st;
};

/* Requests for the batch size the work needs, from the workspace. */
static int requests(struct replay *r, aiotk_err *err)
{
	return aiotk_ws_requests(r->t, r->kind, r->batch, &r->ptrs, err);
}

/* The journal page's argument area; in this process it is aiotk's own
 * mapping, read and written directly. */
static int arg_rw(struct replay *r, unsigned off, void *buf, size_t len, int wr,
		  aiotk_err *err)
{
	uint8_t *at = (uint8_t *)(uintptr_t)(r->args + off);
	if (aiotk_target_is_self(r->t)) {
		memcpy(wr ? at : buf, wr ? buf : at, len);
		return 0;
	}
	return wr ? aiotk_poke(r->t, r->args + off, buf, len, err)
		  : aiotk_peek(r->t, r->args + off, buf, len, err);
}

/* This host's CPUs do not fit the pin mask (sched_getaffinity says
 * EINVAL, or getcpu names a CPU beyond it). */
static int too_many_cpus(aiotk_err *err)
{
	return aiotk_fail(err, AIOTK_EUNSUPPORTED, EINVAL,
			  "cannot pin the replay to one CPU: this host has more CPUs than aiotk's pin mask holds (%u; AIOTK_WS_MASK_BYTES in core/aio/rebuild/rebuild.h), and unpinned, slots cached per CPU would be stranded; build aiotk with a larger mask",
			  AIOTK_WS_MASK_BYTES * 8);
}

/* Stay on one CPU: free slots cached per CPU would otherwise be stranded. */
static int pin(struct replay *r, aiotk_err *err)
{
	uint32_t cpu;
	uint8_t mask[AIOTK_WS_MASK_BYTES] = { 0 };
	int rc = aiotk_ws_journal(r->t, &r->args, err);
	if (rc)
		return rc;
	long n = aiotk_sys(r->t, SYS_sched_getaffinity, 0, AIOTK_WS_MASK_BYTES,
			   (long)(r->args + AIOTK_WS_MASK_OLD), 0, 0, 0);
	long c = aiotk_sys(r->t, SYS_getcpu, (long)(r->args + AIOTK_WS_CPU), 0,
			   0, 0, 0, 0);
	if (n == -EINVAL)
		return too_many_cpus(err);
	if (n < 0 || c < 0)
		return aiotk_fail(err, AIOTK_ESYS, (int)-(n < 0 ? n : c),
				  "cannot read the CPU affinity to pin the replay");
	if ((rc = arg_rw(r, AIOTK_WS_CPU, &cpu, sizeof(cpu), 0, err)))
		return rc;
	if (cpu >= AIOTK_WS_MASK_BYTES * 8)
		return too_many_cpus(err);
	mask[cpu / 8] = (uint8_t)(1u << (cpu % 8));
	if ((rc = arg_rw(r, AIOTK_WS_MASK_NEW, mask, sizeof(mask), 1, err)))
		return rc;
	long s = aiotk_sys(r->t, SYS_sched_setaffinity, 0, AIOTK_WS_MASK_BYTES,
			   (long)(r->args + AIOTK_WS_MASK_NEW), 0, 0, 0);
	if (s < 0)
		return aiotk_fail(err, AIOTK_ESYS, (int)-s,
				  "cannot pin the replay to CPU %u: %s", cpu,
				  strerror((int)-s));
	r->mask_len = n;
	return 0;
}

static void unpin(struct replay *r)
{
	if (r->mask_len > 0)
		aiotk_sys(r->t, SYS_sched_setaffinity, 0, r->mask_len,
			  (long)(r->args + AIOTK_WS_MASK_OLD), 0, 0, 0);
	r->mask_len = 0;
}

/* In this process the ring is used directly once io_submit has accepted
 * ctx: a context of this process, so its ring is mapped at ctx (libaio
 * reads it there too). process_vm_readv/writev into a ring page, and even
 * mincore or a read before the first submit, cost microseconds to tens of
 * them each (the ring's user pages fault in on first touch). */
static void check_direct(struct replay *r)
{
	if (!r->direct && r->st->submits && aiotk_target_is_self(r->t))
		r->direct = (volatile aiotk_ring_header *)(uintptr_t)r->ctx;
}

static int write_head(struct replay *r, uint32_t head, aiotk_err *err)
{
	check_direct(r);
	if (r->direct) {
		r->direct->head = head;
		return 0;
	}
	return aiotk_poke(r->t, r->ctx + HEAD_OFF, &head, sizeof(head), err);
}

static long submit(struct replay *r, uint64_t count)
{
	r->st->submits++;
	return aiotk_sys(r->t, SYS_io_submit, (long)r->ctx, (long)count,
			 (long)r->ptrs, 0, 0, 0);
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
	return requests(r, err);
}

/* Head is written only when the kernel runs short of free slots (a short
 * count, or EAGAIN), not before every batch: the kernel reads ring->head
 * only then (to give back the slots of reaped events), and each write is
 * a process_vm_writev into a ring page, which also slows the io_submit
 * after it (docs/KERNEL-FACTS.md, "Costs"). */
static int follow_head(struct replay *r, uint64_t done, uint32_t *head_now,
		       int *moved, aiotk_err *err)
{
	uint32_t want = done < r->head ? (uint32_t)done : r->head;
	*moved = want != *head_now;
	if (!*moved)
		return 0;
	*head_now = want;
	return write_head(r, want, err);
}

static int run(struct replay *r, uint64_t total, int auto_kind, aiotk_err *err)
{
	uint64_t done = 0;
	uint32_t head_now = 0;
	int moved, rc;
	while (done < total) {
		uint64_t left = total - done;
		uint64_t ask = left < r->batch ? left : r->batch;
		long got = submit(r, ask);
		if (got == -EINVAL && auto_kind && done == 0 &&
		    r->kind == AIOTK_REQ_POLL) {
			if ((rc = fall_back(r, err)))
				return rc;
			continue;
		}
		if (got == -EAGAIN || got == 0) {
			if ((rc = follow_head(r, done, &head_now, &moved, err)))
				return rc;
			if (moved)
				continue; /* slots given back: try again */
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
		/* Short: the kernel ran out of slots; the next batch needs them. */
		if ((uint64_t)got < ask && done < total &&
		    (rc = follow_head(r, done, &head_now, &moved, err)))
			return rc;
	}
	r->st->completions = done;
	/* The last batch may have carried done past head: settle it. */
	return head_now != r->head ? write_head(r, r->head, err) : 0;
}

static int check_result(struct replay *r, aiotk_err *err)
{
	uint32_t ht[2] = { r->direct ? r->direct->head : 0, r->direct ? r->direct->tail : 0 };
	int rc = r->direct ? 0 : aiotk_peek(r->t, r->ctx + HEAD_OFF, ht, sizeof(ht), err);
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
	uint64_t t0 = aiotk_now_ns();
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
		.st = st,
	};
	if (r.batch > DEFAULT_BATCH * 4)
		r.batch = DEFAULT_BATCH * 4;
	/* Behind head means a full turn first: the kernel must have seen
	 * every slot before tail, or it counts slots free that are not. */
	uint64_t total = tail >= head ? tail : (uint64_t)nr + tail;
	if (total < r.batch)
		r.batch = (unsigned)total;
	int rc = 0;
	if (total) {
		rc = requests(&r, err);
		if (!rc && !o->no_pin && !aiotk_target_pinned(t))
			rc = pin(&r, err);
		if (!rc)
			rc = run(&r, total, o->kind == AIOTK_REQ_AUTO, err);
		unpin(&r);
	}
	st->kind = r.kind;
	rc = rc ? rc : check_result(&r, err);
	st->ns = aiotk_now_ns() - t0;
	return rc;
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
