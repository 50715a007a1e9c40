/* The kernel's view of a process's io_uring instances: runs the task_file
 * iterator of uring_view.bpf.c (loaded with the AIO view, or opened from
 * their pin, by core/kview/viewer.c) on one process and turns its records
 * into aiotk_uring_view. The ring mappings' addresses are not kept by the
 * kernel (it keeps its own pages): the iterator walks the task's VMAs for
 * them (Linux 6.7+'s VMA iterator, when mmap_lock is free), else they come
 * from /proc/PID/maps, matched by the instance's anon inode. The process
 * is neither stopped nor traced. */
#define _GNU_SOURCE
#include "target/target.h"
#include "uring/uring.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef AIOTK_HAVE_BPF
#include <bpf/bpf.h>

#include "kview/kview.h"
#include "uring/kview/uring_view_records.h"

/* The public bits are the records' bits: one is read into the other. */
_Static_assert((int)AIOTK_URING_HAVE_RINGS == (int)AIOTK_UVIEW_HAVE_RINGS &&
	       (int)AIOTK_URING_HAVE_FILES == (int)AIOTK_UVIEW_HAVE_FILES &&
	       (int)AIOTK_URING_HAVE_BUFS == (int)AIOTK_UVIEW_HAVE_BUFS &&
	       (int)AIOTK_URING_HAVE_ISSUER == (int)AIOTK_UVIEW_HAVE_ISSUER &&
	       (int)AIOTK_URING_HAVE_REQS == (int)AIOTK_UVIEW_HAVE_REQS &&
	       (int)AIOTK_URING_HAVE_TIMEOUTS == (int)AIOTK_UVIEW_HAVE_TIMEOUTS &&
	       (int)AIOTK_URING_HAVE_RINGFDS == (int)AIOTK_UVIEW_HAVE_RINGFDS &&
	       (int)AIOTK_URING_HAVE_BLS == (int)AIOTK_UVIEW_HAVE_BLS &&
	       (int)AIOTK_URING_HAVE_UNLISTED == (int)AIOTK_UVIEW_HAVE_UNLISTED, "have bits");

/* Everything one run of the iterator wrote. */
struct out {
	char *p;
	size_t len;
};

static int run_iter(aiotk_kviewer *v, int pid, struct out *o, aiotk_err *err)
{
	/* every thread; shared fd tables once */
	int link = kviewer_link(v, KVIEWER_URING, pid, 1);
	if (link < 0) {
		int e = errno;
		if (e == ESRCH || e == ENOENT)
			return aiotk_fail(err, AIOTK_ESYS, ESRCH, "process %d: no such process", pid);
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, e,
				  "this kernel cannot run a task_file iterator on one process (%s; needs Linux 6.1 or later)",
				  strerror(e));
	}
	FILE *mem = open_memstream(&o->p, &o->len);
	int rc = 0, fd = bpf_iter_create(link);
	if (fd < 0 || !mem)
		rc = aiotk_fail(err, AIOTK_ESYS, errno, "creating the io_uring view's iterator: %s",
				strerror(errno));
	char buf[32768];
	ssize_t got;
	while (!rc && ((got = read(fd, buf, sizeof(buf))) > 0 || (got < 0 && errno == EINTR)))
		if (got > 0 && fwrite(buf, 1, (size_t)got, mem) != (size_t)got)
			rc = aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
	if (!rc && got < 0)
		rc = aiotk_fail(err, AIOTK_ESYS, errno, "reading the io_uring view's iterator: %s",
				strerror(errno));
	if (mem)
		fclose(mem);
	if (fd >= 0)
		close(fd);
	close(link);
	return rc;
}

/* Records as they arrive: the process's files, and the slots and
 * requests of the instance whose record comes next. */
