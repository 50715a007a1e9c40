/* References to a ring's id in a stopped process (core/target/refs.c): a
 * child keeps its context id in static data, a heap struct, its stack,
 * TLS, a callee-saved register of its main thread (blocked in read), and
 * a thread blocked in io_getevents on it; a pointer into the ring too.
 * aiotk finds every one, rewrites them to a new ring made in the child,
 * puts them back and rewrites them again; a word changed since it was
 * found makes the rewrite refuse, nothing changed; an undo whose write
 * fails is reported (AIOTK_EROLLBACK), naming what stays rewritten. The
 * child then checks
 * from the inside: every copy the new id, the blocked thread's call
 * restarted on the new ring and got the request completed there. */
#define _GNU_SOURCE
#include "aiotk.h"
#include "check.h"

#include <errno.h>
#include <linux/aio_abi.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

struct holder { uint32_t tag; uint64_t ctx; };
static uint64_t in_static;
static __thread uint64_t in_tls;
static struct holder *in_heap;
static uint64_t event_ptr;    /* a pointer into the ring: its first event */
static uint64_t waited_on, got_data;
static long waiter_rc;

static void *waiter(void *arg)
{
	struct io_event ev;
	(void)arg;
	/* the id in rdi only: the call restarts with whatever rdi says */
	waiter_rc = syscall(SYS_io_getevents, in_static, 1L, 1L, &ev, NULL);
	waited_on = in_static;
	got_data = ev.data;
	return NULL;
}

/* read(fd) with ctx in r12, which the call leaves alone: *out gets what
 * r12 holds after it. */
static long read_holding(int fd, char *c, uint64_t ctx, uint64_t *out)
{
	long ret;
	register uint64_t r12 __asm__("r12") = ctx;
	__asm__ volatile("syscall"
			 : "=a"(ret), "+r"(r12)
			 : "a"((long)SYS_read), "D"((long)fd), "S"(c), "d"(1L)
			 : "rcx", "r11", "memory");
	*out = r12;
	return ret;
}

static int child(int in, int out)
{
	aio_context_t ctx = 0;
	pthread_t th;
	char go;
	if (syscall(SYS_io_setup, 1, &ctx))
		return 10;
	volatile uint64_t on_stack = ctx;
	/* the old id kept in a form that is no id: ctx itself is rewritten */
	volatile uint64_t old_x = ctx ^ ~0ull;
	in_static = in_tls = ctx;
	/* From the brk heap itself: a sanitizer build's calloc hands out its
	 * own anonymous mappings, not [heap]. */
	uintptr_t brk_at = (uintptr_t)sbrk(sizeof(*in_heap) + 16);
	if (brk_at == (uintptr_t)-1)
		return 11;
	in_heap = (struct holder *)((brk_at + 15) & ~(uintptr_t)15);
	in_heap->ctx = ctx;
	event_ptr = ctx + 32;
	pthread_create(&th, NULL, waiter, NULL);
	usleep(50000); /* the waiter blocked */
	if (write(out, &ctx, sizeof(ctx)) != sizeof(ctx))
		return 11;
	uint64_t in_reg;
	long r = read_holding(in, &go, ctx, &in_reg);
	if (r != 1)
		return 12;
	uint64_t now = in_static;
	if (now == (old_x ^ ~0ull))
		return 13; /* not rewritten */
	if (on_stack != now || in_tls != now || in_heap->ctx != now || in_reg != now)
		return 14;
	if (event_ptr != now + 32)
		return 15;
	struct iocb cb = { .aio_lio_opcode = IOCB_CMD_POLL, .aio_fildes = out,
			   .aio_buf = POLLOUT, .aio_data = 0x5eed };
	struct iocb *p = &cb;
	if (syscall(SYS_io_submit, now, 1L, &p) != 1)
		return 16;
	pthread_join(th, NULL);
	if (waiter_rc != 1 || waited_on != now || got_data != 0x5eed)
		return 17;
	if (syscall(SYS_io_destroy, old_x ^ ~0ull) || syscall(SYS_io_destroy, now))
		return 18;
	return 0;
}

static size_t count_kind(const aiotk_refs *r, int tid, int kind)
{
	size_t n = 0;
	for (size_t i = 0; i < r->n; i++)
		n += (tid ? r->ref[i].tid != 0 : r->ref[i].tid == 0) && (int)r->ref[i].kind == kind;
	return n;
}

/* A target whose second write fails (EFAULT), as a write into memory
 * that went away would: the undo of a rewrite that failed at its second
 * reference (stale) is that write. */
static int (*real_write)(aiotk_target *, uint64_t, const void *, size_t);
static int writes;

static int second_write_fails(aiotk_target *t, uint64_t addr, const void *buf, size_t len)
{
	return ++writes == 2 ? -EFAULT : real_write(t, addr, buf, len);
}

/* A failed rewrite whose undo fails too: AIOTK_EROLLBACK, the location
 * left rewritten named, and it is (then put back here by hand). */
