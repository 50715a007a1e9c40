/* aiotk.core: the primitives, one Lua function each. */
#include "lua_aiotk.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int laiotk_fail(lua_State *L, const aiotk_err *err)
{
	lua_pushnil(L);
	lua_pushstring(L, err->msg);
	lua_pushstring(L, aiotk_code_name(err->code));
	return 3;
}

void laiotk_push_u64hex(lua_State *L, uint64_t v)
{
	char buf[24];
	snprintf(buf, sizeof(buf), "0x%016" PRIx64, v);
	lua_pushstring(L, buf);
}

/* Accepts a number (exact below 2^53) or a "0x..."/decimal string. */
uint64_t laiotk_check_u64(lua_State *L, int idx)
{
	if (lua_type(L, idx) == LUA_TSTRING) {
		const char *s = lua_tostring(L, idx);
		char *end;
		uint64_t v = strtoull(s, &end, 0);
		if (*s == 0 || *end != 0 || *s == '-')
			luaL_argerror(L, idx, "not a 64-bit unsigned number");
		return v;
	}
	lua_Number n = luaL_checknumber(L, idx);
	if (n < 0 || n > 9007199254740992.0)
		luaL_argerror(L, idx, "number out of exact range; pass a \"0x...\" string");
	return (uint64_t)n;
}

uint64_t laiotk_opt_field_u64(lua_State *L, int t, const char *k, uint64_t d)
{
	if (lua_isnoneornil(L, t))
		return d;
	lua_getfield(L, t, k);
	uint64_t v = lua_isnil(L, -1) ? d : laiotk_check_u64(L, lua_gettop(L));
	lua_pop(L, 1);
	return v;
}

void laiotk_set_num(lua_State *L, const char *k, double v)
{
	lua_pushnumber(L, v);
	lua_setfield(L, -2, k);
}

void laiotk_push_event(lua_State *L, const aiotk_event *e)
{
	lua_createtable(L, 0, 4);
	laiotk_push_u64hex(L, e->data);
	lua_setfield(L, -2, "data");
	laiotk_push_u64hex(L, e->obj);
	lua_setfield(L, -2, "obj");
	laiotk_set_num(L, "res", (double)e->res);
	laiotk_set_num(L, "res2", (double)e->res2);
}

/* A host model table {cpus, page_size, formula="current"|"legacy"}; any
 * field left out comes from this host. */
static aiotk_geom_host check_model(lua_State *L, int idx)
{
	aiotk_host h;
	aiotk_err err;
	if (aiotk_host_probe(&h, &err))
		luaL_error(L, "%s", err.msg);
	if (lua_isnoneornil(L, idx))
		return h.geom;
	luaL_checktype(L, idx, LUA_TTABLE);
	h.geom.cpus = (unsigned)laiotk_opt_field_u64(L, idx, "cpus", h.geom.cpus);
	h.geom.page_size = (unsigned)laiotk_opt_field_u64(L, idx, "page_size",
							  h.geom.page_size);
	lua_getfield(L, idx, "formula");
	const char *f = lua_tostring(L, -1);
	if (f && strcmp(f, "legacy") == 0)
		h.geom.formula = AIOTK_FORMULA_LEGACY;
	else if (f && strcmp(f, "current") != 0)
		luaL_error(L, "formula must be \"current\" or \"legacy\", not \"%s\"", f);
	lua_pop(L, 1);
	return h.geom;
}

static void push_model(lua_State *L, const aiotk_geom_host *g)
{
	laiotk_set_num(L, "cpus", g->cpus);
	laiotk_set_num(L, "page_size", g->page_size);
	lua_pushstring(L, aiotk_formula_name(g->formula));
	lua_setfield(L, -2, "formula");
}

static int l_host(lua_State *L)
{
	aiotk_host h;
	aiotk_err err;
	if (aiotk_host_probe(&h, &err))
		return laiotk_fail(L, &err);
	lua_createtable(L, 0, 6);
	push_model(L, &h.geom);
	lua_pushstring(L, h.release);
	lua_setfield(L, -2, "release");
	laiotk_set_num(L, "aio_max_nr", (double)h.aio_max_nr);
	laiotk_set_num(L, "aio_nr", (double)h.aio_nr);
	return 1;
}

static int l_geometry(lua_State *L)
{
	uint32_t n = (uint32_t)luaL_checknumber(L, 1);
	aiotk_geom_host m = check_model(L, 2);
	aiotk_geom g;
	aiotk_err err;
	if (aiotk_geom_ring(&m, n, &g, &err))
		return laiotk_fail(L, &err);
	lua_createtable(L, 0, 4);
	laiotk_set_num(L, "nr", g.nr);
	laiotk_set_num(L, "ring_len", (double)g.ring_len);
	laiotk_set_num(L, "pages", (double)g.pages);
	laiotk_set_num(L, "req_batch", aiotk_geom_req_batch(&m, g.nr));
	return 1;
}

