/* Is this a process aiotk can stop, and if not, why: read from /proc so
 * that the user is told what the process is (zombie, kernel thread,
 * exiting, another user's, traced already), not only that ptrace failed. */
#include "target/target.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>

#define PF_EXITING 0x00000004u
#define PF_KTHREAD 0x00200000u

/* What aiotk reads of /proc/TID/stat: state, flags and start time
 * (fields 3, 9 and 22). Counted after the last ')': the command name
 * (field 2) may hold spaces and parentheses. Only open, read and close,
 * so that the guardian (guardian.c, a forked process) may call it. */
struct proc_stat {
	char state;
	unsigned flags;
	uint64_t start;
};

static int read_stat(int tid, struct proc_stat *out)
{
	char path[32] = "/proc/", buf[1024];
	size_t n = 6;
	for (int d = 1000000000; d; d /= 10)
		if (tid >= d || d == 1 || n > 6)
			path[n++] = (char)('0' + tid / d % 10);
	memcpy(path + n, "/stat", 6);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t len = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	char *p = len > 0 ? (buf[len] = 0, strrchr(buf, ')')) : NULL;
	if (!p || p[1] != ' ' || !p[2])
		return -1;
	memset(out, 0, sizeof(*out));
	out->state = p[2];
	p += 2; /* at field 3; each space after starts the next field */
	for (int field = 3; (p = strchr(p + 1, ' ')) && field < 22;) {
		uint64_t v = 0;
		field++;
		for (const char *q = p + 1; *q >= '0' && *q <= '9'; q++)
			v = v * 10 + (uint64_t)(*q - '0');
		if (field == 9)
			out->flags = (unsigned)v;
		else if (field == 22)
			out->start = v;
	}
	return 0;
}

uint64_t aiotk_thread_start(int tid)
{
	struct proc_stat st;
	return read_stat(tid, &st) ? 0 : st.start;
}

/* A "Name: value" line of /proc/PID/status as a number; -1 if absent. */
static long status_field(int pid, const char *name)
{
	char path[64], line[256];
	long v = -1;
	size_t len = strlen(name);
	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	FILE *f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, name, len) && line[len] == ':') {
			v = strtol(line + len + 1, NULL, 10);
			break;
		}
	if (f)
		fclose(f);
	return v;
}

int aiotk_thread_exiting(int tid)
{
	struct proc_stat st;
	return read_stat(tid, &st) || st.state == 'X' || st.state == 'Z' || (st.flags & PF_EXITING);
}

int aiotk_check_process(int pid, aiotk_err *err)
{
	struct proc_stat st;
	if (pid <= 0 || read_stat(pid, &st))
		return aiotk_fail(err, AIOTK_ESYS, ESRCH, "no such process: %d", pid);
	char state = st.state;
	unsigned flags = st.flags;
	if (flags & PF_KTHREAD)
		return aiotk_fail(err, AIOTK_EINVAL, EPERM,
				  "process %d is a kernel thread: it has no memory of its own and no AIO rings", pid);
	if (state == 'Z')
		return aiotk_fail(err, AIOTK_ESYS, ESRCH,
				  "process %d is a zombie: it has exited and only waits for its parent to reap it; nothing to dump or restore", pid);
	if (state == 'X' || (flags & PF_EXITING))
		return aiotk_fail(err, AIOTK_ESYS, ESRCH, "process %d is exiting; nothing to dump or restore", pid);
	long uid = status_field(pid, "Uid");
	if (geteuid() != 0 && uid >= 0 && (unsigned long)uid != geteuid())
		return aiotk_fail(err, AIOTK_ESYS, EPERM,
				  "process %d runs as uid %ld and you are uid %u: run aiotk as root or as that user",
				  pid, uid, (unsigned)geteuid());
	return 0;
}

int aiotk_why_not_permitted(int pid, int tid, aiotk_err *err)
{
	int yama = -1;
	long tracer = status_field(pid, "TracerPid");
	long by = tid == pid ? tracer : status_field(tid, "TracerPid");
	if (by > 0 && by != getpid())
		return aiotk_fail(err, AIOTK_ESYS, EPERM,
				  "thread %d of process %d is being traced already, by process %ld (TracerPid in /proc/%d/task/%d/status): detach that debugger or tracer first; nothing was changed",
				  tid, pid, by, pid, tid);
	if (tracer == getpid())
		return aiotk_fail(err, AIOTK_ESYS, ESRCH,
				  "a thread of process %d is exiting and cannot be stopped; try again", pid);
	if (tracer > 0)
		return aiotk_fail(err, AIOTK_ESYS, EPERM,
				  "process %d is being traced already, by process %ld (TracerPid in /proc/%d/status): detach that debugger or tracer first",
				  pid, tracer, pid);
	FILE *f = fopen("/proc/sys/kernel/yama/ptrace_scope", "r");
	if (f && fscanf(f, "%d", &yama) != 1)
		yama = -1;
	if (f)
		fclose(f);
	if (yama > 0 && geteuid() != 0)
		return aiotk_fail(err, AIOTK_ESYS, EPERM,
				  "ptrace of process %d not permitted: Yama ptrace_scope is %d (/proc/sys/kernel/yama/ptrace_scope); run as root or set it to 0",
				  pid, yama);
	long uid = status_field(pid, "Uid");
	return aiotk_fail(err, AIOTK_ESYS, EPERM,
			  "ptrace of process %d (uid %ld) not permitted for uid %u: run aiotk as root, or as that user without a seccomp or LSM rule that forbids ptrace",
			  pid, uid, (unsigned)geteuid());
}
