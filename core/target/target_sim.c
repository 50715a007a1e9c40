/* A simulated kernel as a target: io_setup sizes rings by a model (other
 * CPU counts, page sizes, the legacy formula), everything else the
 * primitives need is memory. For tests and plans of hosts this machine
 * cannot be; never for restoring anything real. */
#include "aiotk.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

struct sim {
	aiotk_geom_host model;
	unsigned live;
};

static long sim_sys(aiotk_target *t, long nr, const long a[6])
{
	struct sim *s = t->priv;
	aiotk_geom g;
	switch (nr) {
	case SYS_mmap: {
		void *p = calloc(1, (size_t)a[1]);
		return p ? (long)(uintptr_t)p : -ENOMEM;
	}
	case SYS_munmap:
		free((void *)(uintptr_t)a[0]);
		return 0;
	case SYS_io_setup: {
		if (aiotk_geom_ring(&s->model, (uint32_t)a[0], &g, NULL))
			return -EINVAL;
		aiotk_ring_header *ring = calloc(1, g.ring_len);
		if (!ring)
			return -ENOMEM;
		ring->nr = g.nr;
		ring->magic = AIOTK_RING_MAGIC;
		ring->header_length = AIOTK_HEADER_LEN;
		uint64_t ctx = (uint64_t)(uintptr_t)ring;
		memcpy((void *)(uintptr_t)a[1], &ctx, sizeof(ctx));
		s->live++;
		return 0;
	}
	case SYS_io_destroy:
		free((void *)(uintptr_t)a[0]);
		s->live--;
		return 0;
	}
	return -ENOSYS;
}

static int sim_read(aiotk_target *t, uint64_t addr, void *buf, size_t len)
{
	(void)t;
	memcpy(buf, (void *)(uintptr_t)addr, len);
	return 0;
}

static int sim_write(aiotk_target *t, uint64_t addr, const void *buf, size_t len)
{
	(void)t;
	memcpy((void *)(uintptr_t)addr, buf, len);
	return 0;
}

static void sim_free(aiotk_target *t)
{
	free(t->priv);
	t->priv = NULL;
}

static const struct aiotk_target_ops sim_ops = {
	.kind = "simulated kernel",
	.sys = sim_sys, .read = sim_read, .write = sim_write, .free = sim_free,
};

int aiotk_target_sim(aiotk_target *t, const aiotk_geom_host *model, aiotk_err *err)
{
	aiotk_geom g;
	int rc = aiotk_geom_ring(model, 1, &g, err);
	if (rc)
		return rc;
	struct sim *s = calloc(1, sizeof(*s));
	if (!s)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
	s->model = *model;
	t->ops = &sim_ops;
	t->pid = -1; /* neither this process nor a real one */
	t->priv = s;
	t->ws = NULL;
	return 0;
}

unsigned aiotk_target_sim_live(const aiotk_target *t)
{
	return t->ops == &sim_ops ? ((const struct sim *)t->priv)->live : 0;
}