static int l_min_n(lua_State *L)
{
	uint64_t len = laiotk_check_u64(L, 1);
	aiotk_geom_host m = check_model(L, 2);
	uint32_t n;
	aiotk_err err;
	if (aiotk_geom_min_n(&m, len, &n, &err))
		return laiotk_fail(L, &err);
	lua_pushnumber(L, n);
	return 1;
}

static int l_snapshot(lua_State *L)
{
	aiotk_target t;
	aiotk_err err;
	uint64_t addr = laiotk_check_u64(L, 1);
	int flags = lua_toboolean(L, 2) ? AIOTK_SNAP_AREA : 0;
	aiotk_ring *r = laiotk_ring_new(L);
	aiotk_target_self(&t);
	if (aiotk_snapshot(&t, addr, flags, r, &err))
		return laiotk_fail(L, &err);
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

static int l_converge(lua_State *L)
{
	aiotk_target t;
	aiotk_err err;
	aiotk_converge_result res;
	uint64_t len = laiotk_check_u64(L, 1);
	aiotk_geom_host m = check_model(L, 2);
	aiotk_target_self(&t);
	if (aiotk_converge(&t, &m, len, &res, &err))
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
	lua_pushstring(L, kind_name(s->kind));
	lua_setfield(L, -2, "kind");
}

static int l_replay(lua_State *L)
{
	aiotk_target t;
	aiotk_err err;
	aiotk_replay_stats st;
	uint64_t ctx = laiotk_check_u64(L, 1);
	uint32_t nr = (uint32_t)luaL_checknumber(L, 2);
	uint32_t head = (uint32_t)luaL_checknumber(L, 3);
	uint32_t tail = (uint32_t)luaL_checknumber(L, 4);
	aiotk_replay_opts o = check_replay_opts(L, 5);
	aiotk_target_self(&t);
	if (aiotk_replay(&t, ctx, nr, head, tail, &o, &st, &err))
		return laiotk_fail(L, &err);
	push_replay_stats(L, &st);
	return 1;
}

static int l_write_events(lua_State *L)
{
	aiotk_target t;
	aiotk_err err;
	uint64_t ctx = laiotk_check_u64(L, 1);
	aiotk_ring *r = laiotk_ring_check(L, 2);
	aiotk_target_self(&t);
	if (aiotk_events_write(&t, ctx, r, &err))
		return laiotk_fail(L, &err);
	lua_pushboolean(L, 1);
	return 1;
}

static int l_remap(lua_State *L)
{
	aiotk_target t;
	aiotk_err err;
	uint64_t ctx = laiotk_check_u64(L, 1), len = laiotk_check_u64(L, 2);
	uint64_t dest = laiotk_check_u64(L, 3);
	int flags = 0;
	if (lua_istable(L, 4)) {
		lua_getfield(L, 4, "placeholder");
		flags = lua_toboolean(L, -1) ? AIOTK_REMAP_PLACEHOLDER : 0;
		lua_pop(L, 1);
	}
	aiotk_target_self(&t);
	if (aiotk_remap(&t, ctx, len, dest, flags, &err))
		return laiotk_fail(L, &err);
	lua_pushnumber(L, (double)dest);
	return 1;
}

static int l_restore(lua_State *L)
{
	aiotk_target t;
	aiotk_err err;
	aiotk_restore_result res;
	aiotk_restore_opts o;
	memset(&o, 0, sizeof(o));
	aiotk_ring *r = laiotk_ring_check(L, 1);
	if (lua_istable(L, 2)) {
		lua_getfield(L, 2, "model");
		if (lua_istable(L, -1))
			o.model = check_model(L, lua_gettop(L));
		lua_getfield(L, 2, "replay");
		o.replay = check_replay_opts(L, lua_gettop(L));
		lua_getfield(L, 2, "placeholder");
		o.remap_flags = lua_toboolean(L, -1) ? AIOTK_REMAP_PLACEHOLDER : 0;
		lua_pop(L, 3);
	}
	aiotk_target_self(&t);
	if (aiotk_restore_ring(&t, r, &o, &res, &err))
		return laiotk_fail(L, &err);
	lua_createtable(L, 0, 8);
	laiotk_set_num(L, "ctx", (double)res.ctx);
	push_conv(L, &res.conv);
	lua_setfield(L, -2, "converge");
	push_replay_stats(L, &res.replay);
	lua_setfield(L, -2, "replay");
	laiotk_set_num(L, "ns_converge", (double)res.ns_converge);
	laiotk_set_num(L, "ns_replay", (double)res.ns_replay);
	laiotk_set_num(L, "ns_events", (double)res.ns_events);
	laiotk_set_num(L, "ns_remap", (double)res.ns_remap);
	return 1;
}

static int l_io_setup(lua_State *L)
{
	aiotk_target t;
	aiotk_err err;
	uint64_t ctx;
	aiotk_target_self(&t);
	if (aiotk_io_setup(&t, (uint32_t)luaL_checknumber(L, 1), &ctx, &err))
		return laiotk_fail(L, &err);
	lua_pushnumber(L, (double)ctx);
	return 1;
}

static int l_io_destroy(lua_State *L)
{
	aiotk_target t;
	aiotk_err err;
	aiotk_target_self(&t);
	if (aiotk_io_destroy(&t, laiotk_check_u64(L, 1), &err))
		return laiotk_fail(L, &err);
	lua_pushboolean(L, 1);
	return 1;
}

static int l_aio_nr(lua_State *L)
{
	uint64_t nr, max;
	aiotk_err err;
	if (aiotk_aio_nr(&nr, &max, &err))
		return laiotk_fail(L, &err);
	lua_pushnumber(L, (double)nr);
	lua_pushnumber(L, (double)max);
	return 2;
}

static int l_set_aio_max_nr(lua_State *L)
{
	aiotk_err err;
	if (aiotk_set_aio_max_nr(laiotk_check_u64(L, 1), &err))
		return laiotk_fail(L, &err);
	lua_pushboolean(L, 1);
	return 1;
}

static int l_maps(lua_State *L)
{
	aiotk_vma v;
	aiotk_err err;
	int pid = (int)luaL_optnumber(L, 3, 0);
	int rc = aiotk_maps_overlap(pid, laiotk_check_u64(L, 1),
				    laiotk_check_u64(L, 2), 0, &v, &err);
	if (rc < 0)
		return laiotk_fail(L, &err);
	if (rc == 0) {
		lua_pushboolean(L, 0);
		return 1;
	}
	lua_createtable(L, 0, 4);
	laiotk_set_num(L, "start", (double)v.start);
	laiotk_set_num(L, "finish", (double)v.end);
	lua_pushstring(L, v.perms);
	lua_setfield(L, -2, "perms");
	lua_pushstring(L, v.path);
	lua_setfield(L, -2, "path");
	return 1;
}

static int l_rings(lua_State *L)
{
	aiotk_vma v[4096];
	aiotk_err err;
	size_t n;
	if (aiotk_maps_rings((int)luaL_optnumber(L, 1, 0), v, 4096, &n, &err))
		return laiotk_fail(L, &err);
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n && i < 4096; i++) {
		lua_createtable(L, 0, 2);
		laiotk_set_num(L, "addr", (double)v[i].start);
		laiotk_set_num(L, "ring_len", (double)(v[i].end - v[i].start));
		lua_rawseti(L, -2, (int)i + 1);
	}
	return 1;
}

