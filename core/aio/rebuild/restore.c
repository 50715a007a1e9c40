/* One saved ring rebuilt in a target: converge, replay, events, remap.
 * Any failure destroys the new context; nothing else was changed. */
#include "aiotk.h"

#include <stddef.h>
#include <string.h>

static int model_for(const aiotk_restore_opts *o, aiotk_geom_host *m,
		     aiotk_err *err)
{
	aiotk_host h;
	if (o && o->model.cpus) {
		*m = o->model;
		return 0;
	}
	int rc = aiotk_host_probe(&h, err);
	if (!rc)
		*m = h.geom;
	return rc;
}

static int steps(aiotk_target *t, const aiotk_ring *saved,
		 const aiotk_restore_opts *o, aiotk_restore_result *res,
		 aiotk_err *err)
{
	uint64_t t0 = aiotk_now_ns();
	/* A grown ring keeps only the live events: its area is longer. */
	aiotk_ring live = *saved;
	live.area = o->grow_len ? NULL : saved->area;
	uint64_t len = o->grow_len ? o->grow_len : saved->ring_len;
	int rc = aiotk_replay(t, res->ctx, res->conv.nr, saved->head,
			      saved->tail, &o->replay, &res->replay, err);
	uint64_t t1 = aiotk_now_ns();
	if (!rc)
		rc = aiotk_events_write(t, res->ctx, &live, err);
	uint64_t t2 = aiotk_now_ns();
	if (!rc)
		rc = aiotk_remap(t, &res->ctx, len, saved->addr, o->remap_flags,
				 err);
	/* Finished: the mark of a context under construction goes. */
	if (!rc)
		rc = aiotk_ring_unmark(t, res->ctx, saved->compat_features, err);
	res->ns_replay = t1 - t0;
	res->ns_events = t2 - t1;
	res->ns_remap = aiotk_now_ns() - t2;
	return rc;
}

int aiotk_restore_ring(aiotk_target *t, const aiotk_ring *saved,
		       const aiotk_restore_opts *o, aiotk_restore_result *res,
		       aiotk_err *err)
{
	aiotk_restore_opts def;
	aiotk_geom_host model;
	memset(&def, 0, sizeof(def));
	memset(res, 0, sizeof(*res));
	o = o ? o : &def;
	int rc = aiotk_target_ready(t, err);
	if (!rc)
		rc = model_for(o, &model, err);
	if (!rc)
		rc = aiotk_ring_validate(saved, model.page_size, err);
	if (!rc && o->grow_len && (o->grow_len <= saved->ring_len ||
				   o->grow_len % model.page_size || saved->tail < saved->head))
		rc = aiotk_fail(err, AIOTK_EINVAL, 0,
				"ring 0x%llx cannot grow in place to %llu bytes: %s",
				(unsigned long long)saved->addr, (unsigned long long)o->grow_len,
				saved->tail < saved->head ?
				"it has wrapped, and head..tail would then cover slots it never had" :
				"the new length must be a larger page multiple");
	if (rc)
		return rc;
	uint64_t t0 = aiotk_now_ns();
	uint32_t want_n = o->n ? o->n : o->grow_len ? 0 : saved->n;
	rc = aiotk_converge_n(t, &model, o->grow_len ? o->grow_len : saved->ring_len,
			      want_n, &res->conv, err);
	res->ns_converge = aiotk_now_ns() - t0;
	if (rc)
		return rc;
	res->ctx = res->conv.ctx;
	if (!o->grow_len && res->conv.nr != saved->nr)
		rc = aiotk_fail(err, AIOTK_EINVAL, 0,
				"ring 0x%llx: new ring has nr %u, saved %u",
				(unsigned long long)saved->addr, res->conv.nr,
				saved->nr);
	if (!rc)
		rc = steps(t, saved, o, res, err);
	/* res->ctx follows the context wherever remap left it, so this never
	 * touches what the caller owns at the saved address. */
	if (rc) {
		aiotk_io_destroy(t, res->ctx, NULL);
		res->ctx = 0;
	}
	return rc;
}
