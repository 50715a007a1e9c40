/* The kernel's side of the AIO contexts of one process: a task iterator,
 * limited at attach to one thread of that process, walks its
 * mm->ioctx_table. Built with clang against this kernel's BTF (CO-RE),
 * loaded by core/kview/viewer.c, read by core/aio/kview/kview.c. Each read
 * covers AIOTK_KVIEW_CHUNK table slots from the one its reader put in
 * `firsts`, so that one read's output always fits the iterator's buffer;
 * records are in kview_records.h.
 *
 * Nothing here takes the kernel's locks: every read is a probe read, which
 * cannot fault, and every walk is bounded; a context or list changing
 * under the walk gives at worst an inconsistent record, never harm. */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include "kview_records.h"

char LICENSE[] SEC("license") = "GPL";

/* The table slot each read starts from, per reading thread (its global
 * tid; the end record says which): a pinned program is shared by every
 * aiotk that runs it, so this cannot be one global. No entry: slot 0. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} firsts SEC(".maps");

/* Per-CPU data of a context (struct kioctx_cpu __percpu *) is found by
 * adding a CPU's per-CPU offset to the raw pointer. This kernel's BTF has
 * no percpu type tags (so bpf_per_cpu_ptr refuses the pointer) and its
 * kallsyms has no __per_cpu_offset; a per-CPU array map of our own gives
 * both halves: its element's raw pointer (bpf_array.pptrs[0]) and that
 * element's address on each CPU (bpf_map_lookup_percpu_elem). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} percpu_probe SEC(".maps");

/* Static in fs/aio.c: weak, so that a kernel without it in kallsyms still
 * loads (every request then has kind OTHER). */
extern const void aio_poll_cancel __ksym __weak;

/* A pointer as a number, for the address arithmetic above (needs
 * CAP_PERFMON: the verifier refuses pointer leaks to other loaders). */
static __u64 addr_of(const void *p)
{
	__u64 slot = (__u64)p, out = 0;
	bpf_probe_read_kernel(&out, sizeof(out), &slot);
	return out;
}

struct walk {
	struct seq_file *seq;
	struct kioctx_table *tab;
	__u64 pcpu_raw, node, head;
	__u32 first, nr, budget, ncancel;
};

struct cpus {
	__u64 cpu_raw, pcpu_raw;
	__u32 sum;
};

/* Stops at the first CPU id past nr_cpu_ids (the lookup gives NULL). */
static long one_cpu(__u32 c, struct cpus *s)
{
	__u32 zero = 0, v = 0;
	void *mine = bpf_map_lookup_percpu_elem(&percpu_probe, &zero, c);
	if (!mine)
		return 1;
	bpf_probe_read_kernel(&v, sizeof(v),
			      (void *)(s->cpu_raw + addr_of(mine) - s->pcpu_raw));
	s->sum += v;
	return 0;
}

static __u32 cpu_available(struct walk *w, __u64 cpu_raw)
{
	struct cpus s = { .cpu_raw = cpu_raw, .pcpu_raw = w->pcpu_raw };
	bpf_loop(AIOTK_KVIEW_MAX_CPUS, one_cpu, &s, 0);
	return s.sum;
}

static long one_req(__u32 i, struct walk *w)
{
	if (!w->node || w->node == w->head)
		return 1;
	struct aio_kiocb *req = (void *)(w->node -
		bpf_core_field_offset(struct aio_kiocb, ki_list));
	w->ncancel++;
	if (w->budget) {
		struct aiotk_kview_req_rec r = { .type = AIOTK_KVIEW_REQ };
		r.obj = BPF_CORE_READ(req, ki_res.obj);
		r.data = BPF_CORE_READ(req, ki_res.data);
		__u64 cancel = (__u64)BPF_CORE_READ(req, ki_cancel);
		if (cancel && cancel == (__u64)&aio_poll_cancel) {
			r.kind = AIOTK_KVIEW_KIND_POLL;
			r.events = BPF_CORE_READ(req, poll.events);
		}
		if (!bpf_seq_write(w->seq, &r, sizeof(r)))
			w->budget--;
	}
	struct list_head *n = (void *)w->node;
	w->node = (__u64)BPF_CORE_READ(n, next);
	return 0;
}

static long one_ctx(__u32 i, struct walk *w)
{
	__u32 slot = w->first + i;
	if (slot >= w->nr)
		return 1;
	struct kioctx *ctx = 0;
	struct kioctx_table *tab = w->tab;
	bpf_probe_read_kernel(&ctx, sizeof(ctx), &tab->table[slot]);
	if (!ctx)
		return 0;
	w->head = addr_of(ctx) + bpf_core_field_offset(struct kioctx, active_reqs);
	w->node = (__u64)BPF_CORE_READ(ctx, active_reqs.next);
	w->ncancel = 0;
	bpf_loop(AIOTK_KVIEW_MAX_WALK, one_req, w, 0);
	struct aiotk_kview_ctx_rec r = { .type = AIOTK_KVIEW_CTX };
	r.user_id = BPF_CORE_READ(ctx, user_id);
	r.max_reqs = BPF_CORE_READ(ctx, max_reqs);
	r.nr_events = BPF_CORE_READ(ctx, nr_events);
	r.req_batch = BPF_CORE_READ(ctx, req_batch);
	r.tail = BPF_CORE_READ(ctx, tail);
	r.completed_events = BPF_CORE_READ(ctx, completed_events);
	r.reqs_available = BPF_CORE_READ(ctx, reqs_available.counter);
	r.cpu_available = cpu_available(w, (__u64)BPF_CORE_READ(ctx, cpu));
	r.ncancel = w->ncancel;
	bpf_seq_write(w->seq, &r, sizeof(r));
	return 0;
}

SEC("iter/task")
int kview(struct bpf_iter__task *it)
{
	struct task_struct *task = it->task;
	if (!task)
		return 0;
	__u32 reader = (__u32)bpf_get_current_pid_tgid();
	__u32 *from = bpf_map_lookup_elem(&firsts, &reader);
	struct walk w = { .seq = it->meta->seq, .budget = AIOTK_KVIEW_REQ_BUDGET,
			  .first = from ? *from : 0 };
	struct mm_struct *mm = task->mm;
	struct kioctx_table *tab = mm ? BPF_CORE_READ(mm, ioctx_table) : 0;
	w.tab = tab;
	if (tab) {
		w.nr = BPF_CORE_READ(tab, nr);
		__u64 map = addr_of(&percpu_probe);
		bpf_probe_read_kernel(&w.pcpu_raw, sizeof(w.pcpu_raw),
			(void *)(map + bpf_core_field_offset(struct bpf_array, pptrs)));
		bpf_loop(AIOTK_KVIEW_CHUNK, one_ctx, &w, 0);
	}
	struct aiotk_kview_end_rec end = { .type = AIOTK_KVIEW_END, .table_nr = w.nr,
		.next = w.first + AIOTK_KVIEW_CHUNK, .first = w.first, .reader = reader };
	end.no_mm = !mm;
	bpf_seq_write(w.seq, &end, sizeof(end));
	return 0;
}