struct parse {
	struct aiotk_uview_fd_rec *fds;
	size_t nfds;
	uint64_t *file_ptr, *req_file; /* beside pending.files / .reqs */
	aiotk_uring pending;
	int pid;
	int maps_missing;              /* an instance's mappings not read */
	uint32_t all_maps;             /* io_uring mappings of the process */
	struct tctx {                  /* a thread of instance `ring` */
		int tid;
		int64_t inflight;
		size_t ring;
	} *tctxs;
	size_t ntctxs;
	uint32_t *listed;              /* per instance: requests on a list */
};

static int grow(void *pp, size_t n, size_t size, aiotk_err *err)
{
	void *g = realloc(*(void **)pp, (n + 1) * size);
	if (!g)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
	*(void **)pp = g;
	return 0;
}

static int add_fd(struct parse *ps, const struct aiotk_uview_fd_rec *r, aiotk_err *err)
{
	int rc = grow(&ps->fds, ps->nfds, sizeof(*r), err);
	if (!rc)
		ps->fds[ps->nfds++] = *r;
	return rc;
}

static int add_file(struct parse *ps, const struct aiotk_uview_file_rec *r, aiotk_err *err)
{
	aiotk_uring *u = &ps->pending;
	int rc = grow(&u->files, u->nfiles, sizeof(*u->files), err);
	if (!rc)
		rc = grow(&ps->file_ptr, u->nfiles, sizeof(*ps->file_ptr), err);
	if (rc)
		return rc;
	ps->file_ptr[u->nfiles] = r->file;
	u->files[u->nfiles++] = (aiotk_uring_file){ .slot = r->slot, .fd = -1 };
	return 0;
}

static int add_buf(struct parse *ps, const struct aiotk_uview_buf_rec *r, aiotk_err *err)
{
	aiotk_uring *u = &ps->pending;
	int rc = grow(&u->bufs, u->nbufs, sizeof(*u->bufs), err);
	if (!rc)
		u->bufs[u->nbufs++] = (aiotk_uring_buf){ .slot = r->slot, .ubuf = r->ubuf,
							 .len = r->len };
	return rc;
}

static int add_req(struct parse *ps, const struct aiotk_uview_req_rec *r, aiotk_err *err)
{
	aiotk_uring *u = &ps->pending;
	int rc = grow(&u->reqs, u->nreqs, sizeof(*u->reqs), err);
	if (!rc)
		rc = grow(&ps->req_file, u->nreqs, sizeof(*ps->req_file), err);
	if (rc)
		return rc;
	ps->req_file[u->nreqs] = r->file;
	u->reqs[u->nreqs++] = (aiotk_uring_req){
		.opcode = (uint8_t)r->opcode, .user_data = r->user_data, .fd = r->fd,
		.file_fd = -1, .poll_events = r->poll_events, .flags = r->flags };
	return 0;
}

/* An ACCEPT's or RECV's arguments: those of the request just added. */
static int add_sockreq(struct parse *ps, const struct aiotk_uview_sockreq_rec *r, aiotk_err *err)
{
	aiotk_uring *u = &ps->pending;
	if (!u->nreqs)
		return aiotk_fail(err, AIOTK_EIMAGE, 0, "io_uring view: request arguments before any request");
	aiotk_uring_req *q = &u->reqs[u->nreqs - 1];
	q->has_args = 1, q->addr = r->addr, q->addr2 = r->addr2, q->len = r->len;
	q->op_flags = r->op_flags, q->ioprio = r->ioprio, q->file_slot = r->file_slot;
	q->buf_group = r->buf_group, q->done_io = r->done_io;
	q->mshot_len = r->mshot_len, q->has_mshot_len = 1;
	return 0;
}

/* What remains of a timer expiring at expires in clock clockid, now. */
static int64_t remaining(int clockid, int64_t expires)
{
	struct timespec now;
	if (clockid < 0 || clock_gettime(clockid, &now))
		return 0;
	return expires - ((int64_t)now.tv_sec * 1000000000 + now.tv_nsec);
}

