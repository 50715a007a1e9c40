/* A running process as a target: every thread seized and stopped
 * (PTRACE_SEIZE + PTRACE_INTERRUPT, no signal sent), system calls injected
 * into its main thread, memory through process_vm_readv/writev. Detaching
 * puts back the code bytes and registers exactly, and lets system calls
 * our stop interrupted restart instead of failing with EINTR. */
#define _GNU_SOURCE
#include "aiotk.h"
#include "arch.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_THREADS 4096

struct tracee {
	int pid;
	int tids[MAX_THREADS];
	int ntids;
	int pending_sig[MAX_THREADS]; /* signal caught while stopping; re-sent */
	int main_sig;                 /* one caught while injecting */
	aiotk_regs saved;             /* main thread, as we found it */
	uint64_t code_addr, code_word;
	int code_installed, dead;
	uint64_t t_stop, stopped_ns;
};

static struct tracee *T(aiotk_target *t) { return t->priv; }

static int pt_rw(aiotk_target *t, uint64_t addr, void *buf, size_t len, int wr)
{
	struct iovec local = { buf, len }, remote = { (void *)(uintptr_t)addr, len };
	ssize_t n = wr ? process_vm_writev(t->pid, &local, 1, &remote, 1, 0)
		       : process_vm_readv(t->pid, &local, 1, &remote, 1, 0);
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EFAULT;
}

static int pt_read(aiotk_target *t, uint64_t a, void *b, size_t l) { return pt_rw(t, a, b, l, 0); }
static int pt_write(aiotk_target *t, uint64_t a, const void *b, size_t l)
{
	return pt_rw(t, a, (void *)b, l, 1);
}

/* Wait for the main thread to stop at our breakpoint. A signal that
 * arrives meanwhile is kept and re-sent on detach, never lost. */
static long wait_trap(struct tracee *p)
{
	for (;;) {
		int st;
		if (waitpid(p->pid, &st, __WALL) < 0)
			return -errno;
		if (WIFEXITED(st) || WIFSIGNALED(st)) {
			p->dead = 1;
			return -ESRCH;
		}
		if (WIFSTOPPED(st) && WSTOPSIG(st) == SIGTRAP && (st >> 16) == 0)
			return 0;
		if (WIFSTOPPED(st) && (st >> 16) == 0)
			p->main_sig = WSTOPSIG(st);
		if (ptrace(PTRACE_CONT, p->pid, 0, 0))
			return -errno;
	}
}

static int install_code(struct tracee *p)
{
	uint64_t word;
	p->code_addr = aiotk_arch_ip(&p->saved);
	errno = 0;
	p->code_word = (uint64_t)ptrace(PTRACE_PEEKTEXT, p->pid, p->code_addr, 0);
	if (errno)
		return -errno;
	memcpy(&word, aiotk_arch_code, sizeof(word));
	/* ptrace writes through read-only text (FOLL_FORCE). */
	if (ptrace(PTRACE_POKETEXT, p->pid, p->code_addr, word))
		return -errno;
	p->code_installed = 1;
	return 0;
}

static long pt_sys(aiotk_target *t, long nr, const long a[6])
{
	struct tracee *p = T(t);
	aiotk_regs r = p->saved;
	if (p->dead)
		return -ESRCH;
	int rc = p->code_installed ? 0 : install_code(p);
	if (rc)
		return rc;
	aiotk_arch_prepare(&r, p->code_addr, nr, a);
	if ((rc = aiotk_arch_set(p->pid, &r)))
		return p->dead = (rc == -ESRCH), rc;
	if (ptrace(PTRACE_CONT, p->pid, 0, 0))
		return -errno;
	long w = wait_trap(p);
	if (w)
		return w;
	if ((rc = aiotk_arch_get(p->pid, &r)))
		return rc;
	return aiotk_arch_result(&r);
}

static const struct aiotk_target_ops ptrace_ops = {
	.sys = pt_sys, .read = pt_read, .write = pt_write,
};

static int why_not_permitted(int pid, aiotk_err *err)
{
	char path[64], line[256];
	unsigned uid = (unsigned)-1;
	int yama = -1;
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	FILE *f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Uid: %*u %u", &uid) == 1)
			break;
	if (f)
		fclose(f);
	f = fopen("/proc/sys/kernel/yama/ptrace_scope", "r");
	if (f && fscanf(f, "%d", &yama) != 1)
		yama = -1;
	if (f)
		fclose(f);
	if (uid != (unsigned)-1 && uid != geteuid())
		return aiotk_fail(err, AIOTK_ESYS, EPERM,
				  "ptrace of process %d not permitted: it runs as uid %u, you are uid %u without CAP_SYS_PTRACE; run aiotk as root or as that user",
				  pid, uid, (unsigned)geteuid());
	if (yama > 0)
		return aiotk_fail(err, AIOTK_ESYS, EPERM,
				  "ptrace of process %d not permitted: Yama ptrace_scope is %d (/proc/sys/kernel/yama/ptrace_scope); run as root or set it to 0",
				  pid, yama);
	return aiotk_fail(err, AIOTK_ESYS, EPERM,
			  "ptrace of process %d not permitted (no CAP_SYS_PTRACE, or it is being traced already)",
			  pid);
}

