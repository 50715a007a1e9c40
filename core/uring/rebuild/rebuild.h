/* Rebuilding an io_uring instance inside a process (internal): what the
 * steps of core/uring/rebuild/ share. docs/KERNEL-FACTS.md, "io_uring:
 * rebuilding an instance". */
#ifndef AIOTK_URING_REBUILD_H
#define AIOTK_URING_REBUILD_H

#include "aiotk.h"

#include <linux/io_uring.h>

/* The journal of a rebuild as it is in the target, in its slot
 * (journal.c): each field written before what it names is made. Scratch
 * memory for system calls' arguments follows it, from URING_JOURNAL_HEAD
 * on. */
#define URING_JOURNAL_HOLDS 8
#define URING_JOURNAL_FILLS 256  /* as many as place.c fills at most */
#define URING_JOURNAL_RINGFDS 16  /* registered ring fds a rebuild makes */
#define URING_JOURNAL_HEAD 8192
#define URING_SCRATCH(j_at) ((j_at) + URING_JOURNAL_HEAD)
typedef struct uring_journal {
	uint64_t magic;
	int32_t pending_fd;      /* the fd io_uring_setup is about to give */
	uint32_t nholds, nfills, ncopies;
	uint64_t ino;            /* the new instance's inode; 0: not yet made */
	uint32_t shift, pad;
	uint64_t holds[URING_JOURNAL_HOLDS][2];  /* saved ranges held */
	uint64_t fills[URING_JOURNAL_FILLS][2];  /* gaps filled for a placement */
	struct { uint64_t at; uint32_t moved[2]; } copies[AIOTK_URING_MAX_COPIES];
	/* Registered ring fds (ringfds.c): each slot journalled once seen
	 * free, before it is taken. */
	uint32_t nringfds, pad2;
	struct { int32_t tid; uint32_t index; } ringfds[URING_JOURNAL_RINGFDS];
	/* The /dev/null a buffer ring's head is moved with (bufrings.c): the
	 * fd openat is about to give, until it is closed; -1: none. */
	int32_t nullfd, pad3;
} uring_journal;

/* The steps a rollback could not make (journal.c): how many, the first
 * one named, its errno; a rollback missing any keeps the journal and
 * fails with AIOTK_EROLLBACK. */
typedef struct uring_missed { unsigned n; int errno_; char first[200]; } uring_missed;
void uring_miss(uring_missed *m, int e, const char *what, uint64_t at);
void uring_sys_missed(uring_missed *m, long r, const char *what, uint64_t at); /* r: aiotk_sys's */
_Static_assert(sizeof(uring_journal) <= URING_JOURNAL_HEAD, "io_uring journal");

/* A new instance while it is built in t: its fd and what setup said. */
typedef struct uring_new {
	aiotk_target *t;
	int fd;
	int owner;                         /* the thread that submits (SINGLE_ISSUER); 0: any */
	struct io_uring_params p;
	uint64_t sq_ring, cq_ring, sqes;   /* where they are mapped in t */
	uring_journal j;                   /* as written in t */
	uint64_t j_at;                     /* where: its slot's address */
	uint64_t j_len;                    /* its mapping's length; 0: none */
} uring_new;

/* struct io_uring_sq's sqe_head (then sqe_tail), from its khead pointer
 * (copies.c). */
#define URING_SQE_HEAD_OFF 64

/* The journal mapped in n's target at n->j_at with room for `scratch` bytes of
 * arguments, then each step journalled before it is made: ranges held or
 * filled (fills: 1), the fd setup is about to return, the new instance
 * (n->fd's inode), liburing's copies as they will be once moved. commit
 * unmaps it (the rebuild is then done); rollback takes away what it
 * names, then unmaps it; close unmaps it only (journal.c). */
int uring_journal_open(uring_new *n, size_t scratch, aiotk_err *err);
int uring_journal_ranges(uring_new *n, int fills, const uint64_t *addr, const uint64_t *len,
			 size_t count, aiotk_err *err);
int uring_journal_setup_next(uring_new *n, aiotk_err *err);
int uring_journal_instance(uring_new *n, aiotk_err *err);
int uring_journal_copies(uring_new *n, const uint64_t *at, const uint32_t (*moved)[2],
			 unsigned count, uint32_t shift, aiotk_err *err);
int uring_journal_ringfd(uring_new *n, int tid, uint32_t index, aiotk_err *err);
int uring_journal_nullfd(uring_new *n, int next, aiotk_err *err);
int uring_journal_commit(uring_new *n, aiotk_err *err);
/* Everything the journal names taken away, the journal last; rc (err)
 * unless a step failed: then AIOTK_EROLLBACK naming what stays. */
