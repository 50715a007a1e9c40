/* An io_uring workload for the io_uring view's test: three instances in
 * known states, each fact printed as a line "name value" on stdout, then
 * "READY"; it then waits for a signal, its instances untouched, so that a
 * test can read them from outside while it runs.
 *
 *   a: flags 0, 8 entries; registered files (a sparse table: a pipe's
 *      read end, an empty slot, /dev/null) and two buffers; an eventfd;
 *      a POLL_ADD in flight on the pipe nobody writes; five NOPs done of
 *      which two reaped; two NOPs prepared and not submitted.
 *   b: SINGLE_ISSUER | DEFER_TASKRUN | CQSIZE (as fio sets up), made and
 *      used by a second thread, which is then its owner; one registered
 *      file and one buffer; three NOPs done, none reaped.
 *   c: SQPOLL on CPU 1, its poller thread's tid printed.
 *
 * Options: --act (see act()), --extras (see make_d()), --aio N and
 * --plain N (see make_aio()), --orphan (see make_orphan()), --waiting: b's
 * owner submits a 1 ms TIMEOUT last and never enters the kernel for b
 * again, so its completion waits (DEFER_TASKRUN) forever; --stop-timeout:
 * once READY, a 300 ms TIMEOUT on a, then the process stops itself
 * (SIGSTOP), so the timeout's completion waits for its main thread.
 *
 * With --lose N, instance e alone instead (for restore's tests): flags 0,
 * 8 entries, its counters first moved to N by NOPs; a POLL_ADD in flight
 * on a pipe, five NOPs done of which two reaped, two NOPs prepared. Then
 * SIGUSR1 loses it (io_uring_queue_exit, the struct kept: what a restore
 * puts back is what liburing still points at) and prints LOST; SIGUSR2
 * uses it as liburing would have (reap, submit the prepared, the POLL
 * completed by a write, queue_exit), printing each result, its own
 * verdict against e as lost ("VERIFY OK" or "VERIFY FAILED: why"), then
 * CHECKED; SIGHUP puts /dev/zero at the pipe's read end's fd (a
 * registered file's, the POLL's) and prints MOVED.
 * After N: --spin adds a thread that never makes a system call; --bad-poll
 * (--bad-recv) closes the POLL's (the RECV's) fd when the instance is lost; --forget wipes liburing's
 * struct then (a program keeping its counters nowhere aiotk looks);
 * --second adds instance e2, lost and used with e (see make_e2());
 * --timeout leaves four TIMEOUTs in flight on e (see e_timeouts()), each
 * seen to be there after a restore (see timeouts_used()); --accept and
 * --recv leave a multishot ACCEPT on a listening socket and a RECV on a
 * socketpair in flight on e (see e_sockets()), used after a restore (see
 * sockets_used()); --recv-bufs (with a buffer ring or
 * --provide-buffers) leaves a multishot RECV that received once and a
 * buffer-select RECV on group 7 in flight (see recv_bufs_armed(),
 * recv_bufs_used()); --shift K moves
 * liburing's sq counters on by K then (the test's image moved alike: an
 * instance near 2^32 without 2^32 SQEs); --registered gives e registered
 * files and buffers, used after the restore by a fixed-file write from a
 * fixed buffer ("fixed_io RES"); --entries E sizes e (8 unless said);
 * --flags F sets e up with setup flags F: with SINGLE_ISSUER a second
 * thread ("owner TID") makes, loses and uses e, as its owner, while the
 * main thread waits for it; --eventfd MODE registers an eventfd on e
 * ("sync", or "async": IORING_REGISTER_EVENTFD_ASYNC; "e.eventfd FD"),
 * drained when e is lost, read before and after e is used after
 * ("eventfd_before N", "eventfd_after N"); --personality registers a
 * personality on e, --restricted sets e up disabled, registers
 * restrictions (NOP and POLL_ADD only) and enables it; --dontfork:
 * io_uring_ring_dontfork(e) (MADV_DONTFORK on its mappings); --ring-fd:
 * io_uring_register_ring_fd(e) ("e.ringfd TID OFFSET"; after the
 * restore "after.ringfd OFFSET 1": liburing still submits through it);
 * --buf-ring: a provided-buffer ring (group 7, 8 entries, the program's
 * memory) registered on e, 3 of its buffers used before the dump, one
 * more after the restore ("buf_bid 3 16": the next one); --buf-ring-mmap:
 * the same in the kernel's memory (IOU_PBUF_RING_MMAP), mapped, unmapped
 * when e is lost; --buf-ring-moved: the same in memory moved (mremap)
 * after it was touched; --provide-buffers: group 7 as 8 legacy provided
 * buffers; --buf-ring-inc: incremental (3 reads use 48 bytes of buffer
 * 0, head 0; after the restore "buf_bid 0 16": its last 16).
 *
 * With --disk DEV K FLAGS, instance f alone (see disk()): reads of a
 * block device left in flight. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define POLL_DATA 0xfeedbeef12345678ull

static void die(const char *what, int rc)
{
	fprintf(stderr, "uring_workload: %s: %s\n", what, strerror(rc < 0 ? -rc : rc));
	exit(1);
}

static void nops(struct io_uring *r, unsigned n, int submit)
{
	for (unsigned i = 0; i < n; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(r);
		if (!sqe)
			die("io_uring_get_sqe", EBUSY);
		io_uring_prep_nop(sqe);
		io_uring_sqe_set_data64(sqe, 100 + i);
	}
	int rc = submit ? io_uring_submit(r) : 0;
	if (rc < 0)
		die("io_uring_submit", rc);
}

/* What the ring memory says (what the kernel will be compared with). */
static void print_ring(const char *name, struct io_uring *r)
{
	printf("%s.fd %d\n%s.flags %u\n", name, r->ring_fd, name, r->flags);
	printf("%s.sq_entries %u\n%s.cq_entries %u\n", name, r->sq.ring_entries, name,
	       r->cq.ring_entries);
	printf("%s.sq_head %u\n%s.sq_tail %u\n", name, *r->sq.khead, name, *r->sq.ktail);
	printf("%s.cq_head %u\n%s.cq_tail %u\n", name, *r->cq.khead, name, *r->cq.ktail);
	printf("%s.sq_dropped %u\n%s.cq_overflow %u\n", name, *r->sq.kdropped, name,
	       *r->cq.koverflow);
	printf("%s.sqe_tail %u\n", name, r->sq.sqe_tail); /* prepared, not all submitted */
	/* The CQ ring shares the SQ ring's mapping under IORING_FEAT_SINGLE_MMAP. */
	printf("%s.sq_ring %llu\n%s.cq_ring %llu\n%s.sqes %llu\n",
	       name, (unsigned long long)(uintptr_t)r->sq.ring_ptr,
	       name, (unsigned long long)(uintptr_t)r->cq.ring_ptr,
	       name, (unsigned long long)(uintptr_t)r->sq.sqes);
	/* Where the CQEs and the sq_array are, and what the ring memory holds
	 * there: each unreaped CQE's user_data and res, each SQE prepared and
	 * not submitted's user_data (what an image must have saved). */
	printf("%s.cqes %llu\n%s.sq_array %llu\n", name,
	       (unsigned long long)(uintptr_t)r->cq.cqes, name,
	       (unsigned long long)(uintptr_t)r->sq.array);
	for (unsigned h = *r->cq.khead, i = 0; h != *r->cq.ktail; h++, i++) {
		struct io_uring_cqe *cqe = &r->cq.cqes[h & *r->cq.kring_mask];
		printf("%s.cqe%u %llu %d\n", name, i, (unsigned long long)cqe->user_data, cqe->res);
	}
	for (unsigned t = r->sq.sqe_head, i = 0; t != r->sq.sqe_tail; t++, i++)
		printf("%s.prepared%u %llu\n", name, i,
		       (unsigned long long)r->sq.sqes[t & *r->sq.kring_mask].user_data);
}

static void print_bufs(const char *name, const struct iovec *iov, int n)
{
	printf("%s.nbufs %d\n", name, n);
	for (int i = 0; i < n; i++)
		printf("%s.buf%d %llu %zu\n", name, i,
		       (unsigned long long)(uintptr_t)iov[i].iov_base, iov[i].iov_len);
}

static struct io_uring a, b, c;
static int extras; /* --extras */
static int waiting; /* --waiting */
#define B_WAITING 0x7301ull

static struct io_uring_sqe *sqe_of(struct io_uring *r, __u64 data);
static int pipe_fd[2];

