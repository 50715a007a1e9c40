/* io_uring records of an image (images/uring.proto) to and from
 * aiotk_uring. Every count and length is checked before it is trusted. */
#include "formats/formats.h"

#include <stdlib.h>
#include <string.h>

/* Storage for one record's sub-messages, freed in one piece. */
struct entry_store {
	AiotkUringEntry e;
	AiotkUringFileEntry *files, **fptr;
	AiotkUringBufEntry *bufs, **bptr;
	AiotkUringReqEntry *reqs, **rptr;
	AiotkUringMapEntry *maps, **mptr;
	AiotkUringTimeoutEntry *tmos, **tptr;
	AiotkUringRingfdEntry *rfds, **rfptr;
	AiotkUringBlEntry *bls, **blptr;
};

static void files_to(const aiotk_uring *u, struct entry_store *s)
{
	for (size_t i = 0; i < u->nfiles; i++) {
		aiotk_uring_file_entry__init(&s->files[i]);
		s->files[i].slot = u->files[i].slot;
		s->files[i].fd = u->files[i].fd;
		s->files[i].path = u->files[i].path[0] ? (char *)u->files[i].path : NULL;
		s->fptr[i] = &s->files[i];
	}
	s->e.n_files = u->nfiles, s->e.files = s->fptr;
}

static void bufs_to(const aiotk_uring *u, struct entry_store *s)
{
	for (size_t i = 0; i < u->nbufs; i++) {
		aiotk_uring_buf_entry__init(&s->bufs[i]);
		s->bufs[i].slot = u->bufs[i].slot;
		s->bufs[i].addr = u->bufs[i].ubuf;
		s->bufs[i].len = u->bufs[i].len;
		s->bptr[i] = &s->bufs[i];
	}
	s->e.n_bufs = u->nbufs, s->e.bufs = s->bptr;
}

static void reqs_to(const aiotk_uring *u, struct entry_store *s)
{
	for (size_t i = 0; i < u->nreqs; i++) {
		const aiotk_uring_req *q = &u->reqs[i];
		AiotkUringReqEntry *r = &s->reqs[i];
		aiotk_uring_req_entry__init(r);
		r->opcode = q->opcode, r->user_data = q->user_data, r->fd = q->fd;
		r->has_file_fd = r->has_poll_events = r->has_flags = 1;
		r->file_fd = q->file_fd, r->poll_events = q->poll_events, r->flags = q->flags;
		if (q->has_args) {
			r->has_addr = r->has_addr2 = r->has_len = r->has_op_flags = 1;
			r->has_ioprio = r->has_file_slot = r->has_buf_group = r->has_done_io = 1;
			r->addr = q->addr, r->addr2 = q->addr2, r->len = q->len;
			r->op_flags = q->op_flags, r->ioprio = q->ioprio, r->file_slot = q->file_slot;
			r->buf_group = q->buf_group, r->done_io = q->done_io;
			r->has_mshot_len = 1, r->mshot_len = q->mshot_len;
		}
		s->rptr[i] = r;
	}
	s->e.n_reqs = u->nreqs, s->e.reqs = s->rptr;
}

static void maps_to(const aiotk_uring *u, struct entry_store *s)
{
	for (size_t i = 0; i < u->nmaps; i++) {
		const aiotk_uring_map *m = &u->maps[i];
		AiotkUringMapEntry *r = &s->maps[i];
		aiotk_uring_map_entry__init(r);
		r->start = m->start, r->end = m->end, r->offset = m->offset;
		r->has_dontfork = 1, r->dontfork = m->dontfork;
		r->has_data = m->data != NULL;
		r->data.data = m->data, r->data.len = m->data ? (size_t)(m->end - m->start) : 0;
		s->mptr[i] = r;
	}
	s->e.n_maps = u->nmaps, s->e.maps = s->mptr;
}

static void timeouts_to(const aiotk_uring *u, struct entry_store *s)
{
	for (size_t i = 0; i < u->ntimeouts; i++) {
		const aiotk_uring_timeout *t = &u->timeouts[i];
		AiotkUringTimeoutEntry *r = &s->tmos[i];
		aiotk_uring_timeout_entry__init(r);
		r->opcode = t->opcode, r->user_data = t->user_data, r->clockid = t->clockid;
		r->expires_ns = t->expires_ns, r->remaining_ns = t->remaining_ns;
		r->has_flags = r->has_off = r->has_target_seq = r->has_repeats = 1;
		r->flags = t->flags, r->off = t->off, r->target_seq = t->target_seq;
		r->repeats = t->repeats;
		r->has_ts_ns = 1, r->ts_ns = t->ts_ns;
		s->tptr[i] = r;
	}
	s->e.n_timeouts = u->ntimeouts, s->e.timeouts = s->tptr;
}

