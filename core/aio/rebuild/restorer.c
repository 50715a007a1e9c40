/* The restorer: io_setup, replay, event copy and mremap of many rings in
 * one go, as one routine. Injected one system call at a time, each ring
 * costs three or four ptrace round trips (about 25 us each here, more than
 * the ring's own kernel work); the restorer runs the same calls inside the
 * target, started and finished with one stop, as CRIU's restorer blob
 * does. In this process the same routine is called directly, so the
 * in-process floor and the live restore run the same code.
 *
 * It is copied byte for byte into the target (target_ptrace.c), so it
 * lives in a section of its own and refers to nothing outside it: system
 * calls are inline, helpers are always inlined, no libc, no constants in
 * .rodata, no sanitizer (CMakeLists.txt), which spec/c/test_restorer.c
 * checks. Whatever it cannot do (a ring that needs a nudge, a step aside,
 * another request kind) it leaves to the caller, saying where it stopped.
 *
 * In a target its end signals the main thread with `sig`, a signal that
 * process neither catches nor would notice (default action: ignore), and
 * then unmaps its own mapping and returns through the return frame: aiotk
 * takes over at that signal stop, reads the answer, and lets it run to
 * the munmap's exit; a dead aiotk leaves the thread to ignore the signal,
 * unmap the routine and resume its own context, as with a single injected
 * call (arch.h). */
#include "aio/rebuild/restorer.h"
#include "aio/rebuild/rebuild.h"
#include "aio/rebuild/iocb.h"
#include "aio/rebuild/routine.h"

#include <stddef.h>

#if defined(__x86_64__)
#include <sys/syscall.h>

#define RS __attribute__((section("aiotk_restorer"), used, noinline, \
			  no_sanitize("address", "undefined"), no_stack_protector))
#define MREMAP_MOVE_FIXED 3 /* MREMAP_MAYMOVE | MREMAP_FIXED */
#define E_AGAIN 11
#define E_EXIST 17
#define E_INVAL 22

#define rs_sys aiotk_routine_sys

AIOTK_INLINE int rs_fail(struct aiotk_rjob_ring *r, uint32_t step, long status)
{
	r->step = step;
	r->status = status;
	return -1;
}

/* What the replay needs, made in the process itself. */
struct rs_kit {
	volatile uint64_t *journal; /* shared page: magic, then the slot */
	uint64_t ptrs;
	long fd;
	uint8_t mask[AIOTK_WS_MASK_BYTES]; /* affinity as found */
	long mask_len;              /* >0: to be put back */
};

/* The replay of replay.c, for a ring of this process: head written only
 * when the kernel runs short of slots. */
AIOTK_INLINE int rs_replay(struct aiotk_rjob *job, struct rs_kit *k,
			struct aiotk_rjob_ring *r, volatile aiotk_ring_header *h)
{
	uint64_t total = r->tail >= r->head ? r->tail : (uint64_t)r->nr + r->tail;
	uint64_t done = 0;
	uint32_t head_now = 0;
	while (done < total) {
		uint64_t left = total - done;
		uint64_t ask = left < job->batch ? left : job->batch;
		long got = rs_sys(SYS_io_submit, (long)r->ctx, (long)ask, (long)k->ptrs, 0, 0);
		r->submits++;
		uint32_t want = done < r->head ? (uint32_t)done : r->head;
		if (got == -E_AGAIN || got == 0) {
			if (want == head_now)
				return rs_fail(r, AIOTK_RSTEP_REPLAY, -E_AGAIN);
			h->head = head_now = want;
			continue;
		}
		if (got < 0)
			return rs_fail(r, AIOTK_RSTEP_REPLAY, got);
		done += (uint64_t)got;
		want = done < r->head ? (uint32_t)done : r->head;
		if ((uint64_t)got < ask && done < total && want != head_now)
			h->head = head_now = want;
	}
	r->completions = done;
	h->head = r->head;
	if (h->head != r->head || h->tail != r->tail)
		return rs_fail(r, AIOTK_RSTEP_RESULT, -E_INVAL);
	return 0;
}

AIOTK_INLINE void rs_events(struct aiotk_rjob_ring *r, volatile aiotk_ring_header *h)
{
	volatile uint64_t *slots = (volatile uint64_t *)((volatile uint8_t *)h + AIOTK_HEADER_LEN);
	const volatile uint64_t *ev = (const volatile uint64_t *)(uintptr_t)r->events;
	uint64_t slot = r->first;
	for (uint32_t i = 0; i < r->count; i++, slot = slot + 1 == r->nr ? 0 : slot + 1) {
		for (unsigned w = 0; w < 4; w++)
			slots[slot * 4 + w] = ev[(uint64_t)i * 4 + w];
	}
}

