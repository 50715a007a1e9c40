/* The kernel view in Lua: core.kviewer() loads the BPF program (or returns
 * nil, why, "unsupported"); viewer:read(pid) gives one table per context.
 * Addresses and user data are "0x..." strings (they do not fit a double). */
#define _GNU_SOURCE
#include "lua_aiotk.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#define KVIEWER_MT "aiotk.kviewer"

typedef struct { aiotk_kviewer *v; } lkviewer;

aiotk_kviewer *laiotk_kviewer_check(lua_State *L, int idx)
{
	lkviewer *lv = luaL_checkudata(L, idx, KVIEWER_MT);
	if (!lv->v)
		luaL_error(L, "kernel viewer is closed");
	return lv->v;
}

static lkviewer *check_viewer(lua_State *L)
{
	laiotk_kviewer_check(L, 1);
	return lua_touserdata(L, 1);
}

static void push_req(lua_State *L, const aiotk_kreq *q)
{
	lua_createtable(L, 0, 8);
	laiotk_push_u64hex(L, q->obj);
	lua_setfield(L, -2, "obj");
	laiotk_push_u64hex(L, q->data);
	lua_setfield(L, -2, "data");
	lua_pushstring(L, q->kind == AIOTK_KREQ_POLL ? "poll" : "other");
	lua_setfield(L, -2, "kind");
	laiotk_set_num(L, "events", q->events);
	lua_pushboolean(L, q->iocb_ok);
	lua_setfield(L, -2, "iocb_ok");
	if (q->iocb_ok) {
		laiotk_set_num(L, "opcode", q->opcode);
		laiotk_set_num(L, "fd", q->fd);
		laiotk_push_u64hex(L, q->buf);
		lua_setfield(L, -2, "buf");
	}
}