static void ringfds_to(const aiotk_uring *u, struct entry_store *s)
{
	for (size_t i = 0; i < u->nringfds; i++) {
		aiotk_uring_ringfd_entry__init(&s->rfds[i]);
		s->rfds[i].tid = u->ringfds[i].tid, s->rfds[i].index = u->ringfds[i].index;
		s->rfptr[i] = &s->rfds[i];
	}
	s->e.n_ringfds = u->nringfds, s->e.ringfds = s->rfptr;
}

static void bls_to(const aiotk_uring *u, struct entry_store *s)
{
	for (size_t i = 0; i < u->nbls; i++) {
		const aiotk_uring_bl *b = &u->bls[i];
		AiotkUringBlEntry *r = &s->bls[i];
		aiotk_uring_bl_entry__init(r);
		r->bgid = b->bgid, r->flags = b->flags;
		r->has_entries = r->has_nbufs = r->has_head = r->has_tail = 1;
		r->entries = b->entries, r->nbufs = b->nbufs, r->head = b->head, r->tail = b->tail;
		r->has_addr = 1, r->addr = b->addr;
		s->blptr[i] = r;
	}
	s->e.n_bls = u->nbls, s->e.bls = s->blptr;
}

static void scalars_to(const aiotk_uring *u, AiotkUringEntry *e)
{
	e->fd = u->fd, e->flags = u->flags;
	e->sq_entries = u->sq_entries, e->cq_entries = u->cq_entries;
	e->sq_head = u->sq_head, e->sq_tail = u->sq_tail;
	e->cq_head = u->cq_head, e->cq_tail = u->cq_tail;
	/* Every optional field is written: a reader tells 0 from unknown by
	 * `have`, as the view does. */
	e->has_ino = e->has_have = e->has_cached_sq_head = e->has_cached_cq_tail = 1;
	e->has_sq_dropped = e->has_cq_overflow = e->has_sq_flags = e->has_cq_flags = 1;
	e->has_submitter_tid = e->has_sq_thread_pid = e->has_sq_cpu = e->has_sq_thread_idle = 1;
	e->has_has_eventfd = e->has_eventfd_async = 1;
	e->has_nr_files = e->has_nr_bufs = e->has_nreqs_total = 1;
	e->ino = u->ino, e->have = u->have;
	e->cached_sq_head = u->cached_sq_head, e->cached_cq_tail = u->cached_cq_tail;
	e->sq_dropped = u->sq_dropped, e->cq_overflow = u->cq_overflow;
	e->sq_flags = u->sq_flags, e->cq_flags = u->cq_flags;
	e->submitter_tid = u->submitter_tid, e->sq_thread_pid = u->sq_thread_pid;
	e->sq_cpu = u->sq_cpu, e->sq_thread_idle = u->sq_thread_idle;
	e->has_eventfd = u->has_eventfd, e->eventfd_async = u->eventfd_async;
	e->nr_files = u->nr_files, e->nr_bufs = u->nr_bufs, e->nreqs_total = u->nreqs_total;
	e->has_cqes_off = e->has_sq_array_off = 1;
	e->cqes_off = u->cqes_off, e->sq_array_off = u->sq_array_off;
	e->has_ntimeouts_total = e->has_cq_timeouts = e->has_nbls_total = e->has_waiting = 1;
	e->waiting = u->waiting;
	e->has_unlisted = 1, e->unlisted = u->unlisted;
	e->ntimeouts_total = u->ntimeouts_total, e->cq_timeouts = u->cq_timeouts;
	e->nbls_total = u->nbls_total;
	e->has_eventfd_id = e->has_eventfd_fd = e->has_personalities = e->has_restricted = 1;
	e->eventfd_id = u->eventfd_id, e->eventfd_fd = u->eventfd_fd;
	e->personalities = u->personalities, e->restricted = u->restricted;
}

#define ALLOC(p, n) ((p) = calloc((n) ? (n) : 1, sizeof(*(p))))

