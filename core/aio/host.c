/* This host's facts: what the geometry model and the budget checks need. */
#include "aiotk.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#define AIO_NR "/proc/sys/fs/aio-nr"
#define AIO_MAX_NR "/proc/sys/fs/aio-max-nr"
#define POSSIBLE "/sys/devices/system/cpu/possible"

static int read_u64(const char *path, uint64_t *v, aiotk_err *err)
{
	FILE *f = fopen(path, "r");
	unsigned long long x;
	if (!f)
		return aiotk_fail(err, AIOTK_ESYS, errno, "cannot open %s: %s",
				  path, strerror(errno));
	int ok = fscanf(f, "%llu", &x) == 1;
	fclose(f);
	if (!ok)
		return aiotk_fail(err, AIOTK_ESYS, 0, "%s does not hold a number", path);
	*v = x;
	return 0;
}

/* "0-1,4,6-7": count the CPUs the kernel sized its per-CPU data for. */
static int possible_cpus(unsigned *cpus, aiotk_err *err)
{
	char buf[4096];
	FILE *f = fopen(POSSIBLE, "r");
	if (!f)
		return aiotk_fail(err, AIOTK_ESYS, errno, "cannot open %s: %s",
				  POSSIBLE, strerror(errno));
	char *line = fgets(buf, sizeof(buf), f);
	fclose(f);
	if (!line)
		return aiotk_fail(err, AIOTK_ESYS, 0, "%s is empty", POSSIBLE);
	unsigned total = 0;
	for (char *p = buf; *p && *p != '\n';) {
		unsigned a, b;
		int used;
		if (sscanf(p, "%u-%u%n", &a, &b, &used) == 2)
			total += b - a + 1;
		else if (sscanf(p, "%u%n", &a, &used) == 1)
			total += 1;
		else
			return aiotk_fail(err, AIOTK_ESYS, 0,
					  "cannot parse %s: \"%s\"", POSSIBLE, buf);
		p += used;
		if (*p == ',')
			p++;
	}
	*cpus = total;
	return 0;
}

int aiotk_aio_nr(uint64_t *aio_nr, uint64_t *aio_max_nr, aiotk_err *err)
{
	int rc = aio_nr ? read_u64(AIO_NR, aio_nr, err) : 0;
	if (!rc && aio_max_nr)
		rc = read_u64(AIO_MAX_NR, aio_max_nr, err);
	return rc;
}

void aiotk_budget_need(char *buf, size_t len, uint64_t needed, uint64_t aio_nr,
		       uint64_t aio_max_nr)
{
	snprintf(buf, len, "%llu of fs.aio-max-nr needed, %llu free", (unsigned long long)needed,
		 (unsigned long long)(aio_max_nr > aio_nr ? aio_max_nr - aio_nr : 0));
}

void aiotk_budget_short(char *buf, size_t len, const char *who, uint64_t needed,
			uint64_t aio_nr, uint64_t aio_max_nr)
{
	char need[96];
	uint64_t want = aio_nr + needed;
	aiotk_budget_need(need, sizeof(need), needed, aio_nr, aio_max_nr);
	snprintf(buf, len, "%s: %s (aio-nr is %llu of %llu), %llu short; raise it (sysctl fs.aio-max-nr=%llu)",
		 who, need, (unsigned long long)aio_nr, (unsigned long long)aio_max_nr,
		 (unsigned long long)(want > aio_max_nr ? want - aio_max_nr : 0), (unsigned long long)want);
}

int aiotk_set_aio_max_nr(uint64_t v, aiotk_err *err)
{
	FILE *f = fopen(AIO_MAX_NR, "w");
	if (!f)
		return aiotk_fail(err, AIOTK_ESYS, errno,
				  "cannot open %s for writing: %s (changing fs.aio-max-nr needs root)",
				  AIO_MAX_NR, strerror(errno));
	int ok = fprintf(f, "%llu\n", (unsigned long long)v) > 0;
	ok = (fclose(f) == 0) && ok;
	if (!ok)
		return aiotk_fail(err, AIOTK_ESYS, errno, "cannot write %s: %s",
				  AIO_MAX_NR, strerror(errno));
	return 0;
}

int aiotk_host_probe(aiotk_host *h, aiotk_err *err)
{
	struct utsname u;
	memset(h, 0, sizeof(*h));
	int rc = possible_cpus(&h->geom.cpus, err);
	if (rc)
		return rc;
	h->geom.page_size = (unsigned)sysconf(_SC_PAGESIZE);
	/* Every kernel that can mremap a ring (3.19+) has the doubling. */
	h->geom.formula = AIOTK_FORMULA_CURRENT;
	if (uname(&u) == 0)
		snprintf(h->release, sizeof(h->release), "%s", u.release);
	return aiotk_aio_nr(&h->aio_nr, &h->aio_max_nr, err);
}

/* Decimal digits of v into buf (at least 21 bytes); their count. */
static size_t digits(uint64_t v, char *buf)
{
	char rev[21];
	size_t n = 0, k = 0;
	do
		rev[n++] = (char)('0' + v % 10);
	while ((v /= 10));
	while (n)
		buf[k++] = rev[--n];
	return k;
}

void aiotk_aio_max_nr_put_back(uint64_t was, uint64_t set)
{
	char buf[32], want[21];
	int fd = open(AIO_MAX_NR, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	size_t w = digits(set, want);
	/* the limit is still aiotk's raise ("N\n"): put it back */
	if (n == (ssize_t)w + 1 && !memcmp(buf, want, w) && buf[w] == '\n') {
		w = digits(was, want);
		want[w++] = '\n';
		if (pwrite(fd, want, w, 0) < 0)
			w = 0;
	}
	close(fd);
}
