/* The kernel's side of a process's io_uring instances: a task_file
 * iterator, limited at attach to one process, picks the files whose
 * f_op->mmap is io_uring's and reads their struct io_ring_ctx. Linked
 * with kview.bpf.c into one object (CMakeLists.txt), so that one load
 * gives both views; loaded by core/aio/kview/kview.c, run by
 * core/uring/kview/uring_view.c. Records are in uring_view_records.h.
 *
 * As in kview.bpf.c nothing takes the kernel's locks: every read is a
 * probe read and every walk is bounded, so an instance changing under
 * the walk gives at worst an inconsistent record. Fields that moved
 * between kernels are read only where this kernel has them (CO-RE field
 * checks); the record's `have` says what was read. */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include "uring_view_records.h"

/* kallsyms has no io_uring_fops (data), but has the function it points
 * mmap to: a file is an io_uring when its f_op->mmap is this. Weak, so a
 * kernel without io_uring still loads (and shows none). */
extern const void io_uring_mmap __ksym __weak;

/* The open-coded VMA iterator (Linux 6.7+; a kfunc, so the object's GPL
 * license, kview.bpf.c's); weak: a kernel without it leaves the
 * mappings to /proc/PID/maps. */
extern int bpf_iter_task_vma_new(struct bpf_iter_task_vma *it, struct task_struct *task,
				 __u64 addr) __ksym __weak;
extern struct vm_area_struct *bpf_iter_task_vma_next(struct bpf_iter_task_vma *it) __ksym __weak;
extern void bpf_iter_task_vma_destroy(struct bpf_iter_task_vma *it) __ksym __weak;
/* The iterator's task is not a trusted pointer to the verifier: the VMA
 * iterator gets one taken by pid. */
extern struct task_struct *bpf_task_from_pid(__s32 pid) __ksym __weak;
extern void bpf_task_release(struct task_struct *p) __ksym __weak;
/* kview.bpf.c's per-CPU array (one element), which finds a per-CPU
 * pointer's address on each CPU (kview.bpf.c says how): this kernel's BTF
 * has no percpu type tags and its kallsyms no per-CPU symbols. */
extern struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} percpu_probe SEC(".maps");

/* FFS_NOWAIT and FFS_ISREG live in the low bits of a slot's file_ptr. */
#define SLOT_FILE_MASK (~3ull)

static __u64 uv_addr(const void *p)
{
	__u64 slot = (__u64)p, out = 0;
	bpf_probe_read_kernel(&out, sizeof(out), &slot);
	return out;
}

/* A counter read back as the verifier sees a probe read: any value. A
 * budget compared with the counter itself is tracked exactly, and every
 * value is a state of its own (a million instructions before 256
 * requests); compared with this copy, one state serves them all. */
static __u32 opaque(const __u32 *p)
{
	__u32 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), p);
	return v;
}

struct slots {
	struct seq_file *seq;
	struct io_rsrc_node **nodes;
	__u32 nr, written;
};

static struct io_rsrc_node *slot_node(struct slots *s, __u32 i)
{
	struct io_rsrc_node *node = 0;
	bpf_probe_read_kernel(&node, sizeof(node), &s->nodes[i]);
	return node;
}

static long one_file(__u32 i, struct slots *s)
{
	if (i >= s->nr || opaque(&s->written) >= AIOTK_UVIEW_FILE_BUDGET)
		return 1;
	struct io_rsrc_node *node = slot_node(s, i);
	if (!node)
		return 0;
	struct aiotk_uview_file_rec r = { .type = AIOTK_UVIEW_FILE, .slot = i };
	r.file = BPF_CORE_READ(node, file_ptr) & SLOT_FILE_MASK;
	if (!bpf_seq_write(s->seq, &r, sizeof(r)))
		s->written++;
	return 0;
}

static long one_buf(__u32 i, struct slots *s)
{
	if (i >= s->nr || opaque(&s->written) >= AIOTK_UVIEW_BUF_BUDGET)
		return 1;
	struct io_rsrc_node *node = slot_node(s, i);
	struct io_mapped_ubuf *imu = node ? BPF_CORE_READ(node, buf) : 0;
	if (!imu)
		return 0;
	struct aiotk_uview_buf_rec r = { .type = AIOTK_UVIEW_BUF, .slot = i };
	r.ubuf = BPF_CORE_READ(imu, ubuf);
	r.len = BPF_CORE_READ(imu, len);
	if (!bpf_seq_write(s->seq, &r, sizeof(r)))
		s->written++;
	return 0;
}

