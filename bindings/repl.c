/* aiotk.readline: line editing, history and completion for the REPL
 * (libedit). The REPL itself is Lua; readline's completion hook has no user
 * pointer, so the state it calls back into is kept here. */
#include "lua_aiotk.h"

#include <editline/readline.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static lua_State *complete_L;
static int complete_ref = LUA_NOREF;

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* readline(prompt) -> line; nil at end of input; nil, "interrupt" when
 * Ctrl-C cancelled the line. SIGINT is caught only while reading (without
 * SA_RESTART, so libedit's read returns and readline gives up the line);
 * elsewhere it keeps its meaning. */
static int l_readline(lua_State *L)
{
	struct sigaction sa, old;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigint;
	sigemptyset(&sa.sa_mask);
	interrupted = 0;
	sigaction(SIGINT, &sa, &old);
	char *line = readline(luaL_optstring(L, 1, "> "));
	sigaction(SIGINT, &old, NULL);
	if (!line) {
		if (!interrupted)
			return 0;
		lua_pushnil(L);
		lua_pushliteral(L, "interrupt");
		return 2;
	}
	lua_pushstring(L, line);
	free(line);
	return 1;
}

static int l_add_history(lua_State *L)
{
	add_history(luaL_checkstring(L, 1));
	return 0;
}

static int l_read_history(lua_State *L)
{
	read_history(luaL_checkstring(L, 1));
	return 0;
}

static int l_write_history(lua_State *L)
{
	lua_pushboolean(L, write_history(luaL_checkstring(L, 1)) == 0);
	return 1;
}

/* Candidates come from the Lua completer as a list, fetched once per
 * completion (state 0) and handed out one by one. */
static char *generator(const char *text, int state)
{
	static int index, count;
	lua_State *L = complete_L;
	if (!L)
		return NULL;
	if (state == 0) {
		lua_settop(L, 0);
		lua_rawgeti(L, LUA_REGISTRYINDEX, complete_ref);
		lua_pushstring(L, text);
		if (lua_pcall(L, 1, 1, 0) || !lua_istable(L, -1)) {
			lua_settop(L, 0);
			return NULL;
		}
		index = 0;
		count = (int)lua_objlen(L, -1);
	}
	if (!lua_istable(L, 1) || index >= count)
		return NULL;
	lua_rawgeti(L, 1, ++index);
	const char *s = lua_tostring(L, -1);
	char *copy = s ? strdup(s) : NULL;
	lua_pop(L, 1);
	return copy;
}

static char **attempt(const char *text, int start, int end)
{
	(void)start;
	(void)end;
	rl_attempted_completion_over = 1;
	return rl_completion_matches(text, generator);
}

/* set_completer(fn): fn(prefix) returns a list of full candidates. A thread
 * of its own keeps the REPL's stack untouched while completing. */
static int l_set_completer(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TFUNCTION);
	lua_State *co = lua_newthread(L);
	luaL_ref(L, LUA_REGISTRYINDEX); /* keep the thread alive */
	lua_pushvalue(L, 1);
	complete_ref = luaL_ref(L, LUA_REGISTRYINDEX);
	complete_L = co;
	rl_attempted_completion_function = attempt;
	rl_basic_word_break_characters = " \t\n\"'`><=;|&{(,+-*/";
	return 0;
}

int luaopen_aiotk_readline(lua_State *L)
{
	static const luaL_Reg f[] = {
		{ "readline", l_readline }, { "add_history", l_add_history },
		{ "read_history", l_read_history }, { "write_history", l_write_history },
		{ "set_completer", l_set_completer }, { NULL, NULL },
	};
	lua_newtable(L);
	luaL_register(L, NULL, f);
	return 1;
}
