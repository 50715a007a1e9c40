/* The kernel's view of a process's AIO contexts: runs the CO-RE iterator
 * (core/aio/kview/kview.bpf.c, loaded or opened from its pin by
 * core/kview/viewer.c) on one thread of the process, and turns its
 * records into aiotk_kview. The process is neither stopped nor traced;
 * the iocbs of cancellable requests are read with process_vm_readv. */
#define _GNU_SOURCE
#include "aio/aio.h"
#include "target/target.h"

#include <dirent.h>
#include <errno.h>
#include <linux/aio_abi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef AIOTK_HAVE_BPF
#include <bpf/bpf.h>

#include "aio/kview/kview_records.h"
#include "kview/kview.h"

struct bytes {
	char *p;
	size_t len, cap;
};

static int slurp(int fd, struct bytes *b, aiotk_err *err)
{
	for (;;) {
		if (b->cap - b->len < 4096) {
			size_t cap = b->cap ? b->cap * 2 : 16384;
			char *p = realloc(b->p, cap);
			if (!p)
				return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
			b->p = p, b->cap = cap;
		}
		ssize_t got = read(fd, b->p + b->len, b->cap - b->len);
		if (got == 0)
			return 0;
		if (got < 0 && errno != EINTR)
			return aiotk_fail(err, AIOTK_ESYS, errno,
					  "reading the kernel-view iterator: %s", strerror(errno));
		b->len += got > 0 ? (size_t)got : 0;
	}
}

int aiotk_kview_prepare(aiotk_kviewer *v, int pid)
{
	if (v->link >= 0 && v->link_tid == pid)
		return 0;
	if (v->link >= 0)
		close(v->link);
	v->link = kviewer_link(v, KVIEWER_AIO, pid, 0);
	v->link_tid = v->link >= 0 ? pid : 0;
	return v->link >= 0 ? 0 : -errno;
}

/* One run of the iterator on thread tid, from the slot `firsts` holds
 * for this reader. */
static int run_chunk(aiotk_kviewer *v, int tid, struct bytes *b, aiotk_err *err)
{
	int own = !(v->link >= 0 && v->link_tid == tid);
	int link = own ? kviewer_link(v, KVIEWER_AIO, tid, 0) : v->link;
	if (link < 0) {
		int e = errno;
		if (e == ESRCH || e == ENOENT)
			return aiotk_fail(err, AIOTK_ESYS, ESRCH, "process %d: no such thread", tid);
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, e,
				  "this kernel cannot run a task iterator on one thread (%s; needs Linux 6.1 or later)",
				  strerror(e));
	}
	int rc = 0, fd = bpf_iter_create(link);
	if (fd < 0)
		rc = aiotk_fail(err, AIOTK_ESYS, errno, "creating the kernel-view iterator: %s",
				strerror(errno));
	else
		rc = slurp(fd, b, err);
	if (fd >= 0)
		close(fd);
	if (own)
		close(link);
	return rc;
}

/* The user's iocb at obj, if it is still the request's. */
static void read_iocb(int pid, aiotk_kreq *q)
{
	struct iocb cb;
	if (aiotk_vm_rw(pid, q->obj, &cb, sizeof(cb), 0) || cb.aio_data != q->data)
		return;
	q->iocb_ok = 1;
	q->opcode = cb.aio_lio_opcode;
	q->fd = cb.aio_fildes;
	q->buf = cb.aio_buf;
}

static int64_t in_flight(const struct aiotk_kview_ctx_rec *r)
{
	int64_t v = (int64_t)r->nr_events - 1 - r->reqs_available -
		    r->cpu_available - r->completed_events;
	return v < 0 ? -1 : v;
}

static int add_ctx(aiotk_kview *kv, const struct aiotk_kview_ctx_rec *r,
		   aiotk_kreq *reqs, uint32_t nreqs, aiotk_err *err)
{
	aiotk_kctx *grown = realloc(kv->ctx, (kv->n + 1) * sizeof(*grown));
	if (!grown)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
	kv->ctx = grown;
	aiotk_kctx *c = &kv->ctx[kv->n++];
	*c = (aiotk_kctx){
		.user_id = r->user_id, .max_reqs = r->max_reqs,
		.nr_events = r->nr_events, .req_batch = r->req_batch,
		.tail = r->tail, .completed_events = r->completed_events,
		.reqs_available = r->reqs_available,
		.cpu_available = r->cpu_available, .in_flight = in_flight(r),
		.ncancel = r->ncancel, .nreqs = nreqs, .reqs = reqs,
	};
	return 0;
}

