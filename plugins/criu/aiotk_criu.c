/* aiotk_criu.so: aiotk inside every CRIU run (criu dump/restore, and so
 * Podman, runc/crun and Kubernetes). The mechanism only: a Lua state with
 * aiotk.core, CRIU's hooks handed to scripts/aiotk/criu_plugin.lua, where
 * the policy lives, and Lua's answers turned into CRIU's return codes. A
 * hook that is not aiotk's business returns -ENOTSUP, as CRIU expects;
 * errors are logged through CRIU's log and returned, never abort(). */
#define _GNU_SOURCE
#include "criu_plugin_abi.h"
#include "lua_aiotk.h"

#include <dlfcn.h>
#include <errno.h>
#include <lualib.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static lua_State *L;
static int module_ref = LUA_NOREF;

static void say(unsigned level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(unsigned level, const char *fmt, ...)
{
	char msg[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (print_on_level)
		print_on_level(level, "aiotk: %s\n", msg);
	else
		fprintf(stderr, "aiotk: %s\n", msg);
}

/* log(level, msg) for the Lua side: "error", "warn", "info", "debug". */
static int l_log(lua_State *S)
{
	const char *level = luaL_checkstring(S, 1), *msg = luaL_checkstring(S, 2);
	unsigned lv = !strcmp(level, "error") ? CRIU_LOG_ERROR : !strcmp(level, "warn") ? CRIU_LOG_WARN :
		      !strcmp(level, "debug") ? CRIU_LOG_DEBUG : CRIU_LOG_INFO;
	say(lv, "%s", msg);
	return 0;
}

/* The path this plugin was loaded from, for laiotk_scripts_dir. */
static const char *self_path(void)
{
	Dl_info self;
	return dladdr((void *)self_path, &self) ? self.dli_fname : NULL;
}

static int image_dir(char *out, size_t len)
{
	char link[64];
	int fd = criu_get_image_dir ? criu_get_image_dir() : -1;
	if (fd < 0)
		return -1;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, out, len - 1);
	if (n <= 0)
		return -1;
	out[n] = 0;
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

/* A restore of a dump the plugin fitted, at the dump's end, to a host
 * like this one (its stamp: same geometry, room in fs.aio-max-nr, no
 * request captured in flight, the same $AIOTK_POLICY): nothing for the
 * Lua side to decide, so no Lua state is made; CRIU's restore time stays
 * its own. Anything else goes the Lua way, which decides and says why. */
static int fitted_here(const char *dir)
{
	aiotk_criu_stamp s;
	aiotk_host h;
	const char *policy = getenv("AIOTK_POLICY");
	if (aiotk_criu_stamp_read(dir, &s, NULL) || s.captured || aiotk_host_probe(&h, NULL) ||
	    strcmp(s.policy, policy ? policy : "") || !aiotk_criu_stamp_fits(&s, &h))
		return 0;
	say(CRIU_LOG_INFO, "%u AIO ring(s) fitted to this host at dump (%s): nothing to do",
	    s.rings, AIOTK_CRIU_STAMP);
	return 1;
}

static int aiotk_init(int stage)
{
	char scripts[4096], dir[4096];
	if (image_dir(dir, sizeof(dir))) {
		say(CRIU_LOG_ERROR, "CRIU gave no image directory");
		return -1;
	}
	if (stage == CR_PLUGIN_STAGE__RESTORE && fitted_here(dir))
		return 0;
	laiotk_scripts_dir(self_path(), AIOTK_SCRIPTS_FROM_PLUGIN, scripts, sizeof(scripts));
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

static void aiotk_fini(int stage, int ret)
{
	/* a failed dump is CRIU's to report; its images are not used */
	if (stage == CR_PLUGIN_STAGE__DUMP && ret == 0 && L)
		call("finish", 0);
	close_state();
}

static int pid_hook(const char *fn, int pid)
{
	if (!L)
		return -ENOTSUP;
	lua_pushinteger(L, pid);
	return call(fn, 1);
}

static int checkpoint_devices(int pid) { return pid_hook("checkpoint", pid); }
static int resume_devices_late(int pid) { return pid_hook("resume", pid); }

cr_plugin_desc_t CR_PLUGIN_DESC = {
	.name = "aiotk",
	.init = aiotk_init,
	.exit = aiotk_fini,
	.version = CRIU_PLUGIN_VERSION,
	.max_hooks = CR_PLUGIN_HOOK__MAX,
	.hooks = {
		[CR_PLUGIN_HOOK__CHECKPOINT_DEVICES] = (void *)checkpoint_devices,
		[CR_PLUGIN_HOOK__RESUME_DEVICES_LATE] = (void *)resume_devices_late,
	},
};