static int add_timeout(struct parse *ps, const struct aiotk_uview_timeout_rec *r, aiotk_err *err)
{
	aiotk_uring *u = &ps->pending;
	int rc = grow(&u->timeouts, u->ntimeouts, sizeof(*u->timeouts), err);
	if (!rc)
		u->timeouts[u->ntimeouts++] = (aiotk_uring_timeout){
			.opcode = (uint8_t)r->opcode, .user_data = r->user_data,
			.clockid = r->clockid, .expires_ns = r->expires,
			.remaining_ns = remaining(r->clockid, r->expires), .flags = r->flags,
			.off = r->off, .target_seq = r->target_seq, .repeats = r->repeats,
			.ts_ns = r->ts };
	return rc;
}

static int add_ringfd(struct parse *ps, const struct aiotk_uview_ringfd_rec *r, aiotk_err *err)
{
	aiotk_uring *u = &ps->pending;
	int rc = grow(&u->ringfds, u->nringfds, sizeof(*u->ringfds), err);
	if (!rc)
		u->ringfds[u->nringfds++] = (aiotk_uring_ringfd){ r->tid, r->index };
	return rc;
}

/* Where a ring in the application's memory is, or 0: where its first
 * page's index says (an anonymous page's index is its address >> 12
 * unless its mapping was moved), if the process's memory there holds
 * what the kernel's view of the ring does: its tail and its first
 * entry's buffer address. */
static uint64_t user_ring_addr(int pid, const struct aiotk_uview_bl_rec *r)
{
	uint64_t at = r->page_index << 12, first[2];
	uint16_t tail;
	if (!r->user || !r->page_index || aiotk_vm_rw(pid, at, first, sizeof(first), 0))
		return 0;
	memcpy(&tail, (char *)first + 14, sizeof(tail));
	return tail == r->tail && first[0] == r->first_addr ? at : 0;
}

static int add_bl(struct parse *ps, const struct aiotk_uview_bl_rec *r, aiotk_err *err)
{
	aiotk_uring *u = &ps->pending;
	int rc = grow(&u->bls, u->nbls, sizeof(*u->bls), err);
	if (!rc)
		u->bls[u->nbls++] = (aiotk_uring_bl){ .bgid = r->bgid,
			.flags = (uint16_t)((r->flags & 3) | (r->user ? AIOTK_URING_BL_USER : 0)),
			.entries = r->entries, .nbufs = r->nbufs, .head = r->head, .tail = r->tail,
			.addr = user_ring_addr(ps->pid, r) };
	return rc;
}

static int add_tctx(struct parse *ps, const aiotk_uring_view *uv,
		    const struct aiotk_uview_tctx_rec *r, aiotk_err *err)
{
	int rc = grow(&ps->tctxs, ps->ntctxs, sizeof(*ps->tctxs), err);
	if (!rc)
		ps->tctxs[ps->ntctxs++] = (struct tctx){ r->tid, r->inflight, uv->n };
	return rc;
}

static int add_map(struct parse *ps, const struct aiotk_uview_map_rec *r, aiotk_err *err)
{
	aiotk_uring *u = &ps->pending;
	int rc = grow(&u->maps, u->nmaps, sizeof(*u->maps), err);
	if (!rc)
		u->maps[u->nmaps++] = (aiotk_uring_map){ r->start, r->end,
			r->pgoff * (uint64_t)sysconf(_SC_PAGESIZE), NULL, (int)r->dontfork };
	return rc;
}

/* The fd of the file at address file, among the records read so far and
 * the instances (a registered ring); -1 if the process has it in no fd. */
static int fd_of(const struct parse *ps, const aiotk_uring_view *uv,
		 const uint64_t *ring_file, uint64_t file)
{
	for (size_t i = 0; file && i < ps->nfds; i++)
		if (ps->fds[i].file == file)
			return (int)ps->fds[i].fd;
	for (size_t i = 0; file && i < uv->n; i++)
		if (ring_file[i] == file)
			return uv->ring[i].fd;
	return -1;
}

