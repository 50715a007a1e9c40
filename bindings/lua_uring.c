/* io_uring instances in Lua: viewer:uring(pid) gives one table per
 * instance of a running process (aiotk_uring_view_read), without stopping
 * it. The fields are the C struct's (core/aiotk.h, aiotk_uring), by the
 * same names; user data and the kernel's request flags are "0x..."
 * strings (they do not fit a double), addresses numbers. */
#include "lua_aiotk.h"

#include <string.h>

static void set_bool(lua_State *L, const char *k, int v)
{
	lua_pushboolean(L, v);
	lua_setfield(L, -2, k);
}

/* Which parts this kernel's layout let the view read, as a set. */
static void push_have(lua_State *L, unsigned have)
{
	static const struct { unsigned bit; const char *name; } part[] = {
		{ AIOTK_URING_HAVE_RINGS, "rings" }, { AIOTK_URING_HAVE_FILES, "files" },
		{ AIOTK_URING_HAVE_BUFS, "bufs" }, { AIOTK_URING_HAVE_ISSUER, "issuer" },
		{ AIOTK_URING_HAVE_REQS, "reqs" }, { AIOTK_URING_HAVE_TIMEOUTS, "timeouts" },
		{ AIOTK_URING_HAVE_RINGFDS, "ring_fds" }, { AIOTK_URING_HAVE_BLS, "buffer_groups" },
		{ AIOTK_URING_HAVE_UNLISTED, "unlisted" },
	};
	lua_createtable(L, 0, 8);
	for (size_t i = 0; i < sizeof(part) / sizeof(part[0]); i++)
		set_bool(L, part[i].name, (have & part[i].bit) != 0);
	lua_setfield(L, -2, "have");
}

static void push_files(lua_State *L, const aiotk_uring *u)
{
	lua_createtable(L, (int)u->nfiles, 0);
	for (size_t i = 0; i < u->nfiles; i++) {
		lua_createtable(L, 0, 3);
		laiotk_set_num(L, "slot", u->files[i].slot);
		laiotk_set_num(L, "fd", u->files[i].fd);
		if (u->files[i].path[0]) {
			lua_pushstring(L, u->files[i].path);
			lua_setfield(L, -2, "path");
		}
		lua_rawseti(L, -2, (int)i + 1);
	}
	lua_setfield(L, -2, "files");
}

static void push_bufs(lua_State *L, const aiotk_uring *u)
{
	lua_createtable(L, (int)u->nbufs, 0);
	for (size_t i = 0; i < u->nbufs; i++) {
		lua_createtable(L, 0, 3);
		laiotk_set_num(L, "slot", u->bufs[i].slot);
		laiotk_set_num(L, "addr", (double)u->bufs[i].ubuf);
		laiotk_set_num(L, "len", (double)u->bufs[i].len);
		lua_rawseti(L, -2, (int)i + 1);
	}
	lua_setfield(L, -2, "bufs");
}

/* An ACCEPT's or RECV's arguments, as the request's field args. */
static void push_req_args(lua_State *L, const aiotk_uring_req *q)
{
	const struct { const char *k; uint64_t v; } nums[] = {
		{ "len", q->len }, { "op_flags", q->op_flags }, { "ioprio", q->ioprio },
		{ "file_slot", q->file_slot }, { "buf_group", q->buf_group }, { "done_io", q->done_io },
	};
	lua_createtable(L, 0, 8);
	laiotk_push_u64hex(L, q->addr); /* pointers, as user_data: "0x..." */
	lua_setfield(L, -2, "addr");
	laiotk_push_u64hex(L, q->addr2);
	lua_setfield(L, -2, "addr2");
	for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++)
		laiotk_set_num(L, nums[i].k, (double)nums[i].v);
	if (q->has_mshot_len)
		laiotk_set_num(L, "mshot_len", q->mshot_len);
	lua_setfield(L, -2, "args");
}

