/* rings.img in memory: a file magic, then records of
 *   u32 length | u32 crc32(payload) | payload (protobuf)
 * record 0 is aiotk_header_entry, records 1..ring_count aiotk_ring_entry,
 * then uring_count aiotk_uring_entry (none in images made before io_uring
 * was known, which so read as before). Every length and value is checked
 * before it is trusted. */
#include "aiotk.h"
#include "formats/formats.h"
#include "header.pb-c.h"
#include "ring.pb-c.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define FILE_MAGIC 0x4b544f41u  /* "AOTK" little-endian */
#define MAX_RECORD (1u << 30)   /* far above any ring's record */
#define MAX_RINGS 65536u        /* more than aio-max-nr allows contexts */
#define MAX_URINGS 65536u       /* more than a process has fds, by default */

struct cursor {
	const uint8_t *buf;
	size_t len, off;
	const char *name;
	unsigned index;         /* record number */
	aiotk_err *err;
	const char *kind;       /* of the records being read */
};

static int bad(struct cursor *c, const char *what)
{
	return aiotk_fail(c->err, AIOTK_EIMAGE, 0,
			  "%s: record %u (%s) at offset %zu: %s; the image is damaged, dump again or use a good copy",
			  c->name, c->index, c->kind, c->off,
			  what);
}

/* Next record's payload, checked for length and checksum. */
static int next_record(struct cursor *c, const uint8_t **p, size_t *len)
{
	char what[128];
	if (c->len - c->off < 8) {
		snprintf(what, sizeof(what), "truncated: %zu bytes where an 8-byte record header should be",
			 c->len - c->off);
		return bad(c, what);
	}
	uint32_t n = fmt_get_u32(c->buf + c->off), crc = fmt_get_u32(c->buf + c->off + 4);
	if (n > MAX_RECORD) {
		snprintf(what, sizeof(what), "absurd record length %u", n);
		return bad(c, what);
	}
	if (n > c->len - c->off - 8) {
		snprintf(what, sizeof(what), "truncated: record of %u bytes, %zu left",
			 n, c->len - c->off - 8);
		return bad(c, what);
	}
	*p = c->buf + c->off + 8;
	*len = n;
	if ((uint32_t)crc32(0, *p, n) != crc)
		return bad(c, "checksum mismatch");
	return 0;
}

/* ---- a ring record's events, decoded here ----------------------------
 * They are most of a big ring's record: 40000 events were 40000
 * protobuf-c messages, 2.8 MB of fresh heap and 5-7 ms of a restore
 * command's own process (its page faults, mostly). So the record is split:
 * its events (field 7, aiotk_event_entry) are decoded straight into the
 * ring's array, as protobuf-c would (fields in any order, the last one
 * wins, unknown ones skipped, a known field of another wire type or a
 * required one missing refused), and the rest goes to protobuf-c. */

static int varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t x = 0;
	for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t b = *(*p)++;
		x |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = x;
			return 0;
		}
	}
	return -1;
}

/* Past one field's value of wire type wt; where it ends, in *len. */
static int skip_value(const uint8_t **p, const uint8_t *end, unsigned wt, uint64_t *len)
{
	uint64_t n = 0;
	switch (wt) {
	case 0: return varint(p, end, len);
	case 1: n = 8; break;
	case 2: if (varint(p, end, &n)) return -1; break;
	case 5: n = 4; break;
	default: return -1;
	}
	if (n > (uint64_t)(end - *p))
		return -1;
	*len = n;
	*p += n;
	return 0;
}

static uint64_t get_u64(const uint8_t *p)
{
	return (uint64_t)fmt_get_u32(p) | (uint64_t)fmt_get_u32(p + 4) << 32;
}

static int64_t unzigzag(uint64_t v) { return (int64_t)(v >> 1) ^ -(int64_t)(v & 1); }

/* The event as protobuf-c writes it (fields 1 to 4 once each, in order):
 * read in one go, 0; anything else, -1, for event_from's field-by-field
 * reading. Half of a 40000-event image's decoding time went to that. */
