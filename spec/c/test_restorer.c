/* The restorer (core/aio/rebuild/restorer.c) in this process against the real kernel:
 * rings of every shape rebuilt exactly by aiotk_restore_rings; its code,
 * copied to another address and run from there in a child, still rebuilds
 * a ring (so it refers to nothing outside itself, as running it inside
 * another process needs); and the maps read through PROCMAP_QUERY are the
 * maps' text, mapping for mapping, also when asked for only some. */
#define _GNU_SOURCE
#include "aiotk.h"
#include "check.h"
#include "aio/rebuild/rebuild.h"
#include "aio/rebuild/restorer.h"
#include "aio/rebuild/destroyer.h"
#include "target/target.h"

#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static aiotk_target self;
static int devnull;

/* io_setup(n), `complete` POLLs completed, `reap` of them reaped. */
static uint64_t make_ring(unsigned n, unsigned complete, unsigned reap)
{
	io_context_t ctx = 0;
	struct iocb cb, *p = &cb;
	struct io_event ev;
	unsigned submitted = 0, reaped = 0;
	CHECK(io_setup((int)n, &ctx) == 0, "io_setup(%u)", n);
	for (unsigned i = 0; i < complete; i++) {
		io_prep_poll(&cb, devnull, POLLOUT);
		cb.data = (void *)(uintptr_t)(0x1000 + i);
		submitted += io_submit(ctx, 1, &p) == 1;
		if (i < reap)
			reaped += io_getevents(ctx, 1, 1, &ev, NULL) == 1;
	}
	CHECK(submitted == complete && reaped == reap, "ring %u: %u of %u completed, %u of %u reaped",
	      n, submitted, complete, reaped, reap);
	return (uint64_t)(uintptr_t)ctx;
}

static void same_ring(const aiotk_ring *want, const char *what)
{
	aiotk_ring got;
	aiotk_err err;
	int rc = aiotk_snapshot(&self, want->addr, 0, &got, &err);
	CHECK_OK(rc, err);
	if (rc)
		return;
	CHECK(got.nr == want->nr && got.head == want->head && got.tail == want->tail &&
	      got.compat_features == want->compat_features, "%s: header %u/%u/%u", what,
	      got.nr, got.head, got.tail);
	CHECK(got.nevents == want->nevents &&
	      !memcmp(got.events, want->events, want->nevents * sizeof(aiotk_event)),
	      "%s: events", what);
	aiotk_ring_free(&got);
}

/* Saved rings of several shapes (empty, plain, head == tail, wrapped),
 * destroyed, then rebuilt onto placeholders in one call. */
static void rebuild_shapes(void)
{
	const unsigned spec[][3] = { { 1, 0, 0 }, { 1, 15, 10 }, { 256, 300, 300 }, { 64, 200, 100 },
				     { 1, 200, 190 }, { 4096, 6000, 5000 } };
	enum { N = sizeof(spec) / sizeof(spec[0]) };
	aiotk_ring saved[N], *list[N];
	aiotk_restore_opts o[N];
	aiotk_restore_result res[N];
	aiotk_host host;
	aiotk_err err;
	uint64_t ctx[N];
	CHECK_OK(aiotk_host_probe(&host, &err), err);
	for (int i = 0; i < N; i++) {
		ctx[i] = make_ring(spec[i][0], spec[i][1], spec[i][2]);
		CHECK_OK(aiotk_snapshot(&self, ctx[i], 0, &saved[i], &err), err);
		saved[i].n = spec[i][0];
		list[i] = &saved[i];
		memset(&o[i], 0, sizeof(o[i]));
		o[i].model = host.geom;
		o[i].remap_flags = AIOTK_REMAP_PLACEHOLDER;
	}
	for (int i = 0; i < N; i++)
		io_destroy((io_context_t)(uintptr_t)ctx[i]);
	/* the placeholders passed as claims, as a live restore passes them */
	aiotk_range claim[N];
	for (int i = 0; i < N; i++)
		claim[i] = (aiotk_range){ saved[i].addr, saved[i].ring_len };
	aiotk_rebuild b = { .saved = list, .o = o, .n = N, .claim = claim, .nclaims = N, .res = res };
	int rc = aiotk_restore_rings(&self, &b, &err);
	CHECK_OK(rc, err);
	CHECK(b.done == N && b.claimed == N, "%zu of %d rings rebuilt, %zu claimed", b.done, N, b.claimed);
	for (int i = 0; i < N; i++) {
		CHECK(res[i].ctx == saved[i].addr, "ring %d at its address", i);
		/* the restorer answered for it (one io_setup of the saved n) */
		CHECK(res[i].conv.calls == 1 && res[i].conv.n == spec[i][0], "ring %d: n %u", i, res[i].conv.n);
		same_ring(&saved[i], "rebuilt");
		io_destroy((io_context_t)(uintptr_t)saved[i].addr);
		aiotk_ring_free(&saved[i]);
	}
}

