/* libaiotk: checkpoint/restore primitives for Linux kernel AIO rings.
 *
 * One public header. Every fallible call takes an aiotk_err* and returns 0 on
 * success or a negative AIOTK_E* code; the message says what, where and what
 * to do. Nothing here prints. A process is reached only through an
 * aiotk_target the caller owns; the process-wide state, all of it:
 *  - the guardian (core/target/guardian.c): one process per process using
 *    aiotk, forked by aiotk_guardian_start (the aiotk command: first thing;
 *    else the first attach) and reaped at exit by an atexit handler;
 *    aiotk_guardian_pid() names it (Lua: core.guardian()).
 *  - a raise of fs.aio-max-nr under way (aiotk_aio_max_nr_raise), which
 *    the guardian puts back if this process dies before it ends;
 *    aiotk_aio_max_nr_raised() shows it (Lua: core.aio_max_nr_raised()).
 *  - libbpf's print hook, which is process-wide: aiotk_kviewer_open sets
 *    one that drops libbpf's messages. A caller wanting them sets its own
 *    (libbpf_set_print) after.
 * Besides, caches that change nothing a caller sees: the CPU's xsave
 * layout, read once, and per-thread scratch buffers. */
#ifndef AIOTK_H
#define AIOTK_H

#include <stddef.h>
#include <stdint.h>

#define AIOTK_VERSION "0.1.0"

/* ---- errors ---------------------------------------------------------- */
enum aiotk_code {
	AIOTK_OK = 0,
	AIOTK_EINVAL = -1,     /* bad argument or bad saved state */
	AIOTK_ESYS = -2,       /* a system call failed; errno_ says which */
	AIOTK_EIMAGE = -3,     /* image unreadable, truncated or corrupt */
	AIOTK_EBUDGET = -4,    /* fs.aio-max-nr would be exceeded */
	AIOTK_EIMPOSSIBLE = -5,/* this host cannot make a ring of that size */
	AIOTK_EOCCUPIED = -6,  /* destination address range is in use */
	AIOTK_ESTUCK = -7,     /* replay could not reach the saved tail */
	AIOTK_ENOMEM = -8,
	AIOTK_ENOTRING = -9,   /* memory at that address is not an AIO ring */
	AIOTK_EUNSUPPORTED = -10, /* this host, kernel or build cannot do it */
	AIOTK_EEMPTY = -11,    /* the place holds nothing of what was asked for */
	AIOTK_EROLLBACK = -12, /* a failure's undo failed too: the message names
				  what stays changed, and where */
};

typedef struct aiotk_err {
	int code;
	int errno_;        /* errno of the failing system call, or 0 */
	char msg[512];
} aiotk_err;

