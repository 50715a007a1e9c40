/* A running process as a target: every thread seized and stopped
 * (PTRACE_SEIZE + PTRACE_INTERRUPT, no signal sent), system calls run by
 * its main thread, memory through process_vm_readv/writev (aiotk_vm_rw).
 *
 * What holds whatever happens to aiotk (arch.h tells how injection works):
 *  - No code is written into the target and no signal is held by aiotk: a
 *    signal that arrives while a thread is being stopped goes on to it.
 *  - A system call our stop made fail with EINTR is made restartable the
 *    moment the thread stops, so the kernel restarts it on any resume.
 *  - While injecting, the main thread's signals are blocked (pending ones
 *    wait), and its stack holds a return frame; the order of every register
 *    and mask change keeps "if aiotk dies now, the thread resumes its own
 *    context" true at each instant.
 *  - Waits notice a process that dies or execs: the dead leader is reported
 *    only once its other threads are reaped, and those are ours to reap. */
#define _GNU_SOURCE
#include "target/target.h"

#include <dirent.h>
#include <sched.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define OPTIONS (PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACEEXEC)
#define SYSCALL_STOP (SIGTRAP | 0x80)
#define FRAME_MAX 32768

struct thread {
	int tid;
	int gone;     /* exited (and reaped) */
	int stopping; /* asked to stop, not yet waited for */
	int seized;   /* traced, not yet asked to stop */
	int dying;    /* killed while stopped: to be reaped */
};

struct tracee {
	int pid;
	struct thread *th;
	size_t nth, cap;
	aiotk_regs saved;   /* main thread as found, EINTR made restartable */
	int have_saved;     /* saved read by make_restartable */
	uint64_t mask;      /* its blocked signals as found */
	uint64_t code;      /* the syscall gadget */
	uint64_t sigreturn; /* the rt_sigreturn gadget */
	uint64_t frame;     /* the return frame = the stack pointer to inject with */
	int armed, injected, dead, execd;
	int blocked;        /* mask changed: 1 all blocked, 2 the restorer's */
	int adopted;        /* stopped and traced by the caller, not by us */
	uint64_t deferred;  /* unblockable signals that stopped it mid-injection */
	aiotk_err why;      /* why it cannot be injected into, if it cannot */
	uint64_t t_stop, stopped_ns;
	int quiet;          /* quiet_signal(), read before the stop */
	int seccomp;        /* under a seccomp filter (read with quiet) */
	uint64_t unmap_exit; /* aiotk_arch_gadget_unmap_exit, looked for once */
	int unmap_exit_looked;
	int latency_fd;     /* aiotk_cpu_latency_hold(), or -1 */
	aiotk_seized_hook seized_hook; /* aiotk_target_attach_hooked(), or NULL */
	void *seized_arg;
	/* The main thread's FPU state as arm() found it: injected calls leave
	 * it as is, so it is what a restorer run puts back. */
	uint8_t fpu[FRAME_MAX];
	size_t fpu_len;
	/* pin_self(), colocate(): aiotk's and the main thread's affinity as
	 * found, and the CPU both are pinned to */
	cpu_set_t own, theirs;
	int own_pinned, their_pinned, cpu;
	int told;           /* the guardian holds a pin record for the main thread */
	cpu_set_t told_was; /* the mask that record gives back */
	uint64_t start;     /* the main thread's start time, for the guardian */
	DIR *task;          /* /proc/PID/task, list_threads() to detach */
};

static struct tracee *T(aiotk_target *t) { return t->priv; }
static const struct aiotk_target_ops ptrace_ops;

static int pt_read(aiotk_target *t, uint64_t a, void *b, size_t l) { return aiotk_vm_rw(t->pid, a, b, l, 0); }
static int pt_write(aiotk_target *t, uint64_t a, const void *b, size_t l)
{
	return aiotk_vm_rw(t->pid, a, (void *)b, l, 1);
}

/* ---- waiting ----------------------------------------------------------- */

static void reap_exited(struct tracee *p, int except)
{
	for (size_t i = 0; i < p->nth; i++) {
		siginfo_t si;
		if (p->th[i].gone || p->th[i].tid == except)
			continue;
		/* A traced thread's stop is reported to any wait, WEXITED or
		 * not: look first (WNOWAIT), and reap only an exit, so that a
		 * stop still to be waited for is not swallowed here. */
		si.si_pid = 0;
		if (waitid(P_PID, (id_t)p->th[i].tid, &si, WEXITED | WNOHANG | __WALL | WNOWAIT) ||
		    !si.si_pid || (si.si_code != CLD_EXITED && si.si_code != CLD_KILLED &&
				   si.si_code != CLD_DUMPED))
			continue;
		waitid(P_PID, (id_t)p->th[i].tid, &si, WEXITED | WNOHANG | __WALL);
		p->th[i].gone = 1;
	}
}

/* waitpid for one traced thread, reaping the others' exits meanwhile.
 * SIGCHLD (blocked for the wait) wakes it. */
static int wait_thread(struct tracee *p, int tid, int *st)
{
	sigset_t chld, old;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	pthread_sigmask(SIG_BLOCK, &chld, &old);
	int r;
	/* The others' exits are reaped only once tid has kept us waiting a
	 * whole timeout: the SIGCHLD of another thread's stop (threads stop
	 * in any order) would otherwise cost a wait per thread each time. */
	for (int timed_out = 0; (r = waitpid(tid, st, __WALL | WNOHANG)) == 0;) {
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		if (timed_out)
			reap_exited(p, tid);
		timed_out = sigtimedwait(&chld, NULL, &ts) < 0 && errno == EAGAIN;
	}
	int e = errno;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return r < 0 ? -e : 0;
}

static struct thread *find(struct tracee *p, int tid)
{
	for (size_t i = 0; i < p->nth; i++)
		if (p->th[i].tid == tid)
			return &p->th[i];
	return NULL;
}

static int exited(struct tracee *p, int tid, int st)
{
	if (!WIFEXITED(st) && !WIFSIGNALED(st))
		return 0;
	struct thread *t = find(p, tid);
	if (t)
		t->gone = 1;
	if (tid == p->pid)
		p->dead = 1;
	return 1;
}