/* A saved ring of io_setup(64), `complete` completed and `reap` reaped,
 * then destroyed; o: what the restorer takes alone on this host. */
static void saved_ring(unsigned complete, unsigned reap, aiotk_ring *saved,
		       aiotk_restore_opts *o)
{
	aiotk_host host;
	aiotk_err err;
	CHECK_OK(aiotk_host_probe(&host, &err), err);
	uint64_t ctx = make_ring(64, complete, reap);
	CHECK_OK(aiotk_snapshot(&self, ctx, 0, saved, &err), err);
	saved->n = 64;
	io_destroy((io_context_t)(uintptr_t)ctx);
	memset(o, 0, sizeof(*o));
	o->model = host.geom;
	o->remap_flags = AIOTK_REMAP_PLACEHOLDER;
}

/* A claim on an occupied range fails the call before any ring is made,
 * naming the occupant; the claims before it are held (and said to be),
 * those after it never taken. */
static void claim_refused(void)
{
	aiotk_ring saved, *list[1] = { &saved };
	aiotk_restore_opts o;
	aiotk_restore_result res;
	aiotk_err err;
	saved_ring(30, 10, &saved, &o);
	uint8_t *area = mmap(NULL, 3 * 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t a = (uint64_t)(uintptr_t)area;
	munmap(area, 4096); /* free, then the occupied page, then free */
	munmap(area + 2 * 4096, 4096);
	aiotk_range claim[3] = { { a, 4096 }, { a + 4096, 4096 }, { a + 2 * 4096, 4096 } };
	aiotk_rebuild b = { .saved = list, .o = &o, .n = 1, .claim = claim, .nclaims = 3, .res = &res };
	int rc = aiotk_restore_rings(&self, &b, &err);
	CHECK(rc == AIOTK_EOCCUPIED && b.claimed == 1 && b.done == 0, "rc %d, %zu claimed, %zu done", rc,
	      b.claimed, b.done);
	CHECK(rc && strstr(err.msg, "cannot claim") && strstr(err.msg, "r--p"), "message: %s", err.msg);
	aiotk_vma v;
	CHECK(aiotk_maps_overlap(0, a, 4096, 0, &v, NULL) == 1 && aiotk_vma_is_placeholder(&v),
	      "the first claim is held");
	CHECK(aiotk_maps_overlap(0, a + 2 * 4096, 4096, 0, &v, NULL) == 0, "the third was never taken");
	CHECK(aiotk_maps_overlap(0, saved.addr, saved.ring_len, 0, &v, NULL) != 1 || !aiotk_vma_is_ring(&v),
	      "no ring made");
	aiotk_unmap(&self, a, 2 * 4096, &err);
	aiotk_ring_free(&saved);
}

/* The routine's own claims (a live target's restorer takes them in its
 * run): the free one held as a placeholder, the occupied one refused with
 * EEXIST, and nothing after it done, no ring made. */
static void routine_claims(void)
{
	uint8_t *area = mmap(NULL, 2 * 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t a = (uint64_t)(uintptr_t)area;
	munmap(area, 4096);
	size_t jl = sizeof(struct aiotk_rjob) + sizeof(struct aiotk_rjob_ring) + 4 * sizeof(uint64_t);
	struct aiotk_rjob *job = calloc(1, jl + 16 * AIOTK_REQ_ROOM);
	uint64_t *c = (uint64_t *)(job->ring + 1);
	c[0] = a, c[1] = 4096, c[2] = a + 4096, c[3] = 4096;
	job->claims = (uint64_t)(uintptr_t)c, job->nclaims = 2;
	job->cbs = (uint64_t)(uintptr_t)job + jl, job->batch = 16, job->nrings = 1;
	job->journal_magic = AIOTK_JOURNAL_MAGIC;
	strcpy(job->path, "/dev/null");
	job->ring[0].n = 1, job->ring[0].nr = 127, job->ring[0].len = 8192, job->ring[0].dest = a;
	aiotk_restorer_main(job);
	CHECK(job->claimed == 1 && job->claim_status == -EEXIST && job->done == 0 && !job->ring[0].ctx &&
	      job->finished, "claimed %u status %lld done %u", job->claimed, (long long)job->claim_status,
	      job->done);
	aiotk_vma v;
	CHECK(aiotk_maps_overlap(0, a, 4096, 0, &v, NULL) == 1 && aiotk_vma_is_placeholder(&v),
	      "the free range is held by a placeholder");
	CHECK(aiotk_maps_overlap(0, a + 4096, 4096, 0, &v, NULL) == 1 && !strcmp(v.perms, "r--p"),
	      "the occupant is untouched");
	munmap(area, 2 * 4096);
	free(job);
}

/* The restorer's code copied elsewhere and run from there, in a child. */
static void runs_anywhere(void)
{
	const uint8_t *code;
	size_t len, entry;
	aiotk_ring saved;
	aiotk_err err;
	CHECK(aiotk_restorer_code(&code, &len, &entry) == 0 && len > 0, "restorer code");
	uint64_t ctx = make_ring(64, 200, 100);
	CHECK_OK(aiotk_snapshot(&self, ctx, 0, &saved, &err), err);
	io_destroy((io_context_t)(uintptr_t)ctx);
	/* As aiotk_restore_rings's callers do: the destination held, so that
	 * nothing else (here the copy) lands where the ring goes. */
	CHECK_OK(aiotk_reserve(&self, saved.addr, saved.ring_len, &err), err);
	pid_t child = fork();
	if (child == 0) {
		uint8_t *copy = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		memcpy(copy, code, len);
		mprotect(copy, len, PROT_READ | PROT_EXEC);
		size_t jl = sizeof(struct aiotk_rjob) + sizeof(struct aiotk_rjob_ring) +
			    saved.nevents * sizeof(aiotk_event);
		struct aiotk_rjob *job = calloc(1, jl + 1024 * AIOTK_REQ_ROOM);
		struct aiotk_rjob_ring *r = &job->ring[0];
		job->cbs = (uint64_t)(uintptr_t)job + jl;
		job->journal_magic = AIOTK_JOURNAL_MAGIC;
		strcpy(job->path, "/dev/null");
		job->batch = 1024, job->nrings = 1;
		r->dest = saved.addr, r->len = saved.ring_len, r->n = 64, r->nr = saved.nr;
		r->head = saved.head, r->tail = saved.tail, r->compat = saved.compat_features;
		r->first = saved.head, r->count = saved.nevents;
		r->events = (uint64_t)(uintptr_t)(job->ring + 1);
		memcpy(job->ring + 1, saved.events, saved.nevents * sizeof(aiotk_event));
		((void (*)(struct aiotk_rjob *))(copy + entry))(job);
		const aiotk_ring_header *h = (const void *)(uintptr_t)saved.addr;
		if (job->done != 1)
			fprintf(stderr, "relocated: step %u status %lld setup %lld\n", r->step,
				(long long)r->status, (long long)job->setup_status);
		_exit(job->done == 1 && h->head == saved.head && h->tail == saved.tail &&
		      !memcmp((const uint8_t *)h + AIOTK_HEADER_LEN + saved.head * AIOTK_EVENT_LEN,
			      saved.events, sizeof(aiotk_event)) ? 0 : 1);
	}
	int st = 0;
	waitpid(child, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "relocated restorer: status 0x%x", st);
	aiotk_unmap(&self, saved.addr, saved.ring_len, &err);
	aiotk_ring_free(&saved);
}

/* clone entered at the process's `syscall; ret` (gadget), as an injected
 * one is: the new thread's first act is that `ret`. arg in r9. */
static long clone_through(uint64_t gadget, long flags, uint64_t sp, int32_t *tid_at, uint64_t arg)
{
	register long r10 __asm__("r10") = 0;
	register long r8 __asm__("r8") = 0;
	register long r9 __asm__("r9") = (long)arg;
	long ret;
	__asm__ volatile("sub $128, %%rsp\n\tcall *%[g]\n\tadd $128, %%rsp"
			 : "=a"(ret)
			 : "a"((long)SYS_clone), "D"(flags), "S"(sp), "d"(tid_at), "r"(r10), "r"(r8),
			   "r"(r9), [g] "r"(gadget)
			 : "rcx", "r11", "memory");
	return ret;
}

static int thread_alive(long tid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%ld", tid);
	return access(path, F_OK) == 0;
}

/* In a child: three contexts, the first and last marked, handed to a
 * copy of the destroyer started as a thread. Exit status: 0 when the
 * marked ones are gone, the other lives, and the thread and its mapping
 * are gone; otherwise which check failed. */
static int destroyer_child(void)
{
	const uint8_t *code;
	size_t code_len, entry;
	uint64_t gadget, exit_code;
	if (aiotk_destroyer_code(&code, &code_len, &entry) ||
	    aiotk_find_gadget(getpid(), aiotk_arch_gadget_syscall, &gadget, NULL) ||
	    aiotk_find_gadget(getpid(), aiotk_arch_gadget_unmap_exit, &exit_code, NULL))
		return 10;
	uint64_t ctx[3] = { make_ring(1, 0, 0), make_ring(64, 0, 0), make_ring(256, 0, 0) };
	aiotk_header_mark((volatile aiotk_ring_header *)(uintptr_t)ctx[0]);
	aiotk_header_mark((volatile aiotk_ring_header *)(uintptr_t)ctx[2]);
	size_t job_len = sizeof(struct aiotk_djob) + sizeof(ctx);
	size_t code_at = aiotk_page_round(job_len);
	size_t total = code_at + aiotk_page_round(code_len) + 8192;
	uint8_t *m = mmap(NULL, total, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return 11;
	struct aiotk_djob *job = (struct aiotk_djob *)m;
	job->magic = AIOTK_DESTROYER_MAGIC;
	job->self_base = (uint64_t)(uintptr_t)m, job->self_len = total, job->exit_code = exit_code;
	job->pid = getpid(), job->n = 3;
	strcpy(job->name, AIOTK_DESTROYER_NAME);
	memcpy(job->ctx, ctx, sizeof(ctx));
	memcpy(m + code_at, code, code_len);
	uint64_t *sp = (uint64_t *)(((uintptr_t)(m + total) - 16) & ~(uintptr_t)15);
	*sp = (uint64_t)(uintptr_t)(m + code_at + entry);
	int32_t settid = 0;
	sigset_t all, old; /* as injection leaves the main thread: all blocked */
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	long tid = clone_through(gadget, CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND |
				 CLONE_THREAD | CLONE_SYSVSEM | CLONE_UNTRACED | CLONE_PARENT_SETTID,
				 (uint64_t)(uintptr_t)sp, &settid, (uint64_t)(uintptr_t)m);
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (tid <= 0 || settid != tid)
		return 12;
	for (int ms = 0; thread_alive(tid) && ms < 5000; ms++)
		usleep(1000);
	aiotk_vma v;
	struct io_event ev;
	if (thread_alive(tid))
		return 13;
	if (io_destroy((io_context_t)(uintptr_t)ctx[0]) != -EINVAL ||
	    io_destroy((io_context_t)(uintptr_t)ctx[2]) != -EINVAL)
		return 14; /* a marked context left */
	if (io_getevents((io_context_t)(uintptr_t)ctx[1], 0, 0, &ev, NULL) != 0)
		return 15; /* the unmarked one destroyed */
	if (aiotk_maps_overlap(0, (uint64_t)(uintptr_t)m, total, 0, &v, NULL) != 0)
		return 16; /* its mapping left */
	return 0;
}

static void destroyer_as_thread(void)
{
	int st = 0;
	pid_t child = fork();
	if (child == 0)
		_exit(destroyer_child());
	waitpid(child, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "destroyer as a thread: status 0x%x", st);
}

/* sched_getaffinity answers EINVAL from now on, as it does on a host
 * whose CPU masks are wider than the buffer given (more CPUs than
 * AIOTK_WS_MASK_BYTES holds). */
static int deny_getaffinity(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_sched_getaffinity, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EINVAL),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { sizeof(f) / sizeof(f[0]), f };
	return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
	       syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

/* A host beyond the pin mask: the restorer does not rebuild unpinned (it
 * did, silently, past 1024 CPUs) but stops at its set-up, and the ring by
 * ring path it leaves the ring to fails saying why. In a child, which
 * keeps the filter. */
static void mask_too_wide(void)
{
	aiotk_ring saved, *list[1] = { &saved };
	aiotk_restore_opts o;
	aiotk_restore_result res;
	aiotk_err err;
	saved_ring(200, 100, &saved, &o);
	aiotk_range claim = { saved.addr, saved.ring_len };
	pid_t child = fork();
	if (child == 0) {
		aiotk_rebuild b = { .saved = list, .o = &o, .n = 1, .claim = &claim, .nclaims = 1,
				    .res = &res };
		if (deny_getaffinity())
			_exit(2);
		int rc = aiotk_restore_rings(&self, &b, &err);
		if (rc != AIOTK_EUNSUPPORTED || b.done || !strstr(err.msg, "more CPUs than"))
			fprintf(stderr, "mask too wide: rc %d, %zu done: %s\n", rc, b.done,
				rc ? err.msg : "rebuilt unpinned");
		_exit(rc == AIOTK_EUNSUPPORTED && !b.done && strstr(err.msg, "more CPUs than") ? 0 : 1);
	}
	int st = 0;
	waitpid(child, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "mask too wide: status 0x%x", st);
	aiotk_ring_free(&saved);
}

struct list { aiotk_vma v[512]; int n; };

/* The gate page ([vsyscall]) is in the text only: not a mapping of the
 * process's own, and nothing aiotk looks at. */
static int add(const aiotk_vma *v, void *ctx)
{
	struct list *l = ctx;
	if (l->n < 512 && strcmp(v->path, "[vsyscall]"))
		l->v[l->n++] = *v;
	return 0;
}

/* Rings, a placeholder, a journal-shaped page and files: both readers
 * agree on every mapping. */
static void maps_by_query(void)
{
	static struct list a, b;
	aiotk_err err;
	uint64_t ctx = make_ring(1, 0, 0);
	void *hole = mmap(NULL, 8192, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t spot = (uint64_t)(uintptr_t)hole;
	munmap(hole, 8192);
	CHECK_OK(aiotk_reserve(&self, spot, 8192, &err), err);
	void *j = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK_OK(aiotk_maps_each(0, add, &a, &err), err);
	CHECK_OK(aiotk_maps_each_text(0, add, &b, &err), err);
	CHECK(a.n == b.n && a.n > 5, "%d and %d mappings", a.n, b.n);
	int ring = 0, placeholder = 0, journal = 0;
	for (int i = 0; i < a.n && i < b.n; i++) {
		CHECK(a.v[i].start == b.v[i].start && a.v[i].end == b.v[i].end &&
		      !strcmp(a.v[i].perms, b.v[i].perms) && !strcmp(a.v[i].path, b.v[i].path),
		      "mapping %d: %llx %s '%s' against %llx %s '%s'", i,
		      (unsigned long long)a.v[i].start, a.v[i].perms, a.v[i].path,
		      (unsigned long long)b.v[i].start, b.v[i].perms, b.v[i].path);
		ring += aiotk_vma_is_ring(&a.v[i]);
		placeholder += aiotk_vma_is_placeholder(&a.v[i]);
		journal += aiotk_vma_is_journal(&a.v[i]);
	}
	CHECK(ring >= 1 && placeholder == 1 && journal >= 1, "ring %d placeholder %d journal %d",
	      ring, placeholder, journal);
	/* Asked for two touching ranges under one private mapping: the
	 * shared mappings and that one, once. */
	void *two = mmap(NULL, 8192, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t t2 = (uint64_t)(uintptr_t)two;
	const uint64_t range[4] = { t2, 4096, t2 + 4096, 4096 };
	aiotk_vma *l;
	size_t nl, covering = 0, shared = 0, want_shared = 0;
	CHECK_OK(aiotk_maps_list_for(0, range, 2, &l, &nl, &err), err);
	for (size_t i = 0; i < nl; i++) {
		covering += l[i].start <= t2 && l[i].end >= t2 + 8192;
		shared += l[i].perms[3] == 's';
		CHECK(l[i].perms[3] == 's' || aiotk_vma_in_ranges(&l[i], range, 2), "mapping %zu wanted", i);
		CHECK(!i || l[i].start > l[i - 1].start, "mapping %zu in order, once", i);
	}
	for (int i = 0; i < b.n; i++)
		want_shared += b.v[i].perms[3] == 's';
	CHECK(covering == 1 && shared == want_shared, "%zu covering, %zu of %zu shared", covering, shared,
	      want_shared);
	free(l);
	munmap(two, 8192);
	munmap(j, 4096);
	aiotk_unmap(&self, spot, 8192, &err);
	io_destroy((io_context_t)(uintptr_t)ctx);
}

int main(void)
{
	aiotk_target_self(&self);
	devnull = open("/dev/null", O_WRONLY);
	rebuild_shapes();
	claim_refused();
	routine_claims();
	runs_anywhere();
	destroyer_as_thread();
	mask_too_wide();
	maps_by_query();
	aiotk_target_free(&self);
	return check_report();
}
