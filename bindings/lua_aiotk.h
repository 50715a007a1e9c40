/* Shared by the binding files: the Lua face of libaiotk.
 *
 * Error convention (documented in the README): a call that can fail at run
 * time returns nil, message, code, errno (code is aiotk_code_name: "budget",
 * "occupied", ...; errno that of the failing system call, 0 if none):
 * callers decide on code and errno, never on the message's text. Wrong
 * argument types raise a Lua error. */
#ifndef LUA_AIOTK_H
#define LUA_AIOTK_H

#include <lauxlib.h>
#include <lua.h>

#include "aiotk.h"

#define RING_MT "aiotk.ring"
#define IMAGE_MT "aiotk.image"

int laiotk_fail(lua_State *L, const aiotk_err *err);
void laiotk_push_u64hex(lua_State *L, uint64_t v);
/* The write flags of an options table at idx ({sync = false}:
 * AIOTK_WRITE_NOSYNC); none: 0. */
int laiotk_write_flags(lua_State *L, int idx);
uint64_t laiotk_check_u64(lua_State *L, int idx);
uint64_t laiotk_opt_field_u64(lua_State *L, int t, const char *k, uint64_t d);
void laiotk_set_num(lua_State *L, const char *k, double v);
/* Moves ({ {from=, len=, to=, nr=}, ... } at idx) into m, at most max
 * (and each nr into nr, when given); their count. */
size_t laiotk_check_moves(lua_State *L, int idx, aiotk_move *m, uint32_t *nr, size_t max);
void laiotk_push_event(lua_State *L, const aiotk_event *e);

/* Ring userdata owns its aiotk_ring. */
aiotk_ring *laiotk_ring_new(lua_State *L);
aiotk_ring *laiotk_ring_check(lua_State *L, int idx);
void laiotk_ring_register(lua_State *L);
int laiotk_ring_from_table(lua_State *L);

aiotk_image *laiotk_image_new(lua_State *L);
void laiotk_image_register(lua_State *L);
int laiotk_image_create(lua_State *L);
int laiotk_image_read(lua_State *L);
int laiotk_image_decode(lua_State *L);
/* core.image_pack and core.read_pack: a CRIU dump's images in one file. */
int laiotk_pack_create(lua_State *L);
int laiotk_pack_read(lua_State *L);

void laiotk_lab_register(lua_State *L);
void laiotk_criu_register(lua_State *L);
/* Adds the primitives to the module table on the stack: each as a function
 * acting on this process and as a method of target userdata. */
void laiotk_target_register(lua_State *L);
/* The target at idx, refused (a Lua error) once detached. */
aiotk_target *laiotk_target_live(lua_State *L, int idx);
aiotk_geom_host laiotk_check_model(lua_State *L, int idx);
void laiotk_bench_register(lua_State *L);
void laiotk_proc_register(lua_State *L);
void laiotk_kview_register(lua_State *L);
/* A metatable name whose methods are its __index, collected by gc. */
void laiotk_class(lua_State *L, const char *name, lua_CFunction gc, const luaL_Reg *methods);
/* New zeroed userdata of a class laiotk_class registered. */
void *laiotk_object(lua_State *L, size_t size, const char *name);
/* Processes attached through the Lua state and not yet detached. */
int laiotk_targets_held(void);
/* The viewer at idx, refused (a Lua error) once closed. */
aiotk_kviewer *laiotk_kviewer_check(lua_State *L, int idx);
/* io_uring instances (lua_uring.c): one instance as a table, and
 * viewer:uring(pid). */
void laiotk_push_uring(lua_State *L, const aiotk_uring *u);
int laiotk_kv_uring(lua_State *L);
/* viewer:uring_stopped(t), and the image's io_uring methods. */
int laiotk_kv_uring_stopped(lua_State *L);
int laiotk_image_add_urings(lua_State *L);
int laiotk_image_urings(lua_State *L);
int laiotk_image_uring_memory(lua_State *L);
void laiotk_uring_register(lua_State *L);
/* core.uring_rebuild and core.uring_unbuild (lua_uring_rebuild.c). */
void laiotk_uring_rebuild_register(lua_State *L);

int luaopen_aiotk_core(lua_State *L);
/* Where the scripts are for a binary at path self (NULL: unknown) that,
 * installed, finds them at rel from its own directory (scripts_dir.c). */
void laiotk_scripts_dir(const char *self, const char *rel, char *out, size_t len);
/* Where the build's bytecode of those scripts is (scripts_dir.c). */
void laiotk_bytecode_dir(const char *self, const char *scripts, char *out, size_t len);
/* core.load_lua and core.bytecode_key (lua_bytecode.c). */
void laiotk_bytecode_register(lua_State *L);
/* Lua file path's chunk pushed (from dir's bytecode of its text when it
 * holds one; dir may be NULL): 0; else its message pushed, nonzero. */
int laiotk_load_lua(lua_State *L, const char *path, const char *dir);
/* Where the REPL's line-editing module is (scripts_dir.c). */
void laiotk_readline_path(const char *self, const char *rel, char *out, size_t len);
/* The module's one export (repl.c, built as lua/aiotk/readline.so). */
int luaopen_aiotk_readline(lua_State *L);

#endif