/* A POLL_ADD in flight on the pipe nobody writes, five NOPs done of which
 * two reaped, two NOPs prepared and not submitted. */
static void leave_state(struct io_uring *r, unsigned long long poll_data)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(r);
	io_uring_prep_poll_add(sqe, pipe_fd[0], POLLIN);
	io_uring_sqe_set_data64(sqe, poll_data);
	nops(r, 5, 1);
	io_uring_cq_advance(r, 2);
	nops(r, 2, 0);
}

static void make_a(void)
{
	int rc = io_uring_queue_init(8, &a, 0);
	if (rc)
		die("io_uring_queue_init a", rc);
	int null_fd = open("/dev/null", O_RDWR);
	int files[3] = { pipe_fd[0], -1, null_fd };
	if ((rc = io_uring_register_files(&a, files, 3)))
		die("register_files a", rc);
	static struct iovec iov[2];
	iov[0] = (struct iovec){ aligned_alloc(4096, 4096), 4096 };
	iov[1] = (struct iovec){ aligned_alloc(4096, 8192), 8192 };
	if ((rc = io_uring_register_buffers(&a, iov, 2)))
		die("register_buffers a", rc);
	int efd = eventfd(0, EFD_CLOEXEC);
	if ((rc = io_uring_register_eventfd(&a, efd)))
		die("register_eventfd a", rc);
	leave_state(&a, POLL_DATA);
	print_ring("a", &a);
	printf("a.nr_files 3\na.file0 %d\na.file2 %d\n", pipe_fd[0], null_fd);
	print_bufs("a", iov, 2);
	printf("a.eventfd %d\na.poll_fd %d\na.poll_data %llu\n", efd, pipe_fd[0],
	       (unsigned long long)POLL_DATA);
}

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t made = PTHREAD_COND_INITIALIZER;
static int b_done;

/* The owner of b: makes it, uses it, then waits as the process does. */
static void *owner(void *unused)
{
	(void)unused;
	struct io_uring_params p = { .flags = IORING_SETUP_SINGLE_ISSUER |
		IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_CQSIZE, .cq_entries = 64 };
	int rc = io_uring_queue_init_params(16, &b, &p);
	if (rc)
		die("io_uring_queue_init b", rc);
	if ((rc = io_uring_register_files(&b, &pipe_fd[1], 1)))
		die("register_files b", rc);
	static struct iovec iov = { 0, 65536 };
	iov.iov_base = aligned_alloc(4096, 65536);
	if ((rc = io_uring_register_buffers(&b, &iov, 1)))
		die("register_buffers b", rc);
	nops(&b, 3, 1);
	if (waiting) {
		/* done at once, posted only when this thread next enters the
		 * kernel for b: it never does */
		static struct __kernel_timespec ms = { .tv_nsec = 1000000 };
		io_uring_prep_timeout(sqe_of(&b, B_WAITING), &ms, 0, 0);
		if ((rc = io_uring_submit(&b)) != 1)
			die("io_uring_submit b timeout", rc < 0 ? rc : EIO);
	}
	if (extras && (rc = io_uring_register_ring_fd(&b)) != 1)
		die("register_ring_fd b", rc < 0 ? rc : EIO);
	pthread_mutex_lock(&lock);
	if (extras)
		printf("b.ringfd %ld %d\n", (long)syscall(SYS_gettid), b.enter_ring_fd);
	print_ring("b", &b);
	printf("b.owner_tid %ld\nb.nr_files 1\nb.file0 %d\n", (long)syscall(SYS_gettid),
	       pipe_fd[1]);
	print_bufs("b", &iov, 1);
	b_done = 1;
	pthread_cond_signal(&made);
	pthread_mutex_unlock(&lock);
	for (;;)
		pause();
	return NULL;
}

/* The SQPOLL thread is a thread of this process named iou-sqp-PID. */
static long find_sqpoll(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	long found = 0;
	while (d && !found && (e = readdir(d))) {
		char path[300], comm[64] = "";
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		FILE *f = fopen(path, "r");
		if (f && fgets(comm, sizeof(comm), f) && !strncmp(comm, "iou-sqp", 7))
			found = atol(e->d_name);
		if (f)
			fclose(f);
	}
	if (d)
		closedir(d);
	return found;
}

/* It names itself when it first runs, which may be after setup returned. */
static long sqpoll_tid(void)
{
	long tid = 0;
	for (int i = 0; i < 1000 && !(tid = find_sqpoll()); i++)
		usleep(1000);
	return tid;
}

static void make_c(void)
{
	struct io_uring_params p = { .flags = IORING_SETUP_SQPOLL | IORING_SETUP_SQ_AFF,
		.sq_thread_cpu = 1, .sq_thread_idle = 2000 };
	int rc = io_uring_queue_init_params(4, &c, &p);
	if (rc)
		die("io_uring_queue_init c", rc);
	print_ring("c", &c);
	printf("c.sq_cpu 1\nc.sq_thread_idle_ms 2000\nc.sqpoll_tid %ld\n", sqpoll_tid());
}

/* --extras: instance d, flags 0, 16 entries, with what the rest lacks:
 *   two TIMEOUTs in flight (one hour, CLOCK_MONOTONIC; two hours on
 *   CLOCK_BOOTTIME or 1000 completions), and a POLL_ADD on the pipe linked
 *   to a LINK_TIMEOUT of half an hour; a buffer ring, group 7 of 8 entries,
 *   all 8 given and 3 consumed (0-byte reads of /dev/null); its fd
 *   registered as a ring fd by the main thread, and b's by its owner. */
static struct io_uring d;

#define D_TIMEOUT1 0x7101ull
#define D_TIMEOUT2 0x7102ull
#define D_POLL 0x7103ull
#define D_LINK 0x7104ull

static struct io_uring_sqe *sqe_of(struct io_uring *r, __u64 data)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(r);
	if (!sqe)
		die("io_uring_get_sqe", EBUSY);
	sqe->user_data = data;
	return sqe;
}

static void d_timeouts(void)
{
	static struct __kernel_timespec hour = { .tv_sec = 3600 }, two = { .tv_sec = 7200 },
		half = { .tv_sec = 1800 };
	io_uring_prep_timeout(sqe_of(&d, D_TIMEOUT1), &hour, 0, 0);
	io_uring_prep_timeout(sqe_of(&d, D_TIMEOUT2), &two, 1000, IORING_TIMEOUT_BOOTTIME);
	struct io_uring_sqe *poll = sqe_of(&d, D_POLL);
	io_uring_prep_poll_add(poll, pipe_fd[0], POLLIN);
	poll->flags |= IOSQE_IO_LINK;
	io_uring_prep_link_timeout(sqe_of(&d, D_LINK), &half, 0);
	int rc = io_uring_submit(&d);
	if (rc != 4)
		die("io_uring_submit d", rc < 0 ? rc : EIO);
	printf("d.timeout1 %llu 3600\nd.timeout2 %llu 7200\nd.timeout2_count 1000\nd.poll %llu\nd.link %llu 1800\n",
	       D_TIMEOUT1, D_TIMEOUT2, D_POLL, D_LINK);
}

static void d_buf_ring(void)
{
	struct io_uring_buf_ring *br;
	if (posix_memalign((void **)&br, 4096, 4096))
		die("posix_memalign", ENOMEM);
	io_uring_buf_ring_init(br);
	struct io_uring_buf_reg reg = { .ring_addr = (unsigned long)br, .ring_entries = 8, .bgid = 7 };
	int rc = io_uring_register_buf_ring(&d, &reg, 0);
	if (rc)
		die("register_buf_ring d", rc);
	static char bufs[8][64];
	for (int i = 0; i < 8; i++)
		io_uring_buf_ring_add(br, bufs[i], sizeof(bufs[i]), (unsigned short)i,
				      io_uring_buf_ring_mask(8), i);
	io_uring_buf_ring_advance(br, 8);
	int null_fd = open("/dev/null", O_RDONLY);
	for (int i = 0; i < 3; i++) {
		struct io_uring_sqe *sqe = sqe_of(&d, 0x7200 + (unsigned)i);
		io_uring_prep_read(sqe, null_fd, NULL, 0, 0);
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = 7;
	}
	if ((rc = io_uring_submit_and_wait(&d, 3)) < 0)
		die("io_uring_submit_and_wait d", rc);
	io_uring_cq_advance(&d, 3);
	close(null_fd);
	printf("d.bgid 7\nd.buf_entries 8\nd.buf_head 3\nd.buf_tail 8\nd.buf_addr %lu\n", (unsigned long)br);
}