/* One CPU: free slots cached per CPU would otherwise be stranded. A pin
 * that cannot be made (a mask wider than AIOTK_WS_MASK_BYTES: EINVAL)
 * fails the set-up rather than going on unpinned. */
AIOTK_INLINE long rs_pin(struct rs_kit *k)
{
	unsigned cpu = 0;
	volatile uint64_t one[AIOTK_WS_MASK_BYTES / 8];
	long r = rs_sys(SYS_sched_getaffinity, 0, sizeof(k->mask), (long)k->mask, 0, 0);
	if (r < 0)
		return r;
	long c = rs_sys(SYS_getcpu, (long)&cpu, 0, 0, 0, 0);
	if (c < 0)
		return c;
	if (cpu >= sizeof(one) * 8)
		return -E_INVAL;
	for (unsigned i = 0; i < sizeof(one) / sizeof(one[0]); i++)
		one[i] = 0;
	one[cpu / 64] = 1ull << (cpu % 64);
	long s = rs_sys(SYS_sched_setaffinity, 0, sizeof(one), (long)(uintptr_t)one, 0, 0);
	if (s < 0)
		return s;
	k->mask_len = r;
	return 0;
}

AIOTK_INLINE long rs_kit_open(struct aiotk_rjob *job, struct rs_kit *k)
{
	long r = rs_sys(SYS_mmap, 0, AIOTK_JOURNAL_LEN, 3 /* PROT_READ|WRITE */, 0x21 /* MAP_SHARED|ANONYMOUS */, -1);
	if (aiotk_sys_failed(r))
		return r;
	k->journal = (volatile uint64_t *)(uintptr_t)r;
	/* The journal's layout (rebuild.h): magic, then the slot. */
	k->journal[AIOTK_WS_SLOT / 8] = 0;
	k->journal[0] = job->journal_magic;
	if ((k->fd = rs_sys(SYS_openat, -100 /* AT_FDCWD */, (long)job->path,
			    01 | 02000000 /* O_WRONLY | O_CLOEXEC */, 0, 0)) < 0)
		return k->fd;
	volatile struct iocb *cb = (volatile struct iocb *)(uintptr_t)job->cbs;
	volatile uint64_t *ptr = (volatile uint64_t *)(cb + job->batch);
	for (uint32_t i = 0; i < job->batch; i++) {
		aiotk_iocb_poll(&cb[i], (uint32_t)k->fd);
		ptr[i] = (uint64_t)(uintptr_t)&cb[i];
	}
	k->ptrs = (uint64_t)(uintptr_t)ptr;
	return job->pinned ? 0 : rs_pin(k);
}

AIOTK_INLINE void rs_kit_close(struct rs_kit *k)
{
	if (k->mask_len > 0)
		rs_sys(SYS_sched_setaffinity, 0, k->mask_len, (long)k->mask, 0, 0);
	if (k->fd >= 0)
		rs_sys(SYS_close, k->fd, 0, 0, 0, 0);
	if (k->journal)
		rs_sys(SYS_munmap, (long)(uintptr_t)k->journal, AIOTK_JOURNAL_LEN, 0, 0, 0);
}

/* The clock, by a system call (the vDSO is the process's, and the
 * restorer calls nothing of it): about a microsecond a ring for the four
 * phase times the caller reports. */
AIOTK_INLINE uint64_t rs_now(void)
{
	struct { int64_t sec, nsec; } ts = { 0, 0 };
	rs_sys(SYS_clock_gettime, 1 /* CLOCK_MONOTONIC */, (long)&ts, 0, 0, 0);
	return (uint64_t)ts.sec * 1000000000u + (uint64_t)ts.nsec;
}

