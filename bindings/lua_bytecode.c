/* Lua files loaded from their precompiled bytecode when the build made
 * one for exactly their text: a command starts without parsing its
 * modules and argparse (about 3 ms of a 6 ms start here).
 *
 * The bytecode of a source is named by a hash of its text
 * (DIR/HASH.ljbc), so an edited, replaced or newer file never meets
 * bytecode that is not its own: it is simply parsed, as without any. The
 * chunk name stored in the bytecode (the path it was compiled from) is
 * replaced by the path loaded from, so messages name the file as before.
 * Bytecode this LuaJIT refuses (another version) is ignored the same way. */
#include "lua_aiotk.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Whole file into a malloc'd buffer; NULL (errno set) if it cannot be
 * read whole: never a prefix of it. */
static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = NULL;
	size_t cap = 0, n = 0;
	int e = 0;
	for (;;) {
		if (n == cap) {
			cap = cap ? cap * 2 : 65536;
			char *nb = realloc(buf, cap);
			if (!nb) {
				e = ENOMEM;
				break;
			}
			buf = nb;
		}
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	if (!e && ferror(f))
		e = errno ? errno : EIO;
	fclose(f);
	if (e) {
		free(buf);
		errno = e;
		return NULL;
	}
	*len = n;
	return buf;
}

/* A 64-bit hash of a text, eight bytes a step (FNV-1a's constants, a
 * shift folding the high bits back), as 16 hex digits: the name of the
 * text's bytecode. Byte by byte it took 60 us for argparse's 65 KB. */
static void text_key(const char *s, size_t len, char out[17])
{
	uint64_t h = 0xcbf29ce484222325ull ^ len;
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t w;
		memcpy(&w, s + i, 8);
		h = (h ^ w) * 0x100000001b3ull;
		h ^= h >> 29;
	}
	for (; i < len; i++)
		h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
	snprintf(out, 17, "%016llx", (unsigned long long)h);
}

static size_t uleb(const unsigned char *p, size_t len, size_t *at)
{
	size_t v = 0;
	for (int shift = 0; *at < len && shift < 35; shift += 7) {
		unsigned char b = p[(*at)++];
		v |= (size_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return v;
	}
	return (size_t)-1;
}

static size_t put_uleb(unsigned char *p, size_t v)
{
	size_t n = 0;
	do {
		unsigned char b = v & 0x7f;
		v >>= 7;
		p[n++] = b | (v ? 0x80 : 0);
	} while (v);
	return n;
}

/* bc (a LuaJIT dump: ESC 'L' 'J', version, flags, then, unless stripped,
 * the chunk name) loaded under chunk name `name`; nonzero if it is not a
 * dump this LuaJIT loads. */
static int load_bytecode(lua_State *L, const unsigned char *bc, size_t len, const char *name)
{
	size_t at = 4;
	if (len < 5 || memcmp(bc, "\033LJ", 3))
		return 1;
	size_t flags = uleb(bc, len, &at);
	if (flags == (size_t)-1 || (flags & 2)) /* stripped: no name to replace */
		return 1;
	size_t head = at, nlen = uleb(bc, len, &at);
	if (nlen == (size_t)-1 || nlen > len - at)
		return 1;
	size_t rest = at + nlen, name_len = strlen(name);
	unsigned char *out = malloc(head + 10 + name_len + (len - rest));
	if (!out)
		return 1;
	memcpy(out, bc, head);
	size_t n = head + put_uleb(out + head, name_len);
	memcpy(out + n, name, name_len);
	n += name_len;
	memcpy(out + n, bc + rest, len - rest);
	n += len - rest;
	int rc = luaL_loadbuffer(L, (const char *)out, n, name);
	free(out);
	if (rc)
		lua_pop(L, 1);
	return rc;
}

/* The chunk of Lua file path pushed, from dir's bytecode of its text when
 * dir (may be NULL) holds one: 0; else its message pushed, nonzero. */
int laiotk_load_lua(lua_State *L, const char *path, const char *dir)
{
	lua_pushfstring(L, "@%s", path);
	const char *name = lua_tostring(L, -1);
	size_t len;
	char *src = slurp(path, &len);
	if (!src) {
		lua_pop(L, 1);
		lua_pushfstring(L, "cannot open %s: %s", path, strerror(errno));
		return 1;
	}
	int rc = 1;
	if (dir) {
		char key[17], bcpath[4096];
		size_t bclen;
		text_key(src, len, key);
		snprintf(bcpath, sizeof(bcpath), "%s/%s.ljbc", dir, key);
		char *bc = slurp(bcpath, &bclen);
		rc = bc ? load_bytecode(L, (unsigned char *)bc, bclen, name) : 1;
		free(bc);
	}
	if (rc) {
		/* a source starting with '#' (a script's #! line) is loaded as loadfile does */
		size_t skip = 0;
		if (len && src[0] == '#')
			while (skip < len && src[skip] != '\n')
				skip++;
		rc = luaL_loadbuffer(L, src + skip, len - skip, name);
	}
	free(src);
	lua_remove(L, -2); /* the name */
	return rc;
}

/* core.load_lua(path[, dir]): the chunk of Lua file path, from dir's
 * bytecode of its text when there is one; nil, message as loadfile. */
static int l_load_lua(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	if (!laiotk_load_lua(L, path, luaL_optstring(L, 2, NULL)))
		return 1;
	lua_pushnil(L);
	lua_insert(L, -2);
	return 2;
}

/* core.bytecode_key(text): the name of text's bytecode in a bytecode
 * directory (without .ljbc). */
static int l_bytecode_key(lua_State *L)
{
	size_t len;
	const char *s = luaL_checklstring(L, 1, &len);
	char key[17];
	text_key(s, len, key);
	lua_pushstring(L, key);
	return 1;
}

void laiotk_bytecode_register(lua_State *L)
{
	lua_pushcfunction(L, l_load_lua);
	lua_setfield(L, -2, "load_lua");
	lua_pushcfunction(L, l_bytecode_key);
	lua_setfield(L, -2, "bytecode_key");
}
