/* The primitives in Lua, once each, over any target: as functions of
 * aiotk.core they act on this process; as methods of a target userdata
 * (aiotk.core.attach(pid), aiotk.core.self()) on that process. */
#include "lua_aiotk.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define TARGET_MT "aiotk.target"

typedef struct ltarget {
	aiotk_target t;
	int attached;
} ltarget;

/* Processes held (attached and not yet detached) through this Lua state:
 * what closing the state at exit would still detach (main.c skips the
 * close when there are none; Lua: core.targets_held()). */
static int held;

static void set_attached(ltarget *lt, int on)
{
	if (lt->t.ops && lt->t.ops->detach && lt->attached != on)
		held += on ? 1 : -1;
	lt->attached = on;
}

int laiotk_targets_held(void) { return held; }

/* The two shapes most primitives answer in: true, or where a ring is. */
static int push_done(lua_State *L, int rc, const aiotk_err *err)
{
	if (rc)
		return laiotk_fail(L, err);
	lua_pushboolean(L, 1);
	return 1;
}

static int push_addr(lua_State *L, int rc, uint64_t addr, const aiotk_err *err)
{
	if (rc)
		return laiotk_fail(L, err);
	lua_pushnumber(L, (double)addr);
	return 1;
}

/* n (at least 1) zeroed elements of size bytes, in a userdata left on
 * the stack: collected with it, also when a bad argument raises. */
static void *scratch(lua_State *L, size_t n, size_t size)
{
	size_t len = (n ? n : 1) * size;
	return memset(lua_newuserdata(L, len), 0, len);
}

static int p_snapshot(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	uint64_t addr = laiotk_check_u64(L, b);
	int flags = lua_toboolean(L, b + 1) ? AIOTK_SNAP_AREA : 0;
	uint64_t len = lua_isnoneornil(L, b + 2) ? 0 : laiotk_check_u64(L, b + 2);
	aiotk_ring *r = laiotk_ring_new(L);
	if (aiotk_snapshot_len(t, addr, len, flags, r, &err))
		return laiotk_fail(L, &err);
	return 1;
}

/* snapshot_many({ {addr=, ring_len=}, ... }[, whole_area]) -> rings, read
 * together (aiotk_snapshot_many): a dump's stopped window. */
static int p_snapshot_many(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	luaL_checktype(L, b, LUA_TTABLE);
	size_t n = lua_objlen(L, b);
	int flags = lua_toboolean(L, b + 1) ? AIOTK_SNAP_AREA : 0;
	uint64_t *addr = scratch(L, n, sizeof(*addr)), *len = scratch(L, n, sizeof(*len));
	aiotk_ring *out = scratch(L, n, sizeof(*out));
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, b, (int)i + 1);
		addr[i] = laiotk_opt_field_u64(L, lua_gettop(L), "addr", 0);
		len[i] = laiotk_opt_field_u64(L, lua_gettop(L), "ring_len", 0);
		lua_pop(L, 1);
	}
	if (aiotk_snapshot_many(t, addr, len, n, flags, out, &err))
		return laiotk_fail(L, &err);
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		*laiotk_ring_new(L) = out[i]; /* the userdata owns the events now */
		lua_rawseti(L, -2, (int)i + 1);
	}
	return 1;
}

static void push_conv(lua_State *L, const aiotk_converge_result *c)
{
	lua_createtable(L, 0, 4);
	laiotk_set_num(L, "ctx", (double)c->ctx);
	laiotk_set_num(L, "n", c->n);
	laiotk_set_num(L, "nr", c->nr);
	laiotk_set_num(L, "calls", c->calls);
}

static int p_converge(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	aiotk_converge_result res;
	uint64_t len = laiotk_check_u64(L, b);
	aiotk_geom_host m = laiotk_check_model(L, b + 1);
	/* Unmarked: the ring is the caller's now. */
	if (aiotk_converge(t, &m, len, &res, &err) ||
	    aiotk_ring_unmark(t, res.ctx, AIOTK_RING_COMPAT, &err))
		return laiotk_fail(L, &err);
	push_conv(L, &res);
	return 1;
}

static const char *kind_name(enum aiotk_req_kind k)
{
	return k == AIOTK_REQ_PWRITE ? "pwrite" : k == AIOTK_REQ_POLL ? "poll" : "auto";
}

static aiotk_replay_opts check_replay_opts(lua_State *L, int idx)
{
	aiotk_replay_opts o = { 0 };
	if (lua_isnoneornil(L, idx))
		return o;
	luaL_checktype(L, idx, LUA_TTABLE);
	o.batch = (unsigned)laiotk_opt_field_u64(L, idx, "batch", 0);
	lua_getfield(L, idx, "nudge");
	o.no_nudge = !lua_isnil(L, -1) && !lua_toboolean(L, -1);
	lua_pop(L, 1);
	lua_getfield(L, idx, "kind");
	const char *k = lua_tostring(L, -1);
	o.kind = !k || !strcmp(k, "auto") ? AIOTK_REQ_AUTO :
		 !strcmp(k, "poll") ? AIOTK_REQ_POLL :
		 !strcmp(k, "pwrite") ? AIOTK_REQ_PWRITE :
		 (luaL_error(L, "replay kind must be auto, poll or pwrite"), AIOTK_REQ_AUTO);
	lua_pop(L, 1);
	return o;
}

