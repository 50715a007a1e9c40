/* Many saved rings rebuilt in a target: runs of rings the restorer can
 * rebuild by itself (restorer.c) go to it in one job; any other ring, and
 * one the restorer stops at, goes through aiotk_restore_ring, which knows
 * every case (another n, a nudge, a step aside, PWRITE) and says exactly
 * what went wrong. Either way each ring is all or nothing. */
#define _GNU_SOURCE
#include "aio/rebuild/rebuild.h"
#include "aio/rebuild/restorer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#define STACK_LEN 16384u
#define MAX_BATCH 1024u

/* What the restorer can do alone: the exact size from the saved (or
 * given) n on this model, POLL requests, onto a placeholder the caller
 * holds (it moves rings without looking: nothing else, its own memory
 * included, can be there). */
static int eligible(const aiotk_ring *saved, const aiotk_restore_opts *o)
{
	aiotk_geom g;
	uint32_t n = o->n ? o->n : saved->n;
	return !o->grow_len && n && o->replay.kind != AIOTK_REQ_PWRITE &&
	       (o->remap_flags & AIOTK_REMAP_PLACEHOLDER) &&
	       o->model.cpus && saved->nr >= 2 &&
	       !aiotk_geom_ring(&o->model, n, &g, NULL) && g.nr == saved->nr &&
	       g.ring_len == saved->ring_len;
}

/* The job's bytes: header, rings, their events, the claims; then room for
 * the iocbs the routine writes (not copied in or out). */
static size_t job_len(aiotk_ring *const *saved, size_t n, size_t nclaims)
{
	size_t len = sizeof(struct aiotk_rjob) + n * sizeof(struct aiotk_rjob_ring);
	for (size_t i = 0; i < n; i++)
		len += (size_t)(saved[i]->area ? saved[i]->nr : saved[i]->nevents) * AIOTK_EVENT_LEN;
	len += nclaims * 2 * sizeof(uint64_t);
	return (len + 63) / 64 * 64;
}

static size_t cbs_len(unsigned batch) { return (size_t)batch * AIOTK_REQ_ROOM; }

/* The job for rings saved[0..n) and the claims, laid out for address `at`
 * in the target; with events 0 the rings' events are left out of job (the
 * injection path writes them into the target from the rings themselves:
 * poke_job). */
static void fill_job(struct aiotk_rjob *job, uint64_t at, aiotk_ring *const *saved,
		     const aiotk_restore_opts *o, size_t n, const aiotk_range *claim,
		     size_t nclaims, int events)
{
	static const char devnull[16] = "/dev/null";
	size_t off = sizeof(*job) + n * sizeof(job->ring[0]);
	job->nrings = (uint32_t)n;
	job->journal_magic = AIOTK_JOURNAL_MAGIC;
	memcpy(job->path, devnull, sizeof(devnull));
	job->cbs = at + job_len(saved, n, nclaims);
	for (size_t i = 0; i < n; i++) {
		const aiotk_ring *s = saved[i];
		struct aiotk_rjob_ring *r = &job->ring[i];
		r->dest = s->addr, r->len = s->ring_len;
		r->n = o[i].n ? o[i].n : s->n, r->nr = s->nr, r->head = s->head, r->tail = s->tail;
		r->compat = s->compat_features;
		r->first = s->area ? 0 : s->head;
		r->count = s->area ? s->nr : s->nevents;
		r->events = at + off;
		if (events)
			memcpy((uint8_t *)job + off, s->area ? s->area : s->events,
			       (size_t)r->count * AIOTK_EVENT_LEN);
		off += (size_t)r->count * AIOTK_EVENT_LEN;
	}
	uint64_t *c = (uint64_t *)((uint8_t *)job + off);
	for (size_t i = 0; i < nclaims; i++)
		c[2 * i] = claim[i].addr, c[2 * i + 1] = claim[i].len;
	job->claims = at + off, job->nclaims = (uint32_t)nclaims;
}