static void fill_ring(aiotk_uring *u, const struct aiotk_uview_ring_rec *r)
{
	u->fd = (int)r->fd, u->ino = r->ino, u->have = r->have, u->flags = r->flags;
	u->sq_entries = r->sq_entries, u->cq_entries = r->cq_entries;
	u->sq_head = r->sq_head, u->sq_tail = r->sq_tail;
	u->cq_head = r->cq_head, u->cq_tail = r->cq_tail;
	u->cached_sq_head = r->cached_sq_head, u->cached_cq_tail = r->cached_cq_tail;
	u->sq_dropped = r->sq_dropped, u->cq_overflow = r->cq_overflow;
	u->sq_flags = r->sq_flags, u->cq_flags = r->cq_flags;
	u->submitter_tid = r->submitter_tid;
	u->sq_thread_pid = r->sq_thread_pid, u->sq_cpu = r->sq_cpu;
	u->sq_thread_idle = r->sq_thread_idle;
	u->has_eventfd = (int)r->has_evfd, u->eventfd_async = (int)r->evfd_async;
	u->eventfd_id = r->has_evfd ? r->evfd_id : -1, u->eventfd_fd = -1;
	u->personalities = (int)r->has_pers, u->restricted = (int)r->restricted;
	u->nr_files = r->nr_files, u->nr_bufs = r->nr_bufs, u->nreqs_total = r->nreqs;
	u->cqes_off = r->cqes_off, u->sq_array_off = r->sq_array_off;
	u->ntimeouts_total = r->ntimeouts, u->nbls_total = r->nbls;
	u->cq_timeouts = r->cq_timeouts;
	u->waiting = r->waiting;
}

/* The pending slots and requests become the instance r names. Their file
 * addresses are kept in ring_file/file_ptr/req_file until every fd is
 * known (resolve). */
struct addrs {
	uint64_t *ring_file;
	uint64_t **file_ptr, **req_file;
};

static int add_ring(struct parse *ps, aiotk_uring_view *uv, struct addrs *a,
		    const struct aiotk_uview_ring_rec *r, aiotk_err *err)
{
	int rc = grow(&uv->ring, uv->n, sizeof(*uv->ring), err);
	if (!rc)
		rc = grow(&a->ring_file, uv->n, sizeof(*a->ring_file), err);
	if (!rc)
		rc = grow(&a->file_ptr, uv->n, sizeof(*a->file_ptr), err);
	if (!rc)
		rc = grow(&a->req_file, uv->n, sizeof(*a->req_file), err);
	if (!rc)
		rc = grow(&ps->listed, uv->n, sizeof(*ps->listed), err);
	if (rc)
		return rc;
	fill_ring(&ps->pending, r);
	/* a poll's wakeup waits as task work while it stays in cancel_table */
	ps->listed[uv->n] = r->nreqs + r->ntimeouts + r->waiting - r->waiting_polls;
	ps->maps_missing |= r->maps_rc != 0;
	if (r->all_maps > ps->all_maps)
		ps->all_maps = r->all_maps;
	a->ring_file[uv->n] = r->file;
	a->file_ptr[uv->n] = ps->file_ptr;
	a->req_file[uv->n] = ps->req_file;
	uv->ring[uv->n++] = ps->pending;
	memset(&ps->pending, 0, sizeof(ps->pending));
	ps->file_ptr = ps->req_file = NULL;
	return 0;
}

static void resolve(const struct parse *ps, aiotk_uring_view *uv, const struct addrs *a)
{
	for (size_t i = 0; i < uv->n; i++) {
		aiotk_uring *u = &uv->ring[i];
		for (size_t j = 0; j < u->nfiles; j++)
			u->files[j].fd = fd_of(ps, uv, a->ring_file, a->file_ptr[i][j]);
		for (size_t j = 0; j < u->nreqs; j++)
			u->reqs[j].file_fd = fd_of(ps, uv, a->ring_file, a->req_file[i][j]);
	}
}

