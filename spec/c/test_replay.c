/* Tail replay on the real kernel, every case, checked the way a libaio
 * client sees the ring afterwards. */
#define _GNU_SOURCE
#include "aiotk.h"
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

static aiotk_target self;
static int devnull;

static uint64_t cookie(uint32_t nr, uint32_t slot) { return 0xC0DE000000000000ull | (uint64_t)nr << 24 | slot; }

static int submit_one(io_context_t ctx, uint64_t data)
{
	struct iocb cb, *p = &cb;
	io_prep_poll(&cb, devnull, POLLOUT);
	cb.data = (void *)(uintptr_t)data;
	return io_submit(ctx, 1, &p);
}

/* Saved events of a ring state with recognisable cookies. */
static void fill_saved(aiotk_ring *r, uint64_t ctx, uint32_t nr, uint32_t h, uint32_t t)
{
	memset(r, 0, sizeof(*r));
	r->addr = ctx;
	r->nr = nr;
	r->head = h;
	r->tail = t;
	r->nevents = aiotk_ring_live(nr, h, t);
	r->events = calloc(r->nevents + 1, sizeof(aiotk_event));
	for (uint32_t i = 0; i < r->nevents; i++) {
		uint32_t slot = (h + i) % nr;
		r->events[i] = (aiotk_event){ cookie(nr, slot), slot, (int64_t)slot + 1, 0 };
	}
}

static void libaio_sees(io_context_t ctx, const aiotk_ring *saved, const char *what)
{
	struct io_event *ev = calloc(saved->nr, sizeof(*ev));
	struct timespec zero = { 0, 0 };
	int got = io_getevents(ctx, 0, saved->nr, ev, &zero);
	CHECK(got == (int)saved->nevents, "%s: io_getevents %d, saved %u", what, got, saved->nevents);
	int same = 1;
	for (int i = 0; i < got && i < (int)saved->nevents; i++)
		same &= (uint64_t)(uintptr_t)ev[i].data == saved->events[i].data &&
			(int64_t)ev[i].res == saved->events[i].res;
	CHECK(same, "%s: events differ from the saved ones", what);
	free(ev);
}

static void next_lands_at_tail(io_context_t ctx, const aiotk_ring *saved, const char *what)
{
	aiotk_ring now;
	aiotk_err err;
	int rc = submit_one(ctx, 0xfeedull);
	CHECK(rc == 1, "%s: next submit %d", what, rc);
	rc = aiotk_snapshot(&self, (uint64_t)(uintptr_t)ctx, AIOTK_SNAP_AREA, &now, &err);
	CHECK_OK(rc, err);
	if (rc)
		return;
	CHECK(now.tail == (saved->tail + 1) % saved->nr, "%s: tail %u", what, now.tail);
	CHECK(now.area[saved->tail].data == 0xfeedull, "%s: slot %u has 0x%llx", what,
	      saved->tail, (unsigned long long)now.area[saved->tail].data);
	aiotk_ring_free(&now);
}

static void one_case(uint32_t n, uint32_t h, uint32_t t, const aiotk_replay_opts *o)
{
	char what[96];
	uint64_t ctx;
	uint32_t nr, ht[2];
	aiotk_err err;
	aiotk_replay_stats st;
	aiotk_ring saved;
	if (aiotk_io_setup(&self, n, &ctx, &err)) {
		CHECK(0, "io_setup(%u): %s", n, err.msg);
		return;
	}
	aiotk_peek(&self, ctx + 4, &nr, 4, &err);
	h %= nr;
	t %= nr;
	snprintf(what, sizeof(what), "nr %u head %u tail %u kind %d batch %u", nr, h, t,
		 o ? o->kind : 0, o ? o->batch : 0);
	int rc = aiotk_replay(&self, ctx, nr, h, t, o, &st, &err);
	CHECK(rc == 0, "%s: %s", what, err.msg);
	aiotk_peek(&self, ctx + 8, ht, 8, &err);
	CHECK(ht[0] == h && ht[1] == t, "%s: ring says %u/%u", what, ht[0], ht[1]);
	uint64_t want = t >= h ? t : (uint64_t)nr + t;
	CHECK(rc || st.completions == want, "%s: %llu completions", what,
	      (unsigned long long)st.completions);
	fill_saved(&saved, ctx, nr, h, t);
	rc = aiotk_events_write(&self, ctx, &saved, &err);
	CHECK_OK(rc, err);
	io_context_t ioctx = (io_context_t)(uintptr_t)ctx;
	/* A ring holding nr-1 events is full: the kernel must refuse, not
	 * overwrite the oldest event. */
	if (saved.nevents == nr - 1)
		CHECK(submit_one(ioctx, 1) == -EAGAIN, "%s: full ring accepted a request", what);
	libaio_sees(ioctx, &saved, what);
	next_lands_at_tail(ioctx, &saved, what);
	aiotk_ring_free(&saved);
	aiotk_io_destroy(&self, ctx, &err);
}