static void make_d(void)
{
	int rc = io_uring_queue_init(16, &d, 0);
	if (rc)
		die("io_uring_queue_init d", rc);
	d_buf_ring();
	d_timeouts();
	if ((rc = io_uring_register_ring_fd(&d)) != 1)
		die("register_ring_fd d", rc < 0 ? rc : EIO);
	printf("d.fd %d\nd.ringfd %ld %d\n", d.ring_fd, (long)syscall(SYS_gettid), d.enter_ring_fd);
}

/* --aio N: N AIO contexts (io_setup(64), raw system calls) beside the
 * instances, their ring addresses printed; --plain N: N more instances,
 * flags 0, 64 entries, eight NOPs done of which five reaped. For the
 * benchmark of a dump's stop (a process with both kinds of ring). */
static int opt_count(int argc, char **argv, const char *name)
{
	for (int i = 1; i + 1 < argc; i++)
		if (!strcmp(argv[i], name))
			return atoi(argv[i + 1]);
	return 0;
}

static void make_aio(int n)
{
	for (int i = 0; i < n; i++) {
		unsigned long ctx = 0;
		if (syscall(SYS_io_setup, 64, &ctx))
			die("io_setup", errno);
		printf("aio%d %lu\n", i, ctx);
	}
}

static void make_plain(int n)
{
	for (int i = 0; i < n; i++) {
		struct io_uring *r = calloc(1, sizeof(*r));
		int rc = r ? io_uring_queue_init(64, r, 0) : -ENOMEM;
		if (rc)
			die("io_uring_queue_init plain", rc);
		nops(r, 8, 1);
		io_uring_cq_advance(r, 5);
		printf("plain%d.fd %d\n", i, r->ring_fd);
	}
}

/* --orphan: one more instance whose fd is closed once it is mapped: the
 * process holds it only through its mappings. */
static void make_orphan(void)
{
	struct io_uring *r = calloc(1, sizeof(*r));
	int rc = r ? io_uring_queue_init(4, r, 0) : -ENOMEM;
	if (rc)
		die("io_uring_queue_init orphan", rc);
	printf("orphan.closed_fd %d\n", r->ring_fd);
	close(r->ring_fd);
}

/* --act: instead of only waiting, change instance a when told, so that a
 * test can make a difference between an image and the process by
 * construction: SIGUSR1 reaps one CQE, SIGUSR2 submits the prepared SQEs
 * and waits for their CQEs. Each prints what it did, then "DONE". The
 * signals are blocked in every thread and taken here only. */
static void act(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	for (;;) {
		int sig = sigwaitinfo(&set, NULL);
		if (sig == SIGUSR1) {
			io_uring_cq_advance(&a, 1);
			printf("a.cq_head %u\n", *a.cq.khead);
		} else if (sig == SIGUSR2) {
			int rc = io_uring_submit_and_wait(&a, 1);
			if (rc < 0)
				die("io_uring_submit_and_wait", rc);
			printf("a.sq_tail %u\na.cq_tail %u\n", *a.sq.ktail, *a.cq.ktail);
		} else {
			continue;
		}
		printf("DONE\n");
	}
}

static int has_opt(int argc, char **argv, const char *name)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], name))
			return 1;
	return 0;
}


static struct io_uring e;
#define E_POLL_DATA 0xe0e0beef00000001ull
/* --timeout's TIMEOUTs (e_timeouts) */
#ifndef IORING_TIMEOUT_MULTISHOT /* Linux 6.4; Debian's liburing 2.3 headers predate it */
#define IORING_TIMEOUT_MULTISHOT (1U << 6)
#endif
#define E_TMO_REL 0x7e57ull
#define E_TMO_COUNT 0x7e58ull
#define E_TMO_MULTI 0x7e59ull
#define E_TMO_ABS 0x7e5aull
#define E_TMO_OPS 0x7e00ull /* the update and removes after the restore */

/* n NOPs through e, each reaped: its counters moved to n. */
static void advance(struct io_uring *r, unsigned long n)
{
	while (n) {
		unsigned k = n > 8 ? 8 : (unsigned)n;
		for (unsigned i = 0; i < k; i++)
			io_uring_prep_nop(io_uring_get_sqe(r));
		int rc = io_uring_submit(r);
		if (rc != (int)k)
			die("io_uring_submit (advance)", rc < 0 ? rc : EIO);
		io_uring_cq_advance(r, k);
		n -= k;
	}
}

static void print_fd(const char *name, int fd)
{
	char path[64], link[64] = "";
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ssize_t len = readlink(path, link, sizeof(link) - 1);
	int fl = fcntl(fd, F_GETFD);
	printf("%s.fd_is_uring %d\n%s.cloexec %d\n", name,
	       len > 0 && !strncmp(link, "anon_inode:[io_uring]", 21), name,
	       fl >= 0 && (fl & FD_CLOEXEC));
}

static int registered;
static unsigned e_entries = 8, e_flags;
static const char *e_evfd_mode; /* --eventfd */
static int e_personality, e_restricted, e_dontfork, e_ring_fd, e_buf_ring, e_timeout;

/* --restricted: e's restrictions, then e enabled. */
static void restrict_e(void)
{
	struct io_uring_restriction r[2] = {
		{ .opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_NOP },
		{ .opcode = IORING_RESTRICTION_SQE_OP, .sqe_op = IORING_OP_POLL_ADD },
	};
	/* Debian's liburing 2.3 declares io_uring_register_restrictions and
	 * io_uring_enable_rings but does not export them: raw calls. */
	long rc = syscall(SYS_io_uring_register, e.ring_fd, IORING_REGISTER_RESTRICTIONS, r, 2);
	if (rc || (rc = syscall(SYS_io_uring_register, e.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0)))
		die("restrictions e", errno);
}
static int e_evfd = -1;

/* What the eventfd counted since it was last read (0: nothing). */
static unsigned long long drain_eventfd(void)
{
	uint64_t v = 0;
	if (read(e_evfd, &v, sizeof(v)) != sizeof(v))
		v = 0; /* EAGAIN: nothing signalled */
	return (unsigned long long)v;
}
static struct iovec e_iov[2];

/* --registered: files (the pipe's read end, an empty slot, /dev/null) and
 * two buffers, as a: used by fixed-file, fixed-buffer I/O after. */
static void register_e(void)
{
	int files[3] = { pipe_fd[0], -1, open("/dev/null", O_RDWR) }, rc;
	if ((rc = io_uring_register_files(&e, files, 3)))
		die("register_files e", rc);
	e_iov[0] = (struct iovec){ aligned_alloc(4096, 4096), 4096 };
	e_iov[1] = (struct iovec){ aligned_alloc(4096, 8192), 8192 };
	if ((rc = io_uring_register_buffers(&e, e_iov, 2)))
		die("register_buffers e", rc);
}

/* A write from registered buffer 1 to registered file 2 (/dev/null):
 * its result. */
static int fixed_io(void)
{
	struct io_uring_cqe *cqe;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&e);
	io_uring_prep_write_fixed(sqe, 2, e_iov[1].iov_base, (unsigned)e_iov[1].iov_len, 0, 1);
	sqe->flags |= IOSQE_FIXED_FILE;
	int rc = io_uring_submit_and_wait(&e, 1);
	if (rc < 0 || io_uring_wait_cqe(&e, &cqe))
		die("fixed io", rc);
	int res = cqe->res;
	printf("fixed_io %d\n", res);
	io_uring_cqe_seen(&e, cqe);
	return res;
}

/* e as it was when lost, for use_e's own verdict on what a restore gave
 * back: a line "VERIFY OK", or "VERIFY FAILED: " and the first
 * difference (the survival spec, which restores it many times, reads
 * only that line). */
static struct {
	int fd, cloexec;
	unsigned sq_entries, cq_entries, ncqes, nprepared;
	unsigned long long cqe_data[8], prepared[8];
	int cqe_res[8];
	int enter_ring_fd;
	unsigned char int_flags;
} lost;
static char failed[160];

static void failure(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (!failed[0])
		vsnprintf(failed, sizeof(failed), fmt, ap);
	va_end(ap);
}