static unsigned batch_for(aiotk_ring *const *saved, size_t n)
{
	uint64_t most = 1;
	for (size_t i = 0; i < n; i++) {
		uint64_t total = saved[i]->tail >= saved[i]->head ? saved[i]->tail
				 : (uint64_t)saved[i]->nr + saved[i]->tail;
		most = total > most ? total : most;
	}
	return most < MAX_BATCH ? (unsigned)most : MAX_BATCH;
}

/* Whether [base, base + len) overlaps a claim. */
static int on_a_claim(uint64_t base, size_t len, const aiotk_range *claim, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (base < claim[i].addr + claim[i].len && claim[i].addr < base + len)
			return 1;
	return 0;
}

/* Each claim not yet held, by aiotk_reserve (in a process, an injected
 * call each). */
static int claim_each(aiotk_target *t, aiotk_rebuild *b, aiotk_err *err)
{
	for (int rc; b->claimed < b->nclaims; b->claimed++)
		if ((rc = aiotk_reserve(t, b->claim[b->claimed].addr, b->claim[b->claimed].len, err)))
			return rc;
	return 0;
}

/* The restorer's mapping in a process target, off every claim still to be
 * taken (the kernel could place it on a free destination): on one, the
 * claims are taken first (*claim_rc: how that went) and it is made again. */
static int map_restorer(aiotk_target *t, aiotk_rebuild *b, size_t total, uint64_t *base,
			int *rwx, int *claim_rc, aiotk_err *err)
{
	for (;;) {
		*rwx = !aiotk_scratch_map_exec(t, total, base);
		int rc = *rwx ? 0 : aiotk_scratch_map(t, total, base, err);
		if (rc || !on_a_claim(*base, total, b->claim + b->claimed, b->nclaims - b->claimed))
			return rc;
		aiotk_scratch_unmap(t, *base, total);
		if ((*claim_rc = claim_each(t, b, err)))
			return *claim_rc;
	}
}

/* Where a run's time went, by the clocks of this process and of the
 * restorer (both CLOCK_MONOTONIC): t[0] when aiotk began to copy it in,
 * t[1] when it was ready to run, t[2] when aiotk saw its end. */
static void time_run(aiotk_rebuild *b, const struct aiotk_rjob *job, const uint64_t t[3])
{
	uint64_t rings_end = job->done ? job->ring[job->done - 1].at[4] : job->at_kit;
	b->ns_load += t[1] - t[0];
	b->ns_enter += job->at_start - t[1];
	b->ns_claims += job->at_claimed - job->at_start;
	b->ns_kit += job->at_kit - job->at_claimed;
	b->ns_rings += rings_end - job->at_kit;
	b->ns_close += job->at_end - rings_end;
	b->ns_exit += t[2] - job->at_end;
	b->ns_answer += aiotk_now_ns() - t[2];
}

/* The job (filled without events) written at `at` in the target: its
 * header and rings, each ring's events straight from the saved ring, the
 * claims. Copying the events into the job first cost a second pass over
 * them (for 40000 events, 1.3 MB of fresh pages: 0.5-0.8 ms of the stop
 * here). */
static int poke_job(aiotk_target *t, uint64_t at, const struct aiotk_rjob *job,
		    aiotk_ring *const *saved, size_t n, aiotk_err *err)
{
	int rc = aiotk_poke(t, at, job, sizeof(*job) + n * sizeof(job->ring[0]), err);
	for (size_t i = 0; !rc && i < n; i++)
		if (job->ring[i].count)
			rc = aiotk_poke(t, job->ring[i].events, saved[i]->area ? saved[i]->area : saved[i]->events,
					(size_t)job->ring[i].count * AIOTK_EVENT_LEN, err);
	if (!rc && job->nclaims)
		rc = aiotk_poke(t, job->claims, (const uint8_t *)job + (job->claims - at),
				job->nclaims * 2 * sizeof(uint64_t), err);
	return rc;
}

/* In a process target: code, stack and job in one fresh mapping (code
 * made executable once written), run, answer read back, mapping gone.
 * 1: it ran and faulted. */