/* The first instance (lowest index) sharing a thread with instance i,
 * through any chain of shared threads: its group's representative. */
static size_t group_of(const struct parse *ps, size_t i)
{
	for (int moved = 1; moved;) {
		moved = 0;
		for (size_t j = 0; j < ps->ntctxs; j++)
			for (size_t k = 0; k < ps->ntctxs; k++)
				if (ps->tctxs[j].ring == i && ps->tctxs[k].tid == ps->tctxs[j].tid &&
				    ps->tctxs[k].ring < i)
					i = ps->tctxs[k].ring, moved = 1;
	}
	return i;
}

/* Each group of instances sharing threads: its threads' requests in
 * flight (each thread once) less those on the lists its instances have,
 * on its first instance. A thread's count is of every instance it used. */
static void count_unlisted(const struct parse *ps, aiotk_uring_view *uv)
{
	for (size_t i = 0; i < uv->n; i++) {
		if (!(uv->ring[i].have & AIOTK_URING_HAVE_UNLISTED) || group_of(ps, i) != i)
			continue;
		int64_t in_flight = 0, listed = 0;
		for (size_t j = 0; j < ps->ntctxs; j++) {
			int first = 1;
			for (size_t k = 0; k < j; k++)
				first &= ps->tctxs[k].tid != ps->tctxs[j].tid;
			if (first && group_of(ps, ps->tctxs[j].ring) == i)
				in_flight += ps->tctxs[j].inflight;
		}
		for (size_t k = i; k < uv->n; k++)
			if (group_of(ps, k) == i)
				listed += ps->listed[k];
		uv->ring[i].unlisted = in_flight > listed ? (uint32_t)(in_flight - listed) : 0;
	}
}

/* The size of a record of this type; 0: unknown. */
static size_t rec_size(uint32_t type)
{
	switch (type) {
	case AIOTK_UVIEW_FD: return sizeof(struct aiotk_uview_fd_rec);
	case AIOTK_UVIEW_RING: return sizeof(struct aiotk_uview_ring_rec);
	case AIOTK_UVIEW_FILE: return sizeof(struct aiotk_uview_file_rec);
	case AIOTK_UVIEW_BUF: return sizeof(struct aiotk_uview_buf_rec);
	case AIOTK_UVIEW_REQ: return sizeof(struct aiotk_uview_req_rec);
	case AIOTK_UVIEW_TIMEOUT: return sizeof(struct aiotk_uview_timeout_rec);
	case AIOTK_UVIEW_RINGFD: return sizeof(struct aiotk_uview_ringfd_rec);
	case AIOTK_UVIEW_BL: return sizeof(struct aiotk_uview_bl_rec);
	case AIOTK_UVIEW_MAP: return sizeof(struct aiotk_uview_map_rec);
	case AIOTK_UVIEW_TCTX: return sizeof(struct aiotk_uview_tctx_rec);
	case AIOTK_UVIEW_SOCKREQ: return sizeof(struct aiotk_uview_sockreq_rec);
	}
	return 0;
}

static int one_rec(struct parse *ps, aiotk_uring_view *uv, struct addrs *a,
		   uint32_t type, const void *p, aiotk_err *err)
{
	switch (type) {
	case AIOTK_UVIEW_FD: return add_fd(ps, p, err);
	case AIOTK_UVIEW_FILE: return add_file(ps, p, err);
	case AIOTK_UVIEW_BUF: return add_buf(ps, p, err);
	case AIOTK_UVIEW_REQ: return add_req(ps, p, err);
	case AIOTK_UVIEW_TIMEOUT: return add_timeout(ps, p, err);
	case AIOTK_UVIEW_RINGFD: return add_ringfd(ps, p, err);
	case AIOTK_UVIEW_BL: return add_bl(ps, p, err);
	case AIOTK_UVIEW_MAP: return add_map(ps, p, err);
	case AIOTK_UVIEW_TCTX: return add_tctx(ps, uv, p, err);
	case AIOTK_UVIEW_SOCKREQ: return add_sockreq(ps, p, err);
	default: return add_ring(ps, uv, a, p, err);
	}
}

