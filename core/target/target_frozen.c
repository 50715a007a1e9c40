/* A process someone else holds stopped (CRIU, during its dump), as a
 * read-only target: memory through process_vm_readv, no write (the holder
 * saves the memory as it is: a change would go into the dump unnoticed),
 * no system call, nothing to let go. aiotk never stops or resumes it: its
 * lifetime is the holder's. */
#define _GNU_SOURCE
#include "target/target.h"

#include <errno.h>

static int fz_read(aiotk_target *t, uint64_t a, void *b, size_t l) { return aiotk_vm_rw(t->pid, a, b, l, 0); }

static long fz_sys(aiotk_target *t, long nr, const long a[6])
{
	(void)t, (void)nr, (void)a;
	return -EPERM;
}

static int fz_ready(aiotk_target *t, aiotk_err *err)
{
	return aiotk_fail(err, AIOTK_EINVAL, EPERM,
			  "process %d is held stopped by another tool; aiotk reads it but runs no "
			  "system call in it", t->pid);
}

static const struct aiotk_target_ops frozen_ops = {
	.kind = "frozen process",
	.sys = fz_sys, .read = fz_read, .ready = fz_ready,
	.read_only = "it is held stopped by another tool (CRIU's dump), which saves its memory "
		     "as it is, so aiotk only reads it; change it through a target aiotk holds "
		     "itself (aiotk_target_attach, or aiotk_target_adopt at CRIU's restore)",
};

int aiotk_target_frozen(aiotk_target *t, int pid, aiotk_err *err)
{
	int rc = aiotk_check_process(pid, err);
	if (rc)
		return rc;
	t->ops = &frozen_ops;
	t->pid = pid;
	t->priv = NULL;
	t->ws = NULL;
	return 0;
}
