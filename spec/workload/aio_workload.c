/* A libaio workload for the live-process specs and the demo. It puts rings
 * into known states, remembers them, then waits for signals:
 *   SIGUSR1  destroy its contexts (as if restored by a checkpoint tool
 *            that could not rebuild AIO state), print DESTROYED
 *   SIGUSR2  verify from the inside and exit 0 (VERIFY OK) or 1
 * Options:
 *   --ring N:COMPLETE:REAP:COMPLETE2   io_setup(N), complete, reap, complete
 *   --threads       threads blocked in nanosleep, read, epoll_wait, futex
 *                   and pause; verify checks they run on and saw no EINTR
 *   --spawner       a thread that makes a short-lived thread every 100 us
 *   --seccomp       install a filter that refuses io_setup with EPERM
 *   --seccomp-clone install a filter that refuses clone and clone3 with
 *                   EPERM (once its threads are made): no thread can be
 *                   made in it, by itself or by aiotk
 *   --tolerate-stop-eintr  accept EINTR from epoll_wait and sigtimedwait,
 *                   which signal(7) lists as failing after any stop and
 *                   resume: what a tracer killed between stopping a thread
 *                   and making its call restartable leaves
 *   --gap           keep the page after each ring free (rings made after
 *                   this option), so a ring can grow in place
 *   --allow-grow    verify accepts rings grown in place (nr larger than
 *                   remembered; head, tail and events the same)
 *   --expect FILE   write the remembered ring states to FILE
 *   --verify-from FILE  verify rings remembered by another process
 *   --pending       leave one POLL on an empty pipe in flight in ring 0;
 *                   verify then writes the pipe and expects its completion
 *   --occupy-from FILE  map a page holding a marker at each remembered
 *                   ring address; verify checks the markers are intact
 *   --join FILE     write its pid to FILE first (a cgroup's cgroup.procs)
 *   --disk PATH:K   one more ring, io_setup(K), with K O_DIRECT 4096-byte
 *                   reads of PATH in flight (block i filled with byte i+1);
 *                   remembered when told to destroy, so completions that
 *                   land after start count; verify checks every read
 *                   completed with its iocb, data and the bytes of its block
 *   --keep WHERE,...  a copy of every ring's id kept in each of: heap (a
 *                   malloc'd struct), stack (main's frame), static (a
 *                   struct in static data), tls (the main thread's TLS);
 *                   verify checks every copy names the ring verified (a
 *                   ring relocated by a restore has a new id)
 *   --dense         refuse to start unless the rings lie side by side,
 *                   each right under the one made before it
 *   --blocked K     a thread blocked in io_getevents on ring K (made
 *                   empty: COMPLETE = REAP; READY once /proc shows it in
 *                   that system call); verify submits one request
 *                   there first and expects that thread to get it, at the
 *                   saved tail, with no error on the way
 *   --decoy         one more copy of each id, in a word the program never
 *                   uses as one; verify says whether it still holds the
 *                   original id (a relocation cannot tell it from a real
 *                   reference)
 *   --occupy-after-destroy  once SIGUSR1 destroyed the rings, a page
 *                   holding a marker at each ring's address (its saved
 *                   range taken by something else); verify checks them
 *   Verify's OK line ends "(N relocated)" when a ring's id changed.
 *   --freeze-probe FILE  a thread that wakes every 20 us and appends to FILE
 *                   "FROM TO" (CLOCK_MONOTONIC ns) for every wait of over
 *                   100 us between two wakeups: how long it was frozen, as
 *                   the process itself saw it (aiotk bench) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libaio.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <linux/filter.h>
#include <linux/futex.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_RINGS 16
#define MAGIC 0xa10a10a1u

struct ring_hdr { uint32_t id, nr, head, tail, magic, compat, incompat, hlen; };

struct expect {
	uint64_t addr;
	uint32_t nr, head, tail, nevents;
	struct io_event *events;
};

static struct expect rings[MAX_RINGS];
static int nrings;
static io_context_t ctxs[MAX_RINGS];
static int devnull;
static volatile int eintr_seen, stop_eintr, tolerate_stop_eintr, sleeper_ticks, reader_done, epoller_done, futex_done;
static int futex_word, allow_grow, gap, regs_changed;
static int read_pipe[2], epoll_pipe[2], pend_pipe[2];

/* --keep, --blocked, --decoy: copies of each ring's id, and the original
 * id kept in a form that is no id (rewritten by nobody). */
#define ID_MASK 0x5a5a5a5a5a5a5a5aull
enum { KEEP_HEAP = 1, KEEP_STACK = 2, KEEP_STATIC = 4, KEEP_TLS = 8 };
struct holder { uint32_t tag; io_context_t ctx; };
static int keep, blocked = -1, decoy, occupy_after;
static struct holder *kept_heap, kept_static[MAX_RINGS];
static io_context_t *kept_stack;
static __thread io_context_t kept_tls[MAX_RINGS];
static uint64_t orig_x[MAX_RINGS];
static volatile uint64_t decoys[MAX_RINGS];
static volatile int blocked_done, blocked_tid;
static long blocked_rc;
static struct io_event blocked_ev;

