/* CRIU's mm-PID.img: AIO rings (address, length, nr_req) and their VMAs.
 * File: u32 0x54564319, u32 0x57492820, then u32 length + mm_entry.
 * nr_req's position is found by walking the protobuf wire format, so
 * criu-fixup can change that varint and nothing else. */
#include "formats.h"
#include "criu_mm.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IMG_MAGIC 0x54564319u
#define MM_MAGIC 0x57492820u
#define VMA_AIORING (1u << 13)

static uint32_t u32le(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* One varint at *off; 0 on success. */
static int varint(const uint8_t *b, size_t len, size_t *off, uint64_t *v)
{
	*v = 0;
	for (int shift = 0; shift < 64 && *off < len; shift += 7) {
		uint8_t c = b[(*off)++];
		*v |= (uint64_t)(c & 0x7f) << shift;
		if (!(c & 0x80))
			return 0;
	}
	return -1;
}

struct field { uint32_t num, type; size_t start, len; uint64_t value; };

/* Next field of a message in [*off, end): its number, wire type, and the
 * span of its payload (varint bytes, or the length-delimited bytes). */
static int next_field(const uint8_t *b, size_t end, size_t *off, struct field *f)
{
	uint64_t key;
	if (varint(b, end, off, &key))
		return -1;
	f->num = (uint32_t)(key >> 3);
	f->type = key & 7;
	f->start = *off;
	switch (f->type) {
	case 0:
		if (varint(b, end, off, &f->value))
			return -1;
		break;
	case 1: *off += 8; break;
	case 5: *off += 4; break;
	case 2:
		if (varint(b, end, off, &f->value) || f->value > end - *off)
			return -1;
		f->start = *off;
		*off += f->value;
		break;
	default:
		return -1;
	}
	if (*off > end)
		return -1;
	f->len = *off - f->start;
	return 0;
}

/* Offsets of nr_req in each aios entry, in order. */
static int locate_nr_req(const uint8_t *b, size_t start, size_t end,
			 aiotk_criu_proc *p)
{
	size_t off = start, i = 0;
	struct field f;
	while (off < end) {
		if (next_field(b, end, &off, &f))
			return -1;
		if (f.num != 16 || f.type != 2)
			continue;
		size_t sub = f.start, sub_end = f.start + f.len;
		struct field g;
		while (sub < sub_end) {
			if (next_field(b, sub_end, &sub, &g))
				return -1;
			if (g.num == 2 && g.type == 0 && i < p->nrings) {
				p->rings[i].nr_req_off = g.start;
				p->rings[i].nr_req_len = g.len;
			}
		}
		i++;
	}
	return i == p->nrings ? 0 : -1;
}

static int is_ring_vma(const CriuMmEntry *m, uint64_t addr, uint64_t len)
{
	for (size_t v = 0; v < m->n_vmas; v++)
		if (m->vmas[v]->start == addr && m->vmas[v]->end == addr + len)
			return (m->vmas[v]->status & VMA_AIORING) != 0;
	return 0;
}

static int rings_from(const CriuMmEntry *m, const char *name, aiotk_criu_proc *p,
		      aiotk_err *err)
{
	p->rings = calloc(m->n_aios ? m->n_aios : 1, sizeof(*p->rings));
	if (!p->rings)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "%s: out of memory", name);
	p->nrings = m->n_aios;
	for (size_t i = 0; i < m->n_aios; i++) {
		const CriuAioRingEntry *a = m->aios[i];
		if (!a->has_id || !a->has_nr_req || !a->has_ring_len)
			return aiotk_fail(err, AIOTK_EIMAGE, 0,
					  "%s: aio ring entry %zu lacks id, nr_req or ring_len", name, i);
		if (!is_ring_vma(m, a->id, a->ring_len))
			return aiotk_fail(err, AIOTK_EIMAGE, 0,
					  "%s: aio ring 0x%llx has no matching VMA marked VMA_AREA_AIORING",
					  name, (unsigned long long)a->id);
		p->rings[i].ring.addr = a->id;
		p->rings[i].ring.ring_len = a->ring_len;
		p->rings[i].nr_req = a->nr_req;
	}
	return 0;
}

