/* aiotk.core: the primitives, one Lua function each. */
#include "lua_aiotk.h"

#include <errno.h>
#include <inttypes.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int laiotk_fail(lua_State *L, const aiotk_err *err)
{
	lua_pushnil(L);
	lua_pushstring(L, err->msg);
	lua_pushstring(L, aiotk_code_name(err->code));
	lua_pushinteger(L, err->errno_);
	return 4;
}

int laiotk_write_flags(lua_State *L, int idx)
{
	if (lua_isnoneornil(L, idx))
		return 0;
	luaL_checktype(L, idx, LUA_TTABLE);
	lua_getfield(L, idx, "sync");
	int nosync = lua_isboolean(L, -1) && !lua_toboolean(L, -1);
	lua_pop(L, 1);
	return nosync ? AIOTK_WRITE_NOSYNC : 0;
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
aiotk_geom_host laiotk_check_model(lua_State *L, int idx)
{
	aiotk_host h;
	aiotk_err err;
	memset(&h, 0, sizeof(h));
	if (!lua_isnoneornil(L, idx))
		luaL_checktype(L, idx, LUA_TTABLE);
	/* A whole model (core.host() gives one) needs no probe: restores pass
	 * theirs for each ring while the process is stopped. */
	int whole = !lua_isnoneornil(L, idx) &&
		    laiotk_opt_field_u64(L, idx, "cpus", 0) &&
		    laiotk_opt_field_u64(L, idx, "page_size", 0);
	if (whole) {
		lua_getfield(L, idx, "formula");
		whole = lua_isstring(L, -1);
		lua_pop(L, 1);
	}
	if (!whole && aiotk_host_probe(&h, &err))
		luaL_error(L, "%s", err.msg);
	if (lua_isnoneornil(L, idx))
		return h.geom;
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
	aiotk_geom_host m = laiotk_check_model(L, 2);
	aiotk_geom g;
	aiotk_err err;
	if (aiotk_geom_ring(&m, n, &g, &err))
		return laiotk_fail(L, &err);
	lua_createtable(L, 0, 4);
	laiotk_set_num(L, "nr", g.nr);
	laiotk_set_num(L, "ring_len", (double)g.ring_len);
	laiotk_set_num(L, "pages", (double)g.pages);
	laiotk_set_num(L, "req_batch", aiotk_geom_req_batch(&m, g.nr));
	laiotk_set_num(L, "capacity", aiotk_geom_capacity(&m, g.nr));
	return 1;
}

typedef int (*n_search)(const aiotk_geom_host *, uint64_t, uint32_t *, aiotk_err *);

static int search_n(lua_State *L, n_search f)
{
	uint64_t len = laiotk_check_u64(L, 1);
	aiotk_geom_host m = laiotk_check_model(L, 2);
	uint32_t n;
	aiotk_err err;
	if (f(&m, len, &n, &err))
		return laiotk_fail(L, &err);
	lua_pushnumber(L, n);
	return 1;
}

/* min_n(len[, model]): smallest n making exactly len; fit_n: at least len. */
static int l_min_n(lua_State *L) { return search_n(L, aiotk_geom_min_n); }
static int l_fit_n(lua_State *L) { return search_n(L, aiotk_geom_fit_n); }

/* ring_len(nr[, page_size]): the mapping length of a ring of nr slots. */
static int l_ring_len(lua_State *L)
{
	uint32_t nr = (uint32_t)luaL_checknumber(L, 1);
	unsigned page = (unsigned)luaL_optnumber(L, 2, (lua_Number)sysconf(_SC_PAGESIZE));
	lua_pushnumber(L, (double)aiotk_geom_len_for_nr(nr, page));
	return 1;
}

/* budget_need(needed, aio_nr, aio_max_nr), budget_short(who, needed,
 * aio_nr, aio_max_nr): the budget's sentences (aiotk_budget_need). */
static int l_budget_need(lua_State *L)
{
	char buf[128];
	aiotk_budget_need(buf, sizeof(buf), laiotk_check_u64(L, 1), laiotk_check_u64(L, 2),
			  laiotk_check_u64(L, 3));
	lua_pushstring(L, buf);
	return 1;
}

static int l_budget_short(lua_State *L)
{
	char buf[400];
	aiotk_budget_short(buf, sizeof(buf), luaL_checkstring(L, 1), laiotk_check_u64(L, 2),
			   laiotk_check_u64(L, 3), laiotk_check_u64(L, 4));
	lua_pushstring(L, buf);
	return 1;
}

/* nr_for_len(ring_len): the slots of a ring of that mapping length. */
static int l_nr_for_len(lua_State *L)
{
	lua_pushnumber(L, (double)aiotk_geom_nr_for_len(laiotk_check_u64(L, 1)));
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

/* raise_aio_max_nr(was, to): aiotk_aio_max_nr_raise. */
static int l_raise_aio_max_nr(lua_State *L)
{
	aiotk_err err;
	if (aiotk_aio_max_nr_raise(laiotk_check_u64(L, 1), laiotk_check_u64(L, 2), &err))
		return laiotk_fail(L, &err);
	lua_pushboolean(L, 1);
	return 1;
}

/* end_aio_max_nr_raise([keep]): aiotk_aio_max_nr_end. */
static int l_end_aio_max_nr_raise(lua_State *L)
{
	aiotk_err err;
	if (aiotk_aio_max_nr_end(lua_toboolean(L, 1), &err))
		return laiotk_fail(L, &err);
	lua_pushboolean(L, 1);
	return 1;
}

/* aio_max_nr_raised() -> was, to, or nothing. */
static int l_aio_max_nr_raised(lua_State *L)
{
	uint64_t was, to;
	if (!aiotk_aio_max_nr_raised(&was, &to))
		return 0;
	lua_pushnumber(L, (double)was);
	lua_pushnumber(L, (double)to);
	return 2;
}

static int l_sleep_ms(lua_State *L)
{
	lua_Number ms = luaL_checknumber(L, 1);
	struct timespec ts = { (time_t)(ms / 1000), (long)((ms - (time_t)(ms / 1000) * 1000) * 1e6) };
	while (ms > 0 && nanosleep(&ts, &ts) && errno == EINTR)
		;
	return 0;
}

static int l_now_ns(lua_State *L)
{
	lua_pushnumber(L, (double)aiotk_now_ns());
	return 1;
}

static const luaL_Reg funcs[] = {
	{ "host", l_host }, { "geometry", l_geometry }, { "min_n", l_min_n }, { "fit_n", l_fit_n },
	{ "ring_len", l_ring_len }, { "nr_for_len", l_nr_for_len },
	{ "budget_need", l_budget_need }, { "budget_short", l_budget_short },
	{ "aio_nr", l_aio_nr }, { "set_aio_max_nr", l_set_aio_max_nr },
	{ "raise_aio_max_nr", l_raise_aio_max_nr }, { "end_aio_max_nr_raise", l_end_aio_max_nr_raise },
	{ "aio_max_nr_raised", l_aio_max_nr_raised },
	{ "now_ns", l_now_ns }, { "sleep_ms", l_sleep_ms },
	{ "ring", laiotk_ring_from_table }, { "image", laiotk_image_create },
	{ "read_image", laiotk_image_read }, { "decode_image", laiotk_image_decode },
	{ "image_pack", laiotk_pack_create }, { "read_pack", laiotk_pack_read },
	{ NULL, NULL },
};

/* core.errno: the errno values Lua decides on, by name (the fourth value
 * of a failure is one of them or another errno). */
static void push_errno_names(lua_State *L)
{
	static const struct { const char *name; int v; } names[] = {
		{ "EPERM", EPERM }, { "ENOENT", ENOENT }, { "ESRCH", ESRCH }, { "EINTR", EINTR },
		{ "EAGAIN", EAGAIN }, { "ENOMEM", ENOMEM }, { "EACCES", EACCES }, { "EFAULT", EFAULT },
		{ "EBUSY", EBUSY }, { "EEXIST", EEXIST }, { "EINVAL", EINVAL }, { "ENOSPC", ENOSPC },
		{ "ENOSYS", ENOSYS }, { "EOPNOTSUPP", EOPNOTSUPP },
	};
	lua_createtable(L, 0, (int)(sizeof(names) / sizeof(names[0])));
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		laiotk_set_num(L, names[i].name, names[i].v);
}

int luaopen_aiotk_core(lua_State *L)
{
	laiotk_ring_register(L);
	laiotk_image_register(L);
	lua_newtable(L);
	luaL_register(L, NULL, funcs);
	lua_pushstring(L, AIOTK_VERSION);
	lua_setfield(L, -2, "version");
	push_errno_names(L);
	lua_setfield(L, -2, "errno");
	lua_pushstring(L, AIOTK_CRIU_STAMP);
	lua_setfield(L, -2, "CRIU_STAMP");
	laiotk_target_register(L);
	laiotk_criu_register(L);
	laiotk_lab_register(L);
	laiotk_bench_register(L);
	laiotk_proc_register(L);
	laiotk_kview_register(L);
	laiotk_bytecode_register(L);
	laiotk_uring_rebuild_register(L);
	return 1;
}
