/* What syscall injection needs from an architecture. One implementation
 * per architecture (arch_x86_64.c); arch_none.c refuses cleanly.
 *
 * Injection never writes code into the target. It runs each system call
 * from a "syscall; return" sequence already in the target's code, with the
 * stack pointer at a return frame aiotk wrote below the thread's stack:
 * the return leads to an rt_sigreturn sequence (also the target's own),
 * which restores the thread's registers, signal mask and FPU state from
 * that frame. aiotk stops the thread at the system call's exit (ptrace
 * syscall stops), so while aiotk lives the return never runs; if aiotk
 * dies at any instant, the thread returns to its own context by itself. */
#ifndef AIOTK_ARCH_H
#define AIOTK_ARCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct aiotk_regs {
	uint64_t raw[64]; /* large enough for any user_regs_struct */
} aiotk_regs;

typedef struct aiotk_gadget {
	const uint8_t *bytes;
	size_t len;
	size_t entry; /* where it is entered, from its first byte */
} aiotk_gadget;

extern const char *const aiotk_arch_name;
/* Sequences to look for in the target's executable mappings, each list
 * ended by {NULL, 0}: a system call followed by a return, and a complete
 * rt_sigreturn (load its number, system call). */
extern const aiotk_gadget aiotk_arch_gadget_syscall[];
extern const aiotk_gadget aiotk_arch_gadget_sigreturn[];
/* A thread's end that touches no memory: munmap, then exit, entered at
 * the munmap's system call instruction with the number in ax, the range
 * in di and si, and exit's number in dx. A thread that unmaps its own
 * code cannot execute another instruction of it, nor `ret` once its
 * stack is gone; these sequences are the C library's own (glibc's thread
 * exit loop, musl's __unmapself), which is why a thread aiotk makes can
 * leave nothing of itself behind (core/aio/rebuild/destroyer.c). */
extern const aiotk_gadget aiotk_arch_gadget_unmap_exit[];

int aiotk_arch_supported(void);
int aiotk_arch_get(pid_t tid, aiotk_regs *r);
int aiotk_arch_set(pid_t tid, const aiotk_regs *r);
/* FPU/vector state of a stopped thread, in the signal frame's format;
 * and put back. */
int aiotk_arch_fpu_get(pid_t tid, uint8_t *buf, size_t cap, size_t *len);
int aiotk_arch_fpu_set(pid_t tid, const uint8_t *buf, size_t len);
/* The return frame for `saved` (a pending restart of an interrupted system
 * call becomes a re-execution of it), blocked signals `mask` and FPU state
 * `fpu`, laid out below the red zone under the saved stack pointer. `out`
 * gets the bytes, *at their address in the target; the stack pointer for
 * injection is *at as well. */
int aiotk_arch_frame(const aiotk_regs *saved, uint64_t mask,
		     const uint8_t *fpu, size_t fpu_len, uint64_t sigreturn,
		     uint8_t *out, size_t cap, uint64_t *at, size_t *len);
/* Reads once what building a frame needs from the CPU, so that it is not
 * read while a process is stopped. */
void aiotk_arch_frame_prepare(void);
/* Registers that run system call nr with args from `code` with stack `sp`. */
void aiotk_arch_prepare(aiotk_regs *r, uint64_t code, uint64_t sp, long nr,
			const long a[6]);
long aiotk_arch_result(const aiotk_regs *r);
/* A thread stopped on return from a system call that our stop made fail
 * with EINTR: make the kernel restart it instead. Returns 1 if changed. */
int aiotk_arch_restartable(aiotk_regs *r);
/* The general registers a program keeps values in (relocation rewrites a
 * ring's id there; core/target/refs.c): not the instruction or stack
 * pointer, flags or segments. How many, each one's name and slot. */
extern const unsigned aiotk_arch_ngpr;
const char *aiotk_arch_gpr_name(unsigned i);
uint64_t *aiotk_arch_gpr(aiotk_regs *r, unsigned i);
uint64_t aiotk_arch_sp(const aiotk_regs *r);

#endif