/* Thread tid's next syscall stop. Unblockable signals (SIGSTOP, a
 * fault) are deferred (to *deferred); anything else stops nothing. */
static long wait_syscall_stop_of(struct tracee *p, int tid, uint64_t *deferred)
{
	for (;;) {
		int st;
		long rc = wait_thread(p, tid, &st);
		if (rc)
			return rc;
		if (exited(p, tid, st))
			return -ESRCH;
		if (st >> 16 == PTRACE_EVENT_EXEC) {
			p->execd = 1;
			return -ESRCH;
		}
		if (WSTOPSIG(st) == SYSCALL_STOP)
			return 0;
		if (st >> 16 == 0)
			*deferred |= 1ull << (WSTOPSIG(st) - 1);
		if (ptrace(PTRACE_SYSCALL, tid, 0, 0))
			return -errno;
	}
}

/* The main thread's; its deferred signals go to it at detach. */
static long wait_syscall_stop(struct tracee *p)
{
	return wait_syscall_stop_of(p, p->pid, &p->deferred);
}

/* ---- injection ------------------------------------------------------- */

static int set_mask(int tid, uint64_t m)
{
	return ptrace(PTRACE_SETSIGMASK, tid, sizeof(m), &m) ? -errno : 0;
}

/* A ptrace request on a stopped tracee fails with ESRCH only once the
 * thread is dying. */
static long dying(struct tracee *p, long rc)
{
	if (rc == -ESRCH)
		p->dead = 1;
	return rc;
}

static long run_syscall(struct tracee *p, aiotk_regs *r)
{
	long rc;
	/* Registers first: from here a dead aiotk means "run this call, then
	 * return through the frame", which also puts the mask back. */
	if ((rc = aiotk_arch_set(p->pid, r)))
		return rc;
	p->injected = 1;
	if (p->blocked != 1) {
		if ((rc = set_mask(p->pid, ~0ull)))
			return rc;
		p->blocked = 1;
	}
	for (int stop = 0; stop < 2; stop++) { /* syscall entry, then exit */
		if (ptrace(PTRACE_SYSCALL, p->pid, 0, 0))
			return -errno;
		if ((rc = wait_syscall_stop(p)))
			return rc;
	}
	return aiotk_arch_get(p->pid, r);
}

static int arm(struct tracee *p);

/* The frame is written at the first system call, so that a dump, which
 * makes none, writes nothing into the target. */
static int armed(struct tracee *p)
{
	if (p->armed)
		return 0;
	int rc = p->why.code ? p->why.code : arm(p);
	/* A process dying under it fails the frame's steps in several ways
	 * (ESRCH from ptrace before /proc shows it exiting, EFAULT, an empty
	 * maps file): say what happened. */
	if (rc && (p->why.errno_ == ESRCH || aiotk_check_process(p->pid, NULL))) {
		p->dead = 1;
		aiotk_fail(&p->why, AIOTK_ESYS, ESRCH, "process %d exited", p->pid);
	}
	return rc;
}

static long inject(struct tracee *p, long nr, const long a[6])
{
	aiotk_regs r = p->saved;
	aiotk_arch_prepare(&r, p->code, p->frame, nr, a);
	long rc = dying(p, run_syscall(p, &r));
	return rc ? rc : aiotk_arch_result(&r);
}

static long pt_sys(aiotk_target *t, long nr, const long a[6])
{
	struct tracee *p = T(t);
	if (p->dead || p->execd)
		return -ESRCH;
	if (armed(p))
		return p->dead ? -ESRCH : -ENOEXEC;
	return inject(p, nr, a);
}


/* Injected system calls cost two ptrace stops each. With the main thread
 * on another CPU every stop is a cross-CPU wakeup, which this machine
 * measured at 80-140 us an injection against about 20 us with aiotk and
 * the main thread on one CPU. aiotk alone moving to the thread's CPU is
 * not enough (resumed while aiotk runs there, the thread is woken on the
 * idle one), so both are pinned to aiotk's CPU. aiotk pins itself before
 * the process stops and lets go after it runs again (its own mask is
 * nobody else's concern: 10-20 us out of the stop); the thread's mask is
 * set from here (sched_setaffinity on its tid: no injection) once it is
 * stopped, and put back before it runs, so the process never sees it.
 * Refused (another user's thread without CAP_SYS_NICE, a cpuset without
 * that CPU), it only runs slower. */
static void pin_self(struct tracee *p)
{
	cpu_set_t one;
	p->cpu = sched_getcpu();
	if (p->cpu < 0 || sched_getaffinity(0, sizeof(p->own), &p->own))
		return;
	CPU_ZERO(&one);
	CPU_SET(p->cpu, &one);
	p->own_pinned = !sched_setaffinity(0, sizeof(one), &one);
}

static void unpin_self(struct tracee *p)
{
	if (p->own_pinned)
		sched_setaffinity(0, sizeof(p->own), &p->own);
	p->own_pinned = 0;
}

/* The guardian told of the main thread's pin before the stop: its
 * wakeup (it may take aiotk's CPU) cost 14-39 us of every restore's stop
 * here when told at the pin. A record told but never made into a pin
 * (a dump makes none) changes nothing if aiotk dies (the guardian puts a
 * mask back only where it is still the pin), and is taken back at
 * release. Not in a process CRIU holds (adopted): no guardian there. */
static void tell_early(struct tracee *p)
{
	cpu_set_t one;
	if (!p->own_pinned || p->adopted ||
	    sched_getaffinity(p->pid, sizeof(p->told_was), &p->told_was))
		return;
	CPU_ZERO(&one);
	CPU_SET(p->cpu, &one);
	p->told = !aiotk_guard_pin(p->pid, p->start, &p->told_was, &one);
}

/* The main thread pinned to aiotk's CPU, the guardian told first (before
 * the stop, by tell_early; again here if the thread's mask changed since:
 * it puts the mask back if aiotk dies meanwhile): without one, no pin. In
 * a process CRIU holds (adopted) CRIU's own death ends it, and no
 * guardian is forked inside CRIU. */
