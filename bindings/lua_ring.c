/* aiotk.ring userdata: one saved or snapshotted ring. */
#include "lua_aiotk.h"

#include <linux/aio_abi.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

aiotk_ring *laiotk_ring_new(lua_State *L)
{
	aiotk_ring *r = lua_newuserdata(L, sizeof(*r));
	memset(r, 0, sizeof(*r));
	luaL_getmetatable(L, RING_MT);
	lua_setmetatable(L, -2);
	return r;
}

aiotk_ring *laiotk_ring_check(lua_State *L, int idx)
{
	return luaL_checkudata(L, idx, RING_MT);
}

static int ring_gc(lua_State *L)
{
	aiotk_ring_free(laiotk_ring_check(L, 1));
	return 0;
}

static int ring_tostring(lua_State *L)
{
	aiotk_ring *r = laiotk_ring_check(L, 1);
	char buf[160];
	snprintf(buf, sizeof(buf),
		 "ring 0x%llx: nr %u, head %u, tail %u, %u events, %llu bytes%s",
		 (unsigned long long)r->addr, r->nr, r->head, r->tail, r->nevents,
		 (unsigned long long)r->ring_len, r->tail < r->head ? ", wrapped" : "");
	lua_pushstring(L, buf);
	return 1;
}

static int ring_len(lua_State *L)
{
	lua_pushnumber(L, laiotk_ring_check(L, 1)->nevents);
	return 1;
}

/* ring:event(i): the i-th live event, 1-based from head. */
static int ring_event(lua_State *L)
{
	aiotk_ring *r = laiotk_ring_check(L, 1);
	lua_Integer i = luaL_checkinteger(L, 2);
	if (i < 1 || i > (lua_Integer)r->nevents)
		return 0;
	laiotk_push_event(L, &r->events[i - 1]);
	return 1;
}