static int run_there(aiotk_target *t, aiotk_rebuild *b, struct aiotk_rjob *job,
		     size_t from, size_t n, int *claim_rc, aiotk_err *err)
{
	const uint8_t *code;
	size_t code_len, entry;
	uint64_t exit_sp, gadget, base, at_ns[3] = { aiotk_now_ns(), 0, 0 };
	int sig, rwx, rc = aiotk_restorer_code(&code, &code_len, &entry);
	if (!rc)
		rc = aiotk_target_restorer_exit(t, &exit_sp, &gadget, &sig, err);
	if (rc)
		return rc;
	/* Room for the job with every claim still to take; map_restorer may
	 * take some first, and the job is then shorter. */
	size_t code_pages = aiotk_page_round(code_len);
	size_t room = job_len(b->saved + from, n, b->nclaims - b->claimed);
	size_t total = code_pages + STACK_LEN + aiotk_page_round(room + cbs_len(job->batch));
	/* Writable and executable at once where the process's policy allows
	 * (one system call fewer), else made executable once written. */
	if ((rc = map_restorer(t, b, total, &base, &rwx, claim_rc, err)))
		return rc;
	uint64_t at = base + code_pages + STACK_LEN;
	job->pinned = (uint32_t)aiotk_target_pinned(t); /* (the mmap pinned it, if it can be) */
	fill_job(job, at, b->saved + from, b->o + from, n, b->claim + b->claimed,
		 b->nclaims - b->claimed, 0);
	job->exit_sp = exit_sp, job->pid = t->pid, job->sig = sig;
	job->gadget = gadget, job->self_base = base, job->self_len = total;
	rc = aiotk_poke(t, base, code, code_len, err);
	if (!rc)
		rc = poke_job(t, at, job, b->saved + from, n, err);
	long p = rc || rwx ? 0 : aiotk_sys(t, SYS_mprotect, (long)base, (long)code_pages,
					   PROT_READ | PROT_EXEC, 0, 0, 0);
	if (!rc && p < 0)
		rc = aiotk_fail(err, AIOTK_EUNSUPPORTED, (int)-p,
				"process %d refuses executable memory (%s)", t->pid, strerror((int)-p));
	at_ns[1] = aiotk_now_ns();
	/* The stack as a call leaves it: 8 bytes off 16-byte alignment. */
	int ran = rc ? rc : aiotk_target_run_restorer(t, base + entry, at, at - 72, sig, err);
	at_ns[2] = aiotk_now_ns();
	/* The answer even after a failed run: which rings exist, and where
	 * (the header and the rings; the events the job carried stay). */
	if (!rc && (rc = aiotk_peek(t, at, job, sizeof(*job) + n * sizeof(job->ring[0]), err)))
		return rc; /* nothing more to be done in that process */
	/* Ended at its signal, it unmaps itself; otherwise the mapping goes
	 * by an injected call. */
	if (rc || ran || aiotk_target_end_restorer(t))
		aiotk_scratch_unmap(t, base, total);
	if (!rc && !ran)
		time_run(b, job, at_ns);
	return rc ? rc : ran ? 1 : 0;
}

/* The answer of a run: claims held, rings finished (*ok). A ring it
 * stopped at is destroyed (its context is marked, and it gets rebuilt
 * ring by ring by the caller). */
