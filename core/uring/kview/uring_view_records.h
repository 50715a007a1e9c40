/* Records the io_uring view's iterator (uring_view.bpf.c) writes and
 * uring_view.c reads: the one definition both sides compile. Plain
 * fixed-size types only. Per io_uring file, in this order: its FILE, BUF
 * and REQ records, then its RING record; every other file of the process
 * gives one FD record (to name registered files by their fd). */
#ifndef AIOTK_UVIEW_RECORDS_H
#define AIOTK_UVIEW_RECORDS_H

/* One io_uring file's records must fit the iterator's 32 KiB buffer. */
#define AIOTK_UVIEW_FILE_BUDGET 512u   /* registered file slots written */
#define AIOTK_UVIEW_BUF_BUDGET 256u    /* registered buffer slots written */
#define AIOTK_UVIEW_REQ_BUDGET 256u    /* requests in flight written */
#define AIOTK_UVIEW_SOCKREQ_BUDGET 128u /* of which ACCEPT/RECV arguments */
#define AIOTK_UVIEW_MAX_BUCKETS 4096u  /* cancel_table buckets walked */
#define AIOTK_UVIEW_MAX_CHAIN 1024u    /* requests walked per bucket */
#define AIOTK_UVIEW_TIMEOUT_BUDGET 256u /* timeouts walked per list */
#define AIOTK_UVIEW_MAX_TCTX 64u       /* threads that used one instance */
#define AIOTK_UVIEW_BL_BUDGET 64u      /* buffer lists written */
#define AIOTK_UVIEW_MAX_CPUS 4096u     /* CPUs summed for a percpu_counter */

enum {
	AIOTK_UVIEW_FD = 1, AIOTK_UVIEW_RING = 2, AIOTK_UVIEW_FILE = 3,
	AIOTK_UVIEW_BUF = 4, AIOTK_UVIEW_REQ = 5,
	AIOTK_UVIEW_TIMEOUT = 6, AIOTK_UVIEW_RINGFD = 7, AIOTK_UVIEW_BL = 8,
	AIOTK_UVIEW_MAP = 9, AIOTK_UVIEW_TCTX = 10, AIOTK_UVIEW_SOCKREQ = 11,
};

/* What this kernel let the program read (bits of ring.have). */
enum {
	AIOTK_UVIEW_HAVE_RINGS = 1,   /* ctx->rings: the counters in ring memory */
	AIOTK_UVIEW_HAVE_FILES = 2,   /* file_table.data (6.13+ layout) */
	AIOTK_UVIEW_HAVE_BUFS = 4,    /* buf_table (6.13+ layout) */
	AIOTK_UVIEW_HAVE_ISSUER = 8,  /* submitter_task */
	AIOTK_UVIEW_HAVE_REQS = 16,   /* cancel_table */
	AIOTK_UVIEW_HAVE_TIMEOUTS = 32, /* timeout_list, ltimeout_list */
	AIOTK_UVIEW_HAVE_RINGFDS = 64,  /* tctx_list: registered ring fds */
	AIOTK_UVIEW_HAVE_BLS = 128,     /* io_bl_xa: provided buffers */
	AIOTK_UVIEW_HAVE_UNLISTED = 256, /* tctx->inflight of its threads */
};

/* A file of the process that is not an io_uring: its address names it. */
struct aiotk_uview_fd_rec {
	__u32 type, fd;
	__u64 file;
};

/* One io_uring instance: struct io_ring_ctx and its struct io_rings. */
struct aiotk_uview_ring_rec {
	__u32 type, fd;
	__u64 ino;                     /* its anon inode (the maps line's) */
	__u32 have, flags;             /* AIOTK_UVIEW_HAVE_*, ctx->flags */
	__u32 sq_entries, cq_entries;
	__u32 sq_head, sq_tail, cq_head, cq_tail; /* ring memory */
	__u32 cached_sq_head, cached_cq_tail;     /* the kernel's own */
	__u32 sq_dropped, cq_overflow, sq_flags, cq_flags;
	__u32 nr_files, nr_bufs;       /* table sizes (slots, used or not) */
	__u32 has_evfd, evfd_async;
	__s32 submitter_tid;           /* 0: none */
	__s32 sq_thread_pid;           /* SQPOLL: 0 none, -1 thread gone */
	__s32 sq_cpu;
	__u32 sq_thread_idle;          /* jiffies */
	__u32 nreqs;                   /* in cancel_table; fewer may be written */
	__u32 pad;
	__u64 file;                    /* its struct file (a registered ring's) */
	__u32 cqes_off;                /* where the CQEs and the sq_array are */
	__u32 sq_array_off;            /* in the ring mapping; 0: none */
	__u32 ntimeouts;               /* in both lists; fewer may be written */
	__u32 nbls;                    /* buffer lists; fewer may be written */
	__u32 cq_timeouts;             /* timeouts fired: a timeout's count
					* runs against cached_cq_tail - this */
	__s32 maps_rc;                 /* 0: its mappings are in MAP records;
					* else why not (-errno, or 1: this
					* kernel has no VMA iterator) */
	__u32 all_maps;                /* the process's io_uring mappings, of
					* any instance (maps_rc 0 only) */
	__u32 waiting;                 /* completions waiting as task work
					* (work_llist, or the threads'
					* task_lists), not in the CQ ring yet */
	__s32 evfd_id;                 /* the registered eventfd's id (its
					* fdinfo's eventfd-id); -1: none */
	__u32 has_pers;                /* a personality is registered */
	__u32 restricted;              /* restrictions are registered */
	__u32 waiting_polls;           /* of which polls (still in cancel_table) */
	__u32 pad3;
};

