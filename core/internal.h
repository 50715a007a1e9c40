/* Helpers shared by the core's files; not part of the public API. */
#ifndef AIOTK_INTERNAL_H
#define AIOTK_INTERNAL_H

#include "aiotk.h"
#include "arch.h"

/* Memory the target itself owns, for syscall arguments it must read. */
int aiotk_scratch_map(aiotk_target *t, size_t len, uint64_t *addr,
		      aiotk_err *err);
void aiotk_scratch_unmap(aiotk_target *t, uint64_t addr, size_t len);
/* The same, shared: shows as "rw-s /dev/zero (deleted)" (journal pages). */
int aiotk_scratch_map_shared(aiotk_target *t, size_t len, uint64_t *addr,
			     aiotk_err *err);

/* fn for each mapping of pid, in address order, until it returns
 * nonzero (which is returned). */
int aiotk_maps_each(int pid, int (*fn)(const aiotk_vma *v, void *ctx),
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

/* Why PTRACE_SEIZE of pid gave EPERM. */
int aiotk_why_not_permitted(int pid, aiotk_err *err);

#endif
