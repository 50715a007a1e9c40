/* /proc/PID/maps: who occupies an address range, and where the rings are. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int aiotk_maps_each(int pid, int (*fn)(const aiotk_vma *v, void *ctx),
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
