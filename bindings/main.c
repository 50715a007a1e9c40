/* The aiotk host: LuaJIT with aiotk.core preloaded; everything else,
 * command dispatch included, is Lua (scripts/aiotk/cli.lua). */
#include "lua_aiotk.h"

#include <dlfcn.h>
#include <limits.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* This program's path, for laiotk_scripts_dir; NULL if unknown. */
static const char *self_path(char *buf, size_t len)
{
	ssize_t n = readlink("/proc/self/exe", buf, len - 1);
	if (n <= 0)
		return NULL;
	buf[n] = 0;
	return buf;
}

static void preload(lua_State *L, const char *name, lua_CFunction f)
{
	lua_getglobal(L, "package");
	lua_getfield(L, -1, "preload");
	lua_pushcfunction(L, f);
	lua_setfield(L, -2, name);
	lua_pop(L, 2);
}

static char readline_so[PATH_MAX];

/* require "aiotk.readline": the REPL's module, loaded only by the REPL. */
static int open_readline(lua_State *L)
{
	void *lib = dlopen(readline_so, RTLD_NOW | RTLD_LOCAL);
	lua_CFunction open = lib ? (lua_CFunction)(uintptr_t)dlsym(lib, "luaopen_aiotk_readline") : NULL;
	if (!open)
		return luaL_error(L, "the REPL's line editing cannot be loaded from %s: %s (reinstall aiotk: "
				  "the program and that module go together)", readline_so, dlerror());
	return open(L);
}

static void set_args(lua_State *L, int argc, char **argv)
{
	lua_createtable(L, argc, 1);
	for (int i = 0; i < argc; i++) {
		lua_pushstring(L, argv[i]);
		lua_rawseti(L, -2, i);
	}
	lua_setglobal(L, "arg");
}

static int traceback(lua_State *L)
{
	const char *msg = lua_tostring(L, 1);
	if (getenv("AIOTK_TRACE")) {
		lua_getglobal(L, "debug");
		lua_getfield(L, -1, "traceback");
		lua_pushstring(L, msg ? msg : "(error object)");
		lua_pushinteger(L, 2);
		lua_call(L, 2, 1);
	} else if (!msg)
		lua_pushstring(L, "(error object is not a string)");
	else
		lua_pushvalue(L, 1);
	return 1;
}

/* The binary's directory, for finding programs installed next to it. */
static void set_exe_dir(lua_State *L, const char *self)
{
	const char *slash = self ? strrchr(self, '/') : NULL;
	if (!slash)
		return;
	lua_pushlstring(L, self, (size_t)(slash - self));
	lua_setglobal(L, "AIOTK_EXE_DIR");
}

/* Where the build's bytecode of the scripts is, for cli.lua's loader
 * (and cli.lua's own: bc). */
static void set_bytecode_dir(lua_State *L, const char *self, const char *scripts, char *bc, size_t len)
{
	laiotk_bytecode_dir(self, scripts, bc, len);
	lua_pushstring(L, bc);
	lua_setglobal(L, "AIOTK_BYTECODE_DIR");
}

static int run(lua_State *L, const char *dir, const char *bytecode)
{
	char boot[4200];
	snprintf(boot, sizeof(boot), "%s/aiotk/cli.lua", dir);
	lua_pushcfunction(L, traceback);
	if (laiotk_load_lua(L, boot, bytecode)) {
		fprintf(stderr, "aiotk: cannot load %s: %s\n", boot, lua_tostring(L, -1));
		return 1;
	}
	lua_pushstring(L, dir);
	lua_getglobal(L, "arg");
	if (lua_pcall(L, 2, 1, 1)) {
		fprintf(stderr, "aiotk: %s\n", lua_tostring(L, -1));
		return 1;
	}
	return lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : 0;
}

int main(int argc, char **argv)
{
	char dir[PATH_MAX], exe[PATH_MAX], bytecode[PATH_MAX];
	/* The guardian forked now, while this process is small: its fork and
	 * its exit (reaped at ours) cost a fraction of what they do once
	 * LuaJIT, the image and the libraries' heaps are in (0.2-0.3 ms each
	 * way for a restore of a big ring). Without it, the first attach
	 * forks one. */
	aiotk_guardian_start();
	lua_State *L = luaL_newstate();
	if (!L) {
		fprintf(stderr, "aiotk: cannot create a Lua state\n");
		return 1;
	}
	luaL_openlibs(L);
	preload(L, "aiotk.core", luaopen_aiotk_core);
	preload(L, "aiotk.readline", open_readline);
	const char *self = self_path(exe, sizeof(exe));
	laiotk_readline_path(self, AIOTK_READLINE_FROM_BIN, readline_so, sizeof(readline_so));
	laiotk_scripts_dir(self, AIOTK_SCRIPTS_FROM_BIN, dir, sizeof(dir));
	set_bytecode_dir(L, self, dir, bytecode, sizeof(bytecode));
	set_args(L, argc, argv);
	set_exe_dir(L, self);
	int rc = run(L, dir, bytecode);
	fflush(stdout);
	/* Closing the state only frees memory, unless a process is still
	 * attached (its userdata's collection detaches it): skipped, the
	 * exit is 0.2-0.3 ms shorter. */
	if (laiotk_targets_held())
		lua_close(L);
	return rc;
}