static void colocate(struct tracee *p)
{
	cpu_set_t one;
	if (!p->own_pinned || sched_getaffinity(p->pid, sizeof(p->theirs), &p->theirs))
		return;
	CPU_ZERO(&one);
	CPU_SET(p->cpu, &one);
	if (!p->adopted && !(p->told && CPU_EQUAL(&p->theirs, &p->told_was))) {
		if (aiotk_guard_pin(p->pid, p->start, &p->theirs, &one))
			return;
		p->told = 1;
	}
	p->their_pinned = !sched_setaffinity(p->pid, sizeof(one), &one);
}

/* The thread's mask back, while it is still stopped; the guardian is told
 * once the process runs again (release). */
static void uncolocate(struct tracee *p)
{
	if (p->their_pinned && !p->dead)
		sched_setaffinity(p->pid, sizeof(p->theirs), &p->theirs);
	p->their_pinned = 0;
}

/* ---- the restorer (restorer.c) --------------------------------------- */

/* A signal the process neither catches nor blocks for good: the default
 * action of these three is to ignore them, so one sent by a restorer that
 * a dead aiotk left running changes nothing. 0: none is free. Read before
 * the process is stopped (/proc/PID/status costs 20-30 us here): while
 * aiotk lives the signal only stops the thread for aiotk and is never
 * delivered, so a handler installed in the moments before the stop could
 * matter only if aiotk also died during the restorer's run, and then it
 * gets one spurious signal of a kind handlers take as a hint to look
 * (window size, urgent data, a child's exit). */
static int quiet_signal(int pid, int *seccomp)
{
	static const int candidates[] = { SIGURG, SIGWINCH, SIGCHLD };
	char path[64], line[256];
	unsigned long long caught = ~0ull;
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	FILE *f = fopen(path, "r");
	*seccomp = 1; /* unknown counts as filtered */
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "SigCgt:", 7))
			caught = strtoull(line + 7, NULL, 16);
		else if (!strncmp(line, "Seccomp:", 8))
			*seccomp = atoi(line + 8) != 0;
	if (f)
		fclose(f);
	for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++)
		if (!(caught >> (candidates[i] - 1) & 1))
			return candidates[i];
	return 0;
}

int aiotk_target_restorer_exit(aiotk_target *t, uint64_t *exit_sp, uint64_t *gadget,
			       int *sig, aiotk_err *err)
{
	struct tracee *p = T(t);
	if (t->ops != &ptrace_ops)
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, 0, "no restorer in this target");
	if (armed(p))
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, 0, "process %d cannot be injected into", p->pid);
	if (!(*sig = p->quiet))
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, 0,
				  "process %d catches SIGURG, SIGWINCH and SIGCHLD", p->pid);
	*exit_sp = p->frame;
	*gadget = p->code;
	return 0;
}

long aiotk_target_end_restorer(aiotk_target *t)
{
	struct tracee *p = T(t);
	for (int stop = 0; stop < 2; stop++) { /* the munmap's entry, then exit */
		long rc = ptrace(PTRACE_SYSCALL, p->pid, 0, 0) ? -errno : wait_syscall_stop(p);
		if (rc)
			return dying(p, rc);
	}
	return 0;
}

/* ---- a thread of the process's own (aio/rebuild/destroy_later.c) ------ */

/* Under a seccomp filter no thread is made: the filter may refuse clone
 * or a call the thread makes, and some filters answer with the death of
 * the process (SECCOMP_RET_KILL_PROCESS), which an attempt cannot undo.
 * Nor in a process CRIU holds: it is restoring that process's threads. */
int aiotk_target_thread_exit(aiotk_target *t, uint64_t *exit_code, aiotk_err *err)
{
	struct tracee *p = T(t);
	if (t->ops != &ptrace_ops || p->adopted)
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, 0, "no thread is made in this target");
	if (p->seccomp)
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, 0,
				  "process %d runs under a seccomp filter: aiotk makes no thread in it", p->pid);
	if (armed(p))
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, 0, "process %d cannot be injected into", p->pid);
	/* Looked for only when wanted (a failed restore): its code does not
	 * move under a stopped process. */
	if (!p->unmap_exit_looked) {
		p->unmap_exit_looked = 1;
		aiotk_find_gadget(p->pid, aiotk_arch_gadget_unmap_exit, &p->unmap_exit, NULL);
	}
	if (!p->unmap_exit)
		return aiotk_fail(err, AIOTK_EUNSUPPORTED, ENOEXEC,
				  "process %d: no munmap-then-exit sequence in its code (glibc's or musl's)", p->pid);
	*exit_code = p->unmap_exit;
	return 0;
}

/* An injected clone: the new thread shares everything a thread shares,
 * is not traced (no PTRACE_O_TRACECLONE, CLONE_UNTRACED), and starts with
 * the main thread's mask as injection leaves it (all blocked). It starts
 * at the `ret` of the process's `syscall; ret`, so its first act is to
 * pop the slot at its stack pointer: entry is written there. The kernel
 * writes its tid at tid_at before it can run (CLONE_PARENT_SETTID), also
 * if aiotk dies during the call. */
int aiotk_target_spawn(aiotk_target *t, uint64_t entry, uint64_t stack_top, uint64_t arg,
		       uint64_t tid_at, int *tid, aiotk_err *err)
{
	const long flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
			   CLONE_SYSVSEM | CLONE_UNTRACED | CLONE_PARENT_SETTID;
	uint64_t sp = (stack_top - 16) & ~15ull;
	int rc = aiotk_poke(t, sp, &entry, sizeof(entry), err);
	if (rc)
		return rc;
	long r = aiotk_sys(t, SYS_clone, flags, (long)sp, (long)tid_at, 0, 0, (long)arg);
	if (r <= 0)
		return aiotk_fail(err, r == -ESRCH ? AIOTK_ESYS : AIOTK_EUNSUPPORTED, (int)-r,
				  "process %d: no thread could be made in it: %s", t->pid,
				  strerror((int)-r));
	*tid = (int)r;
	return 0;
}

