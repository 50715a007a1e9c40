/* DIR/aiotk-rings.img: the images of a CRIU dump's tasks in one file, each
 * appended as CRIU's CHECKPOINT_DEVICES hook reaches its task. Inside
 * CRIU's freeze a file or directory created costs about 0.2 ms on ext4
 * here and a write to an open file 0.004 ms, so the file is created once
 * before the freeze and each task is one write:
 *   u32 magic | records of  u32 task | u32 length | rings.img's bytes
 * task: the process's number in its own PID namespace (how CRIU names it
 * in its images and at restore). A record is written whole or not at all
 * (a failed write is cut off again), and read back through
 * aiotk_image_decode, which checks every byte of it. */
#define _GNU_SOURCE
#include "aiotk.h"
#include "formats/formats.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PACK_MAGIC 0x504b544fu /* "OTKP" little-endian */

static int write_all(int fd, const uint8_t *b, size_t len, off_t at)
{
	while (len) {
		ssize_t w = pwrite(fd, b, len, at);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		b += w;
		len -= (size_t)w;
		at += w;
	}
	return 0;
}

int aiotk_pack_create(const char *path, aiotk_pack *p, aiotk_err *err)
{
	uint8_t magic[4];
	fmt_put_u32(magic, PACK_MAGIC);
	p->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	p->end = 0;
	p->count = 0;
	if (p->fd < 0 || write_all(p->fd, magic, 4, 0)) {
		int e = errno;
		if (p->fd >= 0)
			close(p->fd);
		p->fd = -1;
		return aiotk_fail(err, AIOTK_ESYS, e, "cannot create %s: %s", path, strerror(e));
	}
	p->end = 4;
	return 0;
}

int aiotk_pack_append(aiotk_pack *p, int32_t task, const aiotk_image *img, aiotk_err *err)
{
	uint8_t *buf;
	size_t len;
	if (p->fd < 0)
		return aiotk_fail(err, AIOTK_EINVAL, 0, "the image file is closed");
	int rc = aiotk_image_encode(img, &buf, &len, err);
	if (rc)
		return rc;
	if (len > UINT32_MAX) {
		free(buf);
		return aiotk_fail(err, AIOTK_EINVAL, 0, "task %d's image is %zu bytes, more than a record holds",
				  task, len);
	}
	uint8_t head[8];
	fmt_put_u32(head, (uint32_t)task);
	fmt_put_u32(head + 4, (uint32_t)len);
	if (write_all(p->fd, head, 8, p->end) ||
	    write_all(p->fd, buf, len, p->end + 8)) {
		int e = errno;
		free(buf);
		/* no half record for a reader to trip on */
		if (ftruncate(p->fd, p->end)) {}
		return aiotk_fail(err, AIOTK_ESYS, e, "cannot write task %d's image: %s", task, strerror(e));
	}
	free(buf);
	p->end += 8 + (int64_t)len;
	p->count++;
	return 0;
}

void aiotk_pack_close(aiotk_pack *p)
{
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
}

static int damaged(aiotk_err *err, const char *path, size_t off, const char *what)
{
	return aiotk_fail(err, AIOTK_EIMAGE, 0,
			  "%s at offset %zu: %s; the dump's aiotk images are damaged, dump again or use a good copy",
			  path, off, what);
}

/* The whole file, checked for its magic. */
static int slurp(const char *path, uint8_t **buf, size_t *len, aiotk_err *err)
{
	if (access(path, F_OK) && errno == ENOENT)
		return aiotk_fail(err, AIOTK_EEMPTY, ENOENT, "%s: no such file", path);
	int rc = fmt_load(path, "", FMT_MAX_FILE, buf, len, err);
	if (rc)
		return rc;
	if (*len < 4 || fmt_get_u32(*buf) != PACK_MAGIC) {
		free(*buf);
		return damaged(err, path, 0, "not an aiotk image file of a CRIU dump (bad magic)");
	}
	return 0;
}

void aiotk_pack_free(aiotk_pack_entry *e, size_t n)
{
	for (size_t i = 0; i < n; i++)
		aiotk_image_free(&e[i].img);
	free(e);
}

static int decode_all(const char *path, const uint8_t *buf, size_t len, aiotk_pack_entry **out,
		      size_t *n, aiotk_err *err)
{
	size_t off = 4;
	while (off < len) {
		if (len - off < 8)
			return damaged(err, path, off, "truncated record header");
		uint32_t size = fmt_get_u32(buf + off + 4);
		if (size > len - off - 8)
			return damaged(err, path, off, "record longer than the file");
		aiotk_pack_entry *e = realloc(*out, (*n + 1) * sizeof(**out));
		if (!e)
			return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory reading %s", path);
		*out = e;
		e[*n].task = (int32_t)fmt_get_u32(buf + off);
		if (aiotk_image_decode(buf + off + 8, size, path, &e[*n].img, err))
			return AIOTK_EIMAGE;
		(*n)++;
		off += 8 + size;
	}
	return 0;
}

int aiotk_pack_read(const char *path, aiotk_pack_entry **out, size_t *n, aiotk_err *err)
{
	uint8_t *buf;
	size_t len;
	*out = NULL;
	*n = 0;
	int rc = slurp(path, &buf, &len, err);
	if (rc)
		return rc;
	rc = decode_all(path, buf, len, out, n, err);
	free(buf);
	if (rc) {
		aiotk_pack_free(*out, *n);
		*out = NULL;
		*n = 0;
	}
	return rc;
}

