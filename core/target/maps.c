/* /proc/PID/maps: who occupies an address range, and where the rings are. */
#include "target/target.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static FILE *open_maps(int pid, aiotk_err *err)
{
	char path[64];
	if (pid)
		snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	else
		snprintf(path, sizeof(path), "/proc/self/maps");
	FILE *f = fopen(path, "r");
	if (!f)
		aiotk_fail(err, AIOTK_ESYS, errno, "cannot open %s: %s", path,
			   strerror(errno));
	return f;
}

/* One line: "start-end perms offset dev inode   path". */
static int parse_line(const char *line, aiotk_vma *v)
{
	unsigned long long s, e;
	int used = 0;
	if (sscanf(line, "%llx-%llx %4s %*s %*s %*s%n", &s, &e, v->perms,
		   &used) < 3)
		return -1;
	v->start = s;
	v->end = e;
	const char *p = line + used;
	while (*p == ' ')
		p++;
	snprintf(v->path, sizeof(v->path), "%s", p);
	v->path[strcspn(v->path, "\n")] = 0;
	return 0;
}

int aiotk_vma_is_ring(const aiotk_vma *v)
{
	return strncmp(v->path, "/[aio]", 6) == 0;
}

int aiotk_vma_is_placeholder(const aiotk_vma *v)
{
	return !strcmp(v->perms, AIOTK_PLACEHOLDER_PERMS) &&
	       !strcmp(v->path, AIOTK_SHARED_ANON_PATH);
}

int aiotk_vma_is_journal(const aiotk_vma *v)
{
	return v->end - v->start == AIOTK_JOURNAL_LEN && !strcmp(v->perms, "rw-s") &&
	       !strcmp(v->path, AIOTK_SHARED_ANON_PATH);
}

void aiotk_vma_describe(const aiotk_vma *v, char *buf, size_t len)
{
	snprintf(buf, len, "0x%llx-0x%llx %s %s", (unsigned long long)v->start,
		 (unsigned long long)v->end, v->perms,
		 v->path[0] ? v->path : "(anonymous)");
}

int aiotk_maps_each_text(int pid, int (*fn)(const aiotk_vma *v, void *ctx),
			 void *ctx, aiotk_err *err)
{
	char line[512];
	FILE *f = open_maps(pid, err);
	if (!f)
		return AIOTK_ESYS;
	int rc = 0;
	while (!rc && fgets(line, sizeof(line), f)) {
		aiotk_vma v;
		if (!parse_line(line, &v))
			rc = fn(&v, ctx);
	}
	fclose(f);
	return rc;
}

/* PROCMAP_QUERY (Linux 6.11+, include/uapi/linux/fs.h), declared here for
 * older headers: one mapping per ioctl, without the text of all of them
 * (about 0.6 us a mapping here, against 40-130 us for reading the text of
 * a process's maps). */
struct aiotk_procmap_query {
	uint64_t size, query_flags, query_addr;
	uint64_t vma_start, vma_end, vma_flags, vma_page_size, vma_offset, inode;
	uint32_t dev_major, dev_minor, vma_name_size, build_id_size;
	uint64_t vma_name_addr, build_id_addr;
};
#define AIOTK_PROCMAP_QUERY _IOWR('f', 17, struct aiotk_procmap_query)
#define COVERING_OR_NEXT 0x10
enum { VMA_R = 1, VMA_W = 2, VMA_X = 4, VMA_S = 8 };

static void vma_from_query(aiotk_vma *v, const struct aiotk_procmap_query *q, const char *name)
{
	size_t nl = q->vma_name_size ? strnlen(name, sizeof(v->path) - 1) : 0;
	memcpy(v->path, name, nl); /* truncated as the text path would be */
	v->path[nl] = 0;
	v->start = q->vma_start, v->end = q->vma_end;
	v->perms[0] = q->vma_flags & VMA_R ? 'r' : '-';
	v->perms[1] = q->vma_flags & VMA_W ? 'w' : '-';
	v->perms[2] = q->vma_flags & VMA_X ? 'x' : '-';
	v->perms[3] = q->vma_flags & VMA_S ? 's' : 'p';
	v->perms[4] = 0;
}

static int open_query(int pid)
{
	char path[64];
	snprintf(path, sizeof(path), pid ? "/proc/%d/maps" : "/proc/self/maps", pid);
	return open(path, O_RDONLY | O_CLOEXEC);
}

