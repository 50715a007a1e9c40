/* aiotk.core.bench: the bare C baselines the benchmarks compare against,
 * written the way a hand-rolled replay would be (raw syscalls, head
 * stored straight into the mapped ring, no checks), and a command timed as
 * a shell runs it. */
#define _GNU_SOURCE
#include "lua_aiotk.h"

#include <errno.h>
#include <fcntl.h>
#include <errno.h>
#include <linux/aio_abi.h>
#include <linux/io_uring.h>
#include <poll.h>
#include <sched.h>
#include <spawn.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#ifndef IOCB_CMD_POLL
#define IOCB_CMD_POLL 5
#endif
#define BATCH 1024

static void prep(struct iocb *cbs, struct iocb **ptrs, int fd, int pwrite)
{
	static char byte;
	memset(cbs, 0, BATCH * sizeof(*cbs));
	for (int i = 0; i < BATCH; i++) {
		cbs[i].aio_fildes = (uint32_t)fd;
		cbs[i].aio_lio_opcode = pwrite ? IOCB_CMD_PWRITE : IOCB_CMD_POLL;
		cbs[i].aio_buf = pwrite ? (uint64_t)(uintptr_t)&byte : POLLOUT;
		cbs[i].aio_nbytes = pwrite ? 1 : 0;
		ptrs[i] = &cbs[i];
	}
}

/* bench.bare_replay(n[, "pwrite"]) -> ns, completions: io_setup(n), then
 * time moving tail to nr-1 with head following, then io_destroy. */
static int bare_replay(lua_State *L)
{
	static struct iocb cbs[BATCH];
	static struct iocb *ptrs[BATCH];
	aio_context_t ctx = 0;
	long n = (long)luaL_checknumber(L, 1);
	int pwrite = lua_isstring(L, 2) && !strcmp(lua_tostring(L, 2), "pwrite");
	if (syscall(SYS_io_setup, n, &ctx))
		return luaL_error(L, "io_setup(%d) failed", (int)n);
	int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
	prep(cbs, ptrs, fd, pwrite);
	volatile aiotk_ring_header *ring = (void *)(uintptr_t)ctx;
	cpu_set_t old, one;
	sched_getaffinity(0, sizeof(old), &old);
	CPU_ZERO(&one);
	CPU_SET(sched_getcpu(), &one);
	sched_setaffinity(0, sizeof(one), &one);
	/* The clock starts on the ring just made, before its first touch:
	 * the fault that maps the ring's first page (several microseconds
	 * here) is part of any replay, aiotk's too. */
	uint64_t t0 = aiotk_now_ns();
	uint64_t total = ring->nr - 1, done = 0;
	while (done < total) {
		ring->head = (uint32_t)done;
		uint64_t want = total - done < BATCH ? total - done : BATCH;
		long r = syscall(SYS_io_submit, ctx, (long)want, ptrs);
		if (r <= 0)
			break;
		done += (uint64_t)r;
	}
	uint64_t t1 = aiotk_now_ns();
	sched_setaffinity(0, sizeof(old), &old);
	close(fd);
	syscall(SYS_io_destroy, ctx);
	lua_pushnumber(L, (double)(t1 - t0));
	lua_pushnumber(L, (double)done);
	return 2;
}

/* What a page costs this machine, in ns, one measurement each (the bench
 * takes medians): touched for the first time (a page fault: an anonymous
 * page allocated and zeroed), made present by MAP_POPULATE (the same
 * without the fault's entry and exit), and written by process_vm_writev
 * fresh (as a restore writes the restorer and its events into the
 * process) and present. 256 pages each. */
#define COST_PAGES 256

static double per_page(uint64_t t0)
{
	return (double)(aiotk_now_ns() - t0) / COST_PAGES;
}

static int page_costs(lua_State *L)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), len = COST_PAGES * page;
	static char src[1 << 20];
	struct iovec l = { src, len < sizeof(src) ? len : sizeof(src) }, r;
	double fault, populate, fresh, present;
	char *a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED)
		return luaL_error(L, "mmap: %s", strerror(errno));
	uint64_t t0 = aiotk_now_ns();
	for (size_t i = 0; i < len; i += page)
		((volatile char *)a)[i] = 1;
	fault = per_page(t0);
	munmap(a, len);
	t0 = aiotk_now_ns();
	a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	populate = per_page(t0);
	if (a == MAP_FAILED)
		return luaL_error(L, "mmap: %s", strerror(errno));
	munmap(a, len);
	a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED)
		return luaL_error(L, "mmap: %s", strerror(errno));
	r = (struct iovec){ a, l.iov_len };
	t0 = aiotk_now_ns();
	ssize_t w1 = process_vm_writev(getpid(), &l, 1, &r, 1, 0);
	fresh = per_page(t0);
	t0 = aiotk_now_ns();
	ssize_t w2 = process_vm_writev(getpid(), &l, 1, &r, 1, 0);
	present = per_page(t0);
	munmap(a, len);
	if (w1 != (ssize_t)l.iov_len || w2 != (ssize_t)l.iov_len)
		return luaL_error(L, "process_vm_writev: %s", strerror(errno));
	lua_createtable(L, 0, 4);
	laiotk_set_num(L, "fault_ns", fault);
	laiotk_set_num(L, "populate_ns", populate);
	laiotk_set_num(L, "vm_write_fresh_ns", fresh);
	laiotk_set_num(L, "vm_write_present_ns", present);
	return 1;
}

