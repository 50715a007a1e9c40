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
#define SQ_SQE_HEAD 64
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

static int shift(aiotk_target *t, uint64_t at, uint32_t by, aiotk_err *err)
{
	uint32_t c[2];
	int rc = aiotk_peek(t, at + SQ_SQE_HEAD, c, sizeof(c), err);
	c[0] -= by, c[1] -= by;
	return rc ? rc : aiotk_poke(t, at + SQ_SQE_HEAD, c, sizeof(c), err);
}

int uring_move_copies(aiotk_target *t, const uring_new *n, uint32_t by,
		      aiotk_uring_rebuilt *out, aiotk_err *err)
{
	want w = { n->sq_ring + n->p.sq_off.head, n->sq_ring + n->p.sq_off.tail, n->sqes };
	out->ncopies = 0;
	int rc = find(t, &w, out, err);
	unsigned moved = 0;
	while (!rc && moved < out->ncopies && !(rc = shift(t, out->copies[moved], by, err)))
		moved++;
	if (rc) {
		while (moved--)
			shift(t, out->copies[moved], -by, err);
		out->ncopies = 0;
	}
	return rc;
}

void uring_unmove_copies(aiotk_target *t, const aiotk_uring_rebuilt *r)
{
	aiotk_err ignored;
	for (unsigned i = 0; i < r->ncopies; i++)
		shift(t, r->copies[i], -r->sq_shift, &ignored);
}