/* ---- a system call in another thread (an io_uring's owner) ----------- */

/* Thread tid's return frame (its registers, mask and FPU state as found)
 * written below its red zone; *at: the stack pointer to inject with. */
static int thread_frame(struct tracee *p, int tid, const aiotk_regs *saved, uint64_t mask,
			uint64_t *at)
{
	static __thread uint8_t fpu[FRAME_MAX], frame[FRAME_MAX];
	size_t fpu_len, len;
	int rc = aiotk_arch_fpu_get(tid, fpu, sizeof(fpu), &fpu_len);
	if (!rc)
		rc = aiotk_arch_frame(saved, mask, fpu, fpu_len, p->sigreturn, frame, sizeof(frame),
				      at, &len);
	aiotk_vma v;
	aiotk_err ignored;
	if (!rc && (aiotk_maps_overlap(p->pid, *at, len, 0, &v, &ignored) != 1 || v.start > *at ||
		    v.end < *at + len || v.perms[1] != 'w'))
		rc = -ENOSPC;
	if (!rc && aiotk_vm_rw(p->pid, *at, frame, len, 1))
		rc = -EFAULT;
	return rc;
}

/* The call run in stopped thread tid as the main thread's are (arch.h):
 * its registers set first, so that from then on a dead aiotk means "run
 * this call, then return through the frame", which puts its registers,
 * mask and FPU state back; all its signals blocked meanwhile; its mask,
 * then its registers, put back after. */
static long thread_call(struct tracee *p, int tid, long nr, const long a[6])
{
	aiotk_regs saved, r;
	uint64_t mask, at = 0, deferred = 0;
	long rc = aiotk_arch_get(tid, &saved);
	if (!rc && ptrace(PTRACE_GETSIGMASK, tid, sizeof(mask), &mask))
		rc = -errno;
	if (!rc)
		rc = thread_frame(p, tid, &saved, mask, &at);
	if (rc)
		return rc;
	r = saved;
	aiotk_arch_prepare(&r, p->code, at, nr, a);
	if (!(rc = aiotk_arch_set(tid, &r)) && !(rc = set_mask(tid, ~0ull)))
		for (int stop = 0; !rc && stop < 2; stop++) /* syscall entry, then exit */
			rc = ptrace(PTRACE_SYSCALL, tid, 0, 0) ? -errno : wait_syscall_stop_of(p, tid, &deferred);
	long res = rc ? rc : aiotk_arch_get(tid, &r);
	if (rc != -ESRCH) {
		set_mask(tid, mask);
		aiotk_arch_set(tid, &saved);
	}
	for (int sig = 1; sig <= 64; sig++)
		if (deferred >> (sig - 1) & 1)
			tgkill(p->pid, tid, sig);
	return res ? res : aiotk_arch_result(&r);
}

long aiotk_target_thread_sys(aiotk_target *t, int tid, long nr, const long a[6])
{
	struct tracee *p = T(t);
	if (t->ops != &ptrace_ops || p->adopted)
		return -EOPNOTSUPP; /* a process CRIU holds: its threads are CRIU's */
	struct thread *th = find(p, tid);
	if (!th || th->gone)
		return -ESRCH;
	if (p->dead || p->execd)
		return -ESRCH;
	if (armed(p))
		return p->dead ? -ESRCH : -ENOEXEC;
	return thread_call(p, tid, nr, a);
}

/* Runs the code at entry(job) on stack sp in the main thread until it
 * signals sig (restorer.c); any other signal on the way waits for detach,
 * a fault is an error (the thread's context is put back all the same). */
static long run_code(struct tracee *p, aiotk_regs *r, int sig);

int aiotk_target_run_restorer(aiotk_target *t, uint64_t entry, uint64_t job,
			      uint64_t sp, int sig, aiotk_err *err)
{
	struct tracee *p = T(t);
	const long a[6] = { (long)job, 0, 0, 0, 0, 0 };
	aiotk_regs r = p->saved;
	aiotk_arch_prepare(&r, entry, sp, 0, a);
	/* Compiled code may use vector registers (the routine is built not
	 * to); the thread's go back after, from arm()'s copy (registers alone
	 * are put back at detach). */
	long rc = run_code(p, &r, sig);
	long back = rc == -ESRCH ? 0 : aiotk_arch_fpu_set(p->pid, p->fpu, p->fpu_len);
	if (rc == 1)
		return aiotk_fail(err, AIOTK_ESYS, EFAULT,
				  "aiotk's restorer faulted in process %d; its rings are rolled back", p->pid);
	if (!rc && back)
		rc = back;
	if (rc)
		return aiotk_fail(err, AIOTK_ESYS, (int)-dying(p, rc), "process %d: %s", p->pid,
				  rc == -ESRCH ? "exited while its rings were rebuilt" : strerror((int)-rc));
	return 0;
}

/* The main thread at registers r until it stops with sig: 0; 1 if it
 * faulted instead; -errno. Other signals wait for detach. */
static long run_code(struct tracee *p, aiotk_regs *r, int sig)
{
	long rc = aiotk_arch_set(p->pid, r);
	p->injected = 1;
	if (!rc && !(rc = set_mask(p->pid, ~(1ull << (sig - 1)))))
		p->blocked = 2; /* all but sig: the next injection blocks all again */
	if (!rc && ptrace(PTRACE_CONT, p->pid, 0, 0))
		rc = -errno;
	for (int st; !rc;) {
		if ((rc = wait_thread(p, p->pid, &st)))
			break;
		if (exited(p, p->pid, st) || st >> 16 == PTRACE_EVENT_EXEC) {
			p->execd = st >> 16 == PTRACE_EVENT_EXEC;
			rc = -ESRCH;
			break;
		}
		int s = WSTOPSIG(st);
		if (st >> 16 == 0 && s == sig)
			break; /* done; the signal is not delivered */
		if (st >> 16 == 0 && (s == SIGSEGV || s == SIGBUS || s == SIGILL || s == SIGFPE))
			return 1;
		if (st >> 16 == 0)
			p->deferred |= 1ull << (s - 1);
		if (ptrace(PTRACE_CONT, p->pid, 0, 0))
			rc = -errno;
	}
	return rc;
}

