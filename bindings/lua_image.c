/* aiotk.image userdata: a header and its rings. */
#include "lua_aiotk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

aiotk_image *laiotk_image_new(lua_State *L)
{
	aiotk_image *img = lua_newuserdata(L, sizeof(*img));
	memset(img, 0, sizeof(*img));
	luaL_getmetatable(L, IMAGE_MT);
	lua_setmetatable(L, -2);
	return img;
}

static aiotk_image *check(lua_State *L, int idx)
{
	return luaL_checkudata(L, idx, IMAGE_MT);
}

static int image_gc(lua_State *L)
{
	aiotk_image_free(check(L, 1));
	return 0;
}

static int image_tostring(lua_State *L)
{
	aiotk_image *img = check(L, 1);
	char buf[200];
	snprintf(buf, sizeof(buf),
		 "aiotk image: %zu ring%s, %zu io_uring, from %s (%u CPUs, %u-byte pages)%s",
		 img->nrings, img->nrings == 1 ? "" : "s", img->nurings, img->release,
		 img->cpus, img->page_size, img->pid ? ", process" : "");
	lua_pushstring(L, buf);
	return 1;
}

/* image:add(ring): a copy of the ring is kept. */
static int image_add(lua_State *L)
{
	aiotk_err err;
	aiotk_image *img = check(L, 1);
	if (aiotk_image_add_ring(img, laiotk_ring_check(L, 2), &err))
		return laiotk_fail(L, &err);
	lua_pushvalue(L, 1);
	return 1;
}

/* img:write(dir[, {sync = false}]) */
static int image_write(lua_State *L)
{
	aiotk_err err;
	if (aiotk_image_write_flags(luaL_checkstring(L, 2), check(L, 1), laiotk_write_flags(L, 3), &err))
		return laiotk_fail(L, &err);
	lua_pushboolean(L, 1);
	return 1;
}

static int image_encode(lua_State *L)
{
	aiotk_err err;
	uint8_t *buf;
	size_t len;
	if (aiotk_image_encode(check(L, 1), &buf, &len, &err))
		return laiotk_fail(L, &err);
	lua_pushlstring(L, (const char *)buf, len);
	free(buf);
	return 1;
}

/* image:rings(): a list of ring userdata (copies). */
static int image_rings(lua_State *L)
{
	aiotk_err err;
	aiotk_image *img = check(L, 1);
	lua_createtable(L, (int)img->nrings, 0);
	for (size_t i = 0; i < img->nrings; i++) {
		aiotk_ring *r = laiotk_ring_new(L);
		if (aiotk_ring_copy(r, &img->rings[i], &err))
			return luaL_error(L, "%s", err.msg);
		lua_rawseti(L, -2, (int)i + 1);
	}
	return 1;
}

/* image:take_rings(): the rings moved out as ring userdata, the image
 * left without any: no copy of their events (for 40000 events, 1.3 MB of
 * fresh memory and 0.5-0.8 ms of a restore command's own time here). */
static int image_take_rings(lua_State *L)
{
	aiotk_image *img = check(L, 1);
	lua_createtable(L, (int)img->nrings, 0);
	for (size_t i = 0; i < img->nrings; i++) {
		*laiotk_ring_new(L) = img->rings[i];
		memset(&img->rings[i], 0, sizeof(img->rings[i]));
		lua_rawseti(L, -2, (int)i + 1);
	}
	free(img->rings);
	img->rings = NULL;
	img->nrings = 0;
	return 1;
}

static const luaL_Reg methods[] = {
	{ "add", image_add }, { "write", image_write }, { "rings", image_rings },
	{ "take_rings", image_take_rings },
	{ "encode", image_encode }, { "add_urings", laiotk_image_add_urings },
	{ "urings", laiotk_image_urings }, { "uring_memory", laiotk_image_uring_memory },
	{ NULL, NULL },
};

static int image_index(lua_State *L)
{
	aiotk_image *img = check(L, 1);
	const char *k = luaL_checkstring(L, 2);
	struct { const char *name; double v; } f[] = {
		{ "format", img->format }, { "cpus", img->cpus },
		{ "page_size", img->page_size }, { "aio_max_nr", (double)img->aio_max_nr },
		{ "time", (double)img->time_ns / 1e9 }, { "pid", img->pid },
		{ "stopped_ns", (double)img->stopped_ns }, { "nrings", (double)img->nrings },
		{ "nurings", (double)img->nurings },
	};
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
		if (!strcmp(k, f[i].name)) {
			lua_pushnumber(L, f[i].v);
			return 1;
		}
	if (!strcmp(k, "time_ns")) { /* past 2^53: a decimal string */
		char buf[24];
		snprintf(buf, sizeof(buf), "%llu", (unsigned long long)img->time_ns);
		lua_pushstring(L, buf);
		return 1;
	}
	if (!strcmp(k, "warnings")) {
		lua_pushstring(L, img->warnings);
		return 1;
	}
	if (!strcmp(k, "release") || !strcmp(k, "formula")) {
		lua_pushstring(L, k[0] == 'r' ? img->release : aiotk_formula_name(img->formula));
		return 1;
	}
	for (const luaL_Reg *m = methods; m->name; m++)
		if (!strcmp(k, m->name)) {
			lua_pushcfunction(L, m->func);
			return 1;
		}
	return 0;
}