AiotkUringEntry *uring_entry_new(const aiotk_uring *u)
{
	struct entry_store *s = calloc(1, sizeof(*s));
	if (!s || !ALLOC(s->files, u->nfiles) || !ALLOC(s->fptr, u->nfiles) ||
	    !ALLOC(s->bufs, u->nbufs) || !ALLOC(s->bptr, u->nbufs) ||
	    !ALLOC(s->reqs, u->nreqs) || !ALLOC(s->rptr, u->nreqs) ||
	    !ALLOC(s->maps, u->nmaps) || !ALLOC(s->mptr, u->nmaps) ||
	    !ALLOC(s->tmos, u->ntimeouts) || !ALLOC(s->tptr, u->ntimeouts) ||
	    !ALLOC(s->rfds, u->nringfds) || !ALLOC(s->rfptr, u->nringfds) ||
	    !ALLOC(s->bls, u->nbls) || !ALLOC(s->blptr, u->nbls)) {
		uring_entry_free(s ? &s->e : NULL);
		return NULL;
	}
	aiotk_uring_entry__init(&s->e);
	scalars_to(u, &s->e);
	files_to(u, s);
	bufs_to(u, s);
	reqs_to(u, s);
	maps_to(u, s);
	timeouts_to(u, s);
	ringfds_to(u, s);
	bls_to(u, s);
	return &s->e;
}

void uring_entry_free(AiotkUringEntry *e)
{
	struct entry_store *s = (struct entry_store *)e; /* e is its first member */
	if (!s)
		return;
	free(s->files), free(s->fptr), free(s->bufs), free(s->bptr);
	free(s->reqs), free(s->rptr), free(s->maps), free(s->mptr);
	free(s->tmos), free(s->tptr), free(s->rfds), free(s->rfptr), free(s->bls), free(s->blptr);
	free(s);
}

/* ---- decoding -------------------------------------------------------- */

/* Far above what the kernel allows (IORING_MAX_ENTRIES 32768, CQ twice
 * that; 64 K registered files by default, 16 K buffers). */
#define MAX_ENTRIES 65536u
#define MAX_LIST (1u << 20)
#define MAX_MAP (64ull << 20)

static int pow2(uint32_t v) { return v && v <= MAX_ENTRIES && !(v & (v - 1)); }

static void scalars_from(const AiotkUringEntry *e, aiotk_uring *u)
{
	u->fd = e->fd, u->ino = e->ino, u->have = e->have, u->flags = e->flags;
	u->sq_entries = e->sq_entries, u->cq_entries = e->cq_entries;
	u->sq_head = e->sq_head, u->sq_tail = e->sq_tail;
	u->cq_head = e->cq_head, u->cq_tail = e->cq_tail;
	u->cached_sq_head = e->cached_sq_head, u->cached_cq_tail = e->cached_cq_tail;
	u->sq_dropped = e->sq_dropped, u->cq_overflow = e->cq_overflow;
	u->sq_flags = e->sq_flags, u->cq_flags = e->cq_flags;
	u->submitter_tid = e->submitter_tid, u->sq_thread_pid = e->sq_thread_pid;
	u->sq_cpu = e->sq_cpu, u->sq_thread_idle = e->sq_thread_idle;
	u->has_eventfd = e->has_eventfd, u->eventfd_async = e->eventfd_async;
	u->nr_files = e->nr_files, u->nr_bufs = e->nr_bufs, u->nreqs_total = e->nreqs_total;
	u->cqes_off = e->cqes_off, u->sq_array_off = e->sq_array_off;
	u->ntimeouts_total = e->ntimeouts_total, u->cq_timeouts = e->cq_timeouts;
	u->waiting = e->waiting;
	u->unlisted = e->unlisted;
	u->nbls_total = e->nbls_total;
	/* Images from before these fields: nothing known of them. */
	u->eventfd_id = e->has_eventfd_id ? e->eventfd_id : -1;
	u->eventfd_fd = e->has_eventfd_fd ? e->eventfd_fd : -1;
	u->personalities = e->personalities, u->restricted = e->restricted;
}