const char *aiotk_code_name(int code);
int aiotk_fail(aiotk_err *err, int code, int errno_, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* ---- ring layout ----------------------------------------------------- */
#define AIOTK_RING_MAGIC 0xa10a10a1u
#define AIOTK_HEADER_LEN 32u
#define AIOTK_EVENT_LEN 32u
#define AIOTK_MAX_N 4194304u /* io_setup refuses larger (EINVAL) */

typedef struct aiotk_event {
	uint64_t data, obj;
	int64_t res, res2;
} aiotk_event;

/* The ring's header as the kernel maps it (struct aio_ring in fs/aio.c):
 * the one definition every reader and writer of a ring uses, with
 * offsetof() for single fields. aiotk writes two of its fields, and only
 * in a ring it is building or moving aside: head, during the replay
 * (aiotk_replay: the kernel reads head to give back the slots of reaped
 * events), and compat_features, the building mark (AIOTK_RING_BUILDING
 * below: the kernel writes 1 there at io_setup and never reads it). The
 * kernel reads id and keeps its own tail, so neither is written, nor is a
 * finished ring's header. docs/KERNEL-FACTS.md, "Rings". */
typedef struct aiotk_ring_header {
	uint32_t id, nr, head, tail;
	uint32_t magic, compat_features, incompat_features, header_length;
} aiotk_ring_header;
_Static_assert(sizeof(aiotk_ring_header) == AIOTK_HEADER_LEN, "ring header");
_Static_assert(sizeof(aiotk_event) == AIOTK_EVENT_LEN, "io_event");

/* ---- geometry: the kernel's io_setup(n) sizing, and its inverse ------ */
enum aiotk_formula {
	AIOTK_FORMULA_CURRENT = 0, /* 3.12+: e = 2*max(n, 4*cpus) + 2 */
	AIOTK_FORMULA_LEGACY = 1,  /* 3.10:  e = n + 2 */
};

typedef struct aiotk_geom_host {
	unsigned cpus;       /* possible CPUs */
	unsigned page_size;
	enum aiotk_formula formula;
} aiotk_geom_host;

typedef struct aiotk_geom {
	uint32_t nr;        /* event slots */
	uint64_t ring_len;  /* mapping length in bytes */
	uint64_t pages;
} aiotk_geom;

int aiotk_geom_ring(const aiotk_geom_host *h, uint32_t n, aiotk_geom *out,
		    aiotk_err *err);
/* Smallest n giving a ring of exactly ring_len bytes; AIOTK_EIMPOSSIBLE with
 * the reason otherwise. */
int aiotk_geom_min_n(const aiotk_geom_host *h, uint64_t ring_len, uint32_t *n,
		     aiotk_err *err);
/* Smallest n giving a ring of at least ring_len bytes (what growing in
 * place creates); AIOTK_EIMPOSSIBLE past io_setup's limit. */
int aiotk_geom_fit_n(const aiotk_geom_host *h, uint64_t ring_len, uint32_t *n,
		     aiotk_err *err);
uint32_t aiotk_geom_nr_for_len(uint64_t ring_len);
uint64_t aiotk_geom_len_for_nr(uint32_t nr, unsigned page_size);
/* Free-slot batch the kernel moves between per-CPU caches. */
uint32_t aiotk_geom_req_batch(const aiotk_geom_host *h, uint32_t nr);
/* Events a fresh ring of nr slots can hold on h: nr - 1, less the slots
 * that can be stranded in per-CPU caches (fewer than one req_batch). A
 * saved ring fuller than this needs a nudge to be rebuilt. */
uint32_t aiotk_geom_capacity(const aiotk_geom_host *h, uint32_t nr);

/* ---- host facts ------------------------------------------------------ */
typedef struct aiotk_host {
	aiotk_geom_host geom;
	char release[65];
	uint64_t aio_max_nr, aio_nr;
} aiotk_host;

int aiotk_host_probe(aiotk_host *h, aiotk_err *err);
int aiotk_aio_nr(uint64_t *aio_nr, uint64_t *aio_max_nr, aiotk_err *err);
int aiotk_set_aio_max_nr(uint64_t v, aiotk_err *err);
/* fs.aio-max-nr raised from was to to for a while: the guardian is told
 * first, so that an aiotk killed before aiotk_aio_max_nr_end puts nothing
 * machine-wide out of place. aiotk_aio_max_nr_end(keep): the raise is
 * over; unless keep, was is put back (if the limit is still to: whoever
 * changed it since has the last word). One raise at a time. */
int aiotk_aio_max_nr_raise(uint64_t was, uint64_t to, aiotk_err *err);
int aiotk_aio_max_nr_end(int keep, aiotk_err *err);
/* The raise under way: 1 with *was and *to, or 0. */
int aiotk_aio_max_nr_raised(uint64_t *was, uint64_t *to);
/* fs.aio-max-nr put back to was if it is set, with async-signal-safe
 * calls only (the guardian's, after a fork). */
void aiotk_aio_max_nr_put_back(uint64_t was, uint64_t set);
const char *aiotk_formula_name(enum aiotk_formula f);
/* The sentences every message about the fs.aio-max-nr budget is made of
 * (the core's and the Lua side's), into buf: "N of fs.aio-max-nr needed,
 * F free", and "WHO: N of ... needed, F free (aio-nr is A of M), S short;
 * raise it (sysctl fs.aio-max-nr=X)", to which the caller adds its other
 * way out. */
void aiotk_budget_need(char *buf, size_t len, uint64_t needed, uint64_t aio_nr,
		       uint64_t aio_max_nr);
void aiotk_budget_short(char *buf, size_t len, const char *who, uint64_t needed,
			uint64_t aio_nr, uint64_t aio_max_nr);

/* ---- targets: the process the primitives act on ---------------------- */
typedef struct aiotk_target aiotk_target;
struct aiotk_target_ops {
	const char *kind;  /* "this process", "process", "simulated kernel" */
	/* A system call executed by the target; returns -errno on failure. */
	long (*sys)(aiotk_target *t, long nr, const long a[6]);
	int (*read)(aiotk_target *t, uint64_t addr, void *buf, size_t len);
	/* NULL: a read-only target; aiotk_poke refuses, with read_only's why. */
	int (*write)(aiotk_target *t, uint64_t addr, const void *buf, size_t len);
	/* Lifetime; NULL where there is nothing to do. */
	int (*ready)(aiotk_target *t, aiotk_err *err);  /* can sys() run? */
	int (*detach)(aiotk_target *t, aiotk_err *err);
	void (*free)(aiotk_target *t);
	const char *read_only;
};
struct aiotk_target {
	const struct aiotk_target_ops *ops;
	int pid;        /* 0: the calling process */
	void *priv;
	/* What rings rebuilt in this target share (scratch memory, a
	 * /dev/null descriptor), kept from the first ring that needs it until
	 * aiotk_target_release. */
	struct aiotk_workspace *ws;
};

void aiotk_target_self(aiotk_target *t);
/* A simulated kernel (for what this machine cannot be: other CPU counts,
 * page sizes, formulas): io_setup sizes rings by `model`, rings live in
 * malloc'd memory, io_destroy frees them. Convergence runs on it as on a
 * real process. aiotk_target_free releases it. */
int aiotk_target_sim(aiotk_target *t, const aiotk_geom_host *model,
		     aiotk_err *err);
unsigned aiotk_target_sim_live(const aiotk_target *t);
/* Process pid, every thread stopped without a signal until detach; system
 * calls are injected into its main thread (x86_64) without writing code,
 * so that the process resumes its own context by itself whenever aiotk
 * dies (core/target/arch.h). Refuses zombies, kernel threads, exiting processes
 * and other users' processes, saying which. */
int aiotk_target_attach(aiotk_target *t, int pid, aiotk_err *err);
typedef struct aiotk_attach_opts {
	/* Keep every CPU out of deep idle from just before the stop until the
	 * process runs again (/dev/cpu_dma_latency; root): wakeups of idle
	 * CPUs are a large part of a stop on virtual machines. */
	int hold_cpu_latency;
} aiotk_attach_opts;
/* attach with options; NULL: all off, as aiotk_target_attach. */
int aiotk_target_attach_with(aiotk_target *t, int pid, const aiotk_attach_opts *o,
			     aiotk_err *err);
/* Whether the CPU latency request is held for t (it could be opened). */
int aiotk_target_latency_held(const aiotk_target *t);
/* The process that puts a stopped process's main thread's CPU mask back
 * if this one dies while it is pinned (core/target/guardian.c), forked at the
 * first attach unless aiotk_guardian_start made it before (cheaper while
 * this process is small); 0: none (then no thread is pinned). */
int aiotk_guardian_start(void);
int aiotk_guardian_pid(void);
/* Process pid, already traced and held in a ptrace stop by the caller
 * (CRIU's restore, before it resumes the tasks): system calls injected as
 * with attach; detach puts the main thread's registers and mask back and
 * leaves every thread to the caller. */
int aiotk_target_adopt(aiotk_target *t, int pid, aiotk_err *err);
/* Process pid, held stopped by someone else (CRIU's dump): its memory
 * read, never written (aiotk_poke refuses: AIOTK_EINVAL, EPERM), no
 * system calls; detach does nothing. */
int aiotk_target_frozen(aiotk_target *t, int pid, aiotk_err *err);
/* Whether pid is a process aiotk can stop: it exists, is not a zombie, a
 * kernel thread or exiting, and runs as a user ptrace allows; the error
 * says which. Reads /proc only. */
int aiotk_check_process(int pid, aiotk_err *err);
/* 0 if system calls can run in the target, else why not. */
int aiotk_target_ready(aiotk_target *t, aiotk_err *err);
/* The workspace's memory unmapped and descriptor closed in the target
 * (detach and free do it; the self target keeps it between calls until
 * then). */
int aiotk_target_release(aiotk_target *t, aiotk_err *err);
/* This process as a target: the calling thread pinned to its CPU until
 * aiotk_target_release, so that replays made meanwhile need not pin and
 * unpin each time (a process target is pinned while stopped anyway). */
int aiotk_target_pin(aiotk_target *t, aiotk_err *err);
/* The workspace released, then registers, signal mask and interrupted
 * system calls put back; the process runs. */
int aiotk_target_detach(aiotk_target *t, aiotk_err *err);
uint64_t aiotk_target_stopped_ns(const aiotk_target *t);
/* When that stop began (aiotk_now_ns's clock, CLOCK_MONOTONIC); 0 if none. */
uint64_t aiotk_target_stopped_at_ns(const aiotk_target *t);
int aiotk_target_dead(const aiotk_target *t);
void aiotk_target_free(aiotk_target *t);
long aiotk_sys(aiotk_target *t, long nr, long a0, long a1, long a2, long a3,
	       long a4, long a5);
/* read/write return 0 or AIOTK_ESYS with a message naming the address;
 * a write to a read-only target (aiotk_target_frozen) is refused with
 * AIOTK_EINVAL (errno EPERM) saying why. */
int aiotk_peek(aiotk_target *t, uint64_t addr, void *buf, size_t len,
	       aiotk_err *err);
int aiotk_poke(aiotk_target *t, uint64_t addr, const void *buf, size_t len,
	       aiotk_err *err);

/* ---- /proc/PID/maps -------------------------------------------------- */
typedef struct aiotk_vma {
	uint64_t start, end;
	char perms[5];
	char path[256];
} aiotk_vma;

/* What a mapping is, by the kernel's and aiotk's names for it. */
int aiotk_vma_is_ring(const aiotk_vma *v);
int aiotk_vma_is_placeholder(const aiotk_vma *v);
/* Shaped like a journal page (converge.c): whether it is one, its first
 * bytes tell. */
int aiotk_vma_is_journal(const aiotk_vma *v);
/* Shaped like the destroyer's mapping (aiotk_destroy_later); the same. */
int aiotk_vma_is_destroyer(const aiotk_vma *v);
/* "0x...-0x... perms path": how messages name a mapping. */
void aiotk_vma_describe(const aiotk_vma *v, char *buf, size_t len);

/* First VMA overlapping [start, start+len), other than one starting at
 * `skip` (0: none): 1 found, 0 free, <0 error. */
int aiotk_maps_overlap(int pid, uint64_t start, uint64_t len, uint64_t skip,
		       aiotk_vma *vma, aiotk_err *err);
/* Every mapping, in address order, from one read of the maps; *out is
 * the caller's to free(). */
int aiotk_maps_list(int pid, aiotk_vma **out, size_t *count, aiotk_err *err);
/* The shared mappings (rings, journals and placeholders are shared) and
 * every mapping overlapping one of the n ranges (start, length pairs in
 * range[]), in address order, without looking at the other private ones;
 * *out is the caller's to free(). */
int aiotk_maps_list_for(int pid, const uint64_t *range, size_t n, aiotk_vma **out,
			size_t *count, aiotk_err *err);
/* Whether v overlaps one of the n ranges (start, length pairs). */
int aiotk_vma_in_ranges(const aiotk_vma *v, const uint64_t *range, size_t n);
/* Addresses of every AIO ring mapping, in address order. */
int aiotk_maps_rings(int pid, aiotk_vma *out, size_t max, size_t *count,
		     aiotk_err *err);

/* ---- references: where a stopped process keeps a ring's id ---------- */
/* A ring rebuilt at another address has another id (its address), and
 * works only once every copy of the old id the process holds is rewritten
 * (relocation; docs/KERNEL-FACTS.md, "Rings"). A move: the old ring (its
 * id, from, and length) and the new id. */
typedef struct aiotk_move { uint64_t from, len, to; } aiotk_move;
/* Moves every relocation takes: each from, len and to nonzero, neither
 * range past the end of the address space, no two old rings overlapping
 * (a word must name one move); AIOTK_EINVAL naming the move otherwise. */
int aiotk_moves_check(const aiotk_move *m, size_t n, aiotk_err *err);
enum aiotk_ref_kind {
	AIOTK_REF_ID = 0,      /* the old id itself */
	AIOTK_REF_POINTER = 1, /* inside the old ring (a read of its events) */
	AIOTK_REF_RESTART = 2, /* a dump's io_getevents on it, restarted (ip) */
};
typedef struct aiotk_ref {
	enum aiotk_ref_kind kind;
	size_t move;           /* index of the move it belongs to */
	int tid;               /* 0: a word of memory; else the thread whose */
	unsigned reg;          /*   general register (aiotk_reg_name) */
	uint64_t addr;         /* memory: the word's address, in the mapping */
	uint64_t map_start;    /*   starting here, */
	char map[64];          /*   named so (a path's last 63 bytes; "": anonymous) */
	uint64_t old, value;   /* what it holds, what it becomes */
} aiotk_ref;
typedef struct aiotk_refs {
	size_t n, cap;
	aiotk_ref *ref;        /* memory in address order, then registers */
	uint64_t scanned;      /* bytes read */
	uint64_t unread;       /* bytes of scanned mappings that could not be */
	uint64_t skipped;      /* bytes not looked at: past the limit (_within) */
} aiotk_refs;
/* Every 8-byte-aligned word of t's readable, writable, private memory
 * (only the pages that are the process's own: written, or anonymous and
 * touched; not [vvar], rings, nor the stack aiotk's return frame is
 * written to) and every general register of every stopped thread (process
 * targets) that equals a move's `from` or points inside its ring. Reads
 * only. */
int aiotk_refs_find(aiotk_target *t, const aiotk_move *m, size_t n, aiotk_refs *out,
		    aiotk_err *err);
/* aiotk_refs_find reading at most about limit bytes of memory (0: all;
 * it stops at the first 1 MiB window past it), the rest counted in
 * skipped; registers always. For a count that must keep a stop short. */
int aiotk_refs_find_within(aiotk_target *t, const aiotk_move *m, size_t n, uint64_t limit,
			   aiotk_refs *out, aiotk_err *err);
/* ref[0..n) rewritten to their values (back: to what they held), each
 * checked to hold what it held when found: all or nothing. A thread
 * stopped in a system call our stop interrupted restarts it with its
 * registers as rewritten (io_getevents on the new id). */
int aiotk_refs_rewrite(aiotk_target *t, const aiotk_ref *ref, size_t n, int back,
		       aiotk_err *err);
void aiotk_refs_free(aiotk_refs *r);
/* A general register's name ("rdi"). */
const char *aiotk_reg_name(unsigned reg);

/* The relocation journal (core/target/reloc_journal.c): while it exists
 * in a process, a relocating restore there is unfinished, and a later
 * aiotk undoes it from these entries (each ring's old id and length, its
 * new id and length). At AIOTK_RELOC_AT (MAP_FIXED_NOREPLACE, shared
 * anonymous, "rw-s /dev/zero (deleted)"): that shape there is aiotk's
 * even before its magic is written; far from where the kernel or programs
 * put mappings, beside AIOTK_UNDO_AT; taken, a relocating restore is
 * refused before it changes anything. */
#define AIOTK_RELOC_AT 0x3a1060000000ull
#define AIOTK_RELOC_MAGIC 0x636f6c726b746f69ull /* "iotkrloc" */
typedef struct aiotk_reloc_entry {
	uint64_t from, len;         /* the old ring's id and length */
	uint64_t to, to_len;        /* the new ring's */
	uint64_t live_at;           /* the program's own ring there (replaced), 0: none; */
	uint64_t live_compat;       /*   marked as aiotk's just before the commit, this put back */
} aiotk_reloc_entry;
/* The journal of e[0..n) made: mapped, entries written, then the magic.
 * Refused (AIOTK_EOCCUPIED) when anything is at AIOTK_RELOC_AT. */
int aiotk_reloc_journal_write(aiotk_target *t, const aiotk_reloc_entry *e, size_t n,
			      aiotk_err *err);
/* 0: no journal. 1: one, its entries in *out (the caller's to free();
 * none when it was left before its magic). <0: an error (the address
 * taken by something else, which is never aiotk's). */
int aiotk_reloc_journal_read(aiotk_target *t, aiotk_reloc_entry **out, size_t *n,
			     aiotk_err *err);
/* The journal unmapped (the relocation's commit); none there: nothing. */
int aiotk_reloc_journal_remove(aiotk_target *t, aiotk_err *err);

/* The building mark: compat_features of a context aiotk has made and not
 * yet finished, or has parked (aiotk_park). The kernel writes 1 there at
 * io_setup and never reads it, nor does libaio; a context left marked by
 * an interrupted aiotk can so be found and destroyed (restore does that
 * before anything else). Taken off, the field gets the saved ring's value,
 * or what io_setup wrote (AIOTK_RING_COMPAT). */
#define AIOTK_RING_BUILDING 0x6b74696fu /* "oitk" */
#define AIOTK_RING_COMPAT 1u
/* The mark on a header in this process's memory: put on, taken off (to
 * compat), tested. Always inlined: the restorer, which calls nothing out
 * of line (core/aio/rebuild/restorer.c), uses them. */
static inline __attribute__((always_inline)) void
aiotk_header_mark(volatile aiotk_ring_header *h)
{
	h->compat_features = AIOTK_RING_BUILDING;
}
static inline __attribute__((always_inline)) void
aiotk_header_unmark(volatile aiotk_ring_header *h, uint32_t compat)
{
	h->compat_features = compat;
}
static inline int aiotk_header_marked(const aiotk_ring_header *h)
{
	return h->compat_features == AIOTK_RING_BUILDING;
}
/* The same on the ring of context ctx in t. */
int aiotk_ring_mark(aiotk_target *t, uint64_t ctx, aiotk_err *err);
int aiotk_ring_unmark(aiotk_target *t, uint64_t ctx, uint32_t compat, aiotk_err *err);

/* ---- ring snapshot --------------------------------------------------- */
#define AIOTK_IOCB_LEN 64u
/* A request in flight at dump that may never complete on its own. */
typedef struct aiotk_captured {
	uint64_t obj;                   /* the user's iocb address */
	uint8_t iocb[AIOTK_IOCB_LEN];   /* struct iocb as it was there */
} aiotk_captured;

typedef struct aiotk_ring {
	uint64_t addr;      /* ring start = context id */
	uint64_t ring_len;  /* mapping length */
	uint32_t nr, head, tail;
	uint32_t id, magic, compat_features, incompat_features, header_length;
	uint32_t n;         /* io_setup argument that made it, 0 if unknown */
	uint32_t nevents;   /* live events head..tail-1 */
	aiotk_event *events;
	aiotk_event *area;  /* whole event area (nr slots), or NULL */
	int has_kernel_tail;
	uint32_t kernel_tail;  /* the kernel's private tail at dump */
	uint32_t ncaptured;
	aiotk_captured *captured;
} aiotk_ring;
/* Append the iocb at obj in t (read now) to r's captured requests. */
int aiotk_ring_capture(aiotk_target *t, aiotk_ring *r, uint64_t obj,
		       aiotk_err *err);
/* Submit r's captured requests again on context ctx: each iocb written
 * back at its address, then one io_submit. */
int aiotk_resubmit(aiotk_target *t, uint64_t ctx, const aiotk_ring *r,
		   aiotk_err *err);

enum { AIOTK_SNAP_AREA = 1 };
uint32_t aiotk_ring_live(uint32_t nr, uint32_t head, uint32_t tail);
int aiotk_snapshot(aiotk_target *t, uint64_t addr, int flags, aiotk_ring *out,
		   aiotk_err *err);
/* The same, with the mapping's length as the caller read it from the maps
 * while the process was stopped (aiotk_maps_rings): not read again per
 * ring. 0: read it. */
int aiotk_snapshot_len(aiotk_target *t, uint64_t addr, uint64_t ring_len,
		       int flags, aiotk_ring *out, aiotk_err *err);
/* n rings at once (a dump's), out[0..n) filled or, on error, all freed;
 * len as for aiotk_snapshot_len, NULL: read the maps. */
int aiotk_snapshot_many(aiotk_target *t, const uint64_t *addr, const uint64_t *len,
			size_t n, int flags, aiotk_ring *out, aiotk_err *err);
int aiotk_ring_validate(const aiotk_ring *r, unsigned page_size,
			aiotk_err *err);
int aiotk_ring_copy(aiotk_ring *dst, const aiotk_ring *src, aiotk_err *err);
void aiotk_ring_free(aiotk_ring *r);

/* ---- context creation with an exact ring length ---------------------- */
typedef struct aiotk_converge_result {
	uint64_t ctx;
	uint32_t n, nr;
	unsigned calls;    /* io_setup calls made */
} aiotk_converge_result;

int aiotk_io_setup(aiotk_target *t, uint32_t n, uint64_t *ctx, aiotk_err *err);
int aiotk_io_destroy(aiotk_target *t, uint64_t ctx, aiotk_err *err);
/* First 8 bytes of the page io_setup writes a context id into for
 * aiotk_converge, until the context is marked AIOTK_RING_BUILDING. */
#define AIOTK_JOURNAL_MAGIC 0x6c6e726a6b746f69ull /* "iotkjrnl" */
/* Journal pages a killed aiotk left: their contexts destroyed, the pages
 * unmapped; *removed counts them. So are destroyer mappings whose thread
 * is gone (their contexts stay marked, for the caller to destroy). */
int aiotk_remove_journals(aiotk_target *t, unsigned *removed, aiotk_err *err);
/* A kill point for tests: this process SIGKILLs itself instead of making
 * its n-th next change to a stopped process (an injected system call or
 * a write into it), so that what a killed aiotk leaves at each step is
 * looked at by construction, not by timing (spec/lua/survive_spec.lua).
 * 0: none. */
void aiotk_die_after(unsigned long n);
/* Where aiotk_undo_area's mapping is made (MAP_FIXED_NOREPLACE), before
 * anything is written in it: a killed aiotk may leave it at any step, and this
 * address with the mapping's shape (rwxs /dev/zero) tells a later aiotk
 * it is one even before its job is written. Far from where the kernel
 * puts mappings (top-down from below the stack) or programs usually ask
 * for them; taken, there is no thread and the rings are destroyed in the
 * stop. */
#define AIOTK_UNDO_AT 0x3a1070000000ull
/* A failed restore's contexts destroyed after the process runs again, by
 * a thread made in it for that (core/aio/rebuild/destroyer.c): io_destroy
 * waits about 35 ms each, the process need not. First, while every
 * destination is still held, aiotk_undo_area maps what that thread needs
 * and one parking slot per context (len[0..n): their lengths; slots[i]:
 * where context i goes; *head_len: the part before the slots); each
 * context is moved into its slot (aiotk_park_at), then
 * aiotk_destroy_later starts the thread, *tid, named "aiotk-undo" until it
 * ends: it destroys the contexts still marked in the slots, unmaps its
 * part and exits, leaving nothing behind and needing nothing of aiotk's.
 * AIOTK_EUNSUPPORTED where no thread can be made (another kind of target,
 * a seccomp filter, no writable code, no munmap-then-exit code in the
 * process, no room at AIOTK_UNDO_AT): the caller destroys them itself. A
 * start that fails leaves the caller the contexts in their slots and
 * the head to unmap. */
int aiotk_undo_area(aiotk_target *t, const uint64_t *len, size_t n, uint64_t *slots,
		    uint64_t *head_len, aiotk_err *err);
int aiotk_destroy_later(aiotk_target *t, int *tid, aiotk_err *err);
/* The destroyer threads alive in process pid, known by their mappings
 * (up to max of their tids in tids, *n of them): 0, or -errno. */
int aiotk_destroyers(int pid, int *tids, size_t max, size_t *n);
/* The context made is marked AIOTK_RING_BUILDING until the caller finishes
 * it (aiotk_restore_ring does). */
/* The same, trying io_setup(want_n) first (the n recorded at dump): kept
 * when it makes exactly ring_len bytes. want_n 0: no preference. */
int aiotk_converge_n(aiotk_target *t, const aiotk_geom_host *model,
		     uint64_t ring_len, uint32_t want_n,
		     aiotk_converge_result *res, aiotk_err *err);
int aiotk_converge(aiotk_target *t, const aiotk_geom_host *model,
		   uint64_t ring_len, aiotk_converge_result *res,
		   aiotk_err *err);

/* ---- the kernel's view of a process's contexts (BPF) ---------------- */
/* Read from struct kioctx by a CO-RE BPF task iterator: needs BTF
 * (/sys/kernel/btf/vmlinux), CAP_BPF and CAP_PERFMON, kernel 6.1+ (task
 * iterators limited to one thread). Does not stop or ptrace the process.
 * See docs/KERNEL-FACTS.md, "The kernel's side of a context". */
enum aiotk_kreq_kind { AIOTK_KREQ_OTHER = 0, AIOTK_KREQ_POLL = 1 };
typedef struct aiotk_kreq {      /* a cancellable request in flight */
	uint64_t obj, data;      /* the user's iocb address and aio_data */
	enum aiotk_kreq_kind kind;
	uint32_t events;         /* POLL: the kernel's mask (asked | ERR | HUP) */
	int iocb_ok;             /* the iocb at obj was read and names data: */
	uint16_t opcode;         /*   its aio_lio_opcode, */
	uint32_t fd;             /*   aio_fildes, */
	uint64_t buf;            /*   aio_buf (POLL: the events asked for) */
} aiotk_kreq;
typedef struct aiotk_kctx {
	uint64_t user_id;        /* the context id = the ring's address */
	uint32_t max_reqs;       /* the n given to io_setup */
	uint32_t nr_events;      /* the ring's nr */
	uint32_t req_batch, tail, completed_events;
	uint32_t reqs_available; /* free slots in the global pool */
	uint32_t cpu_available;  /* free slots in the per-CPU caches */
	/* Submitted and not completed: nr_events - 1 - reqs_available -
	 * cpu_available - completed_events (completed_events holds slots of
	 * completions not yet given back). -1: the counters, read without the
	 * kernel's locks, did not add up (read again). */
	int64_t in_flight;
	uint32_t ncancel;        /* cancellable in flight (active_reqs) */
	uint32_t nreqs;          /* of which listed in reqs[] */
	aiotk_kreq *reqs;
} aiotk_kctx;
typedef struct aiotk_kview {
	size_t n;
	aiotk_kctx *ctx;         /* in ioctx_table order */
} aiotk_kview;

typedef struct aiotk_kviewer aiotk_kviewer; /* the loaded BPF program */
/* Load the program once; AIOTK_EUNSUPPORTED naming why when this host,
 * kernel or build cannot. Sets libbpf's process-wide print hook to one
 * that drops its messages (see the top of this header). */
int aiotk_kviewer_open(aiotk_kviewer **out, aiotk_err *err);
/* The programs kept loaded between commands: pinned under pin_dir (a
 * bpffs directory, e.g. /sys/fs/bpf) in a directory of their own named
 * aiotk_kview_pin_name() (aiotk's version and a hash of the BPF object:
 * another build never takes them), mode 0700. A viewer opens that pin
 * when it is there and whole (under 1 ms), else loads (about 0.1 s) and
 * pins what it loaded; a pin it cannot use (not its owner's, mode wider
 * than 0700, not the programs it names) is replaced. A pin is used only
 * with CAP_BPF and CAP_PERFMON in effect (what a load needs), and made
 * only with write access to pin_dir (root); otherwise, or without bpffs
 * at pin_dir, the viewer loads as aiotk_kviewer_open does and says why
 * in aiotk_kviewer_info. docs/KERNEL-FACTS.md, "Loading the kernel view". */
typedef struct aiotk_kviewer_opts {
	const char *pin_dir;  /* NULL: load for this viewer only, pin nothing */
	int mount;            /* pin_dir an empty directory, not bpffs: mount
			       * one there (mode 0700), as systemd does at boot
			       * on /sys/fs/bpf and bpftool does to pin */
} aiotk_kviewer_opts;
int aiotk_kviewer_open_opts(aiotk_kviewer **out, const aiotk_kviewer_opts *o,
			    aiotk_err *err);
typedef struct aiotk_kviewer_info {
	int from_pin;          /* opened from a pin: nothing was loaded */
	int pinned;            /* loaded, and pinned for later viewers */
	int pin_errno;         /* a pin was asked and neither happened: why */
	int replaced;          /* a pin at the same path was unusable, removed */
	int no_bpffs;          /* pin_dir is not bpffs (and none was mounted) */
	int mounted;           /* this viewer mounted bpffs at pin_dir */
	char pin_path[256];    /* the pin's directory ("" if none was asked) */
	uint32_t prog_id[2];   /* the kernel's ids of the AIO and io_uring programs */
	uint64_t open_ns;      /* how long aiotk_kviewer_open_opts took */
} aiotk_kviewer_info;
void aiotk_kviewer_info_get(const aiotk_kviewer *v, aiotk_kviewer_info *out);
/* This build's pin directory name: "aiotk-VERSION-HASH", the version's
 * dots as underscores (bpffs refuses dots), HASH 16 hex digits of the BPF
 * object's FNV-1a hash; "" without BPF. */
const char *aiotk_kview_pin_name(void);
/* Remove pins under pin_dir: this build's (all 0; with its unfinished
 * "-tmp-PID" ones) or every "aiotk-*" directory (all 1); *removed counts
 * the directories removed. Programs in use stay loaded until their users
 * exit. A pin_dir that is not bpffs holds none: 0, nothing removed. */
int aiotk_kview_unpin(const char *pin_dir, int all, int *removed, aiotk_err *err);
void aiotk_kviewer_close(aiotk_kviewer *v);
/* The iterator for process pid made now, before it is stopped, so that
 * reads while it is stopped need not make one; -errno, reads then make
 * their own. */
int aiotk_kview_prepare(aiotk_kviewer *v, int pid);
/* Every context of process pid. Not thread-safe per viewer. */
int aiotk_kview_read(aiotk_kviewer *v, int pid, aiotk_kview *out,
		     aiotk_err *err);
void aiotk_kview_free(aiotk_kview *kv);

/* ---- the kernel's view of a process's io_uring instances (BPF) ------ */
/* Read from struct io_ring_ctx by a CO-RE BPF task_file iterator loaded
 * with the AIO view (one aiotk_kviewer, one load, both programs): the same
 * needs (BTF, CAP_BPF and CAP_PERFMON, Linux 6.1+). Does not stop or ptrace
 * the process. See docs/KERNEL-FACTS.md, "io_uring: the kernel's side of an
 * instance". Parts a kernel lays out otherwise are left out, and `have`
 * says which were read (AIOTK_URING_HAVE_*). */
enum {
	AIOTK_URING_HAVE_RINGS = 1,   /* the counters in ring memory */
	AIOTK_URING_HAVE_FILES = 2,   /* registered files */
	AIOTK_URING_HAVE_BUFS = 4,    /* registered buffers */
	AIOTK_URING_HAVE_ISSUER = 8,  /* submitter_tid */
	AIOTK_URING_HAVE_REQS = 16,   /* requests in cancel_table */
	AIOTK_URING_HAVE_TIMEOUTS = 32, /* timeouts in flight */
	AIOTK_URING_HAVE_RINGFDS = 64,  /* registered ring fds per thread */
	AIOTK_URING_HAVE_BLS = 128,     /* provided-buffer groups */
	AIOTK_URING_HAVE_UNLISTED = 256, /* requests in flight on no list */
};
typedef struct aiotk_uring_file { /* a used slot of the registered files */
	uint32_t slot;
	int fd;                  /* the same file's fd in the process; -1: none */
	char path[256];          /* what /proc/PID/fd/FD names; "": no fd */
} aiotk_uring_file;
typedef struct aiotk_uring_buf {  /* a used slot of the registered buffers */
	uint32_t slot;
	uint64_t ubuf, len;
} aiotk_uring_buf;
typedef struct aiotk_uring_req {  /* a request in cancel_table: a POLL_ADD or
				   * a request waiting on an armed poll */
	uint8_t opcode;          /* IORING_OP_* */
	uint64_t user_data;
	int fd;                  /* the SQE's fd (a slot with IOSQE_FIXED_FILE) */
	int file_fd;             /* its file's fd in the process; -1: none */
	uint32_t poll_events;    /* the kernel's mask */
	uint64_t flags;          /* the kernel's REQ_F_* */
	/* An ACCEPT's or RECV's arguments, as the kernel keeps them
	 * (has_args; older images: 0). */
	int has_args;
	uint64_t addr;           /* accept: sockaddr pointer; recv: buffer */
	uint64_t addr2;          /* accept: addr_len pointer */
	uint32_t len;            /* recv: buffer length */
	uint32_t op_flags;       /* accept: SOCK_* flags; recv: msg_flags */
	uint32_t ioprio;         /* IORING_ACCEPT_* / IORING_RECV* (and the
				  * kernel's own high bits) */
	uint32_t file_slot;      /* accept: a direct descriptor's slot + 1 */
	uint32_t buf_group;      /* recv: provided-buffer group */
	uint32_t done_io;        /* recv: bytes received so far */
	uint32_t mshot_len;      /* recv: a multishot's length per receive
				  * (the SQE's len; len is the last buffer's
				  * once it tried) */
	int has_mshot_len;       /* 0: an image older than it */
} aiotk_uring_req;
typedef struct aiotk_uring_timeout { /* a TIMEOUT, or an armed LINK_TIMEOUT */
	uint8_t opcode;
	uint64_t user_data;
	int clockid;             /* its timer's clock; -1: no timer read */
	int64_t expires_ns;      /* in that clock */
	int64_t remaining_ns;    /* what remained when it was read (< 0: due) */
	uint32_t flags;          /* IORING_TIMEOUT_* as the kernel keeps them */
	uint32_t off;            /* completions it also ends on; 0: none */
	uint32_t target_seq, repeats;
	int64_t ts_ns;           /* the time it was given: a multishot's
				  * period; -1: not known (older images) */
} aiotk_uring_timeout;
typedef struct aiotk_uring_ringfd { /* a thread's registered ring fd */
	int tid;
	uint32_t index;          /* the offset it passes as the fd */
} aiotk_uring_ringfd;
typedef struct aiotk_uring_bl {   /* a provided-buffer group */
	uint16_t bgid, flags;    /* flags: 1 a buffer ring (else legacy
				  * buffers), 2 incremental, 4 in the
				  * application's memory (else the kernel's,
				  * mmapped: IOU_PBUF_RING_MMAP) */
	uint32_t entries;        /* a ring's entries */
	uint32_t nbufs;          /* legacy: buffers left */
	uint16_t head, tail;     /* a ring's: the kernel's head, the tail the
				  * application published */
	uint64_t addr;           /* a ring in the application's memory: its
				  * address there (0: not found) */
} aiotk_uring_bl;
#define AIOTK_URING_BL_RING 1
#define AIOTK_URING_BL_INC 2
#define AIOTK_URING_BL_USER 4
typedef struct aiotk_uring_map {  /* a mapping of the instance's file */
	uint64_t start, end;
	uint64_t offset;         /* 0: SQ ring, 0x8000000: CQ ring,
				  * 0x10000000: SQEs, 0x80000000 | bgid << 16:
				  * a provided-buffer ring */
	uint8_t *data;           /* its end - start bytes (aiotk_uring_read_memory,
				  * images); NULL: not read */
	int dontfork;            /* MADV_DONTFORK was set on it */
} aiotk_uring_map;
typedef struct aiotk_uring {
	int fd;
	uint64_t ino;            /* its anon inode, as /proc/PID/maps shows it */
	unsigned have;           /* AIOTK_URING_HAVE_* */
	uint32_t flags;          /* IORING_SETUP_* */
	uint32_t sq_entries, cq_entries;
	/* Free-running counters in ring memory (what user space sees and
	 * writes: sq_tail, cq_head), and the kernel's private ones, which it
	 * publishes as sq_head and cq_tail. */
	uint32_t sq_head, sq_tail, cq_head, cq_tail;
	uint32_t cached_sq_head, cached_cq_tail;
	uint32_t sq_dropped, cq_overflow, sq_flags, cq_flags;
	int submitter_tid;       /* SINGLE_ISSUER's owner thread; 0: none yet */
	int sq_thread_pid;       /* SQPOLL's thread; 0: no SQPOLL, -1: gone */
	int sq_cpu;              /* SQPOLL's CPU, -1: any */
	uint32_t sq_thread_idle; /* SQPOLL's idle time, in jiffies */
	int has_eventfd, eventfd_async;
	int eventfd_id;          /* the eventfd's id (fdinfo's eventfd-id); -1: none or unknown */
	int eventfd_fd;          /* an fd of the process for that eventfd; -1: none found */
	int personalities;       /* IORING_REGISTER_PERSONALITY: some registered */
	int restricted;          /* IORING_REGISTER_RESTRICTIONS: registered */
	uint32_t nr_files, nr_bufs;  /* table sizes, used slots or not */
	size_t nfiles, nbufs;        /* used slots listed (at most 512 and 256) */
	aiotk_uring_file *files;
	aiotk_uring_buf *bufs;
	uint32_t nreqs_total;        /* in cancel_table */
	size_t nreqs;                /* of which listed (at most 256) */
	aiotk_uring_req *reqs;
	size_t nmaps;                /* from /proc/PID/maps, by inode */
	aiotk_uring_map *maps;
	/* Where the CQEs and the sq_array are in the SQ ring's mapping (or
	 * the CQ ring's, for the CQEs, when it has its own); 0: not known,
	 * or (sq_array_off) IORING_SETUP_NO_SQARRAY. */
	uint32_t cqes_off, sq_array_off;
	uint32_t ntimeouts_total;    /* in flight */
	uint32_t cq_timeouts;        /* fired; counts run against
				      * cached_cq_tail - cq_timeouts */
	uint32_t waiting;            /* completions not yet in the CQ ring,
				      * waiting as task work for a thread of
				      * the process (a stopped one never runs
				      * it): the owner's (DEFER_TASKRUN), else
				      * the submitter's */
	size_t ntimeouts;            /* of which listed (at most 256 a list) */
	aiotk_uring_timeout *timeouts;
	size_t nringfds;
	aiotk_uring_ringfd *ringfds;
	uint32_t nbls_total;
	size_t nbls;                 /* of which listed (at most 64) */
	aiotk_uring_bl *bls;
	/* Requests in flight that no list the view reads holds: disk reads
	 * and writes in the block layer or io-wq, requests linked behind
	 * another. Counted from the threads' in-flight counters less the
	 * listed requests and the waiting completions; instances sharing a
	 * thread have theirs counted on the first of them (fd order). */
	uint32_t unlisted;
} aiotk_uring;
typedef struct aiotk_uring_view {
	size_t n;
	aiotk_uring *ring;       /* in fd order */
	size_t orphan_maps;      /* io_uring mappings of no instance listed:
				  * one the process holds only through its
				  * mappings (its fd closed) */
} aiotk_uring_view;
/* Every io_uring instance process pid has open (not those it holds only
 * through a mapping or a registered ring fd after closing its fd). */
int aiotk_uring_view_read(aiotk_kviewer *v, int pid, aiotk_uring_view *out,
			  aiotk_err *err);
void aiotk_uring_view_free(aiotk_uring_view *uv);
/* The bytes of each of u's mappings, read from t (stopped, or frozen):
 * the ring memory a rebuild writes back. */
int aiotk_uring_read_memory(aiotk_target *t, aiotk_uring *u, aiotk_err *err);
/* A deep copy (lists and mapping bytes), and its release. */
int aiotk_uring_copy(aiotk_uring *dst, const aiotk_uring *src, aiotk_err *err);
void aiotk_uring_free(aiotk_uring *u);

/* ---- rebuilding an io_uring instance in a process -------------------- */
/* A POLL_ADD submitted again with its user_data (what uring.rebuild in
 * scripts/aiotk/uring.lua makes of a request in flight). */
typedef struct aiotk_uring_poll {
	uint64_t user_data;
	int fd;                  /* a slot with fixed_file */
	uint32_t events;         /* the user's mask */
	int multishot, level, fixed_file;
} aiotk_uring_poll;
/* A TIMEOUT submitted again with its user_data (what uring.rebuild_timeout
 * makes of one in flight): ts_ns relative, or absolute with
 * IORING_TIMEOUT_ABS in flags (the IORING_TIMEOUT_* of the SQE); off the
 * completions it also ends on (multishot: its repeats), 0: none. */
typedef struct aiotk_uring_tmo {
	uint64_t user_data;
	int64_t ts_ns;
	uint32_t flags, off;
} aiotk_uring_tmo;
/* An ACCEPT or RECV submitted again with its user_data (what
 * uring.rebuild makes of one waiting on its socket): the SQE's fields. */
typedef struct aiotk_uring_sock {
	uint8_t opcode;          /* IORING_OP_ACCEPT or IORING_OP_RECV */
	uint64_t user_data;
	int fd, fixed_file;
	uint64_t addr, addr2;    /* accept: addr, addr_len; recv: buffer */
	uint32_t len, op_flags;  /* recv: len, msg_flags; accept: SOCK_* */
	uint16_t ioprio;         /* IORING_ACCEPT_* / IORING_RECVSEND_POLL_FIRST,
				  * IORING_RECV_MULTISHOT */
	int buffer_select;       /* recv: from provided-buffer group buf_group
				  * (IOSQE_BUFFER_SELECT), rebuilt with the
				  * instance before it is submitted */
	uint16_t buf_group;
} aiotk_uring_sock;
typedef struct aiotk_uring_rebuild_opts {
	/* 1: the kernel's counters replayed to the saved ones; 0: rebased,
	 * congruent modulo the ring sizes, liburing's copies moved by the
	 * same offset. docs/KERNEL-FACTS.md, "io_uring: counters". */
	int exact;
	const aiotk_uring_poll *polls;
	size_t npolls;
	const aiotk_uring_tmo *timeouts;  /* submitted after the polls */
	size_t ntimeouts;
	const aiotk_uring_sock *socks;    /* submitted after the timeouts */
	size_t nsocks;
	/* The journal's slot (below AIOTK_URING_JOURNAL_SLOTS), and 1 to keep
	 * it mapped once the instance is made: a restore of several instances
	 * commits them together (aiotk_uring_commit). */
	unsigned slot;
	int keep_journal;
} aiotk_uring_rebuild_opts;
#define AIOTK_URING_MAX_COPIES 16
typedef struct aiotk_uring_rebuilt {
	int fd;
	uint32_t sq_shift, cq_shift; /* saved counters minus new ones (0: exact) */
	uint64_t nops;               /* NOPs the counters took */
	unsigned ncopies;            /* liburing structs whose copies moved */
	uint64_t copies[AIOTK_URING_MAX_COPIES]; /* where (their khead pointer) */
	uint64_t ns_setup, ns_place, ns_counters, ns_memory, ns_copies;
	uint64_t journal_at, journal_len; /* its journal, kept (keep_journal); len 0: none */
} aiotk_uring_rebuilt;
/* Instance saved (flags aiotk_uring_rebuilt_flags(); others refused)
 * made again in t, which must be stopped (or this process): at its saved
 * fd (O_CLOEXEC, as io_uring gives its fds) and addresses, with its ring
 * memory (unreaped CQEs, prepared SQEs) and counters as o says, o->polls
 * o->timeouts and o->socks armed again, its registered files, buffers and eventfd, a single
 * issuer enabled by its saved owner thread. The saved fd and ranges must
 * be free. On failure nothing is left. */
/* The IORING_SETUP_* flags a rebuild makes as they were. */
uint32_t aiotk_uring_rebuilt_flags(void);
/* 0 if aiotk_uring_rebuild can make saved again (its flags, rings and
 * resources), else AIOTK_EUNSUPPORTED saying what it cannot. */
int aiotk_uring_rebuildable(const aiotk_uring *saved, aiotk_err *err);
/* Why saved->bls[i] (a provided-buffer group) is not rebuilt with its
 * instance, or NULL when it is. */
const char *aiotk_uring_bl_unrebuilt(const aiotk_uring *saved, size_t i);
int aiotk_uring_rebuild(aiotk_target *t, const aiotk_uring *saved,
			const aiotk_uring_rebuild_opts *o, aiotk_uring_rebuilt *out,
			aiotk_err *err);
/* A rebuilt instance taken away again (a later step of a restore
 * failed): liburing's copies put back, its mappings and fd gone; by its
 * kept journal when it has one (the journal of slot 0 stays while any
 * other slot's does: see aiotk_uring_commit). */
int aiotk_uring_unbuild(aiotk_target *t, const aiotk_uring *saved,
			const aiotk_uring_rebuilt *r, aiotk_err *err);
/* Each instance of a restore journals in a slot of its own, at
 * AIOTK_URING_JOURNAL_AT + slot * AIOTK_URING_JOURNAL_STRIDE (a stride
 * above any journal: 8 KiB and the largest registration table, 4 MiB for
 * the kernel's 2^20 files), all below the next fixed address aiotk uses. */
#define AIOTK_URING_JOURNAL_AT 0x3a1080000000ull
#define AIOTK_URING_JOURNAL_STRIDE (8ull << 20)
#define AIOTK_URING_JOURNAL_SLOTS 32
/* The instances r[0..n) rebuilt with their journals kept (r[0] in slot
 * 0) made final: slot 0's journal unmapped first, which is the commit,
 * then the others, which from then on are only aiotk's leftovers (the
 * next aiotk_uring_leftovers removes them). 0 once committed, *left
 * journals then not unmapped (err says the first); else nothing changed
 * and the caller takes the instances away. */
int aiotk_uring_commit(aiotk_target *t, const aiotk_uring_rebuilt *r, size_t n, unsigned *left,
		       aiotk_err *err);
/* What an aiotk killed during a restore of io_uring instances left in t
 * (the journals in its slots say): with slot 0's journal there (no
 * commit), every journalled instance taken away, the newest first; without
 * it (committed), the other slots' journals unmapped. *removed: how many
 * journals went; 0 when there was none. docs/KERNEL-FACTS.md, "io_uring:
 * a rebuild killed half-way". */
int aiotk_uring_leftovers(aiotk_target *t, unsigned *removed, aiotk_err *err);
/* Saved instance u moved on as if it had run k more NOPs (k a multiple of
 * both ring sizes): counters and ring memory. For tests, which cannot run
 * 2^32 SQEs to see counters near 2^32. */
int aiotk_uring_saved_shift(aiotk_uring *u, uint32_t k, aiotk_err *err);

/* ---- a dump's reading of a stopped process ---------------------------- */
typedef struct aiotk_reading {
	aiotk_kview kv;     /* its contexts, in address order */
	size_t n;
	aiotk_ring *rings;  /* rings[i] is the ring of kv.ctx[i] */
	/* No request in flight and each ring's nr and tail the kernel's: the
	 * rings carry the kernel's n and tail and are what the image holds.
	 * 0: the caller reads again, deciding while the process is stopped. */
	int settled;
} aiotk_reading;
/* The kernel view of t's process, then the rings it names (flags as for
 * aiotk_snapshot), in one call: the least a dump keeps a process stopped. */
int aiotk_read_stopped(aiotk_target *t, aiotk_kviewer *v, int flags, aiotk_reading *out,
		       aiotk_err *err);
void aiotk_reading_free(aiotk_reading *r);

/* ---- tail replay ----------------------------------------------------- */
enum aiotk_req_kind { AIOTK_REQ_AUTO = 0, AIOTK_REQ_POLL, AIOTK_REQ_PWRITE };
typedef struct aiotk_replay_opts {
	unsigned batch;           /* requests per io_submit; 0 = 1024 */
	enum aiotk_req_kind kind; /* AUTO: POLL, PWRITE if POLL is refused */
	int no_pin;               /* leave CPU affinity alone */
	int no_nudge;             /* a ring fuller than this kernel allows
				   * fails (AIOTK_ESTUCK) instead of nudging */
} aiotk_replay_opts;
typedef struct aiotk_replay_stats {
	uint64_t completions;
	unsigned submits;
	unsigned nudges;          /* head nudges needed for near-full rings */
	enum aiotk_req_kind kind;
	uint64_t ns;              /* time taken, set-up included */
} aiotk_replay_stats;

/* Bring a fresh context (kernel tail 0, head 0) to head/tail. */
int aiotk_replay(aiotk_target *t, uint64_t ctx, uint32_t nr, uint32_t head,
		 uint32_t tail, const aiotk_replay_opts *o,
		 aiotk_replay_stats *st, aiotk_err *err);
/* Copy the saved events (or the whole area) in; never the header. */
int aiotk_events_write(aiotk_target *t, uint64_t ctx, const aiotk_ring *saved,
		       aiotk_err *err);

/* ---- moving a ring --------------------------------------------------- */
enum { AIOTK_REMAP_PLACEHOLDER = 1 }; /* caller owns what is at dest */
/* Move the ring at *ctx to dest; *ctx says where the context lives
 * afterwards, also on failure (it may have been parked on the way). */
int aiotk_remap(aiotk_target *t, uint64_t *ctx, uint64_t len, uint64_t dest,
		int flags, aiotk_err *err);

/* A PROT_NONE placeholder at exactly [addr, addr+len), refused (naming
 * what is there) where anything is mapped; aiotk_unmap removes one. */
int aiotk_reserve(aiotk_target *t, uint64_t addr, uint64_t len,
		  aiotk_err *err);
int aiotk_unmap(aiotk_target *t, uint64_t addr, uint64_t len, aiotk_err *err);
/* Move the ring at *ctx to a fresh address the kernel picks, marked as
 * aiotk's (AIOTK_RING_BUILDING) until aiotk_unpark moves it back to home,
 * so that a ring parked by a killed aiotk is recognisable. */
int aiotk_park(aiotk_target *t, uint64_t *ctx, uint64_t len, aiotk_err *err);
/* The same onto [at, at+len), which the caller made for it (a slot of
 * aiotk_undo_area): no mapping is made, so a killed aiotk leaves the ring
 * marked, either at *ctx or at `at`. */
int aiotk_park_at(aiotk_target *t, uint64_t *ctx, uint64_t len, uint64_t at, aiotk_err *err);
int aiotk_unpark(aiotk_target *t, uint64_t *ctx, uint64_t len, uint64_t home,
		 aiotk_err *err);
/* How shared anonymous memory shows in /proc/PID/maps: aiotk's
 * placeholders (PROT_NONE, "---s") and journal pages ("rw-s") have this
 * shape, which programs rarely make, so leftovers are recognisable. */
#define AIOTK_SHARED_ANON_PATH "/dev/zero (deleted)"
#define AIOTK_PLACEHOLDER_PERMS "---s"

/* ---- in-process (or in-target) restore of one ring ------------------- */
typedef struct aiotk_restore_opts {
	aiotk_geom_host model;    /* host model; cpus==0: probe */
	aiotk_replay_opts replay;
	int remap_flags;
	/* The n to try first (the plan's); 0: the saved ring's, unless it
	 * grows. Kept only when it makes the ring length wanted. */
	uint32_t n;
	/* Grow in place: make a ring of this length (> the saved one) at the
	 * saved address, same head, tail and events; 0: exact size. */
	uint64_t grow_len;
} aiotk_restore_opts;
typedef struct aiotk_restore_result {
	uint64_t ctx;
	aiotk_converge_result conv;
	aiotk_replay_stats replay;
	uint64_t ns_converge, ns_replay, ns_events, ns_remap;
} aiotk_restore_result;

int aiotk_restore_ring(aiotk_target *t, const aiotk_ring *saved,
		       const aiotk_restore_opts *o, aiotk_restore_result *res,
		       aiotk_err *err);
typedef struct aiotk_range { uint64_t addr, len; } aiotk_range;
/* Many rings rebuilt in one call (aiotk_restore_rings). */
typedef struct aiotk_rebuild {
	aiotk_ring *const *saved;     /* saved[0..n), rebuilt in order */
	const aiotk_restore_opts *o;  /* o[i] for ring i */
	size_t n;
	const aiotk_range *claim;     /* placeholders taken before any ring */
	size_t nclaims;
	aiotk_restore_result *res;    /* out: res[0..done) */
	size_t done, claimed;         /* out: rings made, placeholders held */
	/* out, where the restorer ran in a process (0 elsewhere), in ns:
	 * copying it in (mapping, code, job), from there to its first
	 * instruction (the injected start), its claims, its set-up (journal,
	 * /dev/null, iocbs, pin), its rings (res[] has each one's phases), its
	 * clean-up, from its end to aiotk seeing it (its signal's stop), and
	 * reading its answer back with its mapping gone */
	uint64_t ns_load, ns_enter, ns_claims, ns_kit, ns_rings, ns_close, ns_exit, ns_answer;
} aiotk_rebuild;
/* b->claim[] held as aiotk_reserve holds one, then b->saved[] rebuilt as
 * aiotk_restore_ring would: b->claimed and b->done say how far it got,
 * whatever it returns (a failed claim fails the call before any ring; a
 * failed ring leaves ring b->done unmade). Rings the restorer can do
 * alone (exact size from a known n, POLL; core/aio/rebuild/restorer.c) are rebuilt
 * inside the target in one run, which takes the placeholders too. */
int aiotk_restore_rings(aiotk_target *t, aiotk_rebuild *b, aiotk_err *err);

/* ---- images ---------------------------------------------------------- */
#define AIOTK_IMAGE_FILE "rings.img"
#define AIOTK_IMAGE_FORMAT 1

typedef struct aiotk_image {
	uint32_t format;
	unsigned cpus, page_size;
	char release[65];
	enum aiotk_formula formula;
	uint64_t aio_max_nr;
	uint64_t time_ns;     /* dump time, CLOCK_REALTIME */
	int32_t pid;          /* 0: unknown */
	uint64_t stopped_ns;  /* how long the process was stopped */
	char warnings[1024];  /* e.g. requests in flight at dump time */
	size_t nrings;
	aiotk_ring *rings;
	size_t nurings;       /* io_uring instances, with their ring memory */
	aiotk_uring *urings;
} aiotk_image;

void aiotk_image_init_host(aiotk_image *img, const aiotk_host *h);
int aiotk_image_add_ring(aiotk_image *img, const aiotk_ring *r,
			 aiotk_err *err);
/* A copy of u kept (aiotk_uring_copy). */
int aiotk_image_add_uring(aiotk_image *img, const aiotk_uring *u, aiotk_err *err);
int aiotk_image_write(const char *dir, const aiotk_image *img, aiotk_err *err);
/* How a file is replaced: always whole (a temporary file renamed over
 * it); synced to disk (file and directory) unless AIOTK_WRITE_NOSYNC,
 * for files beside others nobody syncs (a CRIU dump's images: syncing
 * aiotk's alone, about 8 ms each here, would only lengthen CRIU's freeze). */
enum { AIOTK_WRITE_NOSYNC = 1 };
int aiotk_image_write_flags(const char *dir, const aiotk_image *img, int flags,
			    aiotk_err *err);
int aiotk_image_read(const char *dir, aiotk_image *img, aiotk_err *err);
/* Decode from memory; name is used in messages. */
int aiotk_image_decode(const uint8_t *buf, size_t len, const char *name,
		       aiotk_image *img, aiotk_err *err);
int aiotk_image_encode(const aiotk_image *img, uint8_t **buf, size_t *len,
		       aiotk_err *err);
void aiotk_image_free(aiotk_image *img);

/* The images of a CRIU dump's tasks, one file beside CRIU's images
 * (its name: scripts/aiotk/criu.lua), one record a task appended
 * (formats/image_pack.c): created before CRIU's freeze, each task one
 * write inside it. */
typedef struct aiotk_pack {
	int fd;
	int64_t end;      /* where the next record goes */
	unsigned count;   /* records written */
} aiotk_pack;
int aiotk_pack_create(const char *path, aiotk_pack *p, aiotk_err *err);
/* img as task's (its number in its own PID namespace), written whole or
 * not at all. */
int aiotk_pack_append(aiotk_pack *p, int32_t task, const aiotk_image *img, aiotk_err *err);
void aiotk_pack_close(aiotk_pack *p);
typedef struct aiotk_pack_entry {
	int32_t task;
	aiotk_image img;
} aiotk_pack_entry;
/* Every record of the file at path; AIOTK_EEMPTY when there is none. */
int aiotk_pack_read(const char *path, aiotk_pack_entry **out, size_t *n, aiotk_err *err);
void aiotk_pack_free(aiotk_pack_entry *e, size_t n);
/* Temporary file beside dst, fsync, rename, fsync of the directory. */
int aiotk_write_file(const char *dst, const uint8_t *buf, size_t len, int flags,
		     aiotk_err *err);
int aiotk_write_atomic(const char *dst, const uint8_t *buf, size_t len,
		       aiotk_err *err);
/* The temporary made ahead of the write (created empty beside dst, its
 * name dst.XXXXXX): inside CRIU's freeze a file created costs about
 * 0.2 ms here, the rename that puts it in place 0.03. A spare is used
 * once (aiotk_write_file_via), or dropped (removed; dropping one used
 * does nothing). */
typedef struct aiotk_spare {
	int fd;               /* -1 once used or dropped */
	char path[4096];
} aiotk_spare;
int aiotk_spare_make(const char *dst, aiotk_spare *s, aiotk_err *err);
void aiotk_spare_drop(aiotk_spare *s);
/* aiotk_write_file through spare, made earlier for dst (NULL, or one used
 * already: a temporary made now). */
int aiotk_write_file_via(aiotk_spare *spare, const char *dst, const uint8_t *buf, size_t len,
			 int flags, aiotk_err *err);

/* ---- CRIU dumps ------------------------------------------------------ */
typedef struct aiotk_criu_ring {
	aiotk_ring ring;       /* from the ring's pages: nr, head, tail, events */
	uint32_t nr_req;       /* CRIU's saved io_setup argument */
	size_t nr_req_off;     /* where its varint sits in the mm file */
	size_t nr_req_len;
	char pages_path[1024]; /* the pages file holding its header, */
	uint64_t header_off;   /* at this offset */
} aiotk_criu_ring;

typedef struct aiotk_criu_proc {
	int pid;
	char mm_path[512];
	size_t nrings;
	aiotk_criu_ring *rings;
	uint8_t *mm;          /* the mm image's bytes as read (a fixup patches */
	size_t mm_len;        /* them: no second read), or NULL */
} aiotk_criu_proc;

typedef struct aiotk_criu_dump {
	size_t nprocs;
	aiotk_criu_proc *procs;
} aiotk_criu_dump;

/* Every process image (mm-PID.img) of a CRIU dump directory, with each AIO
 * ring's bytes found through pagemap-PID.img and pages-ID.img. */
int aiotk_criu_read(const char *dir, unsigned page_size, aiotk_criu_dump *d,
		    aiotk_err *err);
/* The same from the mm images alone: each ring's address, length and
 * nr_req with its place, not its bytes (for a fixup whose rings are
 * known otherwise: the plugin's, read at CHECKPOINT_DEVICES). */
int aiotk_criu_read_mm(const char *dir, aiotk_criu_dump *d, aiotk_err *err);
void aiotk_criu_free(aiotk_criu_dump *d);
/* Decoders over memory (name is used in messages; the fuzz target uses
 * them). mm: the rings' addresses, lengths and nr_req with their offsets. */
int aiotk_criu_decode_mm(const uint8_t *buf, size_t len, const char *name,
			 aiotk_criu_proc *p, aiotk_err *err);
/* pagemap-PID.img: how many PRESENT entries it holds. */
int aiotk_criu_decode_pagemap(const uint8_t *buf, size_t len, const char *name,
			      size_t *present, aiotk_err *err);
/* The VMAs of an mm file image (the dump's layout: where a ring has room
 * to grow, or could go). *out is malloc'd. */
typedef struct aiotk_criu_vma { uint64_t start, end; int ring, writable; } aiotk_criu_vma;
int aiotk_criu_vmas(const uint8_t *buf, size_t len, const char *name, aiotk_criu_vma **out,
		    size_t *count, aiotk_err *err);
/* Rewrite nr_req of ring i in an mm file image to n, in place and in the
 * same number of bytes (a padded varint): every other byte stays. */
int aiotk_criu_patch_nr_req(uint8_t *buf, size_t len, const aiotk_criu_ring *r,
			    uint32_t n, aiotk_err *err);
/* A new mm file image in which the ring at addr is new_len bytes long (its
 * VMA's end and aio_ring_entry.ring_len) and asks io_setup(nr_req); every
 * other field is copied byte for byte. AIOTK_EOCCUPIED when another VMA
 * of the dump lies in the range the ring grows into. *out is malloc'd. */
int aiotk_criu_grow_mm(const uint8_t *buf, size_t len, const char *name, uint64_t addr,
		       uint64_t new_len, uint32_t nr_req, uint8_t **out, size_t *out_len,
		       aiotk_err *err);
/* nr_req of ring r set to n in the mm file at path itself (the varint at
 * r->nr_req_off, r->nr_req_len bytes, rewritten in the same bytes): the
 * bytes there must still be one varint of that length, or nothing is
 * written (AIOTK_EIMAGE). Synced unless flags has AIOTK_WRITE_NOSYNC. */
int aiotk_criu_patch_nr_req_file(const char *path, const aiotk_criu_ring *r, uint32_t n, int flags,
				 aiotk_err *err);
/* The ring header's nr in the dump's saved pages: r->pages_path at
 * r->header_off (found by aiotk_criu_read), written in place and synced. */
int aiotk_criu_set_header_nr(const aiotk_criu_ring *r, uint32_t nr, aiotk_err *err);

/* Relocation in a dump (docs/KERNEL-FACTS.md, "CRIU dumps"): a ring
 * moved to m->to as new_len bytes asking io_setup(nr_req). mm: its VMA's
 * start and end and its aio entry, the VMAs kept sorted by start (CRIU
 * refuses them unsorted); every other byte copied. AIOTK_EOCCUPIED when
 * another VMA lies in the new range. *out is malloc'd. */
int aiotk_criu_relocate_mm(const uint8_t *buf, size_t len, const char *name, const aiotk_move *m,
			   uint64_t new_len, uint32_t nr_req, uint8_t **out, size_t *out_len,
			   aiotk_err *err);
/* A location a relocation rewrote in a dump: a word of the pages file
 * (its offset in the new file, its address and mapping) or a register of
 * a thread's core image (reg: its name in CRIU's core-x86.proto). */
typedef struct aiotk_criu_ref {
	enum aiotk_ref_kind kind;
	size_t move;
	uint64_t addr, map_start, map_end, file_off;
	const char *reg;
	uint64_t old, value;
} aiotk_criu_ref;
typedef struct aiotk_criu_refs { size_t n, cap; aiotk_criu_ref *ref; uint64_t scanned; } aiotk_criu_refs;
/* pagemap-PID.img and its pages file rewritten for moves m[0..n): each
 * old ring's pages at its new address (entries split at ring edges,
 * written in ascending address order, pages following them), the moved
 * header's nr set to new_nr[i], and every 8-byte-aligned word of the
 * writable non-ring VMAs' pages equal to an old id, or pointing into an
 * old ring, rebased (appended to refs). */
int aiotk_criu_relocate_pages(const uint8_t *pm, size_t pm_len, const uint8_t *pages,
			      size_t pages_len, const char *name, const aiotk_criu_vma *v,
			      size_t nv, const aiotk_move *m, const uint32_t *new_nr, size_t n,
			      unsigned page, uint8_t **pm_out, size_t *pm_out_len, uint8_t **pages_out,
			      size_t *pages_out_len, aiotk_criu_refs *refs, aiotk_err *err);
/* core-TID.img with every general register (x86-64 gpregs) equal to an
 * old id, or pointing into an old ring, rebased (appended to refs); every
 * other byte kept. *out is malloc'd (a copy when nothing matched). */
int aiotk_criu_relocate_regs(const uint8_t *buf, size_t len, const char *name, const aiotk_move *m,
			     size_t n, uint8_t **out, size_t *out_len, aiotk_criu_refs *refs,
			     aiotk_err *err);
void aiotk_criu_refs_free(aiotk_criu_refs *r);
/* The threads (their core-TID.img) of process pid in pstree.img. *tids is
 * malloc'd. */
int aiotk_criu_threads(const uint8_t *buf, size_t len, const char *name, int pid, int **tids,
		       size_t *n, aiotk_err *err);

/* The stamp aiotk's CRIU plugin leaves in a dump it fitted, at the dump's
 * end, to the host it was made on (every nr_req the n recorded at dump):
 * a restore on a host of the same geometry whose fs.aio-max-nr has room
 * for `needs` more has nothing to do, and the plugin then starts no Lua
 * state (core/formats/criu_stamp.c). Any other change of the dump by
 * aiotk removes it. */
#define AIOTK_CRIU_STAMP "aiotk-fitted.stamp"
typedef struct aiotk_criu_stamp {
	unsigned cpus, page_size;
	enum aiotk_formula formula;
	uint64_t needs;          /* the n of every ring, summed */
	uint32_t rings, captured; /* rings, and requests captured in flight */
	char policy[256];        /* $AIOTK_POLICY at dump, "" if unset */
} aiotk_criu_stamp;
/* spare: made earlier for the stamp's path (aiotk_write_file_via), or NULL. */
int aiotk_criu_stamp_write(const char *dir, const aiotk_criu_stamp *s, aiotk_spare *spare,
			   aiotk_err *err);
/* AIOTK_EEMPTY when the dump has none. */
int aiotk_criu_stamp_read(const char *dir, aiotk_criu_stamp *s, aiotk_err *err);
/* Whether the stamped dump needs nothing more on host h. */
int aiotk_criu_stamp_fits(const aiotk_criu_stamp *s, const aiotk_host *h);

/* ---- time ------------------------------------------------------------ */
uint64_t aiotk_now_ns(void);

#endif