static void remember_e(void)
{
	lost.fd = e.ring_fd, lost.cloexec = fcntl(e.ring_fd, F_GETFD) & FD_CLOEXEC;
	lost.sq_entries = *e.sq.kring_entries, lost.cq_entries = *e.cq.kring_entries;
	lost.enter_ring_fd = e.enter_ring_fd, lost.int_flags = e.int_flags;
	for (unsigned h = *e.cq.khead; h != *e.cq.ktail && lost.ncqes < 8; h++, lost.ncqes++) {
		struct io_uring_cqe *c = &e.cq.cqes[h & *e.cq.kring_mask];
		lost.cqe_data[lost.ncqes] = c->user_data, lost.cqe_res[lost.ncqes] = c->res;
	}
	for (unsigned t = e.sq.sqe_head; t != e.sq.sqe_tail && lost.nprepared < 8; t++)
		lost.prepared[lost.nprepared++] = e.sq.sqes[t & *e.sq.kring_mask].user_data;
}

/* The instance at e's fd is the one mapped where liburing looks: the
 * inode of its fd and of the mapping at the SQ ring agree. */
static int mapped_from_fd(void)
{
	struct stat st;
	char line[512];
	unsigned long long lo, hi, ino = 0, at = (unsigned long long)(uintptr_t)e.sq.ring_ptr;
	FILE *f = fopen("/proc/self/maps", "r");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "%llx-%llx %*s %*s %*s %llu", &lo, &hi, &ino) == 3 && lo <= at && at < hi)
			break;
		else
			ino = 0;
	if (f)
		fclose(f);
	return ino && !fstat(e.ring_fd, &st) && st.st_ino == ino;
}

/* A completion of use_e: one of the prepared NOPs (res 0) or the POLL
 * (POLLIN), each once. */
static void completed(unsigned long long data, int res, unsigned *seen)
{
	for (unsigned k = 0; k < lost.nprepared; k++)
		if (data == lost.prepared[k] && !(*seen & 1u << k) && res == 0) {
			*seen |= 1u << k;
			return;
		}
	if (data == E_POLL_DATA && !(*seen & 1u << 8) && res == POLLIN)
		*seen |= 1u << 8;
	else if (data == E_TMO_COUNT && !(*seen & 1u << 9) && res == 0) {
		/* its count (3 left) ends it after the NOPs and the POLL */
		if ((*seen & 0x103) != 0x103)
			failure("the count TIMEOUT ended before its 3 completions (seen 0x%x)", *seen);
		*seen |= 1u << 9;
	} else
		failure("completion %llu res %d is none of those awaited", data, res);
}

/* One read of /dev/zero into a buffer of e's group 7: its buffer id
 * (res, the bytes read, in *res), or -1 with no buffer. */
static int e_buffer_read(int *res)
{
	static int zero_fd = -1;
	struct io_uring_cqe *cqe;
	if (zero_fd < 0 && (zero_fd = open("/dev/zero", O_RDONLY | O_CLOEXEC)) < 0)
		die("/dev/zero", errno);
	struct io_uring_sqe *sqe = io_uring_get_sqe(&e);
	io_uring_prep_read(sqe, zero_fd, NULL, 16, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = 7;
	io_uring_sqe_set_data64(sqe, 0xb0f);
	int rc = io_uring_submit_and_wait(&e, 1);
	if (rc < 0 || (rc = io_uring_wait_cqe(&e, &cqe)))
		die("buffer-select read e", rc);
	*res = cqe->res;
	int bid = cqe->flags & IORING_CQE_F_BUFFER ? (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT) : -1;
	io_uring_cqe_seen(&e, cqe);
	return bid;
}

/* --buf-ring: group 7's ring (the program's memory, 8 buffers of 64
 * bytes) registered on e, all 8 provided, 3 used (buffers 0, 1, 2): the
 * kernel's head is 3 at the dump ("e.buf_head 3"). */
static void *e_mmap_ring; /* --buf-ring-mmap: the ring is the kernel's, mapped here */

/* Group 7's ring in the kernel's memory (IOU_PBUF_RING_MMAP), mapped at
 * IORING_OFF_PBUF_RING | 7 << 16: raw calls, liburing 2.3 knows neither. */
static struct io_uring_buf_ring *e_kernel_ring(void)
{
	struct { __u64 ring_addr; __u32 ring_entries; __u16 bgid, flags; __u64 resv[3]; } reg = {
		.ring_entries = 8, .bgid = 7, .flags = 1 /* IOU_PBUF_RING_MMAP */ };
	if (syscall(SYS_io_uring_register, e.ring_fd, IORING_REGISTER_PBUF_RING, &reg, 1))
		die("IORING_REGISTER_PBUF_RING | IOU_PBUF_RING_MMAP e", errno);
	e_mmap_ring = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, e.ring_fd,
			   0x80000000ull | 7ull << 16);
	if (e_mmap_ring == MAP_FAILED)
		die("mmap of e's buffer ring", errno);
	return e_mmap_ring;
}

static char e_bufs[8][64]; /* group 7's buffers (a ring's or legacy) */

/* --provide-buffers: group 7 as legacy provided buffers (8 of them). */
static void e_legacy_buffers(void)
{
	struct io_uring_cqe *cqe;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&e);
	io_uring_prep_provide_buffers(sqe, e_bufs, sizeof(e_bufs[0]), 8, 7, 0);
	int rc = io_uring_submit_and_wait(&e, 1);
	if (rc < 0 || (rc = io_uring_wait_cqe(&e, &cqe)) || (rc = cqe->res) < 0)
		die("provide_buffers e", rc < 0 ? rc : EIO);
	io_uring_cqe_seen(&e, cqe);
}

/* --buf-ring-moved: the ring's memory touched, then moved by mremap
 * before it is registered (its pages keep the index of where they were
 * touched). */
static struct io_uring_buf_ring *e_moved_memory(void)
{
	void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	void *to = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED || to == MAP_FAILED)
		die("mmap", errno);
	memset(m, 0, 4096);
	void *r = mremap(m, 4096, 4096, MREMAP_MAYMOVE | MREMAP_FIXED, to);
	if (r == MAP_FAILED)
		die("mremap", errno);
	return r;
}

/* --buf-ring-inc: group 7's ring in the program's memory, incremental
 * (IOU_PBUF_RING_INC, Linux 6.12; a raw call): a read uses a buffer
 * partly, the kernel keeps what is left in the ring's entry. */
static void e_register_inc(struct io_uring_buf_ring *br)
{
	struct { __u64 ring_addr; __u32 ring_entries; __u16 bgid, flags; __u64 resv[3]; } reg = {
		.ring_addr = (unsigned long)br, .ring_entries = 8, .bgid = 7, .flags = 2 };
	if (syscall(SYS_io_uring_register, e.ring_fd, IORING_REGISTER_PBUF_RING, &reg, 1))
		die("IORING_REGISTER_PBUF_RING | IOU_PBUF_RING_INC e", errno);
}

/* The buffer the next read takes: buffer 3 (0-2 used up), or with an
 * incremental ring buffer 0 again, whose last 16 bytes are left. */
static int e_next_bid(void)
{
	return e_buf_ring == 5 ? 0 : 3;
}

/* kind: 1 the program's memory, 2 the kernel's (mmapped), 3 the
 * program's memory moved before it was registered, 5 the program's
 * memory, incremental. 3 reads of 16 bytes before the dump. */
static void e_buffers(int kind)
{
	char (*bufs)[64] = e_bufs;
	struct io_uring_buf_ring *br = kind == 2 ? e_kernel_ring() : kind == 3 ? e_moved_memory() :
				       aligned_alloc(4096, 4096);
	io_uring_buf_ring_init(br);
	struct io_uring_buf_reg reg = { .ring_addr = (unsigned long)br, .ring_entries = 8, .bgid = 7 };
	int rc = kind == 2 ? 0 : kind == 5 ? (e_register_inc(br), 0) : io_uring_register_buf_ring(&e, &reg, 0);
	if (rc)
		die("io_uring_register_buf_ring e", rc);
	for (int i = 0; i < 8; i++)
		io_uring_buf_ring_add(br, bufs[i], sizeof(bufs[i]), (unsigned short)i,
				      io_uring_buf_ring_mask(8), i);
	io_uring_buf_ring_advance(br, 8);
	for (int i = 0; i < 3; i++) {
		int res, bid = e_buffer_read(&res);
		if (bid != (kind == 5 ? 0 : i) || res != 16)
			die("buffer-select read e: not the next buffer", EIO);
	}
	printf("e.buf_ring %lu\ne.buf_head %d\n", (unsigned long)br, kind == 5 ? 0 : 3);
}