static int event_packed(const uint8_t *p, const uint8_t *end, aiotk_event *ev)
{
	uint64_t res, res2;
	if (end - p < 22 || p[0] != 0x09 || p[9] != 0x11 || p[18] != 0x18)
		return -1;
	const uint8_t *q = p + 19;
	if (varint(&q, end, &res) || q >= end || *q++ != 0x20 || varint(&q, end, &res2) || q != end)
		return -1;
	ev->data = get_u64(p + 1);
	ev->obj = get_u64(p + 10);
	ev->res = unzigzag(res);
	ev->res2 = unzigzag(res2);
	return 0;
}

/* aiotk_event_entry: required fixed64 data = 1, obj = 2, sint64 res = 3,
 * res2 = 4. */
static int event_from(const uint8_t *p, const uint8_t *end, aiotk_event *ev)
{
	unsigned seen = 0;
	if (!event_packed(p, end, ev))
		return 0;
	while (p < end) {
		uint64_t key, v;
		if (varint(&p, end, &key))
			return -1;
		unsigned f = key >> 3 > 5 ? 5 : (unsigned)(key >> 3), wt = key & 7;
		if (f >= 1 && f <= 4 && wt != (f <= 2 ? 1u : 0u))
			return -1;
		if (f == 1 || f == 2) {
			if (end - p < 8)
				return -1;
			v = get_u64(p);
			p += 8;
			*(f == 1 ? &ev->data : &ev->obj) = v;
		} else if (f == 3 || f == 4) {
			if (varint(&p, end, &v))
				return -1;
			*(f == 3 ? &ev->res : &ev->res2) = unzigzag(v);
		} else if (!f || skip_value(&p, end, wt, &v)) {
			return -1;
		}
		seen |= 1u << f;
	}
	return (seen & 0x1e) == 0x1e ? 0 : -1;
}

/* Record p (len bytes) split: its events into *events (*n of them), the
 * rest copied into *rest (*rest_len bytes). -1: not a valid record.
 * One pass: an event field takes at least 24 bytes (its key and length,
 * then the four required fields, 22 at their shortest), which bounds how
 * many there can be; counting them first read every field twice, a
 * fifth of a big image's decoding. */
#define POPULATE_EVENTS (FMT_POPULATE_MIN / sizeof(aiotk_event))

static int split_events(const uint8_t *p, size_t len, aiotk_event **events,
			uint32_t *n, uint8_t **rest, size_t *rest_len)
{
	const uint8_t *end = p + len;
	size_t most = len / 24;
	if (most > UINT32_MAX)
		return -1;
	*events = malloc(most ? most * sizeof(aiotk_event) : 1);
	*rest = malloc(len ? len : 1);
	if (!*events || !*rest)
		return -2;
	*n = 0;
	*rest_len = 0;
	for (const uint8_t *q = p; q < end;) {
		const uint8_t *field = q;
		uint64_t key, vlen;
		if (varint(&q, end, &key) || skip_value(&q, end, key & 7, &vlen))
			return -1;
		if (key >> 3 == 7 && (key & 7) == 2) {
			if (*n == most)
				return -1;
			/* only what is filled: most may be far more than there are */
			if (*n % POPULATE_EVENTS == 0)
				fmt_populate(&(*events)[*n], (most - *n < POPULATE_EVENTS ? most - *n : POPULATE_EVENTS) *
					     sizeof(aiotk_event));
			(*events)[*n] = (aiotk_event){ 0 };
			if (event_from(q - vlen, q, &(*events)[(*n)++]))
				return -1;
		} else {
			memcpy(*rest + *rest_len, field, (size_t)(q - field));
			*rest_len += (size_t)(q - field);
		}
	}
	return 0;
}

static int header_from(struct cursor *c, const AiotkHeaderEntry *h,
		       aiotk_image *img)
{
	char what[128];
	if (h->format != AIOTK_IMAGE_FORMAT) {
		snprintf(what, sizeof(what), "format %u, this aiotk reads %u",
			 h->format, AIOTK_IMAGE_FORMAT);
		return bad(c, what);
	}
	if (!h->cpus || h->page_size < 4096 || (h->page_size & (h->page_size - 1)) ||
	    h->formula > AIOTK_FORMULA_LEGACY || h->ring_count > MAX_RINGS ||
	    h->uring_count > MAX_URINGS)
		return bad(c, "host facts out of range (cpus, page size, formula or ring count)");
	img->format = h->format;
	img->cpus = h->cpus;
	img->page_size = h->page_size;
	snprintf(img->release, sizeof(img->release), "%s", h->release);
	img->formula = (enum aiotk_formula)h->formula;
	img->aio_max_nr = h->aio_max_nr;
	img->time_ns = h->time_ns;
	img->pid = h->has_pid ? h->pid : 0;
	img->stopped_ns = h->has_stopped_ns ? h->stopped_ns : 0;
	snprintf(img->warnings, sizeof(img->warnings), "%s", h->warnings ? h->warnings : "");
	return 0;
}

