/* The calling process as a target. Memory goes through process_vm_readv/
 * writev even here (aiotk_vm_rw). */
#define _GNU_SOURCE
#include "target/target.h"

#include <errno.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

static long self_sys(aiotk_target *t, long nr, const long a[6])
{
	(void)t;
	long r = syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
	return r == -1 ? -errno : r;
}

static int self_read(aiotk_target *t, uint64_t addr, void *buf, size_t len)
{
	(void)t;
	return aiotk_vm_rw(getpid(), addr, buf, len, 0);
}

static int self_write(aiotk_target *t, uint64_t addr, const void *buf,
		      size_t len)
{
	(void)t;
	return aiotk_vm_rw(getpid(), addr, (void *)buf, len, 1);
}

static const struct aiotk_target_ops self_ops = {
	.kind = "this process",
	.sys = self_sys, .read = self_read, .write = self_write,
};

void aiotk_target_self(aiotk_target *t)
{
	t->ops = &self_ops;
	t->pid = 0;
	t->priv = NULL;
	t->ws = NULL;
}

int aiotk_target_is_self(const aiotk_target *t)
{
	return t->ops == &self_ops;
}