/* --timeout: four TIMEOUTs in flight on e, none due for 10 minutes:
 * E_TMO_REL relative with ETIME_SUCCESS; E_TMO_COUNT also ending after 8
 * completions (leave_state's five NOPs come after it: 3 left at the
 * dump); E_TMO_MULTI multishot, a 10-minute period, 5 repeats;
 * E_TMO_ABS absolute on CLOCK_BOOTTIME. */

static void e_timeouts(void)
{
	static struct __kernel_timespec min10 = { 600, 0 }, abs;
	struct timespec now;
	clock_gettime(CLOCK_BOOTTIME, &now);
	abs.tv_sec = now.tv_sec + 600, abs.tv_nsec = now.tv_nsec;
	io_uring_prep_timeout(sqe_of(&e, E_TMO_REL), &min10, 0, IORING_TIMEOUT_ETIME_SUCCESS);
	io_uring_prep_timeout(sqe_of(&e, E_TMO_COUNT), &min10, 8, 0);
	io_uring_prep_timeout(sqe_of(&e, E_TMO_MULTI), &min10, 5, IORING_TIMEOUT_MULTISHOT);
	io_uring_prep_timeout(sqe_of(&e, E_TMO_ABS), &abs, 0, IORING_TIMEOUT_ABS | IORING_TIMEOUT_BOOTTIME);
	int rc = io_uring_submit(&e);
	if (rc != 4)
		die("submit timeouts e", rc < 0 ? rc : EIO);
	printf("e.tmo_rel %llu\ne.tmo_count %llu\ne.tmo_multi %llu\ne.tmo_abs %llu\n", E_TMO_REL,
	       E_TMO_COUNT, E_TMO_MULTI, E_TMO_ABS);
}

/* After the restore, with the completions use_e waited for (the count
 * TIMEOUT among them, last): the relative one brought forward to 1 ms
 * (IORING_TIMEOUT_UPDATE) expires with -ETIME; the multishot and ABS ones
 * removed end with -ECANCELED: each one's CQE printed "tmo.USER_DATA RES",
 * each operation's "tmo_opN RES". */
static void timeouts_used(void)
{
	static struct __kernel_timespec ms1 = { 0, 1000000 };
	struct io_uring_sqe *sqe = io_uring_get_sqe(&e);
	io_uring_prep_timeout_update(sqe, &ms1, E_TMO_REL, 0);
	io_uring_sqe_set_data64(sqe, E_TMO_OPS);
	sqe = io_uring_get_sqe(&e);
	io_uring_prep_timeout_remove(sqe, E_TMO_MULTI, 0);
	io_uring_sqe_set_data64(sqe, E_TMO_OPS + 1);
	sqe = io_uring_get_sqe(&e);
	io_uring_prep_timeout_remove(sqe, E_TMO_ABS, 0);
	io_uring_sqe_set_data64(sqe, E_TMO_OPS + 2);
	int rc = io_uring_submit(&e);
	if (rc != 3)
		die("submit timeout update and removes", rc < 0 ? rc : EIO);
	for (int i = 0; i < 6; i++) {
		struct io_uring_cqe *cqe;
		if ((rc = io_uring_wait_cqe(&e, &cqe)))
			die("io_uring_wait_cqe (timeouts)", rc);
		unsigned long long d = cqe->user_data;
		if (d >= E_TMO_OPS && d < E_TMO_OPS + 3)
			printf("tmo_op%llu %d\n", d - E_TMO_OPS, cqe->res);
		else
			printf("tmo.%llu %d\n", d, cqe->res);
		io_uring_cqe_seen(&e, cqe);
	}
}

/* --accept: a multishot ACCEPT (SOCK_CLOEXEC, no address asked) on a TCP
 * socket listening on 127.0.0.1 ("e.accept_port P"), and a single ACCEPT
 * asking the peer's address into peer/peer_len on a second one
 * ("e.accept1_port P"); --recv: a RECV of up to 64 bytes into recv_buf
 * on one end of a socketpair. */
#define E_ACCEPT 0xacce97ull
#define E_ACCEPT1 0xacce91ull
#define E_RECV 0x7ecfull
static int e_accept, e_recv, accept_port, accept1_port, recv_pair[2];
/* --recv-bufs: a multishot RECV and a single buffer-select RECV (up to
 * 32 bytes), both from group 7, each on its own socketpair; before the
 * dump the multishot one receives "early" (buffer 3, IORING_CQE_F_MORE),
 * so the group's head is 4 at the dump ("e.recv_head 4"). */
#define E_RECV_MS 0x7ecf35ull
#define E_RECV_BS 0x7ecfb5ull
static int e_recv_bufs, ms_pair[2], bs_pair[2];
static char recv_buf[64];
static struct sockaddr_in peer;
static socklen_t peer_len = sizeof(peer);

/* A TCP socket listening on 127.0.0.1: its fd, its port in *port. */
static int listening(int *port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 8) ||
	    getsockname(l, (struct sockaddr *)&a, &len))
		die("listening socket", errno);
	*port = ntohs(a.sin_port);
	return l;
}

static void next_cqe(unsigned long long *data, int *res, unsigned *flags);

static void recv_bufs_armed(void)
{
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, ms_pair) || socketpair(AF_UNIX, SOCK_STREAM, 0, bs_pair))
		die("socketpair", errno);
	struct io_uring_sqe *s = sqe_of(&e, E_RECV_MS);
	io_uring_prep_recv_multishot(s, ms_pair[0], NULL, 0, 0);
	s->flags |= IOSQE_BUFFER_SELECT;
	s->buf_group = 7;
	s = sqe_of(&e, E_RECV_BS);
	io_uring_prep_recv(s, bs_pair[0], NULL, 32, 0);
	s->flags |= IOSQE_BUFFER_SELECT;
	s->buf_group = 7;
	printf("e.recv_ms_fd %d\ne.recv_bs_fd %d\ne.recv_ms_data %llu\ne.recv_bs_data %llu\n", ms_pair[0],
	       bs_pair[0], E_RECV_MS, E_RECV_BS);
}

/* One CQE of a RECV from group 7 expected (user_data data, res bytes of
 * what, IORING_CQE_F_MORE or not): "NAME RES BID" and "NAME.more MORE
 * SAME" printed, SAME 1 when the bytes are in the buffer the CQE names;
 * the buffer id, or -1. */
static int recv_buf_cqe(const char *name, unsigned long long data, const char *what, int len, int more)
{
	unsigned long long d;
	int res;
	unsigned flags;
	next_cqe(&d, &res, &flags);
	int bid = flags & IORING_CQE_F_BUFFER ? (int)(flags >> IORING_CQE_BUFFER_SHIFT) : -1;
	int same = d == data && res == len && bid >= 0 && bid < 8 && !memcmp(e_bufs[bid], what, (size_t)len);
	printf("%s %d %d\n%s.more %d %d\n", name, res, bid, name, !!(flags & IORING_CQE_F_MORE), same);
	if (!same || !!(flags & IORING_CQE_F_MORE) != more)
		failure("%s: CQE %llu res %d flags 0x%x, not %d bytes of %llu in its buffer%s", name, d, res,
			flags, len, data, more ? " with IORING_CQE_F_MORE" : "");
	return bid;
}

static void send_on(int fd, const char *what, size_t len)
{
	if (write(fd, what, len) != (ssize_t)len)
		die("write (recv pair)", errno);
}

/* Before the dump: the multishot RECV receives "early" (buffer 3 of a
 * ring; a legacy group's own order otherwise), and is still armed. */
static void recv_bufs_early(void)
{
	send_on(ms_pair[1], "early", 5);
	int bid = recv_buf_cqe("e.recv_early", E_RECV_MS, "early", 5, 1);
	if (e_buf_ring != 4 && bid != 3)
		failure("the multishot RECV before the dump took buffer %d, not 3", bid);
	printf("e.recv_head %d\n", e_buf_ring == 4 ? -1 : 4);
}

/* The kernel's head of group 7 (IORING_REGISTER_PBUF_STATUS, Linux 6.8;
 * a raw call, liburing 2.3 predates it). */
static int group_head(void)
{
	struct { __u32 buf_group, head, resv[8]; } st = { .buf_group = 7 };
	if (syscall(SYS_io_uring_register, e.ring_fd, 26 /* IORING_REGISTER_PBUF_STATUS */, &st, 1))
		return -1;
	return (int)st.head;
}

/* After the restore: the multishot RECV receives twice (buffers 4 and
 * 6, IORING_CQE_F_MORE each time: still armed), the single one 32 of the
 * 40 bytes sent (its len kept; buffer 5, then ended); the group's head
 * 7 after ("recv_head 7"). */
