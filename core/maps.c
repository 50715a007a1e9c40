/* /proc/PID/maps: who occupies an address range, and where the rings are. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
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
	return v->end - v->start == 4096 && !strcmp(v->perms, "rw-s") &&
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

/* The first mapping ending above `at`: 0, -errno (ENOENT: none). */
static int query_next(int fd, uint64_t at, aiotk_vma *v)
{
	char name[4096]; /* on the stack: see each_by_query */
	struct aiotk_procmap_query q = { .size = sizeof(q), .query_flags = COVERING_OR_NEXT,
		.query_addr = at, .vma_name_addr = (uint64_t)(uintptr_t)name,
		.vma_name_size = sizeof(name) };
	if (ioctl(fd, AIOTK_PROCMAP_QUERY, &q))
		return -errno;
	vma_from_query(v, &q, name);
	return 0;
}

/* 1: the kernel has no PROCMAP_QUERY (read the text instead). */
static int each_by_query(int pid, int (*fn)(const aiotk_vma *v, void *ctx),
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
		int q = query_next(fd, at, &v);
		if (q) {
			close(fd);
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
	if (!each_by_query(pid, fn, ctx, &rc, err))
		return rc;
	return aiotk_maps_each_text(pid, fn, ctx, err);
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
	int fd = open_query(pid), q = fd < 0 ? -ENOTTY : query_next(fd, start, vma);
	if (!q && vma->start == skip)
		q = query_next(fd, vma->end, vma);
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
	int rc = aiotk_maps_each(pid, add_ring, &r, err);
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

int aiotk_maps_list(int pid, aiotk_vma **out, size_t *count, aiotk_err *err)
{
	struct list l = { NULL, 0, 0 };
	int rc = aiotk_maps_each(pid, append, &l, err);
	if (rc == AIOTK_ENOMEM)
		aiotk_fail(err, rc, ENOMEM, "out of memory listing the mappings of %d", pid);
	if (rc < 0) {
		free(l.v);
		return rc;
	}
	*out = l.v;
	*count = l.n;
	return 0;
}