/* Gadgets are looked for while the process runs (its code does not move
 * under a stopped process, and is checked again once stopped). */
/* Both sequences injection runs through, in one pass over the process's
 * code; a failure is kept in p->why (dumps need no injection). */
static void find_gadgets(struct tracee *p)
{
	const aiotk_gadget *lists[2] = { aiotk_arch_gadget_syscall, aiotk_arch_gadget_sigreturn };
	uint64_t at[2] = { 0, 0 };
	aiotk_find_gadgets(p->pid, lists, at, 2, &p->why);
	p->code = at[0], p->sigreturn = at[1];
}

static int check_gadget(struct tracee *p, uint64_t addr, const aiotk_gadget *list)
{
	uint8_t buf[16];
	for (const aiotk_gadget *g = list; g->bytes; g++) {
		int rc = aiotk_vm_rw(p->pid, addr, buf, g->len, 0);
		if (rc == -ESRCH)
			return aiotk_fail(&p->why, AIOTK_ESYS, ESRCH, "process %d exited", p->pid);
		if (!rc && !memcmp(buf, g->bytes, g->len))
			return 0;
	}
	return aiotk_fail(&p->why, AIOTK_EINVAL, ENOEXEC,
			  "process %d: its code at 0x%llx changed while it was being stopped",
			  p->pid, (unsigned long long)addr);
}

static int frame_fits(struct tracee *p, uint64_t at, size_t len)
{
	aiotk_vma v;
	int rc = aiotk_maps_overlap(p->pid, at, len, 0, &v, &p->why);
	if (rc == 1 && v.start <= at && v.end >= at + len && v.perms[1] == 'w')
		return 0;
	return rc < 0 ? rc : aiotk_fail(&p->why, AIOTK_EINVAL, ENOSPC,
		"process %d: no room for aiotk's %zu-byte return frame below its main thread's stack pointer", p->pid, len);
}

/* The return frame for p->saved, written below the main thread's stack
 * (again when a register of p->saved changes: aiotk_target_set_gpr). */
static int write_frame(struct tracee *p)
{
	static __thread uint8_t frame[FRAME_MAX];
	size_t len;
	int rc = aiotk_arch_frame(&p->saved, p->mask, p->fpu, p->fpu_len, p->sigreturn, frame,
				  sizeof(frame), &p->frame, &len);
	if (rc)
		return aiotk_fail(&p->why, AIOTK_ESYS, -rc, "cannot build the return frame for %d: %s",
				  p->pid, strerror(-rc));
	if ((rc = frame_fits(p, p->frame, len)))
		return rc;
	if ((rc = aiotk_vm_rw(p->pid, p->frame, frame, len, 1)))
		return aiotk_fail(&p->why, AIOTK_ESYS, -rc, "cannot write the return frame into %d: %s",
				  p->pid, strerror(-rc));
	return 0;
}

/* The return frame, written below the main thread's stack: from then on
 * injection is possible, and harmless to die in. */
static int arm(struct tracee *p)
{
	int rc = check_gadget(p, p->code, aiotk_arch_gadget_syscall);
	if (!rc)
		rc = check_gadget(p, p->sigreturn, aiotk_arch_gadget_sigreturn);
	if (rc)
		return rc;
	if (ptrace(PTRACE_GETSIGMASK, p->pid, sizeof(p->mask), &p->mask))
		return aiotk_fail(&p->why, AIOTK_ESYS, errno, "cannot read the signal mask of %d: %s",
				  p->pid, strerror(errno));
	if ((rc = aiotk_arch_fpu_get(p->pid, p->fpu, sizeof(p->fpu), &p->fpu_len)))
		return aiotk_fail(&p->why, AIOTK_ESYS, -rc, "cannot build the return frame for %d: %s",
				  p->pid, strerror(-rc));
	if ((rc = write_frame(p)))
		return rc;
	p->armed = 1;
	colocate(p);
	return 0;
}

/* ---- stopping and letting go ----------------------------------------- */

static struct thread *add(struct tracee *p, int tid)
{
	if (p->nth == p->cap) {
		size_t cap = p->cap ? 2 * p->cap : 16;
		struct thread *n = realloc(p->th, cap * sizeof(*n));
		if (!n)
			return NULL;
		p->th = n;
		p->cap = cap;
	}
	p->th[p->nth] = (struct thread){ .tid = tid };
	return &p->th[p->nth++];
}

/* The main thread's registers, read here anyway, are kept as found
 * (p->saved): one ptrace call fewer in the stop. */
static void make_restartable(struct tracee *p, int tid)
{
	aiotk_regs r;
	if (aiotk_arch_get(tid, &r))
		return;
	if (aiotk_arch_restartable(&r))
		aiotk_arch_set(tid, &r);
	if (tid == p->pid) {
		p->saved = r;
		p->have_saved = 1;
	}
}

/* Seize one thread (it runs on, traced); it is asked to stop by
 * ask_to_stop and waited for later, so that the threads of a process stop
 * together rather than one after another (each wakeup of an idle CPU costs
 * tens of microseconds here). */
static int seize_thread(struct tracee *p, int tid, aiotk_err *err)
{
	if (ptrace(PTRACE_SEIZE, tid, 0, OPTIONS)) {
		/* EPERM also for a thread that is exiting: when the process is
		 * going, say that rather than blame permissions. */
		if (errno == EPERM && aiotk_check_process(p->pid, NULL))
			return aiotk_fail(err, AIOTK_ESYS, ESRCH, "process %d exited while being stopped", p->pid);
		if (errno == EPERM && aiotk_thread_exiting(tid))
			return 0; /* a thread on its way out, as threads of a pool end */
		if (errno == EPERM)
			return aiotk_why_not_permitted(p->pid, tid, err);
		if (errno == ESRCH)
			return 0; /* exited meanwhile */
		return aiotk_fail(err, AIOTK_ESYS, errno, "PTRACE_SEIZE %d: %s", tid, strerror(errno));
	}
	struct thread *t = add(p, tid);
	if (!t) {
		ptrace(PTRACE_DETACH, tid, 0, 0);
		return aiotk_fail(err, AIOTK_ENOMEM, ENOMEM, "out of memory for thread %d", tid);
	}
	t->seized = 1;
	return 0;
}

