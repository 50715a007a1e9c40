/* Where a stopped process keeps a value: the words it stored itself
 * (own_words.c: its writable private memory, its own pages only) and the
 * general registers of its threads. A ring rebuilt at another address
 * has another id (the id is the ring's address), and works only once
 * every copy of the old id is rewritten (relocation, issue 23). */
#define _GNU_SOURCE
#include "target/target.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct scan {
	const aiotk_move *m;
	size_t n;
	uint64_t lo, hi;            /* every move's old range lies inside */
	uint64_t frame_lo, frame_hi; /* aiotk's return frame goes there */
	aiotk_refs *out;
	aiotk_err *err;
};

static int add(aiotk_refs *out, const aiotk_ref *r, aiotk_err *err)
{
	if (out->n == out->cap) {
		size_t cap = out->cap ? 2 * out->cap : 16;
		aiotk_ref *n = realloc(out->ref, cap * sizeof(*n));
		if (!n)
			return aiotk_fail(err, AIOTK_ENOMEM, ENOMEM, "out of memory for %zu references", cap);
		out->ref = n;
		out->cap = cap;
	}
	out->ref[out->n++] = *r;
	return 0;
}

/* Which move w refers to, filling kind and the value it becomes; -1: none. */
static long match(const struct scan *s, uint64_t w, aiotk_ref *r)
{
	if (w < s->lo || w >= s->hi)
		return -1;
	for (size_t i = 0; i < s->n; i++) {
		const aiotk_move *m = &s->m[i];
		if (w < m->from || w >= m->from + m->len)
			continue;
		r->kind = w == m->from ? AIOTK_REF_ID : AIOTK_REF_POINTER;
		r->move = i;
		r->old = w;
		r->value = m->to + (w - m->from);
		return (long)i;
	}
	return -1;
}

/* A mapping's name for the report: a path's last bytes say most. */
static void name_map(char *buf, size_t len, const char *path)
{
	size_t l = strlen(path);
	const char *from = l < len ? path : path + l - (len - 1);
	memcpy(buf, from, strlen(from) + 1);
}

static int scan_words(const aiotk_vma *v, uint64_t at, const uint64_t *w, size_t words, void *ctx)
{
	struct scan *s = ctx;
	for (size_t k = 0; k < words; k++) {
		aiotk_ref r = { .addr = at + 8 * k };
		if (r.addr >= s->frame_lo && r.addr < s->frame_hi)
			continue;
		if (match(s, w[k], &r) < 0)
			continue;
		r.map_start = v->start;
		name_map(r.map, sizeof(r.map), v->path);
		int rc = add(s->out, &r, s->err);
		if (rc)
			return rc;
	}
	return 0;
}

static int scan_regs(int tid, aiotk_regs *r, void *ctx)
{
	struct scan *s = ctx;
	for (unsigned i = 0; i < aiotk_arch_ngpr; i++) {
		aiotk_ref ref = { .tid = tid, .reg = i };
		if (match(s, *aiotk_arch_gpr(r, i), &ref) < 0)
			continue;
		int rc = add(s->out, &ref, s->err);
		if (rc)
			return rc;
	}
	return 0;
}

int aiotk_moves_check(const aiotk_move *m, size_t n, aiotk_err *err)
{
	for (size_t i = 0; i < n; i++) {
		if (!m[i].from || !m[i].len || !m[i].to)
			return aiotk_fail(err, AIOTK_EINVAL, EINVAL,
					  "move %zu: from, len and to must be nonzero (a ring's id, length, new id)", i + 1);
		if (m[i].len > UINT64_MAX - m[i].from || m[i].len > UINT64_MAX - m[i].to)
			return aiotk_fail(err, AIOTK_EINVAL, EINVAL,
					  "move %zu: 0x%llx or 0x%llx plus %llu bytes is past the end of the address space",
					  i + 1, (unsigned long long)m[i].from, (unsigned long long)m[i].to,
					  (unsigned long long)m[i].len);
		for (size_t j = 0; j < i; j++)
			if (m[i].from < m[j].from + m[j].len && m[j].from < m[i].from + m[i].len)
				return aiotk_fail(err, AIOTK_EINVAL, EINVAL,
						  "moves %zu and %zu: their old rings 0x%llx and 0x%llx overlap", j + 1,
						  i + 1, (unsigned long long)m[j].from, (unsigned long long)m[i].from);
	}
	return 0;
}

static int check_moves(const aiotk_move *m, size_t n, uint64_t *lo, uint64_t *hi, aiotk_err *err)
{
	*lo = UINT64_MAX, *hi = 0;
	int rc = aiotk_moves_check(m, n, err);
	for (size_t i = 0; !rc && i < n; i++) {
		*lo = m[i].from < *lo ? m[i].from : *lo;
		*hi = m[i].from + m[i].len > *hi ? m[i].from + m[i].len : *hi;
	}
	return rc;
}

int aiotk_refs_find(aiotk_target *t, const aiotk_move *m, size_t n, aiotk_refs *out,
		    aiotk_err *err)
{
	return aiotk_refs_find_within(t, m, n, 0, out, err);
}