static int l_now_ns(lua_State *L)
{
	lua_pushnumber(L, (double)aiotk_now_ns());
	return 1;
}

static const luaL_Reg funcs[] = {
	{ "host", l_host }, { "geometry", l_geometry }, { "min_n", l_min_n },
	{ "snapshot", l_snapshot }, { "converge", l_converge },
	{ "replay", l_replay }, { "write_events", l_write_events },
	{ "remap", l_remap }, { "restore", l_restore },
	{ "io_setup", l_io_setup }, { "io_destroy", l_io_destroy },
	{ "aio_nr", l_aio_nr }, { "set_aio_max_nr", l_set_aio_max_nr },
	{ "mapping_at", l_maps }, { "rings", l_rings }, { "now_ns", l_now_ns },
	{ "ring", laiotk_ring_from_table }, { "image", laiotk_image_create },
	{ "read_image", laiotk_image_read }, { "decode_image", laiotk_image_decode },
	{ NULL, NULL },
};

int luaopen_aiotk_core(lua_State *L)
{
	laiotk_ring_register(L);
	laiotk_image_register(L);
	lua_newtable(L);
	luaL_register(L, NULL, funcs);
	lua_pushstring(L, AIOTK_VERSION);
	lua_setfield(L, -2, "version");
	laiotk_lab_register(L);
	laiotk_bench_register(L);
	return 1;
}
