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
	int sync = !(flags & AIOTK_WRITE_NOSYNC);
	char tmp[PATH_MAX], dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", dst);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = 0;
	else
		snprintf(dir, sizeof(dir), ".");
	snprintf(tmp, sizeof(tmp), "%s.XXXXXX", dst);
	int fd = mkstemp(tmp);
	if (fd < 0)
		return aiotk_fail(err, AIOTK_ESYS, errno,
				  "cannot create a file in %s: %s", dir,
				  strerror(errno));
	int ok = write_all(fd, buf, len) == 0 && (!sync || fsync(fd) == 0);
	int e = errno;
	ok = (close(fd) == 0) && ok;
	if (ok && fchmod_path(tmp) == 0 && rename(tmp, dst) == 0 && (!sync || sync_dir(dir) == 0))
		return 0;
	e = ok ? errno : e;
	unlink(tmp);
	return aiotk_fail(err, AIOTK_ESYS, e, "cannot write %s: %s", dst,
			  strerror(e));
}