/* Ring r from record e and its events (split_events; r owns them even
 * when this fails). */
static int ring_from(struct cursor *c, const AiotkRingEntry *e, aiotk_event *events,
		     uint32_t nevents, aiotk_ring *r, unsigned page_size)
{
	memset(r, 0, sizeof(*r));
	r->events = events;
	r->nevents = nevents;
	r->addr = e->addr;
	r->ring_len = e->ring_len;
	r->nr = e->nr;
	r->head = e->head;
	r->tail = e->tail;
	r->n = e->has_n ? e->n : 0;
	r->id = e->has_id ? e->id : 0;
	r->magic = e->has_magic ? e->magic : AIOTK_RING_MAGIC;
	r->compat_features = e->has_compat_features ? e->compat_features : AIOTK_RING_COMPAT;
	r->incompat_features = e->has_incompat_features ? e->incompat_features : 0;
	r->header_length = e->has_header_length ? e->header_length : AIOTK_HEADER_LEN;
	aiotk_err verr;
	if (aiotk_ring_validate(r, page_size, &verr))
		return bad(c, verr.msg);
	if (e->has_area && e->area.len != (size_t)r->nr * AIOTK_EVENT_LEN)
		return bad(c, "event area length is not nr * 32");
	r->area = e->has_area ? malloc(e->area.len) : NULL;
	if (e->has_area && !r->area)
		return aiotk_fail(c->err, AIOTK_ENOMEM, 0, "%s: out of memory", c->name);
	if (r->area)
		memcpy(r->area, e->area.data, e->area.len);
	r->has_kernel_tail = e->has_kernel_tail;
	r->kernel_tail = e->kernel_tail;
	if (e->n_captured > r->nr)
		return bad(c, "more captured requests than ring slots");
	r->captured = e->n_captured ? calloc(e->n_captured, sizeof(aiotk_captured)) : NULL;
	if (e->n_captured && !r->captured)
		return aiotk_fail(c->err, AIOTK_ENOMEM, 0, "%s: out of memory", c->name);
	for (size_t i = 0; i < e->n_captured; i++) {
		if (e->captured[i]->iocb.len != AIOTK_IOCB_LEN)
			return bad(c, "a captured request's iocb is not 64 bytes");
		r->captured[i].obj = e->captured[i]->obj;
		memcpy(r->captured[i].iocb, e->captured[i]->iocb.data, AIOTK_IOCB_LEN);
	}
	r->ncaptured = (uint32_t)e->n_captured;
	return 0;
}

static int decode_rings(struct cursor *c, uint32_t count, aiotk_image *img)
{
	img->rings = calloc(count ? count : 1, sizeof(aiotk_ring));
	if (!img->rings)
		return aiotk_fail(c->err, AIOTK_ENOMEM, 0, "%s: out of memory", c->name);
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *p;
		size_t n;
		c->index = i + 1;
		int rc = next_record(c, &p, &n);
		if (rc)
			return rc;
		aiotk_event *events = NULL;
		uint32_t nevents = 0;
		uint8_t *rest = NULL;
		size_t rest_len = 0;
		int split = split_events(p, n, &events, &nevents, &rest, &rest_len);
		AiotkRingEntry *e = split ? NULL : aiotk_ring_entry__unpack(NULL, rest_len, rest);
		free(rest);
		if (!e) {
			free(events);
			if (split == -2)
				return aiotk_fail(c->err, AIOTK_ENOMEM, 0, "%s: out of memory", c->name);
			return bad(c, "not a valid ring record (protobuf)");
		}
		rc = ring_from(c, e, events, nevents, &img->rings[i], img->page_size);
		aiotk_ring_entry__free_unpacked(e, NULL);
		img->nrings = i + 1;
		if (rc)
			return rc;
		c->off += 8 + n;
	}
	return 0;
}

