/* Relocation in a CRIU dump: a moved ring's pages re-addressed in
 * pagemap-PID.img and its pages file, and the copies of its old id (and
 * pointers into it) rewritten in the dump's private pages and in each
 * thread's registers (core-TID.img). Buffers in, buffers out: the caller
 * replaces the files (scripts/aiotk/criu.lua). */
#include "formats.h"
#include "criu_core.pb-c.h"
#include "criu_pagemap.pb-c.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define PE_PARENT 1u
#define PE_PRESENT 4u

static uint32_t u32le(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int put_u32(struct fmt_buf *o, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
	return fmt_put(o, b, 4);
}

static int add_ref(aiotk_criu_refs *r, const aiotk_criu_ref *x)
{
	if (r->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 16;
		aiotk_criu_ref *n = realloc(r->ref, cap * sizeof(*n));
		if (!n)
			return -1;
		r->ref = n;
		r->cap = cap;
	}
	r->ref[r->n++] = *x;
	return 0;
}

void aiotk_criu_refs_free(aiotk_criu_refs *r)
{
	free(r->ref);
	memset(r, 0, sizeof(*r));
}

/* What word w becomes under moves m (kind and move index), or 0. */
static int rebase(uint64_t w, const aiotk_move *m, size_t n, uint64_t *to, aiotk_criu_ref *ref)
{
	for (size_t i = 0; i < n; i++) {
		if (w == m[i].from) {
			*ref = (aiotk_criu_ref){ .kind = AIOTK_REF_ID, .move = i, .old = w, .value = m[i].to };
		} else if (w > m[i].from && w < m[i].from + m[i].len) {
			*ref = (aiotk_criu_ref){ .kind = AIOTK_REF_POINTER, .move = i, .old = w,
						 .value = m[i].to + (w - m[i].from) };
		} else {
			continue;
		}
		*to = ref->value;
		return 1;
	}
	return 0;
}

/* ---- pagemap and pages -------------------------------------------------- */

/* A run of pages of one pagemap entry: where it was, where it goes, its
 * pages in the old pages file (present) and the entry it came from. */
struct piece { uint64_t old, vaddr, pages, file_off; CriuPagemapEntry *e; size_t move; };

struct pieces { struct piece *p; size_t n, cap; };

static int add_piece(struct pieces *ps, const struct piece *x)
{
	if (ps->n == ps->cap) {
		size_t cap = ps->cap ? ps->cap * 2 : 64;
		struct piece *n = realloc(ps->p, cap * sizeof(*n));
		if (!n)
			return -1;
		ps->p = n;
		ps->cap = cap;
	}
	ps->p[ps->n++] = *x;
	return 0;
}

/* Entry e split at the edges of the moved rings; each piece inside one
 * re-addressed. -1: out of memory; 1: not a sane page range. */
static int split(CriuPagemapEntry *e, uint64_t *file_off, const aiotk_move *m, size_t n,
		 unsigned page, struct pieces *ps)
{
	uint64_t pages = e->has_nr_pages ? e->nr_pages : e->compat_nr_pages;
	if (pages > (1ull << 40) / page || e->vaddr % page || e->vaddr > UINT64_MAX - pages * page)
		return 1;
	int present = e->has_flags ? (e->flags & PE_PRESENT) != 0 : !e->in_parent;
	uint64_t a = e->vaddr, end = e->vaddr + pages * page;
	while (a < end) {
		uint64_t stop = end, to = a;
		size_t mi = (size_t)-1;
		for (size_t i = 0; i < n; i++) {
			uint64_t lo = m[i].from, hi = m[i].from + m[i].len;
			if (a >= lo && a < hi) {
				mi = i;
				to = m[i].to + (a - lo);
				stop = hi < stop ? hi : stop;
			} else if (lo > a && lo < stop) {
				stop = lo;
			}
		}
		struct piece x = { a, to, (stop - a) / page, present ? *file_off : (uint64_t)-1, e, mi };
		if (add_piece(ps, &x))
			return -1;
		if (present)
			*file_off += x.pages;
		a = stop;
	}
	return 0;
}

static int by_vaddr(const void *a, const void *b)
{
	const struct piece *x = a, *y = b;
	return x->vaddr < y->vaddr ? -1 : x->vaddr > y->vaddr;
}

static const aiotk_criu_vma *scanned_vma(const aiotk_criu_vma *v, size_t nv, uint64_t a)
{
	for (size_t i = 0; i < nv; i++)
		if (a >= v[i].start && a < v[i].end)
			return v[i].writable && !v[i].ring ? &v[i] : NULL;
	return NULL;
}

/* The piece's pages appended to out: a moved header's nr set, words of
 * scanned mappings rebased (and recorded). */
static int emit_pages(const struct piece *x, const uint8_t *pages, const aiotk_criu_vma *v,
		      size_t nv, const aiotk_move *m, const uint32_t *new_nr, size_t n,
		      unsigned page, struct fmt_buf *out, aiotk_criu_refs *refs)
{
	size_t at = out->n;
	if (fmt_put(out, pages + x->file_off * page, x->pages * page))
		return -1;
	if (x->move != (size_t)-1) {
		if (x->vaddr == m[x->move].to) {
			uint32_t nr = new_nr[x->move];
			memcpy(out->b + at + offsetof(aiotk_ring_header, nr), &nr, sizeof(nr));
		}
		return 0;
	}
	for (uint64_t p = 0; p < x->pages; p++) {
		const aiotk_criu_vma *vm = scanned_vma(v, nv, x->vaddr + p * page);
		if (!vm)
			continue;
		refs->scanned += page;
		for (size_t w = 0; w < page; w += 8) {
			uint8_t *word = out->b + at + p * page + w;
			uint64_t val, to;
			aiotk_criu_ref ref;
			memcpy(&val, word, 8);
			if (!rebase(val, m, n, &to, &ref))
				continue;
			memcpy(word, &to, 8);
			ref.addr = x->vaddr + p * page + w;
			ref.map_start = vm->start;
			ref.map_end = vm->end;
			ref.file_off = at + p * page + w;
			if (add_ref(refs, &ref))
				return -1;
		}
	}
	return 0;
}

/* The new pagemap file: the head as it was, then the pieces in order. */
static int emit_entry(const struct piece *x, struct fmt_buf *pm)
{
	CriuPagemapEntry e = *x->e;
	e.vaddr = x->vaddr;
	if (e.has_nr_pages)
		e.nr_pages = x->pages;
	else
		e.compat_nr_pages = (uint32_t)x->pages;
	size_t len = criu_pagemap_entry__get_packed_size(&e);
	uint8_t *b = malloc(len ? len : 1);
	int rc = !b || put_u32(pm, (uint32_t)len);
	if (!rc) {
		criu_pagemap_entry__pack(&e, b);
		rc = fmt_put(pm, b, len);
	}
	free(b);
	return rc;
}

static void free_entries(CriuPagemapEntry **es, size_t n)
{
	for (size_t i = 0; i < n; i++)
		criu_pagemap_entry__free_unpacked(es[i], NULL);
	free(es);
}

/* A dump made with a parent (criu dump --prev-images-dir, after a
 * pre-dump) keeps the pages unchanged since then only in the parent's
 * images, which other dumps may share: copies of an old id there could
 * not be rewritten, nor moved ring pages re-addressed, so relocation
 * refuses such a dump. */
static int in_parent(CriuPagemapEntry **es, size_t nes, unsigned page, const char *name,
		     aiotk_err *err)
{
	for (size_t i = 0; i < nes; i++) {
		const CriuPagemapEntry *e = es[i];
		if (e->has_flags ? !(e->flags & PE_PARENT) : !e->in_parent)
			continue;
		uint64_t pages = e->has_nr_pages ? e->nr_pages : e->compat_nr_pages;
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, 0,
				  "%s: pages of 0x%llx-0x%llx are in the parent image", name,
				  (unsigned long long)e->vaddr,
				  (unsigned long long)(e->vaddr + pages * page));
	}
	return 0;
}