/* Every seized thread asked to stop, even after a failure (a thread can
 * be let go only once stopped); the first error is kept. */
static int ask_to_stop(struct tracee *p, int rc, aiotk_err *err)
{
	for (size_t i = 0; i < p->nth; i++) {
		struct thread *t = &p->th[i];
		if (!t->seized)
			continue;
		t->seized = 0;
		t->stopping = 1;
		if (ptrace(PTRACE_INTERRUPT, t->tid, 0, 0) && !rc)
			rc = aiotk_fail(err, AIOTK_ESYS, errno, "cannot stop thread %d: %s", t->tid,
					strerror(errno));
	}
	return rc;
}

/* A seized thread's stop; a signal met on the way goes on to it. */
static int wait_stopped(struct tracee *p, struct thread *th, aiotk_err *err)
{
	int tid = th->tid;
	th->stopping = 0;
	for (;;) {
		int st, rc = th->gone ? 0 : wait_thread(p, tid, &st);
		/* Reaped already (an exit seen while waiting for another). */
		if (th->gone || rc == -ECHILD) {
			th->gone = 1;
			return 0;
		}
		if (rc)
			return aiotk_fail(err, AIOTK_ESYS, -rc, "cannot stop thread %d: %s", tid, strerror(-rc));
		if (exited(p, tid, st))
			return 0;
		if (st >> 16 == PTRACE_EVENT_EXEC) {
			p->execd = 1;
			return aiotk_fail(err, AIOTK_ESYS, ESRCH,
					  "process %d executed a new program while being stopped; nothing was changed", p->pid);
		}
		if (st >> 16 == PTRACE_EVENT_STOP)
			break;
		if (ptrace(PTRACE_CONT, tid, 0, WSTOPSIG(st)))
			return aiotk_fail(err, AIOTK_ESYS, errno, "cannot stop thread %d: %s", tid, strerror(errno));
	}
	make_restartable(p, tid);
	return 0;
}

static int opendir_task(int pid, DIR **d, aiotk_err *err)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	*d = opendir(path);
	return *d ? 0 : aiotk_fail(err, AIOTK_ESYS, ESRCH, "process %d exited while being stopped", pid);
}

/* The seized threads asked to stop, then each waited for. */
static int stop_seized(struct tracee *p, int rc, aiotk_err *err)
{
	rc = ask_to_stop(p, rc, err);
	for (size_t i = 0; !rc && i < p->nth; i++)
		if (p->th[i].stopping)
			rc = wait_stopped(p, &p->th[i], err);
	return rc;
}

/* The threads listed and seized while the process still runs (so that
 * neither is in the stopped time: PTRACE_SEIZE does not stop a thread),
 * then asked to stop (the stop starts there), then waited for. */
static int stop_listed(struct tracee *p, const int *tids, size_t n, aiotk_err *err)
{
	int rc = 0;
	for (size_t i = 0; !rc && i < n; i++)
		if (!find(p, tids[i]))
			rc = seize_thread(p, tids[i], err);
	if (!rc && p->seized_hook)
		p->seized_hook(p->pid, p->seized_arg);
	p->t_stop = aiotk_now_ns();
	return stop_seized(p, rc, err);
}

/* The process's task directory, opened while it still runs and kept
 * until detach: in the stop, holds_all looks at it first. */
static size_t list_threads(struct tracee *p, int *tids, size_t max)
{
	size_t n = 0;
	if (opendir_task(p->pid, &p->task, NULL))
		return 0;
	for (struct dirent *e; n < max && (e = readdir(p->task));)
		if (atoi(e->d_name) > 0)
			tids[n++] = atoi(e->d_name);
	return n;
}

/* Every thread of the process is one we hold: the task directory's link
 * count is 2 + the process's thread count (proc_task_getattr), so one
 * fstat replaces a listing in the stop. Threads we reaped are no longer
 * counted; any other difference (or a kernel that counts otherwise) means
 * a listing. */
static int holds_all(struct tracee *p)
{
	struct stat st;
	nlink_t alive = 0;
	for (size_t i = 0; i < p->nth; i++)
		alive += !p->th[i].gone;
	return p->task && !fstat(dirfd(p->task), &st) && st.st_nlink == 2 + alive;
}

/* Threads may be created while we stop others: list until nothing new.
 * Each round asks every new thread to stop, then waits for them all. */
static int stop_all(struct tracee *p, aiotk_err *err)
{
	for (int added = 1; added && !holds_all(p);) {
		int rc = p->task ? 0 : opendir_task(p->pid, &p->task, err);
		if (rc)
			return rc;
		rewinddir(p->task);
		added = 0;
		for (struct dirent *e; !rc && (e = readdir(p->task));) {
			int tid = atoi(e->d_name);
			size_t held = p->nth;
			if (tid <= 0 || find(p, tid))
				continue;
			rc = seize_thread(p, tid, err);
			added |= p->nth > held; /* not for one that was exiting */
		}
		if ((rc = stop_seized(p, rc, err)))
			return rc;
	}
	return 0;
}

static void close_task(struct tracee *p)
{
	if (p->task)
		closedir(p->task);
	p->task = NULL;
}

/* Threads killed while stopped exit within moments; the leader's exit is
 * reported only after the others'. Waited for a second at most. */
static void reap_dying(struct tracee *p)
{
	for (int round = 0; round < 1000; round++) {
		int left = 0;
		for (size_t i = 0; i < p->nth; i++) {
			siginfo_t si;
			struct thread *t = &p->th[i];
			if (!t->dying || t->gone)
				continue;
			si.si_pid = 0;
			if (!waitid(P_PID, (id_t)t->tid, &si, WEXITED | WNOHANG | __WALL) && si.si_pid)
				t->gone = 1;
			else if (errno == ECHILD)
				t->gone = 1;
			else
				left++;
		}
		if (!left)
			return;
		struct timespec ms = { 0, 1000000 };
		nanosleep(&ms, NULL);
	}
}