struct reqs {
	struct seq_file *seq;
	__u64 hbs, bucket_size, node;
	__u32 nbuckets, count, written, args_written;
};

static __u32 poll_events(struct io_kiocb *req, __u32 opcode)
{
	if (opcode == IORING_OP_POLL_ADD) {
		struct io_poll *p = (void *)&req->cmd;
		return BPF_CORE_READ(p, events);
	}
	struct async_poll *ap = BPF_CORE_READ(req, apoll);
	return ap ? BPF_CORE_READ(ap, poll.events) : 0;
}

/* An ACCEPT's or RECV's arguments, as its prep kept them in req->cmd
 * (io_uring/net.c: io_accept_prep, io_recvmsg_prep). */
static void sockreq(struct reqs *q, struct io_kiocb *req, __u32 opcode)
{
	struct aiotk_uview_sockreq_rec r = { .type = AIOTK_UVIEW_SOCKREQ };
	if (opcode == IORING_OP_ACCEPT) {
		struct io_accept *a = (void *)&req->cmd;
		r.addr = (__u64)BPF_CORE_READ(a, addr);
		r.addr2 = (__u64)BPF_CORE_READ(a, addr_len);
		r.op_flags = BPF_CORE_READ(a, flags);
		r.ioprio = BPF_CORE_READ(a, iou_flags);
		r.file_slot = BPF_CORE_READ(a, file_slot);
	} else {
		struct io_sr_msg *s = (void *)&req->cmd;
		r.addr = (__u64)BPF_CORE_READ(s, buf);
		r.len = BPF_CORE_READ(s, len);
		r.op_flags = BPF_CORE_READ(s, msg_flags);
		r.ioprio = BPF_CORE_READ(s, flags);
		r.buf_group = BPF_CORE_READ(s, buf_group);
		r.done_io = BPF_CORE_READ(s, done_io);
		if (bpf_core_field_exists(s->mshot_len))
			r.mshot_len = BPF_CORE_READ(s, mshot_len);
	}
	if (!bpf_seq_write(q->seq, &r, sizeof(r)))
		q->args_written++;
}

static long one_req(__u32 i, struct reqs *q)
{
	if (!q->node)
		return 1;
	struct io_kiocb *req = (void *)(q->node -
		bpf_core_field_offset(struct io_kiocb, hash_node));
	q->count++;
	if (opaque(&q->written) < AIOTK_UVIEW_REQ_BUDGET) {
		struct aiotk_uview_req_rec r = { .type = AIOTK_UVIEW_REQ };
		r.opcode = BPF_CORE_READ(req, opcode);
		r.user_data = BPF_CORE_READ(req, cqe.user_data);
		r.fd = BPF_CORE_READ(req, cqe.fd);
		r.file = (__u64)BPF_CORE_READ(req, file);
		r.flags = BPF_CORE_READ(req, flags);
		r.poll_events = poll_events(req, r.opcode);
		if (!bpf_seq_write(q->seq, &r, sizeof(r))) {
			q->written++;
			if ((r.opcode == IORING_OP_ACCEPT || r.opcode == IORING_OP_RECV) &&
			    opaque(&q->args_written) < AIOTK_UVIEW_SOCKREQ_BUDGET)
				sockreq(q, req, r.opcode);
		}
	}
	struct hlist_node *n = (void *)q->node;
	q->node = (__u64)BPF_CORE_READ(n, next);
	return 0;
}

static long one_bucket(__u32 i, struct reqs *q)
{
	if (i >= q->nbuckets)
		return 1;
	struct io_hash_bucket *b = (void *)(q->hbs + i * q->bucket_size);
	q->node = (__u64)BPF_CORE_READ(b, list.first);
	bpf_loop(AIOTK_UVIEW_MAX_CHAIN, one_req, q, 0);
	return 0;
}

/* Requests in cancel_table: POLL_ADD and requests waiting on an armed
 * poll. Requests running in io-wq or the block layer are on no list. */