static void undo_fails(aiotk_target *t, const aiotk_refs *refs)
{
	aiotk_err err;
	uint64_t other = 4321, now = 0;
	CHECK(refs->n >= 2 && !refs->ref[0].tid && !refs->ref[1].tid, "two words first");
	CHECK_OK(aiotk_poke(t, refs->ref[1].addr, &other, 8, &err), err);
	struct aiotk_target_ops failing = *t->ops;
	const struct aiotk_target_ops *ops = t->ops;
	real_write = ops->write;
	failing.write = second_write_fails;
	writes = 0;
	t->ops = &failing;
	int rc = aiotk_refs_rewrite(t, refs->ref, refs->n, 0, &err);
	t->ops = ops;
	char where[64];
	snprintf(where, sizeof(where), "the first word 0x%llx (", (unsigned long long)refs->ref[0].addr);
	CHECK(rc == AIOTK_EROLLBACK && err.errno_ == EFAULT && strstr(err.msg, "not the 0x") &&
	      strstr(err.msg, "1 rewritten location(s) could not be put back") && strstr(err.msg, where),
	      "rc %d (%s): %s", rc, aiotk_code_name(rc), err.msg);
	CHECK_OK(aiotk_peek(t, refs->ref[0].addr, &now, 8, &err), err);
	CHECK(now == refs->ref[0].value, "word 0 stays rewritten: 0x%llx", (unsigned long long)now);
	CHECK_OK(aiotk_poke(t, refs->ref[0].addr, &refs->ref[0].old, 8, &err), err);
	CHECK_OK(aiotk_poke(t, refs->ref[1].addr, &refs->ref[1].old, 8, &err), err);
}

int main(void)
{
	int down[2], up[2];
	if (pipe(down) || pipe(up))
		return 2;
	pid_t pid = fork();
	if (pid == 0) {
		close(down[1]);
		close(up[0]);
		_exit(child(down[0], up[1]));
	}
	close(down[0]);
	close(up[1]);
	uint64_t old = 0, fresh = 0;
	if (read(up[0], &old, sizeof(old)) != sizeof(old))
		return 2;
	aiotk_target t;
	aiotk_err err;
	aiotk_refs refs;
	CHECK_OK(aiotk_target_attach(&t, pid, &err), err);
	/* injected first: the main thread's registers are then aiotk's, and
	 * the one found must go to where it resumes from */
	CHECK_OK(aiotk_io_setup(&t, 1, &fresh, &err), err);
	aiotk_move m = { old, 4096, fresh };
	CHECK_OK(aiotk_refs_find(&t, &m, 1, &refs, &err), err);
	/* static, heap, stack, TLS */
	CHECK(count_kind(&refs, 0, AIOTK_REF_ID) >= 4, "%zu words hold the id", count_kind(&refs, 0, AIOTK_REF_ID));
	CHECK(count_kind(&refs, 0, AIOTK_REF_POINTER) >= 1, "pointer into the ring not found");
	/* the waiter's rdi, the main thread's r12 */
	CHECK(count_kind(&refs, 1, AIOTK_REF_ID) >= 2, "%zu registers hold the id", count_kind(&refs, 1, AIOTK_REF_ID));
	CHECK(refs.scanned > 0, "nothing read");
	int heap = 0;
	for (size_t i = 0; i < refs.n; i++)
		heap |= !strcmp(refs.ref[i].map, "[heap]");
	CHECK(heap, "the heap struct's copy is named by its mapping");
	CHECK_OK(aiotk_refs_rewrite(&t, refs.ref, refs.n, 0, &err), err);
	CHECK_OK(aiotk_refs_rewrite(&t, refs.ref, refs.n, 1, &err), err);
	/* a word changed since: refused, every other one left as it was */
	size_t w = 0;
	while (w < refs.n && refs.ref[w].tid)
		w++;
	uint64_t other = 1234, back;
	CHECK_OK(aiotk_poke(&t, refs.ref[w].addr, &other, 8, &err), err);
	int rc = aiotk_refs_rewrite(&t, refs.ref, refs.n, 0, &err);
	CHECK(rc == AIOTK_EINVAL && strstr(err.msg, "not the 0x"), "stale word: rc %d %s", rc, err.msg);
	/* memory comes first: the word before w was rewritten, then put back */
	size_t before = w ? 0 : 1;
	CHECK_OK(aiotk_peek(&t, refs.ref[before].addr, &back, 8, &err), err);
	CHECK(back == refs.ref[before].old, "word %zu put back: 0x%llx", before, (unsigned long long)back);
	CHECK_OK(aiotk_poke(&t, refs.ref[w].addr, &refs.ref[w].old, 8, &err), err);
	undo_fails(&t, &refs);
	CHECK_OK(aiotk_refs_rewrite(&t, refs.ref, refs.n, 0, &err), err);
	aiotk_refs_free(&refs);
	CHECK_OK(aiotk_target_detach(&t, &err), err);
	aiotk_target_free(&t);
	int st = 0;
	CHECK(write(down[1], "g", 1) == 1, "child told");
	waitpid(pid, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child's checks: status 0x%x (exit %d)", st,
	      WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	return check_report();
}