static uint64_t cookie(int ring, int phase, int seq)
{
	return (uint64_t)(0xA0 + ring) << 56 | (uint64_t)phase << 48 | (uint64_t)seq;
}

static int complete(io_context_t ctx, int ring, int phase, int count)
{
	struct iocb *cbs = calloc(count + 1, sizeof(*cbs));
	struct iocb **ptrs = calloc(count + 1, sizeof(*ptrs));
	int done = 0;
	for (int i = 0; i < count; i++) {
		io_prep_poll(&cbs[i], devnull, POLLOUT);
		cbs[i].data = (void *)(uintptr_t)cookie(ring, phase, i);
		ptrs[i] = &cbs[i];
	}
	while (done < count) {
		int r = io_submit(ctx, count - done, ptrs + done);
		if (r <= 0)
			break;
		done += r;
	}
	free(cbs);
	free(ptrs);
	return done;
}

static void remember(int i)
{
	struct ring_hdr *h = (void *)ctxs[i];
	struct io_event *ev = (void *)((char *)h + 32);
	struct expect *e = &rings[i];
	free(e->events);
	e->addr = (uint64_t)(uintptr_t)ctxs[i];
	e->nr = h->nr;
	e->head = h->head;
	e->tail = h->tail;
	e->nevents = (h->tail + h->nr - h->head) % h->nr;
	e->events = calloc(e->nevents + 1, sizeof(*ev));
	for (uint32_t k = 0; k < e->nevents; k++)
		e->events[k] = ev[(h->head + k) % h->nr];
}

#define FAIL(...) do { printf("VERIFY FAIL: " __VA_ARGS__); printf("\n"); return 1; } while (0)

static int parse_keep(const char *list)
{
	char buf[64];
	snprintf(buf, sizeof(buf), "%s", list);
	for (char *w = strtok(buf, ","); w; w = strtok(NULL, ",")) {
		if (!strcmp(w, "heap")) keep |= KEEP_HEAP;
		else if (!strcmp(w, "stack")) keep |= KEEP_STACK;
		else if (!strcmp(w, "static")) keep |= KEEP_STATIC;
		else if (!strcmp(w, "tls")) keep |= KEEP_TLS;
		else return -1;
	}
	return 0;
}

/* The copies --keep and --decoy ask for, in the main thread. */
static void keep_ids(io_context_t *stack)
{
	kept_stack = stack;
	kept_heap = calloc(MAX_RINGS, sizeof(*kept_heap));
	for (int i = 0; i < nrings; i++) {
		orig_x[i] = (uint64_t)(uintptr_t)ctxs[i] ^ ID_MASK;
		kept_heap[i] = (struct holder){ (uint32_t)i, ctxs[i] };
		kept_static[i] = (struct holder){ (uint32_t)i, ctxs[i] };
		stack[i] = ctxs[i];
		kept_tls[i] = ctxs[i];
		if (decoy)
			decoys[i] = (uint64_t)(uintptr_t)ctxs[i];
	}
}

static int kept_ok(int i)
{
	io_context_t c = ctxs[i];
	return (!(keep & KEEP_HEAP) || kept_heap[i].ctx == c) &&
	       (!(keep & KEEP_STACK) || kept_stack[i] == c) &&
	       (!(keep & KEEP_STATIC) || kept_static[i].ctx == c) &&
	       (!(keep & KEEP_TLS) || kept_tls[i] == c);
}

static int dense_ok(void)
{
	for (int i = 1; i < nrings; i++) {
		struct ring_hdr *h = (void *)ctxs[i];
		uint64_t end = (uint64_t)(uintptr_t)ctxs[i] + ((32 + 32 * (uint64_t)h->nr + 4095) / 4096 * 4096);
		if (end != (uint64_t)(uintptr_t)ctxs[i - 1])
			return 0;
	}
	return 1;
}

/* libaio's io_getevents with no timeout: the id goes to the kernel in a
 * register, and the call waits there. */
