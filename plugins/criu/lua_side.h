/* The Lua side of aiotk_criu.so, a library of its own
 * (AIOTK_CRIU_LUA_SIDE beside the plugin), which the plugin loads only
 * when there is something to decide: LuaJIT, libbpf and the bindings
 * cost CRIU about 0.8 ms to load, inside its restore_time, and a restore
 * of a dump fitted to this host needs none of them. */
#ifndef AIOTK_CRIU_LUA_SIDE_H
#define AIOTK_CRIU_LUA_SIDE_H

/* Under the plugin's directory, in a folder of its own: CRIU loads every
 * .so of that directory as a plugin. */
#define AIOTK_CRIU_LUA_SIDE "aiotk/aiotk_criu_lua.so"

typedef void (*aiotk_criu_say)(unsigned level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* What the library exports, through its one symbol aiotk_criu_lua. */
typedef struct aiotk_criu_lua_side {
	/* CRIU's init for stage: dir its image directory, plugin the path the
	 * plugin was loaded from (the scripts are found from it); say logs
	 * through CRIU. 0, or -1 with the reason said. */
	int (*init)(int stage, const char *dir, const char *plugin, aiotk_criu_say say);
	/* CRIU's fini: the dump's end (ret: CRIU's result), then the state
	 * goes; after a dump, inside CRIU's freeze, it is kept instead (the
	 * library stays loaded) and goes at the process's exit or at its next
	 * init. */
	void (*fini)(int stage, int ret);
	/* A per-task hook: fn of scripts/aiotk/criu_plugin.lua for pid; CRIU's
	 * return code (-ENOTSUP when it is not aiotk's business). */
	int (*hook)(const char *fn, int pid);
} aiotk_criu_lua_side;

#endif