/* The first mapping ending above `at` (with QUERY_SHARED, the first shared
 * one: the kernel skips the others itself): 0, -errno (ENOENT: none). */
#define QUERY_SHARED 0x08
static int query_next(int fd, uint64_t at, uint64_t flags, aiotk_vma *v)
{
	char name[PATH_MAX]; /* on the stack: see each_by_query */
	struct aiotk_procmap_query q = { .size = sizeof(q), .query_flags = COVERING_OR_NEXT | flags,
		.query_addr = at, .vma_name_addr = (uint64_t)(uintptr_t)name,
		.vma_name_size = sizeof(name) };
	if (ioctl(fd, AIOTK_PROCMAP_QUERY, &q))
		return -errno;
	vma_from_query(v, &q, name);
	return 0;
}

/* 1: the kernel has no PROCMAP_QUERY (read the text instead). */
static int each_by_query(int pid, uint64_t flags, int (*fn)(const aiotk_vma *v, void *ctx),
			 void *ctx, int *rc, aiotk_err *err)
{
	/* A name buffer of PATH_MAX, on the stack (query_next): thread-local
	 * storage of a dlopen()ed library is allocated at first use, which
	 * would map memory in the middle of a question about the maps. */
	int fd = open_query(pid);
	if (fd < 0)
		return 1; /* the text path says why */
	*rc = 0;
	for (uint64_t at = 0, first = 1; !*rc; first = 0) {
		aiotk_vma v;
		int q = query_next(fd, at, flags, &v);
		if (q) {
			close(fd);
			/* ENOENT at once: no mapping of that kind, unless the
			 * kernel has no query (ENOTTY) */
			if (first && q != -ENOENT)
				return 1;
			if (q != -ENOENT)
				*rc = aiotk_fail(err, AIOTK_ESYS, -q, "cannot query the maps of %d: %s",
						 pid, strerror(-q));
			return 0;
		}
		*rc = fn(&v, ctx);
		at = v.end;
	}
	close(fd);
	return 0;
}

int aiotk_maps_each(int pid, int (*fn)(const aiotk_vma *v, void *ctx),
		    void *ctx, aiotk_err *err)
{
	int rc;
	if (!each_by_query(pid, 0, fn, ctx, &rc, err))
		return rc;
	return aiotk_maps_each_text(pid, fn, ctx, err);
}

struct shared_only {
	int (*fn)(const aiotk_vma *v, void *ctx);
	void *ctx;
};

static int if_shared(const aiotk_vma *v, void *ctx)
{
	struct shared_only *s = ctx;
	return v->perms[3] == 's' ? s->fn(v, s->ctx) : 0;
}

/* Rings, journals and placeholders are all shared mappings; a process's
 * other mappings (code, heap, stacks: most of them) are private, and with
 * PROCMAP_QUERY are not even looked at. */
static int each_shared(int pid, int (*fn)(const aiotk_vma *v, void *ctx), void *ctx,
		       aiotk_err *err)
{
	int rc;
	struct shared_only s = { fn, ctx };
	if (!each_by_query(pid, QUERY_SHARED, fn, ctx, &rc, err))
		return rc;
	return aiotk_maps_each_text(pid, if_shared, &s, err);
}

struct overlap {
	uint64_t start, len, skip;
	aiotk_vma *vma;
};

static int first_overlap(const aiotk_vma *v, void *ctx)
{
	struct overlap *o = ctx;
	if (v->start < o->start + o->len && o->start < v->end && v->start != o->skip) {
		*o->vma = *v;
		return 1;
	}
	return 0;
}

int aiotk_maps_overlap(int pid, uint64_t start, uint64_t len, uint64_t skip,
		       aiotk_vma *vma, aiotk_err *err)
{
	struct overlap o = { start, len, skip, vma };
	/* With PROCMAP_QUERY: the mapping at or after start, one or two
	 * ioctls instead of a walk over all of them. */
	int fd = open_query(pid), q = fd < 0 ? -ENOTTY : query_next(fd, start, 0, vma);
	if (!q && vma->start == skip)
		q = query_next(fd, vma->end, 0, vma);
	if (fd >= 0)
		close(fd);
	if (q == -ENOENT || (!q && vma->start >= start + len))
		return 0;
	if (!q)
		return 1;
	return aiotk_maps_each(pid, first_overlap, &o, err);
}

