/* The Lua side of aiotk_criu.so (lua_side.h): a Lua state with
 * aiotk.core, CRIU's hooks handed to scripts/aiotk/criu_plugin.lua, where
 * the policy lives, and Lua's answers turned into CRIU's return codes.
 * Errors are logged through CRIU's log and returned, never abort(). */
#include "criu_plugin_abi.h"
#include "lua_aiotk.h"
#include "lua_side.h"

#include <errno.h>
#include <luajit.h>
#include <lualib.h>
#include <string.h>

static lua_State *L;
static int module_ref = LUA_NOREF;
static aiotk_criu_say say;

/* log(level, msg) for the Lua side: "error", "warn", "info", "debug". */
static int l_log(lua_State *S)
{
	const char *level = luaL_checkstring(S, 1), *msg = luaL_checkstring(S, 2);
	unsigned lv = !strcmp(level, "error") ? CRIU_LOG_ERROR : !strcmp(level, "warn") ? CRIU_LOG_WARN :
		      !strcmp(level, "debug") ? CRIU_LOG_DEBUG : CRIU_LOG_INFO;
	say(lv, "%s", msg);
	return 0;
}

/* M[fn](args already pushed): 0 for true, -ENOTSUP for "none", -1 with
 * the message logged for nil, message (or a Lua error). */
static int call(const char *fn, int nargs)
{
	lua_rawgeti(L, LUA_REGISTRYINDEX, module_ref);
	lua_getfield(L, -1, fn);
	lua_remove(L, -2);
	lua_insert(L, -nargs - 1);
	if (lua_pcall(L, nargs, 2, 0)) {
		say(CRIU_LOG_ERROR, "%s: %s", fn, lua_tostring(L, -1));
		lua_pop(L, 1);
		return -1;
	}
	int rc = 0;
	if (lua_isstring(L, -2) && !strcmp(lua_tostring(L, -2), "none"))
		rc = -ENOTSUP;
	else if (!lua_toboolean(L, -2)) {
		say(CRIU_LOG_ERROR, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "failed");
		rc = -1;
	}
	lua_pop(L, 2);
	return rc;
}

static int open_state(const char *scripts)
{
	char path[8300];
	L = luaL_newstate();
	if (!L)
		return -1;
	luaL_openlibs(L);
	/* Interpreted: CRIU's hooks run each piece of Lua a few times, inside
	 * its freeze, where compiling traces cost more than it gave back
	 * (a 20-process dump's fini 4.1 -> 3.5 ms); the heavy work is C. */
	luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
	lua_getglobal(L, "package");
	lua_getfield(L, -1, "preload");
	lua_pushcfunction(L, luaopen_aiotk_core);
	lua_setfield(L, -2, "aiotk.core");
	lua_pop(L, 1);
	/* the shipped scripts first, then LuaJIT's own path (lua-argparse,
	 * dkjson, inspect) */
	lua_getfield(L, -1, "path");
	snprintf(path, sizeof(path), "%s/?.lua;%s/?/init.lua;%s", scripts, scripts, lua_tostring(L, -1));
	lua_pop(L, 1);
	lua_pushstring(L, path);
	lua_setfield(L, -2, "path");
	lua_pop(L, 1);
	lua_getglobal(L, "require");
	lua_pushstring(L, "aiotk.criu_plugin");
	if (lua_pcall(L, 1, 1, 0)) {
		say(CRIU_LOG_ERROR, "cannot load its Lua side from %s: %s", scripts, lua_tostring(L, -1));
		return -1;
	}
	module_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	return 0;
}

static void close_state(void)
{
	if (L)
		lua_close(L);
	L = NULL;
	module_ref = LUA_NOREF;
}

static int init(int stage, const char *dir, const char *plugin, aiotk_criu_say log)
{
	char scripts[4096];
	/* a dump's state kept at fini goes first, should a CRIU ever serve
	 * another request after a dump (4.2 does not: its RPC service
	 * refuses keep_open for dumps, cr-service.c chk_keepopen_req) */
	close_state();
	say = log;
	laiotk_scripts_dir(plugin, AIOTK_SCRIPTS_FROM_PLUGIN, scripts, sizeof(scripts));
	if (open_state(scripts)) {
		close_state();
		return -1;
	}
	lua_pushinteger(L, stage);
	lua_pushstring(L, dir);
	lua_pushcfunction(L, l_log);
	lua_pushstring(L, scripts);
	int rc = call("init", 4);
	return rc == -ENOTSUP ? 0 : rc;
}

static void fini(int stage, int ret)
{
	/* a failed dump is CRIU's to report; finish only takes aiotk's
	 * images away again, as they are not used */
	if (stage == CR_PLUGIN_STAGE__DUMP && L) {
		lua_pushboolean(L, ret == 0);
		call("finish", 1);
	}
	/* A dump's fini runs inside CRIU's freeze, where closing the state
	 * (the Lua heap, the kernel view's BPF objects) took 0.4 ms: CRIU
	 * exits right after a dump, which frees it all. */
	if (stage != CR_PLUGIN_STAGE__DUMP)
		close_state();
}

static int hook(const char *fn, int pid)
{
	if (!L)
		return -ENOTSUP;
	lua_pushinteger(L, pid);
	return call(fn, 1);
}

const aiotk_criu_lua_side aiotk_criu_lua = { .init = init, .fini = fini, .hook = hook };