/* The file's mm entry: *n bytes at buf + 12, unpacked into *m. */
static int unpack_mm(const uint8_t *buf, size_t len, const char *name, uint32_t *n,
		     CriuMmEntry **m, aiotk_err *err)
{
	if (len < 12 || u32le(buf) != IMG_MAGIC || u32le(buf + 4) != MM_MAGIC)
		return aiotk_fail(err, AIOTK_EIMAGE, 0,
				  "%s: not a CRIU mm image (magic 0x%08x 0x%08x, expected 0x%08x 0x%08x)",
				  name, len >= 4 ? u32le(buf) : 0, len >= 8 ? u32le(buf + 4) : 0,
				  IMG_MAGIC, MM_MAGIC);
	*n = u32le(buf + 8);
	if (*n > len - 12)
		return aiotk_fail(err, AIOTK_EIMAGE, 0,
				  "%s: mm entry of %u bytes, only %zu in the file (truncated)",
				  name, *n, len - 12);
	struct fmt_pb pb;
	fmt_pb_init(&pb);
	*m = criu_mm_entry__unpack(&pb.a, *n, buf + 12);
	if (!*m && pb.failed)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "%s: out of memory", name);
	return *m ? 0 : aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: mm entry is not valid protobuf", name);
}

int aiotk_criu_decode_mm(const uint8_t *buf, size_t len, const char *name,
			 aiotk_criu_proc *p, aiotk_err *err)
{
	uint32_t n;
	CriuMmEntry *m;
	p->nrings = 0;
	p->rings = NULL;
	int rc = unpack_mm(buf, len, name, &n, &m, err);
	if (rc)
		return rc;
	rc = rings_from(m, name, p, err);
	criu_mm_entry__free_unpacked(m, NULL);
	if (!rc && locate_nr_req(buf, 12, 12 + n, p))
		rc = aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: cannot walk the mm entry", name);
	return rc;
}

int aiotk_criu_vmas(const uint8_t *buf, size_t len, const char *name, aiotk_criu_vma **out,
		    size_t *count, aiotk_err *err)
{
	uint32_t n;
	CriuMmEntry *m;
	int rc = unpack_mm(buf, len, name, &n, &m, err);
	if (rc)
		return rc;
	*count = m->n_vmas;
	*out = calloc(m->n_vmas ? m->n_vmas : 1, sizeof(**out));
	if (!*out)
		rc = aiotk_fail(err, AIOTK_ENOMEM, 0, "%s: out of memory", name);
	for (size_t i = 0; !rc && i < m->n_vmas; i++) {
		const CriuVmaEntry *v = m->vmas[i];
		(*out)[i] = (aiotk_criu_vma){ v->start, v->end, (v->status & VMA_AIORING) != 0,
						(v->prot & 2) != 0 };
	}
	criu_mm_entry__free_unpacked(m, NULL);
	return rc;
}

int aiotk_criu_patch_nr_req(uint8_t *buf, size_t len, const aiotk_criu_ring *r,
			    uint32_t n, aiotk_err *err)
{
	size_t w = r->nr_req_len;
	if (!w || w > 5 || r->nr_req_off + w > len)
		return aiotk_fail(err, AIOTK_EINVAL, 0, "nr_req of ring 0x%llx is not where it was read",
				  (unsigned long long)r->ring.addr);
	if (w < 5 && (uint64_t)n >> (7 * w))
		return aiotk_fail(err, AIOTK_EINVAL, 0,
				  "nr_req %u needs more than the %zu bytes CRIU used", n, w);
	/* Padded varint: continuation bits on all but the last byte. */
	for (size_t i = 0; i < w; i++) {
		uint8_t c = (uint8_t)((n >> (7 * i)) & 0x7f);
		buf[r->nr_req_off + i] = i + 1 < w ? (uint8_t)(c | 0x80) : c;
	}
	return 0;
}

/* ---- growing a ring in the image --------------------------------------- */

static void *pb_alloc(void *data, size_t n)
{
	void *p = malloc(n);
	if (!p)
		((struct fmt_pb *)data)->failed = 1;
	return p;
}

static void pb_free(void *data, void *p)
{
	(void)data;
	free(p);
}

void fmt_pb_init(struct fmt_pb *pb)
{
	pb->a = (ProtobufCAllocator){ pb_alloc, pb_free, pb };
	pb->failed = 0;
}