static __u32 walk_reqs(struct seq_file *seq, struct io_ring_ctx *ctx)
{
	struct reqs q = { .seq = seq };
	q.hbs = (__u64)BPF_CORE_READ(ctx, cancel_table.hbs);
	q.nbuckets = 1u << (BPF_CORE_READ(ctx, cancel_table.hash_bits) & 31);
	q.bucket_size = bpf_core_type_size(struct io_hash_bucket);
	if (q.hbs)
		bpf_loop(AIOTK_UVIEW_MAX_BUCKETS, one_bucket, &q, 0);
	return q.count;
}

/* ---- timeouts: timeout_list (TIMEOUT) and ltimeout_list (LINK_TIMEOUT) */
struct tmo {
	struct seq_file *seq;
	__u64 node, head;
	__u32 count, written;
};

static void timer_of(struct io_kiocb *req, struct aiotk_uview_timeout_rec *r)
{
	struct io_timeout_data *d = BPF_CORE_READ(req, async_data);
	r->clockid = -1;
	if (!d)
		return;
	r->flags = BPF_CORE_READ(d, flags);
	r->expires = BPF_CORE_READ(d, timer.node.expires);
	r->ts = BPF_CORE_READ(d, ts.tv_sec) * 1000000000ll + BPF_CORE_READ(d, ts.tv_nsec);
	struct hrtimer_clock_base *base = BPF_CORE_READ(d, timer.base);
	r->clockid = base ? BPF_CORE_READ(base, clockid) : -1;
}

static long one_timeout(__u32 i, struct tmo *q)
{
	if (!q->node || q->node == q->head)
		return 1;
	struct io_timeout *t = (void *)(q->node - bpf_core_field_offset(struct io_timeout, list));
	struct io_kiocb *req = (void *)((__u64)t - bpf_core_field_offset(struct io_kiocb, cmd));
	q->count++;
	if (opaque(&q->written) < AIOTK_UVIEW_TIMEOUT_BUDGET) {
		struct aiotk_uview_timeout_rec r = { .type = AIOTK_UVIEW_TIMEOUT };
		r.opcode = BPF_CORE_READ(req, opcode);
		r.user_data = BPF_CORE_READ(req, cqe.user_data);
		r.off = BPF_CORE_READ(t, off);
		r.target_seq = BPF_CORE_READ(t, target_seq);
		r.repeats = BPF_CORE_READ(t, repeats);
		timer_of(req, &r);
		if (!bpf_seq_write(q->seq, &r, sizeof(r)))
			q->written++;
	}
	struct list_head *n = (void *)q->node;
	q->node = (__u64)BPF_CORE_READ(n, next);
	return 0;
}

static __u32 walk_timeouts(struct seq_file *seq, struct list_head *head)
{
	struct tmo q = { .seq = seq, .head = (__u64)head };
	q.node = (__u64)BPF_CORE_READ(head, next);
	bpf_loop(AIOTK_UVIEW_TIMEOUT_BUDGET * 4, one_timeout, &q, 0);
	return q.count;
}

/* ---- requests done whose completion waits as task work: on the
 * instance's work_llist for its owner (DEFER_TASKRUN), else on the
 * submitting thread's task_list, mixed with its other instances' (ctx:
 * whose to count). A stopped thread runs neither. */
struct waiting {
	__u64 node, ctx;
	__u32 count;
	__u32 polls;                   /* POLL_ADD or armed polls: a poll's
					* wakeup runs as task work while the
					* request stays in cancel_table */
};

static long one_waiting(__u32 i, struct waiting *w)
{
	if (!w->node)
		return 1;
	struct io_kiocb *req = (void *)(w->node -
		bpf_core_field_offset(struct io_kiocb, io_task_work.node));
	if (!w->ctx || (__u64)BPF_CORE_READ(req, ctx) == w->ctx) {
		w->count++;
		if (BPF_CORE_READ(req, opcode) == IORING_OP_POLL_ADD ||
		    (BPF_CORE_READ(req, flags) & (1ull << REQ_F_POLLED_BIT)))
			w->polls++;
	}
	struct llist_node *n = (void *)w->node;
	w->node = (__u64)BPF_CORE_READ(n, next);
	return 0;
}

static void count_waiting(struct io_ring_ctx *ctx, struct aiotk_uview_ring_rec *r)
{
	struct waiting w = { .node = (__u64)BPF_CORE_READ(ctx, work_llist.first) };
	bpf_loop(AIOTK_UVIEW_MAX_CHAIN, one_waiting, &w, 0);
	r->waiting += w.count;
	r->waiting_polls += w.polls;
}

