/* The stamp aiotk's CRIU plugin leaves in a dump it has fitted to the host
 * it was made on: what a restore on a host needs to know that the dump
 * wants nothing more there, without a Lua state. One line per field, in
 * this order; anything else is no stamp. */
#include "aiotk.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define STAMP_HEAD "aiotk-criu-stamp 1\n"
#define STAMP_FMT "cpus %u\npage_size %u\nformula %u\nneeds %llu\nrings %u\ncaptured %u\npolicy %255[^\n]\n"

static void stamp_path(const char *dir, char *path, size_t len)
{
	snprintf(path, len, "%s/%s", dir, AIOTK_CRIU_STAMP);
}

int aiotk_criu_stamp_write(const char *dir, const aiotk_criu_stamp *s, aiotk_spare *spare,
			   aiotk_err *err)
{
	char path[1024], buf[1024];
	stamp_path(dir, path, sizeof(path));
	int n = snprintf(buf, sizeof(buf), STAMP_HEAD "cpus %u\npage_size %u\nformula %u\nneeds %llu\n"
			 "rings %u\ncaptured %u\npolicy %s\n", s->cpus, s->page_size, (unsigned)s->formula,
			 (unsigned long long)s->needs, s->rings, s->captured, s->policy[0] ? s->policy : "-");
	if (n < 0 || (size_t)n >= sizeof(buf) || strchr(s->policy, '\n'))
		return aiotk_fail(err, AIOTK_EINVAL, 0, "%s: the stamp's policy name is too long or has a newline",
				  path);
	return aiotk_write_file_via(spare, path, (const uint8_t *)buf, (size_t)n, AIOTK_WRITE_NOSYNC, err);
}

int aiotk_criu_stamp_read(const char *dir, aiotk_criu_stamp *s, aiotk_err *err)
{
	char path[1024], head[32];
	unsigned formula;
	unsigned long long needs;
	stamp_path(dir, path, sizeof(path));
	memset(s, 0, sizeof(*s));
	FILE *f = fopen(path, "re");
	if (!f)
		return aiotk_fail(err, errno == ENOENT ? AIOTK_EEMPTY : AIOTK_ESYS, errno,
				  "cannot read %s: %s", path, strerror(errno));
	int ok = fgets(head, sizeof(head), f) && !strcmp(head, STAMP_HEAD) &&
		 fscanf(f, STAMP_FMT, &s->cpus, &s->page_size, &formula, &needs, &s->rings,
			&s->captured, s->policy) == 7;
	fclose(f);
	if (!ok)
		return aiotk_fail(err, AIOTK_EIMAGE, 0, "%s is not a stamp aiotk wrote; remove it", path);
	s->formula = (enum aiotk_formula)formula;
	s->needs = needs;
	if (!strcmp(s->policy, "-"))
		s->policy[0] = 0;
	return 0;
}

int aiotk_criu_stamp_fits(const aiotk_criu_stamp *s, const aiotk_host *h)
{
	return s->cpus == h->geom.cpus && s->page_size == h->geom.page_size &&
	       s->formula == h->geom.formula && h->aio_nr + s->needs <= h->aio_max_nr;
}
