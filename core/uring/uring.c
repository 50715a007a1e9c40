/* An io_uring instance as a value: copied into images and freed, and its
 * ring memory read from a stopped process. */
#include "uring/uring.h"

#include <stdlib.h>
#include <string.h>

/* A copy of n elements of size bytes (NULL for none). */
static int dup_list(void *dst, const void *src, size_t n, size_t size, aiotk_err *err)
{
	*(void **)dst = NULL;
	if (!n)
		return 0;
	void *p = malloc(n * size);
	if (!p)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory copying an io_uring instance");
	memcpy(p, src, n * size);
	*(void **)dst = p;
	return 0;
}

static int dup_data(aiotk_uring_map *m, aiotk_err *err)
{
	const uint8_t *src = m->data;
	return src ? dup_list(&m->data, src, (size_t)(m->end - m->start), 1, err) : 0;
}

int aiotk_uring_copy(aiotk_uring *dst, const aiotk_uring *src, aiotk_err *err)
{
	*dst = *src;
	dst->files = NULL, dst->bufs = NULL, dst->reqs = NULL, dst->maps = NULL;
	dst->timeouts = NULL, dst->ringfds = NULL, dst->bls = NULL;
	dst->nmaps = 0;
	int rc = dup_list(&dst->files, src->files, src->nfiles, sizeof(*src->files), err);
	if (!rc)
		rc = dup_list(&dst->bufs, src->bufs, src->nbufs, sizeof(*src->bufs), err);
	if (!rc)
		rc = dup_list(&dst->reqs, src->reqs, src->nreqs, sizeof(*src->reqs), err);
	if (!rc)
		rc = dup_list(&dst->timeouts, src->timeouts, src->ntimeouts, sizeof(*src->timeouts), err);
	if (!rc)
		rc = dup_list(&dst->ringfds, src->ringfds, src->nringfds, sizeof(*src->ringfds), err);
	if (!rc)
		rc = dup_list(&dst->bls, src->bls, src->nbls, sizeof(*src->bls), err);
	if (!rc)
		rc = dup_list(&dst->maps, src->maps, src->nmaps, sizeof(*src->maps), err);
	/* Each mapping's bytes owned by the copy, counted as they are made so
	 * that a failure frees only those. */
	for (size_t i = 0; !rc && i < src->nmaps; i++, dst->nmaps++)
		rc = dup_data(&dst->maps[i], err);
	if (rc)
		aiotk_uring_free(dst);
	return rc;
}

void aiotk_uring_free(aiotk_uring *u)
{
	for (size_t i = 0; i < u->nmaps; i++)
		free(u->maps[i].data);
	free(u->files);
	free(u->bufs);
	free(u->reqs);
	free(u->maps);
	free(u->timeouts);
	free(u->ringfds);
	free(u->bls);
	u->files = NULL, u->bufs = NULL, u->reqs = NULL, u->maps = NULL;
	u->timeouts = NULL, u->ringfds = NULL, u->bls = NULL;
	u->nfiles = u->nbufs = u->nreqs = u->nmaps = 0;
	u->ntimeouts = u->nringfds = u->nbls = 0;
}

/* An instance's mappings are a few pages to a few MB (32768 entries:
 * 2 MB of SQEs); larger is not a mapping of one. */
#define MAX_MAP (64ull << 20)

int aiotk_uring_read_memory(aiotk_target *t, aiotk_uring *u, aiotk_err *err)
{
	for (size_t i = 0; i < u->nmaps; i++) {
		aiotk_uring_map *m = &u->maps[i];
		uint64_t len = m->end - m->start;
		if (m->end <= m->start || len > MAX_MAP)
			return aiotk_fail(err, AIOTK_EINVAL, 0,
					  "io_uring fd %d: mapping 0x%llx-0x%llx is not one of an instance",
					  u->fd, (unsigned long long)m->start, (unsigned long long)m->end);
		uint8_t *p = realloc(m->data, (size_t)len);
		if (!p)
			return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory reading io_uring memory");
		m->data = p;
		int rc = aiotk_peek(t, m->start, p, (size_t)len, err);
		if (rc)
			return rc;
	}
	return 0;
}
