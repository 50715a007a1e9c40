/* Reading a live ring: header, live events, optionally the whole area. */
#define _GNU_SOURCE
#include "aio/aio.h"
#include "target/target.h"

#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

uint32_t aiotk_ring_live(uint32_t nr, uint32_t head, uint32_t tail)
{
	return tail >= head ? tail - head : nr - head + tail;
}

int aiotk_ring_validate(const aiotk_ring *r, unsigned page_size,
			aiotk_err *err)
{
	unsigned long long a = r->addr;
	if (r->magic != AIOTK_RING_MAGIC)
		return aiotk_fail(err, AIOTK_ENOTRING, 0,
				  "ring 0x%llx: magic 0x%08x is not an AIO ring's (0x%08x)",
				  a, r->magic, AIOTK_RING_MAGIC);
	if (r->header_length != AIOTK_HEADER_LEN)
		return aiotk_fail(err, AIOTK_ENOTRING, 0,
				  "ring 0x%llx: header_length %u, expected %u",
				  a, r->header_length, AIOTK_HEADER_LEN);
	if (!r->addr || r->addr % page_size)
		return aiotk_fail(err, AIOTK_EINVAL, 0,
				  "ring 0x%llx: address is not page aligned (%u)",
				  a, page_size);
	if (!r->ring_len || r->ring_len % page_size)
		return aiotk_fail(err, AIOTK_EINVAL, 0,
				  "ring 0x%llx: length %llu is not a multiple of the page size %u",
				  a, (unsigned long long)r->ring_len, page_size);
	if (r->nr != aiotk_geom_nr_for_len(r->ring_len) || r->nr < 2)
		return aiotk_fail(err, AIOTK_EINVAL, 0,
				  "ring 0x%llx: nr %u does not match a %llu-byte mapping (%u slots)",
				  a, r->nr, (unsigned long long)r->ring_len,
				  aiotk_geom_nr_for_len(r->ring_len));
	if (r->head >= r->nr || r->tail >= r->nr)
		return aiotk_fail(err, AIOTK_EINVAL, 0,
				  "ring 0x%llx: head %u / tail %u out of range for nr %u",
				  a, r->head, r->tail, r->nr);
	if (r->nevents != aiotk_ring_live(r->nr, r->head, r->tail))
		return aiotk_fail(err, AIOTK_EINVAL, 0,
				  "ring 0x%llx: %u events saved but head %u..tail %u holds %u",
				  a, r->nevents, r->head, r->tail,
				  aiotk_ring_live(r->nr, r->head, r->tail));
	return 0;
}

/* The live slots head..tail-1 as at most two runs (slot, count): the one
 * from head, and the one from slot 0 when the ring has wrapped. */
static unsigned segments(const aiotk_ring *r, uint32_t slot[2], uint32_t count[2])
{
	uint32_t first = r->tail >= r->head ? r->nevents : r->nr - r->head;
	unsigned n = 0;
	if (first)
		slot[n] = r->head, count[n++] = first;
	if (r->nevents > first)
		slot[n] = 0, count[n++] = r->nevents - first;
	return n;
}

/* Slots head..tail-1 of an area at addr (target) or in memory (area). */
static int read_live(aiotk_target *t, aiotk_ring *r, aiotk_err *err)
{
	uint32_t slot[2], count[2];
	aiotk_event *to = r->events;
	int rc = 0;
	for (unsigned i = 0, n = segments(r, slot, count); !rc && i < n; to += count[i++]) {
		if (r->area)
			memcpy(to, r->area + slot[i], count[i] * sizeof(aiotk_event));
		else
			rc = aiotk_peek(t, r->addr + AIOTK_HEADER_LEN + (uint64_t)slot[i] * AIOTK_EVENT_LEN,
					to, count[i] * sizeof(aiotk_event), err);
	}
	return rc;
}

void aiotk_ring_set_header(aiotk_ring *r, const aiotk_ring_header *h)
{
	r->id = h->id;
	r->nr = h->nr;
	r->head = h->head;
	r->tail = h->tail;
	r->magic = h->magic;
	r->compat_features = h->compat_features;
	r->incompat_features = h->incompat_features;
	r->header_length = h->header_length;
}

/* The mapping must be exactly the ring the header describes: a wrong nr in
 * a live ring would mean we are not looking at a ring at all. */
