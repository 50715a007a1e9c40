/* The io_uring view against a real process: uring_workload makes three
 * instances in known states and prints what it knows of them; every field
 * the view reads is checked against that, exactly. The workload is
 * killed and reaped on every path (and dies with this test). */
#define _GNU_SOURCE
#include "aiotk.h"
#include "check.h"

#include <linux/io_uring.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* What the workload printed: "name value [value]" lines. */
#define MAX_FACTS 128
static struct fact {
	char name[48];
	unsigned long long v, v2;
} facts[MAX_FACTS];
static int nfacts;

static unsigned long long fact2(const char *name, unsigned long long *v2)
{
	for (int i = 0; i < nfacts; i++)
		if (!strcmp(facts[i].name, name)) {
			if (v2)
				*v2 = facts[i].v2;
			return facts[i].v;
		}
	CHECK(0, "the workload printed no %s", name);
	return ~0ull;
}

static unsigned long long fact(const char *ring, const char *field)
{
	char name[64];
	snprintf(name, sizeof(name), "%s.%s", ring, field);
	return fact2(name, NULL);
}

static pid_t start(const char *workload)
{
	int fd[2];
	if (pipe(fd))
		return -1;
	pid_t pid = fork();
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(fd[1], 1);
		close(fd[0]);
		execl(workload, workload, (char *)NULL);
		_exit(127);
	}
	close(fd[1]);
	FILE *out = fdopen(fd[0], "r");
	char line[256];
	while (out && fgets(line, sizeof(line), out) && strncmp(line, "READY", 5))
		if (nfacts < MAX_FACTS &&
		    sscanf(line, "%47s %llu %llu", facts[nfacts].name, &facts[nfacts].v,
			   &facts[nfacts].v2) >= 2)
			nfacts++;
	if (out)
		fclose(out);
	return pid;
}

static const aiotk_uring *by_fd(const aiotk_uring_view *uv, int fd)
{
	for (size_t i = 0; i < uv->n; i++)
		if (uv->ring[i].fd == fd)
			return &uv->ring[i];
	CHECK(0, "no instance with fd %d in the view", fd);
	return NULL;
}

/* The mapping of the instance at addr with that mmap offset. */
static void check_map(const aiotk_uring *u, const char *name, uint64_t addr, uint64_t off)
{
	int found = 0;
	for (size_t i = 0; i < u->nmaps; i++)
		found |= u->maps[i].start == addr && u->maps[i].offset == off;
	CHECK(found, "%s: no mapping at 0x%llx with offset 0x%llx (%zu mappings)", name,
	      (unsigned long long)addr, (unsigned long long)off, u->nmaps);
}

/* What every instance has: flags, sizes, counters, mappings. */
static const aiotk_uring *check_ring(const aiotk_uring_view *uv, const char *name)
{
	const aiotk_uring *u = by_fd(uv, (int)fact(name, "fd"));
	if (!u)
		return NULL;
	CHECK(u->have == 511, "%s: have 0x%x (all parts read on this kernel)", name, u->have);
	CHECK(u->flags == fact(name, "flags"), "%s: flags 0x%x", name, u->flags);
	CHECK(u->sq_entries == fact(name, "sq_entries"), "%s: sq_entries %u", name, u->sq_entries);
	CHECK(u->cq_entries == fact(name, "cq_entries"), "%s: cq_entries %u", name, u->cq_entries);
	CHECK(u->sq_head == fact(name, "sq_head"), "%s: sq_head %u", name, u->sq_head);
	CHECK(u->sq_tail == fact(name, "sq_tail"), "%s: sq_tail %u", name, u->sq_tail);
	CHECK(u->cq_head == fact(name, "cq_head"), "%s: cq_head %u", name, u->cq_head);
	CHECK(u->cq_tail == fact(name, "cq_tail"), "%s: cq_tail %u", name, u->cq_tail);
	/* Nothing is moving: the kernel's own counters are what it published. */
	CHECK(u->cached_sq_head == u->sq_head, "%s: cached_sq_head %u", name, u->cached_sq_head);
	CHECK(u->cached_cq_tail == u->cq_tail, "%s: cached_cq_tail %u", name, u->cached_cq_tail);
	CHECK(u->sq_dropped == fact(name, "sq_dropped"), "%s: sq_dropped %u", name, u->sq_dropped);
	CHECK(u->cq_overflow == fact(name, "cq_overflow"), "%s: cq_overflow %u", name,
	      u->cq_overflow);
	check_map(u, name, fact(name, "sq_ring"), IORING_OFF_SQ_RING);
	check_map(u, name, fact(name, "sqes"), IORING_OFF_SQES);
	if (fact(name, "cq_ring") != fact(name, "sq_ring"))
		check_map(u, name, fact(name, "cq_ring"), IORING_OFF_CQ_RING);
	return u;
}

static void check_bufs(const aiotk_uring *u, const char *name)
{
	unsigned long long n = fact(name, "nbufs");
	CHECK(u->nr_bufs == n && u->nbufs == n, "%s: %u buffer slots, %zu listed", name,
	      u->nr_bufs, u->nbufs);
	for (size_t i = 0; i < u->nbufs && i < n; i++) {
		char key[64];
		unsigned long long len;
		snprintf(key, sizeof(key), "%s.buf%zu", name, i);
		unsigned long long ubuf = fact2(key, &len);
		CHECK(u->bufs[i].slot == i && u->bufs[i].ubuf == ubuf && u->bufs[i].len == len,
		      "%s: buffer %zu is slot %u, 0x%llx, %llu bytes", name, i, u->bufs[i].slot,
		      (unsigned long long)u->bufs[i].ubuf, (unsigned long long)u->bufs[i].len);
	}
}