static void push_ctx(lua_State *L, const aiotk_kctx *c)
{
	lua_createtable(L, 0, 14);
	laiotk_set_num(L, "addr", (double)c->user_id);
	laiotk_set_num(L, "n", c->max_reqs);
	laiotk_set_num(L, "nr", c->nr_events);
	laiotk_set_num(L, "req_batch", c->req_batch);
	laiotk_set_num(L, "kernel_tail", c->tail);
	laiotk_set_num(L, "completed_events", c->completed_events);
	laiotk_set_num(L, "reqs_available", c->reqs_available);
	laiotk_set_num(L, "cpu_available", c->cpu_available);
	if (c->in_flight >= 0)
		laiotk_set_num(L, "in_flight", (double)c->in_flight);
	laiotk_set_num(L, "cancellable", c->ncancel);
	lua_createtable(L, (int)c->nreqs, 0);
	for (uint32_t i = 0; i < c->nreqs; i++) {
		push_req(L, &c->reqs[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	lua_setfield(L, -2, "pending");
}

static int kv_read(lua_State *L)
{
	lkviewer *lv = check_viewer(L);
	int pid = (int)luaL_checkinteger(L, 2);
	aiotk_kview kv;
	aiotk_err err;
	if (aiotk_kview_read(lv->v, pid, &kv, &err))
		return laiotk_fail(L, &err);
	lua_createtable(L, (int)kv.n, 0);
	for (size_t i = 0; i < kv.n; i++) {
		push_ctx(L, &kv.ctx[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	aiotk_kview_free(&kv);
	return 1;
}

#define READING_MT "aiotk.reading"

/* v:read_stopped(t[, whole_area]) -> reading: what a dump reads while
 * target t is stopped (aiotk_read_stopped), kept in C until
 * reading:take() once t runs again, so that the stop holds no Lua work. */
static int kv_read_stopped(lua_State *L)
{
	lkviewer *lv = check_viewer(L);
	aiotk_target *t = laiotk_target_live(L, 2);
	int flags = lua_toboolean(L, 3) ? AIOTK_SNAP_AREA : 0;
	aiotk_err err;
	aiotk_reading *r = laiotk_object(L, sizeof(*r), READING_MT);
	if (aiotk_read_stopped(t, lv->v, flags, r, &err))
		return laiotk_fail(L, &err);
	return 1;
}

static int reading_settled(lua_State *L)
{
	aiotk_reading *r = luaL_checkudata(L, 1, READING_MT);
	lua_pushboolean(L, r->settled);
	return 1;
}

/* reading:take() -> contexts (as v:read gives them), rings (ring
 * userdata, which own their events from then on); the reading is empty
 * after. */
static int reading_take(lua_State *L)
{
	aiotk_reading *r = luaL_checkudata(L, 1, READING_MT);
	lua_createtable(L, (int)r->kv.n, 0);
	for (size_t i = 0; i < r->kv.n; i++) {
		push_ctx(L, &r->kv.ctx[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	lua_createtable(L, (int)r->n, 0);
	for (size_t i = 0; i < r->n; i++) {
		*laiotk_ring_new(L) = r->rings[i];
		memset(&r->rings[i], 0, sizeof(r->rings[i]));
		lua_rawseti(L, -2, (int)i + 1);
	}
	aiotk_reading_free(r);
	return 2;
}

static int reading_gc(lua_State *L)
{
	aiotk_reading_free(luaL_checkudata(L, 1, READING_MT));
	return 0;
}

/* v:prepare(pid): the iterator for pid made before it is stopped. */
static int kv_prepare(lua_State *L)
{
	lkviewer *lv = check_viewer(L);
	lua_pushboolean(L, aiotk_kview_prepare(lv->v, (int)luaL_checkinteger(L, 2)) == 0);
	return 1;
}

static int kv_close(lua_State *L)
{
	lkviewer *lv = luaL_checkudata(L, 1, KVIEWER_MT);
	aiotk_kviewer_close(lv->v);
	lv->v = NULL;
	return 0;
}

/* core.kviewer([{pin = DIR, mount = bool}]): loaded, or opened from its
 * pin under DIR (made there if missing; with mount, bpffs mounted on an
 * empty DIR first: aiotk_kviewer_open_opts). */
static int l_kviewer(lua_State *L)
{
	aiotk_err err;
	aiotk_kviewer_opts o = { 0 };
	if (lua_istable(L, 1)) {
		lua_getfield(L, 1, "pin");
		o.pin_dir = lua_tostring(L, -1); /* kept alive by the table */
		lua_getfield(L, 1, "mount");
		o.mount = lua_toboolean(L, -1);
		lua_pop(L, 2);
	}
	lkviewer *lv = laiotk_object(L, sizeof(*lv), KVIEWER_MT);
	if (aiotk_kviewer_open_opts(&lv->v, &o, &err))
		return laiotk_fail(L, &err);
	return 1;
}

/* v:info() -> { from_pin=, pinned=, replaced=, no_bpffs=, mounted=, pin=,
 * pin_error=, prog_ids = { aio, uring }, open_ns= }: how this viewer got
 * its programs (aiotk_kviewer_info). */
static int kv_info(lua_State *L)
{
	aiotk_kviewer_info i;
	aiotk_kviewer_info_get(check_viewer(L)->v, &i);
	lua_createtable(L, 0, 9);
	lua_pushboolean(L, i.from_pin);
	lua_setfield(L, -2, "from_pin");
	lua_pushboolean(L, i.pinned);
	lua_setfield(L, -2, "pinned");
	lua_pushboolean(L, i.replaced);
	lua_setfield(L, -2, "replaced");
	lua_pushboolean(L, i.no_bpffs);
	lua_setfield(L, -2, "no_bpffs");
	lua_pushboolean(L, i.mounted);
	lua_setfield(L, -2, "mounted");
	if (i.pin_path[0]) {
		lua_pushstring(L, i.pin_path);
		lua_setfield(L, -2, "pin");
	}
	if (i.pin_errno) {
		lua_pushstring(L, strerror(i.pin_errno));
		lua_setfield(L, -2, "pin_error");
	}
	lua_createtable(L, 2, 0);
	for (int k = 0; k < 2; k++) {
		lua_pushnumber(L, i.prog_id[k]);
		lua_rawseti(L, -2, k + 1);
	}
	lua_setfield(L, -2, "prog_ids");
	laiotk_set_num(L, "open_ns", (double)i.open_ns);
	return 1;
}

/* core.kview_pin_name() -> this build's pin directory name. */
static int l_kview_pin_name(lua_State *L)
{
	lua_pushstring(L, aiotk_kview_pin_name());
	return 1;
}

/* core.kview_unpin(dir[, all]) -> how many pins were removed. */
static int l_kview_unpin(lua_State *L)
{
	int removed = 0;
	aiotk_err err;
	if (aiotk_kview_unpin(luaL_checkstring(L, 1), lua_toboolean(L, 2), &removed, &err))
		return laiotk_fail(L, &err);
	lua_pushinteger(L, removed);
	return 1;
}

/* core.live_rings(pid) -> { {addr=, len=, nr=, head=, tail=}, ... }: the
 * rings of a running process and their headers, read with
 * process_vm_readv, without stopping it. */
static int l_live_rings(lua_State *L)
{
	int pid = (int)luaL_checkinteger(L, 1);
	size_t n = 0, max = 1024;
	aiotk_err err;
	aiotk_vma *v = malloc(max * sizeof(*v));
	if (!v)
		return luaL_error(L, "out of memory");
	if (aiotk_maps_rings(pid, v, max, &n, &err)) {
		free(v);
		return laiotk_fail(L, &err);
	}
	n = n > max ? max : n;
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		aiotk_ring_header h;
		struct iovec local = { &h, sizeof(h) };
		struct iovec remote = { (void *)(uintptr_t)v[i].start, sizeof(h) };
		lua_createtable(L, 0, 5);
		laiotk_set_num(L, "addr", (double)v[i].start);
		laiotk_set_num(L, "ring_len", (double)(v[i].end - v[i].start));
		if (process_vm_readv(pid, &local, 1, &remote, 1, 0) == (ssize_t)sizeof(h)) {
			laiotk_set_num(L, "nr", h.nr);
			laiotk_set_num(L, "head", h.head);
			laiotk_set_num(L, "tail", h.tail);
		}
		lua_rawseti(L, -2, (int)i + 1);
	}
	free(v);
	return 1;
}

void *laiotk_object(lua_State *L, size_t size, const char *name)
{
	void *p = memset(lua_newuserdata(L, size), 0, size);
	luaL_getmetatable(L, name);
	lua_setmetatable(L, -2);
	return p;
}

void laiotk_class(lua_State *L, const char *name, lua_CFunction gc, const luaL_Reg *methods)
{
	if (luaL_newmetatable(L, name)) {
		lua_pushcfunction(L, gc);
		lua_setfield(L, -2, "__gc");
		lua_newtable(L);
		luaL_register(L, NULL, methods);
		lua_setfield(L, -2, "__index");
	}
	lua_pop(L, 1);
}

void laiotk_kview_register(lua_State *L)
{
	static const luaL_Reg methods[] = {
		{ "read", kv_read }, { "prepare", kv_prepare }, { "close", kv_close },
		{ "read_stopped", kv_read_stopped }, { "uring", laiotk_kv_uring },
		{ "uring_stopped", laiotk_kv_uring_stopped }, { "info", kv_info }, { NULL, NULL },
	};
	static const luaL_Reg reading_methods[] = {
		{ "settled", reading_settled }, { "take", reading_take }, { NULL, NULL },
	};
	laiotk_class(L, READING_MT, reading_gc, reading_methods);
	laiotk_class(L, KVIEWER_MT, kv_close, methods);
	laiotk_uring_register(L);
	lua_pushcfunction(L, l_kviewer);
	lua_setfield(L, -2, "kviewer");
	lua_pushcfunction(L, l_live_rings);
	lua_setfield(L, -2, "live_rings");
	lua_pushcfunction(L, l_kview_pin_name);
	lua_setfield(L, -2, "kview_pin_name");
	lua_pushcfunction(L, l_kview_unpin);
	lua_setfield(L, -2, "kview_unpin");
}