static int take_answer(aiotk_target *t, aiotk_rebuild *b, const struct aiotk_rjob *job,
		       size_t from, size_t n, size_t *ok, int *claim_rc, aiotk_err *err)
{
	const aiotk_range *c = b->claim + b->claimed;
	b->claimed += job->claimed;
	if (job->claim_status) {
		*claim_rc = aiotk_claim_result(t, c[job->claimed].addr, c[job->claimed].len,
					       (long)job->claim_status, err);
		return *claim_rc;
	}
	aiotk_restore_result *res = b->res + from;
	for (size_t i = 0; i < job->done; i++) {
		memset(&res[i], 0, sizeof(res[i]));
		res[i].ctx = job->ring[i].ctx;
		res[i].conv = (aiotk_converge_result){ job->ring[i].ctx, job->ring[i].n, job->ring[i].nr, 1 };
		const uint64_t *at = job->ring[i].at;
		res[i].replay = (aiotk_replay_stats){ job->ring[i].completions,
			(unsigned)job->ring[i].submits, 0, AIOTK_REQ_POLL, at[2] - at[1] };
		res[i].ns_converge = at[1] - at[0], res[i].ns_replay = at[2] - at[1];
		res[i].ns_events = at[3] - at[2], res[i].ns_remap = at[4] - at[3];
	}
	*ok = job->done;
	if (job->done < n && job->ring[job->done].ctx)
		aiotk_io_destroy(t, job->ring[job->done].ctx, NULL);
	/* A set-up that failed in the process fails for every run there. */
	return job->setup_status ? AIOTK_EUNSUPPORTED : 0;
}

/* Rings b->saved[from..from+n) by the restorer, with the claims not yet
 * held; *ok of the rings finished. Nonzero: the restorer cannot run here
 * (the rings are left to the other path), or *claim_rc says a claim
 * failed. */
static int run_restorer(aiotk_target *t, aiotk_rebuild *b, size_t from, size_t n,
			size_t *ok, int *claim_rc, aiotk_err *err)
{
	size_t nclaims = b->nclaims - b->claimed;
	size_t len = job_len(b->saved + from, n, nclaims);
	unsigned batch = batch_for(b->saved + from, n);
	/* In this process the iocbs go right after the job. */
	struct aiotk_rjob *job = calloc(1, len + cbs_len(batch));
	*ok = 0;
	if (!job)
		return aiotk_fail(err, AIOTK_ENOMEM, ENOMEM, "out of memory for the restorer's job");
	job->batch = batch;
	for (size_t i = b->claimed; i < b->nclaims; i++) /* aiotk's own memory moves aside */
		aiotk_ws_vacate(t, b->claim[i].addr, b->claim[i].len);
	int rc = 0;
	if (aiotk_target_is_self(t)) { /* in this process: called directly */
		fill_job(job, (uint64_t)(uintptr_t)job, b->saved + from, b->o + from, n,
			 b->claim + b->claimed, nclaims, 1);
		job->pinned = (uint32_t)aiotk_target_pinned(t);
		aiotk_restorer_main(job);
	} else {
		rc = run_there(t, b, job, from, n, claim_rc, err);
		/* 1: it ran and failed (a fault): what it finished stands. */
		rc = rc == 1 ? 0 : rc;
	}
	if (!rc)
		rc = take_answer(t, b, job, from, n, ok, claim_rc, err);
	free(job);
	return rc;
}

int aiotk_restore_rings(aiotk_target *t, aiotk_rebuild *b, aiotk_err *err)
{
	int usable = 1;
	b->done = b->claimed = 0;
	/* In this process a claim costs no injection, and the claims go first:
	 * the job's buffer, allocated next, could land on a free destination
	 * (seen: a 4 MiB job in the hole a destroyed 4 MiB ring left). */
	int rc = aiotk_target_is_self(t) ? claim_each(t, b, err) : 0;
	if (rc)
		return rc;
	for (;;) {
		size_t i = b->done, run = 0, ok = 0;
		while (usable && i + run < b->n && eligible(b->saved[i + run], &b->o[i + run]))
			run++;
		/* A restorer that cannot run here (no quiet signal, no
		 * executable memory) leaves every ring to the other path. */
		int claim_rc = 0;
		rc = run ? run_restorer(t, b, i, run, &ok, &claim_rc, err) : 0;
		if (claim_rc)
			return claim_rc;
		usable &= !rc;
		if ((rc = claim_each(t, b, err)))
			return rc;
		b->done += ok;
		if (b->done == b->n)
			return 0;
		if (ok == run && run)
			continue;
		if ((rc = aiotk_restore_ring(t, b->saved[b->done], &b->o[b->done], &b->res[b->done], err)))
			return rc;
		b->done++;
	}
}
