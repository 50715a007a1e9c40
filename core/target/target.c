/* Target-independent helpers: every primitive reaches its process here. */
#define _GNU_SOURCE
#include "target/target.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* Changes to a process still to make before aiotk_die_after's kill
 * point; 0: none set. */
static unsigned long die_countdown;

void aiotk_die_after(unsigned long n)
{
	die_countdown = n;
}

/* Before each change to a stopped process (not to this one). */
static void kill_point(const aiotk_target *t)
{
	if (die_countdown && t->pid && --die_countdown == 0)
		raise(SIGKILL);
}

long aiotk_sys(aiotk_target *t, long nr, long a0, long a1, long a2, long a3,
	       long a4, long a5)
{
	const long a[6] = { a0, a1, a2, a3, a4, a5 };
	kill_point(t);
	return t->ops->sys(t, nr, a);
}

long aiotk_sys_in(aiotk_target *t, int tid, long nr, long a0, long a1, long a2, long a3,
		  long a4, long a5)
{
	const long a[6] = { a0, a1, a2, a3, a4, a5 };
	if (!tid || tid == (t->pid ? t->pid : (int)gettid()))
		return aiotk_sys(t, nr, a0, a1, a2, a3, a4, a5);
	kill_point(t);
	return aiotk_target_thread_sys(t, tid, nr, a);
}

int aiotk_vm_rw(int pid, uint64_t addr, void *buf, size_t len, int wr)
{
	struct iovec local = { buf, len }, remote = { (void *)(uintptr_t)addr, len };
	ssize_t n = wr ? process_vm_writev(pid, &local, 1, &remote, 1, 0)
		       : process_vm_readv(pid, &local, 1, &remote, 1, 0);
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EFAULT;
}

static int who(aiotk_target *t) { return t->pid ? t->pid : (int)getpid(); }

int aiotk_peek(aiotk_target *t, uint64_t addr, void *buf, size_t len,
	       aiotk_err *err)
{
	int rc = t->ops->read(t, addr, buf, len);
	if (rc)
		return aiotk_fail(err, AIOTK_ESYS, -rc,
				  "cannot read %zu bytes at 0x%llx in process %d: %s",
				  len, (unsigned long long)addr, who(t),
				  strerror(-rc));
	return 0;
}

int aiotk_poke(aiotk_target *t, uint64_t addr, const void *buf, size_t len,
	       aiotk_err *err)
{
	if (!t->ops->write)
		return aiotk_fail(err, AIOTK_EINVAL, EPERM,
				  "refused to write %zu bytes at 0x%llx in process %d: %s",
				  len, (unsigned long long)addr, who(t), t->ops->read_only);
	kill_point(t);
	int rc = t->ops->write(t, addr, buf, len);
	if (rc)
		return aiotk_fail(err, AIOTK_ESYS, -rc,
				  "cannot write %zu bytes at 0x%llx in process %d: %s",
				  len, (unsigned long long)addr, who(t),
				  strerror(-rc));
	return 0;
}

int aiotk_target_ready(aiotk_target *t, aiotk_err *err)
{
	return t->ops->ready ? t->ops->ready(t, err) : 0;
}

int aiotk_target_detach(aiotk_target *t, aiotk_err *err)
{
	aiotk_err rerr;
	int released = aiotk_target_release(t, &rerr);
	int rc = t->ops && t->ops->detach ? t->ops->detach(t, err) : 0;
	if (!rc && released && err)
		*err = rerr;
	return rc ? rc : released;
}

void aiotk_target_free(aiotk_target *t)
{
	aiotk_target_release(t, NULL);
	if (t->ops && t->ops->free)
		t->ops->free(t);
	t->priv = NULL;
}