int fmt_put(struct fmt_buf *o, const void *p, size_t n)
{
	if (o->n + n > o->cap) {
		size_t cap = (o->n + n) * 2 + 64;
		uint8_t *b = realloc(o->b, cap);
		if (!b)
			return -1;
		o->b = b;
		o->cap = cap;
	}
	if (n)
		memcpy(o->b + o->n, p, n);
	o->n += n;
	return 0;
}

/* v as a varint of at least min bytes (padded: continuation bits on). */
static int put_varint_min(struct fmt_buf *o, uint64_t v, size_t min)
{
	uint8_t b[10];
	size_t n = 0;
	do {
		b[n] = (uint8_t)(v & 0x7f);
		v >>= 7;
		if (v || n + 1 < min)
			b[n] |= 0x80;
		n++;
	} while (v || n < min);
	return fmt_put(o, b, n);
}

static int put_varint(struct fmt_buf *o, uint64_t v) { return put_varint_min(o, v, 1); }

/* The submessage [start, end) with varint fields num[0..n) set to
 * val[i], each written in at least min[i] bytes; every other field
 * copied byte for byte. */
static int rewrite_fields(const uint8_t *m, size_t start, size_t end, size_t n, const uint32_t *num,
			  const uint64_t *val, const size_t *min, struct fmt_buf *o)
{
	size_t off = start;
	struct field f;
	while (off < end) {
		size_t key_at = off, i = 0;
		if (next_field(m, end, &off, &f))
			return -1;
		while (i < n && (f.type != 0 || f.num != num[i]))
			i++;
		if (i < n) {
			if (put_varint(o, (uint64_t)f.num << 3) || put_varint_min(o, val[i], min[i]))
				return -1;
		} else if (fmt_put(o, m + key_at, off - key_at))
			return -1;
	}
	return 0;
}

/* An aio entry [start, end) with id, nr_req and ring_len set; nr_req takes
 * the 5 bytes any u32 needs, so a later fixup (another host's n) patches
 * it in place. */
static int rewrite_aio(const uint8_t *m, size_t start, size_t end, uint64_t id, uint32_t nr_req,
		       uint64_t ring_len, struct fmt_buf *o)
{
	static const uint32_t num[] = { 1, 2, 3 };
	static const size_t min[] = { 1, 5, 1 };
	const uint64_t val[] = { id, nr_req, ring_len };
	return rewrite_fields(m, start, end, 3, num, val, min, o);
}

/* A VMA entry [start, end) with its start and end set. */
static int rewrite_vma(const uint8_t *m, size_t start, size_t end, uint64_t from, uint64_t to,
		       struct fmt_buf *o)
{
	static const uint32_t num[] = { 1, 2 };
	static const size_t min[] = { 1, 1 };
	const uint64_t val[] = { from, to };
	return rewrite_fields(m, start, end, 2, num, val, min, o);
}

/* A top-level field 14 (vma) or 16 (aio) about the ring at addr: its
 * start (vma) or id (aio) is field 1. */
static int about(const uint8_t *m, const struct field *f, uint64_t addr)
{
	size_t off = f->start, end = f->start + f->len;
	struct field g;
	while (off < end && !next_field(m, end, &off, &g))
		if (g.num == 1 && g.type == 0)
			return g.value == addr;
	return 0;
}

/* The VMA that keeps the ring at addr from growing to new_len, if any. */
static const CriuVmaEntry *in_the_way(const CriuMmEntry *m, uint64_t addr, uint64_t new_len)
{
	for (size_t v = 0; v < m->n_vmas; v++) {
		const CriuVmaEntry *e = m->vmas[v];
		if (e->start != addr && e->start < addr + new_len && e->end > addr)
			return e;
	}
	return NULL;
}

