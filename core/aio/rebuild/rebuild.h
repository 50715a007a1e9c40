/* Rebuilding AIO rings, shared inside the core; not part of the public
 * API. */
#ifndef AIOTK_REBUILD_H
#define AIOTK_REBUILD_H

#include "aio/aio.h"
#include "target/target.h"

#include <sys/mman.h>

/* The replay's requests as the workspace and the restorer lay them out:
 * n iocbs (iocb.h), then the n pointers io_submit takes; each needs this
 * room. */
#define AIOTK_REQ_ROOM (AIOTK_IOCB_LEN + sizeof(uint64_t))
/* How a placeholder is made (mmap prot and flags; MAP_NORESERVE: it costs
 * no commit charge), by aiotk_reserve and by the restorer alike. */
#define AIOTK_PLACEHOLDER_PROT PROT_NONE
#define AIOTK_PLACEHOLDER_FLAGS (MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE)
/* What a placeholder's mmap at addr returned (r), as aiotk_reserve says
 * it: 0, or why the range could not be claimed (its occupant named). */
int aiotk_claim_result(aiotk_target *t, uint64_t addr, uint64_t len, long r,
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
	/* The CPU masks the replay's pin reads and writes, here and on the
	 * restorer's stack: 8192 CPUs, x86_64's largest NR_CPUS
	 * (CONFIG_MAXSMP). A host beyond it is not pinned silently: the
	 * restorer stops at its set-up (setup_status -EINVAL), leaving its
	 * rings to replay.c, which fails saying so. */
	AIOTK_WS_MASK_BYTES = 1024,
};
_Static_assert(AIOTK_WS_MASK_NEW + AIOTK_WS_MASK_BYTES <= AIOTK_JOURNAL_LEN, "journal page");
/* The workspace released if it lies in [addr, addr+len) (a ring is to go
 * there; the next ring makes a new one): 1 if it did. */
int aiotk_ws_vacate(aiotk_target *t, uint64_t addr, uint64_t len);
/* The journal page of t's workspace, 0 if none: not a leftover. */
uint64_t aiotk_ws_own_journal(const aiotk_target *t);
int aiotk_ws_requests(aiotk_target *t, enum aiotk_req_kind kind, unsigned n,
		      uint64_t *ptrs, aiotk_err *err);

/* The restorer (restorer.c): its code as this process has it (entry is
 * aiotk_restorer_main's offset). */
struct aiotk_rjob;
void aiotk_restorer_main(struct aiotk_rjob *job);
int aiotk_restorer_code(const uint8_t **code, size_t *len, size_t *entry);

/* The destroyer (destroyer.c): its code as this process has it (entry is
 * where its thread starts); and what a killed aiotk left of its mapping,
 * among the process's mappings v[0..n), removed when its thread is gone
 * (destroy_later.c): how many pieces were. */
int aiotk_destroyer_code(const uint8_t **code, size_t *len, size_t *entry);
unsigned aiotk_remove_destroyer(aiotk_target *t, const aiotk_vma *v, size_t n);

#endif