static int ring_events(lua_State *L)
{
	aiotk_ring *r = laiotk_ring_check(L, 1);
	lua_createtable(L, (int)r->nevents, 0);
	for (uint32_t i = 0; i < r->nevents; i++) {
		laiotk_push_event(L, &r->events[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	return 1;
}

/* ring:slot(k): slot k (0-based) of the whole area, if it was saved. */
static int ring_slot(lua_State *L)
{
	aiotk_ring *r = laiotk_ring_check(L, 1);
	lua_Integer k = luaL_checkinteger(L, 2);
	if (!r->area || k < 0 || k >= (lua_Integer)r->nr)
		return 0;
	laiotk_push_event(L, &r->area[k]);
	return 1;
}

/* ring:captured() -> { {obj=, data=, opcode=, fd=, buf=}, ... }: the
 * requests in flight at dump, decoded from their saved iocbs. */
static int ring_captured(lua_State *L)
{
	aiotk_ring *r = laiotk_ring_check(L, 1);
	lua_createtable(L, (int)r->ncaptured, 0);
	for (uint32_t i = 0; i < r->ncaptured; i++) {
		struct iocb cb;
		memcpy(&cb, r->captured[i].iocb, sizeof(cb));
		lua_createtable(L, 0, 5);
		laiotk_push_u64hex(L, r->captured[i].obj);
		lua_setfield(L, -2, "obj");
		laiotk_push_u64hex(L, cb.aio_data);
		lua_setfield(L, -2, "data");
		laiotk_set_num(L, "opcode", cb.aio_lio_opcode);
		laiotk_set_num(L, "fd", cb.aio_fildes);
		laiotk_push_u64hex(L, cb.aio_buf);
		lua_setfield(L, -2, "buf");
		lua_rawseti(L, -2, (int)i + 1);
	}
	return 1;
}

/* ring:note_kernel{n=, kernel_tail=}: what the kernel view said at dump. */
static int ring_note_kernel(lua_State *L)
{
	aiotk_ring *r = laiotk_ring_check(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	r->n = (uint32_t)laiotk_opt_field_u64(L, 2, "n", r->n);
	lua_getfield(L, 2, "kernel_tail");
	if (!lua_isnil(L, -1)) {
		r->has_kernel_tail = 1;
		r->kernel_tail = (uint32_t)luaL_checknumber(L, -1);
	}
	lua_pop(L, 1);
	return 0;
}

/* ring:at(addr): a copy of the ring saved at another address (what a
 * relocated ring is rebuilt from: same head, tail, events, captured
 * requests; another id). */
static int ring_at(lua_State *L)
{
	aiotk_err err;
	aiotk_ring *r = laiotk_ring_check(L, 1);
	uint64_t addr = laiotk_check_u64(L, 2);
	aiotk_ring *c = laiotk_ring_new(L);
	if (aiotk_ring_copy(c, r, &err))
		return laiotk_fail(L, &err);
	c->addr = addr;
	return 1;
}

static const luaL_Reg methods[] = {
	{ "at", ring_at }, { "event", ring_event }, { "events", ring_events }, { "slot", ring_slot },
	{ "captured", ring_captured }, { "note_kernel", ring_note_kernel },
	{ NULL, NULL },
};

static int ring_index(lua_State *L)
{
	aiotk_ring *r = laiotk_ring_check(L, 1);
	const char *k = luaL_checkstring(L, 2);
	struct { const char *name; double v; } f[] = {
		{ "addr", (double)r->addr }, { "ring_len", (double)r->ring_len },
		{ "nr", r->nr }, { "head", r->head }, { "tail", r->tail },
		{ "id", r->id }, { "magic", r->magic }, { "n", r->n },
		{ "nevents", r->nevents }, { "compat_features", r->compat_features },
		{ "incompat_features", r->incompat_features },
		{ "header_length", r->header_length },
	};
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
		if (!strcmp(k, f[i].name)) {
			lua_pushnumber(L, f[i].v);
			return 1;
		}
	if (!strcmp(k, "wrapped")) {
		lua_pushboolean(L, r->tail < r->head);
		return 1;
	}
	if (!strcmp(k, "kernel_tail")) {
		if (!r->has_kernel_tail)
			return 0;
		lua_pushnumber(L, r->kernel_tail);
		return 1;
	}
	if (!strcmp(k, "ncaptured")) {
		lua_pushnumber(L, r->ncaptured);
		return 1;
	}
	if (!strcmp(k, "has_area")) {
		lua_pushboolean(L, r->area != NULL);
		return 1;
	}
	for (const luaL_Reg *m = methods; m->name; m++)
		if (!strcmp(k, m->name)) {
			lua_pushcfunction(L, m->func);
			return 1;
		}
	return 0;
}

void laiotk_ring_register(lua_State *L)
{
	static const luaL_Reg meta[] = {
		{ "__gc", ring_gc }, { "__tostring", ring_tostring },
		{ "__len", ring_len }, { "__index", ring_index }, { NULL, NULL },
	};
	if (luaL_newmetatable(L, RING_MT))
		luaL_register(L, NULL, meta);
	lua_pop(L, 1);
}

static aiotk_event event_from(lua_State *L, int t)
{
	aiotk_event e;
	e.data = laiotk_opt_field_u64(L, t, "data", 0);
	e.obj = laiotk_opt_field_u64(L, t, "obj", 0);
	lua_getfield(L, t, "res");
	e.res = (int64_t)lua_tonumber(L, -1);
	lua_getfield(L, t, "res2");
	e.res2 = (int64_t)lua_tonumber(L, -1);
	lua_pop(L, 2);
	return e;
}

static int events_from(lua_State *L, int t, aiotk_ring *r)
{
	lua_getfield(L, t, "events");
	size_t n = lua_istable(L, -1) ? lua_objlen(L, -1) : 0;
	r->nevents = (uint32_t)n;
	r->events = calloc(n ? n : 1, sizeof(aiotk_event));
	if (!r->events)
		return luaL_error(L, "out of memory");
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, -1, (int)i + 1);
		luaL_checktype(L, -1, LUA_TTABLE);
		r->events[i] = event_from(L, lua_gettop(L));
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	return 0;
}

/* aiotk.core.ring{addr=, nr=, head=, tail=, events={...}[, ring_len=, n=]}:
 * a ring state built by hand (tests, other hosts, imports). */
int laiotk_ring_from_table(lua_State *L)
{
	aiotk_err err;
	unsigned page = (unsigned)sysconf(_SC_PAGESIZE);
	luaL_checktype(L, 1, LUA_TTABLE);
	page = (unsigned)laiotk_opt_field_u64(L, 2, "page_size", page);
	aiotk_ring *r = laiotk_ring_new(L);
	r->addr = laiotk_opt_field_u64(L, 1, "addr", 0);
	r->nr = (uint32_t)laiotk_opt_field_u64(L, 1, "nr", 0);
	r->ring_len = laiotk_opt_field_u64(L, 1, "ring_len",
					   aiotk_geom_len_for_nr(r->nr, page));
	r->head = (uint32_t)laiotk_opt_field_u64(L, 1, "head", 0);
	r->tail = (uint32_t)laiotk_opt_field_u64(L, 1, "tail", 0);
	r->n = (uint32_t)laiotk_opt_field_u64(L, 1, "n", 0);
	r->magic = AIOTK_RING_MAGIC;
	r->compat_features = AIOTK_RING_COMPAT;
	r->header_length = AIOTK_HEADER_LEN;
	events_from(L, 1, r);
	if (aiotk_ring_validate(r, page, &err))
		return laiotk_fail(L, &err);
	return 1;
}
