/* Syscall injection against a real process (aio_workload, whose main
 * thread checks its registers across its wait): the target runs on as it
 * was when the tracer dies right after attaching, right after an injected
 * call, or detaches cleanly. "Dies" is a tracer child that _exits while
 * still attached, as a SIGKILLed aiotk would. And a target that executes
 * a new program while being attached to: made to do it between the seize
 * and the stop (aiotk_target_attach_hooked), from its only thread and
 * from one of three (the tracer then reaps a thread for the exec to go
 * on), the attach says it exec'd, leaves the new program running,
 * untraced; executing again and again while attached to at any moment,
 * every attach works or says it exec'd, and leaves it untraced. */
#define _GNU_SOURCE
#include "aiotk.h"
#include "check.h"
#include "aio/rebuild/rebuild.h"
#include "target/target.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *workload;

/* aio_workload with a ring and blocked threads; its READY line read. */
static pid_t start(FILE **out)
{
	int fd[2];
	if (pipe(fd))
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		dup2(fd[1], 1);
		close(fd[0]);
		execl(workload, workload, "--ring", "64:30:5:0", "--threads", (char *)NULL);
		_exit(127);
	}
	close(fd[1]);
	*out = fdopen(fd[0], "r");
	char line[256];
	if (!fgets(line, sizeof(line), *out) || strncmp(line, "READY", 5))
		return -1;
	return pid;
}

enum how { DIE_AT_ONCE, DIE_AFTER_CALL, DETACH_AFTER_CALL };

/* The tracer, in a child process: 0 if the injected getpid answered the
 * target's pid. */
static int tracer(pid_t target, enum how how)
{
	aiotk_target t;
	aiotk_err err;
	if (aiotk_target_attach(&t, target, &err) || aiotk_target_ready(&t, &err)) {
		fprintf(stderr, "tracer: %s\n", err.msg);
		return 2;
	}
	if (how == DIE_AT_ONCE)
		return 0;
	long r = aiotk_sys(&t, SYS_getpid, 0, 0, 0, 0, 0, 0);
	if (how == DETACH_AFTER_CALL && aiotk_target_detach(&t, &err))
		return 3;
	return r == target ? 0 : 1;
}

static int traced_by(pid_t pid)
{
	char path[64], line[256];
	int tracer = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "TracerPid: %d", &tracer) == 1)
			break;
	if (f)
		fclose(f);
	return tracer;
}

