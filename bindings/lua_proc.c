/* The few process and file-system operations the Lua side needs, as
 * calls instead of shell command lines (a path with a quote in it is then
 * just a path): signals, directories, and the interruption flag that
 * SIGINT, SIGTERM and SIGHUP set so a long operation can stop cleanly. */
#define _GNU_SOURCE
#include "lua_aiotk.h"

#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t interrupted_by;

static int push_errno(lua_State *L, const char *what, const char *path)
{
	int e = errno;
	lua_pushnil(L);
	lua_pushfstring(L, "%s %s: %s", what, path, strerror(e));
	lua_pushstring(L, aiotk_code_name(AIOTK_ESYS));
	lua_pushinteger(L, e);
	return 4;
}

/* kill(pid, sig): sig is a number or a name such as "KILL", "USR1". */
static int l_kill(lua_State *L)
{
	static const struct { const char *name; int sig; } names[] = {
		{ "KILL", SIGKILL }, { "TERM", SIGTERM }, { "INT", SIGINT }, { "HUP", SIGHUP },
		{ "USR1", SIGUSR1 }, { "USR2", SIGUSR2 }, { "STOP", SIGSTOP }, { "CONT", SIGCONT },
		{ "0", 0 },
	};
	pid_t pid = (pid_t)luaL_checkinteger(L, 1);
	int sig = -1;
	if (lua_type(L, 2) == LUA_TNUMBER)
		sig = (int)lua_tointeger(L, 2);
	else
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (!strcmp(names[i].name, luaL_checkstring(L, 2)))
				sig = names[i].sig;
	if (pid <= 0 || sig < 0)
		return luaL_error(L, "kill: bad process %d or signal %s", (int)pid, lua_tostring(L, 2));
	if (kill(pid, sig))
		return push_errno(L, "cannot signal process", lua_tostring(L, 1));
	lua_pushboolean(L, 1);
	return 1;
}

/* mkdir(path): like mkdir -p; returns true, or nil and why. */
static int l_mkdir(lua_State *L)
{
	char buf[4096];
	const char *path = luaL_checkstring(L, 1);
	if (strlen(path) >= sizeof(buf))
		return luaL_error(L, "mkdir: path too long");
	strcpy(buf, path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0755) && errno != EEXIST)
			return push_errno(L, "cannot create directory", buf);
		*p = '/';
	}
	if (mkdir(buf, 0755) && errno != EEXIST)
		return push_errno(L, "cannot create directory", buf);
	lua_pushboolean(L, 1);
	return 1;
}

/* listdir(path): sorted names, without "." and "..". */
static int l_listdir(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	struct dirent **list;
	int n = scandir(path, &list, NULL, alphasort);
	if (n < 0)
		return push_errno(L, "cannot list directory", path);
	lua_newtable(L);
	for (int i = 0, k = 1; i < n; i++) {
		if (strcmp(list[i]->d_name, ".") && strcmp(list[i]->d_name, "..")) {
			lua_pushstring(L, list[i]->d_name);
			lua_rawseti(L, -2, k++);
		}
		free(list[i]);
	}
	free(list);
	return 1;
}

/* readlink(path): what the link says. */
static int l_readlink(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	char buf[PATH_MAX];
	ssize_t n = readlink(path, buf, sizeof(buf) - 1);
	if (n < 0)
		return push_errno(L, "cannot read link", path);
	lua_pushlstring(L, buf, (size_t)n);
	return 1;
}

/* link(old, new): a second name for old's file (link(2)); true. */
static int l_link(lua_State *L)
{
	const char *from = luaL_checkstring(L, 1), *to = luaL_checkstring(L, 2);
	if (link(from, to))
		return push_errno(L, "cannot link", to);
	lua_pushboolean(L, 1);
	return 1;
}

static int remove_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st; (void)flag; (void)f;
	return remove(p);
}

/* remove_tree(path): a directory and what is in it; links are removed,
 * never followed, and nothing outside path is touched. */
static int l_remove_tree(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	if (!*path || !strcmp(path, "/"))
		return luaL_error(L, "remove_tree: refusing to remove '%s'", path);
	if (nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS) && errno != ENOENT)
		return push_errno(L, "cannot remove", path);
	lua_pushboolean(L, 1);
	return 1;
}

static void on_signal(int sig) { interrupted_by = sig; }

/* catch_interrupts(): from now on SIGINT, SIGTERM and SIGHUP only set the
 * flag that interrupted() reads. One that was ignored when aiotk started
 * (nohup, a background job's SIGINT) stays ignored. */
static int l_catch_interrupts(lua_State *L)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };
	struct sigaction sa, old;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		if (!sigaction(sigs[i], NULL, &old) && old.sa_handler != SIG_IGN)
			sigaction(sigs[i], &sa, NULL);
	(void)L;
	return 0;
}

/* interrupted(): the signal's name once one was caught, else nil. */
static int l_interrupted(lua_State *L)
{
	int sig = interrupted_by;
	if (!sig)
		return 0;
	lua_pushstring(L, sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "SIGHUP");
	return 1;
}

static int l_getpid(lua_State *L)
{
	lua_pushinteger(L, getpid());
	return 1;
}

/* subreaper(): orphans of this process's descendants become its children
 * (and so reapable by reap) instead of going to PID 1. */
static int l_subreaper(lua_State *L)
{
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
		return push_errno(L, "prctl", "PR_SET_CHILD_SUBREAPER");
	lua_pushboolean(L, 1);
	return 1;
}

/* guardian(): the pid of the process that puts a pinned thread's CPU mask
 * back if this one dies (forked at the first attach), or nil. */
static int l_guardian(lua_State *L)
{
	int pid = aiotk_guardian_pid();
	if (pid)
		lua_pushinteger(L, pid);
	else
		lua_pushnil(L);
	return 1;
}

/* die_after(n): a kill point for tests (aiotk_die_after): this process
 * SIGKILLs itself instead of making its n-th next change to a stopped
 * process; 0 takes it back. */
static int l_die_after(lua_State *L)
{
	aiotk_die_after((unsigned long)luaL_checkinteger(L, 1));
	return 0;
}

/* reap(pid): collects child pid if it has exited; true once it has. */
static int l_reap(lua_State *L)
{
	int pid = (int)luaL_checkinteger(L, 1), st;
	pid_t r = waitpid(pid, &st, WNOHANG | __WALL);
	lua_pushboolean(L, r == pid || (r < 0 && errno == ECHILD));
	return 1;
}

void laiotk_proc_register(lua_State *L)
{
	static const luaL_Reg f[] = {
		{ "kill", l_kill }, { "mkdir", l_mkdir }, { "listdir", l_listdir },
		{ "readlink", l_readlink }, { "link", l_link },
		{ "remove_tree", l_remove_tree }, { "catch_interrupts", l_catch_interrupts },
		{ "interrupted", l_interrupted }, { "getpid", l_getpid }, { "subreaper", l_subreaper },
		{ "reap", l_reap }, { "guardian", l_guardian },
		{ "die_after", l_die_after }, { NULL, NULL },
	};
	luaL_register(L, NULL, f);
}
