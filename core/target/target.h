/* Targets and injection, shared inside the core; not part of the public
 * API. */
#ifndef AIOTK_TARGET_H
#define AIOTK_TARGET_H

#include "base/base.h"
#include "target/arch.h"

#include <sched.h>

/* A request that keeps every CPU out of deep idle states until released
 * (cpu_latency.c): a descriptor, or -1 where it cannot be had. */
int aiotk_cpu_latency_hold(void);
void aiotk_cpu_latency_release(int fd);

/* aiotk_target_attach_with, with seized(pid, arg) called once the
 * threads first listed are seized (traced, still running) and before any
 * is asked to stop; NULL: none. What the process does there (executes a
 * program, exits) the stop meets as it meets it in a race: tests make
 * such races happen by construction. Internal, so that the public
 * aiotk_attach_opts keeps its size. */
typedef void (*aiotk_seized_hook)(int pid, void *arg);
int aiotk_target_attach_hooked(aiotk_target *t, int pid, const aiotk_attach_opts *o,
			       aiotk_seized_hook seized, void *arg, aiotk_err *err);

/* The guardian (guardian.c): a process that puts a thread's CPU mask
 * back if aiotk dies while it holds that thread pinned. Started once per
 * process (aiotk_guardian_start, aiotk.h); each pin is told before it is made (nonzero:
 * no guardian, so no pin) and each unpin after it is undone. */
int aiotk_guard_pin(int tid, uint64_t start, const cpu_set_t *was, const cpu_set_t *pin);
void aiotk_guard_unpin(int tid);
/* fs.aio-max-nr raised from was to set (aio/limit.c), for the guardian to
 * put back if aiotk dies; set 0: the raise is over. */
int aiotk_guard_limit(uint64_t was, uint64_t set);
/* /proc/TID/stat's start time (process_check.c, safe in the guardian);
 * 0 unknown. */
uint64_t aiotk_thread_start(int tid);
/* Thread tid is exiting or gone (process_check.c): it runs no more of
 * its program, so it need not be stopped (and cannot be: ptrace refuses
 * an exiting thread with EPERM). */
int aiotk_thread_exiting(int tid);
/* Why PTRACE_SEIZE of thread tid of process pid gave EPERM. */
int aiotk_why_not_permitted(int pid, int tid, aiotk_err *err);

/* System call nr run by thread tid of t, as aiotk_sys runs one in the
 * main thread (tid 0 or the main thread's: aiotk_sys): what the kernel
 * ties to the calling thread (an io_uring's owner, which alone may enable
 * and submit to a SINGLE_ISSUER instance). -EOPNOTSUPP: a target whose
 * other threads aiotk cannot run (not a stopped process, or one CRIU
 * holds); -ESRCH: no such thread stopped. */
long aiotk_sys_in(aiotk_target *t, int tid, long nr, long a0, long a1, long a2, long a3,
		  long a4, long a5);
long aiotk_target_thread_sys(aiotk_target *t, int tid, long nr, const long a[6]);

/* Memory the target itself owns, for syscall arguments it must read. */
int aiotk_scratch_map(aiotk_target *t, size_t len, uint64_t *addr,
		      aiotk_err *err);
void aiotk_scratch_unmap(aiotk_target *t, uint64_t addr, size_t len);
/* The same, also executable; refused where a policy forbids writable
 * code (then map it writable, write, mprotect). */
int aiotk_scratch_map_exec(aiotk_target *t, size_t len, uint64_t *addr);
/* The same, shared: shows as "rw-s /dev/zero (deleted)" (journal pages). */
int aiotk_scratch_map_shared(aiotk_target *t, size_t len, uint64_t *addr,
			     aiotk_err *err);

/* The words t's process stored itself (own_words.c): fn for each run of
 * n words read from at, in mapping v, until it returns nonzero (which is
 * returned; else 0, or a failure to list the mappings). A run ends at a
 * page boundary: a value across two runs is the caller's to read. */
typedef int (*aiotk_words_fn)(const aiotk_vma *v, uint64_t at, const uint64_t *w, size_t n,
			      void *ctx);
typedef struct aiotk_words_seen {
	uint64_t limit;             /* bytes to read at most (0: all) */
	uint64_t scanned, unread;   /* bytes read, bytes that could not be */
	uint64_t skipped;           /* bytes of windows left unread past limit */
} aiotk_words_seen;
int aiotk_own_words(aiotk_target *t, aiotk_words_fn fn, void *ctx, aiotk_words_seen *seen,
		    aiotk_err *err);