static void run(enum how how, const char *name)
{
	FILE *out;
	pid_t w = start(&out);
	CHECK(w > 0, "%s: workload did not start", name);
	if (w <= 0)
		return;
	pid_t tp = fork();
	if (tp == 0)
		_exit(tracer(w, how)); /* no detach: the kernel lets the target go */
	int st;
	waitpid(tp, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: tracer status 0x%x", name, st);
	for (int i = 0; i < 200 && traced_by(w) != 0; i++)
		usleep(1000);
	CHECK(traced_by(w) == 0, "%s: still traced", name);
	kill(w, SIGUSR2);
	char line[256] = "";
	if (!fgets(line, sizeof(line), out))
		strcpy(line, "(nothing)");
	waitpid(w, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0 && !strncmp(line, "VERIFY OK", 9),
	      "%s: target status 0x%x, said %s", name, st, line);
	fclose(out);
}

/* --exec-loop: execute this program again every 200 us, for ever. */
static void exec_loop(const char *self)
{
	usleep(200);
	execl(self, self, "--exec-loop", (char *)NULL);
	_exit(127);
}

/* A hang fails the test: alarm(HANG_S) and SIGALRM says where. */
#define HANG_S 20
static const char *hang_where = "";

static void hung(int sig)
{
	(void)sig;
	/* a failed write changes nothing: the status says it anyway */
	if (write(2, hang_where, strlen(hang_where)) >= 0)
		(void)!write(2, ": hung\n", 7);
	_exit(3);
}

/* ---- a target that executes a program between the seize and the stop */

/* The child's side: the threads that exec or stand by say who they are
 * on `ready` (one record each, written whole), then the one to exec
 * waits for a byte on `go`. */
struct exec_child {
	pid_t pid;
	int go, ready, out;     /* the child's ends are closed in the test */
	pid_t execer, bystander; /* threads of the threaded child, 0 in the other */
	FILE *said;             /* the new program's stdout */
};
struct tid_rec { char who; pid_t tid; };

static int self_go = -1, self_ready = -1;

static void say_tid(char who)
{
	struct tid_rec r = { who, (pid_t)syscall(SYS_gettid) };
	if (write(self_ready, &r, sizeof(r)) != (ssize_t)sizeof(r))
		_exit(126);
}

/* Waits for the go byte, then runs this program as --execd. */
static void *exec_when_told(void *arg)
{
	char c;
	say_tid(arg ? 'E' : 'L');
	if (read(self_go, &c, 1) == 1)
		execl("/proc/self/exe", "test_inject", "--execd", (char *)NULL);
	_exit(127);
}

static void *stand_by(void *arg)
{
	say_tid('B');
	for (;;)
		pause(); /* until killed by the other thread's exec */
	return arg;
}

/* The child: the main thread execs itself, or (threaded) sleeps while a
 * second thread execs and a third stands by. */
static void exec_child_main(int threaded)
{
	static char not_main;
	pthread_t th;
	if (!threaded)
		exec_when_told(NULL);
	if (pthread_create(&th, NULL, stand_by, NULL) || pthread_create(&th, NULL, exec_when_told, &not_main))
		_exit(125);
	for (;;)
		pause();
}

static int read_tids(struct exec_child *c, int n)
{
	for (int i = 0; i < n; i++) {
		struct tid_rec r;
		if (read(c->ready, &r, sizeof(r)) != (ssize_t)sizeof(r))
			return -1;
		if (r.who == 'E')
			c->execer = r.tid;
		if (r.who == 'B')
			c->bystander = r.tid;
	}
	return 0;
}

static int exec_child_start(struct exec_child *c, int threaded)
{
	int go[2], ready[2], out[2];
	memset(c, 0, sizeof(*c));
	if (pipe(go) || pipe(ready) || pipe(out))
		return -1;
	c->pid = fork();
	if (c->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* gone with a test that hangs */
		dup2(out[1], 1);
		self_go = go[0], self_ready = ready[1];
		exec_child_main(threaded);
	}
	close(go[0]), close(ready[1]), close(out[1]);
	c->go = go[1], c->ready = ready[0], c->out = out[0];
	c->said = fdopen(out[0], "r");
	/* every thread there before the attach lists them */
	return c->pid > 0 && c->said && !read_tids(c, threaded ? 2 : 1) ? 0 : -1;
}

static void exec_child_end(struct exec_child *c)
{
	if (c->pid > 0) {
		kill(c->pid, SIGKILL);
		waitpid(c->pid, NULL, 0);
	}
	close(c->go), close(c->ready);
	if (c->said)
		fclose(c->said);
}

/* The hook, between the seize and the stop: the exec is let go and
 * waited for without taking any wait status from aiotk (WNOWAIT): its
 * only thread in its exec stop, or (threaded) the bystander killed by the
 * exec. That one is a traced thread's exit, for the tracer to reap: the
 * exec goes on only once aiotk does so while waiting for the stop. */
static void release_exec(int pid, void *arg)
{
	struct exec_child *c = arg;
	siginfo_t si;
	pid_t wait_for = c->bystander ? c->bystander : pid;
	CHECK(write(c->go, "x", 1) == 1, "cannot let the exec go");
	int rc;
	do
		rc = waitid(P_PID, (id_t)wait_for, &si, WEXITED | WSTOPPED | WNOWAIT | __WALL);
	while (rc && errno == EINTR);
	CHECK(!rc, "waiting for the exec: %s", strerror(errno));
}

static void attach_meets_exec(int threaded, const char *name)
{
	struct exec_child c;
	int ok = !exec_child_start(&c, threaded);
	CHECK(ok, "%s: the child did not start", name);
	if (!ok)
		return exec_child_end(&c);
	aiotk_target t;
	aiotk_err err = { 0 };
	hang_where = name;
	alarm(HANG_S);
	int rc = aiotk_target_attach_hooked(&t, c.pid, NULL, release_exec, &c, &err);
	if (!rc) {
		aiotk_target_detach(&t, NULL);
		aiotk_target_free(&t);
	}
	CHECK(rc && strstr(err.msg, "executed a new program"), "%s: attach said %d (%s)", name, rc, err.msg);
	CHECK(traced_by(c.pid) == 0, "%s: left traced", name);
	char line[64] = "";
	if (!fgets(line, sizeof(line), c.said))
		strcpy(line, "(nothing)");
	alarm(0);
	CHECK(!strcmp(line, "EXECD\n"), "%s: the new program said %s", name, line);
	int st;
	CHECK(waitpid(c.pid, &st, WNOHANG) == 0, "%s: the new program ended (status 0x%x)", name, st);
	exec_child_end(&c);
}

/* Attaches at whatever moment, the exec anywhere: how many met it is
 * printed, never required (attach_meets_exec makes it happen). */
static void attach_while_execing(const char *self)
{
	pid_t loop = fork();
	if (loop == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* kept across its execs */
		exec_loop(self);
	}
	int ok = 0, execd = 0, other = 0;
	for (int i = 0; i < 300; i++) {
		aiotk_target t;
		aiotk_err err;
		hang_where = "attach while execing";
		alarm(HANG_S);
		int rc = aiotk_target_attach(&t, loop, &err);
		if (!rc) {
			ok++;
			aiotk_target_detach(&t, NULL);
			aiotk_target_free(&t);
		} else if (strstr(err.msg, "executed a new program")) {
			execd++;
		} else {
			other++;
			fprintf(stderr, "attach %d: %s\n", i, err.msg);
		}
		alarm(0);
		int st;
		CHECK(waitpid(loop, &st, WNOHANG) == 0, "attach %d: the target died (status 0x%x)", i, st);
		CHECK(traced_by(loop) == 0, "attach %d left it traced", i);
	}
	kill(loop, SIGKILL);
	waitpid(loop, NULL, 0);
	printf("attach while execing: %d attached, %d saw the exec, %d other\n", ok, execd, other);
	CHECK(other == 0, "%d attaches failed otherwise", other);
}

/* The start time in /proc/PID/stat, for a name ending "9 9". */
static unsigned long long stat_start(pid_t pid)
{
	char path[64], buf[1024];
	unsigned long long start = 0;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	FILE *f = fopen(path, "r");
	size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
	if (f)
		fclose(f);
	buf[n] = 0;
	char *p = strstr(buf, "9 9)");
	if (p && sscanf(p + 4, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
			&start) != 1)
		start = 0;
	return start;
}

/* /proc/TID/stat as aiotk reads it (start time, exiting) for a child
 * whose name holds what fools a naive parse: ") (" and spaces. The child
 * names itself, says so on `named`, and exits once `go` ends: each step
 * is waited for, none polled. */
static void stat_fields(void)
{
	int go[2], named[2];
	char c;
	if (pipe(go) || pipe(named))
		return;
	pid_t pid = fork();
	if (pid == 0) {
		prctl(PR_SET_NAME, "a) b (c 9 9", 0, 0, 0);
		close(go[1]);
		if (write(named[1], "n", 1) != 1 || read(go[0], &c, 1) < 0)
			_exit(1);
		_exit(0);
	}
	close(go[0]), close(named[1]);
	CHECK(read(named[0], &c, 1) == 1, "the child did not name itself");
	close(named[0]);
	unsigned long long start = stat_start(pid);
	CHECK(start && aiotk_thread_start(pid) == start, "start time %llu, aiotk read %llu", start,
	      (unsigned long long)aiotk_thread_start(pid));
	CHECK(!aiotk_thread_exiting(pid), "a sleeping child is not exiting");
	close(go[1]);
	siginfo_t si;
	CHECK(!waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), "waitid: %s", strerror(errno));
	CHECK(aiotk_thread_exiting(pid), "an exited child (a zombie) is");
	waitpid(pid, NULL, 0);
	CHECK(aiotk_thread_exiting(pid) && !aiotk_thread_start(pid), "a reaped one is gone");
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "--exec-loop"))
		exec_loop("/proc/self/exe");
	if (argc == 2 && !strcmp(argv[1], "--execd")) {
		printf("EXECD\n");
		fflush(stdout);
		for (;;)
			pause();
	}
	if (argc < 2) {
		fprintf(stderr, "usage: test_inject PATH-TO-aio_workload\n");
		return 2;
	}
	workload = argv[1];
	signal(SIGALRM, hung);
	stat_fields();
	run(DIE_AT_ONCE, "tracer dies after attaching");
	run(DIE_AFTER_CALL, "tracer dies after an injected call");
	run(DETACH_AFTER_CALL, "tracer detaches after an injected call");
	attach_meets_exec(0, "the only thread execs between seize and stop");
	attach_meets_exec(1, "one of three threads execs between seize and stop");
	attach_while_execing("/proc/self/exe");
	return check_report();
}