static void push_replay_stats(lua_State *L, const aiotk_replay_stats *s)
{
	lua_createtable(L, 0, 4);
	laiotk_set_num(L, "completions", (double)s->completions);
	laiotk_set_num(L, "submits", s->submits);
	laiotk_set_num(L, "nudges", s->nudges);
	laiotk_set_num(L, "ns", (double)s->ns);
	lua_pushstring(L, kind_name(s->kind));
	lua_setfield(L, -2, "kind");
}

static int p_replay(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	aiotk_replay_stats st;
	uint64_t ctx = laiotk_check_u64(L, b);
	uint32_t nr = (uint32_t)luaL_checknumber(L, b + 1);
	uint32_t head = (uint32_t)luaL_checknumber(L, b + 2);
	uint32_t tail = (uint32_t)luaL_checknumber(L, b + 3);
	aiotk_replay_opts o = check_replay_opts(L, b + 4);
	if (aiotk_replay(t, ctx, nr, head, tail, &o, &st, &err))
		return laiotk_fail(L, &err);
	push_replay_stats(L, &st);
	return 1;
}

static int p_write_events(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	uint64_t ctx = laiotk_check_u64(L, b);
	aiotk_ring *r = laiotk_ring_check(L, b + 1);
	if (aiotk_events_write(t, ctx, r, &err))
		return laiotk_fail(L, &err);
	lua_pushboolean(L, 1);
	return 1;
}

static int p_remap(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	uint64_t ctx = laiotk_check_u64(L, b), len = laiotk_check_u64(L, b + 1);
	uint64_t dest = laiotk_check_u64(L, b + 2);
	int flags = 0;
	if (lua_istable(L, b + 3)) {
		lua_getfield(L, b + 3, "placeholder");
		flags = lua_toboolean(L, -1) ? AIOTK_REMAP_PLACEHOLDER : 0;
		lua_pop(L, 1);
	}
	int rc = aiotk_remap(t, &ctx, len, dest, flags, &err);
	return push_addr(L, rc, ctx, &err);
}

/* restore's options table at idx (absent: the defaults). */
static aiotk_restore_opts check_restore_opts(lua_State *L, int idx)
{
	aiotk_restore_opts o;
	memset(&o, 0, sizeof(o));
	if (!lua_istable(L, idx))
		return o;
	lua_getfield(L, idx, "model");
	if (lua_istable(L, -1))
		o.model = laiotk_check_model(L, lua_gettop(L));
	lua_getfield(L, idx, "replay");
	o.replay = check_replay_opts(L, lua_gettop(L));
	lua_getfield(L, idx, "placeholder");
	o.remap_flags = lua_toboolean(L, -1) ? AIOTK_REMAP_PLACEHOLDER : 0;
	lua_pop(L, 3);
	o.grow_len = laiotk_opt_field_u64(L, idx, "grow_to", 0);
	o.n = (uint32_t)laiotk_opt_field_u64(L, idx, "n", 0);
	return o;
}

static void push_restore_result(lua_State *L, const aiotk_restore_result *res)
{
	lua_createtable(L, 0, 8);
	laiotk_set_num(L, "ctx", (double)res->ctx);
	push_conv(L, &res->conv);
	lua_setfield(L, -2, "converge");
	push_replay_stats(L, &res->replay);
	lua_setfield(L, -2, "replay");
	laiotk_set_num(L, "ns_converge", (double)res->ns_converge);
	laiotk_set_num(L, "ns_replay", (double)res->ns_replay);
	laiotk_set_num(L, "ns_events", (double)res->ns_events);
	laiotk_set_num(L, "ns_remap", (double)res->ns_remap);
}

static int p_restore(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	aiotk_restore_result res;
	aiotk_ring *r = laiotk_ring_check(L, b);
	aiotk_restore_opts o = check_restore_opts(L, b + 1);
	if (aiotk_restore_ring(t, r, &o, &res, &err))
		return laiotk_fail(L, &err);
	push_restore_result(L, &res);
	return 1;
}

/* Where a restorer's run in the process went (aiotk_rebuild), in ns. */
static void push_rebuild_phases(lua_State *L, const aiotk_rebuild *rb)
{
	lua_createtable(L, 0, 8);
	laiotk_set_num(L, "load", (double)rb->ns_load);
	laiotk_set_num(L, "enter", (double)rb->ns_enter);
	laiotk_set_num(L, "claims", (double)rb->ns_claims);
	laiotk_set_num(L, "kit", (double)rb->ns_kit);
	laiotk_set_num(L, "rings", (double)rb->ns_rings);
	laiotk_set_num(L, "close", (double)rb->ns_close);
	laiotk_set_num(L, "exit", (double)rb->ns_exit);
	laiotk_set_num(L, "answer", (double)rb->ns_answer);
}