/* Every seized thread let go. The main thread gets its mask back while its
 * registers still lead through the frame, then its registers. */
static void release(struct tracee *p)
{
	uncolocate(p);
	for (size_t i = 0; i < p->nth; i++) {
		struct thread *t = &p->th[i];
		if (t->gone)
			continue;
		/* Asked to stop when stopping failed elsewhere: only a stopped
		 * thread can be detached, and it is waited for as any other (a
		 * signal met on the way goes on to it, the call our stop broke
		 * is made restartable; seen: EINTR left in a workload's threads
		 * by attaches that failed half way). */
		if (t->stopping) {
			wait_stopped(p, t, NULL);
			if (t->gone)
				continue;
		}
		if (t->tid == p->pid && p->blocked)
			set_mask(t->tid, p->mask);
		if (t->tid == p->pid && p->injected)
			aiotk_arch_set(t->tid, &p->saved);
		if (p->adopted)
			continue; /* the caller's to let go */
		/* Not in its stop any more: killed (SIGKILL pending). Its exit
		 * is ours to reap, or its parent would wait for ever. */
		if (ptrace(PTRACE_DETACH, t->tid, 0, 0) && errno == ESRCH) {
			t->dying = 1;
			p->dead |= t->tid == p->pid;
		}
	}
	reap_dying(p);
	for (int sig = 1; sig <= 64; sig++)
		if (p->deferred >> (sig - 1) & 1)
			tgkill(p->pid, p->pid, sig);
	p->nth = 0;
	p->blocked = p->injected = 0;
	p->deferred = 0;
}

/* The guardian's record taken back, once the process runs again and its
 * stopped time is taken: telling wakes the guardian. */
static void untell(struct tracee *p)
{
	if (p->told)
		aiotk_guard_unpin(p->pid);
	p->told = 0;
}

static int pt_ready(aiotk_target *t, aiotk_err *err)
{
	struct tracee *p = T(t);
	if (p->dead || p->execd)
		return aiotk_fail(err, AIOTK_ESYS, ESRCH, "process %d %s", p->pid,
				  p->execd ? "executed a new program" : "exited");
	int rc = armed(p);
	if (rc && err)
		*err = p->why;
	return rc;
}

static int pt_detach(aiotk_target *t, aiotk_err *err)
{
	struct tracee *p = T(t);
	if (!p || !p->nth)
		return 0;
	release(p);
	int dead = p->dead, execd = p->execd;
	p->stopped_ns = aiotk_now_ns() - p->t_stop;
	untell(p);
	close_task(p);
	unpin_self(p);
	aiotk_cpu_latency_release(p->latency_fd);
	p->latency_fd = -1;
	if (execd)
		return aiotk_fail(err, AIOTK_ESYS, ESRCH, "process %d executed a new program while stopped", p->pid);
	if (dead)
		return aiotk_fail(err, AIOTK_ESYS, ESRCH, "process %d exited while stopped", p->pid);
	return 0;
}

static void pt_free(aiotk_target *t)
{
	struct tracee *p = T(t);
	if (!p)
		return;
	if (p->nth)
		pt_detach(t, NULL);
	untell(p);
	unpin_self(p);
	close_task(p);
	aiotk_cpu_latency_release(p->latency_fd);
	free(p->th);
	free(p);
	t->priv = NULL;
}

/* ---- the threads' registers, as they will resume ----------------------- */

/* The main thread's: as found (p->saved), whatever injection did since. */
static int regs_of(struct tracee *p, int tid, aiotk_regs *r)
{
	if (tid == p->pid && !p->have_saved) {
		int rc = aiotk_arch_get(tid, &p->saved);
		if (rc)
			return rc;
		p->have_saved = 1;
	}
	if (tid == p->pid) {
		*r = p->saved;
		return 0;
	}
	return aiotk_arch_get(tid, r);
}

int aiotk_target_each_regs(aiotk_target *t, int (*fn)(int tid, aiotk_regs *r, void *ctx),
			   void *ctx, aiotk_err *err)
{
	if (t->ops != &ptrace_ops)
		return 0;
	struct tracee *p = T(t);
	for (size_t i = 0; i < p->nth; i++) {
		aiotk_regs r;
		if (p->th[i].gone)
			continue;
		int rc = regs_of(p, p->th[i].tid, &r);
		if (rc)
			return aiotk_fail(err, AIOTK_ESYS, -rc, "cannot read the registers of thread %d: %s",
					  p->th[i].tid, strerror(-rc));
		if ((rc = fn(p->th[i].tid, &r, ctx)))
			return rc;
	}
	return 0;
}

/* The main thread resumes from p->saved: put back at release once
 * injection began (the live registers until then), and copied into the
 * return frame, which must say the same should aiotk die. */
static int set_main(struct tracee *p, unsigned reg, uint64_t v, aiotk_err *err)
{
	aiotk_regs was = p->saved;
	*aiotk_arch_gpr(&p->saved, reg) = v;
	int rc = p->injected ? 0 : aiotk_arch_set(p->pid, &p->saved);
	if (!rc && p->armed && write_frame(p))
		rc = -(p->why.errno_ ? p->why.errno_ : EIO);
	if (rc) {
		p->saved = was;
		return aiotk_fail(err, AIOTK_ESYS, -rc, "cannot set %s of thread %d: %s",
				  aiotk_arch_gpr_name(reg), p->pid, strerror(-rc));
	}
	return 0;
}

int aiotk_target_set_gpr(aiotk_target *t, int tid, unsigned reg, uint64_t v, aiotk_err *err)
{
	aiotk_regs r;
	if (t->ops != &ptrace_ops || reg >= aiotk_arch_ngpr)
		return aiotk_fail(err, AIOTK_EINVAL, EINVAL, "register %u of thread %d: not a stopped thread's register",
				  reg, tid);
	struct tracee *p = T(t);
	if (tid == p->pid)
		return set_main(p, reg, v, err);
	int rc = aiotk_arch_get(tid, &r);
	if (!rc) {
		*aiotk_arch_gpr(&r, reg) = v;
		rc = aiotk_arch_set(tid, &r);
	}
	if (rc)
		return aiotk_fail(err, AIOTK_ESYS, -rc, "cannot set %s of thread %d: %s",
				  aiotk_arch_gpr_name(reg), tid, strerror(-rc));
	return 0;
}

