/* aiotk_criu.so: aiotk inside every CRIU run (criu dump/restore, and so
 * Podman, runc/crun and Kubernetes). The plugin CRIU loads is small: a
 * restore of a dump fitted to this host (its stamp) is answered here;
 * anything else loads the Lua side (lua_side.h), which decides. A hook
 * that is not aiotk's business returns -ENOTSUP, as CRIU expects; errors
 * are logged through CRIU's log and returned, never abort(). */
#define _GNU_SOURCE
#include "aiotk.h"
#include "criu_plugin_abi.h"
#include "lua_side.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *side_lib;
static const aiotk_criu_lua_side *side;

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

/* The path this plugin was loaded from: the Lua side and the scripts
 * are found from it. */
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

/* A restore of a dump the plugin fitted, at the dump's end, to a host
 * like this one (its stamp: same geometry, room in fs.aio-max-nr, no
 * request captured in flight, the same $AIOTK_POLICY): nothing for the
 * Lua side to decide, so it is not even loaded; CRIU's restore time
 * stays its own. Anything else goes the Lua way, which decides and says
 * why. */
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

/* The Lua side, from beside the plugin at self. */
static int load_side(const char *self)
{
	char path[4096];
	const char *slash = self ? strrchr(self, '/') : NULL;
	snprintf(path, sizeof(path), "%.*s/%s", slash ? (int)(slash - self) : 1, slash ? self : ".",
		 AIOTK_CRIU_LUA_SIDE);
	side_lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	side = side_lib ? dlsym(side_lib, "aiotk_criu_lua") : NULL;
	if (side)
		return 0;
	say(CRIU_LOG_ERROR, "cannot load its Lua side %s: %s (reinstall aiotk: the plugin and that library "
	    "go together)", path, dlerror());
	return -1;
}

static int aiotk_init(int stage)
{
	char dir[4096];
	if (image_dir(dir, sizeof(dir))) {
		say(CRIU_LOG_ERROR, "CRIU gave no image directory");
		return -1;
	}
	if (stage == CR_PLUGIN_STAGE__RESTORE && fitted_here(dir))
		return 0;
	const char *self = self_path();
	if (load_side(self))
		return -1;
	return side->init(stage, dir, self, say);
}

/* After a dump the Lua side stays loaded (lua_side.h: its state is
 * kept), and unloading it would cost the freeze as much again. */
static void aiotk_fini(int stage, int ret)
{
	if (side)
		side->fini(stage, ret);
	side = NULL;
	if (side_lib && stage != CR_PLUGIN_STAGE__DUMP)
		dlclose(side_lib);
	side_lib = NULL;
}

static int pid_hook(const char *fn, int pid) { return side ? side->hook(fn, pid) : -ENOTSUP; }
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
