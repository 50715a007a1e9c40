/* fs.aio-max-nr raised for a while (a restore short of budget, the
 * bench's big rings): one machine-wide limit, so the guardian
 * (target/guardian.c) is told of the raise before it is made and puts
 * it back if aiotk dies before the raise ends. */
#include "aiotk.h"
#include "target/target.h"

/* The raise under way: process-wide, as the limit is (aiotk.h). */
static struct { int on; uint64_t was, to; } raised;

int aiotk_aio_max_nr_raise(uint64_t was, uint64_t to, aiotk_err *err)
{
	if (raised.on)
		return aiotk_fail(err, AIOTK_EINVAL, 0, "fs.aio-max-nr is raised already (from %llu to %llu); "
				  "one raise at a time", (unsigned long long)raised.was, (unsigned long long)raised.to);
	int rc = aiotk_guardian_start();
	if (!rc)
		rc = aiotk_guard_limit(was, to);
	if (rc)
		return aiotk_fail(err, AIOTK_ESYS, -rc, "cannot start the guardian that puts fs.aio-max-nr back "
				  "if aiotk is killed; the limit was not changed");
	rc = aiotk_set_aio_max_nr(to, err);
	if (rc) {
		aiotk_guard_limit(0, 0);
		return rc;
	}
	raised.on = 1, raised.was = was, raised.to = to;
	return 0;
}

int aiotk_aio_max_nr_end(int keep, aiotk_err *err)
{
	uint64_t now;
	int rc = 0;
	if (!raised.on)
		return 0;
	if (!keep && !aiotk_aio_nr(NULL, &now, NULL) && now == raised.to)
		rc = aiotk_set_aio_max_nr(raised.was, err);
	if (!rc) {
		aiotk_guard_limit(0, 0);
		raised.on = 0;
	}
	return rc;
}

int aiotk_aio_max_nr_raised(uint64_t *was, uint64_t *to)
{
	if (raised.on)
		*was = raised.was, *to = raised.to;
	return raised.on;
}