static void check_a(const aiotk_uring_view *uv)
{
	const aiotk_uring *u = check_ring(uv, "a");
	if (!u)
		return;
	CHECK(fact("a", "sqe_tail") == u->sq_tail + 2, "a: two SQEs prepared and unsubmitted");
	CHECK(u->cq_tail - u->cq_head == 3, "a: three CQEs unreaped, %u", u->cq_tail - u->cq_head);
	CHECK(u->nr_files == 3 && u->nfiles == 2, "a: %u file slots, %zu used", u->nr_files,
	      u->nfiles);
	if (u->nfiles == 2) {
		CHECK(u->files[0].slot == 0 && u->files[0].fd == (int)fact("a", "file0"),
		      "a: file slot %u is fd %d", u->files[0].slot, u->files[0].fd);
		CHECK(u->files[1].slot == 2 && u->files[1].fd == (int)fact("a", "file2"),
		      "a: file slot %u is fd %d", u->files[1].slot, u->files[1].fd);
	}
	check_bufs(u, "a");
	CHECK(u->has_eventfd && !u->eventfd_async, "a: eventfd %d async %d", u->has_eventfd,
	      u->eventfd_async);
	CHECK(u->submitter_tid == 0 && u->sq_thread_pid == 0, "a: owner %d, SQPOLL %d",
	      u->submitter_tid, u->sq_thread_pid);
	CHECK(u->nreqs_total == 1 && u->nreqs == 1, "a: %u requests in flight, %zu listed",
	      u->nreqs_total, u->nreqs);
	if (u->nreqs == 1) {
		const aiotk_uring_req *q = &u->reqs[0];
		int fd = (int)fact("a", "poll_fd");
		CHECK(q->opcode == IORING_OP_POLL_ADD, "a: request opcode %u", q->opcode);
		CHECK(q->user_data == fact("a", "poll_data"), "a: user_data 0x%llx",
		      (unsigned long long)q->user_data);
		CHECK(q->fd == fd && q->file_fd == fd, "a: request fd %d, file's fd %d", q->fd,
		      q->file_fd);
		CHECK(q->poll_events & POLLIN, "a: poll events 0x%x", q->poll_events);
	}
}

static void check_b(const aiotk_uring_view *uv)
{
	const aiotk_uring *u = check_ring(uv, "b");
	if (!u)
		return;
	CHECK(u->flags & IORING_SETUP_SINGLE_ISSUER, "b: flags 0x%x", u->flags);
	CHECK(u->submitter_tid == (int)fact("b", "owner_tid"), "b: owner %d", u->submitter_tid);
	CHECK(u->nr_files == 1 && u->nfiles == 1 && u->files[0].fd == (int)fact("b", "file0"),
	      "b: %u file slots, %zu used", u->nr_files, u->nfiles);
	check_bufs(u, "b");
	CHECK(!u->has_eventfd && u->nreqs_total == 0, "b: eventfd %d, %u requests",
	      u->has_eventfd, u->nreqs_total);
}

static void check_c(const aiotk_uring_view *uv)
{
	const aiotk_uring *u = check_ring(uv, "c");
	if (!u)
		return;
	CHECK(u->sq_thread_pid == (int)fact("c", "sqpoll_tid") && u->sq_thread_pid > 0,
	      "c: SQPOLL thread %d", u->sq_thread_pid);
	CHECK(u->sq_cpu == (int)fact("c", "sq_cpu"), "c: SQPOLL CPU %d", u->sq_cpu);
	/* In jiffies: 2000 ms is 200 to 2000 of them for HZ 100 to 1000. */
	CHECK(u->sq_thread_idle >= 200 && u->sq_thread_idle <= 2000, "c: idle %u jiffies",
	      u->sq_thread_idle);
	CHECK(u->nr_files == 0 && u->nr_bufs == 0, "c: %u files, %u buffers", u->nr_files,
	      u->nr_bufs);
}

static void check_view(pid_t pid)
{
	aiotk_kviewer *v = NULL;
	aiotk_err err;
	int rc = aiotk_kviewer_open(&v, &err);
	CHECK_OK(rc, err);
	if (rc)
		return;
	aiotk_uring_view uv;
	rc = aiotk_uring_view_read(v, pid, &uv, &err);
	CHECK_OK(rc, err);
	if (!rc) {
		CHECK(uv.n == 3, "%zu instances", uv.n);
		check_a(&uv);
		check_b(&uv);
		check_c(&uv);
		aiotk_uring_view_free(&uv);
	}
	/* The AIO view runs from the same load: this process has no context. */
	aiotk_kview kv;
	rc = aiotk_kview_read(v, pid, &kv, &err);
	CHECK(rc == 0 && kv.n == 0, "AIO view from the same viewer: rc %d, %zu contexts", rc,
	      kv.n);
	if (!rc)
		aiotk_kview_free(&kv);
	rc = aiotk_uring_view_read(v, 999999999, &uv, &err);
	CHECK(rc == AIOTK_ESYS && uv.n == 0, "no such process: rc %d (%s)", rc, err.msg);
	aiotk_kviewer_close(v);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s URING_WORKLOAD\n", argv[0]);
		return 2;
	}
	pid_t pid = start(argv[1]);
	CHECK(pid > 0 && fact2("pid", NULL) == (unsigned long long)pid, "workload started");
	if (pid > 0 && nfacts > 1)
		check_view(pid);
	if (pid > 0) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	return check_report();
}