int aiotk_refs_find_within(aiotk_target *t, const aiotk_move *m, size_t n, uint64_t limit,
			   aiotk_refs *out, aiotk_err *err)
{
	memset(out, 0, sizeof(*out));
	struct scan s = { .m = m, .n = n, .out = out, .err = err };
	int rc = check_moves(m, n, &s.lo, &s.hi, err);
	if (!rc) {
		aiotk_words_seen seen = { .limit = limit };
		aiotk_target_frame_area(t, &s.frame_lo, &s.frame_hi);
		rc = aiotk_own_words(t, scan_words, &s, &seen, err);
		out->scanned = seen.scanned, out->unread = seen.unread, out->skipped = seen.skipped;
	}
	if (!rc)
		rc = aiotk_target_each_regs(t, scan_regs, &s, err);
	if (rc)
		aiotk_refs_free(out);
	return rc;
}

void aiotk_refs_free(aiotk_refs *r)
{
	free(r->ref);
	memset(r, 0, sizeof(*r));
}

const char *aiotk_reg_name(unsigned reg) { return aiotk_arch_gpr_name(reg); }

/* ---- rewriting ---------------------------------------------------------- */

struct reg_read { int tid; unsigned reg; uint64_t v; int found; };

static int read_reg(int tid, aiotk_regs *r, void *ctx)
{
	struct reg_read *q = ctx;
	if (tid != q->tid)
		return 0;
	q->v = *aiotk_arch_gpr(r, q->reg);
	q->found = 1;
	return 1;
}

/* What the location holds now, in *v. */
static int read_ref(aiotk_target *t, const aiotk_ref *r, uint64_t *v, aiotk_err *err)
{
	if (!r->tid)
		return aiotk_peek(t, r->addr, v, 8, err);
	struct reg_read q = { r->tid, r->reg, 0, 0 };
	int rc = aiotk_target_each_regs(t, read_reg, &q, err);
	if (rc < 0)
		return rc;
	if (!q.found)
		return aiotk_fail(err, AIOTK_EINVAL, ESRCH, "thread %d is not a stopped thread of process %d",
				  r->tid, t->pid);
	*v = q.v;
	return 0;
}

static int write_ref(aiotk_target *t, const aiotk_ref *r, uint64_t v, aiotk_err *err)
{
	if (!r->tid)
		return aiotk_poke(t, r->addr, &v, 8, err);
	return aiotk_target_set_gpr(t, r->tid, r->reg, v, err);
}

static void describe(const aiotk_ref *r, char *buf, size_t len)
{
	if (r->tid)
		snprintf(buf, len, "register %s of thread %d", aiotk_reg_name(r->reg), r->tid);
	else
		snprintf(buf, len, "word 0x%llx (%s+0x%llx)", (unsigned long long)r->addr,
			 r->map[0] ? r->map : "anonymous",
			 (unsigned long long)(r->addr - r->map_start));
}

/* Reference i from what it held when found to its new value (back: the
 * other way), refused if it holds anything else now. */
static int rewrite_one(aiotk_target *t, const aiotk_ref *r, int back, aiotk_err *err)
{
	uint64_t now, want = back ? r->value : r->old;
	char where[160];
	int rc = read_ref(t, r, &now, err);
	if (rc)
		return rc;
	if (now != want) {
		describe(r, where, sizeof(where));
		return aiotk_fail(err, AIOTK_EINVAL, ESTALE, "%s holds 0x%llx, not the 0x%llx found there",
				  where, (unsigned long long)now, (unsigned long long)want);
	}
	return write_ref(t, r, back ? r->old : r->value, err);
}

/* All or nothing: references 0..i-1, written, go back as they were. A
 * failure there turns rc (err, the first failure) into AIOTK_EROLLBACK,
 * naming the first location left rewritten and how many are. */
static int put_back(aiotk_target *t, const aiotk_ref *ref, size_t i, int back, int rc, aiotk_err *err)
{
	aiotk_err first, e;
	size_t left = 0;
	char where[160];
	while (i-- > 0) {
		if (!rewrite_one(t, &ref[i], !back, &e) || left++)
			continue;
		first = e;
		describe(&ref[i], where, sizeof(where));
	}
	if (!left)
		return rc;
	char why[sizeof(err->msg)];
	snprintf(why, sizeof(why), "%s", err ? err->msg : "");
	return aiotk_fail(err, AIOTK_EROLLBACK, first.errno_,
			  "%s; undoing it, %zu rewritten location(s) could not be put back and stay "
			  "rewritten, the first %s: %s", why, left, where, first.msg);
}

int aiotk_refs_rewrite(aiotk_target *t, const aiotk_ref *ref, size_t n, int back,
		       aiotk_err *err)
{
	for (size_t i = 0; i < n; i++) {
		int rc = rewrite_one(t, &ref[i], back, err);
		if (rc)
			return put_back(t, ref, i, back, rc, err);
	}
	return 0;
}