static int grow_entry(const uint8_t *m, size_t n, uint64_t addr, uint64_t new_len, uint32_t nr_req,
		      struct fmt_buf *o)
{
	size_t off = 0;
	struct field f;
	while (off < n) {
		size_t key_at = off;
		if (next_field(m, n, &off, &f))
			return -1;
		int vma = f.num == 14 && f.type == 2, aio = f.num == 16 && f.type == 2;
		if (!(vma || aio) || !about(m, &f, addr)) {
			if (fmt_put(o, m + key_at, off - key_at))
				return -1;
			continue;
		}
		struct fmt_buf sub = { 0 };
		int rc = vma ? rewrite_vma(m, f.start, f.start + f.len, addr, addr + new_len, &sub)
			     : rewrite_aio(m, f.start, f.start + f.len, addr, nr_req, new_len, &sub);
		if (!rc)
			rc = put_varint(o, (uint64_t)f.num << 3 | 2) || put_varint(o, sub.n) ||
			     fmt_put(o, sub.b, sub.n);
		free(sub.b);
		if (rc)
			return -1;
	}
	return 0;
}

int aiotk_criu_grow_mm(const uint8_t *buf, size_t len, const char *name, uint64_t addr,
		       uint64_t new_len, uint32_t nr_req, uint8_t **out, size_t *out_len,
		       aiotk_err *err)
{
	uint32_t n;
	CriuMmEntry *m;
	aiotk_criu_proc p = { 0 };
	int rc = unpack_mm(buf, len, name, &n, &m, err);
	if (rc)
		return rc;
	rc = rings_from(m, name, &p, err);
	int found = 0;
	for (size_t i = 0; !rc && i < p.nrings; i++)
		found |= p.rings[i].ring.addr == addr;
	if (!rc && !found)
		rc = aiotk_fail(err, AIOTK_EINVAL, 0, "%s: no AIO ring at 0x%llx", name,
				(unsigned long long)addr);
	const CriuVmaEntry *v = rc ? NULL : in_the_way(m, addr, new_len);
	if (v)
		rc = aiotk_fail(err, AIOTK_EOCCUPIED, 0,
				"%s: ring 0x%llx cannot grow to %llu bytes: the mapping 0x%llx-0x%llx follows it",
				name, (unsigned long long)addr, (unsigned long long)new_len,
				(unsigned long long)v->start, (unsigned long long)v->end);
	free(p.rings);
	criu_mm_entry__free_unpacked(m, NULL);
	if (rc)
		return rc;
	struct fmt_buf o = { 0 }, e = { 0 };
	uint8_t size[4];
	if (fmt_put(&o, buf, 8) || grow_entry(buf + 12, n, addr, new_len, nr_req, &e) ||
	    e.n > UINT32_MAX) {
		free(o.b);
		free(e.b);
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "%s: cannot rewrite the mm entry", name);
	}
	for (int i = 0; i < 4; i++)
		size[i] = (uint8_t)(e.n >> (8 * i));
	rc = fmt_put(&o, size, 4) || fmt_put(&o, e.b, e.n) || fmt_put(&o, buf + 12 + n, len - 12 - n);
	free(e.b);
	if (rc) {
		free(o.b);
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
	}
	*out = o.b;
	*out_len = o.n;
	return 0;
}

/* ---- relocating a ring in the image ------------------------------------- */

struct vma_field { uint64_t start; const uint8_t *b; size_t n; struct fmt_buf moved; };