/* ---- requests of a thread in flight: every request holds a reference
 * of its submitter's tctx->inflight (a percpu_counter) from submission
 * until it is freed, less those the thread keeps cached (cached_refs,
 * touched by the thread itself only: stable while it is stopped). */
struct pcpu {
	__u64 raw, probe_raw;          /* the counter's and percpu_probe's */
	__s64 sum;
};

static long one_cpu(__u32 cpu, struct pcpu *p)
{
	__u32 zero = 0;
	void *probe = bpf_map_lookup_percpu_elem(&percpu_probe, &zero, cpu);
	if (!probe)
		return 1;
	__s32 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (void *)(p->raw + uv_addr(probe) - p->probe_raw));
	p->sum += v;
	return 0;
}

static __s64 tctx_inflight(struct io_uring_task *tctx)
{
	struct pcpu p = { .raw = (__u64)BPF_CORE_READ(tctx, inflight.counters) };
	bpf_probe_read_kernel(&p.probe_raw, sizeof(p.probe_raw),
		(void *)(uv_addr(&percpu_probe) + bpf_core_field_offset(struct bpf_array, pptrs)));
	p.sum = BPF_CORE_READ(tctx, inflight.count);
	if (p.raw)
		bpf_loop(AIOTK_UVIEW_MAX_CPUS, one_cpu, &p, 0);
	return p.sum - BPF_CORE_READ(tctx, cached_refs);
}

/* ---- registered ring fds: each thread that used the instance (its
 * tctx_list) and the slots of its registered_rings naming this file;
 * and each thread's requests in flight (a TCTX record). */
struct rfd {
	struct seq_file *seq;
	__u64 node, head, file, ctx;
	__u32 waiting;                 /* on the threads' task_lists */
	__u32 waiting_polls;           /* of which polls, still in cancel_table */
};

static long one_tctx(__u32 i, struct rfd *q)
{
	if (!q->node || q->node == q->head)
		return 1;
	struct io_tctx_node *tn = (void *)(q->node - bpf_core_field_offset(struct io_tctx_node, ctx_node));
	struct task_struct *task = BPF_CORE_READ(tn, task);
	struct io_uring_task *tctx = task ? BPF_CORE_READ(task, io_uring) : 0;
	if (tctx) {
		struct waiting w = { .ctx = q->ctx };
		w.node = (__u64)BPF_CORE_READ(tctx, task_list.first);
		bpf_loop(AIOTK_UVIEW_MAX_CHAIN, one_waiting, &w, 0);
		q->waiting += w.count;
		q->waiting_polls += w.polls;
		struct aiotk_uview_tctx_rec t = { .type = AIOTK_UVIEW_TCTX };
		t.tid = BPF_CORE_READ(task, pid);
		t.inflight = tctx_inflight(tctx);
		bpf_seq_write(q->seq, &t, sizeof(t));
	}
	for (__u32 k = 0; tctx && k < 16; k++) {
		struct file *f = 0;
		bpf_probe_read_kernel(&f, sizeof(f), &tctx->registered_rings[k]);
		if ((__u64)f != q->file)
			continue;
		struct aiotk_uview_ringfd_rec r = { .type = AIOTK_UVIEW_RINGFD, .index = k };
		r.tid = BPF_CORE_READ(task, pid);
		bpf_seq_write(q->seq, &r, sizeof(r));
	}
	struct list_head *n = (void *)q->node;
	q->node = (__u64)BPF_CORE_READ(n, next);
	return 0;
}

/* Adds the completions waiting on those threads' task_lists to r's. */
static void walk_ringfds(struct seq_file *seq, struct io_ring_ctx *ctx,
			 struct aiotk_uview_ring_rec *r)
{
	struct rfd q = { .seq = seq, .head = (__u64)&ctx->tctx_list, .file = r->file,
			 .ctx = (__u64)ctx };
	q.node = (__u64)BPF_CORE_READ(ctx, tctx_list.next);
	bpf_loop(AIOTK_UVIEW_MAX_TCTX, one_tctx, &q, 0);
	r->waiting += q.waiting;
	r->waiting_polls += q.waiting_polls;
}

