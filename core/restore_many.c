/* Many saved rings rebuilt in a target: runs of rings the restorer can
 * rebuild by itself (restorer.c) go to it in one job; any other ring, and
 * one the restorer stops at, goes through aiotk_restore_ring, which knows
 * every case (another n, a nudge, a step aside, PWRITE) and says exactly
 * what went wrong. Either way each ring is all or nothing. */
#define _GNU_SOURCE
#include "internal.h"
#include "restorer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#define PAGE 4096u
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

/* The job's bytes: header, rings, their events; then room for the iocbs
 * the routine writes (not copied in or out). */
static size_t job_len(aiotk_ring *const *saved, size_t n)
{
	size_t len = sizeof(struct aiotk_rjob) + n * sizeof(struct aiotk_rjob_ring);
	for (size_t i = 0; i < n; i++)
		len += (size_t)(saved[i]->area ? saved[i]->nr : saved[i]->nevents) * AIOTK_EVENT_LEN;
	return (len + 63) / 64 * 64;
}

static size_t cbs_len(unsigned batch) { return (size_t)batch * (64 + 8); }

/* The job for rings saved[0..n), laid out for address `at` in the target. */
static void fill_job(struct aiotk_rjob *job, uint64_t at, aiotk_ring *const *saved,
		     const aiotk_restore_opts *o, size_t n)
{
	static const char devnull[16] = "/dev/null";
	size_t off = sizeof(*job) + n * sizeof(job->ring[0]);
	job->nrings = (uint32_t)n;
	job->building = AIOTK_RING_BUILDING;
	job->journal_magic = AIOTK_JOURNAL_MAGIC;
	memcpy(job->path, devnull, sizeof(devnull));
	job->cbs = at + job_len(saved, n);
	for (size_t i = 0; i < n; i++) {
		const aiotk_ring *s = saved[i];
		struct aiotk_rjob_ring *r = &job->ring[i];
		r->dest = s->addr, r->len = s->ring_len;
		r->n = o[i].n ? o[i].n : s->n, r->nr = s->nr, r->head = s->head, r->tail = s->tail;
		r->compat = s->compat_features;
		r->first = s->area ? 0 : s->head;
		r->count = s->area ? s->nr : s->nevents;
		r->events = at + off;
		memcpy((uint8_t *)job + off, s->area ? s->area : s->events,
		       (size_t)r->count * AIOTK_EVENT_LEN);
		off += (size_t)r->count * AIOTK_EVENT_LEN;
	}
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

/* In a process target: code, stack and job in one fresh mapping (code
 * made executable once written), run, answer read back, mapping gone. */
static int run_there(aiotk_target *t, struct aiotk_rjob *job, size_t len,
		     aiotk_ring *const *saved, const aiotk_restore_opts *o, size_t n,
		     aiotk_err *err)
{
	const uint8_t *code;
	size_t code_len, entry;
	uint64_t exit_sp;
	int sig, rc = aiotk_restorer_code(&code, &code_len, &entry);
	if (!rc)
		rc = aiotk_target_restorer_exit(t, &exit_sp, &sig, err);
	if (rc)
		return rc;
	size_t code_pages = (code_len + PAGE - 1) / PAGE * PAGE;
	size_t total = code_pages + STACK_LEN + (len + cbs_len(job->batch) + PAGE - 1) / PAGE * PAGE;
	/* Writable and executable at once where the process's policy allows
 * (one system call fewer), else made executable once written. */
	uint64_t base;
	int rwx = !aiotk_scratch_map_exec(t, total, &base);
	if (!rwx && (rc = aiotk_scratch_map(t, total, &base, err)))
		return rc;
	uint64_t at = base + code_pages + STACK_LEN;
	fill_job(job, at, saved, o, n);
	job->exit_sp = exit_sp, job->pid = t->pid, job->sig = sig;
	rc = aiotk_poke(t, base, code, code_len, err);
	if (!rc)
		rc = aiotk_poke(t, at, job, len, err);
	long p = rc || rwx ? 0 : aiotk_sys(t, SYS_mprotect, (long)base, (long)code_pages,
					   PROT_READ | PROT_EXEC, 0, 0, 0);
	if (!rc && p < 0)
		rc = aiotk_fail(err, AIOTK_EUNSUPPORTED, (int)-p,
				"process %d refuses executable memory (%s)", t->pid, strerror((int)-p));
	/* The stack as a call leaves it: 8 bytes off 16-byte alignment. */
	int ran = rc ? rc : aiotk_target_run_restorer(t, base + entry, at, at - 72, sig, err);
	/* The answer even after a failed run: which rings exist, and where. */
	if (!rc && (rc = aiotk_peek(t, at, job, len, err)))
		return rc; /* nothing more to be done in that process */
	aiotk_scratch_unmap(t, base, total);
	return rc ? rc : ran ? 1 : 0;
}

/* Rings saved[0..n) by the restorer; *done of them finished. A ring it
 * stopped at is destroyed (its context is marked, and it gets rebuilt
 * ring by ring by the caller). Nonzero only when the restorer could not
 * run at all. */
static int run_restorer(aiotk_target *t, aiotk_ring *const *saved,
			const aiotk_restore_opts *o, size_t n,
			aiotk_restore_result *res, size_t *done, aiotk_err *err)
{
	size_t len = job_len(saved, n);
	unsigned batch = batch_for(saved, n);
	/* In this process the iocbs go right after the job. */
	struct aiotk_rjob *job = calloc(1, len + cbs_len(batch));
	*done = 0;
	if (!job)
		return aiotk_fail(err, AIOTK_ENOMEM, ENOMEM, "out of memory for the restorer's job");
	job->batch = batch;
	int rc = 0;
	if (aiotk_target_is_self(t)) { /* in this process: called directly */
		fill_job(job, (uint64_t)(uintptr_t)job, saved, o, n);
		aiotk_restorer_main(job);
	} else {
		rc = run_there(t, job, len, saved, o, n, err);
		/* 1: it ran and failed (a fault): the rings it finished stand. */
		rc = rc == 1 ? 0 : rc;
	}
	for (size_t i = 0; !rc && i < job->done; i++) {
		memset(&res[i], 0, sizeof(res[i]));
		res[i].ctx = job->ring[i].ctx;
		res[i].conv = (aiotk_converge_result){ job->ring[i].ctx, job->ring[i].n, job->ring[i].nr, 1 };
		res[i].replay = (aiotk_replay_stats){ job->ring[i].completions,
			(unsigned)job->ring[i].submits, 0, AIOTK_REQ_POLL, 0 };
	}
	*done = rc ? 0 : job->done;
	/* A set-up that failed in the process fails for every run there. */
	if (!rc && job->setup_status)
		rc = AIOTK_EUNSUPPORTED;
	/* The ring it stopped at is left to the ring-by-ring path. */
	if (!rc && job->done < n && job->ring[job->done].ctx)
		aiotk_io_destroy(t, job->ring[job->done].ctx, NULL);
	free(job);
	return rc;
}

int aiotk_restore_rings(aiotk_target *t, aiotk_ring *const *saved,
			const aiotk_restore_opts *o, size_t n,
			aiotk_restore_result *res, size_t *done, aiotk_err *err)
{
	int usable = 1;
	*done = 0;
	while (*done < n) {
		size_t i = *done, run = 0;
		while (usable && i + run < n && eligible(saved[i + run], &o[i + run]))
			run++;
		size_t ok = 0;
		/* A restorer that cannot run here (no quiet signal, no
		 * executable memory) leaves every ring to the other path. */
		if (run && run_restorer(t, saved + i, o + i, run, res + i, &ok, NULL))
			usable = 0;
		*done += ok;
		if (ok == run && run)
			continue;
		int rc = aiotk_restore_ring(t, saved[*done], &o[*done], &res[*done], err);
		if (rc)
			return rc;
		(*done)++;
	}
	return 0;
}
