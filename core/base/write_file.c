/* A file written whole or not at all: a temporary beside it, written,
 * synced, renamed over it, its directory synced (the syncs left out with
 * AIOTK_WRITE_NOSYNC). Every file aiotk writes goes this way. */
#define _GNU_SOURCE
#include "aiotk.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* mkstemp makes 0600; images are as readable as any other file. */
static int fchmod_path(const char *path)
{
	mode_t um = umask(0);
	umask(um);
	return chmod(path, 0666 & ~um);
}

static int sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	close(fd);
	return rc;
}

int aiotk_write_atomic(const char *dst, const uint8_t *buf, size_t len,
		       aiotk_err *err)
{
	return aiotk_write_file(dst, buf, len, 0, err);
}

int aiotk_write_file(const char *dst, const uint8_t *buf, size_t len, int flags,
		     aiotk_err *err)
{
	return aiotk_write_file_via(NULL, dst, buf, len, flags, err);
}

int aiotk_spare_make(const char *dst, aiotk_spare *s, aiotk_err *err)
{
	snprintf(s->path, sizeof(s->path), "%s.XXXXXX", dst);
	s->fd = mkstemp(s->path);
	if (s->fd < 0)
		return aiotk_fail(err, AIOTK_ESYS, errno, "cannot create a file beside %s: %s", dst,
				  strerror(errno));
	return 0;
}

void aiotk_spare_drop(aiotk_spare *s)
{
	if (s->fd < 0)
		return;
	close(s->fd);
	unlink(s->path);
	s->fd = -1;
}

int aiotk_write_file_via(aiotk_spare *spare, const char *dst, const uint8_t *buf, size_t len,
			 int flags, aiotk_err *err)
{
	int sync = !(flags & AIOTK_WRITE_NOSYNC);
	char dir[PATH_MAX];
	aiotk_spare own;
	snprintf(dir, sizeof(dir), "%s", dst);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = 0;
	else
		snprintf(dir, sizeof(dir), ".");
	if (!spare || spare->fd < 0) {
		int rc = aiotk_spare_make(dst, &own, err);
		if (rc)
			return rc;
		spare = &own;
	}
	int ok = write_all(spare->fd, buf, len) == 0 && (!sync || fsync(spare->fd) == 0);
	int e = errno;
	ok = (close(spare->fd) == 0) && ok;
	spare->fd = -1;
	if (ok && fchmod_path(spare->path) == 0 && rename(spare->path, dst) == 0 &&
	    (!sync || sync_dir(dir) == 0))
		return 0;
	e = ok ? errno : e;
	unlink(spare->path);
	return aiotk_fail(err, AIOTK_ESYS, e, "cannot write %s: %s", dst,
			  strerror(e));
}