int uring_journal_rollback(uring_new *n, int rc, aiotk_err *err);

/* The mapping of u's file at mmap offset `offset` mapped in t at exactly
 * [dest, dest + len): every free gap above it filled with placeholders
 * for the one mmap(NULL), since io_uring refuses an address (place.c). */
int uring_place(uring_new *n, uint64_t offset, uint64_t dest, uint64_t len, aiotk_err *err);

/* The kernel's sq head moved to sq_head and its cq tail to cq_tail from
 * `from` (both there, each CQE reaped) with NOPs (cq_tail of them with a CQE, the rest skipping it), each
 * CQE reaped; then polls[] submitted after them (counted in sq_head).
 * *nops: NOPs submitted (counters.c). */
int uring_drive(uring_new *n, uint32_t sq_entries, uint64_t from, uint64_t sq_head,
		uint64_t cq_tail, uint64_t *nops, aiotk_err *err);
/* The SQEs between the kernel's head `at` and at + k submitted (counters.c). */
int uring_submit(uring_new *n, uint32_t at, uint32_t k, aiotk_err *err);

/* count requests submitted again from the kernel's sq head `head`:
 * sqe() makes the i-th (it may write the journal's scratch memory), then
 * all are submitted at once and each CQE they post at once is given to
 * refused(), which fails the rebuild (err set) for an error of one of
 * them (resubmit.c). */
typedef struct uring_resubmit {
	size_t count;
	const void *ctx;
	int (*sqe)(uring_new *n, const void *ctx, size_t i, struct io_uring_sqe *s, aiotk_err *err);
	int (*refused)(const void *ctx, const struct io_uring_cqe *c, aiotk_err *err);
} uring_resubmit;
int uring_resubmit_all(uring_new *n, uint32_t sq_entries, uint32_t head, const uring_resubmit *r,
		       aiotk_err *err);

/* o's POLLs submitted from the kernel's sq head `head` (counters.c). */
int uring_submit_polls(uring_new *n, uint32_t sq_entries, uint32_t head,
		       const aiotk_uring_rebuild_opts *o, aiotk_err *err);
/* o's timeouts submitted from the kernel's sq head `head`, each one's
 * timespec in the journal's scratch memory (timeouts.c). */
#define URING_TMO_SCRATCH 16  /* bytes a timeout's timespec takes */
int uring_submit_timeouts(uring_new *n, uint32_t sq_entries, uint32_t head,
			  const aiotk_uring_rebuild_opts *o, aiotk_err *err);

/* o's socks (ACCEPTs and RECVs) submitted from the kernel's sq head
 * `head` (sockets.c). */
int uring_submit_socks(uring_new *n, uint32_t sq_entries, uint32_t head,
		       const aiotk_uring_rebuild_opts *o, aiotk_err *err);

/* liburing's copies of the sq counters (struct io_uring_sq's sqe_head
 * and sqe_tail) in t's writable memory, found by the pointers beside
 * them into ring memory, journalled, then each moved down by shift
 * (copies.c). */
int uring_move_copies(uring_new *n, uint32_t shift, aiotk_uring_rebuilt *out, aiotk_err *err);

/* Each of u's registered ring fds registered again in its thread at its
 * saved offset (before a single issuer is enabled: then any thread may),
 * each slot seen free and journalled first; and a rollback's drop of
 * every journalled slot (ringfds.c). */
int uring_register_ringfds(uring_new *n, const aiotk_uring *u, aiotk_err *err);
void uring_drop_ringfds(aiotk_target *t, const uring_journal *j, uint64_t j_at, uring_missed *m);

/* Provided-buffer rings (bufrings.c): why u's cannot be rebuilt (NULL:
 * they can; why: room for the message); the buffers their heads moved
 * past, summed (as many SQEs and CQEs move them back: the cq tail a
 * rebuild drives to must be at least that); each registered again, in
 * the program's memory, by the owner; each head moved back with reads
 * of /dev/null, the new instance's first SQEs, *done of them; a
 * rollback's close of that /dev/null. */
const char *uring_bufrings_unrebuilt(const aiotk_uring *u, char *why, size_t len);
int uring_bufring_mapping(const aiotk_uring *u, uint64_t offset); /* a kernel ring's, rebuilt */
uint64_t uring_bufring_heads(const aiotk_uring *u);
int uring_register_bufrings(uring_new *n, const aiotk_uring *u, aiotk_err *err);
int uring_move_bufring_heads(uring_new *n, const aiotk_uring *u, uint64_t *done, aiotk_err *err);
void uring_close_nullfd(aiotk_target *t, const uring_journal *j, uring_missed *m);

#endif