/* *maps_missing: some instance's mappings were not read (the caller
 * reads them from /proc/PID/maps). */
static int parse(const struct out *o, int pid, aiotk_uring_view *uv, int *maps_missing,
		 aiotk_err *err)
{
	struct parse ps = { .pid = pid };
	struct addrs a = { 0 };
	int rc = 0;
	for (size_t at = 0; !rc && at < o->len;) {
		uint32_t type = 0;
		size_t size = 0;
		if (at + sizeof(type) <= o->len)
			memcpy(&type, o->p + at, sizeof(type)), size = rec_size(type);
		if (!size || at + size > o->len) {
			rc = aiotk_fail(err, AIOTK_EIMAGE, 0,
					"io_uring view record %u at byte %zu is unknown or cut short",
					type, at);
			break;
		}
		/* Records are copied out: the stream gives no alignment. */
		union {
			struct aiotk_uview_fd_rec fd;
			struct aiotk_uview_ring_rec ring;
			struct aiotk_uview_file_rec file;
			struct aiotk_uview_buf_rec buf;
			struct aiotk_uview_req_rec req;
			struct aiotk_uview_timeout_rec timeout;
			struct aiotk_uview_ringfd_rec ringfd;
			struct aiotk_uview_bl_rec bl;
			struct aiotk_uview_map_rec map;
			struct aiotk_uview_tctx_rec tctx;
			struct aiotk_uview_sockreq_rec sockreq;
		} rec;
		memcpy(&rec, o->p + at, size);
		rc = one_rec(&ps, uv, &a, type, &rec, err);
		at += size;
	}
	if (!rc)
		resolve(&ps, uv, &a);
	if (!rc)
		count_unlisted(&ps, uv);
	*maps_missing = ps.maps_missing;
	size_t matched = 0;
	for (size_t i = 0; i < uv->n; i++)
		matched += uv->ring[i].nmaps;
	uv->orphan_maps = ps.all_maps > matched ? ps.all_maps - matched : 0;
	for (size_t i = 0; i < uv->n; i++)
		free(a.file_ptr[i]), free(a.req_file[i]);
	free(a.ring_file), free(a.file_ptr), free(a.req_file);
	free(ps.fds), free(ps.file_ptr), free(ps.req_file), free(ps.tctxs), free(ps.listed);
	aiotk_uring_free(&ps.pending);
	return rc;
}

/* "start-end perms offset dev inode anon_inode:[io_uring]" lines, each
 * given to the instance with that inode (what the view read is dropped:
 * one source for all). */
static int add_maps(int pid, aiotk_uring_view *uv, aiotk_err *err)
{
	for (size_t i = 0; i < uv->n; i++)
		uv->ring[i].nmaps = 0;
	uv->orphan_maps = 0;
	char path[64], line[512];
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return aiotk_fail(err, AIOTK_ESYS, errno, "%s: %s", path, strerror(errno));
	int rc = 0;
	while (!rc && fgets(line, sizeof(line), f)) {
		unsigned long long start, end, offset, ino;
		if (!strstr(line, "anon_inode:[io_uring]") ||
		    sscanf(line, "%llx-%llx %*s %llx %*s %llu", &start, &end, &offset, &ino) != 4)
			continue;
		int found = 0;
		for (size_t i = 0; !rc && i < uv->n; i++) {
			aiotk_uring *u = &uv->ring[i];
			if (u->ino != ino || (rc = grow(&u->maps, u->nmaps, sizeof(*u->maps), err)))
				continue;
			u->maps[u->nmaps++] = (aiotk_uring_map){ start, end, offset, NULL, 0 }; /* dontfork unknown here */
			found = 1;
		}
		uv->orphan_maps += !found;
	}
	fclose(f);
	return rc;
}