static void push_reqs(lua_State *L, const aiotk_uring *u)
{
	lua_createtable(L, (int)u->nreqs, 0);
	for (size_t i = 0; i < u->nreqs; i++) {
		const aiotk_uring_req *q = &u->reqs[i];
		lua_createtable(L, 0, 6);
		laiotk_set_num(L, "opcode", q->opcode);
		laiotk_push_u64hex(L, q->user_data);
		lua_setfield(L, -2, "user_data");
		laiotk_set_num(L, "fd", q->fd);
		laiotk_set_num(L, "file_fd", q->file_fd);
		laiotk_set_num(L, "poll_events", q->poll_events);
		laiotk_push_u64hex(L, q->flags);
		lua_setfield(L, -2, "flags");
		if (q->has_args)
			push_req_args(L, q);
		lua_rawseti(L, -2, (int)i + 1);
	}
	lua_setfield(L, -2, "reqs");
}

static void push_timeouts(lua_State *L, const aiotk_uring *u)
{
	lua_createtable(L, (int)u->ntimeouts, 0);
	for (size_t i = 0; i < u->ntimeouts; i++) {
		const aiotk_uring_timeout *t = &u->timeouts[i];
		lua_createtable(L, 0, 10);
		laiotk_set_num(L, "opcode", t->opcode);
		laiotk_push_u64hex(L, t->user_data);
		lua_setfield(L, -2, "user_data");
		laiotk_set_num(L, "clockid", t->clockid);
		laiotk_set_num(L, "expires_ns", (double)t->expires_ns);
		laiotk_set_num(L, "remaining_ns", (double)t->remaining_ns);
		laiotk_set_num(L, "flags", t->flags);
		laiotk_set_num(L, "off", t->off);
		laiotk_set_num(L, "target_seq", t->target_seq);
		laiotk_set_num(L, "repeats", t->repeats);
		laiotk_set_num(L, "ts_ns", (double)t->ts_ns);
		lua_rawseti(L, -2, (int)i + 1);
	}
	lua_setfield(L, -2, "timeouts");
}

static void push_ringfds(lua_State *L, const aiotk_uring *u)
{
	lua_createtable(L, (int)u->nringfds, 0);
	for (size_t i = 0; i < u->nringfds; i++) {
		lua_createtable(L, 0, 2);
		laiotk_set_num(L, "tid", u->ringfds[i].tid);
		laiotk_set_num(L, "index", u->ringfds[i].index);
		lua_rawseti(L, -2, (int)i + 1);
	}
	lua_setfield(L, -2, "ring_fds");
}

static void push_bls(lua_State *L, const aiotk_uring *u)
{
	lua_createtable(L, (int)u->nbls, 0);
	for (size_t i = 0; i < u->nbls; i++) {
		const aiotk_uring_bl *b = &u->bls[i];
		lua_createtable(L, 0, 9);
		laiotk_set_num(L, "bgid", b->bgid);
		set_bool(L, "ring", b->flags & 1);
		laiotk_set_num(L, "entries", b->entries);
		laiotk_set_num(L, "nbufs", b->nbufs);
		laiotk_set_num(L, "head", b->head);
		laiotk_set_num(L, "tail", b->tail);
		set_bool(L, "incremental", b->flags & AIOTK_URING_BL_INC);
		set_bool(L, "user_memory", b->flags & AIOTK_URING_BL_USER);
		if (b->addr) {
			laiotk_push_u64hex(L, b->addr);
			lua_setfield(L, -2, "addr");
		}
		const char *why = aiotk_uring_bl_unrebuilt(u, i);
		if (why) {
			lua_pushstring(L, why);
			lua_setfield(L, -2, "unrebuilt");
		}
		lua_rawseti(L, -2, (int)i + 1);
	}
	lua_setfield(L, -2, "buffer_groups");
}

static void push_maps(lua_State *L, const aiotk_uring *u)
{
	lua_createtable(L, (int)u->nmaps, 0);
	for (size_t i = 0; i < u->nmaps; i++) {
		lua_createtable(L, 0, 4);
		laiotk_set_num(L, "start", (double)u->maps[i].start);
		laiotk_set_num(L, "end", (double)u->maps[i].end);
		laiotk_set_num(L, "offset", (double)u->maps[i].offset);
		if (u->maps[i].data)
			laiotk_set_num(L, "saved", (double)(u->maps[i].end - u->maps[i].start));
		if (u->maps[i].dontfork)
			set_bool(L, "dontfork", 1);
		lua_rawseti(L, -2, (int)i + 1);
	}
	lua_setfield(L, -2, "maps");
}

