/* aiotk.core.lab: a real libaio client inside the host, used by the demo,
 * the benchmarks and the specs to put rings into known states. */
#define _GNU_SOURCE
#include "lua_aiotk.h"

#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int sys_fail(lua_State *L, int e, const char *what)
{
	lua_pushnil(L);
	lua_pushfstring(L, "%s: %s", what, strerror(e));
	lua_pushstring(L, e == EAGAIN ? "budget" : "system");
	return 3;
}

static io_context_t check_ctx(lua_State *L, int idx)
{
	return (io_context_t)(uintptr_t)laiotk_check_u64(L, idx);
}

static int lab_setup(lua_State *L)
{
	io_context_t ctx = 0;
	int rc = io_setup((int)luaL_checknumber(L, 1), &ctx);
	if (rc < 0)
		return sys_fail(L, -rc, "io_setup");
	lua_pushnumber(L, (double)(uintptr_t)ctx);
	return 1;
}

static int lab_destroy(lua_State *L)
{
	int rc = io_destroy(check_ctx(L, 1));
	if (rc < 0)
		return sys_fail(L, -rc, "io_destroy");
	lua_pushboolean(L, 1);
	return 1;
}

/* lab.complete(ctx, count[, {data=first cookie, kind="poll"|"pwrite"}]):
 * submit requests that complete at once; returns how many were accepted. */
static int lab_complete(lua_State *L)
{
	io_context_t ctx = check_ctx(L, 1);
	long count = (long)luaL_checknumber(L, 2);
	uint64_t data = laiotk_opt_field_u64(L, 3, "data", 0);
	int pwrite = 0;
	if (lua_istable(L, 3)) {
		lua_getfield(L, 3, "kind");
		pwrite = lua_isstring(L, -1) && !strcmp(lua_tostring(L, -1), "pwrite");
		lua_pop(L, 1);
	}
	int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	struct iocb *cbs = calloc(count > 0 ? count : 1, sizeof(*cbs));
	struct iocb **ptrs = calloc(count > 0 ? count : 1, sizeof(*ptrs));
	static char byte = 'x';
	long done = 0, rc = 0;
	for (long i = 0; cbs && ptrs && i < count; i++) {
		if (pwrite)
			io_prep_pwrite(&cbs[i], fd, &byte, 1, 0);
		else
			io_prep_poll(&cbs[i], fd, POLLOUT);
		cbs[i].data = (void *)(uintptr_t)(data + (uint64_t)i);
		ptrs[i] = &cbs[i];
	}
	/* One CPU, so no free slots get stranded in another CPU's cache and a
	 * ring fills to exactly what this host allows. */
	cpu_set_t old, one;
	int pinned = sched_getaffinity(0, sizeof(old), &old) == 0;
	CPU_ZERO(&one);
	CPU_SET(sched_getcpu(), &one);
	pinned = pinned && sched_setaffinity(0, sizeof(one), &one) == 0;
	while (cbs && ptrs && done < count) {
		rc = io_submit(ctx, count - done, ptrs + done);
		if (rc <= 0)
			break;
		done += rc;
	}
	if (pinned)
		sched_setaffinity(0, sizeof(old), &old);
	free(cbs);
	free(ptrs);
	close(fd);
	if (done == 0 && rc < 0 && count > 0)
		return sys_fail(L, (int)-rc, "io_submit");
	lua_pushnumber(L, (double)done);
	return 1;
}

/* lab.reap(ctx, max[, min]): libaio's io_getevents with a zero timeout. */
static int lab_reap(lua_State *L)
{
	io_context_t ctx = check_ctx(L, 1);
	long max = (long)luaL_checknumber(L, 2);
	long min = (long)luaL_optnumber(L, 3, 0);
	struct timespec zero = { 0, 0 };
	struct io_event *ev = calloc(max > 0 ? max : 1, sizeof(*ev));
	if (!ev)
		return luaL_error(L, "out of memory");
	int got = io_getevents(ctx, min, max, ev, &zero);
	if (got < 0) {
		free(ev);
		return sys_fail(L, -got, "io_getevents");
	}
	lua_createtable(L, got, 0);
	for (int i = 0; i < got; i++) {
		aiotk_event e = { (uint64_t)(uintptr_t)ev[i].data,
				  (uint64_t)(uintptr_t)ev[i].obj,
				  (int64_t)ev[i].res, (int64_t)ev[i].res2 };
		laiotk_push_event(L, &e);
		lua_rawseti(L, -2, i + 1);
	}
	free(ev);
	return 1;
}

/* lab.map(len[, addr]): an anonymous placeholder mapping (tests use it to
 * occupy a ring's destination); lab.unmap(addr, len). */
