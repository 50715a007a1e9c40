/* io_uring instances rebuilt from Lua: core.uring_rebuild(t, img, i,
 * opts) and core.uring_unbuild(t, img, i, result), over
 * aiotk_uring_rebuild and aiotk_uring_unbuild (core/aiotk.h);
 * core.uring_leftovers(t), over aiotk_uring_leftovers; and
 * core.uring_image_shift for tests. */
#include "lua_aiotk.h"

#include <stdlib.h>
#include <string.h>

static const aiotk_uring *instance(lua_State *L, int img_idx, int i_idx)
{
	aiotk_image *img = luaL_checkudata(L, img_idx, IMAGE_MT);
	lua_Integer i = luaL_checkinteger(L, i_idx);
	luaL_argcheck(L, i >= 1 && (size_t)i <= img->nurings, i_idx, "no such io_uring instance");
	return &img->urings[i - 1];
}

static int flag(lua_State *L, int t, const char *k)
{
	lua_getfield(L, t, k);
	int v = lua_toboolean(L, -1);
	lua_pop(L, 1);
	return v;
}

/* opts[key], a list of tables, into a list of n items of `size` bytes
 * (each filled by one() from the table at stack index q) the caller
 * frees. */
static void *list_of(lua_State *L, int opts, const char *key, size_t size,
		     void (*one)(lua_State *L, int q, void *item), size_t *n)
{
	*n = 0;
	if (!lua_istable(L, opts))
		return NULL;
	lua_getfield(L, opts, key);
	int list = lua_gettop(L);
	size_t count = lua_istable(L, list) ? lua_objlen(L, list) : 0;
	char *p = count ? calloc(count, size) : NULL;
	for (size_t i = 0; p && i < count; i++) {
		lua_rawgeti(L, list, (int)i + 1);
		luaL_checktype(L, lua_gettop(L), LUA_TTABLE);
		one(L, lua_gettop(L), p + i * size);
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
	*n = p ? count : 0;
	return p;
}

/* opts.polls: { {user_data=, fd=, events=, multishot=, level=, fixed_file=}, ... } */
static void one_poll(lua_State *L, int q, void *item)
{
	aiotk_uring_poll *p = item;
	p->user_data = laiotk_opt_field_u64(L, q, "user_data", 0);
	p->fd = (int)laiotk_opt_field_u64(L, q, "fd", 0);
	p->events = (uint32_t)laiotk_opt_field_u64(L, q, "events", 0);
	p->multishot = flag(L, q, "multishot");
	p->level = flag(L, q, "level");
	p->fixed_file = flag(L, q, "fixed_file");
}

/* opts.timeouts: { {user_data=, ts_ns=, flags=, off=}, ... } */
static void one_timeout(lua_State *L, int q, void *item)
{
	aiotk_uring_tmo *t = item;
	t->user_data = laiotk_opt_field_u64(L, q, "user_data", 0);
	t->ts_ns = (int64_t)laiotk_opt_field_u64(L, q, "ts_ns", 0);
	t->flags = (uint32_t)laiotk_opt_field_u64(L, q, "flags", 0);
	t->off = (uint32_t)laiotk_opt_field_u64(L, q, "off", 0);
}

/* opts.socks: { {opcode=, user_data=, fd=, fixed_file=, addr=, addr2=, len=,
 * op_flags=, ioprio=, buffer_select=, buf_group=}, ... } */
static void one_sock(lua_State *L, int q, void *item)
{
	aiotk_uring_sock *s = item;
	s->opcode = (uint8_t)laiotk_opt_field_u64(L, q, "opcode", 0);
	s->user_data = laiotk_opt_field_u64(L, q, "user_data", 0);
	s->fd = (int)laiotk_opt_field_u64(L, q, "fd", 0);
	s->fixed_file = flag(L, q, "fixed_file");
	s->addr = laiotk_opt_field_u64(L, q, "addr", 0);
	s->addr2 = laiotk_opt_field_u64(L, q, "addr2", 0);
	s->len = (uint32_t)laiotk_opt_field_u64(L, q, "len", 0);
	s->op_flags = (uint32_t)laiotk_opt_field_u64(L, q, "op_flags", 0);
	s->ioprio = (uint16_t)laiotk_opt_field_u64(L, q, "ioprio", 0);
	s->buffer_select = flag(L, q, "buffer_select");
	s->buf_group = (uint16_t)laiotk_opt_field_u64(L, q, "buf_group", 0);
}

static void push_result(lua_State *L, const aiotk_uring_rebuilt *r)
{
	lua_newtable(L);
	laiotk_set_num(L, "fd", r->fd);
	laiotk_set_num(L, "sq_shift", r->sq_shift);
	laiotk_set_num(L, "cq_shift", r->cq_shift);
	laiotk_set_num(L, "nops", (double)r->nops);
	lua_newtable(L);
	for (unsigned i = 0; i < r->ncopies; i++) {
		lua_pushnumber(L, (double)r->copies[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	lua_setfield(L, -2, "copies");
	laiotk_set_num(L, "ns_setup", (double)r->ns_setup);
	laiotk_set_num(L, "ns_place", (double)r->ns_place);
	laiotk_set_num(L, "ns_counters", (double)r->ns_counters);
	laiotk_set_num(L, "ns_memory", (double)r->ns_memory);
	laiotk_set_num(L, "ns_copies", (double)r->ns_copies);
	laiotk_set_num(L, "journal_at", (double)r->journal_at);
	laiotk_set_num(L, "journal_len", (double)r->journal_len);
}

/* A result table of uring_rebuild back into r. */
static void check_result(lua_State *L, int idx, aiotk_uring_rebuilt *r)
{
	luaL_checktype(L, idx, LUA_TTABLE);
	memset(r, 0, sizeof(*r));
	r->fd = (int)laiotk_opt_field_u64(L, idx, "fd", 0);
	r->sq_shift = (uint32_t)laiotk_opt_field_u64(L, idx, "sq_shift", 0);
	r->journal_at = laiotk_opt_field_u64(L, idx, "journal_at", 0);
	r->journal_len = laiotk_opt_field_u64(L, idx, "journal_len", 0);
	lua_getfield(L, idx, "copies");
	for (int i = 1; lua_istable(L, -1) && i <= (int)lua_objlen(L, -1) &&
	     r->ncopies < AIOTK_URING_MAX_COPIES; i++) {
		lua_rawgeti(L, -1, i);
		r->copies[r->ncopies++] = laiotk_check_u64(L, lua_gettop(L));
		lua_pop(L, 1);
	}
	lua_pop(L, 1);
}

/* core.uring_rebuild(t, img, i, {exact=, polls=, timeouts=, socks=, slot=, keep_journal=})
 * -> result table, or nil, message, code, errno (nothing left made). slot:
 * 0-based; keep_journal: committed later by core.uring_commit. */
static int l_uring_rebuild(lua_State *L)
{
	aiotk_target *t = laiotk_target_live(L, 1);
	const aiotk_uring *u = instance(L, 2, 3);
	aiotk_uring_rebuild_opts o = { .exact = lua_istable(L, 4) && flag(L, 4, "exact") };
	if (lua_istable(L, 4)) {
		o.slot = (unsigned)laiotk_opt_field_u64(L, 4, "slot", 0);
		o.keep_journal = flag(L, 4, "keep_journal");
	}
	aiotk_uring_poll *p = list_of(L, 4, "polls", sizeof(*p), one_poll, &o.npolls);
	o.polls = p;
	aiotk_uring_tmo *tm = list_of(L, 4, "timeouts", sizeof(*tm), one_timeout, &o.ntimeouts);
	o.timeouts = tm;
	aiotk_uring_sock *sk = list_of(L, 4, "socks", sizeof(*sk), one_sock, &o.nsocks);
	o.socks = sk;
	aiotk_uring_rebuilt r;
	aiotk_err err;
	int rc = aiotk_uring_rebuild(t, u, &o, &r, &err);
	free(p);
	free(tm);
	free(sk);
	if (rc)
		return laiotk_fail(L, &err);
	push_result(L, &r);
	return 1;
}

/* core.uring_unbuild(t, img, i, result): what uring_rebuild made taken away. */
static int l_uring_unbuild(lua_State *L)
{
	aiotk_target *t = laiotk_target_live(L, 1);
	const aiotk_uring *u = instance(L, 2, 3);
	aiotk_uring_rebuilt r;
	check_result(L, 4, &r);
	aiotk_err err;
	if (aiotk_uring_unbuild(t, u, &r, &err))
		return laiotk_fail(L, &err);
	lua_pushboolean(L, 1);
	return 1;
}

/* core.uring_commit(t, results) -> true, left[, message]: the instances
 * rebuilt with their journals kept (results in slot order) made final
 * (aiotk_uring_commit); left: journals not unmapped then (the next
 * aiotk removes them), message the first's failure. nil, message, code:
 * not committed, the caller takes them away. */
static int l_uring_commit(lua_State *L)
{
	aiotk_target *t = laiotk_target_live(L, 1);
	luaL_checktype(L, 2, LUA_TTABLE);
	size_t n = lua_objlen(L, 2);
	aiotk_uring_rebuilt *r = calloc(n ? n : 1, sizeof(*r));
	if (!r)
		return luaL_error(L, "out of memory");
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, 2, (int)i + 1);
		check_result(L, lua_gettop(L), &r[i]);
		lua_pop(L, 1);
	}
	aiotk_err err;
	unsigned left;
	int rc = aiotk_uring_commit(t, r, n, &left, &err);
	free(r);
	if (rc)
		return laiotk_fail(L, &err);
	lua_pushboolean(L, 1);
	lua_pushinteger(L, left);
	if (!left)
		return 2;
	lua_pushstring(L, err.msg);
	return 3;
}

/* core.uring_leftovers(t) -> 1 when what an aiotk killed during an
 * io_uring rebuild left in t was taken away, 0 when there was none; or
 * nil, message, code. */
static int l_uring_leftovers(lua_State *L)
{
	aiotk_target *t = laiotk_target_live(L, 1);
	unsigned removed;
	aiotk_err err;
	if (aiotk_uring_leftovers(t, &removed, &err))
		return laiotk_fail(L, &err);
	lua_pushinteger(L, removed);
	return 1;
}

/* core.uring_check(img, i) -> true, or nil and why instance i of img
 * cannot be rebuilt. */
static int l_uring_check(lua_State *L)
{
	aiotk_err err;
	if (aiotk_uring_rebuildable(instance(L, 1, 2), &err))
		return laiotk_fail(L, &err);
	lua_pushboolean(L, 1);
	return 1;
}

/* core.uring_image_shift(img, i, k): instance i of img moved on as if it
 * had run k more NOPs (for tests: counters near 2^32 without 2^32 SQEs). */
static int l_uring_image_shift(lua_State *L)
{
	aiotk_uring *u = (aiotk_uring *)instance(L, 1, 2);
	aiotk_err err;
	if (aiotk_uring_saved_shift(u, (uint32_t)laiotk_check_u64(L, 3), &err))
		return laiotk_fail(L, &err);
	lua_pushboolean(L, 1);
	return 1;
}

void laiotk_uring_rebuild_register(lua_State *L)
{
	static const luaL_Reg funcs[] = {
		{ "uring_rebuild", l_uring_rebuild }, { "uring_unbuild", l_uring_unbuild },
		{ "uring_image_shift", l_uring_image_shift }, { "uring_check", l_uring_check },
		{ "uring_leftovers", l_uring_leftovers }, { "uring_commit", l_uring_commit },
		{ NULL, NULL },
	};
	luaL_register(L, NULL, funcs);
	lua_pushnumber(L, aiotk_uring_rebuilt_flags());
	lua_setfield(L, -2, "URING_REBUILT_FLAGS");
	/* where a rebuild's journal is (below 2^53: exact) */
	lua_pushnumber(L, (double)AIOTK_URING_JOURNAL_AT);
	lua_setfield(L, -2, "URING_JOURNAL_AT");
	lua_pushnumber(L, (double)AIOTK_URING_JOURNAL_STRIDE);
	lua_setfield(L, -2, "URING_JOURNAL_STRIDE");
	lua_pushnumber(L, AIOTK_URING_JOURNAL_SLOTS);
	lua_setfield(L, -2, "URING_JOURNAL_SLOTS");
}