/* NOPs through ring r (SQ, CQ and SQEs mapped here) in batches of
 * `entries`, each batch's CQEs reaped at once. */
static void bare_nops(uint8_t *sq, uint8_t *cq, struct io_uring_sqe *sqes,
		      const struct io_uring_params *p, int fd, uint64_t nops)
{
	uint32_t *tail = (uint32_t *)(sq + p->sq_off.tail), *array = (uint32_t *)(sq + p->sq_off.array);
	for (uint32_t i = 0; i < p->sq_entries; i++) {
		memset(&sqes[i], 0, sizeof(sqes[i]));
		sqes[i].opcode = IORING_OP_NOP;
		array[i] = i;
	}
	for (uint64_t done = 0; done < nops;) {
		uint32_t k = nops - done > p->sq_entries ? p->sq_entries : (uint32_t)(nops - done);
		__atomic_store_n(tail, (uint32_t)(done + k), __ATOMIC_RELEASE);
		if (syscall(SYS_io_uring_enter, fd, k, 0, 0, NULL, 0) != k)
			break;
		done += k;
		__atomic_store_n((uint32_t *)(cq + p->cq_off.head), (uint32_t)done, __ATOMIC_RELEASE);
	}
}

/* core.bench.bare_uring(entries, nops) -> ns: the floor of an io_uring
 * rebuild, in this process with nothing in the way: io_uring_setup,
 * its mappings where the kernel puts them, nops NOPs, the ring memory
 * written once, the fd closed. */
static int bare_uring(lua_State *L)
{
	unsigned entries = (unsigned)luaL_checkinteger(L, 1);
	uint64_t nops = (uint64_t)luaL_checknumber(L, 2);
	struct io_uring_params p = { 0 };
	uint64_t t0 = aiotk_now_ns();
	int fd = (int)syscall(SYS_io_uring_setup, entries, &p);
	if (fd < 0)
		return luaL_error(L, "io_uring_setup(%d): %s", entries, strerror(errno));
	size_t sq_len = p.sq_off.array + p.sq_entries * 4;
	size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	size_t ring_len = sq_len > cq_len ? sq_len : cq_len;
	size_t sqes_len = p.sq_entries * sizeof(struct io_uring_sqe);
	uint8_t *ring = mmap(NULL, ring_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
	void *sqes = mmap(NULL, sqes_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
			  IORING_OFF_SQES);
	if (ring == MAP_FAILED || sqes == MAP_FAILED)
		return luaL_error(L, "mmap of the io_uring: %s", strerror(errno));
	bare_nops(ring, ring, sqes, &p, fd, nops);
	static uint8_t saved[1 << 20];
	memcpy(ring, saved, ring_len < sizeof(saved) ? ring_len : sizeof(saved));
	memcpy(sqes, saved, sqes_len < sizeof(saved) ? sqes_len : sizeof(saved));
	uint64_t t1 = aiotk_now_ns();
	munmap(ring, ring_len);
	munmap(sqes, sqes_len);
	close(fd);
	lua_pushnumber(L, (double)(t1 - t0));
	return 1;
}

/* bench.run(argv, out) -> status, t0, t1: a command as a user's shell
 * runs it (posix_spawn, its output into the file out, waited for),
 * between two reads of aiotk's clock; no /bin/sh in between, whose own
 * exec would be counted. */
static int run_timed(lua_State *L)
{
	luaL_checktype(L, 1, LUA_TTABLE);
	const char *out = luaL_checkstring(L, 2);
	int n = (int)lua_objlen(L, 1);
	if (n < 1 || n > 64)
		return luaL_error(L, "bench.run: argv of 1 to 64 words");
	char *argv[65];
	for (int i = 0; i < n; i++) {
		lua_rawgeti(L, 1, i + 1);
		argv[i] = (char *)luaL_checkstring(L, -1);
		lua_pop(L, 1);
	}
	argv[n] = NULL;
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	pid_t pid;
	int st = 0;
	uint64_t t0 = aiotk_now_ns();
	int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
	while (!rc && waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	uint64_t t1 = aiotk_now_ns();
	posix_spawn_file_actions_destroy(&fa);
	if (rc)
		return luaL_error(L, "bench.run: cannot run %s: %s", argv[0], strerror(rc));
	lua_pushinteger(L, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
	lua_pushnumber(L, (double)t0);
	lua_pushnumber(L, (double)t1);
	return 3;
}

void laiotk_bench_register(lua_State *L)
{
	static const luaL_Reg f[] = { { "bare_replay", bare_replay }, { "page_costs", page_costs },
		{ "bare_uring", bare_uring }, { "run", run_timed }, { NULL, NULL } };
	lua_newtable(L);
	luaL_register(L, NULL, f);
	lua_setfield(L, -2, "bench");
}
