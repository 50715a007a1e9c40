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
 * With --lose N, instance e alone instead (for restore's tests): flags 0,
 * 8 entries, its counters first moved to N by NOPs; a POLL_ADD in flight
 * on a pipe, five NOPs done of which two reaped, two NOPs prepared. Then
 * SIGUSR1 loses it (io_uring_queue_exit, the struct kept: what a restore
 * puts back is what liburing still points at) and prints LOST; SIGUSR2
 * uses it as liburing would have (reap, submit the prepared, the POLL
 * completed by a write, queue_exit), printing each result, then CHECKED.
 * After N: --spin adds a thread that never makes a system call; --bad-poll
 * closes the POLL's fd when the instance is lost; --shift K moves
 * liburing's sq counters on by K then (the test's image moved alike: an
 * instance near 2^32 without 2^32 SQEs); --registered gives e registered
 * files and buffers, used after the restore by a fixed-file write from a
 * fixed buffer ("fixed_io RES"); --entries E sizes e (8 unless said). */
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
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <fcntl.h>

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
	pthread_mutex_lock(&lock);
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

static struct io_uring e;
#define E_POLL_DATA 0xe0e0beef00000001ull

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
static unsigned e_entries = 8;
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

/* A write from registered buffer 1 to registered file 2 (/dev/null). */
static void fixed_io(void)
{
	struct io_uring_cqe *cqe;
	struct io_uring_sqe *sqe = io_uring_get_sqe(&e);
	io_uring_prep_write_fixed(sqe, 2, e_iov[1].iov_base, (unsigned)e_iov[1].iov_len, 0, 1);
	sqe->flags |= IOSQE_FIXED_FILE;
	int rc = io_uring_submit_and_wait(&e, 1);
	if (rc < 0 || io_uring_wait_cqe(&e, &cqe))
		die("fixed io", rc);
	printf("fixed_io %d\n", cqe->res);
	io_uring_cqe_seen(&e, cqe);
}

static void make_e(unsigned long n)
{
	int rc = io_uring_queue_init(e_entries, &e, 0);
	if (rc)
		die("io_uring_queue_init e", rc);
	if (registered)
		register_e();
	advance(&e, n);
	leave_state(&e, E_POLL_DATA);
	print_ring("e", &e);
	print_fd("e", e.ring_fd);
	printf("e.poll_data %llu\n", (unsigned long long)E_POLL_DATA);
}

/* e used as the program would after a restore: each line a result. */
static void use_e(void)
{
	struct io_uring_cqe *cqe;
	alarm(60); /* a rebuilt instance that never completes fails the test, not hangs it */
	print_ring("after", &e);
	print_fd("after", e.ring_fd);
	unsigned i = 0;
	while (io_uring_peek_cqe(&e, &cqe) == 0) {
		printf("reaped%u %llu %d\n", i++, (unsigned long long)cqe->user_data, cqe->res);
		io_uring_cqe_seen(&e, cqe);
	}
	printf("submitted %d\n", io_uring_submit(&e));
	if (write(pipe_fd[1], "x", 1) != 1)
		die("write", errno);
	for (i = 0; i < 3; i++) {
		int rc = io_uring_wait_cqe(&e, &cqe);
		if (rc)
			die("io_uring_wait_cqe", rc);
		printf("completed%u %llu %d\n", i, (unsigned long long)cqe->user_data, cqe->res);
		io_uring_cqe_seen(&e, cqe);
	}
	if (registered)
		fixed_io();
	alarm(0);
	io_uring_queue_exit(&e);
	printf("exit %d\n", fcntl(e.ring_fd, F_GETFD) < 0 && errno == EBADF);
}

static int bad_poll;
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
	sigprocmask(SIG_BLOCK, &s, NULL);
	if (pthread_create(&t, NULL, spin, NULL))
		die("pthread_create", EAGAIN);
}

/* --lose N: e made, then lost and used on signals (sigwaitinfo: the main
 * thread waits in a system call, as a restore's rebase asks). */
__attribute__((noreturn)) static void lose(unsigned long n)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	sigaddset(&s, SIGUSR2);
	sigprocmask(SIG_BLOCK, &s, NULL);
	make_e(n);
	printf("READY\n");
	for (;;) {
		int sig = sigwaitinfo(&s, NULL);
		if (sig == SIGUSR1) {
			io_uring_queue_exit(&e);
			if (bad_poll) /* its POLL cannot be armed again: a restore fails late */
				close(pipe_fd[0]);
			/* As if it had run `shift` more NOPs before the dump (the test
			 * moves the image the same way): liburing's copies with it. */
			e.sq.sqe_head += shift, e.sq.sqe_tail += shift;
			printf("LOST\n");
		} else if (sig == SIGUSR2) {
			use_e();
			printf("CHECKED\n");
		}
	}
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (pipe(pipe_fd))
		die("pipe", errno);
	printf("pid %d\n", (int)getpid());
	if (argc >= 3 && !strcmp(argv[1], "--lose")) {
		for (int i = 3; i < argc; i++)
			if (!strcmp(argv[i], "--spin"))
				spin_thread();
			else if (!strcmp(argv[i], "--bad-poll"))
				bad_poll = 1;
			else if (!strcmp(argv[i], "--entries") && i + 1 < argc)
				e_entries = (unsigned)strtoul(argv[++i], NULL, 0);
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
	printf("READY\n");
	fflush(stdout);
	for (;;)
		pause();
}