AIOTK_INLINE int rs_ring(struct aiotk_rjob *job, struct rs_kit *k, struct aiotk_rjob_ring *r)
{
	volatile uint64_t *slot = &k->journal[AIOTK_WS_SLOT / 8];
	r->at[0] = rs_now();
	long rc = rs_sys(SYS_io_setup, r->n, (long)slot, 0, 0, 0);
	if (rc < 0)
		return rs_fail(r, AIOTK_RSTEP_SETUP, rc);
	r->ctx = *slot;
	volatile aiotk_ring_header *h = (volatile aiotk_ring_header *)(uintptr_t)r->ctx;
	aiotk_header_mark(h); /* marked, then the journal goes */
	*slot = 0;
	if (h->nr != r->nr)
		return rs_fail(r, AIOTK_RSTEP_NR, -E_INVAL);
	r->at[1] = rs_now();
	if (rs_replay(job, k, r, h))
		return -1;
	r->at[2] = rs_now();
	rs_events(r, h);
	r->at[3] = rs_now();
	if (r->ctx != r->dest) {
		if (r->ctx < r->dest + r->len && r->dest < r->ctx + r->len)
			return rs_fail(r, AIOTK_RSTEP_OVERLAP, 0);
		rc = rs_sys(SYS_mremap, (long)r->ctx, (long)r->len, (long)r->len,
			    MREMAP_MOVE_FIXED, (long)r->dest);
		if (aiotk_sys_failed(rc))
			return rs_fail(r, AIOTK_RSTEP_MOVE, rc);
		r->ctx = r->dest;
		h = (volatile aiotk_ring_header *)(uintptr_t)r->ctx;
	}
	rc = rs_sys(SYS_io_getevents, (long)r->ctx, 0, 0, 0, 0);
	if (rc != 0 || h->nr != r->nr)
		return rs_fail(r, AIOTK_RSTEP_MOVED, rc ? rc : -E_INVAL);
	aiotk_header_unmark(h, r->compat);
	r->at[4] = rs_now();
	r->step = AIOTK_RSTEP_DONE;
	return 0;
}

/* The placeholders, before anything else is mapped (the kit's journal
 * page could land on a free destination otherwise). A kernel that takes
 * MAP_FIXED_NOREPLACE as a hint (before 4.17) answers elsewhere: that
 * mapping goes, and the claim failed. */
AIOTK_INLINE int rs_claim(struct aiotk_rjob *job)
{
	const volatile uint64_t *c = (const volatile uint64_t *)(uintptr_t)job->claims;
	for (uint32_t i = 0; i < job->nclaims; i++) {
		long r = rs_sys(SYS_mmap, (long)c[2 * i], (long)c[2 * i + 1], AIOTK_PLACEHOLDER_PROT,
				AIOTK_PLACEHOLDER_FLAGS, -1);
		if (r != (long)c[2 * i]) {
			if (!aiotk_sys_failed(r)) {
				rs_sys(SYS_munmap, r, (long)c[2 * i + 1], 0, 0, 0);
				r = -E_EXIST;
			}
			job->claim_status = r;
			return -1;
		}
		job->claimed = i + 1;
	}
	return 0;
}

/* The entry point: the placeholders, then job's rings in order, up to the
 * first that fails. */
RS void aiotk_restorer_main(struct aiotk_rjob *job)
{
	struct rs_kit k;
	k.journal = 0, k.ptrs = 0, k.fd = -1, k.mask_len = 0;
	job->at_start = rs_now();
	if (rs_claim(job))
		goto done;
	job->at_claimed = rs_now();
	job->setup_status = rs_kit_open(job, &k);
	job->at_kit = rs_now();
	for (uint32_t i = 0; !job->setup_status && i < job->nrings; i++) {
		if (rs_ring(job, &k, &job->ring[i]))
			break;
		job->done = i + 1;
	}
	rs_kit_close(&k);
done:
	job->at_end = rs_now();
	job->finished = 1;
	if (!job->exit_sp)
		return;
	rs_sys(SYS_tgkill, job->pid, job->pid, job->sig, 0, 0);
	/* Its own mapping goes last, through the process's `syscall; ret`
	 * (the code doing it lives in that mapping), whose ret leads into the
	 * return frame: aiotk resumes it from the signal stop to that call's
	 * exit; a dead aiotk leaves nothing of it behind either. */
	__asm__ volatile("mov %0, %%rsp\n\tjmp *%1"
			 : : "r"(job->exit_sp), "r"(job->gadget), "a"((long)SYS_munmap),
			   "D"(job->self_base), "S"(job->self_len)
			 : "memory");
	__builtin_unreachable();
}

extern const uint8_t __start_aiotk_restorer[], __stop_aiotk_restorer[];

int aiotk_restorer_code(const uint8_t **code, size_t *len, size_t *entry)
{
	*code = __start_aiotk_restorer;
	*len = (size_t)(__stop_aiotk_restorer - __start_aiotk_restorer);
	*entry = (size_t)((const uint8_t *)(uintptr_t)aiotk_restorer_main - __start_aiotk_restorer);
	return 0;
}

#else

void aiotk_restorer_main(struct aiotk_rjob *job) { job->finished = 1; }

int aiotk_restorer_code(const uint8_t **code, size_t *len, size_t *entry)
{
	*code = NULL, *len = 0, *entry = 0;
	return AIOTK_EUNSUPPORTED;
}
#endif