static void push_counters(lua_State *L, const aiotk_uring *u)
{
	struct { const char *k; uint32_t v; } c[] = {
		{ "sq_entries", u->sq_entries }, { "cq_entries", u->cq_entries },
		{ "sq_head", u->sq_head }, { "sq_tail", u->sq_tail },
		{ "cq_head", u->cq_head }, { "cq_tail", u->cq_tail },
		{ "cached_sq_head", u->cached_sq_head }, { "cached_cq_tail", u->cached_cq_tail },
		{ "sq_dropped", u->sq_dropped }, { "cq_overflow", u->cq_overflow },
		{ "sq_flags", u->sq_flags }, { "cq_flags", u->cq_flags },
		{ "nr_files", u->nr_files }, { "nr_bufs", u->nr_bufs },
		{ "in_flight", u->nreqs_total },
		{ "cqes_off", u->cqes_off }, { "sq_array_off", u->sq_array_off },
		{ "timeouts_in_flight", u->ntimeouts_total }, { "nbuffer_groups", u->nbls_total },
		{ "cq_timeouts", u->cq_timeouts }, { "completions_waiting", u->waiting },
		{ "unlisted", u->unlisted },
	};
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++)
		laiotk_set_num(L, c[i].k, c[i].v);
}

void laiotk_push_uring(lua_State *L, const aiotk_uring *u)
{
	lua_createtable(L, 0, 32);
	laiotk_set_num(L, "fd", u->fd);
	laiotk_set_num(L, "ino", (double)u->ino);
	laiotk_set_num(L, "flags", u->flags);
	push_have(L, u->have);
	push_counters(L, u);
	if (u->have & AIOTK_URING_HAVE_ISSUER)
		laiotk_set_num(L, "submitter_tid", u->submitter_tid);
	if (u->sq_thread_pid) {
		laiotk_set_num(L, "sq_thread_pid", u->sq_thread_pid);
		laiotk_set_num(L, "sq_cpu", u->sq_cpu);
		laiotk_set_num(L, "sq_thread_idle", u->sq_thread_idle);
	}
	if (u->personalities)
		set_bool(L, "personalities", 1);
	if (u->restricted)
		set_bool(L, "restricted", 1);
	if (u->has_eventfd) {
		lua_createtable(L, 0, 1);
		set_bool(L, "async", u->eventfd_async);
		if (u->eventfd_fd >= 0)
			laiotk_set_num(L, "fd", u->eventfd_fd);
		if (u->eventfd_id >= 0)
			laiotk_set_num(L, "id", u->eventfd_id);
		lua_setfield(L, -2, "eventfd");
	}
	push_files(L, u);
	push_bufs(L, u);
	push_reqs(L, u);
	push_timeouts(L, u);
	push_ringfds(L, u);
	push_bls(L, u);
	push_maps(L, u);
}