static int decode_urings(struct cursor *c, uint32_t count, aiotk_image *img)
{
	c->kind = "io_uring";
	img->urings = calloc(count ? count : 1, sizeof(aiotk_uring));
	if (!img->urings)
		return aiotk_fail(c->err, AIOTK_ENOMEM, 0, "%s: out of memory", c->name);
	for (uint32_t i = 0; i < count; i++) {
		const uint8_t *p;
		const char *why;
		size_t n;
		c->index = (unsigned)img->nrings + i + 1;
		int rc = next_record(c, &p, &n);
		if (rc)
			return rc;
		AiotkUringEntry *e = aiotk_uring_entry__unpack(NULL, n, p);
		if (!e)
			return bad(c, "not a valid io_uring record (protobuf)");
		rc = uring_from_entry(e, &img->urings[i], &why);
		aiotk_uring_entry__free_unpacked(e, NULL);
		if (rc)
			return bad(c, why);
		img->nurings = i + 1;
		c->off += 8 + n;
	}
	return 0;
}

static int decode(struct cursor *c, aiotk_image *img)
{
	const uint8_t *p;
	size_t n;
	if (c->len < 4 || fmt_get_u32(c->buf) != FILE_MAGIC)
		return aiotk_fail(c->err, AIOTK_EIMAGE, 0,
				  "%s: not an aiotk image (bad magic); is this a CRIU dump? try --criu",
				  c->name);
	c->off = 4;
	int rc = next_record(c, &p, &n);
	if (rc)
		return rc;
	AiotkHeaderEntry *h = aiotk_header_entry__unpack(NULL, n, p);
	if (!h)
		return bad(c, "not a valid header record (protobuf)");
	rc = header_from(c, h, img);
	uint32_t count = h->ring_count, ucount = h->has_uring_count ? h->uring_count : 0;
	aiotk_header_entry__free_unpacked(h, NULL);
	if (rc)
		return rc;
	c->off += 8 + n;
	c->kind = "ring";
	if ((rc = decode_rings(c, count, img)) || (rc = decode_urings(c, ucount, img)))
		return rc;
	if (c->off != c->len)
		return bad(c, "trailing bytes after the last record");
	return 0;
}

int aiotk_image_decode(const uint8_t *buf, size_t len, const char *name,
		       aiotk_image *img, aiotk_err *err)
{
	struct cursor c = { buf, len, 0, name, 0, err, "header" };
	memset(img, 0, sizeof(*img));
	int rc = decode(&c, img);
	if (rc)
		aiotk_image_free(img);
	return rc;
}

/* ---- encoding -------------------------------------------------------- */

static size_t put_record(uint8_t *out, const ProtobufCMessage *m)
{
	size_t n = protobuf_c_message_pack(m, out + 8);
	fmt_put_u32(out, (uint32_t)n);
	fmt_put_u32(out + 4, (uint32_t)crc32(0, out + 8, (uInt)n));
	return 8 + n;
}

static void header_to(const aiotk_image *img, AiotkHeaderEntry *h)
{
	aiotk_header_entry__init(h);
	h->format = AIOTK_IMAGE_FORMAT;
	h->cpus = img->cpus;
	h->page_size = img->page_size;
	h->release = (char *)img->release;
	h->formula = img->formula;
	h->aio_max_nr = img->aio_max_nr;
	h->time_ns = img->time_ns;
	h->ring_count = (uint32_t)img->nrings;
	/* absent without io_uring: such images stay byte for byte as before */
	h->has_uring_count = img->nurings != 0;
	h->uring_count = (uint32_t)img->nurings;
	h->has_pid = img->pid != 0;
	h->pid = img->pid;
	h->has_stopped_ns = img->stopped_ns != 0;
	h->stopped_ns = img->stopped_ns;
	h->warnings = img->warnings[0] ? (char *)img->warnings : NULL;
}

/* evs/ptrs are caller storage for r->nevents entries, cap/cptrs for
 * r->ncaptured. */
