/* The restorer: the rebuild of many rings as one routine that runs inside
 * the target (restorer.c says how and why). This is the job it is given
 * and the answer it leaves, the one layout the host and the routine share.
 * Every field is fixed-size: the routine reads it in another process. */
#ifndef AIOTK_RESTORER_H
#define AIOTK_RESTORER_H

#include <stdint.h>

/* Where a ring's rebuild stopped (aiotk_rjob_ring.step). */
enum aiotk_rstep {
	AIOTK_RSTEP_NONE = 0,
	AIOTK_RSTEP_SETUP,    /* io_setup failed: status is -errno */
	AIOTK_RSTEP_NR,       /* the new ring's nr is not the saved nr */
	AIOTK_RSTEP_REPLAY,   /* io_submit failed, or the kernel ran short of slots */
	AIOTK_RSTEP_RESULT,   /* head/tail after the replay are not the saved ones */
	AIOTK_RSTEP_OVERLAP,  /* the new ring overlaps its destination */
	AIOTK_RSTEP_MOVE,     /* mremap failed */
	AIOTK_RSTEP_MOVED,    /* the moved ring does not answer, or changed nr */
	AIOTK_RSTEP_DONE,
};

struct aiotk_rjob_ring {
	/* in */
	uint64_t dest;        /* the saved address (the caller's placeholder) */
	uint64_t len;         /* ring mapping length */
	uint64_t events;      /* address of `count` saved events, in the job */
	uint32_t n, nr, head, tail;
	uint32_t first, count; /* slots first.. (mod nr) get the events */
	uint32_t compat;      /* compat_features to leave in the header */
	uint32_t pad;
	/* out */
	int64_t status;       /* 0, or -errno of the failing call */
	uint64_t ctx;         /* where the context is now; 0: none made */
	uint64_t submits, completions;
	uint32_t step;        /* enum aiotk_rstep reached */
	uint32_t pad2;
	/* CLOCK_MONOTONIC at the start of each phase and at the end (the
	 * phases of aiotk_restore_result: converge, replay, events, remap) */
	uint64_t at[5];
};

/* The routine first takes the placeholders it is given (as aiotk_reserve
 * does), then sets up what the replay needs itself (a journal page, a
 * /dev/null descriptor, the iocbs, the pin unless aiotk holds one) and
 * puts that back at its end:
 * no system call is injected for any of it. */
struct aiotk_rjob {
	/* in */
	uint64_t cbs;         /* room for `batch` iocbs and their pointers */
	uint64_t exit_sp;     /* in a target: its return frame (arch.h); 0 here */
	uint64_t journal_magic; /* AIOTK_JOURNAL_MAGIC */
	uint64_t claims;      /* nclaims (address, length) pairs to hold first */
	uint64_t gadget;      /* in a target: a `syscall; ret` of its own code */
	uint64_t self_base, self_len; /* in a target: the mapping it runs from */
	char path[16];        /* "/dev/null" */
	uint32_t batch, nrings;
	int32_t pid;          /* in a target: signal `sig` to its main thread */
	int32_t sig;          /* when done (aiotk waits for that stop) */
	uint32_t nclaims;
	uint32_t pinned;      /* 1: aiotk holds the thread on one CPU already,
			       * so the routine does not pin it (a pin of its
			       * own, put back at its end, would put aiotk's
			       * back after the guardian undid it) */
	/* out */
	int64_t setup_status; /* -errno of a failed set-up call, else 0 */
	int64_t claim_status; /* -errno of claims[claimed] if it failed, else 0 */
	uint32_t claimed;     /* placeholders held, from the first */
	uint32_t done;        /* rings finished, from the first */
	uint32_t finished;    /* the routine reached its end */
	uint32_t pad;
	/* CLOCK_MONOTONIC at its start, once the claims are held, once its
	 * kit is ready, and at its end (before its own unmap) */
	uint64_t at_start, at_claimed, at_kit, at_end;
	struct aiotk_rjob_ring ring[];
};

#endif