static void *blocked_waiter(void *arg)
{
	(void)arg;
	__atomic_store_n(&blocked_tid, (int)syscall(SYS_gettid), __ATOMIC_RELEASE);
	blocked_rc = io_getevents(ctxs[blocked], 1, 1, &blocked_ev, NULL);
	__atomic_store_n(&blocked_done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* READY only once the waiter is in the system call (its
 * /proc/self/task/TID/syscall names io_getevents), not merely started. */
static int wait_in_io_getevents(void)
{
	for (int k = 0; k < 4000; k++) {
		int tid = __atomic_load_n(&blocked_tid, __ATOMIC_ACQUIRE);
		char path[64];
		long nr = -1;
		snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", tid);
		FILE *f = tid ? fopen(path, "r") : NULL;
		if (f) {
			if (fscanf(f, "%ld", &nr) != 1)
				nr = -1;
			fclose(f);
		}
		if (nr == SYS_io_getevents)
			return 0;
		usleep(1000);
	}
	return -1;
}

/* Ring K's waiter gets the one request submitted now, in the slot at the
 * saved tail; head and tail then move on by one. */
static int verify_blocked(struct expect *e)
{
	struct ring_hdr *h = (void *)(uintptr_t)e->addr;
	if (__atomic_load_n(&blocked_done, __ATOMIC_ACQUIRE))
		FAIL("the io_getevents waiter returned %ld before its request", blocked_rc);
	if (complete(ctxs[blocked], blocked, 6, 1) != 1)
		FAIL("ring %d: the waiter's request was refused", blocked);
	for (int k = 0; k < 400 && !__atomic_load_n(&blocked_done, __ATOMIC_ACQUIRE); k++)
		usleep(5000);
	if (!blocked_done)
		FAIL("ring %d: the io_getevents waiter never got its request", blocked);
	if (blocked_rc != 1 || (uint64_t)(uintptr_t)blocked_ev.data != cookie(blocked, 6, 0))
		FAIL("ring %d: the waiter got %ld, data 0x%llx", blocked, blocked_rc,
		     (unsigned long long)(uintptr_t)blocked_ev.data);
	struct io_event *slot = (void *)((char *)h + 32);
	if ((uint64_t)(uintptr_t)slot[e->tail].data != cookie(blocked, 6, 0))
		FAIL("ring %d: the waiter's completion is not at the saved tail %u", blocked, e->tail);
	e->head = e->tail = (e->tail + 1) % h->nr;
	return 0;
}

static int make_ring_pinned(const char *spec)
{
	int n, c = 0, r = 0, c2 = 0, i = nrings;
	if (sscanf(spec, "%d:%d:%d:%d", &n, &c, &r, &c2) < 1 || i == MAX_RINGS)
		return -1;
	/* The kernel places the ring in the highest hole that fits (top-down):
	 * leave a ring-sized hole under one guard page, then drop the guard. */
	long cpus = sysconf(_SC_NPROCESSORS_CONF), e = 2 * (n > 4 * cpus ? n : 4 * cpus) + 2;
	size_t len = (size_t)((32 + 32 * e + 4095) / 4096 * 4096);
	char *area = gap ? mmap(NULL, len + 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) : NULL;
	if (area && area != MAP_FAILED)
		munmap(area, len);
	if (io_setup(n, &ctxs[i]))
		return -1;
	if (area && area != MAP_FAILED)
		munmap(area + len, 4096);
	if (complete(ctxs[i], i, 1, c) != c)
		return -1;
	struct io_event *ev = calloc(r + 1, sizeof(*ev));
	struct timespec zero = { 0, 0 };
	if (r && io_getevents(ctxs[i], r, r, ev, &zero) != r)
		return -1;
	free(ev);
	if (complete(ctxs[i], i, 2, c2) != c2)
		return -1;
	nrings++;
	return 0;
}

/* Free request slots are cached per CPU in batches (kioctx.req_batch, up to
 * nr/8 on 2 CPUs), so a thread that migrates while filling a ring can be
 * refused well before nr - 1 outstanding. Filling from one CPU makes the
 * capacity the layouts are drawn against exact. */
static int make_ring(const char *spec)
{
	cpu_set_t was, one;
	int pinned = !sched_getaffinity(0, sizeof(was), &was);
	if (pinned) {
		CPU_ZERO(&one);
		CPU_SET(sched_getcpu(), &one);
		pinned = !sched_setaffinity(0, sizeof(one), &one);
	}
	int r = make_ring_pinned(spec);
	if (pinned)
		sched_setaffinity(0, sizeof(was), &was);
	return r;
}

#define DISK_BLOCK 4096
static int disk_ring = -1, disk_k;
static struct iocb *disk_cbs;
static unsigned char *disk_buf;

static int start_disk(const char *spec)
{
	char path[256];
	int i = nrings;
	if (sscanf(spec, "%255[^:]:%d", path, &disk_k) != 2 || disk_k < 1 || i == MAX_RINGS)
		return -1;
	int fd = open(path, O_RDONLY | O_DIRECT);
	disk_cbs = calloc(disk_k, sizeof(*disk_cbs));
	struct iocb **ptrs = calloc(disk_k, sizeof(*ptrs));
	if (fd < 0 || !disk_cbs || !ptrs ||
	    posix_memalign((void **)&disk_buf, DISK_BLOCK, (size_t)disk_k * DISK_BLOCK) ||
	    io_setup(disk_k, &ctxs[i]))
		return -1;
	memset(disk_buf, 0, (size_t)disk_k * DISK_BLOCK);
	for (int k = 0; k < disk_k; k++) {
		io_prep_pread(&disk_cbs[k], fd, disk_buf + (size_t)k * DISK_BLOCK, DISK_BLOCK,
			      (long long)k * DISK_BLOCK);
		disk_cbs[k].data = (void *)(uintptr_t)cookie(i, 4, k);
		ptrs[k] = &disk_cbs[k];
	}
	if (io_submit(ctxs[i], disk_k, ptrs) != disk_k)
		return -1;
	free(ptrs);
	disk_ring = i;
	nrings++;
	return 0;
}

/* Each read completed once, whole, on its own iocb and data, and its
 * buffer holds its block. */
static int disk_events_ok(const struct io_event *ev, int n)
{
	if (n != disk_k)
		return 0;
	for (int j = 0; j < n; j++) {
		long k = (struct iocb *)ev[j].obj - disk_cbs;
		if (k < 0 || k >= disk_k || ev[j].res != DISK_BLOCK ||
		    (uint64_t)(uintptr_t)ev[j].data != cookie(disk_ring, 4, (int)k))
			return 0;
		for (int b = 0; b < DISK_BLOCK; b++)
			if (disk_buf[k * DISK_BLOCK + b] != (unsigned char)(k + 1))
				return 0;
	}
	return 1;
}

static void *sleeper(void *arg)
{
	(void)arg;
	for (;;) {
		struct timespec ts = { 0, 5 * 1000 * 1000 };
		if (nanosleep(&ts, NULL) && errno == EINTR)
			eintr_seen++;
		sleeper_ticks++;
	}
	return NULL;
}

static void *reader(void *arg)
{
	char c;
	(void)arg;
	for (;;) {
		ssize_t r = read(read_pipe[0], &c, 1);
		if (r < 0 && errno == EINTR) {
			eintr_seen++;
			continue;
		}
		reader_done = r == 1;
		return NULL;
	}
}

static void *epoller(void *arg)
{
	struct epoll_event ev = { .events = EPOLLIN }, out;
	int ep = epoll_create1(0);
	(void)arg;
	epoll_ctl(ep, EPOLL_CTL_ADD, epoll_pipe[0], &ev);
	for (;;) {
		int r = epoll_wait(ep, &out, 1, -1);
		if (r < 0 && errno == EINTR) {
			stop_eintr++;
			continue;
		}
		epoller_done = r == 1;
		return NULL;
	}
}

static void *futex_waiter(void *arg)
{
	(void)arg;
	while (__atomic_load_n(&futex_word, __ATOMIC_SEQ_CST) == 0)
		if (syscall(SYS_futex, &futex_word, FUTEX_WAIT, 0, NULL, NULL, 0) && errno == EINTR)
			eintr_seen++;
	futex_done = 1;
	return NULL;
}

/* Blocked in pause() for good: every signal is blocked, so it returns only
 * if something interrupts it wrongly. */
static int probe_fd = -1;
static volatile int probe_started; /* READY only once it is measuring */

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *freeze_probe(void *arg)
{
	(void)arg;
	const struct timespec tick = { 0, 20000 };
	prctl(PR_SET_TIMERSLACK, 1UL); /* wake on time, not 50 us late */
	uint64_t last = mono_ns();
	__atomic_store_n(&probe_started, 1, __ATOMIC_RELEASE);
	for (;;) {
		nanosleep(&tick, NULL);
		uint64_t now = mono_ns();
		if (now - last > 100000)
			dprintf(probe_fd, "%llu %llu\n", (unsigned long long)last,
				(unsigned long long)now);
		last = now;
	}
	return NULL;
}

static void *pauser(void *arg)
{
	(void)arg;
	for (;;) {
		pause();
		eintr_seen++;
	}
	return NULL;
}

/* --spawner: short-lived threads made without pause, so that threads
 * are created while a tracer stops the others. */
static void *short_lived(void *arg)
{
	struct timespec ms = { 0, 1000000 };
	(void)arg;
	nanosleep(&ms, NULL);
	return NULL;
}

static void *spawner(void *arg)
{
	pthread_attr_t a;
	(void)arg;
	pthread_attr_init(&a);
	pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&a, 64 * 1024);
	for (;;) {
		pthread_t t;
		struct timespec us = { 0, 100000 };
		pthread_create(&t, &a, short_lived, NULL);
		nanosleep(&us, NULL);
	}
	return NULL;
}

static void *destroyer(void *arg)
{
	io_destroy(*(io_context_t *)arg);
	return NULL;
}

/* io_destroy waits for an RCU grace period (about 35 ms here): destroy
 * in parallel so that layouts of many rings stay quick to test. */
static void destroy_all(void)
{
	pthread_t t[MAX_RINGS];
	for (int i = 0; i < nrings; i++)
		if (pthread_create(&t[i], NULL, destroyer, &ctxs[i]))
			io_destroy(ctxs[i]), t[i] = 0;
	for (int i = 0; i < nrings; i++)
		if (t[i])
			pthread_join(t[i], NULL);
}

/* rt_sigtimedwait with known values in the registers a system call must
 * leave alone (rbx, r12-r15, xmm0-15): the main thread waits here, so a
 * tool that runs system calls in it and puts it back wrongly is caught.
 * Waits at most *timeout. Returns the signal or -errno; *bad counts
 * registers that changed. */
struct canary {
	uint64_t xmm_in[32], xmm_out[32], gp_in[5], gp_out[5];
};

static long wait_checked(const sigset_t *set, const struct timespec *timeout, int *bad)
{
	struct canary c;
	long ret;
	register long r10 __asm__("r10") = 8;
	for (int i = 0; i < 32; i++)
		c.xmm_in[i] = 0x0101010101010101ull * (uint64_t)(i + 1) ^ 0x5a00000000000000ull;
	for (int i = 0; i < 5; i++)
		c.gp_in[i] = 0xcafe000000000000ull | (uint64_t)(i + 1) << 8 | 0x77;
	__asm__ volatile(
		"movdqu 0(%[b]), %%xmm0\n"
		"movdqu 16(%[b]), %%xmm1\n"
		"movdqu 32(%[b]), %%xmm2\n"
		"movdqu 48(%[b]), %%xmm3\n"
		"movdqu 64(%[b]), %%xmm4\n"
		"movdqu 80(%[b]), %%xmm5\n"
		"movdqu 96(%[b]), %%xmm6\n"
		"movdqu 112(%[b]), %%xmm7\n"
		"movdqu 128(%[b]), %%xmm8\n"
		"movdqu 144(%[b]), %%xmm9\n"
		"movdqu 160(%[b]), %%xmm10\n"
		"movdqu 176(%[b]), %%xmm11\n"
		"movdqu 192(%[b]), %%xmm12\n"
		"movdqu 208(%[b]), %%xmm13\n"
		"movdqu 224(%[b]), %%xmm14\n"
		"movdqu 240(%[b]), %%xmm15\n"
		"mov 512(%[b]), %%rbx\n"
		"mov 520(%[b]), %%r12\n"
		"mov 528(%[b]), %%r13\n"
		"mov 536(%[b]), %%r14\n"
		"mov 544(%[b]), %%r15\n"
		"syscall\n"
		"movdqu %%xmm0, 256(%[b])\n"
		"movdqu %%xmm1, 272(%[b])\n"
		"movdqu %%xmm2, 288(%[b])\n"
		"movdqu %%xmm3, 304(%[b])\n"
		"movdqu %%xmm4, 320(%[b])\n"
		"movdqu %%xmm5, 336(%[b])\n"
		"movdqu %%xmm6, 352(%[b])\n"
		"movdqu %%xmm7, 368(%[b])\n"
		"movdqu %%xmm8, 384(%[b])\n"
		"movdqu %%xmm9, 400(%[b])\n"
		"movdqu %%xmm10, 416(%[b])\n"
		"movdqu %%xmm11, 432(%[b])\n"
		"movdqu %%xmm12, 448(%[b])\n"
		"movdqu %%xmm13, 464(%[b])\n"
		"movdqu %%xmm14, 480(%[b])\n"
		"movdqu %%xmm15, 496(%[b])\n"
		"mov %%rbx, 552(%[b])\n"
		"mov %%r12, 560(%[b])\n"
		"mov %%r13, 568(%[b])\n"
		"mov %%r14, 576(%[b])\n"
		"mov %%r15, 584(%[b])\n"
		: "=a"(ret)
		: "a"((long)SYS_rt_sigtimedwait), "D"(set), "S"(NULL), "d"(timeout), "r"(r10),
		  [b] "r"(&c)
		: "rcx", "r11", "rbx", "r12", "r13", "r14", "r15", "memory", "xmm0", "xmm1",
		  "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
		  "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
	for (int i = 0; i < 32; i++)
		*bad += c.xmm_out[i] != c.xmm_in[i];
	for (int i = 0; i < 5; i++)
		*bad += c.gp_out[i] != c.gp_in[i];
	return ret;
}

/* Its stdout a pipe nobody reads any more. */
static int reader_gone(void)
{
	struct pollfd p = { .fd = 1, .events = 0 };
	return poll(&p, 1, 0) == 1 && (p.revents & POLLERR);
}

/* A filter refusing system calls a and b (the same twice for one) with
 * EPERM. */
static int refuse(int a, int b)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)a, 1, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)b, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { sizeof(f) / sizeof(f[0]), f };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		return -1;
	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