static int by_start(const void *a, const void *b)
{
	const struct vma_field *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

static uint64_t field1(const uint8_t *m, const struct field *f)
{
	size_t off = f->start, end = f->start + f->len;
	struct field g;
	while (off < end && !next_field(m, end, &off, &g))
		if (g.num == 1 && g.type == 0)
			return g.value;
	return 0;
}

/* One vma field (key and payload at [key_at, end)), the ring's moved. */
static int take_vma(const uint8_t *m, const struct field *f, size_t key_at, size_t end,
		    const aiotk_move *mv, uint64_t new_len, struct vma_field *v)
{
	*v = (struct vma_field){ .start = field1(m, f), .b = m + key_at, .n = end - key_at };
	if (v->start != mv->from)
		return 0;
	struct fmt_buf sub = { 0 };
	v->start = mv->to;
	int rc = rewrite_vma(m, f->start, f->start + f->len, mv->to, mv->to + new_len, &sub) ||
		 put_varint(&v->moved, (uint64_t)14 << 3 | 2) || put_varint(&v->moved, sub.n) ||
		 fmt_put(&v->moved, sub.b, sub.n);
	free(sub.b);
	v->b = v->moved.b;
	v->n = v->moved.n;
	return rc;
}

/* The entry [0, n) with the ring's aio entry (id, nr_req, ring_len) and
 * VMA moved, the VMAs written sorted by start where the first one was. */
static int relocate_entry(const uint8_t *m, size_t n, const aiotk_move *mv, uint64_t new_len,
			  uint32_t nr_req, struct vma_field *vs, size_t nvs, struct fmt_buf *o)
{
	size_t off = 0, k = 0, at = (size_t)-1;
	struct fmt_buf rest = { 0 };
	struct field f;
	int rc = 0;
	while (!rc && off < n) {
		size_t key_at = off;
		if (next_field(m, n, &off, &f)) {
			rc = -1;
		} else if (f.num == 14 && f.type == 2) {
			if (at == (size_t)-1)
				at = rest.n;
			rc = k >= nvs || take_vma(m, &f, key_at, off, mv, new_len, &vs[k++]);
		} else if (f.num == 16 && f.type == 2 && about(m, &f, mv->from)) {
			struct fmt_buf b = { 0 };
			rc = rewrite_aio(m, f.start, f.start + f.len, mv->to, nr_req, new_len, &b) ||
			     put_varint(&rest, (uint64_t)16 << 3 | 2) || put_varint(&rest, b.n) ||
			     fmt_put(&rest, b.b, b.n);
			free(b.b);
		} else {
			rc = fmt_put(&rest, m + key_at, off - key_at);
		}
	}
	if (!rc && k != nvs)
		rc = -1;
	if (at == (size_t)-1)
		at = rest.n;
	qsort(vs, k, sizeof(*vs), by_start);
	rc = rc || fmt_put(o, rest.b, at);
	for (size_t i = 0; !rc && i < k; i++)
		rc = fmt_put(o, vs[i].b, vs[i].n);
	rc = rc || fmt_put(o, rest.b + at, rest.n - at);
	free(rest.b);
	return rc;
}

int aiotk_criu_relocate_mm(const uint8_t *buf, size_t len, const char *name, const aiotk_move *mv,
			   uint64_t new_len, uint32_t nr_req, uint8_t **out, size_t *out_len,
			   aiotk_err *err)
{
	uint32_t n;
	CriuMmEntry *m;
	int rc = unpack_mm(buf, len, name, &n, &m, err);
	if (rc)
		return rc;
	int found = 0;
	for (size_t i = 0; i < m->n_aios; i++)
		found |= m->aios[i]->id == mv->from;
	if (!found)
		rc = aiotk_fail(err, AIOTK_EINVAL, 0, "%s: no AIO ring at 0x%llx", name,
				(unsigned long long)mv->from);
	for (size_t v = 0; !rc && v < m->n_vmas; v++) {
		const CriuVmaEntry *e = m->vmas[v];
		if (e->start != mv->from && e->start < mv->to + new_len && e->end > mv->to)
			rc = aiotk_fail(err, AIOTK_EOCCUPIED, 0,
					"%s: ring 0x%llx cannot move to 0x%llx-0x%llx: the mapping 0x%llx-0x%llx is there",
					name, (unsigned long long)mv->from, (unsigned long long)mv->to,
					(unsigned long long)(mv->to + new_len), (unsigned long long)e->start,
					(unsigned long long)e->end);
	}
	size_t nvs = m->n_vmas;
	criu_mm_entry__free_unpacked(m, NULL);
	if (rc)
		return rc;
	struct vma_field *vs = calloc(nvs ? nvs : 1, sizeof(*vs));
	struct fmt_buf o = { 0 }, e = { 0 };
	uint8_t size[4];
	rc = !vs || fmt_put(&o, buf, 8) || relocate_entry(buf + 12, n, mv, new_len, nr_req, vs, nvs, &e) ||
	     e.n > UINT32_MAX;
	for (int i = 0; i < 4; i++)
		size[i] = (uint8_t)(e.n >> (8 * i));
	rc = rc || fmt_put(&o, size, 4) || fmt_put(&o, e.b, e.n) || fmt_put(&o, buf + 12 + n, len - 12 - n);
	for (size_t i = 0; vs && i < nvs; i++)
		free(vs[i].moved.b);
	free(vs);
	free(e.b);
	if (rc) {
		free(o.b);
		return aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: cannot rewrite the mm entry", name);
	}
	*out = o.b;
	*out_len = o.n;
	return 0;
}
