/* Records the kernel-view iterator writes and core/aio/kview/kview.c reads: the one
 * definition both sides compile. Plain fixed-size types only. */
#ifndef AIOTK_KVIEW_RECORDS_H
#define AIOTK_KVIEW_RECORDS_H

#define AIOTK_KVIEW_MAX_CPUS 8192u   /* per-CPU caches summed, at most */
#define AIOTK_KVIEW_CHUNK 32u        /* contexts per read of the iterator */
#define AIOTK_KVIEW_REQ_BUDGET 640u  /* requests written per read */
#define AIOTK_KVIEW_MAX_WALK 65536u  /* list nodes walked per context */

enum { AIOTK_KVIEW_CTX = 1, AIOTK_KVIEW_REQ = 2, AIOTK_KVIEW_END = 3 };
enum { AIOTK_KVIEW_KIND_OTHER = 0, AIOTK_KVIEW_KIND_POLL = 1 };

/* One cancellable request in flight; written before its context's record. */
struct aiotk_kview_req_rec {
	__u32 type, kind;
	__u64 obj, data;   /* the user's iocb address and aio_data */
	__u32 events, pad; /* POLL: the kernel's event mask */
};

/* One context: struct kioctx's fields aiotk needs. */
struct aiotk_kview_ctx_rec {
	__u32 type, pad;
	__u64 user_id;
	__u32 max_reqs, nr_events, req_batch, tail;
	__u32 completed_events, reqs_available, cpu_available;
	__u32 ncancel;               /* all on the list; fewer may be written */
};

/* After the last context of a read: where the table ends. */
struct aiotk_kview_end_rec {
	__u32 type, table_nr;
	__u32 next;                  /* first slot of the next read */
	__u32 no_mm;                 /* the thread has no mm (it exited) */
	__u32 first;                 /* the slot this read started from */
	__u32 reader;                /* the reading thread's global tid */
};

#endif