static const char *lists_from(const AiotkUringEntry *e, aiotk_uring *u)
{
	if (e->n_files > MAX_LIST || e->n_bufs > MAX_LIST || e->n_reqs > MAX_LIST ||
	    e->n_maps > 64)
		return "absurd list length in an io_uring record";
	if (!ALLOC(u->files, e->n_files) || !ALLOC(u->bufs, e->n_bufs) ||
	    !ALLOC(u->reqs, e->n_reqs) || !ALLOC(u->maps, e->n_maps))
		return "out of memory";
	for (size_t i = 0; i < e->n_files; i++, u->nfiles++) {
		const AiotkUringFileEntry *f = e->files[i];
		u->files[i] = (aiotk_uring_file){ .slot = f->slot, .fd = f->fd };
		if (f->path && strlen(f->path) >= sizeof(u->files[i].path))
			return "a registered file's path is too long";
		strcpy(u->files[i].path, f->path ? f->path : "");
	}
	for (size_t i = 0; i < e->n_bufs; i++, u->nbufs++)
		u->bufs[i] = (aiotk_uring_buf){ e->bufs[i]->slot, e->bufs[i]->addr, e->bufs[i]->len };
	for (size_t i = 0; i < e->n_reqs; i++, u->nreqs++) {
		const AiotkUringReqEntry *r = e->reqs[i];
		if (r->opcode > 255)
			return "a request's opcode is out of range";
		u->reqs[i] = (aiotk_uring_req){ (uint8_t)r->opcode, r->user_data, r->fd,
			r->has_file_fd ? r->file_fd : -1, r->poll_events, r->flags, .has_args = r->has_addr,
			.addr = r->addr, .addr2 = r->addr2, .len = r->len, .op_flags = r->op_flags,
			.ioprio = r->ioprio, .file_slot = r->file_slot, .buf_group = r->buf_group,
			.done_io = r->done_io, .mshot_len = r->mshot_len, .has_mshot_len = r->has_mshot_len };
	}
	return NULL;
}

/* Timeouts, ring fds and buffer groups (images before them have none). */
static const char *extras_from(const AiotkUringEntry *e, aiotk_uring *u)
{
	if (e->n_timeouts > MAX_LIST || e->n_ringfds > MAX_LIST || e->n_bls > MAX_LIST)
		return "absurd list length in an io_uring record";
	if (!ALLOC(u->timeouts, e->n_timeouts) || !ALLOC(u->ringfds, e->n_ringfds) ||
	    !ALLOC(u->bls, e->n_bls))
		return "out of memory";
	for (size_t i = 0; i < e->n_timeouts; i++, u->ntimeouts++) {
		const AiotkUringTimeoutEntry *t = e->timeouts[i];
		if (t->opcode > 255)
			return "a timeout's opcode is out of range";
		u->timeouts[i] = (aiotk_uring_timeout){ .opcode = (uint8_t)t->opcode,
			.user_data = t->user_data, .clockid = t->clockid, .expires_ns = t->expires_ns,
			.remaining_ns = t->remaining_ns, .flags = t->flags, .off = t->off,
			.target_seq = t->target_seq, .repeats = t->repeats,
			.ts_ns = t->has_ts_ns ? t->ts_ns : -1 };
	}
	for (size_t i = 0; i < e->n_ringfds; i++, u->nringfds++)
		u->ringfds[i] = (aiotk_uring_ringfd){ e->ringfds[i]->tid, e->ringfds[i]->index };
	for (size_t i = 0; i < e->n_bls; i++, u->nbls++) {
		const AiotkUringBlEntry *b = e->bls[i];
		if (b->bgid > 0xffff || b->flags > 0xffff || b->head > 0xffff || b->tail > 0xffff)
			return "a buffer group's bgid, flags, head or tail is out of range";
		u->bls[i] = (aiotk_uring_bl){ .bgid = (uint16_t)b->bgid, .flags = (uint16_t)b->flags,
			.entries = b->entries, .nbufs = b->nbufs, .head = (uint16_t)b->head,
			.tail = (uint16_t)b->tail, .addr = b->addr };
	}
	return NULL;
}

static const char *maps_from(const AiotkUringEntry *e, aiotk_uring *u)
{
	for (size_t i = 0; i < e->n_maps; i++) {
		const AiotkUringMapEntry *m = e->maps[i];
		if (m->end <= m->start || m->end - m->start > MAX_MAP)
			return "a mapping's range is empty or too large";
		if (m->has_data && m->data.len != m->end - m->start)
			return "a mapping's saved bytes are not its length";
		aiotk_uring_map *d = &u->maps[u->nmaps++];
		*d = (aiotk_uring_map){ m->start, m->end, m->offset, NULL, m->dontfork };
		if (m->has_data && !(d->data = malloc(m->data.len)))
			return "out of memory";
		if (d->data)
			memcpy(d->data, m->data.data, m->data.len);
	}
	return NULL;
}

int uring_from_entry(const AiotkUringEntry *e, aiotk_uring *u, const char **why)
{
	memset(u, 0, sizeof(*u));
	*why = NULL;
	if (!pow2(e->sq_entries) || !pow2(e->cq_entries) || e->cq_entries < e->sq_entries)
		*why = "io_uring sizes out of range (entries must be powers of two, cq at least sq)";
	scalars_from(e, u);
	if (!*why)
		*why = lists_from(e, u);
	if (!*why)
		*why = maps_from(e, u);
	if (!*why)
		*why = extras_from(e, u);
	if (*why)
		aiotk_uring_free(u);
	return *why ? -1 : 0;
}
