/* rings.img on disk: read whole, written atomically (base/write_file.c)
 * so an interrupted dump never leaves a half image. */
#define _GNU_SOURCE
#include "aiotk.h"
#include "base/base.h"
#include "formats/formats.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>


int aiotk_image_write(const char *dir, const aiotk_image *img, aiotk_err *err)
{
	return aiotk_image_write_flags(dir, img, 0, err);
}

int aiotk_image_write_flags(const char *dir, const aiotk_image *img, int flags,
			    aiotk_err *err)
{
	uint8_t *buf;
	size_t len;
	if (mkdir(dir, 0755) && errno != EEXIST)
		return aiotk_fail(err, AIOTK_ESYS, errno,
				  "cannot create image directory %s: %s", dir,
				  strerror(errno));
	int rc = aiotk_image_encode(img, &buf, &len, err);
	if (rc)
		return rc;
	char dst[PATH_MAX];
	snprintf(dst, sizeof(dst), "%s/%s", dir, AIOTK_IMAGE_FILE);
	rc = aiotk_write_file(dst, buf, len, flags, err);
	free(buf);
	return rc;
}

void fmt_populate(void *p, size_t n)
{
	uintptr_t from = (uintptr_t)p & ~(uintptr_t)(AIOTK_PAGE - 1);
	if (n >= FMT_POPULATE_MIN)
		madvise((void *)from, aiotk_page_round((uintptr_t)p + n - from), MADV_POPULATE_WRITE);
}

int fmt_load(const char *path, const char *hint, uint64_t max, uint8_t **buf, size_t *len, aiotk_err *err)
{
	struct stat st;
	/* O_NONBLOCK: a FIFO opens without waiting for a writer, and the
	 * fstat below refuses it. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return aiotk_fail(err, AIOTK_EIMAGE, errno, "cannot open %s: %s%s", path, strerror(errno), hint);
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > max) {
		close(fd);
		return aiotk_fail(err, AIOTK_EIMAGE, 0,
				  "%s is not a regular file of sane size", path);
	}
	*len = (size_t)st.st_size;
	*buf = malloc(*len + 1);
	if (*buf)
		fmt_populate(*buf, *len + 1);
	size_t got = 0;
	while (*buf && got < *len) {
		ssize_t r = read(fd, *buf + got, *len - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	if (!*buf || got != *len) {
		free(*buf);
		return aiotk_fail(err, AIOTK_EIMAGE, errno, "cannot read %s", path);
	}
	return 0;
}

int aiotk_image_read(const char *dir, aiotk_image *img, aiotk_err *err)
{
	char path[PATH_MAX];
	uint8_t *buf = NULL;
	size_t len = 0;
	snprintf(path, sizeof(path), "%s/%s", dir, AIOTK_IMAGE_FILE);
	memset(img, 0, sizeof(*img));
	int rc = fmt_load(path, " (is this an aiotk image directory?)", FMT_MAX_FILE, &buf, &len, err);
	if (rc)
		return rc;
	rc = aiotk_image_decode(buf, len, path, img, err);
	free(buf);
	return rc;
}

void aiotk_image_init_host(aiotk_image *img, const aiotk_host *h)
{
	struct timespec ts;
	memset(img, 0, sizeof(*img));
	img->format = AIOTK_IMAGE_FORMAT;
	img->cpus = h->geom.cpus;
	img->page_size = h->geom.page_size;
	img->formula = h->geom.formula;
	snprintf(img->release, sizeof(img->release), "%s", h->release);
	img->aio_max_nr = h->aio_max_nr;
	clock_gettime(CLOCK_REALTIME, &ts);
	img->time_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int aiotk_image_add_ring(aiotk_image *img, const aiotk_ring *r, aiotk_err *err)
{
	aiotk_ring *nr = realloc(img->rings, (img->nrings + 1) * sizeof(*nr));
	if (!nr)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory adding a ring");
	img->rings = nr;
	int rc = aiotk_ring_copy(&img->rings[img->nrings], r, err);
	if (!rc)
		img->nrings++;
	return rc;
}

int aiotk_image_add_uring(aiotk_image *img, const aiotk_uring *u, aiotk_err *err)
{
	aiotk_uring *nu = realloc(img->urings, (img->nurings + 1) * sizeof(*nu));
	if (!nu)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory adding an io_uring instance");
	img->urings = nu;
	int rc = aiotk_uring_copy(&img->urings[img->nurings], u, err);
	if (!rc)
		img->nurings++;
	return rc;
}

void aiotk_image_free(aiotk_image *img)
{
	for (size_t i = 0; i < img->nrings; i++)
		aiotk_ring_free(&img->rings[i]);
	for (size_t i = 0; i < img->nurings; i++)
		aiotk_uring_free(&img->urings[i]);
	free(img->rings);
	free(img->urings);
	img->rings = NULL;
	img->urings = NULL;
	img->nrings = img->nurings = 0;
}
