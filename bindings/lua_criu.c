/* aiotk.core.criu_read / criu_patch: CRIU dumps for the Lua side, and the
 * atomic file write the fixup uses. */
#include "lua_aiotk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* p's rings move into ring userdata (p keeps none: no copy of their
 * events). */
static void push_proc(lua_State *L, aiotk_criu_proc *p)
{
	lua_createtable(L, 0, 4);
	laiotk_set_num(L, "pid", p->pid);
	lua_pushstring(L, p->mm_path);
	lua_setfield(L, -2, "mm_path");
	if (p->mm) {
		lua_pushlstring(L, (const char *)p->mm, p->mm_len);
		lua_setfield(L, -2, "mm");
	}
	lua_createtable(L, (int)p->nrings, 0);
	for (size_t i = 0; i < p->nrings; i++) {
		aiotk_criu_ring *c = &p->rings[i];
		lua_createtable(L, 0, 4);
		*laiotk_ring_new(L) = c->ring;
		memset(&c->ring, 0, sizeof(c->ring));
		lua_setfield(L, -2, "ring");
		laiotk_set_num(L, "nr_req", c->nr_req);
		laiotk_set_num(L, "nr_req_off", (double)c->nr_req_off);
		laiotk_set_num(L, "nr_req_len", (double)c->nr_req_len);
		if (c->pages_path[0]) { /* not read with mm_only */
			lua_pushstring(L, c->pages_path);
			lua_setfield(L, -2, "pages_path");
			laiotk_set_num(L, "header_off", (double)c->header_off);
		}
		lua_rawseti(L, -2, (int)i + 1);
	}
	lua_setfield(L, -2, "rings");
}

/* criu_read(dir[, mm_only]) -> { {pid=, mm_path=, mm= (its bytes), rings={ {ring=, nr_req=, ...} }} }
 * mm_only: each ring only its addr and ring_len (no bytes read). */
