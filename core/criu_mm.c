/* CRIU's mm-PID.img: AIO rings (address, length, nr_req) and their VMAs.
 * File: u32 0x54564319, u32 0x57492820, then u32 length + mm_entry.
 * nr_req's position is found by walking the protobuf wire format, so
 * criu-fixup can change that varint and nothing else. */
#include "aiotk.h"
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

int aiotk_criu_decode_mm(const uint8_t *buf, size_t len, const char *name,
			 aiotk_criu_proc *p, aiotk_err *err)
{
	p->nrings = 0;
	p->rings = NULL;
	if (len < 12 || u32le(buf) != IMG_MAGIC || u32le(buf + 4) != MM_MAGIC)
		return aiotk_fail(err, AIOTK_EIMAGE, 0,
				  "%s: not a CRIU mm image (magic 0x%08x 0x%08x, expected 0x%08x 0x%08x)",
				  name, len >= 4 ? u32le(buf) : 0, len >= 8 ? u32le(buf + 4) : 0,
				  IMG_MAGIC, MM_MAGIC);
	uint32_t n = u32le(buf + 8);
	if (n > len - 12)
		return aiotk_fail(err, AIOTK_EIMAGE, 0,
				  "%s: mm entry of %u bytes, only %zu in the file (truncated)",
				  name, n, len - 12);
	CriuMmEntry *m = criu_mm_entry__unpack(NULL, n, buf + 12);
	if (!m)
		return aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: mm entry is not valid protobuf", name);
	int rc = rings_from(m, name, p, err);
	criu_mm_entry__free_unpacked(m, NULL);
	if (!rc && locate_nr_req(buf, 12, 12 + n, p))
		rc = aiotk_fail(err, AIOTK_EIMAGE, 0, "%s: cannot walk the mm entry", name);
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