static void recv_bufs_used(void)
{
	static const char forty[] = "0123456789abcdefghijklmnopqrstuvwxyzABCD";
	send_on(ms_pair[1], "after1", 6);
	recv_buf_cqe("recv_ms0", E_RECV_MS, "after1", 6, 1);
	send_on(bs_pair[1], forty, 40);
	recv_buf_cqe("recv_bs", E_RECV_BS, forty, 32, 0);
	send_on(ms_pair[1], "after2", 6);
	recv_buf_cqe("recv_ms1", E_RECV_MS, "after2", 6, 1);
	int head = group_head();
	printf("recv_head %d\n", head);
	if (head != 7)
		failure("group 7's head is %d after the RECVs, not 7", head);
}

static void e_sockets(void)
{
	if (e_accept) {
		int l = listening(&accept_port), l1 = listening(&accept1_port);
		io_uring_prep_multishot_accept(sqe_of(&e, E_ACCEPT), l, NULL, NULL, SOCK_CLOEXEC);
		io_uring_prep_accept(sqe_of(&e, E_ACCEPT1), l1, (struct sockaddr *)&peer, &peer_len, 0);
		printf("e.accept_port %d\ne.accept1_port %d\n", accept_port, accept1_port);
	}
	if (e_recv) {
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, recv_pair))
			die("socketpair", errno);
		io_uring_prep_recv(sqe_of(&e, E_RECV), recv_pair[0], recv_buf, sizeof(recv_buf), 0);
		printf("e.recv_fd %d\n", recv_pair[0]);
	}
	if (e_recv_bufs)
		recv_bufs_armed();
	int rc = io_uring_submit(&e);
	if (rc != 2 * e_accept + e_recv + 2 * e_recv_bufs)
		die("submit accept/recv e", rc < 0 ? rc : EIO);
	printf("e.accept_data %llu\ne.recv_data %llu\n", E_ACCEPT, E_RECV);
	if (e_recv_bufs)
		recv_bufs_early();
}

/* The next CQE, reaped: its user_data, res and flags. */
static void next_cqe(unsigned long long *data, int *res, unsigned *flags)
{
	struct io_uring_cqe *cqe;
	int rc = io_uring_wait_cqe(&e, &cqe);
	if (rc)
		die("io_uring_wait_cqe (sockets)", rc);
	*data = cqe->user_data, *res = cqe->res, *flags = cqe->flags;
	io_uring_cqe_seen(&e, cqe);
}

/* A connection to port on 127.0.0.1: its local port. */
static int connected(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int c = socket(AF_INET, SOCK_STREAM, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) ||
	    getsockname(c, (struct sockaddr *)&a, &len))
		die("connect", errno);
	return ntohs(a.sin_port);
}

/* After the restore: two connections to the multishot ACCEPT's socket,
 * each a CQE with a new fd and IORING_CQE_F_MORE (still armed): "acceptI
 * FD MORE"; one to the single ACCEPT's, whose CQE ends it and whose
 * peer address is written where the program asked ("accept_single MORE
 * SAME": SAME 1 when it names the connecting socket); then 5 bytes sent
 * on the pair: the RECV completes with them in recv_buf ("recv RES
 * SAME"). */
static void sockets_used(void)
{
	unsigned long long data;
	unsigned flags;
	int res;
	for (int i = 0; e_accept && i < 2; i++) {
		connected(accept_port);
		next_cqe(&data, &res, &flags);
		printf("accept%d %d %d\n", i, res, !!(flags & IORING_CQE_F_MORE));
		if (data != E_ACCEPT || res < 0 || !(flags & IORING_CQE_F_MORE))
			failure("connection %d: CQE %llu res %d flags 0x%x, not a multishot ACCEPT's", i, data,
				res, flags);
	}
	if (e_accept) {
		int port = connected(accept1_port);
		next_cqe(&data, &res, &flags);
		int same = data == E_ACCEPT1 && res >= 0 && peer_len == sizeof(peer) &&
			   peer.sin_family == AF_INET && ntohs(peer.sin_port) == port &&
			   peer.sin_addr.s_addr == htonl(INADDR_LOOPBACK);
		printf("accept_single %d %d\n", !!(flags & IORING_CQE_F_MORE), same);
		if (!same || (flags & IORING_CQE_F_MORE))
			failure("single ACCEPT: CQE %llu res %d flags 0x%x, peer port %d not %d", data, res,
				flags, ntohs(peer.sin_port), port);
	}
	if (e_recv_bufs)
		recv_bufs_used();
	if (e_recv) {
		if (write(recv_pair[1], "hello", 5) != 5)
			die("write (recv pair)", errno);
		next_cqe(&data, &res, &flags);
		int same = res == 5 && !memcmp(recv_buf, "hello", 5);
		printf("recv %d %d\n", res, same);
		if (data != E_RECV || !same)
			failure("RECV: CQE %llu res %d, not the 5 bytes sent", data, res);
	}
}

static void make_e(unsigned long n)
{
	struct io_uring_params p = { .flags = e_flags | (e_restricted ? IORING_SETUP_R_DISABLED : 0) };
	int rc = io_uring_queue_init_params(e_entries, &e, &p);
	if (rc)
		die("io_uring_queue_init e", rc);
	if (e_restricted)
		restrict_e();
	if (e_dontfork && (rc = io_uring_ring_dontfork(&e)))
		die("io_uring_ring_dontfork e", rc);
	if (e_ring_fd && (rc = io_uring_register_ring_fd(&e)) != 1)
		die("io_uring_register_ring_fd e", rc);
	if (e_ring_fd)
		printf("e.ringfd %ld %d\n", (long)syscall(SYS_gettid), e.enter_ring_fd);
	if (e_buf_ring == 4)
		e_legacy_buffers();
	else if (e_buf_ring)
		e_buffers(e_buf_ring);
	if (e_personality && (rc = io_uring_register_personality(&e)) < 0)
		die("register personality e", rc);
	if (registered)
		register_e();
	if (e_evfd_mode) {
		e_evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		rc = !strcmp(e_evfd_mode, "async") ? io_uring_register_eventfd_async(&e, e_evfd)
						    : io_uring_register_eventfd(&e, e_evfd);
		if (e_evfd < 0 || rc)
			die("register eventfd e", rc ? rc : errno);
		printf("e.eventfd %d\n", e_evfd);
	}
	advance(&e, n);
	if (e_timeout)
		e_timeouts();
	if (e_accept || e_recv || e_recv_bufs)
		e_sockets();
	leave_state(&e, E_POLL_DATA);
	print_ring("e", &e);
	print_fd("e", e.ring_fd);
	printf("e.poll_data %llu\n", (unsigned long long)E_POLL_DATA);
	remember_e();
}

/* e used as the program would after a restore: each line a result. */
/* --second: instance e2 beside e (for a restore of two instances):
 * flags 0, 8 entries, three NOPs done of which the first reaped, one NOP
 * prepared; lost with e, used after e (its unreaped CQEs in order, the
 * prepared NOP submitted and completed, queue_exit). */
#define E2_DATA 0xe200u
static int second;
static struct io_uring e2;
static struct { int fd; void *sq_ring, *cq_ring; } lost2;

static void make_e2(void)
{
	struct io_uring_cqe *cqe;
	int rc = io_uring_queue_init(8, &e2, 0);
	if (rc)
		die("io_uring_queue_init e2", -rc);
	for (unsigned i = 0; i < 3; i++) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&e2);
		io_uring_prep_nop(sqe);
		sqe->user_data = E2_DATA + i;
	}
	if ((rc = io_uring_submit_and_wait(&e2, 3)) != 3)
		die("io_uring_submit e2", rc < 0 ? -rc : EIO);
	if ((rc = io_uring_peek_cqe(&e2, &cqe)) || cqe->user_data != E2_DATA)
		die("e2's first CQE", rc ? -rc : EIO);
	io_uring_cqe_seen(&e2, cqe);
	struct io_uring_sqe *sqe = io_uring_get_sqe(&e2); /* prepared, not submitted */
	io_uring_prep_nop(sqe);
	sqe->user_data = E2_DATA + 3;
	lost2.fd = e2.ring_fd, lost2.sq_ring = e2.sq.ring_ptr, lost2.cq_ring = e2.cq.ring_ptr;
	printf("e2.fd %d\ne2.sq_ring %llu\n", e2.ring_fd, (unsigned long long)(uintptr_t)e2.sq.ring_ptr);
}

