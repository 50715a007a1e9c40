/* liburing's copies of the sq counters, moved with a rebase.
 *
 * liburing keeps two counters of its own in struct io_uring_sq:
 * sqe_head and sqe_tail (SQEs handed out and not yet flushed to the
 * kernel), eight pointers after khead and ktail, which point into the SQ
 * ring (same layout in liburing 2.3 and upstream). A rebase moves the
 * ring's counters, so these move by the same offset. They are found by
 * that pair of pointers, 8-byte aligned, with the SQE pointer six slots
 * on matching too, in the process's own private memory.
 * docs/KERNEL-FACTS.md, "io_uring: counters". */
#define _GNU_SOURCE
#include "uring/rebuild/rebuild.h"
#include "target/target.h"

#include <stdlib.h>
#include <string.h>

/* struct io_uring_sq from khead: khead, ktail, kring_mask, kring_entries,
 * kflags, kdropped, array, sqes (8 bytes each), then sqe_head, sqe_tail. */
#define SQ_SQES 7

typedef struct want {
	uint64_t khead, ktail, sqes;
	aiotk_target *t;
	aiotk_uring_rebuilt *out;
} want;

static int is_copy(const uint64_t *w, const want *x)
{
	return w[0] == x->khead && w[1] == x->ktail && w[SQ_SQES] == x->sqes;
}

/* Each struct in a run of the process's words listed; one that runs past
 * the run's end is read whole where it starts (a page boundary). */
static int scan(const aiotk_vma *v, uint64_t at, const uint64_t *w, size_t n, void *ctx)
{
	want *x = ctx;
	aiotk_uring_rebuilt *out = x->out;
	(void)v;
	for (size_t i = 0; i < n && out->ncopies < AIOTK_URING_MAX_COPIES; i++) {
		if (w[i] != x->khead)
			continue;
		uint64_t whole[SQ_SQES + 1];
		const uint64_t *s = w + i;
		if (i + SQ_SQES >= n) {
			if (aiotk_vm_rw(x->t->pid, at + i * 8, whole, sizeof(whole), 0))
				continue;
			s = whole;
		}
		if (is_copy(s, x))
			out->copies[out->ncopies++] = at + i * 8;
	}
	return 0;
}

/* The process's own words (own_words.c: private memory it wrote; a
 * struct in a shared mapping is another process's too, and left alone). */
static int find(aiotk_target *t, want *w, aiotk_uring_rebuilt *out, aiotk_err *err)
{
	aiotk_words_seen seen = { 0 };
	w->t = t, w->out = out;
	return aiotk_own_words(t, scan, w, &seen, err);
}

/* Each copy's values once moved, journalled, then written: a killed
 * aiotk's copies are put back by the next one, a failed rebuild's by its
 * rollback (journal.c). */
int uring_move_copies(uring_new *n, uint32_t by, aiotk_uring_rebuilt *out, aiotk_err *err)
{
	want w = { .khead = n->sq_ring + n->p.sq_off.head, .ktail = n->sq_ring + n->p.sq_off.tail,
		   .sqes = n->sqes };
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
				"instance was found in the process's private memory");
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