static int save_expect(const char *path)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	fwrite(&nrings, sizeof(nrings), 1, f);
	for (int i = 0; i < nrings; i++) {
		fwrite(&rings[i], sizeof(rings[i]), 1, f);
		fwrite(rings[i].events, sizeof(struct io_event), rings[i].nevents, f);
	}
	return fclose(f);
}

static int load_expect(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f || fread(&nrings, sizeof(nrings), 1, f) != 1)
		return -1;
	for (int i = 0; i < nrings; i++) {
		if (fread(&rings[i], sizeof(rings[i]), 1, f) != 1)
			return -1;
		rings[i].events = calloc(rings[i].nevents + 1, sizeof(struct io_event));
		if (fread(rings[i].events, sizeof(struct io_event), rings[i].nevents, f) != rings[i].nevents)
			return -1;
		ctxs[i] = (io_context_t)(uintptr_t)rings[i].addr;
	}
	fclose(f);
	return 0;
}


/* The POLL left in flight (--pending) must still be in flight, on the same
 * iocb: writing its pipe completes it with its iocb address and data. */
static struct iocb pend_cb;
static int pend_live;

static int verify_pending(io_context_t ctx)
{
	struct timespec two = { 2, 0 };
	struct io_event ev;
	if (write(pend_pipe[1], "x", 1) != 1)
		FAIL("pending pipe");
	if (io_getevents(ctx, 1, 1, &ev, &two) != 1)
		FAIL("the POLL in flight at dump never completed");
	if (ev.obj != &pend_cb || (uint64_t)(uintptr_t)ev.data != cookie(0, 7, 0))
		FAIL("the POLL completed with obj %p data 0x%llx, not %p 0x%llx", (void *)ev.obj,
		     (unsigned long long)(uintptr_t)ev.data, (void *)&pend_cb,
		     (unsigned long long)cookie(0, 7, 0));
	return 0;
}