/* e2 as the program goes on with it: why it is not as it was lost, or
 * nothing (failure()). */
static void use_e2(void)
{
	struct io_uring_cqe *cqe;
	char link[64], path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", e2.ring_fd);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	link[n > 0 ? n : 0] = 0;
	if (e2.ring_fd != lost2.fd || strcmp(link, "anon_inode:[io_uring]") || e2.sq.ring_ptr != lost2.sq_ring) {
		failure("e2: fd %d (%s) is not its io_uring instance as lost", e2.ring_fd, link);
		return;
	}
	for (unsigned i = 1; i < 4; i++) {
		if (i == 3 && io_uring_submit(&e2) != 1) {
			failure("e2: its prepared NOP not submitted");
			return;
		}
		if (io_uring_wait_cqe(&e2, &cqe) || cqe->user_data != E2_DATA + i) {
			failure("e2: CQE %u not %#x", i, E2_DATA + i);
			return;
		}
		io_uring_cqe_seen(&e2, cqe);
	}
	io_uring_queue_exit(&e2);
	printf("e2_used 1\n");
}

static void use_e(void)
{
	struct io_uring_cqe *cqe;
	alarm(60); /* a rebuilt instance that never completes fails the test, not hangs it */
	print_ring("after", &e);
	print_fd("after", e.ring_fd);
	int fl = fcntl(e.ring_fd, F_GETFD);
	if (fl < 0 || (fl & FD_CLOEXEC) != lost.cloexec || !mapped_from_fd())
		failure("fd %d is not the instance mapped at its SQ ring, or its close-on-exec changed",
			e.ring_fd);
	else if (*e.sq.kring_entries != lost.sq_entries || *e.cq.kring_entries != lost.cq_entries)
		failure("%u/%u entries, were %u/%u", *e.sq.kring_entries, *e.cq.kring_entries,
			lost.sq_entries, lost.cq_entries);
	unsigned i = 0;
	while (io_uring_peek_cqe(&e, &cqe) == 0) {
		printf("reaped%u %llu %d\n", i, (unsigned long long)cqe->user_data, cqe->res);
		if (i >= lost.ncqes || cqe->user_data != lost.cqe_data[i] || cqe->res != lost.cqe_res[i])
			failure("unreaped CQE %u: %llu %d, not as lost", i, (unsigned long long)cqe->user_data,
				cqe->res);
		i++;
		io_uring_cqe_seen(&e, cqe);
	}
	if (i != lost.ncqes)
		failure("%u unreaped CQEs, %u when lost", i, lost.ncqes);
	if (e_evfd >= 0)
		printf("eventfd_before %llu\n", drain_eventfd());
	int submitted = io_uring_submit(&e);
	printf("submitted %d\n", submitted);
	if (submitted != (int)lost.nprepared)
		failure("%d SQEs submitted, %u were prepared", submitted, lost.nprepared);
	if (write(pipe_fd[1], "x", 1) != 1)
		die("write", errno);
	unsigned seen = 0;
	for (i = 0; i < lost.nprepared + 1 + (unsigned)e_timeout; i++) {
		int rc = io_uring_wait_cqe(&e, &cqe);
		if (rc)
			die("io_uring_wait_cqe", rc);
		printf("completed%u %llu %d\n", i, (unsigned long long)cqe->user_data, cqe->res);
		completed(cqe->user_data, cqe->res, &seen);
		io_uring_cqe_seen(&e, cqe);
	}
	if (e_ring_fd) /* the submits above went through the registered ring fd */
		printf("after.ringfd %d %d\n", e.enter_ring_fd, e.int_flags & 1);
	if (e_buf_ring && !e_recv_bufs) { /* the next buffer is the one after those used before the dump */
		int res, bid = e_buffer_read(&res);
		printf("buf_bid %d %d\n", bid, res);
		if (bid != e_next_bid() || res != 16)
			failure("buffer-select read after: buffer %d (%d bytes), not buffer %d (16)", bid, res,
				e_next_bid());
		for (int k = 0; e_buf_ring == 5 && k < 2; k++) /* still incremental: buffer 1 used partly twice */
			if ((bid = e_buffer_read(&res)) != 1 || res != 16)
				failure("incremental read %d after: buffer %d (%d bytes), not buffer 1", k, bid, res);
	}
	if (e_timeout)
		timeouts_used();
	sockets_used();
	int wrote = registered ? fixed_io() : 0;
	if (registered && wrote != (int)e_iov[1].iov_len)
		failure("fixed-file write from a fixed buffer: %d", wrote);
	if (e_evfd >= 0)
		printf("eventfd_after %llu\n", drain_eventfd());
	alarm(0);
	io_uring_queue_exit(&e);
	int gone = fcntl(e.ring_fd, F_GETFD) < 0 && errno == EBADF;
	printf("exit %d\n", gone);
	if (!gone)
		failure("fd %d still open after io_uring_queue_exit", e.ring_fd);
	if (second)
		use_e2();
	printf(failed[0] ? "VERIFY FAILED: %s\n" : "VERIFY OK\n", failed);
}

static int bad_poll, bad_recv;
static int forget; /* --forget: the lost instance's struct wiped, as a program keeping its counters elsewhere */
static unsigned long lose_n;
static unsigned shift;

/* A thread that never makes a system call: always in its own code. */
static void *spin(void *unused)
{
	(void)unused;
	for (volatile unsigned long n = 0;; n++)
		;
	return NULL;
}

static void spin_thread(void)
{
	pthread_t t;
	sigset_t s; /* inherited: the signals are the main thread's to take */
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	sigaddset(&s, SIGUSR2);
	sigaddset(&s, SIGHUP);
	sigprocmask(SIG_BLOCK, &s, NULL);
	if (pthread_create(&t, NULL, spin, NULL))
		die("pthread_create", EAGAIN);
}

/* --lose N: e made, then lost and used on signals (sigwaitinfo: the
 * thread waits in a system call, as a restore's rebase asks). */
__attribute__((noreturn)) static void lose_in_this_thread(unsigned long n)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	sigaddset(&s, SIGUSR2);
	sigaddset(&s, SIGHUP);
	make_e(n);
	if (second)
		make_e2();
	printf("READY\n");
	for (;;) {
		int sig = sigwaitinfo(&s, NULL);
		if (sig == SIGHUP) {
			/* the pipe's read end (a registered file, the POLL's fd)
			 * becomes another file at the same fd: what a program
			 * may do between a restore's look and its stop */
			int z = open("/dev/zero", O_RDONLY);
			if (z < 0 || dup2(z, pipe_fd[0]) < 0)
				die("dup2 /dev/zero", errno);
			close(z);
			printf("MOVED\n");
		} else if (sig == SIGUSR1) {
			if (e_evfd >= 0)
				drain_eventfd(); /* what its NOPs signalled */
			io_uring_queue_exit(&e);
			/* liburing forgets a registered ring fd as it unregisters
			 * it: the program that lost its instance had not. */
			e.enter_ring_fd = lost.enter_ring_fd, e.int_flags = lost.int_flags;
			if (e_mmap_ring) /* queue_exit leaves it; it holds the instance */
				munmap(e_mmap_ring, 4096);
			/* The POLL in flight is cancelled by the ring's exit work,
			 * later, and its CQE signals the eventfd: waited for, so
			 * that what is read after the restore is the restored
			 * instance's alone. */
			if (e_evfd >= 0 && strcmp(e_evfd_mode, "async")) { /* async: io-wq's alone */
				struct pollfd pf = { e_evfd, POLLIN, 0 };
				if (poll(&pf, 1, 10000) != 1)
					die("the lost instance's cancelled POLL never signalled", ETIMEDOUT);
				printf("lost_eventfd %llu\n", drain_eventfd());
			}
			if (bad_poll) /* its POLL cannot be armed again: a restore fails late */
				close(pipe_fd[0]);
			if (bad_recv) /* its RECV cannot: a restore fails last */
				close(recv_pair[0]);
			/* As if it had run `shift` more NOPs before the dump (the test
			 * moves the image the same way): liburing's copies with it. */
			e.sq.sqe_head += shift, e.sq.sqe_tail += shift;
			if (forget)
				memset(&e, 0, sizeof(e));
			if (second)
				io_uring_queue_exit(&e2); /* its struct kept */
			printf("LOST\n");
		} else if (sig == SIGUSR2) {
			use_e();
			printf("CHECKED\n");
		}
	}
}

static void *lose_thread(void *unused)
{
	(void)unused;
	printf("owner %d\n", (int)gettid());
	lose_in_this_thread(lose_n);
}