static int check_mapping(aiotk_target *t, const aiotk_ring *r,
			 uint64_t known_len, aiotk_err *err)
{
	aiotk_vma v;
	if (known_len) {
		if (known_len == r->ring_len)
			return 0;
		return aiotk_fail(err, AIOTK_ENOTRING, 0,
				  "ring 0x%llx: nr %u means %llu bytes but the mapping is %llu bytes",
				  (unsigned long long)r->addr, r->nr,
				  (unsigned long long)r->ring_len,
				  (unsigned long long)known_len);
	}
	int rc = aiotk_maps_overlap(t->pid, r->addr, 1, 0, &v, err);
	if (rc < 0)
		return rc;
	if (rc == 0 || v.start != r->addr)
		return aiotk_fail(err, AIOTK_ENOTRING, 0,
				  "0x%llx is not the start of a mapping",
				  (unsigned long long)r->addr);
	if (v.end - v.start != r->ring_len)
		return aiotk_fail(err, AIOTK_ENOTRING, 0,
				  "ring 0x%llx: nr %u means %llu bytes but the mapping is %llu bytes (%s)",
				  (unsigned long long)r->addr, r->nr,
				  (unsigned long long)r->ring_len,
				  (unsigned long long)(v.end - v.start), v.path);
	return 0;
}

/* r from header h as read at r->addr: checked, its buffers allocated. */
static int from_header(aiotk_target *t, aiotk_ring *r, const aiotk_ring_header *h,
		       int flags, unsigned page_size, uint64_t known_len, aiotk_err *err)
{
	aiotk_ring_set_header(r, h);
	r->ring_len = aiotk_geom_len_for_nr(h->nr, page_size);
	r->nevents = h->head < h->nr && h->tail < h->nr ?
		aiotk_ring_live(h->nr, h->head, h->tail) : 0;
	int rc = aiotk_ring_validate(r, page_size, err);
	if (!rc)
		rc = check_mapping(t, r, known_len, err);
	if (rc)
		return rc;
	r->events = calloc(r->nevents ? r->nevents : 1, sizeof(aiotk_event));
	if (flags & AIOTK_SNAP_AREA)
		r->area = calloc(r->nr, sizeof(aiotk_event));
	if (!r->events || ((flags & AIOTK_SNAP_AREA) && !r->area))
		return aiotk_fail(err, AIOTK_ENOMEM, 0,
				  "ring 0x%llx: out of memory for %u events",
				  (unsigned long long)r->addr, r->nr);
	return 0;
}

static int read_once(aiotk_target *t, aiotk_ring *r, int flags,
		     unsigned page_size, uint64_t known_len, aiotk_err *err)
{
	aiotk_ring_header h;
	int rc = aiotk_peek(t, r->addr, &h, sizeof(h), err);
	if (!rc)
		rc = from_header(t, r, &h, flags, page_size, known_len, err);
	if (!rc && r->area)
		rc = aiotk_peek(t, r->addr + AIOTK_HEADER_LEN, r->area,
				(size_t)r->nr * AIOTK_EVENT_LEN, err);
	return rc ? rc : read_live(t, r, err);
}

/* A request completing while we read moves the tail: read again until the
 * header is the same before and after, so the copy is one consistent state. */
int aiotk_snapshot(aiotk_target *t, uint64_t addr, int flags, aiotk_ring *out,
		   aiotk_err *err)
{
	return aiotk_snapshot_len(t, addr, 0, flags, out, err);
}

int aiotk_snapshot_len(aiotk_target *t, uint64_t addr, uint64_t ring_len,
		       int flags, aiotk_ring *out, aiotk_err *err)
{
	/* Only the page size matters here; this runs while a process is
	 * stopped, so no host probe (several /proc and /sys reads) per ring. */
	unsigned page = (unsigned)sysconf(_SC_PAGESIZE);
	int rc;
	for (int attempt = 0; attempt < 8; attempt++) {
		aiotk_ring_header again;
		memset(out, 0, sizeof(*out));
		out->addr = addr;
		rc = read_once(t, out, flags, page, ring_len, err);
		if (!rc)
			rc = aiotk_peek(t, addr, &again, sizeof(again), err);
		if (rc) {
			aiotk_ring_free(out);
			return rc;
		}
		if (again.tail == out->tail && again.head == out->head)
			return 0;
		aiotk_ring_free(out);
	}
	return aiotk_fail(err, AIOTK_ESTUCK, 0,
			  "ring 0x%llx: tail kept moving over 8 reads; requests are completing, stop the process first",
			  (unsigned long long)addr);
}

int aiotk_ring_copy(aiotk_ring *dst, const aiotk_ring *src, aiotk_err *err)
{
	*dst = *src;
	dst->events = calloc(src->nevents ? src->nevents : 1, sizeof(aiotk_event));
	dst->area = src->area ? calloc(src->nr, sizeof(aiotk_event)) : NULL;
	dst->captured = src->ncaptured ? calloc(src->ncaptured, sizeof(aiotk_captured)) : NULL;
	if (!dst->events || (src->area && !dst->area) || (src->ncaptured && !dst->captured)) {
		aiotk_ring_free(dst);
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory copying a ring");
	}
	memcpy(dst->events, src->events, src->nevents * sizeof(aiotk_event));
	if (src->area)
		memcpy(dst->area, src->area, src->nr * sizeof(aiotk_event));
	if (src->ncaptured)
		memcpy(dst->captured, src->captured, src->ncaptured * sizeof(aiotk_captured));
	return 0;
}

