/* Contexts handed to a thread of the target that destroys them after the
 * process runs again (destroyer.c says why), and the threads and
 * mappings of that kind a killed aiotk may have left. */
#define _GNU_SOURCE
#include "aio/rebuild/destroyer.h"
#include "aio/rebuild/rebuild.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* The routine's calls are shallow: two pages are plenty. */
#define STACK_LEN 8192u

/* Job, code, stack: the job first, so the mapping's first bytes are the
 * magic a later aiotk looks for. */
static int load(aiotk_target *t, const struct aiotk_djob *job, size_t job_len,
		const uint8_t *code, size_t code_len, uint64_t base, aiotk_err *err)
{
	int rc = aiotk_poke(t, base, job, job_len, err);
	if (!rc)
		rc = aiotk_poke(t, base + aiotk_page_round(job_len), code, code_len, err);
	/* A fork of the program while the thread runs must not copy it. */
	long m = rc ? 0 : aiotk_sys(t, SYS_madvise, (long)base, (long)job->self_len,
				    MADV_DONTFORK, 0, 0, 0);
	if (!rc && m < 0)
		rc = aiotk_fail(err, AIOTK_ESYS, (int)-m, "madvise(MADV_DONTFORK): %s",
				strerror((int)-m));
	return rc;
}

int aiotk_destroy_later(aiotk_target *t, const uint64_t *ctx, size_t n, int *tid,
			aiotk_err *err)
{
	const uint8_t *code;
	size_t code_len, entry;
	uint64_t exit_code, base;
	int rc = aiotk_destroyer_code(&code, &code_len, &entry);
	if (rc)
		return aiotk_fail(err, rc, 0, "no destroyer on this architecture");
	if ((rc = aiotk_target_thread_exit(t, &exit_code, err)))
		return rc;
	size_t job_len = sizeof(struct aiotk_djob) + n * sizeof(uint64_t);
	size_t code_at = aiotk_page_round(job_len);
	size_t total = code_at + aiotk_page_round(code_len) + STACK_LEN;
	struct aiotk_djob *job = calloc(1, job_len);
	if (!job)
		return aiotk_fail(err, AIOTK_ENOMEM, ENOMEM, "out of memory for the destroyer's job");
	if (aiotk_scratch_map_shared_exec(t, total, &base)) {
		free(job);
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, 0,
				  "process %d refuses writable executable memory", t->pid);
	}
	*job = (struct aiotk_djob){ .magic = AIOTK_DESTROYER_MAGIC, .self_base = base,
				    .self_len = total, .exit_code = exit_code, .pid = t->pid,
				    .n = (uint32_t)n };
	snprintf(job->name, sizeof(job->name), "%s", AIOTK_DESTROYER_NAME);
	memcpy(job->ctx, ctx, n * sizeof(uint64_t));
	rc = load(t, job, job_len, code, code_len, base, err);
	if (!rc)
		rc = aiotk_target_spawn(t, base + code_at + entry, base + total, base,
					base + offsetof(struct aiotk_djob, tid), tid, err);
	if (rc)
		aiotk_scratch_unmap(t, base, total);
	free(job);
	return rc;
}

int aiotk_vma_is_destroyer(const aiotk_vma *v)
{
	return !strcmp(v->perms, "rwxs") && !strcmp(v->path, AIOTK_SHARED_ANON_PATH);
}

static int thread_alive(int pid, int tid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task/%d", pid, tid);
	return tid > 0 && access(path, F_OK) == 0;
}

/* A destroyer's mapping at v in pid: its job's head in *head. */
static int read_head(int pid, const aiotk_vma *v, struct aiotk_djob *head)
{
	return aiotk_vma_is_destroyer(v) && !aiotk_vm_rw(pid, v->start, head, sizeof(*head), 0) &&
	       head->magic == AIOTK_DESTROYER_MAGIC;
}

struct found { int pid; int *tids; size_t max, n; };

static int collect(const aiotk_vma *v, void *ctx)
{
	struct found *f = ctx;
	struct aiotk_djob head;
	if (read_head(f->pid, v, &head) && thread_alive(f->pid, head.tid) && f->n < f->max)
		f->tids[f->n++] = head.tid;
	return 0;
}

int aiotk_destroyers(int pid, int *tids, size_t max, size_t *n)
{
	struct found f = { pid, tids, max, 0 };
	int rc = aiotk_maps_each(pid, collect, &f, NULL);
	*n = f.n;
	return rc < 0 ? rc : 0;
}

/* A destroyer's mapping whose thread never ran or is gone (it unmaps
 * itself at its end, so only a killed aiotk leaves one: before the clone,
 * or with a clone that failed): removed. Its contexts are still marked,
 * and go with the other marked ones. One whose thread lives (a thread
 * this stop holds) stays. 1 if removed. */
int aiotk_remove_destroyer(aiotk_target *t, const aiotk_vma *v)
{
	struct aiotk_djob head;
	if (!read_head(t->pid, v, &head) || thread_alive(t->pid, head.tid))
		return 0;
	aiotk_scratch_unmap(t, v->start, v->end - v->start);
	return 1;
}