static int read_entries(const uint8_t *pm, size_t len, const char *name, size_t *head_end,
			CriuPagemapEntry ***es, size_t *nes, aiotk_err *err)
{
	*es = NULL;
	*nes = 0;
	if (len < 12 || u32le(pm + 4) != 0x56084025u)
		return aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: not a CRIU pagemap image", name);
	*head_end = 8 + 4 + (size_t)u32le(pm + 8);
	for (size_t off = *head_end; off < len;) {
		uint32_t n = len - off >= 4 ? u32le(pm + off) : UINT32_MAX;
		if (len - off < 4 || n > len - off - 4)
			return aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: entry at offset %zu is truncated", name, off);
		CriuPagemapEntry **ne = realloc(*es, (*nes + 1) * sizeof(*ne));
		if (!ne)
			return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
		*es = ne;
		struct fmt_pb pb;
		fmt_pb_init(&pb);
		CriuPagemapEntry *e = criu_pagemap_entry__unpack(&pb.a, n, pm + off + 4);
		if (!e && pb.failed)
			return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
		if (!e)
			return aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: entry at offset %zu is not valid", name, off);
		(*es)[(*nes)++] = e;
		off += 4 + n;
	}
	return *head_end <= len ? 0 : aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: truncated head", name);
}

int aiotk_criu_relocate_pages(const uint8_t *pm, size_t pm_len, const uint8_t *pages,
			      size_t pages_len, const char *name, const aiotk_criu_vma *v,
			      size_t nv, const aiotk_move *m, const uint32_t *new_nr, size_t n,
			      unsigned page, uint8_t **pm_out, size_t *pm_out_len, uint8_t **pages_out,
			      size_t *pages_out_len, aiotk_criu_refs *refs, aiotk_err *err)
{
	CriuPagemapEntry **es;
	size_t nes, head_end;
	struct pieces ps = { 0 };
	struct fmt_buf opm = { 0 }, opg = { 0 };
	if (!page || page & (page - 1))
		return aiotk_fail(err, AIOTK_EINVAL, 0, "%s: page size %u is not a power of two", name, page);
	int rc = aiotk_moves_check(m, n, err);
	if (rc)
		return rc;
	rc = read_entries(pm, pm_len, name, &head_end, &es, &nes, err);
	if (!rc)
		rc = in_parent(es, nes, page, name, err);
	uint64_t file_off = 0;
	for (size_t i = 0; !rc && i < nes; i++) {
		int s = split(es[i], &file_off, m, n, page, &ps);
		if (s)
			rc = s > 0 ? aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: entry %zu is not a sane page range", name, i)
				   : aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
	}
	if (!rc && file_off > pages_len / page)
		rc = aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: names %llu pages, its pages file holds %zu bytes",
				name, (unsigned long long)file_off, pages_len);
	if (!rc && ps.n)
		qsort(ps.p, ps.n, sizeof(*ps.p), by_vaddr);
	for (size_t i = 1; !rc && i < ps.n; i++)
		if (ps.p[i].vaddr < ps.p[i - 1].vaddr + ps.p[i - 1].pages * page)
			rc = aiotk_fail(err, AIOTK_EOCCUPIED, 0,
					"%s: a moved ring's pages would overlap the dump's pages at 0x%llx",
					name, (unsigned long long)ps.p[i].vaddr);
	if (!rc && fmt_put(&opm, pm, head_end))
		rc = aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
	for (size_t i = 0; !rc && i < ps.n; i++) {
		const struct piece *x = &ps.p[i];
		if (emit_entry(x, &opm) || (x->file_off != (uint64_t)-1 &&
					    emit_pages(x, pages, v, nv, m, new_nr, n, page, &opg, refs)))
			rc = aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
	}
	free(ps.p);
	free_entries(es, nes);
	if (rc) {
		free(opm.b);
		free(opg.b);
		return rc;
	}
	*pages_out = opg.b ? opg.b : malloc(1);
	if (!*pages_out) {
		free(opm.b);
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
	}
	*pm_out = opm.b;
	*pm_out_len = opm.n;
	*pages_out_len = opg.n;
	return 0;
}