/* viewer:uring(pid) -> { instance, ... } in fd order. */
int laiotk_kv_uring(lua_State *L)
{
	aiotk_kviewer *v = laiotk_kviewer_check(L, 1);
	int pid = (int)luaL_checkinteger(L, 2);
	aiotk_uring_view uv;
	aiotk_err err;
	if (aiotk_uring_view_read(v, pid, &uv, &err))
		return laiotk_fail(L, &err);
	lua_createtable(L, (int)uv.n, 0);
	for (size_t i = 0; i < uv.n; i++) {
		laiotk_push_uring(L, &uv.ring[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	aiotk_uring_view_free(&uv);
	return 1;
}

/* ---- instances read from a stopped process, and in images ------------- */
#define URINGS_MT "aiotk.urings"

static aiotk_uring_view *check_set(lua_State *L, int idx)
{
	return luaL_checkudata(L, idx, URINGS_MT);
}

/* viewer:uring_stopped(t) -> set: the instances of stopped target t's
 * process with their ring memory read through t, kept in C (set:list()
 * gives their tables, img:add_urings(set) saves them). */
int laiotk_kv_uring_stopped(lua_State *L)
{
	aiotk_kviewer *v = laiotk_kviewer_check(L, 1);
	aiotk_target *t = laiotk_target_live(L, 2);
	aiotk_err err;
	aiotk_uring_view *uv = lua_newuserdata(L, sizeof(*uv));
	memset(uv, 0, sizeof(*uv));
	luaL_getmetatable(L, URINGS_MT);
	lua_setmetatable(L, -2);
	if (aiotk_uring_view_read(v, t->pid, uv, &err))
		return laiotk_fail(L, &err);
	for (size_t i = 0; i < uv->n; i++)
		if (aiotk_uring_read_memory(t, &uv->ring[i], &err))
			return laiotk_fail(L, &err);
	return 1;
}

static void push_list(lua_State *L, const aiotk_uring *u, size_t n)
{
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		laiotk_push_uring(L, &u[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
}

static int set_list(lua_State *L)
{
	aiotk_uring_view *uv = check_set(L, 1);
	push_list(L, uv->ring, uv->n);
	return 1;
}

/* set:orphan_maps(): io_uring mappings of no instance listed (one held
 * only through its mappings, its fd closed). */
static int set_orphan_maps(lua_State *L)
{
	lua_pushinteger(L, (lua_Integer)check_set(L, 1)->orphan_maps);
	return 1;
}

static int set_gc(lua_State *L)
{
	aiotk_uring_view_free(check_set(L, 1));
	return 0;
}

/* img:add_urings(set[, keep]): the set's instances saved in the image;
 * keep (a list of booleans by index), when given, says which. */
int laiotk_image_add_urings(lua_State *L)
{
	aiotk_image *img = luaL_checkudata(L, 1, IMAGE_MT);
	aiotk_uring_view *uv = check_set(L, 2);
	aiotk_err err;
	for (size_t i = 0; i < uv->n; i++) {
		int keep = 1;
		if (lua_istable(L, 3)) {
			lua_rawgeti(L, 3, (int)i + 1);
			keep = lua_toboolean(L, -1);
			lua_pop(L, 1);
		}
		if (keep && aiotk_image_add_uring(img, &uv->ring[i], &err))
			return laiotk_fail(L, &err);
	}
	lua_pushvalue(L, 1);
	return 1;
}

/* img:urings() -> the saved instances as tables (each map with `saved`,
 * its byte count, when its memory is in the image). */
int laiotk_image_urings(lua_State *L)
{
	aiotk_image *img = luaL_checkudata(L, 1, IMAGE_MT);
	push_list(L, img->urings, img->nurings);
	return 1;
}

/* The saved bytes of mapping j of instance i (arguments 2 and 3, 1-based)
 * of list, or nothing when they were not read. */
static int push_memory(lua_State *L, const aiotk_uring *list, size_t n)
{
	lua_Integer i = luaL_checkinteger(L, 2), j = luaL_checkinteger(L, 3);
	luaL_argcheck(L, i >= 1 && (size_t)i <= n, 2, "no such io_uring instance");
	const aiotk_uring *u = &list[i - 1];
	luaL_argcheck(L, j >= 1 && (size_t)j <= u->nmaps, 3, "no such mapping");
	const aiotk_uring_map *m = &u->maps[j - 1];
	if (!m->data)
		return 0;
	lua_pushlstring(L, (const char *)m->data, (size_t)(m->end - m->start));
	return 1;
}

/* img:uring_memory(i, j) -> the saved bytes of mapping j of instance i
 * (1-based), or nil when not saved. */
int laiotk_image_uring_memory(lua_State *L)
{
	aiotk_image *img = luaL_checkudata(L, 1, IMAGE_MT);
	return push_memory(L, img->urings, img->nurings);
}

/* set:memory(i, j): the same for a set read from a stopped process. */
static int set_memory(lua_State *L)
{
	aiotk_uring_view *uv = check_set(L, 1);
	return push_memory(L, uv->ring, uv->n);
}

void laiotk_uring_register(lua_State *L)
{
	static const luaL_Reg methods[] = { { "list", set_list }, { "memory", set_memory },
					    { "orphan_maps", set_orphan_maps }, { NULL, NULL } };
	laiotk_class(L, URINGS_MT, set_gc, methods);
}