struct rings {
	aiotk_vma *out;
	size_t max, n;
};

static int add_ring(const aiotk_vma *v, void *ctx)
{
	struct rings *r = ctx;
	if (aiotk_vma_is_ring(v)) {
		if (r->n < r->max)
			r->out[r->n] = *v;
		r->n++;
	}
	return 0;
}

int aiotk_maps_rings(int pid, aiotk_vma *out, size_t max, size_t *count,
		     aiotk_err *err)
{
	struct rings r = { out, max, 0 };
	int rc = each_shared(pid, add_ring, &r, err);
	*count = r.n;
	return rc;
}

struct list {
	aiotk_vma *v;
	size_t n, cap;
};

static int append(const aiotk_vma *v, void *ctx)
{
	struct list *l = ctx;
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 64;
		aiotk_vma *nv = realloc(l->v, cap * sizeof(*nv));
		if (!nv)
			return AIOTK_ENOMEM;
		l->v = nv;
		l->cap = cap;
	}
	l->v[l->n++] = *v;
	return 0;
}

static int listed(struct list *l, int rc, int pid, aiotk_vma **out, size_t *count,
		  aiotk_err *err)
{
	if (rc == AIOTK_ENOMEM)
		aiotk_fail(err, rc, ENOMEM, "out of memory listing the mappings of %d", pid);
	if (rc < 0) {
		free(l->v);
		return rc;
	}
	*out = l->v;
	*count = l->n;
	return 0;
}

int aiotk_maps_list(int pid, aiotk_vma **out, size_t *count, aiotk_err *err)
{
	struct list l = { NULL, 0, 0 };
	return listed(&l, aiotk_maps_each(pid, append, &l, err), pid, out, count, err);
}

/* The private mappings overlapping [start, start + len), appended (the
 * shared ones are listed already): 0, AIOTK_ENOMEM, or 1 if the query
 * failed (the text is read instead). */
static int private_in(int fd, uint64_t start, uint64_t len, struct list *l)
{
	aiotk_vma v;
	for (uint64_t at = start; at < start + len; at = v.end) {
		int q = query_next(fd, at, 0, &v);
		if (q || v.start >= start + len)
			return q && q != -ENOENT;
		if (v.perms[3] != 's' && append(&v, l))
			return AIOTK_ENOMEM;
	}
	return 0;
}

static int by_start(const void *a, const void *b)
{
	const aiotk_vma *x = a, *y = b;
	return x->start < y->start ? -1 : x->start > y->start;
}

int aiotk_vma_in_ranges(const aiotk_vma *v, const uint64_t *range, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (v->start < range[2 * i] + range[2 * i + 1] && range[2 * i] < v->end)
			return 1;
	return 0;
}

struct in_ranges {
	const uint64_t *range;
	size_t n;
	struct list *l;
};

static int append_if_shared_or_in(const aiotk_vma *v, void *ctx)
{
	struct in_ranges *r = ctx;
	int keep = v->perms[3] == 's' || aiotk_vma_in_ranges(v, r->range, r->n);
	return keep ? append(v, r->l) : 0;
}

/* Sorted, each mapping once (a private one over two touching ranges is
 * found from both). */
static void sort_unique(struct list *l)
{
	size_t k = 0;
	qsort(l->v, l->n, sizeof(*l->v), by_start);
	for (size_t i = 0; i < l->n; i++)
		if (!k || l->v[i].start != l->v[k - 1].start)
			l->v[k++] = l->v[i];
	l->n = k;
}

int aiotk_maps_list_for(int pid, const uint64_t *range, size_t n, aiotk_vma **out,
			size_t *count, aiotk_err *err)
{
	struct list l = { NULL, 0, 0 };
	int fd = open_query(pid), rc = each_shared(pid, append, &l, err);
	int q = fd < 0;
	for (size_t i = 0; !rc && !q && i < n; i++)
		if ((q = private_in(fd, range[2 * i], range[2 * i + 1], &l)) == AIOTK_ENOMEM)
			rc = q;
	if (fd >= 0)
		close(fd);
	if (!rc && q) { /* no query: every mapping read, those wanted kept */
		struct in_ranges r = { range, n, &l };
		l.n = 0;
		rc = aiotk_maps_each_text(pid, append_if_shared_or_in, &r, err);
	}
	if (!rc && l.n)
		sort_unique(&l);
	return listed(&l, rc, pid, out, count, err);
}