/* With nudging off, a ring as full as this host makes still replays, and
 * one fuller than that is refused with ESTUCK, not nudged in. */
static void strict_refuses_nudge(void)
{
	aiotk_replay_opts strict = { .no_nudge = 1 };
	aiotk_replay_stats st;
	aiotk_err err;
	uint64_t ctx;
	CHECK(!aiotk_io_setup(&self, 1, &ctx, &err), "io_setup: %s", err.msg);
	uint32_t nr = ((aiotk_ring_header *)(uintptr_t)ctx)->nr;
	int rc = aiotk_replay(&self, ctx, nr, 0, nr - 1, &strict, &st, &err);
	CHECK(rc == AIOTK_ESTUCK, "strict near-full replay gave %d, not ESTUCK", rc);
	CHECK(strstr(err.msg, "nudging is off") != NULL, "message: %s", err.msg);
	CHECK(st.nudges == 0, "strict replay nudged %u times", st.nudges);
	aiotk_io_destroy(&self, ctx, &err);
	one_case(1, 0, nr - 7, &strict);
}

int main(void)
{
	static const uint32_t sizes[] = { 1, 64, 4096 };
	aiotk_target_self(&self);
	devnull = open("/dev/null", O_WRONLY);
	for (size_t i = 0; i < 3; i++) {
		uint32_t n = sizes[i], nr = 0;
		aiotk_geom_host h;
		aiotk_host host;
		aiotk_host_probe(&host, NULL);
		h = host.geom;
		aiotk_geom g;
		aiotk_geom_ring(&h, n, &g, NULL);
		nr = g.nr;
		one_case(n, 0, 0, NULL);               /* empty */
		one_case(n, 5, 5, NULL);               /* head == tail != 0 */
		one_case(n, 10, 15, NULL);             /* plain */
		one_case(n, nr - 20, 30, NULL);        /* wrapped */
		one_case(n, 0, nr - 7, NULL);          /* as full as this host makes */
		one_case(n, 0, nr - 1, NULL);          /* near-full: another host's */
		one_case(n, 1, 0, NULL);               /* full and wrapped */
		one_case(n, nr - 1, nr - 2, NULL);     /* full, head at the end */
		one_case(n, nr - 1, 0, NULL);          /* wrapped to slot 0 */
		one_case(n, 10, 5, NULL);              /* wrapped, nr - 5 events */
	}
	aiotk_replay_opts pw = { .kind = AIOTK_REQ_PWRITE };
	one_case(64, 200, 40, &pw);
	aiotk_replay_opts tiny = { .batch = 1, .kind = AIOTK_REQ_POLL };
	one_case(1, 100, 99, &tiny);
	aiotk_replay_opts odd = { .batch = 7 };
	one_case(64, 3, 2, &odd);
	strict_refuses_nudge();
	/* Out-of-range saved state is refused before anything is submitted. */
	aiotk_err err;
	uint64_t ctx;
	aiotk_io_setup(&self, 1, &ctx, &err);
	CHECK(aiotk_replay(&self, ctx, 127, 127, 0, NULL, NULL, &err) == AIOTK_EINVAL, "head = nr");
	CHECK(aiotk_replay(&self, ctx, 127, 0, 200, NULL, NULL, &err) == AIOTK_EINVAL, "tail > nr");
	aiotk_io_destroy(&self, ctx, &err);
	aiotk_target_free(&self); /* its workspace */
	return check_report();
}