/* fn for each mapping of pid, in address order, until it returns
 * nonzero (which is returned). */
int aiotk_maps_each(int pid, int (*fn)(const aiotk_vma *v, void *ctx),
		    void *ctx, aiotk_err *err);
/* The same from the maps' text (what aiotk_maps_each falls back to on
 * kernels without PROCMAP_QUERY; the tests compare the two). */
int aiotk_maps_each_text(int pid, int (*fn)(const aiotk_vma *v, void *ctx),
			 void *ctx, aiotk_err *err);

/* Address of the first of `list`'s sequences found in pid's executable
 * mappings. */
int aiotk_find_gadget(int pid, const aiotk_gadget *list, uint64_t *addr,
		      aiotk_err *err);
/* The same for n (at most 2) lists in one pass: addrs[i] for lists[i]
 * (0 where none is found; the error names the first such list). */
int aiotk_find_gadgets(int pid, const aiotk_gadget *const *lists, uint64_t *addrs, size_t n,
		       aiotk_err *err);

/* len bytes at addr in process pid, read (wr 0) or written, whole or
 * not at all (-EFAULT); -errno on failure. Even for this process: a wrong
 * address then gives EFAULT instead of SIGSEGV. */
int aiotk_vm_rw(int pid, uint64_t addr, void *buf, size_t len, int wr);

/* A routine copied into a process target and run there (the restorer):
 * the return frame and quiet signal it ends with, and its run. */
int aiotk_target_restorer_exit(aiotk_target *t, uint64_t *exit_sp, uint64_t *gadget,
			       int *sig, aiotk_err *err);
int aiotk_target_run_restorer(aiotk_target *t, uint64_t entry, uint64_t job,
			      uint64_t sp, int sig, aiotk_err *err);
/* After a run that ended at its signal: the routine's tail (its own
 * munmap) run to that call's exit. 0, or -errno (then the mapping may
 * still be there). */
long aiotk_target_end_restorer(aiotk_target *t);

/* A thread made in a process target by its stopped main thread (an
 * injected clone): where such a thread can end without leaving anything
 * (the process's munmap-then-exit code, arch.h), or why none is made
 * there (AIOTK_EUNSUPPORTED); then the thread, starting at entry with its
 * stack below stack_top and arg in its sixth argument register, its tid
 * written at tid_at (an int32) by the kernel before it runs. */
int aiotk_target_thread_exit(aiotk_target *t, uint64_t *exit_code, aiotk_err *err);
int aiotk_target_spawn(aiotk_target *t, uint64_t entry, uint64_t stack_top, uint64_t arg,
		       uint64_t tid_at, int *tid, aiotk_err *err);
/* The same mapping as aiotk_scratch_map_shared, also executable (the
 * destroyer's code, stack and job in one mapping a later aiotk
 * recognises); refused where a policy forbids writable code. */
int aiotk_scratch_map_shared_exec(aiotk_target *t, size_t len, uint64_t *addr);

/* Whether t's system calls run pinned to one CPU already (a stopped
 * process co-located with aiotk, or this process after
 * aiotk_target_pin, whose pin the workspace holds): the replay need not
 * pin. */
int aiotk_target_pinned(const aiotk_target *t);
int aiotk_ws_pinned(const aiotk_target *t);

/* The registers of each thread of a stopped process (a process target;
 * others have none: fn is not called), as each will resume: the main
 * thread's as found, whatever injection did since. 0, or fn's nonzero
 * answer. */
int aiotk_target_each_regs(aiotk_target *t, int (*fn)(int tid, aiotk_regs *r, void *ctx),
			   void *ctx, aiotk_err *err);
/* General register reg (aiotk_arch_gpr) of thread tid set to v, where it
 * resumes from (the main thread's return frame too). */
int aiotk_target_set_gpr(aiotk_target *t, int tid, unsigned reg, uint64_t v, aiotk_err *err);
/* [*lo, *hi): the dead stack under the main thread's red zone that the
 * return frame is written into; 0, 0 for targets without one. */
void aiotk_target_frame_area(aiotk_target *t, uint64_t *lo, uint64_t *hi);

/* Whether t is this process (target_self.c). */
int aiotk_target_is_self(const aiotk_target *t);

#endif