/* restore_all({ {ring=, n=, grow_to=, replay=, placeholder=, model=}, ...
 * }[, claims]) -> results; or nil, message, code, errno, results of the
 * rings made before the one that failed (aiotk_restore_rings). Either
 * list carries .phases: where the restorer's run went. claims: {
 * {addr=, len=}, ... }, placeholders taken before any ring; each one held
 * gets made = true, whatever the outcome. */
static int p_restore_all(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	luaL_checktype(L, b, LUA_TTABLE);
	int has_claims = !lua_isnoneornil(L, b + 1);
	if (has_claims)
		luaL_checktype(L, b + 1, LUA_TTABLE);
	aiotk_rebuild rb = { .n = lua_objlen(L, b), .nclaims = has_claims ? lua_objlen(L, b + 1) : 0 };
	aiotk_ring **saved = scratch(L, rb.n, sizeof(*saved));
	aiotk_restore_opts *o = scratch(L, rb.n, sizeof(*o));
	aiotk_range *claim = scratch(L, rb.nclaims, sizeof(*claim));
	rb.res = scratch(L, rb.n, sizeof(*rb.res));
	for (size_t i = 0; i < rb.n; i++) {
		lua_rawgeti(L, b, (int)i + 1);
		lua_getfield(L, -1, "ring");
		saved[i] = laiotk_ring_check(L, lua_gettop(L));
		lua_pop(L, 1);
		o[i] = check_restore_opts(L, lua_gettop(L));
		lua_pop(L, 1);
	}
	for (size_t i = 0; i < rb.nclaims; i++) {
		lua_rawgeti(L, b + 1, (int)i + 1);
		claim[i].addr = laiotk_opt_field_u64(L, lua_gettop(L), "addr", 0);
		claim[i].len = laiotk_opt_field_u64(L, lua_gettop(L), "len", 0);
		if (!claim[i].len)
			return luaL_error(L, "claim %d: a range wants addr= and len= (bytes, not 0)", (int)i + 1);
		lua_pop(L, 1);
	}
	rb.saved = saved, rb.o = o, rb.claim = claim;
	int rc = aiotk_restore_rings(t, &rb, &err);
	for (size_t i = 0; i < rb.claimed; i++) {
		lua_rawgeti(L, b + 1, (int)i + 1);
		lua_pushboolean(L, 1);
		lua_setfield(L, -2, "made");
		lua_pop(L, 1);
	}
	int nret = rc ? laiotk_fail(L, &err) : 0;
	lua_createtable(L, (int)rb.done, 0);
	for (size_t i = 0; i < rb.done; i++) {
		push_restore_result(L, &rb.res[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	push_rebuild_phases(L, &rb);
	lua_setfield(L, -2, "phases");
	return nret + 1;
}

static int p_io_setup(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	uint64_t ctx;
	if (aiotk_io_setup(t, (uint32_t)luaL_checknumber(L, b), &ctx, &err))
		return laiotk_fail(L, &err);
	lua_pushnumber(L, (double)ctx);
	return 1;
}

static int p_io_destroy(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	return push_done(L, aiotk_io_destroy(t, laiotk_check_u64(L, b), &err), &err);
}

/* ring_mark(ctx): ctx's ring marked as aiotk's (AIOTK_RING_BUILDING), so
 * that a later restore destroys it if this aiotk does not. */
static int p_ring_mark(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	return push_done(L, aiotk_ring_mark(t, laiotk_check_u64(L, b), &err), &err);
}

/* ring_unmark(ctx, compat): the mark taken off, compat_features put back. */
static int p_ring_unmark(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	uint64_t ctx = laiotk_check_u64(L, b);
	return push_done(L, aiotk_ring_unmark(t, ctx, (uint32_t)laiotk_check_u64(L, b + 1), &err), &err);
}

/* A mapping as Lua sees it: start, finish, perms, path, placeholder,
 * ring, journal, destroyer, desc. */
static void push_vma(lua_State *L, const aiotk_vma *v)
{
	lua_createtable(L, 0, 8);
	laiotk_set_num(L, "start", (double)v->start);
	laiotk_set_num(L, "finish", (double)v->end);
	lua_pushstring(L, v->perms);
	lua_setfield(L, -2, "perms");
	lua_pushstring(L, v->path);
	lua_setfield(L, -2, "path");
	lua_pushboolean(L, aiotk_vma_is_placeholder(v));
	lua_setfield(L, -2, "placeholder");
	lua_pushboolean(L, aiotk_vma_is_ring(v));
	lua_setfield(L, -2, "ring");
	lua_pushboolean(L, aiotk_vma_is_journal(v));
	lua_setfield(L, -2, "journal");
	lua_pushboolean(L, aiotk_vma_is_destroyer(v));
	lua_setfield(L, -2, "destroyer");
	char d[320];
	aiotk_vma_describe(v, d, sizeof(d));
	lua_pushstring(L, d);
	lua_setfield(L, -2, "desc");
}

static int p_mapping_at(lua_State *L, aiotk_target *t, int b)
{
	aiotk_vma v;
	aiotk_err err;
	int rc = aiotk_maps_overlap(t->pid, laiotk_check_u64(L, b),
				    laiotk_check_u64(L, b + 1), 0, &v, &err);
	if (rc < 0)
		return laiotk_fail(L, &err);
	if (rc == 0)
		lua_pushboolean(L, 0);
	else
		push_vma(L, &v);
	return 1;
}

/* mappings([ranges]): every mapping, as mapping_at gives one, from one
 * read; with ranges ({ {addr=, len=}, ... }), only those overlapping one
 * of them, the rings, the journal pages and destroyers' mappings (what a
 * restore looks at). */
static int p_mappings(lua_State *L, aiotk_target *t, int b)
{
	aiotk_vma *v;
	aiotk_err err;
	size_t n, nr = lua_istable(L, b) ? lua_objlen(L, b) : 0;
	int some = lua_istable(L, b), k = 0;
	/* The ranges read first: nothing raises once the list is allocated. */
	uint64_t *range = scratch(L, 2 * nr, sizeof(*range));
	for (size_t i = 0; i < nr; i++) {
		lua_rawgeti(L, b, (int)i + 1);
		range[2 * i] = laiotk_opt_field_u64(L, lua_gettop(L), "addr", 0);
		range[2 * i + 1] = laiotk_opt_field_u64(L, lua_gettop(L), "len", 0);
		lua_pop(L, 1);
	}
	if ((some ? aiotk_maps_list_for(t->pid, range, nr, &v, &n, &err)
		  : aiotk_maps_list(t->pid, &v, &n, &err)))
		return laiotk_fail(L, &err);
	lua_createtable(L, some ? 0 : (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		if (some && !aiotk_vma_is_ring(&v[i]) && !aiotk_vma_is_journal(&v[i]) &&
		    !aiotk_vma_is_destroyer(&v[i]) && !aiotk_vma_in_ranges(&v[i], range, nr))
			continue;
		push_vma(L, &v[i]);
		lua_rawseti(L, -2, ++k);
	}
	free(v);
	return 1;
}

static int p_rings(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	size_t n = 0, max;
	(void)b;
	/* Count, then read into a buffer that size; grown if rings appear
	 * between the two (a process that is not stopped). */
	if (aiotk_maps_rings(t->pid, NULL, 0, &n, &err))
		return laiotk_fail(L, &err);
	aiotk_vma *v = NULL;
	do {
		max = n + 16;
		free(v);
		if (!(v = malloc(max * sizeof(*v))))
			return luaL_error(L, "out of memory for %d rings", (int)max);
		if (aiotk_maps_rings(t->pid, v, max, &n, &err)) {
			free(v);
			return laiotk_fail(L, &err);
		}
	} while (n > max);
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		lua_createtable(L, 0, 2);
		laiotk_set_num(L, "addr", (double)v[i].start);
		laiotk_set_num(L, "ring_len", (double)(v[i].end - v[i].start));
		lua_rawseti(L, -2, (int)i + 1);
	}
	free(v);
	return 1;
}

/* reserve(addr, len): a PROT_NONE placeholder exactly there, or nil and
 * what is in the way. */
static int p_reserve(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	return push_done(L, aiotk_reserve(t, laiotk_check_u64(L, b), laiotk_check_u64(L, b + 1), &err), &err);
}

static int p_unmap(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	return push_done(L, aiotk_unmap(t, laiotk_check_u64(L, b), laiotk_check_u64(L, b + 1), &err), &err);
}

static int p_unpark(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	uint64_t ctx = laiotk_check_u64(L, b);
	int rc = aiotk_unpark(t, &ctx, laiotk_check_u64(L, b + 1), laiotk_check_u64(L, b + 2), &err);
	return push_addr(L, rc, ctx, &err);
}

/* remove_journals(): journal pages left by a killed aiotk, with their
 * contexts, removed; returns how many. */
static int p_remove_journals(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	unsigned n;
	(void)b;
	if (aiotk_remove_journals(t, &n, &err))
		return laiotk_fail(L, &err);
	lua_pushnumber(L, n);
	return 1;
}

/* park(ctx, len[, at]): the ring moved to a fresh address, or onto at
 * (a slot of t:undo_area); returns where it is. */
static int p_park(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	uint64_t ctx = laiotk_check_u64(L, b), len = laiotk_check_u64(L, b + 1);
	int rc = lua_isnoneornil(L, b + 2) ? aiotk_park(t, &ctx, len, &err)
					   : aiotk_park_at(t, &ctx, len, laiotk_check_u64(L, b + 2), &err);
	return push_addr(L, rc, ctx, &err);
}


/* header(addr): the 32-byte header alone, cheap enough to poll. */
static int p_header(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	aiotk_ring_header h;
	if (aiotk_peek(t, laiotk_check_u64(L, b), &h, sizeof(h), &err))
		return laiotk_fail(L, &err);
	lua_createtable(L, 0, 8);
	laiotk_set_num(L, "id", h.id);
	laiotk_set_num(L, "nr", h.nr);
	laiotk_set_num(L, "head", h.head);
	laiotk_set_num(L, "tail", h.tail);
	laiotk_set_num(L, "magic", h.magic);
	laiotk_set_num(L, "compat_features", h.compat_features);
	laiotk_set_num(L, "incompat_features", h.incompat_features);
	laiotk_set_num(L, "header_length", h.header_length);
	lua_pushboolean(L, aiotk_header_marked(&h));
	lua_setfield(L, -2, "building");
	return 1;
}

static ltarget *check_target(lua_State *L, int idx)
{
	return luaL_checkudata(L, idx, TARGET_MT);
}

/* A detached process target is no longer stopped: refuse to touch it. */
static aiotk_target *live_target(lua_State *L, int idx)
{
	ltarget *lt = check_target(L, idx);
	if (!lt->attached)
		luaL_error(L, "process %d was detached; attach again", lt->t.pid);
	return &lt->t;
}

aiotk_target *laiotk_target_live(lua_State *L, int idx) { return live_target(L, idx); }

/* t:capture(ring, obj): the iocb at obj saved with ring. */
static int p_capture(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	aiotk_ring *r = laiotk_ring_check(L, b);
	return push_done(L, aiotk_ring_capture(t, r, laiotk_check_u64(L, b + 1), &err), &err);
}

/* t:resubmit(ctx, ring): ring's captured requests submitted on ctx. */
static int p_resubmit(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	uint64_t ctx = laiotk_check_u64(L, b);
	return push_done(L, aiotk_resubmit(t, ctx, laiotk_ring_check(L, b + 1), &err), &err);
}

/* A reference as Lua sees it: kind ("id", "pointer"), move (1-based),
 * old, value; memory: addr, map, map_start, offset; a register: tid, reg
 * (its name), reg_index. */
static void push_ref(lua_State *L, const aiotk_ref *r)
{
	lua_createtable(L, 0, 10);
	lua_pushstring(L, r->kind == AIOTK_REF_ID ? "id" : "pointer");
	lua_setfield(L, -2, "kind");
	laiotk_set_num(L, "move", (double)r->move + 1);
	laiotk_set_num(L, "old", (double)r->old);
	laiotk_set_num(L, "value", (double)r->value);
	if (r->tid) {
		laiotk_set_num(L, "tid", r->tid);
		lua_pushstring(L, aiotk_reg_name(r->reg));
		lua_setfield(L, -2, "reg");
		laiotk_set_num(L, "reg_index", r->reg);
		return;
	}
	laiotk_set_num(L, "addr", (double)r->addr);
	laiotk_set_num(L, "map_start", (double)r->map_start);
	laiotk_set_num(L, "offset", (double)(r->addr - r->map_start));
	lua_pushstring(L, r->map);
	lua_setfield(L, -2, "map");
}

/* find_refs({ {from=, len=, to=}, ... }[, max_bytes]) -> { refs...,
 * scanned=, unread=, skipped= } (aiotk_refs_find_within): where the
 * process keeps each old ring's id. */
static int p_find_refs(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	aiotk_refs refs;
	luaL_checktype(L, b, LUA_TTABLE);
	/* read before scratch pushes its buffer */
	uint64_t limit = lua_isnoneornil(L, b + 1) ? 0 : laiotk_check_u64(L, b + 1);
	size_t n = lua_objlen(L, b);
	aiotk_move *m = scratch(L, n, sizeof(*m));
	laiotk_check_moves(L, b, m, NULL, n);
	if (aiotk_refs_find_within(t, m, n, limit, &refs, &err))
		return laiotk_fail(L, &err);
	lua_createtable(L, (int)refs.n, 2);
	for (size_t i = 0; i < refs.n; i++) {
		push_ref(L, &refs.ref[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	laiotk_set_num(L, "scanned", (double)refs.scanned);
	laiotk_set_num(L, "unread", (double)refs.unread);
	laiotk_set_num(L, "skipped", (double)refs.skipped);
	aiotk_refs_free(&refs);
	return 1;
}

/* rewrite_refs(refs[, back]): each reference find_refs gave set to its
 * value (back: to its old value), all or nothing. */
static int p_rewrite_refs(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	luaL_checktype(L, b, LUA_TTABLE);
	int back = lua_toboolean(L, b + 1); /* read before scratch pushes its buffer */
	size_t n = lua_objlen(L, b);
	aiotk_ref *r = scratch(L, n, sizeof(*r));
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, b, (int)i + 1);
		int at = lua_gettop(L);
		r[i].tid = (int)laiotk_opt_field_u64(L, at, "tid", 0);
		r[i].reg = (unsigned)laiotk_opt_field_u64(L, at, "reg_index", 0);
		r[i].addr = laiotk_opt_field_u64(L, at, "addr", 0);
		r[i].map_start = laiotk_opt_field_u64(L, at, "map_start", r[i].addr);
		r[i].old = laiotk_opt_field_u64(L, at, "old", 0);
		r[i].value = laiotk_opt_field_u64(L, at, "value", 0);
		lua_getfield(L, at, "map");
		snprintf(r[i].map, sizeof(r[i].map), "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
		lua_pop(L, 1);
		if (!r[i].tid && !r[i].addr)
			return luaL_error(L, "reference %d: neither addr= nor tid=", (int)i + 1);
		lua_pop(L, 1);
	}
	return push_done(L, aiotk_refs_rewrite(t, r, n, back, &err), &err);
}

/* reloc_journal({ {from=, len=, to=, to_len=[, live_at=, live_compat=]}, ... }): the relocation
 * journal made (aiotk_reloc_journal_write). */
static int p_reloc_journal(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	luaL_checktype(L, b, LUA_TTABLE);
	size_t n = lua_objlen(L, b);
	aiotk_reloc_entry *e = scratch(L, n, sizeof(*e));
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, b, (int)i + 1);
		int at = lua_gettop(L);
		e[i] = (aiotk_reloc_entry){ laiotk_opt_field_u64(L, at, "from", 0),
					    laiotk_opt_field_u64(L, at, "len", 0),
					    laiotk_opt_field_u64(L, at, "to", 0),
					    laiotk_opt_field_u64(L, at, "to_len", 0),
					    laiotk_opt_field_u64(L, at, "live_at", 0),
					    laiotk_opt_field_u64(L, at, "live_compat", 0) };
		lua_pop(L, 1);
	}
	return push_done(L, aiotk_reloc_journal_write(t, e, n, &err), &err);
}

/* reloc_journal_read() -> nil (none) | { {from=, len=, to=, to_len=[, live_at=, live_compat=]}, ... }
 * (empty: left before its entries were whole). */
static int p_reloc_journal_read(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	aiotk_reloc_entry *e;
	size_t n;
	(void)b;
	int rc = aiotk_reloc_journal_read(t, &e, &n, &err);
	if (rc < 0)
		return laiotk_fail(L, &err);
	if (!rc) {
		lua_pushnil(L);
		return 1;
	}
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		lua_createtable(L, 0, 4);
		laiotk_set_num(L, "from", (double)e[i].from);
		laiotk_set_num(L, "len", (double)e[i].len);
		laiotk_set_num(L, "to", (double)e[i].to);
		laiotk_set_num(L, "to_len", (double)e[i].to_len);
		if (e[i].live_at) {
			laiotk_set_num(L, "live_at", (double)e[i].live_at);
			laiotk_set_num(L, "live_compat", (double)e[i].live_compat);
		}
		lua_rawseti(L, -2, (int)i + 1);
	}
	free(e);
	return 1;
}

/* reloc_journal_remove(): the journal unmapped, if there is one. */
static int p_reloc_journal_remove(lua_State *L, aiotk_target *t, int b)
{
	aiotk_err err;
	(void)b;
	return push_done(L, aiotk_reloc_journal_remove(t, &err), &err);
}

#define PRIMITIVES(X) X(snapshot) X(snapshot_many) X(converge) X(replay) X(write_events) \
	X(remap) X(restore) X(restore_all) X(io_setup) X(io_destroy) X(mapping_at) X(mappings) X(rings) X(header) \
	X(reserve) X(unmap) X(park) X(unpark) X(remove_journals) X(capture) X(resubmit) \
	X(find_refs) X(rewrite_refs) X(reloc_journal) X(reloc_journal_read) X(reloc_journal_remove) \
	X(ring_mark) X(ring_unmark)

/* The functions of aiotk.core act on this process through one self
 * target kept in the registry (core.self() returns it), so that its
 * workspace serves every call until the state closes or
 * core.self():release(). */
static aiotk_target *shared_self(lua_State *L);
#define SELF_FN(name) static int l_##name(lua_State *L) \
	{ return p_##name(L, shared_self(L), 1); }
#define METHOD(name) static int m_##name(lua_State *L) \
	{ return p_##name(L, live_target(L, 1), 2); }
#define SELF_REG(name) { #name, l_##name },
#define METHOD_REG(name) { #name, m_##name },
PRIMITIVES(SELF_FN)
PRIMITIVES(METHOD)

static int t_detach(lua_State *L)
{
	aiotk_err err;
	ltarget *lt = check_target(L, 1);
	if (!lt->attached)
		return lua_pushboolean(L, 1), 1;
	set_attached(lt, 0);
	if (aiotk_target_detach(&lt->t, &err))
		return laiotk_fail(L, &err);
	lua_pushboolean(L, 1);
	return 1;
}

/* t:release(): the workspace (scratch memory, /dev/null descriptor) put
 * back now rather than at detach. */
static int t_release(lua_State *L)
{
	aiotk_err err;
	ltarget *lt = check_target(L, 1);
	return push_done(L, aiotk_target_release(&lt->t, &err), &err);
}

/* t:pin(): this process's thread pinned to its CPU until t:release(). */
static int t_pin(lua_State *L)
{
	aiotk_err err;
	ltarget *lt = check_target(L, 1);
	return push_done(L, aiotk_target_pin(&lt->t, &err), &err);
}

static int t_gc(lua_State *L)
{
	ltarget *lt = check_target(L, 1);
	set_attached(lt, 0);
	aiotk_target_free(&lt->t);
	return 0;
}

static int t_tostring(lua_State *L)
{
	ltarget *lt = check_target(L, 1);
	if (lt->t.ops->detach)
		lua_pushfstring(L, "target: %s %d (%s)", lt->t.ops->kind, lt->t.pid,
				lt->attached ? "stopped" : "detached");
	else
		lua_pushfstring(L, "target: %s", lt->t.ops->kind);
	return 1;
}

/* t:undo_area({len, ...}): the mapping a failed restore's rings are
 * parked in and destroyed from (aiotk_undo_area): { slots = {addr, ...},
 * at = its address, head = the length before the slots }, or nil, why,
 * code when no thread can be made. */
static int t_undo_area(lua_State *L)
{
	aiotk_err err;
	aiotk_target *t = live_target(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	size_t n = lua_objlen(L, 2);
	uint64_t *len = scratch(L, 2 * n, sizeof(*len)), *slots = len + n, head;
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, 2, (int)i + 1);
		len[i] = laiotk_check_u64(L, -1);
		lua_pop(L, 1);
	}
	if (aiotk_undo_area(t, len, n, slots, &head, &err))
		return laiotk_fail(L, &err);
	lua_createtable(L, 0, 3);
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		lua_pushnumber(L, (lua_Number)slots[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	lua_setfield(L, -2, "slots");
	laiotk_set_num(L, "at", AIOTK_UNDO_AT);
	laiotk_set_num(L, "head", head);
	return 1;
}

/* t:destroy_later(): the thread that destroys the rings parked in the
 * undo area, started (aiotk_destroy_later); its id, or nil, why, code. */
static int t_destroy_later(lua_State *L)
{
	aiotk_err err;
	int tid;
	if (aiotk_destroy_later(live_target(L, 1), &tid, &err))
		return laiotk_fail(L, &err);
	lua_pushnumber(L, tid);
	return 1;
}

static const luaL_Reg methods[] = {
	PRIMITIVES(METHOD_REG) { "detach", t_detach }, { "release", t_release },
	{ "pin", t_pin }, { "undo_area", t_undo_area },
	{ "destroy_later", t_destroy_later }, { NULL, NULL },
};

static int t_index(lua_State *L)
{
	ltarget *lt = check_target(L, 1);
	const char *k = luaL_checkstring(L, 2);
	if (!strcmp(k, "pid"))
		lua_pushnumber(L, lt->t.pid);
	else if (!strcmp(k, "stopped_ns"))
		lua_pushnumber(L, (double)aiotk_target_stopped_ns(&lt->t));
	else if (!strcmp(k, "stopped_at_ns"))
		lua_pushnumber(L, (double)aiotk_target_stopped_at_ns(&lt->t));
	else if (!strcmp(k, "dead"))
		lua_pushboolean(L, aiotk_target_dead(&lt->t));
	else if (!strcmp(k, "cpu_latency_held"))
		lua_pushboolean(L, aiotk_target_latency_held(&lt->t));
	else if (!strcmp(k, "simulated_contexts"))
		lua_pushnumber(L, aiotk_target_sim_live(&lt->t));
	else {
		for (const luaL_Reg *m = methods; m->name; m++)
			if (!strcmp(k, m->name)) {
				lua_pushcfunction(L, m->func);
				return 1;
			}
		return 0;
	}
	return 1;
}

static ltarget *new_target(lua_State *L)
{
	ltarget *lt = lua_newuserdata(L, sizeof(*lt));
	memset(lt, 0, sizeof(*lt));
	luaL_getmetatable(L, TARGET_MT);
	lua_setmetatable(L, -2);
	return lt;
}

/* maps(pid): every mapping of process pid, as target:mappings() gives
 * them, read without stopping it (a plan's look at the layout). */
static int l_maps(lua_State *L)
{
	aiotk_vma *v;
	aiotk_err err;
	size_t n;
	if (aiotk_maps_list((int)luaL_checkinteger(L, 1), &v, &n, &err))
		return laiotk_fail(L, &err);
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		push_vma(L, &v[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	free(v);
	return 1;
}

/* check_process(pid): true, or nil and why aiotk cannot stop it. */
/* targets_held(): processes still attached through this state. */
static int l_targets_held(lua_State *L)
{
	lua_pushinteger(L, held);
	return 1;
}

static int l_check_process(lua_State *L)
{
	aiotk_err err;
	if (aiotk_check_process((int)luaL_checkinteger(L, 1), &err))
		return laiotk_fail(L, &err);
	lua_pushboolean(L, 1);
	return 1;
}

/* The target userdata on the stack, opened (rc) or why not. */
static int opened(lua_State *L, ltarget *lt, int rc, const aiotk_err *err)
{
	if (rc)
		return laiotk_fail(L, err);
	set_attached(lt, 1);
	return 1;
}

/* A target for process pid (argument 1), made by open. */
static int pid_target(lua_State *L, int (*open)(aiotk_target *, int, aiotk_err *))
{
	aiotk_err err;
	int pid = (int)luaL_checknumber(L, 1);
	ltarget *lt = new_target(L);
	return opened(L, lt, open(&lt->t, pid, &err), &err);
}

/* attach(pid[, {cpu_latency=}]): every thread of pid stopped until
 * target:detach(); cpu_latency: hold the CPUs out of deep idle meanwhile
 * (aiotk_attach_opts). */
static int l_attach(lua_State *L)
{
	aiotk_err err;
	int pid = (int)luaL_checknumber(L, 1);
	aiotk_attach_opts o = { 0 };
	if (lua_istable(L, 2)) {
		lua_getfield(L, 2, "cpu_latency");
		o.hold_cpu_latency = lua_toboolean(L, -1);
		lua_pop(L, 1);
	}
	ltarget *lt = new_target(L);
	return opened(L, lt, aiotk_target_attach_with(&lt->t, pid, &o, &err), &err);
}
/* adopt(pid): a process this one already traces and holds stopped. */
static int l_adopt(lua_State *L) { return pid_target(L, aiotk_target_adopt); }
/* frozen(pid): a process someone else holds stopped; read-only. */
static int l_frozen(lua_State *L) { return pid_target(L, aiotk_target_frozen); }

/* simulate(model): a simulated kernel sizing rings by model. */
static int l_simulate(lua_State *L)
{
	aiotk_err err;
	aiotk_geom_host m = laiotk_check_model(L, 1);
	ltarget *lt = new_target(L);
	if (aiotk_target_sim(&lt->t, &m, &err))
		return laiotk_fail(L, &err);
	lt->attached = 1;
	return 1;
}

#define SELF_KEY "aiotk.self"

/* self(): this process as a target, the one aiotk.core's functions use. */
static int l_self(lua_State *L)
{
	lua_getfield(L, LUA_REGISTRYINDEX, SELF_KEY);
	if (!lua_isnil(L, -1))
		return 1;
	lua_pop(L, 1);
	ltarget *lt = new_target(L);
	aiotk_target_self(&lt->t);
	lt->attached = 1;
	lua_pushvalue(L, -1);
	lua_setfield(L, LUA_REGISTRYINDEX, SELF_KEY);
	return 1;
}

static aiotk_target *shared_self(lua_State *L)
{
	l_self(L);
	ltarget *lt = check_target(L, -1);
	lua_pop(L, 1); /* still referenced from the registry */
	return &lt->t;
}

/* undo_threads(pid): the tids of the destroyer threads alive in pid
 * (aiotk_destroyers), {} when none or pid is gone. */
static int l_undo_threads(lua_State *L)
{
	int tids[64];
	size_t n = 0;
	aiotk_destroyers((int)luaL_checkinteger(L, 1), tids, 64, &n);
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		lua_pushnumber(L, tids[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	return 1;
}

void laiotk_target_register(lua_State *L)
{
	static const luaL_Reg meta[] = {
		{ "__gc", t_gc }, { "__tostring", t_tostring }, { "__index", t_index },
		{ NULL, NULL },
	};
	static const luaL_Reg funcs[] = {
		PRIMITIVES(SELF_REG) { "attach", l_attach }, { "adopt", l_adopt }, { "frozen", l_frozen },
		{ "check_process", l_check_process }, { "maps", l_maps }, { "self", l_self },
		{ "simulate", l_simulate }, { "undo_threads", l_undo_threads },
		{ "targets_held", l_targets_held }, { NULL, NULL },
	};
	if (luaL_newmetatable(L, TARGET_MT))
		luaL_register(L, NULL, meta);
	lua_pop(L, 1);
	luaL_register(L, NULL, funcs);
}