/* ---- provided-buffer groups: the entries of io_bl_xa, an xarray of at
 * most three levels (bgid is 16 bits, 64 slots a node). */
#define XA_NODE(e) (((e) & 3) == 2 && (e) > 4096)

struct bls {
	struct seq_file *seq;
	__u64 nodes[3];
	__u32 count, written;
};

/* A ring in the application's memory: the page index of its first page
 * (the folio's index plus the page's place in it). */
static void user_ring(struct io_buffer_list *bl, struct aiotk_uview_bl_rec *r)
{
	if (!bpf_core_field_exists(bl->region))
		return;
	r->region_flags = BPF_CORE_READ(bl, region.flags);
	r->user = !!(r->region_flags & 2); /* IO_REGION_F_USER_PROVIDED */
	struct page **pages = BPF_CORE_READ(bl, region.pages);
	struct page *pg = 0;
	if (!r->user || !pages || bpf_probe_read_kernel(&pg, sizeof(pg), pages) || !pg)
		return;
	__u64 head = BPF_CORE_READ(pg, compound_head);
	__u64 folio = head & 1 ? head - 1 : (__u64)pg;
	__u64 size = bpf_core_type_size(struct page);
	r->page_index = BPF_CORE_READ((struct folio *)folio, index) +
			(size ? ((__u64)pg - folio) / size : 0);
}

static void one_bl(struct bls *q, __u64 e)
{
	struct io_buffer_list *bl = (void *)e;
	q->count++;
	if (opaque(&q->written) >= AIOTK_UVIEW_BL_BUDGET)
		return;
	struct aiotk_uview_bl_rec r = { .type = AIOTK_UVIEW_BL };
	r.bgid = BPF_CORE_READ(bl, bgid);
	r.flags = BPF_CORE_READ(bl, flags);
	r.nbufs = BPF_CORE_READ(bl, nbufs);
	if (r.flags & 1) { /* IOBL_BUF_RING */
		struct io_uring_buf_ring *br = BPF_CORE_READ(bl, buf_ring);
		r.entries = BPF_CORE_READ(bl, nr_entries);
		r.head = BPF_CORE_READ(bl, head);
		r.mask = BPF_CORE_READ(bl, mask);
		r.tail = br ? BPF_CORE_READ(br, tail) : 0;
		r.first_addr = br ? BPF_CORE_READ(br, bufs[0].addr) : 0;
		user_ring(bl, &r);
	}
	if (!bpf_seq_write(q->seq, &r, sizeof(r)))
		q->written++;
}

static __u64 slot_of(__u64 node, __u32 i)
{
	__u64 e = 0;
	struct xa_node *n = (void *)(node - 2);
	bpf_probe_read_kernel(&e, sizeof(e), &n->slots[i & 63]);
	return e;
}

static long one_slot2(__u32 i, struct bls *q)
{
	__u64 e = slot_of(q->nodes[2], i);
	if (e && !XA_NODE(e))
		one_bl(q, e);
	return 0;
}

static long one_slot1(__u32 i, struct bls *q)
{
	__u64 e = slot_of(q->nodes[1], i);
	if (e && XA_NODE(e)) {
		q->nodes[2] = e;
		bpf_loop(64, one_slot2, q, 0);
	} else if (e) {
		one_bl(q, e);
	}
	return 0;
}

static long one_slot0(__u32 i, struct bls *q)
{
	__u64 e = slot_of(q->nodes[0], i);
	if (e && XA_NODE(e)) {
		q->nodes[1] = e;
		bpf_loop(64, one_slot1, q, 0);
	} else if (e) {
		one_bl(q, e);
	}
	return 0;
}

static __u32 walk_bls(struct seq_file *seq, struct io_ring_ctx *ctx)
{
	struct bls q = { .seq = seq };
	__u64 head = (__u64)BPF_CORE_READ(ctx, io_bl_xa.xa_head);
	if (head && XA_NODE(head)) {
		q.nodes[0] = head;
		bpf_loop(64, one_slot0, &q, 0);
	} else if (head) {
		one_bl(&q, head); /* the one entry, index 0, kept in the head */
	}
	return q.count;
}

/* ---- its mappings: the task's VMAs backed by this file. Reading
 * /proc/PID/maps for them cost more than the rest of the view (37 of 80
 * us for a small process); the walk takes mmap_lock only if it is free. */