/* ---- registers ------------------------------------------------------------ */

/* The general registers relocation may rewrite: those a program keeps
 * values in, as the live path's (core/target/arch_x86_64.c): not the
 * instruction or stack pointer, flags, segments or bases. */
#define REGS(X) X(ax) X(bx) X(cx) X(dx) X(si) X(di) X(bp) \
	X(r8) X(r9) X(r10) X(r11) X(r12) X(r13) X(r14) X(r15)

#define NR_IO_GETEVENTS 208
#define NR_IO_PGETEVENTS 333
#define EINTR_RC ((uint64_t)-4)

/* A thread CRIU's stop took out of io_getevents on a relocated ring (di:
 * its id, rewritten) returns EINTR on restore (the call returns 0 events
 * and makes that EINTR when a signal is pending; the stop sets one). The
 * live path restarts it (ERESTARTNOHAND); here the restart is written
 * as the kernel does it: ax back to the call's number, ip back over the
 * 2-byte syscall instruction, so it waits again on the new ring. */
static int restart_getevents(CriuUserX86Regs *g, size_t move, aiotk_criu_refs *refs)
{
	if (!g->has_orig_ax || !g->has_ip || g->ax != EINTR_RC ||
	    (g->orig_ax != NR_IO_GETEVENTS && g->orig_ax != NR_IO_PGETEVENTS))
		return 0;
	aiotk_criu_ref ref = { .kind = AIOTK_REF_RESTART, .move = move, .reg = "ip", .old = g->ip,
			       .value = g->ip - 2 };
	g->ax = g->orig_ax;
	g->ip -= 2;
	return add_ref(refs, &ref);
}