static int lab_map(lua_State *L)
{
	size_t len = (size_t)laiotk_check_u64(L, 1);
	uint64_t at = lua_isnoneornil(L, 2) ? 0 : laiotk_check_u64(L, 2);
	void *p = mmap((void *)(uintptr_t)at, len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | (at ? MAP_FIXED_NOREPLACE : 0), -1, 0);
	if (p == MAP_FAILED)
		return sys_fail(L, errno, "mmap");
	lua_pushnumber(L, (double)(uintptr_t)p);
	return 1;
}

static int lab_unmap(lua_State *L)
{
	munmap((void *)(uintptr_t)laiotk_check_u64(L, 1),
	       (size_t)laiotk_check_u64(L, 2));
	return 0;
}

/* lab.poke(addr, u64) / lab.peek(addr): 8 bytes, for tests that plant a
 * marker in a placeholder and check it survived. */
static int lab_poke(lua_State *L)
{
	aiotk_target t;
	aiotk_err err;
	uint64_t v = laiotk_check_u64(L, 2);
	aiotk_target_self(&t);
	if (aiotk_poke(&t, laiotk_check_u64(L, 1), &v, 8, &err))
		return laiotk_fail(L, &err);
	lua_pushboolean(L, 1);
	return 1;
}

static int lab_peek(lua_State *L)
{
	aiotk_target t;
	aiotk_err err;
	uint64_t v;
	aiotk_target_self(&t);
	if (aiotk_peek(&t, laiotk_check_u64(L, 1), &v, 8, &err))
		return laiotk_fail(L, &err);
	laiotk_push_u64hex(L, v);
	return 1;
}

/* lab.poll(ctx, k) -> pollset: k POLLs on one empty pipe, in flight until
 * pollset:fire() writes the pipe; the iocbs live in the pollset. */
#define POLLSET_MT "aiotk.lab.pollset"
typedef struct {
	int fds[2];
	unsigned k;
	struct iocb cbs[];
} pollset;

static int ps_fire(lua_State *L)
{
	pollset *ps = luaL_checkudata(L, 1, POLLSET_MT);
	if (ps->fds[1] < 0)
		return sys_fail(L, EBADF, "writing the poll pipe (closed)");
	if (write(ps->fds[1], "x", 1) != 1)
		return sys_fail(L, errno, "writing the poll pipe");
	lua_pushboolean(L, 1);
	return 1;
}

static int ps_gc(lua_State *L)
{
	pollset *ps = luaL_checkudata(L, 1, POLLSET_MT);
	for (int i = 0; i < 2; i++)
		if (ps->fds[i] >= 0)
			close(ps->fds[i]);
	ps->fds[0] = ps->fds[1] = -1;
	return 0;
}

static int lab_poll(lua_State *L)
{
	io_context_t ctx = check_ctx(L, 1);
	unsigned k = (unsigned)luaL_checkinteger(L, 2);
	pollset *ps = lua_newuserdata(L, sizeof(*ps) + k * sizeof(struct iocb));
	ps->fds[0] = ps->fds[1] = -1;
	ps->k = k;
	if (luaL_newmetatable(L, POLLSET_MT)) {
		lua_pushcfunction(L, ps_gc);
		lua_setfield(L, -2, "__gc");
		lua_newtable(L);
		lua_pushcfunction(L, ps_fire);
		lua_setfield(L, -2, "fire");
		lua_pushcfunction(L, ps_gc);
		lua_setfield(L, -2, "close");
		lua_setfield(L, -2, "__index");
	}
	lua_setmetatable(L, -2);
	if (pipe2(ps->fds, O_CLOEXEC))
		return sys_fail(L, errno, "pipe");
	for (unsigned i = 0; i < k; i++) {
		struct iocb *p = &ps->cbs[i];
		io_prep_poll(p, ps->fds[0], POLLIN);
		p->data = (void *)(uintptr_t)(0x9011000000000000ull + i);
		int got = io_submit(ctx, 1, &p);
		if (got != 1) {
			lua_pushnil(L);
			lua_pushfstring(L, "io_submit of POLL %d of %d: %s", (int)i + 1, (int)k,
					strerror(got < 0 ? -got : EAGAIN));
			lua_pushstring(L, got == -EAGAIN ? "budget" : "system");
			return 3;
		}
	}
	return 1;
}

void laiotk_lab_register(lua_State *L)
{
	static const luaL_Reg f[] = {
		{ "setup", lab_setup }, { "destroy", lab_destroy },
		{ "complete", lab_complete }, { "reap", lab_reap },
		{ "map", lab_map }, { "unmap", lab_unmap },
		{ "poke", lab_poke }, { "peek", lab_peek }, { "poll", lab_poll },
		{ NULL, NULL },
	};
	lua_newtable(L);
	luaL_register(L, NULL, f);
	lua_setfield(L, -2, "lab");
}