static __s32 walk_maps(struct seq_file *seq, struct task_struct *task, struct file *file,
			__u32 *all)
{
	if (!bpf_iter_task_vma_new || !bpf_task_from_pid || !task)
		return 1;
	struct task_struct *t = bpf_task_from_pid(BPF_CORE_READ(task, pid));
	if (!t)
		return -3; /* ESRCH */
	struct bpf_iter_task_vma it;
	struct vm_area_struct *vma;
	__s32 rc = bpf_iter_task_vma_new(&it, t, 0);
	while (!rc && (vma = bpf_iter_task_vma_next(&it))) {
		struct file *f = vma->vm_file;
		if (f && (__u64)BPF_CORE_READ(f, f_op, mmap) == (__u64)&io_uring_mmap)
			(*all)++;
		if (f != file)
			continue;
		struct aiotk_uview_map_rec m = { .type = AIOTK_UVIEW_MAP };
		m.start = vma->vm_start, m.end = vma->vm_end, m.pgoff = vma->vm_pgoff;
		m.dontfork = !!(vma->vm_flags & 0x00020000); /* VM_DONTCOPY */
		if (bpf_seq_write(seq, &m, sizeof(m)))
			rc = -7; /* E2BIG: the buffer is full */
	}
	bpf_iter_task_vma_destroy(&it);
	bpf_task_release(t);
	return rc;
}

static void read_sqpoll(struct io_ring_ctx *ctx, struct aiotk_uview_ring_rec *r)
{
	struct io_sq_data *sqd = BPF_CORE_READ(ctx, sq_data);
	if (!sqd)
		return;
	struct task_struct *t = BPF_CORE_READ(sqd, thread);
	r->sq_thread_pid = t ? BPF_CORE_READ(t, pid) : -1;
	r->sq_cpu = BPF_CORE_READ(sqd, sq_cpu);
	r->sq_thread_idle = BPF_CORE_READ(sqd, sq_thread_idle);
}

static void read_counters(struct io_ring_ctx *ctx, struct aiotk_uview_ring_rec *r)
{
	struct io_rings *rings = BPF_CORE_READ(ctx, rings);
	r->cached_sq_head = BPF_CORE_READ(ctx, cached_sq_head);
	r->cached_cq_tail = BPF_CORE_READ(ctx, cached_cq_tail);
	if (!rings)
		return;
	r->have |= AIOTK_UVIEW_HAVE_RINGS;
	r->sq_head = BPF_CORE_READ(rings, sq.head);
	r->sq_tail = BPF_CORE_READ(rings, sq.tail);
	r->cq_head = BPF_CORE_READ(rings, cq.head);
	r->cq_tail = BPF_CORE_READ(rings, cq.tail);
	r->sq_dropped = BPF_CORE_READ(rings, sq_dropped);
	r->cq_overflow = BPF_CORE_READ(rings, cq_overflow);
	r->sq_flags = BPF_CORE_READ(rings, sq_flags.counter);
	r->cq_flags = BPF_CORE_READ(rings, cq_flags);
	/* Where user space finds them (cq_off.cqes, sq_off.array): the
	 * kernel lays them out in the rings' own mapping. */
	r->cqes_off = bpf_core_field_offset(struct io_rings, cqes);
	__u64 array = (__u64)BPF_CORE_READ(ctx, sq_array);
	r->sq_array_off = array ? (__u32)(array - (__u64)rings) : 0;
}

static void read_ctx(struct io_ring_ctx *ctx, struct aiotk_uview_ring_rec *r)
{
	r->flags = BPF_CORE_READ(ctx, flags);
	r->sq_entries = BPF_CORE_READ(ctx, sq_entries);
	r->cq_entries = BPF_CORE_READ(ctx, cq_entries);
	read_counters(ctx, r);
	if (bpf_core_field_exists(ctx->submitter_task)) {
		struct task_struct *t = BPF_CORE_READ(ctx, submitter_task);
		r->have |= AIOTK_UVIEW_HAVE_ISSUER;
		r->submitter_tid = t ? BPF_CORE_READ(t, pid) : 0;
	}
	struct io_ev_fd *ev = BPF_CORE_READ(ctx, io_ev_fd);
	r->has_evfd = !!ev;
	r->evfd_async = ev ? BPF_CORE_READ(ev, eventfd_async) : 0;
	/* The eventfd's id names it among the process's fds (fdinfo's
	 * eventfd-id): io_ev_fd holds its eventfd_ctx, not a file. */
	r->evfd_id = ev && bpf_core_field_exists(((struct eventfd_ctx *)0)->id) ?
		     BPF_CORE_READ(ev, cq_ev_fd, id) : -1;
	/* An empty xarray has no head. */
	r->has_pers = BPF_CORE_READ(ctx, personalities.xa_head) != NULL;
	if (bpf_core_field_exists(ctx->restrictions.registered))
		r->restricted = BPF_CORE_READ(ctx, restrictions.registered);
	read_sqpoll(ctx, r);
}