static int rebase_regs(CriuUserX86Regs *g, const aiotk_move *m, size_t n, aiotk_criu_refs *refs)
{
	aiotk_criu_ref ref;
	uint64_t to;
	size_t di_move = (size_t)-1;
	if (g->has_di && rebase(g->di, m, n, &to, &ref) && ref.kind == AIOTK_REF_ID)
		di_move = ref.move;
#define X(r)                                                                    \
	if (g->has_##r && rebase(g->r, m, n, &to, &ref)) {                     \
		g->r = to;                                                     \
		ref.reg = #r;                                                  \
		if (add_ref(refs, &ref))                                       \
			return -1;                                             \
	}
	REGS(X)
#undef X
	return di_move == (size_t)-1 ? 0 : restart_getevents(g, di_move, refs);
}

int aiotk_criu_relocate_regs(const uint8_t *buf, size_t len, const char *name, const aiotk_move *m,
			     size_t n, uint8_t **out, size_t *out_len, aiotk_criu_refs *refs,
			     aiotk_err *err)
{
	int mrc = aiotk_moves_check(m, n, err);
	if (mrc)
		return mrc;
	uint32_t size = len >= 12 ? u32le(buf + 8) : 0;
	if (len < 12 || size > len - 12)
		return aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: not a CRIU core image (truncated)", name);
	struct fmt_pb pb;
	fmt_pb_init(&pb);
	CriuCoreEntry *c = criu_core_entry__unpack(&pb.a, size, buf + 12);
	if (!c && pb.failed)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "%s: out of memory", name);
	if (!c)
		return aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: core entry is not valid protobuf", name);
	size_t before = refs->n;
	int rc = c->thread_info && c->thread_info->gpregs ?
		rebase_regs(c->thread_info->gpregs, m, n, refs) : 0;
	struct fmt_buf o = { 0 };
	if (!rc && refs->n == before) {
		rc = fmt_put(&o, buf, len);
	} else if (!rc) {
		size_t plen = criu_core_entry__get_packed_size(c);
		uint8_t *p = malloc(plen ? plen : 1);
		rc = !p || fmt_put(&o, buf, 8) || put_u32(&o, (uint32_t)plen);
		if (!rc) {
			criu_core_entry__pack(c, p);
			rc = fmt_put(&o, p, plen) || fmt_put(&o, buf + 12 + size, len - 12 - size);
		}
		free(p);
	}
	criu_core_entry__free_unpacked(c, NULL);
	if (rc) {
		free(o.b);
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "%s: out of memory", name);
	}
	*out = o.b;
	*out_len = o.n;
	return 0;
}

/* ---- threads -------------------------------------------------------------- */

int aiotk_criu_threads(const uint8_t *buf, size_t len, const char *name, int pid, int **tids,
		       size_t *n, aiotk_err *err)
{
	*tids = NULL;
	*n = 0;
	for (size_t off = 8; off < len;) {
		uint32_t sz = len - off >= 4 ? u32le(buf + off) : UINT32_MAX;
		struct fmt_pb pb;
		fmt_pb_init(&pb);
		CriuPstreeEntry *e = len - off >= 4 && sz <= len - off - 4 ?
			criu_pstree_entry__unpack(&pb.a, sz, buf + off + 4) : NULL;
		if (!e && pb.failed)
			return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
		if (!e)
			return aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: entry at offset %zu is not valid", name, off);
		int mine = (int)e->pid == pid && e->n_threads;
		if (mine) {
			*tids = malloc(e->n_threads * sizeof(int));
			for (size_t i = 0; *tids && i < e->n_threads; i++)
				(*tids)[i] = (int)e->threads[i];
			*n = *tids ? e->n_threads : 0;
		}
		criu_pstree_entry__free_unpacked(e, NULL);
		if (mine)
			return *n ? 0 : aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
		off += 4 + sz;
	}
	return aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: no threads of process %d", name, pid);
}