static int verify_ring(int i)
{
	struct expect *e = &rings[i];
	struct ring_hdr *h = (void *)(uintptr_t)e->addr;
	io_context_t ctx = (io_context_t)(uintptr_t)e->addr;
	struct timespec zero = { 0, 0 };
	if ((uint64_t)(uintptr_t)ctxs[i] != e->addr || !kept_ok(i))
		FAIL("ring %d: the copies of its id disagree (ctxs 0x%llx, saved 0x%llx)", i,
		     (unsigned long long)(uintptr_t)ctxs[i], (unsigned long long)e->addr);
	if (i == blocked && verify_blocked(e))
		return 1;
	int nr_ok = allow_grow ? h->nr >= e->nr : h->nr == e->nr;
	if (h->magic != MAGIC || !nr_ok || h->head != e->head || h->tail != e->tail)
		FAIL("ring %d at 0x%llx: header %x nr %u head %u tail %u, expected nr %u head %u tail %u",
		     i, (unsigned long long)e->addr, h->magic, h->nr, h->head, h->tail, e->nr, e->head, e->tail);
	struct io_event *got = calloc(e->nr, sizeof(*got));
	int n = io_getevents(ctx, 0, e->nr, got, &zero);
	if (n != (int)e->nevents)
		FAIL("ring %d: io_getevents returned %d, expected %u", i, n, e->nevents);
	if (memcmp(got, e->events, n * sizeof(*got)))
		FAIL("ring %d: events differ", i);
	if (i == disk_ring && !disk_events_ok(got, n))
		FAIL("ring %d: the %d disk reads did not all complete whole with their data", i, disk_k);
	if (complete(ctx, i, 3, 1) != 1)
		FAIL("ring %d: the next request was refused", i);
	struct io_event *slot = (void *)((char *)h + 32);
	if ((uint64_t)(uintptr_t)slot[e->tail].data != cookie(i, 3, 0))
		FAIL("ring %d: next completion not at saved tail %u", i, e->tail);
	if (io_getevents(ctx, 1, 1, got, &zero) != 1)
		FAIL("ring %d: next completion not delivered", i);
	/* libaio answers an empty ring and a zero timeout in user space, from
	 * the header at the id: a stale id would be read there */
	if (io_getevents(ctx, 0, 1, got, &zero) != 0)
		FAIL("ring %d: libaio's user-space io_getevents did not find it empty", i);
	free(got);
	if (i == 0 && pend_live && verify_pending(ctx))
		return 1;
	if (io_destroy(ctx))
		FAIL("ring %d: io_destroy failed", i);
	return 0;
}

