/* The guardian: what a SIGKILLed aiotk would otherwise leave changed: in a
 * process it had stopped, its main thread pinned to aiotk's CPU
 * (target_ptrace.c pins it while injecting: 20 us a call instead of
 * 80-140 across CPUs here); on the machine, fs.aio-max-nr raised for a
 * while (aio/limit.c).
 *
 * One process per aiotk, forked before its first stop, holds one end of a
 * socket pair. aiotk tells it of each pin before making it and of each
 * unpin once done; the socket ends when aiotk does, however it ends. A pin
 * still told then is undone: the thread gets its mask back, unless it is
 * no longer that thread (its start time differs: the tid was reused) or
 * its mask is no longer aiotk's pin (the process has set its own since).
 * A raise still told is put back, unless the limit is no longer aiotk's.
 * Then the guardian exits. An aiotk that exits normally has nothing
 * pinned, and reaps it.
 *
 * The guardian runs only async-signal-safe calls (it is forked from a
 * LuaJIT process) and keeps no descriptor but its socket, so it holds no
 * output open and no file of aiotk's. Until it has run that far it holds
 * what aiotk had open at the fork, for as long as the scheduler keeps it
 * waiting: whatever must end with aiotk (the CPU latency request) is
 * opened after this fork (target_ptrace.c). */
#define _GNU_SOURCE
#include "target/target.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define GUARD_MAX 64 /* threads pinned at once: one per target held */

struct guard_rec {
	int32_t tid;     /* a thread pinned; 0: fs.aio-max-nr's raise */
	int32_t pinned;  /* 1: about to be pinned (raised); 0: back */
	uint64_t start;  /* its start time (/proc/TID/stat), 0 unknown */
	cpu_set_t was, pin;
	uint64_t limit_was, limit_set;
};

/* One per process, as the guardian is: aiotk.h lists it among the
 * process-wide state; aiotk_guardian_pid (Lua: core.guardian()) shows it. */
static struct { int fd; pid_t pid; } guard = { -1, 0 };

static void undo(const struct guard_rec *r)
{
	cpu_set_t now;
	if (r->start && aiotk_thread_start(r->tid) != r->start)
		return;
	if (sched_getaffinity(r->tid, sizeof(now), &now) || !CPU_EQUAL(&now, &r->pin))
		return;
	sched_setaffinity(r->tid, sizeof(r->was), &r->was);
}

static void keep(struct guard_rec *held, size_t *n, const struct guard_rec *r)
{
	size_t i = 0;
	while (i < *n && held[i].tid != r->tid)
		i++;
	if (r->pinned && i < GUARD_MAX)
		held[i] = *r, *n += i == *n;
	else if (!r->pinned && i < *n)
		held[i] = held[--*n];
}

static __attribute__((noreturn)) void watch(int fd)
{
	static struct guard_rec held[GUARD_MAX];
	struct guard_rec r, limit = { 0 };
	size_t n = 0;
	for (;;) {
		ssize_t got = recv(fd, &r, sizeof(r), 0);
		if (got == (ssize_t)sizeof(r) && !r.tid) {
			limit = r;
			continue;
		}
		if (got == (ssize_t)sizeof(r)) {
			keep(held, &n, &r);
			continue;
		}
		if (got < 0 && errno == EINTR)
			continue;
		break; /* 0: aiotk is gone */
	}
	for (size_t i = 0; i < n; i++)
		undo(&held[i]);
	if (limit.pinned)
		aiotk_aio_max_nr_put_back(limit.limit_was, limit.limit_set);
	_exit(0);
}

static void stop_guard(void)
{
	if (guard.fd < 0)
		return;
	close(guard.fd);
	guard.fd = -1;
	waitpid(guard.pid, NULL, 0);
	guard.pid = 0;
}

int aiotk_guardian_start(void)
{
	int p[2];
	if (guard.fd >= 0)
		return 0;
	/* A socket, not a pipe: a send to a guardian that died fails with
	 * EPIPE instead of killing aiotk with SIGPIPE; records stay whole. */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p))
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		int e = errno;
		close(p[0]);
		close(p[1]);
		return -e;
	}
	if (pid == 0) {
		sigset_t all;
		sigfillset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		setsid(); /* signals to aiotk's process group are not for it */
		dup2(p[0], 0);
		if (syscall(SYS_close_range, 1, ~0U, 0)) /* before Linux 5.9 */
			for (int fd = 1; fd < 4096; fd++)
				close(fd);
		watch(0);
	}
	close(p[0]);
	guard.fd = p[1];
	guard.pid = pid;
	static int registered;
	if (!registered)
		registered = !atexit(stop_guard);
	return 0;
}

static int send_rec(const struct guard_rec *r)
{
	if (guard.fd < 0)
		return -ENOTCONN;
	return send(guard.fd, r, sizeof(*r), MSG_NOSIGNAL) == (ssize_t)sizeof(*r) ? 0 : -EPIPE;
}

static int tell(int tid, int pinned, uint64_t start, const cpu_set_t *was, const cpu_set_t *pin)
{
	struct guard_rec r;
	memset(&r, 0, sizeof(r));
	r.tid = tid, r.pinned = pinned, r.start = start;
	if (was)
		r.was = *was;
	if (pin)
		r.pin = *pin;
	return send_rec(&r);
}

int aiotk_guard_limit(uint64_t was, uint64_t set)
{
	struct guard_rec r;
	memset(&r, 0, sizeof(r));
	r.pinned = set != 0, r.limit_was = was, r.limit_set = set;
	return send_rec(&r);
}

int aiotk_guard_pin(int tid, uint64_t start, const cpu_set_t *was, const cpu_set_t *pin)
{
	return tell(tid, 1, start, was, pin);
}

void aiotk_guard_unpin(int tid)
{
	tell(tid, 0, 0, NULL, NULL);
}

int aiotk_guardian_pid(void)
{
	return guard.fd >= 0 ? (int)guard.pid : 0;
}