/* Each registered file's path, through the fd the process has it at (the
 * kernel view gives file pointers, which the fds were matched by). A file
 * closed since keeps its path empty. */
static void add_paths(int pid, aiotk_uring_view *uv)
{
	for (size_t i = 0; i < uv->n; i++)
		for (size_t j = 0; j < uv->ring[i].nfiles; j++) {
			aiotk_uring_file *f = &uv->ring[i].files[j];
			char link[64];
			snprintf(link, sizeof(link), "/proc/%d/fd/%d", pid, f->fd);
			ssize_t n = f->fd < 0 ? -1 : readlink(link, f->path, sizeof(f->path) - 1);
			f->path[n > 0 ? n : 0] = 0;
		}
}

/* The eventfd id of fd's file (its fdinfo's "eventfd-id:"), or -1. */
static int eventfd_id_of(int pid, int fd)
{
	char path[64], line[128];
	int id = -1;
	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", pid, fd);
	FILE *f = fopen(path, "re");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "eventfd-id: %d", &id) == 1)
			break;
	if (f)
		fclose(f);
	return id;
}

/* Each registered eventfd's fd in the process: the lowest fd whose file
 * is that eventfd (dups share the id). */
static void add_eventfds(int pid, aiotk_uring_view *uv)
{
	int want = 0;
	for (size_t i = 0; i < uv->n; i++)
		want |= uv->ring[i].eventfd_id >= 0;
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	DIR *d = want ? opendir(path) : NULL;
	for (struct dirent *e; d && (e = readdir(d));) {
		int fd = atoi(e->d_name), id = e->d_name[0] == '.' ? -1 : eventfd_id_of(pid, fd);
		for (size_t i = 0; id >= 0 && i < uv->n; i++) {
			aiotk_uring *u = &uv->ring[i];
			if (u->eventfd_id == id && (u->eventfd_fd < 0 || fd < u->eventfd_fd))
				u->eventfd_fd = fd;
		}
	}
	if (d)
		closedir(d);
}

int aiotk_uring_view_read(aiotk_kviewer *v, int pid, aiotk_uring_view *out,
			  aiotk_err *err)
{
	memset(out, 0, sizeof(*out));
	struct out o = { 0 };
	int maps_missing = 0, rc = run_iter(v, pid, &o, err);
	/* The kernel makes a link for a pid that names no process (and it
	 * then reads nothing): said here, as the maps file used to say it. */
	char proc[32];
	snprintf(proc, sizeof(proc), "/proc/%d", pid);
	if (!rc && access(proc, F_OK))
		rc = aiotk_fail(err, AIOTK_ESYS, ESRCH, "process %d: no such process", pid);
	if (!rc)
		rc = parse(&o, pid, out, &maps_missing, err);
	free(o.p);
	if (!rc && maps_missing)
		rc = add_maps(pid, out, err);
	if (!rc)
		add_paths(pid, out);
	if (!rc)
		add_eventfds(pid, out);
	if (rc)
		aiotk_uring_view_free(out);
	return rc;
}

#else /* !AIOTK_HAVE_BPF */

int aiotk_uring_view_read(aiotk_kviewer *v, int pid, aiotk_uring_view *out,
			  aiotk_err *err)
{
	(void)v, (void)pid;
	memset(out, 0, sizeof(*out));
	return aiotk_fail(err, AIOTK_EUNSUPPORTED, 0,
			  "this aiotk was built without BPF (clang, bpftool or libbpf-dev were missing at build time)");
}

#endif

void aiotk_uring_view_free(aiotk_uring_view *uv)
{
	for (size_t i = 0; i < uv->n; i++)
		aiotk_uring_free(&uv->ring[i]);
	free(uv->ring);
	uv->ring = NULL;
	uv->n = 0;
}
