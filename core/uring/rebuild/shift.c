/* A saved instance moved on as if it had run k more NOPs (k a multiple
 * of both ring sizes, so every entry keeps its slot): how the tests get
 * an instance near 2^32, which a real one reaches only after 2^32 SQEs
 * (3-4 minutes at the fastest; docs/KERNEL-FACTS.md, "io_uring:
 * counters"). Where the counters lie in the ring memory is this kernel's
 * layout, read from an instance of the same geometry set up here. */
#define _GNU_SOURCE
#include "uring/rebuild/rebuild.h"

#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static const aiotk_uring_map *map_at(const aiotk_uring *u, uint64_t offset)
{
	for (size_t i = 0; i < u->nmaps; i++)
		if (u->maps[i].offset == offset && u->maps[i].data)
			return &u->maps[i];
	return NULL;
}

static void add32(const aiotk_uring_map *m, uint32_t off, uint32_t k)
{
	uint32_t v;
	memcpy(&v, m->data + off, 4);
	v += k;
	memcpy(m->data + off, &v, 4);
}

int aiotk_uring_saved_shift(aiotk_uring *u, uint32_t k, aiotk_err *err)
{
	const aiotk_uring_map *sq = map_at(u, 0), *cq = map_at(u, 0x8000000);
	if (!sq || !u->sq_entries || !u->cq_entries || k % u->sq_entries || k % u->cq_entries)
		return aiotk_fail(err, AIOTK_EINVAL, 0, "io_uring fd %d: a shift of %u needs its SQ ring "
				  "saved and a multiple of both ring sizes", u->fd, k);
	struct io_uring_params p = { .flags = u->flags, .cq_entries = u->cq_entries };
	long fd = syscall(SYS_io_uring_setup, u->sq_entries, &p);
	if (fd < 0)
		return aiotk_fail(err, AIOTK_ESYS, errno, "io_uring_setup(%u) for the layout: %s",
				  u->sq_entries, strerror(errno));
	close((int)fd);
	if (!cq)
		cq = sq;
	uint64_t need = p.sq_off.tail > p.cq_off.tail ? p.sq_off.tail : p.cq_off.tail;
	if (need + 4 > sq->end - sq->start || p.cq_off.tail + 4 > cq->end - cq->start)
		return aiotk_fail(err, AIOTK_EINVAL, 0, "io_uring fd %d: its saved rings are shorter than "
				  "this kernel's layout", u->fd);
	add32(sq, p.sq_off.head, k), add32(sq, p.sq_off.tail, k);
	add32(cq, p.cq_off.head, k), add32(cq, p.cq_off.tail, k);
	u->sq_head += k, u->sq_tail += k, u->cq_head += k, u->cq_tail += k;
	u->cached_sq_head += k, u->cached_cq_tail += k;
	return 0;
}
