/* Helpers shared by the core's files; not part of the public API. */
#ifndef AIOTK_INTERNAL_H
#define AIOTK_INTERNAL_H

#include "aiotk.h"
#include "arch.h"

#include <sys/mman.h>
/* How a placeholder is made (mmap prot and flags; MAP_NORESERVE: it costs
 * no commit charge), by aiotk_reserve and by the restorer alike. */
#define AIOTK_PLACEHOLDER_PROT PROT_NONE
#define AIOTK_PLACEHOLDER_FLAGS (MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE)
/* What a placeholder's mmap at addr returned (r), as aiotk_reserve says
 * it: 0, or why the range could not be claimed (its occupant named). */
int aiotk_claim_result(aiotk_target *t, uint64_t addr, uint64_t len, long r,
		       aiotk_err *err);

/* A request that keeps every CPU out of deep idle states until released
 * (cpu_latency.c): a descriptor, or -1 where it cannot be had. */
int aiotk_cpu_latency_hold(void);
void aiotk_cpu_latency_release(int fd);

/* The guardian (guardian.c): a process that puts a thread's CPU mask
 * back if aiotk dies while it holds that thread pinned. Started once per
 * process (0, or -errno); each pin is told before it is made (nonzero:
 * no guardian, so no pin) and each unpin after it is undone. */
#include <sched.h>
int aiotk_guard_start(void);
int aiotk_guard_pin(int tid, uint64_t start, const cpu_set_t *was, const cpu_set_t *pin);
void aiotk_guard_unpin(int tid);
/* /proc/TID/stat's start time (process_check.c, safe in the guardian);
 * 0 unknown. */
uint64_t aiotk_thread_start(int tid);
/* Thread tid is exiting or gone (process_check.c): it runs no more of
 * its program, so it need not be stopped (and cannot be: ptrace refuses
 * an exiting thread with EPERM). */
int aiotk_thread_exiting(int tid);

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

/* The target's workspace (workspace.c), made at first use: the journal
 * page io_setup writes context ids into (its first 16 bytes; the rest of
 * the page is aiotk's), and n replay requests of `kind` whose pointer
 * array is at *ptrs. */
int aiotk_ws_journal(aiotk_target *t, uint64_t *journal, aiotk_err *err);
/* The journal page's layout: the journal, then system call arguments. */
enum {
	AIOTK_WS_SLOT = 8,          /* io_setup writes the new id here */
	AIOTK_WS_PATH = 16,         /* "/dev/null" */
	AIOTK_WS_BYTE = 32,         /* PWRITE's byte */
	AIOTK_WS_CPU = 48,          /* getcpu's answer (the replay's pin) */
	AIOTK_WS_MASK_OLD = 1024,   /* affinity masks, MASK_BYTES each */
	AIOTK_WS_MASK_NEW = 2048,
	AIOTK_WS_MASK_BYTES = 1024, /* up to 8192 CPUs */
};
/* The workspace released if it lies in [addr, addr+len) (a ring is to go
 * there; the next ring makes a new one): 1 if it did. */
int aiotk_ws_vacate(aiotk_target *t, uint64_t addr, uint64_t len);
/* The journal page of t's workspace, 0 if none: not a leftover. */
uint64_t aiotk_ws_own_journal(const aiotk_target *t);
int aiotk_ws_requests(aiotk_target *t, enum aiotk_req_kind kind, unsigned n,
		      uint64_t *ptrs, aiotk_err *err);

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

/* The header fields of r, from a header as the kernel lays it out. */
void aiotk_ring_set_header(aiotk_ring *r, const aiotk_ring_header *h);

/* len bytes at addr in process pid, read (wr 0) or written, whole or
 * not at all (-EFAULT); -errno on failure. Even for this process: a wrong
 * address then gives EFAULT instead of SIGSEGV. */
int aiotk_vm_rw(int pid, uint64_t addr, void *buf, size_t len, int wr);

/* The restorer (restorer.c): its code as this process has it (entry is
 * aiotk_restorer_main's offset), and, for a process target, the return
 * frame and quiet signal it ends with, and its run. */
struct aiotk_rjob;
void aiotk_restorer_main(struct aiotk_rjob *job);
int aiotk_restorer_code(const uint8_t **code, size_t *len, size_t *entry);
int aiotk_target_restorer_exit(aiotk_target *t, uint64_t *exit_sp, uint64_t *gadget,
			       int *sig, aiotk_err *err);
int aiotk_target_run_restorer(aiotk_target *t, uint64_t entry, uint64_t job,
			      uint64_t sp, int sig, aiotk_err *err);
/* After a run that ended at its signal: the routine's tail (its own
 * munmap) run to that call's exit. 0, or -errno (then the mapping may
 * still be there). */
long aiotk_target_end_restorer(aiotk_target *t);

/* Whether t's system calls run pinned to one CPU already (a stopped
 * process co-located with aiotk, or this process after
 * aiotk_target_pin): the replay need not pin. */
int aiotk_target_pinned(const aiotk_target *t);
int aiotk_ws_pinned(const aiotk_target *t);

/* Whether t is this process (target_self.c). */
int aiotk_target_is_self(const aiotk_target *t);

/* Why PTRACE_SEIZE of thread tid of process pid gave EPERM. */
int aiotk_why_not_permitted(int pid, int tid, aiotk_err *err);

#endif