void aiotk_ring_free(aiotk_ring *r)
{
	free(r->events);
	free(r->area);
	free(r->captured);
	r->events = NULL;
	r->area = NULL;
	r->captured = NULL;
	r->ncaptured = 0;
}

/* ---- many rings at once ---------------------------------------------- */
/* A dump reads every ring while the process is stopped. One ring costs
 * three process_vm_readv (header, live events, header again); n rings are
 * read with three in all, each naming every ring's range. Anything out of
 * the ordinary (a short read, a ring that moved, the whole area asked
 * for) is read ring by ring, which says exactly what went wrong. */
#define MANY_MAX 256 /* rings per batch: 2 iovecs each stays under IOV_MAX */

static int one_by_one(aiotk_target *t, const uint64_t *addr, const uint64_t *len,
		      size_t n, int flags, aiotk_ring *out, aiotk_err *err)
{
	for (size_t i = 0; i < n; i++) {
		int rc = aiotk_snapshot_len(t, addr[i], len ? len[i] : 0, flags, &out[i], err);
		if (rc) {
			while (i--)
				aiotk_ring_free(&out[i]);
			return rc;
		}
	}
	return 0;
}

/* The process whose memory t reads with process_vm_readv, or -1. */
static int mem_pid(const aiotk_target *t)
{
	return aiotk_target_is_self(t) ? (int)getpid() : t->pid > 0 ? t->pid : -1;
}

static int read_headers(int pid, const uint64_t *addr, size_t n, aiotk_ring_header *h)
{
	struct iovec local = { h, n * sizeof(*h) }, remote[MANY_MAX];
	for (size_t i = 0; i < n; i++)
		remote[i] = (struct iovec){ (void *)(uintptr_t)addr[i], sizeof(*h) };
	return process_vm_readv(pid, &local, 1, remote, n, 0) == (ssize_t)(n * sizeof(*h));
}

/* Every ring's live events, read with one call: the runs segments() gives,
 * remote in the target and local in each ring's events. */
static int read_events(int pid, aiotk_ring *out, size_t n)
{
	struct iovec local[2 * MANY_MAX], remote[2 * MANY_MAX];
	size_t k = 0, want = 0;
	for (size_t i = 0; i < n; i++) {
		uint32_t slot[2], count[2];
		aiotk_event *to = out[i].events;
		for (unsigned j = 0, m = segments(&out[i], slot, count); j < m; to += count[j++], k++) {
			size_t len = count[j] * sizeof(aiotk_event);
			local[k] = (struct iovec){ to, len };
			remote[k] = (struct iovec){ (void *)(uintptr_t)(out[i].addr + AIOTK_HEADER_LEN +
				(uint64_t)slot[j] * AIOTK_EVENT_LEN), len };
			want += len;
		}
	}
	return !want || process_vm_readv(pid, local, k, remote, k, 0) == (ssize_t)want;
}

static int batch(aiotk_target *t, int pid, const uint64_t *addr, const uint64_t *len,
		 size_t n, aiotk_ring *out, aiotk_err *err)
{
	aiotk_ring_header h[MANY_MAX], again[MANY_MAX];
	unsigned page = (unsigned)sysconf(_SC_PAGESIZE);
	int rc = 0;
	if (!read_headers(pid, addr, n, h))
		return 1;
	memset(out, 0, n * sizeof(*out));
	for (size_t i = 0; !rc && i < n; i++) {
		out[i].addr = addr[i];
		rc = from_header(t, &out[i], &h[i], 0, page, len ? len[i] : 0, err);
	}
	if (!rc && (!read_events(pid, out, n) || !read_headers(pid, addr, n, again)))
		rc = 1;
	for (size_t i = 0; !rc && i < n; i++) {
		if (again[i].head == h[i].head && again[i].tail == h[i].tail)
			continue;
		aiotk_ring_free(&out[i]);  /* it moved: read on its own */
		rc = aiotk_snapshot_len(t, addr[i], len ? len[i] : 0, 0, &out[i], err);
	}
	if (rc)
		for (size_t i = 0; i < n; i++)
			aiotk_ring_free(&out[i]);
	return rc;
}

int aiotk_snapshot_many(aiotk_target *t, const uint64_t *addr, const uint64_t *len,
			size_t n, int flags, aiotk_ring *out, aiotk_err *err)
{
	int pid = mem_pid(t);
	if (pid < 0 || (flags & AIOTK_SNAP_AREA) || n > MANY_MAX || n == 0)
		return one_by_one(t, addr, len, n, flags, out, err);
	int rc = batch(t, pid, addr, len, n, out, err);
	/* 1: a read came short; ring by ring says which and why. */
	return rc == 1 ? one_by_one(t, addr, len, n, flags, out, err) : rc;
}