/* A thread that used the instance (its tctx_list) and its requests in
 * flight, of every instance it used: submitted and not yet freed. */
struct aiotk_uview_tctx_rec {
	__u32 type;
	__s32 tid;
	__s64 inflight;
};

/* A mapping of the instance's file in the task's address space. */
struct aiotk_uview_map_rec {
	__u32 type, dontfork;          /* VM_DONTCOPY (MADV_DONTFORK) */
	__u64 start, end, pgoff;
};

/* A TIMEOUT or an armed LINK_TIMEOUT: its hrtimer's expiry in the
 * timer's clock (the caller reads that clock for what remains). */
struct aiotk_uview_timeout_rec {
	__u32 type, opcode;
	__u64 user_data;
	__s64 expires;                 /* ns, in clock clockid */
	__s32 clockid;                 /* -1: no timer (none read) */
	__u32 flags;                   /* io_timeout_data.flags: IORING_TIMEOUT_* */
	__u32 off, target_seq;         /* completions it waits for; 0: none */
	__u32 repeats, pad;
	__s64 ts;                      /* ns, the time it was given (its
					* period, multishot) */
};

/* A thread's registered ring fd of this instance (its io_uring_task's
 * registered_rings[index]). */
struct aiotk_uview_ringfd_rec {
	__u32 type;
	__s32 tid;
	__u32 index, pad;
};

/* A provided-buffer group: a buffer ring (head the kernel's, tail the
 * application's, read through the kernel's mapping) or legacy buffers.
 * A ring in the application's memory (IO_REGION_F_USER_PROVIDED): the
 * page index of its first page (an anonymous page's is its address >>
 * 12 while its mapping has not moved) and its first entry's buffer
 * address, to find and check where it is in the process. */
struct aiotk_uview_bl_rec {
	__u32 type;
	__u16 bgid, flags;             /* IOBL_* */
	__u32 entries, nbufs;          /* ring entries; legacy: buffers */
	__u16 head, tail, mask, pad;
	__u32 region_flags, user;      /* user: 1 the application's memory */
	__u64 page_index, first_addr;
};

/* A used slot of the registered file table. */
struct aiotk_uview_file_rec {
	__u32 type, slot;
	__u64 file;
};

/* A used slot of the registered buffer table. */
struct aiotk_uview_buf_rec {
	__u32 type, slot;
	__u64 ubuf;
	__u64 len;
};

/* A request in cancel_table (POLL_ADD and armed polls, 6.0+). */
struct aiotk_uview_req_rec {
	__u32 type, opcode;
	__u64 user_data;
	__u64 file;                    /* req->file */
	__u64 flags;                   /* req->flags (REQ_F_*) */
	__s32 fd;                      /* sqe->fd as given */
	__u32 poll_events;             /* the kernel's mask */
};

/* The arguments of an ACCEPT or a RECV, right after its REQ record: its
 * command data in the io_kiocb (struct io_accept, struct io_sr_msg). */
struct aiotk_uview_sockreq_rec {
	__u32 type, done_io;           /* recv: bytes received so far */
	__u64 addr;                    /* accept: sockaddr pointer; recv: buf */
	__u64 addr2;                   /* accept: addr_len pointer */
	__u32 len;                     /* recv: len */
	__u32 op_flags;                /* accept: flags; recv: msg_flags */
	__u32 ioprio;                  /* accept: iou_flags; recv: sr->flags */
	__u32 file_slot;               /* accept: file_slot */
	__u16 buf_group, pad;          /* recv: buf_group */
	__u32 mshot_len;               /* recv: a multishot's length per receive
					* (its SQE's len: len itself is the last
					* buffer's once it tried); 0 before 6.16 */
};

#endif