static int l_criu_read(lua_State *L)
{
	aiotk_criu_dump d;
	aiotk_err err;
	const char *dir = luaL_checkstring(L, 1);
	int mm_only = lua_toboolean(L, 2);
	if (mm_only ? aiotk_criu_read_mm(dir, &d, &err)
		    : aiotk_criu_read(dir, (unsigned)sysconf(_SC_PAGESIZE), &d, &err))
		return laiotk_fail(L, &err);
	lua_createtable(L, (int)d.nprocs, 0);
	for (size_t i = 0; i < d.nprocs; i++) {
		push_proc(L, &d.procs[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	aiotk_criu_free(&d);
	return 1;
}

/* criu_decode_mm(bytes, name) -> { {addr=, ring_len=, nr_req=, nr_req_off=,
 * nr_req_len=}, ... }: the rings of an mm file image, without their pages. */
static int l_criu_decode_mm(lua_State *L)
{
	size_t len;
	aiotk_err err;
	aiotk_criu_proc p;
	const char *s = luaL_checklstring(L, 1, &len);
	if (aiotk_criu_decode_mm((const uint8_t *)s, len, luaL_checkstring(L, 2), &p, &err)) {
		free(p.rings);
		return laiotk_fail(L, &err);
	}
	lua_createtable(L, (int)p.nrings, 0);
	for (size_t i = 0; i < p.nrings; i++) {
		lua_createtable(L, 0, 5);
		laiotk_set_num(L, "addr", (double)p.rings[i].ring.addr);
		laiotk_set_num(L, "ring_len", (double)p.rings[i].ring.ring_len);
		laiotk_set_num(L, "nr_req", p.rings[i].nr_req);
		laiotk_set_num(L, "nr_req_off", (double)p.rings[i].nr_req_off);
		laiotk_set_num(L, "nr_req_len", (double)p.rings[i].nr_req_len);
		lua_rawseti(L, -2, (int)i + 1);
	}
	free(p.rings);
	return 1;
}

/* criu_patch(bytes, off, len, n) -> bytes with that nr_req varint set. */
static int l_criu_patch(lua_State *L)
{
	size_t len;
	aiotk_err err;
	const char *s = luaL_checklstring(L, 1, &len);
	aiotk_criu_ring r;
	memset(&r, 0, sizeof(r));
	r.nr_req_off = (size_t)luaL_checknumber(L, 2);
	r.nr_req_len = (size_t)luaL_checknumber(L, 3);
	uint32_t n = (uint32_t)luaL_checknumber(L, 4);
	luaL_Buffer b;
	char *copy = malloc(len ? len : 1);
	if (!copy)
		return luaL_error(L, "out of memory");
	memcpy(copy, s, len);
	if (aiotk_criu_patch_nr_req((uint8_t *)copy, len, &r, n, &err)) {
		free(copy);
		return laiotk_fail(L, &err);
	}
	luaL_buffinit(L, &b);
	luaL_addlstring(&b, copy, len);
	free(copy);
	luaL_pushresult(&b);
	return 1;
}

/* criu_grow(bytes, name, addr, new_len, n) -> mm file bytes with the ring
 * at addr new_len long and nr_req n. */
static int l_criu_grow(lua_State *L)
{
	size_t len, out_len;
	uint8_t *out;
	aiotk_err err;
	const char *s = luaL_checklstring(L, 1, &len);
	const char *name = luaL_checkstring(L, 2);
	uint64_t addr = laiotk_check_u64(L, 3), new_len = laiotk_check_u64(L, 4);
	uint32_t n = (uint32_t)luaL_checknumber(L, 5);
	if (aiotk_criu_grow_mm((const uint8_t *)s, len, name, addr, new_len, n, &out, &out_len, &err))
		return laiotk_fail(L, &err);
	lua_pushlstring(L, (const char *)out, out_len);
	free(out);
	return 1;
}

/* criu_vmas(bytes, name) -> { {start=, finish=, ring=, desc=}, ... }: the
 * mm file's VMAs, as a process's layout reads (core.maps). */
static int l_criu_vmas(lua_State *L)
{
	size_t len, n;
	aiotk_criu_vma *v;
	aiotk_err err;
	const char *s = luaL_checklstring(L, 1, &len);
	const char *name = luaL_checkstring(L, 2);
	if (aiotk_criu_vmas((const uint8_t *)s, len, name, &v, &n, &err))
		return laiotk_fail(L, &err);
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		char d[96];
		lua_createtable(L, 0, 4);
		laiotk_set_num(L, "start", (double)v[i].start);
		laiotk_set_num(L, "finish", (double)v[i].end);
		lua_pushboolean(L, v[i].ring);
		lua_setfield(L, -2, "ring");
		snprintf(d, sizeof(d), "the dump's mapping 0x%llx-0x%llx", (unsigned long long)v[i].start,
			 (unsigned long long)v[i].end);
		lua_pushstring(L, d);
		lua_setfield(L, -2, "desc");
		lua_rawseti(L, -2, (int)i + 1);
	}
	free(v);
	return 1;
}

/* criu_set_header_nr(pages_path, header_off, addr, nr): the saved ring
 * header's nr, in place. */
static int l_criu_set_header_nr(lua_State *L)
{
	aiotk_criu_ring r;
	aiotk_err err;
	memset(&r, 0, sizeof(r));
	snprintf(r.pages_path, sizeof(r.pages_path), "%s", luaL_checkstring(L, 1));
	r.header_off = laiotk_check_u64(L, 2);
	r.ring.addr = laiotk_check_u64(L, 3);
	if (aiotk_criu_set_header_nr(&r, (uint32_t)luaL_checknumber(L, 4), &err))
		return laiotk_fail(L, &err);
	lua_pushboolean(L, 1);
	return 1;
}

/* criu_patch_file(mm_path, off, len, n[, {sync=}]): nr_req set in the
 * file itself, in the same bytes (aiotk_criu_patch_nr_req_file). */
static int l_criu_patch_file(lua_State *L)
{
	aiotk_criu_ring r;
	aiotk_err err;
	memset(&r, 0, sizeof(r));
	r.nr_req_off = (size_t)luaL_checknumber(L, 2);
	r.nr_req_len = (size_t)luaL_checknumber(L, 3);
	if (aiotk_criu_patch_nr_req_file(luaL_checkstring(L, 1), &r, (uint32_t)luaL_checknumber(L, 4),
					 laiotk_write_flags(L, 5), &err))
		return laiotk_fail(L, &err);
	lua_pushboolean(L, 1);
	return 1;
}

/* ---- spares: files made ahead of their write (aiotk_spare) ----------- */
#define SPARE_MT "aiotk.spare"

static int spare_drop(lua_State *L)
{
	aiotk_spare_drop(luaL_checkudata(L, 1, SPARE_MT));
	return 0;
}

/* core.spare(path): the temporary a later write of path goes through
 * (w.spare of write_atomic, facts.spare of criu_stamp); spare:drop(). */
static int l_spare(lua_State *L)
{
	aiotk_err err;
	const char *path = luaL_checkstring(L, 1);
	aiotk_spare *s = laiotk_object(L, sizeof(*s), SPARE_MT);
	s->fd = -1;
	if (aiotk_spare_make(path, s, &err))
		return laiotk_fail(L, &err);
	return 1;
}

/* The spare in field "spare" of the table at idx, if any. */
static aiotk_spare *opt_spare(lua_State *L, int idx)
{
	if (!lua_istable(L, idx))
		return NULL;
	lua_getfield(L, idx, "spare");
	aiotk_spare *s = lua_isnil(L, -1) ? NULL : luaL_checkudata(L, -1, SPARE_MT);
	lua_pop(L, 1);
	return s;
}

/* write_atomic(path, bytes[, {sync = false, spare = core.spare(path)}]) */
static int l_write_atomic(lua_State *L)
{
	size_t len;
	aiotk_err err;
	const char *path = luaL_checkstring(L, 1);
	const char *s = luaL_checklstring(L, 2, &len);
	if (aiotk_write_file_via(opt_spare(L, 3), path, (const uint8_t *)s, len, laiotk_write_flags(L, 3), &err))
		return laiotk_fail(L, &err);
	lua_pushboolean(L, 1);
	return 1;
}

/* criu_stamp(dir, host, {needs=, rings=, captured=, policy=, spare=}): the stamp
 * of a dump fitted to host (aiotk_criu_stamp_write). */
static int l_criu_stamp(lua_State *L)
{
	aiotk_err err;
	aiotk_geom_host g = laiotk_check_model(L, 2);
	aiotk_criu_stamp s = { .cpus = g.cpus, .page_size = g.page_size, .formula = g.formula };
	luaL_checktype(L, 3, LUA_TTABLE);
	s.needs = laiotk_opt_field_u64(L, 3, "needs", 0);
	s.rings = (uint32_t)laiotk_opt_field_u64(L, 3, "rings", 0);
	s.captured = (uint32_t)laiotk_opt_field_u64(L, 3, "captured", 0);
	lua_getfield(L, 3, "policy");
	snprintf(s.policy, sizeof(s.policy), "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
	lua_pop(L, 1);
	if (aiotk_criu_stamp_write(luaL_checkstring(L, 1), &s, opt_spare(L, 3), &err))
		return laiotk_fail(L, &err);
	lua_pushboolean(L, 1);
	return 1;
}

/* criu_stamp_fits(dir): whether the dump's stamp says it needs nothing
 * more on this host; false, why when not (no stamp: code "empty"). */
static int l_criu_stamp_fits(lua_State *L)
{
	aiotk_err err;
	aiotk_criu_stamp s;
	aiotk_host h;
	if (aiotk_criu_stamp_read(luaL_checkstring(L, 1), &s, &err) || aiotk_host_probe(&h, &err))
		return laiotk_fail(L, &err);
	lua_pushboolean(L, aiotk_criu_stamp_fits(&s, &h));
	return 1;
}

/* lua_aiotk.h: moves from Lua (relocation in a dump, find_refs). */
size_t laiotk_check_moves(lua_State *L, int idx, aiotk_move *m, uint32_t *nr, size_t max)
{
	luaL_checktype(L, idx, LUA_TTABLE);
	size_t n = lua_objlen(L, idx);
	luaL_argcheck(L, n <= max, idx, "too many moved rings");
	for (size_t i = 0; i < n; i++) {
		lua_rawgeti(L, idx, (int)i + 1);
		int at = lua_gettop(L);
		m[i] = (aiotk_move){ laiotk_opt_field_u64(L, at, "from", 0), laiotk_opt_field_u64(L, at, "len", 0),
				     laiotk_opt_field_u64(L, at, "to", 0) };
		if (nr)
			nr[i] = (uint32_t)laiotk_opt_field_u64(L, at, "nr", 0);
		lua_pop(L, 1);
	}
	return n;
}

/* A rewritten location: kind, move (1-based), old, value; a word: addr,
 * map_start, map_finish, file_off; a register: reg. */
static void push_criu_refs(lua_State *L, const aiotk_criu_refs *r)
{
	lua_createtable(L, (int)r->n, 1);
	for (size_t i = 0; i < r->n; i++) {
		const aiotk_criu_ref *x = &r->ref[i];
		lua_createtable(L, 0, 8);
		lua_pushstring(L, x->kind == AIOTK_REF_ID ? "id" : x->kind == AIOTK_REF_POINTER ? "pointer" : "restart");
		lua_setfield(L, -2, "kind");
		laiotk_set_num(L, "move", (double)x->move + 1);
		laiotk_set_num(L, "old", (double)x->old);
		laiotk_set_num(L, "value", (double)x->value);
		if (x->reg) {
			lua_pushstring(L, x->reg);
			lua_setfield(L, -2, "reg");
		} else {
			laiotk_set_num(L, "addr", (double)x->addr);
			laiotk_set_num(L, "map_start", (double)x->map_start);
			laiotk_set_num(L, "map_finish", (double)x->map_end);
			laiotk_set_num(L, "file_off", (double)x->file_off);
		}
		lua_rawseti(L, -2, (int)i + 1);
	}
	laiotk_set_num(L, "scanned", (double)r->scanned);
}

#define MAX_MOVES 256

/* bytes pushed as a string, then freed. */
static void push_freed(lua_State *L, uint8_t *b, size_t n)
{
	lua_pushlstring(L, (const char *)b, n);
	free(b);
}

/* criu_relocate_mm(bytes, name, {from=, len=, to=}, new_len, n) -> mm file
 * bytes with the ring moved (aiotk_criu_relocate_mm). */
static int l_criu_relocate_mm(lua_State *L)
{
	size_t len, out_len;
	uint8_t *out;
	aiotk_err err;
	const char *s = luaL_checklstring(L, 1, &len);
	const char *name = luaL_checkstring(L, 2);
	luaL_checktype(L, 3, LUA_TTABLE);
	aiotk_move m = { laiotk_opt_field_u64(L, 3, "from", 0), laiotk_opt_field_u64(L, 3, "len", 0),
			 laiotk_opt_field_u64(L, 3, "to", 0) };
	if (aiotk_criu_relocate_mm((const uint8_t *)s, len, name, &m, laiotk_check_u64(L, 4),
				   (uint32_t)luaL_checknumber(L, 5), &out, &out_len, &err))
		return laiotk_fail(L, &err);
	push_freed(L, out, out_len);
	return 1;
}

/* criu_relocate_pages(pagemap, pages, name, mm, moves, page) -> pagemap,
 * pages, refs (aiotk_criu_relocate_pages; mm: the mm image as dumped,
 * whose VMAs say which pages are scanned). */
static int l_criu_relocate_pages(lua_State *L)
{
	size_t pm_len, pg_len, mm_len, nv, pmo_len, pgo_len;
	aiotk_err err;
	aiotk_criu_vma *v;
	aiotk_move m[MAX_MOVES];
	uint32_t nr[MAX_MOVES];
	uint8_t *pmo, *pgo;
	aiotk_criu_refs refs = { 0 };
	const char *pm = luaL_checklstring(L, 1, &pm_len), *pg = luaL_checklstring(L, 2, &pg_len);
	const char *name = luaL_checkstring(L, 3), *mm = luaL_checklstring(L, 4, &mm_len);
	size_t n = laiotk_check_moves(L, 5, m, nr, MAX_MOVES);
	unsigned page = (unsigned)luaL_checknumber(L, 6);
	if (aiotk_criu_vmas((const uint8_t *)mm, mm_len, name, &v, &nv, &err))
		return laiotk_fail(L, &err);
	int rc = aiotk_criu_relocate_pages((const uint8_t *)pm, pm_len, (const uint8_t *)pg, pg_len, name, v,
					   nv, m, nr, n, page, &pmo, &pmo_len, &pgo, &pgo_len, &refs, &err);
	free(v);
	if (rc)
		return laiotk_fail(L, &err);
	push_freed(L, pmo, pmo_len);
	push_freed(L, pgo, pgo_len);
	push_criu_refs(L, &refs);
	aiotk_criu_refs_free(&refs);
	return 3;
}

/* criu_relocate_regs(core, name, moves) -> core, refs
 * (aiotk_criu_relocate_regs). */
static int l_criu_relocate_regs(lua_State *L)
{
	size_t len, out_len;
	aiotk_err err;
	aiotk_move m[MAX_MOVES];
	uint8_t *out;
	aiotk_criu_refs refs = { 0 };
	const char *s = luaL_checklstring(L, 1, &len);
	const char *name = luaL_checkstring(L, 2);
	size_t n = laiotk_check_moves(L, 3, m, NULL, MAX_MOVES);
	if (aiotk_criu_relocate_regs((const uint8_t *)s, len, name, m, n, &out, &out_len, &refs, &err))
		return laiotk_fail(L, &err);
	push_freed(L, out, out_len);
	push_criu_refs(L, &refs);
	aiotk_criu_refs_free(&refs);
	return 2;
}

/* criu_threads(pstree bytes, name, pid) -> { tid, ... } */
static int l_criu_threads(lua_State *L)
{
	size_t len, n;
	int *tids;
	aiotk_err err;
	const char *s = luaL_checklstring(L, 1, &len);
	if (aiotk_criu_threads((const uint8_t *)s, len, luaL_checkstring(L, 2), (int)luaL_checknumber(L, 3),
			       &tids, &n, &err))
		return laiotk_fail(L, &err);
	lua_createtable(L, (int)n, 0);
	for (size_t i = 0; i < n; i++) {
		lua_pushnumber(L, tids[i]);
		lua_rawseti(L, -2, (int)i + 1);
	}
	free(tids);
	return 1;
}

void laiotk_criu_register(lua_State *L)
{
	static const luaL_Reg f[] = {
		{ "criu_read", l_criu_read }, { "criu_patch", l_criu_patch }, { "criu_grow", l_criu_grow },
		{ "criu_vmas", l_criu_vmas }, { "criu_relocate_mm", l_criu_relocate_mm },
		{ "criu_relocate_pages", l_criu_relocate_pages },
		{ "criu_relocate_regs", l_criu_relocate_regs }, { "criu_threads", l_criu_threads },
		{ "criu_decode_mm", l_criu_decode_mm },
		{ "criu_set_header_nr", l_criu_set_header_nr }, { "criu_patch_file", l_criu_patch_file },
		{ "write_atomic", l_write_atomic }, { "criu_stamp", l_criu_stamp }, { "spare", l_spare },
		{ "criu_stamp_fits", l_criu_stamp_fits }, { NULL, NULL },
	};
	static const luaL_Reg spare_methods[] = { { "drop", spare_drop }, { NULL, NULL } };
	luaL_register(L, NULL, f);
	laiotk_class(L, SPARE_MT, spare_drop, spare_methods);
}
