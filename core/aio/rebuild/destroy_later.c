/* Contexts handed to a thread of the target that destroys them after the
 * process runs again (destroyer.c says why), and the threads and
 * mappings of that kind a killed aiotk may have left.
 *
 * One mapping at AIOTK_UNDO_AT holds the thread's job, code and stack,
 * then one parking slot per context: a failed restore moves each ring it
 * made into its slot (aiotk_park_at), so that parking makes no mapping
 * of its own (a spot the kernel picked was the destination the previous
 * ring had just left: a ring parked where the program looks for one, an
 * occupant unable to go home, and a reservation a killed aiotk left on a
 * destination). It is made first, while every destination is still held,
 * and at a fixed address, so whatever step aiotk dies at, what it leaves
 * is recognisable: this mapping's pieces (aiotk_remove_destroyer), rings
 * marked as aiotk's, placeholders. */
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

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

static size_t job_len_for(size_t n) { return sizeof(struct aiotk_djob) + n * sizeof(uint64_t); }

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

/* The mapping at AIOTK_UNDO_AT, or AIOTK_EUNSUPPORTED: taken, refused
 * (no writable code), or a kernel that takes the flag as a hint. */
static int map_area(aiotk_target *t, uint64_t total, aiotk_err *err)
{
	long r = aiotk_sys(t, SYS_mmap, (long)AIOTK_UNDO_AT, (long)total,
			   PROT_READ | PROT_WRITE | PROT_EXEC,
			   MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (!aiotk_sys_failed(r) && (uint64_t)r == AIOTK_UNDO_AT)
		return 0;
	if (!aiotk_sys_failed(r))
		aiotk_scratch_unmap(t, (uint64_t)r, total);
	return aiotk_fail(err, AIOTK_EUNSUPPORTED, aiotk_sys_failed(r) ? (int)-r : EEXIST,
			  "process %d: no room for aiotk's thread at 0x%llx: %s", t->pid,
			  (unsigned long long)AIOTK_UNDO_AT,
			  strerror(aiotk_sys_failed(r) ? (int)-r : EEXIST));
}

int aiotk_undo_area(aiotk_target *t, const uint64_t *len, size_t n, uint64_t *slots,
		    uint64_t *head_len, aiotk_err *err)
{
	const uint8_t *code;
	size_t code_len, entry;
	uint64_t exit_code, slots_len = 0;
	int rc = aiotk_destroyer_code(&code, &code_len, &entry);
	if (rc)
		return aiotk_fail(err, rc, 0, "no destroyer on this architecture");
	if ((rc = aiotk_target_thread_exit(t, &exit_code, err)))
		return rc;
	size_t job_len = job_len_for(n);
	uint64_t self_len = aiotk_page_round(job_len) + aiotk_page_round(code_len) + STACK_LEN;
	for (size_t i = 0; i < n; i++)
		slots_len += len[i];
	struct aiotk_djob *job = calloc(1, job_len);
	if (!job)
		return aiotk_fail(err, AIOTK_ENOMEM, ENOMEM, "out of memory for the destroyer's job");
	if ((rc = map_area(t, self_len + slots_len, err))) {
		free(job);
		return rc;
	}
	*job = (struct aiotk_djob){ .magic = AIOTK_DESTROYER_MAGIC, .self_base = AIOTK_UNDO_AT,
				    .self_len = self_len, .slots_len = slots_len,
				    .exit_code = exit_code, .pid = t->pid, .n = (uint32_t)n };
	snprintf(job->name, sizeof(job->name), "%s", AIOTK_DESTROYER_NAME);
	for (size_t i = 0, at = AIOTK_UNDO_AT + self_len; i < n; at += len[i++])
		slots[i] = job->ctx[i] = at;
	rc = load(t, job, job_len, code, code_len, AIOTK_UNDO_AT, err);
	if (rc)
		aiotk_scratch_unmap(t, AIOTK_UNDO_AT, self_len + slots_len);
	free(job);
	*head_len = self_len;
	return rc;
}

int aiotk_destroy_later(aiotk_target *t, int *tid, aiotk_err *err)
{
	const uint8_t *code;
	size_t code_len, entry;
	struct aiotk_djob job;
	int rc = aiotk_destroyer_code(&code, &code_len, &entry);
	if (!rc)
		rc = aiotk_peek(t, AIOTK_UNDO_AT, &job, sizeof(job), err);
	if (rc || job.magic != AIOTK_DESTROYER_MAGIC)
		return rc ? rc : aiotk_fail(err, AIOTK_EINVAL, 0, "process %d: no undo area at 0x%llx",
					    t->pid, (unsigned long long)AIOTK_UNDO_AT);
	uint64_t code_at = aiotk_page_round(job_len_for(job.n));
	return aiotk_target_spawn(t, AIOTK_UNDO_AT + code_at + entry, AIOTK_UNDO_AT + job.self_len,
				  AIOTK_UNDO_AT, AIOTK_UNDO_AT + offsetof(struct aiotk_djob, tid), tid,
				  err);
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

/* What a killed aiotk left of an undo area (v[0..n), the process's
 * mappings): its pieces still shaped as made (job, code, stack, slots no
 * ring was moved onto), unmapped, unless its thread lives (a thread this
 * stop holds: it ends by itself). Rings parked in its slots are still
 * marked and go with the other marked ones. Its job not yet written (aiotk
 * died just after making it), the mapping is whole and nothing is in it.
 * How many pieces were removed. */
unsigned aiotk_remove_destroyer(aiotk_target *t, const aiotk_vma *v, size_t n)
{
	struct aiotk_djob head;
	size_t i = 0;
	while (i < n && !(v[i].start == AIOTK_UNDO_AT && aiotk_vma_is_destroyer(&v[i])))
		i++;
	if (i == n)
		return 0;
	int job = read_head(t->pid, &v[i], &head);
	if (job && thread_alive(t->pid, head.tid))
		return 0;
	uint64_t end = job ? AIOTK_UNDO_AT + head.self_len + head.slots_len : v[i].end;
	unsigned removed = 0;
	for (; i < n && v[i].end <= end; i++) {
		if (!aiotk_vma_is_destroyer(&v[i]))
			continue;
		aiotk_scratch_unmap(t, v[i].start, v[i].end - v[i].start);
		removed++;
	}
	return removed;
}