/* Seize and stop one thread. */
static int stop_thread(struct tracee *p, int tid, aiotk_err *err)
{
	int st;
	if (ptrace(PTRACE_SEIZE, tid, 0, 0)) {
		if (errno == EPERM)
			return why_not_permitted(p->pid, err);
		if (errno == ESRCH)
			return 0; /* exited meanwhile */
		return aiotk_fail(err, AIOTK_ESYS, errno, "PTRACE_SEIZE %d: %s", tid, strerror(errno));
	}
	p->tids[p->ntids] = tid;
	p->pending_sig[p->ntids] = 0;
	if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) || waitpid(tid, &st, __WALL) < 0)
		return aiotk_fail(err, AIOTK_ESYS, errno, "cannot stop thread %d: %s", tid, strerror(errno));
	if (WIFEXITED(st) || WIFSIGNALED(st))
		return 0;
	if ((st >> 16) == 0 && WSTOPSIG(st) != SIGTRAP)
		p->pending_sig[p->ntids] = WSTOPSIG(st);
	p->ntids++;
	return 0;
}

static int seized(const struct tracee *p, int tid)
{
	for (int i = 0; i < p->ntids; i++)
		if (p->tids[i] == tid)
			return 1;
	return 0;
}

/* Threads may be created while we stop others: list until nothing new. */
static int stop_all(struct tracee *p, aiotk_err *err)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", p->pid);
	for (int added = 1; added;) {
		DIR *d = opendir(path);
		if (!d)
			return aiotk_fail(err, AIOTK_ESYS, ESRCH, "no such process: %d", p->pid);
		added = 0;
		for (struct dirent *e; (e = readdir(d));) {
			int tid = atoi(e->d_name);
			if (tid <= 0 || seized(p, tid))
				continue;
			if (p->ntids == MAX_THREADS) {
				closedir(d);
				return aiotk_fail(err, AIOTK_EINVAL, 0, "process %d has more than %d threads", p->pid, MAX_THREADS);
			}
			int rc = stop_thread(p, tid, err);
			if (rc) {
				closedir(d);
				return rc;
			}
			added = 1;
		}
		closedir(d);
	}
	return 0;
}

static void release(struct tracee *p)
{
	for (int i = 0; i < p->ntids; i++) {
		aiotk_regs r;
		if (p->tids[i] == p->pid && !p->dead) {
			r = p->saved;
			aiotk_arch_restartable(&r);
			aiotk_arch_set(p->pid, &r);
		} else if (p->tids[i] != p->pid && aiotk_arch_get(p->tids[i], &r) == 0 &&
			   aiotk_arch_restartable(&r)) {
			aiotk_arch_set(p->tids[i], &r);
		}
		int sig = p->pending_sig[i];
		if (p->tids[i] == p->pid && p->main_sig)
			sig = p->main_sig;
		ptrace(PTRACE_DETACH, p->tids[i], 0, sig);
	}
	p->ntids = 0;
}

int aiotk_target_attach(aiotk_target *t, int pid, aiotk_err *err)
{
	if (!aiotk_arch_supported())
		return aiotk_fail(err, AIOTK_EINVAL, ENOSYS,
				  "live processes are not supported on this architecture (syscall injection exists for x86_64)");
	if (pid <= 0 || (kill(pid, 0) && errno == ESRCH))
		return aiotk_fail(err, AIOTK_ESYS, ESRCH, "no such process: %d", pid);
	struct tracee *p = calloc(1, sizeof(*p));
	if (!p)
		return aiotk_fail(err, AIOTK_ENOMEM, 0, "out of memory");
	p->pid = pid;
	p->t_stop = aiotk_now_ns();
	int rc = stop_all(p, err);
	if (!rc && !seized(p, pid))
		rc = aiotk_fail(err, AIOTK_ESYS, ESRCH, "process %d exited while being stopped", pid);
	int g = rc ? 0 : aiotk_arch_get(pid, &p->saved);
	if (!rc && g)
		rc = aiotk_fail(err, AIOTK_ESYS, -g, "cannot read registers of %d: %s", pid, strerror(-g));
	if (rc) {
		release(p);
		free(p);
		return rc;
	}
	t->ops = &ptrace_ops;
	t->pid = pid;
	t->priv = p;
	return 0;
}

int aiotk_target_detach(aiotk_target *t, aiotk_err *err)
{
	struct tracee *p = T(t);
	int rc = 0;
	if (!p)
		return 0;
	if (p->code_installed && !p->dead &&
	    ptrace(PTRACE_POKETEXT, p->pid, p->code_addr, p->code_word))
		rc = aiotk_fail(err, AIOTK_ESYS, errno, "cannot restore code of %d: %s",
				p->pid, strerror(errno));
	if (p->dead && !rc)
		rc = aiotk_fail(err, AIOTK_ESYS, ESRCH, "process %d exited while stopped", p->pid);
	release(p);
	p->stopped_ns = aiotk_now_ns() - p->t_stop;
	return rc;
}

uint64_t aiotk_target_stopped_ns(const aiotk_target *t)
{
	const struct tracee *p = t->priv;
	return t->pid > 0 && p ? p->stopped_ns : 0;
}

void aiotk_target_free(aiotk_target *t)
{
	if (t->pid == -1) { /* simulated */
		free(t->priv);
	} else if (t->pid && t->priv) {
		if (T(t)->ntids)
			aiotk_target_detach(t, NULL);
		free(t->priv);
	}
	t->priv = NULL;
}

int aiotk_target_dead(const aiotk_target *t)
{
	const struct tracee *p = t->priv;
	return t->pid > 0 && p && p->dead;
}