#define MARKER 0x5eed5eed5eed5eedull

static int occupy(void)
{
	for (int i = 0; i < nrings; i++) {
		uint64_t *p = mmap((void *)(uintptr_t)rings[i].addr, 4096, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (p == MAP_FAILED)
			return -1;
		*p = MARKER;
	}
	return 0;
}

static int verify_occupants(void)
{
	for (int i = 0; i < nrings; i++)
		if (*(uint64_t *)(uintptr_t)rings[i].addr != MARKER)
			FAIL("occupant at 0x%llx was changed", (unsigned long long)rings[i].addr);
	printf("VERIFY OK %d occupants intact\n", nrings);
	return 0;
}

/* --occupy-after-destroy: the addresses the rings had at start, from
 * orig_x (no relocation rewrites those words). */
static int occupy_saved(void)
{
	for (int i = 0; i < nrings; i++) {
		void *at = (void *)(uintptr_t)(orig_x[i] ^ ID_MASK);
		uint64_t *p = mmap(at, 4096, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		if (p != at)
			return -1;
		*p = MARKER;
	}
	return 0;
}

static int saved_occupied(void)
{
	for (int i = 0; i < nrings; i++)
		if (*(uint64_t *)(uintptr_t)(orig_x[i] ^ ID_MASK) != MARKER)
			FAIL("the page at ring %d's saved address 0x%llx was changed", i,
			     (unsigned long long)(orig_x[i] ^ ID_MASK));
	return 0;
}

static int verify(int threads)
{
	for (int i = 0; i < nrings; i++)
		if (verify_ring(i))
			return 1;
	if (threads) {
		int ticks = sleeper_ticks;
		if (write(read_pipe[1], "x", 1) != 1 || write(epoll_pipe[1], "x", 1) != 1)
			FAIL("pipes");
		__atomic_store_n(&futex_word, 1, __ATOMIC_SEQ_CST);
		syscall(SYS_futex, &futex_word, FUTEX_WAKE, 1, NULL, NULL, 0);
		for (int k = 0; k < 200 && !(reader_done && epoller_done && futex_done &&
					     sleeper_ticks > ticks); k++)
			usleep(5000);
		if (!reader_done || !epoller_done || !futex_done || sleeper_ticks <= ticks)
			FAIL("threads stuck: reader %d epoller %d futex %d sleeper %d", reader_done,
			     epoller_done, futex_done, sleeper_ticks - ticks);
	}
	if (eintr_seen || (stop_eintr && !tolerate_stop_eintr))
		FAIL("%d system calls saw EINTR", eintr_seen + stop_eintr);
	if (regs_changed)
		FAIL("%d registers of the main thread changed across a system call", regs_changed);
	if (occupy_after && saved_occupied())
		return 1;
	int moved = 0, decoyed = 0;
	for (int i = 0; i < nrings; i++) {
		moved += (uint64_t)(uintptr_t)ctxs[i] != (orig_x[i] ^ ID_MASK);
		decoyed += decoy && decoys[i] != (orig_x[i] ^ ID_MASK);
	}
	if (decoy)
		printf("DECOY %d of %d rewritten\n", decoyed, nrings);
	if (moved)
		printf("VERIFY OK %d rings (%d relocated)\n", nrings, moved);
	else
		printf("VERIFY OK %d rings\n", nrings);
	return 0;
}

int main(int argc, char **argv)
{
	int threads = 0, pending = 0, occupant = 0, seccomp = 0, spawn = 0, dense = 0;
	io_context_t on_stack[MAX_RINGS];
	const char *expect_out = NULL, *expect_in = NULL;
	sigset_t set;
	/* Nothing inherited beyond stdio: CRIU dumps every open file, and a
	 * restore then needs them all back. */
	syscall(SYS_close_range, 3, ~0U, 0);
	devnull = open("/dev/null", O_WRONLY);
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--ring") && i + 1 < argc) {
			if (make_ring(argv[++i])) {
				fprintf(stderr, "aio_workload: ring %s could not be set up (aio-nr budget?)\n", argv[i]);
				return 2;
			}
		} else if (!strcmp(argv[i], "--threads"))
			threads = 1;
		else if (!strcmp(argv[i], "--spawner"))
			spawn = 1;
		else if (!strcmp(argv[i], "--tolerate-stop-eintr"))
			tolerate_stop_eintr = 1;
		else if (!strcmp(argv[i], "--gap"))
			gap = 1;
		else if (!strcmp(argv[i], "--allow-grow"))
			allow_grow = 1;
		else if (!strcmp(argv[i], "--keep") && i + 1 < argc) {
			if (parse_keep(argv[++i])) {
				fprintf(stderr, "aio_workload: --keep takes heap,stack,static,tls\n");
				return 2;
			}
		} else if (!strcmp(argv[i], "--dense"))
			dense = 1;
		else if (!strcmp(argv[i], "--blocked") && i + 1 < argc)
			blocked = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--decoy"))
			decoy = 1;
		else if (!strcmp(argv[i], "--occupy-after-destroy"))
			occupy_after = 1;
		else if (!strcmp(argv[i], "--seccomp"))
			seccomp = 1;
		else if (!strcmp(argv[i], "--seccomp-clone"))
			seccomp = 2;
		else if (!strcmp(argv[i], "--join") && i + 1 < argc) {
			FILE *f = fopen(argv[++i], "w");
			if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f)) {
				fprintf(stderr, "aio_workload: cannot join %s\n", argv[i]);
				return 2;
			}
		} else if (!strcmp(argv[i], "--disk") && i + 1 < argc) {
			if (start_disk(argv[++i])) {
				fprintf(stderr, "aio_workload: disk reads %s could not be started\n", argv[i]);
				return 2;
			}
		} else if (!strcmp(argv[i], "--freeze-probe") && i + 1 < argc) {
			probe_fd = open(argv[++i], O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
			if (probe_fd < 0) {
				fprintf(stderr, "aio_workload: cannot write %s\n", argv[i]);
				return 2;
			}
		} else if (!strcmp(argv[i], "--pending"))
			pending = 1;
		else if (!strcmp(argv[i], "--expect") && i + 1 < argc)
			expect_out = argv[++i];
		else if (!strcmp(argv[i], "--verify-from") && i + 1 < argc)
			expect_in = argv[++i];
		else if (!strcmp(argv[i], "--occupy-from") && i + 1 < argc) {
			expect_in = argv[++i];
			occupant = 1;
		}
		else {
			fprintf(stderr, "aio_workload: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	if (expect_in && load_expect(expect_in)) {
		fprintf(stderr, "aio_workload: cannot read %s\n", expect_in);
		return 2;
	}
	for (int i = 0; !expect_in && i < nrings; i++)
		remember(i);
	if (dense && !dense_ok()) {
		fprintf(stderr, "aio_workload: the rings are not side by side\n");
		return 2;
	}
	keep_ids(on_stack);
	if (blocked >= nrings || (blocked >= 0 && rings[blocked].nevents)) {
		fprintf(stderr, "aio_workload: --blocked %d needs an empty ring of those made\n", blocked);
		return 2;
	}
	if (blocked >= 0) {
		pthread_t t;
		pthread_create(&t, NULL, blocked_waiter, NULL);
		if (wait_in_io_getevents()) {
			fprintf(stderr, "aio_workload: the --blocked thread never waited in io_getevents\n");
			return 2;
		}
	}
	if (occupant && occupy()) {
		fprintf(stderr, "aio_workload: cannot occupy ring addresses\n");
		return 2;
	}
	if (expect_out && save_expect(expect_out))
		return 2;
	if (pending && nrings) {
		/* libaio's contract: the iocb lives until its completion */
		struct iocb *p = &pend_cb;
		if (pipe(pend_pipe))
			return 2;
		io_prep_poll(&pend_cb, pend_pipe[0], POLLIN);
		pend_cb.data = (void *)(uintptr_t)cookie(0, 7, 0);
		if (io_submit(ctxs[0], 1, &p) != 1)
			return 2;
		pend_live = 1;
	}
	if (threads) {
		pthread_t t;
		if (pipe(read_pipe) || pipe(epoll_pipe))
			return 2;
		pthread_create(&t, NULL, sleeper, NULL);
		pthread_create(&t, NULL, reader, NULL);
		pthread_create(&t, NULL, epoller, NULL);
		pthread_create(&t, NULL, futex_waiter, NULL);
		pthread_create(&t, NULL, pauser, NULL);
	}
	if (spawn) {
		pthread_t t;
		pthread_create(&t, NULL, spawner, NULL);
	}
	if (probe_fd >= 0) {
		pthread_t t;
		pthread_create(&t, NULL, freeze_probe, NULL);
		while (!__atomic_load_n(&probe_started, __ATOMIC_ACQUIRE))
			sched_yield();
	}
	if ((seccomp == 1 && refuse(SYS_io_setup, SYS_io_setup)) ||
	    (seccomp == 2 && refuse(SYS_clone, SYS_clone3))) {
		fprintf(stderr, "aio_workload: cannot install the seccomp filter\n");
		return 2;
	}
	printf("READY %d", (int)getpid());
	for (int i = 0; i < nrings; i++)
		printf(" 0x%llx", (unsigned long long)rings[i].addr);
	if (pending && nrings)
		printf(" pending-fd=%d", pend_pipe[1]);
	printf("\n");
	fflush(stdout);
	/* Woken now and then to see whether whoever started it is still
	 * reading its output: a driver that fails before it kills the
	 * workload closes its pipe and then waits for it to exit. */
	const struct timespec second = { 1, 0 };
	for (;;) {
		long sig = wait_checked(&set, &second, &regs_changed);
		if (sig == -EAGAIN) {
			if (reader_gone())
				return 4;
			continue;
		}
		if (sig < 0) {
			if (sig == -EINTR)
				stop_eintr++;
			continue;
		}
		if (sig == SIGUSR1) {
			if (disk_ring >= 0 && !expect_in)
				remember(disk_ring);
			destroy_all();
			printf(occupy_after && occupy_saved() ? "CANNOT OCCUPY\n" : "DESTROYED\n");
			fflush(stdout);
		} else if (sig == SIGUSR2) {
			int rc = occupant ? verify_occupants() : verify(threads);
			fflush(stdout);
			return rc;
		} else
			return 3;
	}
}