static void ring_to(const aiotk_ring *r, AiotkRingEntry *e,
		    AiotkEventEntry *evs, AiotkEventEntry **ptrs,
		    AiotkCapturedEntry *cap, AiotkCapturedEntry **cptrs)
{
	aiotk_ring_entry__init(e);
	e->addr = r->addr;
	e->ring_len = r->ring_len;
	e->nr = r->nr;
	e->head = r->head;
	e->tail = r->tail;
	e->has_n = r->n != 0;
	e->n = r->n;
	e->has_id = e->has_magic = e->has_compat_features = 1;
	e->has_incompat_features = e->has_header_length = 1;
	e->id = r->id;
	e->magic = r->magic;
	e->compat_features = r->compat_features;
	e->incompat_features = r->incompat_features;
	e->header_length = r->header_length;
	for (uint32_t i = 0; i < r->nevents; i++) {
		aiotk_event_entry__init(&evs[i]);
		evs[i].data = r->events[i].data;
		evs[i].obj = r->events[i].obj;
		evs[i].res = r->events[i].res;
		evs[i].res2 = r->events[i].res2;
		ptrs[i] = &evs[i];
	}
	e->n_events = r->nevents;
	e->events = ptrs;
	e->has_area = r->area != NULL;
	e->area.len = r->area ? (size_t)r->nr * AIOTK_EVENT_LEN : 0;
	e->area.data = (uint8_t *)r->area;
	e->has_kernel_tail = r->has_kernel_tail;
	e->kernel_tail = r->kernel_tail;
	for (uint32_t i = 0; i < r->ncaptured; i++) {
		aiotk_captured_entry__init(&cap[i]);
		cap[i].obj = r->captured[i].obj;
		cap[i].iocb.len = AIOTK_IOCB_LEN;
		cap[i].iocb.data = (uint8_t *)r->captured[i].iocb;
		cptrs[i] = &cap[i];
	}
	e->n_captured = r->ncaptured;
	e->captured = cptrs;
}

/* m appended to *buf as a record, *buf grown as needed. */
static int append(const ProtobufCMessage *m, uint8_t **buf, size_t *len, size_t *cap,
		  aiotk_err *err)
{
	size_t need = *len + 8 + protobuf_c_message_get_packed_size(m);
	uint8_t *nb = need > *cap ? realloc(*buf, need * 2) : *buf;
	if (!nb)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory encoding the image");
	*cap = need > *cap ? need * 2 : *cap;
	*buf = nb;
	*len += put_record(nb + *len, m);
	return 0;
}

static int encode_uring(const aiotk_uring *u, uint8_t **buf, size_t *len, size_t *cap,
			aiotk_err *err)
{
	AiotkUringEntry *e = uring_entry_new(u);
	if (!e)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory encoding io_uring fd %d", u->fd);
	int rc = append(&e->base, buf, len, cap, err);
	uring_entry_free(e);
	return rc;
}

static int encode_ring(const aiotk_ring *r, uint8_t **buf, size_t *len,
		       size_t *cap, aiotk_err *err)
{
	AiotkRingEntry e;
	size_t ne = r->nevents ? r->nevents : 1;
	size_t nc = r->ncaptured ? r->ncaptured : 1;
	AiotkEventEntry *evs = malloc(ne * sizeof(*evs));
	AiotkEventEntry **ptrs = malloc(ne * sizeof(*ptrs));
	AiotkCapturedEntry *caps = malloc(nc * sizeof(*caps));
	AiotkCapturedEntry **cptrs = malloc(nc * sizeof(*cptrs));
	int rc = 0;
	if (evs && ptrs && caps && cptrs) {
		ring_to(r, &e, evs, ptrs, caps, cptrs);
		rc = append(&e.base, buf, len, cap, err);
	} else
		rc = aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory encoding ring");
	free(evs);
	free(ptrs);
	free(caps);
	free(cptrs);
	return rc;
}

int aiotk_image_encode(const aiotk_image *img, uint8_t **buf, size_t *len,
		       aiotk_err *err)
{
	AiotkHeaderEntry h;
	header_to(img, &h);
	size_t cap = 4 + 8 + aiotk_header_entry__get_packed_size(&h) + 4096;
	*buf = malloc(cap);
	if (!*buf)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory encoding image");
	fmt_put_u32(*buf, FILE_MAGIC);
	*len = 4 + put_record(*buf + 4, &h.base);
	for (size_t i = 0; i < img->nrings + img->nurings; i++) {
		int rc = i < img->nrings ? encode_ring(&img->rings[i], buf, len, &cap, err)
					 : encode_uring(&img->urings[i - img->nrings], buf, len, &cap, err);
		if (rc) {
			free(*buf);
			*buf = NULL;
			return rc;
		}
	}
	return 0;
}
