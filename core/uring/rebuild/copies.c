/* liburing's copies of the sq counters, moved with a rebase.
 *
 * liburing keeps two counters of its own in struct io_uring_sq:
 * sqe_head and sqe_tail (SQEs handed out and not yet flushed to the
 * kernel), eight pointers after khead and ktail, which point into the SQ
 * ring (same layout in liburing 2.3 and upstream). A rebase moves the
 * ring's counters, so these move by the same offset. They are found by
 * that pair of pointers, 8-byte aligned, with the SQE pointer six slots
 * on matching too, in the process's writable memory.
 * docs/KERNEL-FACTS.md, "io_uring: counters". */
#define _GNU_SOURCE
#include "uring/rebuild/rebuild.h"
#include "target/target.h"

#include <stdlib.h>
#include <string.h>

/* struct io_uring_sq from khead: khead, ktail, kring_mask, kring_entries,
 * kflags, kdropped, array, sqes (8 bytes each), then sqe_head, sqe_tail. */
#define SQ_SQES 7
#define CHUNK (1u << 20)

typedef struct want {
	uint64_t khead, ktail, sqes;
} want;

static int writable(const aiotk_vma *v)
{
	return v->perms[0] == 'r' && v->perms[1] == 'w' && strncmp(v->path, "anon_inode:", 11);
}

/* Each match in buf (read from addr) listed in out. */
static void scan(const uint64_t *buf, size_t words, uint64_t addr, const want *w,
		 aiotk_uring_rebuilt *out)
{
	for (size_t i = 0; i + SQ_SQES < words && out->ncopies < AIOTK_URING_MAX_COPIES; i++)
		if (buf[i] == w->khead && buf[i + 1] == w->ktail && buf[i + SQ_SQES] == w->sqes)
			out->copies[out->ncopies++] = addr + i * 8;
}

/* Every mapping of t's writable memory read in chunks (overlapping by a
 * struct's length, so one across a boundary is seen). */
static int find(aiotk_target *t, const want *w, aiotk_uring_rebuilt *out, aiotk_err *err)
{
	aiotk_vma *v;
	size_t n;
	int rc = aiotk_maps_list(t->pid, &v, &n, err);
	if (rc)
		return rc;
	uint64_t *buf = malloc(CHUNK);
	if (!buf)
		rc = aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory scanning for liburing's rings");
	for (size_t i = 0; !rc && i < n; i++) {
		if (!writable(&v[i]))
			continue;
		for (uint64_t a = v[i].start; a < v[i].end; a += CHUNK - 128) {
			size_t len = v[i].end - a < CHUNK ? (size_t)(v[i].end - a) : CHUNK;
			/* A mapping that cannot be read holds no ring of the program's. */
			if (aiotk_vm_rw(t->pid, a, buf, len, 0))
				break;
			scan(buf, len / 8, a, w, out);
			if (len < CHUNK)
				break;
		}
	}
	/* A struct seen twice (in two overlapping chunks) counts once. */
	unsigned k = 0;
	for (unsigned i = 0; i < out->ncopies; i++)
		if (!k || out->copies[i] != out->copies[k - 1])
			out->copies[k++] = out->copies[i];
	out->ncopies = k;
	free(buf);
	free(v);
	return rc;
}

/* Each copy's values once moved, journalled, then written: a killed
 * aiotk's copies are put back by the next one, a failed rebuild's by its
 * rollback (journal.c). */
int uring_move_copies(uring_new *n, uint32_t by, aiotk_uring_rebuilt *out, aiotk_err *err)
{
	want w = { n->sq_ring + n->p.sq_off.head, n->sq_ring + n->p.sq_off.tail, n->sqes };
	uint32_t moved[AIOTK_URING_MAX_COPIES][2];
	out->ncopies = 0;
	int rc = find(n->t, &w, out, err);
	/* A program that keeps the sq counters where no liburing struct is
	 * seen would go on from its old tail against a moved kernel head and
	 * submit stale SQEs again; more copies than counted may hide one. */
	if (!rc && (out->ncopies == 0 || out->ncopies == AIOTK_URING_MAX_COPIES))
		rc = aiotk_fail(err, AIOTK_EUNSUPPORTED, 0, "a rebase moves the program's copies of the sq "
				"counters, and %s; nothing was changed (a policy answering uring_counters 'exact' "
				"replays the counters instead)", out->ncopies ? "at least 16 liburing structs point at "
				"the instance, more than aiotk tracks" : "no liburing struct io_uring pointing at the "
				"instance was found in the process's writable memory");
	for (unsigned i = 0; !rc && i < out->ncopies; i++) {
		rc = aiotk_peek(n->t, out->copies[i] + URING_SQE_HEAD_OFF, moved[i], sizeof(moved[i]), err);
		moved[i][0] -= by, moved[i][1] -= by;
	}
	if (!rc)
		rc = uring_journal_copies(n, out->copies, (const uint32_t (*)[2])moved, out->ncopies, by, err);
	for (unsigned i = 0; !rc && i < out->ncopies; i++)
		rc = aiotk_poke(n->t, out->copies[i] + URING_SQE_HEAD_OFF, moved[i], sizeof(moved[i]), err);
	return rc;
}
