/* The destroyer: io_destroy of contexts aiotk made and no longer wants,
 * run by a thread of the target itself after the process runs again.
 * io_destroy returns only after an RCU grace period (about 35 ms here,
 * at any ring size, docs/KERNEL-FACTS.md), so a rollback that destroyed
 * 8 rings kept the process stopped 270 ms; the kernel's part (the context
 * out of the table, fs.aio-nr lowered, the ring unmapped) is done at the
 * call's start, and only the caller waits. The contexts must be
 * destroyed from the process's mm (contexts are looked up in the
 * caller's), so the waiting is left to a thread made for it in the
 * process (destroy_later.c), which depends on nothing of aiotk's.
 *
 * Like the restorer it is copied byte for byte into the target: a section
 * of its own, system calls inline, nothing out of line
 * (spec/c/test_restorer.c runs a copy as a thread of another process).
 *
 * What it must never do is harm the process: it blocks every signal
 * first (it starts with all blocked, as injection leaves the main
 * thread's mask, so no handler of the program ever runs on it), touches
 * no memory of the program (a header is read with process_vm_readv,
 * which answers EFAULT where a load would fault), destroys only contexts
 * still marked AIOTK_RING_BUILDING, and ends by unmapping its own mapping
 * and exiting through the process's own code (arch.h: a thread cannot
 * unmap the code it runs and then exit from it). */
#include "aio/rebuild/destroyer.h"
#include "aio/rebuild/rebuild.h"
#include "aio/rebuild/routine.h"

#include <stddef.h>

#if defined(__x86_64__)
#include <sys/syscall.h>

#define DS __attribute__((section("aiotk_destroyer"), used, noinline, \
			  no_sanitize("address", "undefined"), no_stack_protector))
#define SIG_SETMASK_ 2
#define PR_SET_NAME_ 15

/* Still aiotk's: mapped, a ring, marked. */
AIOTK_INLINE int ds_marked(const struct aiotk_djob *job, uint64_t ctx)
{
	aiotk_ring_header h;
	struct { uint64_t base, len; } local = { (uint64_t)(uintptr_t)&h, sizeof(h) },
		remote = { ctx, sizeof(h) };
	long r = aiotk_routine_sys(SYS_process_vm_readv, job->pid, (long)&local, 1,
				   (long)&remote, 1);
	return r == (long)sizeof(h) && h.magic == AIOTK_RING_MAGIC &&
	       h.compat_features == AIOTK_RING_BUILDING;
}

DS __attribute__((used)) static void destroyer_main(struct aiotk_djob *job)
{
	uint64_t all = ~0ull;
	aiotk_routine_sys(SYS_rt_sigprocmask, SIG_SETMASK_, (long)&all, 0, sizeof(all), 0);
	aiotk_routine_sys(SYS_prctl, PR_SET_NAME_, (long)job->name, 0, 0, 0);
	for (uint32_t i = 0; i < job->n; i++) {
		if (ds_marked(job, job->ctx[i]))
			aiotk_routine_sys(SYS_io_destroy, (long)job->ctx[i], 0, 0, 0, 0);
		else
			job->skipped++;
		job->done = i + 1;
	}
	/* Its mapping goes, then the thread: both from the process's code,
	 * which touches no memory in between (arch.h). */
	__asm__ volatile("jmp *%4"
			 : : "a"((long)SYS_munmap), "D"(job->self_base), "S"(job->self_len),
			   "d"((long)SYS_exit), "r"(job->exit_code)
			 : "memory");
	__builtin_unreachable();
}

/* The thread starts here: an injected clone leaves it at the `ret` of
 * the process's `syscall; ret` with its stack at a slot holding this
 * address, and the job in r9 (clone's sixth argument register, which
 * clone does not read). */
__asm__(".pushsection aiotk_destroyer,\"ax\",@progbits\n"
	".globl aiotk_destroyer_entry\n\t"
	".hidden aiotk_destroyer_entry\n"
	"aiotk_destroyer_entry:\n\t"
	"mov %r9, %rdi\n\t"
	"and $-16, %rsp\n\t"
	"call destroyer_main\n\t"
	"ud2\n"
	".popsection");

extern const uint8_t __start_aiotk_destroyer[], __stop_aiotk_destroyer[];
extern const uint8_t aiotk_destroyer_entry[] __attribute__((visibility("hidden")));

int aiotk_destroyer_code(const uint8_t **code, size_t *len, size_t *entry)
{
	*code = __start_aiotk_destroyer;
	*len = (size_t)(__stop_aiotk_destroyer - __start_aiotk_destroyer);
	*entry = (size_t)(aiotk_destroyer_entry - __start_aiotk_destroyer);
	return 0;
}

#else

int aiotk_destroyer_code(const uint8_t **code, size_t *len, size_t *entry)
{
	*code = NULL, *len = 0, *entry = 0;
	return AIOTK_EUNSUPPORTED;
}
#endif