/* Slot records after the ring's: the 6.13+ tables (io_rsrc_data). */
static void write_tables(struct seq_file *seq, struct io_ring_ctx *ctx,
			 struct aiotk_uview_ring_rec *r)
{
	struct slots s = { .seq = seq };
	if (bpf_core_field_exists(ctx->file_table.data)) {
		r->have |= AIOTK_UVIEW_HAVE_FILES;
		s.nodes = BPF_CORE_READ(ctx, file_table.data.nodes);
		s.nr = r->nr_files = BPF_CORE_READ(ctx, file_table.data.nr);
		if (s.nodes)
			bpf_loop(1u << 20, one_file, &s, 0);
	}
	if (bpf_core_field_exists(ctx->buf_table.nodes)) {
		r->have |= AIOTK_UVIEW_HAVE_BUFS;
		s.written = 0;
		s.nodes = BPF_CORE_READ(ctx, buf_table.nodes);
		s.nr = r->nr_bufs = BPF_CORE_READ(ctx, buf_table.nr);
		if (s.nodes)
			bpf_loop(1u << 16, one_buf, &s, 0);
	}
}

SEC("iter/task_file")
int uring_view(struct bpf_iter__task_file *it)
{
	struct file *file = it->file;
	if (!file)
		return 0;
	struct seq_file *seq = it->meta->seq;
	__u64 mmap = (__u64)BPF_CORE_READ(file, f_op, mmap);
	if (!mmap || mmap != (__u64)&io_uring_mmap) {
		struct aiotk_uview_fd_rec f = { .type = AIOTK_UVIEW_FD, .fd = it->fd };
		f.file = uv_addr(file);
		bpf_seq_write(seq, &f, sizeof(f));
		return 0;
	}
	struct io_ring_ctx *ctx = BPF_CORE_READ(file, private_data);
	if (!ctx)
		return 0;
	/* Its slots and requests first, its own record last (as kview
	 * does): the counts it carries are known only after the walks. */
	struct aiotk_uview_ring_rec r = { .type = AIOTK_UVIEW_RING, .fd = it->fd };
	write_tables(seq, ctx, &r);
	if (bpf_core_field_exists(ctx->cancel_table)) {
		r.have |= AIOTK_UVIEW_HAVE_REQS;
		r.nreqs = walk_reqs(seq, ctx);
	}
	r.ino = BPF_CORE_READ(file, f_inode, i_ino);
	r.file = uv_addr(file);
	if (bpf_core_field_exists(ctx->ltimeout_list)) {
		r.have |= AIOTK_UVIEW_HAVE_TIMEOUTS;
		r.ntimeouts = walk_timeouts(seq, &ctx->timeout_list) +
			      walk_timeouts(seq, &ctx->ltimeout_list);
		r.cq_timeouts = BPF_CORE_READ(ctx, cq_timeouts.counter);
	}
	if (bpf_core_field_exists(ctx->tctx_list)) {
		r.have |= AIOTK_UVIEW_HAVE_RINGFDS;
		walk_ringfds(seq, ctx, &r);
		r.have |= AIOTK_UVIEW_HAVE_UNLISTED;
	}
	if (bpf_core_field_exists(ctx->io_bl_xa)) {
		r.have |= AIOTK_UVIEW_HAVE_BLS;
		r.nbls = walk_bls(seq, ctx);
	}
	r.maps_rc = walk_maps(seq, it->task, file, &r.all_maps);
	if (bpf_core_field_exists(ctx->work_llist))
		count_waiting(ctx, &r);
	read_ctx(ctx, &r);
	bpf_seq_write(seq, &r, sizeof(r));
	return 0;
}
