/* Rebuilding an io_uring instance inside a process (internal): what the
 * steps of core/uring/rebuild/ share. docs/KERNEL-FACTS.md, "io_uring:
 * rebuilding an instance". */
#ifndef AIOTK_URING_REBUILD_H
#define AIOTK_URING_REBUILD_H

#include "aiotk.h"

#include <linux/io_uring.h>

/* A new instance while it is built in t: its fd and what setup said. */
typedef struct uring_new {
	aiotk_target *t;
	int fd;
	int owner;                         /* the thread that submits (SINGLE_ISSUER); 0: any */
	struct io_uring_params p;
	uint64_t sq_ring, cq_ring, sqes;   /* where they are mapped in t */
} uring_new;

/* The mapping of u's file at mmap offset `offset` mapped in t at exactly
 * [dest, dest + len): every free gap above it filled with placeholders
 * for the one mmap(NULL), since io_uring refuses an address (place.c). */
int uring_place(aiotk_target *t, int fd, uint64_t offset, uint64_t dest, uint64_t len,
		aiotk_err *err);

/* The kernel's sq head moved to sq_head and its cq tail to cq_tail from
 * 0 with NOPs (cq_tail of them with a CQE, the rest skipping it), each
 * CQE reaped; then polls[] submitted after them (counted in sq_head).
 * *nops: NOPs submitted (counters.c). */
int uring_drive(uring_new *n, uint32_t sq_entries, uint64_t sq_head, uint64_t cq_tail,
		uint64_t *nops, aiotk_err *err);
/* polls[0..np) submitted, the sq tail first left at the kernel's head. */
int uring_submit_polls(uring_new *n, uint32_t sq_entries, uint32_t head,
		       const aiotk_uring_poll *polls, size_t np, aiotk_err *err);

/* liburing's copies of the sq counters (struct io_uring_sq's sqe_head
 * and sqe_tail) in t's writable memory, found by the pointers beside
 * them into ring memory, each moved down by shift (copies.c). */
int uring_move_copies(aiotk_target *t, const uring_new *n, uint32_t shift,
		      aiotk_uring_rebuilt *out, aiotk_err *err);
/* The moved copies put back (undo). */
void uring_unmove_copies(aiotk_target *t, const aiotk_uring_rebuilt *r);

#endif
