/* Where aiotk's Lua scripts are, for the aiotk program and the CRIU
 * plugin alike: one rule; and the pieces found the same way (the
 * scripts' bytecode, the REPL's line editing). */
#include "lua_aiotk.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int is_dir(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* A binary of this build tree (it uses the tree's own pieces). */
static int in_build_tree(const char *self)
{
	return self && !strncmp(self, AIOTK_BUILD_DIR "/", strlen(AIOTK_BUILD_DIR) + 1);
}

/* rel from the binary's own directory into out (a relocated prefix still
 * works); the result of snprintf. */
static int from_self(const char *self, const char *rel, char *out, size_t len)
{
	const char *slash = self ? strrchr(self, '/') : NULL;
	return snprintf(out, len, "%.*s/%s", slash ? (int)(slash - self) : 1, slash ? self : ".", rel);
}

/* In order: $AIOTK_SCRIPTS_DIR; the source tree's scripts for a binary of
 * the build tree (it runs the scripts it was built with); the installed
 * scripts found from the binary's own directory (`rel`, the path from
 * where it is installed to the scripts: a relocated prefix still works);
 * the configured install path. */
void laiotk_scripts_dir(const char *self, const char *rel, char *out, size_t len)
{
	const char *env = getenv("AIOTK_SCRIPTS_DIR");
	char path[PATH_MAX];
	if (env && *env) {
		snprintf(out, len, "%s", env);
		return;
	}
	if (in_build_tree(self) && is_dir(AIOTK_SOURCE_SCRIPTS)) {
		snprintf(out, len, "%s", AIOTK_SOURCE_SCRIPTS);
		return;
	}
	if (self && strchr(self, '/') && from_self(self, rel, path, sizeof(path)) < (int)sizeof(path) &&
	    is_dir(path)) {
		snprintf(out, len, "%s", path);
		return;
	}
	snprintf(out, len, "%s", AIOTK_INSTALL_SCRIPTS);
}

/* Where the build's bytecode of the scripts is (bindings/lua_bytecode.c):
 * the build tree's for a binary of the build tree, else beside the
 * scripts directory (share/aiotk/bytecode). Bytecode is found by its
 * source's text, so a directory holding none, or another version's, only
 * costs the parse it would have saved. */
void laiotk_bytecode_dir(const char *self, const char *scripts, char *out, size_t len)
{
	if (in_build_tree(self)) {
		snprintf(out, len, "%s/bytecode", AIOTK_BUILD_DIR);
		return;
	}
	const char *slash = strrchr(scripts, '/');
	snprintf(out, len, "%.*s/bytecode", slash ? (int)(slash - scripts) : 1, slash ? scripts : ".");
}

/* The REPL's line-editing module (aiotk_readline in CMakeLists.txt): the
 * build tree's for a binary of the build tree, else at rel from the
 * binary's own directory (lib/aiotk/readline.so). */
void laiotk_readline_path(const char *self, const char *rel, char *out, size_t len)
{
	if (in_build_tree(self))
		snprintf(out, len, "%s/lua/aiotk/readline.so", AIOTK_BUILD_DIR);
	else
		from_self(self, rel, out, len);
}