/* The signals blocked in every thread (sigwaitinfo takes them), e made
 * in this thread or, for a single issuer, in its own owner thread. */
__attribute__((noreturn)) static void lose(unsigned long n)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	sigaddset(&s, SIGUSR2);
	sigaddset(&s, SIGHUP);
	sigprocmask(SIG_BLOCK, &s, NULL);
	if (!(e_flags & IORING_SETUP_SINGLE_ISSUER))
		lose_in_this_thread(n);
	pthread_t t;
	lose_n = n;
	if (pthread_create(&t, NULL, lose_thread, NULL))
		die("pthread_create", EAGAIN);
	pthread_join(t, NULL);
	exit(1);
}

/* --disk DEV K FLAGS: instance f alone, set up with FLAGS (0,
 * IORING_SETUP_COOP_TASKRUN, or SINGLE_ISSUER | DEFER_TASKRUN), K O_DIRECT
 * reads of DEV's blocks 0..K-1 (user_data F_READ_DATA + i) submitted at
 * once and left in flight (a test throttles DEV so that they stay there),
 * then READY. SIGUSR2 reaps the K completions, each checked (4096 bytes,
 * block i's filling byte i+1) and prints "disk_ok N" (the good ones), then
 * "DONE". --join PROCS first joins that cgroup (its blkio throttle). */
#define F_READ_DATA 0xd15c000000000000ull

static struct io_uring f;

static void reap_f(unsigned k, unsigned char **buf)
{
	unsigned ok = 0;
	for (unsigned i = 0; i < k; i++) {
		struct io_uring_cqe *cqe;
		int rc = io_uring_wait_cqe(&f, &cqe);
		if (rc)
			die("io_uring_wait_cqe f", rc);
		unsigned long long n = cqe->user_data - F_READ_DATA;
		ok += n < k && cqe->res == 4096 && buf[n][0] == (unsigned char)(n + 1) &&
		      buf[n][4095] == (unsigned char)(n + 1);
		io_uring_cqe_seen(&f, cqe);
	}
	printf("disk_ok %u\nDONE\n", ok);
}

__attribute__((noreturn)) static void disk(const char *dev, unsigned k, unsigned flags)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	sigprocmask(SIG_BLOCK, &s, NULL);
	int fd = open(dev, O_RDONLY | O_DIRECT), rc;
	if (fd < 0)
		die(dev, errno);
	if ((rc = io_uring_queue_init(k < 8 ? 8 : k, &f, flags)))
		die("io_uring_queue_init f", rc);
	unsigned char **buf = calloc(k, sizeof(*buf));
	for (unsigned i = 0; i < k; i++) {
		buf[i] = aligned_alloc(4096, 4096);
		struct io_uring_sqe *sqe = io_uring_get_sqe(&f);
		io_uring_prep_read(sqe, fd, buf[i], 4096, (unsigned long long)i * 4096);
		io_uring_sqe_set_data64(sqe, F_READ_DATA + i);
	}
	if ((rc = io_uring_submit(&f)) != (int)k)
		die("io_uring_submit f", rc < 0 ? rc : EIO);
	printf("f.fd %d\nf.flags %u\nREADY\n", f.ring_fd, f.flags);
	for (;;)
		if (sigwaitinfo(&s, NULL) == SIGUSR2)
			reap_f(k, buf);
}

static void join(int argc, char **argv)
{
	for (int i = 1; i + 1 < argc; i++) {
		if (strcmp(argv[i], "--join"))
			continue;
		FILE *p = fopen(argv[i + 1], "w");
		if (!p || fprintf(p, "%d\n", (int)getpid()) < 0 || fclose(p))
			die(argv[i + 1], errno);
	}
}

int main(int argc, char **argv)
{
	/* The sanitizer build's specs preload its runtime for their LuaJIT;
	 * in this process it would map terabytes of shadow that aiotk's scans
	 * of the process's memory (a rebase's search for liburing's copies)
	 * would walk. Dropped here, keeping the PID, as aio_workload-plain
	 * does for the AIO workload. */
	if (getenv("LD_PRELOAD")) {
		unsetenv("LD_PRELOAD");
		execv("/proc/self/exe", argv);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	int acting = has_opt(argc, argv, "--act");
	extras = has_opt(argc, argv, "--extras");
	waiting = has_opt(argc, argv, "--waiting");
	if (acting) {
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, SIGUSR1);
		sigaddset(&set, SIGUSR2);
		pthread_sigmask(SIG_BLOCK, &set, NULL);
	}
	if (pipe(pipe_fd))
		die("pipe", errno);
	printf("pid %d\n", (int)getpid());
	join(argc, argv);
	if (argc >= 5 && !strcmp(argv[1], "--disk"))
		disk(argv[2], (unsigned)strtoul(argv[3], NULL, 0), (unsigned)strtoul(argv[4], NULL, 0));
	if (argc >= 3 && !strcmp(argv[1], "--lose")) {
		for (int i = 3; i < argc; i++)
			if (!strcmp(argv[i], "--spin"))
				spin_thread();
			else if (!strcmp(argv[i], "--bad-poll"))
				bad_poll = 1;
			else if (!strcmp(argv[i], "--bad-recv"))
				bad_recv = 1;
			else if (!strcmp(argv[i], "--second"))
				second = 1;
			else if (!strcmp(argv[i], "--forget"))
				forget = 1;
			else if (!strcmp(argv[i], "--timeout"))
				e_timeout = 1;
			else if (!strcmp(argv[i], "--accept"))
				e_accept = 1;
			else if (!strcmp(argv[i], "--recv"))
				e_recv = 1;
			else if (!strcmp(argv[i], "--recv-bufs"))
				e_recv_bufs = 1;
			else if (!strcmp(argv[i], "--entries") && i + 1 < argc)
				e_entries = (unsigned)strtoul(argv[++i], NULL, 0);
			else if (!strcmp(argv[i], "--ring-fd"))
				e_ring_fd = 1;
			else if (!strcmp(argv[i], "--buf-ring"))
				e_buf_ring = 1;
			else if (!strcmp(argv[i], "--buf-ring-mmap"))
				e_buf_ring = 2;
			else if (!strcmp(argv[i], "--buf-ring-moved"))
				e_buf_ring = 3;
			else if (!strcmp(argv[i], "--provide-buffers"))
				e_buf_ring = 4;
			else if (!strcmp(argv[i], "--buf-ring-inc"))
				e_buf_ring = 5;
			else if (!strcmp(argv[i], "--dontfork"))
				e_dontfork = 1;
			else if (!strcmp(argv[i], "--personality"))
				e_personality = 1;
			else if (!strcmp(argv[i], "--restricted"))
				e_restricted = 1;
			else if (!strcmp(argv[i], "--eventfd") && i + 1 < argc)
				e_evfd_mode = argv[++i];
			else if (!strcmp(argv[i], "--flags") && i + 1 < argc)
				e_flags = (unsigned)strtoul(argv[++i], NULL, 0);
			else if (!strcmp(argv[i], "--registered"))
				registered = 1;
			else if (!strcmp(argv[i], "--shift") && i + 1 < argc)
				shift = (unsigned)strtoul(argv[++i], NULL, 0);
		lose(strtoul(argv[2], NULL, 0));
	}
	make_a();
	pthread_t t;
	if (pthread_create(&t, NULL, owner, NULL))
		die("pthread_create", EAGAIN);
	pthread_mutex_lock(&lock);
	while (!b_done)
		pthread_cond_wait(&made, &lock);
	pthread_mutex_unlock(&lock);
	make_c();
	if (extras)
		make_d();
	make_aio(opt_count(argc, argv, "--aio"));
	make_plain(opt_count(argc, argv, "--plain"));
	if (has_opt(argc, argv, "--orphan"))
		make_orphan();
	printf("READY\n");
	fflush(stdout);
	if (has_opt(argc, argv, "--stop-timeout")) {
		/* a's 300 ms TIMEOUT fires while the whole process is stopped: its
		 * completion waits as task work of this (stopped) thread */
		static struct __kernel_timespec ms300 = { .tv_nsec = 300000000 };
		io_uring_prep_timeout(sqe_of(&a, 0x7401), &ms300, 0, 0);
		int rc = io_uring_submit(&a); /* with a's two prepared NOPs */
		if (rc < 1)
			die("io_uring_submit a timeout", rc < 0 ? rc : EIO);
		raise(SIGSTOP);
	}
	if (acting)
		act();
	for (;;)
		pause();
}
