/* formats: what the image codec's parts share (internal). */
#ifndef AIOTK_FORMATS_H
#define AIOTK_FORMATS_H

#include "aiotk.h"
#include "uring.pb-c.h"

/* An io_uring instance as its protobuf record, pointing into u (nothing
 * copied): valid while u is; uring_entry_free releases what it allocated. */
AiotkUringEntry *uring_entry_new(const aiotk_uring *u);
void uring_entry_free(AiotkUringEntry *e);
/* The instance a record holds, checked; on failure why says what is wrong
 * and u holds nothing. */
int uring_from_entry(const AiotkUringEntry *e, aiotk_uring *u, const char **why);

/* A growing output buffer (CRIU images rewritten): n bytes of cap at b. */
struct fmt_buf { uint8_t *b; size_t n, cap; };
/* p[0..n) appended; -1 when out of memory. */
int fmt_put(struct fmt_buf *o, const void *p, size_t n);

/* protobuf-c's unpack returns NULL alike for bad bytes and no memory:
 * unpacked through fmt_pb_init's allocator, failed says which. */
struct fmt_pb { ProtobufCAllocator a; int failed; };
void fmt_pb_init(struct fmt_pb *pb);

/* aiotk's image files (rings.img, a dump's aiotk-rings.img): at most. */
#define FMT_MAX_FILE (4ull << 30)

/* Little-endian u32 at p, as aiotk's image files store lengths. */
static inline uint32_t fmt_get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline void fmt_put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* The pages of [p, p + n), memory about to be written whole (a file's
 * bytes read into it, a decoded array), made now in one call
 * (MADV_POPULATE_WRITE) instead of faulted in one at a time as they are
 * written: 1.1 against 1.8 us a page here, 0.1 ms a megabyte. Worth it
 * from 64 KiB; a kernel without it only leaves the faults. */
#define FMT_POPULATE_MIN (64 * 1024)
void fmt_populate(void *p, size_t n);

/* The whole file at path read into *buf (malloc'd, one byte more than
 * *len): a regular file of at most max bytes, else AIOTK_EIMAGE, hint appended
 * to the message when it cannot be opened. */
int fmt_load(const char *path, const char *hint, uint64_t max, uint8_t **buf, size_t *len,
	     aiotk_err *err);

#endif