static int image_newindex(lua_State *L)
{
	aiotk_image *img = check(L, 1);
	const char *k = luaL_checkstring(L, 2);
	if (!strcmp(k, "pid"))
		img->pid = (int32_t)luaL_checknumber(L, 3);
	else if (!strcmp(k, "stopped_ns"))
		img->stopped_ns = laiotk_check_u64(L, 3);
	else if (!strcmp(k, "warnings"))
		snprintf(img->warnings, sizeof(img->warnings), "%s", luaL_checkstring(L, 3));
	else
		return luaL_error(L, "image field %s is read-only", k);
	return 0;
}

/* ---- a CRIU dump's images in one file (aiotk_pack) -------------------- */
#define PACK_MT "aiotk.pack"

static aiotk_pack *pack_check(lua_State *L)
{
	return luaL_checkudata(L, 1, PACK_MT);
}

static int pack_gc(lua_State *L)
{
	aiotk_pack_close(pack_check(L));
	return 0;
}

/* pack:add(task, img): img as task's, written whole or not at all. */
static int pack_add(lua_State *L)
{
	aiotk_err err;
	if (aiotk_pack_append(pack_check(L), (int32_t)luaL_checkinteger(L, 2), check(L, 3), &err))
		return laiotk_fail(L, &err);
	lua_pushboolean(L, 1);
	return 1;
}

/* pack:count(): how many records were written. */
static int pack_count(lua_State *L)
{
	lua_pushinteger(L, pack_check(L)->count);
	return 1;
}

void laiotk_image_register(lua_State *L)
{
	static const luaL_Reg meta[] = {
		{ "__gc", image_gc }, { "__tostring", image_tostring },
		{ "__index", image_index }, { "__newindex", image_newindex },
		{ NULL, NULL },
	};
	static const luaL_Reg pack_methods[] = {
		{ "add", pack_add }, { "count", pack_count }, { "close", pack_gc }, { NULL, NULL },
	};
	if (luaL_newmetatable(L, IMAGE_MT))
		luaL_register(L, NULL, meta);
	lua_pop(L, 1);
	laiotk_class(L, PACK_MT, pack_gc, pack_methods);
}

/* aiotk.core.image(): an empty image stamped with this host's facts. */
int laiotk_image_create(lua_State *L)
{
	aiotk_host h;
	aiotk_err err;
	if (aiotk_host_probe(&h, &err))
		return laiotk_fail(L, &err);
	aiotk_image *img = laiotk_image_new(L);
	aiotk_image_init_host(img, &h);
	return 1;
}

int laiotk_image_read(lua_State *L)
{
	aiotk_err err;
	const char *dir = luaL_checkstring(L, 1);
	aiotk_image *img = laiotk_image_new(L);
	if (aiotk_image_read(dir, img, &err))
		return laiotk_fail(L, &err);
	return 1;
}

int laiotk_image_decode(lua_State *L)
{
	aiotk_err err;
	size_t len;
	const char *buf = luaL_checklstring(L, 1, &len);
	const char *name = luaL_optstring(L, 2, "(buffer)");
	aiotk_image *img = laiotk_image_new(L);
	if (aiotk_image_decode((const uint8_t *)buf, len, name, img, &err))
		return laiotk_fail(L, &err);
	return 1;
}

/* core.image_pack(path): the file created (emptied if it was there). */
int laiotk_pack_create(lua_State *L)
{
	aiotk_err err;
	const char *path = luaL_checkstring(L, 1);
	aiotk_pack *p = laiotk_object(L, sizeof(*p), PACK_MT);
	p->fd = -1;
	if (aiotk_pack_create(path, p, &err))
		return laiotk_fail(L, &err);
	return 1;
}

/* core.read_pack(path): { [task] = image }; nil, message, "empty" when
 * there is no such file. */
int laiotk_pack_read(lua_State *L)
{
	aiotk_err err;
	aiotk_pack_entry *e;
	size_t n;
	if (aiotk_pack_read(luaL_checkstring(L, 1), &e, &n, &err))
		return laiotk_fail(L, &err);
	lua_createtable(L, 0, (int)n);
	for (size_t i = 0; i < n; i++) {
		aiotk_image *img = laiotk_image_new(L);
		*img = e[i].img;
		memset(&e[i].img, 0, sizeof(e[i].img));
		lua_rawseti(L, -2, e[i].task);
	}
	aiotk_pack_free(e, n);
	return 1;
}