void aiotk_target_frame_area(aiotk_target *t, uint64_t *lo, uint64_t *hi)
{
	aiotk_regs r;
	*lo = *hi = 0;
	if (t->ops != &ptrace_ops || regs_of(T(t), t->pid, &r))
		return;
	*hi = aiotk_arch_sp(&r) > 128 ? aiotk_arch_sp(&r) - 128 : 0;
	*lo = *hi > FRAME_MAX ? *hi - FRAME_MAX : 0;
}

static const struct aiotk_target_ops ptrace_ops = {
	.kind = "process",
	.sys = pt_sys, .read = pt_read, .write = pt_write,
	.ready = pt_ready, .detach = pt_detach, .free = pt_free,
};

int aiotk_target_attach(aiotk_target *t, int pid, aiotk_err *err)
{
	return aiotk_target_attach_with(t, pid, NULL, err);
}

int aiotk_target_attach_with(aiotk_target *t, int pid, const aiotk_attach_opts *o,
			     aiotk_err *err)
{
	return aiotk_target_attach_hooked(t, pid, o, NULL, NULL, err);
}

int aiotk_target_attach_hooked(aiotk_target *t, int pid, const aiotk_attach_opts *o,
			       aiotk_seized_hook seized, void *arg, aiotk_err *err)
{
	if (!aiotk_arch_supported())
		return aiotk_fail(err, AIOTK_EINVAL, ENOSYS,
				  "live processes are not supported on this architecture (syscall injection exists for x86_64)");
	int rc = aiotk_check_process(pid, err);
	if (rc)
		return rc;
	struct tracee *p = calloc(1, sizeof(*p));
	if (!p)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
	p->pid = pid;
	p->seized_hook = seized;
	p->seized_arg = arg;
	/* The guardian first (without one, the main thread is not pinned):
	 * forked after the latency request was opened, it would hold the
	 * request too until it got the CPU to close what it inherited, which
	 * under load was after a SIGKILLed aiotk had been reaped. */
	aiotk_guardian_start();
	p->latency_fd = o && o->hold_cpu_latency ? aiotk_cpu_latency_hold() : -1;
	/* Read while the process runs, to keep it out of the stopped time;
	 * a failure is kept in p->why, since dumps need no injection. */
	find_gadgets(p);
	aiotk_arch_frame_prepare();
	p->quiet = quiet_signal(pid, &p->seccomp);
	p->start = aiotk_thread_start(pid);
	pin_self(p);
	tell_early(p);
	int tids[64];
	size_t ntids = list_threads(p, tids, 64);
	rc = stop_listed(p, tids, ntids, err);
	if (!rc)
		rc = stop_all(p, err);
	if (!rc && (!find(p, pid) || find(p, pid)->gone))
		rc = aiotk_fail(err, AIOTK_ESYS, ESRCH, "process %d exited while being stopped", pid);
	int g = rc || p->have_saved ? 0 : aiotk_arch_get(pid, &p->saved);
	if (!rc && g == -ESRCH)
		rc = aiotk_fail(err, AIOTK_ESYS, ESRCH, "process %d exited while being stopped", pid);
	else if (!rc && g)
		rc = aiotk_fail(err, AIOTK_ESYS, -g, "cannot read registers of %d: %s", pid, strerror(-g));
	t->ops = &ptrace_ops;
	t->pid = pid;
	t->priv = p;
	t->ws = NULL;
	if (rc)
		pt_free(t);
	return rc;
}

/* The caller (CRIU's restore, running its plugins) traces every thread of
 * pid and holds them in a ptrace stop: injection goes through its main
 * thread as for attach, and detach puts that thread's mask and registers
 * back and leaves it stopped, traced by the caller. */
int aiotk_target_adopt(aiotk_target *t, int pid, aiotk_err *err)
{
	if (!aiotk_arch_supported())
		return aiotk_fail(err, AIOTK_EINVAL, ENOSYS,
				  "live processes are not supported on this architecture (syscall injection exists for x86_64)");
	struct tracee *p = calloc(1, sizeof(*p));
	if (!p || !add(p, pid)) {
		free(p);
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
	}
	p->pid = pid;
	p->adopted = 1;
	p->latency_fd = -1;
	find_gadgets(p);
	aiotk_arch_frame_prepare();
	p->quiet = quiet_signal(pid, &p->seccomp);
	pin_self(p);
	p->t_stop = aiotk_now_ns();
	t->ops = &ptrace_ops;
	t->pid = pid;
	t->priv = p;
	t->ws = NULL;
	int g = aiotk_arch_get(pid, &p->saved);
	if (g) {
		pt_free(t);
		return aiotk_fail(err, AIOTK_ESYS, -g, "process %d is not held in a ptrace stop by this "
				  "process (cannot read its registers: %s)", pid, strerror(-g));
	}
	return 0;
}

uint64_t aiotk_target_stopped_ns(const aiotk_target *t)
{
	const struct tracee *p = t->priv;
	return t->ops == &ptrace_ops && p ? p->stopped_ns : 0;
}

uint64_t aiotk_target_stopped_at_ns(const aiotk_target *t)
{
	const struct tracee *p = t->priv;
	return t->ops == &ptrace_ops && p ? p->t_stop : 0;
}

int aiotk_target_dead(const aiotk_target *t)
{
	const struct tracee *p = t->priv;
	return t->ops == &ptrace_ops && p && (p->dead || p->execd);
}


int aiotk_target_latency_held(const aiotk_target *t)
{
	const struct tracee *p = t->priv;
	return t->ops == &ptrace_ops && p && p->latency_fd >= 0;
}

int aiotk_target_pinned(const aiotk_target *t)
{
	const struct tracee *p = t->priv;
	if (t->ops == &ptrace_ops)
		return p && p->their_pinned;
	return aiotk_ws_pinned(t);
}
