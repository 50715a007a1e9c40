/* aiotk.core.criu_read / criu_patch: CRIU dumps for the Lua side, and the
 * atomic file write the fixup uses. */
#include "lua_aiotk.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void push_proc(lua_State *L, const aiotk_criu_proc *p)
{
	aiotk_err err;
	lua_createtable(L, 0, 3);
	laiotk_set_num(L, "pid", p->pid);
	lua_pushstring(L, p->mm_path);
	lua_setfield(L, -2, "mm_path");
	lua_createtable(L, (int)p->nrings, 0);
	for (size_t i = 0; i < p->nrings; i++) {
		const aiotk_criu_ring *c = &p->rings[i];
		lua_createtable(L, 0, 4);
		aiotk_ring *r = laiotk_ring_new(L);
		if (aiotk_ring_copy(r, &c->ring, &err))
			luaL_error(L, "%s", err.msg);
		lua_setfield(L, -2, "ring");
		laiotk_set_num(L, "nr_req", c->nr_req);
		laiotk_set_num(L, "nr_req_off", (double)c->nr_req_off);
		laiotk_set_num(L, "nr_req_len", (double)c->nr_req_len);
		lua_rawseti(L, -2, (int)i + 1);
	}
	lua_setfield(L, -2, "rings");
}

/* criu_read(dir) -> { {pid=, mm_path=, rings={ {ring=, nr_req=, ...} }} } */
static int l_criu_read(lua_State *L)
{
	aiotk_criu_dump d;
	aiotk_err err;
	unsigned page = (unsigned)sysconf(_SC_PAGESIZE);
	if (aiotk_criu_read(luaL_checkstring(L, 1), page, &d, &err))
		return laiotk_fail(L, &err);
	lua_createtable(L, (int)d.nprocs, 0);
	for (size_t i = 0; i < d.nprocs; i++) {
		push_proc(L, &d.procs[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	aiotk_criu_free(&d);
	return 1;
}

/* criu_patch(bytes, off, len, n) -> bytes with that nr_req varint set. */
static int l_criu_patch(lua_State *L)
{
	size_t len;
	aiotk_err err;
	const char *s = luaL_checklstring(L, 1, &len);
	aiotk_criu_ring r;
	memset(&r, 0, sizeof(r));
	r.nr_req_off = (size_t)luaL_checknumber(L, 2);
	r.nr_req_len = (size_t)luaL_checknumber(L, 3);
	uint32_t n = (uint32_t)luaL_checknumber(L, 4);
	luaL_Buffer b;
	char *copy = malloc(len ? len : 1);
	if (!copy)
		return luaL_error(L, "out of memory");
	memcpy(copy, s, len);
	if (aiotk_criu_patch_nr_req((uint8_t *)copy, len, &r, n, &err)) {
		free(copy);
		return laiotk_fail(L, &err);
	}
	luaL_buffinit(L, &b);
	luaL_addlstring(&b, copy, len);
	free(copy);
	luaL_pushresult(&b);
	return 1;
}

static int l_write_atomic(lua_State *L)
{
	size_t len;
	aiotk_err err;
	const char *path = luaL_checkstring(L, 1);
	const char *s = luaL_checklstring(L, 2, &len);
	if (aiotk_write_atomic(path, (const uint8_t *)s, len, &err))
		return laiotk_fail(L, &err);
	lua_pushboolean(L, 1);
	return 1;
}

void laiotk_criu_register(lua_State *L)
{
	static const luaL_Reg f[] = {
		{ "criu_read", l_criu_read }, { "criu_patch", l_criu_patch },
		{ "write_atomic", l_write_atomic }, { NULL, NULL },
	};
	luaL_register(L, NULL, f);
}