/* Records of one run: requests, then their context; an end record last. */
static int parse(int pid, const struct bytes *b, aiotk_kview *kv,
		 struct aiotk_kview_end_rec *end, aiotk_err *err)
{
	aiotk_kreq *reqs = NULL;
	uint32_t nreqs = 0;
	size_t at = 0;
	int rc = 0, ended = 0;
	while (!rc && !ended && at + sizeof(uint32_t) <= b->len) {
		uint32_t type;
		memcpy(&type, b->p + at, sizeof(type));
		if (type == AIOTK_KVIEW_REQ && at + sizeof(struct aiotk_kview_req_rec) <= b->len) {
			struct aiotk_kview_req_rec r;
			memcpy(&r, b->p + at, sizeof(r));
			aiotk_kreq *g = realloc(reqs, (nreqs + 1) * sizeof(*g));
			if (!g) {
				rc = aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
				break;
			}
			reqs = g;
			reqs[nreqs] = (aiotk_kreq){ .obj = r.obj, .data = r.data,
				.kind = r.kind == AIOTK_KVIEW_KIND_POLL ? AIOTK_KREQ_POLL : AIOTK_KREQ_OTHER,
				.events = r.events };
			read_iocb(pid, &reqs[nreqs++]);
			at += sizeof(r);
		} else if (type == AIOTK_KVIEW_CTX && at + sizeof(struct aiotk_kview_ctx_rec) <= b->len) {
			struct aiotk_kview_ctx_rec r;
			memcpy(&r, b->p + at, sizeof(r));
			rc = add_ctx(kv, &r, reqs, nreqs, err);
			if (rc)
				break;
			reqs = NULL, nreqs = 0;
			at += sizeof(r);
		} else if (type == AIOTK_KVIEW_END && at + sizeof(*end) <= b->len) {
			memcpy(end, b->p + at, sizeof(*end));
			ended = 1;
		} else {
			rc = aiotk_fail(err, AIOTK_EIMAGE, 0,
					"kernel-view record %u at byte %zu is unknown or cut short",
					type, at);
		}
	}
	free(reqs);
	if (!rc && !ended)
		rc = aiotk_fail(err, AIOTK_ESYS, ESRCH, "process %d has exited", pid);
	return rc;
}

/* Contexts kv gained since it had n. */
static void drop_since(aiotk_kview *kv, size_t n)
{
	while (kv->n > n)
		free(kv->ctx[--kv->n].reqs);
}

/* One run from table slot first. The program starts from this reading
 * thread's entry in `firsts` (none: slot 0): shared by every aiotk using
 * a pinned program, it is keyed by the reader's global tid, which only
 * the program's end record tells. A run that started elsewhere (the
 * entry of a killed aiotk whose thread id this one now has, or a thread
 * not read from before) is run again once the entry is set. */
static int read_chunk(aiotk_kviewer *v, int pid, int tid, uint32_t first,
		      aiotk_kview *kv, struct aiotk_kview_end_rec *end, aiotk_err *err)
{
	for (int again = 0;; again++) {
		if (v->reader && v->reader_first != first) {
			int e = kviewer_set_first(v, v->reader, first);
			if (e)
				return aiotk_fail(err, AIOTK_ESYS, -e,
						  "setting the kernel view's start slot: %s", strerror(-e));
			v->reader_first = first;
		}
		struct bytes b = { 0 };
		size_t had = kv->n;
		int rc = run_chunk(v, tid, &b, err);
		if (!rc)
			rc = parse(pid, &b, kv, end, err);
		free(b.p);
		if (rc || end->first == first)
			return rc;
		drop_since(kv, had);
		if (again)
			return aiotk_fail(err, AIOTK_ESYS, EAGAIN,
					  "the kernel view read from table slot %u, not %u: another thread changed it",
					  end->first, first);
		v->reader = end->reader, v->reader_first = end->first;
	}
}

/* All chunks of the table as thread tid sees it; *no_mm when it has none. */
static int read_thread(aiotk_kviewer *v, int pid, int tid, aiotk_kview *kv,
		       int *no_mm, aiotk_err *err)
{
	uint32_t first = 0;
	for (;;) {
		struct aiotk_kview_end_rec end = { 0 };
		int rc = read_chunk(v, pid, tid, first, kv, &end, err);
		if (rc)
			return rc;
		*no_mm = (int)end.no_mm;
		if (end.no_mm || end.next >= end.table_nr)
			return 0;
		first = end.next;
	}
}

/* A thread leader that exited has no mm; any other thread shares it. */
static int other_thread(int pid, int after)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	DIR *d = opendir(path);
	int found = 0;
	struct dirent *e;
	while (d && !found && (e = readdir(d))) {
		int tid = atoi(e->d_name);
		if (tid > after && tid != pid)
			found = tid;
	}
	if (d)
		closedir(d);
	return found;
}

int aiotk_kview_read(aiotk_kviewer *v, int pid, aiotk_kview *out, aiotk_err *err)
{
	memset(out, 0, sizeof(*out));
	int tid = pid, no_mm = 0, rc;
	while (!(rc = read_thread(v, pid, tid, out, &no_mm, err)) && no_mm) {
		if (!(tid = other_thread(pid, tid == pid ? 0 : tid)))
			return aiotk_fail(err, AIOTK_ESYS, ESRCH,
					  "process %d has no memory any more (it is exiting)", pid);
	}
	if (rc)
		aiotk_kview_free(out);
	return rc;
}

#else /* !AIOTK_HAVE_BPF */

static int no_bpf(aiotk_err *err)
{
	return aiotk_fail(err, AIOTK_EUNSUPPORTED, 0,
			  "this aiotk was built without BPF (clang, bpftool or libbpf-dev were missing at build time)");
}

int aiotk_kview_prepare(aiotk_kviewer *v, int pid)
{
	(void)v, (void)pid;
	return -ENOSYS;
}

int aiotk_kview_read(aiotk_kviewer *v, int pid, aiotk_kview *out, aiotk_err *err)
{
	(void)v, (void)pid;
	memset(out, 0, sizeof(*out));
	return no_bpf(err);
}

#endif

void aiotk_kview_free(aiotk_kview *kv)
{
	for (size_t i = 0; i < kv->n; i++)
		free(kv->ctx[i].reqs);
	free(kv->ctx);
	kv->ctx = NULL;
	kv->n = 0;
}
